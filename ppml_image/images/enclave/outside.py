"""A closed world outside the enclave: an image may differ from its pinned base only
in the enclave's own files.

SGX protects what runs inside the enclave, and nothing else: ``run --keys``
mounts the keys into the container, where the launcher (``gramine-sgx``, a
bash script in Gramine), bash itself, every NSS module, locale or library it
loads, the SGX loader and whatever the engine runs (a HEALTHCHECK) run
*outside* the enclave and could read them. Listing the dangerous places
(``/usr/lib``, ``/etc/nsswitch.conf``, ...) always forgets one, so this
module allows by list instead, against a base the user pinned (``--base`` or
the measurement record; never a label):

* **content**: the whole file system of the image and of the base are
  indexed from the engine's export (kind, mode, owner, extended attributes,
  link target, SHA-256 of every file). Every path added, changed or removed
  (whiteouts included: a removed path is simply absent) must be the
  enclave's own: a trusted file of the measured manifest (its path and the
  path it resolves to), the loader's entrypoint, ``NAME.manifest``,
  ``NAME.manifest.sgx`` and ``NAME.sig``, or anything inside the
  application folder they live in (WORKDIR), *if* that folder is new (the
  base has nothing at that path) and a real folder (no symlink on the way).
  New parent folders of those paths are allowed too. Anything else is an
  offender, named.
* **configuration**: every key of the image's Config must equal the base's
  (Env, User, Entrypoint, Volumes, Shell, Healthcheck, StopSignal, OnBuild,
  ExposedPorts, and any key a future engine adds), except OnBuild (the
  base's triggers were consumed by the build; the image may have none), CMD, which must
  be exactly ``gramine-sgx NAME`` (checked by :func:`.layout.enclave_layout`
  and here), WORKDIR, labels, and ``Image`` (the builder's note of the
  parent image, which nothing runs). Missing, null and empty are the same.
* **the launcher**: the ``gramine-sgx`` the command starts must be the
  base's own file, unchanged (an absolute launcher path inside the
  application folder would otherwise be allowed as "new").

The cost is one more export of the base image (indexed as it streams, never
written to disk). :class:`BaseReading` reads it in a helper thread while the
image itself is read and measured: each export leaves a core partly idle
(the engine's tar writer and our hashing wait on each other), so on two
cores the two overlap instead of adding up.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ppml_image import _signals
from ppml_image.errors import ManifestError
from ppml_image.images.engine import imagefs
from ppml_image.images.engine.core import Engine, ImageInfo
from ppml_image.images.engine.imagefs import Entry, ImageIndex, ImageTree
from ppml_image.images.layout import EnclaveLayout
from ppml_image.sgx.manifest import document as mf
from ppml_image.sgx.measure.tree import DIR

# Config keys an image may set differently from its base (everything else must match).
EXEMPT_CONFIG = frozenset({"Cmd", "WorkingDir", "Labels", "Image", "OnBuild"})
SHOWN = 5


@dataclass
class OutsideReport:
    """Differences from the pinned base outside the enclave's own files."""

    base: ImageInfo
    problems: list[str] = field(default_factory=list)
    changed_paths: int = 0  # paths that differ from the base (all the enclave's own if ok)

    @property
    def summary(self) -> str:
        tags = f" ({', '.join(self.base.tags)})" if self.base.tags else ""
        return (f"closed world: the image differs from the pinned base {self.base.id}{tags} "
                f"only in the enclave's own files ({self.changed_paths} paths) and CMD/WORKDIR;"
                " configuration and launcher are the base's")


def path_folders(env: tuple[str, ...]) -> list[str]:
    """The absolute folders of PATH in an image's environment (the shell's default if unset)."""
    value = next((e[5:] for e in env if e.startswith("PATH=")),
                 "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return [p for p in value.split(":") if p.startswith("/")]


class BaseReading:
    """The pinned base's index, read in a helper thread from the moment it starts.

    Use as a context manager around the work it overlaps; leaving the block
    stops a reading nobody took (:class:`imagefs.Cancelled`), and waits for
    the helper, so that its temporary container is removed before we exit.
    """

    _STOP_WAIT = 40.0  # seconds: longer than removing a container may take (30 s)

    def __init__(self, engine: Engine, base: ImageInfo) -> None:
        self.base = base
        self._engine = engine.twin()
        self._cancel = threading.Event()
        self._index: ImageIndex | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="ppml-image-base", daemon=True)

    def __enter__(self) -> BaseReading:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cancel.set()
        self._thread.join(self._STOP_WAIT)

    def _read(self) -> None:
        _signals.leave_to_main_thread()
        try:
            with self._engine.open(self.base.id) as files:
                self._index = imagefs.index_image(files, cancel=self._cancel)
        except BaseException as exc:  # raised in the main thread by index()
            self._error = exc

    def index(self) -> ImageIndex:
        """The base's index, once read (waits in slices: a signal is acted on at once)."""
        while self._thread.is_alive():
            self._thread.join(_signals.WAIT_SLICE)
        if self._error is not None:
            raise self._error
        assert self._index is not None
        return self._index


