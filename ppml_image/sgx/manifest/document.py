"""Gramine manifests: rendering templates, defaults, trusted files, output.

This mirrors Gramine 1.9's ``gramine-manifest`` and the manifest handling of
``gramine-sgx-sign``. The written manifest is measured into MRENCLAVE, so key
order and layout matter to the byte: defaults are inserted in the order
Gramine inserts them and the TOML is written by tomli-w, as Gramine does.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import tomli_w

from ppml_image._fs import check_output_files, read_capped, write_atomic
from ppml_image.errors import ManifestError, UsageError
from ppml_image.sgx import gramine
from ppml_image.sgx.manifest.measured import refuse_kernel_file, refuse_measured_outputs
from ppml_image.sgx.manifest.reading import check_gramine_reading, key_path
from ppml_image.sgx.manifest.schema import check_schema, validate_manifest
from ppml_image.sgx.measure.tree import DIR, FILE, OTHER, NotRegularFile, Tree, tree_for

if TYPE_CHECKING:
    from ppml_image.sgx.manifest.python_helpers import PythonInfo
    from ppml_image.sgx.manifest.templating import ManifestSandbox

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PKGLIBDIR = gramine.PKGLIBDIR
DEFAULT_ENCLAVE_SIZE_NO_EDMM = "256M"
DEFAULT_ENCLAVE_SIZE_WITH_EDMM = "1024G"
DEFAULT_MAX_THREADS = 4

Manifest = dict[str, Any]
_SURROGATE = re.compile("[\ud800-\udfff]")


# --------------------------------------------------------------------------
# Template rendering
# --------------------------------------------------------------------------
class _Runtimedir:
    """``gramine.runtimedir``: callable as ``runtimedir()`` or ``runtimedir(libc='musl')``.

    Unlike Gramine's own tool we do not resolve the path on the host: the
    target file system (a chroot or an image) is not the host's.
    """

    def __init__(self, pkglibdir: str) -> None:
        self._pkglibdir = PurePosixPath(pkglibdir)

    def __call__(self, libc: str = "glibc") -> PurePosixPath:
        return self._pkglibdir / "runtime" / libc

    def __str__(self) -> str:
        return str(self())

    def __fspath__(self) -> str:
        return str(self())

    def __truediv__(self, other: str) -> PurePosixPath:
        return self() / other


def __getattr__(name: str) -> Any:
    """``document.PythonInfo`` (the template's ``python`` helper), loaded on first use."""
    if name == "PythonInfo":
        from ppml_image.sgx.manifest.python_helpers import PythonInfo

        return PythonInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def template_env() -> dict[str, str]:
    """``env`` in templates: our environment minus every PPML_IMAGE_* variable
    (the key passphrase must never reach a template, or the manifest)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PPML_IMAGE_")}


def make_environment(pkglibdir: str = DEFAULT_PKGLIBDIR,
                     python: PythonInfo | None = None) -> ManifestSandbox:
    """The Jinja2 environment of ``gramine-manifest``: strict, with Gramine's
    globals, sandboxed and bounded (see :mod:`ppml_image.sgx.manifest.templating`)."""
    # Imported here, not at the top: sign, verify and sign-image read finished
    # manifests, and jinja2 with the sandbox and the python helpers is 30 ms
    # of their start-up.
    from ppml_image.sgx.manifest.python_helpers import PythonInfo
    from ppml_image.sgx.manifest.templating import ManifestSandbox

    env = ManifestSandbox()
    env.globals["gramine"] = {
        "libos": PurePosixPath(pkglibdir) / "libsysdb.so",
        "pkglibdir": PurePosixPath(pkglibdir),
        "runtimedir": _Runtimedir(pkglibdir),
    }
    env.globals["python"] = (python or PythonInfo.from_host()).globals()
    env.globals["env"] = template_env()
    return env


def parse_defines(values: list[str]) -> dict[str, Any]:
    """``-D key=value`` gives the string value; a bare ``-D key`` gives True."""
    defines: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not key:
            raise UsageError(f"-D {_shown(value)}: a define needs a name")
        if _SURROGATE.search(value):
            raise UsageError(f"-D {_shown(value)}: not valid UTF-8 text")
        defines[key] = text if sep else True
    return defines


def _shown(value: str) -> str:
    return ascii(value[:80] + ("..." if len(value) > 80 else ""))


def render_template(text: str, defines: Mapping[str, Any] | None = None, *,
                    pkglibdir: str = DEFAULT_PKGLIBDIR, python: PythonInfo | None = None,
                    name: str = "<template>") -> str:
    """Render a manifest template in the sandbox; errors are one line naming
    the file and, where known, the line."""
    import jinja2

    from ppml_image.sgx.manifest.templating import SecurityError, TemplateLimitError, describe

    env = make_environment(pkglibdir, python)
    try:
        rendered = env.render(text, dict(defines or {}), name)
    except jinja2.TemplateSyntaxError as exc:
        raise ManifestError(f"{name}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise ManifestError(f"{_at(exc, name)}: undefined template variable: "
                            f"{describe(exc)}") from None
    except SecurityError as exc:
        raise ManifestError(f"{_at(exc, name)}: not allowed in a template: "
                            f"{describe(exc)}") from None
    except TemplateLimitError as exc:
        raise ManifestError(f"{_at(exc, name)}: template refused: {describe(exc)}") from None
    except Exception as exc:
        # Everything raised while rendering comes from the template (a
        # division by zero, a missing key, endless recursion...): the user's
        # input, so one line, never an internal error.
        raise ManifestError(f"{_at(exc, name)}: template error: {describe(exc)}") from None
    if _SURROGATE.search(rendered):
        raise ManifestError(f"{name}: the rendered manifest is not valid Unicode text "
                            "(a value with undecodable bytes?)")
    return rendered


def _at(exc: BaseException, name: str) -> str:
    from ppml_image.sgx.manifest.templating import error_line

    line = error_line(exc, name)
    return f"{name}:{line}" if line else name

# --------------------------------------------------------------------------
# Parsing and defaults
# --------------------------------------------------------------------------
MAX_DEPTH = 64  # tables and arrays inside each other; Gramine's manifests use about 5
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# MAX_DEPTH key parts joined by dots: tomllib's time and memory grow with the
# square of a key's parts (200k parts exhaust memory), so such a key is
# refused before tomllib sees it. The scan is linear: _KEY_RUN finds maximal
# runs of dotted key parts (possessive, never restarting inside a run, nor
# right after a quote or a dot), and only a run long enough to have MAX_DEPTH
# dots is checked, anchored at its start. (A naive search took minutes on a long
# base64 value.) A word of 65 dotted parts inside a string value, after a
# space, also counts: no real manifest has one.
_KEY_PART = r"""(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+')"""
_DOT = r"[ \t]*+\.[ \t]*+"
_KEY_RUN = re.compile(rf"(?<![A-Za-z0-9_.\"'-]){_KEY_PART}(?:{_DOT}{_KEY_PART})++")
_DOTTED_RUN = re.compile(rf"(?:{_KEY_PART}{_DOT}){{{MAX_DEPTH}}}")


# A run never crosses a newline (no part of it matches one), so a run long
# enough to check needs a line that long: most manifests, even of a million
# entries, have none, and one C-level scan spares a Python step per key.
# Anchored at newlines (a literal the engine skips to), the scan is linear.
_LONG_LINE = re.compile(rf"\n[^\n]{{{2 * MAX_DEPTH + 1}}}")


def _has_long_line(text: str) -> bool:
    first = text.find("\n")
    return ((len(text) if first < 0 else first) > 2 * MAX_DEPTH
            or _LONG_LINE.search(text) is not None)


def _has_deep_dotted_key(text: str) -> bool:
    if not _has_long_line(text):
        return False
    return any(run.end() - run.start() > 2 * MAX_DEPTH
               and _DOTTED_RUN.match(text, run.start()) is not None
               for run in _KEY_RUN.finditer(text))


def parse_manifest(text: str, name: str = "<manifest>", *,
                   pkglibdir: str = DEFAULT_PKGLIBDIR) -> Manifest:
    """Parse TOML as Gramine reads it (anything Gramine would read differently
    is refused: :mod:`ppml_image.sgx.manifest.reading`), fill in Gramine's
    defaults and check what signing depends on."""
    manifest = loads_toml(text, name)
    apply_defaults(manifest, pkglibdir=pkglibdir, name=name)
    check_gramine_reading(manifest, name)
    validate_manifest(manifest, name)
    return manifest


def read_manifest(text: str, name: str = "<manifest>", *,
                  pkglibdir: str = DEFAULT_PKGLIBDIR) -> Manifest:
    """The one reading that signing uses (``sign``, ``--export-signing-data``,
    ``build-custom``, ``sign-image``): :func:`parse_manifest` and Gramine's
    full schema. Only ``manifest --no-check`` skips the schema."""
    manifest = parse_manifest(text, name, pkglibdir=pkglibdir)
    check_schema(manifest, name)
    return manifest


def loads_toml(text: str, name: str) -> Manifest:
    """TOML as Gramine reads it: at most MAX_DEPTH levels deep, integers of
    64 bits (the TOML specification's range; Gramine's parser stops there)."""
    if _has_deep_dotted_key(text):
        raise ManifestError(f"{name}: a dotted key with more than {MAX_DEPTH} parts "
                            "(tables nested too deeply)")
    try:
        manifest: Manifest = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{name}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{name}: invalid TOML: arrays or inline tables nested more "
                            f"than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ManifestError(f"{name}: invalid TOML: {' '.join(str(exc).split()[:12])}") \
            from None
    check_structure(manifest, name)
    return manifest


def check_structure(manifest: Manifest, name: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and integers outside 64 bits.

    Iterative on purpose: every later step (defaults, schema, policy,
    writing) walks the manifest recursively, so depth is refused here first.
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), manifest)]
    while stack:
        path, container = stack.pop()
        children = container.items() if isinstance(container, dict) else enumerate(container)
        inner = []
        for step, value in children:
            if len(path) >= MAX_DEPTH:
                raise ManifestError(f"{name}: tables or arrays nested more than {MAX_DEPTH} "
                                    f"levels deep (at {key_path((*path, step))[:80]}...)")
            if isinstance(value, (dict, list)):
                inner.append(((*path, step), value))
            elif isinstance(value, int) and not isinstance(value, bool) \
                    and not INT64_MIN <= value <= INT64_MAX:
                raise ManifestError(f"{name}: {key_path((*path, step))} = {value} does not fit "
                                    "in 64 bits (TOML integers are 64-bit)")
        stack.extend(reversed(inner))


