"""``run``: start an image the way the reference ``docker run`` does, with docker-py.

With SGX: the enclave and provisioning devices and the AESM socket are
mapped in. Without (``--no-sgx``): the same image runs natively, with the
command line the manifest would run in the enclave, to test the application.
Keys, password and data folders are mounted read-only.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from ppml_image.errors import UsageError
from ppml_image.images import engine
from ppml_image.images.base import LABEL_PREFIX
from ppml_image.sgx import manifest as mf

SGX_DEVICES = ("/dev/sgx_enclave", "/dev/sgx_provision")
AESM_SOCKET = "/var/run/aesmd/aesm.socket"
MOUNTS = {"data": "/ppml/data", "keys": "/ppml/keys", "password": "/ppml/password"}


@dataclass
class RunPlan:
    """Everything ``docker run`` needs; printable as a command line."""

    image: str
    command: list[str] | None
    devices: list[str] = field(default_factory=list)
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)

    def docker_command(self) -> str:
        args = ["docker", "run", "--rm", "-i"]
        for device in self.devices:
            args += ["--device", device.split(":")[0]]
        for host, spec in self.volumes.items():
            args += ["-v", f"{host}:{spec['bind']}:{spec['mode']}"]
        args.append(self.image)
        args += self.command or []
        return shlex.join(args)


def missing_sgx() -> list[str]:
    return [p for p in (*SGX_DEVICES, AESM_SOCKET) if not os.path.exists(p)]


def plan_run(image: str, *, sgx: bool, data: Path | None = None, keys: Path | None = None,
             password: Path | None = None, command: list[str] | None = None,
             client: docker.DockerClient | None = None, check_host: bool = True) -> RunPlan:
    """Check the host and the folders, and decide devices, mounts and command.

    Without *check_host* (``--print``), SGX devices are planned even if this
    host lacks them: the command line is for an SGX host.
    """
    if sgx and check_host:
        missing = missing_sgx()
        if missing:
            raise UsageError(f"SGX is not available on this host: {', '.join(missing)} "
                             "missing (install the SGX driver and AESM, or use --no-sgx)")
    plan = RunPlan(image=image, command=list(command) if command else None)
    if sgx:
        plan.devices = [f"{d}:{d}:rwm" for d in SGX_DEVICES]
        plan.volumes[AESM_SOCKET] = {"bind": AESM_SOCKET, "mode": "rw"}
    for name, folder in (("data", data), ("keys", keys), ("password", password)):
        if folder is None:
            continue
        if not folder.is_dir() or not os.access(folder, os.R_OK | os.X_OK):
            raise UsageError(f"{folder}: --{name} folder does not exist or cannot be read")
        plan.volumes[str(folder.resolve())] = {"bind": MOUNTS[name], "mode": "ro"}
    if not sgx and plan.command is None:
        client = client or engine.connect()
        plan.command = native_command(client, image)
    return plan


def native_command(client: docker.DockerClient, image: str) -> list[str] | None:
    """The enclave's measured command line (loader.argv), to run it natively."""
    labels = engine.get_image(client, image).labels or {}
    path = labels.get(f"{LABEL_PREFIX}manifest")
    if not path:
        return None  # not a ppml-image custom image: its own CMD
    text = engine.read_file_from_image(client, image, path).decode()
    argv = mf.parse_manifest(text, f"{image}:{path}")["loader"].get("argv")
    return list(argv) if isinstance(argv, list) else None


def execute(plan: RunPlan, client: docker.DockerClient | None = None) -> int:
    """Run the plan attached; stream output; always remove the container."""
    client = client or engine.connect()
    engine.get_image(client, plan.image)
    with engine.engine_call(f"running {plan.image}"):
        container = client.containers.create(plan.image, plan.command, devices=plan.devices,
                                             volumes=plan.volumes, network_mode="host")
    try:
        with engine.engine_call(f"running {plan.image}"):
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            status: dict[str, Any] = container.wait()
        return int(status.get("StatusCode", 1))
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