def check_outside(info: ImageInfo, tree: ImageTree, manifest: dict[str, Any],
                  layout: EnclaveLayout, reading: BaseReading) -> OutsideReport:
    """Compare *info* (indexed in *tree*) with the pinned base whose index
    *reading* reads alongside (see the module docstring)."""
    base = reading.base
    report = OutsideReport(base)
    report.problems += config_differences(info, base)
    report.problems += _command_problems(layout)
    base_index = reading.index()
    base_tree = ImageTree(base_index, None, f"base {base.id[:19]}")
    differences = content_differences(tree.index, base_index)
    report.changed_paths = len(differences)
    allowed = EnclavePaths(tree, base_index, layout, manifest)
    offenders = [f"{path} {what}" for path, what in differences
                 if not allowed.admits(path, what, tree.index)]
    if offenders:
        more = f" and {len(offenders) - SHOWN} more" if len(offenders) > SHOWN else ""
        report.problems.append(
            f"{len(offenders)} path(s) outside the enclave's own files differ from the base "
            f"image: {', '.join(offenders[:SHOWN])}{more}")
    launcher = _launcher_problem(tree, base_tree, layout, info.env)
    if launcher:
        report.problems.append(launcher)
    return report


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------
def config_view(info: ImageInfo) -> dict[str, Any]:
    """Every Config key of *info* (the typed fields win: the in-memory engine has no raw one)."""
    view = dict(info.config)
    view.update({"Env": list(info.env), "User": info.user,
                 "Entrypoint": list(info.entrypoint) if info.entrypoint is not None else None,
                 "Healthcheck": info.healthcheck, "OnBuild": list(info.onbuild)})
    return view


def config_differences(info: ImageInfo, base: ImageInfo) -> list[str]:
    """One problem per Config key (not exempt) that differs from the base's."""
    mine, theirs = config_view(info), config_view(base)
    # A base's ONBUILD triggers ran when the image was built (their effect is in
    # the content, compared below); the image must carry none of its own.
    problems = [f"config OnBuild is {_short(mine['OnBuild'])}: triggers that would run in "
                "an image built FROM this one"] if mine["OnBuild"] else []
    for key in sorted((set(mine) | set(theirs)) - EXEMPT_CONFIG):
        a, b = _empty_is_none(mine.get(key)), _empty_is_none(theirs.get(key))
        if a != b:
            problems.append(f"config {key} {_difference(a, b)} (only CMD, WORKDIR and labels "
                            "may differ from the base image)")
    return problems


def _difference(mine: Any, theirs: Any) -> str:
    """How a Config value differs: the items added and removed for lists (Env)."""
    if isinstance(mine, list | type(None)) and isinstance(theirs, list | type(None)) \
            and all(isinstance(v, str) for v in (mine or []) + (theirs or [])):
        added = [v for v in mine or [] if v not in (theirs or [])]
        removed = [v for v in theirs or [] if v not in (mine or [])]
        if added or removed:
            return "differs: " + ", ".join([f"+{_short(v)}" for v in added[:SHOWN]]
                                           + [f"-{_short(v)}" for v in removed[:SHOWN]])
        return "differs in order"
    return f"is {_short(mine)} in the image but {_short(theirs)} in the base image"


def _empty_is_none(value: Any) -> Any:
    return None if value in (None, "", [], {}, (), False, 0) else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _command_problems(layout: EnclaveLayout) -> list[str]:
    if layout.arguments:
        return [f"the command passes arguments after `{layout.launcher} {layout.name}` "
                f"({list(layout.arguments)[:4]}); CMD must be exactly `gramine-sgx NAME`"]
    return []


