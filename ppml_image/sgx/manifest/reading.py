"""Gramine's reading of a manifest: refuse whatever Gramine 1.9 would read
differently from Python.

We parse a manifest with ``tomllib`` and write the ``.manifest.sgx`` with
tomli-w; the enclave reads it with tomlc99 and Gramine's own lookups and
path rules. Where those two readings could differ, the manifest is refused
here, before the schema, the policy or the measurement look at it, so that
all three judge what the enclave will see:

* **C strings.** tomlc99 hands keys and strings on as C strings, so a NUL
  (``\\u0000``) ends them: ``sgx."file_check_policy\\u0000x"`` is read as
  ``sgx.file_check_policy``. No key or string may hold a control character
  (C0, DEL, C1), nor a bidirectional-text control or line separator (they
  make a value display as something it is not). tomlc99 also refuses a key
  with a newline, and tomli-w writes other control characters as ``\\u001f``
  escapes with lower-case hex digits, which tomlc99 does not accept.
* **Keys.** Gramine looks values up by dotted paths (``"sgx.debug"`` is
  split at the dot), so a key holding a ``.`` names something else to it; an
  empty key names nothing. Keys are TOML's bare-key characters
  (``[A-Za-z0-9_-]``); the names of free-form tables (``loader.env``,
  ``fs.insecure__keys``, ``sys.ioctl_structs``) may use any printable ASCII
  character but ``.``, quotes and backslashes, and an environment variable's
  name never ``=`` (Gramine builds ``NAME=VALUE``).
* **Types.** No Gramine key takes a float or a date or time: they are
  refused wherever they appear.
* **Depth.** tomlc99 refuses a ``[table.header]`` of more than 10 parts, and
  tomli-w writes nested tables as such headers.
* **URIs and paths.** Gramine normalises a path (``get_norm_path``: ``//``
  and ``.`` dropped, ``..`` applied, the trailing ``/`` dropped) before it
  compares it with trusted or allowed files, while our checks compare
  strings. Every URI and path a manifest names must already be in that
  normal form, with the scheme its key takes (``file:`` for trusted and
  allowed files: Gramine would accept ``dev:`` in ``sgx.allowed_files`` as a
  prefix of ordinary files). A trailing ``/`` is kept only where it means
  something: a trusted folder, which we expand.
* **Sizes** that only the LibOS parses (``sys.stack.size``,
  ``sys.brk.max_size``) must be what Gramine's ``parse_size_str`` reads:
  decimal digits with an optional K, M or G; ``sgx.seal_key.*_mask`` must
  be ``0x`` and exactly two hex digits per byte, as the PAL reads them.

Every refusal is one line naming the manifest, the key path (escaped) and
the rule. May import only :mod:`ppml_image.errors`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from ppml_image.errors import ManifestError

# tomlc99's limit for a [a.b.c] header (fill_tabpath: "max allowed is 10").
MAX_TABLE_PARTS = 10

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
# Names in free-form tables: printable ASCII but the characters that change
# how a name is looked up ('.') or written ('"', '\\').
_FREE_KEY = re.compile(r"[!#-\-/-\[\]-~]+\Z")
_FREE_TABLES = {("loader", "env"), ("fs", "insecure__keys"), ("sys", "ioctl_structs")}
# Characters no key or string may hold: C0 (NUL included), DEL and C1
# controls; the bidirectional-text controls (U+061C, U+200E/F, U+202A-E,
# U+2066-9) and the line and paragraph separators (U+2028/9).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_SIZE = re.compile(r"[0-9]+[KkMmGg]?\Z")
# sgx.seal_key masks as the PAL reads them (update_seal_key_mask): "0x" and
# exactly two hex digits per byte of the mask.
_SEAL_MASK_BYTES = {"flags_mask": 8, "xfrm_mask": 8, "misc_mask": 4}
_SIZE_SCALE = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

Path = tuple[str | int, ...]


# --------------------------------------------------------------------------
# Showing key paths and values in one line
# --------------------------------------------------------------------------
def key_path(path: Path) -> str:
    """``sgx."file_check_policy\\u0000x"``, ``fs.mounts[2].uri``: a TOML-like
    key path, every part that is not a bare key quoted and escaped (so a NUL
    or a control character is never printed raw)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        shown = part if _BARE_KEY.match(part) else json.dumps(part, ensure_ascii=True)
        text += f".{shown}" if text else shown
    return text or "the manifest"


