"""``build-base``: the public ML base image (Gramine, Spark, LightGBM, ...).

The Dockerfile is rendered from ``dockerfiles/base.Dockerfile.j2`` and built
with docker-py. Python packages come from a host-side wheelhouse served over
loopback HTTP during the build (the build uses host networking), so no wheel,
.deb file or package cache is left in any layer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jinja2

from ppml_image import __version__
from ppml_image._fs import MiB, read_capped
from ppml_image._proc import child_env
from ppml_image.errors import EngineError, ImageContentError, UsageError
from ppml_image.images import wheelhouse
from ppml_image.images.config import BaseConfig
from ppml_image.images.context import BuildContext
from ppml_image.images.engine import Engine, ImageInfo, MissingError, connect
from ppml_image.images.fileserver import FileServer
from ppml_image.images.imagefs import BASE_JSON_LIMIT
from ppml_image.images.layout import BASE_INFO_PATH, LABEL_PREFIX, BaseInfo
from ppml_image.images.progress import Progress
from ppml_image.resources import data_dir
from ppml_image.sgx import gramine


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def render_dockerfile(config: BaseConfig, *, file_server: str, ml_digest: str,
                      spark_digest: str, debs: list[str], debs_digest: str) -> str:
    """The base image's Dockerfile for *config* (StrictUndefined: no silent blanks)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("dockerfiles"))),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    return env.get_template("base.Dockerfile.j2").render(
        tool_version=__version__, os_image=config.os_image, profile=config.profile,
        with_spark=config.with_spark, jdk_package=config.jdk_package,
        extra_apt_packages=config.extra_apt_packages, ca_bundle=bool(config.ca_bundle),
        gramine_source=config.gramine_source, gramine_apt_suite=config.gramine_apt_suite,
        intel_sgx_apt_suite=config.intel_sgx_apt_suite, pkglibdir=gramine.PKGLIBDIR,
        python_version=config.python_version, file_server=file_server, ml_digest=ml_digest,
        spark_digest=spark_digest, debs=debs, debs_digest=debs_digest)


def created_timestamp() -> str:
    """RFC 3339 time from SOURCE_DATE_EPOCH, else today at midnight UTC.

    A day's granularity keeps rebuilds on the same day identical.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        moment = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc)
    else:
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


def ensure_os_image(engine: Engine, ref: str) -> None:
    """The OS base must be local or pullable; say what to do when it is neither."""
    if engine.find_image(ref) is not None:
        return
    try:
        engine.pull(ref)
        return
    except EngineError as exc:
        reason = str(exc).splitlines()[0][:160]
    raise EngineError(
        f"OS image {ref} is not on this engine and cannot be pulled ({reason}); build it from "
        f"Debian packages with: ppml-image bootstrap-os --tag {ref}")


def build_base(config: BaseConfig, *, nocache: bool = False, quiet: bool = False,
               engine: Engine | None = None) -> BaseImage:
    """Build the base image described by *config* and tag it ``config.tag``."""
    config.validate()
    engine = engine or connect()
    ensure_os_image(engine, config.os_image)
    progress = Progress(f"build-base {config.tag}", quiet=quiet)
    ml = wheelhouse.prepare(config.python_packages, [], python_version=config.python_version,
                            platform=config.wheel_platform)
    spark = (wheelhouse.prepare([], config.spark_packages, python_version=config.python_version,
                                platform=config.wheel_platform) if config.with_spark else None)
    versions = {**(spark.versions if spark else {}), **ml.versions}
    with tempfile.TemporaryDirectory(prefix="ppml-serve-") as serve:
        served = Path(serve)
        (served / "ml").symlink_to(ml.folder)
        debs: list[str] = []
        if spark:
            (served / "spark").symlink_to(spark.folder)
        if config.gramine_source == "deb-dir":
            (served / "debs").symlink_to(Path(config.gramine_path).resolve())
            debs = sorted(p.name for p in Path(config.gramine_path).glob("*.deb"))
        with FileServer(served, config.wheel_server_port) as server:
            dockerfile = render_dockerfile(
                config, file_server=server.url, ml_digest=ml.digest,
                spark_digest=spark.digest if spark else "", debs=debs,
                debs_digest=_files_digest(Path(config.gramine_path), debs))
            context = _context(config, dockerfile)
            image_id = engine.build(
                context, what=f"build-base {config.tag}", progress=progress,
                labels=image_labels(config, versions), nocache=nocache, network_mode="host")
    engine.tag(image_id, config.tag)
    progress.done(f"built {config.tag} ({image_id[7:19]})")
    return describe(engine, config.tag)


def _files_digest(folder: Path, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


def _context(config: BaseConfig, dockerfile: str) -> Any:
    context = BuildContext()
    context.add_bytes("Dockerfile", dockerfile.encode())
    context.add_bytes("describe-image.py", (data_dir("dockerfiles") / "describe-image.py")
                      .read_bytes())
    if config.gramine_source == "tree":
        context.add_tree(Path(config.gramine_path), "gramine-tree")
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