def apply_defaults(manifest: Manifest, *, pkglibdir: str = DEFAULT_PKGLIBDIR,
                   name: str = "<manifest>") -> None:
    """Insert Gramine's defaults, in Gramine's order (it is visible in the output)."""
    sgx = _table(manifest, "sgx", name)
    sgx.setdefault("trusted_files", [])
    sgx.setdefault("max_threads", DEFAULT_MAX_THREADS)
    sgx.setdefault("isvprodid", 0)
    sgx.setdefault("isvsvn", 0)
    sgx.setdefault("remote_attestation", "none")
    sgx.setdefault("debug", False)
    sgx.setdefault("enable_stats", False)
    sgx.setdefault("edmm_enable", False)
    sgx.setdefault("enclave_size", DEFAULT_ENCLAVE_SIZE_WITH_EDMM if sgx["edmm_enable"] is True
                   else DEFAULT_ENCLAVE_SIZE_NO_EDMM)
    sgx.setdefault("use_exinfo", False)
    features = _table(sgx, "cpu_features", name, "sgx.")
    features.setdefault("avx", "unspecified")
    features.setdefault("avx512", "unspecified")
    features.setdefault("amx", "unspecified")
    features.setdefault("mpx", "disabled")
    features.setdefault("pkru", "disabled")

    loader = _table(manifest, "loader", name)
    entrypoint = loader.setdefault("entrypoint", {})
    if isinstance(entrypoint, dict):
        entrypoint.setdefault("uri", f"file:{pkglibdir}/libsysdb.so")

    if not isinstance(sgx["trusted_files"], list):
        raise ManifestError(f"{name}: sgx.trusted_files must be an array")
    sgx["trusted_files"] = [_normalise_trusted_file(tf, name) for tf in sgx["trusted_files"]]


