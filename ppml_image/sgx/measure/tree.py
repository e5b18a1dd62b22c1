"""File trees that manifests are measured against.

A manifest names files by the paths the enclave will see. Where those paths
live depends on the caller: the host itself (no chroot), a folder holding a
container's root file system (``--chroot``), or an image read through the
Docker API. :class:`Tree` gives the manifest code one view of all three.

Inside a chroot every symlink is resolved inside the tree, never on the host:
an absolute link target starts again at the tree's root, and ``..`` stops at
it, exactly as the enclave's file system will see it.

Why a chroot cannot be escaped, even by someone changing the tree while it is
measured (:class:`DiskTree`): nothing is ever looked up by a host path. The
tree holds a descriptor on its root, and every folder descriptor it opens is
``openat(parent, name, O_NOFOLLOW | O_DIRECTORY)`` with a single name
component and a parent obtained the same way, starting at the root. Symlinks
are read with ``readlinkat`` and resolved by this code (absolute targets go
back to the root descriptor); ``..`` pops the list of folders walked, so the
kernel never resolves ``..`` or a link for us. A file is opened the same way
with ``O_NOFOLLOW | O_NONBLOCK``, its kind is checked with ``fstat`` on that
descriptor, and the bytes hashed are read from it. Swapping a folder for a
link after it was checked therefore changes nothing: either the descriptor
already held names the old folder, or the new link is followed inside the root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import threading
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ppml_image.errors import ManifestError, UsageError
from ppml_image.sgx.measure.hashing import sha256_fd, sha256_many

T = TypeVar("T")
FILE, DIR, LINK, OTHER = "file", "dir", "link", "other"
_MAX_LINKS = 40  # the kernel's limit on symlinks followed in one lookup
_MAX_FOLDER_FDS = 256  # folder descriptors kept open per tree (well under any fd limit)

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused after
# fstat anyway); O_NOCTTY: a terminal named as a file must not become ours.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class NotRegularFile(Exception):
    """A file to hash is a FIFO, socket, device or folder (found by fstat on its descriptor)."""

    def __init__(self, filename: str) -> None:
        super().__init__(f"{filename} is not a regular file")
        self.filename = filename


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
        memo: dict[str, str] = self.__dict__.get("_memo_resolved", {})
        known = memo.get(path)
        if known is not None:  # a path asked about before (the memo's keys are canonical)
            return known
        if not path.startswith("/"):
            raise ManifestError(f"{path}: only absolute paths can be measured inside a chroot")
        parts = [p for p in str(path).split("/") if p]
        try:
            return self._resolve_parts(parts, [_MAX_LINKS])
        except _Unresolvable as exc:
            raise ManifestError(f"{self.display(path)}: {exc}") from None

    def _resolve_parts(self, parts: list[str], budget: list[int]) -> str:
        """Resolved form of "/" + "/".join(parts) (memoised per prefix).

        A loop over the components, not a recursion: a deep tree must not
        exhaust Python's stack (only link targets recurse, 40 at most).
        """
        memo: dict[str, str] = self.__dict__.setdefault("_memo_resolved", {})
        # The longest prefix already resolved, from the end: usually the parent.
        done, key = len(parts), "/" + "/".join(parts)
        while done and key not in memo:
            done, key = done - 1, key[: key.rfind("/")]
        current = memo[key] if done else "/"
        for name in parts[done:]:
            key = f"{key}/{name}"
            current = memo[key] = self._resolve_step(current, name, budget)
        return current

    def _resolve_step(self, parent: str, name: str, budget: list[int]) -> str:
        """Resolve *name* inside the resolved folder *parent*."""
        parent_kind = self._lstat(parent)
        if parent_kind != DIR:
            problem = "does not exist" if parent_kind is None else "is not a folder"
            raise _Unresolvable(f"{parent} {problem}")
        if name == ".":
            return parent
        if name == "..":
            return posixpath.dirname(parent)
        candidate = posixpath.join(parent, name)
        if self._lstat(candidate) != LINK:
            return candidate
        budget[0] -= 1
        if budget[0] < 0:
            raise _Unresolvable(f"{os.strerror(errno.ELOOP)} (symlink loop)")
        target = self.readlink(candidate)
        base = "" if target.startswith("/") else parent
        joined = posixpath.join(base or "/", target)
        return self._resolve_parts([p for p in joined.split("/") if p], budget)

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


class _RootWalker:
    """Descriptors on folders inside one root, and lookups that never leave it.

    Folder descriptors are memoised by their resolved path (least recently
    used first out): a descriptor names an inode, so reusing one is as safe
    as opening it again, and a folder of thousands of files is walked once.
    One lock guards the memo and each lookup, so no thread can use a
    descriptor another thread is closing.
    """

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # "/a/b" -> descriptor on the folder reached by walking the real folders a, b.
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self.root_fd, self._fds)

    # -- the walk (call with the lock held) ---------------------------------
    def _deepest_held(self, key: str) -> tuple[int, int]:
        """(descriptor, length of its key) of the deepest folder held along *key*."""
        end = len(key)
        while end > 0:
            fd = self._fds.get(key[:end])
            if fd is not None:
                self._fds.move_to_end(key[:end])
                return fd, end
            end = key.rfind("/", 0, end)
        return self.root_fd, 0

    def _folder(self, key: str) -> int:
        """A descriptor on the folder *key* ("/a/b"), each component a real folder (no link)."""
        if key == "/":
            return self.root_fd
        fd, end = self._deepest_held(key)
        while end < len(key):  # open the rest, one name at a time
            nxt = key.find("/", end + 1)
            nxt = len(key) if nxt < 0 else nxt
            fd = os.open(key[end + 1 : nxt], _FOLDER_FLAGS, dir_fd=fd)
            self._fds[key[:nxt]] = fd
            if len(self._fds) > _MAX_FOLDER_FDS:  # the oldest, never the one just opened
                os.close(self._fds.popitem(last=False)[1])
            end = nxt
        return fd

    def _locate(self, path: str, follow_last: bool) -> tuple[int, str | None]:
        """(folder descriptor, last name) for *path*, symlinks resolved inside the root.

        The name is None when *path* is that folder itself (``/``, or ending in
        ``..``). Without *follow_last*, a final symlink is not followed.
        """
        key = ""  # the folder reached so far: "" is the root, else "/a/b"
        todo = _components_reversed(path)
        if _canonical(path):
            # Start at the deepest folder already held on the way (paths
            # usually arrive resolved: most often the parent itself).
            fd, end = self._deepest_held(path[: path.rfind("/")])
            key = path[:end]
            todo = _components_reversed(path[end:])
            if len(todo) == 1 and not follow_last:
                return fd, todo[0]
        budget = _MAX_LINKS
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            if name == "..":
                key = key[: key.rfind("/")] if key else key  # `..` stops at the root
                continue
            child = f"{key}/{name}"
            if todo and child in self._fds:
                key = child  # a folder we hold: known not to be a link
                continue
            dirfd = self._folder(key or "/")
            if not todo and not follow_last:
                return dirfd, name
            mode = os.lstat(name, dir_fd=dirfd).st_mode
            if stat.S_ISLNK(mode):
                budget -= 1
                if budget < 0:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                target = os.readlink(name, dir_fd=dirfd)
                if target.startswith("/"):
                    key = ""  # an absolute link starts again at the root
                todo.extend(_components_reversed(target))
            elif not todo:
                return dirfd, name
            elif stat.S_ISDIR(mode):
                key = child
            else:
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        return self._folder(key or "/"), None

    # -- operations ----------------------------------------------------------
    def lstat(self, path: str) -> os.stat_result:
        with self._lock:
            dirfd, name = self._locate(path, follow_last=False)
            return os.fstat(dirfd) if name is None else os.lstat(name, dir_fd=dirfd)

    def readlink(self, path: str) -> str:
        with self._lock:
            dirfd, name = self._locate(path, follow_last=False)
            if name is None:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return os.readlink(name, dir_fd=dirfd)

    def listdir(self, path: str) -> list[str]:
        with self._lock:
            dirfd, name = self._locate(path, follow_last=True)
            # A fresh descriptor: listing moves its offset, the memoised one is shared.
            fd = os.open(name or ".", _FOLDER_FLAGS, dir_fd=dirfd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def readable(self, path: str) -> bool:
        """Whether the (resolved) *path* may be read; a final link is not followed."""
        with self._lock:
            dirfd, name = self._locate(path, follow_last=False)
            return os.access(name or ".", os.R_OK, dir_fd=dirfd, follow_symlinks=False)

    def open_file(self, path: str) -> int:
        """A read-only descriptor on *path* (links followed inside the root); not checked."""
        with self._lock:
            # Paths arrive resolved, so first try without reading the last
            # name's kind; ELOOP means it is (now) a link: follow it here.
            dirfd, name = self._locate(path, follow_last=False)
            try:
                return os.open(name or ".", _FILE_FLAGS | os.O_NOFOLLOW, dir_fd=dirfd)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
            dirfd, name = self._locate(path, follow_last=True)
            return os.open(name or ".", _FILE_FLAGS | os.O_NOFOLLOW, dir_fd=dirfd)


def _canonical(path: str) -> bool:
    """An absolute path with no empty, "." or ".." component: its prefixes are folder keys."""
    marked = path + "/"
    return (path.startswith("/") and "//" not in marked and "/./" not in marked
            and "/../" not in marked)


def _components_reversed(path: str) -> list[str]:
    """Path components, last first (a stack: ``pop()`` gives the next one)."""
    return [p for p in reversed(path.split("/")) if p]


def _close_all(root_fd: int, fds: OrderedDict[str, int]) -> None:
    for fd in [root_fd, *fds.values()]:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _hash_open_file(fd: int, stop: threading.Event) -> str:
    """SHA-256 of the regular file open on *fd* (checked on that very descriptor); closes it."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile("")
        return sha256_fd(fd, stop)
    finally:
        os.close(fd)


