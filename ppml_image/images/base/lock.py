"""Locked base builds: what went into a base image, and building it again.

``build-base --write-lock base.lock`` records, from the built image's own
files (read through the engine's archive API, nothing run):

* the OS image (its tag and content-addressed id);
* every Debian package installed (``/var/lib/dpkg/status``): its exact
  version and architecture, and the layer that installs it: ``os`` (already
  in the OS image), ``system`` (Python and the basics), ``jdk`` or
  ``gramine``;
* every wheel installed from the host's wheelhouse, with its SHA-256;
* the Gramine source: the SHA-256 of each file of the install tree or of
  each ``.deb``, and of each file the image holds under Gramine's pkglibdir.

``build-base --lock base.lock`` builds FROM the locked OS image id, installs
each layer's packages as ``apt-get install NAME=VERSION`` (after checking
that the mirror still has every one, so that the error names the first it
lacks), downloads exactly the locked wheels (``--require-hashes``), checks
the Gramine source against the lock, and refuses the result unless its
packages and Gramine files are exactly the locked ones.

The lock is JSON (``"format": "ppml-image/base-lock/1"``), documented in
the README. It is read as hostile data: its size is bounded, every field is
checked against its grammar (Debian's for package names and versions), and
values reach the Dockerfile only quoted, never as shell syntax.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ppml_image import __version__, _json
from ppml_image._fs import read_capped, write_atomic
from ppml_image.errors import EngineError, PpmlError, UsageError
from ppml_image.images.engine.core import Engine, MissingError, valid_image_id

FORMAT = "ppml-image/base-lock/1"
MAX_LOCK = 16 << 20  # bytes; a real lock is some 50 kB
MAX_DPKG_STATUS = 64 << 20
LAYERS = ("os", "system", "jdk", "gramine")
GROUPS = ("ml", "spark")
DPKG_STATUS = "/var/lib/dpkg/status"

# Debian policy 5.6.1 (names) and 5.6.12 (versions), a little stricter:
# no colon in the upstream part (no package of the archive has one).
_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]{1,127}")
_DEB_VERSION = re.compile(r"(?:[0-9]{1,9}:)?[0-9][A-Za-z0-9.+~-]{0,254}(?<!-)")
_DEB_ARCH = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_WHEEL_FILE = re.compile(r"(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)-"
                         r"[A-Za-z0-9_.!+-]+\.whl")
_WHEEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]{0,127}")
_WHEEL_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.!+]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SYMLINK = re.compile(r"symlink:[^\0]{1,4096}")
_MIRROR = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%+-]*)*")


class LockError(PpmlError):
    """A lock file that cannot be used: one line naming the file and the field."""


def check_mirror(url: str, what: str = "debian_mirror") -> str:
    """A Debian mirror URL: http(s), host, optional port and a plain path."""
    if not isinstance(url, str) or _MIRROR.fullmatch(url) is None or len(url) > 512:
        raise UsageError(f"{what} {str(url)[:80]!r}: expected an http:// or https:// URL with "
                         "a plain path (letters, digits and ._~%+- between slashes)")
    return url


# --------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class DebPackage:
    version: str
    architecture: str
    layer: str


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    file: str
    sha256: str
    group: str
    built: bool = False  # built on the host from an sdist (pyspark)

    def requirement(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class BaseLock:
    """A parsed, validated lock (see the module docstring)."""

    profile: str
    os_image: str
    os_image_id: str
    packages: dict[str, DebPackage]
    wheels: dict[str, Wheel]  # by file name
    gramine_source: str
    gramine_inputs: dict[str, str]  # tree file or .deb -> sha256 (or symlink:TARGET)
    gramine_files: dict[str, str]  # under pkglibdir in the image -> sha256 (or symlink:)
    debian_mirror: str = ""
    image_id: str = ""
    tool_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> dict[str, DebPackage]:
        return {n: p for n, p in sorted(self.packages.items()) if p.layer == name}

    def pins(self, layer: str, *, leave_out: Iterable[str] = ()) -> list[str]:
        """``NAME=VERSION`` for every package *layer* installs, sorted by name."""
        skipped = set(leave_out)
        return [f"{n}={p.version}" for n, p in self.layer(layer).items() if n not in skipped]

    def group(self, group: str) -> list[Wheel]:
        return sorted((w for w in self.wheels.values() if w.group == group),
                      key=lambda w: w.file)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "tool_version": self.tool_version,
            "image_id": self.image_id,
            "profile": self.profile,
            "os_image": {"ref": self.os_image, "id": self.os_image_id},
            "debian_mirror": self.debian_mirror,
            "debian_packages": {n: {"version": p.version, "architecture": p.architecture,
                                    "layer": p.layer} for n, p in sorted(self.packages.items())},
            "wheels": {w.file: {"name": w.name, "version": w.version, "sha256": w.sha256,
                                "group": w.group, "built_from_sdist": w.built}
                       for w in sorted(self.wheels.values(), key=lambda w: w.file)},
            "gramine": {"source": self.gramine_source,
                        "inputs": dict(sorted(self.gramine_inputs.items())),
                        "files": dict(sorted(self.gramine_files.items()))},
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2) + "\n").encode()


def read_lock(path: Path) -> BaseLock:
    """Read and validate a lock file; every problem is one line naming *path*."""
    name = str(path)
    data = read_capped(path, MAX_LOCK, "lock file", LockError)  # also no device, no FIFO hang
    try:
        raw = _json.loads(data)
    except _json.DuplicateKeyError as exc:
        raise LockError(f"{name}: {exc}: refused (which one counts is up to the reader)"
                        ) from None
    except (ValueError, RecursionError):
        raise LockError(f"{name}: not a JSON lock file (expected \"format\": "
                        f"\"{FORMAT}\")") from None
    return parse_lock(raw, name)


def parse_lock(raw: object, name: str) -> BaseLock:
    """Check every field of a decoded lock (see :func:`read_lock`)."""
    check = _Checker(name)
    doc = check.obj(raw, "the lock", {"format", "tool_version", "image_id", "profile",
                                      "os_image", "debian_mirror", "debian_packages", "wheels",
                                      "gramine"})
    fmt = doc.get("format")
    if fmt is None:
        raise LockError(f"{name}: no \"format\" field: not a ppml-image lock file")
    if fmt != FORMAT:
        raise LockError(f"{name}: format {str(fmt)[:60]!r} is not {FORMAT!r} (written by "
                        "another version of ppml-image?)")
    os_image = check.obj(doc.get("os_image"), "os_image", {"ref", "id"})
    os_id = check.text(os_image.get("id"), "os_image.id")
    if not valid_image_id(os_id):
        check.fail("os_image.id", "is not an image id (sha256: and 64 hex digits)")
    image_id = check.text(doc.get("image_id", ""), "image_id", empty=True)
    if image_id and not valid_image_id(image_id):
        check.fail("image_id", "is not an image id")
    mirror = check.text(doc.get("debian_mirror", ""), "debian_mirror", empty=True)
    if mirror:
        try:
            check_mirror(mirror)
        except UsageError:
            check.fail("debian_mirror", "is not a plain http(s) URL")
    gramine = check.obj(doc.get("gramine"), "gramine", {"source", "inputs", "files"})
    source = check.choice(gramine.get("source"), "gramine.source", ("apt", "deb-dir", "tree"))
    return BaseLock(
        profile=check.choice(doc.get("profile"), "profile", ("full", "slim")),
        os_image=check.text(os_image.get("ref"), "os_image.ref"),
        os_image_id=os_id,
        packages=_packages(check, doc.get("debian_packages")),
        wheels=_wheels(check, doc.get("wheels")),
        gramine_source=source,
        gramine_inputs=check.hashes(gramine.get("inputs"), "gramine.inputs"),
        gramine_files=check.hashes(gramine.get("files"), "gramine.files"),
        debian_mirror=mirror, image_id=image_id,
        tool_version=check.text(doc.get("tool_version", ""), "tool_version", empty=True))


def _packages(check: _Checker, value: object) -> dict[str, DebPackage]:
    packages = check.obj(value, "debian_packages")
    result = {}
    for pkg_name, entry in packages.items():
        where = f"debian_packages.{str(pkg_name)[:60]}"
        if _DEB_NAME.fullmatch(pkg_name) is None:
            check.fail(where, "is not a Debian package name")
        item = check.obj(entry, where, {"version", "architecture", "layer"})
        version = check.text(item.get("version"), f"{where}.version")
        if _DEB_VERSION.fullmatch(version) is None:
            check.fail(f"{where}.version", f"{version[:60]!r} is not a Debian version")
        arch = check.text(item.get("architecture"), f"{where}.architecture")
        if _DEB_ARCH.fullmatch(arch) is None:
            check.fail(f"{where}.architecture", "is not a Debian architecture")
        result[pkg_name] = DebPackage(version, arch, check.choice(item.get("layer"),
                                                                  f"{where}.layer", LAYERS))
    return result


def _wheels(check: _Checker, value: object) -> dict[str, Wheel]:
    wheels = check.obj(value, "wheels")
    result = {}
    for file, entry in wheels.items():
        where = f"wheels.{str(file)[:80]}"
        match = _WHEEL_FILE.fullmatch(file)
        if match is None or len(file) > 255:
            check.fail(where, "is not a wheel file name")
        item = check.obj(entry, where, {"name", "version", "sha256", "group",
                                        "built_from_sdist"})
        wheel_name = check.text(item.get("name"), f"{where}.name")
        version = check.text(item.get("version"), f"{where}.version")
        if match is None or _WHEEL_NAME.fullmatch(wheel_name) is None or \
                _WHEEL_VERSION.fullmatch(version) is None or \
                (match["name"], match["version"]) != (wheel_name, version):
            check.fail(where, "name and version do not match the wheel file name")
        digest = check.text(item.get("sha256"), f"{where}.sha256")
        if _SHA256.fullmatch(digest) is None:
            check.fail(f"{where}.sha256", "is not 64 lowercase hex digits")
        built = item.get("built_from_sdist", False)
        if not isinstance(built, bool):
            check.fail(f"{where}.built_from_sdist", "is not true or false")
        result[file] = Wheel(wheel_name, version, file, digest,
                             check.choice(item.get("group"), f"{where}.group", GROUPS), built)
    return result


class _Checker:
    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, where: str, why: str) -> None:
        raise LockError(f"{self.name}: {where} {why}")

    def obj(self, value: object, where: str, keys: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, "is missing or not an object")
        assert isinstance(value, dict)
        if keys is not None:
            unknown = sorted(str(k)[:40] for k in value if k not in keys)
            if unknown:
                self.fail(where, f"has unknown key(s): {', '.join(unknown[:5])}")
        return value

    def text(self, value: object, where: str, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not value and not empty) or len(value) > 4096 \
                or "\0" in value:
            self.fail(where, "is missing or not a short text")
        assert isinstance(value, str)
        return value

    def choice(self, value: object, where: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            self.fail(where, f"is {str(value)[:40]!r}, not one of {', '.join(choices)}")
        return str(value)

    def hashes(self, value: object, where: str) -> dict[str, str]:
        items = self.obj(value, where)
        for path, digest in items.items():
            shown = f"{where}[{str(path)[:80]!r}]"
            if not _clean_relative(path):
                self.fail(shown, "is not a clean relative path")
            if not isinstance(digest, str) or (_SHA256.fullmatch(digest) is None
                                               and _SYMLINK.fullmatch(digest) is None):
                self.fail(shown, "is not a sha256 (or symlink:TARGET)")
        return dict(items)


def _clean_relative(path: object) -> bool:
    return (isinstance(path, str) and 0 < len(path) <= 4096 and "\0" not in path
            and not path.startswith("/")
            and all(part not in ("", ".", "..") for part in path.split("/")))


def replace_ok(path: Path) -> None:
    """--write-lock replaces only a ppml-image lock (our own file), never anything else."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not a lock file")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: folder {path.parent} does not exist")
    if not path.exists() and not path.is_symlink():
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(MAX_LOCK + 1)
        ours = _json.loads(head).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, AttributeError):
        ours = False
    if not ours:
        raise UsageError(f"{path}: exists and is not a ppml-image lock file; refusing to "
                         "replace it (choose another --write-lock path)")


