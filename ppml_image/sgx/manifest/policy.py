"""The release policy: what a production enclave's manifest may contain.

``--release`` (``sign``, ``build-custom``, ``sign-image``) refuses a manifest
that breaks it, and ``verify`` reports the same violations. It allows by
list: what the signer did not name is refused. Each rule closes a way for
the host, which SGX does not trust, to see or change what runs:

* Must be exactly: ``sgx.debug = false``; no ``insecure__`` key;
  ``sgx.file_check_policy`` absent or ``"strict"``; ``sgx.seal_key.flags_mask``
  with the DEBUG bit (Gramine's default is all ones); ``loader.log_level``
  ``"error"`` (the default) or ``"none"``; no ``untrusted_shm``, ``tmpfs`` or
  ``encrypted`` mount over a measured path or a code folder.
* Unmeasured files: an ``sgx.allowed_files`` entry only when the signer named
  it (``ReleasePolicy.allow_unmeasured``, with Gramine's prefix semantics:
  the same path or a path below a named one), and never one that covers a
  trusted file, the LibOS entrypoint, a ``bin``/``lib``/linker folder, an
  interpreter's own folders, or code by its name.
* Passthrough: ``loader.env.NAME = { passthrough = true }`` only for a NAME
  the signer named, and never for variables that choose code (``LD_*``,
  ``PYTHON*``, ``BASH_FUNC_*``, ``*_HOME``, ...), whatever is named. Every
  ``loader.env`` key must be a plain variable name.
* Paths: every string of ``loader.argv``, ``loader.env``, ``libos.entrypoint``
  and ``fs.start_dir`` that names a path is resolved as Gramine would
  (mounts, ``fs.start_dir``) with the role the program gives it (python's,
  java's and bash's options are modelled; a ``bash -c`` string is read as
  shell words, conservatively). Code must be a trusted file; a folder code
  comes from must not hold or lie in an unmeasured area; data may not lie in
  an ``untrusted_shm`` mount. What cannot be modelled is refused.
* ``loader.argv_src_file`` and ``loader.env_src_file`` must be trusted files.
"""

from __future__ import annotations

import posixpath
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppml_image.errors import PolicyError, PpmlError, UsageError
from ppml_image.sgx.measure.tree import Tree

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# --------------------------------------------------------------------------
# What the signer names
# --------------------------------------------------------------------------
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Variables that choose code or where it comes from: never passed through
# from the host, whatever the signer names.
_NEVER_PASSTHROUGH = re.compile(
    r"(BASH_FUNC_.*|LD_.*|PYTHON.*|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|"
    r"CLASSPATH|OPENSSL_.*|PYSPARK_.*|.*_HOME|HOME|PATH|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|"
    r"IFS|PS4|PERL.*|NODE_.*|RUBY.*|GCONV_PATH|GLIBC_TUNABLES|MALLOC_.*|SPARK_.*|"
    r"HADOOP_.*|JAVA_OPTS|TMPDIR)\Z")
POLICY_SUFFIX = ".policy.toml"


@dataclass(frozen=True)
class ReleasePolicy:
    """What the signer allows beyond the strict release policy.

    *allow_unmeasured*: ``sgx.allowed_files`` URIs (``file:`` or ``dev:``)
    the manifest may list (an entry equal to or below one of them).
    *allow_passthrough*: ``loader.env`` names the host may set.
    """

    allow_unmeasured: tuple[str, ...] = ()
    allow_passthrough: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        for uri in self.allow_unmeasured:
            if not isinstance(uri, str) or _allowed_path(uri) is None:
                raise UsageError(f"--allow-unmeasured {_show(uri)}: expected a file: URI "
                                 "(file:/etc/hosts)")
        for name in self.allow_passthrough:
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise UsageError(f"--allow-passthrough {_show(name)}: not a plain variable "
                                 "name (letters, digits, '_')")
            if _NEVER_PASSTHROUGH.match(name):
                raise UsageError(f"--allow-passthrough {name}: never allowed: the host would "
                                 "choose code the enclave runs or loads")

    def merged(self, other: ReleasePolicy) -> ReleasePolicy:
        return ReleasePolicy(self.allow_unmeasured + other.allow_unmeasured,
                             self.allow_passthrough + other.allow_passthrough,
                             self.sources + other.sources)

    def covers_unmeasured(self, path: str) -> bool:
        return any(_under(path, named) for named in self._named_paths())

    def _named_paths(self) -> list[str]:
        return [p for p in (_allowed_path(u) for u in self.allow_unmeasured) if p is not None]


STRICT = ReleasePolicy()
# What library functions take as ``release``: False (no policy), True (the
# strict policy, nothing named) or a ReleasePolicy naming allowances.
Release = bool | ReleasePolicy


def policy_file(spec: str) -> Path:
    """``--policy NAME`` (a shipped ``manifests/NAME.policy.toml``) or a path."""
    path = Path(spec)
    if path.is_file() or "/" in spec or spec.endswith(".toml"):
        return path
    from ppml_image.resources import data_dir

    shipped = data_dir("manifests") / f"{spec}{POLICY_SUFFIX}"
    if shipped.is_file():
        return shipped
    names = sorted(p.name[: -len(POLICY_SUFFIX)]
                   for p in data_dir("manifests").glob(f"*{POLICY_SUFFIX}"))
    raise UsageError(f"--policy {spec}: no such file, nor a shipped policy "
                     f"(shipped: {', '.join(names)})")


