"""Issue 16, point 5: the smaller things the hostile pass found.

Each case goes through the public command (or, for a parser, its public
function and hypothesis) and is refused with one line naming the user's
file or value and the rule; where the fix is "it now works", the test shows
it working and leaving nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import COMMON, assert_one_line_error, run_cli, write_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.spark.tls import name_problem

PAL = COMMON / "fake_libpal.so"


def _sign(manifest: Path, output: Path, key: Path | str, *extra: str | Path):
    return run_cli("sign", "--manifest", manifest, "--output", output, "--libpal", PAL,
                   "--key", key, "--date", "2024-01-01", *extra)


def _hidden(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


# --------------------------------------------------------------------------
# 1. `manifest OUT` never writes over a file the manifest measures
# --------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["app/bin/app", "app/lib/libfoo.so",
                                    "usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"])
def test_manifest_output_that_is_a_measured_file_is_refused(target: str, tmp_path: Path,
                                                            rootfs: Path) -> None:
    template = write_manifest(tmp_path)
    out = rootfs / target
    before = out.read_bytes()
    result = run_cli("manifest", template, out, "--chroot", rootfs, "--no-check")
    assert_one_line_error(result, str(out), "the enclave measures")
    assert result.returncode == 2
    assert out.read_bytes() == before
    assert _hidden(out.parent) == []


def test_manifest_output_hard_linked_to_a_measured_file_is_refused(tmp_path: Path,
                                                                   rootfs: Path) -> None:
    template = write_manifest(tmp_path)
    link = tmp_path / "app.manifest.out"
    os.link(rootfs / "app/bin/app", link)
    result = run_cli("manifest", template, link, "--chroot", rootfs, "--no-check")
    assert_one_line_error(result, str(link), "file:/app/bin/app", "measures")
    assert (rootfs / "app/bin/app").read_bytes() == b"\x7fELF app" * 100


def test_manifest_output_that_is_a_relative_trusted_file_on_the_host_is_refused(
        tmp_path: Path, rootfs: Path) -> None:
    """Without --chroot, a relative URI is a file of the working folder (as in Gramine)."""
    (tmp_path / "data.bin").write_bytes(b"data")
    text = (f'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\nloader.entrypoint.uri = '
            f'"file:{rootfs}/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"\n'
            'sgx.enclave_size = "64M"\nsgx.max_threads = 2\n'
            'sgx.trusted_files = ["file:data.bin"]\n')
    template = write_manifest(tmp_path, text)
    result = run_cli("manifest", template, "data.bin", "--no-check", cwd=tmp_path)
    assert_one_line_error(result, "data.bin", "file:data.bin", "measures")
    assert (tmp_path / "data.bin").read_bytes() == b"data"


def test_manifest_output_elsewhere_still_works(tmp_path: Path, rootfs: Path) -> None:
    template = write_manifest(tmp_path)
    result = run_cli("manifest", template, tmp_path / "out.manifest", "--chroot", rootfs,
                     "--no-check")
    assert result.returncode == 0, result.stderr
    assert "file:/app/bin/app" in (tmp_path / "out.manifest").read_text()


# --------------------------------------------------------------------------
# 2. Control characters in an error line are printed escaped
# --------------------------------------------------------------------------
def test_nul_from_a_file_is_escaped_in_the_error_line(tmp_path: Path, rootfs: Path) -> None:
    """A key with a NUL and an escape sequence in it is named escaped (it once was
    printed raw); Gramine's reading now refuses it before the schema sees it."""
    template = write_manifest(tmp_path, 'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                              'sgx.enclave_size = "64M"\nsgx.max_threads = 2\n'
                              'sgx."k\\u0000\\u001b[2J" = 1\n')
    result = run_cli("manifest", template, tmp_path / "out.manifest", "--chroot", rootfs)
    assert_one_line_error(result, 'sgx."k\\u0000\\u001b[2J"', "U+0000")
    assert "\x00" not in result.stderr and "\x1b" not in result.stderr


