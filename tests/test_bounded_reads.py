"""Bounded reads of every host input (issue 11.3).

Each input file is read with one open, fstat on that descriptor and a read of
at most its cap: `/dev/zero` is refused at once, a file over the cap is
refused before it is read, and a pipe (`--key <(...)`) works within the cap.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_inputs import run_inprocess
from conftest import COMMON, Result, assert_one_line_error, write_manifest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image._fs import read_capped
from ppml_image.errors import PpmlError

PAL = COMMON / "fake_libpal.so"
MiB = 1 << 20


@dataclass
class Input:
    """A host input: the command line with {f} where the file goes, and its cap."""

    id: str
    args: Callable[[Path, Path], list[str]]  # (work folder, key) -> args with "{f}"
    cap: int
    cap_text: str
    code: int = 1


def _sign(*extra: str, key: bool = True, manifest: str | None = None,
          pal: str | None = None) -> Callable[[Path, Path], list[str]]:
    def args(work: Path, key_path: Path) -> list[str]:
        return ["sign", "-m", manifest or str(write_manifest(work)), "-o",
                str(work / "out/app.manifest.sgx"), "--libpal", pal or str(PAL),
                "--chroot", str(work / "rootfs"), *(["-k", str(key_path)] if key else []),
                *extra]
    return args


def _public_pem(key: Path, work: Path) -> Path:
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    path = work / "pub.pem"
    path.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


INPUTS = [
    Input("sign-key", _sign("-k", "{f}", key=False), MiB, "1 MiB"),
    Input("sign-passphrase-file", _sign("--passphrase-file", "{f}"), 64 << 10, "64 KiB"),
    Input("sign-manifest", _sign(manifest="{f}"), 256 * MiB, "256 MiB"),
    Input("sign-libpal", _sign(pal="{f}"), 512 * MiB, "512 MiB"),
    Input("sign-signature", lambda w, k: _sign("--signature", "{f}", "--public-key",
                                               str(_public_pem(k, w)), key=False)(w, k),
          384, "384 bytes"),
    Input("sign-public-key", _sign("--signature", str(PAL), "--public-key", "{f}", key=False),
          64 << 10, "64 KiB"),
    Input("sigstruct", lambda w, k: ["sigstruct", "{f}"], 1808, "1808 bytes"),
    Input("sigstruct-signing-data", lambda w, k: ["sigstruct", "--signing-data", "{f}"], 256,
          "256 bytes"),
    Input("manifest-template", lambda w, k: ["manifest", "{f}", str(w / "out/app.manifest")],
          256 * MiB, "256 MiB"),
    Input("build-base-config", lambda w, k: ["build-base", "--config", "{f}"], MiB, "1 MiB",
          code=2),
    Input("build-custom-passphrase-file",
          lambda w, k: ["build-custom", "-k", str(k), "--passphrase-file", "{f}"], 64 << 10,
          "64 KiB"),
    Input("secrets-tls-password-file",
          lambda w, k: ["secrets", "tls", "--out", str(w / "out/keys"), "--password-file", "{f}"],
          64 << 10, "64 KiB", code=2),
    Input("secrets-password-password-file",
          lambda w, k: ["secrets", "password", "--out", str(w / "out/pw"), "--password-file",
                        "{f}"], 64 << 10, "64 KiB", code=2),
]


def _work(tmp_path: Path, rootfs: Path) -> Path:
    (tmp_path / "out").mkdir()
    assert rootfs == tmp_path / "rootfs"
    return tmp_path


def _run(case: Input, work: Path, key: Path, path: str) -> Result:
    return run_inprocess(*[a.replace("{f}", path) for a in case.args(work, key)])


@pytest.mark.parametrize("case", INPUTS, ids=[c.id for c in INPUTS])
def test_dev_zero_is_refused_at_once(case: Input, tmp_path: Path, rootfs: Path,
                                     enclave_key: Path) -> None:
    work = _work(tmp_path, rootfs)
    result = _run(case, work, enclave_key, "/dev/zero")
    assert_one_line_error(result, "/dev/zero", "device", case.cap_text)
    assert result.returncode == case.code, result
    assert list((work / "out").iterdir()) == []


@pytest.mark.parametrize("case", INPUTS, ids=[c.id for c in INPUTS])
def test_a_file_over_the_cap_is_refused_before_it_is_read(case: Input, tmp_path: Path,
                                                          rootfs: Path,
                                                          enclave_key: Path) -> None:
    work = _work(tmp_path, rootfs)
    big = tmp_path / "big"
    with open(big, "wb") as handle:  # sparse: the cap plus one byte, costs no disk
        handle.truncate(case.cap + 1)
    result = _run(case, work, enclave_key, str(big))
    assert_one_line_error(result, str(big), "larger than", case.cap_text)
    assert result.returncode == case.code, result
    assert list((work / "out").iterdir()) == []


def _feed(data: bytes) -> tuple[int, threading.Thread]:
    """A pipe whose writer sends *data* and closes: what `<(...)` gives a command."""
    read_end, write_end = os.pipe()

    def write() -> None:
        view = memoryview(data)
        # The reader may stop at its cap and go: a broken pipe is expected then.
        with contextlib.suppress(BrokenPipeError):
            while view:
                view = view[os.write(write_end, view):]
        os.close(write_end)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return read_end, thread


def _sign_through_pipes(tmp_path: Path, rootfs: Path, key: bytes,
                        passphrase: bytes | None) -> Result:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    fds = []
    key_fd, key_writer = _feed(key)
    fds.append(key_fd)
    extra = []
    if passphrase is not None:
        pass_fd, _ = _feed(passphrase)
        fds.append(pass_fd)
        extra = ["--passphrase-file", f"/dev/fd/{pass_fd}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_IMAGE_")}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ppml_image", "sign", "-m", str(write_manifest(tmp_path)),
             "-o", str(out / "app.manifest.sgx"), "--libpal", str(PAL), "--chroot", str(rootfs),
             "-k", f"/dev/fd/{key_fd}", *extra], pass_fds=fds, env=env, capture_output=True,
            text=True, timeout=120, check=False)
    finally:
        for fd in fds:
            os.close(fd)
    key_writer.join(timeout=10)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _encrypted_pem(secret: bytes) -> bytes:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.BestAvailableEncryption(secret))


def test_key_and_passphrase_through_pipes_sign(tmp_path: Path, rootfs: Path) -> None:
    """`--key <(vault read ...) --passphrase-file <(...)`: pipes are read once, within the cap."""
    result = _sign_through_pipes(tmp_path, rootfs, _encrypted_pem(b"correct horse"),
                                 b"correct horse\n")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/app.sig").stat().st_size == 1808


def test_a_pipe_over_the_cap_is_refused(tmp_path: Path, rootfs: Path) -> None:
    result = _sign_through_pipes(tmp_path, rootfs, b"A" * (MiB + 1), None)
    assert_one_line_error(result, "key file", "larger than 1 MiB")
    assert list((tmp_path / "out").iterdir()) == []


def test_read_capped_reads_exactly_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_capped(path, 100, "thing") == b"x" * 100
    with pytest.raises(PpmlError, match="larger than 99 bytes"):
        read_capped(path, 99, "thing")
    with pytest.raises(PpmlError, match="is a folder, not a thing"):
        read_capped(tmp_path, 99, "thing")
    with pytest.raises(PpmlError, match="cannot read thing: file not found"):
        read_capped(tmp_path / "missing", 99, "thing")
