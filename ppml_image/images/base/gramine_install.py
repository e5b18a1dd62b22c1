"""Is a Gramine source complete? Checked before a base build starts, and again inside it.

A base image whose Gramine lacks the launcher or the PAL builds fine and
fails much later, in ``build-custom``, with a message that blames the
custom image. So ``build-base`` refuses an incomplete source up front:

* an install tree: checked on the host, before any engine work;
* a folder of ``.deb`` files: their file lists are read on the host (the
  ``ar`` archive and its ``data.tar``); a compression the standard library
  cannot read (zstd) leaves this to the next check;
* every source (apt too): one build step right after Gramine is installed
  prints one marker line naming what is missing, which becomes the error.
"""

from __future__ import annotations

import shlex
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ppml_image.errors import UsageError
from ppml_image.sgx import gramine

LAUNCHER = "usr/bin/gramine-sgx"
MISSING_MARKER = "ppml-image: the Gramine install lacks:"
_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
_DATA_TARS = {"data.tar": "r|", "data.tar.gz": "r|gz", "data.tar.xz": "r|xz",
              "data.tar.bz2": "r|bz2"}


def required_files() -> tuple[str, ...]:
    """What every Gramine install must hold, relative to the root: launcher, PAL, LibOS."""
    return (LAUNCHER, gramine.libpal().lstrip("/"), gramine.libsysdb().lstrip("/"))


def check_tree(folder: Path) -> None:
    """Refuse an install tree without the launcher (executable), the PAL or the LibOS."""
    missing = [rel for rel in required_files() if not (folder / rel).is_file()]
    launcher = folder / LAUNCHER
    if LAUNCHER not in missing and not launcher.stat().st_mode & 0o111:
        missing.append(f"{LAUNCHER} (not executable)")
    if missing:
        raise UsageError(f"{folder}: incomplete Gramine install tree: missing "
                         + ", ".join(missing))


def check_debs(folder: Path) -> None:
    """Refuse a folder of .deb files that, together, do not install the required files."""
    installed: set[str] = set()
    for deb in sorted(folder.glob("*.deb")):
        names = deb_files(deb)
        if names is None:
            return  # a compression we cannot read here: the in-build check decides
        installed |= names
    missing = [rel for rel in required_files() if rel not in installed]
    if missing:
        raise UsageError(f"{folder}: the .deb files do not install a complete Gramine: "
                         "missing " + ", ".join("/" + rel for rel in missing))


def deb_files(path: Path) -> set[str] | None:
    """The paths a .deb installs (files and links, without ``./``), or None if unreadable here."""
    with open(path, "rb") as stream:
        if stream.read(len(_AR_MAGIC)) != _AR_MAGIC:
            raise UsageError(f"{path}: not a .deb package (no ar archive header)")
        for name, size in _ar_members(stream, path):
            if name.startswith("data.tar"):
                mode = _DATA_TARS.get(name)
                return None if mode is None else _tar_names(stream, size, mode, path)
            stream.seek(size + size % 2, 1)
    raise UsageError(f"{path}: not a .deb package (no data.tar member)")


def _ar_members(stream: BinaryIO, path: Path) -> Iterator[tuple[str, int]]:
    while True:
        header = stream.read(_AR_HEADER)
        if not header:
            return
        if len(header) != _AR_HEADER or header[58:60] != b"`\n":
            raise UsageError(f"{path}: not a .deb package (corrupt ar header)")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise UsageError(f"{path}: not a .deb package (corrupt ar header)") from None
        yield header[:16].decode("ascii", "replace").strip().rstrip("/"), size


def _tar_names(stream: BinaryIO, size: int, mode: str, path: Path) -> set[str]:
    names: set[str] = set()
    try:
        with tarfile.open(fileobj=_Bounded(stream, size), mode=mode) as tar:  # type: ignore[call-overload]
            for member in tar:
                if member.isfile() or member.issym() or member.islnk():
                    names.add(member.name.removeprefix("./").lstrip("/"))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UsageError(f"{path}: unreadable .deb data archive ({exc})") from None
    return names


class _Bounded:
    """A read-only view of the next *size* bytes of *stream* (one ar member)."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream, self._left = stream, size

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._stream.read(size)
        self._left -= len(data)
        return data


def build_check() -> str:
    """Shell for the build step after Gramine's install: one marker line naming what is missing."""
    files = " ".join(shlex.quote("/" + rel) for rel in required_files()[1:])
    runtime = shlex.quote(gramine.runtimedir() + "/")
    return (f'missing=""; for f in {files}; do [ -f "$f" ] || missing="$missing $f"; done; '
            f'[ -d {runtime} ] || missing="$missing {runtime}"; '
            '[ -x "$(command -v gramine-sgx)" ] || missing="$missing gramine-sgx"; '
            f'if [ -n "$missing" ]; then echo "{MISSING_MARKER}$missing"; exit 1; fi')


def describe_missing(marker_items: str) -> str:
    """The items of a marker line, as a person reads them."""
    return ", ".join("gramine-sgx (an executable on PATH)" if item == "gramine-sgx" else item
                     for item in marker_items.split())