@pytest.mark.parametrize("char", ["\x1b", "\x07", "\x7f", "\x9b", "\u202e", "\u200b", "\t"])
def test_control_characters_in_a_file_name_are_escaped(char: str, tmp_path: Path,
                                                       rootfs: Path, enclave_key: Path) -> None:
    missing = tmp_path / f"evil{char}name.manifest"
    result = _sign(missing, tmp_path / "a.manifest.sgx", enclave_key, "--chroot", rootfs)
    shown = " " if char == "\t" else (f"\\x{ord(char):02x}" if ord(char) < 0x100
                                      else f"\\u{ord(char):04x}")
    assert_one_line_error(result, f"evil{shown}name.manifest")
    assert char not in result.stderr.rstrip("\n")


def test_json_failure_escapes_too(tmp_path: Path, rootfs: Path, enclave_key: Path) -> None:
    result = run_cli("sign", "--manifest", tmp_path / "a\x1bb", "--output",
                     tmp_path / "a.manifest.sgx", "--libpal", PAL, "--key", enclave_key,
                     "--json")
    assert '"error": "' in result.stdout and "a\\\\x1bb" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr


# --------------------------------------------------------------------------
# 3. A folder or a device as module-path says so
# --------------------------------------------------------------------------
@pytest.mark.parametrize("module,fragment", [
    ("{tmp}", "is a folder, not a module file"),
    ("/dev/null", "is a device, FIFO or socket, not a module file"),
    ("{tmp}/missing.so", "no such file"),
    ("{tmp}/dangling.so", "symbolic link to nothing"),
])
def test_module_path_that_is_not_a_file(module: str, fragment: str, tmp_path: Path,
                                        rootfs: Path) -> None:
    (tmp_path / "dangling.so").symlink_to(tmp_path / "nowhere")
    module = module.replace("{tmp}", str(tmp_path))
    uri = f"pkcs11:token=ppml;object=k?module-path={module}"
    result = _sign(write_manifest(tmp_path), tmp_path / "a.manifest.sgx", uri,
                   "--chroot", rootfs)
    assert_one_line_error(result, f"PKCS#11 module {module}", fragment)


# --------------------------------------------------------------------------
# 4. --chroot: a missing folder "does not exist"; a file "is not a folder"
# --------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["manifest", "sign"])
@pytest.mark.parametrize("make,fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b"x"), "is not a folder"),
    (lambda p: p.symlink_to(p.parent / "nowhere"), "symbolic link to nothing"),
])
def test_bad_chroot_says_what_it_is(command: str, make, fragment: str,
                                    tmp_path: Path) -> None:
    chroot = tmp_path / "root"
    make(chroot)
    manifest = write_manifest(tmp_path)
    if command == "manifest":
        result = run_cli("manifest", manifest, tmp_path / "out.manifest", "--chroot", chroot)
    else:  # a key that does not exist: the chroot is checked before any key is read
        result = _sign(manifest, tmp_path / "a.manifest.sgx", tmp_path / "no-key.pem",
                       "--chroot", chroot)
    assert_one_line_error(result, f"--chroot {chroot}", fragment)
    assert result.returncode == 2
    assert not (tmp_path / "out.manifest").exists()


