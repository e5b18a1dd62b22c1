"""The measurement record as a source of pinned values (``--record R.json``).

A record is what ``build-custom``/``sign-image --output`` write, or the
``DATA.json`` of ``--export-signing-data``. Read strictly (bounded size, UTF-8
JSON, one object, no duplicated key), it gives what the user registered:
the base image id (the pinned base), MRENCLAVE and MRSIGNER (expected
values), and which image was measured (``unsigned_image_id``: the offline
``--signature`` step refuses any other image).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppml_image._fs import read_capped
from ppml_image.errors import UsageError

RECORD_LIMIT = 1 << 20
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Record:
    """The pinned values a record gives (None: the record does not say)."""

    path: Path
    base_image_id: str | None = None
    mr_enclave: str | None = None
    mr_signer: str | None = None
    unsigned_image_id: str | None = None
    image_id: str | None = None


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicated key {key!r}")
        seen[key] = value
    return seen


def load_record(path: Path) -> Record:
    """Read *path*; a malformed record is a usage error (exit 2) naming the file and key."""
    data = read_capped(path, RECORD_LIMIT, "measurement record", UsageError)
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: not a valid JSON measurement record ({exc})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a measurement record is a JSON object")
    values: dict[str, str | None] = {}
    for key, pattern in (("base_image_id", _IMAGE_ID), ("unsigned_image_id", _IMAGE_ID),
                         ("image_id", _IMAGE_ID), ("mr_enclave", _HEX64),
                         ("mr_signer", _HEX64)):
        value = raw.get(key)
        if value is None:
            values[key] = None
        elif not isinstance(value, str) or not pattern.match(value):
            raise UsageError(f"{path}: {key} is {str(value)[:80]!r}, not a "
                             + ("sha256:... image id" if pattern is _IMAGE_ID
                                else "64-digit lowercase hex value"))
        else:
            values[key] = value
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
