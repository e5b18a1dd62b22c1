"""Enclave layout and MRENCLAVE, as the CPU computes it when Gramine loads.

MRENCLAVE is SHA-256 over the log of enclave-building instructions: one
ECREATE record, then for every page an EADD record (its offset and page
flags) and, for measured pages, 16 EEXTEND records each followed by 256 bytes
of the page. The layout (what lies where, which pages are measured) must be
exactly the one Gramine 1.9's loader builds, or the enclave will not start.

A large non-EDMM enclave is mostly unmeasured "free" pages: 64 GiB is 16.7
million EADD records. Those records are built in bulk, a 64 MiB block at a
time, instead of one Python call per page.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ppml_image.errors import ElfError, ManifestError
from ppml_image.sgx.measure.elf import PF_R, PF_W, PF_X, ElfImage

PAGE = 0x1000
# Measuring a non-EDMM enclave costs one EADD record per page of its size
# (1 TiB: 268 million records, about 10 s); above this it is refused unless
# the caller raises the limit. EDMM enclaves add no heap pages.
DEFAULT_MAX_ENCLAVE_SIZE = 1 << 40
# Measured pages (PAL, stacks, TCS, SSA...) are hashed one by one, about 0.5
# GB/s; 65536 threads need 22.5 GiB. More is refused before any work.
MAX_MEASURED = 32 << 30

# Gramine 1.9's generated offsets for x86-64 (pal_linux_defs.h, sgx_arch.h,
# pal_tcb.h); any change here changes every MRENCLAVE.
SSA_FRAME_SIZE = 0x4000
SSA_FRAME_NUM = 2
TCS_SIZE = 0x1000
ENCLAVE_STACK_SIZE = 0x40000
ENCLAVE_SIG_STACK_SIZE = 0x10000
DEFAULT_ENCLAVE_BASE = 0x0
MMAP_MIN_ADDR = 0x10000
STACK_PROTECTOR_CANARY_DEFAULT = 0xBADBADBADBAD
SGX_GPR_SIZE = 0xB8

# TCS field offsets.
TCS_OSSA, TCS_NSSA, TCS_OENTRY, TCS_OGS_BASE, TCS_OFS_LIMIT, TCS_OGS_LIMIT = (
    0x10, 0x1C, 0x20, 0x38, 0x40, 0x44)

# Offsets of the per-thread TLS fields the loader initialises.
TLS_FIELDS: dict[str, int] = {
    "self": 0x0,
    "stack_protector_canary": 0x8,
    # After the 272-byte common PAL TCB (self, canary, 256 bytes for the LibOS):
    "enclave_size": 0x110,
    "tcs_offset": 0x118,
    "initial_stack_addr": 0x120,
    "sig_stack_low": 0x130,
    "sig_stack_high": 0x138,
    "ssa": 0x148,
    "gpr": 0x150,
    "manifest_size": 0x1A0,
    "heap_min": 0x1A8,
    "heap_max": 0x1B0,
}

# EADD page flags (SECINFO): permissions and page type.
PAGEINFO_R, PAGEINFO_W, PAGEINFO_X = 0x1, 0x2, 0x4
PAGEINFO_TCS, PAGEINFO_REG = 0x100, 0x200
_RW_REG = PAGEINFO_R | PAGEINFO_W | PAGEINFO_REG
_FREE = PAGEINFO_R | PAGEINFO_W | PAGEINFO_X | PAGEINFO_REG


def _roundup(value: int) -> int:
    return (value + PAGE - 1) // PAGE * PAGE


def _rounddown(value: int) -> int:
    return value // PAGE * PAGE


@dataclass
class Area:
    """A range of enclave pages added with one kind of flags."""

    desc: str
    size: int
    flags: int
    addr: int = -1
    measured: bool = True
    content: bytes | None = None
    # Pages computed one at a time (TCS and TLS: one page per thread), so that
    # 65,536 threads never hold their 512 MiB of page contents at once.
    page_source: Callable[[int], bytes] | None = None


@dataclass(frozen=True)
class EnclaveParams:
    """What the measurement depends on, from the manifest."""

    enclave_size: int
    max_threads: int
    edmm: bool


def _pal_span(pal: ElfImage) -> tuple[int, int]:
    start = min(_rounddown(s.vaddr) for s in pal.segments)
    end = max(_roundup(s.vaddr + s.memsz) for s in pal.segments)
    return start, end


def build_layout(params: EnclaveParams, manifest: bytes, pal: ElfImage,
                 name: str = "<manifest>") -> list[Area]:
    """The enclave's areas from the top down, addresses assigned.

    The manifest (NUL-terminated) goes at the top, then SSA frames, TCS
    pages, TLS pages, stacks, signal stacks and the PAL, each below the
    previous (a PAL linked at a fixed address keeps it). Everything between
    MMAP_MIN_ADDR and the lowest area is the heap: added unmeasured without
    EDMM, not added at all with EDMM.
    """
    threads = params.max_threads
    pal_start, pal_end = _pal_span(pal)
    areas = [Area("manifest", _roundup(len(manifest) + 1), PAGEINFO_R | PAGEINFO_REG,
                  content=manifest + b"\0"),
             Area("ssa", threads * SSA_FRAME_SIZE * SSA_FRAME_NUM, _RW_REG),
             Area("tcs", threads * TCS_SIZE, PAGEINFO_TCS),
             Area("tls", threads * PAGE, _RW_REG)]
    areas += [Area("stack", ENCLAVE_STACK_SIZE, _RW_REG) for _ in range(threads)]
    areas += [Area("sig_stack", ENCLAVE_SIG_STACK_SIZE, _RW_REG) for _ in range(threads)]
    pal_area = Area("pal", pal_end - pal_start, PAGEINFO_REG)
    if pal_start > 0:
        pal_area.addr = pal_start
    areas.append(pal_area)
    check_pal_fits(params, pal, name)

    top = DEFAULT_ENCLAVE_BASE + params.enclave_size
    for area in areas:
        if area.addr >= 0:
            continue
        area.addr = top - area.size
        if area.addr < MMAP_MIN_ADDR:
            raise ManifestError(
                f"{name}: enclave size {params.enclave_size:#x} is not large enough for "
                f"{threads} threads (each needs SSA, TCS, TLS, stack and signal stack)"
            )
        top = area.addr
    check_heap(areas, MMAP_MIN_ADDR, pal_area.addr, name)
    _fill_tcs_tls(params, areas, pal, len(manifest) + 1, pal_area.addr)
    if not params.edmm:
        areas += _free_areas(areas, top)
    check_layout(params, areas, pal, name)
    return areas


# --------------------------------------------------------------------------
# Layout checks: what gramine-sgx-sign checks, and what the CPU would refuse
# --------------------------------------------------------------------------
def _human(size: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:#x} bytes"


def check_enclave_size(params: EnclaveParams, name: str,
                       max_enclave_size: int = DEFAULT_MAX_ENCLAVE_SIZE) -> None:
    """Refuse to measure a non-EDMM enclave larger than *max_enclave_size*."""
    if not params.edmm and params.enclave_size > max_enclave_size:
        raise ManifestError(
            f"{name}: sgx.enclave_size is {_human(params.enclave_size)}; measuring a "
            f"non-EDMM enclave above {_human(max_enclave_size)} is refused (one EADD per "
            "page: hours of work). Raise the limit (sign --max-enclave-size) or enable EDMM")


def check_pal_fits(params: EnclaveParams, pal: ElfImage, name: str) -> None:
    """The PAL's segments must fit in the enclave above MMAP_MIN_ADDR (a PAL
    linked at a fixed address: below the enclave's end)."""
    start, end = _pal_span(pal)
    size = params.enclave_size
    if start > 0 and end > DEFAULT_ENCLAVE_BASE + size:
        raise ElfError(f"{pal.name}: PAL segments end at {end:#x}, beyond the end of the "
                       f"{_human(size)} enclave of {name}")
    if start == 0 and end - start > size - MMAP_MIN_ADDR:
        raise ElfError(f"{pal.name}: PAL segments span {_human(end - start)}, which does not "
                       f"fit in the {_human(size)} enclave of {name}")