def load_policy(spec: str) -> ReleasePolicy:
    """A policy file: ``[release]`` with ``allow_unmeasured`` and ``allow_passthrough``."""
    path = policy_file(spec)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    if len(data) > 1 << 20:
        raise UsageError(f"{path}: a policy file of more than 1 MiB")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: not a TOML policy file: {exc}") from None
    if set(table) != {"release"} or not isinstance(table["release"], dict):
        raise UsageError(f"{path}: a policy file has one table, [release]")
    release = table["release"]
    unknown = set(release) - {"allow_unmeasured", "allow_passthrough"}
    if unknown:
        raise UsageError(f"{path}: [release] {sorted(unknown)[0]}: unknown key (known: "
                         "allow_unmeasured, allow_passthrough)")
    lists = {}
    for key in ("allow_unmeasured", "allow_passthrough"):
        value = release.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{path}: [release] {key} must be a list of strings")
        lists[key] = tuple(value)
    try:
        return ReleasePolicy(lists["allow_unmeasured"], lists["allow_passthrough"],
                             (str(path),))
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def make_policy(allow_unmeasured: Sequence[str] = (), allow_passthrough: Sequence[str] = (),
                policies: Sequence[str] = ()) -> ReleasePolicy:
    """The policy of the command line: named allowances plus every ``--policy`` file."""
    result = ReleasePolicy(tuple(allow_unmeasured), tuple(allow_passthrough))
    for spec in policies:
        result = result.merged(load_policy(spec))
    return result


def as_policy(release: Release) -> ReleasePolicy | None:
    """``release=True`` is the strict policy; a ReleasePolicy is itself; False is none."""
    if isinstance(release, ReleasePolicy):
        return release
    return STRICT if release else None


# --------------------------------------------------------------------------
# Violations
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    """One way a manifest breaks the release policy."""

    key: str
    value: str
    reason: str
    debug: bool = False  # the debug flag, which `verify --allow-debug` accepts

    def __str__(self) -> str:
        return f"{self.key} = {self.value} ({self.reason})"


def release_violations(manifest: dict[str, Any], tree: Tree | None = None,
                       policy: ReleasePolicy | None = None) -> list[Violation]:
    """Every release-policy violation in *manifest*, in a stable order.

    *policy* names what the signer allows (default: nothing). With a *tree*
    (the enclave's file system), the command line and environment that
    ``loader.argv_src_file`` and ``loader.env_src_file`` hold are judged too;
    every other rule reads the manifest only, as Gramine's checks read URIs.
    """
    policy = policy or STRICT
    view = _View(manifest)
    found = _exact_violations(manifest)
    found += _allowed_file_violations(view, policy)
    found += _env_violations(view, policy)
    found += _mount_violations(view)
    found += _PathRules(view, tree).violations()
    found += _src_file_violations(view)
    return found


def enforce_release(manifest: dict[str, Any], name: str, tree: Tree | None = None,
                    policy: ReleasePolicy | None = None) -> None:
    """Raise :class:`PolicyError` naming every violation, if there is any."""
    violations = release_violations(manifest, tree, policy)
    if violations:
        raise PolicyError(f"{name}: refused by the release policy: "
                          + "; ".join(str(v) for v in violations))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 200 else value[:197] + "..."
        return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        text = "{ " + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + " }"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------
# Paths as Gramine reads them
# --------------------------------------------------------------------------
def _norm(path: str) -> str:
    """Gramine's normalisation: no '.', no empty parts, '..' folded, no trailing '/'.

    An absolute path stays absolute (``/..`` is ``/``); a relative one stays
    relative (``.`` for nothing).
    """
    absolute = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append(part)
            continue
        parts.append(part)
    text = "/".join(parts)
    return "/" + text if absolute else (text or ".")


def _under(path: str, top: str) -> bool:
    """*path* equals *top* or lies below it (Gramine's allowed-file match)."""
    if top == "." and not path.startswith("/"):
        return True
    if top == "/":
        return path.startswith("/")
    return path == top or path.startswith(top + "/")


def _overlap(a: str, b: str) -> bool:
    return _under(a, b) or _under(b, a)


def _host(path: str) -> str:
    """A host path; a relative one (Gramine's default root is the host's working
    folder) is read as if that folder were ``/``: allowed entries then cover
    more, never less, and a trusted one can only be found where Gramine would
    refuse to open the file anyway."""
    return _norm(path if path.startswith("/") else "/" + path)


def _allowed_path(uri: str) -> str | None:
    """The path Gramine registers for an allowed-file URI (it strips file: or dev:)."""
    for prefix in ("file:", "dev:"):
        if uri.startswith(prefix):
            return _host(uri[len(prefix):])
    return None


@dataclass(frozen=True)
class _Mount:
    path: str  # in the enclave
    kind: str  # chroot, tmpfs, encrypted, untrusted_shm, or ? (cannot be read)
    host: str  # for chroot: the host path the URI names ("." is Gramine's cwd)
    key: str


