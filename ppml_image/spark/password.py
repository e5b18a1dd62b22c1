"""``secrets password``: the keystore password, encrypted to a fresh RSA key.

As the reference ``generate-password.sh``: ``key.txt`` is an RSA private key
(PEM) and ``output.bin`` the password encrypted to it (PKCS#1 v1.5), so the
submit scripts can run ``openssl pkeyutl -decrypt -inkey key.txt -in
output.bin``. Both 0600 in a 0700 folder. The pair keeps the password out of
files and manifests in clear; whoever can read ``key.txt`` can read the
password, so mount the folder only where the password is needed.

The password must be UTF-8 text of 8 to 373 bytes (the PKCS#1 v1.5 limit of
a 3072-bit key) without control characters. The folder is generated beside
*out* and swapped in only on success; ``force`` replaces only ``key.txt`` and
``output.bin``, and a folder holding anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml_image._fs import read_regular_files, staged_folder
from ppml_image.spark.common import SecretsError, check_password, password_problem, save

PASSWORD_FILES = ("key.txt", "output.bin")
# A PEM RSA key and one RSA block are a few KiB; anything far larger is not ours.
_FOLDER_FILE_LIMIT = 1024 * 1024


@dataclass
class PasswordFiles:
    folder: Path
    key: Path
    encrypted: Path


def generate_password_files(out: Path, password: bytes, *, force: bool = False) -> PasswordFiles:
    check_password(password, "the password", keystore=False)
    with staged_folder(out, PASSWORD_FILES, force=force) as stage:
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        save(stage, "key.txt", pem)
        save(stage, "output.bin", key.public_key().encrypt(password, padding.PKCS1v15()))
    return PasswordFiles(out, out / "key.txt", out / "output.bin")


def read_password_folder(folder: Path) -> dict[str, bytes]:
    """The files of a password folder: regular files only, no link followed."""
    files = read_regular_files(folder, "password", limit=_FOLDER_FILE_LIMIT)
    missing = [name for name in PASSWORD_FILES if name not in files]
    if missing:
        raise SecretsError(f"{folder}: not a password folder (missing {', '.join(missing)})")
    return files


def decrypt_password(folder: Path, files: dict[str, bytes] | None = None) -> bytes:
    """Read back the password from a folder written by :func:`generate_password_files`."""
    files = read_password_folder(folder) if files is None else files
    data = files["output.bin"]
    try:
        key = serialization.load_pem_private_key(files["key.txt"], None)
    except (ValueError, TypeError) as exc:
        raise SecretsError(f"{folder}/key.txt: not an unencrypted PEM private key: "
                           f"{exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecretsError(f"{folder}/key.txt: not an RSA key")
    try:
        password = key.decrypt(data, padding.PKCS1v15())
    except ValueError:
        raise SecretsError(f"{folder}/output.bin: does not decrypt with key.txt") from None
    # OpenSSL's implicit rejection turns a wrong key into random bytes rather
    # than an error: the password rules are what catch it.
    problem = password_problem(password, keystore=False)
    if problem:
        raise SecretsError(f"{folder}/output.bin: does not decrypt to a valid password with "
                           f"key.txt ({problem})")
    return password
