"""Enclave signing keys: generation, loading, and MRSIGNER.

SGX accepts only 3072-bit RSA keys with public exponent 3 for SIGSTRUCT.
Keys are written as unencrypted PKCS#1 PEM ("RSA PRIVATE KEY"), the format
``gramine-sgx-gen-private-key`` writes, with mode 0600 from creation.
"""

from __future__ import annotations

import getpass
import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image._fs import MiB, check_output_files, read_capped, write_private
from ppml_image.defaults import PASSPHRASE_ENV as PASSPHRASE_ENV
from ppml_image.errors import KeyFileError

SGX_RSA_KEY_SIZE = 3072
SGX_RSA_PUBLIC_EXPONENT = 3
MODULUS_BYTES = SGX_RSA_KEY_SIZE // 8
MAX_KEY_FILE = MiB  # a PEM key is a few KiB: never read /dev/zero or a disk image
MAX_PASSPHRASE_FILE = 64 << 10  # the passphrase is the first line


@dataclass(frozen=True)
class KeyInfo:
    """What ``keygen`` reports about a key it wrote."""

    path: Path
    mr_signer: str


def mr_signer_of_modulus(modulus: int) -> str:
    """MRSIGNER: SHA-256 of the modulus as 384 little-endian bytes, in hex."""
    return hashlib.sha256(modulus.to_bytes(MODULUS_BYTES, "little")).hexdigest()


def mr_signer_of(public_key: rsa.RSAPublicKey) -> str:
    """MRSIGNER of an RSA public key."""
    return mr_signer_of_modulus(public_key.public_numbers().n)


def sgx_key_problem(modulus: int, exponent: int) -> str | None:
    """Why SGX cannot use this RSA key (not 3072-bit, exponent not 3), or None.

    The one check for every key: key files, tokens, public keys given for
    an offline signature, and the modulus inside a SIGSTRUCT.
    """
    if modulus.bit_length() != SGX_RSA_KEY_SIZE:
        return f"RSA key is {modulus.bit_length()}-bit; SGX requires {SGX_RSA_KEY_SIZE}-bit"
    if exponent != SGX_RSA_PUBLIC_EXPONENT:
        return f"RSA public exponent is {exponent}; SGX requires {SGX_RSA_PUBLIC_EXPONENT}"
    return None


def generate_key(path: Path = Path("enclave-key.pem"), *, force: bool = False) -> KeyInfo:
    """Generate an SGX enclave signing key at *path* and return its MRSIGNER.

    The file is created 0600 (its parents 0700) and is never world-readable,
    not even for an instant. An existing file is kept unless *force* is set.
    """
    path = Path(path)
    check_output_files([path], make_parents=True)  # a folder, /proc, a device...
    if path.exists() and not force:
        raise KeyFileError(f"{path}: already exists; pass --force to replace it")
    key = rsa.generate_private_key(
        public_exponent=SGX_RSA_PUBLIC_EXPONENT, key_size=SGX_RSA_KEY_SIZE
    )
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    )
    try:
        write_private(path, pem, overwrite=force)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; pass --force to replace it") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key: {exc.strerror}") from None
    return KeyInfo(path=path, mr_signer=mr_signer_of(key.public_key()))


def read_passphrase(passphrase_file: Path | None,
                    key: Path | bytes | None = None) -> bytes | None:
    """Passphrase from a file (first line), the PPML_IMAGE_KEY_PASSPHRASE
    variable, or, for an encrypted *key* (a path, or the key file's bytes) on
    a terminal, a hidden prompt.

    Passphrases never travel on the command line, where ``ps`` and shell
    history would show them. An empty one is refused, naming where it came
    from: it is a mistake (an empty file, an unset CI secret), and the key's
    own error would only say that the passphrase is wrong.
    """
    if passphrase_file is not None:
        text = read_capped(passphrase_file, MAX_PASSPHRASE_FILE, "passphrase file",
                           KeyFileError)
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise KeyFileError(f"{passphrase_file}: passphrase file is empty"
                               + (" on its first line" if text.strip() else "")
                               + " (the passphrase is its first line)")
        return lines[0]
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env:
            raise KeyFileError(f"{PASSPHRASE_ENV} is set but empty")
        return env.encode()
    if key is not None and sys.stdin.isatty() and _is_encrypted(key):
        return getpass.getpass(f"Passphrase for {key if isinstance(key, Path) else 'the key'}: "
                               ).encode()
    return None


def _is_encrypted(key: Path | bytes) -> bool:
    if isinstance(key, bytes):
        return b"ENCRYPTED" in key
    try:
        return b"ENCRYPTED" in read_key_file(key)
    except KeyFileError:
        return False  # load_signing_key reports it


def read_key_file(path: Path) -> bytes:
    """A key file's bytes (at most :data:`MAX_KEY_FILE`; a FIFO such as ``<(...)`` works)."""
    return read_capped(path, MAX_KEY_FILE, "key file", KeyFileError)


def load_signing_key(path: Path, passphrase: bytes | None = None, *,
                     data: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load a PEM private key and check it is usable for SGX (RSA-3072, e = 3).

    *data* is the file's content when the caller has read it already (a FIFO
    can be read only once); messages still name *path*.
    """
    path = Path(path)
    if data is None:
        data = read_key_file(path)
    try:
        # OpenSSL's own key check tests p and q for primality: a tenth of a
        # second at every signing. check_sgx_key checks the key's numbers
        # instead, and every signature is verified before use (sign_checked).
        key = serialization.load_pem_private_key(data, password=passphrase,
                                                 unsafe_skip_rsa_key_validation=True)
    except TypeError as exc:
        if "encrypted" in str(exc) and passphrase is None:
            raise KeyFileError(
                f"{path}: key is encrypted; give --passphrase-file or set {PASSPHRASE_ENV}"
            ) from None
        raise KeyFileError(f"{path}: key is not encrypted but a passphrase was given") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise KeyFileError(f"{path}: wrong passphrase for the encrypted key") from None
        raise KeyFileError(f"{path}: not a valid PEM private key ({exc})") from None
    check_sgx_key(key, path)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def check_sgx_key(key: object, path: Path) -> None:
    """Refuse keys SGX cannot use: non-RSA, not 3072-bit, exponent not 3."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path}: expected an RSA private key, found {type(key).__name__}")
    numbers = key.public_key().public_numbers()
    problem = sgx_key_problem(numbers.n, numbers.e)
    if problem:
        raise KeyFileError(f"{path}: {problem}")
    if not _consistent(key.private_numbers()):
        raise KeyFileError(f"{path}: not a valid RSA private key (its numbers do not agree)")


def _consistent(key: rsa.RSAPrivateNumbers) -> bool:
    """The private numbers make one RSA key: n = pq, d inverts e, the CRT values match."""
    p, q, d, e = key.p, key.q, key.d, key.public_numbers.e
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    return (p * q == key.public_numbers.n and p > 1 and q > 1 and (e * d) % lam == 1
            and key.dmp1 == d % (p - 1) and key.dmq1 == d % (q - 1) and (key.iqmp * q) % p == 1)
