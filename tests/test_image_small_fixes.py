"""Issue 17, point 5: the smaller breaks, each through public commands and functions.

- the wheelhouse reaches build-base with no per-run value in a cached step;
- a symlink loop in an image is refused (exit 3) without an engine path;
- a registry whose config ``diff_ids`` do not match its layers is refused (exit 3);
- an index (manifest list) digest is reported as one, with its platform checked;
- the lock's mirror check reads ``apt-cache madison``'s columns;
- duplicate JSON keys are refused wherever we read JSON.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    SESSION,
    SESSION_LABEL,
    assert_one_line_error,
    build_base_cli,
    run_cli,
    unique_tag,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from neighbour import dockerfile_context

from ppml_image import _json
from ppml_image.errors import BuildError
from ppml_image.images.base import fileserver
from ppml_image.images.base.build import render_dockerfile
from ppml_image.images.base.config import BaseConfig

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
DEFAULT_PORT = BaseConfig().wheel_server_port


# --------------------------------------------------------------------------
# The wheelhouse: a fixed URL in the Dockerfile, a per-run address outside it
# --------------------------------------------------------------------------
@contextlib.contextmanager
def _held(address: str, port: int) -> Iterator[socket.socket | None]:
    """A listener on *address*:*port*, as another program's (None: someone else holds it)."""
    holder = socket.socket()
    try:
        holder.bind((address, port))
    except OSError:
        holder.close()
        yield None
        return
    holder.listen()
    try:
        yield holder
    finally:
        holder.close()


def _get(server: fileserver.FileServer, name: str) -> bytes:
    with urllib.request.urlopen(f"http://{server.address}:{server.port}/{name}",
                                timeout=30) as answer:
        return bytes(answer.read())


def test_two_servers_at_once_share_the_url_while_the_port_is_taken(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a/x").write_bytes(b"first")
    (tmp_path / "b/x").write_bytes(b"second")
    with _held("127.0.0.1", DEFAULT_PORT), \
            fileserver.FileServer(tmp_path / "a", DEFAULT_PORT) as first, \
            fileserver.FileServer(tmp_path / "b", DEFAULT_PORT) as second:
        assert first.url == second.url == f"http://{fileserver.HOST}:{DEFAULT_PORT}"
        assert first.address != second.address
        for server in (first, second):
            assert server.address.startswith("127.") and server.address != "127.0.0.1"
            assert server.extra_hosts == {fileserver.HOST: server.address}
        assert (_get(first, "x"), _get(second, "x")) == (b"first", b"second")


def test_a_port_taken_on_every_address_is_one_line(tmp_path: Path) -> None:
    with _held("0.0.0.0", 0) as holder:
        assert holder is not None
        port = holder.getsockname()[1]
        with pytest.raises(BuildError, match=rf"wheel_server_port {port}: taken on every"):
            fileserver.FileServer(tmp_path, port)


@pytest.mark.parametrize("port", [0, -1, 65536, True, "38917"])
def test_wheel_server_port_must_be_a_port(tmp_path: Path, port: object) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[base]\nwheel_server_port = {json.dumps(port)}\n")
    assert_one_line_error(run_cli("build-base", "--config", config, "--gramine-source", "apt",
                                  env=NO_ENGINE), "wheel_server_port")


def test_dockerfile_has_no_per_run_value() -> None:
    """Rendered for two runs (two servers at once): the same text, naming no address."""
    texts = set()
    with fileserver.FileServer(Path("/nonexistent"), DEFAULT_PORT) as one, \
            fileserver.FileServer(Path("/nonexistent"), DEFAULT_PORT) as two:
        for server in (one, two):
            text = render_dockerfile(BaseConfig(profile="full", gramine_source="deb-dir"),
                                     file_server=server.url, ml_digest="m" * 64,
                                     spark_digest="s" * 64, debs=["g_1_amd64.deb"],
                                     debs_digest="d" * 64)
            assert server.address not in text
            texts.add(text)
    assert len(texts) == 1


class _UnrelatedBuild:
    """Someone else's ``docker build`` on the same engine, running until released.

    Its one step (host network) waits until a port that this test holds bound
    starts listening: no timing, the test says when it may end.
    """

    def __init__(self, client, os_image: str) -> None:
        self.client = client
        self.gate = socket.socket()
        self.gate.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = self.gate.getsockname()[1]
        self.dockerfile = (
            f"FROM {os_image}\nLABEL {SESSION_LABEL}={SESSION}\n"
            f"RUN echo unrelated-{SESSION}-{port} && bash -c 'until (exec 3<>/dev/tcp/"
            f"127.0.0.1/{port}) 2>/dev/null; do sleep 0.2; done'\n")
        self.running = threading.Event()
        self.result: list[object] = []
        self.thread = threading.Thread(target=self._build, daemon=True)

    def _build(self) -> None:
        try:
            for chunk in self.client.api.build(fileobj=dockerfile_context(self.dockerfile),
                                               custom_context=True, rm=True, forcerm=True,
                                               network_mode="host", decode=True):
                if "Running in" in chunk.get("stream", ""):
                    self.running.set()
                if "error" in chunk:
                    self.result.append(chunk["error"])
                if "aux" in chunk:
                    self.result.append(chunk["aux"]["ID"])
        except BaseException as exc:  # reported by the test, never lost
            self.result.append(exc)
        finally:
            self.running.set()

    def __enter__(self) -> _UnrelatedBuild:
        self.thread.start()
        assert self.running.wait(600), "the unrelated build never started its step"
        return self

    def release(self) -> None:
        self.gate.listen()
        self.thread.join(600)
        self.gate.close()

    def __exit__(self, *exc_info: object) -> None:
        if self.thread.is_alive():
            self.release()
        self.gate.close()


@pytest.mark.docker
def test_rebuilds_at_once_beside_an_unrelated_build_keep_the_image_id(
        slim_base: dict, gramine_tree: Path, janitor, docker_client, os_image: str) -> None:
    """Two unchanged rebuilds of the slim base at the same time, with the wheel
    server's default port taken on 127.0.0.1 and an unrelated build running on
    the same engine: both are the session's slim base, step for step."""
    tags = [janitor.track(unique_tag(f"base-slim-at-once-{n}")) for n in (1, 2)]
    with _held("127.0.0.1", DEFAULT_PORT), _UnrelatedBuild(docker_client, os_image) as other:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda tag: build_base_cli(tag, gramine_tree), tags))
        still_running = other.thread.is_alive()
        other.release()
    for result in results:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["image_id"] == slim_base["image_id"]
    assert still_running, "the unrelated build ended before the base builds did"
    assert len(other.result) == 1 and str(other.result[0]).startswith("sha256:"), other.result


