"""Build contexts: an in-memory (spooled) tar with normalised metadata.

Every entry gets mtime 0 and owner root, so the engine's cache depends on
content only and an unchanged rebuild is a cache hit.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from ppml_image.errors import UsageError


class BuildContext:
    """A tar build context; :meth:`finish` returns it, rewound."""

    def __init__(self) -> None:
        self.buffer: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115
        self._tar = tarfile.open(fileobj=self.buffer, mode="w",  # noqa: SIM115 - see finish()
                                 format=tarfile.PAX_FORMAT)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = _info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def add_tree(self, source: Path, arcname: str,
                 digests: dict[str, str] | None = None) -> None:
        """Add a folder recursively, keeping modes and symlinks (sorted: stable).

        Every name must be UTF-8: a manifest (TOML) names each file it
        measures, and TOML cannot spell any other name. With *digests*, the
        SHA-256 of each file as added (``symlink:TARGET`` for a link) is
        recorded by its path relative to *source*: what went in, not what
        the folder holds a moment later.
        """
        self._tar.addfile(_info(arcname, tarfile.DIRTYPE, 0o755))
        for root, dirs, files in os.walk(source):
            dirs.sort()
            rel_root = os.path.relpath(root, source)
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(root, name)
                _check_name(path)
                rel = os.path.normpath(os.path.join(arcname, rel_root, name))
                st = os.lstat(path)
                key = os.path.relpath(path, source).replace(os.sep, "/")
                if os.path.islink(path):
                    info = _info(rel, tarfile.SYMTYPE, 0o777)
                    info.linkname = os.readlink(path)
                    _check_name(info.linkname, f"{path} (symlink target)")
                    self._tar.addfile(info)
                    if digests is not None:
                        digests[key] = "symlink:" + info.linkname
                elif os.path.isdir(path):
                    self._tar.addfile(_info(rel, tarfile.DIRTYPE, st.st_mode & 0o7777))
                elif os.path.isfile(path):
                    info = _info(rel, tarfile.REGTYPE, st.st_mode & 0o7777)
                    info.size = st.st_size
                    with open(path, "rb") as handle:
                        if digests is None:
                            self._tar.addfile(info, handle)
                        else:
                            hashing = _Hashing(handle)
                            self._tar.addfile(info, hashing)  # type: ignore[arg-type]
                            digests[key] = hashing.digest.hexdigest()

    def finish(self) -> IO[bytes]:
        self._tar.close()
        self.buffer.seek(0)
        return self.buffer


class _Hashing:
    """A file object that hashes what tarfile reads from it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def _check_name(path: str, what: str | None = None) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise UsageError(f"{what or shown}: file name is not UTF-8; a manifest cannot name "
                         "it (rename the file)") from None


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