def _table(parent: Any, key: str) -> dict[str, Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else {}


class _View:
    """The parts of a manifest the rules read, with Gramine's defaults."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        self.sgx = _table(manifest, "sgx")
        self.loader = _table(manifest, "loader")
        self.libos = _table(manifest, "libos")
        self.fs = _table(manifest, "fs")
        self.env = _table(self.loader, "env")
        self.mounts = self._mounts()
        start = self.fs.get("start_dir", "/")
        self.start_dir = _norm(start) if isinstance(start, str) and start.startswith("/") \
            else "/"
        self.trusted_files, self.trusted_folders = self._trusted()
        self.allowed = self._allowed()
        entry = self.libos.get("entrypoint")
        self.entrypoint = entry if isinstance(entry, str) else None
        self._trusted_entries: set[str] = set()
        self._trusted_parents: dict[str, str] | None = None

    def _mounts(self) -> list[_Mount]:
        root = _table(self.fs, "root")
        mounts = [self._mount("/", root.get("type", "chroot"), root.get("uri", "file:"),
                              "fs.root")]
        items = self.fs.get("mounts", [])
        for index, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                mounts.append(self._mount(item["path"], item.get("type", "chroot"),
                                          item.get("uri"), f"fs.mounts[{index}]"))
        return mounts

    @staticmethod
    def _mount(path: str, kind: Any, uri: Any, key: str) -> _Mount:
        kind = kind if kind in ("chroot", "tmpfs", "encrypted", "untrusted_shm") else "?"
        host = "?"
        if kind == "chroot" and isinstance(uri, str):
            host = _allowed_path(uri) or "?"
        return _Mount(_norm(path), kind, host, key)

    def _trusted(self) -> tuple[set[str], list[str]]:
        files: set[str] = set()
        folders: list[str] = []
        entries = self.sgx.get("trusted_files", [])
        for entry in entries if isinstance(entries, list) else []:
            uri = entry.get("uri") if isinstance(entry, dict) else entry
            if not isinstance(uri, str) or not uri.startswith("file:"):
                continue
            if uri.endswith("/"):
                folders.append(_host(uri[len("file:"):]))
            else:
                files.add(_host(uri[len("file:"):]))
        return files, folders

    def _allowed(self) -> list[tuple[str, str]]:
        entries = self.sgx.get("allowed_files", [])
        found = []
        for index, uri in enumerate(entries if isinstance(entries, list) else []):
            path = _allowed_path(uri) if isinstance(uri, str) else None
            if path is not None:
                found.append((path, f"sgx.allowed_files[{index}]"))
        return found

    def mount_of(self, path: str) -> _Mount:
        """The mount Gramine finds for an enclave path: the deepest, the last of equals."""
        best = self.mounts[0]
        for mount in self.mounts:
            if _under(path, mount.path) and len(mount.path) >= len(best.path):
                best = mount
        return best

    def host_path(self, path: str) -> tuple[_Mount, str | None]:
        mount = self.mount_of(path)
        if mount.kind != "chroot" or mount.host == "?":
            return mount, None
        rel = path[len(mount.path):].lstrip("/") if mount.path != "/" else path.lstrip("/")
        return mount, _host(f"{mount.host}/{rel}" if rel else mount.host)

    def allowed_over(self, host: str) -> str | None:
        for path, key in self.allowed:
            if _under(host, path):
                return key
        return None

    def is_trusted(self, host: str) -> bool:
        return host in self.trusted_files or any(_under(host, f) and host != f
                                                 for f in self.trusted_folders)

    def trusted_overlap(self, host: str) -> str | None:
        """A trusted entry that *host* equals, lies below, or holds (None: none).

        Sets of every trusted entry and of all their parents keep this cheap
        for an expanded manifest of 100,000 files.
        """
        if self._trusted_parents is None:
            entries = self.trusted_files | set(self.trusted_folders)
            parents: dict[str, str] = {}
            for entry in entries:
                end = len(entry)
                while (end := entry.rfind("/", 0, end)) >= 0:
                    parent = entry[:end] or "/"
                    if parent in parents:
                        break  # its parents are in already (siblings share them)
                    parents[parent] = entry
            self._trusted_entries, self._trusted_parents = entries, parents
        if host in self._trusted_parents:
            return self._trusted_parents[host]
        path = host
        while True:
            if path in self._trusted_entries:
                return path
            if path in ("/", "."):
                return None
            path = posixpath.dirname(path) or "."


# --------------------------------------------------------------------------
# Must be exactly
# --------------------------------------------------------------------------
SGX_FLAGS_DEBUG_BIT = 0x2


def _exact_violations(manifest: dict[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    sgx = _table(manifest, "sgx")
    if sgx.get("debug", False) is not False:
        found.append(Violation("sgx.debug", _show(sgx.get("debug")), "a debug enclave's "
                               "memory is readable and writable by the host; it must be "
                               "false", debug=sgx.get("debug") is True))
    found += [Violation(key, _show(value), "an insecure__ option gives the host control")
              for key, value in _insecure_keys(manifest, "")]
    policy = sgx.get("file_check_policy", "strict")
    if policy != "strict":
        found.append(Violation("sgx.file_check_policy", _show(policy),
                               "must be \"strict\": otherwise files that are not trusted are "
                               "opened anyway"))
    mask = _table(sgx, "seal_key").get("flags_mask", "0xffffffffffffffff")
    if not _covers_debug(mask):
        found.append(Violation("sgx.seal_key.flags_mask", _show(mask),
                               "must include the DEBUG bit (0x2; Gramine's default is "
                               "0xffffffffffffffff): otherwise a debug enclave of the same "
                               "signer unseals production data"))
    level = _table(manifest, "loader").get("log_level", "error")
    if level not in ("error", "none"):
        found.append(Violation("loader.log_level", _show(level), "must be \"error\" or "
                               "\"none\": more detailed logs tell the host what the enclave "
                               "does"))
    return found


def _covers_debug(mask: Any) -> bool:
    if not isinstance(mask, str) or not re.fullmatch(r"0x[0-9a-fA-F]{1,16}", mask):
        return False
    return bool(int(mask, 16) & SGX_FLAGS_DEBUG_BIT)


def _insecure_keys(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Every key path whose last part starts with ``insecure__`` (tables in arrays too)."""
    stack: list[tuple[Any, str]] = [(node, prefix)]
    found = []
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                path = f"{where}.{key}" if where else str(key)
                if str(key).startswith("insecure__"):
                    found.append((path, value))
                else:
                    stack.append((value, path))
        elif isinstance(item, list):
            stack.extend((value, f"{where}[{i}]") for i, value in enumerate(item))
    yield from sorted(found, key=lambda pair: pair[0])


# --------------------------------------------------------------------------
# Unmeasured files
# --------------------------------------------------------------------------
_CODE_SUFFIXES = (".so", ".py", ".pyc", ".pyo", ".pyd", ".pyz", ".pyw", ".pth", "._pth",
                  ".egg", ".whl", ".zip", ".jar", ".class", ".jmod", ".jsa", ".war", ".ear",
                  ".sh", ".bash", ".pl", ".pm", ".rb", ".js", ".mjs", ".cjs", ".node", ".lua",
                  ".php", ".tcl", ".r", ".ko", ".a", ".o")
_VERSIONED_SO = re.compile(r"\.so(\.\d+)+$")
# Code or code-choosing files without a telling suffix.
_CODE_NAMES = ("modules", "jvm.cfg", "java.security", "java.policy", "pyvenv.cfg")
_CODE_FOLDER_NAMES = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "libexec"}
_CODE_ROOTS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr/bin", "/usr/sbin",
               "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec", "/usr/local/bin",
               "/usr/local/sbin", "/usr/local/lib", "/etc/ld.so.cache", "/etc/ld.so.preload",
               "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
               "/etc/java-17-openjdk", "/etc/ssl")
