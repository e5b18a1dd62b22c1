"""The release policy: what a production enclave's manifest must not contain.

``--release`` (``sign``, ``build-custom``, ``sign-image``) refuses a manifest
that breaks it, and ``verify`` reports the same violations. Each rule closes
a way for the host, which SGX does not trust, to see or change what runs:

* ``sgx.debug = true``: the host can read and write enclave memory.
* any ``insecure__`` key: Gramine's own name for options that give the host
  control (command line, environment, keys, ...).
* ``sgx.file_check_policy = "allow_all_but_log"``: unmeasured files are
  opened anyway, so the host can swap libraries and scripts.
* an ``sgx.allowed_files`` entry that is a folder (everything below it is
  unmeasured), or that names code: shared objects, Python, Java, scripts,
  archives Python imports from, programs in a ``bin`` folder, the dynamic
  loader's or the JVM's configuration, the LibOS entrypoint, a file named on
  the measured command line (``loader.argv``: what an interpreter runs) or
  in a variable that chooses code (``loader.env.LD_PRELOAD = "/x.so"``);
  and an ``sgx.allowed_files`` that is not a list of ``file:`` URIs, which
  cannot be checked.
* ``loader.env.NAME = { passthrough = true }`` for a variable that chooses
  code (``LD_PRELOAD``, ``PYTHONPATH``, ``JAVA_TOOL_OPTIONS``, ...).
* ``loader.argv_src_file`` or ``loader.env_src_file`` that is not a trusted
  file: the host would write the measured command line or environment.

Read-only data the enclave cannot execute (``/etc/hosts``, ``/etc/passwd``,
input files) may be an allowed file: it is not flagged.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ppml_image.errors import PolicyError
from ppml_image.sgx.measure.tree import DIR, Tree

# File names the enclave executes, imports or hands to a loader.
_CODE_SUFFIXES = (".so", ".py", ".pyc", ".pyo", ".pyd", ".pyz", ".pyw", ".pth", "._pth",
                  ".egg", ".whl", ".zip", ".jar", ".class", ".jmod", ".jsa", ".war", ".ear",
                  ".sh", ".bash", ".pl", ".pm", ".rb", ".js", ".mjs", ".cjs", ".node", ".lua",
                  ".php", ".tcl", ".r", ".ko", ".a", ".o")
_VERSIONED_SO = re.compile(r"\.so(\.\d+)+$")
_LOADER_FILES = ("ld.so.preload", "ld.so.cache", "ld.so.conf", "ld.so.conf.d")
# Code or code-choosing files without a telling suffix: the JDK's class image
# and VM/security configuration, Python's site hooks and virtual-env home.
_CODE_NAMES = ("modules", "jvm.cfg", "java.security", "java.policy", "pyvenv.cfg",
               "sitecustomize", "usercustomize")
_BIN_FOLDERS = ("bin", "sbin", "libexec")
# Environment variables that decide which code a process loads.
_CODE_ENV = re.compile(
    r"^(LD_.*|PYTHON.*|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|CLASSPATH|"
    r"BASH_ENV|ENV|SHELLOPTS|PERL5LIB|PERL5OPT|PERLLIB|NODE_OPTIONS|NODE_PATH|RUBYOPT|"
    r"RUBYLIB|GCONV_PATH|PATH|SPARK_.*|HADOOP_.*|MALLOC_.*|GLIBC_TUNABLES)\Z")


@dataclass(frozen=True)
class Violation:
    """One way a manifest breaks the release policy."""

    key: str
    value: str
    reason: str
    debug: bool = False  # the debug flag, which `verify --allow-debug` accepts

    def __str__(self) -> str:
        return f"{self.key} = {self.value} ({self.reason})"


def release_violations(manifest: dict[str, Any], tree: Tree | None = None) -> list[Violation]:
    """Every release-policy violation in *manifest*, in a stable order.

    With a *tree* (the enclave's file system), allowed files are also checked
    for being folders by what they are, not only by how they are written.
    """
    found: list[Violation] = []
    sgx = manifest.get("sgx", {}) if isinstance(manifest.get("sgx"), dict) else {}
    if sgx.get("debug") is True:
        found.append(Violation("sgx.debug", "true", "a debug enclave's memory is readable "
                               "and writable by the host", debug=True))
    found += [Violation(key, _show(value), "an insecure__ option gives the host control")
              for key, value in _insecure_keys(manifest, "")]
    if sgx.get("file_check_policy") == "allow_all_but_log":
        found.append(Violation("sgx.file_check_policy", '"allow_all_but_log"',
                               "files that are not trusted are opened anyway"))
    found += _allowed_file_violations(manifest, tree)
    found += _loader_violations(manifest)
    return found


def enforce_release(manifest: dict[str, Any], name: str, tree: Tree | None = None) -> None:
    """Raise :class:`PolicyError` naming every violation, if there is any."""
    violations = release_violations(manifest, tree)
    if violations:
        raise PolicyError(f"{name}: refused by the release policy: "
                          + "; ".join(str(v) for v in violations))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _insecure_keys(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Every key path whose last part starts with ``insecure__`` (tables in arrays too)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if str(key).startswith("insecure__"):
                yield path, value
            else:
                yield from _insecure_keys(value, path)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _insecure_keys(item, f"{prefix}[{index}]")


def _allowed_file_violations(manifest: dict[str, Any], tree: Tree | None) -> list[Violation]:
    sgx = manifest.get("sgx", {})
    allowed = sgx.get("allowed_files", []) if isinstance(sgx, dict) else []
    if not isinstance(allowed, list):
        return [Violation("sgx.allowed_files", _show(allowed),
                          "must be a list of file: URIs (cannot be checked)")]
    libos = manifest.get("libos")
    entrypoint = libos.get("entrypoint") if isinstance(libos, dict) else None
    executed = _executed_paths(manifest)
    found = []
    for index, uri in enumerate(allowed):
        key = f"sgx.allowed_files[{index}]"
        if not isinstance(uri, str):
            found.append(Violation(key, _show(uri), "not a file: URI (cannot be checked)"))
            continue
        reason = _allowed_file_problem(uri, entrypoint, executed, tree)
        if reason:
            found.append(Violation(key, f'"{uri}"', reason))
    return found


def _normal(path: str) -> str:
    """``/app//lib/./x`` -> ``/app/lib/x`` (as Gramine normalises a path)."""
    return posixpath.normpath(path) if path else path


def _executed_paths(manifest: dict[str, Any]) -> dict[str, str]:
    """Paths the measured command line runs and code-choosing variables name.

    The program (``argv[0]``) and its first non-option argument, which an
    interpreter runs whatever its suffix (``python3 /app/main``, ``bash
    /app/run``); the first word of a ``-c`` command. Later arguments are
    usually data (``--input /data/x.csv``) and are not flagged. Values of
    ``LD_PRELOAD``, ``PYTHONPATH`` and the like set in the manifest name code.
    """
    loader = manifest.get("loader")
    loader = loader if isinstance(loader, dict) else {}
    found: dict[str, str] = {}
    argv = loader.get("argv")
    for word in _program_words(argv if isinstance(argv, list) else []):
        found.setdefault(_normal(word), "run by the measured command line (loader.argv): "
                         "the enclave executes it")
    env = loader.get("env")
    for name, value in (env.items() if isinstance(env, dict) else []):
        text = value.get("value") if isinstance(value, dict) else value
        if not isinstance(text, str) or not _CODE_ENV.match(str(name)):
            continue
        for word in re.split(r"[\s:;=,]+", text):
            if word.startswith("/"):
                found.setdefault(_normal(word), f"named by loader.env.{name}, which chooses "
                                 "code the enclave loads")
    return found


def _program_words(argv: list[Any]) -> list[str]:
    words = [a for a in argv if isinstance(a, str)]
    programs = words[:1]
    rest = words[1:]
    for index, arg in enumerate(rest):
        if arg == "-c" and index + 1 < len(rest):
            try:
                programs += shlex.split(rest[index + 1])[:1]
            except ValueError:  # unbalanced quotes: the first word anyway
                programs += rest[index + 1].split()[:1]
            break
        if not arg.startswith("-"):
            programs.append(arg)
            break
    return [p for p in programs if p.startswith("/")]


def _allowed_file_problem(uri: str, entrypoint: Any, executed: dict[str, str],
                          tree: Tree | None) -> str | None:
    raw = uri[len("file:"):] if uri.startswith("file:") else uri
    if raw.endswith("/") or raw in ("", "."):
        return "a folder: everything below it is unmeasured"
    path = _normal(raw)
    if tree is not None and posixpath.isabs(path) and tree.kind(path) == DIR:
        return "a folder: everything below it is unmeasured"
    name = posixpath.basename(path)
    lower = name.lower()
    parent = posixpath.basename(posixpath.dirname(path))
    if isinstance(entrypoint, str) and path == _normal(entrypoint):
        return "the LibOS entrypoint is what the enclave executes"
    if path in executed:
        return executed[path]
    if lower.endswith(_CODE_SUFFIXES) or _VERSIONED_SO.search(lower):
        return "code the enclave executes or imports must be a trusted file"
    if parent in _BIN_FOLDERS:
        return "a program the enclave may execute must be a trusted file"
    if name in _LOADER_FILES or parent == "ld.so.conf.d":
        return "the dynamic loader's configuration chooses which code is loaded"
    if lower in _CODE_NAMES or lower.startswith(_CODE_NAMES[-2:]):
        return "it chooses or holds code the enclave runs (JDK modules or configuration, " \
               "Python site hooks)"
    return None


def _loader_violations(manifest: dict[str, Any]) -> list[Violation]:
    loader = manifest.get("loader", {})
    if not isinstance(loader, dict):
        return []
    found = []
    env = loader.get("env", {})
    for name, value in (env.items() if isinstance(env, dict) else []):
        if isinstance(value, dict) and value.get("passthrough") is True \
                and _CODE_ENV.match(str(name)):
            found.append(Violation(f"loader.env.{name}", "{ passthrough = true }",
                                   "the host would choose code the enclave loads"))
    sgx = manifest.get("sgx", {})
    trusted = {tf.get("uri") if isinstance(tf, dict) else tf
               for tf in (sgx.get("trusted_files", []) if isinstance(sgx, dict) else [])}
    for key in ("argv_src_file", "env_src_file"):
        uri = loader.get(key)
        if uri is not None and uri not in trusted:
            found.append(Violation(f"loader.{key}", _show(uri), "not a trusted file: the host "
                                   "would write what the enclave runs with"))
    return found