# --------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------
def _key(entry: Entry) -> tuple[Any, ...]:
    return entry.kind, entry.link, entry.sha256, entry.mode, entry.owner, entry.xattrs


def content_differences(image: ImageIndex, base: ImageIndex) -> list[tuple[str, str]]:
    """Every path added, changed or removed in *image* relative to *base*, sorted."""
    found = []
    for path in sorted(set(image.entries) | set(base.entries)):
        mine, theirs = image.entries.get(path), base.entries.get(path)
        if theirs is None:
            found.append((path, "added"))
        elif mine is None:
            found.append((path, "removed"))
        elif _key(mine) != _key(theirs):
            found.append((path, "changed"))
    return found


class EnclavePaths:
    """The paths an image may add or change: the enclave's own (see the module docstring)."""

    def __init__(self, tree: ImageTree, base: ImageIndex, layout: EnclaveLayout,
                 manifest: dict[str, Any]) -> None:
        named = [layout.manifest, layout.manifest_sgx, layout.sig,
                 *self._manifest_paths(manifest, layout)]
        self.files: set[str] = set()
        for path in named:
            self.files.add(path)
            with contextlib.suppress(ManifestError):  # unresolvable: measuring reports it
                self.files.add(tree.resolve(path))
        self.parents = {parent for path in self.files for parent in _ancestors(path)}
        folder = layout.folder
        # The application folder is the enclave's only if the image made it: a new,
        # real folder (never "/", never a base folder such as /usr/lib).
        self.folder = folder if (folder != "/" and folder not in base.entries
                                 and tree.lstat_kind(folder) == DIR
                                 and _resolves_to_itself(tree, folder)) else None

    @staticmethod
    def _manifest_paths(manifest: dict[str, Any], layout: EnclaveLayout) -> Iterable[str]:
        entries = list(manifest.get("sgx", {}).get("trusted_files", []))
        entrypoint = manifest.get("loader", {}).get("entrypoint")
        if isinstance(entrypoint, dict):
            entries.append(entrypoint)
        for entry in entries:
            uri = str(entry.get("uri") if isinstance(entry, dict) else entry)
            try:
                path = mf.uri_to_path(uri, layout.manifest_sgx)
            except ManifestError:
                continue
            yield path if path.startswith("/") else posixpath.normpath(
                posixpath.join(layout.folder, path))

    def admits(self, path: str, what: str, index: ImageIndex) -> bool:
        if what == "removed":
            return False  # the base's files are never the enclave's to remove
        if path in self.files:
            return True
        if self.folder is not None and (path == self.folder
                                        or path.startswith(self.folder + "/")):
            return True
        # A new folder on the way to one of the enclave's files.
        entry = index.entries.get(path)
        return what == "added" and entry is not None and entry.kind == DIR \
            and path in self.parents


def _ancestors(path: str) -> Iterable[str]:
    parent = posixpath.dirname(path)
    while parent not in ("/", ""):
        yield parent
        parent = posixpath.dirname(parent)


def _resolves_to_itself(tree: ImageTree, path: str) -> bool:
    try:
        return tree.resolve(path) == path
    except ManifestError:
        return False


def _launcher_problem(tree: ImageTree, base: ImageTree, layout: EnclaveLayout,
                      env: tuple[str, ...]) -> str:
    """The launcher must be the base's own, unchanged file."""
    mine = _find_launcher(tree, layout, env)
    if mine is None:
        return f"{layout.launcher} is not an executable file on the image's PATH"
    theirs = _find_launcher(base, layout, env)
    if theirs is None or theirs[0] != mine[0] or _key(theirs[1]) != _key(mine[1]):
        return (f"the launcher {mine[0]} is not the base image's own, unchanged "
                f"{layout.launcher}")
    return ""


def _find_launcher(tree: ImageTree, layout: EnclaveLayout, env: tuple[str, ...]
                   ) -> tuple[str, Entry] | None:
    """Where the command's ``gramine-sgx`` is, as exec() finds it (PATH, executable files)."""
    candidates = [layout.launcher] if layout.launcher.startswith("/") else [
        posixpath.join(folder, layout.launcher) for folder in path_folders(env)]
    for path in candidates:
        try:
            real = tree.resolve(path)
        except ManifestError:
            continue
        entry = tree.index.entries.get(real)
        if entry is not None and entry.executable:
            return real, entry
    return None
