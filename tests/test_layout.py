"""The enclave layout checks gramine-sgx-sign makes, and the limits that keep
measuring bounded (issue 10, points 5 and 6; issue 11, points 3 and 5)."""

from __future__ import annotations

import datetime as dt

import pytest
from bad_inputs import elf
from conftest import COMMON, VECTORS, load_case
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import ElfError, ManifestError
from ppml_image.sgx.manifest.document import parse_manifest
from ppml_image.sgx.measure import enclave as ms
from ppml_image.sgx.measure.elf import load_elf, parse_elf
from ppml_image.sgx.measure.enclave import (
    PAGE,
    Area,
    EnclaveParams,
    Measurement,
    build_layout,
    check_heap,
    check_layout,
    enclave_params,
)
from ppml_image.sgx.measure.tree import HostTree
from ppml_image.sgx.sign import measure_manifest, sign_enclave

FAKE_PAL = load_elf(COMMON / "fake_libpal.so")
GCC_PAL = load_elf(COMMON / "gcc_libpal.so")
KEY = rsa.generate_private_key(public_exponent=3, key_size=3072)


def manifest_text(size: str, *, edmm: bool = False, threads: int = 4) -> str:
    return (f'sgx.enclave_size = "{size}"\nsgx.max_threads = {threads}\n'
            f"sgx.edmm_enable = {'true' if edmm else 'false'}\n"
            'loader.entrypoint = { uri = "file:/x", sha256 = "' + "0" * 64 + '" }\n')


def measure_text(text: str, pal: object = FAKE_PAL, **kwargs: int) -> bytes:
    manifest = parse_manifest(text, "m")
    return measure_manifest(text.encode(), manifest, pal, "m", **kwargs)  # type: ignore[arg-type]


# --- Gramine's own check: outside the heap everything is measured ------------
def test_gramine_heap_check_refuses_an_unmeasured_area_outside_the_heap() -> None:
    areas = [Area("stack", 0x1000, 0x203, addr=0x100000, measured=False)]
    with pytest.raises(ManifestError, match="outside the heap but not measured"):
        check_heap(areas, 0x10000, 0x80000, "m")


def test_gramine_heap_check_refuses_an_area_in_the_heap() -> None:
    areas = [Area("tls", 0x1000, 0x203, addr=0x40000)]
    with pytest.raises(ManifestError, match="tls area at 0x40000 lies in the heap"):
        check_heap(areas, 0x10000, 0x80000, "m")


def test_gramine_heap_check_accepts_free_pages_in_the_heap() -> None:
    check_heap([Area("free", 0x70000, 0x207, addr=0x10000, measured=False),
                Area("pal", 0x1000, 0x200, addr=0x80000)], 0x10000, 0x80000, "m")


@pytest.mark.parametrize("pal", [FAKE_PAL, GCC_PAL], ids=["fake", "gcc"])
@pytest.mark.parametrize("edmm", [False, True])
def test_real_layouts_pass_every_check(pal: object, edmm: bool) -> None:
    params = EnclaveParams(1 << 28, 16, edmm)
    areas = build_layout(params, b"x" * 5000, pal, "m")  # type: ignore[arg-type]
    # Every page is inside the enclave and added once; without EDMM, the
    # whole enclave above MMAP_MIN_ADDR is covered.
    pages = sorted(ms._pages(params, areas, pal))  # type: ignore[arg-type]
    assert pages[0][0] >= 0 and pages[-1][1] == 1 << 28
    if not edmm:
        covered = sum(end - start for start, end, _ in pages)
        assert covered == (1 << 28) - ms.MMAP_MIN_ADDR


def test_overlapping_areas_are_refused() -> None:
    params = EnclaveParams(1 << 24, 1, True)
    areas = [Area("manifest", 0x2000, 0x201, addr=0xFFD000),
             Area("ssa", 0x2000, 0x203, addr=0xFFE000)]
    with pytest.raises(ManifestError, match="manifest and ssa overlap at 0xffe000"):
        check_layout(params, [*areas, Area("pal", 0x1000, 0x200, addr=0x100000)],
                     FAKE_PAL, "m")


def test_area_outside_the_enclave_is_refused() -> None:
    params = EnclaveParams(1 << 24, 1, True)
    with pytest.raises(ManifestError, match="outside the enclave"):
        check_layout(params, [Area("manifest", 0x2000, 0x201, addr=0xFFF000)], FAKE_PAL, "m")


# --- limits before any long work ---------------------------------------------
def test_non_edmm_size_limit_is_settable() -> None:
    text = manifest_text("2048G")
    with pytest.raises(ManifestError, match="above 1 TiB is refused"):
        measure_text(text)
    with pytest.raises(ManifestError, match="above 128 MiB"):
        measure_text(manifest_text("256M"), max_enclave_size=128 << 20)
    assert measure_text(manifest_text("256M"), max_enclave_size=256 << 20)


def test_sign_enclave_checks_limits_before_hashing(tmp_path: object) -> None:
    """A trusted file that does not exist would be the error if hashing came first."""
    text = (manifest_text("2048G") + 'libos.entrypoint = "/x"\nfs.mounts = []\n'
            'sgx.trusted_files = ["file:/nonexistent/file"]\n')
    with pytest.raises(ManifestError, match="--max-enclave-size"):
        sign_enclave(text, pal=FAKE_PAL, key=KEY, tree=HostTree(), date=dt.date(2024, 1, 1))
    with pytest.raises(ManifestError, match="/nonexistent/file"):
        sign_enclave(text, pal=FAKE_PAL, key=KEY, tree=HostTree(), date=dt.date(2024, 1, 1),
                     max_enclave_size=4 << 40)


