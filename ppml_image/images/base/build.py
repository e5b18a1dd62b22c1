"""``build-base``: the public ML base image (Gramine, Spark, LightGBM, ...).

The Dockerfile is rendered from ``dockerfiles/base.Dockerfile.j2`` and built
with docker-py. Python packages come from a host-side wheelhouse served over
loopback HTTP during the build (the build uses host networking), so no wheel,
.deb file or package cache is left in any layer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shlex
import subprocess
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ppml_image import __version__, _signals
from ppml_image._dates import source_date_epoch
from ppml_image._fs import MiB, read_capped
from ppml_image._proc import child_env
from ppml_image.defaults import REGISTRY_TIMEOUT
from ppml_image.errors import BuildError, EngineError, ImageContentError, UsageError
from ppml_image.images.base import gramine_install, wheelhouse
from ppml_image.images.base import lock as lockfile
from ppml_image.images.base.config import BaseConfig
from ppml_image.images.base.fileserver import FileServer
from ppml_image.images.base.lock import (
    BaseLock,
    DebPackage,
    Wheel,
    attribute_layers,
    deb_package_name,
    first_difference,
    gramine_files,
    gramine_inputs,
    read_dpkg_status,
    read_lock,
    replace_ok,
)
from ppml_image.images.engine.context import BuildContext
from ppml_image.images.engine.core import Engine, ImageInfo, MissingError, connect
from ppml_image.images.engine.imagefs import BASE_JSON_LIMIT
from ppml_image.images.engine.reference import check_registry_timeout
from ppml_image.images.layout import BASE_INFO_PATH, LABEL_PREFIX, BaseInfo
from ppml_image.images.progress import Progress
from ppml_image.resources import data_dir
from ppml_image.sgx import gramine
from ppml_image.sgx.manifest import python_snapshot


@dataclass
class BaseImage:
    """What ``build-base`` built (printed by ``--json``)."""

    image_id: str
    tags: list[str]
    size: int
    profile: str
    gramine: dict[str, str]
    versions: dict[str, str]
    labels: dict[str, str]
    lock: str | None = None  # the lock file written (--write-lock)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


SYSTEM_PACKAGES = ("ca-certificates", "python3", "python3-pip", "libgomp1", "procps", "bash")


def render_dockerfile(config: BaseConfig, *, file_server: str, ml_digest: str,
                      spark_digest: str, debs: list[str], debs_digest: str,
                      lock: BaseLock | None = None, deb_names: Sequence[str] = ()) -> str:
    """The base image's Dockerfile for *config* (StrictUndefined: no silent blanks).

    With *lock*, it builds FROM the locked OS image id and every apt layer
    installs exactly its locked ``NAME=VERSION`` list, after checking that the
    mirror has each one (*deb_names*: the packages the local .debs provide).
    Every value that reaches a RUN line is quoted.
    """
    import jinja2  # here: sign-image and verify import this module, never render

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("dockerfiles"))),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["sh"] = shlex.quote
    explicit = [*SYSTEM_PACKAGES, *config.extra_apt_packages]
    apt_update = ("apt-get -o Acquire::Check-Valid-Until=false update" if config.debian_mirror
                  else "apt-get update")  # a snapshot mirror's Release files have expired
    layers = {"system": " ".join(map(shlex.quote, explicit)) + " ",
              "jdk": shlex.quote(config.jdk_package), "gramine": "gramine"}
    checks = {"system": "", "jdk": "", "gramine": ""}
    gramine_pins = ""
    if lock is not None:
        for layer in layers:
            pins = lock.pins(layer, leave_out=deb_names if layer == "gramine" else ())
            layers[layer] = " ".join(map(shlex.quote, pins))
            checks[layer] = _mirror_check(pins)
        gramine_pins = "".join(" " + shlex.quote(p) for p in lock.pins("gramine",
                                                                        leave_out=deb_names))
    return env.get_template("base.Dockerfile.j2").render(
        tool_version=__version__, profile=config.profile,
        from_image=lock.os_image_id if lock is not None else config.os_image,
        with_spark=config.with_spark, ca_bundle=bool(config.ca_bundle),
        gramine_source=config.gramine_source, gramine_apt_suite=config.gramine_apt_suite,
        intel_sgx_apt_suite=config.intel_sgx_apt_suite, pkglibdir=gramine.PKGLIBDIR,
        python_version=config.python_version, file_server=file_server,
        file_server_host=urllib.parse.urlsplit(file_server).hostname, ml_digest=ml_digest,
        spark_digest=spark_digest, debs=debs, debs_digest=debs_digest,
        debian_mirror=config.debian_mirror, apt_update=apt_update, locked=lock is not None,
        lock_digest=hashlib.sha256(lock.dumps()).hexdigest() if lock is not None else "",
        system_packages=layers["system"], jdk_packages=layers["jdk"],
        gramine_packages=layers["gramine"], gramine_pins=gramine_pins,
        check_system=checks["system"], check_jdk=checks["jdk"],
        check_gramine=checks["gramine"], gramine_check=gramine_install.build_check())


MIRROR_MISSING = "ppml-image: locked package not on the mirror:"
_MISSING_RE = re.compile(re.escape(MIRROR_MISSING) + r" ([a-z0-9][a-z0-9+.-]*)=([^\s|'\"]+)")
# The marker is echoed only with what is missing after it; the shell text of
# the step itself (which the engine may quote in its error) has a '$' there.
_GRAMINE_MISSING_RE = re.compile(re.escape(gramine_install.MISSING_MARKER)
                                 # Items are paths or the launcher's name; whatever the
                                 # engine's stream adds after the line is not one of them.
                                 + r"((?: (?:/[^\s$\"'|]+|gramine-sgx))+)")


# Reads ``apt-cache madison``'s columns (package | version | source), each
# stripped of the padding apt adds (``setw(10)``: short names and versions are
# right-aligned), and succeeds only if a line names exactly $name at exactly
# $version. The values come through ENVIRON (awk -v would expand backslashes),
# and == compares strings: no pattern, no substring.
MADISON_HAS = ("awk -F'|' '{ for (i = 1; i <= 2; i++) gsub(/^[ \\t]+|[ \\t]+$/, \"\", $i); "
               "if ($1 == ENVIRON[\"name\"] && $2 == ENVIRON[\"version\"]) found = 1 } "
               "END { exit !found }'")


def _mirror_check(pins: list[str]) -> str:
    """Shell that stops the build naming the first pin the mirror lacks.

    One dry run for all (fast when all are there); only if that fails, each
    ``NAME=VERSION`` in order: installed at that version, or listed by
    ``apt-cache madison`` (``apt-cache show NAME=VERSION`` succeeds even for a
    version that does not exist). Values are shell-quoted words, and the loop
    only expands them inside double quotes: never re-parsed as syntax.
    """
    if not pins:
        return "true"
    quoted = " ".join(map(shlex.quote, pins))
    return (f"{{ apt-get install --dry-run -qq --no-install-recommends {quoted} > /dev/null "
            f"2>&1 || for spec in {quoted}; do name=\"${{spec%%=*}}\"; "
            f"version=\"${{spec#*=}}\"; "
            f"[ \"$(dpkg-query -W -f='${{Version}}' \"$name\" 2>/dev/null)\" = \"$version\" ] "
            f"|| apt-cache madison \"$name\" | name=\"$name\" version=\"$version\" "
            f"{MADISON_HAS} "
            f"|| {{ echo \"{MIRROR_MISSING} $spec\"; exit 100; }}; done; }}")


def created_timestamp() -> str:
    """RFC 3339 time from SOURCE_DATE_EPOCH, else today at midnight UTC.

    A day's granularity keeps rebuilds on the same day identical.
    """
    moment = source_date_epoch()  # a malformed value is a usage error, never a traceback
    if moment is None:
        today = dt.datetime.now(dt.timezone.utc).date()
        moment = dt.datetime(today.year, today.month, today.day, tzinfo=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parent,
                             env=child_env())
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def image_labels(config: BaseConfig, versions: dict[str, str]) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": f"ppml-image base ({config.profile})",
        "org.opencontainers.image.description":
            "Gramine and a machine-learning stack for SGX enclaves; contains no secrets",
        "org.opencontainers.image.version": config.version or __version__,
        "org.opencontainers.image.created": created_timestamp(),
        "org.opencontainers.image.revision": _revision(),
        f"{LABEL_PREFIX}profile": config.profile,
        f"{LABEL_PREFIX}os-image": config.os_image,
        f"{LABEL_PREFIX}gramine.source": config.gramine_source,
        f"{LABEL_PREFIX}gramine.pkglibdir": gramine.PKGLIBDIR,
        f"{LABEL_PREFIX}gramine.libpal": gramine.libpal(),
        f"{LABEL_PREFIX}gramine.libsysdb": gramine.libsysdb(),
        f"{LABEL_PREFIX}gramine.runtimedir": gramine.runtimedir(),
        f"{LABEL_PREFIX}info": BASE_INFO_PATH,
    }
    labels.update({f"{LABEL_PREFIX}version.{name}": version
                   for name, version in sorted(versions.items())})
    return labels


def ensure_os_image(engine: Engine, ref: str, *, quiet: bool = False,
                    registry_timeout: int = REGISTRY_TIMEOUT) -> None:
    """The OS base must be local or pullable; say what to do when it is neither.

    *registry_timeout*: seconds the registry may stay silent during the pull.
    """
    if engine.find_image(ref) is not None:
        return
    try:
        engine.pull(ref, progress=Progress(f"pull {ref}", quiet=quiet),
                    timeout=registry_timeout)
        return
    except EngineError as exc:
        reason = str(exc).splitlines()[0][:160]
    raise EngineError(
        f"OS image {ref} is not on this engine and cannot be pulled ({reason}); build it from "
        f"Debian packages with: ppml-image bootstrap-os --tag {ref}")


def build_base(config: BaseConfig, *, nocache: bool = False, quiet: bool = False,
               engine: Engine | None = None, lock: Path | None = None,
               write_lock: Path | None = None,
               registry_timeout: int = REGISTRY_TIMEOUT) -> BaseImage:
    """Build the base image described by *config* and tag it ``config.tag``.

    *registry_timeout*: seconds the registry may stay silent while the OS
    image is pulled (when the engine does not have it).

    With *lock*, build exactly what the lock file names (see
    :mod:`ppml_image.images.base.lock`); with *write_lock*, record what went into
    the image there. Both are checked before any long work, and the tag and
    the lock file are written only once the image is built (and, with
    *lock*, found to be exactly the locked one).
    """
    config.validate()
    check_registry_timeout(registry_timeout)
    created_timestamp()  # a malformed SOURCE_DATE_EPOCH fails now, not after the build
    locked = read_lock(lock) if lock is not None else None
    if locked is not None and lock is not None:
        _check_lock_fits(config, locked, lock)
    if write_lock is not None:
        replace_ok(Path(write_lock))
    engine = engine or connect()
    os_image = _os_image(engine, config, locked, lock, quiet=quiet,
                         registry_timeout=registry_timeout)
    # The .debs' package names, read before any long work (a lock needs them).
    deb_names = _deb_names(config) if locked is not None or write_lock is not None else []
    if locked is not None and config.gramine_source == "deb-dir":
        _check_inputs(gramine_inputs("deb-dir", config.gramine_path), locked, lock, config)
    progress = Progress(f"build-base {config.tag}", quiet=quiet)
    ml, spark = _wheelhouses(config, locked, lock)
    versions = {**(spark.versions if spark else {}), **ml.versions}
    inputs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ppml-serve-") as serve:
        served = Path(serve)
        (served / "ml").symlink_to(ml.folder)
        debs: list[str] = []
        if spark:
            (served / "spark").symlink_to(spark.folder)
        if config.gramine_source == "deb-dir":
            (served / "debs").symlink_to(Path(config.gramine_path).resolve())
            debs = sorted(p.name for p in Path(config.gramine_path).glob("*.deb"))
            inputs = gramine_inputs("deb-dir", config.gramine_path)
        with FileServer(served, config.wheel_server_port) as server:
            dockerfile = render_dockerfile(
                config, file_server=server.url, ml_digest=ml.digest,
                spark_digest=spark.digest if spark else "", debs=debs,
                debs_digest=_files_digest(Path(config.gramine_path), debs), lock=locked,
                deb_names=deb_names)
            context = _context(config, dockerfile, inputs)
            if locked is not None and config.gramine_source == "tree":
                _check_inputs(inputs, locked, lock, config)
            image_id = _build(engine, context, config, versions, progress, nocache, lock,
                              locked, server.extra_hosts)
    if locked is not None and lock is not None:
        _check_locked_image(engine, image_id, locked, lock)
    if write_lock is not None:
        written = make_lock(engine, image_id, config, os_image, ml, spark, inputs, deb_names)
        _signals.check()
        lockfile.write_lock(written, Path(write_lock))
    engine.tag(image_id, config.tag)
    progress.done(f"built {config.tag} ({image_id[7:19]})")
    result = describe(engine, config.tag)
    result.lock = str(write_lock) if write_lock is not None else None
    return result


def _build(engine: Engine, context: Any, config: BaseConfig, versions: dict[str, str],
           progress: Progress, nocache: bool, lock: Path | None,
           locked: BaseLock | None, extra_hosts: dict[str, str]) -> str:
    try:
        return engine.build(context, what=f"build-base {config.tag}", progress=progress,
                            labels=image_labels(config, versions), nocache=nocache,
                            network_mode="host", extra_hosts=extra_hosts)
    except BuildError as exc:
        incomplete = _GRAMINE_MISSING_RE.search(str(exc))
        if incomplete is not None:
            source = config.gramine_path or f"gramine_source {config.gramine_source!r}"
            raise BuildError(f"{source}: the Gramine install lacks "
                             f"{gramine_install.describe_missing(incomplete.group(1))}") from None
        missing = _MISSING_RE.search(str(exc))
        if locked is None or missing is None:
            raise
        mirror = config.debian_mirror or "the OS image's apt sources"
        raise BuildError(
            f"{lock}: the Debian mirror ({mirror}) no longer has {missing.group(1)} "
            f"{missing.group(2)}: set [base] debian_mirror to a snapshot mirror that has it, "
            "or write a new lock") from None


# --------------------------------------------------------------------------
# Locks: checks before the build, the check after it, and writing one
# --------------------------------------------------------------------------
def _check_lock_fits(config: BaseConfig, locked: BaseLock, lock: Path) -> None:
    for what, have, want in (("profile", config.profile, locked.profile),
                             ("gramine_source", config.gramine_source, locked.gramine_source)):
        if have != want:
            raise UsageError(f"{lock}: written for {what} {want!r}, but this build is "
                             f"{have!r}")


def _os_image(engine: Engine, config: BaseConfig, locked: BaseLock | None,
              lock: Path | None, *, quiet: bool, registry_timeout: int) -> ImageInfo:
    if locked is None:
        ensure_os_image(engine, config.os_image, quiet=quiet, registry_timeout=registry_timeout)
        return engine.image(config.os_image, what="OS image")
    found = engine.find_image(locked.os_image_id)
    if found is None:
        raise EngineError(f"{lock}: the locked OS image {locked.os_image_id} (was "
                          f"{locked.os_image}) is not on this engine: load it (docker load) "
                          "or pull it by digest, or write a new lock")
    return found


def _deb_names(config: BaseConfig) -> list[str]:
    if config.gramine_source != "deb-dir":
        return []
    return sorted({deb_package_name(p) for p in Path(config.gramine_path).glob("*.deb")})


def _check_inputs(inputs: dict[str, str], locked: BaseLock, lock: Path | None,
                  config: BaseConfig) -> None:
    difference = first_difference(inputs, locked.gramine_inputs)
    if difference is not None:
        raise BuildError(f"{config.gramine_path}: the Gramine source is not the one {lock} "
                         f"locked ({difference})")


def _wheelhouses(config: BaseConfig, locked: BaseLock | None,
                 lock: Path | None) -> tuple[wheelhouse.Wheelhouse, wheelhouse.Wheelhouse | None]:
    if locked is None:
        ml = wheelhouse.prepare(config.python_packages, [], python_version=config.python_version,
                                platform=config.wheel_platform)
        spark = (wheelhouse.prepare([], config.spark_packages,
                                    python_version=config.python_version,
                                    platform=config.wheel_platform)
                 if config.with_spark else None)
        return ml, spark
    houses = {}
    for group in ("ml", "spark"):
        wheels = [wheelhouse.LockedWheel(w.file, w.name, w.version, w.sha256, w.built)
                  for w in locked.group(group)]
        houses[group] = wheelhouse.prepare_locked(
            wheels, python_version=config.python_version, platform=config.wheel_platform,
            what=str(lock)) if wheels or group == "ml" else None
    ml_house = houses["ml"]
    assert ml_house is not None
    return ml_house, houses["spark"] if config.with_spark else None


def _check_locked_image(engine: Engine, image_id: str, locked: BaseLock, lock: Path) -> None:
    """The built image must hold exactly the locked packages and Gramine files."""
    built = read_dpkg_status(engine, image_id, f"build-base ({image_id[7:19]})")
    have = {n: f"{p.version} ({p.architecture})" for n, p in built.items()}
    want = {n: f"{p.version} ({p.architecture})" for n, p in locked.packages.items()}
    difference = first_difference(have, want)
    if difference is not None:
        raise BuildError(f"{lock}: the built image is not the locked one: Debian package "
                         f"{difference}")
    files = gramine_files(engine, image_id, gramine.PKGLIBDIR)
    difference = first_difference(files, locked.gramine_files)
    if difference is not None:
        raise BuildError(f"{lock}: the built image is not the locked one: Gramine file "
                         f"{difference}")


def make_lock(engine: Engine, image_id: str, config: BaseConfig, os_image: ImageInfo,
              ml: wheelhouse.Wheelhouse, spark: wheelhouse.Wheelhouse | None,
              inputs: dict[str, str], deb_names: Sequence[str] = ()) -> BaseLock:
    """What went into *image_id*, read from its files (see :mod:`.lock`)."""
    where = f"build-base ({image_id[7:19]})"
    final = read_dpkg_status(engine, image_id, where)
    before = read_dpkg_status(engine, os_image.id, f"OS image {config.os_image}")
    roots = {"system": [*SYSTEM_PACKAGES, *config.extra_apt_packages],
             "jdk": [config.jdk_package] if config.with_spark else [],
             "gramine": ["gramine"] if config.gramine_source == "apt" else list(deb_names)}
    layers = attribute_layers(final, before, roots,
                              rest="system" if config.gramine_source == "tree" else "gramine")
    built = {_normal(spec.partition("==")[0]) for spec in config.spark_packages}
    wheels: dict[str, Wheel] = {}
    for group, house in (("ml", ml), ("spark", spark)):
        for w in wheelhouse.wheel_files(house) if house is not None else []:
            wheels[w.file] = Wheel(w.name, w.version, w.file, w.sha256, group,
                                   group == "spark" and _normal(w.name) in built)
    return BaseLock(
        profile=config.profile, os_image=config.os_image, os_image_id=os_image.id,
        packages={n: DebPackage(p.version, p.architecture, layers[n])
                  for n, p in sorted(final.items())},
        wheels=wheels, gramine_source=config.gramine_source, gramine_inputs=inputs,
        gramine_files=gramine_files(engine, image_id, gramine.PKGLIBDIR),
        debian_mirror=config.debian_mirror, image_id=image_id)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _files_digest(folder: Path, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


def _context(config: BaseConfig, dockerfile: str, digests: dict[str, str]) -> Any:
    context = BuildContext()
    context.add_bytes("Dockerfile", dockerfile.encode())
    context.add_bytes("describe-image.py", (data_dir("dockerfiles") / "describe-image.py")
                      .read_bytes())
    # describe-image.py imports it: one recorder of the python.* answers, the
    # same code that answers them on the host.
    context.add_bytes("python_snapshot.py", Path(python_snapshot.__file__).read_bytes())
    if config.gramine_source == "tree":
        context.add_tree(Path(config.gramine_path), "gramine-tree", digests)
    if config.ca_bundle:
        context.add_bytes("ca-bundle.crt", read_capped(config.ca_bundle, 16 * MiB, "CA bundle",
                                                       UsageError))
    return context.finish()


def base_info(engine: Engine, image: str, *, where: str | None = None) -> BaseInfo:
    """The validated ``/etc/ppml-image/base.json`` that ``build-base`` recorded in *image*."""
    try:
        raw = engine.read_file(image, BASE_INFO_PATH, limit=BASE_JSON_LIMIT,
                               what=f"{where or image}:{BASE_INFO_PATH}")
    except MissingError:
        raise ImageContentError(f"{where or image}: not a ppml-image base image (no "
                                f"{BASE_INFO_PATH}): build one with ppml-image build-base"
                                ) from None
    except EngineError as exc:
        raise ImageContentError(str(exc)) from None
    return BaseInfo.parse(raw, where or image)


def get_base_image(engine: Engine, ref: str) -> ImageInfo:
    """The base image *ref*; it must hold a valid ``/etc/ppml-image/base.json``."""
    return engine.image(ref, what="base image", hint=": build it with ppml-image build-base")


def describe(engine: Engine, ref: str) -> BaseImage:
    """Describe an existing base image from its labels and recorded JSON."""
    image = get_base_image(engine, ref)
    labels = image.labels
    info = base_info(engine, image.id, where=ref)
    return BaseImage(image_id=image.id, tags=list(image.tags), size=image.size,
                     profile=labels.get(f"{LABEL_PREFIX}profile", ""),
                     gramine=dict(info.raw["gramine"]),
                     versions={k[len(LABEL_PREFIX) + 8:]: v for k, v in labels.items()
                               if k.startswith(f"{LABEL_PREFIX}version.")},
                     labels=labels)