def check_measured_size(params: EnclaveParams, pal: ElfImage, name: str) -> None:
    """Refuse an enclave whose measured part (hashed page by page) is absurd."""
    start, end = _pal_span(pal)
    per_thread = (SSA_FRAME_SIZE * SSA_FRAME_NUM + TCS_SIZE + PAGE + ENCLAVE_STACK_SIZE
                  + ENCLAVE_SIG_STACK_SIZE)
    measured = (end - start) + params.max_threads * per_thread
    if measured > MAX_MEASURED:
        raise ManifestError(
            f"{name}: the enclave's measured part (PAL {_human(end - start)} and "
            f"{params.max_threads} threads) is {_human(measured)}, more than the "
            f"{_human(MAX_MEASURED)} this tool measures")


def check_enclave_fits(params: EnclaveParams, pal: ElfImage, name: str,
                       max_enclave_size: int = DEFAULT_MAX_ENCLAVE_SIZE) -> None:
    """Every check that needs only the sizes and the PAL: run it before any
    long work (hashing trusted files, measuring)."""
    check_enclave_size(params, name, max_enclave_size)
    check_pal_fits(params, pal, name)
    check_measured_size(params, pal, name)


def check_heap(areas: list[Area], heap_min: int, heap_max: int, name: str) -> None:
    """gramine-sgx-sign's sanity check: every area outside the heap
    [heap_min, heap_max) is measured, and no area but free memory lies in it."""
    for area in areas:
        if area.addr + area.size <= heap_min or area.addr >= heap_max:
            if not area.measured:
                raise ManifestError(f"{name}: enclave layout: the {area.desc} area at "
                                    f"{area.addr:#x} is outside the heap but not measured")
        elif area.desc != "free":
            raise ManifestError(f"{name}: enclave layout: the {area.desc} area at "
                                f"{area.addr:#x} lies in the heap ({heap_min:#x}-"
                                f"{heap_max:#x}), below the PAL linked at {heap_max:#x}")


