"""An image's file system, read through the engine, as a manifest :class:`Tree`.

The image's whole file system is streamed out of the engine (a container's
export), never written to disk and never held in memory: as the tar stream
goes by, every entry's kind, mode and link target is recorded and every
regular file is hashed. Measurement then runs on that index with the
chroot semantics of the signing core (symlinks resolved inside the image).

Speed: one thread receives the stream from the engine's socket while this
thread parses the tar and hashes the files (hashlib releases the GIL on
large buffers, so receiving and hashing overlap). The queue between them is
bounded, so memory stays a few MiB whatever the image's size.

Files read later (the manifest, the ``.sig``, ``libpal.so``) come from the
same image through the archive API, within a size limit, and must hash to
what the index recorded.

No host cache: the index is built from the image every time (see
:mod:`.engine` for why that is also the fastest way on this engine).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ppml_image import _signals
from ppml_image.errors import EngineError, ManifestError
from ppml_image.images.engine.core import ImageFiles
from ppml_image.images.engine.tarstream import (
    CHUNK,
    DIRECTORY,
    HARDLINK,
    REGULAR,
    SYMLINK,
    ByteStream,
    TarReader,
)
from ppml_image.images.progress import Progress
from ppml_image.sgx.measure.tree import DIR, FILE, LINK, OTHER, Tree

MiB = 1 << 20
# Bounded reads of files out of images anyone can publish.
MANIFEST_LIMIT = 256 * MiB
BASE_JSON_LIMIT = 1 * MiB
LIBPAL_LIMIT = 512 * MiB
READ_LIMIT = 256 * MiB  # any other file read through Tree.read_bytes
_QUEUE_CHUNKS = 16  # at most this many MiB in flight between the threads
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class ImageTooLarge(ManifestError):
    """The image declares more than the reader reads: refused from the tar headers."""


@dataclass
class Entry:
    kind: str
    link: str = ""
    size: int = 0
    sha256: str | None = None
    mode: int = 0
    owner: tuple[int, int] = (0, 0)
    xattrs: str = ""

    @property
    def executable(self) -> bool:
        return self.kind == FILE and bool(self.mode & 0o111)


class ImageIndex:
    """Kind, mode, link target and SHA-256 of every path in an image."""

    def __init__(self, entries: dict[str, Entry] | None = None) -> None:
        self.entries: dict[str, Entry] = entries or {"/": Entry(DIR, mode=0o755)}
        self._children: dict[str, list[str]] | None = None
        self.bytes_read = 0
        # Files kept as they streamed by (path -> bytes), to spare reading them again.
        self.kept: dict[str, bytes] = {}

    def add_tar(self, source: Callable[[], bytes], what: str, prefix: str = "/",
                keep: dict[str, int] | None = None, max_bytes: int | None = None) -> None:
        """Index (and hash) every member of a tar stream, names joined to *prefix*.

        Regular files at the paths of *keep* are also kept in memory; one larger
        than the limit given for it is refused from its header, before its
        bytes are read. So is the stream once its files declare more than
        *max_bytes* in all.
        """
        reader = TarReader(source, what)
        keep = keep or {}
        declared = 0
        for member in reader.members():
            path = member.path if prefix == "/" else posixpath.join(prefix,
                                                                    member.path.lstrip("/"))
            if member.kind == REGULAR:
                declared += member.size
                _check_sizes(what, path, member.size, keep.get(path), declared, max_bytes)
                if member.size:
                    digest = hashlib.sha256()
                    if member.size <= keep.get(path, -1):
                        self.kept[path] = _keep(reader, digest)
                    else:
                        reader.data(digest.update)
                    sha = digest.hexdigest()
                else:
                    sha = _EMPTY_SHA256
                entry = Entry(FILE, size=member.size, sha256=sha, mode=member.mode,
                              owner=member.owner, xattrs=member.xattrs)
            elif member.kind == DIRECTORY:
                entry = Entry(DIR, mode=member.mode, owner=member.owner, xattrs=member.xattrs)
            elif member.kind == SYMLINK:
                entry = Entry(LINK, link=member.link, mode=member.mode, owner=member.owner)
            elif member.kind == HARDLINK:
                # A hard link names an earlier member: the same file, the same bytes.
                original = self.entries.get(posixpath.join(prefix, member.link.lstrip("/")))
                entry = Entry(FILE, size=original.size, sha256=original.sha256,
                              mode=original.mode, owner=original.owner,
                              xattrs=original.xattrs) \
                    if original is not None and original.kind == FILE else Entry(OTHER)
            else:
                # Devices and pipes: the device numbers are not kept, so a
                # changed one is caught by its kind, mode and owner only.
                entry = Entry(OTHER, mode=member.mode, owner=member.owner, link=member.link)
            self.entries[path] = entry
            self._add_parents(path)
        self.bytes_read += reader.bytes_read
        self._children = None

    def _add_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent not in self.entries:
            self.entries[parent] = Entry(DIR, mode=0o755)
            parent = posixpath.dirname(parent)

    def children(self, folder: str) -> list[str]:
        if self._children is None:
            children: dict[str, list[str]] = {}
            for path in self.entries:
                if path != "/":
                    children.setdefault(posixpath.dirname(path), []).append(
                        posixpath.basename(path))
            self._children = children
        return list(self._children.get(folder, []))

    def below(self, folder: str) -> dict[str, Entry]:
        """Every entry under *folder*, keyed by its path relative to it."""
        prefix = folder.rstrip("/") + "/"
        return {path[len(prefix):]: entry for path, entry in self.entries.items()
                if path.startswith(prefix) and path != prefix}


def _check_sizes(what: str, path: str, size: int, limit: int | None, declared: int,
                 max_bytes: int | None) -> None:
    """Refuse from the tar header alone: no byte of an oversized file is read."""
    if limit is not None and size > limit:
        raise ImageTooLarge(f"{what}: {path} is {size} bytes, more than the {limit}-byte "
                            "limit for it: refused before reading it")
    if max_bytes is not None and declared > max_bytes:
        raise ImageTooLarge(f"{what}: its files hold more than {max_bytes} bytes (at {path}); "
                            "refused before reading them (raise --max-image-bytes if this "
                            "image is yours and that large)")


def _keep(reader: TarReader, digest: Any) -> bytes:
    buffer = bytearray()

    def both(piece: memoryview) -> None:
        digest.update(piece)
        buffer.extend(piece)

    reader.data(both)
    return bytes(buffer)


_PUT_SLICE = 0.01  # seconds: how soon a receiver with a full queue sees that it must stop


class Cancelled(Exception):
    """An index that nobody needs any more was stopped (see ``cancel``)."""


class _SwitchInterval:
    """A short GIL switch interval while any stream is received: two may overlap
    (the base is read beside the image), and the last one out restores it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0.0

    @contextlib.contextmanager
    def short(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, 0.0005))
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    sys.setswitchinterval(self._saved)