def shown(value: str, limit: int = 240) -> str:
    """A string value quoted and escaped, cut at *limit* characters."""
    cut = value[:limit]
    return json.dumps(cut, ensure_ascii=True) + ("..." if len(value) > limit else "")


def _char_name(char: str) -> str:
    names = {"\x00": "NUL", "\t": "TAB", "\n": "LF", "\r": "CR", "\x7f": "DEL"}
    return f"U+{ord(char):04X}" + (f" ({names[char]})" if char in names else "")


# --------------------------------------------------------------------------
# Gramine's path normalisation (common/src/path_utils.c, get_norm_path)
# --------------------------------------------------------------------------
def gramine_norm_path(path: str) -> str:
    """*path* as Gramine's ``get_norm_path`` writes it.

    Empty components (``//``) and ``.`` are dropped; ``..`` removes the
    previous component, is dropped at the root of an absolute path and kept
    at the start of a relative one; a trailing ``/`` is dropped. ``/`` stays
    ``/``; a relative path may become empty.
    """
    absolute = path.startswith("/")
    parts: list[str] = []
    kept_dotdots = 0
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if len(parts) > kept_dotdots:
                parts.pop()
            elif not absolute:
                parts.append("..")
                kept_dotdots += 1
            continue
        parts.append(part)
    body = "/".join(parts)
    return "/" + body if absolute else body


def canonical_path(path: str, *, folder_slash: bool = False,
                   dot_ok: bool = False) -> str | None:
    """Why *path* is not in Gramine's normal form, or None if it is.

    *folder_slash*: one trailing ``/`` is allowed (it marks a folder for us).
    *dot_ok*: ``.`` alone (Gramine's own spelling of the current folder, as
    in its default ``fs.root.uri = "file:."``) is allowed.
    """
    if path == "":
        return "names no path"
    if dot_ok and path == ".":
        return None
    body = path[:-1] if folder_slash and len(path) > 1 and path.endswith("/") else path
    if body.endswith("/") and body != "/":
        return "ends with '/', which Gramine drops"
    parts = body.split("/")[1:] if body.startswith("/") else body.split("/")
    if body == "/":
        return None
    if "" in parts:
        return "has an empty component ('//'), which Gramine drops"
    if "." in parts:
        return "has a '.' component, which Gramine drops"
    if ".." in parts:
        return "has a '..' component, which Gramine applies to the component before it"
    return None


def canonical_form(uri: str, scheme: str, *, folder_slash: bool = False) -> str:
    """The canonical spelling of *uri* (with *scheme*), as Gramine reads it."""
    path = uri.partition(":")[2] if ":" in uri else uri
    norm = gramine_norm_path(path)
    if folder_slash and path.endswith("/") and norm not in ("", "/"):
        norm += "/"
    return f"{scheme}{norm}"


# --------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------
def _fail(name: str, path: Path, message: str) -> None:
    raise ManifestError(f"{name}: {key_path(path)} {message}")


def check_gramine_reading(manifest: dict[str, Any], name: str) -> None:
    """Refuse *manifest* if Gramine 1.9 would read any part of it differently.

    Run on the manifest as parsed (before defaults); one line naming the
    manifest, the key path and the rule.

    The walk is iterative (only tables and arrays are stacked), and a key
    path is built only for a container or a failure: a manifest of a million
    trusted files is three million values, so per-value work is what counts.
    A key outside the free-form tables is judged by its name alone, so each
    name is checked once.
    """
    good_keys: set[str] = set()
    stack: list[tuple[Path, Any]] = [((), manifest)]
    while stack:
        path, container = stack.pop()
        inner: list[tuple[Path, Any]] = []  # walked next, in the manifest's order
        if isinstance(container, dict):
            depth = sum(1 for p in path if isinstance(p, str))
            if depth > MAX_TABLE_PARTS:
                _fail(name, path, f"is a table nested {depth} keys deep: Gramine's TOML "
                      f"parser reads at most {MAX_TABLE_PARTS}")
            free = len(path) == 2 and path in _FREE_TABLES
            for key, value in container.items():
                if free or key not in good_keys:
                    _check_key((*path, key), name)
                    if not free:
                        good_keys.add(key)
                _check_value(path, key, value, name, inner)
        else:
            for index, value in enumerate(container):
                _check_value(path, index, value, name, inner)
        stack.extend(reversed(inner))
    check_uris(manifest, name)
    _check_sizes(manifest, name)
    _check_seal_masks(manifest, name)