# --------------------------------------------------------------------------
# A symbolic link loop: exit 3, in the image's terms (no engine path)
# --------------------------------------------------------------------------
def _build_image(client, dockerfile: str) -> str:
    image = ""
    for chunk in client.api.build(fileobj=dockerfile_context(dockerfile), custom_context=True,
                                  rm=True, forcerm=True, decode=True):
        assert "error" not in chunk, chunk
        image = chunk.get("aux", {}).get("ID", image)
    assert image.startswith("sha256:")
    return image


@pytest.fixture(scope="module")
def loop_image(docker_client, os_image: str, janitor) -> str:
    """An image whose command names an enclave whose ``.sig`` (and folder) are link loops."""
    return _build_image(docker_client, f"""FROM {os_image}
RUN mkdir /ppml && ln -s app.sig /ppml/app.sig && ln -s /lb /la && ln -s /la /lb
WORKDIR /ppml
CMD ["gramine-sgx", "app"]
LABEL {SESSION_LABEL}={SESSION}
""")


ENGINE_PATHS = ("/var/lib/docker", "overlay2", "/merged")


@pytest.mark.docker
@pytest.mark.parametrize("command", [["inspect"], ["verify", "--allow-unpinned-base"],
                                     ["verify"]])
def test_a_link_loop_is_refused_in_the_image_terms(loop_image: str, command: list[str]) -> None:
    result = run_cli(*command, loop_image, "--json")
    if result.returncode == 2 and "allow-unpinned-base" in result.stderr:
        pytest.skip("verify has no --allow-unpinned-base on this branch")
    assert result.returncode == 3, result
    assert not any(p in result.stdout + result.stderr for p in ENGINE_PATHS), result


