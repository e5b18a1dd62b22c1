"""The container engine seam: the only module that imports ``docker``.

Every other module of :mod:`ppml_image.images` talks to an :class:`Engine`
and gets typed values back (:class:`ImageInfo`, byte streams of tar
archives, image ids). :class:`DockerEngine` is the real one, over docker-py;
:class:`ppml_image.testing.MemoryEngine` keeps images in memory, so the
logic above this seam runs in fast tests without an engine.

What the seam promises, whichever engine is behind it:

* image ids and ``ImageInfo.layers`` (the RootFS diff ids) are content
  hashes computed by the engine; they are what we trust. Labels are data
  that anyone who builds an image can set.
* files come out as tar streams read piece by piece (:mod:`.tarstream`),
  never joined in memory, from a temporary container that is created, never
  started, and always removed (:meth:`Engine.open`); its VOLUMEs are empty
  anonymous volumes (NoCopy): nothing of the image is copied into them;
* builds are untagged; a tag is set only by :meth:`Engine.tag` once
  everything succeeded, so a failed build never moves a tag.

Temporary containers carry the label ``ppml-image.temporary`` naming the
process that made them (machine, boot, pid namespace, pid and its start
time). A process killed with ``kill -9`` cannot remove its container, so
the next run removes every such container whose owner is gone, and never
one whose owner still runs (a concurrent run) or is on another machine.

Registries: :meth:`Engine.push` and :meth:`Engine.pull` (by tag or by
digest) go through the engine, with the engine's own credentials (``docker
login``, i.e. ``~/.docker/config.json`` or ``DOCKER_CONFIG``); a failure is
one :class:`RegistryError` line saying why (unreachable, authentication,
name invalid, not found). The digest a push returns is the registry's
manifest digest, and the engine records it in the image's RepoDigests.
Each has a deadline (``timeout``, ``--registry-timeout``): the engine streams
progress while bytes move, so that many seconds of silence is a registry
that does not answer (RegistryError, reason ``timeout``), and the stream is
shut so that the engine cancels the transfer.

Extending it: add an abstract method to
:class:`Engine`, implement it in :class:`DockerEngine` (wrap docker-py calls
in :meth:`DockerEngine._call`, which turns engine failures into one-line
:class:`EngineError`) and in ``MemoryEngine``.

Why no ``layer_streams``: reading the layers above a cached base index needs
the image's save stream, and this engine (the classic store) writes every
layer of the image, base included, to a temporary folder before the first
byte of a save: measured side by side (``make bench``), a save costs 1.6 to
2.1x a whole export on the slim base and 1.75 to 2.8x on the full one. So an image is
measured from one export of its whole file system (see :mod:`.imagefs`);
every layer above the base is read by construction, and no host cache is
needed. An engine whose save streams stored blobs (the containerd image
store) could make a layer reader worth adding here.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

import docker
import docker.auth
import docker.errors
import docker.types
import requests.exceptions
import urllib3.exceptions
from docker.utils.json_stream import json_stream

from ppml_image import _json, _signals
from ppml_image.defaults import REGISTRY_TIMEOUT
from ppml_image.errors import BuildError, EngineError, RegistryError, VerificationError
from ppml_image.images.engine.reference import check_image, check_registry_timeout, check_tag
from ppml_image.images.engine.tarstream import ByteStream, read_single_file
from ppml_image.images.progress import Progress

TEMPORARY_LABEL = "ppml-image.temporary"
_SHORT_TIMEOUT = 30  # seconds: creating or removing a container
# Go's os.FileMode bits for devices, pipes, sockets and irregular files.
_GO_SPECIAL = (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}\Z")
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
# The classic builder names the container of each RUN step, and its removal.
_RUNNING_RE = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")
_REMOVED_RE = re.compile(r"^Removing intermediate container ([0-9a-f]{12,64})$")
# What a connection to an engine that died, hung up or sent garbage raises,
# at any layer of the stack: docker-py, requests, urllib3, http.client, the socket.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.RequestException, docker.errors.DockerException,
    docker.errors.StreamParseError, urllib3.exceptions.HTTPError, http.client.HTTPException,
    OSError)
# A read that timed out, as requests (before the answer's headers) or urllib3 (in
# the streamed body) raises it. During a pull or push the engine is waiting for
# the registry: the engine itself answers at once (see _transfer).
_READ_TIMEOUTS: tuple[type[BaseException], ...] = (
    requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, socket.timeout)


def valid_image_id(value: object) -> bool:
    """``sha256:`` and 64 lowercase hex digits: a content-addressed image id."""
    return isinstance(value, str) and _IMAGE_ID.match(value) is not None


# --------------------------------------------------------------------------
# Typed values
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageInfo:
    """What the engine says about an image (``docker image inspect``)."""

    id: str
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    workdir: str = ""
    env: tuple[str, ...] = ()
    user: str = ""
    healthcheck: dict[str, Any] | None = None
    onbuild: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()  # RootFS diff ids, lowest first
    size: int = 0
    repo_digests: tuple[str, ...] = ()  # NAME@sha256:... this content has in registries
    platform: str = "linux/amd64"  # OS/ARCHITECTURE[/VARIANT] its (content-addressed) config says
    # The whole Config object as the engine gives it (Volumes, Shell, StopSignal,
    # ExposedPorts...): verify's closed world compares every key of it.
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    def derives_from(self, base: ImageInfo) -> bool:
        """Whether this image's layers begin with all of *base*'s (content hashes)."""
        return bool(base.layers) and self.layers[: len(base.layers)] == base.layers


# The one platform an SGX enclave image is for: chosen explicitly on every
# pull, whatever the engine's own platform, and checked on every image verified.
PLATFORM = "linux/amd64"
INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json",
               "application/vnd.oci.image.index.v1+json")


@dataclass(frozen=True)
class Distribution:
    """What a registry says a reference names (via the engine)."""

    media_type: str
    digest: str
    platforms: tuple[str, ...]  # OS/ARCH[/VARIANT] of each image an index names

    @property
    def is_index(self) -> bool:
        """An index (manifest list): the digest names one image per platform, not one image."""
        return self.media_type in INDEX_TYPES


def _platform_name(value: Any) -> str:
    if not isinstance(value, dict):
        return "unknown"
    parts = [str(value.get("os") or "?"), str(value.get("architecture") or "?")]
    if value.get("variant"):
        parts.append(str(value["variant"]))
    return "/".join(parts)[:60]


@dataclass(frozen=True)
class Bind:
    host: str
    container: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """A container to run: what ``run`` executes and ``run --print`` prints."""

    image: str
    command: tuple[str, ...] | None = None
    devices: tuple[str, ...] = ()  # host device paths, mapped to the same path, rwm
    binds: tuple[Bind, ...] = ()
    network: str | None = None
    auto_remove: bool = True


@dataclass(frozen=True)
class PathStat:
    """One path of an image, not followed if it is a symlink (Docker's path stat)."""

    kind: str  # "file", "dir", "link" or "other"
    mode: int
    size: int
    target: str = ""  # a symlink's target, fully resolved inside the image


@dataclass(frozen=True)
class Transfer:
    """A push or pull: the manifest digest, and how many layers had to move."""

    ref: str
    digest: str  # sha256:... of the manifest: what NAME@DIGEST names ("" if not told)
    layers_sent: int = 0  # uploaded, or downloaded
    layers_present: int = 0  # already there (mounted from another repository, or local)


class MissingError(EngineError):
    """The engine has no such image, container or path."""


class LinkLoopError(VerificationError):
    """A path in an image leads through a symbolic link loop: the image is refused.

    A verification refusal (exit 3), not an engine failure: the image's own
    content is what stops the read, and a hostile image can make one.
    """


# How the engine says that resolving a path in a container looped (Go's
# evalSymlinksInScope, or the kernel's ELOOP text).
_LOOP_RE = re.compile(r"too many links|too many levels of symbolic links", re.IGNORECASE)
# The engine's own paths in its messages (overlay2's .../merged, vfs's dir/ID,
# a container's rootfs): its data root is none of the user's business.
_ENGINE_PATH_RE = re.compile(r"/[^\s\"']*?/(?:merged|diff|rootfs|vfs/dir/[0-9a-f]{64})"
                             r"(?=[/\s\"':]|$)")


def image_path_error(image: str, path: str, message: str) -> EngineError | LinkLoopError:
    """The engine's error reading *path* of *image*, in the image's terms only."""
    if _LOOP_RE.search(message):
        return LinkLoopError(f"{image}:{path}: a symbolic link on the way loops (it leads "
                             "back to itself): the image is refused")
    return EngineError(_ENGINE_PATH_RE.sub("", message))


class ImageFiles(ABC):
    """One image's files, read through a temporary (never started) container."""

    def __init__(self, image: str) -> None:
        self.image = image

    @abstractmethod
    def export(self) -> ByteStream:
        """The whole file system as one tar stream (close it when done)."""

    @abstractmethod
    def archive(self, path: str) -> ByteStream:
        """A tar stream of *path*; a trailing "/" follows a final symlink (Docker's rule)."""

    @abstractmethod
    def stat(self, path: str) -> PathStat | None:
        """What *path* is (its folders' symlinks followed, not its own), or None if absent."""

    def read_file(self, path: str, *, limit: int, what: str | None = None) -> bytes:
        """The regular file at *path* (symlinks in its folders followed), within *limit*."""
        return self._read(path, what, limit=limit)

    def read_head(self, path: str, size: int) -> bytes:
        """The first *size* bytes of the regular file at *path* (the rest is not read)."""
        return self._read(path, None, limit=size, head=size)

    def _read(self, path: str, what: str | None, *, limit: int, head: int | None = None
              ) -> bytes:
        stream = self.archive(path)
        try:
            return read_single_file(stream, what=what or f"{self.image}:{path}", limit=limit,
                                    head=head)
        finally:
            stream.close()


class Engine(ABC):
    """Images, builds and containers; see the module docstring."""

    where = "the engine"

    def twin(self) -> Engine:
        """The same engine, for one other thread to use alongside this one."""
        return self

    @abstractmethod
    def find_image(self, ref: str) -> ImageInfo | None:
        """The image *ref* (a tag or an id), or None if the engine has none."""

    @abstractmethod
    def open(self, image: str) -> contextlib.AbstractContextManager[ImageFiles]:
        """Read *image*'s files for the duration of a ``with`` block."""

    @abstractmethod
    def build(self, context: IO[bytes], *, what: str, progress: Progress,
              labels: dict[str, str] | None = None, buildargs: dict[str, str] | None = None,
              nocache: bool = False, network_mode: str | None = None,
              extra_hosts: dict[str, str] | None = None) -> str:
        """Build from a tar context; return the image id (untagged)."""

    @abstractmethod
    def tag(self, image_id: str, ref: str, *, restore: bool = False) -> None:
        """Point the tag *ref* at *image_id*.

        A tag is a commit: after Ctrl-C or SIGTERM it is refused, unless
        *restore* puts a tag back where it was before a command that failed.
        """

    @abstractmethod
    def remove_image(self, ref: str) -> None:
        """Untag *ref* (and remove the image if nothing else uses it)."""

    @abstractmethod
    def pull(self, ref: str, *, progress: Progress | None = None,
             timeout: int = REGISTRY_TIMEOUT) -> Transfer:
        """Fetch *ref* (``NAME:TAG`` or ``NAME@sha256:...``) for :data:`PLATFORM`.

        *timeout*: seconds the registry may stay silent before a RegistryError.
        """

    def distribution(self, ref: str, *, timeout: int = REGISTRY_TIMEOUT) -> Distribution | None:
        """What the registry says *ref* is (one image's manifest, or an index); None: unknown."""
        return None

    @abstractmethod
    def push(self, ref: str, *, progress: Progress | None = None,
             timeout: int = REGISTRY_TIMEOUT) -> Transfer:
        """Push the tag *ref* to its registry; the manifest digest it got there.

        *timeout*: seconds the registry may stay silent before a RegistryError.
        """

    @abstractmethod
    def import_rootfs(self, tarball: Path, ref: str, changes: list[str]) -> str:
        """Import a root file system tarball as *ref*; returns the image id."""

    @abstractmethod
    def create_container(self, spec: ContainerSpec) -> str:
        """Create (do not start) the container *spec* describes; returns its id."""

    @abstractmethod
    def run_container(self, spec: ContainerSpec, stdout: BinaryIO, stderr: BinaryIO) -> int:
        """Run *spec* attached (output to *stdout*/*stderr*); return its exit status."""

    @abstractmethod
    def remove_container(self, container: str) -> None:
        """Remove a container, running or not."""

    # -- conveniences built on the primitives --------------------------------
    def image(self, ref: str, *, what: str = "image", hint: str = "") -> ImageInfo:
        """The image *ref*; a missing one is one line, with *hint* saying what to do."""
        check_image(ref, what)
        info = self.find_image(ref)
        if info is None:
            raise EngineError(f"{what} {ref} not found{hint}")
        return info

    def read_file(self, image: str, path: str, *, limit: int, what: str | None = None) -> bytes:
        with self.open(image) as files:
            return files.read_file(path, limit=limit, what=what)


# --------------------------------------------------------------------------
# Owners of temporary containers
# --------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The start time of *pid* in clock ticks since boot ("" if there is no such process)."""
    stat = _read(f"/proc/{pid}/stat")
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _this_machine() -> dict[str, str]:
    pidns = ""
    with contextlib.suppress(OSError):
        pidns = os.readlink("/proc/self/ns/pid")
    return {"host": _read("/etc/machine-id") or os.uname().nodename,
            "boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": pidns}


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration of a short critical section.

    Python runs signal handlers in the main thread only, so there the
    handlers are swapped for ones that note the signal; the original
    handler runs as soon as the section ends (raising KeyboardInterrupt, or
    the CLI's Terminated, at a point where cleanup is already possible).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []
    saved = {signum: signal.signal(signum, lambda n, f: caught.append((n, f)))
             for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        if caught:
            number, frame = caught[0]
            original = saved[signal.Signals(number)]
            if callable(original):
                original(number, frame)
            elif original == signal.SIG_DFL:
                os.kill(os.getpid(), number)


def owner_label() -> str:
    """This process, as the owner of a temporary container."""
    pid = os.getpid()
    return json.dumps({**_this_machine(), "pid": pid, "start": _process_start(pid)},
                      separators=(",", ":"), sort_keys=True)


def owner_is_gone(label: str) -> bool:
    """Whether the process a label names has certainly ended (then its container is litter).

    Only a process of this machine can be judged: same machine and another
    boot means gone; same boot and pid namespace means gone unless a process
    with that pid and that start time exists. Anything else (another
    machine, another pid namespace, an unreadable label) is left alone.
    """
    try:
        owner = _json.loads(label)
        host, boot, pidns = str(owner["host"]), str(owner["boot"]), str(owner["pidns"])
        pid, start = int(owner["pid"]), str(owner["start"])
    except (ValueError, KeyError, TypeError):
        return False
    here = _this_machine()
    if host != here["host"] or not boot:
        return False
    if boot != here["boot"]:
        return True
    if pidns != here["pidns"]:
        return False
    return _process_start(pid) != start


# --------------------------------------------------------------------------
# The Docker engine
# --------------------------------------------------------------------------
def connect(timeout: int = 600) -> DockerEngine:
    """The engine named by DOCKER_HOST (default: the local socket)."""
    return DockerEngine(timeout=timeout)


class DockerEngine(Engine):
    """The Docker engine through docker-py, every failure turned into one line."""

    _swept = False
    _sweeping = threading.Lock()

    def __init__(self, timeout: int = 600, where: str | None = None) -> None:
        self.where = where or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        self._timeout = timeout
        try:
            self.client = docker.from_env(timeout=timeout,
                                          environment={**os.environ, "DOCKER_HOST": self.where})
            self.client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(
                f"no Docker engine answers at {self.where}: start one (as root on Debian: "
                f"scripts/ensure-docker.sh) [{type(exc).__name__}]") from None
        self.api = self.client.api

    def twin(self) -> DockerEngine:
        # A client of its own: this one's timeout is changed for short calls
        # (_short_timeout), which must not reach another thread's export.
        return DockerEngine(self._timeout, self.where)

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Translate docker-py's and requests' failures raised inside the block."""
        try:
            yield
        except docker.errors.NotFound:
            raise MissingError(f"{what}: not found") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"{what}: {exc.explanation or exc}") from None
        except _CONNECTION_ERRORS as exc:
            raise self._gone(what, exc) from None

    def _gone(self, what: str, exc: BaseException) -> EngineError:
        """The engine died, hung up or sent garbage: one line naming it (DOCKER_HOST)."""
        return EngineError(f"{what}: the Docker engine at {self.where} stopped answering "
                           f"({type(exc).__name__})")

    # -- images -------------------------------------------------------------
    def find_image(self, ref: str) -> ImageInfo | None:
        with self._call(f"image {ref}"):
            try:
                attrs = self.api.inspect_image(ref)
            except docker.errors.ImageNotFound:
                return None
            except docker.errors.APIError as exc:
                if exc.status_code in (400, 404):  # an invalid reference is not an image
                    return None
                raise
        return _image_info(attrs)

    def tag(self, image_id: str, ref: str, *, restore: bool = False) -> None:
        parsed = check_tag(ref, "tag")  # the commands checked it before any work; so do we
        if not restore:
            _signals.check()  # a tag is a commit: never after Ctrl-C or SIGTERM
        with self._call(f"tagging {image_id[:19]} as {ref}"):
            self.api.tag(image_id, parsed.name, parsed.tag or "latest")

    def remove_image(self, ref: str) -> None:
        with self._call(f"removing image {ref}"):
            self.api.remove_image(ref, force=True)

    def pull(self, ref: str, *, progress: Progress | None = None,
             timeout: int = REGISTRY_TIMEOUT) -> Transfer:
        repository, tag = split_reference(ref)
        # The engine checks every blob against its digest, and the manifest
        # against the digest of a NAME@sha256:... reference.
        return self._transfer(self.api._url("/images/create"), repository,
                              {"fromImage": repository, "tag": tag, "platform": PLATFORM},
                              ref, progress, pushing=False, timeout=timeout)

    def distribution(self, ref: str, *, timeout: int = REGISTRY_TIMEOUT) -> Distribution | None:
        what = f"asking the registry what {ref} is"
        check_registry_timeout(timeout, "timeout")
        try:
            # The engine asks the registry before it answers: a read deadline of its own.
            response = self.api._get(self.api._url("/distribution/{0}/json", ref),
                                     timeout=timeout)
            self.api._raise_for_status(response)
            raw = _json.loads(response.content)
        except docker.errors.APIError as exc:
            raise registry_error(what, ref, str(exc.explanation or exc)) from None
        except ValueError:
            raise RegistryError(f"{what}: the answer is not valid JSON", "other") from None
        except _READ_TIMEOUTS:
            raise registry_silent(what, ref, timeout) from None
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise self._gone(what, exc) from None
        descriptor = raw.get("Descriptor") if isinstance(raw, dict) else None
        if not isinstance(descriptor, dict) or not valid_digest(descriptor.get("digest")):
            raise RegistryError(f"{what}: the engine's answer names no digest", "other")
        platforms = raw.get("Platforms") if isinstance(raw.get("Platforms"), list) else []
        return Distribution(str(descriptor.get("mediaType") or ""), str(descriptor["digest"]),
                            tuple(_platform_name(p) for p in platforms))

    def push(self, ref: str, *, progress: Progress | None = None,
             timeout: int = REGISTRY_TIMEOUT) -> Transfer:
        repository, tag = split_tag(ref)
        transfer = self._transfer(self.api._url("/images/{0}/push", repository), repository,
                                  {"tag": tag}, ref, progress, pushing=True, timeout=timeout)
        # The engine records what it pushed; a digest it does not record is not ours.
        info = self.image(ref)
        if f"{repository}@{transfer.digest}" not in info.repo_digests:
            raise RegistryError(f"pushing {ref}: the engine reported digest {transfer.digest} "
                                "but does not record it for the image", "other")
        return transfer

    def _transfer(self, url: str, repository: str, params: dict[str, str], ref: str,
                  progress: Progress | None, *, pushing: bool, timeout: int) -> Transfer:
        """POST a pull or push and follow its stream, with *timeout* as the read deadline.

        docker-py's own pull has no read timeout at all (a silent registry hangs
        it for ever), so the request is made here. The engine writes progress
        while bytes move, so *timeout* seconds of silence mean the registry does
        not answer. The response is shut on every way out: the engine then
        cancels the transfer, and a pull leaves nothing behind.
        """
        check_registry_timeout(timeout, "timeout")
        what = f"{'pushing' if pushing else 'pulling'} {ref}"
        if progress is not None:  # before the silence, so that a user knows what we wait for
            progress.say(f"{what} {'to' if pushing else 'from'} {registry_of(ref)} ...")
        # As docker-py sends them: a push's body is an empty JSON object.
        headers = {"Content-Type": "application/json"} if pushing else {}
        auth = docker.auth.get_config_header(self.api, docker.auth.resolve_repository_name(
            repository)[0])
        if auth:  # the engine's credentials (docker login), as docker-py sends them
            headers["X-Registry-Auth"] = auth
        response = None
        try:
            response = self.api._post(url, params=params, headers=headers,
                                      data=b"{}" if pushing else None, stream=True,
                                      timeout=timeout)
            self.api._raise_for_status(response)
            return _follow_transfer(self.api._stream_helper(response, decode=True), ref, what,
                                    progress, pushing=pushing)
        except docker.errors.APIError as exc:
            raise registry_error(what, ref, str(exc.explanation or exc)) from None
        except _READ_TIMEOUTS:
            raise registry_silent(what, ref, timeout) from None
        except (requests.exceptions.RequestException, docker.errors.DockerException,
                urllib3.exceptions.HTTPError) as exc:
            raise self._gone(what, exc) from None
        finally:
            _shut(response)

    def import_rootfs(self, tarball: Path, ref: str, changes: list[str]) -> str:
        repository, tag = split_tag(ref)
        with self._call(f"importing {ref}"):
            self.api.import_image_from_file(str(tarball), repository=repository, tag=tag,
                                            changes=changes)
        return self.image(ref).id

    def build(self, context: IO[bytes], *, what: str, progress: Progress,
              labels: dict[str, str] | None = None, buildargs: dict[str, str] | None = None,
              nocache: bool = False, network_mode: str | None = None,
              extra_hosts: dict[str, str] | None = None) -> str:
        """Build with the classic builder, following its stream (see :func:`_follow`).

        The engine goes on with a build whose client stopped reading, so on
        Ctrl-C, SIGTERM or a broken connection the stream is shut and the
        step's container (named in the stream) is removed before we return:
        nothing of this build runs on, and nothing is left but cached layers.
        """
        api = self.api
        args = {**api._proxy_configs.get_environment(), **(buildargs or {})}
        params: dict[str, Any] = {"q": False, "nocache": nocache, "rm": True, "forcerm": True,
                                  "pull": False, "buildargs": json.dumps(args),
                                  "labels": json.dumps(labels or {})}
        if network_mode:
            params["networkmode"] = network_mode
        if extra_hosts:  # the step containers' /etc/hosts: not part of any cache key
            params["extrahosts"] = " ".join(f"{name}:{address}"
                                            for name, address in sorted(extra_hosts.items()))
        headers = {"Content-Type": "application/tar"}
        running: list[str] = []  # the container of the step being run, if any
        response = None
        try:
            with self._call(f"{what}: build failed"):
                api._set_auth_headers(headers)
                # No read timeout: a build step may be silent for as long as it likes.
                response = api._post(api._url("/build"), data=context, params=params,
                                     headers=headers, stream=True, timeout=None)
                api._raise_for_status(response)
            try:
                return _follow(json_stream(api._stream_helper(response, False)), what,
                               progress, running, where=self.where)
            except BuildError:
                raise
            except _CONNECTION_ERRORS as exc:
                raise self._gone(what, exc) from None
        except BaseException:
            _shut(response)
            if running:
                self._remove_quietly(running[-1])
            raise
        finally:
            _shut(response)

    # -- temporary containers ------------------------------------------------
    @contextlib.contextmanager
    def open(self, image: str) -> Iterator[ImageFiles]:
        self._sweep()
        container = ""
        try:
            # Ctrl-C or SIGTERM between the engine creating the container and us
            # knowing its id would leave it behind: the signal waits for the id,
            # and is raised inside this try, so that the container is removed.
            with self._short_timeout(), self._call(f"image {image}"):
                volumes = (self.api.inspect_image(image).get("Config") or {}).get("Volumes")
                # Each VOLUME gets an anonymous volume with NoCopy: creating the
                # container copies nothing of the image into it (a VOLUME over a
                # huge sparse file would otherwise be written out to the verifier's
                # disk). The export reads the image's layers, never volumes.
                host_config = self.api.create_host_config(mounts=[
                    docker.types.Mount(str(path), None, type="volume", no_copy=True)
                    for path in sorted(volumes or {}) if isinstance(path, str)])
            with _signals_deferred(), self._short_timeout(), self._call(f"image {image}"):
                container = self.api.create_container(
                    image, command=["/ppml-image-reads-files-only"], network_disabled=True,
                    labels={TEMPORARY_LABEL: owner_label()}, host_config=host_config)["Id"]
            yield _DockerFiles(self, image, container)
        finally:
            if container:
                self._remove_quietly(container)

    def _remove_quietly(self, container: str) -> None:
        # v=True: an image's VOLUMEs got anonymous volumes when the container was
        # created; they are ours to remove with it. A signal waits for the removal.
        with _signals_deferred(), self._short_timeout(), contextlib.suppress(
                *_CONNECTION_ERRORS):
            self.api.remove_container(container, force=True, v=True)

    @contextlib.contextmanager
    def _short_timeout(self) -> Iterator[None]:
        """While signals wait, an engine that hangs must not hold them for long."""
        saved = self.api.timeout
        self.api.timeout = _SHORT_TIMEOUT
        try:
            yield
        finally:
            self.api.timeout = saved

    def _sweep(self) -> None:
        """Remove temporary containers whose owner has certainly gone (kill -9)."""
        with DockerEngine._sweeping:  # once, even when two threads open images at once
            if DockerEngine._swept:
                return
            DockerEngine._swept = True
            with self._call("listing temporary containers"):
                found = self.api.containers(all=True, filters={"label": TEMPORARY_LABEL})
            for container in found:
                label = (container.get("Labels") or {}).get(TEMPORARY_LABEL, "")
                if owner_is_gone(label):
                    self._remove_quietly(container["Id"])

    # -- containers that run -------------------------------------------------
    def _create(self, spec: ContainerSpec, created: list[str] | None = None) -> str:
        """Create *spec*'s container; its id goes to *created* before any signal is raised."""
        host_config = self.api.create_host_config(
            devices=[f"{d}:{d}:rwm" for d in spec.devices],
            binds=[f"{b.host}:{b.container}:{'ro' if b.read_only else 'rw'}"
                   for b in spec.binds],
            network_mode=spec.network, auto_remove=spec.auto_remove)
        with _signals_deferred(), self._call(f"creating a container of {spec.image}"):
            container = str(self.api.create_container(
                spec.image, command=list(spec.command) if spec.command is not None else None,
                host_config=host_config, stdin_open=False, tty=False)["Id"])
            if created is not None:
                created.append(container)
        return container

    def create_container(self, spec: ContainerSpec) -> str:
        return self._create(spec)

    def remove_container(self, container: str) -> None:
        self._remove_quietly(container)

    def run_container(self, spec: ContainerSpec, stdout: BinaryIO, stderr: BinaryIO) -> int:
        created: list[str] = []
        status: dict[str, Any] = {}
        # Like `docker run --rm`: wait for removal (auto_remove) or exit, set
        # up before the start so that a fast exit is not missed.
        condition = "removed" if spec.auto_remove else "next-exit"
        try:
            container = self._create(spec, created)
            waiter = threading.Thread(target=self._wait, args=(container, condition, status),
                                      daemon=True)
            with self._call(f"running {spec.image}"):
                frames = self.api.attach(container, stdout=True, stderr=True, stream=True,
                                         logs=True, demux=True)
                waiter.start()
                self.api.start(container)
                for out, err in frames:
                    for data, sink in ((out, stdout), (err, stderr)):
                        if data:
                            sink.write(data)
                            sink.flush()
            waiter.join()
        except BaseException:
            for container in created:  # Ctrl-C or SIGTERM: stop what we started
                self._remove_quietly(container)
            raise
        if not spec.auto_remove:
            self._remove_quietly(container)
        if "error" in status:
            raise EngineError(f"running {spec.image}: {status['error']}")
        return int(status.get("StatusCode", 1))

    def _wait(self, container: str, condition: str, status: dict[str, Any]) -> None:
        _signals.leave_to_main_thread()
        try:
            status.update(self.api.wait(container, timeout=None, condition=condition))
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            status["error"] = f"{type(exc).__name__}: {exc}"


class _ResponseStream:
    """A streamed HTTP response body as a :class:`ByteStream`."""

    def __init__(self, engine: DockerEngine, response: Any, what: str) -> None:
        self.engine, self.response, self.what = engine, response, what

    def read(self, size: int) -> bytes:
        with self.engine._call(self.what):
            try:
                return bytes(self.response.raw.read(size))
            except Exception as exc:  # urllib3's protocol errors have no common base we import
                raise requests.exceptions.ConnectionError(str(exc)) from None

    def close(self) -> None:
        _shut(self.response)


def _shut(response: Any) -> None:
    """Close a streamed response at once, waking any thread blocked reading it.

    Closing a socket does not wake a ``recv`` blocked on it in another
    thread (the export's receiver); shutting it down does.
    """
    if response is None:
        return
    with contextlib.suppress(Exception):
        sock = _socket_of(response)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()


def _socket_of(response: Any) -> socket.socket | None:
    """The socket under a requests response over docker-py's adapters (None if unknown)."""
    raw = getattr(response, "raw", None)
    for path in (("_connection", "sock"), ("_fp", "fp", "raw", "_sock")):
        node: Any = raw
        for name in path:
            node = getattr(node, name, None)
        if isinstance(node, socket.socket):
            return node
    return None


class _DockerFiles(ImageFiles):
    def __init__(self, engine: DockerEngine, image: str, container: str) -> None:
        super().__init__(image)
        self.engine, self.container = engine, container

    @contextlib.contextmanager
    def _path_call(self, path: str, what: str) -> Iterator[None]:
        """:meth:`DockerEngine._call`, with the engine's messages told in the image's terms."""
        try:
            with self.engine._call(what):
                yield
        except MissingError:
            raise
        except EngineError as exc:
            raise image_path_error(self.image, path, str(exc)) from None

    def _get(self, url: str, what: str, params: dict[str, str] | None = None) -> ByteStream:
        api = self.engine.api
        with self._path_call((params or {}).get("path", "/"), what):
            # Identity: the engine would otherwise gzip the stream for requests' default
            # Accept-Encoding, costing a compression on each side for nothing.
            response = api._get(api._url(url, self.container), params=params, stream=True,
                                headers={"Accept-Encoding": "identity"})
            try:
                api._raise_for_status(response)
            except BaseException:
                response.close()
                raise
        return _ResponseStream(self.engine, response, what)

    def export(self) -> ByteStream:
        return self._get("/containers/{0}/export", f"reading the files of {self.image}")

    def archive(self, path: str) -> ByteStream:
        return self._get("/containers/{0}/archive", f"{self.image}:{path}", {"path": path})

    def stat(self, path: str) -> PathStat | None:
        api = self.engine.api
        with self._path_call(path, f"{self.image}:{path}"):
            response = api.head(api._url("/containers/{0}/archive", self.container),
                                params={"path": path})
            if response.status_code == 404:
                return None
        if response.status_code >= 500:
            # A HEAD answer has no body to say why (a link loop, say): the GET's
            # error says it, and a GET that succeeds is closed unread.
            self.archive(path).close()
        with self._path_call(path, f"{self.image}:{path}"):
            api._raise_for_status(response)
        header = response.headers.get("X-Docker-Container-Path-Stat", "")
        try:
            stat = _json.loads(base64.b64decode(header))
            mode = int(stat["mode"])
        except (ValueError, KeyError, TypeError):
            raise EngineError(f"{self.image}:{path}: the engine gave no path stat") from None
        # Go's os.FileMode: the type is in the high bits, the permissions in the low ones.
        kind = "dir" if mode & (1 << 31) else "link" if mode & (1 << 27) else \
            "other" if mode & _GO_SPECIAL else "file"
        return PathStat(kind, mode & 0o7777, int(stat.get("size") or 0),
                        str(stat.get("linkTarget") or ""))


def _image_info(attrs: dict[str, Any]) -> ImageInfo:
    config = attrs.get("Config") or {}

    def strings(value: Any) -> tuple[str, ...] | None:
        return tuple(str(v) for v in value) if isinstance(value, list) else None

    return ImageInfo(
        id=str(attrs["Id"]), tags=tuple(attrs.get("RepoTags") or ()),
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
        cmd=strings(config.get("Cmd")), entrypoint=strings(config.get("Entrypoint")),
        workdir=str(config.get("WorkingDir") or ""), env=strings(config.get("Env")) or (),
        user=str(config.get("User") or ""), healthcheck=config.get("Healthcheck") or None,
        onbuild=strings(config.get("OnBuild")) or (),
        layers=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
        size=int(attrs.get("Size") or 0),
        repo_digests=tuple(str(d) for d in attrs.get("RepoDigests") or ()),
        platform="/".join(str(attrs.get(k) or "") for k in ("Os", "Architecture", "Variant")
                          if attrs.get(k) or k != "Variant"),
        config=dict(config) if isinstance(config, dict) else {})


def split_tag(ref: str) -> tuple[str, str]:
    """``repo/name:tag`` -> (``repo/name``, ``tag``); no tag means ``latest``."""
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repository, tag


def split_reference(ref: str) -> tuple[str, str]:
    """Like :func:`split_tag`, but ``NAME@sha256:...`` -> (``NAME``, ``sha256:...``)."""
    name, at, digest = ref.partition("@")
    if at:
        return name, digest
    return split_tag(ref)


def registry_of(ref: str) -> str:
    """The registry a reference names (Docker Hub when its first component is no host)."""
    first, slash, _ = ref.partition("@")[0].partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


# What the engine says when a registry fails, by reason (lower-case fragments).
_REGISTRY_REASONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("http", ("server gave http response to https client",)),
    ("content", ("verification failed", "digest mismatch", "did not match",
                 "digest_invalid", "digest invalid")),
    # The image config's rootfs.diff_ids name other layers than the manifest serves.
    ("layers", ("don't match image configuration", "do not match image configuration")),
    ("platform", ("no matching manifest for",)),
    ("auth", ("no basic auth credentials", "unauthorized", "authentication required",
              "denied", "incorrect username or password")),
    ("name", ("name invalid", "name_invalid", "invalid reference format",
              "repository name must", "invalid repository name")),
    ("not-found", ("manifest unknown", "not found", "manifest_unknown", "name unknown")),
    ("unreachable", ("connection refused", "no such host", "dial tcp", "i/o timeout",
                     "connection reset", "context deadline exceeded", "network is unreachable",
                     "tls:", "eof")),
)


def registry_error(what: str, ref: str, message: str) -> RegistryError:
    """One line saying why a push or pull of *ref* failed, and what to do."""
    detail = " ".join(message.split())[:300]
    text = detail.lower()
    registry = registry_of(ref)
    reason = next((name for name, fragments in _REGISTRY_REASONS
                   if any(fragment in text for fragment in fragments)), "other")
    lines = {
        "http": (f"{what}: registry {registry} answers plain HTTP and the engine wants "
                 f"HTTPS: add it to the engine's insecure-registries ({detail})", "unreachable"),
        "auth": (f"{what}: registry {registry} refused authentication ({detail}); log in "
                 f"first (docker login {registry})", "auth"),
        "name": (f"{what}: name invalid ({detail})", "name"),
        "content": (f"{what}: registry {registry} served content that does not match its "
                    f"digest ({detail}): refused", "content"),
        "platform": (f"{what}: the reference names no {PLATFORM} image ({detail}): "
                     "refused", "platform"),
        "layers": (f"{what}: registry {registry} served layers that are not the ones the "
                   f"image's config names (rootfs.diff_ids) ({detail}): refused", "content"),
        "not-found": (f"{what}: not found in registry {registry} ({detail})", "not-found"),
        "unreachable": (f"{what}: registry {registry} does not answer ({detail}); is it "
                        "running? (a local one: scripts/ensure-registry.sh)", "unreachable"),
        "other": (f"{what}: {detail}", "other"),
    }
    line, kind = lines[reason]
    return RegistryError(line, kind)


def registry_silent(what: str, ref: str, timeout: int) -> RegistryError:
    """The registry said nothing for *timeout* seconds: one line naming it and the deadline."""
    return RegistryError(f"{what}: registry {registry_of(ref)} did not answer within {timeout} s "
                         "(--registry-timeout)", "timeout")


def _follow_transfer(chunks: Iterable[dict[str, Any]], ref: str, what: str,
                     progress: Progress | None, *, pushing: bool) -> Transfer:
    """Follow a push or pull stream; an ``error`` chunk is a failed transfer.

    Progress gets one line per layer done, not one per chunk of bytes.
    """
    done: dict[str, str] = {}
    seen: set[str] = set()
    digest = ""
    sent_words = ("pushed",) if pushing else ("pull complete",)
    for chunk in chunks:
        if "error" in chunk:
            detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
            raise registry_error(what, ref, str(detail))
        layer, status = str(chunk.get("id") or ""), str(chunk.get("status") or "")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and valid_digest(aux.get("Digest")):
            digest = str(aux["Digest"])
        elif status.startswith("Digest: ") and valid_digest(status[8:].strip()):
            digest = status[8:].strip()
        if not layer or status.startswith(("Pulling from", "Digest:", "Status:")):
            continue
        seen.add(layer)
        lowered = status.lower()
        finished = lowered in sent_words or lowered.startswith(
            ("layer already exists", "mounted from", "already exists"))
        if finished and layer not in done:
            done[layer] = "sent" if lowered in sent_words else "present"
            if progress is not None:
                progress.step(len(done), len(seen), f"{layer} {status}")
    if pushing and not digest:
        raise RegistryError(f"{what}: the engine ended the push without a digest", "other")
    sent = sum(1 for kind in done.values() if kind == "sent")
    return Transfer(ref, digest, layers_sent=sent, layers_present=len(done) - sent)


def valid_digest(value: object) -> bool:
    """``sha256:`` and 64 lowercase hex digits (a manifest or image digest)."""
    return valid_image_id(value)


def _follow(chunks: Iterable[dict[str, Any]], what: str, progress: Progress,
            running: list[str] | None = None, where: str = "") -> str:
    """Follow the classic builder's JSON stream; an ``error`` chunk is a failed build.

    *running* gets the id of the container the current step runs in (the
    builder removes it when the step ends), so that an interrupted build's
    container can be removed.
    """
    running = [] if running is None else running
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
            _track(line, running)
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
        raise BuildError(f"{what}: the Docker engine{' at ' + where if where else ''} ended "
                         "the build without an image id")
    return str(image_id)


def _track(line: str, running: list[str]) -> None:
    started = _RUNNING_RE.match(line.rstrip())
    if started:
        running.append(started.group(1))
        return
    removed = _REMOVED_RE.match(line.rstrip())
    if removed and removed.group(1) in running:
        running.remove(removed.group(1))
