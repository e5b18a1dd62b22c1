"""secrets/k8s outputs: nothing lost, nothing partial, every refusal one line.

The table below runs every hostile input against the real CLI, each against
a copy of good earlier outputs, and checks the same three things: one line
on stderr, the exit code, and a work folder that is byte for byte, mode for
mode, what it was (old outputs intact, nothing written, no staging folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import assert_one_line_error, run_cli
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding

from ppml_image._fs import exchange_by_renames, staged_folder
from ppml_image.errors import UsageError

PASSWORD = "correct horse battery"
HOST_SECRET = b"root:HOST-SHADOW-CONTENT:19000:0:99999:7:::\n"


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every entry under *root*: its lstat mode and its bytes (or link target)."""
    found: dict[str, tuple[int, bytes | str | None]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            content: bytes | str | None = None
            if stat.S_ISREG(mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(mode):
                content = os.readlink(path)
            found[str(path.relative_to(root))] = (mode, content)
    return found


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good outputs of every command, made once: keys/, password/, k8s/."""
    root = tmp_path_factory.mktemp("good")
    pw = root / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    for args in (["secrets", "tls", "--out", root / "keys", "--password-file", pw],
                 ["secrets", "password", "--out", root / "password", "--password-file", pw],
                 ["k8s", "secrets", "--keys", root / "keys", "--password", root / "password",
                  "-o", root / "k8s"],
                 ["k8s", "spark-templates", "--image", "x:1", "--password", root / "password",
                  "-o", root / "k8s"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    pw.unlink()
    return root


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def _hostile_keys(good: Path, work: Path, outside: Path) -> dict[str, Callable[[], object]]:
    def variant(name: str) -> Path:
        return _copy(good / "keys", work / name)

    return {
        "keys-symlink": lambda: os.symlink(outside, variant("keys-symlink") / "shadow"),
        "keys-hardlink": lambda: os.link(outside, variant("keys-hardlink") / "shadow"),
        "keys-fifo": lambda: os.mkfifo(variant("keys-fifo") / "pipe"),
        "keys-subdir": lambda: (variant("keys-subdir") / "sub").mkdir(),
        "keys-badname": lambda: (variant("keys-badname") / "my key.pem").write_text("x"),
        "keys-onebig": lambda: (variant("keys-onebig") / "big.bin").write_bytes(
            b"\0" * (1 << 20 | 1)),
        "keys-toobig": lambda: _two_parts(variant("keys-toobig")),
    }


def _two_parts(folder: Path) -> None:
    """Each file under 1 MiB, together over it."""
    for index in range(2):
        (folder / f"part{index}.bin").write_bytes(b"\0" * 600_000)


def _password_symlink(good: Path, work: Path) -> None:
    linked = _copy(good / "password", work / "password-symlink")
    elsewhere = work.parent / "key-elsewhere.txt"
    elsewhere.write_bytes((linked / "key.txt").read_bytes())
    (linked / "key.txt").unlink()
    os.symlink(elsewhere, linked / "key.txt")


def _password_binary(good: Path, work: Path) -> None:
    binary = _copy(good / "password", work / "password-binary")
    key = serialization.load_pem_private_key((binary / "key.txt").read_bytes(), None)
    (binary / "output.bin").write_bytes(
        key.public_key().encrypt(b"\xff\xfe not utf-8", padding.PKCS1v15()))  # type: ignore


def _work(good: Path, tmp_path: Path, needed: str) -> Path:
    """A work folder: copies of the good outputs, the hostile variants *needed* names."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("keys", "password", "k8s"):
        _copy(good / name, work / name)
    (work / "afile").write_text("a file, not a folder\n")
    for name in ("keys", "password", "k8s"):
        if f"{name}-foreign" in needed:
            (_copy(good / name, work / f"{name}-foreign") / "notes.txt").write_text("mine\n")
    (work / "cwd-foreign").mkdir()
    (work / "cwd-foreign" / "notes.txt").write_text("mine\n")
    outside = tmp_path / "host-shadow"
    outside.write_bytes(HOST_SECRET)
    builders: dict[str, Callable[[], object]] = {
        **_hostile_keys(good, work, outside),
        "password-symlink": lambda: _password_symlink(good, work),
        "password-binary": lambda: _password_binary(good, work),
    }
    for name, build in builders.items():
        if f"{{w}}/{name}" in needed:
            build()
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, data in {"pw": PASSWORD.encode(), "nonutf8": b"\xff\xfeabcdefgh",
                       "long": b"a" * 374, "longutf8": "é".encode() * 187,
                       "nonascii": "pässwörter".encode(), "ctrl": b"abc\x01defgh",
                       "nul": b"abcd\x00efgh", "short": b"short"}.items():
        (inputs / name).write_bytes(data + b"\n")
    return work


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    fragments: tuple[str, ...]
    cwd: str = ""


def _tls(*extra: str, out: str = "{w}/keys", pw: str = "pw") -> tuple[str, ...]:
    return ("secrets", "tls", "--out", out, "--password-file", f"{{in}}/{pw}", "--force",
            *extra)


def _pw(out: str = "{w}/password", pw: str = "pw", force: bool = True) -> tuple[str, ...]:
    return ("secrets", "password", "--out", out, "--password-file", f"{{in}}/{pw}",
            *(["--force"] if force else []))


def _k8s(*extra: str, keys: str = "keys", password: str = "password", out: str = "{w}/k8s",
         force: bool = True) -> tuple[str, ...]:
    return ("k8s", "secrets", "--keys", f"{{w}}/{keys}", "--password", f"{{w}}/{password}",
            "-o", out, *(["--force"] if force else []), *extra)


def _tpl(*extra: str, out: str = "{w}/k8s", force: bool = True,
         image: str = "x:1") -> tuple[str, ...]:
    return ("k8s", "spark-templates", "--image", image, "--password", "{w}/password", "-o",
            out, *(["--force"] if force else []), *extra)


CASES = [
    Case("tls-empty-cn", _tls("--cn", ""), 2, ("--cn", "empty")),
    Case("tls-cn-65-chars", _tls("--cn", "a" * 30 + "." + "b" * 34), 2, ("--cn", "64")),
    Case("tls-idn-san", _tls("--san", "bücher.example"), 2, ("bücher", "xn--")),
    Case("tls-idn-cn", _tls("--cn", "bücher.example"), 2, ("--cn", "xn--")),
    Case("tls-san-blank", _tls("--san", "a b"), 2, ("--san", "host name")),
    Case("tls-san-newline", _tls("--san", "host\n"), 2, ("--san", "control")),
    Case("tls-san-zone", _tls("--san", "fe80::1%eth0"), 2, ("--san", "zone")),
    Case("tls-days-past-9999", _tls("--days", "99999999"), 2, ("--days", "9999-12-31")),
    Case("tls-days-1e20", _tls("--days", "1e20"), 2, ("--days", "whole number")),
    Case("tls-days-40-digits", _tls("--days", "9" * 40), 2, ("--days", "9999-12-31")),
    Case("tls-days-zero", _tls("--days", "0"), 2, ("--days", "at least a day")),
    Case("tls-days-negative", _tls("--days", "-3"), 2, ("--days", "whole number")),
    Case("tls-password-not-utf8", _tls(pw="nonutf8"), 2, ("{in}/nonutf8", "UTF-8")),
    Case("tls-password-374-bytes", _tls(pw="long"), 2, ("{in}/long", "373")),
    Case("tls-password-not-ascii", _tls(pw="nonascii"), 2, ("{in}/nonascii", "ASCII")),
    Case("tls-password-control", _tls(pw="ctrl"), 2, ("{in}/ctrl", "control")),
    Case("tls-password-nul", _tls(pw="nul"), 2, ("{in}/nul", "control")),
    Case("tls-password-short", _tls(pw="short"), 2, ("{in}/short", "at least")),
    Case("tls-out-is-a-file", _tls(out="{w}/afile"), 2, ("{w}/afile", "not a folder")),
    Case("tls-out-under-a-file", _tls(out="{w}/afile/keys"), 2, ("{w}/afile/keys",)),
    Case("tls-foreign-file", _tls(out="{w}/keys-foreign"), 2, ("notes.txt", "even with")),
    Case("tls-no-force", _tls()[:-1], 2, ("{w}/keys", "--force")),
    Case("password-not-utf8", _pw(pw="nonutf8"), 2, ("UTF-8",)),
    Case("password-374-bytes-utf8", _pw(pw="longutf8"), 2, ("374 bytes", "373")),
    Case("password-nul", _pw(pw="nul"), 2, ("control",)),
    Case("password-out-is-a-file", _pw(out="{w}/afile"), 2, ("not a folder",)),
    Case("password-foreign-file", _pw(out="{w}/password-foreign"), 2, ("notes.txt",)),
    Case("password-out-dot-force", _pw(out="."), 2, ("notes.txt",), cwd="cwd-foreign"),
    Case("password-out-dot-own-folder", _pw(out="."), 2, ("working folder",),
         cwd="password"),
    Case("password-no-force", _pw(force=False), 2, ("--force",)),
    Case("k8s-out-is-a-file", _k8s(out="{w}/afile"), 2, ("not a folder",)),
    Case("k8s-foreign-file", _k8s(out="{w}/k8s-foreign"), 2, ("notes.txt",)),
    Case("k8s-no-force", _k8s(force=False), 2, ("--force",)),
    Case("k8s-keys-symlink", _k8s(keys="keys-symlink"), 1, ("shadow", "symbolic link")),
    Case("k8s-keys-hardlink", _k8s(keys="keys-hardlink"), 1, ("shadow", "hard link")),
    Case("k8s-keys-fifo", _k8s(keys="keys-fifo"), 1, ("pipe", "not a regular file")),
    Case("k8s-keys-subfolder", _k8s(keys="keys-subdir"), 1, ("sub", "not a regular file")),
    Case("k8s-keys-bad-key-name", _k8s(keys="keys-badname"), 1, ("my key.pem", "key")),
    Case("k8s-keys-file-over-1mib", _k8s(keys="keys-onebig"), 1, ("big.bin", "larger")),
    Case("k8s-keys-secret-over-1mib", _k8s(keys="keys-toobig"), 1, ("ssl-keys", "1 MiB")),
    Case("k8s-password-symlink", _k8s(password="password-symlink"), 1,
         ("key.txt", "symbolic link")),
    Case("k8s-password-not-utf8", _k8s(password="password-binary"), 1,
         ("output.bin", "UTF-8")),
    Case("k8s-keys-missing", _k8s(keys="nope"), 2, ("nope", "does not exist")),
    Case("k8s-keys-is-a-file", _k8s(keys="afile"), 2, ("afile", "not a folder")),
    Case("k8s-namespace-upper", _k8s("--namespace", "ML"), 2, ("namespace", "RFC 1123")),
    Case("k8s-namespace-64", _k8s("--namespace", "a" * 64), 2, ("namespace",)),
    Case("k8s-namespace-newline", _k8s("--namespace", "ml\n"), 2, ("namespace",)),
    Case("k8s-namespace-empty", _k8s("--namespace", ""), 2, ("namespace",)),
    Case("templates-out-is-a-file", _tpl(out="{w}/afile"), 2, ("not a folder",)),
    Case("templates-foreign-file", _tpl(out="{w}/k8s-foreign"), 2, ("notes.txt",)),
    Case("templates-no-force", _tpl(force=False), 2, ("--force",)),
    Case("templates-epc-newline", _tpl("--sgx-epc", "16Gi\n"), 2, ("--sgx-epc",)),
    Case("templates-epc-empty", _tpl("--sgx-epc", ""), 2, ("--sgx-epc",)),
    Case("templates-driver-epc-control", _tpl("--driver-epc", "1\x01Gi"), 2,
         ("--driver-epc",)),
    Case("templates-driver-epc-newline", _tpl("--driver-epc", "8Gi\n"), 2, ("--driver-epc",)),
    Case("templates-image-empty", _tpl(image=""), 2, ("--image",)),
    Case("templates-image-newline", _tpl(image="x:1\nkind: Secret"), 2, ("--image",)),
    Case("templates-jvm-mem-empty", _tpl("--jvm-mem", ""), 2, ("--jvm-mem",)),
    Case("templates-jvm-mem-newline", _tpl("--jvm-mem", "12g\n"), 2, ("--jvm-mem",)),
    Case("templates-password-symlink",
         ("k8s", "spark-templates", "--image", "x:1", "--password", "{w}/password-symlink",
          "-o", "{w}/k8s", "--force"), 1, ("symbolic link",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_in_one_line_and_nothing_changes(case: Case, good: Path,
                                                 tmp_path: Path) -> None:
    work = _work(good, tmp_path, " ".join(case.args))
    fill = {"{w}": str(work), "{in}": str(tmp_path / "in")}

    def subst(text: str) -> str:
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    before = snapshot(tmp_path)
    result = run_cli(*map(subst, case.args), cwd=work / case.cwd if case.cwd else work)
    assert_one_line_error(result, *map(subst, case.fragments))
    assert result.returncode == case.code, result.stderr
    assert snapshot(tmp_path) == before
    assert HOST_SECRET.decode() not in result.stderr


# --------------------------------------------------------------------------
# Success paths: what --force replaces, and what it keeps.
# --------------------------------------------------------------------------
def test_force_replaces_only_after_success_and_drops_stale_files(good: Path, tmp_path: Path,
                                                                  ) -> None:
    """A forced run without keytool must not leave the old keystore.jks (old key) behind."""
    keys = _copy(good / "keys", tmp_path / "keys")
    old = snapshot(keys)
    assert "keystore.jks" in old
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    empty_path = tmp_path / "no-tools"
    empty_path.mkdir()
    result = run_cli("secrets", "tls", "--out", keys, "--password-file", pw, "--force",
                     env={"PATH": str(empty_path)})
    assert result.returncode == 0, result.stderr
    now = snapshot(keys)
    assert set(now) == set(old) - {"keystore.jks"}
    assert all(now[name][1] != old[name][1] for name in now)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "no-tools", "pw"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700


def test_k8s_commands_share_a_folder_and_keep_each_other(good: Path, tmp_path: Path) -> None:
    out = _copy(good / "k8s", tmp_path / "k8s")
    secrets_before = {n: (out / n).read_bytes() for n in
                      ("keys.yaml", "password.yaml", "spark-secret.yaml")}
    templates_before = (out / "spark-driver-template.yaml").read_bytes()
    result = run_cli("k8s", "spark-templates", "--image", "other:2", "-o", out, "--force")
    assert result.returncode == 0, result.stderr
    assert {n: (out / n).read_bytes() for n in secrets_before} == secrets_before
    assert (out / "spark-driver-template.yaml").read_bytes() != templates_before
    assert stat.S_IMODE((out / "keys.yaml").stat().st_mode) == 0o600
    # the conf without a password holds no secret again (0644), replacing the 0600 one
    assert stat.S_IMODE((out / "spark-security.conf").stat().st_mode) == 0o644
    result = run_cli("k8s", "secrets", "--keys", good / "keys", "--password",
                     good / "password", "--namespace", "ml", "-o", out, "--force")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((out / "keys.yaml").read_text())["metadata"]["namespace"] == "ml"
    assert b"other:2" in (out / "spark-driver-template.yaml").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s"]


def test_output_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    for force in ([], ["--force"]):
        result = run_cli("secrets", "password", "--out", link, "--password-file", pw, *force)
        assert result.returncode == 0, result.stderr
    assert link.is_symlink() and sorted(p.name for p in real.iterdir()) == ["key.txt",
                                                                             "output.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "pw", "real"]


def test_new_output_in_new_parents_and_nothing_left_on_error(tmp_path: Path) -> None:
    """Parents we created are removed again when the command fails."""
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "a" / "b" / "out", ["f"],
                                                    force=False) as stage:
        (stage / "f").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_folder(tmp_path / "a" / "b" / "out", ["f"], force=False) as stage:
        (stage / "f").write_text("x")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["out"]


def test_staging_refuses_a_file_that_raced_in(tmp_path: Path) -> None:
    """Checked again just before the swap: a file that appeared meanwhile is not destroyed."""
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UsageError, match="intruder"), \
            staged_folder(out, ["f"], force=True) as stage:
        (stage / "f").write_text("new")
        (out / "intruder").write_text("someone else's")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "intruder").read_text() == "someone else's"


def test_fallback_exchange_never_loses_the_old_content(tmp_path: Path) -> None:
    old, new = tmp_path / "out", tmp_path / "new"
    old.mkdir()
    (old / "f").write_text("old")
    new.mkdir()
    (new / "f").write_text("new")
    aside = exchange_by_renames(new, old)
    assert (old / "f").read_text() == "new" and (aside / "f").read_text() == "old"
    # the second rename fails (no such folder): the old content goes back in place
    with pytest.raises(FileNotFoundError):
        exchange_by_renames(tmp_path / "missing", old)
    assert (old / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".old")) \
        == [aside.name]


# --------------------------------------------------------------------------
# Real signals: Ctrl-C and SIGTERM while keytool runs leave the old output.
# --------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def start_tls_and_wait_for_keytool(out: Path, pw: Path, env: dict[str, str] | None = None,
                                   ) -> tuple[subprocess.Popen[bytes], int]:
    """Start `secrets tls --force`; return it and the pid of its keytool child, running."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_IMAGE_")}
    full_env.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "ppml_image", "secrets", "tls", "--out",
                             str(out), "--password-file", str(pw), "--force"],
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=out.parent)
    while proc.poll() is None:
        for child in _children(proc.pid):
            try:
                if b"-importkeystore" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return proc, child
            except OSError:
                continue
        time.sleep(0.002)
    raise AssertionError(f"keytool never ran: {proc.communicate()}")


def _wait_gone(pid: int) -> None:
    for _ in range(30_000):  # a bound, not a timing claim: never hang the suite
        if not Path(f"/proc/{pid}").exists() or \
                Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still running")


@pytest.mark.skipif(shutil.which("keytool") is None, reason="no JDK keytool on this machine")
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_keytool_leaves_old_output(good: Path, tmp_path: Path,
                                                 signum: int, code: int) -> None:
    keys = _copy(good / "keys", tmp_path / "keys")
    before = snapshot(tmp_path)
    pw = tmp_path.parent / f"{tmp_path.name}-pw"
    pw.write_text(PASSWORD)
    try:
        proc, keytool = start_tls_and_wait_for_keytool(keys, pw)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=600)
    finally:
        pw.unlink()
    assert proc.returncode == code, stderr
    assert stderr.decode().count("\n") == 1, stderr
    _wait_gone(keytool)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(shutil.which("keytool") is None, reason="no JDK keytool on this machine")
def test_kill_9_during_keytool_leaves_no_plaintext_password(tmp_path: Path) -> None:
    """kill -9 of the command while keytool runs: the password is in no file anywhere.

    Scanned: the output's parent (output and staging folder) and TMPDIR. Also
    checked on the live keytool: its environment holds only what it needs,
    never a PPML_IMAGE_* variable, and its command line holds no password.
    """
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmpdir.mkdir()
    password = "kill-9 canary " + os.urandom(8).hex()
    pw = tmp_path.parent / f"{tmp_path.name}-pw"  # outside the scanned folders
    pw.write_text(password + "\n")
    try:
        proc, keytool = start_tls_and_wait_for_keytool(
            work / "keys", pw, env={"TMPDIR": str(tmpdir), "PPML_IMAGE_KEY_PASSPHRASE":
                                    "passphrase-canary", "UNRELATED_VARIABLE": "x"})
        environ = Path(f"/proc/{keytool}/environ").read_bytes()
        cmdline = Path(f"/proc/{keytool}/cmdline").read_bytes()
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=600)
    finally:
        pw.unlink()
    assert proc.returncode == -signal.SIGKILL
    _wait_gone(keytool)  # PR_SET_PDEATHSIG: keytool does not outlive us
    names = {entry.split(b"=", 1)[0] for entry in environ.split(b"\0") if entry}
    assert names <= {b"PATH", b"JAVA_HOME", b"LANG", b"PPML_KEYTOOL_PASSWORD"}, names
    assert b"passphrase-canary" not in environ
    assert password.encode() not in cmdline
    needles = [password.encode(enc) for enc in ("utf-8", "utf-16-le", "utf-16-be")]
    scanned = 0
    for root in (work, tmpdir):
        for folder, _, files in os.walk(root):
            for name in files:
                data = (Path(folder) / name).read_bytes()
                scanned += 1
                assert not any(n in data for n in needles), Path(folder) / name
    assert scanned >= 1  # the staging folder kill -9 left: encrypted material only


def test_no_symlink_swapped_in_during_the_read_is_followed(tmp_path: Path) -> None:
    """A real race: a thread flips an entry between a file and a link to a host secret."""
    import threading

    from ppml_image._fs import read_regular_files
    from ppml_image.errors import PpmlError

    outside = tmp_path / "host-shadow"
    outside.write_bytes(HOST_SECRET)
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "server.crt").write_bytes(b"regular")
    stop = threading.Event()

    def flip() -> None:
        regular, link = tmp_path / "regular", tmp_path / "link"
        while not stop.is_set():
            regular.write_bytes(b"regular")
            os.replace(regular, folder / "server.crt")
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(outside)
            os.replace(link, folder / "server.crt")

    thread = threading.Thread(target=flip)
    thread.start()
    outcomes = {"read": 0, "refused": 0}
    try:
        for _ in range(200_000):  # a bound; usually done after a few thousand
            if min(outcomes.values()) >= 50:
                break
            try:
                files = read_regular_files(folder, "keys", limit=1 << 20)
            except PpmlError as exc:
                assert "symbolic link" in str(exc), exc
                outcomes["refused"] += 1
                continue
            assert files.get("server.crt", b"regular") == b"regular"
            outcomes["read"] += 1
    finally:
        stop.set()
        thread.join()
    assert min(outcomes.values()) >= 50, outcomes  # the race really happened, both ways
