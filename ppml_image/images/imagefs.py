"""An image's file system, read through the Docker API, as a manifest Tree.

The unsigned image's files are streamed out of the engine (a container's
export, or one folder's archive), never written to disk: as the tar stream
goes by, every entry's kind and link target is recorded and every regular
file is hashed. Measurement then runs on that index with the chroot
semantics of the signing core (symlinks resolved inside the image).

Indexes of base images are cached on the host, keyed by image id, which is a
content hash: an image id never changes content, so the cache never goes
stale. A custom image is its base's index plus the few folders its own
layers add, re-read each time.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from ppml_image._fs import write_atomic
from ppml_image.errors import EngineError, ManifestError
from ppml_image.images import engine
from ppml_image.sgx.tree import DIR, FILE, LINK, OTHER, Tree

_CHUNK = 1 << 20
INDEX_FORMAT = 1


@dataclass
class Entry:
    kind: str
    link: str = ""
    size: int = 0
    sha256: str | None = None


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (the engine's stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.total += n
        return n


class ImageIndex:
    """Kinds, link targets and SHA-256 of every path in an image."""

    def __init__(self, entries: dict[str, Entry] | None = None) -> None:
        self.entries: dict[str, Entry] = entries or {"/": Entry(DIR)}
        self._children: dict[str, list[str]] | None = None
        self.bytes_read = 0

    # -- building ---------------------------------------------------------
    def add_tar_stream(self, chunks: Iterable[bytes], prefix: str = "/") -> None:
        """Index (and hash) every member of a tar stream, names joined to *prefix*."""
        reader = _ChunkReader(chunks)
        hard_links: list[tuple[str, str]] = []
        buffered = io.BufferedReader(reader, buffer_size=_CHUNK)
        with tarfile.open(fileobj=buffered, mode="r|") as tar:
            for member in tar:
                path = _normalise(prefix, member.name)
                if member.isreg():
                    self.entries[path] = Entry(FILE, size=member.size,
                                               sha256=_hash_member(tar, member))
                elif member.isdir():
                    self.entries[path] = Entry(DIR)
                elif member.issym():
                    self.entries[path] = Entry(LINK, link=member.linkname)
                elif member.islnk():
                    hard_links.append((path, _normalise("/", member.linkname)))
                else:
                    self.entries[path] = Entry(OTHER)
                self._add_parents(path)
        for path, target in hard_links:
            original = self.entries.get(target)
            self.entries[path] = Entry(FILE, size=original.size, sha256=original.sha256) \
                if original else Entry(OTHER)
        self.bytes_read += reader.total
        self._children = None

    def _add_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent not in self.entries:
            self.entries[parent] = Entry(DIR)
            parent = posixpath.dirname(parent)

    def drop(self, folder: str) -> None:
        """Forget *folder* and everything below it (before re-reading it)."""
        prefix = folder.rstrip("/") + "/"
        for path in [p for p in self.entries if p == folder or p.startswith(prefix)]:
            del self.entries[path]
        self._children = None

    # -- queries ----------------------------------------------------------
    def children(self, folder: str) -> list[str]:
        if self._children is None:
            children: dict[str, list[str]] = {}
            for path in self.entries:
                if path != "/":
                    children.setdefault(posixpath.dirname(path), []).append(
                        posixpath.basename(path))
            self._children = children
        return list(self._children.get(folder, []))

    # -- persistence ------------------------------------------------------
    def save(self, path: Path) -> None:
        data = {"format": INDEX_FORMAT,
                "entries": {p: [e.kind, e.link, e.size, e.sha256] for p, e in
                            self.entries.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, separators=(",", ":")).encode())

    @classmethod
    def load(cls, path: Path) -> ImageIndex | None:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if data.get("format") != INDEX_FORMAT:
            return None
        return cls({p: Entry(k, link, size, sha) for p, (k, link, size, sha) in
                    data["entries"].items()})


def _normalise(prefix: str, name: str) -> str:
    if name.startswith("./"):
        name = name[2:]
    return posixpath.normpath(posixpath.join(prefix, name.lstrip("/")))


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    handle = tar.extractfile(member)
    assert handle is not None
    while True:
        chunk = handle.read(_CHUNK)
        if not chunk:
            break
        digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------
def index_image(client: docker.DockerClient, image: str) -> ImageIndex:
    """Stream the whole file system of *image* through the API and index it."""
    index = ImageIndex()
    with engine.temporary_container(client, image) as container, \
            engine.engine_call(f"reading the files of {image}"):
        index.add_tar_stream(container.export(chunk_size=_CHUNK))
    return index


def cached_index(client: docker.DockerClient, image_id: str, cache: Path) -> ImageIndex:
    """The index of an image, from the host cache (keyed by image id) or fresh."""
    path = cache / f"{image_id.replace(':', '-')}.json"
    index = ImageIndex.load(path)
    if index is None:
        index = index_image(client, image_id)
        index.save(path)
    return index


def overlay_folder(index: ImageIndex, client: docker.DockerClient, image: str,
                   folder: str) -> None:
    """Replace *folder* in *index* with its content in *image* (streamed)."""
    index.drop(folder)
    with engine.temporary_container(client, image) as container, \
            engine.engine_call(f"reading {folder} of {image}"):
        stream, _stat = container.get_archive(folder)
        index.add_tar_stream(stream, prefix=posixpath.dirname(folder.rstrip("/")) or "/")


class ImageTree(Tree):
    """An indexed image seen as the enclave's root file system."""

    def __init__(self, index: ImageIndex, client: docker.DockerClient, image: str) -> None:
        self.index, self.client, self.image = index, client, image

    def lstat_kind(self, path: str) -> str | None:
        entry = self.index.entries.get(path)
        return entry.kind if entry else None

    def readlink(self, path: str) -> str:
        return self.index.entries[path].link

    def list_dir(self, path: str) -> list[str]:
        return self.index.children(path)

    def hash_files(self, paths: list[str]) -> list[str]:
        hashes = []
        for path in paths:
            entry = self.index.entries.get(path)
            if entry is None or entry.sha256 is None:
                raise ManifestError(f"{self.display(path)}: not a regular file in the image")
            hashes.append(entry.sha256)
        return hashes

    def read_bytes(self, path: str) -> bytes:
        try:
            return engine.read_file_from_image(self.client, self.image, path)
        except EngineError as exc:
            raise ManifestError(str(exc)) from None

    def display(self, path: str) -> str:
        return f"{self.image}:{path}"
