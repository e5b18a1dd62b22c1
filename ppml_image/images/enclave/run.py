"""``run``: start an image the way the reference ``docker run`` does.

One plan (:class:`~ppml_image.images.engine.core.ContainerSpec`) is built once;
``run`` hands it to the engine and ``run --print`` prints it as a
``docker run`` line, so both always mean the same container: host network
(the AESM socket and attestation endpoints are the host's), ``--rm``, no
standard input, stdout and stderr kept apart.

With SGX: the enclave and provisioning devices and the AESM socket are
mapped in. Without (``--no-sgx``): the same image runs natively, with the
command line the manifest would run in the enclave, to test the application.
Keys, password and data folders are mounted read-only.

Only what was measured runs next to secrets:

* ``--keys`` or ``--password`` (anything secret mounted) verifies the image
  first, exactly as ``verify`` does (pinned base, expected values when
  given), refuses (exit 3) what ``verify`` refuses, and then runs the
  verified image by its id (a tag moved meanwhile changes nothing). A
  command of one's own next to the secrets is refused: it was not measured.
* ``--no-sgx`` runs ``loader.argv`` of the measured ``NAME.manifest.sgx``
  (never of the unsigned ``NAME.manifest``).
* a mount target (``/ppml/data``, ``/ppml/keys``, ``/ppml/password``) that
  is, or lies under, a symlink in the image is refused: the engine would
  follow it, and the folder would land wherever the image points it
  (``/usr/local/bin``, on PATH).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppml_image.defaults import MAX_IMAGE_BYTES
from ppml_image.errors import ImageContentError, UsageError, VerificationError
from ppml_image.images.enclave.verify import verify_image
from ppml_image.images.engine.core import Bind, ContainerSpec, Engine, ImageInfo, connect
from ppml_image.images.engine.imagefs import MANIFEST_LIMIT
from ppml_image.images.engine.reference import check_image
from ppml_image.images.layout import enclave_layout
from ppml_image.sgx.manifest import document as mf

SGX_DEVICES = ("/dev/sgx_enclave", "/dev/sgx_provision")
AESM_SOCKET = "/var/run/aesmd/aesm.socket"
MOUNTS = {"data": "/ppml/data", "keys": "/ppml/keys", "password": "/ppml/password"}
NETWORK = "host"


def docker_command(plan: ContainerSpec) -> list[str]:
    """The ``docker run`` arguments that create exactly the container *plan* describes."""
    args = ["docker", "run"]
    if plan.auto_remove:
        args.append("--rm")
    if plan.network:
        args += ["--network", plan.network]
    for device in plan.devices:
        args += ["--device", f"{device}:{device}:rwm"]
    for bind in plan.binds:
        args += ["-v", f"{bind.host}:{bind.container}:{'ro' if bind.read_only else 'rw'}"]
    args.append(plan.image)
    args += list(plan.command or ())
    return args


def printed(plan: ContainerSpec) -> str:
    return shlex.join(docker_command(plan))


def missing_sgx() -> list[str]:
    return [p for p in (*SGX_DEVICES, AESM_SOCKET) if not os.path.exists(p)]


@dataclass(frozen=True)
class Expected:
    """What ``run`` verifies against before mounting secrets (``verify``'s options)."""

    base: str | None = None
    record: Path | None = None
    mr_enclave: str | None = None
    mr_signer: str | None = None
    allow_debug: bool = False
    max_image_bytes: int = MAX_IMAGE_BYTES


def plan_run(image: str, *, sgx: bool, data: Path | None = None, keys: Path | None = None,
             password: Path | None = None, command: list[str] | None = None,
             engine: Engine | None = None, check_host: bool = True,
             expected: Expected | None = None) -> ContainerSpec:
    """Check the host and the folders, and decide devices, mounts and command.

    Without *check_host* (``--print``), SGX devices are planned even if this
    host lacks them: the command line is for an SGX host, and nothing is
    mounted here, so nothing is verified.
    """
    check_image(image)
    secrets = keys is not None or password is not None
    if secrets and command and check_host:
        raise UsageError("a command of your own next to --keys/--password runs code nobody "
                         "measured: refused (run the image's own enclave)")
    if sgx and check_host:
        missing = missing_sgx()
        if missing:
            raise UsageError(f"SGX is not available on this host: {', '.join(missing)} "
                             "missing (install the SGX driver and AESM, or use --no-sgx)")
    binds = []
    if sgx:
        binds.append(Bind(AESM_SOCKET, AESM_SOCKET, read_only=False))
    for name, folder in (("data", data), ("keys", keys), ("password", password)):
        if folder is None:
            continue
        if not folder.is_dir() or not os.access(folder, os.R_OK | os.X_OK):
            raise UsageError(f"{folder}: --{name} folder does not exist or cannot be read")
        binds.append(Bind(_bind_source(folder, name), MOUNTS[name]))
    argv = tuple(command) if command else None
    if not check_host:  # --print: a command line for elsewhere, nothing mounted here
        if not sgx and argv is None:
            argv = native_command(engine or connect(), image)
        return ContainerSpec(image=image, command=argv, devices=SGX_DEVICES if sgx else (),
                             binds=tuple(binds), network=NETWORK, auto_remove=True)
    engine = engine or connect()
    manifest: dict[str, Any] | None = None
    if secrets:
        info, manifest = _verified(engine, image, expected or Expected())
    else:
        info = engine.image(image)
    _refuse_linked_targets(engine, info, [b.container for b in binds
                                          if b.container in MOUNTS.values()])
    if not sgx and argv is None:
        argv = _argv(manifest) if manifest is not None else native_command(engine, info.id)
    # Run the image by the id that was checked: a tag moved meanwhile changes nothing.
    return ContainerSpec(image=info.id if secrets else image, command=argv,
                         devices=SGX_DEVICES if sgx else (), binds=tuple(binds),
                         network=NETWORK, auto_remove=True)


def _verified(engine: Engine, image: str, expected: Expected
              ) -> tuple[ImageInfo, dict[str, Any]]:
    """Verify *image* as ``verify`` does; refuse (exit 3) what it refuses."""
    result = verify_image(image, mr_enclave=expected.mr_enclave, mr_signer=expected.mr_signer,
                          allow_debug=expected.allow_debug, base=expected.base,
                          record=expected.record, engine=engine,
                          max_image_bytes=expected.max_image_bytes)
    if not result.ok or result.measured is None:
        error = result.error()
        error.args = (f"run refused, secrets are not mounted: {error}",)
        raise error
    return result.measured.info, result.measured.manifest


def _argv(manifest: dict[str, Any]) -> tuple[str, ...] | None:
    argv = manifest.get("loader", {}).get("argv")
    return tuple(str(a) for a in argv) if isinstance(argv, list) else None


def _refuse_linked_targets(engine: Engine, info: ImageInfo, targets: list[str]) -> None:
    """Refuse a mount target that is, or lies under, a symlink in the image."""
    if not targets:
        return
    # A VOLUME over (or under) a target: the engine fills it from the image at run
    # time, where a symlink may wait that reading files (volumes empty) cannot see.
    for volume in sorted(info.config.get("Volumes") or {}):
        for target in targets:
            if f"{target}/".startswith(f"{volume.rstrip('/')}/") or \
                    f"{volume}/".startswith(f"{target}/"):
                raise VerificationError(f"{info.id[:19]}: the image declares VOLUME {volume} "
                                        f"over the mount target {target}: refused")
    with engine.open(info.id) as files:
        for target in targets:
            current = ""
            for part in [p for p in target.split("/") if p]:
                current += "/" + part
                stat = files.stat(current)
                if stat is None:
                    break  # missing: the engine creates the folder, where it says
                if stat.kind == "link":
                    raise VerificationError(
                        f"{info.id[:19]}: {current} is a symlink in the image (to "
                        f"{stat.target or '?'}): mounting {target} would land elsewhere; "
                        "refused")


def _bind_source(folder: Path, name: str) -> str:
    """The folder's real path, which a bind can name: docker's ``-v`` and the
    engine's bind list both split HOST:CONTAINER:MODE on ':', so a path with
    one would mount another folder (or fail) whether we run it or print it."""
    real = str(folder.resolve())
    if ":" in real:
        raise UsageError(f"--{name} {folder}: its path {real} holds ':', which docker -v "
                         "splits on; move or rename the folder (a link does not help: the "
                         "real path is what is mounted)")
    return real


def native_command(engine: Engine, image: str) -> tuple[str, ...] | None:
    """The enclave's measured command line (``loader.argv`` of ``NAME.manifest.sgx``).

    The enclave is the one the image's command starts (content, not labels);
    an image that starts no enclave runs its own command. Without secrets
    nothing else is verified here (``run --keys`` verifies everything).
    """
    info = engine.image(image)
    try:
        layout = enclave_layout(info, image)
    except ImageContentError:
        return None
    with engine.open(info.id) as files:
        if files.stat(layout.manifest_sgx) is None:
            raise ImageContentError(f"{image}: no {layout.manifest_sgx}: an unsigned image "
                                    "has no measured command to run natively; sign it first")
        data = files.read_file(layout.manifest_sgx, limit=MANIFEST_LIMIT,
                               what=f"{image}:{layout.manifest_sgx}")
    name = f"{image}:{layout.manifest_sgx}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImageContentError(f"{name}: manifest is not UTF-8 text") from None
    try:
        argv = mf.parse_manifest(text, name)["loader"].get("argv")
    except RecursionError:
        raise ImageContentError(f"{name}: manifest nests too deeply") from None
    return tuple(str(a) for a in argv) if isinstance(argv, list) else None


def execute(plan: ContainerSpec, engine: Engine | None = None) -> int:
    """Run the plan attached; stream its output; the container is removed when it ends."""
    engine = engine or connect()
    engine.image(plan.image)
    return engine.run_container(plan, sys.stdout.buffer, sys.stderr.buffer)
