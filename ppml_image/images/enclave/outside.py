"""What runs outside the enclave must be the base image's, byte for byte.

SGX protects what runs inside the enclave, and nothing else: ``run --keys``
mounts the keys into the container, where the launcher (``gramine-sgx``),
its interpreter, the SGX loader and every library they load run *outside*
the enclave and could read them. So a signed image may change what the
enclave measures, but not what runs around it. Compared with the base image
(established by content, see :mod:`.layout`):

* the image's configuration: environment (it decides PATH lookups,
  ``LD_PRELOAD`` and ``LD_LIBRARY_PATH``), user and healthcheck (a command
  the engine runs inside the container) must equal the base's; the
  ENTRYPOINT is checked with the command (:func:`.layout.enclave_layout`);
* every file seen through the folders where those programs are looked up:
  each folder on the image's PATH (so ``gramine-sgx`` and whatever the
  script runs), the folder of the launcher's ``#!`` interpreter, the
  dynamic linker's folders (``/lib64``, ``/lib/x86_64-linux-gnu``,
  ``/usr/lib/x86_64-linux-gnu``, ``/usr/lib64``), Gramine's pkglibdir (the
  SGX loader and ``libpal.so``), ``/etc/alternatives`` (where Debian's
  program links point) and ``/etc/ld.so.conf.d``: added, removed or changed
  entries (content, mode, link target) are problems;
* the files that steer the dynamic linker and Gramine's paths:
  ``/etc/ld.so.preload``, ``/etc/ld.so.cache``, ``/etc/ld.so.conf`` and
  ``/etc/ppml-image/base.json``.

Each folder must also resolve to the same place in both images (a derived
image that re-points ``/lib`` is caught). Libraries found only through an
``RPATH`` outside these folders, and files a program opens at run time, are
not compared: in the images ppml-image builds there are none; say so in
reviews of other bases.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from dataclasses import dataclass, field

from ppml_image.errors import EngineError, ManifestError
from ppml_image.images.engine import imagefs
from ppml_image.images.engine.core import Engine, ImageFiles, ImageInfo, MissingError
from ppml_image.images.engine.imagefs import Entry, ImageTree
from ppml_image.images.engine.tarstream import SYMLINK, TarReader
from ppml_image.images.layout import BASE_INFO_PATH, LAUNCHER, BaseInfo, EnclaveLayout
from ppml_image.sgx.measure.tree import DIR, FILE, LINK, OTHER

LIBRARY_FOLDERS = ("/lib64", "/usr/lib64", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")
OTHER_FOLDERS = ("/etc/alternatives", "/etc/ld.so.conf.d")
LINKER_FILES = ("/etc/ld.so.preload", "/etc/ld.so.cache", "/etc/ld.so.conf", BASE_INFO_PATH)
_FILE_LIMIT = 64 << 20
_SHOWN = 5


@dataclass
class OutsideReport:
    """Differences from the base in what runs outside the enclave."""

    base: ImageInfo
    problems: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    launcher: str = ""

    @property
    def summary(self) -> str:
        tags = f" ({', '.join(self.base.tags)})" if self.base.tags else ""
        return (f"what runs outside the enclave ({self.launcher or LAUNCHER}, its interpreter, "
                f"the SGX loader, {len(self.folders)} folders) is the base image's: "
                f"{self.base.id}{tags}")


def path_folders(env: tuple[str, ...]) -> list[str]:
    """The absolute folders of PATH in an image's environment (the shell's default if unset)."""
    value = next((e[5:] for e in env if e.startswith("PATH=")),
                 "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return [p for p in value.split(":") if p.startswith("/")]


def check_outside(engine: Engine, info: ImageInfo, tree: ImageTree, base_info: BaseInfo,
                  layout: EnclaveLayout, base: ImageInfo) -> OutsideReport:
    """Compare what runs outside the enclave in *info* with *base* (see the module docstring)."""
    report = OutsideReport(base)
    _check_config(report, info, base)
    launcher = _find_launcher(tree, layout, info.env)
    report.launcher = launcher or ""
    if launcher is None:
        report.problems.append(f"{layout.launcher} is not an executable file on the image's "
                               "PATH")
    folders = [*path_folders(base.env), *path_folders(info.env), *LIBRARY_FOLDERS,
               base_info.pkglibdir, *OTHER_FOLDERS]
    if launcher is not None:
        folders.append(posixpath.dirname(launcher))
        with engine.open(info.id) as image_files:
            folders += _interpreter_folders(image_files, tree, launcher)
    with engine.open(base.id) as base_files:
        _compare_folders(report, tree, base_files, folders)
        for path in LINKER_FILES:
            if _image_entry(tree, path) != _base_entry(base_files, path):
                report.problems.append(f"{path} differs from the base image's")
    return report


def _check_config(report: OutsideReport, info: ImageInfo, base: ImageInfo) -> None:
    if info.env != base.env:
        added = sorted(set(info.env) - set(base.env))
        removed = sorted(set(base.env) - set(info.env))
        report.problems.append(
            "the image's environment differs from the base image's (it decides which "
            "programs and libraries run outside the enclave): "
            + ", ".join([f"{_var(e)} set" for e in added] + [f"{_var(e)} unset"
                                                             for e in removed]))
    if info.user != base.user:
        report.problems.append(f"USER is {info.user!r}, the base image's is {base.user!r}")
    if info.healthcheck != base.healthcheck:
        report.problems.append("the image adds a HEALTHCHECK: a command the engine runs in the "
                               f"container, outside the enclave: {info.healthcheck}")


def _var(assignment: str) -> str:
    name = assignment.partition("=")[0]
    return name if name in ("PATH", "LD_PRELOAD", "LD_LIBRARY_PATH") else assignment[:60]


def _find_launcher(tree: ImageTree, layout: EnclaveLayout, env: tuple[str, ...]) -> str | None:
    """Where the command's ``gramine-sgx`` is, as exec() finds it (PATH, executable files)."""
    if layout.launcher.startswith("/"):
        entry = tree.entry(layout.launcher)
        return layout.launcher if entry is not None and entry.executable else None
    for folder in path_folders(env):
        path = posixpath.join(folder, layout.launcher)
        entry = tree.entry(path)
        if entry is not None and entry.executable:
            return path
    return None