def _pages(params: EnclaveParams, areas: list[Area], pal: ElfImage) -> list[tuple[int, int, str]]:
    """Every range of pages the measurement adds, PAL segments one by one."""
    ranges = []
    for area in areas:
        if area.desc != "pal":
            ranges.append((area.addr, area.addr + area.size, area.desc))
            continue
        load_base = area.addr - _pal_span(pal)[0]
        for index, seg in enumerate(pal.segments):
            first = load_base + _rounddown(seg.vaddr)
            ranges.append((first, load_base + _roundup(seg.vaddr + seg.memsz),
                           f"PAL segment {index}"))
    return ranges


def check_layout(params: EnclaveParams, areas: list[Area], pal: ElfImage, name: str) -> None:
    """Every page lies inside the enclave and is added once.

    Gramine's signer does not check this; the CPU does (EADD of a page twice,
    or outside the enclave, fails), so such an enclave could never start.
    """
    low, high = DEFAULT_ENCLAVE_BASE, DEFAULT_ENCLAVE_BASE + params.enclave_size
    ranges = sorted(_pages(params, areas, pal))
    for start, end, desc in ranges:
        if start < low or end > high:
            raise ManifestError(f"{name}: enclave layout: {desc} ({start:#x}-{end:#x}) lies "
                                f"outside the enclave ({low:#x}-{high:#x})")
    for (_, end, desc), (start, _, other) in itertools.pairwise(ranges):
        if start < end:
            raise ManifestError(f"{name}: enclave layout: {desc} and {other} overlap at "
                                f"{start:#x}")


def _free_areas(areas: list[Area], lowest: int) -> list[Area]:
    """Unmeasured read-write-execute pages filling the heap (and any gap
    left below a fixed-address PAL), as Gramine adds them without EDMM."""
    free: list[Area] = []
    for area in areas:
        end = area.addr + area.size
        if end < lowest:
            free.append(Area("free", lowest - end, _FREE, addr=end, measured=False))
            lowest = area.addr
    if lowest > MMAP_MIN_ADDR:
        free.append(Area("free", lowest - MMAP_MIN_ADDR, _FREE, addr=MMAP_MIN_ADDR,
                         measured=False))
    return free


