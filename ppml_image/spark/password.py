"""``secrets password``: the keystore password, encrypted to a fresh RSA key.

As the reference ``generate-password.sh``: ``key.txt`` is an RSA private key
(PEM) and ``output.bin`` the password encrypted to it (PKCS#1 v1.5), so the
submit scripts can run ``openssl pkeyutl -decrypt -inkey key.txt -in
output.bin``. Both 0600 in a 0700 folder. The pair keeps the password out of
files and manifests in clear; whoever can read ``key.txt`` can read the
password, so mount the folder only where the password is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml_image.spark.common import SecretsError, prepare_folder, save


@dataclass
class PasswordFiles:
    folder: Path
    key: Path
    encrypted: Path


def generate_password_files(out: Path, password: bytes, *, force: bool = False) -> PasswordFiles:
    prepare_folder(out, force=force)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    encrypted = key.public_key().encrypt(password, padding.PKCS1v15())
    return PasswordFiles(out, save(out, "key.txt", pem), save(out, "output.bin", encrypted))


def decrypt_password(folder: Path) -> bytes:
    """Read back the password from a folder written by :func:`generate_password_files`."""
    try:
        key = serialization.load_pem_private_key((folder / "key.txt").read_bytes(), None)
        data = (folder / "output.bin").read_bytes()
    except (OSError, ValueError, TypeError) as exc:
        raise SecretsError(f"{folder}: not a password folder (key.txt, output.bin): "
                           f"{exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecretsError(f"{folder}/key.txt: not an RSA key")
    try:
        return key.decrypt(data, padding.PKCS1v15())
    except ValueError:
        raise SecretsError(f"{folder}/output.bin: does not decrypt with key.txt") from None
