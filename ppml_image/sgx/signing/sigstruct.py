"""SIGSTRUCT: the 1808-byte enclave signature structure.

Layout (Intel SDM vol. 3D, "Enclave Signature Structure"); all integers are
little-endian, the RSA modulus, signature, Q1 and Q2 as 384-byte numbers.
The RSA signature (PKCS#1 v1.5, SHA-256) covers bytes 0-127 followed by
bytes 900-1027. Q1 and Q2 let the CPU check the signature without division:
Q1 = floor(S^2 / N), Q2 = floor((S^3 - Q1*S*N) / N).

A ``.sig`` is checked as EINIT checks it: over the file's own bytes, never
over a copy re-serialised from parsed fields (which would hide changes to
every byte the parser does not look at). Every byte of the file is either a
constant, a field we parse, or must be zero, so a single changed byte
anywhere is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml_image._fs import read_capped
from ppml_image.errors import PpmlError, SigstructError
from ppml_image.sgx.signing.keys import mr_signer_of_modulus, sgx_key_problem

SIGSTRUCT_SIZE = 1808
HEADER = bytes.fromhex("06000000e10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
SGX_FLAGS_DEBUG = 0x2
SGX_FLAGS_MODE64BIT = 0x4
SGX_MISCSELECT_EXINFO = 0x1
_RSA_BYTES = 384

# The masks Gramine 1.9 writes (sgx_arch.h, SGX_*_MASK_CONST). EINIT compares
# SECS.ATTRIBUTES with SIGSTRUCT.ATTRIBUTES only under ATTRIBUTEMASK (and
# MISCSELECT under MISCMASK): a bit the mask leaves out is the host's choice
# at launch, with the same MRENCLAVE and MRSIGNER.
GRAMINE_FLAGS_MASK = 0xFFFFFFFFFFFFFFFF
GRAMINE_MISC_MASK = 0xFFFFFFFF
GRAMINE_XFRM_MASK_CONST = 0xFFFFFFFFFFF9FF1B  # every bit but AVX, AVX-512 and AMX
# sgx.cpu_features groups and their XFRM bits; "required" or "disabled" adds
# the group to the XFRM mask (MPX and PKRU are in the constant already).
XFRM_FEATURE_BITS = {"avx": 0x4, "avx512": 0xE4, "amx": 0x60000, "mpx": 0x18, "pkru": 0x200}


def gramine_xfrm_masks() -> frozenset[int]:
    """Every XFRM mask Gramine 1.9 can write: the constant plus any union of
    the cpu_features groups a manifest may pin."""
    masks = {GRAMINE_XFRM_MASK_CONST}
    for bits in XFRM_FEATURE_BITS.values():
        masks |= {mask | bits for mask in masks}
    return frozenset(masks)


_GRAMINE_XFRM_MASKS = gramine_xfrm_masks()


@dataclass(frozen=True)
class MaskProblem:
    """A SIGSTRUCT mask that is not Gramine's. *debug*: the problem is only
    that the host may launch the enclave in debug mode (``--allow-debug``)."""

    field: str
    text: str
    debug: bool = False

    def __str__(self) -> str:
        return self.text

# (name, offset, struct format); integer fields only.
_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("vendor", 16, "<I"),
    ("date_raw", 20, "<I"),
    ("swdefined", 40, "<I"),
    ("exponent", 512, "<I"),
    ("misc_select", 900, "<I"),
    ("misc_mask", 904, "<I"),
    ("attribute_flags", 928, "<Q"),
    ("attribute_xfrms", 936, "<Q"),
    ("attribute_flags_mask", 944, "<Q"),
    ("attribute_xfrm_mask", 952, "<Q"),
    ("isv_prod_id", 1024, "<H"),
    ("isv_svn", 1026, "<H"),
)
_MODULUS, _SIGNATURE, _ENCLAVE_HASH, _Q1, _Q2 = 128, 516, 960, 1040, 1424
VENDORS = (0x0000, 0x8086)  # unknown vendor, Intel
# Byte ranges [start, end) that must be zero. Besides the SDM's reserved
# fields this includes CET_ATTRIBUTES/_MASK (908-909), ISVFAMILYID (912-927)
# and ISVEXTPRODID (1008-1023): Gramine 1.9 always leaves them zero, and a
# .sig that sets them was not made by a Gramine-compatible signer.
MUST_BE_ZERO: tuple[tuple[int, int, str], ...] = (
    (44, 128, "reserved bytes 44-127"),
    (908, 912, "CET attributes and reserved bytes 908-911"),
    (912, 928, "ISVFAMILYID (bytes 912-927)"),
    (992, 1008, "reserved bytes 992-1007"),
    (1008, 1024, "ISVEXTPRODID (bytes 1008-1023)"),
    (1028, 1040, "reserved bytes 1028-1039"),
)


_DATE_TEXT = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


@dataclass(frozen=True, order=True)
class SigstructDate:
    """The SIGSTRUCT DATE field: year, month and day as Gramine 1.9 writes them.

    ``gramine-sgx-sign --date`` takes any ``YYYY-MM-DD`` of digits and stores
    each part in BCD: it need not be a calendar date, and ``0000-00-00``
    (all zeros) is what reproducible builds use. EINIT does not check it.
    """

    year: int
    month: int
    day: int

    def __post_init__(self) -> None:
        for value, limit in ((self.year, 9999), (self.month, 99), (self.day, 99)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 0 <= value <= limit:
                raise ValueError(f"SIGSTRUCT date part {value!r} is not 0-{limit}")

    @classmethod
    def parse(cls, text: str) -> SigstructDate:
        """``YYYY-MM-DD`` of ASCII digits (Gramine's grammar); ValueError otherwise."""
        match = _DATE_TEXT.fullmatch(text)
        if match is None:
            raise ValueError(f"{text[:40]!r} is not YYYY-MM-DD")
        year, month, day = (int(part) for part in match.groups())
        return cls(year, month, day)

    @classmethod
    def of(cls, date: dt.date | SigstructDate) -> SigstructDate:
        if isinstance(date, SigstructDate):
            return date
        return cls(date.year, date.month, date.day)

    @classmethod
    def decode(cls, raw: int) -> SigstructDate:
        """The 32-bit field (day, month, then the year, little-endian): every
        nibble must be a decimal digit."""
        return cls(_from_bcd(raw >> 16), _from_bcd((raw >> 8) & 0xFF), _from_bcd(raw & 0xFF))

    def encode(self) -> int:
        """BCD as 0xYYYYMMDD: bytes 20-23 are DD, MM, then YYYY little-endian."""
        return (_bcd(self.year) << 16) | (_bcd(self.month) << 8) | _bcd(self.day)

    def isoformat(self) -> str:
        """``YYYY-MM-DD``, as ``gramine-sgx-sigstruct-view`` prints the field."""
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

    def __str__(self) -> str:
        return self.isoformat()

    @property
    def is_zero(self) -> bool:
        return (self.year, self.month, self.day) == (0, 0, 0)

    @property
    def is_calendar_date(self) -> bool:
        try:
            dt.date(self.year, self.month, self.day)
        except ValueError:
            return False
        return True


def _bcd(value: int) -> int:
    """Decimal digits of *value* as BCD nibbles: 2024 -> 0x2024."""
    return int(str(value), 16)


def _from_bcd(value: int) -> int:
    text = f"{value:x}"
    if not text.isdigit():
        raise ValueError(f"not BCD: {value:#x}")
    return int(text)


def encode_date(date: dt.date | SigstructDate) -> int:
    """SIGSTRUCT DATE: year, month and day in BCD as 0xYYYYMMDD."""
    return SigstructDate.of(date).encode()


def decode_date(raw: int) -> SigstructDate:
    return SigstructDate.decode(raw)


@dataclass
class Sigstruct:
    """The fields of a SIGSTRUCT. ``modulus``/``signature`` are integers."""

    enclave_hash: bytes
    date: SigstructDate
    attribute_flags: int
    attribute_xfrms: int
    attribute_xfrm_mask: int
    misc_select: int = 0
    isv_prod_id: int = 0
    isv_svn: int = 0
    attribute_flags_mask: int = 0xFFFFFFFFFFFFFFFF
    misc_mask: int = 0xFFFFFFFF
    vendor: int = 0
    swdefined: int = 0
    exponent: int = 0
    modulus: int = 0
    signature: int = 0
    q1: int = 0
    q2: int = 0
    # The exact bytes this SIGSTRUCT was parsed from: what verify() checks.
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # A datetime.date is accepted for convenience; the field holds any
        # BCD date Gramine can write (0000-00-00, 2024-13-45...).
        self.date = SigstructDate.of(self.date)

    # --- serialisation -------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = bytearray(SIGSTRUCT_SIZE)
        buf[0:16] = HEADER
        buf[24:40] = HEADER2
        for name, offset, fmt in _FIELDS:
            value = self.date.encode() if name == "date_raw" else getattr(self, name)
            struct.pack_into(fmt, buf, offset, value)
        buf[_ENCLAVE_HASH : _ENCLAVE_HASH + 32] = self.enclave_hash
        for offset, number in ((_MODULUS, self.modulus), (_SIGNATURE, self.signature),
                               (_Q1, self.q1), (_Q2, self.q2)):
            buf[offset : offset + _RSA_BYTES] = number.to_bytes(_RSA_BYTES, "little")
        return bytes(buf)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<sigstruct>") -> Sigstruct:
        """Parse a SIGSTRUCT, keeping its bytes for :meth:`verify`.

        Raises :class:`SigstructError` on a malformed one: wrong size, header
        or vendor, a non-zero reserved field, an invalid date.
        """
        data = bytes(data)
        if len(data) != SIGSTRUCT_SIZE:
            raise SigstructError(
                f"{name}: SIGSTRUCT must be {SIGSTRUCT_SIZE} bytes, file has {len(data)}"
            )
        if data[0:16] != HEADER:
            raise SigstructError(f"{name}: not a SIGSTRUCT (bad HEADER, bytes 0-15)")
        if data[24:40] != HEADER2:
            raise SigstructError(f"{name}: not a SIGSTRUCT (bad HEADER2, bytes 24-39)")
        for start, end, what in MUST_BE_ZERO:
            if any(data[start:end]):
                raise SigstructError(f"{name}: SIGSTRUCT {what} must be zero")
        values = {n: struct.unpack_from(f, data, o)[0] for n, o, f in _FIELDS}
        if values["vendor"] not in VENDORS:
            raise SigstructError(
                f"{name}: SIGSTRUCT vendor is {values['vendor']:#x}; expected 0 or 0x8086")
        try:
            date = SigstructDate.decode(values.pop("date_raw"))
        except ValueError:
            raise SigstructError(f"{name}: SIGSTRUCT date is not BCD (a digit nibble above 9; "
                                 "gramine-sgx-sign writes decimal digits only)") from None

        def rsa_number(offset: int) -> int:
            return int.from_bytes(data[offset : offset + _RSA_BYTES], "little")

        sig = cls(
            enclave_hash=data[_ENCLAVE_HASH : _ENCLAVE_HASH + 32], date=date,
            modulus=rsa_number(_MODULUS), signature=rsa_number(_SIGNATURE),
            q1=rsa_number(_Q1), q2=rsa_number(_Q2), raw=data, **values,
        )
        if sig.to_bytes() != data:
            # Every byte is a constant, a parsed field or must-be-zero, so this
            # cannot happen unless the parser misses a field: refuse, never
            # accept bytes we did not look at.
            raise SigstructError(f"{name}: SIGSTRUCT has bytes outside its known fields")
        return sig

    def signed_bytes(self) -> bytes:
        """The bytes the RSA signature covers: 0-127 and 900-1027 of the file
        this SIGSTRUCT was read from (or of its serialisation, if built here)."""
        raw = self.raw if self.raw is not None else self.to_bytes()
        return raw[0:128] + raw[900:1028]

    # --- signing and checking ------------------------------------------
    def attach_signature(self, modulus: int, exponent: int, signature: bytes) -> None:
        """Fill modulus, exponent, signature, Q1 and Q2 from a signature over
        :meth:`signed_bytes`. Signing itself (and checking the signature before
        it is used) is :func:`ppml_image.sgx.signing.signers.sign_sigstruct`."""
        self.raw = None
        self.modulus, self.exponent = modulus, exponent
        self.signature = int.from_bytes(signature, "big")
        self.q1, self.q2 = compute_q1_q2(self.signature, self.modulus)

    def verify(self, name: str = "<sigstruct>") -> None:
        """Check the SIGSTRUCT as EINIT does; raise :class:`SigstructError` if wrong.

        The RSA-3072/e=3 key, the signature over the file's own bytes (not
        a re-serialised copy), signature < modulus, and Q1/Q2.
        """
        if self.raw is not None and self.to_bytes() != self.raw:
            raise SigstructError(f"{name}: SIGSTRUCT fields were changed after it was read")
        problem = sgx_key_problem(self.modulus, self.exponent)
        if problem:
            raise SigstructError(f"{name}: SIGSTRUCT signer: {problem}")
        if self.signature >= self.modulus:
            raise SigstructError(f"{name}: SIGSTRUCT signature is not smaller than the modulus")
        public = rsa.RSAPublicNumbers(self.exponent, self.modulus).public_key()
        try:
            public.verify(self.signature.to_bytes(_RSA_BYTES, "big"), self.signed_bytes(),
                          padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise SigstructError(
                f"{name}: RSA signature does not verify (forged or modified SIGSTRUCT)"
            ) from None
        if (self.q1, self.q2) != compute_q1_q2(self.signature, self.modulus):
            raise SigstructError(f"{name}: Q1/Q2 do not match the signature")

    # --- views -----------------------------------------------------------
    @property
    def mr_enclave(self) -> str:
        return self.enclave_hash.hex()

    @property
    def mr_signer(self) -> str:
        return mr_signer_of_modulus(self.modulus)

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.DEBUG is set: what gramine-sgx-sigstruct-view calls debug_enclave."""
        return bool(self.attribute_flags & SGX_FLAGS_DEBUG)

    @property
    def debug_launchable(self) -> bool:
        """The host can launch this enclave in debug mode: the DEBUG flag is set,
        or the attribute mask leaves it out (EINIT then accepts either value)."""
        return self.debug or not self.attribute_flags_mask & SGX_FLAGS_DEBUG

    def mask_problems(self) -> list[MaskProblem]:
        """Every mask that is not one Gramine 1.9 writes, one line each."""
        problems: list[MaskProblem] = []
        flags_mask = self.attribute_flags_mask
        if not flags_mask & SGX_FLAGS_DEBUG:
            problems.append(MaskProblem(
                "attribute_flags_mask",
                f"attribute_flags_mask {flags_mask:#x} does not cover DEBUG (0x2): the host "
                "can launch this enclave in debug mode with the same MRENCLAVE and MRSIGNER",
                debug=True))
        others = GRAMINE_FLAGS_MASK & ~flags_mask & ~SGX_FLAGS_DEBUG
        if others:
            problems.append(MaskProblem(
                "attribute_flags_mask",
                f"attribute_flags_mask {flags_mask:#x} leaves attribute bits {others:#x} to "
                f"the host; Gramine 1.9 writes {GRAMINE_FLAGS_MASK:#x}"))
        xfrm_mask = self.attribute_xfrm_mask
        if xfrm_mask not in _GRAMINE_XFRM_MASKS:
            missing = GRAMINE_XFRM_MASK_CONST & ~xfrm_mask
            why = (f"leaves XFRM bits {missing:#x} to the host" if missing
                   else "adds bits that no sgx.cpu_features setting adds")
            problems.append(MaskProblem(
                "attribute_xfrm_mask",
                f"attribute_xfrm_mask {xfrm_mask:#x} {why}; Gramine 1.9 writes "
                f"{GRAMINE_XFRM_MASK_CONST:#x} plus the AVX/AVX-512/AMX bits sgx.cpu_features "
                "pins"))
        if self.misc_mask != GRAMINE_MISC_MASK:
            missing = GRAMINE_MISC_MASK & ~self.misc_mask
            problems.append(MaskProblem(
                "misc_mask",
                f"misc_mask {self.misc_mask:#x} leaves MISCSELECT bits {missing:#x} to the "
                f"host; Gramine 1.9 writes {GRAMINE_MISC_MASK:#x}"))
        return problems

    def release_problems(self) -> list[str]:
        """Why a release signer must not sign this: debug, or any non-Gramine mask."""
        problems = [str(p) for p in self.mask_problems()]
        if self.debug:
            problems.insert(0, "ATTRIBUTES.DEBUG is set (sgx.debug = true): a debug enclave, "
                               "its memory readable by the host")
        return problems

    def view(self) -> dict[str, Any]:
        """What ``sigstruct``, ``inspect`` and ``verify`` report: first whether the
        host can launch the enclave as debug and every mask that is not
        Gramine's, then the fields as ``gramine-sgx-sigstruct-view
        --output-format json`` names them."""
        return {
            "debug_launchable": self.debug_launchable,
            "mask_problems": [str(p) for p in self.mask_problems()],
            "mr_signer": self.mr_signer,
            "mr_enclave": self.mr_enclave,
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "attribute_flags": hex(self.attribute_flags),
            "attribute_xfrms": hex(self.attribute_xfrms),
            "misc_select": hex(self.misc_select),
            "attribute_flags_mask": hex(self.attribute_flags_mask),
            "attribute_xfrm_mask": hex(self.attribute_xfrm_mask),
            "misc_mask": hex(self.misc_mask),
            "date": self.date.isoformat(),
            "debug_enclave": self.debug,
        }

    def view_json(self) -> str:
        return json.dumps(self.view(), indent=4)


def refuse_for_release(sig: Sigstruct, name: str, error: type[PpmlError]) -> None:
    """Raise *error* naming every reason a release signer must not sign *sig*."""
    problems = sig.release_problems()
    if problems:
        raise error(f"{name}: refused for release: " + "; ".join(problems))


def compute_q1_q2(signature: int, modulus: int) -> tuple[int, int]:
    q1, remainder = divmod(signature * signature, modulus)
    # S^3 - Q1*S*N = S * (S^2 - Q1*N) = S * (S^2 mod N): no 9216-bit cube needed.
    q2 = signature * remainder // modulus
    return q1, q2


def read_sigstruct(path: str | bytes, *, verify: bool = True) -> Sigstruct:
    """Read and (by default) verify the SIGSTRUCT in the file at *path*.

    At most one byte more than a SIGSTRUCT is read, so ``/dev/zero`` or a huge
    sparse file is refused at once instead of filling memory.
    """
    name = os.fsdecode(path)
    data = read_capped(path, SIGSTRUCT_SIZE, ".sig file", SigstructError)
    sig = Sigstruct.from_bytes(data, name)
    if verify:
        sig.verify(name)
    return sig
