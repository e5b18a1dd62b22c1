"""The offline two-step flow: export what to sign, assemble what was signed.

Like Intel's ``sgx_sign gendata``/``catsig``:

1. *Export*: the enclave is hashed and measured as for signing, and instead
   of a ``.sig`` the **signing data** is written: the exact 256 bytes the RSA
   signature covers (SIGSTRUCT bytes 0-127 then 900-1027), with a JSON file
   beside them (``DATA.json``) that spells out every SIGSTRUCT field for
   review. The public key is not part of the signed bytes, so no key is
   needed to export.
2. *Sign elsewhere*: ``openssl dgst -sha256 -sign key.pem -out sig.bin DATA``
   or ``pkcs11-tool --sign --mechanism SHA256-RSA-PKCS ...``: a raw 384-byte
   RSASSA-PKCS1-v1_5 signature.
3. *Assemble*: the signing data is recomputed from the same inputs (never
   taken from the exported file), the signature is checked against it and
   the public key (:class:`ppml_image.sgx.signing.external.ExternalSignature`), and
   the ``.sig`` is written.

These functions work on an in-memory to-be-signed SIGSTRUCT, whatever the
manifest came from (a file, an image).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppml_image._fs import check_output_files, read_capped, write_files_in_order
from ppml_image.errors import SigstructError, VerificationError
from ppml_image.sgx.manifest import document as mf
from ppml_image.sgx.manifest.policy import Release
from ppml_image.sgx.measure.elf import load_elf
from ppml_image.sgx.measure.tree import tree_for
from ppml_image.sgx.sign import SignedEnclave, parse_date, prepare_enclave
from ppml_image.sgx.signing.signers import SIGNED_DATA_SIZE
from ppml_image.sgx.signing.sigstruct import (
    HEADER,
    HEADER2,
    SIGSTRUCT_SIZE,
    Sigstruct,
    SigstructDate,
    refuse_for_release,
)

FORMAT = "ppml-image/signing-data/1"
_SECOND_PART = 900  # SIGSTRUCT offset of the second signed range (900-1027)


@dataclass(frozen=True)
class ExportedSigningData:
    """What an export wrote."""

    data_path: Path
    json_path: Path
    record: dict[str, Any]

    @property
    def mr_enclave(self) -> str:
        return str(self.record["mr_enclave"])


def json_path_for(data_path: Path) -> Path:
    """``DATA`` -> ``DATA.json``: the review file lives beside the data."""
    return Path(str(data_path) + ".json")


# --------------------------------------------------------------------------
# The record: every SIGSTRUCT field, for review and reassembly.
# --------------------------------------------------------------------------
def signing_record(tbs: Sigstruct, *, source: str, data_name: str,
                   manifest_sgx: bytes | None = None) -> dict[str, Any]:
    """The JSON record of a to-be-signed SIGSTRUCT (what ``DATA.json`` holds)."""
    data = tbs.signed_bytes()
    record: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "signing_data": data_name,
        "signing_data_size": len(data),
        "signing_data_sha256": hashlib.sha256(data).hexdigest(),
        "signature_scheme": "RSASSA-PKCS1-v1_5 with SHA-256; RSA-3072 key, public exponent 3; "
                            "384-byte big-endian signature (as openssl dgst -sign writes it)",
        "mr_enclave": tbs.mr_enclave,
        "debug_enclave": tbs.debug,
        # The masks are part of "debug": a mask without DEBUG lets the host choose.
        "debug_launchable": tbs.debug_launchable,
        "mask_problems": [str(problem) for problem in tbs.mask_problems()],
    }
    if manifest_sgx is not None:
        record["manifest_sgx_sha256"] = hashlib.sha256(manifest_sgx).hexdigest()
    record["sigstruct"] = {
        "header": HEADER.hex(), "vendor": tbs.vendor, "date": tbs.date.isoformat(),
        "header2": HEADER2.hex(), "swdefined": tbs.swdefined,
        "misc_select": hex(tbs.misc_select), "misc_mask": hex(tbs.misc_mask),
        "attribute_flags": hex(tbs.attribute_flags),
        "attribute_xfrms": hex(tbs.attribute_xfrms),
        "attribute_flags_mask": hex(tbs.attribute_flags_mask),
        "attribute_xfrm_mask": hex(tbs.attribute_xfrm_mask),
        "enclave_hash": tbs.enclave_hash.hex(),
        "isv_prod_id": tbs.isv_prod_id, "isv_svn": tbs.isv_svn,
        # Not signed, filled in when the signature is assembled.
        "modulus": None, "exponent": None, "signature": None, "q1": None, "q2": None,
    }
    return record


def sigstruct_from_record(record: dict[str, Any]) -> Sigstruct:
    """The to-be-signed SIGSTRUCT a record describes (for reassembly elsewhere).

    The record is checked against its own ``signing_data_sha256``, so a
    hand-edited field is refused rather than silently signed.
    """
    try:
        fields = record["sigstruct"]
        tbs = Sigstruct(
            enclave_hash=bytes.fromhex(fields["enclave_hash"]),
            date=SigstructDate.parse(str(fields["date"])),
            attribute_flags=int(fields["attribute_flags"], 16),
            attribute_xfrms=int(fields["attribute_xfrms"], 16),
            attribute_xfrm_mask=int(fields["attribute_xfrm_mask"], 16),
            attribute_flags_mask=int(fields["attribute_flags_mask"], 16),
            misc_select=int(fields["misc_select"], 16), misc_mask=int(fields["misc_mask"], 16),
            isv_prod_id=int(fields["isv_prod_id"]), isv_svn=int(fields["isv_svn"]),
            vendor=int(fields["vendor"]), swdefined=int(fields["swdefined"]))
        wanted = str(record["signing_data_sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SigstructError(f"signing data record: missing or malformed field ({exc})") from None
    if hashlib.sha256(tbs.signed_bytes()).hexdigest() != wanted:
        raise SigstructError("signing data record: fields do not match signing_data_sha256")
    return tbs


def sigstruct_from_signing_data(data: bytes, name: str = "<signing data>") -> Sigstruct:
    """Decode the 256 signed bytes themselves (what a reviewer should trust, not the JSON)."""
    if len(data) != SIGNED_DATA_SIZE:
        raise SigstructError(f"{name}: signing data must be {SIGNED_DATA_SIZE} bytes, "
                             f"file has {len(data)}")
    buf = bytearray(SIGSTRUCT_SIZE)
    half = SIGNED_DATA_SIZE // 2
    buf[0:half] = data[:half]
    buf[_SECOND_PART : _SECOND_PART + half] = data[half:]
    tbs = Sigstruct.from_bytes(bytes(buf), name)
    if tbs.signed_bytes() != data:  # reserved bytes that are not zero: not ours to sign
        raise SigstructError(f"{name}: not SIGSTRUCT signing data (reserved bytes are not zero)")
    return tbs


def read_signing_data(path: Path) -> Sigstruct:
    """Read and decode a signing-data file (``sigstruct --signing-data``)."""
    data = read_capped(path, SIGNED_DATA_SIZE, "signing data file", SigstructError)
    return sigstruct_from_signing_data(data, str(path))


def review_signing_data(path: Path, *, release: bool = False) -> dict[str, Any]:
    """The fields a signing-data file encodes, decoded from its bytes, for the
    person about to sign it (``sigstruct --signing-data``). No signer yet, so
    no ``mr_signer``. ``debug_launchable`` and ``mask_problems`` come first.

    With *release*, data a release signer must not sign (debug-launchable,
    or any mask Gramine 1.9 would not write) is refused (exit 3), naming why.
    """
    tbs = read_signing_data(path)
    if release:
        refuse_for_release(tbs, str(path), VerificationError)
    view = tbs.view()
    del view["mr_signer"]
    view["signing_data_sha256"] = hashlib.sha256(tbs.signed_bytes()).hexdigest()
    return view


# --------------------------------------------------------------------------
# Export.
# --------------------------------------------------------------------------
def signing_data_files(tbs: Sigstruct, data_path: Path, *, source: str,
                       manifest_sgx: bytes | None = None) -> tuple[list[tuple[Path, bytes]],
                                                                   dict[str, Any]]:
    """The files an export writes, ``[(DATA, bytes), (DATA.json, bytes)]``, and the record."""
    data_path = Path(data_path)
    record = signing_record(tbs, source=source, data_name=data_path.name,
                            manifest_sgx=manifest_sgx)
    text = json.dumps(record, indent=2) + "\n"
    return [(data_path, tbs.signed_bytes()), (json_path_for(data_path), text.encode())], record


def write_together(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write every file; nothing is renamed unless all were written, and the
    last one is renamed last (see :func:`ppml_image._fs.write_files_in_order`).

    Errors name the user's file, never the temporary one beside it.
    """
    check_outputs([path for path, _ in files])
    write_files_in_order(files)