def _table(parent: dict[str, Any], key: str, name: str, prefix: str = "") -> dict[str, Any]:
    value = parent.setdefault(key, {})
    if not isinstance(value, dict):
        raise ManifestError(f"{name}: {prefix}{key} must be a table")
    return value


def _normalise_trusted_file(entry: Any, name: str) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"uri": entry}
    if isinstance(entry, dict) and "uri" in entry:
        extra = set(entry) - {"uri", "sha256"}
        if extra:
            unknown = ", ".join(sorted(extra))
            raise ManifestError(
                f"{name}: trusted file {entry['uri']!r} has unknown keys: {unknown}")
        return entry
    raise ManifestError(f"{name}: unknown trusted file format: {entry!r}")


# --------------------------------------------------------------------------
# Trusted files
# --------------------------------------------------------------------------
def uri_to_path(uri: str, name: str) -> str:
    """The path of a ``file:`` URI, normalised as pathlib would (no trailing '/')."""
    if not isinstance(uri, str) or not uri.startswith("file:"):
        raise ManifestError(f"{name}: unsupported URI {uri!r} (only file: URIs can be measured)")
    if "\0" in uri:  # no file has one; os calls would fail with ValueError
        raise ManifestError(f"{name}: URI {uri!r} contains a NUL character")
    path = uri[len("file:"):]
    if _NORMAL_PATH.fullmatch(path):
        return path  # already what PurePosixPath makes of it: skip building one per entry
    return str(PurePosixPath(path))