# An interpreter's own folders: its library, packages, virtual env, JDK.
_INTERPRETER_PART = re.compile(r"(python\d*(\.\d+)*|site-packages|dist-packages|jvm|"
                               r"(open)?jdk.*|jre.*|java-\d+.*|pyspark|node_modules|perl5?|"
                               r"ruby|gems|gramine|ld\.so\..*|__pycache__)\Z", re.IGNORECASE)


def _allowed_file_violations(view: _View, policy: ReleasePolicy) -> list[Violation]:
    allowed = view.sgx.get("allowed_files", [])
    if not isinstance(allowed, list):
        return [Violation("sgx.allowed_files", _show(allowed),
                          "must be a list of file: URIs (cannot be checked)")]
    found = []
    for index, uri in enumerate(allowed):
        key = f"sgx.allowed_files[{index}]"
        path = _allowed_path(uri) if isinstance(uri, str) else None
        if path is None:
            found.append(Violation(key, _show(uri), "not a file: URI (cannot be checked)"))
            continue
        reason = _allowed_problem(view, path) or (
            None if policy.covers_unmeasured(path) else
            "an unmeasured file the signer did not name: name it with --allow-unmeasured "
            f"file:{path} (or allow_unmeasured in a --policy file) if the enclave only reads "
            "it as data")
        if reason:
            found.append(Violation(key, _show(uri), reason))
    return found


def _allowed_problem(view: _View, path: str) -> str | None:
    """Why *path* may never be unmeasured, even when named (None: it may be)."""
    if path in (".", "/"):
        return "a whole file system: everything below it would be unmeasured"
    trusted = view.trusted_overlap(path)
    if trusted is not None:
        return (f"covers the trusted file:{trusted}: Gramine checks allowed files "
                "first, so it would lose its integrity check")
    if view.entrypoint is not None:
        _, host = view.host_path(_norm(view.entrypoint))
        if host is not None and _overlap(path, host):
            return "covers the LibOS entrypoint, which is what the enclave executes"
    parts = path.split("/")
    if _CODE_FOLDER_NAMES & set(parts):
        return "in a bin or lib folder: programs and libraries must be trusted files"
    if any(_INTERPRETER_PART.match(part) for part in parts):
        return "in an interpreter's or the linker's own folders: what they load is code"
    for root in _CODE_ROOTS:
        if _under(root, path):
            return f"covers {root}, where programs, libraries or the linker's files are"
    name = parts[-1].lower()
    if name.endswith(_CODE_SUFFIXES) or _VERSIONED_SO.search(name):
        return "code the enclave executes or imports must be a trusted file"
    if name in _CODE_NAMES or name.startswith(("sitecustomize", "usercustomize")):
        return ("it chooses or holds code the enclave runs (JDK modules or configuration, "
                "Python site hooks or virtual env)")
    return None


# --------------------------------------------------------------------------
# Environment: names and passthrough
# --------------------------------------------------------------------------
def _env_violations(view: _View, policy: ReleasePolicy) -> list[Violation]:
    found = []
    for name, value in view.env.items():
        key = f"loader.env.{_env_key(name)}"
        if not _ENV_NAME.match(name):
            found.append(Violation(key, _show(value), "not a plain variable name (letters, "
                                   "digits, '_'): a shell reads such names as functions or "
                                   "cannot set them"))
            continue
        if name.startswith("BASH_FUNC_"):
            found.append(Violation(key, _show(value), "BASH_FUNC_* defines shell functions: "
                                   "never allowed"))
            continue
        if isinstance(value, dict) and value.get("passthrough") is True:
            if _NEVER_PASSTHROUGH.match(name):
                found.append(Violation(key, "{ passthrough = true }", "never passed through: "
                                       "the host would choose code the enclave runs or loads"))
            elif name not in policy.allow_passthrough:
                found.append(Violation(key, "{ passthrough = true }", "the host sets it: name "
                                       f"it with --allow-passthrough {name} (or "
                                       "allow_passthrough in a --policy file) if that is "
                                       "intended"))
    return found


def _env_key(name: str) -> str:
    return name if _ENV_NAME.match(name) else _show(name)


def _env_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("value"), str):
        return str(value["value"])
    return None


# --------------------------------------------------------------------------
# Mounts over measured paths
# --------------------------------------------------------------------------
def _mount_violations(view: _View) -> list[Violation]:
    found = []
    for mount in view.mounts:
        if mount.kind == "chroot":
            continue
        key = f"{mount.key}.path" if mount.key != "fs.root" else "fs.root"
        if mount.kind == "?":
            found.append(Violation(mount.key, _show(mount.path), "a mount whose type or URI "
                                   "cannot be read: cannot be checked"))
            continue
        reason = _shadow_problem(view, mount)
        if reason:
            found.append(Violation(key, _show(mount.path), f"a mount of type {mount.kind} "
                                   f"{reason}"))
    return found


def _shadow_problem(view: _View, mount: _Mount) -> str | None:
    if mount.path == "/":
        return "as the root: it hides every measured file"
    for other in view.mounts:
        if other.kind != "chroot" or other.host == "?":
            continue
        if _under(mount.path, other.path):  # it hides part of that mount
            rel = mount.path[len(other.path):].lstrip("/") if other.path != "/" \
                else mount.path.lstrip("/")
            shown = _host(f"{other.host}/{rel}" if rel else other.host)
        elif _under(other.path, mount.path):  # that mount lies below it
            shown = other.host
        else:
            continue
        trusted = view.trusted_overlap(shown)
        if trusted is not None:
            return f"over a measured path (file:{trusted}, seen through {other.key})"
    if view.entrypoint is not None and _overlap(mount.path, _norm(view.entrypoint)):
        return "over the LibOS entrypoint"
    parts = set(mount.path.split("/"))
    if _CODE_FOLDER_NAMES & parts or any(_under(root, mount.path) for root in _CODE_ROOTS):
        return "over a bin or lib folder, where code is"
    return None


