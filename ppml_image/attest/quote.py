"""The layout of a DCAP quote: header, report body, where the signature data ends.

Only what is needed to say what a quote is (SGX or TDX, which version) and to
read an SGX report body's fields; every byte's authenticity is dcap-qvl's job
(:mod:`ppml_image.attest.verify`). A quote that does not hold together (short,
a signature length that points past the end, bytes after it that are not zero
padding) is malformed: :class:`~ppml_image.errors.UsageError`, exit 2.

Layouts: Intel SGX ECDSA Quote Library reference (v3), TDX DCAP quote (v4, v5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ppml_image.errors import UsageError

QUOTE_LIMIT = 64 * 1024  # real quotes with a PCK chain are about 5 KB
HEADER_SIZE = 48
TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
SGX_BODY_SIZE = 384
_V5_BODIES = {1: ("sgx", 384), 2: ("tdx", 584), 3: ("tdx", 648)}

# The SGX report body: (name, offset, size), offsets from the body's start.
SGX_REPORT_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("cpu_svn", 0, 16), ("misc_select", 16, 4), ("reserved1", 20, 12),
    ("isv_ext_prod_id", 32, 16), ("attributes", 48, 16), ("mr_enclave", 64, 32),
    ("reserved2", 96, 32), ("mr_signer", 128, 32), ("reserved3", 160, 32),
    ("config_id", 192, 64), ("isv_prod_id", 256, 2), ("isv_svn", 258, 2),
    ("config_svn", 260, 2), ("reserved4", 262, 42), ("isv_family_id", 304, 16),
    ("report_data", 320, 64),
)


@dataclass(frozen=True)
class SgxReportBody:
    """The fields of an SGX report body that a policy looks at (bytes as in the quote)."""

    raw: bytes

    def field(self, name: str) -> bytes:
        for key, offset, size in SGX_REPORT_FIELDS:
            if key == name:
                return self.raw[offset:offset + size]
        raise KeyError(name)

    @property
    def mr_enclave(self) -> str:
        return self.field("mr_enclave").hex()

    @property
    def mr_signer(self) -> str:
        return self.field("mr_signer").hex()

    @property
    def isv_prod_id(self) -> int:
        return int.from_bytes(self.field("isv_prod_id"), "little")

    @property
    def isv_svn(self) -> int:
        return int.from_bytes(self.field("isv_svn"), "little")

    @property
    def attribute_flags(self) -> int:
        return int.from_bytes(self.field("attributes")[:8], "little")

    def to_json(self) -> dict[str, object]:
        return {"mr_enclave": self.mr_enclave, "mr_signer": self.mr_signer,
                "isv_prod_id": self.isv_prod_id, "isv_svn": self.isv_svn,
                "attributes": self.field("attributes").hex(),
                "misc_select": self.field("misc_select").hex(),
                "cpu_svn": self.field("cpu_svn").hex(),
                "report_data": self.field("report_data").hex()}


@dataclass(frozen=True)
class QuoteLayout:
    """What a quote's bytes say it is: version, TEE, and the SGX body when it is SGX."""

    version: int
    tee: str
    body_offset: int
    body_size: int
    sgx_body: SgxReportBody | None


def parse_quote_layout(data: bytes, name: str = "quote") -> QuoteLayout:
    """Read a quote's header and check that its parts fit its length; never reads past it."""
    if len(data) > QUOTE_LIMIT:
        raise UsageError(f"{name}: {len(data)} bytes, more than a quote's {QUOTE_LIMIT}")
    if len(data) < HEADER_SIZE:
        raise UsageError(f"{name}: truncated: {len(data)} bytes, shorter than a quote header")
    version, _key_type, tee_type = struct.unpack_from("<HHI", data, 0)
    offset = HEADER_SIZE
    if version == 3:
        tee, body_size = "sgx", SGX_BODY_SIZE
        if tee_type not in (TEE_SGX,):
            raise UsageError(f"{name}: version 3 quote with TEE type {tee_type:#x}")
    elif version == 4:
        if tee_type == TEE_SGX:
            tee, body_size = "sgx", SGX_BODY_SIZE
        elif tee_type == TEE_TDX:
            tee, body_size = "tdx", 584
        else:
            raise UsageError(f"{name}: unknown TEE type {tee_type:#x}")
    elif version == 5:
        if len(data) < offset + 6:
            raise UsageError(f"{name}: truncated in the body descriptor")
        body_type, body_size = struct.unpack_from("<HI", data, offset)
        if body_type not in _V5_BODIES or _V5_BODIES[body_type][1] != body_size:
            raise UsageError(f"{name}: unknown body type {body_type} of {body_size} bytes")
        tee = _V5_BODIES[body_type][0]
        offset += 6
    else:
        raise UsageError(f"{name}: quote version {version} is not 3, 4 or 5")
    _check_signature_part(data, offset + body_size, name)
    body = data[offset:offset + body_size]
    return QuoteLayout(version, tee, offset, body_size,
                       SgxReportBody(body) if tee == "sgx" else None)


def _check_signature_part(data: bytes, end_of_body: int, name: str) -> None:
    if len(data) < end_of_body + 4:
        raise UsageError(f"{name}: truncated: {len(data)} bytes, the report body and "
                         f"signature length need {end_of_body + 4}")
    (sig_size,) = struct.unpack_from("<I", data, end_of_body)
    end = end_of_body + 4 + sig_size
    if len(data) < end:
        raise UsageError(f"{name}: truncated: the signature data needs {end} bytes, the "
                         f"quote has {len(data)}")
    # Quote buffers are padded with zeros (dcap-qvl's TDX sample is); anything else
    # after the signature is not part of any quote.
    if data[end:].strip(b"\0"):
        raise UsageError(f"{name}: {len(data) - end} bytes after the signature data that "
                         "are not zero padding")