def _read_open_file(fd: int) -> bytes:
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile("")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read()
    finally:
        os.close(fd)


def _named(func: Callable[[], T], shown: Callable[[], str]) -> T:
    """``func()``, with any OSError or NotRegularFile naming the user's file."""
    try:
        return func()
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # open(2) of a socket, or of a device with no driver
            raise NotRegularFile(shown()) from None
        raise OSError(exc.errno, exc.strerror, shown()) from None
    except NotRegularFile:
        raise NotRegularFile(shown()) from None


def _lookup_error(shown: str, exc: OSError) -> ManifestError:
    return ManifestError(f"{shown}: cannot look up: {exc.strerror}")


class DiskTree(Tree):
    """A folder on disk seen as the root of the enclave's file system (``--chroot``).

    Every lookup walks from a descriptor held on the root (see the module's
    docstring), so nothing outside the folder is ever read, listed or stat'ed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._root_str = str(self.root).rstrip("/")
        self._walker = _RootWalker(self.root)

    def outer(self, path: str) -> Path:
        """Where *path* is on the host: for messages only, never opened."""
        return Path(self._root_str + str(path))

    def lstat_kind(self, path: str) -> str | None:
        try:
            mode = self._walker.lstat(path).st_mode
        except ValueError:  # a NUL in the path: no such file can exist
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None  # ELOOP: a link loop in a parent, reported as missing
            raise _lookup_error(self.display(path), exc) from None
        return _kind_of(mode)

    def readlink(self, path: str) -> str:
        try:
            return self._walker.readlink(path)
        except OSError as exc:
            raise _lookup_error(self.display(path), exc) from None

    def list_dir(self, path: str) -> list[str]:
        try:
            return self._walker.listdir(path)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, self.display(path)) from None

    def readable(self, path: str) -> bool:
        try:  # resolution is memoised: a folder walk asks about each file just once
            return self._walker.readable(self.resolve(path))
        except (OSError, ManifestError):
            return False

    def _hash_one(self, path: str, stop: threading.Event) -> str:
        # The name is built only for an error: pathlib costs more than a small file's hash.
        return _named(lambda: _hash_open_file(self._walker.open_file(path), stop),
                      lambda: self.display(path))

    def hash_files(self, paths: list[str]) -> list[str]:
        return sha256_many(paths, self._hash_one)

    def read_bytes(self, path: str) -> bytes:
        return _named(lambda: _read_open_file(self._walker.open_file(path)),
                      lambda: self.display(path))

    def display(self, path: str) -> str:
        return str(self.outer(path))


class HostTree(Tree):
    """The host's own file system, without a chroot.

    Paths may be relative (to the working folder) and symlinks are followed
    by the operating system, as Gramine does when no chroot is given. A file
    is still checked on the descriptor its bytes are read from.
    """

    chrooted = False

    def resolve(self, path: str) -> str:
        return path

    def lstat_kind(self, path: str) -> str | None:
        try:
            return _kind_of(os.stat(path).st_mode)
        except ValueError:  # a NUL in the path: no such file can exist
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise _lookup_error(path, exc) from None

    def kind(self, path: str) -> str | None:
        return self._lstat(path)

    def is_symlink(self, path: str) -> bool:
        return os.path.islink(path)

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def list_dir(self, path: str) -> list[str]:
        return os.listdir(path)

    def readable(self, path: str) -> bool:
        return os.access(path, os.R_OK)

    def _hash_one(self, path: str, stop: threading.Event) -> str:
        return _named(lambda: _hash_open_file(os.open(path, _FILE_FLAGS), stop), lambda: path)

    def hash_files(self, paths: list[str]) -> list[str]:
        return sha256_many(paths, self._hash_one)

    def read_bytes(self, path: str) -> bytes:
        return _named(lambda: _read_open_file(os.open(path, _FILE_FLAGS)), lambda: path)

    def display(self, path: str) -> str:
        return path


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
    check_chroot(chroot)
    try:
        return DiskTree(Path(chroot))
    except OSError as exc:
        raise ManifestError(f"{chroot}: cannot open chroot folder: {exc.strerror}") from None


def check_chroot(chroot: Path) -> None:
    """Refuse a ``--chroot`` that is not a folder, before any work, saying why."""
    try:
        info = os.stat(chroot)
    except (FileNotFoundError, NotADirectoryError):
        what = "is a symbolic link to nothing" if os.path.islink(chroot) else "does not exist"
        raise UsageError(f"--chroot {chroot}: the folder {what}") from None
    except OSError as exc:
        raise UsageError(f"--chroot {chroot}: cannot use the folder: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"--chroot {chroot}: is not a folder (give the root folder of the "
                         "enclave's file system)")