@pytest.mark.docker
def test_a_link_loop_read_through_the_engine_is_a_refusal(loop_image: str) -> None:
    from ppml_image.images.engine.core import LinkLoopError, connect

    engine = connect()
    with engine.open(loop_image) as files:
        for read in (lambda: files.stat("/la"), lambda: files.stat("/la/x"),
                     lambda: files.read_file("/ppml/app.sig", limit=4096),
                     lambda: files.archive("/lb/")):
            with pytest.raises(LinkLoopError) as caught:
                read()
            assert caught.value.exit_code == 3
            assert not any(p in str(caught.value) for p in ENGINE_PATHS), caught.value
        assert files.stat("/etc") is not None  # an ordinary path still reads


# --------------------------------------------------------------------------
# The lock's mirror check reads apt-cache madison's columns
# --------------------------------------------------------------------------
# What apt-cache madison prints (apt's setw(10): short names and versions
# right-aligned), for a mirror with these packages.
MADISON = {
    "libfoo": ["    libfoo |      1.0-1 | http://mirror/debian bookworm/main amd64 Packages",
               "    libfoo |      1.0-1 | http://mirror/debian bookworm/main Sources"],
    "bar": ["       bar |    2.3.1-1 | http://mirror/debian bookworm/main amd64 Packages"],
    "baz": ["       baz | 10.2+dfsg-1+b1 | http://mirror/debian bookworm/main amd64 Packages"],
    "qux": ["    qux-ng |        1.0 | http://mirror/debian bookworm/main amd64 Packages"],
}


def _run_mirror_check(tmp_path: Path, pins: list[str]) -> tuple[int, str]:
    """The check build-base puts in the Dockerfile, run by sh with this mirror's apt."""
    from ppml_image.images.base.build import _mirror_check

    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    listing = tmp_path / "madison"
    listing.mkdir(exist_ok=True)
    for name, lines in MADISON.items():
        (listing / name).write_text("\n".join(lines) + "\n")
    for name, body in {"apt-get": "exit 100",  # the dry run fails: check each pin
                       "dpkg-query": "exit 1",  # nothing installed
                       "apt-cache": f'[ "$1" = madison ] && cat "{listing}/$2" 2>/dev/null; '
                                    "exit 0"}.items():
        script = tools / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    proc = subprocess.run(["sh", "-c", _mirror_check(pins)], capture_output=True, text=True,
                          env={"PATH": f"{tools}:/usr/bin:/bin"}, check=False, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("pins,missing", [
    (["libfoo=1.0-1", "baz=10.2+dfsg-1+b1"], None),  # padded and unpadded columns
    (["libfoo=1.0-1", "bar=2.3"], "bar=2.3"),  # a prefix of a listed version is not it
    (["bar=2.3.1-1", "libfoo=1.0"], "libfoo=1.0"),
    (["qux=1.0"], "qux=1.0"),  # another package's line (qux-ng) is not qux's
    (["libfoo=1.0-1", "bar=.*"], "bar=.*"),  # a version is text, never a pattern
    (["bar=2.3.1-1 |"], "bar=2.3.1-1 |"),
])
def test_mirror_check_reads_madison_columns(tmp_path: Path, pins: list[str],
                                            missing: str | None) -> None:
    from ppml_image.images.base.build import MIRROR_MISSING

    code, output = _run_mirror_check(tmp_path, pins)
    if missing is None:
        assert (code, output) == (0, ""), output
    else:
        assert code == 100, output
        assert output.strip() == f"{MIRROR_MISSING} {missing}"


# --------------------------------------------------------------------------
# Duplicate JSON keys are refused, naming the file and the key
# --------------------------------------------------------------------------
_KEYS = st.text(max_size=8)
_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_KEYS, inner, max_size=3), max_leaves=10)


@given(_VALUES)
@settings(max_examples=200, deadline=None)
def test_strict_json_reads_what_json_writes(value: object) -> None:
    assert _json.loads(json.dumps(value)) == value
    assert _json.loads(json.dumps(value).encode()) == value


