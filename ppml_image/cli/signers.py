"""Command-line glue shared by every command that signs: which signer the
options name (``--key`` file or ``pkcs11:`` URI, or ``--signature`` with
``--public-key``), and the checks on how those options combine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ppml_image.cli.common import lazy_module
from ppml_image.errors import UsageError

if TYPE_CHECKING:
    from ppml_image.sgx.signing import choose, signers
else:  # cryptography loads when a command signs, not when the CLI starts
    choose = lazy_module("ppml_image.sgx.signing.choose")
    signers = lazy_module("ppml_image.sgx.signing.signers")

KEY_HELP = ("Enclave signing key: a PEM file, or a PKCS#11 URI such as "
            "'pkcs11:token=ppml;object=enclave-key' (module from module-path= or "
            "PPML_IMAGE_PKCS11_MODULE; PIN from pin-source=file:..., PPML_IMAGE_PKCS11_PIN or a "
            "prompt).")
EXPORT_HELP = ("Write the 256 bytes to sign to this file (and DATA.json beside it) instead of "
               "a .sig; sign them offline, then assemble with --signature and --public-key.")
SIGNATURE_HELP = ("A raw RSA-3072 signature of the exported signing data (openssl dgst "
                  "-sha256 -sign, pkcs11-tool --sign); checked, then assembled into the .sig.")
PUBLIC_KEY_HELP = "The public key (PEM or DER) that made --signature."
DATE_HELP = ("SIGSTRUCT date: YYYY-MM-DD (0000-00-00 for reproducible builds; any digits are "
             "signed, with a warning if not a calendar date) or 'today'. Default: the UTC day "
             "of SOURCE_DATE_EPOCH when set, else today.")


def choose_signer(key: str | None, *, passphrase_file: Path | None = None,
                  signature: Path | None = None,
                  public_key: Path | None = None) -> signers.Signer:
    """The signer the options name: ``--key``, or ``--signature`` + ``--public-key``."""
    if (signature is None) != (public_key is None):
        raise UsageError("--signature and --public-key go together")
    if signature is not None and public_key is not None:
        if key is not None:
            raise UsageError("give either --key or --signature with --public-key, not both")
        if passphrase_file is not None:
            raise UsageError("--passphrase-file is for --key; --signature needs no secret")
        return choose.external_signer(signature, public_key)
    if key is None:
        raise UsageError("missing --key (a PEM file or a pkcs11: URI), or --signature with "
                         "--public-key, or --export-signing-data")
    return choose.signer_from_option(key, passphrase_file)


def check_export_options(key: str | None, *, passphrase_file: Path | None = None,
                         signature: Path | None = None, public_key: Path | None = None,
                         sigfile: Path | None = None) -> None:
    """``--export-signing-data`` signs nothing: refuse options that would."""
    given = [name for name, value in (("--key", key), ("--passphrase-file", passphrase_file),
                                      ("--signature", signature), ("--public-key", public_key),
                                      ("--sigfile", sigfile)) if value is not None]
    if given:
        raise UsageError(f"--export-signing-data writes no .sig and needs no key: drop "
                         f"{', '.join(given)}")
