"""Where the shipped templates are: inside the wheel, or in the checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """``dockerfiles`` or ``manifests``: the wheel's copy, else the checkout's."""
    for candidate in (_PACKAGE / "_data" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"ppml-image installation is incomplete: no {kind}/ folder")
