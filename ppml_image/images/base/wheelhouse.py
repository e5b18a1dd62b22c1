"""The wheelhouse: Python packages for an image, downloaded on the host.

Inside containers pip often cannot reach an HTTPS index (corporate proxies,
air-gapped sites, a mirror whose certificate only the host trusts). So pip
runs on the host, for the image's Python version and platform, and the image
installs from the result with ``--no-index --require-hashes``.

pyspark is published only as a source distribution (with Spark's jars
inside); it is built into a wheel once and cached beside the downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ppml_image._proc import child_env
from ppml_image.errors import BuildError

_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.*\.whl$")


def cache_root() -> Path:
    """``$PPML_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/ppml-image``, else ``~/.cache/ppml-image``."""
    if os.environ.get("PPML_IMAGE_CACHE"):
        return Path(os.environ["PPML_IMAGE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ppml-image"


@dataclass(frozen=True)
class Wheelhouse:
    """A folder of wheels plus a hash-pinned requirements file naming all of them."""

    folder: Path
    requirements: str
    versions: dict[str, str]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.requirements.encode()).hexdigest()


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          check=False, env=child_env())
    if proc.returncode != 0:
        last = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise BuildError(f"{what}: pip failed: {last}")


def _built_wheel(spec: str, cache: Path) -> Path:
    """Build (once) and cache a wheel for a package published only as sdist."""
    built = cache / "built"
    built.mkdir(parents=True, exist_ok=True)
    name, _, version = spec.partition("==")
    pattern = f"{name.replace('-', '_')}-{version or '*'}-*.whl"
    found = sorted(built.glob(pattern))
    if found:
        return found[-1]
    _pip(["wheel", "--no-deps", "--quiet", "--wheel-dir", str(built), spec],
         f"building a wheel for {spec}")
    found = sorted(built.glob(pattern))
    if not found:
        raise BuildError(f"building a wheel for {spec}: pip produced no {pattern}")
    return found[-1]


def prepare(packages: list[str], sdist_packages: list[str], *, python_version: str,
            platform: str, cache: Path | None = None) -> Wheelhouse:
    """Download *packages* (and build *sdist_packages*) for the image's Python.

    The folder is keyed by the request, so an unchanged request is answered
    from the cache without running pip at all.
    """
    cache = cache or cache_root() / "wheels"
    request = {"packages": packages, "sdist": sdist_packages, "python": python_version,
               "platform": platform}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache / f"py{python_version}-{key}"
    stamp = folder / "requirements.txt"
    if not stamp.is_file():
        _download(folder, packages, sdist_packages, python_version, platform, cache)
    return _describe(folder)


def _download(folder: Path, packages: list[str], sdist_packages: list[str],
              python_version: str, platform: str, cache: Path) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    local = []
    for spec in sdist_packages:
        wheel = _built_wheel(spec, cache)
        target = partial / wheel.name
        _link(wheel, target)
        local.append(str(target))
    _pip(["download", "--quiet", "--dest", str(partial), "--python-version", python_version,
          "--platform", platform, "--only-binary=:all:", *packages, *local],
         f"downloading wheels for Python {python_version}")
    (partial / "requirements.txt").write_text(_requirements(partial))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


@dataclass(frozen=True)
class LockedWheel:
    """A wheel as a lock names it: the file, its name and version, its SHA-256."""

    file: str
    name: str
    version: str
    sha256: str
    built: bool = False  # built on the host from the sdist NAME==VERSION


def wheel_files(house: Wheelhouse) -> list[LockedWheel]:
    """Every wheel of *house*, hashed (what a lock records)."""
    found = []
    for wheel in sorted(house.folder.glob("*.whl")):
        match = _WHEEL_RE.match(wheel.name)
        if match:
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            found.append(LockedWheel(wheel.name, match["name"], match["version"], digest))
    return found


def prepare_locked(wheels: list[LockedWheel], *, python_version: str, platform: str,
                   what: str, cache: Path | None = None) -> Wheelhouse:
    """Exactly *wheels*: downloaded by name, version and hash (``--no-deps``), or
    built from their sdist; any other file or hash is an error naming the wheel."""
    cache = cache or cache_root() / "wheels"
    request = sorted((w.file, w.sha256) for w in wheels)
    key = hashlib.sha256(json.dumps(request).encode()).hexdigest()[:16]
    folder = cache / f"py{python_version}-locked-{key}"
    if not (folder / "requirements.txt").is_file():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for wheel in (w for w in wheels if w.built):
            built = _built_wheel(f"{wheel.name}=={wheel.version}", cache)
            _link(built, partial / wheel.file)
        pinned = [f"{w.name}=={w.version} --hash=sha256:{w.sha256}" for w in wheels
                  if not w.built]
        if pinned:
            (partial / "locked.txt").write_text("\n".join(pinned) + "\n")
            _pip(["download", "--quiet", "--no-deps", "--dest", str(partial),
                  "--python-version", python_version, "--platform", platform,
                  "--only-binary=:all:", "--require-hashes", "-r", str(partial / "locked.txt")],
                 f"{what}: downloading the locked wheels")
            (partial / "locked.txt").unlink()
        _check_locked(partial, wheels, what)
        (partial / "requirements.txt").write_text(_requirements(partial))
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    _check_locked(folder, wheels, what)
    return _describe(folder)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # no second copy of a 456 MB wheel
    except OSError:
        shutil.copy2(source, target)


def _check_locked(folder: Path, wheels: list[LockedWheel], what: str) -> None:
    have = {w.file: w.sha256 for w in wheel_files(_describe_files(folder))}
    for wheel in sorted(wheels, key=lambda w: w.file):
        got = have.pop(wheel.file, None)
        if got is None:
            raise BuildError(f"{what}: {wheel.file} is not what the index or the sdist gave "
                             f"for {wheel.name} {wheel.version}")
        if got != wheel.sha256:
            how = ("wheels built from an sdist are not byte-reproducible: keep the wheel "
                   "cache, or write a new lock" if wheel.built else "the index changed it")
            raise BuildError(f"{what}: {wheel.file} has sha256 {got[:16]}..., the lock says "
                             f"{wheel.sha256[:16]}... ({how})")
    if have:
        raise BuildError(f"{what}: {sorted(have)[0]} is not in the lock")


def _describe_files(folder: Path) -> Wheelhouse:
    return Wheelhouse(folder=folder, requirements="", versions={})


def _requirements(folder: Path) -> str:
    lines = []
    for wheel in sorted(folder.glob("*.whl")):
        match = _WHEEL_RE.match(wheel.name)
        if not match:
            continue
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{match['name']}=={match['version']} --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"


def _describe(folder: Path) -> Wheelhouse:
    requirements = (folder / "requirements.txt").read_text()
    versions = {}
    for line in requirements.splitlines():
        name, _, rest = line.partition("==")
        versions[name.lower().replace("_", "-")] = rest.split()[0]
    return Wheelhouse(folder=folder, requirements=requirements, versions=versions)
