"""From command-line options to a signer: the top of the signing room.

``--key`` names a PEM file or a ``pkcs11:`` URI; ``--signature`` with
``--public-key`` names a signature made elsewhere. The token signer (and
python-pkcs11) is imported only when a ``pkcs11:`` key is used, and the
external signer (with cryptography's X.509) only for ``--signature``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ppml_image.errors import UsageError
from ppml_image.sgx.signing.keys import load_signing_key, read_key_file, read_passphrase
from ppml_image.sgx.signing.pkcs11_uri import is_pkcs11_uri
from ppml_image.sgx.signing.signers import PemSigner, Signer

if TYPE_CHECKING:
    from ppml_image.sgx.signing.external import ExternalSignature


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
    # Imported when used: its X.509 support is 24 ms of every other signer's start-up.
    from ppml_image.sgx.signing.external import (
        ExternalSignature,
        load_public_key,
        read_signature,
    )

    return ExternalSignature(load_public_key(public_key), read_signature(signature),
                             signature_name=str(signature), key_name=str(public_key))
