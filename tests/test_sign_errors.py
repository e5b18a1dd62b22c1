"""Bad input to sign and manifest: one clear line, non-zero exit, nothing written."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from conftest import COMMON, assert_one_line_error, run_cli, write_manifest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from ptyrun import answer_prompt

PAL = COMMON / "fake_libpal.so"


def _sign(manifest: Path, key: Path, out: Path, *extra: str, env: dict | None = None):
    return run_cli("sign", "--manifest", manifest, "--output", out / "app.manifest.sgx",
                   "--libpal", PAL, "--key", key, "--date", "2024-01-01", *extra, env=env)


def _outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def encrypted_key(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    path = tmp_path / "encrypted.pem"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"correct horse")))
    return path


def test_sign_writes_sgx_and_default_sig(tmp_path: Path, rootfs: Path, enclave_key: Path,
                                         out: Path) -> None:
    manifest = write_manifest(tmp_path)
    result = _sign(manifest, enclave_key, out, "--chroot", rootfs)
    assert result.returncode == 0, result.stderr
    assert _outputs(out) == ["app.manifest.sgx", "app.sig"]
    view = run_cli("sigstruct", out / "app.sig")
    assert view.returncode == 0 and "debug_enclave:" in view.stdout


@pytest.mark.parametrize("key_name,fragment", [
    ("missing.pem", "not found"),
    ("key_2048.pem", "3072"),
    ("key_e65537.pem", "exponent"),
])
def test_bad_keys(key_name: str, fragment: str, tmp_path: Path, rootfs: Path, out: Path) -> None:
    manifest = write_manifest(tmp_path)
    key = COMMON / key_name
    result = _sign(manifest, key, out, "--chroot", rootfs)
    assert_one_line_error(result, str(key), fragment)
    assert _outputs(out) == []


def test_key_that_is_a_folder(tmp_path: Path, rootfs: Path, out: Path) -> None:
    result = _sign(write_manifest(tmp_path), tmp_path, out, "--chroot", rootfs)
    assert_one_line_error(result, str(tmp_path))


def test_corrupt_pem(tmp_path: Path, rootfs: Path, out: Path) -> None:
    key = tmp_path / "corrupt.pem"
    marker = "RSA PRIVATE" + " KEY"  # in pieces: not a key, and must not look like one
    key.write_text(f"-----BEGIN {marker}-----\nnot base64 at all\n-----END {marker}-----\n")
    result = _sign(write_manifest(tmp_path), key, out, "--chroot", rootfs)
    assert_one_line_error(result, str(key), "not a valid PEM")
    assert _outputs(out) == []


def test_encrypted_key_needs_passphrase(tmp_path: Path, rootfs: Path, out: Path,
                                        encrypted_key: Path) -> None:
    manifest = write_manifest(tmp_path)
    result = _sign(manifest, encrypted_key, out, "--chroot", rootfs)
    assert_one_line_error(result, str(encrypted_key), "encrypted", "--passphrase-file")
    assert _outputs(out) == []

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("battery staple\n")
    result = _sign(manifest, encrypted_key, out, "--chroot", rootfs, "--passphrase-file", wrong)
    assert_one_line_error(result, "passphrase")

    right = tmp_path / "pass.txt"
    right.write_text("correct horse\n")
    result = _sign(manifest, encrypted_key, out, "--chroot", rootfs, "--passphrase-file", right)
    assert result.returncode == 0, result.stderr

    result = _sign(manifest, encrypted_key, out, "--chroot", rootfs,
                   env={"PPML_IMAGE_KEY_PASSPHRASE": "correct horse"})
    assert result.returncode == 0, result.stderr


MANIFEST_ERRORS = [
    ("invalid-toml", 'sgx.enclave_size = "64M\n', "invalid TOML"),
    ("missing-trusted", 'sgx.trusted_files = ["file:/app/missing.bin"]\n', "/app/missing.bin"),
    ("dir-no-slash", 'sgx.trusted_files = ["file:/app/bin"]\n', "end it with '/'"),
    ("slash-not-dir", 'sgx.trusted_files = ["file:/app/bin/app/"]\n', "not a folder"),
    ("too-small", 'sgx.enclave_size = "1M"\nsgx.max_threads = 8\n', "not large enough"),
    ("bad-size", 'sgx.enclave_size = "lots"\n', "not a size"),
    ("lower-case-suffix", 'sgx.enclave_size = "256m"\n', "not a size"),
    ("size-as-int", 'sgx.enclave_size = 268435456\n', "must be a string"),
    ("isvsvn-range", 'sgx.isvsvn = 70000\n', "sgx.isvsvn"),
    ("entrypoint-string", 'loader.entrypoint = "file:/x"\n', "loader.entrypoint"),
    ("cpu-feature-value", 'sgx.cpu_features.avx = "maybe"\n', "sgx.cpu_features.avx"),
    ("cpu-feature-unknown", 'sgx.cpu_features.sse9 = "required"\n', "sgx.cpu_features.sse9"),
    ("mpx-unspecified", 'sgx.cpu_features.mpx = "unspecified"\n', "sgx.cpu_features.mpx"),
    ("threads-type", 'sgx.max_threads = "four"\n', "sgx.max_threads"),
    ("non-file-uri", 'sgx.trusted_files = ["http://example.invalid/x"]\n', "only file:"),
    ("conflicting-hash", 'sgx.trusted_files = [{uri = "file:/app/bin/app", sha256 = "' + "0" * 64
     + '"}, {uri = "file:/app/bin/app", sha256 = "' + "1" * 64 + '"}]\n', "two different"),
]


@pytest.mark.parametrize("text,fragment", [(t, f) for _, t, f in MANIFEST_ERRORS],
                         ids=[i for i, _, _ in MANIFEST_ERRORS])
def test_manifest_errors(text: str, fragment: str, tmp_path: Path, rootfs: Path,
                         enclave_key: Path, out: Path) -> None:
    manifest = write_manifest(tmp_path, 'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                              + text)
    result = _sign(manifest, enclave_key, out, "--chroot", rootfs)
    assert_one_line_error(result, fragment)
    assert str(manifest) in result.stderr
    assert _outputs(out) == []


def test_undefined_template_variable(tmp_path: Path) -> None:
    template = tmp_path / "app.manifest.template"
    template.write_text('libos.entrypoint = "{{ entrypoint }}"\n')
    result = run_cli("manifest", template, tmp_path / "app.manifest")
    assert_one_line_error(result, str(template), "entrypoint")
    assert not (tmp_path / "app.manifest").exists()


def test_template_syntax_error_names_line(tmp_path: Path) -> None:
    template = tmp_path / "broken.template"
    template.write_text('a = 1\n{% if x %}\nb = 2\n')
    result = run_cli("manifest", template, "-D", "x")
    assert_one_line_error(result, str(template))


def test_bad_date(tmp_path: Path, rootfs: Path, enclave_key: Path, out: Path) -> None:
    result = run_cli("sign", "--manifest", write_manifest(tmp_path), "--output",
                     out / "a.manifest.sgx", "--libpal", PAL, "--key", enclave_key,
                     "--date", "2024-1-5", "--chroot", rootfs)
    assert_one_line_error(result, "--date")
    assert result.returncode == 2


def test_libpal_not_elf(tmp_path: Path, rootfs: Path, enclave_key: Path, out: Path) -> None:
    bogus = tmp_path / "libpal.so"
    bogus.write_bytes(b"#!/bin/sh\necho not an elf\n" * 10)
    result = run_cli("sign", "--manifest", write_manifest(tmp_path), "--output",
                     out / "a.manifest.sgx", "--libpal", bogus, "--key", enclave_key,
                     "--chroot", rootfs)
    assert_one_line_error(result, str(bogus), "not an ELF")
    assert _outputs(out) == []


def test_truncated_and_forged_sig(tmp_path: Path) -> None:
    good = (COMMON.parent / "sign-basic-256m-4t-debug" / "expected.sig").read_bytes()
    truncated = tmp_path / "truncated.sig"
    truncated.write_bytes(good[:1000])
    assert_one_line_error(run_cli("sigstruct", truncated), str(truncated), "1808")

    forged = bytearray(good)
    forged[960] ^= 0x01  # one bit of MRENCLAVE
    forged_path = tmp_path / "forged.sig"
    forged_path.write_bytes(bytes(forged))
    assert_one_line_error(run_cli("sigstruct", forged_path), str(forged_path), "does not verify")

    bad_q = bytearray(good)
    bad_q[1500] ^= 0xFF
    bad_q_path = tmp_path / "badq.sig"
    bad_q_path.write_bytes(bytes(bad_q))
    assert_one_line_error(run_cli("sigstruct", bad_q_path), "Q1/Q2")


def test_size_not_power_of_two_signs_with_warning(tmp_path: Path, rootfs: Path,
                                                  enclave_key: Path, out: Path) -> None:
    """gramine-sgx-sign signs such a manifest, but the loader refuses it: we warn."""
    manifest = write_manifest(tmp_path, size="96M")
    result = _sign(manifest, enclave_key, out, "--chroot", rootfs)
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "power of two" in result.stderr
    assert _outputs(out) == ["app.manifest.sgx", "app.sig"]


def test_manifest_schema_rejects_unknown_keys(tmp_path: Path, rootfs: Path) -> None:
    template = tmp_path / "t.template"
    template.write_text('libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                        'loader.entrypoint.uri = "file:/app/bin/app"\n'
                        'sgx.enclave_szie = "64M"\n')
    result = run_cli("manifest", template, "--chroot", rootfs)
    assert_one_line_error(result, str(template), "sgx.enclave_szie")
    unchecked = run_cli("manifest", template, "--chroot", rootfs, "--no-check")
    assert unchecked.returncode == 0, unchecked.stderr
    assert 'enclave_szie = "64M"' in unchecked.stdout


def test_encrypted_key_passphrase_prompt_on_a_terminal(tmp_path: Path, rootfs: Path, out: Path,
                                                       encrypted_key: Path) -> None:
    """On a terminal the passphrase is asked for, hidden, never taken from argv."""
    manifest = write_manifest(tmp_path)
    argv = [sys.executable, "-m", "ppml_image", "sign", "--manifest", str(manifest),
            "--output", str(out / "app.manifest.sgx"), "--libpal", str(PAL),
            "--key", str(encrypted_key), "--chroot", str(rootfs)]
    code, output = answer_prompt(
        argv, b"Passphrase for", b"correct horse",
        before_exec=lambda: os.environ.pop("PPML_IMAGE_KEY_PASSPHRASE", None))
    assert code == 0, output
    assert b"correct horse" not in output  # not echoed
    assert _outputs(out) == ["app.manifest.sgx", "app.sig"]


def test_a_prompt_that_never_comes_fails_the_test_instead_of_hanging() -> None:
    """The terminal helper itself: no prompt within the time, a failure; the child is killed."""
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="no b'Passphrase for' prompt"):
        answer_prompt(["/bin/sleep", "60"], b"Passphrase for", b"x", timeout=1)
    with pytest.raises(pytest.fail.Exception, match="still running"):
        answer_prompt(["/bin/sh", "-c", "echo 'Passphrase for k:'; exec sleep 60"],
                      b"Passphrase for", b"x", timeout=2)
    assert time.monotonic() - started < 50  # a liveness bound: neither call waited for sleep
