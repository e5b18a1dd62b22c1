"""File trees that manifests are measured against.

A manifest names files by the paths the enclave will see. Where those paths
live depends on the caller: the host itself (no chroot), a folder holding a
container's root file system (``--chroot``), or an image read through the
Docker API. :class:`Tree` gives the manifest code one view of all three.

Inside a chroot every symlink is resolved inside the tree, never on the host:
an absolute link target starts again at the tree's root, and ``..`` stops at
it, exactly as the enclave's file system will see it.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from abc import ABC, abstractmethod
from pathlib import Path

from ppml_image.errors import ManifestError
from ppml_image.sgx.hashing import sha256_many

FILE, DIR, LINK, OTHER = "file", "dir", "link", "other"
_MAX_LINKS = 40  # the kernel's limit on symlinks followed in one lookup


class Tree(ABC):
    """Read-only access to the files a manifest names."""

    chrooted: bool = True

    @abstractmethod
    def lstat_kind(self, path: str) -> str | None:
        """FILE, DIR, LINK or OTHER for *path* itself, or None if it does not exist."""

    @abstractmethod
    def readlink(self, path: str) -> str:
        """The target of the symlink at *path*."""

    @abstractmethod
    def list_dir(self, path: str) -> list[str]:
        """Names in the (resolved) folder *path*."""

    @abstractmethod
    def hash_files(self, paths: list[str]) -> list[str]:
        """Hex SHA-256 of each (resolved) regular file, in order."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """Contents of the (resolved) regular file *path*."""

    @abstractmethod
    def display(self, path: str) -> str:
        """How to name *path* in an error message."""

    def readable(self, path: str) -> bool:
        return True

    # -- resolution -------------------------------------------------------
    # Trees are read-only while a manifest is measured, so lookups are
    # memoised: a folder of thousands of files resolves its parent once.
    _memo_kind: dict[str, str | None]
    _memo_resolved: dict[str, str]

    def _lstat(self, path: str) -> str | None:
        memo: dict[str, str | None] = self.__dict__.setdefault("_memo_kind", {})
        if path not in memo:
            memo[path] = self.lstat_kind(path)
        return memo[path]

    def resolve(self, path: str) -> str:
        """Resolve every symlink in *path* inside the tree."""
        if not path.startswith("/"):
            raise ManifestError(f"{path}: only absolute paths can be measured inside a chroot")
        parts = [p for p in str(path).split("/") if p]
        try:
            return self._resolve_parts(parts, [_MAX_LINKS])
        except _Unresolvable as exc:
            raise ManifestError(f"{self.display(path)}: {exc}") from None

    def _resolve_parts(self, parts: list[str], budget: list[int]) -> str:
        """Resolved form of "/" + "/".join(parts) (memoised per prefix)."""
        if not parts:
            return "/"
        key = "/" + "/".join(parts)
        memo: dict[str, str] = self.__dict__.setdefault("_memo_resolved", {})
        if key in memo:
            return memo[key]
        parent = self._resolve_parts(parts[:-1], budget)
        parent_kind = self._lstat(parent)
        if parent_kind != DIR:
            problem = "does not exist" if parent_kind is None else "is not a folder"
            raise _Unresolvable(f"{parent} {problem}")
        name = parts[-1]
        if name == ".":
            result = parent
        elif name == "..":
            result = posixpath.dirname(parent)
        else:
            candidate = posixpath.join(parent, name)
            result = candidate
            if self._lstat(candidate) == LINK:
                budget[0] -= 1
                if budget[0] < 0:
                    raise _Unresolvable(f"{os.strerror(errno.ELOOP)} (symlink loop)")
                target = self.readlink(candidate)
                base = "" if target.startswith("/") else parent
                joined = posixpath.join(base or "/", target)
                result = self._resolve_parts([p for p in joined.split("/") if p], budget)
        memo[key] = result
        return result

    def kind(self, path: str) -> str | None:
        """Kind of *path* after following symlinks (never LINK)."""
        try:
            return self._lstat(self.resolve(path))
        except ManifestError:
            return None

    def is_symlink(self, path: str) -> bool:
        return self._lstat(path) == LINK


class _Unresolvable(Exception):
    pass


class DiskTree(Tree):
    """A folder on disk seen as the root of the enclave's file system."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._root_str = str(self.root).rstrip("/")

    def outer(self, path: str) -> Path:
        return Path(self._root_str + str(path))

    def lstat_kind(self, path: str) -> str | None:
        try:
            mode = os.lstat(self.outer(path)).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _kind_of(mode)

    def readlink(self, path: str) -> str:
        return os.readlink(self.outer(path))

    def list_dir(self, path: str) -> list[str]:
        return os.listdir(self.outer(path))

    def readable(self, path: str) -> bool:
        return os.access(self.outer(path), os.R_OK)

    def hash_files(self, paths: list[str]) -> list[str]:
        return sha256_many([self.outer(p) for p in paths])

    def read_bytes(self, path: str) -> bytes:
        return self.outer(path).read_bytes()

    def display(self, path: str) -> str:
        return str(self.outer(path))


class HostTree(DiskTree):
    """The host's own file system, without a chroot.

    Paths may be relative (to the working folder) and symlinks are followed
    by the operating system, as Gramine does when no chroot is given.
    """

    chrooted = False

    def __init__(self) -> None:
        super().__init__(Path("/"))

    def outer(self, path: str) -> Path:
        return Path(path)

    def resolve(self, path: str) -> str:
        return path

    def lstat_kind(self, path: str) -> str | None:
        try:
            return _kind_of(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise

    def kind(self, path: str) -> str | None:
        return self._lstat(path)

    def is_symlink(self, path: str) -> bool:
        return os.path.islink(path)


def _kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return LINK
    return OTHER


def tree_for(chroot: Path | None) -> Tree:
    """The tree for a ``--chroot`` option: the folder, or the host itself."""
    if chroot is None:
        return HostTree()
    if not Path(chroot).is_dir():
        raise ManifestError(f"{chroot}: chroot folder does not exist")
    return DiskTree(Path(chroot))
