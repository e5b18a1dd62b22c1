"""Signing an enclave: the library behind ``ppml-image sign``.

The equivalent of Gramine 1.9's ``gramine-sgx-sign``: hash the trusted files,
write the ``.manifest.sgx``, measure the enclave, and write the SIGSTRUCT
signed with the enclave key. Nothing is written unless every step succeeds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image._dates import source_date_epoch
from ppml_image._fs import check_output_files, write_files_in_order
from ppml_image._gc import cycle_collection_paused
from ppml_image._phases import MEASURING, READING, SIGNING, WRITING, phase
from ppml_image.errors import PolicyError, UsageError
from ppml_image.sgx.manifest import document as mf
from ppml_image.sgx.manifest.measured import refuse_measured_outputs as _refuse_measured
from ppml_image.sgx.measure.elf import ElfImage, load_elf
from ppml_image.sgx.measure.enclave import (
    DEFAULT_MAX_ENCLAVE_SIZE,
    build_layout,
    check_enclave_fits,
    enclave_params,
    measure,
)
from ppml_image.sgx.measure.tree import Tree, tree_for
from ppml_image.sgx.signing.keys import load_signing_key
from ppml_image.sgx.signing.signers import Signer, sign_sigstruct
from ppml_image.sgx.signing.sigstruct import (
    GRAMINE_XFRM_MASK_CONST,
    SGX_FLAGS_DEBUG,
    SGX_FLAGS_MODE64BIT,
    XFRM_FEATURE_BITS,
    Sigstruct,
    SigstructDate,
    refuse_for_release,
)

if TYPE_CHECKING:
    from ppml_image.sgx.manifest.policy import Release

log = logging.getLogger("ppml_image")

SGX_MISCSELECT_EXINFO = 0x1
SGX_XFRM_LEGACY = 0x3
SGX_XFRM_MASK_CONST = GRAMINE_XFRM_MASK_CONST  # every bit but AVX, AVX-512 and AMX
XFRM_BITS = XFRM_FEATURE_BITS


@dataclass(frozen=True)
class SignedEnclave:
    """The outputs of signing, in memory."""

    manifest_sgx: bytes
    sigstruct: Sigstruct
    manifest: dict[str, Any]

    @property
    def mr_enclave(self) -> str:
        return self.sigstruct.mr_enclave

    @property
    def mr_signer(self) -> str:
        return self.sigstruct.mr_signer


def parse_date(value: str | dt.date | SigstructDate | None) -> SigstructDate:
    """The SIGSTRUCT date of ``--date``.

    ``YYYY-MM-DD`` of digits, as Gramine 1.9 accepts it: ``0000-00-00``
    (all zeros, for reproducible builds) or any other date, which need not
    be a calendar date (one that is not gets a warning and is signed as
    given, in BCD). ``today`` is today. None (no ``--date``) is the UTC day of
    ``SOURCE_DATE_EPOCH`` when it is set, else today, like Gramine's default.
    """
    if value is None:
        epoch = source_date_epoch()
        return SigstructDate.of(epoch.date() if epoch is not None else dt.date.today())
    if isinstance(value, (dt.date, SigstructDate)):
        return SigstructDate.of(value)
    if value == "today":
        return SigstructDate.of(dt.date.today())
    try:
        date = SigstructDate.parse(value)
    except ValueError:
        raise UsageError(f"--date {value[:40]!r}: expected YYYY-MM-DD (digits; 0000-00-00 for "
                         "reproducible builds) or 'today'") from None
    if not date.is_zero and not date.is_calendar_date:
        log.warning("--date %s is not a calendar date; it is signed as given (BCD), as "
                    "gramine-sgx-sign does", date)
    return date


def enclave_attributes(sgx: dict[str, Any]) -> tuple[int, int, int, int]:
    """ATTRIBUTES.FLAGS, MISCSELECT, ATTRIBUTES.XFRM and its mask from ``sgx.*``."""
    flags = SGX_FLAGS_MODE64BIT | (SGX_FLAGS_DEBUG if sgx.get("debug") is True else 0)
    misc = SGX_MISCSELECT_EXINFO if sgx.get("use_exinfo") is True else 0
    xfrm, mask = SGX_XFRM_LEGACY, SGX_XFRM_MASK_CONST
    for feature, bits in XFRM_BITS.items():
        setting = sgx["cpu_features"].get(feature)
        if setting == "required":
            xfrm, mask = xfrm | bits, mask | bits
        elif setting == "disabled":
            xfrm, mask = xfrm & ~bits, mask | bits
    return flags, misc, xfrm, mask


def measure_manifest(manifest_sgx: bytes, manifest: dict[str, Any], pal: ElfImage,
                     name: str, *,
                     max_enclave_size: int = DEFAULT_MAX_ENCLAVE_SIZE) -> bytes:
    """MRENCLAVE of an enclave running *manifest_sgx* on *pal*.

    A non-EDMM enclave above *max_enclave_size*, a PAL that does not fit, or
    a layout the CPU would refuse is an error before any measuring.
    """
    params = enclave_params(manifest["sgx"], name)
    check_enclave_fits(params, pal, name, max_enclave_size)
    return measure(params, build_layout(params, manifest_sgx, pal, name), pal)


def sign_enclave(manifest_text: str, *, pal: ElfImage, key: Signer | rsa.RSAPrivateKey,
                 tree: Tree, date: SigstructDate | dt.date, name: str = "<manifest>",
                 pkglibdir: str = mf.DEFAULT_PKGLIBDIR, release: Release = False,
                 max_enclave_size: int = DEFAULT_MAX_ENCLAVE_SIZE) -> SignedEnclave:
    """Hash, measure and sign a manifest; nothing touches the disk.

    With *release*, a manifest that breaks the release policy (see
    :mod:`ppml_image.sgx.manifest.policy`) is refused, naming every violation, after
    its trusted files are expanded and before it is measured or signed.
    """
    prepared = prepare_enclave(manifest_text, pal=pal, tree=tree, date=date, name=name,
                               pkglibdir=pkglibdir, release=release,
                               max_enclave_size=max_enclave_size)
    sign_sigstruct(prepared.sigstruct, key)
    return prepared


def prepare_enclave(manifest_text: str, *, pal: ElfImage, tree: Tree,
                    date: SigstructDate | dt.date,
                    name: str = "<manifest>", pkglibdir: str = mf.DEFAULT_PKGLIBDIR,
                    release: Release = False,
                    max_enclave_size: int = DEFAULT_MAX_ENCLAVE_SIZE) -> SignedEnclave:
    """Hash and measure a manifest: its sigstruct is still to be signed
    (by ``sign_sigstruct(sigstruct, signer)``, or offline from ``signed_bytes()``).

    Sizes and the PAL are checked before any hashing; with *release*, the
    release policy is enforced on the expanded manifest before measuring.
    """
    with cycle_collection_paused():  # a manifest's many objects hold no cycles
        manifest = mf.read_manifest(manifest_text, name, pkglibdir=pkglibdir)  # schema too
        # Sizes and the PAL first: refuse an impossible enclave before hashing.
        check_enclave_fits(enclave_params(manifest["sgx"], name), pal, name, max_enclave_size)
        final = mf.finalize(manifest, tree, name)
        del manifest  # the draft's entries, a dict each, need not outlive it into the dump
        if release:
            # The policy's models and tables (19 ms to import) only for --release.
            from ppml_image.sgx.manifest.policy import as_policy, enforce_release

            enforce_release(final, name, tree, as_policy(release))
        manifest_sgx = mf.dumps(final).encode("utf-8")
    tbs = tbs_sigstruct(manifest_sgx, final, pal, date, name,
                        max_enclave_size=max_enclave_size)
    if release:
        # The manifest passed; the SIGSTRUCT itself must not be debug-launchable
        # either (its masks are part of "debug"), whatever built it.
        refuse_for_release(tbs, name, PolicyError)
    return SignedEnclave(manifest_sgx, tbs, final)


def tbs_sigstruct(manifest_sgx: bytes, manifest: dict[str, Any], pal: ElfImage,
                  date: SigstructDate | dt.date, name: str, *,
                  max_enclave_size: int = DEFAULT_MAX_ENCLAVE_SIZE) -> Sigstruct:
    """The to-be-signed SIGSTRUCT of a finished ``.manifest.sgx``."""
    sgx = manifest["sgx"]
    flags, misc, xfrm, xfrm_mask = enclave_attributes(sgx)
    mrenclave = measure_manifest(manifest_sgx, manifest, pal, name,
                                 max_enclave_size=max_enclave_size)
    return Sigstruct(
        enclave_hash=mrenclave, date=SigstructDate.of(date),
        attribute_flags=flags, attribute_xfrms=xfrm, attribute_xfrm_mask=xfrm_mask,
        misc_select=misc, isv_prod_id=sgx["isvprodid"], isv_svn=sgx["isvsvn"],
    )


def default_sigfile(output: Path) -> Path:
    """``app.manifest.sgx`` -> ``app.sig``; anything else gets ``.sig`` appended."""
    text = str(output)
    suffix = ".manifest.sgx"
    return Path(text[: -len(suffix)] + ".sig" if text.endswith(suffix) else text + ".sig")


def sign_manifest(manifest: Path, output: Path, libpal: Path, key: Path | Signer, *,
                  date: str | dt.date | SigstructDate | None = None, sigfile: Path | None = None,
                  chroot: Path | None = None, pkglibdir: str = mf.DEFAULT_PKGLIBDIR,
                  passphrase: bytes | None = None, release: Release = False,
                  max_enclave_size: int = DEFAULT_MAX_ENCLAVE_SIZE,
                  inputs: Sequence[Path] = ()) -> SignedEnclave:
    """Sign the manifest file like ``gramine-sgx-sign`` and write both outputs.

    Writes *output* (the ``.manifest.sgx``) and *sigfile* (default: *output*
    with ``.manifest.sgx`` replaced by ``.sig``) only if everything succeeded.
    The outputs are checked before any work (:func:`check_outputs`; *inputs*
    names the caller's other input files, such as a passphrase file). With
    *release*, the release policy is enforced first (nothing is written if
    the manifest breaks it).
    """
    sig_path = Path(sigfile) if sigfile else default_sigfile(output)
    given = [Path(manifest), Path(libpal), *inputs, *([Path(key)] if isinstance(key, Path) else [])]
    check_outputs(Path(output), sig_path, given)
    # A Signer (token, external signature) was opened and checked by the caller.
    with phase(READING):
        signing_key = key if isinstance(key, Signer) else load_signing_key(key, passphrase)
        when = parse_date(date)
        text = mf.read_text(manifest, "manifest")
        pal = load_elf(libpal)
        tree = tree_for(chroot)
    with phase(MEASURING):
        signed = prepare_enclave(text, pal=pal, tree=tree, date=when, name=str(manifest),
                                 pkglibdir=pkglibdir, release=release,
                                 max_enclave_size=max_enclave_size)
    with phase(SIGNING):
        sign_sigstruct(signed.sigstruct, signing_key)
    with phase(WRITING):
        _refuse_measured(signed.manifest, tree, [Path(output), sig_path])
        write_outputs(signed, Path(output), sig_path)
    return signed


def check_outputs(output: Path, sigfile: Path, inputs: Sequence[Path] = ()) -> None:
    """Refuse unusable outputs before any work: a folder, a missing or
    read-only folder, ``/proc``, a device, the same path twice, or an input."""
    check_output_files([output, sigfile], inputs)


def refuse_measured_outputs(manifest: dict[str, Any], chroot: Path | None,
                            outputs: Sequence[Path]) -> None:
    """Refuse to overwrite a file the enclave measures (its entrypoint or a
    trusted file): the .manifest.sgx would name a hash it no longer has."""
    _refuse_measured(manifest, tree_for(chroot), outputs)


def write_outputs(signed: SignedEnclave, output: Path, sigfile: Path) -> None:
    """Write the ``.manifest.sgx`` and ``.sig`` together: both or neither.

    The ``.manifest.sgx`` is renamed into place first and the ``.sig`` last,
    after the old ``.sig`` is removed: whenever the process stops, even by
    ``kill -9``, a ``.sig`` on disk belongs to the ``.manifest.sgx`` beside it.
    """
    check_outputs(output, sigfile)
    write_files_in_order([(output, signed.manifest_sgx), (sigfile, signed.sigstruct.to_bytes())])
