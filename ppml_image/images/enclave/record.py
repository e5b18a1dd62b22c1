"""The measurement record as a source of pinned values (``--record R.json``).

A record is what ``build-custom``/``sign-image --output`` write, or the
``DATA.json`` of ``--export-signing-data``. Read strictly (bounded size, UTF-8
JSON, one object, no duplicated key), it gives what the user registered:
the base image id (the pinned base), MRENCLAVE and MRSIGNER (expected
values), and which image was measured (``unsigned_image_id``: the offline
``--signature`` step refuses any other image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ppml_image.errors import UsageError
from ppml_image.sgx.signing import record as records

_IMAGE_IDS = ("base_image_id", "unsigned_image_id", "image_id")
_MR_VALUES = ("mr_enclave", "mr_signer")


@dataclass(frozen=True)
class Record:
    """The pinned values a record gives (None: the record does not say)."""

    path: Path
    base_image_id: str | None = None
    mr_enclave: str | None = None
    mr_signer: str | None = None
    unsigned_image_id: str | None = None
    image_id: str | None = None


def load_record(path: Path) -> Record:
    """Read *path*; a malformed record is a usage error (exit 2) naming the file and key.

    Every field is optional (a record pins what it says, the options the
    rest), but one that is present must be well formed.
    """
    raw = records.read_record(path)
    values: dict[str, str | None] = {}
    for key in (*_IMAGE_IDS, *_MR_VALUES):
        value, what = raw.get(key), f"{path}: {key}"
        if value is None:
            values[key] = None
        elif key in _IMAGE_IDS:
            values[key] = records.image_id_field(value, what)
        else:
            values[key] = records.hex_field(value, 32, what)
    return Record(path, **values)


def pinned_values(record: Path | None, base: str | None, mr_enclave: str | None,
                  mr_signer: str | None) -> tuple[Record | None, str | None, str | None,
                                                  str | None]:
    """Merge ``--record`` with ``--base``/``--mr-enclave``/``--mr-signer``.

    A value given both ways must agree (else a usage error): a record and an
    option that disagree mean the user is unsure which image they registered.
    """
    if record is None:
        return None, base, mr_enclave, mr_signer
    loaded = load_record(record)
    merged = []
    for option, given, recorded in (("--base", base, loaded.base_image_id),
                                    ("--mr-enclave", mr_enclave, loaded.mr_enclave),
                                    ("--mr-signer", mr_signer, loaded.mr_signer)):
        if given is not None and recorded is not None and option != "--base" \
                and given.lower() != recorded:
            raise UsageError(f"{option} {given[:80]} disagrees with {record}'s {recorded}")
        merged.append(given if given is not None else recorded)
    return loaded, merged[0], merged[1], merged[2]
