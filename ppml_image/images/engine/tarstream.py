"""Tar streams from the engine, parsed as they go by: no member is ever joined in memory.

The engine hands out files as tar streams (a container's export, or one
path's archive). :class:`TarReader` walks such a stream header by header
and either pipes a member's bytes to a callback (hashing) or skips them, so
memory stays bounded whatever the image holds: a 3 GB sparse ``.sig``
costs 3 GB of reading, never 3 GB of RAM.

It reads what Go's ``archive/tar`` writes (ustar, PAX and GNU long names,
base-256 sizes) and checks every header's checksum, so a corrupt or
truncated stream is an error rather than a wrong index.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ppml_image.errors import EngineError

BLOCK = 512
CHUNK = 1 << 20

REGULAR, HARDLINK, SYMLINK, DIRECTORY, OTHER_KIND = "file", "hardlink", "link", "dir", "other"
_KINDS = {b"0": REGULAR, b"\0": REGULAR, b"7": REGULAR, b"1": HARDLINK, b"2": SYMLINK,
          b"5": DIRECTORY}


class ByteStream(Protocol):
    """What the engine returns for a tar stream: ``read`` until ``b""``, then ``close``."""

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class Member:
    """One tar entry: its normalised absolute path and what it is."""

    path: str
    kind: str
    size: int
    mode: int
    link: str = ""
    # Owner and extended attributes (file capabilities, ACLs): part of what
    # a file is, compared by verify's closed world.
    owner: tuple[int, int] = (0, 0)
    xattrs: str = ""


class TarFormatError(EngineError):
    """The stream is not a well-formed tar archive."""


class TarReader:
    """Header-by-header reader over a :class:`ByteStream` (or any chunk source).

    *source* returns the next chunk of bytes, or ``b""`` at the end.
    """

    def __init__(self, source: Callable[[], bytes], what: str) -> None:
        self._source = source
        self._view = memoryview(b"")
        self.what = what
        self.bytes_read = 0

    # -- raw bytes ----------------------------------------------------------
    def _fill(self) -> bool:
        chunk = self._source()
        if not chunk:
            return False
        self._view = memoryview(chunk)
        self.bytes_read += len(chunk)
        return True

    def _take(self, count: int) -> bytes:
        """Exactly *count* bytes (headers, PAX records: small)."""
        if len(self._view) >= count:
            out = bytes(self._view[:count])
            self._view = self._view[count:]
            return out
        parts = []
        while count:
            if not self._view and not self._fill():
                raise TarFormatError(f"{self.what}: the tar stream ends in the middle of an entry")
            piece = self._view[:count]
            parts.append(bytes(piece))
            self._view = self._view[len(piece):]
            count -= len(piece)
        return b"".join(parts)

    def _pipe(self, count: int, sink: Callable[[memoryview], object] | None) -> None:
        """Hand the next *count* bytes to *sink* in pieces (None: skip them)."""
        while count:
            if not self._view and not self._fill():
                raise TarFormatError(f"{self.what}: the tar stream ends in the middle of an entry")
            piece = self._view[:count]
            if sink is not None:
                sink(piece)
            self._view = self._view[len(piece):]
            count -= len(piece)

    # -- members ------------------------------------------------------------
    def members(self) -> Iterator[Member]:
        """Every entry; the caller must call :meth:`data` or let it be skipped."""
        long_name: str | None = None
        long_link: str | None = None
        pax: dict[str, str] = {}
        while True:
            if not self._view and not self._fill():
                return  # a stream may end without the two zero blocks
            header = self._take(BLOCK)
            if header == bytes(BLOCK):
                return
            _check_sum(header, self.what)
            kind_flag = header[156:157]
            size = _number(header[124:136], self.what)
            if kind_flag in (b"x", b"g", b"L", b"K"):
                if size > CHUNK:
                    raise TarFormatError(f"{self.what}: a tar extension header of {size} bytes")
                data = self._take(_padded(size))[:size]
                if kind_flag == b"x":
                    pax = _pax_records(data, self.what)
                elif kind_flag == b"L":
                    long_name = _text(data.rstrip(b"\0"))
                elif kind_flag == b"K":
                    long_link = _text(data.rstrip(b"\0"))
                continue
            name = pax.get("path") or long_name or _ustar_name(header)
            link = pax.get("linkpath") or long_link or _text(header[157:257].split(b"\0", 1)[0])
            if "size" in pax:
                size = _pax_size(pax["size"], self.what)
            long_name = long_link = None
            kind = _KINDS.get(kind_flag, OTHER_KIND)
            # Only regular files carry data in the archives the engine writes
            # (Go's writer gives links, folders and devices size 0); anything
            # else with a size is skipped over, never interpreted.
            member = Member(normalise(name), kind, size if kind == REGULAR else 0,
                            _number(header[100:108], self.what) & 0o7777, link,
                            _owner(header, pax, self.what), _xattrs(pax))
            pax = {}
            self._pending = _padded(size)
            self._remaining = size if kind == REGULAR else 0
            yield member
            self._pipe(self._pending, None)  # whatever the caller did not read
            self._pending = self._remaining = 0

    def data(self, sink: Callable[[memoryview], object]) -> None:
        """Pipe the current regular member's bytes to *sink*."""
        self._pipe(self._remaining, sink)
        self._pending -= self._remaining
        self._remaining = 0

    def read_data(self, limit: int) -> bytes:
        """The current member's bytes, refused above *limit* before reading any."""
        if self._remaining > limit:
            raise EngineError(f"{self.what}: {self._remaining} bytes, more than the "
                              f"{limit}-byte limit")
        buffer = bytearray()
        self.data(buffer.extend)
        return bytes(buffer)

    _pending = 0
    _remaining = 0