def _src_file_violations(view: _View) -> list[Violation]:
    found = []
    for key in ("argv_src_file", "env_src_file"):
        uri = view.loader.get(key)
        if uri is None:
            continue
        path = uri[len("file:"):] if isinstance(uri, str) and uri.startswith("file:") else None
        if path is None or not view.is_trusted(_host(path)) or view.allowed_over(_host(path)):
            found.append(Violation(f"loader.{key}", _show(uri), "not a trusted file: the host "
                                   "would write what the enclave runs with"))
    return found


# --------------------------------------------------------------------------
# Paths named by the command line, the environment and the entrypoint
# --------------------------------------------------------------------------
CODE = "code"  # a file the enclave executes or loads: must be a trusted file
SEARCH = "search"  # a file or folder code comes from: no unmeasured area in or around it
DATA = "data"  # read as data: never in memory shared with the host

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_PYTHON = re.compile(r"python\d*(\.\d+)*\Z")
_SHELLS = ("bash", "sh", "dash")
_CODE_ENV = re.compile(
    r"(LD_.*|PYTHON.*|CLASSPATH|PATH|BASH_ENV|ENV|PERL.*|NODE_.*|RUBY.*|GCONV_PATH|"
    r".*_HOME|OPENSSL_.*|PYSPARK_.*|SPARK_.*|HADOOP_.*|JAVA_.*|JDK_.*|_JAVA_.*|"
    r"GLIBC_TUNABLES|MALLOC_.*|SSL_CERT_.*|CURL_CA_BUNDLE|REQUESTS_CA_BUNDLE)\Z")
# Colon-separated folders (or jars) where code is looked up: a relative or
# empty entry is relative to the working folder.
_PATH_LIST_ENV = re.compile(
    r"(LD_LIBRARY_PATH|PATH|PYTHONPATH|CLASSPATH|GCONV_PATH|PERL5LIB|PERLLIB|NODE_PATH|"
    r"RUBYLIB|PYTHONHOME|PYTHONUSERBASE|PYTHONPYCACHEPREFIX|.*_HOME)\Z")
_CODE_FILE_ENV = ("LD_PRELOAD", "LD_AUDIT", "BASH_ENV", "ENV", "PYTHONSTARTUP",
                  "OPENSSL_CONF", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")
_JAVA_ENV = ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "JAVA_OPTS")


class _Refused(Exception):
    """A word the rules cannot model: the message says how to state the intent."""