def _fill_tcs_tls(params: EnclaveParams, areas: list[Area], pal: ElfImage,
                  manifest_size: int, heap_max: int) -> None:
    by_desc: dict[str, list[Area]] = {}
    for area in areas:
        by_desc.setdefault(area.desc, []).append(area)
    ssa, tcs, tls = by_desc["ssa"][0], by_desc["tcs"][0], by_desc["tls"][0]
    pal_area = by_desc["pal"][0]
    stacks, sig_stacks = by_desc["stack"], by_desc["sig_stack"]
    base = DEFAULT_ENCLAVE_BASE
    pal_load_base = pal_area.addr - _pal_span(pal)[0]

    def tcs_page(t: int) -> bytes:
        page = bytearray(TCS_SIZE)
        ssa_addr = ssa.addr + SSA_FRAME_SIZE * SSA_FRAME_NUM * t
        struct.pack_into("<Q", page, TCS_OSSA, ssa_addr - base)
        struct.pack_into("<L", page, TCS_NSSA, SSA_FRAME_NUM)
        struct.pack_into("<Q", page, TCS_OENTRY, pal_load_base + pal.entry - base)
        struct.pack_into("<Q", page, TCS_OGS_BASE, tls.addr - base + PAGE * t)
        struct.pack_into("<L", page, TCS_OFS_LIMIT, 0xFFF)
        struct.pack_into("<L", page, TCS_OGS_LIMIT, 0xFFF)
        return bytes(page)

    def tls_page(t: int) -> bytes:
        page = bytearray(PAGE)
        ssa_addr = ssa.addr + SSA_FRAME_SIZE * SSA_FRAME_NUM * t
        values = {
            "self": tls.addr + PAGE * t,
            "stack_protector_canary": STACK_PROTECTOR_CANARY_DEFAULT,
            "enclave_size": params.enclave_size,
            "tcs_offset": tcs.addr - base + TCS_SIZE * t,
            "initial_stack_addr": stacks[t].addr + stacks[t].size,
            "sig_stack_low": sig_stacks[t].addr,
            "sig_stack_high": sig_stacks[t].addr + sig_stacks[t].size,
            "ssa": ssa_addr,
            "gpr": ssa_addr + SSA_FRAME_SIZE - SGX_GPR_SIZE,
            "manifest_size": manifest_size,
            "heap_min": MMAP_MIN_ADDR,
            "heap_max": heap_max,
        }
        for key, value in values.items():
            struct.pack_into("<Q", page, TLS_FIELDS[key], value)
        return bytes(page)

    assert TCS_SIZE == PAGE  # one TCS page, one TLS page per thread
    tcs.page_source, tls.page_source = tcs_page, tls_page