def write_lock(lock: BaseLock, path: Path) -> None:
    write_atomic(path, lock.dumps())


# --------------------------------------------------------------------------
# dpkg's status file
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Installed:
    version: str
    architecture: str
    depends: tuple[tuple[str, ...], ...]  # each group's alternatives, names only
    provides: tuple[str, ...]


def parse_dpkg_status(text: str) -> dict[str, Installed]:
    """The installed packages of a ``/var/lib/dpkg/status`` file."""
    packages: dict[str, Installed] = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                if key:
                    fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        name, status = fields.get("Package", ""), fields.get("Status", "").split()
        if not name or status[-1:] != ["installed"]:
            continue
        depends = _relations(fields.get("Pre-Depends", "")) + _relations(fields.get("Depends",
                                                                                     ""))
        provides = tuple(alt for group in _relations(fields.get("Provides", "")) for alt in group)
        packages[name] = Installed(fields.get("Version", ""), fields.get("Architecture", ""),
                                   tuple(depends), provides)
    return packages


def _relations(text: str) -> list[tuple[str, ...]]:
    groups = []
    for group in text.split(","):
        names = tuple(re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", alt).strip().split(":")[0]
                      for alt in group.split("|"))
        if any(names):
            groups.append(tuple(n for n in names if n))
    return groups


