"""Java properties files that ``java.util.Properties.load`` reads back exactly.

``spark-submit --properties-file`` loads the file with ``Properties.load``
(through a UTF-8 reader; other tools read ISO-8859-1). A password with a
backslash, a leading space, a ``#`` or a trailing backslash would otherwise
change what Java reads: ``\\t`` becomes a tab, leading blanks are dropped, a
trailing ``\\`` joins the next line. So every key and value is escaped as
``Properties.store`` does, and every character outside printable ASCII is
written as ``\\uXXXX`` (UTF-16 code units), which makes the file pure ASCII
and the same under either encoding.
"""

from __future__ import annotations

from collections.abc import Iterable

_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}
_SPECIAL = "=:#!"


def _escape(text: str, *, is_key: bool) -> str:
    out: list[str] = []
    for index, char in enumerate(text):
        if char in _NAMED:
            out.append(_NAMED[char])
        elif char == " ":
            # load() skips blanks before a value and ends a key at a blank.
            out.append("\\ " if is_key or index == 0 else " ")
        elif char in _SPECIAL:
            out.append("\\" + char)
        elif " " < char < "\x7f":
            out.append(char)
        else:  # control, non-ASCII, lone surrogates: UTF-16 code units
            units = char.encode("utf-16-be", "surrogatepass")
            out.extend(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04X}"
                       for i in range(0, len(units), 2))
    return "".join(out)


def _comment(text: str) -> str:
    """A comment stays on its line and in ASCII; nothing else in it matters to load()."""
    return "".join(c if " " <= c < "\x7f" else _escape(c, is_key=False) for c in text)


def escape_key(key: str) -> str:
    return _escape(key, is_key=True)


def escape_value(value: str) -> str:
    return _escape(value, is_key=False)


def format_properties(pairs: Iterable[tuple[str, str]], comments: Iterable[str] = ()) -> bytes:
    """A properties file: ``#`` comment lines, then one ``key value`` line per pair."""
    lines = [f"# {_comment(line)}" for line in comments]
    if lines:
        lines.append("")
    lines += [f"{escape_key(key)} {escape_value(value)}" for key, value in pairs]
    return ("\n".join(lines) + "\n").encode("ascii")
