"""What a Python interpreter answers for the manifest's ``python.*`` helpers.

Gramine 1.9's ``gramine-manifest`` answers ``python.stdlib``, ``get_path``,
``get_config_var``... from the ``sysconfig`` of the Python that runs it, and
``python.get_sys_path(interpreter)`` by running *interpreter* and keeping
the ``sys.path`` entries that exist. :func:`snapshot` records all of that
as JSON-able data, so that the answers can be given later without running
anything: ``build-base`` runs this module *inside* the image (its Python,
its file system) and stores the result in ``/etc/ppml-image/base.json``.

This module runs in the image too, under the image's Python: standard
library only, no ppml_image imports, Python 3.8 syntax.
"""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys
import sysconfig
from typing import Any

# What Gramine's get_sys_path runs in the interpreter, to the byte: entries
# joined by NUL, empty ones (the current folder of ``-c``) left out.
SYS_PATH_CODE = "import sys; print('\\0'.join(path for path in sys.path if path), end='')"
KINDS = ("dir", "file", "other", "missing")
# Where an image keeps interpreters; every name there that is this
# interpreter (python3 -> python3.11) is recorded as one of its names.
_BIN_DIRS = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin")


def kind_of(path: str) -> str:
    """``dir``, ``file``, ``other`` or ``missing``, following symlinks as
    ``pathlib.Path.is_dir()``/``exists()`` do."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "missing"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def path_key(path: str) -> str:
    """How a path is looked up in ``kinds``: as ``pathlib.PurePosixPath`` spells it."""
    return str(pathlib.PurePosixPath(path))


def split_sys_path(output: bytes) -> list[str]:
    """The entries Gramine makes of the interpreter's output (bytes)."""
    return [os.fsdecode(entry) for entry in output.split(b"\0")]


def _plain(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def interpreter_names(executable: str) -> list[str]:
    """The names that start this interpreter: *executable*, and every
    ``python*`` in the usual bin folders that is the same file; a bare name
    too when ``PATH`` finds it there. (A venv's ``python`` is the same file
    with other answers: each name is run and recorded on its own.)"""
    real = os.path.realpath(executable)
    names = {executable}
    for folder in _BIN_DIRS:
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(folder, entry)
            if entry.startswith("python") and os.path.realpath(path) == real:
                names.add(path)
    for path in sorted(names):
        bare = os.path.basename(path)
        if _which(bare) == path:
            names.add(bare)
    return sorted(names)


def _which(name: str) -> str | None:
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_sys_path(interpreter: str) -> list[str]:
    """What Gramine's ``get_sys_path`` reads from *interpreter* (all entries)."""
    out = subprocess.run([interpreter, "-c", SYS_PATH_CODE], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, check=True, timeout=120).stdout
    return split_sys_path(out)


def snapshot(run_interpreters: bool = True) -> dict[str, Any]:
    """The answers of the running interpreter, as JSON-able data.

    With *run_interpreters*, ``sys_paths`` holds, for each name of this
    interpreter, what Gramine's ``get_sys_path`` reads when it runs it (every
    entry, existing or not), and ``kinds`` says what each entry and each
    sysconfig path is in this file system.
    """
    version = sys.implementation.version
    executable = os.path.realpath(sys.executable)
    data: dict[str, Any] = {
        "executable": executable,
        "paths": sysconfig.get_paths(),
        "default_scheme": _default_scheme(),
        "schemes": {name: sysconfig.get_paths(name, expand=False)
                    for name in sysconfig.get_scheme_names()},
        "config_vars": {key: value for key, value in sysconfig.get_config_vars().items()
                        if _plain(value)},
        "implementation": {
            "name": sys.implementation.name,
            "cache_tag": sys.implementation.cache_tag,
            "version": [version.major, version.minor, version.micro, version.releaselevel,
                        version.serial],
            "hexversion": sys.implementation.hexversion,
            "repr": repr(sys.implementation),
        },
        # As Gramine computes python.distlib: stdlib with python3 for python3.X.
        "distlib": os.path.join(sysconfig.get_path(
            "stdlib", vars={"py_version_short": sys.version_info[0]}), "dist-packages"),
    }
    if run_interpreters:
        # Keyed by the name a template gives: ``python.get_sys_path('/usr/bin/python3')``.
        data["sys_paths"] = {name: run_sys_path(name)
                             for name in interpreter_names(sys.executable)}
        places = [entry for entries in data["sys_paths"].values() for entry in entries]
        places += [*data["paths"].values(), data["distlib"], executable]
        data["kinds"] = {path_key(p): kind_of(p or ".") for p in places}
    return data


def _default_scheme() -> str:
    getter = getattr(sysconfig, "get_default_scheme", None)
    if getter is not None:
        return str(getter())
    return "posix_prefix"  # Python < 3.10: sysconfig's own default
