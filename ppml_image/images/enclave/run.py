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
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ppml_image.errors import ImageContentError, UsageError
from ppml_image.images.engine.core import Bind, ContainerSpec, Engine, connect
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


def plan_run(image: str, *, sgx: bool, data: Path | None = None, keys: Path | None = None,
             password: Path | None = None, command: list[str] | None = None,
             engine: Engine | None = None, check_host: bool = True) -> ContainerSpec:
    """Check the host and the folders, and decide devices, mounts and command.

    Without *check_host* (``--print``), SGX devices are planned even if this
    host lacks them: the command line is for an SGX host.
    """
    check_image(image)
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
    if not sgx and argv is None:
        argv = native_command(engine or connect(), image)
    return ContainerSpec(image=image, command=argv, devices=SGX_DEVICES if sgx else (),
                         binds=tuple(binds), network=NETWORK, auto_remove=True)


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
    """The enclave's measured command line (loader.argv), to run it natively.

    The enclave is the one the image's command starts (content, not labels);
    an image that starts no enclave runs its own command.
    """
    info = engine.image(image)
    try:
        layout = enclave_layout(info, image)
    except ImageContentError:
        return None
    with engine.open(info.id) as files:
        data = files.read_file(layout.manifest, limit=MANIFEST_LIMIT,
                               what=f"{image}:{layout.manifest}")
    name = f"{image}:{layout.manifest}"
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
