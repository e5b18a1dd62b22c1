"""A .sig is checked byte for byte, as EINIT checks it (issue 8, point 1).

In-process on purpose: 1,808 offsets times several values is thousands of
parses, far too many for one subprocess each.
"""

from __future__ import annotations

import datetime as dt
import random
import struct
from pathlib import Path

import pytest
from conftest import VECTORS, assert_one_line_error, cases, run_cli
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ppml_image.errors import SigstructError
from ppml_image.sgx.signing.signers import sign_sigstruct
from ppml_image.sgx.signing.sigstruct import (
    SIGSTRUCT_SIZE,
    Sigstruct,
    compute_q1_q2,
    read_sigstruct,
)

GOOD = (VECTORS / "sign-basic-256m-4t-debug" / "expected.sig").read_bytes()


def _refused(data: bytes) -> bool:
    try:
        Sigstruct.from_bytes(data, "x.sig").verify("x.sig")
    except SigstructError:
        return True
    return False


def _flip(data: bytes, offset: int, xor: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= xor
    return bytes(changed)


def test_the_vector_is_valid() -> None:
    assert not _refused(GOOD)


@pytest.mark.parametrize("name", cases("sign", errors=False))
def test_every_offset_with_several_values_is_refused(name: str) -> None:
    """Six different changes at each of the 1,808 offsets of every vector .sig."""
    good = (VECTORS / name / "expected.sig").read_bytes()
    assert not _refused(good)
    rng = random.Random(name)
    accepted = []
    for offset in range(SIGSTRUCT_SIZE):
        for xor in (0x01, 0x02, 0x10, 0x80, 0xFF, rng.randrange(1, 256)):
            if not _refused(_flip(good, offset, xor)):
                accepted.append((offset, xor))
    assert accepted == [], f"single-byte changes accepted: {accepted[:20]}"


@pytest.mark.slow
def test_every_single_byte_change_is_refused() -> None:
    """All 255 changes at each of the 1,808 offsets (461,040 files, ~30 s)."""
    accepted = [(offset, xor) for offset in range(SIGSTRUCT_SIZE) for xor in range(1, 256)
                if not _refused(_flip(GOOD, offset, xor))]
    assert accepted == []


@pytest.mark.parametrize("offset", [44, 100, 127, 908, 909, 910, 912, 927, 992, 1007, 1008,
                                    1023, 1028, 1039])
def test_reserved_and_unused_fields_must_be_zero(offset: int) -> None:
    """The bytes the old check re-serialised away (issue 8's byte 100 example)."""
    with pytest.raises(SigstructError, match="must be zero"):
        Sigstruct.from_bytes(_flip(GOOD, offset, 0x01), "x.sig")


def test_signature_covers_the_files_own_bytes() -> None:
    """A forger who zeroes a reserved byte after signing must still fail, and
    the check reads raw bytes: a SIGSTRUCT whose fields are changed after
    parsing is refused rather than re-serialised."""
    sig = Sigstruct.from_bytes(GOOD, "x.sig")
    sig.isv_svn += 1
    with pytest.raises(SigstructError, match="changed after it was read"):
        sig.verify("x.sig")


@pytest.mark.parametrize("data,fragment", [
    (GOOD[:-1], "1808"),
    (GOOD + b"\0", "1808"),
    (b"", "1808"),
    (_flip(GOOD, 0, 0x01), "HEADER"),
    (_flip(GOOD, 30, 0x01), "HEADER2"),
    (_flip(GOOD, 16, 0x01), "vendor"),
])
def test_structure(data: bytes, fragment: str) -> None:
    with pytest.raises(SigstructError, match=fragment):
        Sigstruct.from_bytes(data, "x.sig").verify("x.sig")


def _signed(key: rsa.RSAPrivateKey, **fields: int) -> Sigstruct:
    sig = Sigstruct(enclave_hash=bytes(range(32)), date=dt.date(2024, 1, 15),
                    attribute_flags=4, attribute_xfrms=3, attribute_xfrm_mask=0xFFFFFFFFFFF9FF1B,
                    **fields)
    sign_sigstruct(sig, key)
    return sig


def test_intel_vendor_is_accepted() -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    raw = _signed(key, vendor=0x8086).to_bytes()
    parsed = Sigstruct.from_bytes(raw, "intel.sig")
    parsed.verify("intel.sig")
    assert parsed.vendor == 0x8086


def test_exponent_other_than_3_is_refused() -> None:
    """A correct RSA signature under e=65537 is still not a SIGSTRUCT (built by
    hand: our own signer refuses such a key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    sig = Sigstruct(enclave_hash=bytes(32), date=dt.date(2024, 1, 15), attribute_flags=4,
                    attribute_xfrms=3, attribute_xfrm_mask=0xFFFFFFFFFFF9FF1B,
                    exponent=65537, modulus=key.public_key().public_numbers().n)
    signature = key.sign(sig.signed_bytes(), padding.PKCS1v15(), hashes.SHA256())
    sig.signature = int.from_bytes(signature, "big")
    sig.q1, sig.q2 = compute_q1_q2(sig.signature, sig.modulus)
    raw = sig.to_bytes()
    with pytest.raises(SigstructError, match="exponent is 65537"):
        Sigstruct.from_bytes(raw, "e.sig").verify("e.sig")


def test_signature_not_below_the_modulus_is_refused() -> None:
    sig = Sigstruct.from_bytes(GOOD, "x.sig")
    raw = bytearray(GOOD)
    raw[516:900] = sig.modulus.to_bytes(384, "little")  # S = N: S^3 mod N is 0
    with pytest.raises(SigstructError, match="not smaller than the modulus"):
        Sigstruct.from_bytes(bytes(raw), "x.sig").verify("x.sig")


def test_q1_q2_shortcut_matches_the_definition() -> None:
    sig = Sigstruct.from_bytes(GOOD, "x.sig")
    s, n = sig.signature, sig.modulus
    q1 = s * s // n
    assert compute_q1_q2(s, n) == (q1, (s**3 - q1 * s * n) // n)


def test_round_trip_keeps_the_raw_bytes() -> None:
    sig = Sigstruct.from_bytes(GOOD, "x.sig")
    assert sig.raw == GOOD and sig.to_bytes() == GOOD
    assert sig.signed_bytes() == GOOD[0:128] + GOOD[900:1028]
    assert struct.unpack_from("<I", GOOD, 512)[0] == sig.exponent == 3


def test_read_sigstruct_is_bounded(tmp_path: Path) -> None:
    """/dev/zero as a .sig is refused at once, not read until memory runs out."""
    with pytest.raises(SigstructError, match="1808 bytes"):
        read_sigstruct("/dev/zero")
    with pytest.raises(SigstructError, match="is a folder"):
        read_sigstruct(str(tmp_path))


def test_cli_refuses_a_reserved_byte_change(tmp_path: Path) -> None:
    """The example from the issue: one bit of byte 100 used to give "valid"."""
    path = tmp_path / "tampered.sig"
    path.write_bytes(_flip(GOOD, 100, 0x01))
    assert_one_line_error(run_cli("sigstruct", path), str(path), "must be zero")
    dev_zero = run_cli("sigstruct", "/dev/zero")
    assert_one_line_error(dev_zero, "/dev/zero", "1808")
