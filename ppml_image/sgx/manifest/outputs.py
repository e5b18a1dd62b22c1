"""Outputs that must not be files the enclave measures.

Writing a ``.manifest``, ``.manifest.sgx`` or ``.sig`` over a trusted file
(or the loader's entrypoint) would change the file after its hash was taken:
the enclave would then refuse to start, or, worse, the manifest would name
a hash of itself. Both ``manifest`` and ``sign`` refuse it, naming the
user's output path and the URI it is.
"""

from __future__ import annotations

import contextlib
import os
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