def read_dpkg_status(engine: Engine, image: str, where: str) -> dict[str, Installed]:
    try:
        raw = engine.read_file(image, DPKG_STATUS, limit=MAX_DPKG_STATUS,
                               what=f"{where}:{DPKG_STATUS}")
    except MissingError:
        raise EngineError(f"{where}: no {DPKG_STATUS}: not a Debian-based image") from None
    return parse_dpkg_status(raw.decode("utf-8", "replace"))


def closure(roots: Iterable[str], installed: Mapping[str, Installed]) -> set[str]:
    """The installed packages *roots* need (Pre-Depends and Depends), *roots* included.

    An alternative (``a | b``) or a virtual package resolves to what is
    installed, as apt resolved it.
    """
    providers: dict[str, list[str]] = {}
    for name, pkg in installed.items():
        for virtual in pkg.provides:
            providers.setdefault(virtual, []).append(name)
    seen: set[str] = set()
    todo = [r for r in roots if r in installed]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for group in installed[name].depends:
            for alt in group:
                found = [alt] if alt in installed else sorted(providers.get(alt, []))
                if found:
                    todo.extend(found[:1])
                    break
    return seen


def attribute_layers(final: Mapping[str, Installed], os_packages: Mapping[str, Installed],
                     roots: Mapping[str, list[str]], rest: str) -> dict[str, str]:
    """The layer that installs each package of *final* (see the module docstring)."""
    layers: dict[str, str] = {}
    for name, pkg in final.items():
        before = os_packages.get(name)
        if before is not None and before.version == pkg.version \
                and before.architecture == pkg.architecture:
            layers[name] = "os"
    for layer in ("system", "jdk", "gramine"):
        for name in sorted(closure(roots.get(layer, []), final)):
            layers.setdefault(name, layer)
    for name in final:
        layers.setdefault(name, rest)
    return layers


