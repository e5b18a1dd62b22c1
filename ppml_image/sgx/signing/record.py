"""The measurement record: what a release pipeline writes and every reader checks.

One JSON object. ``build-custom``/``sign-image --output`` and ``attest record``
write it; ``attest verify``/``policy``/``register``, ``verify --record``,
``sign-image --record`` and ``run --record`` read it, all through
:func:`read_record` (at most 1 MiB, strict UTF-8 JSON, no duplicated key, one
object) and the field checkers here, so a malformed record gets the same
one-line message, naming the file and the field, whichever command reads it.

Why here: the record is the identity a SIGSTRUCT fixes (see
:mod:`ppml_image.sgx.signing.identity`, which it builds on), and this is the
lowest room that both ``images`` and ``attest`` may import (neither may import
the other); the shared modules at the top level import no room, so it cannot
sit beside ``_json``/``_fs``. Imports only those shared modules and
``identity``.

:class:`MeasurementRecord` is the strict, typed record (every attestation
field present and consistent). Readers that need fewer fields (registration
takes older records; ``--record`` pins only the image ids and MR values) read
the same object with :func:`hex_field`, :func:`uint_field`,
:func:`image_id_field` and :func:`debug_field`. Every key not interpreted is
kept verbatim (``extra``) and written back by :meth:`MeasurementRecord.dump`.

Hex fields are the bytes as they sit in the SIGSTRUCT and in an SGX report
body (little-endian): ``attributes``/``attribute_mask`` are FLAGS then XFRM
(16 bytes), ``misc_select``/``misc_mask`` 4 bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ppml_image import _json
from ppml_image._fs import MiB, read_capped, write_atomic
from ppml_image.errors import UsageError
from ppml_image.sgx.signing.identity import identity_fields

RECORD_LIMIT = 1 * MiB
SGX_FLAGS_DEBUG = 0x2
SERVICES = ("ehsm", "bigdl-as")
_HEX = {"mr_enclave": 32, "mr_signer": 32, "attributes": 16, "attribute_mask": 16,
        "misc_select": 4, "misc_mask": 4}
_INTERPRETED = (*_HEX, "isv_prod_id", "isv_svn", "debug", "tee", "policy_id", "service")
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}\Z")
_IDENTIFIER = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")


# --------------------------------------------------------------------------
# The one reader, and the field checkers every record reader uses.
# --------------------------------------------------------------------------
def read_record(path: Path) -> dict[str, Any]:
    """The JSON object at *path*; a malformed file is a usage error (exit 2) naming it."""
    data = read_capped(path, RECORD_LIMIT, "measurement record (JSON)", UsageError)
    try:
        parsed = _json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"{path}: not a JSON measurement record ({exc})") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"{path}: a measurement record is a JSON object")
    return parsed


def hex_field(value: Any, size: int, what: str) -> str:
    """*value* as lowercase hex of *size* bytes (either case is read: it is the same value)."""
    if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-fA-F]{{{2 * size}}}", value):
        raise UsageError(f"{what}: expected {2 * size} hex digits, not {value!r:.80}")
    return value.lower()


def uint_field(value: Any, bits: int, what: str) -> int:
    """*value* as an integer of *bits* bits (``true`` is not 1 here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise UsageError(f"{what}: expected an integer from 0 to {(1 << bits) - 1}, "
                         f"not {value!r:.40}")
    return value


def debug_field(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{what}: debug must be true or false, not {value!r:.40}")
    return value


def image_id_field(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _IMAGE_ID.match(value):
        raise UsageError(f"{what}: expected a sha256:... image id, not {value!r:.80}")
    return value


# --------------------------------------------------------------------------
# The strict record: every attestation field, consistent.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class MeasurementRecord:
    """An enclave's identity, and where it was registered (``policy_id``, ``service``)."""

    mr_enclave: str
    mr_signer: str
    isv_prod_id: int
    isv_svn: int
    attributes: str
    attribute_mask: str
    misc_select: str
    misc_mask: str
    debug: bool
    tee: str = "sgx"
    policy_id: str | None = None
    service: str | None = None
    # Every other key of the file, written back untouched.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def attribute_flags(self) -> int:
        return int.from_bytes(bytes.fromhex(self.attributes)[:8], "little")

    def with_registration(self, policy_id: str, service: str) -> MeasurementRecord:
        """The same record, registered: what ``attest register --output`` writes."""
        return _checked(replace(self, policy_id=policy_id, service=service), "record")

    def to_json(self) -> dict[str, Any]:
        data = dict(self.extra)
        data.update({"tee": self.tee, "mr_enclave": self.mr_enclave, "mr_signer": self.mr_signer,
                     "isv_prod_id": self.isv_prod_id, "isv_svn": self.isv_svn,
                     "attributes": self.attributes, "attribute_mask": self.attribute_mask,
                     "misc_select": self.misc_select, "misc_mask": self.misc_mask,
                     "debug": self.debug})
        for key in ("policy_id", "service"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    @classmethod
    def load(cls, path: Path) -> MeasurementRecord:
        """Read a record file: see :func:`load_record`."""
        return load_record(path)

    def dump(self, path: Path) -> None:
        """Write the record (write then rename: never a partial file)."""
        write_record(Path(path), self.to_json())

    @classmethod
    def from_json(cls, data: Any, source: str = "record") -> MeasurementRecord:
        """Check and read a parsed record; *source* names it in errors."""
        if not isinstance(data, dict):
            raise UsageError(f"{source}: a measurement record is a JSON object")
        missing = [k for k in _INTERPRETED[:-2] if k not in data]
        if missing:
            raise UsageError(f"{source}: the record has no {', '.join(missing)} (records "
                             "written before attestation fields existed: write it again "
                             "with `ppml-image attest record IMAGE`)")
        values: dict[str, Any] = {}
        for key, size in _HEX.items():
            values[key] = hex_field(data[key], size, f"{source}: {key}")
        for key in ("isv_prod_id", "isv_svn"):
            values[key] = uint_field(data[key], 16, f"{source}: {key}")
        for key in ("policy_id", "service"):
            value = data.get(key)
            if value is not None and not (isinstance(value, str) and _IDENTIFIER.match(value)):
                raise UsageError(f"{source}: {key} {value!r:.60} is not an identifier")
            values[key] = value
        extra = {k: v for k, v in data.items() if k not in _INTERPRETED}
        record = cls(debug=debug_field(data["debug"], source), tee=data["tee"], extra=extra,
                     **values)
        return _checked(record, source)

    @classmethod
    def from_sigstruct_view(cls, view: Mapping[str, Any],
                            **extra: Any) -> MeasurementRecord:
        """The record of a SIGSTRUCT (``Sigstruct.view()``), with *extra* keys (image...)."""
        data = {**extra, "mr_enclave": view["mr_enclave"], "mr_signer": view["mr_signer"],
                **identity_fields(view)}
        return cls.from_json(data, "sigstruct")


def _checked(record: MeasurementRecord, source: str) -> MeasurementRecord:
    if record.tee != "sgx":
        raise UsageError(f"{source}: tee {record.tee!r:.40} is not supported (only 'sgx')")
    if record.debug != bool(record.attribute_flags & SGX_FLAGS_DEBUG):
        raise UsageError(f"{source}: debug is {str(record.debug).lower()} but the attributes "
                         f"{record.attributes} say the opposite")
    if record.service is not None and record.service not in SERVICES:
        raise UsageError(f"{source}: service {record.service!r} is not one of "
                         f"{', '.join(SERVICES)}")
    return record


def load_record(path: Path) -> MeasurementRecord:
    """Read a strict record file; a malformed one is a usage error (exit 2)."""
    return MeasurementRecord.from_json(read_record(path), str(path))


def write_record(path: Path, data: Mapping[str, Any]) -> None:
    """Write then rename: a reader sees the old record or the new one, never half."""
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