_switch_interval = _SwitchInterval()


def index_stream(stream: ByteStream, what: str, keep: dict[str, int] | None = None,
                 max_bytes: int | None = None,
                 cancel: threading.Event | None = None) -> ImageIndex:
    """Index a whole tar stream: received in one thread, parsed and hashed in this one.

    Setting *cancel* (from another thread) stops it with :class:`Cancelled`.
    """
    index = ImageIndex()
    chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=_QUEUE_CHUNKS)
    stop = threading.Event()

    def offer(item: bytes | BaseException) -> bool:
        """Queue *item* unless told to stop: a full queue is waited on in slices,
        short ones (the queue is full only when the parser is behind, so a wake
        costs nothing it needed), because the clean-up waits for this thread."""
        while not stop.is_set():
            try:
                chunks.put(item, timeout=_PUT_SLICE)
                return True
            except queue.Full:
                continue
        return False

    def receive() -> None:
        _signals.leave_to_main_thread()
        try:
            while not stop.is_set():
                chunk = stream.read(CHUNK)
                if not offer(chunk) or not chunk:
                    return
        except BaseException as exc:  # handed to the parsing thread, which raises it
            offer(exc)

    def next_chunk() -> bytes:
        while True:  # in slices: a signal another thread took is acted on here, at once
            if cancel is not None and cancel.is_set():
                raise Cancelled(what)
            try:
                item = chunks.get(timeout=_signals.WAIT_SLICE)
                break
            except queue.Empty:
                continue
        if isinstance(item, BaseException):
            raise item
        return item

    receiver = threading.Thread(target=receive, name="ppml-image-receive", daemon=True)
    # The engine writes into a socket buffer of a few hundred KiB, about a
    # millisecond of its export: if the receiver waits the default 5 ms for
    # the GIL, the engine stalls. A shorter switch interval keeps it draining.
    try:
        with _switch_interval.short():
            receiver.start()
            index.add_tar(next_chunk, what, keep=keep, max_bytes=max_bytes)
    finally:
        stop.set()
        stream.close()
        # Never touch the queue here. A signal's exception raised inside
        # chunks.get() can leave the queue's lock held (between a `with`
        # statement's acquire and its body), and a drain would then wait on
        # that lock for ever: CI caught build-custom stuck so after a Ctrl-C.
        # The receiver sees `stop` within a slice; one blocked in the socket
        # ends when the caller removes the container, and it is a daemon
        # thread, so an interrupted run never waits for it long. A signal may
        # also come before the receiver started: then there is none to wait for.
        if receiver.ident is not None:
            receiver.join(timeout=1.0)
    return index


