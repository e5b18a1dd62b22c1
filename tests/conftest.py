"""Shared test helpers: the conformance vectors, fresh keys, running the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ppml_image.testing import MemoryEngine

# Some tests build folder chains deeper than Python's default limit (1000) and
# remove them bottom up; should one be left behind by a killed run, pytest's
# own clean-up of old temporary folders (shutil.rmtree, one frame per level)
# must still be able to remove it rather than crash the next session.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))

TESTS = Path(__file__).resolve().parent
VECTORS = TESTS / "vectors"
COMMON = VECTORS / "_common"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    pid: int = 0


def run_cli(*args: str | os.PathLike[str], cwd: Path | None = None,
            env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """Run ``python -m ppml_image ARGS`` as a user would, in a subprocess."""
    full_env = dict(os.environ)
    # No secret or token setting of the developer's shell leaks into a test.
    for name in ("PPML_IMAGE_KEY_PASSPHRASE", "PPML_IMAGE_PKCS11_PIN", "PPML_IMAGE_PKCS11_MODULE"):
        full_env.pop(name, None)
    full_env.update(env or {})
    with subprocess.Popen(
            [sys.executable, "-m", "ppml_image", *map(str, args)], cwd=cwd, env=full_env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=600)
        except BaseException:
            proc.kill()
            raise
    return Result(proc.returncode, stdout, stderr, proc.pid)


def containers_of(client, pid: int) -> list[str]:
    """Temporary containers that the ppml-image process *pid* made and left behind."""
    found = client.api.containers(all=True, filters={"label": "ppml-image.temporary"})
    return [c["Id"] for c in found
            if json.loads(c["Labels"]["ppml-image.temporary"]).get("pid") == pid]


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A failed command: non-zero exit, one line on stderr, no traceback."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ppml-image: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


def load_case(name: str) -> dict:
    return json.loads((VECTORS / name / "case.json").read_text())


def cases(tool: str, *, errors: bool | None = None) -> list[str]:
    found = []
    for case_dir in sorted(VECTORS.iterdir()):
        if not (case_dir / "case.json").is_file():
            continue
        case = load_case(case_dir.name)
        if case["tool"] != tool:
            continue
        if errors is not None and bool(case.get("expect_error")) != errors:
            continue
        found.append(case_dir.name)
    return found


def fresh_key(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A fresh SGX signing key made by the tool itself (never a committed one)."""
    from ppml_image.sgx.signing.keys import generate_key

    path = tmp_path_factory.mktemp("keys") / name
    generate_key(path)
    return path


@pytest.fixture(scope="session")
def enclave_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_key(tmp_path_factory, "enclave-key.pem")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A small chroot: an app, a library, and Gramine's libsysdb.so."""
    root = tmp_path / "rootfs"
    (root / "app/bin").mkdir(parents=True)
    (root / "app/lib").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu/gramine").mkdir(parents=True)
    (root / "app/bin/app").write_bytes(b"\x7fELF app" * 100)
    (root / "app/lib/libfoo.so").write_bytes(b"foo" * 1000)
    (root / "usr/lib/x86_64-linux-gnu/gramine/libsysdb.so").write_bytes(b"libos" * 50)
    return root


BASIC_MANIFEST = """\
libos.entrypoint = "/app/bin/app"
fs.mounts = []
loader.log_level = "error"
sgx.debug = false
sgx.enclave_size = "{size}"
sgx.max_threads = {threads}
sgx.trusted_files = [
  "file:/app/bin/app",
  "file:/app/lib/libfoo.so",
]
"""


def write_manifest(folder: Path, text: str | None = None, *, size: str = "64M",
                   threads: int = 2) -> Path:
    path = folder / "app.manifest"
    path.write_text(text if text is not None else BASIC_MANIFEST.format(size=size,
                                                                       threads=threads))
    return path


# --------------------------------------------------------------------------
# A real Docker engine (no mocks). `make test` starts one if needed.
# --------------------------------------------------------------------------
TEST_REPO = "ppml-test"
OS_IMAGE = "debian:bookworm"


@pytest.fixture(scope="session")
def docker_client():
    """docker-py itself: tests look at the engine without going through our seam."""
    import docker

    client = docker.from_env(timeout=600)
    client.ping()
    return client


@pytest.fixture(scope="session")
def os_image(docker_client) -> str:
    """The OS base: present, or built from Debian packages (kept: it is the
    machine's OS base image, like a pulled one, not a test artefact)."""
    import docker.errors

    try:
        docker_client.images.get(OS_IMAGE)
    except docker.errors.ImageNotFound:
        result = run_cli("bootstrap-os", "--tag", OS_IMAGE)
        assert result.returncode == 0, result.stderr
    return OS_IMAGE


# What this session makes on the shared engine is found by this label (its
# containers, and images derived from the test images that carry it), never
# by comparing what the engine holds before and after: other runs share it.
SESSION_LABEL = "ppml-test.session"
SESSION = f"{os.getpid()}-{os.urandom(4).hex()}"
# Wall-clock start of this session, less a margin for coarse file-system
# timestamps: a file whose ctime is older was last changed before any key,
# PIN or image of this session existed.
SESSION_START = time.time() - 2