# --------------------------------------------------------------------------
# 5. Long output names: fail before the work, or work (temporary names fit)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("length", [250, 251, 252, 253, 254, 255])
def test_long_output_names_work_when_the_names_fit(length: int, tmp_path: Path,
                                                   rootfs: Path, enclave_key: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    output = out / ("a" * (length - len(".manifest.sgx")) + ".manifest.sgx")
    result = _sign(write_manifest(tmp_path), output, enclave_key, "--chroot", rootfs)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == sorted([output.name, output.name[:-13] + ".sig"])
    manifest = run_cli("manifest", write_manifest(tmp_path), out / ("m" * length),
                       "--chroot", rootfs, "--no-check")
    assert manifest.returncode == 0, manifest.stderr
    assert _hidden(out) == []


@pytest.mark.parametrize("length", [252, 253, 254, 255])
def test_sig_name_that_would_not_fit_fails_before_any_work(length: int, tmp_path: Path,
                                                           rootfs: Path) -> None:
    """OUTPUT without .manifest.sgx gets '.sig' appended: 4 more bytes than NAME_MAX allows."""
    out = tmp_path / "out"
    out.mkdir()
    output = out / ("b" * length)
    # The key does not exist: an error about it would mean the work had started.
    result = _sign(write_manifest(tmp_path), output, tmp_path / "no-key.pem",
                   "--chroot", rootfs)
    assert_one_line_error(result, f"{output}.sig", f"{length + 4} bytes", "at most 255")
    assert result.returncode == 2
    assert os.listdir(out) == []


def test_name_over_name_max_fails_before_rendering(tmp_path: Path, rootfs: Path) -> None:
    out = tmp_path / ("c" * 256)
    template = tmp_path / "broken.template"
    template.write_text("{{ this is not jinja")  # rendering would fail with another error
    result = run_cli("manifest", template, out, "--chroot", rootfs)
    assert_one_line_error(result, "256 bytes", "at most 255")
    assert result.returncode == 2


def test_export_signing_data_json_name_is_checked_up_front(tmp_path: Path,
                                                           rootfs: Path) -> None:
    data = tmp_path / ("d" * 251)  # DATA.json is 256 bytes
    result = run_cli("sign", "-m", write_manifest(tmp_path), "-o", tmp_path / "a.manifest.sgx",
                     "--libpal", PAL, "--chroot", rootfs, "--export-signing-data", data)
    assert_one_line_error(result, f"{data}.json", "256 bytes")
    assert not (tmp_path / "a.manifest.sgx").exists()


# --------------------------------------------------------------------------
# 6. kill -9 during sign: the next run removes the temporary files left behind
# --------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace delivers the SIGKILL")
def test_temporary_files_of_a_killed_sign_are_removed_by_the_next_run(
        tmp_path: Path, rootfs: Path, enclave_key: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    manifest = write_manifest(tmp_path)
    args = [sys.executable, "-m", "ppml_image", "sign", "-m", str(manifest),
            "-o", str(out / "a.manifest.sgx"), "--libpal", str(PAL), "-k", str(enclave_key),
            "--chroot", str(rootfs), "--date", "2024-01-01"]
    # strace sends a real SIGKILL as the signer enters its first rename(2):
    # both temporary files are written, neither is renamed.
    killed = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=rename",
                             "-e", "inject=rename:signal=SIGKILL:when=1", *args],
                            capture_output=True, check=False, timeout=300)
    assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), killed
    left = _hidden(out)
    assert len(left) == 2, left
    assert all(".ppml-" in name and name.endswith(".tmp") for name in left), left
    # Not ours to remove: a run in progress (this process is alive), a file
    # whose name only looks like ours, and a folder.
    alive = f".a.sig.ppml-{os.getpid()}-abcdefgh.tmp"
    lookalike = ".a.sig.ppml-notapid-abcdefgh.tmp"
    for name in (alive, lookalike):
        (out / name).write_bytes(b"keep")
    dead_folder = f".x.ppml-{_dead_pid()}-abcdefgh.tmp"
    (out / dead_folder).mkdir()
    again = subprocess.run(args, capture_output=True, text=True, check=False, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _hidden(out) == sorted([alive, lookalike, dead_folder])
    assert sorted(p for p in os.listdir(out) if not p.startswith(".")) == [
        "a.manifest.sgx", "a.sig"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_a_stale_temporary_of_manifest_is_removed(tmp_path: Path, rootfs: Path) -> None:
    """The same clean-up for `manifest` (and every atomic write): by owner, not by age."""
    stale = tmp_path / f".out.manifest.ppml-{_dead_pid()}-k2j4h6g8.tmp"
    stale.write_bytes(b"half a manifest")
    result = run_cli("manifest", write_manifest(tmp_path), tmp_path / "out.manifest",
                     "--chroot", rootfs, "--no-check")
    assert result.returncode == 0, result.stderr
    assert not stale.exists()


# --------------------------------------------------------------------------
# 7. Ctrl-C in the first second of `secrets tls`: one line, never a traceback
# --------------------------------------------------------------------------
def _handlers_set(pid: int) -> bool:
    """Whether the process catches SIGTERM: Python itself never does, so this is
    the moment our own start-up code has run (before that, a Ctrl-C belongs to
    the interpreter's start-up, which no program can change)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except FileNotFoundError:
        return True
    return False


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6,
                                   0.8, 1.0])
def test_ctrl_c_in_the_first_second_of_secrets_tls(delay: float, tmp_path: Path) -> None:
    password = tmp_path / "pw.txt"
    password.write_text("correct horse battery\n")
    out = tmp_path / "tls"
    proc = subprocess.Popen([sys.executable, "-m", "ppml_image", "secrets", "tls", "--out",
                             str(out), "--password-file", str(password)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not _handlers_set(proc.pid):
        time.sleep(0.001)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    if proc.returncode == 0:  # finished before the signal: everything is there
        assert {"keystore.p12", "server.crt", "server.key", "server.pem"} <= set(
            os.listdir(out)), os.listdir(out)
        return
    assert proc.returncode == 130, err
    assert err.splitlines() == ["ppml-image: error: interrupted"], err
    # Nothing half-made: no folder, or (a signal just after the swap) a whole one.
    assert not out.exists() or {"keystore.p12", "server.crt", "server.key",
                                "server.pem"} <= set(os.listdir(out))
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


_SWALLOWED = """
import os, signal, sys
from ppml_image import _signals
from ppml_image.cli.common import handles_errors
from ppml_image.errors import PpmlError

class Swallows:
    def __del__(self):  # Python prints and drops an exception raised here
        os.kill(os.getpid(), signal.SIG{name})

@handles_errors
def command():
    Swallows()  # the signal's exception is raised in __del__, and dropped
    raise PpmlError("a later step failed because of it")

_signals.exit_on_signal()
try:
    command()
except Exception as exc:  # typer.Exit, as the CLI's app would turn into the exit code
    sys.exit(getattr(exc, "exit_code", 99))
"""


@pytest.mark.parametrize("name,code,word", [("INT", 130, "interrupted"),
                                            ("TERM", 143, "terminated")])
def test_a_swallowed_signal_is_the_outcome_even_if_a_later_step_fails(
        name: str, code: int, word: str) -> None:
    """A signal whose exception Python dropped (in a __del__, an at-fork
    callback) must not let the failure it caused pass for the outcome."""
    proc = subprocess.run([sys.executable, "-c", _SWALLOWED.replace("{name}", name)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc
    assert proc.stderr.splitlines() == [f"ppml-image: error: {word}"], proc.stderr


def test_a_signal_during_shut_down_never_hides_the_exit_code() -> None:
    """A Ctrl-C that lands after the outcome is printed, while Python shuts
    down, used to kill the process (exit -2/-15 with nothing said). Signals
    are sent every half millisecond until the process ends: every run ends
    with its outcome's code (0) or ours for a signal (130/143), never killed."""
    codes = []
    for run in range(24):
        number = signal.SIGINT if run % 2 else signal.SIGTERM
        proc = subprocess.Popen([sys.executable, "-m", "ppml_image", "keygen", "--help"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None and not _handlers_set(proc.pid):
            time.sleep(0.001)
        time.sleep(0.04 + 0.01 * (run % 8))
        while proc.poll() is None:
            proc.send_signal(number)
            time.sleep(0.0005)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        codes.append(proc.returncode)
    assert set(codes) <= {0, 130, 143}, codes


# --------------------------------------------------------------------------
# 8. --san: DNS label syntax by allow-list; a bad IPv4 is not a host name
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["1.2.3.999", "127.1", "1.2.3.4.5", "0x7f.1", "10.0.0.0.1",
                                  "256.1.1.1", "1.2.3.04a", "*.1.2.3", "123"])
def test_san_that_is_not_an_address_nor_a_host_name_is_refused(name: str,
                                                                tmp_path: Path) -> None:
    result = run_cli("secrets", "tls", "--out", tmp_path / "tls", "--san", name,
                     "--password-file", tmp_path / "missing")
    assert_one_line_error(result, f"--san {name!r}", "last one starting with a letter")
    assert result.returncode == 2


@pytest.mark.parametrize("name", ["localhost", "spark-master", "a1.example.org", "x.y-z.io",
                                  "*.svc.cluster.local", "10.0.0.5", "::1", "1.2.3.4",
                                  "xn--bcher-kva.example"])
def test_good_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789.x-ab*", min_size=1, max_size=30))
def test_an_accepted_dns_name_has_a_top_label_starting_with_a_letter(name: str) -> None:
    import ipaddress

    if name_problem(name) is not None:
        return
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    labels = name.split(".")
    assert labels[-1][:1].isalpha(), name
    assert all(label and not label.startswith("-") and not label.endswith("-")
               for label in labels if label != "*"), name


# --------------------------------------------------------------------------
# 9. Image references over Docker's 255-character name limit
# --------------------------------------------------------------------------
@pytest.mark.parametrize("image,ok", [
    ("a" * 237 + ":1", True),                        # docker.io/library/ + 237 = 255
    ("a" * 238 + ":1", False),
    ("team/" + "a" * 240 + ":1", True),              # docker.io/team/ + 240 = 255
    ("team/" + "a" * 241 + ":1", False),
    ("127.0.0.1:5000/" + "a" * 240 + ":1", True),    # host + path = 255
    ("127.0.0.1:5000/" + "a" * 241 + ":1", False),
    ("registry.example.com:5000/" + "a" * 250, False),
])
def test_image_reference_over_dockers_name_limit(image: str, ok: bool) -> None:
    result = run_cli("run", image, "--print")
    if ok:
        assert result.returncode == 0, result.stderr
        assert image in result.stdout
    else:
        assert_one_line_error(result, "longer than 255")
        assert result.returncode == 2


# --------------------------------------------------------------------------
# 10. --sgx-epc 0 is refused
# --------------------------------------------------------------------------
@pytest.mark.parametrize("option,value", [("--sgx-epc", "0"), ("--sgx-epc", "0Gi"),
                                          ("--sgx-epc", "0.0"), ("--sgx-epc", "00.00Mi"),
                                          ("--driver-epc", "0"), ("--driver-epc", "0k")])
def test_zero_epc_is_refused(option: str, value: str, tmp_path: Path) -> None:
    result = run_cli("k8s", "spark-templates", "--image", "ppml/job:1", option, value,
                     "-o", tmp_path / "k8s")
    assert_one_line_error(result, f"{option} {value}", "more than zero")
    assert result.returncode == 2
    assert not (tmp_path / "k8s").exists()


def test_small_epc_is_accepted(tmp_path: Path) -> None:
    result = run_cli("k8s", "spark-templates", "--image", "ppml/job:1", "--sgx-epc", "0.5Gi",
                     "-o", tmp_path / "k8s")
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------
# 11. run --print: a folder whose path holds ':' is refused (docker -v splits on it)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--data", "--keys", "--password"])
def test_run_refuses_a_folder_with_a_colon(option: str, tmp_path: Path) -> None:
    folder = tmp_path / "a:b"
    folder.mkdir()
    result = run_cli("run", "ppml/job:1", option, folder, "--print")
    assert_one_line_error(result, f"{option} {folder}", "holds ':'")
    assert result.returncode == 2


def test_run_refuses_a_link_to_a_folder_with_a_colon(tmp_path: Path) -> None:
    (tmp_path / "x:y").mkdir()
    (tmp_path / "plain").symlink_to(tmp_path / "x:y")
    result = run_cli("run", "ppml/job:1", "--data", tmp_path / "plain", "--print")
    assert_one_line_error(result, "--data", "holds ':'")


def test_run_print_of_a_plain_folder_still_works(tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    folder.mkdir()
    result = run_cli("run", "ppml/job:1", "--data", folder, "--print")
    assert result.returncode == 0, result.stderr
    assert f"'{folder}:/ppml/data:ro'" in result.stdout


# --------------------------------------------------------------------------
# 12. A trusted file under /proc or /sys is refused
# --------------------------------------------------------------------------
@pytest.mark.parametrize("uri", ["file:/proc/self/environ", "file:/proc/self/", "file:/proc",
                                 "file:/sys/kernel/mm/transparent_hugepage/enabled"])
def test_trusted_file_under_proc_or_sys_on_the_host(uri: str, tmp_path: Path,
                                                    enclave_key: Path, rootfs: Path) -> None:
    text = (f'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\nloader.entrypoint.uri = '
            f'"file:{rootfs}/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"\n'
            'sgx.enclave_size = "64M"\nsgx.max_threads = 2\n'
            f'sgx.trusted_files = ["{uri}"]\n')
    result = _sign(write_manifest(tmp_path, text), tmp_path / "a.manifest.sgx", enclave_key)
    root = "/proc" if "/proc" in uri else "/sys"
    assert_one_line_error(result, repr(uri), f"under {root}")
    assert not (tmp_path / "a.manifest.sgx").exists()


def test_trusted_link_into_proc_on_the_host(tmp_path: Path, enclave_key: Path,
                                            rootfs: Path) -> None:
    (tmp_path / "innocent").symlink_to("/proc/self/environ")
    text = (f'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\nloader.entrypoint.uri = '
            f'"file:{rootfs}/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"\n'
            'sgx.enclave_size = "64M"\nsgx.max_threads = 2\n'
            f'sgx.trusted_files = ["file:{tmp_path}/innocent"]\n')
    result = _sign(write_manifest(tmp_path, text), tmp_path / "a.manifest.sgx", enclave_key)
    assert_one_line_error(result, "innocent", "under /proc")


@pytest.mark.parametrize("where", ["proc/cpuinfo", "sys/x"])
def test_trusted_file_under_proc_inside_a_chroot(where: str, tmp_path: Path,
                                                 enclave_key: Path, rootfs: Path) -> None:
    (rootfs / where).parent.mkdir(parents=True)
    (rootfs / where).write_bytes(b"looks like a file")
    (rootfs / "app/link").symlink_to(f"/{where}")
    for uri in (f"file:/{where}", "file:/app/link"):
        text = ('libos.entrypoint = "/app/bin/app"\nfs.mounts = []\nsgx.enclave_size = "64M"\n'
                f'sgx.max_threads = 2\nsgx.trusted_files = ["{uri}"]\n')
        result = _sign(write_manifest(tmp_path, text), tmp_path / "a.manifest.sgx",
                       enclave_key, "--chroot", rootfs)
        assert_one_line_error(result, repr(uri), f"under /{where.split('/')[0]}")


def test_loader_entrypoint_under_proc_is_refused(tmp_path: Path, enclave_key: Path) -> None:
    text = ('libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
            'loader.entrypoint.uri = "file:/proc/self/exe"\n'
            'sgx.enclave_size = "64M"\nsgx.max_threads = 2\n')
    result = _sign(write_manifest(tmp_path, text), tmp_path / "a.manifest.sgx", enclave_key)
    assert_one_line_error(result, "loader.entrypoint", "under /proc")


# --------------------------------------------------------------------------
# 13. An extractable or non-sensitive token key gets a warning
# --------------------------------------------------------------------------
_EXPOSED_KEY = """
import sys
import pkcs11
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, KeyType, ObjectClass

module, pin, pem, label, key_id, sensitive, extractable = sys.argv[1:]
key = serialization.load_pem_private_key(open(pem, "rb").read(), password=None)
n = key.private_numbers()
def b(value):
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
token = pkcs11.lib(module).get_token(token_label="ppml")
with token.open(rw=True, user_pin=pin) as session:
    session.create_object({
        Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.RSA,
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SIGN: True,
        Attribute.LABEL: label, Attribute.ID: bytes.fromhex(key_id),
        Attribute.SENSITIVE: sensitive == "1", Attribute.EXTRACTABLE: extractable == "1",
        Attribute.MODULUS: b(n.public_numbers.n),
        Attribute.PUBLIC_EXPONENT: b(n.public_numbers.e),
        Attribute.PRIVATE_EXPONENT: b(n.d), Attribute.PRIME_1: b(n.p),
        Attribute.PRIME_2: b(n.q), Attribute.EXPONENT_1: b(n.dmp1),
        Attribute.EXPONENT_2: b(n.dmq1), Attribute.COEFFICIENT: b(n.iqmp)})
"""


@pytest.fixture(scope="module")
def exposed_token(tmp_path_factory: pytest.TempPathFactory, enclave_key: Path):
    """A token of our own (not the session's) with real keys the token would hand out."""
    from softhsm import make_softhsm

    hsm = make_softhsm(tmp_path_factory.mktemp("softhsm-exposed"))
    for label, key_id, sensitive, extractable in (("extractable", "a1", "1", "1"),
                                                  ("not-sensitive", "a2", "0", "0"),
                                                  ("both", "a3", "0", "1")):
        subprocess.run([sys.executable, "-c", _EXPOSED_KEY, hsm.module, hsm.pin,
                        str(enclave_key), label, key_id, sensitive, extractable],
                       env={**os.environ, **hsm.env}, check=True, timeout=120)
    return hsm


@pytest.mark.parametrize("label,fragments", [
    ("extractable", ["CKA_EXTRACTABLE is true"]),
    ("not-sensitive", ["CKA_SENSITIVE is false"]),
    ("both", ["CKA_SENSITIVE is false", "CKA_EXTRACTABLE is true"]),
])
def test_exposed_token_key_signs_with_a_warning(label: str, fragments: list[str],
                                                exposed_token, tmp_path: Path,
                                                rootfs: Path) -> None:
    result = run_cli("sign", "-m", write_manifest(tmp_path), "-o", tmp_path / "a.manifest.sgx",
                     "--libpal", PAL, "-k", exposed_token.uri(label), "--chroot", rootfs,
                     env=exposed_token.env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.stderr
    assert "can leave the token" in warnings[0] and f"object '{label}'" in warnings[0]
    for fragment in fragments:
        assert fragment in warnings[0]
    assert (tmp_path / "a.sig").exists()


def test_sensitive_token_key_gets_no_warning(exposed_token, tmp_path: Path,
                                             rootfs: Path) -> None:
    result = run_cli("sign", "-m", write_manifest(tmp_path), "-o", tmp_path / "a.manifest.sgx",
                     "--libpal", PAL, "-k", exposed_token.uri("vector-key"), "--chroot", rootfs,
                     env=exposed_token.env)
    assert result.returncode == 0, result.stderr
    assert "can leave the token" not in result.stderr


def test_private_file_modes_are_unchanged_by_the_new_temporary_names(tmp_path: Path) -> None:
    """Keys are still written 0600 through the renamed temporaries."""
    result = run_cli("keygen", tmp_path / "k.pem")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600
    assert _hidden(tmp_path) == []