def normalise(name: str) -> str:
    """A tar member name as an absolute, normalised path ("./usr/" -> "/usr")."""
    path = posixpath.normpath("/" + name.lstrip("/"))
    # normpath keeps a leading "//"; and ".." cannot climb above the root.
    return "/" + path.lstrip("/")


def _owner(header: bytes, pax: dict[str, str], what: str) -> tuple[int, int]:
    """uid and gid (a pax record wins over the header's octal field)."""
    ids = []
    for key, field in (("uid", header[108:116]), ("gid", header[116:124])):
        text = pax.get(key)
        ids.append(int(text) if text is not None and text.isdigit() and len(text) < 20
                   else _number(field, what))
    return ids[0], ids[1]


def _xattrs(pax: dict[str, str]) -> str:
    """The extended attributes a pax header carries, as one comparable string."""
    found = sorted((k, v) for k, v in pax.items() if k.startswith("SCHILY.xattr."))
    return "\n".join(f"{k}={v}" for k, v in found)


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _text(raw: bytes) -> str:
    # Image file names are bytes; keep non-UTF-8 ones faithfully (and refuse
    # them later, where a manifest would have to name them).
    return raw.decode("utf-8", "surrogateescape")


def _ustar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return _text(name)


def _number(field: bytes, what: str) -> int:
    if field[0] & 0x80:  # base-256 (GNU), for sizes beyond 8 GiB
        return int.from_bytes(field[1:], "big")
    digits = field.strip(b" \0")
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarFormatError(f"{what}: malformed tar header (number {digits[:20]!r})") from None


def _check_sum(header: bytes, what: str) -> None:
    stored = _number(header[148:156], what)
    actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if stored != actual:
        raise TarFormatError(f"{what}: corrupt tar header (checksum)")


def _pax_records(data: bytes, what: str) -> dict[str, str]:
    records: dict[str, str] = {}
    while data:
        length_text = data.partition(b" ")[0]
        try:
            length = int(length_text)
        except ValueError:
            raise TarFormatError(f"{what}: malformed PAX header") from None
        if length <= len(length_text) + 1 or length > len(data):
            raise TarFormatError(f"{what}: malformed PAX header")
        record = data[len(length_text) + 1:length - 1]
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "replace")] = _text(value)
        data = data[length:]
    return records


def _pax_size(value: str, what: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise TarFormatError(f"{what}: malformed PAX size {value[:20]!r}") from None
    if size < 0:
        raise TarFormatError(f"{what}: negative PAX size")
    return size


def stream_source(stream: ByteStream, chunk: int = CHUNK) -> Callable[[], bytes]:
    return lambda: stream.read(chunk)


class _Enough(Exception):
    pass


def _head(reader: TarReader, size: int) -> bytes:
    buffer = bytearray()

    def collect(piece: memoryview) -> None:
        buffer.extend(piece[: size - len(buffer)])
        if len(buffer) >= size:
            raise _Enough

    with contextlib.suppress(_Enough):
        reader.data(collect)
    return bytes(buffer)


def read_single_file(stream: ByteStream, *, what: str, limit: int,
                     head: int | None = None) -> bytes:
    """The one regular file an archive of a single path holds, read within *limit*.

    With *head*, only the file's first *head* bytes (the rest is not read).
    """
    reader = TarReader(stream_source(stream, 64 << 10), what)
    for member in reader.members():
        if member.kind != REGULAR:
            kind = {SYMLINK: "a symlink", DIRECTORY: "a folder"}.get(member.kind, "not a file")
            raise EngineError(f"{what}: is {kind}, not a regular file")
        return reader.read_data(limit) if head is None else _head(reader, head)
    raise EngineError(f"{what}: the engine returned an empty archive")
