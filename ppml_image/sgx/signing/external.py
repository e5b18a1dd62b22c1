"""Signatures made elsewhere: the public key and raw signature of the offline flow.

``--signature SIG --public-key PUB`` (``sign``, ``sign-image``): the
signature was made on another machine (``openssl dgst -sha256 -sign``,
``pkcs11-tool --sign``) over the signing data that ``--export-signing-data``
wrote. :class:`ExternalSignature` is a signer whose ``sign(data)`` returns
that signature only if it verifies over *data* recomputed here.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image._fs import read_capped
from ppml_image.errors import KeyFileError, SigstructError, VerificationError
from ppml_image.sgx.signing.keys import sgx_key_problem
from ppml_image.sgx.signing.signers import SIGNATURE_SIZE, _Closing, _verifies

MAX_KEY_FILE = 1 << 16


class ExternalSignature(_Closing):
    """A signature made elsewhere over the signing data, with its public key.

    ``sign(data)`` does not sign: it returns the given signature if, and only
    if, it verifies over *data* (the signing data recomputed here) with the
    public key. A signature over other data or by another key is refused.
    """

    def __init__(self, public_key: rsa.RSAPublicKey, signature: bytes, *,
                 signature_name: str = "<signature>", key_name: str = "<public key>") -> None:
        self._public = public_key
        self._signature = signature
        self._signature_name = signature_name
        self._key_name = key_name

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def name(self) -> str:
        return f"{self._signature_name} (public key {self._key_name})"

    def sign(self, data: bytes) -> bytes:
        if not _verifies(self._public, self._signature, data):
            raise VerificationError(
                f"{self._signature_name}: signature does not verify against {self._key_name} "
                "over this enclave's signing data (made over other data, or with another key)")
        return self._signature


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    """An RSA-3072, e = 3 public key from a PEM or DER file (SPKI, PKCS#1 or a certificate)."""
    path = Path(path)
    data = read_capped(path, MAX_KEY_FILE, "public key file", KeyFileError)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path}: is a private key; --public-key takes the public key "
                           "(openssl rsa -in key.pem -pubout -out pub.pem)")
    key = _parse_public(data)
    if key is None:
        raise KeyFileError(f"{path}: not a PEM or DER public key or certificate")
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(f"{path}: expected an RSA public key, found {type(key).__name__}")
    numbers = key.public_numbers()
    problem = sgx_key_problem(numbers.n, numbers.e)
    if problem:
        raise KeyFileError(f"{path}: {problem}")
    return key


def _parse_public(data: bytes) -> object | None:
    pem = data.lstrip().startswith(b"-----BEGIN")
    loaders = ((serialization.load_pem_public_key, lambda d: x509.load_pem_x509_certificate(
        d).public_key()) if pem else (serialization.load_der_public_key,
                                      lambda d: x509.load_der_x509_certificate(d).public_key()))
    for loader in loaders:
        try:
            return loader(data)
        except (ValueError, UnsupportedAlgorithm, TypeError):
            continue
    return None


def read_signature(path: Path) -> bytes:
    """A raw RSA-3072 signature: exactly 384 bytes."""
    path = Path(path)
    data = read_capped(path, SIGNATURE_SIZE, "signature file", SigstructError)
    if len(data) != SIGNATURE_SIZE:
        size = f"{len(data)} bytes"
        raise SigstructError(f"{path}: signature is {size}; an RSA-3072 signature is "
                             f"{SIGNATURE_SIZE} raw bytes (as openssl dgst -sign writes it)")
    return data