# An absolute path PurePosixPath leaves as it is: one leading '/', no empty or
# '.' part, no trailing '/'. Most trusted files are written so; others take
# the slow way, which stays the definition.
_NORMAL_PATH = re.compile(r"(?:/(?!\.?(?:/|\Z))[^/]+)+")


@dataclass
class _Entry:
    uri: str
    sha256: str | None
    real: str  # where the content is, as the tree resolves it


def _resolve(tree: Tree, path: str, uri: str, name: str, what: str = "trusted file") -> str:
    """Where *path* is inside the tree; errors name the manifest and the URI."""
    if not tree.chrooted:
        return path
    try:
        return tree.resolve(path)
    except ManifestError as exc:
        raise ManifestError(f"{name}: {what} {uri!r}: {exc}") from None


def _expand(tree: Tree, uri: str, sha256: str | None, name: str,
            path: str | None = None) -> list[_Entry]:
    path = uri_to_path(uri, name) if path is None else path
    if sha256 is not None and not uri.endswith("/"):
        # A given hash is kept as Gramine keeps it, without looking at the
        # file (which need not exist here): no lookup per entry, so a manifest
        # of a million hashed entries costs no file-system work. The enclave
        # checks the content against this hash when it opens the file.
        refuse_kernel_file(tree, path, path, uri, name, "trusted file")
        return [_Entry(uri, sha256, path)]
    real = _resolve(tree, path, uri, name)
    refuse_kernel_file(tree, path, real, uri, name, "trusted file")
    kind = tree.kind(real)
    if uri.endswith("/"):
        if kind != DIR:
            raise ManifestError(
                f"{name}: trusted file URI {uri!r} ends with '/' but "
                f"{tree.display(real)} is not a folder"
            )
        if sha256 is not None:
            raise ManifestError(f"{name}: folder URI {uri!r} cannot have a sha256")
        return _walk(tree, real, name)
    if kind == DIR:
        raise ManifestError(f"{name}: trusted file URI {uri!r} is a folder; end it with '/'")
    return [_Entry(uri, sha256, real)]