def index_image(files: ImageFiles, progress: Progress | None = None,
                keep: dict[str, int] | None = None, max_bytes: int | None = None,
                cancel: threading.Event | None = None) -> ImageIndex:
    """Stream the whole file system of the image *files* reads, and index it.

    *keep* names files (with a size limit each) to keep as they go by, so
    that reading them later costs no second trip to the engine. *max_bytes*
    bounds the file bytes read (None: the image is the user's own). *cancel*:
    see :func:`index_stream`.
    """
    if progress is not None:
        progress.step(1, 2, f"reading and hashing every file of {files.image[:19]}")
    return index_stream(files.export(), f"reading the files of {files.image}", keep, max_bytes,
                        cancel)


def index_folder(files: ImageFiles, folder: str) -> ImageIndex:
    """Index one folder of an image (its archive), keyed by paths relative to it."""
    stream = files.archive(folder.rstrip("/") + "/")
    index = ImageIndex()
    try:
        index.add_tar(lambda: stream.read(CHUNK), f"{files.image}:{folder}")
    finally:
        stream.close()
    # The archive names entries after the folder's own name: re-root them at "/".
    name = "/" + posixpath.basename(folder.rstrip("/"))
    return ImageIndex({"/" + rel: entry for rel, entry in index.below(name).items()}
                      | {"/": Entry(DIR, mode=0o755)})


class ImageTree(Tree):
    """An indexed image seen as the enclave's root file system."""

    def __init__(self, index: ImageIndex, files: ImageFiles | None, name: str) -> None:
        self.index, self.name = index, name
        self.files: ImageFiles | None = files  # None once the image is closed

    def lstat_kind(self, path: str) -> str | None:
        entry = self.index.entries.get(path)
        return entry.kind if entry else None

    def readlink(self, path: str) -> str:
        return self.index.entries[path].link

    def list_dir(self, path: str) -> list[str]:
        names = self.index.children(path)
        for name in names:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                raise ManifestError(f"{self.display(posixpath.join(path, shown))}: file name is "
                                    "not UTF-8; a manifest cannot name it") from None
        return names

    def hash_files(self, paths: list[str]) -> list[str]:
        hashes = []
        for path in paths:
            entry = self.index.entries.get(path)
            if entry is None or entry.sha256 is None:
                raise ManifestError(f"{self.display(path)}: not a regular file in the image")
            hashes.append(entry.sha256)
        return hashes

    def entry(self, path: str) -> Entry | None:
        """The entry *path* resolves to (symlinks followed inside the image), or None."""
        try:
            return self.index.entries.get(self.resolve(path))
        except ManifestError:
            return None

    def read_bytes(self, path: str) -> bytes:
        return self.read(path, limit=READ_LIMIT)

    def read(self, path: str, *, limit: int, exact: int | None = None) -> bytes:
        """The file at *path* (resolved in the image), within *limit* bytes.

        The size is checked against the index before anything is read, and
        the bytes must hash to what the index recorded: one image, one truth.
        """
        real = self.resolve(path)
        entry = self.index.entries.get(real)
        shown = self.display(path)
        if entry is None:
            raise ManifestError(f"{shown}: no such file in the image")
        if entry.kind != FILE or entry.sha256 is None:
            raise ManifestError(f"{shown}: not a regular file in the image")
        if exact is not None and entry.size != exact:
            raise ManifestError(f"{shown}: {entry.size} bytes, expected exactly {exact}")
        if entry.size > limit:
            raise ManifestError(f"{shown}: {entry.size} bytes, more than the {limit}-byte "
                                "limit")
        data = self.index.kept.get(real)
        if data is None:
            if self.files is None:
                raise ManifestError(f"{shown}: the image is no longer open for reading")
            try:
                data = self.files.read_file(real, limit=limit, what=shown)
            except EngineError as exc:
                raise ManifestError(str(exc)) from None
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ManifestError(f"{shown}: the engine returned other bytes than it exported")
        return data

    def display(self, path: str) -> str:
        return f"{self.name}:{path}"
