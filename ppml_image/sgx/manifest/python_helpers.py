"""The ``python.*`` globals of manifest templates, as Gramine 1.9 gives them.

Gramine's ``gramine-manifest`` answers ``python.stdlib``, ``get_path``,
``get_config_var``... from the ``sysconfig`` of its own Python, and
``python.get_sys_path(interpreter)`` runs *interpreter* and yields a
``pathlib.Path`` for each ``sys.path`` entry that exists; templates call
``.is_dir()`` on them. Here the same answers come from a *snapshot* (see
:mod:`ppml_image.sgx.manifest.python_snapshot`) of one of two places:

* the host (``ppml-image manifest``): this process's Python, the host's file
  system. ``get_sys_path(PATH)`` runs PATH, as Gramine does, only when the
  user named that same PATH on the command line (``--python PATH``), or PATH
  is the interpreter ``manifest`` itself runs on: a template never chooses
  a program to run. It runs confined (:mod:`ppml_image._confined`);
* an image (``build-custom``): what ``build-base`` recorded inside the base
  image. Nothing runs: ``get_sys_path`` answers for the interpreter names
  the image recorded, and ``.is_dir()``/``.exists()`` answer from the
  record, because the paths are the image's, not the host's.

Paths are :class:`TargetPath` objects: pure paths (``/``, ``.name``,
``str()``) plus ``is_dir()``, ``exists()`` and ``is_file()``, and nothing
that reads or changes a file: a template is data.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import PurePath, PurePosixPath
from typing import Any, ClassVar, NamedTuple

import jinja2

from ppml_image._confined import Output, run_confined
from ppml_image.sgx.manifest import python_snapshot
from ppml_image.sgx.manifest.python_snapshot import KINDS, path_key

MAX_OUTPUT = 1 << 20  # bytes an interpreter may print for its sys.path
TIMEOUT = 60.0  # seconds an interpreter may take to print it
MAX_INTERPRETERS = 16  # different interpreters one template may run
_FORMAT_FIELD = re.compile(r"\{([^{}]*)\}")


class TemplateHelperError(jinja2.TemplateRuntimeError):
    """A ``python.*`` helper cannot answer: one line, naming the call."""


# --------------------------------------------------------------------------
# Paths that know their file system
# --------------------------------------------------------------------------
class FileKinds:
    """Where ``is_dir()``/``exists()`` find their answer."""

    where = "the host"

    def kind(self, path: str) -> str | None:
        """``dir``, ``file``, ``other``, ``missing``, or None when unknown."""
        return python_snapshot.kind_of(path)


class RecordedKinds(FileKinds):
    """Answers recorded in an image: a path that was not recorded is unknown."""

    def __init__(self, kinds: Mapping[str, str], where: str) -> None:
        self.kinds = dict(kinds)
        self.where = where

    def kind(self, path: str) -> str | None:
        return self.kinds.get(path)


class TargetPath(PurePosixPath):
    """A path in the target file system (the host's, or an image's).

    Each :class:`PythonInfo` makes its own subclass that carries the file
    system (a class attribute, so ``/`` and ``.parent`` keep it).
    """

    _kinds: ClassVar[FileKinds] = FileKinds()

    def _kind(self, method: str) -> str:
        kind = self._kinds.kind(path_key(str(self)))
        if kind is None:
            raise TemplateHelperError(
                f"{_shown(str(self))}.{method}(): {self._kinds.where} recorded nothing about "
                "this path (only sys.path entries and python.* paths are recorded)")
        return kind

    def is_dir(self) -> bool:
        return self._kind("is_dir") == "dir"

    def is_file(self) -> bool:
        return self._kind("is_file") == "file"

    def exists(self) -> bool:
        return self._kind("exists") != "missing"


def _shown(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= 80 else text[:77] + "...")


# --------------------------------------------------------------------------
# Running an interpreter on the host, bounded
# --------------------------------------------------------------------------
def run_bounded(argv: list[str], *, limit: int = MAX_OUTPUT,
                timeout: float = TIMEOUT) -> Output:
    """Run *argv* confined (:func:`ppml_image._confined.run_confined`): without
    our secrets, stdin closed, at most *limit* bytes of output, *timeout*
    seconds and ``CPU_SECONDS`` of CPU; its whole process group, and any
    session it starts, is killed when the call returns, fails or times out.
    Raises TimeoutError or OverflowError for the first two limits."""
    return run_confined(argv, limit=limit, timeout=timeout)


# --------------------------------------------------------------------------
# The helpers
# --------------------------------------------------------------------------
class PythonInfo:
    """What the ``python.*`` template helpers answer (see the module docstring).

    *data* is a snapshot (:func:`ppml_image.sgx.manifest.python_snapshot.snapshot`).
    *kinds* is where paths look themselves up; *run* says whether
    ``get_sys_path`` may run interpreters (the host) or only answers from
    ``data["sys_paths"]`` (an image).
    """

    def __init__(self, data: Mapping[str, Any], *, kinds: FileKinds | None = None,
                 run: bool = False, where: str = "the host",
                 interpreters: Iterable[str] = ()) -> None:
        self.data = check_snapshot(data, where)
        self.where = where
        self.run = run
        # What get_sys_path may run: the paths the user named (--python), and
        # the interpreter this process runs on (as started, and its real path,
        # python.executable). Never a name a template makes.
        ours = [sys.executable, self.data["executable"]]
        self.interpreters = frozenset([*interpreters, *filter(None, ours)] if run else ())
        self.path: type[TargetPath] = type("TargetPath", (TargetPath,),
                                           {"_kinds": kinds or FileKinds()})
        self._ran: dict[str, list[str]] = {}

    # -- constructors --------------------------------------------------------
    @classmethod
    def from_host(cls, interpreters: Iterable[str] = ()) -> PythonInfo:
        """This process's Python and the host's file system, as gramine-manifest;
        ``get_sys_path`` may run exactly the *interpreters* the user named."""
        return cls(python_snapshot.snapshot(run_interpreters=False), run=True,
                   interpreters=interpreters)

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any], where: str = "the image") -> PythonInfo:
        """The answers an image recorded: nothing runs, nothing is read from the host."""
        kinds = data.get("kinds")
        return cls(data, kinds=RecordedKinds(kinds if isinstance(kinds, dict) else {}, where),
                   where=where)

    # -- Gramine's helpers ---------------------------------------------------
    def globals(self) -> dict[str, Any]:
        paths = self.data["paths"]
        stdlib = paths.get("stdlib", "/usr/lib/python3")
        return {
            "stdlib": self.path(stdlib),
            "platstdlib": self.path(paths.get("platstdlib", stdlib)),
            "purelib": self.path(paths.get("purelib", stdlib)),
            "distlib": self.path(self._distlib()),
            "get_config_var": self.get_config_var,
            "ext_suffix": self.get_config_var("EXT_SUFFIX"),
            "get_path": self.get_path,
            "get_paths": self.get_paths,
            "implementation": self._implementation(),
            "get_sys_path": self.get_sys_path,
            # An extension of Gramine's helpers: the interpreter's real path.
            "executable": self.path(self.data["executable"]) if self.data["executable"]
            else None,
        }

    def get_config_var(self, name: str) -> Any:
        """``sysconfig.get_config_var(name)``: the value, or None."""
        return self.data["config_vars"].get(name) if isinstance(name, str) else None

    def get_paths(self, scheme: str | None = None, vars: Mapping[str, Any] | None = None,
                  expand: bool = True) -> dict[str, str]:
        """``sysconfig.get_paths(scheme, vars, expand)``: a dict of strings."""
        if scheme is None and vars is None and expand:
            return dict(self.data["paths"])
        scheme = self.data.get("default_scheme") if scheme is None else scheme
        schemes = self.data.get("schemes")
        if not isinstance(schemes, dict) or not schemes:
            raise TemplateHelperError(
                f"python.get_paths({_shown(scheme)}): {self.where} recorded only the default "
                "paths: rebuild the base image with this ppml-image")
        if not isinstance(scheme, str) or scheme not in schemes:
            known = ", ".join(sorted(schemes))
            raise TemplateHelperError(f"python.get_paths: no scheme {_shown(scheme)} "
                                      f"(known: {known})")
        templates: dict[str, str] = schemes[scheme]
        if not expand:
            return dict(templates)
        values = {**self.data["config_vars"], **dict(vars or {})}
        # "~" is a home folder of the host; only the host's answers may use it.
        return {key: _expand(os.path.expanduser(template) if self.run else template, values, key)
                for key, template in templates.items()}

    def get_path(self, name: str, scheme: str | None = None,
                 vars: Mapping[str, Any] | None = None,
                 expand: bool = True) -> str:
        """``sysconfig.get_path(name, ...)``: a string, as Gramine gives it."""
        paths = self.get_paths(scheme, vars, expand)
        if not isinstance(name, str) or name not in paths:
            known = ", ".join(sorted(paths))
            raise TemplateHelperError(
                f"python.get_path({_shown(name)}): no such path (known: {known})")
        return paths[name]

    def get_sys_path(self, interpreter: str | PurePath,
                     include_nonexisting: bool = False) -> Iterator[TargetPath]:
        """The interpreter's ``sys.path`` entries that exist (all, with
        *include_nonexisting*), as paths, in its order; like Gramine, an
        iterator that can be read once."""
        if isinstance(interpreter, PurePath):
            interpreter = str(interpreter)
        if not isinstance(interpreter, str) or not interpreter or "\0" in interpreter:
            raise TemplateHelperError(f"python.get_sys_path({_shown(interpreter)}): the "
                                      "interpreter must be a path or a command name")
        entries = self._run(interpreter) if self.run else self._recorded(interpreter)
        paths = [self.path(entry) for entry in entries]
        return iter([p for p in paths if include_nonexisting or p.exists()])

    # -- internals -----------------------------------------------------------
    def _distlib(self) -> str:
        recorded = self.data.get("distlib")
        if isinstance(recorded, str):
            return recorded
        major = str(self.data["config_vars"].get("py_version_short", "3")).split(".")[0]
        stdlib = PurePosixPath(self.data["paths"].get("stdlib", "/usr/lib/python3"))
        return str(stdlib.parent / f"python{major}" / "dist-packages")

    def _implementation(self) -> Any:
        recorded = self.data.get("implementation")
        if not isinstance(recorded, dict):
            return None
        return _Implementation(recorded)

    def _recorded(self, interpreter: str) -> list[str]:
        answers = self.data.get("sys_paths")
        if not isinstance(answers, dict) or not answers:
            raise TemplateHelperError(
                f"python.get_sys_path({_shown(interpreter)}): {self.where} recorded no "
                "interpreter's sys.path: rebuild the base image with this ppml-image")
        if interpreter not in answers:
            raise TemplateHelperError(
                f"python.get_sys_path({_shown(interpreter)}): not an interpreter "
                f"{self.where} recorded (build-custom runs nothing; recorded: "
                f"{', '.join(sorted(answers))})")
        return list(answers[interpreter])

    def _run(self, interpreter: str) -> list[str]:
        if interpreter in self._ran:
            return self._ran[interpreter]
        if interpreter not in self.interpreters:
            raise TemplateHelperError(
                f"python.get_sys_path({_shown(interpreter)}): a template cannot choose a "
                "program to run; to run it, name the same path with manifest --python")
        if len(self._ran) >= MAX_INTERPRETERS:
            raise TemplateHelperError(f"python.get_sys_path: the template runs more than "
                                      f"{MAX_INTERPRETERS} different interpreters")
        call = f"python.get_sys_path({_shown(interpreter)})"
        try:
            result = run_bounded([interpreter, "-c", python_snapshot.SYS_PATH_CODE],
                                 timeout=TIMEOUT)
        except TimeoutError:
            raise TemplateHelperError(f"{call}: the interpreter did not answer within "
                                      f"{TIMEOUT:.0f} s") from None
        except OverflowError:
            raise TemplateHelperError(f"{call}: the interpreter printed more than "
                                      f"{MAX_OUTPUT >> 20} MiB") from None
        except OSError as exc:
            raise TemplateHelperError(f"{call}: cannot run it: "
                                      f"{exc.strerror or type(exc).__name__}") from None
        if result.returncode != 0:
            last = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            why = f": {' '.join(last[0].split())[:160]}" if last else ""
            raise TemplateHelperError(f"{call}: the interpreter exited with status "
                                      f"{result.returncode}{why}")
        self._ran[interpreter] = python_snapshot.split_sys_path(result.stdout)
        return self._ran[interpreter]


class _VersionInfo(NamedTuple):
    major: int
    minor: int
    micro: int
    releaselevel: str
    serial: int


class _Implementation(types.SimpleNamespace):
    """``sys.implementation`` as recorded; prints as the interpreter printed it."""

    def __init__(self, recorded: Mapping[str, Any]) -> None:
        version = recorded.get("version")
        super().__init__(
            name=recorded.get("name"), cache_tag=recorded.get("cache_tag"),
            version=_VersionInfo(*version) if isinstance(version, list) and len(version) == 5
            else None, hexversion=recorded.get("hexversion"))
        self.__dict__["_text"] = str(recorded.get("repr", ""))

    def __repr__(self) -> str:
        return str(self.__dict__["_text"]) or super().__repr__()


def _expand(template: str, values: Mapping[str, Any], key: str) -> str:
    """sysconfig's expansion of one scheme path: ``{name}`` fields, then normpath."""

    def field(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise TemplateHelperError(f"python.get_paths: {key} needs {_shown(name)}, which "
                                      "is not a config variable")
        return str(values[name])

    return os.path.normpath(_FORMAT_FIELD.sub(field, template))


# --------------------------------------------------------------------------
# Checking a snapshot read from an image
# --------------------------------------------------------------------------
def check_snapshot(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The snapshot, if its fields have the types the helpers use; else ValueError."""
    problems: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    def strings(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    def string_map(value: object) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in value.items())

    need(isinstance(data, Mapping), "not an object")
    if problems:
        raise ValueError(f"{where}: python: not an object")
    need(string_map(data.get("paths")), "paths")
    need(isinstance(data.get("config_vars"), dict), "config_vars")
    need(isinstance(data.get("executable", ""), str), "executable")
    schemes = data.get("schemes", {})
    need(isinstance(schemes, dict) and all(string_map(v) for v in schemes.values()), "schemes")
    sys_paths = data.get("sys_paths", {})
    need(isinstance(sys_paths, dict) and all(strings(v) for v in sys_paths.values()),
         "sys_paths")
    kinds = data.get("kinds", {})
    need(isinstance(kinds, dict) and all(v in KINDS for v in kinds.values()), "kinds")
    if problems:
        raise ValueError(f"malformed {', '.join(problems)}")
    result = dict(data)
    result.setdefault("executable", "")
    return result