def check_outputs(paths: Sequence[Path], inputs: Sequence[Path] = ()) -> None:
    """Refuse, before any long work, outputs that are folders, devices, in a
    missing or pseudo-file-system folder, the same file twice, or an input."""
    check_output_files(paths, inputs)


def export_manifest_signing_data(manifest: Path, output: Path, libpal: Path, data: Path, *,
                                 date: str | dt.date | SigstructDate | None = None,
                                 chroot: Path | None = None,
                                 pkglibdir: str = mf.DEFAULT_PKGLIBDIR, release: Release = False,
                                 max_enclave_size: int | None = None) -> ExportedSigningData:
    """``sign --export-signing-data``: write the ``.manifest.sgx``, DATA and DATA.json.

    *release* and *max_enclave_size* as in :func:`ppml_image.sgx.sign.prepare_enclave`.
    """
    output, data = Path(output), Path(data)
    check_outputs([output, data, json_path_for(data)], inputs=[Path(manifest), Path(libpal)])
    when = parse_date(date)
    text = mf.read_text(manifest, "manifest")
    limits = {} if max_enclave_size is None else {"max_enclave_size": max_enclave_size}
    prepared: SignedEnclave = prepare_enclave(
        text, pal=load_elf(libpal), tree=tree_for(chroot), date=when, name=str(manifest),
        pkglibdir=pkglibdir, release=release, **limits)
    files, record = signing_data_files(prepared.sigstruct, data, source=str(manifest),
                                       manifest_sgx=prepared.manifest_sgx)
    # DATA last: the bytes to sign are what vouch for the .manifest.sgx.
    write_together([(output, prepared.manifest_sgx), *reversed(files)])
    return ExportedSigningData(data, json_path_for(data), record)