def _check_value(parent: Path, step: str | int, value: Any, name: str,
                 inner: list[tuple[Path, Any]]) -> None:
    """Judge one value; a table or an array is added to *inner*, to be walked."""
    if isinstance(value, str):
        if _FORBIDDEN.search(value) is not None:
            _check_string((*parent, step), value, name)
    elif isinstance(value, (dict, list)):
        inner.append(((*parent, step), value))
    elif isinstance(value, float):
        _fail(name, (*parent, step), f"= {value!r} is a float: no Gramine key takes one "
              "(write an integer or a string)")
    elif isinstance(value, (dt.date, dt.time)):  # datetime is a date
        _fail(name, (*parent, step), f"= {value.isoformat()} is a date or time: no Gramine "
              "key takes one (write a string)")
    elif not isinstance(value, (bool, int)):  # pragma: no cover - tomllib types
        _fail(name, (*parent, step),
              f"has a value of an unknown type ({type(value).__name__})")


def _check_key(path: Path, name: str) -> None:
    key = path[-1]
    assert isinstance(key, str)
    bad = _FORBIDDEN.search(key)
    if bad:
        why = ("Gramine's parser reads keys as C strings, so it would end the key there "
               "and read " + key_path((*path[:-1], key[:bad.start()]))
               if bad.group() == "\x00" else "keys must be printable")
        _fail(name, path, f"has the control character {_char_name(bad.group())} in its "
              f"name: {why}")
    if key == "":
        _fail(name, path, "is an empty key: Gramine cannot look it up")
    if "." in key:
        _fail(name, path, "has a '.' inside a quoted key: Gramine splits key paths at dots, "
              f"so it would read {key!r} as nested keys; write it without quotes")
    if len(path) == 3 and path[:2] in _FREE_TABLES:
        if not _FREE_KEY.match(key):
            _fail(name, path, "has a name with characters outside printable ASCII (or a "
                  "quote or backslash)")
        if path[:2] == ("loader", "env") and "=" in key:
            _fail(name, path, "has '=' in an environment variable's name: Gramine passes "
                  "NAME=VALUE, so the program would see a different variable")
    elif not _BARE_KEY.match(key):
        _fail(name, path, "is not a plain key: Gramine's keys use only letters, digits, "
              "'_' and '-'")


def _check_string(path: Path, value: str, name: str) -> None:
    bad = _FORBIDDEN.search(value)
    if bad is None:
        return
    if bad.group() == "\x00":
        _fail(name, path, f"= {shown(value)} has a NUL character: Gramine's parser reads "
              f"strings as C strings, so it would read {shown(value[:bad.start()])}")
    _fail(name, path, f"= {shown(value)} has the control character {_char_name(bad.group())}"
          ": manifest strings must be printable (Gramine's parser does not read every "
          "escape our writer would use, and such text displays as something it is not)")


# --------------------------------------------------------------------------
# URIs and paths
# --------------------------------------------------------------------------
def _uri_rule(name: str, path: Path, uri: Any, schemes: tuple[str, ...], *,
              folder_slash: bool = False, dot_ok: bool = False,
              file_only: bool = False) -> None:
    """*uri* must start with one of *schemes* and its path be canonical."""
    if not isinstance(uri, str):
        return  # the schema names the wrong type
    scheme = next((s for s in schemes if uri.startswith(s)), None)
    if scheme is None:
        allowed = " or ".join(f"'{s}'" for s in schemes)
        only = " or ".join(schemes)
        _fail(name, path, f"= {shown(uri)} must start with {allowed} (Gramine takes only "
              f"{only} URIs here)")
        return
    problem = canonical_path(uri[len(scheme):], folder_slash=folder_slash, dot_ok=dot_ok)
    if problem and problem.startswith("ends with '/'") and file_only:
        problem = "ends with '/' (a folder), but it must be a file"
    if problem:
        canon = canonical_form(uri, scheme, folder_slash=folder_slash)
        hint = (f"; Gramine reads it as {shown(canon)}: write that"
                if canon != scheme else "")
        _fail(name, path, f"= {shown(uri)} is not a canonical URI: its path {problem}{hint}")


def _path_rule(name: str, path: Path, value: Any, *, absolute: bool = False) -> None:
    """A path inside the enclave (not a URI) must be in Gramine's normal form."""
    if not isinstance(value, str):
        return
    if absolute and not value.startswith("/"):
        _fail(name, path, f"= {shown(value)} must be an absolute path (start with '/')")
    problem = canonical_path(value)
    if problem:
        canon = gramine_norm_path(value)
        hint = f"; Gramine reads it as {shown(canon)}: write that" if canon else ""
        _fail(name, path, f"= {shown(value)} is not a canonical path: it {problem}{hint}")


