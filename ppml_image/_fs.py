"""Small file-system helpers: atomic writes and private files.

Outputs are written to a temporary file in the destination folder and renamed
into place, so a failure never leaves a partial file behind. Secret files are
created with mode 0600 by ``os.open`` itself: there is no moment at which
they exist with a wider mode.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ppml_image import _signals
from ppml_image.errors import PpmlError, UsageError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def make_private_dirs(path: Path) -> None:
    """Create *path* and any missing parents with mode 0700 (existing ones are left alone)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        # mkdir's mode is filtered by the umask; chmod makes it exact.
        folder.mkdir(mode=PRIVATE_DIR_MODE)
        os.chmod(folder, PRIVATE_DIR_MODE)


# --------------------------------------------------------------------------
# Temporary files beside an output: .NAME.ppml-PID-RANDOM.tmp
# --------------------------------------------------------------------------
NAME_MAX = 255  # bytes in one file name, where the file system does not say
_TEMP_MARK = ".ppml-"
_TEMP_SUFFIX = ".tmp"
# What we add to a name: "." + ".ppml-" + a PID (at most 7 digits, Linux's
# pid_max 4194304) + "-" + mkstemp's 8 random characters + ".tmp".
_TEMP_EXTRA = 1 + len(_TEMP_MARK) + 7 + 1 + 8 + len(_TEMP_SUFFIX)


def _fitting(name: str, extra: int) -> str:
    """*name*, cut (in bytes, as the kernel counts) so that *extra* more bytes fit NAME_MAX."""
    raw = os.fsencode(name)
    return name if len(raw) + extra <= NAME_MAX else os.fsdecode(raw[:NAME_MAX - extra])


def make_temporary(folder: Path, name: str) -> tuple[int, str]:
    """A new 0600 file for the output *name* in *folder*: (descriptor, path).

    Named ``.NAME.ppml-PID-RANDOM.tmp`` (NAME cut to fit NAME_MAX) so that a
    run killed by ``kill -9`` leaves a file the next run can recognise: on the
    way in, every such file in *folder* whose process is gone is removed
    (:func:`remove_stale_temporaries`).
    """
    remove_stale_temporaries(folder)
    prefix = f".{_fitting(name, _TEMP_EXTRA)}{_TEMP_MARK}{os.getpid()}-"
    return tempfile.mkstemp(prefix=prefix, suffix=_TEMP_SUFFIX, dir=folder)


