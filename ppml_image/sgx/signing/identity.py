"""The enclave identity a quote is checked against, as a SIGSTRUCT fixes it.

What an attestation policy needs beyond MRENCLAVE and MRSIGNER: the
attributes and MISCSELECT with their masks, the product ID and SVN, DEBUG and
the TEE type. Hex fields are the bytes as they sit in the SIGSTRUCT and in an
SGX report body (little-endian), so a record compares byte for byte with a
quote: ``attributes`` is FLAGS (8 bytes) then XFRM (8 bytes), as dcap-qvl and
Intel's tools print a report's attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _number(value: Any) -> int:
    # The sigstruct view gives hex strings ("0x4"); records built by hand may give ints.
    return int(value, 0) if isinstance(value, str) else int(value)


def identity_fields(view: Mapping[str, Any]) -> dict[str, Any]:
    """The attestation fields of a SIGSTRUCT, from its ``Sigstruct.view()`` mapping."""
    flags = _number(view["attribute_flags"])
    return {
        "tee": "sgx",
        "isv_prod_id": int(view["isv_prod_id"]),
        "isv_svn": int(view["isv_svn"]),
        "attributes": (flags.to_bytes(8, "little")
                       + _number(view["attribute_xfrms"]).to_bytes(8, "little")).hex(),
        "attribute_mask": (_number(view["attribute_flags_mask"]).to_bytes(8, "little")
                           + _number(view["attribute_xfrm_mask"]).to_bytes(8, "little")).hex(),
        "misc_select": _number(view["misc_select"]).to_bytes(4, "little").hex(),
        "misc_mask": _number(view["misc_mask"]).to_bytes(4, "little").hex(),
        "debug": bool(flags & 0x2),
    }