def _interpreter_folders(files: ImageFiles, tree: ImageTree, launcher: str) -> list[str]:
    """The folder of the launcher's ``#!`` interpreter (``env``'s program is on PATH)."""
    try:
        head = files.read_head(tree.resolve(launcher), 256)  # the kernel reads 256 bytes
    except (EngineError, ManifestError):
        return []
    if not head.startswith(b"#!"):
        return []
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    return [posixpath.dirname(words[0])] if words and words[0].startswith("/") else []


def _compare_folders(report: OutsideReport, tree: ImageTree, base_files: ImageFiles,
                     folders: list[str]) -> None:
    pairs: dict[str, tuple[str | None, str | None]] = {}
    for folder in dict.fromkeys(posixpath.normpath(f) for f in folders if f.strip("/")):
        mine = _resolved(tree, folder)
        theirs = _base_resolved(base_files, folder)
        if mine is not None and theirs is not None and mine != theirs:
            report.problems.append(f"{folder} leads to {mine} in the image but to {theirs} "
                                   "in the base image")
        elif mine is not None or theirs is not None:  # one side may lack it: compare to empty
            pairs.setdefault(str(mine or theirs), (mine, theirs))
    done: list[str] = []
    for folder in sorted(pairs, key=len):  # parents first: nested ones are covered
        if any(folder.startswith(d.rstrip("/") + "/") for d in done):
            continue
        done.append(folder)
        report.folders.append(folder)
        mine, theirs = pairs[folder]
        image_entries = tree.index.below(folder) \
            if mine is not None and tree.lstat_kind(folder) == DIR else {}
        base_entries: dict[str, Entry] = {}
        if theirs is not None:
            with contextlib.suppress(MissingError):
                base_entries = imagefs.index_folder(base_files, folder).below("/")
        _report_differences(report, folder, image_entries, base_entries)


def _report_differences(report: OutsideReport, folder: str, mine: dict[str, Entry],
                        theirs: dict[str, Entry]) -> None:
    differences = []
    for rel in sorted(set(mine) | set(theirs)):
        a, b = mine.get(rel), theirs.get(rel)
        if a is None:
            differences.append(f"{rel} removed")
        elif b is None:
            differences.append(f"{rel} added")
        elif _key(a) != _key(b):
            differences.append(f"{rel} changed")
    if differences:
        shown = ", ".join(differences[:_SHOWN])
        more = f" and {len(differences) - _SHOWN} more" if len(differences) > _SHOWN else ""
        report.problems.append(f"{folder}/ differs from the base image's: {shown}{more}")


def _key(entry: Entry) -> tuple[str, str, str | None, int]:
    return entry.kind, entry.link, entry.sha256, entry.mode


def _resolved(tree: ImageTree, folder: str) -> str | None:
    try:
        real = tree.resolve(folder)
    except ManifestError:
        return None
    return real if tree.lstat_kind(real) is not None else None


def _base_resolved(files: ImageFiles, folder: str) -> str | None:
    """*folder* with every symlink resolved in the base image (Docker resolves each link)."""
    current = "/"
    for part in [p for p in folder.split("/") if p]:
        candidate = posixpath.join(current, part)
        stat = files.stat(candidate)
        if stat is None:
            return None
        current = stat.target if stat.kind == "link" else candidate
    return current if current == "/" or files.stat(current) is not None else None


def _image_entry(tree: ImageTree, path: str) -> tuple[str, str, str | None] | None:
    parent = _resolved(tree, posixpath.dirname(path))
    entry = tree.index.entries.get(posixpath.join(parent, posixpath.basename(path))) \
        if parent else None
    return (entry.kind, entry.link, entry.sha256) if entry else None


def _base_entry(files: ImageFiles, path: str) -> tuple[str, str, str | None] | None:
    stat = files.stat(path)
    if stat is None:
        return None
    if stat.kind == "link":
        return LINK, _link_text(files, path), None
    if stat.kind != "file":
        return (DIR if stat.kind == "dir" else OTHER), "", None
    data = files.read_file(path, limit=_FILE_LIMIT)
    return FILE, "", hashlib.sha256(data).hexdigest()


def _link_text(files: ImageFiles, path: str) -> str:
    """A symlink's own target text (what the archive holds for it)."""
    stream = files.archive(path)
    try:
        for member in TarReader(lambda: stream.read(1 << 16), path).members():
            return member.link if member.kind == SYMLINK else ""
    finally:
        stream.close()
    return ""
