"""The Docker engine, through docker-py, with errors users can act on.

Builds use the classic builder's JSON stream. Success is judged from the
stream (an ``error`` chunk means failure), never from a tag existing: images
are built untagged and tagged only once the build has succeeded, so a failed
build never moves a tag.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tarfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import docker
import docker.errors
import requests.exceptions

from ppml_image.errors import BuildError, EngineError

_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
ProgressCallback = Callable[[str], None]


def connect(timeout: int = 600) -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (default: the local socket)."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(
            f"no Docker engine answers at {where}: start one (as root on Debian: "
            f"scripts/ensure-docker.sh) [{type(exc).__name__}]"
        ) from None
    return client


def engine_call(what: str) -> Any:
    """Decorator-free helper: translate engine failures raised inside a block."""
    return _EngineCall(what)


class _EngineCall:
    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None:
            return False
        if isinstance(exc, docker.errors.ImageNotFound | docker.errors.NotFound):
            raise EngineError(f"{self.what}: not found") from None
        if isinstance(exc, docker.errors.APIError):
            raise EngineError(f"{self.what}: {exc.explanation or exc}") from None
        if isinstance(exc, requests.exceptions.RequestException | docker.errors.DockerException):
            raise EngineError(f"{self.what}: the Docker engine stopped answering "
                              f"({type(exc).__name__})") from None
        return False


def get_image(client: docker.DockerClient, ref: str, *, what: str = "image",
              hint: str = "") -> Any:
    """The image *ref*; a missing one is one line, with *hint* saying what to do."""
    with engine_call(f"{what} {ref}"):
        try:
            return client.images.get(ref)
        except docker.errors.ImageNotFound:
            raise EngineError(f"{what} {ref} not found{hint}") from None


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    with engine_call(f"image {ref}"):
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
    return True


# --------------------------------------------------------------------------
# Build contexts
# --------------------------------------------------------------------------
@dataclass
class BuildContext:
    """An in-memory (spooled) tar build context with normalised metadata.

    Every entry gets mtime 0 and owner root, so the engine's cache depends on
    content only and an unchanged rebuild is a cache hit.
    """

    buffer: IO[bytes] = field(default_factory=lambda: _spooled())
    _tar: tarfile.TarFile | None = None

    def __post_init__(self) -> None:
        self._tar = tarfile.open(fileobj=self.buffer, mode="w")  # noqa: SIM115 - closed by finish()

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = _info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        assert self._tar is not None
        self._tar.addfile(info, io.BytesIO(data))

    def add_tree(self, source: Path, arcname: str) -> None:
        """Add a folder recursively, keeping modes and symlinks (sorted: stable)."""
        assert self._tar is not None
        self._tar.addfile(_info(arcname, tarfile.DIRTYPE, 0o755))
        for root, dirs, files in os.walk(source):
            dirs.sort()
            rel_root = os.path.relpath(root, source)
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(root, name)
                rel = os.path.normpath(os.path.join(arcname, rel_root, name))
                st = os.lstat(path)
                if os.path.islink(path):
                    info = _info(rel, tarfile.SYMTYPE, 0o777)
                    info.linkname = os.readlink(path)
                    self._tar.addfile(info)
                elif os.path.isdir(path):
                    self._tar.addfile(_info(rel, tarfile.DIRTYPE, st.st_mode & 0o7777))
                elif os.path.isfile(path):
                    info = _info(rel, tarfile.REGTYPE, st.st_mode & 0o7777)
                    info.size = st.st_size
                    with open(path, "rb") as handle:
                        self._tar.addfile(info, handle)

    def finish(self) -> IO[bytes]:
        assert self._tar is not None
        self._tar.close()
        self.buffer.seek(0)
        return self.buffer


def _spooled() -> IO[bytes]:
    import tempfile

    return tempfile.SpooledTemporaryFile(max_size=64 << 20)


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# --------------------------------------------------------------------------
# Builds with progress
# --------------------------------------------------------------------------
class Progress:
    """Build progress on stderr: step N/M, the current instruction, elapsed time.

    On a terminal it is one line rewritten in place; otherwise one line per
    step, so CI logs stay readable. ``quiet`` (for --json) prints nothing.
    """

    def __init__(self, title: str, *, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.title = title
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.tty = self.stream.isatty()

    def step(self, number: int, total: int, instruction: str) -> None:
        if self.quiet:
            return
        text = f"{self.title}: step {number}/{total} [{self.elapsed():5.0f}s] {instruction}"
        if self.tty:
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
            self.stream.write("\r" + text[:width].ljust(width))
        else:
            self.stream.write(text[:200] + "\n")
        self.stream.flush()

    def done(self, message: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\n")
        self.stream.write(f"{self.title}: {message} in {self.elapsed():.1f}s\n")
        self.stream.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def build_image(client: docker.DockerClient, context: IO[bytes], *, what: str,
                progress: Progress, buildargs: dict[str, str] | None = None,
                labels: dict[str, str] | None = None, nocache: bool = False,
                network_mode: str | None = None) -> str:
    """Build from a tar context and return the image id (untagged)."""
    try:
        chunks = client.api.build(
            fileobj=context, custom_context=True, decode=True, rm=True, forcerm=True,
            nocache=nocache, buildargs=buildargs or {}, labels=labels or {},
            network_mode=network_mode)
        return _follow(chunks, what, progress)
    except (docker.errors.APIError, requests.exceptions.RequestException,
            docker.errors.DockerException) as exc:
        raise EngineError(f"{what}: build failed: the Docker engine answered "
                          f"{type(exc).__name__}: {exc}") from None


def _follow(chunks: Iterable[dict[str, Any]], what: str, progress: Progress) -> str:
    tail: deque[str] = deque(maxlen=8)
    step = "(before the first step)"
    image_id = None
    for chunk in chunks:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            last = " | ".join(line for line in tail if line)[-400:]
            raise BuildError(f"{what}: build failed at {step}: {detail.strip()}"
                             + (f" (last output: {last})" if last else ""))
        text = chunk.get("stream", "")
        for line in text.splitlines():
            match = _STEP_RE.match(line.strip())
            if match:
                step = f"step {match.group(1)}/{match.group(2)} ({match.group(3)[:80]})"
                progress.step(int(match.group(1)), int(match.group(2)), match.group(3))
            elif line.strip():
                tail.append(line.strip())
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = aux["ID"]
    if image_id is None:
        raise BuildError(f"{what}: the engine ended the build without an image id")
    return str(image_id)


def tag_image(client: docker.DockerClient, image_id: str, ref: str) -> None:
    repository, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    with engine_call(f"tagging {image_id[:19]} as {ref}"):
        client.api.tag(image_id, repository, tag or "latest")


def read_file_from_image(client: docker.DockerClient, image: str, path: str) -> bytes:
    """Copy one file out of an image (via a created, never started, container)."""
    with temporary_container(client, image) as container, engine_call(f"{image}:{path}"):
        stream, _ = container.get_archive(path)
        data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            raise EngineError(f"{image}: {path} is not a regular file")
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read()


class temporary_container:
    """A created (not started) container, always removed afterwards."""

    def __init__(self, client: docker.DockerClient, image: str,
                 command: list[str] | None = None) -> None:
        self.client, self.image, self.command = client, image, command
        self.container: Any = None

    def __enter__(self) -> Any:
        with engine_call(f"image {self.image}"):
            self.container = self.client.containers.create(
                self.image, command=self.command or ["/bin/true"], network_disabled=True)
        return self.container

    def __exit__(self, *exc: Any) -> None:
        if self.container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                self.container.remove(force=True)


def run_in_image(client: docker.DockerClient, image: str, command: list[str],
                 *, timeout: int = 600) -> str:
    """Run *command* in a fresh container of *image*; return stdout; always remove it."""
    with temporary_container(client, image, command) as container, \
            engine_call(f"running {command[0]} in {image}"):
        container.start()
        result = container.wait(timeout=timeout)
        out = str(container.logs(stdout=True, stderr=False).decode(errors="replace"))
        if result.get("StatusCode", 1) != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
            raise EngineError(f"{image}: `{' '.join(command)[:80]}` exited "
                              f"{result.get('StatusCode')}: {err[-300:]}")
        return out
