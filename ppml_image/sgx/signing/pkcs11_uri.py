"""PKCS#11 URIs (RFC 7512): which module, token and key to use.

``pkcs11:token=ppml;object=enclave-key?module-path=/usr/lib/softhsm/libsofthsm2.so``

The *path* (before ``?``, attributes separated by ``;``) says which token and
which object; the *query* (after ``?``, separated by ``&``) says how to reach
them (module, PIN source). Values are percent-encoded UTF-8, except ``id``,
which is raw bytes (CKA_ID).

Deliberately stricter than "be liberal in what you accept":

* ``pin-value`` is refused: a PIN in a URI ends up on a command line, where
  ``ps`` and shell history show it (we refuse passphrases there too). Its
  value is never examined, kept, or echoed in an error.
* An attribute we do not understand (a typo such as ``objet=``, or a vendor's
  ``x-`` attribute) is refused rather than ignored: ignoring a constraint could
  select a different key than the one the user named.
* An attribute given twice is refused (which one would win is a guess).

Nothing here loads a module or talks to a token (see :mod:`ppml_image.sgx.signing.hsm`).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from ppml_image.errors import UsageError

SCHEME = "pkcs11:"
PATH_ATTRIBUTES = (
    "token", "manufacturer", "serial", "model", "library-manufacturer", "library-description",
    "library-version", "object", "type", "id", "slot-description", "slot-manufacturer",
    "slot-id",
)
QUERY_ATTRIBUTES = ("pin-source", "module-name", "module-path")
OBJECT_TYPES = ("public", "private", "cert", "secret-key", "data")
MAX_URI_LENGTH = 4096  # far beyond any real URI; keeps hostile input cheap

# RFC 7512 section 2.3, on top of RFC 3986's unreserved characters.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_RES_AVAIL = frozenset(":[]@!$'()*+,=")
_PATH_CHARS = _UNRESERVED | _RES_AVAIL | {"&"}
_QUERY_CHARS = _UNRESERVED | _RES_AVAIL | {"/", "?", "|"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_HEX = frozenset(string.hexdigits)
_DIGITS = re.compile(r"[0-9]+\Z")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)?\Z")


def is_pkcs11_uri(text: str) -> bool:
    """Does *text* name a PKCS#11 object rather than a file? (The scheme is case-insensitive.)"""
    return text[: len(SCHEME)].lower() == SCHEME


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed PKCS#11 URI. ``path`` and ``query`` hold decoded values;
    ``id`` is kept apart because it is bytes, not text."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    id: bytes | None = None

    @property
    def token(self) -> str | None:
        return self.path.get("token")

    @property
    def object(self) -> str | None:
        return self.path.get("object")

    @property
    def type(self) -> str | None:
        return self.path.get("type")

    @property
    def slot_id(self) -> int | None:
        value = self.path.get("slot-id")
        return int(value) if value is not None else None

    @property
    def library_version(self) -> tuple[int, int] | None:
        value = self.path.get("library-version")
        if value is None:
            return None
        major, _, minor = value.partition(".")
        return int(major), int(minor or 0)

    def where(self) -> str:
        """How errors name the key: ``PKCS#11 token 'ppml' object 'enclave-key'``."""
        token = repr(self.token) if self.token is not None else "(any)"
        if self.object is not None:
            obj = repr(self.object)
        elif self.id is not None:
            obj = f"id={self.id.hex()}"
        else:
            obj = "(none)"
        return f"PKCS#11 token {token} object {obj}"

    def format(self) -> str:
        """The URI text: every character outside RFC 7512's sets percent-encoded."""
        parts = [f"{name}={_encode(value.encode(), _PATH_CHARS)}"
                 for name, value in self.path.items()]
        if self.id is not None:
            parts.append(f"id={''.join(f'%{byte:02X}' for byte in self.id)}")
        text = SCHEME + ";".join(parts)
        if self.query:
            text += "?" + "&".join(f"{name}={_encode(value.encode(), _QUERY_CHARS)}"
                                   for name, value in self.query.items())
        return text


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse a PKCS#11 URI; raise :class:`UsageError` naming what is wrong.

    Errors quote attribute names and positions, never a whole value: a URI
    may carry things (a PIN file's path, a module's path) a log need not show.
    """
    if not is_pkcs11_uri(text):
        raise UsageError("PKCS#11 URI: must start with 'pkcs11:'")
    if len(text) > MAX_URI_LENGTH:
        raise UsageError(f"PKCS#11 URI: longer than {MAX_URI_LENGTH} characters")
    body = text[len(SCHEME):]
    path_text, has_query, query_text = body.partition("?")
    path = _attributes(path_text, "path", len(SCHEME))
    query = _attributes(query_text, "query",
                        len(SCHEME) + len(path_text) + 1) if has_query else {}
    raw_id = path.pop("id", None)
    texts = {name: _utf8(name, raw) for name, raw in path.items()}
    _check_values(texts)
    return Pkcs11Uri(path=texts, query={name: _utf8(name, raw) for name, raw in query.items()},
                     id=raw_id)


def _attributes(text: str, part: str, offset: int) -> dict[str, bytes]:
    """``name=value`` pairs of one URI component, values percent-decoded to bytes."""
    separator, allowed, known, other = (
        (";", _PATH_CHARS, PATH_ATTRIBUTES, QUERY_ATTRIBUTES) if part == "path"
        else ("&", _QUERY_CHARS, QUERY_ATTRIBUTES, PATH_ATTRIBUTES))
    found: dict[str, bytes] = {}
    if text == "":
        return found
    position = offset
    for item in text.split(separator):
        name, has_value, value = item.partition("=")
        if not has_value or not _NAME.match(name):
            raise UsageError(f"PKCS#11 URI: expected name=value in the {part} at position "
                             f"{position} (attributes are separated by '{separator}')")
        if name == "pin-value":
            # Checked before its value is looked at: the value is never decoded or echoed.
            raise UsageError(
                "PKCS#11 URI: pin-value puts the PIN on the command line, where ps and shell "
                "history show it; use pin-source=file:PATH, set PPML_IMAGE_PKCS11_PIN, or "
                "answer the prompt on a terminal")
        if name not in known:
            raise UsageError(_unknown(name, part, other))
        if name in found:
            raise UsageError(f"PKCS#11 URI: attribute {name!r} appears more than once")
        found[name] = _decode(value, allowed, name, position + len(name) + 1)
        position += len(item) + 1
    return found


def _decode(value: str, allowed: frozenset[str], name: str, position: int) -> bytes:
    out = bytearray()
    index = 0
    while index < len(value):
        char = value[index]
        if char == "%":
            pair = value[index + 1 : index + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise UsageError(f"PKCS#11 URI: attribute {name!r}: '%' at position "
                                 f"{position + index} is not followed by two hex digits")
            out.append(int(pair, 16))
            index += 3
            continue
        if char not in allowed:
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            raise UsageError(
                f"PKCS#11 URI: attribute {name!r}: character {shown} at position "
                f"{position + index} must be percent-encoded (%{ord(char):02X} for ASCII)")
        out += char.encode()
        index += 1
    return bytes(out)


def _encode(data: bytes, allowed: frozenset[str]) -> str:
    return "".join(chr(byte) if chr(byte) in allowed else f"%{byte:02X}" for byte in data)


def _utf8(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"PKCS#11 URI: attribute {name!r} is not valid UTF-8 once "
                         "percent-decoded") from None


def _check_values(path: dict[str, str]) -> None:
    kind = path.get("type")
    if kind is not None and kind not in OBJECT_TYPES:
        raise UsageError(f"PKCS#11 URI: type must be one of {', '.join(OBJECT_TYPES)}")
    if "slot-id" in path and not _DIGITS.match(path["slot-id"]):
        raise UsageError("PKCS#11 URI: slot-id must be a decimal number")
    if "library-version" in path and not _VERSION.match(path["library-version"]):
        raise UsageError("PKCS#11 URI: library-version must be MAJOR or MAJOR.MINOR")


def _unknown(name: str, part: str, other: tuple[str, ...]) -> str:
    if name in other:
        where = "query (after '?')" if part == "path" else "path (before '?')"
        return f"PKCS#11 URI: {name!r} belongs in the {where}"
    if name.startswith("x-"):
        return (f"PKCS#11 URI: vendor attribute {name!r} is not supported (refused rather "
                "than ignored, so that it cannot silently select another key)")
    return f"PKCS#11 URI: unknown {part} attribute {name!r}"