def _walk(tree: Tree, folder: str, name: str) -> list[_Entry]:
    """Regular files below *folder*, depth first, each folder in name order.

    Like Gramine: entries that are neither files nor folders (after following
    links), or that cannot be read, are skipped (never opened); linked
    folders are not descended into. A stack of listings, not a recursion, so
    that a hostile, very deep tree cannot exhaust Python's stack.
    """
    found: list[_Entry] = []
    stack = [iter(_listing(tree, folder, name))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        kind = tree.kind(child)
        if kind not in (FILE, DIR) or not tree.readable(child):
            continue
        if kind == DIR and tree.is_symlink(child):
            continue
        _check_utf8(tree, child, name)
        if kind == DIR:
            real = _resolve(tree, child, f"file:{child}/", name)
            stack.append(iter(_listing(tree, real, name)))
        else:
            found.extend(_expand(tree, f"file:{child}", None, name, child))
    return found


def _listing(tree: Tree, folder: str, name: str) -> list[str]:
    """Paths of the entries of *folder*, in name order (as Gramine sorts them)."""
    try:
        names = tree.list_dir(folder)
    except OSError as exc:
        raise ManifestError(
            f"{name}: cannot list trusted folder {tree.display(folder)}: {exc.strerror}"
        ) from None
    prefix = folder.rstrip("/") + "/"
    return [prefix + child for child in sorted(names)]


def _check_utf8(tree: Tree, path: str, name: str) -> None:
    """A manifest is UTF-8 TOML: a file name that is not UTF-8 cannot be written in it."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path)  # the bytes on disk, shown escaped
        raise ManifestError(
            f"{name}: {tree.display(posixpath.dirname(path))} (in a trusted folder) holds "
            f"a file name that is not UTF-8: {raw.rsplit(b'/', 1)[-1]!r}"
        ) from None


def expand_trusted_files(manifest: Manifest, tree: Tree, name: str = "<manifest>") -> bool:
    """Expand folders, drop duplicates and hash every unhashed trusted file.

    True if a folder was expanded: its file names, read from the tree, are
    new to the manifest.
    """
    entries: dict[str, _Entry] = {}
    walked = False
    for item in manifest["sgx"]["trusted_files"]:
        walked = walked or (isinstance(item["uri"], str) and item["uri"].endswith("/"))
        for entry in _expand(tree, item["uri"], item.get("sha256"), name):
            old = entries.get(entry.uri)
            if old is not None and old.sha256 is not None:
                if entry.sha256 is not None and entry.sha256 != old.sha256:
                    raise ManifestError(
                        f"{name}: trusted file {entry.uri!r} has two different sha256 values"
                    )
                continue
            entries[entry.uri] = entry
    _hash_entries(tree, [e for e in entries.values() if e.sha256 is None], name)
    manifest["sgx"]["trusted_files"] = [
        {"uri": e.uri, "sha256": e.sha256} for e in entries.values()
    ]
    return walked


_KIND_PROBLEMS = {None: "not found", DIR: "is a folder, not a file",
                  OTHER: "is not a regular file (a FIFO, socket or device)"}


def _hash_entries(tree: Tree, todo: list[_Entry], name: str,
                  what: str = "trusted file") -> None:
    """Hash *todo* in place; every error names the entry and where it was looked for.

    The kind check here gives the usual errors in manifest order, before any
    work; the tree checks the kind again on the descriptor it reads, so a file
    swapped for a FIFO or a device in the meantime is refused just the same.
    """
    for entry in todo:
        kind = tree.kind(entry.real)
        if kind != FILE:
            problem = _KIND_PROBLEMS.get(kind, _KIND_PROBLEMS[OTHER])
            raise ManifestError(
                f"{name}: {what} {entry.uri!r} {problem} at {tree.display(entry.real)}")
    uris = {tree.display(e.real): e.uri for e in todo}
    try:
        digests = tree.hash_files([e.real for e in todo])
    except NotRegularFile as exc:
        raise ManifestError(
            f"{name}: {what} {uris.get(exc.filename, '')!r} at {exc.filename} "
            f"is not a regular file") from None
    except OSError as exc:
        # Our trees always name the file; another Tree might not.
        where = (f"{uris.get(exc.filename, '')!r} at {exc.filename}" if exc.filename
                 else f"({len(todo)} files)")
        raise ManifestError(
            f"{name}: cannot read {what} {where}: {exc.strerror or exc}") from None
    for entry, digest in zip(todo, digests, strict=True):
        entry.sha256 = digest


def hash_loader_entrypoint(manifest: Manifest, tree: Tree, name: str = "<manifest>") -> None:
    """Fill ``loader.entrypoint.sha256`` from the file its URI names, if absent.

    A folder is never an entrypoint: a URI ending in '/' is refused rather
    than expanded (the enclave would load none of its files).
    """
    entrypoint = manifest["loader"]["entrypoint"]
    if not isinstance(entrypoint, dict) or entrypoint.get("sha256") is not None:
        return
    uri = entrypoint["uri"]
    path = uri_to_path(uri, name)
    real = _resolve(tree, path, uri, name, "loader.entrypoint")
    refuse_kernel_file(tree, path, real, uri, name, "loader.entrypoint")
    if uri.endswith("/"):
        raise ManifestError(f"{name}: loader.entrypoint.uri {uri!r} ends with '/' (a folder); "
                            "the entrypoint must be a file")
    if tree.kind(real) == DIR:
        raise ManifestError(
            f"{name}: loader.entrypoint.uri {uri!r} is a folder ({tree.display(real)}); "
            "the entrypoint must be a file")
    entry = _Entry(uri, None, real)
    _hash_entries(tree, [entry], name, what="loader.entrypoint")
    entrypoint["sha256"] = entry.sha256


def finalize(manifest: Manifest, tree: Tree, name: str = "<manifest>") -> Manifest:
    """Hash everything the manifest needs hashed; returns a new manifest.

    *manifest* comes from :func:`parse_manifest`, so Gramine's reading of it
    was checked; hashing adds only hex digests.
    """
    result = _copy_but_trusted_files(manifest)
    hash_loader_entrypoint(result, tree, name)
    if expand_trusted_files(result, tree, name):
        # File names found in trusted folders join the manifest here: a name
        # with a control character would be written as an escape Gramine
        # cannot read. Without a folder nothing new joined: a second walk
        # would cost as much as the first, per entry, for nothing.
        check_gramine_reading(result, name)
    return result


def _copy_but_trusted_files(manifest: Manifest) -> Manifest:
    """A deep copy sharing only the ``sgx.trusted_files`` list and its entries.

    :func:`expand_trusted_files` reads that list and puts a new one in its
    place, never changing an entry; copying a million entries only to drop
    them cost as much time as hashing none, and their memory at the peak.
    """
    entries = manifest["sgx"]["trusted_files"]
    # deepcopy takes what its memo names as already copied: the list stays shared.
    return copy.deepcopy(manifest, {id(entries): entries})


def dumps(manifest: Manifest) -> str:
    """The manifest as Gramine writes it (tomli-w's layout)."""
    return tomli_w.dumps(manifest)


# --------------------------------------------------------------------------
# The `manifest` command
# --------------------------------------------------------------------------
def render_manifest_file(template: Path, outfile: Path | None = None, *,
                         defines: Mapping[str, Any] | None = None, chroot: Path | None = None,
                         pkglibdir: str = DEFAULT_PKGLIBDIR,
                         python: PythonInfo | None = None, check: bool = True) -> str:
    """Render *template* like ``gramine-manifest``: defaults, trusted files hashed.

    Returns the manifest text and, if *outfile* is given, writes it there
    atomically. With *check* (the default), the rendered manifest must also
    follow Gramine's full schema (unknown keys are errors).
    """
    if outfile is not None:  # before any work, and never over the template itself
        check_output_files([Path(outfile)], [Path(template)])
    text = read_text(template, "template")
    name = str(template)
    rendered = render_template(text, defines, pkglibdir=pkglibdir, python=python, name=name)
    manifest = parse_manifest(rendered, f"{name} (rendered)", pkglibdir=pkglibdir)
    tree = tree_for(chroot)
    if check:
        check_schema(manifest, f"{name} (rendered)")
    final = finalize(manifest, tree, name)
    result = dumps(final)
    if outfile is not None:
        refuse_measured_outputs(final, tree, [Path(outfile)])  # never over a hashed file
        write_atomic(Path(outfile), result.encode("utf-8"))
    return result


MAX_MANIFEST_FILE = 256 << 20  # as the rendered output: never read /dev/zero to the end


def read_text(path: Path, what: str) -> str:
    """A UTF-8 manifest or template file (at most 256 MiB); errors name the file."""
    data = read_capped(path, MAX_MANIFEST_FILE, what, ManifestError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: {what} is not UTF-8 text") from None
