"""``build-base``: the public ML base image (Gramine, Spark, LightGBM, ...).

The Dockerfile is rendered from ``dockerfiles/base.Dockerfile.j2`` and built
with docker-py. Python packages come from a host-side wheelhouse served over
loopback HTTP during the build (the build uses host networking), so no wheel,
.deb file or package cache is left in any layer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import jinja2

from ppml_image import __version__
from ppml_image._proc import child_env
from ppml_image.errors import EngineError
from ppml_image.images import engine, wheelhouse
from ppml_image.images.config import BaseConfig
from ppml_image.images.fileserver import FileServer
from ppml_image.resources import data_dir
from ppml_image.sgx import gramine

BASE_INFO_PATH = "/etc/ppml-image/base.json"
LABEL_PREFIX = "ppml-image."


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


def ensure_os_image(client: docker.DockerClient, ref: str) -> None:
    """The OS base must be local or pullable; say what to do when it is neither."""
    if engine.image_exists(client, ref):
        return
    try:
        client.images.pull(ref)
        return
    except docker.errors.DockerException as exc:
        reason = str(getattr(exc, "explanation", "") or exc).splitlines()[0][:120]
    raise EngineError(
        f"OS image {ref} is not on this engine and cannot be pulled ({reason}); build it from "
        f"Debian packages with: ppml-image bootstrap-os --tag {ref}")


def build_base(config: BaseConfig, *, nocache: bool = False, quiet: bool = False) -> BaseImage:
    """Build the base image described by *config* and tag it ``config.tag``."""
    config.validate()
    client = engine.connect()
    ensure_os_image(client, config.os_image)
    progress = engine.Progress(f"build-base {config.tag}", quiet=quiet)
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
            image_id = engine.build_image(
                client, context, what=f"build-base {config.tag}", progress=progress,
                labels=image_labels(config, versions), nocache=nocache, network_mode="host")
    engine.tag_image(client, image_id, config.tag)
    progress.done(f"built {config.tag} ({image_id[7:19]})")
    return describe(client, config.tag)


def _files_digest(folder: Path, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


def _context(config: BaseConfig, dockerfile: str) -> Any:
    context = engine.BuildContext()
    context.add_bytes("Dockerfile", dockerfile.encode())
    context.add_bytes("describe-image.py", (data_dir("dockerfiles") / "describe-image.py")
                      .read_bytes())
    if config.gramine_source == "tree":
        context.add_tree(Path(config.gramine_path), "gramine-tree")
    if config.ca_bundle:
        context.add_bytes("ca-bundle.crt", Path(config.ca_bundle).read_bytes())
    return context.finish()


def base_info(client: docker.DockerClient, image: str) -> dict[str, Any]:
    """The ``/etc/ppml-image/base.json`` that ``build-base`` recorded in *image*."""
    raw = engine.read_file_from_image(client, image, BASE_INFO_PATH)
    try:
        info: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise EngineError(f"{image}: {BASE_INFO_PATH} is not valid JSON") from None
    return info


def get_base_image(client: docker.DockerClient, ref: str) -> Any:
    """The base image *ref*, which must carry the labels ``build-base`` sets."""
    image = engine.get_image(client, ref, what="base image",
                             hint=": build it with ppml-image build-base")
    if f"{LABEL_PREFIX}gramine.libpal" not in (image.labels or {}):
        raise EngineError(f"{ref}: not a ppml-image base image (no {LABEL_PREFIX}gramine labels)")
    return image


def describe(client: docker.DockerClient, ref: str) -> BaseImage:
    """Describe an existing base image from its labels and recorded JSON."""
    image = get_base_image(client, ref)
    labels = image.labels or {}
    info = base_info(client, ref)
    return BaseImage(image_id=image.id, tags=list(image.tags), size=int(image.attrs["Size"]),
                     profile=labels.get(f"{LABEL_PREFIX}profile", ""), gramine=info["gramine"],
                     versions={k[len(LABEL_PREFIX) + 8:]: v for k, v in labels.items()
                               if k.startswith(f"{LABEL_PREFIX}version.")},
                     labels=labels)