def test_edmm_enclaves_up_to_2_47_are_measured() -> None:
    """EDMM adds no heap pages: even 128 TiB is quick to measure."""
    assert len(measure_text(manifest_text("131072G", edmm=True))) == 32
    with pytest.raises(ManifestError, match="128 TiB x86-64"):
        parse_manifest(manifest_text("0x800000001000", edmm=True), "m")


def test_pal_that_does_not_fit_is_named() -> None:
    big = parse_elf(elf((0, 0, 0x200, 1 << 40, 5)), "big/libpal.so")
    with pytest.raises(ElfError, match=r"^big/libpal.so: PAL segments span 1 TiB, which does "
                                       r"not fit in the 256 MiB enclave of m$"):
        measure_text(manifest_text("256M"), big)
    fixed = parse_elf(elf((0, 0x20000000, 0x200, 0x1000, 5)), "fixed.so")
    with pytest.raises(ElfError, match="beyond the end of the 256 MiB enclave"):
        measure_text(manifest_text("256M"), fixed)


def test_threads_message_stays_for_threads() -> None:
    """A PAL that fits but leaves no room for the threads: the old message."""
    with pytest.raises(ManifestError, match="not large enough for 64 threads"):
        measure_text(manifest_text("16M", threads=64))


def test_measured_part_limit() -> None:
    big = parse_elf(elf((0, 0, 0x200, 40 << 30, 5)), "libpal.so")
    with pytest.raises(ManifestError, match="measured part"):
        measure_text(manifest_text("64G", edmm=True), big)


# --- the PAL is measured page by page, never allocated whole ------------------
def gramine_pal_pages(pal_data: bytes, segments: list[tuple[int, int, int, int, int]],
                      load_base: int) -> list[tuple[int, int, bytes]]:
    """Gramine 1.9's load_file(), written out independently."""
    pages = []
    for offset, addr, filesize, memsize, prot in segments:
        flags = 0x200 | (0x1 if prot & 4 else 0) | (0x2 if prot & 2 else 0) \
            | (0x4 if prot & 1 else 0)
        f_addr = offset - offset % PAGE
        m_addr = (load_base + addr) - (load_base + addr) % PAGE
        m_end = -(-(load_base + addr + memsize) // PAGE) * PAGE
        for page in range(m_addr, m_end, PAGE):
            start = page - m_addr + f_addr
            content = bytearray(PAGE)
            for i in range(PAGE):
                position = start + i
                if offset <= position < offset + filesize:
                    content[i] = pal_data[position]
            pages.append((page, flags, bytes(content)))
    return pages


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0x2fff), st.integers(0, 0x40) .map(lambda p: p * PAGE),
                          st.integers(0, 0x1800), st.integers(0, 0x3000), st.integers(0, 7)),
                min_size=1, max_size=3))
def test_pal_pages_match_gramine(raw: list[tuple[int, int, int, int, int]]) -> None:
    segments = []
    for offset, vaddr, filesz, extra, flags in raw:
        segments.append((offset + 0x200, vaddr + offset % PAGE, filesz, filesz + extra, flags))
    headers = elf(*segments)
    table_end = 64 + 56 * len(segments)  # after it, distinct bytes instead of zeros
    data = headers[:table_end] + bytes((i * 13 + 5) & 0xFF
                                       for i in range(table_end, len(headers)))
    pal = parse_elf(data, "p")
    area = Area("pal", 0, 0x200, addr=0x100000)
    ours = Measurement(1 << 30)
    ms._load_pal(ours, area, pal)
    reference = Measurement(1 << 30)
    base = area.addr - min(v - v % PAGE for _, v, _, _, _ in segments)
    for page, flags, content in gramine_pal_pages(data, segments, base):
        reference.add_page(page, flags, content)
    assert ours.value() == reference.value()


def test_vector_mrenclaves_are_unchanged() -> None:
    """The checks add no page and move none (also covered by test_vectors)."""
    case = load_case("sign-1g-16t-nodebug-gcc")
    sgx = (VECTORS / "sign-1g-16t-nodebug-gcc" / "expected.manifest.sgx").read_bytes()
    manifest = parse_manifest(sgx.decode(), "m")
    value = measure_manifest(sgx, manifest, GCC_PAL, "m")
    assert value.hex() == case["expected"]["mr_enclave"]


@settings(max_examples=40, deadline=None)
@given(first_page=st.integers(0, (1 << 24) - 600), count=st.integers(0, 600),
       flags=st.sampled_from([0x201, 0x203, 0x100, 0x207]))
def test_bulk_zero_pages_measure_as_one_page_at_a_time(first_page: int, count: int,
                                                       flags: int) -> None:
    """Stacks and SSA frames are measured in bulk; the log must be the page-by-page one."""
    bulk, reference = Measurement(1 << 40), Measurement(1 << 40)
    bulk.add_zero_run(first_page * PAGE, count, flags)
    for page in range(first_page, first_page + count):
        reference.add_page(page * PAGE, flags, bytes(PAGE))
    assert bulk.value() == reference.value()


def test_many_threads_are_measured_without_holding_their_pages() -> None:
    """TCS and TLS pages are computed per page: the layout holds no page contents."""
    text = ('loader.entrypoint.uri = "file:/x"\nloader.entrypoint.sha256 = "' + "0" * 64
            + '"\nsgx.enclave_size = "4G"\nsgx.max_threads = 4096\n')
    params = enclave_params(parse_manifest(text, "m")["sgx"], "m")
    areas = build_layout(params, text.encode(), GCC_PAL)
    held = sum(len(a.content) for a in areas if a.content is not None)
    assert held < 2 * PAGE  # only the manifest's own page
    tcs = next(a for a in areas if a.desc == "tcs")
    assert tcs.page_source is not None and len(tcs.page_source(4095)) == PAGE
