"""A minimal ELF64 reader: just what enclave measurement needs.

The measurement loads the PAL (``libpal.so``) the way Gramine's loader does:
every PT_LOAD segment, page by page, at its virtual address. We read only the
ELF header and program headers, and check every offset against the file size
so that a truncated or hostile file is an error, not a wrong measurement.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ppml_image._fs import read_capped
from ppml_image.errors import ElfError

PT_LOAD = 1
PF_X = 0x1
PF_W = 0x2
PF_R = 0x4

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_EM_X86_64 = 62


@dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD program header."""

    offset: int
    vaddr: int
    filesz: int
    memsz: int
    flags: int


@dataclass(frozen=True)
class ElfImage:
    """The parts of an ELF file that enclave measurement uses."""

    entry: int
    segments: tuple[LoadSegment, ...]
    data: bytes
    name: str = "<libpal>"  # for messages: the file (or image path) it was read from

    def segment_bytes(self, seg: LoadSegment) -> bytes:
        """The file bytes of *seg* (``filesz`` bytes from ``offset``)."""
        return self.data[seg.offset : seg.offset + seg.filesz]


def parse_elf(data: bytes, name: str = "<elf>") -> ElfImage:
    """Parse an ELF64 little-endian x86-64 image held in *data*."""
    if len(data) < _EHDR.size:
        raise ElfError(f"{name}: too short to be an ELF file ({len(data)} bytes)")
    (ident, _type, machine, _version, entry, phoff, _shoff, _flags, _ehsize,
     phentsize, phnum, _shentsize, _shnum, _shstrndx) = _EHDR.unpack_from(data)
    if ident[:4] != b"\x7fELF":
        raise ElfError(f"{name}: not an ELF file (bad magic)")
    if ident[4] != 2 or ident[5] != 1:
        raise ElfError(f"{name}: not a 64-bit little-endian ELF file")
    if machine != _EM_X86_64:
        raise ElfError(f"{name}: ELF machine is {machine}, expected x86-64 ({_EM_X86_64})")
    if phnum and phentsize < _PHDR.size:
        raise ElfError(f"{name}: program header entries are {phentsize} bytes, too small")
    if phoff + phnum * phentsize > len(data):
        raise ElfError(f"{name}: program header table runs past the end of the file")
    segments = []
    for index in range(phnum):
        (p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz,
         _align) = _PHDR.unpack_from(data, phoff + index * phentsize)
        if p_type != PT_LOAD:
            continue
        if p_offset + p_filesz > len(data):
            raise ElfError(f"{name}: PT_LOAD segment {index} runs past the end of the file")
        if p_filesz > p_memsz:
            raise ElfError(f"{name}: PT_LOAD segment {index} has filesz larger than memsz")
        segments.append(LoadSegment(p_offset, p_vaddr, p_filesz, p_memsz, p_flags))
    if not segments:
        raise ElfError(f"{name}: ELF file has no PT_LOAD segment")
    return ElfImage(entry=entry, segments=tuple(segments), data=data, name=name)


MAX_PAL_FILE = 512 << 20  # Gramine's libpal.so is about 1 MiB; never read /dev/zero


def load_elf(path: Path, what: str = "libpal.so", cap: int = MAX_PAL_FILE) -> ElfImage:
    """Read (at most *cap* bytes) and parse the ELF file at *path*."""
    return parse_elf(read_capped(path, cap, what, ElfError), str(path))
