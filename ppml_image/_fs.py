"""Small file-system helpers: atomic writes and private files.

Outputs are written to a temporary file in the destination folder and renamed
into place, so a failure never leaves a partial file behind. Secret files are
created with mode 0600 by ``os.open`` itself: there is no moment at which
they exist with a wider mode.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
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
