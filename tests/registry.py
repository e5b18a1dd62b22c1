"""A real container registry for the tests (Debian's docker-registry), never a stand-in.

``make test`` starts the shared one on 127.0.0.1:5000 (scripts/ensure-registry.sh);
:func:`ensure_registry` runs the same script, so a bare ``pytest`` works too. Each
test pushes to repositories of its own, named uniquely (:class:`RegistryJanitor`),
and deletes what it pushed through the registry's API at the end: another run's
repositories and the registry's storage are never touched.

:func:`auth_registry` starts a second registry, private to one test, that wants a
password (htpasswd, bcrypt, made by apache2-utils' ``htpasswd``); the test that
started it stops it, by its process id.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json"))


def ensure_registry() -> str:
    """The shared local registry's address (127.0.0.1:PORT), started if needed."""
    result = subprocess.run(["bash", str(ROOT / "scripts/ensure-registry.sh")],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"no local registry: scripts/ensure-registry.sh said: {result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def free_port() -> int:
    """A port nothing listens on (yet): for a registry that is down, or a new one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(method: str, url: str, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@dataclass
class RegistryJanitor:
    """Names repositories for one test session and deletes what they hold at the end."""

    address: str
    repositories: list[str] = field(default_factory=list)

    def repository(self, name: str) -> str:
        """``ADDRESS/ppml-test/NAME-PID-RANDOM``: unique to this session."""
        path = f"ppml-test/{name}-{os.getpid()}-{os.urandom(3).hex()}"
        self.repositories.append(path)
        return f"{self.address}/{path}"

    def tags(self, repository: str) -> list[str]:
        """The tags the registry holds for *repository* (ADDRESS/PATH or PATH)."""
        path = repository.removeprefix(f"{self.address}/")
        status, _, body = _request("GET", f"http://{self.address}/v2/{path}/tags/list")
        if status == 404:
            return []
        assert status == 200, (status, body)
        return sorted(json.loads(body).get("tags") or [])

    def digest_of(self, repository: str, tag: str) -> str:
        path = repository.removeprefix(f"{self.address}/")
        status, headers, _ = _request("HEAD", f"http://{self.address}/v2/{path}/manifests/{tag}",
                                      {"Accept": MANIFEST_TYPES})
        assert status == 200, status
        return headers["Docker-Content-Digest"]

    def cleanup(self) -> None:
        """Delete every manifest our repositories hold, through the registry's API, then
        our (now empty, uniquely named) repository folders from its storage, so that the
        catalogue does not grow; shared blobs go at the registry's next garbage collection."""
        storage = registry_storage(self.address)
        for path in self.repositories:
            for tag in self.tags(path):
                digest = self.digest_of(path, tag)
                _request("DELETE", f"http://{self.address}/v2/{path}/manifests/{digest}")
            if storage is not None:
                shutil.rmtree(storage / "docker/registry/v2/repositories" / path,
                              ignore_errors=True)


def registry_storage(address: str) -> Path | None:
    """The storage folder scripts/ensure-registry.sh gave the registry on *address*, if known."""
    port = address.rpartition(":")[2]
    default = Path(f"/var/lib/ppml-image-registry/{port}") if os.getuid() == 0 else \
        Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / \
        f"ppml-image/registry-{port}"
    folder = Path(os.environ.get("PPML_IMAGE_REGISTRY_DIR") or default)
    try:
        config = (folder / "config.yml").read_text()
    except OSError:
        return None
    if f"addr: {address}\n" not in config:
        return None  # not the registry we were given: leave its storage alone
    return folder / "storage"


@dataclass
class AuthRegistry:
    address: str
    user: str
    password: str

    def docker_config(self, folder: Path, password: str | None = None) -> Path:
        """A DOCKER_CONFIG folder as ``docker login`` leaves it (0600 config.json)."""
        folder.mkdir(mode=0o700, exist_ok=True)
        auth = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        config = folder / "config.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"auths": {self.address: {"auth": auth}}}, handle)
        return folder


@contextmanager
def auth_registry(folder: Path) -> Iterator[AuthRegistry]:
    """A registry on a free loopback port that requires a user and password."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        pytest.fail("htpasswd is missing: run `make test` or scripts/ensure-registry.sh")
    password = os.urandom(12).hex()
    # -i: the password from stdin, never on a command line.
    subprocess.run([htpasswd, "-iBc", str(folder / "htpasswd"), "tester"], input=password,
                   text=True, check=True, capture_output=True, timeout=60)
    auth = f"auth:\n  htpasswd:\n    realm: ppml-test\n    path: {folder / 'htpasswd'}\n"
    with private_registry(folder, auth) as address:
        yield AuthRegistry(address, "tester", password)


@contextmanager
def private_registry(folder: Path, extra_config: str = "") -> Iterator[str]:
    """A registry of one test on a free loopback port, storage in *folder*; stopped at the
    end by its process id. Returns its address."""
    registry = shutil.which("docker-registry")
    if registry is None:
        pytest.fail("docker-registry is missing: run `make test` or scripts/ensure-registry.sh")
    address = f"127.0.0.1:{free_port()}"
    (folder / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'storage'}\n"
        f"http:\n  addr: {address}\n{extra_config}")
    with open(folder / "registry.log", "wb") as log:
        process = subprocess.Popen([registry, "serve", str(folder / "config.yml")],
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                status, _, _ = _request("GET", f"http://{address}/v2/")
            except OSError:
                status = 0
            if status in (200, 401):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the test's registry did not start: "
                        f"{(folder / 'registry.log').read_text()[-500:]}")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def manifest_layers(address: str, repository: str, reference: str) -> list[str]:
    """The layer blob digests of a manifest, lowest first (through the registry's API)."""
    path = repository.removeprefix(f"{address}/")
    status, _, body = _request("GET", f"http://{address}/v2/{path}/manifests/{reference}",
                               {"Accept": MANIFEST_TYPES})
    assert status == 200, status
    return [layer["digest"] for layer in json.loads(body)["layers"]]


def blob_file(storage: Path, digest: str) -> Path:
    """Where the filesystem driver keeps a blob's bytes."""
    hexa = digest.removeprefix("sha256:")
    return storage / "docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"
