"""Signers: the one seam through which a SIGSTRUCT gets its signature.

A signer has a public key (its modulus goes into the SIGSTRUCT and makes
MRSIGNER, and Q1/Q2 are computed from it) and signs the 256 signed bytes of
a SIGSTRUCT with RSASSA-PKCS1-v1_5 and SHA-256. That scheme is
deterministic, so the ``.sig`` is byte-identical whichever signer made it:

* :class:`PemSigner`: a PEM key file (encrypted or not) loaded in memory;
* ``Pkcs11Signer`` (:mod:`ppml_image.sgx.signing.hsm`): a key inside a PKCS#11 token,
  named by an RFC 7512 URI; the private key never leaves the token;
* ``ExternalSignature`` (:mod:`ppml_image.sgx.signing.external`): a signature
  made elsewhere (an offline machine, ``openssl dgst -sign``), checked before use.

This module is the layer above :mod:`.sigstruct` (data and EINIT's checks);
the token and external signers sit above it, and :mod:`.choose` (which turns
``--key``, ``--signature`` and ``--public-key`` into a signer) on top.
Signers that hold a resource (a token session) release it in ``close()``;
all of them are context managers.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml_image.errors import SigstructError
from ppml_image.sgx.signing.keys import MODULUS_BYTES, load_signing_key, sgx_key_problem
from ppml_image.sgx.signing.sigstruct import Sigstruct

SIGNED_DATA_SIZE = 256  # SIGSTRUCT bytes 0-127 and 900-1027
SIGNATURE_SIZE = MODULUS_BYTES  # an RSA-3072 signature: 384 bytes, big-endian


@runtime_checkable
class Signer(Protocol):
    """What signing a SIGSTRUCT needs, and nothing more."""

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The signer's public key (RSA-3072, e = 3)."""

    @property
    def name(self) -> str:
        """How messages name this signer: a key file, or a token and object."""

    def sign(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 / SHA-256 signature of *data*: 384 bytes, big-endian."""

    def close(self) -> None:
        """Release what the signer holds (a token session); idempotent."""


class _Closing:
    """Context-manager support for signers."""

    def close(self) -> None:
        return None

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class PemSigner(_Closing):
    """A private key in this process's memory, e.g. loaded from a PEM file."""

    def __init__(self, key: rsa.RSAPrivateKey, name: str = "<private key>") -> None:
        self._key = key
        self._name = name

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None = None) -> PemSigner:
        """Load and check a PEM key file (RSA-3072, e = 3); errors name *path*."""
        return cls(load_signing_key(Path(path), passphrase), str(path))

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    @property
    def name(self) -> str:
        return self._name

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def as_signer(key: Signer | rsa.RSAPrivateKey) -> Signer:
    """Accept a private key where a signer is expected (the older API)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return PemSigner(key)
    return key


def sign_checked(signer: Signer, data: bytes) -> bytes:
    """Sign *data* and check the result before it goes into a SIGSTRUCT.

    The public key must suit SGX, and the signature must verify against it:
    a token that returns a signature by another key, or a broken one, is
    caught here rather than at enclave start (EINIT) on a production host.
    """
    public = signer.public_key
    numbers = public.public_numbers()
    problem = sgx_key_problem(numbers.n, numbers.e)
    if problem:
        raise SigstructError(f"{signer.name}: {problem}")
    signature = signer.sign(data)
    if len(signature) != SIGNATURE_SIZE or not _verifies(public, signature, data):
        raise SigstructError(
            f"{signer.name}: the signer returned a signature that does not verify against "
            "its own public key")
    return signature


def _verifies(public: rsa.RSAPublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_sigstruct(sigstruct: Sigstruct, key: Signer | rsa.RSAPrivateKey) -> None:
    """Sign *sigstruct* in place with *key*: a :class:`Signer` (file, token,
    external signature) or a private key. The signature is checked first."""
    signer = as_signer(key)
    sigstruct.raw = None  # sign the fields as they are now, not bytes read earlier
    signature = sign_checked(signer, sigstruct.signed_bytes())
    numbers = signer.public_key.public_numbers()
    sigstruct.attach_signature(numbers.n, numbers.e, signature)
