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
import stat
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from ppml_image.errors import ManifestError
from ppml_image.sgx.hashing import sha256_many

FILE, DIR, LINK, OTHER = "file", "dir", "link", "other"
_MAX_LINKS = 40  # the kernel's limit on symlinks followed in one lookup


class Tree(ABC):
    """Read-only access to the files a manifest names."""

    chrooted: bool = True

    @abstractmethod
    def lstat_kind(self, path: PurePosixPath) -> str | None:
        """FILE, DIR, LINK or OTHER for *path* itself, or None if it does not exist."""

    @abstractmethod
    def readlink(self, path: PurePosixPath) -> str:
        """The target of the symlink at *path*."""

    @abstractmethod
    def list_dir(self, path: PurePosixPath) -> list[str]:
        """Names in the (resolved) folder *path*."""

    @abstractmethod
    def hash_files(self, paths: list[PurePosixPath]) -> list[str]:
        """Hex SHA-256 of each (resolved) regular file, in order."""

    @abstractmethod
    def read_bytes(self, path: PurePosixPath) -> bytes:
        """Contents of the (resolved) regular file *path*."""

    @abstractmethod
    def display(self, path: PurePosixPath) -> str:
        """How to name *path* in an error message."""

    def readable(self, path: PurePosixPath) -> bool:
        return True

    # -- resolution -------------------------------------------------------
    def resolve(self, path: PurePosixPath) -> PurePosixPath:
        """Resolve every symlink in *path* inside the tree."""
        if not path.is_absolute():
            raise ManifestError(f"{path}: only absolute paths can be measured inside a chroot")
        budget = [_MAX_LINKS]
        return self._resolve(PurePosixPath("/"), list(path.parts[1:]), budget, path)

    def _resolve(self, current: PurePosixPath, parts: list[str], budget: list[int],
                 original: PurePosixPath) -> PurePosixPath:
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            current_kind = self.lstat_kind(current)
            if current_kind != DIR:
                problem = "does not exist" if current_kind is None else "is not a folder"
                raise ManifestError(f"{self.display(original)}: {current} {problem}")
            if part == "..":
                current = current.parent
                continue
            candidate = current / part
            if self.lstat_kind(candidate) != LINK:
                current = candidate
                continue
            budget[0] -= 1
            if budget[0] < 0:
                raise ManifestError(
                    f"{self.display(original)}: {os.strerror(errno.ELOOP)} (symlink loop)"
                )
            target = PurePosixPath(self.readlink(candidate))
            if target.is_absolute():
                current = PurePosixPath("/")
                parts[:0] = list(target.parts[1:])
            else:
                parts[:0] = list(target.parts)
        return current

    def kind(self, path: PurePosixPath) -> str | None:
        """Kind of *path* after following symlinks (never LINK)."""
        try:
            return self.lstat_kind(self.resolve(path))
        except ManifestError:
            return None

    def is_symlink(self, path: PurePosixPath) -> bool:
        return self.lstat_kind(path) == LINK


class DiskTree(Tree):
    """A folder on disk seen as the root of the enclave's file system."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def outer(self, path: PurePosixPath) -> Path:
        return self.root / str(path).lstrip("/")

    def lstat_kind(self, path: PurePosixPath) -> str | None:
        try:
            mode = os.lstat(self.outer(path)).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _kind_of(mode)

    def readlink(self, path: PurePosixPath) -> str:
        return os.readlink(self.outer(path))

    def list_dir(self, path: PurePosixPath) -> list[str]:
        return os.listdir(self.outer(path))

    def readable(self, path: PurePosixPath) -> bool:
        return os.access(self.outer(path), os.R_OK)

    def hash_files(self, paths: list[PurePosixPath]) -> list[str]:
        return sha256_many([self.outer(p) for p in paths])

    def read_bytes(self, path: PurePosixPath) -> bytes:
        return self.outer(path).read_bytes()

    def display(self, path: PurePosixPath) -> str:
        return str(self.outer(path))


class HostTree(DiskTree):
    """The host's own file system, without a chroot.

    Paths may be relative (to the working folder) and symlinks are followed
    by the operating system, as Gramine does when no chroot is given.
    """

    chrooted = False

    def __init__(self) -> None:
        super().__init__(Path("/"))

    def outer(self, path: PurePosixPath) -> Path:
        return Path(path)

    def resolve(self, path: PurePosixPath) -> PurePosixPath:
        return path

    def lstat_kind(self, path: PurePosixPath) -> str | None:
        try:
            return _kind_of(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise

    def is_symlink(self, path: PurePosixPath) -> bool:
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