# --------------------------------------------------------------------------
# Files: the Gramine source on the host, Gramine's files in the image
# --------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gramine_inputs(source: str, folder: str) -> dict[str, str]:
    """SHA-256 of each file of the Gramine install tree, or of each ``.deb``."""
    if source == "deb-dir":
        return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("*.deb"))}
    if source != "tree":
        return {}
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for entry in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, entry)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if os.path.islink(path):
                found[rel] = "symlink:" + os.readlink(path)
            elif os.path.isfile(path):
                found[rel] = sha256_file(Path(path))
    return found


def gramine_files(engine: Engine, image: str, pkglibdir: str) -> dict[str, str]:
    """SHA-256 of each file under *pkglibdir* in *image* (symlinks as their targets)."""
    found: dict[str, str] = {}
    with engine.open(image) as files:
        stream = files.archive(pkglibdir.rstrip("/") + "/")
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    rel = member.name.split("/", 1)[1] if "/" in member.name else ""
                    if not rel:
                        continue
                    if member.issym():
                        found[rel] = "symlink:" + member.linkname
                    elif member.isfile():
                        found[rel] = _sha256_stream(tar.extractfile(member))
        finally:
            stream.close()
    return found


def _sha256_stream(handle: IO[bytes] | None) -> str:
    digest = hashlib.sha256()
    while handle is not None:
        chunk = handle.read(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
    return digest.hexdigest()


def first_difference(got: Mapping[str, str], want: Mapping[str, str]) -> str | None:
    """``NAME: found X, locked Y`` for the first (sorted) name that differs."""
    for name in sorted(set(got) | set(want)):
        if got.get(name) != want.get(name):
            return (f"{name}: found {_short(got.get(name))}, locked "
                    f"{_short(want.get(name))}")
    return None


def _short(value: str | None) -> str:
    if value is None:
        return "nothing"
    return value[:16] + "..." if _SHA256.fullmatch(value) else value[:80]


def deb_package_name(path: Path) -> str:
    """The ``Package`` field of a ``.deb`` (an ar archive holding control.tar.*)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"!<arch>\n":
                raise ValueError("not an ar archive")
            while True:
                header = handle.read(60)
                if len(header) < 60:
                    raise ValueError("no control.tar member")
                member, size = header[:16].decode("ascii", "replace").strip(), int(header[48:58])
                if member.rstrip("/").startswith("control.tar"):
                    if size > MAX_LOCK:
                        raise ValueError("control member too large")
                    return _control_package(handle.read(size), member)
                handle.seek(size + size % 2, os.SEEK_CUR)
    except (OSError, ValueError, tarfile.TarError, EOFError) as exc:
        raise UsageError(f"{path}: cannot read the package name of this .deb ({exc})") from None


def _control_package(data: bytes, member: str) -> str:
    import io

    if member.rstrip("/").endswith(".zst"):
        raise ValueError("zstd-compressed control (repack it with xz or gzip)")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for entry in tar:
            if entry.name in ("./control", "control") and entry.isfile():
                handle = tar.extractfile(entry)
                text = handle.read(1 << 20).decode("utf-8", "replace") if handle else ""
                match = re.search(r"^Package:\s*(\S+)\s*$", text, re.MULTILINE)
                if match and _DEB_NAME.fullmatch(match.group(1)):
                    return match.group(1)
                raise ValueError("no valid Package field")
    raise ValueError("no control file")
