"""`sign` writes both outputs or neither (issue 11.2), and every command's
output files are checked before any work.

A bad output path is refused up front, naming the user's path (never a
temporary name) and writing nothing. The .manifest.sgx is renamed into place
first and the .sig last, after the old .sig is removed: a real `kill -9` at any
moment leaves a .sig only beside the .manifest.sgx it signs.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_inputs import run_inprocess
from conftest import COMMON, assert_one_line_error, run_cli, write_manifest

PAL = COMMON / "fake_libpal.so"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@dataclass
class Out:
    """A bad output: sign's extra args given the work folder (holding app.manifest,
    key.pem, rootfs/ and out/), and what the one line must say."""

    id: str
    args: Callable[[Path], list[str]]
    fragments: tuple[str, ...]
    setup: Callable[[Path], None] | None = None


def _o(path: str, *extra: str) -> Callable[[Path], list[str]]:
    return lambda w: ["-o", path.replace("{w}", str(w)), *[e.replace("{w}", str(w))
                                                          for e in extra]]


def _mkdir(rel: str) -> Callable[[Path], None]:
    return lambda w: (w / rel).mkdir(parents=True)


def _hardlink(w: Path) -> None:
    os.link(w / "app.manifest", w / "out/linked.manifest.sgx")


BAD_OUTPUTS = [
    Out("output-is-a-folder", _o("{w}/out/app.manifest.sgx"), ("{w}/out/app.manifest.sgx",
                                                             "is a folder"),
        setup=_mkdir("out/app.manifest.sgx")),
    Out("sigfile-is-a-folder", _o("{w}/out/app.manifest.sgx", "--sigfile", "{w}/out/d"),
        ("{w}/out/d", "is a folder"), setup=_mkdir("out/d")),
    Out("missing-parent", _o("{w}/out/no/such/app.manifest.sgx"), ("{w}/out/no/such",
                                                                  "does not exist")),
    Out("parent-is-a-file", _o("{w}/app.manifest/app.manifest.sgx"), ("{w}/app.manifest",)),
    Out("proc", _o("/proc/app.manifest.sgx"), ("/proc/app.manifest.sgx", "proc")),
    Out("proc-self", _o("/proc/self/app.manifest.sgx"), ("/proc/self/app.manifest.sgx",
                                                        "proc")),
    Out("sys", _o("/sys/kernel/app.manifest.sgx"), ("/sys/kernel/app.manifest.sgx", "sysfs")),
    Out("sigfile-in-proc", _o("{w}/out/a.manifest.sgx", "--sigfile", "/proc/a.sig"),
        ("/proc/a.sig",)),
    Out("dev-null", _o("/dev/null"), ("/dev/null", "device")),
    Out("sigfile-dev-null", _o("{w}/out/a.manifest.sgx", "--sigfile", "/dev/null"),
        ("/dev/null", "device")),
    Out("output-is-the-manifest", _o("{w}/app.manifest"), ("{w}/app.manifest", "same file")),
    Out("sigfile-is-the-key", _o("{w}/out/a.manifest.sgx", "--sigfile", "{w}/key.pem"),
        ("{w}/key.pem", "same file")),
    Out("sigfile-is-libpal", _o("{w}/out/a.manifest.sgx", "--sigfile", str(PAL)),
        (str(PAL), "same file")),
    Out("output-is-the-manifest-through-dots", _o("{w}/out/../out/../app.manifest"),
        ("same file",)),
    Out("sigfile-is-libpal-through-a-symlink", _o("{w}/out/a.manifest.sgx", "--sigfile",
                                                  "{w}/out/pal.sig"),
        ("same file",), setup=lambda w: (w / "out/pal.sig").symlink_to(PAL)),
    Out("output-hard-link-to-manifest", _o("{w}/out/linked.manifest.sgx"), ("same file",),
        setup=_hardlink),
    Out("output-and-sigfile-the-same", _o("{w}/out/a", "--sigfile", "{w}/out/./a"),
        ("same file",)),
    Out("output-is-a-trusted-file", _o("{w}/rootfs/app/lib/libfoo.so", "--chroot",
                                       "{w}/rootfs"), ("libfoo.so", "measures")),
    Out("sigfile-is-the-entrypoint", _o("{w}/out/a.manifest.sgx", "--sigfile",
                                        "{w}/rootfs/app/bin/app", "--chroot", "{w}/rootfs"),
        ("app/bin/app", "measures")),
]


@pytest.fixture
def work(tmp_path: Path, rootfs: Path, enclave_key: Path) -> Path:
    write_manifest(tmp_path)
    shutil.copy(enclave_key, tmp_path / "key.pem")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/app.sig").write_bytes(b"an old signature, kept")
    return tmp_path


@pytest.mark.parametrize("case", BAD_OUTPUTS, ids=[c.id for c in BAD_OUTPUTS])
def test_bad_output_is_refused_up_front(case: Out, work: Path) -> None:
    if case.setup:
        case.setup(work)
    before = snapshot(work)
    args = case.args(work)
    if "--chroot" not in args:
        args += ["--chroot", str(work / "rootfs")]
    result = run_inprocess("sign", "-m", work / "app.manifest", "--libpal", PAL,
                           "-k", work / "key.pem", *args)
    assert_one_line_error(result, *(f.replace("{w}", str(work)) for f in case.fragments))
    assert result.returncode == 2, result
    assert ".tmp" not in result.stderr
    assert snapshot(work) == before


def test_output_folder_keeps_the_old_sig(work: Path) -> None:
    """The old bug: with -o an existing folder, the .sig was replaced and exit 70."""
    (work / "out/app").mkdir()
    result = run_cli("sign", "-m", work / "app.manifest", "-o", work / "out/app",
                     "--libpal", PAL, "-k", work / "key.pem", "--chroot", work / "rootfs")
    assert_one_line_error(result, "is a folder")
    assert result.returncode == 2
    assert (work / "out/app.sig").read_bytes() == b"an old signature, kept"
    assert sorted(os.listdir(work / "out")) == ["app", "app.sig"]


def test_bad_output_is_refused_before_the_passphrase_prompt_or_key(work: Path) -> None:
    """No secret is asked for, and no key read, for a command that cannot write."""
    result = run_cli("sign", "-m", work / "app.manifest", "-o", "/proc/x.manifest.sgx",
                     "--libpal", PAL, "-k", work / "missing-key.pem",
                     "--passphrase-file", work / "missing-passphrase")
    assert_one_line_error(result, "/proc/x.manifest.sgx")


@pytest.mark.parametrize("args,fragments", [
    (["manifest", "{w}/app.manifest", "{w}/app.manifest"], ["same file"]),
    (["manifest", "{w}/app.manifest", "{w}/out"], ["{w}/out", "is a folder"]),
    (["manifest", "{w}/app.manifest", "/proc/app.manifest"], ["/proc/app.manifest", "proc"]),
    (["manifest", "{w}/app.manifest", "{w}/nope/app.manifest"], ["{w}/nope", "does not exist"]),
    (["keygen", "/proc/k.pem"], ["/proc/k.pem", "proc"]),
    (["keygen", "/sys/kernel/k/k.pem"], ["/sys/kernel/k/k.pem", "sysfs"]),
    (["keygen", "/dev/null", "--force"], ["/dev/null"]),
    (["keygen", "{w}/out"], ["{w}/out", "folder"]),
    (["sign", "-m", "{w}/app.manifest", "-o", "{w}/out/a.manifest.sgx", "--libpal", str(PAL),
      "--export-signing-data", "/proc/a.tbs"], ["/proc/a.tbs", "proc"]),
    (["sign", "-m", "{w}/app.manifest", "-o", "{w}/out/a.manifest.sgx", "--libpal", str(PAL),
      "--export-signing-data", "{w}/app.manifest"], ["same file"]),
    (["build-custom", "-k", "{w}/key.pem", "--output", "/proc/m.json"], ["/proc/m.json"]),
    (["build-custom", "-k", "{w}/key.pem", "--output", "{w}/nope/m.json"], ["does not exist"]),
    (["build-custom", "-k", "{w}/key.pem", "--output", "{w}/key.pem"], ["same file"]),
    (["sign-image", "x:1-unsigned", "-k", "{w}/key.pem", "--output", "{w}/out"], ["folder"]),
])
def test_other_outputs_are_checked_up_front(args: list[str], fragments: list[str],
                                            work: Path) -> None:
    before = snapshot(work)
    # No engine answers here: an output check that came after connecting would
    # fail with an engine error instead of the one expected.
    result = run_cli(*(a.replace("{w}", str(work)) for a in args),
                     env={"DOCKER_HOST": f"unix://{work}/no-engine.sock"})
    assert_one_line_error(result, *(f.replace("{w}", str(work)) for f in fragments))
    assert result.returncode == 2, result
    assert snapshot(work) == before


# --------------------------------------------------------------------------
# kill -9: a .sig on disk always belongs to the .manifest.sgx on disk
# --------------------------------------------------------------------------
@pytest.fixture
def two_enclaves(tmp_path: Path, rootfs: Path, enclave_key: Path) -> dict[str, object]:
    """Two manifests and the exact outputs each signs to (same key and date)."""
    pairs = {}
    manifests = {}
    for size in ("64M", "128M"):
        folder = tmp_path / f"m{size}"
        folder.mkdir()
        manifests[size] = write_manifest(folder, size=size)
        result = _sign_args(manifests[size], folder / "a.manifest.sgx", rootfs, enclave_key)
        assert subprocess.run(result, check=False).returncode == 0
        pairs[(folder / "a.manifest.sgx").read_bytes()] = (folder / "a.sig").read_bytes()
    return {"pairs": pairs, "manifests": manifests, "rootfs": rootfs, "key": enclave_key}


def _sign_args(manifest: Path, output: Path, rootfs: Path, key: Path) -> list[str]:
    return [sys.executable, "-m", "ppml_image", "sign", "-m", str(manifest), "-o", str(output),
            "--libpal", str(PAL), "-k", str(key), "--chroot", str(rootfs), "--date",
            "2024-01-01"]


def _check_pair(out: Path, pairs: dict[bytes, bytes]) -> str:
    """The invariant; returns the state seen."""
    manifest, sig = out / "a.manifest.sgx", out / "a.sig"
    if not sig.exists():
        assert not manifest.exists() or manifest.read_bytes() in pairs
        return "no sig"
    assert manifest.exists(), "a .sig without its .manifest.sgx"
    assert pairs.get(manifest.read_bytes()) == sig.read_bytes(), \
        "a .sig beside a .manifest.sgx it does not sign"
    return "pair"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace injects the kill")
@pytest.mark.parametrize("syscall,when,expected", [
    ("unlink", 1, "old pair"),       # before the old .sig is removed
    ("rename", 1, "old manifest"),   # old .sig gone, new .manifest.sgx not yet in place
    ("rename", 2, "new manifest"),   # new .manifest.sgx in place, new .sig not yet
])
def test_kill_9_between_the_renames(syscall: str, when: int, expected: str,
                                    two_enclaves: dict, tmp_path: Path) -> None:
    """strace kills the signer (SIGKILL) as it enters the Nth unlink/rename: deterministic."""
    pairs, manifests = two_enclaves["pairs"], two_enclaves["manifests"]
    out = tmp_path / "out"
    out.mkdir()
    old = _sign_args(manifests["64M"], out / "a.manifest.sgx", two_enclaves["rootfs"],
                     two_enclaves["key"])
    assert subprocess.run(old, check=False).returncode == 0
    old_manifest = (out / "a.manifest.sgx").read_bytes()
    new = _sign_args(manifests["128M"], out / "a.manifest.sgx", two_enclaves["rootfs"],
                     two_enclaves["key"])
    proc = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
                           "-e", f"inject={syscall}:signal=SIGKILL:when={when}", *new],
                          capture_output=True, check=False, timeout=120)
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), proc
    state = _check_pair(out, pairs)
    manifest_now = (out / "a.manifest.sgx").read_bytes()
    if expected == "old pair":
        assert state == "pair" and manifest_now == old_manifest
    elif expected == "old manifest":
        assert state == "no sig" and manifest_now == old_manifest
    else:
        assert state == "no sig" and manifest_now != old_manifest


def test_kill_9_at_random_moments_never_pairs_wrongly(two_enclaves: dict,
                                                      tmp_path: Path) -> None:
    """Real signers, killed at random moments while they alternate between two
    enclaves: after each kill the invariant holds."""
    pairs, manifests = two_enclaves["pairs"], two_enclaves["manifests"]
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(1234)
    for index in range(16):
        size = ("64M", "128M")[index % 2]
        args = _sign_args(manifests[size], out / "a.manifest.sgx", two_enclaves["rootfs"],
                          two_enclaves["key"])
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.kill()
        proc.wait()
        _check_pair(out, pairs)
