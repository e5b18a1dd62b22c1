"""Signers: the one seam through which a SIGSTRUCT gets its signature.

A signer has a public key (its modulus goes into the SIGSTRUCT and makes
MRSIGNER, and Q1/Q2 are computed from it) and signs the 256 signed bytes of
a SIGSTRUCT with RSASSA-PKCS1-v1_5 and SHA-256. That scheme is
deterministic, so the ``.sig`` is byte-identical whichever signer made it:

* :class:`PemSigner`: a PEM key file (encrypted or not) loaded in memory;
* ``Pkcs11Signer`` (:mod:`ppml_image.sgx.signing.hsm`): a key inside a PKCS#11 token,
  named by an RFC 7512 URI; the private key never leaves the token;
* :class:`ExternalSignature`: a signature made elsewhere (an offline machine,
  ``openssl dgst -sign``, ``pkcs11-tool --sign``), checked before use.

:func:`signer_from_option` turns a ``--key`` value (a path or a ``pkcs11:``
URI) into a signer; :func:`external_signer` turns ``--signature`` and
``--public-key`` into one. Signers that hold a resource (a token session)
release it in ``close()``; all of them are context managers.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml_image.errors import SigstructError, UsageError, VerificationError
from ppml_image.sgx.signing.keys import (
    MODULUS_BYTES,
    load_signing_key,
    read_key_file,
    read_passphrase,
    sgx_key_problem,
)
from ppml_image.sgx.signing.pkcs11_uri import is_pkcs11_uri

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


def signer_from_option(key: str | Path, passphrase_file: Path | None = None) -> Signer:
    """The signer a ``--key`` value names: a PEM file path, or a ``pkcs11:`` URI.

    For a PEM file the passphrase rules are those of
    :func:`ppml_image.sgx.signing.keys.read_passphrase`. For a token, the module, PIN
    and key come from the URI and the environment (:mod:`ppml_image.sgx.signing.hsm`);
    the token is opened, logged in and its key checked here, before any long
    work (hashing, measuring) starts.
    """
    text = str(key)
    if is_pkcs11_uri(text):
        if passphrase_file is not None:
            raise UsageError(
                "--passphrase-file is for PEM key files; a PKCS#11 token's PIN comes from "
                "pin-source=file:PATH in the URI, PPML_IMAGE_PKCS11_PIN, or a prompt")
        from ppml_image.sgx.signing.hsm import open_token_signer  # python-pkcs11 only when used

        return open_token_signer(text)
    path = Path(text)
    data = read_key_file(path)  # once: `--key <(...)` can be read only once
    passphrase = read_passphrase(passphrase_file, data)
    return PemSigner(load_signing_key(path, passphrase, data=data), str(path))


def external_signer(signature: Path, public_key: Path) -> ExternalSignature:
    """A signer for ``--signature SIG --public-key PUB``: both read and checked now."""
    from ppml_image.sgx.offline import load_public_key, read_signature

    return ExternalSignature(load_public_key(public_key), read_signature(signature),
                             signature_name=str(signature), key_name=str(public_key))
