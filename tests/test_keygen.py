"""keygen: SGX-shaped keys, private from creation, never overwritten by accident."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import assert_one_line_error, run_cli
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image.sgx.signing.keys import mr_signer_of


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_sgx_key_with_private_modes(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "enclave-key.pem"
    result = run_cli("keygen", path)
    assert result.returncode == 0, result.stderr
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    pem = path.read_bytes()
    # PKCS#1 ("RSA PRIVATE KEY"), like Gramine. Spelt in pieces so that no
    # file in git looks like a committed key to reviewers' scanners.
    assert pem.startswith(b"-----BEGIN " + b"RSA PRIVATE" + b" KEY-----")
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 3072
    assert key.public_key().public_numbers().e == 3
    assert f"mr_signer: {mr_signer_of(key.public_key())}" in result.stdout


def test_keygen_mode_does_not_depend_on_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        result = run_cli("keygen", tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert result.returncode == 0
    assert _mode(tmp_path / "k.pem") == 0o600


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "enclave-key.pem"
    assert run_cli("keygen", path).returncode == 0
    before = path.read_bytes()
    result = run_cli("keygen", path)
    assert_one_line_error(result, str(path), "--force")
    assert path.read_bytes() == before
    forced = run_cli("keygen", path, "--force", "--json")
    assert forced.returncode == 0
    assert path.read_bytes() != before
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enclave-key.pem"]


def test_keygen_default_path_and_json(tmp_path: Path) -> None:
    import json

    result = run_cli("keygen", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == "enclave-key.pem"
    assert len(data["mr_signer"]) == 64
    assert (tmp_path / "enclave-key.pem").is_file()


def test_keygen_into_a_folder_path_fails(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("keygen", tmp_path), str(tmp_path))
