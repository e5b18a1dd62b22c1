"""Strict JSON for everything read from users, images, engines and registries.

Python's ``json`` keeps the last of two equal keys in one object, and reads
``NaN`` and ``Infinity``; other readers (Go's, a policy engine's, a human's)
may keep the first or refuse. A file that two readers read differently is
refused here, naming the file and the key: one document, one meaning.

May import: only the standard library and :mod:`ppml_image.errors`.
"""

from __future__ import annotations

import json
from typing import Any

from ppml_image.errors import PpmlError

_SHOWN = 60  # characters of a hostile key shown in a message


class DuplicateKeyError(ValueError):
    """An object names *key* twice (a ``ValueError``, as every malformed JSON is)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key[:_SHOWN]!r} appears twice in one object")
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(key)
        seen[key] = value
    return seen


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)


def loads(data: str | bytes) -> Any:
    """``json.loads``, refusing duplicate keys and NaN/Infinity (``ValueError``).

    Bytes must be UTF-8 (``UnicodeDecodeError``, also a ``ValueError``).
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return _DECODER.decode(text)


def decoder() -> json.JSONDecoder:
    """The strict decoder itself, for stream readers (``raw_decode``)."""
    return _DECODER


def load_document(data: str | bytes, name: str, error: type[PpmlError],
                  what: str = "JSON") -> Any:
    """Decode *data*, read from *name*; any fault is one *error* line naming *name*.

    A duplicated key is named; other faults say where the JSON breaks.
    """
    try:
        return loads(data)
    except DuplicateKeyError as exc:
        raise error(f"{name}: {exc}: refused (readers disagree on which one counts)") from None
    except UnicodeDecodeError:
        raise error(f"{name}: not valid {what} (not UTF-8 text)") from None
    except RecursionError:
        raise error(f"{name}: not valid {what} (nested too deeply)") from None
    except ValueError as exc:
        raise error(f"{name}: not valid {what} ({str(exc)[:120]})") from None