def _temporary_owner(entry: str) -> int | None:
    """The PID in a name of ours (``.NAME.ppml-PID-RANDOM.tmp``), or None."""
    if not (entry.startswith(".") and entry.endswith(_TEMP_SUFFIX)) or _TEMP_MARK not in entry:
        return None
    pid, dash, rest = entry[:-len(_TEMP_SUFFIX)].rpartition(_TEMP_MARK)[2].partition("-")
    if not (dash and pid.isascii() and pid.isdigit() and len(pid) <= 7 and len(rest) == 8):
        return None
    return int(pid)


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, as another user
        return False
    return False


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Remove our temporary files in *folder* left by processes that are gone; return them.

    Only regular files (or links) that this user owns and whose name is ours
    with the PID of a process that no longer exists: a run in progress, or
    another user's file, is never touched. (A process in another PID
    namespace writing to the same folder would look gone: such setups should
    not share an output folder.)
    """
    removed: list[str] = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        pid = _temporary_owner(entry)
        if pid is None or pid == os.getpid() or not _process_is_gone(pid):
            continue
        try:
            info = os.lstat(os.path.join(folder, entry))
            if info.st_uid == os.geteuid() and (stat.S_ISREG(info.st_mode)
                                                or stat.S_ISLNK(info.st_mode)):
                os.unlink(os.path.join(folder, entry))
                removed.append(entry)
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    return removed


@contextlib.contextmanager
def atomic_output(
    path: Path, mode: int = 0o644, *, exclusive: bool = False
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces *path* only if the block succeeds.

    The temporary file is created 0600 (``mkstemp``) and switched to *mode*
    just before the rename, so secrets written through here are never exposed.
    With *exclusive*, an existing *path* is never replaced: the file is
    hard-linked into place, which fails atomically with FileExistsError.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = make_temporary(folder, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        _signals.check()
        if exclusive:
            os.link(tmp_name, path)
            os.unlink(tmp_name)
        else:
            os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write *data* to *path* atomically with the given *mode*."""
    with atomic_output(path, mode) as handle:
        handle.write(data)


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a secret: mode 0600 from creation, parents 0700, atomic.

    Without *overwrite*, an existing *path* raises :class:`FileExistsError`.
    """
    path = Path(path)
    make_private_dirs(path.parent if str(path.parent) else Path("."))
    with atomic_output(path, PRIVATE_FILE_MODE, exclusive=not overwrite) as handle:
        handle.write(data)


# --------------------------------------------------------------------------
# Output folders: staged beside the target, swapped in only after success.
# --------------------------------------------------------------------------
STAGING_SUFFIX = ".staging"
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def check_output_folder(out: Path, ours: Collection[str], *, force: bool,
                        keep: Collection[str] = ()) -> tuple[Path, bool]:
    """Where *out* really is, and whether it exists; raise if we may not replace it.

    *ours* are the files the command writes; *keep* the files of a sibling
    command that may share the folder (kept as they are). Anything else in the
    folder, or any entry that is not a regular file, is someone else's: we
    refuse, even with *force*, rather than destroy it. Our own earlier files
    are replaced only with *force*.
    """
    try:
        info = os.lstat(out)
    except FileNotFoundError:
        return Path(os.path.realpath(out)), False
    except OSError as exc:
        raise UsageError(f"{out}: cannot use it as the output folder: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(out)
        except OSError:
            raise UsageError(f"{out}: is a symbolic link to nothing; give a folder") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{out}: exists and is not a folder")
    real = Path(os.path.realpath(out))
    try:
        entries = sorted(os.listdir(real))
    except OSError as exc:
        raise UsageError(f"{out}: cannot list the output folder: {exc.strerror}") from None
    allowed = set(ours) | set(keep)
    for name in entries:
        if name not in allowed or not _is_regular(real / name):
            raise UsageError(f"{out}: holds {name!r}, which this command does not write; "
                             "refusing to replace the folder, even with --force (move it "
                             "away or choose another output folder)")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents or real.parent == real:
        # Swapping it would leave the shell in a deleted folder (or try to
        # replace /): the output needs a folder of its own.
        raise UsageError(f"{out}: is the working folder or holds it; write to a folder "
                         "of its own")
    mine = [name for name in entries if name in ours]
    if mine and not force:
        raise UsageError(f"{out}: already holds {mine[0]}; pass --force to replace this "
                         "command's files")
    return real, True


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:  # removed meanwhile: nothing of anyone's is lost
        return True


@contextlib.contextmanager
def staged_folder(out: Path, ours: Collection[str], *, force: bool,
                  keep: Collection[str] = ()) -> Iterator[Path]:
    """Yield an empty private folder (0700) that becomes *out* only if the block succeeds.

    The folder is a sibling of *out* (same file system, so the swap is a
    rename). *out* is checked first (:func:`check_output_folder`), again just
    before the swap, and replaced with an atomic exchange where the kernel
    has one; otherwise with renames that always leave the old content under
    some name. On any error, Ctrl-C or SIGTERM the staging folder is removed
    and *out* is as it was. Files named in *keep* that already sit in *out*
    are carried over (hard links) so that a sibling command's files survive.
    """
    real, _ = check_output_folder(out, ours, force=force, keep=keep)
    created = _make_parents(out, real.parent)
    staging: Path | None = None
    swapped = False
    try:
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{_fitting(real.name, 48)}.",
                                            suffix=STAGING_SUFFIX, dir=real.parent))
        except OSError as exc:
            raise UsageError(f"{out}: cannot create a folder beside it: "
                             f"{exc.strerror}") from None
        yield staging
        real, exists = check_output_folder(out, ours, force=force, keep=keep)
        _signals.check()
        if exists:
            _carry_over(real, staging, keep)
            old = _exchange(staging, real, out)
            swapped = True
            staging = None
            _remove_old(old, set(ours) | set(keep))
        else:
            _rename_noreplace(staging, real, out)
            swapped = True
            staging = None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if not swapped:
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _make_parents(out: Path, parent: Path) -> list[Path]:
    """Create *parent*'s missing folders (0700); return them, outermost first."""
    missing: list[Path] = []
    current = parent
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir(mode=PRIVATE_DIR_MODE)
            created.append(folder)
            os.chmod(folder, PRIVATE_DIR_MODE)
    except OSError as exc:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        what = "is not a folder" if isinstance(exc, (FileExistsError, NotADirectoryError)) \
            else exc.strerror
        raise UsageError(f"{out}: cannot create its parent folder {current}: {what}") from None
    if not os.path.isdir(parent):
        raise UsageError(f"{out}: its parent {parent} is not a folder")
    return created


