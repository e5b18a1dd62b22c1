"""Property tests for the parsers (ELF, SIGSTRUCT, manifests) and bulk measurement."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import struct

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import ElfError, ManifestError, SigstructError
from ppml_image.sgx.manifest.document import parse_manifest
from ppml_image.sgx.measure.elf import PT_LOAD, parse_elf
from ppml_image.sgx.measure.enclave import PAGE, Measurement
from ppml_image.sgx.signing.sigstruct import SIGSTRUCT_SIZE, Sigstruct

# --- ELF -------------------------------------------------------------------
segment = st.tuples(st.integers(0, 0x10000), st.integers(0, 1 << 40), st.integers(0, 0x1000),
                    st.integers(0, 0x100000), st.integers(0, 7))


def make_elf(entry: int, segments: list[tuple[int, int, int, int, int]]) -> bytes:
    phoff = 64
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 3, 62, 1,
                         entry, phoff, 0, 0, 64, 56, len(segments), 64, 0, 0)
    body = b"".join(struct.pack("<IIQQQQQQ", PT_LOAD, flags, off, vaddr, vaddr, filesz,
                                max(filesz, memsz), PAGE)
                    for off, vaddr, filesz, memsz, flags in segments)
    end = max([off + filesz for off, _, filesz, _, _ in segments] + [0])
    data = header + body
    return data + bytes(max(0, end - len(data)))


@given(st.integers(0, 1 << 48), st.lists(segment, min_size=1, max_size=6))
def test_elf_round_trip(entry: int, segments: list[tuple[int, int, int, int, int]]) -> None:
    elf = parse_elf(make_elf(entry, segments))
    assert elf.entry == entry
    assert [(s.offset, s.vaddr, s.filesz, s.memsz, s.flags) for s in elf.segments] == [
        (o, v, f, max(f, m), fl) for o, v, f, m, fl in segments]


@given(st.binary(max_size=512))
def test_elf_parser_never_crashes(data: bytes) -> None:
    with contextlib.suppress(ElfError):
        parse_elf(data)


@given(st.integers(64, 63 + 56), st.lists(segment, min_size=1, max_size=3))
def test_truncated_elf_is_an_error(cut: int, segments: list) -> None:
    data = make_elf(0, segments)
    try:
        parse_elf(data[:cut])
    except ElfError:
        return
    raise AssertionError("a truncated program header table must be refused")


# --- SIGSTRUCT -------------------------------------------------------------
u64 = st.integers(0, (1 << 64) - 1)
u32 = st.integers(0, (1 << 32) - 1)
u16 = st.integers(0, 0xFFFF)
big = st.integers(0, (1 << 3072) - 1)


@given(st.binary(min_size=32, max_size=32), st.dates(dt.date(1000, 1, 1), dt.date(9999, 12, 31)),
       u64, u64, u64, u64, u32, u32, u16, u16, big, big, big, big)
def test_sigstruct_round_trip(mr: bytes, date: dt.date, flags: int, xfrm: int, fmask: int,
                              xmask: int, misc: int, mmask: int, prod: int, svn: int,
                              modulus: int, signature: int, q1: int, q2: int) -> None:
    sig = Sigstruct(enclave_hash=mr, date=date, attribute_flags=flags, attribute_xfrms=xfrm,
                    attribute_xfrm_mask=xmask, attribute_flags_mask=fmask, misc_select=misc,
                    misc_mask=mmask, isv_prod_id=prod, isv_svn=svn, exponent=3,
                    modulus=modulus, signature=signature, q1=q1, q2=q2)
    raw = sig.to_bytes()
    assert len(raw) == SIGSTRUCT_SIZE
    assert Sigstruct.from_bytes(raw) == sig


@given(st.binary(min_size=0, max_size=2000))
def test_sigstruct_parser_never_crashes(data: bytes) -> None:
    with contextlib.suppress(SigstructError):
        Sigstruct.from_bytes(data).verify()


# --- manifests -------------------------------------------------------------
@given(st.text(max_size=300))
def test_manifest_parser_only_raises_manifest_errors(text: str) -> None:
    with contextlib.suppress(ManifestError):
        parse_manifest(text, "m")


toml_scalar = st.one_of(st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1),
                        st.text(max_size=12))
sgx_values = st.fixed_dictionaries({}, optional={
    "debug": toml_scalar, "edmm_enable": toml_scalar, "enclave_size": toml_scalar,
    "max_threads": toml_scalar, "isvprodid": toml_scalar, "isvsvn": toml_scalar,
    "use_exinfo": toml_scalar,
    "cpu_features": st.dictionaries(st.sampled_from(["avx", "avx512", "amx", "mpx", "pkru",
                                                     "x"]),
                                    st.sampled_from(["required", "disabled", "unspecified",
                                                     "maybe"])),
    "trusted_files": st.lists(st.one_of(st.text(max_size=8),
                                        st.fixed_dictionaries({"uri": st.text(max_size=8)}))),
})


@settings(max_examples=300)
@given(sgx_values)
def test_manifest_checks_on_generated_tables(sgx: dict) -> None:
    text = tomli_w.dumps({"sgx": sgx})
    try:
        manifest = parse_manifest(text, "m")
    except ManifestError:
        return
    # What parses is usable by the signer: the defaults are in and well typed.
    assert isinstance(manifest["sgx"]["max_threads"], int)
    assert manifest["loader"]["entrypoint"]["uri"].startswith("file:")


# --- bulk EADD -------------------------------------------------------------
def naive_unmeasured(offset: int, count: int, flags: int) -> bytes:
    digest = hashlib.sha256()
    for i in range(count):
        digest.update(struct.pack("<8sQQ40s", b"EADD", offset + i * PAGE, flags, b""))
    return digest.digest()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, (1 << 22)) .map(lambda p: p * PAGE), st.integers(0, 3000),
       st.sampled_from([0x207, 0x201, 0x203]))
def test_bulk_eadd_equals_page_by_page(offset: int, count: int, flags: int) -> None:
    # Offsets around 4 GiB boundaries exercise the window logic.
    offset = (offset & ~0xFFFFFFF) | ((1 << 32) - PAGE * (offset % 7)) if offset % 3 == 0 \
        else offset
    bulk = Measurement(1 << 40)
    bulk.digest = hashlib.sha256()
    bulk.add_unmeasured_run(offset, count, flags)
    assert bulk.value() == naive_unmeasured(offset, count, flags)


@pytest.mark.parametrize("offset", [(1 << 40) - 5 * PAGE, (3 << 44) + 4093 * PAGE,
                                    (1 << 32) - 4096 * PAGE])
def test_bulk_eadd_block_refills(offset: int) -> None:
    # High windows, where the high dword spans several bytes, and blocks that
    # start at another index modulo 4,096 or run longer than the block before,
    # where the repeated bytes 9-10 must be rewritten.
    for count in (20_000, 4_099):
        bulk = Measurement(1 << 48)
        bulk.digest = hashlib.sha256()
        bulk.add_unmeasured_run(offset, count, 0x201)
        assert bulk.value() == naive_unmeasured(offset, count, 0x201)


def test_bulk_eadd_across_blocks_and_4gib_windows() -> None:
    # Several 64 Ki-record blocks, two 4 GiB boundaries, buffers reused.
    offset = (1 << 32) - 70_000 * PAGE
    count = (1 << 20) + 150_000
    bulk = Measurement(1 << 40)
    bulk.digest = hashlib.sha256()
    bulk.add_unmeasured_run(offset, count, 0x207)
    assert bulk.value() == naive_unmeasured(offset, count, 0x207)