def _get(table: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(table, dict):
            return None
        table = table.get(key)
    return table


def _items(value: Any) -> list[tuple[int, Any]]:
    return list(enumerate(value)) if isinstance(value, list) else []


# Mount types and the URI schemes Gramine's file systems take for them.
_MOUNT_SCHEMES = {"chroot": ("file:", "dev:"), "encrypted": ("file:",),
                  "untrusted_shm": ("dev:",), "tmpfs": ("file:", "dev:")}


def check_uris(manifest: dict[str, Any], name: str) -> None:
    """Every URI and path the manifest names, in Gramine's canonical form."""
    entry = _get(manifest, "loader", "entrypoint")
    if isinstance(entry, dict):
        _uri_rule(name, ("loader", "entrypoint", "uri"), entry.get("uri"), ("file:",),
                  file_only=True)
    for key in ("argv_src_file", "env_src_file"):
        _uri_rule(name, ("loader", key), _get(manifest, "loader", key), ("file:",),
                  file_only=True)
    for index, item in _items(_get(manifest, "sgx", "trusted_files")):
        if isinstance(item, dict):
            _uri_rule(name, ("sgx", "trusted_files", index, "uri"), item.get("uri"),
                      ("file:",), folder_slash=True)
        else:
            _uri_rule(name, ("sgx", "trusted_files", index), item, ("file:",),
                      folder_slash=True)
    for index, item in _items(_get(manifest, "sgx", "allowed_files")):
        # Gramine also takes dev: here, as a plain path prefix of every file
        # below it: only file: says what is meant.
        _uri_rule(name, ("sgx", "allowed_files", index), item, ("file:",), folder_slash=True)
    root = _get(manifest, "fs", "root")
    if isinstance(root, dict) and "uri" in root:
        _uri_rule(name, ("fs", "root", "uri"), root["uri"], ("file:",), dot_ok=True)
    for index, mount in _items(_get(manifest, "fs", "mounts")):
        if not isinstance(mount, dict):
            continue
        kind = mount.get("type", "chroot")
        schemes = _MOUNT_SCHEMES.get(kind) if isinstance(kind, str) else None
        if schemes is not None and "uri" in mount:
            _uri_rule(name, ("fs", "mounts", index, "uri"), mount["uri"], schemes,
                      dot_ok=True)
        where = ("fs", "mounts", index, "path")
        _path_rule(name, where, mount.get("path"), absolute=True)
        if mount.get("path") == "/":
            _fail(name, where, "= \"/\": Gramine refuses a mount over the root (set fs.root)")
    _path_rule(name, ("fs", "start_dir"), _get(manifest, "fs", "start_dir"), absolute=True)
    _path_rule(name, ("libos", "entrypoint"), _get(manifest, "libos", "entrypoint"))


def _check_sizes(manifest: dict[str, Any], name: str) -> None:
    """Sizes only the LibOS reads, with ``parse_size_str`` (decimal, K/M/G)."""
    for keys in (("sys", "stack", "size"), ("sys", "brk", "max_size")):
        value = _get(manifest, *keys)
        if not isinstance(value, str):
            continue
        if not _SIZE.match(value):
            _fail(name, keys, f"= {shown(value)} is not a size Gramine reads: decimal digits "
                  "with an optional K, M or G (e.g. \"8M\")")
        scale = _SIZE_SCALE.get(value[-1].upper(), 1)
        number = value[:-1] if scale > 1 else value
        if len(number) > 20 or int(number) * scale >= 1 << 64:
            _fail(name, keys, f"= {shown(value)} does not fit in 64 bits")


def _check_seal_masks(manifest: dict[str, Any], name: str) -> None:
    """``sgx.seal_key.*_mask``: Gramine's PAL reads exactly ``0x`` and two hex
    digits per byte; anything else stops the enclave at start."""
    for key, size in _SEAL_MASK_BYTES.items():
        value = _get(manifest, "sgx", "seal_key", key)
        if value is None or not isinstance(value, str):
            continue
        if not re.fullmatch(rf"0[xX][0-9a-fA-F]{{{2 * size}}}", value):
            _fail(name, ("sgx", "seal_key", key), f"= {shown(value)} is not a mask Gramine "
                  f"reads: '0x' and exactly {2 * size} hex digits (e.g. "
                  f"\"0x{'f' * 2 * size}\")")