@given(st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=4), st.data())
@settings(max_examples=200, deadline=None)
def test_any_duplicated_key_is_refused_at_any_depth(doc: dict, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(doc)))
    body = json.dumps(doc)[1:-1]
    twice = "{" + body + ", " + json.dumps(key) + ": " + json.dumps(doc[key]) + "}"
    nested = data.draw(st.sampled_from([twice, f'{{"a": [{twice}]}}', f"[1, {twice}]"]))
    with pytest.raises(_json.DuplicateKeyError) as caught:
        _json.loads(nested)
    assert caught.value.key == key


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', "[-Infinity]"])
def test_non_json_numbers_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not JSON"):
        _json.loads(text)


def _lock_text(tmp_path: Path) -> str:
    """A real lock file's text, as write_lock writes it."""
    from ppml_image.images.base.lock import BaseLock, DebPackage, Wheel, write_lock

    lock = BaseLock(profile="slim", os_image="debian:bookworm", os_image_id="sha256:" + "a" * 64,
                    packages={"bash": DebPackage("5.2.15-2+b2", "amd64", "system")},
                    wheels={"six-1.16.0-py2.py3-none-any.whl": Wheel(
                        "six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", "b" * 64, "ml",
                        False)},
                    gramine_source="apt", gramine_inputs={},
                    gramine_files={"libsysdb.so": "c" * 64},
                    debian_mirror="", image_id="sha256:" + "d" * 64)
    path = tmp_path / "written.lock.json"
    write_lock(lock, path)
    return path.read_text()


def test_a_lock_with_a_duplicated_key_is_refused(tmp_path: Path) -> None:
    from ppml_image.images.base.lock import LockError, read_lock

    text = _lock_text(tmp_path)
    assert read_lock(tmp_path / "written.lock.json").profile == "slim"  # the original reads
    doubled = tmp_path / "doubled.lock.json"
    # The last "profile" would win in json.loads: a lock that reads two ways.
    doubled.write_text(text.replace('"profile": "slim",', '"profile": "slim",\n'
                                    '  "profile": "full",', 1))
    assert doubled.read_text() != text
    with pytest.raises(LockError, match=r"doubled.lock.json: key 'profile' appears twice"):
        read_lock(doubled)
    result = run_cli("build-base", "--profile", "slim", "--gramine-source", "apt",
                     "--lock", doubled, env=NO_ENGINE)
    assert_one_line_error(result, str(doubled), "'profile' appears twice")


def test_base_json_with_a_duplicated_key_is_refused() -> None:
    from ppml_image.errors import ImageContentError
    from ppml_image.images.layout import BaseInfo

    gramine = ('"pkglibdir": "/usr/lib/x86_64-linux-gnu/gramine", '
               '"libpal": "/usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so", '
               '"libsysdb": "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so", '
               '"runtimedir": "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc"')
    good = f'{{"gramine": {{{gramine}}}}}'
    assert BaseInfo.parse(good.encode(), "img").libpal.endswith("/sgx/libpal.so")
    evil = f'{{"gramine": {{{gramine}, "libpal": "/usr/lib/x86_64-linux-gnu/gramine/x.so"}}}}'
    with pytest.raises(ImageContentError,
                       match=r"^img:/etc/ppml-image/base.json: key 'libpal' appears twice"):
        BaseInfo.parse(evil.encode(), "img")


# --------------------------------------------------------------------------
# The registry: hand-made manifests, pushed through its HTTP API
# --------------------------------------------------------------------------
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