# --------------------------------------------------------------------------
# The measurement log
# --------------------------------------------------------------------------
_EADD = struct.Struct("<8sQQ40s")
_EEXTEND = struct.Struct("<8sQ48s")
_BLOCK = 1 << 14  # EADD records per bulk block (1 MiB: stays in L2 while it is hashed)
# A page's index within its 4 GiB window has 20 bits, and its offset's low
# dword (record bytes 8-11) is the index << 12: byte 8 is always 0, byte 9
# holds bits 0-3 (shifted up by 4), byte 10 bits 4-11, byte 11 bits 12-19.
# These tables hold each byte for consecutive indexes (byte 9's from index %
# 16, byte 10's from index % 4096, byte 11's from the index), so a block's
# offsets are written by strided byte copies: a third of the cost of strided
# dword copies, and bytes 9-10 repeat from block to block.
_BYTE9 = bytes(range(0, 256, 16)) * (_BLOCK // 16 + 1)
_BYTE10 = b"".join(bytes([j]) * 16 for j in range(256)) * (_BLOCK // 4096 + 1)
_BYTE11 = b"".join(bytes([j]) * 4096 for j in range(256))
# A measured page's records: EADD, then 16 x (EEXTEND + 256 bytes), in 8-byte words.
_ZERO_RECORD_WORDS = (_EADD.size + (PAGE // 256) * (_EEXTEND.size + 256)) // 8
_ZERO_BLOCK = 256  # zero pages per bulk block (1.3 MiB)


class Measurement:
    """Accumulates MRENCLAVE (the ECREATE/EADD/EEXTEND log)."""

    def __init__(self, enclave_size: int) -> None:
        self.enclave_size = enclave_size
        self.digest = hashlib.sha256()
        self._zero_blocks: dict[int, bytearray] = {}
        self.digest.update(struct.pack("<8sLQ44s", b"ECREATE", SSA_FRAME_SIZE // PAGE,
                                       enclave_size, b""))

    def add_page(self, offset: int, flags: int, content: bytes | None) -> None:
        """EADD one page; with *content*, EEXTEND it (measured page)."""
        update = self.digest.update
        update(_EADD.pack(b"EADD", offset, flags, b""))
        if content is None:
            return
        for i in range(0, PAGE, 256):
            update(_EEXTEND.pack(b"EEXTEND", offset + i, b""))
            update(content[i : i + 256])

    def add_unmeasured_run(self, offset: int, count: int, flags: int) -> None:
        """EADD *count* consecutive unmeasured pages, in bulk.

        Each record is 64 bytes: "EADD", the 64-bit offset, the flags, zeros.
        Within an aligned 4 GiB window only the offset's low dword changes,
        and it does so exactly like precomputed tables, so a block is built by
        strided byte copies instead of a Python call per page. The blocks are
        hashed in this thread: handing them to a helper thread (to build the
        next while hashing this one) measured 15% slower on two cores (0.90 s
        against 0.77 s for 64 GiB, one SHA-256 pass being 0.61 s), as the
        hand-over costs more than the copy it hides.
        """
        block = _EaddBlock(flags, min(count, _BLOCK))
        update = self.digest.update
        for start, n in _windows(offset, count):
            update(block.fill(start, n))

    def add_zero_run(self, offset: int, count: int, flags: int) -> None:
        """EADD and EEXTEND *count* consecutive zero pages, in bulk.

        A measured zero page's records (EADD, then 16 EEXTEND records each
        followed by 256 zero bytes: 5,184 bytes) differ from the next page's
        only in their offset fields, so a block of pages is one template whose
        17 offset columns are filled by strided writes, not a Python call per
        record. Stacks, signal stacks and SSA frames are such pages: 5.5
        million of them for 65,536 threads.
        """
        buffer = self._zero_blocks.get(flags)
        if buffer is None:
            record = _EADD.pack(b"EADD", 0, flags, b"") + (
                _EEXTEND.pack(b"EEXTEND", 0, b"") + bytes(256)) * (PAGE // 256)
            buffer = self._zero_blocks[flags] = bytearray(record * _ZERO_BLOCK)
        words = memoryview(buffer).cast("Q")
        while count:
            n = min(count, _ZERO_BLOCK)
            end = n * _ZERO_RECORD_WORDS
            words[1:end:_ZERO_RECORD_WORDS] = array.array("Q", range(offset, offset + n * PAGE,
                                                                     PAGE))
            for chunk in range(PAGE // 256):  # EEXTEND j's offset: word 9 + 40 j
                first = offset + 256 * chunk
                words[9 + 40 * chunk:end:_ZERO_RECORD_WORDS] = array.array(
                    "Q", range(first, first + n * PAGE, PAGE))
            self.digest.update(memoryview(buffer)[: n * _ZERO_RECORD_WORDS * 8])
            offset += n * PAGE
            count -= n

    def value(self) -> bytes:
        return self.digest.digest()


def _windows(offset: int, count: int) -> Iterator[tuple[int, int]]:
    """Split a run of pages into blocks that never cross a 4 GiB boundary."""
    while count:
        n = min(count, _BLOCK, (1 << 20) - (offset & 0xFFFFFFFF) // PAGE)
        yield offset, n
        offset += n * PAGE
        count -= n


class _EaddBlock:
    """A reused block of EADD records, refilled with consecutive page offsets.

    Blocks never cross a 4 GiB boundary (:func:`_windows`), so the offsets'
    high dword is one value per block, rewritten only when it changes, and
    the low dword's bytes come from the tables above. Bytes 9-10 repeat every
    4,096 pages: they are rewritten only when a block starts at another
    index modulo 4,096, or is longer than what they were written for.
    """

    def __init__(self, flags: int, records: int) -> None:
        self.buffer = bytearray(_EADD.pack(b"EADD", 0, flags, b"") * records)
        self.high = 0  # the high dword every record holds
        self.phase = -1  # index % 4096 of the first record's bytes 9-10, and
        self.filled = 0  # how many records they were written for

    def fill(self, offset: int, n: int) -> memoryview:
        """The first *n* records, for the pages from *offset* on."""
        buffer, index, end = self.buffer, (offset & 0xFFFFFFFF) // PAGE, n * 64
        if offset >> 32 != self.high:
            self.high = offset >> 32
            memoryview(buffer).cast("I")[3::16] = array.array("I", [self.high]) * (
                len(buffer) // 64)
        if index % 4096 != self.phase or n > self.filled:
            self.phase, self.filled = index % 4096, n
            buffer[9:end:64] = memoryview(_BYTE9)[index % 16 : index % 16 + n]
            buffer[10:end:64] = memoryview(_BYTE10)[self.phase : self.phase + n]
        buffer[11:end:64] = memoryview(_BYTE11)[index : index + n]
        return memoryview(buffer)[:end]


def _load_pal(m: Measurement, area: Area, pal: ElfImage) -> None:
    """Measure each PT_LOAD segment page by page at its load address.

    A segment's pages hold zeros up to the segment's file offset within the
    first page, then its ``filesz`` file bytes, then zeros (``.bss``). Each
    page is cut from the file bytes as it is measured: a segment's memory
    size is never allocated at once.
    """
    load_base = area.addr - _pal_span(pal)[0]
    zero = bytes(PAGE)
    for seg in pal.segments:
        flags = area.flags
        flags |= PAGEINFO_R if seg.flags & PF_R else 0
        flags |= PAGEINFO_W if seg.flags & PF_W else 0
        flags |= PAGEINFO_X if seg.flags & PF_X else 0
        first_page = _rounddown(seg.vaddr)
        size = _roundup(seg.vaddr + seg.memsz) - first_page
        lead = seg.offset % PAGE
        data = pal.segment_bytes(seg)
        for i in range(0, size, PAGE):
            # File bytes of this page: data[i - lead : i - lead + PAGE], zeros around.
            begin, stop = max(i - lead, 0), max(min(i - lead + PAGE, len(data)), 0)
            if begin >= stop:
                page = zero
            else:
                head = lead - i if i < lead else 0
                page = (bytes(head) + data[begin:stop]).ljust(PAGE, b"\0")
            m.add_page(load_base + first_page + i - DEFAULT_ENCLAVE_BASE, flags, page)


def measure(params: EnclaveParams, areas: list[Area], pal: ElfImage) -> bytes:
    """MRENCLAVE of the enclave laid out as *areas*."""
    m = Measurement(params.enclave_size)
    zero = bytes(PAGE)
    for area in areas:
        if area.desc == "pal":
            _load_pal(m, area, pal)
            continue
        if not area.measured:
            m.add_unmeasured_run(area.addr - DEFAULT_ENCLAVE_BASE, area.size // PAGE, area.flags)
            continue
        if area.page_source is not None:
            for i in range(0, area.size // PAGE):
                m.add_page(area.addr + i * PAGE - DEFAULT_ENCLAVE_BASE, area.flags,
                           area.page_source(i))
            continue
        if area.content is None:  # SSA, stacks: measured zero pages
            m.add_zero_run(area.addr - DEFAULT_ENCLAVE_BASE, area.size // PAGE, area.flags)
            continue
        for i in range(0, area.size, PAGE):
            page = zero
            if area.content is not None:
                page = area.content[i : i + PAGE].ljust(PAGE, b"\0")
            m.add_page(area.addr + i - DEFAULT_ENCLAVE_BASE, area.flags, page)
    return m.value()


def enclave_params(sgx: dict[str, Any], name: str) -> EnclaveParams:
    return EnclaveParams(parse_size(sgx["enclave_size"], "sgx.enclave_size", name),
                         sgx["max_threads"], sgx["edmm_enable"] is True)


# Gramine size suffixes (upper case only, as Gramine parses them).
_SCALES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(value: Any, key: str, name: str) -> int:
    """A Gramine size string: a number (``int(x, 0)``: decimal, 0x.., 0o..)
    with an optional upper-case K, M or G suffix, e.g. "256M", "0x20000000"."""
    if not isinstance(value, str):
        raise ManifestError(f"{name}: {key} must be a string such as \"256M\", got {value!r}")
    number, scale = value, 1
    if value[-1:] in _SCALES:
        number, scale = value[:-1], _SCALES[value[-1]]
    if len(number) > 40:  # far beyond any size; also keeps int() cheap
        raise ManifestError(f"{name}: {key} = {value[:40]!r}... is not a size")
    try:
        size = int(number, 0) * scale
    except ValueError:
        raise ManifestError(
            f"{name}: {key} = {value!r} is not a size (e.g. \"512M\", \"4G\", \"0x20000000\")"
        ) from None
    if size <= 0:
        raise ManifestError(f"{name}: {key} = {value!r} must be positive")
    return size