def _carry_over(real: Path, staging: Path, keep: Collection[str]) -> None:
    for name in keep:
        source = real / name
        if name in os.listdir(staging) or not os.path.lexists(source):
            continue
        try:
            os.link(source, staging / name, follow_symlinks=False)
        except OSError:  # e.g. protected_hardlinks: copy, same mode
            mode = stat.S_IMODE(os.lstat(source).st_mode)
            with atomic_output(staging / name, mode) as handle:
                handle.write(source.read_bytes())


def libc_function(name: str, argtypes: list[Any], restype: Any) -> Callable[..., int] | None:
    """*name* from the C library this process already has loaded, typed; None where it lacks it.

    ``CDLL(None)``, not ``find_library("c")``: the latter runs ``ldconfig``
    (a subprocess) to find a library that is loaded anyway. Each call gets
    its own handle, so setting the types never races another caller's.
    """
    import ctypes  # here, not at start-up: only a few commands need it

    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = restype
    found: Callable[..., int] = function
    return found


def prctl_function() -> Callable[..., int] | None:
    """Linux's ``prctl``, or None elsewhere.

    ``int prctl(int option, unsigned long arg2, ...)``: full-width arguments,
    so that a 0 (stop being a subreaper, say) is never read with stray upper bits.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return libc_function("prctl", [ctypes.c_int, *[ctypes.c_ulong] * 4], ctypes.c_int)


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """rename(2) with *flags*; False where the C library, kernel or file system lacks it."""
    import ctypes

    func = libc_function("renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                       ctypes.c_char_p, ctypes.c_uint], ctypes.c_int)
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(target))


def _exchange(staging: Path, real: Path, out: Path) -> Path:
    """Put *staging* at *real*; return where the old folder now is."""
    try:
        if _renameat2(staging, real, _RENAME_EXCHANGE):
            return staging
        return exchange_by_renames(staging, real)
    except OSError as exc:
        raise UsageError(f"{out}: cannot replace the folder: {exc.strerror}") from None


def exchange_by_renames(new: Path, real: Path) -> Path:
    """The fallback swap: move *real* aside, then *new* into place; return the old folder.

    Between the two renames *real* does not exist, but its content is never
    lost: it is under the returned name, and a failure moves it back.
    """
    aside = Path(tempfile.mkdtemp(prefix=f".{_fitting(real.name, 48)}.", suffix=".old",
                                  dir=real.parent))
    os.rename(real, aside)  # onto an empty folder: an atomic replace
    try:
        os.rename(new, real)
    except BaseException:
        os.rename(aside, real)
        raise
    return aside


def _rename_noreplace(staging: Path, real: Path, out: Path) -> None:
    try:
        if not _renameat2(staging, real, _RENAME_NOREPLACE):
            os.rename(staging, real)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise UsageError(f"{out}: appeared while we were writing; run again") from None
        raise UsageError(f"{out}: cannot create the folder: {exc.strerror}") from None


def _remove_old(old: Path, ours: set[str]) -> None:
    """Delete the replaced folder: only our files, so a file that raced in survives."""
    try:
        for name in os.listdir(old):
            if name in ours and not stat.S_ISDIR(os.lstat(old / name).st_mode):
                os.unlink(old / name)
        old.rmdir()
    except OSError:  # the new output is in place; say what is left, do not fail
        logging.getLogger("ppml_image").warning(
            "%s: the replaced folder was kept: it holds files that appeared while we "
            "were writing", old)


def read_regular_files(folder: Path, what: str, *, limit: int) -> dict[str, bytes]:
    """Every entry of *folder* by name; each must be a regular file of at most *limit* bytes,
    with no other hard link.

    No symbolic link is followed out of the folder and nothing can swap one
    in: each entry is opened relative to a descriptor on the folder with
    O_NOFOLLOW, and its type is checked with fstat on the open descriptor
    (no check-then-open race). O_NONBLOCK keeps a FIFO from blocking the open.
    """
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{folder}: {what} folder does not exist") from None
    except NotADirectoryError:
        raise UsageError(f"{folder}: is not a folder ({what} folder expected)") from None
    except OSError as exc:
        raise PpmlError(f"{folder}: cannot open {what} folder: {exc.strerror}") from None
    try:
        return {name: _read_entry(folder, dir_fd, name, limit)
                for name in sorted(os.listdir(dir_fd))}
    finally:
        os.close(dir_fd)


def _read_entry(folder: Path, dir_fd: int, name: str, limit: int) -> bytes:
    shown = f"{folder}/{name!r}" if not name.isprintable() else f"{folder}/{name}"
    data = read_no_follow(name, limit, shown, dir_fd=dir_fd, single_link=True,
                          symlink_hint="refusing to follow it out of the folder")
    if len(data) > limit:
        raise PpmlError(f"{shown}: is larger than {limit} bytes")
    return data


def read_no_follow(path: str | Path, limit: int, shown: str, *, symlink_hint: str,
                   error: type[PpmlError] = PpmlError, dir_fd: int | None = None,
                   single_link: bool = False) -> bytes:
    """At most *limit* + 1 bytes of the regular file *path* (relative to *dir_fd*).

    A symbolic link is refused (O_NOFOLLOW: nothing can swap one in), the
    type is checked with fstat on the open descriptor (no check-then-open
    race) and O_NONBLOCK keeps a FIFO from blocking the open. The caller
    says what more than *limit* bytes means. *single_link* also refuses a
    file with other hard links: the symlink attack where protected_hardlinks
    is off.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{shown}: is a symbolic link; {symlink_hint}") from None
        raise error(f"{shown}: cannot open: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{shown}: is not a regular file")
        if single_link and info.st_nlink > 1:
            raise error(f"{shown}: has other hard links ({info.st_nlink} names); copy "
                        "the file into the folder instead")
        return _read_up_to(fd, limit + 1)
    except OSError as exc:
        raise error(f"{shown}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _read_up_to(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    done = 0
    while done < size and (chunk := os.read(fd, size - done)):
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------
# Bounded reads of the user's input files.
# --------------------------------------------------------------------------
KiB = 1 << 10
MiB = 1 << 20


def size_text(size: int) -> str:
    """``1 MiB``, ``512 MiB``, ``64 KiB``, ``1808 bytes``: how messages state a limit."""
    for unit, name in ((MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def read_capped(path: str | bytes | os.PathLike[str], cap: int, what: str,
                error: type[PpmlError] = PpmlError) -> bytes:
    """The bytes of the user's input file *path*: at most *cap* of them, or *error*.

    One open, then fstat on that descriptor and a bounded read: no
    check-then-open race, and neither ``/dev/zero`` nor a huge file is read
    into memory. A regular file larger than *cap* is refused before reading;
    a pipe or FIFO (``--key <(...)``) is read up to *cap* bytes; a device,
    folder or socket is refused at once. Messages name *path* and *what* it
    should be (``key file``, ``libpal.so``...), never a descriptor.
    """
    shown = os.fsdecode(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise error(f"{shown}: cannot read {what}: file not found") from None
    except IsADirectoryError:
        raise error(f"{shown}: is a folder, not a {what}") from None
    except OSError as exc:
        raise error(f"{shown}: cannot read {what}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{shown}: is a folder, not a {what}")
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
            raise error(f"{shown}: is a device or socket, not a {what} (a regular file or "
                        f"pipe of at most {size_text(cap)})")
        if info.st_size > cap:
            raise error(f"{shown}: {what} is larger than {size_text(cap)} (the limit)")
        return _read_at_most(fd, cap, shown, what, error)
    except OSError as exc:
        raise error(f"{shown}: cannot read {what}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _read_at_most(fd: int, cap: int, shown: str, what: str,
                  error: type[PpmlError]) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        # Reads of at most 1 MiB: a Ctrl-C between them is seen at once.
        chunk = os.read(fd, min(cap + 1 - size, MiB))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > cap:
        raise error(f"{shown}: {what} is larger than {size_text(cap)} (the limit)")
    return b"".join(chunks)


# --------------------------------------------------------------------------
# Output files: checked before any work, committed in order.
# --------------------------------------------------------------------------
# Kernel file systems whose files are not files: writing there is never what
# the user meant, and replacing an entry there can do harm.
PSEUDO_FILE_SYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
    "securityfs", "bpf", "configfs", "fusectl", "pstore", "efivarfs", "mqueue", "binfmt_misc",
    "autofs", "rpc_pipefs", "nsfs", "selinuxfs"})


def _file_system_of(folder: str) -> str | None:
    """The type of the file system holding *folder* (a real path), from mountinfo."""
    best, kind = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if " - " not in line or len(fields) < 5:
                    continue
                mount = fields[4].replace("\\040", " ").replace("\\011", "\t") \
                    .replace("\\012", "\n").replace("\\134", "\\")
                inside = folder == mount or folder.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, line.split(" - ", 1)[1].split()[0]
    except OSError:
        return None
    return kind


def check_output_files(outputs: Sequence[Path], inputs: Sequence[Path] = (), *,
                       make_parents: bool = False) -> None:
    """Refuse, before any work, output files we could not or should not write.

    An output that is a folder, a device, FIFO or socket, whose folder is
    missing, not a folder, not writable or on a kernel pseudo file system
    (``/proc``, ``/sys``...), or that is the same file as another output or as
    one of the command's *inputs* (by path or by inode: a hard link or
    symbolic link counts) is a :class:`UsageError` naming the user's path.
    With *make_parents*, missing folders will be created: the nearest
    existing one is checked instead.
    """
    seen: dict[object, Path] = {}
    for given in inputs:
        for identity in _identities(Path(given)):
            seen.setdefault(identity, Path(given))
    for path in outputs:
        path = Path(path)
        _check_output_file(path, make_parents)
        for identity in _identities(path):
            if identity in seen:
                other = seen[identity]
                role = "input" if other in inputs else "output"
                raise UsageError(f"{path}: is the same file as the {role} {other}; give each "
                                 "output a path of its own")
        for identity in _identities(path):
            seen[identity] = path


def _identities(path: Path) -> list[object]:
    """What makes two paths the same file: the resolved path, and the inode if it exists."""
    found: list[object] = [os.path.realpath(path)]
    with contextlib.suppress(OSError):
        info = os.stat(path)
        found.append((info.st_dev, info.st_ino))
    return found


def _check_output_file(path: Path, make_parents: bool) -> None:
    _check_name_length(path)  # first: stat(2) would only say "File name too long"
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    except NotADirectoryError:
        raise UsageError(f"{path}: a folder on its path is a file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot use it as an output file: {exc.strerror}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{path}: is a folder, not an output file")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{path}: is a device, FIFO or socket; refusing to replace it with "
                         "an output file")
    folder = path.parent if str(path.parent) else Path(".")
    while make_parents and not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.lexists(folder) else "is not a folder"
        raise UsageError(f"{path}: cannot write: its folder {folder} {what}")
    real = os.path.realpath(folder)
    kind = _file_system_of(real)
    if kind in PSEUDO_FILE_SYSTEMS:
        raise UsageError(f"{path}: {folder} is on the kernel's {kind} file system, not a "
                         "place for output files")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: cannot write in its folder {folder}")


def _check_name_length(path: Path) -> None:
    """A name the file system would refuse fails now, not after the work."""
    try:
        limit = os.pathconf(path.parent if str(path.parent) else ".", "PC_NAME_MAX")
    except (OSError, ValueError):  # a missing folder: Linux's file systems allow 255
        limit = NAME_MAX
    size = len(os.fsencode(path.name))
    if size > limit:
        raise UsageError(f"{path}: the file name is {size} bytes; this file system allows at "
                         f"most {limit}")


def write_files_in_order(files: Sequence[tuple[Path, bytes]], mode: int = 0o644) -> None:
    """Write *files* together: each to a temporary file beside it, then renamed in order.

    The last file vouches for the others (a ``.sig`` for its ``.manifest.sgx``),
    so an existing one is removed just before the renames and renamed into
    place last: whenever the process stops, even by ``kill -9``, the last
    file on disk (if any) belongs with the files before it. Signals wait
    during the renames, so Ctrl-C never splits them. Errors name the user's
    file, never a temporary one.
    """
    temps: list[str] = []
    try:
        for path, data in files:
            temps.append(_write_temporary(Path(path), data, mode))
        _signals.check()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            _commit_in_order([Path(p) for p, _ in files], temps)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    finally:
        for name in filter(None, temps):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def _write_temporary(path: Path, data: bytes, mode: int) -> str:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, name = make_temporary(folder, path.name)
    except OSError as exc:
        raise PpmlError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(name, mode)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise PpmlError(f"{path}: cannot write: {exc.strerror}") from None
    return name


def _commit_in_order(paths: list[Path], temps: list[str]) -> None:
    last = paths[-1]
    try:
        if os.path.lexists(last):
            os.unlink(last)
            _sync_folder(last)
    except OSError as exc:
        raise PpmlError(f"{last}: cannot replace it: {exc.strerror}") from None
    for index, (path, name) in enumerate(zip(paths, temps, strict=True)):
        try:
            os.replace(name, path)
            temps[index] = ""  # renamed: nothing to remove
            # On disk too, not only in the page cache: after a power cut the
            # last file must not be there without the ones before it.
            _sync_folder(path)
        except OSError as exc:
            raise PpmlError(f"{path}: cannot write: {exc.strerror}") from None


def _sync_folder(path: Path) -> None:
    fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
