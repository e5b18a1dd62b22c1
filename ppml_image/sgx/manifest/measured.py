"""What the enclave measures, and two rules about it.

* An output is never a measured file: writing a ``.manifest``,
  ``.manifest.sgx`` or ``.sig`` over a trusted file (or the loader's
  entrypoint) would change the file after its hash was taken, so the enclave
  would refuse to start, or the manifest would name a hash of itself. Both
  ``manifest`` and ``sign`` refuse it, naming the user's output and the URI.
* A measured file is never the kernel's: under ``/proc`` or ``/sys`` a
  "file" is this machine's state (an environment, a key in memory, a device
  register), not part of an app. Gramine serves its own ``/proc`` and
  ``/sys`` inside the enclave, so such a trusted file is never what the
  enclave loads, and hashing the host's would read it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppml_image.errors import ManifestError, UsageError
from ppml_image.sgx.measure.tree import Tree


def measured_uris(manifest: dict[str, Any]) -> list[str]:
    """The ``file:`` URIs a finished manifest measures: trusted files and the loader."""
    sgx = manifest.get("sgx", {})
    entries = sgx.get("trusted_files", []) if isinstance(sgx, dict) else []
    uris = [entry["uri"] if isinstance(entry, dict) else entry for entry in entries
            if isinstance(entry, (str, dict))]
    loader = manifest.get("loader", {})
    entrypoint = loader.get("entrypoint", {}) if isinstance(loader, dict) else {}
    if isinstance(entrypoint, dict):
        uris.append(entrypoint.get("uri", ""))
    return [uri for uri in uris if isinstance(uri, str) and uri.startswith("file:")]


def refuse_measured_outputs(manifest: dict[str, Any], tree: Tree,
                            outputs: Sequence[Path]) -> None:
    """Refuse an existing output that is (by inode: a link counts) a measured file."""
    existing: dict[tuple[int, int], Path] = {}
    for path in outputs:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            existing[(info.st_dev, info.st_ino)] = Path(path)
    if not existing:
        return  # an output that does not exist yet cannot be a file that was hashed
    for uri in measured_uris(manifest):
        host = _host_path(tree, uri[len("file:"):])
        if host is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            info = os.stat(host)
            if (info.st_dev, info.st_ino) in existing:
                raise UsageError(f"{existing[(info.st_dev, info.st_ino)]}: is {uri}, which "
                                 "the enclave measures; write the output elsewhere")


def _host_path(tree: Tree, path: str) -> str | None:
    """Where *path* (resolved inside the tree) is on this machine, or None."""
    try:
        shown = tree.display(tree.resolve(path))
    except ManifestError:
        return None
    return shown if os.path.isabs(shown) or not tree.chrooted else None


KERNEL_ROOTS = ("/proc", "/sys")


def kernel_file_root(tree: Tree, path: str, real: str) -> str | None:
    """``/proc`` or ``/sys`` if *path* (as the manifest names it), *real* (as the
    tree resolves it) or, on the host, the file a link leads to is under one."""
    candidates = {path: None, real: None}  # in order, each once (often path == real)
    if not tree.chrooted:
        candidates[os.path.realpath(real)] = None
    for candidate in candidates:
        norm = posixpath.normpath(candidate)
        for root in KERNEL_ROOTS:
            if norm == root or norm.startswith(root + "/"):
                return root
    return None


def refuse_kernel_file(tree: Tree, path: str, real: str, uri: str, name: str,
                       what: str) -> None:
    """Refuse a measured *uri* under ``/proc`` or ``/sys`` (see the module's docstring)."""
    root = kernel_file_root(tree, path, real)
    if root is not None:
        raise ManifestError(f"{name}: {what} {uri!r} is under {root} ({tree.display(real)}), "
                            "the kernel's view of this machine, not a file of the app; "
                            "measure the app's own files")