def _archive_member(client, container: str, path: str) -> bytes:
    import io
    import tarfile

    stream, _ = client.api.get_archive(container, path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        assert member is not None and member.isfile(), (container, path)
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read()


def read_file_from_image(client, image: str, path: str) -> bytes:
    """One file's exact bytes, through the archive API of a never-started container."""
    container = client.api.create_container(image, ["true"], network_disabled=True,
                                            labels={SESSION_LABEL: SESSION})["Id"]
    try:
        return _archive_member(client, container, path)
    finally:
        client.api.remove_container(container, force=True, v=True)


@pytest.fixture(scope="session")
def gramine_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ppml_image.testing import make_gramine_tree

    return make_gramine_tree(tmp_path_factory.mktemp("gramine") / "tree")


@pytest.fixture(scope="session")
def mem_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-file Python application for the in-memory engine's tests."""
    folder = tmp_path_factory.mktemp("app") / "app"
    folder.mkdir()
    (folder / "main.py").write_text("print('hello')\n")
    return folder


@pytest.fixture
def mem(gramine_tree: Path) -> MemoryEngine:
    """A fresh in-memory engine holding a base image made from the stand-in Gramine."""
    from ppml_image.testing import MemoryEngine, memory_base

    engine = MemoryEngine()
    memory_base(engine, gramine_tree)
    return engine


def gramine_debs(tree: Path, folder: Path, *, version: str = "0.0+standin",
                 depends: str = "", postinst: str = "") -> Path:
    """A folder holding one .deb of the stand-in Gramine *tree* (dpkg-deb), for deb-dir."""
    package = folder / "pkg"
    subprocess.run(["cp", "-a", f"{tree}/.", str(package)], check=True)
    (package / "DEBIAN").mkdir()
    (package / "DEBIAN/control").write_text(
        f"Package: gramine\nVersion: {version}\nArchitecture: amd64\n"
        + (f"Depends: {depends}\n" if depends else "")
        + "Maintainer: ppml-image tests <tests@invalid>\nDescription: stand-in, not Gramine\n")
    if postinst:
        script = package / "DEBIAN/postinst"
        script.write_text(f"#!/bin/sh\n{postinst}\n")
        script.chmod(0o755)
    debs = folder / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(package),
                    str(debs / f"gramine_{version}_amd64.deb")], check=True, capture_output=True)
    return debs


def unique_tag(name: str) -> str:
    return f"{TEST_REPO}/{name}:{os.getpid()}-{os.urandom(3).hex()}"


def engine_events(client, since: float, kind: str, action: str) -> list[dict]:
    """The engine's *kind* (container, volume...) *action* events since *since* (time.time()).

    How a test finds what a command of its own did on a shared engine:
    events carry the container's labels and image reference as given, so
    the test picks out its own, where a before/after listing would also see
    every other run's.
    """
    import time

    until = int(time.time()) + 2  # whole seconds: take in the second we are in
    return list(client.api.events(since=int(since) - 1, until=until, decode=True,
                                  filters={"type": kind, "event": action}))


def owner_pid(event: dict) -> int | None:
    """The pid in a container event's ``ppml-image.temporary`` label (None without one)."""
    label = (event.get("Actor") or {}).get("Attributes", {}).get("ppml-image.temporary")
    try:
        return int(json.loads(label)["pid"]) if label else None
    except (ValueError, KeyError, TypeError):
        return None


def tag_id(client, tag: str) -> str | None:
    """The image id *tag* points at, or None: one exact look-up, no listing."""
    import docker.errors

    try:
        return str(client.api.inspect_image(tag)["Id"])
    except docker.errors.NotFound:
        return None


class ImageJanitor:
    """Removes what this session made on the shared engine, and only that.

    Images by the tags the tests track (an image that another run also
    tagged keeps its other tags: removing a tag never removes their image),
    images that inherit this session's label (derived from the test images
    that carry it, so no other run can share their ids), and containers
    with that label. Nothing is pruned and nothing is compared engine-wide.
    """

    def __init__(self, client) -> None:
        self.client = client
        self.tags: list[str] = []

    def track(self, tag: str) -> str:
        self.tags.append(tag)
        return tag

    def cleanup(self) -> None:
        import docker.errors

        mine = {"label": f"{SESSION_LABEL}={SESSION}"}
        for container in self.client.api.containers(all=True, filters=mine):
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.remove_container(container["Id"], force=True, v=True)
        for tag in reversed(self.tags):
            # A conflict (another run's container uses the image) leaves it to them.
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.remove_image(tag, force=True)
        self._remove_digest_references()
        remove_labelled_images(self.client, f"{SESSION_LABEL}={SESSION}")

    def _remove_digest_references(self) -> None:
        """``REPO@sha256:...`` of the tracked repositories (a pull by digest, a push).

        Such a reference keeps an image alive after its last tag is gone; the
        tracked repositories are this session's own (their names hold its pid).
        """
        import docker.errors

        for repository in {_repository(tag) for tag in self.tags}:
            for image in self.client.api.images(name=repository):
                for reference in image.get("RepoDigests") or []:
                    if reference.startswith(f"{repository}@"):
                        with contextlib.suppress(docker.errors.APIError):
                            self.client.api.remove_image(reference, force=True)