class _Pusher:
    """Blobs and manifests put into one repository of the test registry, as any client could."""

    def __init__(self, address: str, repository: str) -> None:
        self.address = address
        self.path = repository.removeprefix(f"{address}/")
        self.repository = repository

    def _request(self, method: str, url: str, body: bytes, content_type: str
                 ) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(url if url.startswith("http") else
                                         f"http://{self.address}{url}", data=body,
                                         method=method, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers)

    def blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, headers = self._request("POST", f"/v2/{self.path}/blobs/uploads/", b"",
                                        "application/octet-stream")
        assert status == 202, status
        location = headers["Location"]
        joiner = "&" if "?" in location else "?"
        status, _ = self._request("PUT", f"{location}{joiner}digest={digest}", data,
                                  "application/octet-stream")
        assert status == 201, status
        return digest

    def manifest(self, tag: str, body: bytes, media_type: str) -> str:
        status, headers = self._request("PUT", f"/v2/{self.path}/manifests/{tag}", body,
                                        media_type)
        assert status == 201, status
        return headers["Docker-Content-Digest"]

    def image(self, tag: str, architecture: str, content: bytes, *,
              diff_ids: list[str] | None = None) -> tuple[str, str, bytes]:
        """One image of one layer: (manifest digest, config digest = image id, manifest)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("hello")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        layer = buffer.getvalue()
        packed = gzip.compress(layer, mtime=0)
        config = json.dumps({
            "architecture": architecture, "os": "linux", "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids or
                       ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(config), "digest": self.blob(config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(packed), "digest": self.blob(packed)}]}).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        return self.manifest(tag, manifest, MANIFEST_V2), config_digest, manifest

    def index(self, tag: str, entries: list[tuple[str, bytes, dict[str, str]]]) -> str:
        body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_LIST, "manifests": [
            {"mediaType": MANIFEST_V2, "size": len(manifest), "digest": digest,
             "platform": platform} for digest, manifest, platform in entries]}).encode()
        return self.manifest(tag, body, MANIFEST_LIST)


@pytest.fixture
def pusher(registry, janitor) -> _Pusher:
    repository = registry.repository("small-fixes")
    janitor.track(f"{repository}:pulled")  # the engine's NAME@sha256 references go at the end
    return _Pusher(registry.address, repository)


def _verify_json(ref: str) -> tuple[int, dict]:
    result = run_cli("verify", ref, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.docker
def test_config_diff_ids_that_do_not_match_the_layers_are_refused(pusher: _Pusher) -> None:
    digest, _, _ = pusher.image("doctored", "amd64", b"hello",
                                diff_ids=["sha256:" + "0" * 64])
    ref = f"{pusher.repository}@{digest}"
    code, report = _verify_json(ref)
    assert code == 3 and report["ok"] is False, report
    assert "rootfs.diff_ids" in report["problems"][0], report
    result = run_cli("verify", ref)
    assert_one_line_error(result, "rootfs.diff_ids", "refused")
    assert result.returncode == 3


@pytest.mark.docker
def test_an_index_digest_is_reported_as_one_with_its_linux_amd64_image(
        pusher: _Pusher, docker_client) -> None:
    amd, amd_id, amd_manifest = pusher.image("amd", "amd64", b"for x86-64")
    arm, arm_id, arm_manifest = pusher.image("arm", "arm64", b"for arm")
    # arm64 first: an engine that took the first entry would verify the wrong image.
    index = pusher.index("multi", [(arm, arm_manifest, {"os": "linux", "architecture": "arm64"}),
                                   (amd, amd_manifest, {"os": "linux", "architecture": "amd64"})])
    code, report = _verify_json(f"{pusher.repository}@{index}")
    assert report["image_id"] == amd_id != arm_id
    assert (report["digest_kind"], report["platform"]) == ("index", "linux/amd64")
    assert report["index_platforms"] == ["linux/arm64", "linux/amd64"]
    line = next(c for c in report["checks"] if "index (manifest list)" in c)
    assert amd_id in line and "linux/arm64, which were not" in line, line
    assert code == 3  # not an enclave image: what matters here is what the report says
    code, report = _verify_json(f"{pusher.repository}@{amd}")
    assert report["digest_kind"] == "manifest" and report["index_platforms"] == []


@pytest.mark.docker
def test_an_index_without_linux_amd64_is_refused_naming_its_platforms(
        pusher: _Pusher) -> None:
    arm, _, arm_manifest = pusher.image("arm-only", "arm64", b"arm")
    ppc, _, ppc_manifest = pusher.image("ppc-only", "ppc64le", b"ppc")
    index = pusher.index("no-amd64", [
        (arm, arm_manifest, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        (ppc, ppc_manifest, {"os": "linux", "architecture": "ppc64le"})])
    result = run_cli("verify", f"{pusher.repository}@{index}")
    assert_one_line_error(result, "no linux/amd64 image", "linux/arm64/v8, linux/ppc64le")
    assert result.returncode == 3


@pytest.mark.docker
def test_an_image_for_another_platform_is_refused(pusher: _Pusher) -> None:
    arm, _, _ = pusher.image("single-arm", "arm64", b"arm alone")
    code, report = _verify_json(f"{pusher.repository}@{arm}")
    assert code == 3
    assert report["platform"] == "linux/arm64"
    assert any("is an image for linux/arm64" in p for p in report["problems"]), report