class _PathRules:
    """Resolve every path the manifest's command line and environment name."""

    def __init__(self, view: _View, tree: Tree | None = None) -> None:
        self.view = view
        self.tree = tree
        self.found: list[Violation] = []

    def violations(self) -> list[Violation]:
        self._entrypoint()
        self._start_dir()
        self._environment()
        self._src_environment()
        argv = self.view.loader.get("argv")
        self._argv("loader.argv", argv)
        if argv is None:
            self._argv("loader.argv_src_file", self._src_file("argv_src_file"))
        return self.found

    _MAX_SRC_FILE = 1 << 20

    def _src_file(self, key: str) -> list[str] | None:
        """The NUL-separated strings of a trusted ``loader.*_src_file``, read from the tree."""
        uri = self.view.loader.get(key)
        if self.tree is None or not isinstance(uri, str) or not uri.startswith("file:"):
            return None  # nothing to read (without a tree, the measuring step checks it)
        path = _host(uri[len("file:"):])
        try:
            real = self.tree.resolve(path) if self.tree.chrooted else path
            data = self.tree.read_bytes(real)
        except (OSError, PpmlError) as exc:
            self._add(f"loader.{key}", uri, f"cannot be read to check it: {exc}")
            return None
        if len(data) > self._MAX_SRC_FILE:
            self._add(f"loader.{key}", uri, "more than 1 MiB: cannot be checked")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._add(f"loader.{key}", uri, "not UTF-8: cannot be checked")
            return None
        return text.split("\0")[:-1] if text.endswith("\0") else text.split("\0")

    def _src_environment(self) -> None:
        entries = self._src_file("env_src_file")
        for index, entry in enumerate(entries or []):
            name, sep, value = entry.partition("=")
            key = f"loader.env_src_file[{index}]"
            if not sep or not _ENV_NAME.match(name) or name.startswith("BASH_FUNC_"):
                self._add(key, entry, "not NAME=value with a plain variable name")
                continue
            self.env_value(key, name, value)

    # -- reporting ---------------------------------------------------------
    def _add(self, key: str, value: Any, reason: str) -> None:
        self.found.append(Violation(key, _show(value), reason))

    def _check(self, key: str, value: Any, word: str, role: str, what: str) -> None:
        problem = self.problem(word, role)
        if problem:
            shown = "" if word == value else f"{word!r} "
            self._add(key, value, f"{shown}{what}: {problem}")

    # -- resolution --------------------------------------------------------
    def absolute(self, word: str) -> str:
        if word.startswith("/"):
            return _norm(word)
        return _norm(f"{self.view.start_dir}/{word}")

    def problem(self, word: str, role: str) -> str | None:
        """Why *word* (a path) may not have *role*; None when it may."""
        path = self.absolute(word)
        mount, host = self.view.host_path(path)
        if mount.kind == "untrusted_shm":
            return f"{path} is in memory shared with the host ({mount.key})"
        if role != DATA and mount.kind in ("tmpfs", "encrypted", "?"):
            return (f"{path} is in the {mount.kind} mount at {mount.path} ({mount.key}), "
                    "which is not measured")
        if host is not None:
            allowed = self.view.allowed_over(host)
            if allowed and role != DATA:
                return f"{path} is unmeasured: {allowed} covers it"
        if role == CODE and (host is None or not self.view.is_trusted(host)):
            return f"{path} is not a trusted file (file:{host or '?'})"
        if role == SEARCH:
            return self._holds_unmeasured(path, host)
        return None

    def _holds_unmeasured(self, path: str, host: str | None) -> str | None:
        # What the folder shows: its own host folder, and every mount below it.
        shown = [(path, host)] if host is not None else []
        for mount in self.view.mounts:
            if not _under(mount.path, path) or mount.path == path:
                continue
            if mount.kind != "chroot":
                return f"{path} holds the {mount.kind} mount at {mount.path}"
            shown.append((mount.path, mount.host))
        for where, top in shown:
            for allowed, key in self.view.allowed:
                if _under(allowed, top):
                    return f"{path} holds unmeasured files ({key}, through {where})"
        return None

    def path_pieces(self, word: str) -> list[str]:
        """The parts of a word that name paths: ``-cp=a:/b`` -> ``/b`` (URLs are not paths)."""
        if _URL.match(word) and not word.startswith("file:"):
            return []
        pieces = re.split(r"[=:,;\s]", word)
        return [p for p in pieces if "/" in p or p in (".", "..")
                or p.lower().endswith(_CODE_SUFFIXES)]

    def check_pieces(self, key: str, value: Any, word: str, role: str, what: str) -> None:
        for piece in self.path_pieces(word):
            self._check(key, value, piece, role, what)

    # -- the parts of the manifest -----------------------------------------
    def _entrypoint(self) -> None:
        entry = self.view.libos.get("entrypoint")
        if entry is None:
            return
        if not isinstance(entry, str) or not entry.startswith("/"):
            self._add("libos.entrypoint", entry, "must be an absolute path in the enclave")
            return
        self._check("libos.entrypoint", entry, entry, CODE, "the program the enclave runs")

    def _start_dir(self) -> None:
        start = self.view.fs.get("start_dir")
        if start is None:
            return
        if not isinstance(start, str) or not start.startswith("/"):
            self._add("fs.start_dir", start, "must be an absolute path in the enclave")
            return
        self._check("fs.start_dir", start, start, SEARCH, "relative paths resolve here")

    def _environment(self) -> None:
        for name, value in self.view.env.items():
            text = _env_text(value)
            if text is None or not _ENV_NAME.match(name):
                continue
            self.env_value(f"loader.env.{name}", name, text)

    def env_value(self, key: str, name: str, text: str) -> None:
        if name == "PYTHONINSPECT" and text:
            self._add(key, text, "PYTHONINSPECT makes python read code from standard input "
                      "after the script, which the host controls")
        elif name in _JAVA_ENV:
            try:
                self.java_options(key, text, text.split())
            except _Refused as exc:
                self._add(key, text, str(exc))
        elif name in _CODE_FILE_ENV:
            for word in re.split(r"[\s:]+", text):
                if word and ("/" in word or name != "LD_PRELOAD"):
                    self._check(key, text, word, CODE, f"{name} names code the enclave loads")
        elif _PATH_LIST_ENV.match(name):
            for word in text.split(":"):
                self._check(key, text, word or ".", SEARCH, f"{name} chooses where code "
                            "comes from" + ("" if word else " (an empty entry is the "
                                            "working folder)"))
        elif _CODE_ENV.match(name):
            for word in re.split(r"[\s:;,]+", text):
                if "/" in word or word in (".", ".."):
                    self._check(key, text, word, SEARCH, f"{name} chooses where code comes "
                                "from")
        else:
            self.check_pieces(key, text, text, DATA, "named by the environment")

    def _argv(self, key: str, argv: Any) -> None:
        entry = self.view.entrypoint
        if not isinstance(argv, list) or entry is None:
            return
        if not all(isinstance(a, str) for a in argv):
            self._add(key, argv, "must be a list of strings")
            return
        if argv and "/" in argv[0]:
            # Interpreters find their own files from argv[0] (Python's prefix).
            self._check(f"{key}[0]", argv[0], argv[0], CODE, "argv[0] names the program")
        try:
            self.program(key, entry, list(argv[1:]), 1)
        except _Refused as exc:
            self._add(key, argv, str(exc))

    # -- programs ------------------------------------------------------------
    def program(self, key: str, path: str, args: list[str], first: int) -> None:
        """*args* of the program at *path*, each judged by the role the program gives it."""
        name = posixpath.basename(path)
        if _PYTHON.match(name):
            self.python(key, args, first)
        elif name == "java":
            self.java(key, args, first)
        elif name in _SHELLS:
            self.shell(key, args, first)
        else:
            for index, arg in enumerate(args, first):
                self.check_pieces(f"{key}[{index}]", arg, arg, SEARCH,
                                  f"an argument of {name} (a program ppml-image does not "
                                  "model: its paths are taken as code)")

    def python(self, key: str, args: list[str], first: int) -> None:
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                index += 1
                break
            if arg == "-":
                raise _Refused("python - reads its program from standard input, which the "
                               "host controls")
            if arg.startswith("--"):
                if arg not in ("--check-hash-based-pycs",):
                    raise _Refused(f"python option {arg!r} is not modelled: refused")
                index += 2
                continue
            if not arg.startswith("-"):
                break
            index = self._python_flags(key, args, index, first)
            if index < 0:
                # -m: a module from sys.path, whose first entry is the working folder.
                self._check(key, args, self.view.start_dir, SEARCH,
                            "python -m imports from the working folder")
                return
            index += 1
        if index >= len(args):
            raise _Refused("python without a script reads its program from standard input, "
                           "which the host controls")
        script = args[index]
        self._check(f"{key}[{first + index}]", script, script, CODE, "the script python runs")
        self._check(f"{key}[{first + index}]", script, posixpath.dirname(self.absolute(script)),
                    SEARCH, "python imports from its script's folder")
        self.data(key, args[index + 1:], first + index + 1)

    def _python_flags(self, key: str, args: list[str], index: int, first: int) -> int:
        """One word of python's short options; the index of its last word (-1: -m)."""
        letters = args[index][1:]
        for pos, letter in enumerate(letters):
            if letter == "c":
                raise _Refused("python -c runs code from a string, which cannot be checked: "
                               "put it in a trusted script")
            if letter == "i":
                raise _Refused("python -i reads code from standard input, which the host "
                               "controls")
            if letter == "m":
                return -1
            if letter in "WX":
                value = letters[pos + 1:]
                if not value:
                    index += 1
                    if index >= len(args):
                        raise _Refused(f"python -{letter} lacks its value")
                    value = args[index]
                self.check_pieces(f"{key}[{first + index}]", value, value, SEARCH,
                                  f"the value of python -{letter}")
                return index
            if letter not in "bBdEhIOPqRsSuvVx?":
                raise _Refused(f"python option -{letter} is not modelled: refused")
        return index

    def data(self, key: str, args: list[str], first: int) -> None:
        for index, arg in enumerate(args, first):
            self.check_pieces(f"{key}[{index}]", arg, arg, DATA, "an argument")

    _JAVA_WITH_VALUE = frozenset({"-cp", "-classpath", "--class-path", "-p", "--module-path",
                        "--upgrade-module-path", "--add-modules", "--limit-modules",
                        "--add-exports", "--add-opens", "--add-reads", "--patch-module",
                        "--enable-native-access", "--source"})

    def java(self, key: str, args: list[str], first: int) -> None:
        index = self.java_options(key, None, args, first)
        if index >= len(args):
            return
        arg = args[index]
        if arg in ("-jar",):
            index += 1
            if index >= len(args):
                raise _Refused("java -jar lacks its jar")
            self._check(f"{key}[{first + index}]", args[index], args[index], CODE,
                        "the jar java runs")
        elif arg in ("-m", "--module"):
            index += 1
        elif "/" in arg or arg.endswith(".java"):
            self._check(f"{key}[{first + index}]", arg, arg, CODE, "the source file java runs")
        self.data(key, args[index + 1:], first + index + 1)

    def java_options(self, key: str, whole: str | None, args: list[str],
                     first: int = 0) -> int:
        """Check java options; returns the index of the first word that is not one."""
        index = 0
        while index < len(args):
            arg = args[index]
            where = key if whole is not None else f"{key}[{first + index}]"
            shown = whole if whole is not None else arg
            if not arg.startswith("-") or arg in ("-jar", "-m", "--module"):
                if whole is not None:
                    raise _Refused(f"{arg!r} is not a java option")
                return index
            if arg.startswith("@"):
                raise _Refused(f"java {arg}: an argument file, which cannot be checked")
            if re.search(r"On(OutOfMemory)?Error", arg):
                raise _Refused(f"java {arg.split('=')[0]} runs a command: refused")
            if arg.startswith(("-agentlib:", "-Xrun", "-Xdebug")):
                raise _Refused(f"java {arg.split('=')[0]} loads a native agent (jdwp lets the "
                               "host debug the JVM): refused")
            if arg in self._JAVA_WITH_VALUE:
                index += 1
                if index >= len(args):
                    raise _Refused(f"java {arg} lacks its value")
                value = args[index]
                where = key if whole is not None else f"{key}[{first + index}]"
                role_pieces = value.split(":") if arg in ("-cp", "-classpath",
                                                            "--class-path", "-p",
                                                            "--module-path",
                                                            "--upgrade-module-path") else []
                for piece in role_pieces:
                    piece = piece[:-2] if piece.endswith("/*") else piece
                    if piece:
                        self._check(where, whole or value, piece, SEARCH,
                                    f"on java's {arg} (code)")
                if not role_pieces:
                    self.check_pieces(where, whole or value, value, SEARCH, f"java {arg}")
            elif arg.startswith(("-javaagent:", "-agentpath:")):
                target = arg.split(":", 1)[1].split("=", 1)[0]
                self._check(where, shown, target, CODE, "a java agent (code)")
            else:
                self.check_pieces(where, shown, arg, SEARCH, f"the java option {arg[:40]}")
            index += 1
        return index

    # -- shells ----------------------------------------------------------------
    def shell(self, key: str, args: list[str], first: int) -> None:
        index = 0
        command: str | None = None
        while index < len(args):
            arg = args[index]
            if arg in ("--norc", "--noprofile", "--posix", "--noediting", "--"):
                index += 1
                if arg == "--":
                    break
                continue
            if arg.startswith("--") or arg.startswith("+"):
                raise _Refused(f"shell option {arg!r} is not modelled: refused")
            if not arg.startswith("-") or arg == "-":
                break
            for letter in arg[1:]:
                if letter == "c":
                    command = "pending"
                elif letter in "oO":
                    index += 1  # an option name, not a path
                elif letter in "is":
                    raise _Refused(f"a shell with -{letter} reads commands from standard "
                                   "input, which the host controls")
                elif letter == "l":
                    raise _Refused("a login shell (-l) runs the profiles in /etc and HOME")
                elif letter not in "abefhkmnptuvxBCEHPTr":
                    raise _Refused(f"shell option -{letter} is not modelled: refused")
            index += 1
        if command == "pending":
            if index >= len(args):
                raise _Refused("shell -c lacks its command string")
            self.shell_string(f"{key}[{first + index}]", args[index])
            self.data(key, args[index + 1:], first + index + 1)
            return
        if index >= len(args) or args[index] == "-":
            raise _Refused("a shell without a script or -c reads commands from standard "
                           "input, which the host controls")
        self._check(f"{key}[{first + index}]", args[index], args[index], CODE,
                    "the script the shell runs")
        self.data(key, args[index + 1:], first + index + 1)

    def shell_string(self, key: str, text: str) -> None:
        try:
            commands = _shell_commands(text)
        except _Refused as exc:
            self._add(key, text, f"{exc}; run a trusted script instead of a -c string")
            return
        for words in commands:
            self.shell_command(key, text, words)

    def shell_command(self, key: str, text: str, words: list[str]) -> None:
        path_env = _env_text(self.view.env.get("PATH"))
        while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            name, _, value = words.pop(0).partition("=")
            self._shell_assignment(key, text, name, value)
            if name == "PATH":
                path_env = value
        if not words:
            return
        word, args = words[0], words[1:]
        if word == "exec":
            if args and args[0].startswith("-"):
                self._add(key, text, "exec with options is not modelled")
                return
            self.shell_command(key, text, args)
            return
        if word == "export":
            for arg in args:
                name, sep, value = arg.partition("=")
                if sep:
                    self._shell_assignment(key, text, name, value)
            return
        if word in ("source", "."):
            if not args:
                return
            self._shell_program(key, text, args[0], path_env, "the file the shell sources")
            self.check_words(key, text, args[1:])
            return
        if word in _HARMLESS_BUILTINS:
            self.check_words(key, text, args)
            return
        if word in _UNMODELLED_SHELL_WORDS:
            self._add(key, text, f"the shell word {word!r} is not modelled; run a trusted "
                      "script instead")
            return
        program = self._shell_program(key, text, word, path_env, "a program the shell runs")
        if program is None:
            return
        try:
            self.program(key, program, args, 0)
        except _Refused as exc:
            self._add(key, text, f"{word}: {exc}")

    def check_words(self, key: str, text: str, args: list[str]) -> None:
        for arg in args:
            self.check_pieces(key, text, arg, SEARCH, "a word of a -c string (taken as code)")

    def _shell_assignment(self, key: str, text: str, name: str, value: str) -> None:
        if name.startswith("BASH_FUNC_"):
            self._add(key, text, f"{name}: BASH_FUNC_* defines shell functions")
            return
        before = len(self.found)
        self.env_value(key, name, value)
        for index in range(before, len(self.found)):
            found = self.found[index]
            self.found[index] = Violation(found.key, _show(text), f"{name}={value!r}: "
                                          + found.reason)

    def _shell_program(self, key: str, text: str, word: str, path_env: str | None,
                       what: str) -> str | None:
        if "/" in word:
            problem = self.problem(word, CODE)
            if problem:
                self._add(key, text, f"{word!r} ({what}): {problem}")
                return None
            return self.absolute(word)
        if path_env is None:
            self._add(key, text, f"{word!r} ({what}) is looked up in PATH, which the manifest "
                      "does not set: write its full path")
            return None
        for folder in path_env.split(":"):
            if not folder.startswith("/"):
                self._add(key, text, f"{word!r} ({what}) is looked up in PATH, which has the "
                          f"relative folder {folder!r}: write its full path")
                return None
            candidate = _norm(f"{folder}/{word}")
            mount, host = self.view.host_path(candidate)
            if host is not None and self.view.is_trusted(host) \
                    and not self.view.allowed_over(host):
                return candidate
            problem = self.problem(candidate, CODE)
            if mount.kind != "chroot" or (host is not None and self.view.allowed_over(host)):
                self._add(key, text, f"{word!r} ({what}) may be found as {problem}")
                return None
        self._add(key, text, f"{word!r} ({what}) is a trusted file in no PATH folder "
                  f"({path_env}): write its full path, and trust that file")
        return None