def _repository(tag: str) -> str:
    """The repository of a ``NAME[:TAG]`` (a registry's ``:PORT`` is not a tag)."""
    name, colon, suffix = tag.rpartition(":")
    return name if colon and "/" not in suffix else tag


def remove_labelled_images(client, label: str) -> None:
    """Remove every image with *label* (``key=value``): children before their parents."""
    import docker.errors

    for _ in range(8):
        left = client.api.images(all=True, filters={"label": label})
        if not left:
            return
        for image in left:  # a parent refuses while a child is there: next round
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(image["Id"], force=True)


@pytest.fixture(scope="session")
def janitor(docker_client):
    j = ImageJanitor(docker_client)
    yield j
    j.cleanup()


def build_base_cli(tag: str, tree: Path, *extra: str, profile: str = "slim",
                   source: str = "tree") -> Result:
    return run_cli("build-base", "--profile", profile, "--gramine-source", source,
                   "--gramine-path", tree, "--tag", tag, "--json", *extra,
                   env={"SOURCE_DATE_EPOCH": "1700000000"})


@pytest.fixture(scope="session")
def neighbour(docker_client, os_image: str, janitor) -> Iterator[None]:
    """Other people's odd images and builds on the engine, for the whole session (neighbour.py)."""
    from neighbour import hostile_neighbour

    with hostile_neighbour(docker_client, os_image, SESSION_LABEL, SESSION):
        yield


@pytest.fixture(scope="session")
def slim_base(os_image: str, gramine_tree: Path, janitor, neighbour) -> dict:
    """The slim base image, built once per session by the CLI, removed at the end."""
    tag = janitor.track(unique_tag("base-slim"))
    result = build_base_cli(tag, gramine_tree)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def docker_run(client, image: str, command: list[str], *, stderr: bool = False,
               binds: dict[str, str] | None = None, environment: dict[str, str] | None = None,
               hostname: str | None = None) -> str:
    """Run a command in a throw-away container (no network); its output, read as a file.

    Not through the container's logs, which can come back truncated under
    load: the output (stdout, and stderr too with *stderr*) goes to a file in
    the container, read through the archive API once the command has ended.
    *binds* maps host paths to read-only container paths.
    """
    output = "/.ppml-test-output"
    redirect = f"> {output} 2>&1" if stderr else f"> {output}"
    host_config = client.api.create_host_config(
        network_mode="none", binds=[f"{h}:{c}:ro" for h, c in (binds or {}).items()])
    container = client.api.create_container(
        image, ["/bin/sh", "-c", f'exec "$@" {redirect}', "sh", *command],
        host_config=host_config, environment=environment, hostname=hostname,
        labels={SESSION_LABEL: SESSION})["Id"]
    try:
        client.api.start(container)
        status = client.api.wait(container, timeout=600)
        assert status.get("StatusCode") == 0, (command, status)
        return _archive_member(client, container, output).decode()
    finally:
        client.api.remove_container(container, force=True, v=True)


APP_MAIN = """\
import lightgbm as lgb
from sklearn.datasets import make_classification
X, y = make_classification(n_samples=300, n_features=8, random_state=0)
print("accuracy", lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y).score(X, y))
"""


@pytest.fixture(scope="session")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app") / "app"
    (folder / "lib").mkdir(parents=True)
    (folder / "main.py").write_text(APP_MAIN)
    (folder / "lib" / "helpers.py").write_text("ANSWER = 42\n")
    return folder


@pytest.fixture(scope="session")
def second_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_key(tmp_path_factory, "prod-key.pem")


def build_custom_cli(key: Path, base: str, app: Path, tag: str, *extra: str,
                     env: dict[str, str] | None = None) -> Result:
    return run_cli("build-custom", "--key", key, "--base", base, "--app", app, "--tag", tag,
                   "--date", "2025-01-31", "--json", *extra, env=env)


@pytest.fixture(scope="session")
def custom_image(slim_base: dict, enclave_key: Path, app_dir: Path, janitor) -> dict:
    """A signed custom image on the slim base, built once by the CLI."""
    tag = janitor.track(unique_tag("custom"))
    janitor.track(tag + "-unsigned")
    result = build_custom_cli(enclave_key, slim_base["tags"][0], app_dir, tag)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------
# A real PKCS#11 token (SoftHSM2), private to this session. `make test`
# installs SoftHSM2 and OpenSC (scripts/ensure-softhsm.sh).
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory):
    from softhsm import make_softhsm

    return make_softhsm(tmp_path_factory.mktemp("softhsm"))


# --------------------------------------------------------------------------
# A real registry on 127.0.0.1 (Debian's docker-registry). `make test` starts
# it (scripts/ensure-registry.sh); tests push only to repositories of their own.
# --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def registry():
    from registry import RegistryJanitor, ensure_registry

    janitor = RegistryJanitor(ensure_registry())
    yield janitor
    janitor.cleanup()