_HARMLESS_BUILTINS = {"echo", "printf", "true", "false", ":", "exit", "set", "shift", "wait"}
_UNMODELLED_SHELL_WORDS = {
    "eval", "cd", "pushd", "popd", "trap", "alias", "enable", "builtin", "command", "hash",
    "read", "mapfile", "readarray", "declare", "typeset", "local", "unset", "shopt", "ulimit",
    "umask", "type", "fc", "history", "if", "then", "else", "elif", "fi", "for", "while",
    "until", "do", "done", "case", "esac", "function", "select", "time", "coproc", "[[", "]]",
    "!", "{", "}", "let", "getopts", "bind", "complete", "caller", "source_path", "env",
    "xargs", "nohup", "sudo", "su", "chroot", "busybox"}
_SHELL_SPECIAL = set("$`<>(){}*?[]~#!\\\n")
_WORD_CHARS = re.compile(r"[A-Za-z0-9_./:=,@%+-]")


def _shell_commands(text: str) -> list[list[str]]:
    """Simple commands of a shell string, read conservatively.

    Words of plain characters, single quotes and double quotes without
    expansions; ``;``, ``&&``, ``||``, ``|`` and ``&`` separate commands.
    Anything else (expansions, redirections, globs, escapes, subshells) is
    refused: its meaning depends on what runs.
    """
    commands: list[list[str]] = [[]]
    word: list[str] | None = None
    index = 0
    while index < len(text):
        char = text[index]
        if char in " \t":
            if word is not None:
                commands[-1].append("".join(word))
                word = None
            index += 1
            continue
        if char in ";|&":
            if word is not None:
                commands[-1].append("".join(word))
                word = None
            commands.append([])
            index += 2 if text[index:index + 2] in ("&&", "||") else 1
            continue
        if char == "'":
            end = text.find("'", index + 1)
            if end < 0:
                raise _Refused("an unbalanced quote")
            word = (word or []) + [text[index + 1:end]]
            index = end + 1
            continue
        if char == '"':
            end = text.find('"', index + 1)
            if end < 0:
                raise _Refused("an unbalanced quote")
            inner = text[index + 1:end]
            if set(inner) & set("$`\\!"):
                raise _Refused("an expansion inside double quotes")
            word = (word or []) + [inner]
            index = end + 1
            continue
        if char in _SHELL_SPECIAL or not _WORD_CHARS.match(char):
            raise _Refused(f"shell syntax {char!r} that ppml-image does not model")
        word = (word or []) + [char]
        index += 1
    if word is not None:
        commands[-1].append("".join(word))
    return [c for c in commands if c]


def named_policy_files() -> Iterable[Path]:
    """The shipped ``manifests/*.policy.toml`` files."""
    from ppml_image.resources import data_dir

    return sorted(data_dir("manifests").glob(f"*{POLICY_SUFFIX}"))
