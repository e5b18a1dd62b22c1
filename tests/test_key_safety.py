"""The enclave key never reaches Docker: no layer, no history, no cache, no temp copy.

A fresh key is generated for this test only. After build-custom, every image
made since the key existed is exported (docker save, one stream for all of
them, so every layer is read once; an older image cannot hold it) and its
history read, and every file under the engine's data root is scanned for any
trace of the key: PEM lines, the DER encoding, the primes and the private
exponent.

The engine is shared: other runs remove images and files while we scan. So
the scans read what exists and skip what vanishes (an image gone before its
save is dropped from the next try; a file gone before it is read is
skipped), and the control tests show they still find a planted key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SESSION_START, run_cli, unique_tag
from cryptography.hazmat.primitives import serialization

from ppml_image.sgx.signing.keys import load_signing_key

pytestmark = pytest.mark.docker


def key_patterns(key_path: Path) -> dict[str, bytes]:
    pem = key_path.read_bytes()
    key = load_signing_key(key_path)
    numbers = key.private_numbers()
    der = key.private_bytes(serialization.Encoding.DER,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    lines = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    patterns = {f"PEM line {i}": lines[i] for i in (1, len(lines) // 2, len(lines) - 2)}
    patterns["DER head"] = der[:48]
    patterns["DER middle"] = der[len(der) // 2: len(der) // 2 + 48]
    patterns["base64 of DER middle"] = base64.b64encode(der[600:648])
    for name, value in (("p", numbers.p), ("q", numbers.q), ("d", numbers.d)):
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        patterns[f"{name} big-endian"] = raw[:32]
        patterns[f"{name} little-endian"] = raw[::-1][:32]
        patterns[f"{name} hex"] = raw[:24].hex().encode()
    return patterns


CHUNK = 4 << 20


class Scanner:
    def __init__(self, patterns: dict[str, bytes]) -> None:
        self.patterns = patterns
        self.overlap = max(len(p) for p in patterns.values())
        self.hits: list[str] = []
        self.scanned = 0
        self.vanished = 0

    def scan_stream(self, chunks, where: str) -> None:
        tail = b""
        for chunk in chunks:
            data = tail + chunk
            self._find(data, where)
            tail = data[-self.overlap:]
            self.scanned += len(chunk)

    def scan_file(self, path: Path) -> None:
        """Scan a regular file's data (holes are zeros), never blocking, never following.

        Not mmap: a file another process truncates under a mapping kills
        the reader with SIGBUS. A file that vanishes or cannot be read is
        counted and skipped.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.vanished += 1
            return
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                for offset, length in _data_extents(fd):
                    self.scan_stream(_read_extent(fd, offset, length), str(path))
        except OSError:
            self.vanished += 1
        finally:
            os.close(fd)

    def scan_tree(self, root: Path, changed_since: float | None = None) -> None:
        """Scan every regular file below *root*, or only those changed since a time.

        Iterative (a neighbour's 10,000-deep tree cannot exhaust the
        recursion limit), never follows links, skips what vanishes or cannot
        be read. With *changed_since*, a file whose ctime is older is skipped
        unread: the kernel sets ctime on every write, rename and chmod, and
        cannot be set back by a user, so such a file was last written before
        the secret existed and cannot hold it. Folders are always entered (a
        file changed in place does not change its folder's times).
        """
        stack = [str(root)]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    listed = list(entries)
            except OSError:
                self.vanished += 1
                continue
            for entry in listed:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    self.vanished += 1
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(info.st_mode) and (
                        changed_since is None or info.st_ctime >= changed_since):
                    self.scan_file(Path(entry.path))

    def _find(self, data, where: str) -> None:
        for name, pattern in self.patterns.items():
            if data.find(pattern) != -1:
                self.hits.append(f"{name} in {where}")


def _data_extents(fd: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each data region of a file: a sparse file's holes are skipped."""
    size = os.fstat(fd).st_size
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError:  # ENXIO: no data after offset (or no SEEK_DATA: read it all)
            if offset == 0 and size:
                yield 0, size
            return
        yield start, end - start
        offset = end


def _read_extent(fd: int, offset: int, length: int) -> Iterator[bytes]:
    end = offset + length
    while offset < end:
        chunk = os.pread(fd, min(CHUNK, end - offset), offset)
        if not chunk:  # truncated while we read: what is left is gone
            return
        yield chunk
        offset += len(chunk)


@pytest.fixture(scope="module")
def secret_build(tmp_path_factory: pytest.TempPathFactory, slim_base: dict, app_dir: Path,
                 janitor) -> dict:
    work = tmp_path_factory.mktemp("key-safety")
    key = work / "keys" / "enclave-key.pem"
    assert run_cli("keygen", key).returncode == 0
    private_tmp = work / "tmp"
    private_tmp.mkdir()
    tag = janitor.track(unique_tag("custom-keysafety"))
    janitor.track(tag + "-unsigned")
    result = run_cli("build-custom", "--key", key, "--base", slim_base["tags"][0], "--app",
                     app_dir, "--tag", tag, "--json", env={"TMPDIR": str(private_tmp)})
    assert result.returncode == 0, result.stderr
    return {"key": key, "tmp": private_tmp, "tag": tag, "result": json.loads(result.stdout)}


def images_since(client, moment: float) -> list[str]:
    """Ids of every image the engine made at or after *moment* (a Unix time)."""
    return [image["Id"] for image in client.api.images(all=True)
            if int(image.get("Created") or 0) >= int(moment) - 2]


def save_and_scan(client, scanner: Scanner, ids: list[str]) -> list[str]:
    """One ``docker save`` of *ids*, scanned; images removed meanwhile are dropped and
    the save retried. Returns the ids that were saved."""
    import docker.errors
    import requests.exceptions

    api = client.api
    for _ in range(5):
        present = [i for i in ids if _exists(client, i)]
        try:
            response = api._get(api._url("/images/get"), params={"names": present},
                                stream=True)
            api._raise_for_status(response)
            scanner.scan_stream(response.iter_content(1 << 20), "docker save of the images")
            return present
        except (docker.errors.NotFound, requests.exceptions.ChunkedEncodingError):
            ids = present  # one of them vanished between the check and the save
    raise AssertionError("images kept vanishing during the save")


def _exists(client, image: str) -> bool:
    import docker.errors

    try:
        client.api.inspect_image(image)
    except docker.errors.NotFound:
        return False
    return True


def test_no_trace_of_the_key_in_any_image_layer_or_history(secret_build: dict,
                                                           docker_client) -> None:
    import docker.errors

    scanner = Scanner(key_patterns(secret_build["key"]))
    made = images_since(docker_client, secret_build["key"].stat().st_mtime)
    final, unsigned = secret_build["result"]["image_id"], secret_build["result"][
        "unsigned_image_id"]
    assert final in made  # the signed image is new: it holds the new signature
    saved = save_and_scan(docker_client, scanner, sorted({*made, final, unsigned}))
    assert final in saved and unsigned in saved
    for image in saved:
        with contextlib.suppress(docker.errors.NotFound):  # removed by another run meanwhile
            scanner._find(json.dumps(docker_client.api.history(image)).encode(),
                          f"history of {image[:19]}")
            scanner._find(json.dumps(docker_client.api.inspect_image(image)).encode(),
                          f"config of {image[:19]}")
    assert scanner.scanned > 100 << 20, "the scan must have read the image layers"
    assert scanner.hits == []


def test_no_trace_of_the_key_in_the_engine_data_root(secret_build: dict, docker_client) -> None:
    root = Path(docker_client.info()["DockerRootDir"])
    scanner = Scanner(key_patterns(secret_build["key"]))
    # Only what changed during this session: the rest of the engine is other
    # people's, of any size and shape, and older than the key.
    scanner.scan_tree(root, changed_since=SESSION_START)
    assert scanner.scanned > 100 << 20
    assert scanner.hits == []


def test_key_is_not_copied_to_temporary_folders(secret_build: dict) -> None:
    from ppml_image.images.base.wheelhouse import cache_root

    scanner = Scanner(key_patterns(secret_build["key"]))
    scanner.scan_tree(secret_build["tmp"])
    if cache_root().exists():
        scanner.scan_tree(cache_root() / "index")
    assert scanner.hits == []
    # The key file itself is untouched and still private.
    assert secret_build["key"].stat().st_mode & 0o777 == 0o600


def test_scanner_finds_a_planted_key(secret_build: dict, tmp_path: Path) -> None:
    """The scan above can fail: a copy of the key, however encoded, is found."""
    scanner = Scanner(key_patterns(secret_build["key"]))
    key = load_signing_key(secret_build["key"])
    der = key.private_bytes(serialization.Encoding.DER,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    (tmp_path / "layer.tar").write_bytes(b"\0" * 5000 + der + b"\0" * 5000)
    (tmp_path / "copy.pem").write_bytes(secret_build["key"].read_bytes())
    with open(tmp_path / "sparse.img", "wb") as handle:  # the key after a 1 GiB hole
        handle.seek(1 << 30)
        handle.write(der)
    scanner.scan_tree(tmp_path)
    assert any("DER head" in hit and "layer.tar" in hit for hit in scanner.hits)
    assert any("DER head" in hit and "sparse.img" in hit for hit in scanner.hits)
    assert any("PEM line" in hit and "copy.pem" in hit for hit in scanner.hits)


def test_scanner_finds_the_key_while_files_vanish_around_it(secret_build: dict,
                                                           tmp_path: Path) -> None:
    """Another run deleting files mid-scan: skipped, no error, and the planted key found."""
    scanner = Scanner(key_patterns(secret_build["key"]))
    churn = tmp_path / "churn"
    churn.mkdir()
    for index in range(2000):
        (churn / f"f{index:05d}").write_bytes(os.urandom(64))
    (tmp_path / "kept.pem").write_bytes(secret_build["key"].read_bytes())
    stop = threading.Event()

    def delete() -> None:
        for path in sorted(churn.iterdir()):
            if stop.is_set():
                return
            path.unlink()
            time.sleep(0)  # let the scan run between deletions

    remover = threading.Thread(target=delete)
    remover.start()
    try:
        scanner.scan_tree(tmp_path)
    finally:
        stop.set()
        remover.join()
    assert any("kept.pem" in hit for hit in scanner.hits)


def test_the_save_scan_drops_an_image_removed_before_its_save(secret_build: dict,
                                                              docker_client) -> None:
    """An id that no longer exists is dropped; the images that exist are still scanned."""
    scanner = Scanner(key_patterns(secret_build["key"]))
    gone = "sha256:" + "0" * 63 + "1"
    saved = save_and_scan(docker_client, scanner,
                          [gone, secret_build["result"]["image_id"]])
    assert saved == [secret_build["result"]["image_id"]]
    assert scanner.scanned > 10 << 20
    assert scanner.hits == []


def test_the_scanner_walks_any_neighbour_and_skips_what_is_older(tmp_path: Path,
                                                                 request) -> None:
    """Deeper than the recursion limit, a link loop, a sparse file: found, and no hang."""
    secret = b"-----not-a-real-secret-" + os.urandom(8).hex().encode()
    old = tmp_path / "old.bin"
    old.write_bytes(secret)
    os.utime(old, (0, 0))
    since = time.time() + 0.01
    while time.time() < since + 0.01:  # ctime strictly after `since` for what follows
        time.sleep(0.01)
    os.chmod(old, 0o600)  # old contents, new ctime: scanned (ctime, not mtime, decides)
    _make_deep_tree(tmp_path, 1100, b"x" + secret)  # os.walk on 3.11 recurses per level
    request.addfinalizer(lambda: _remove_deep_tree(tmp_path, 1100))
    (tmp_path / "loop").symlink_to(tmp_path)
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as out:
        out.seek(1 << 30)
        out.write(secret)
    scanner = Scanner({"secret": secret})
    scanner.scan_tree(tmp_path, changed_since=since)
    assert sorted(hit.rsplit("/", 1)[-1] for hit in scanner.hits) == [
        "bottom.bin", "old.bin", "sparse.bin"]
    assert scanner.scanned < 1 << 20  # the 1 GiB hole was never read

    before = Scanner({"secret": secret})
    os.utime(old, (0, 0))
    before.scan_tree(tmp_path, changed_since=time.time() + 60)  # nothing is that new
    assert before.hits == [] and before.scanned == 0


def _make_deep_tree(root: Path, depth: int, content: bytes) -> None:
    """root/d/d/.../d/bottom.bin, made through folder descriptors (no path-length limit)."""
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=folder)
        deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder)
        os.close(folder)
        folder = deeper
    bottom = os.open("bottom.bin", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=folder)
    os.write(bottom, content)
    os.close(bottom)
    os.close(folder)


def _remove_deep_tree(root: Path, depth: int) -> None:
    """Remove what _make_deep_tree made, bottom up: pytest's own clean-up (shutil.rmtree)
    recurses once per level and would fail on it in a later session."""
    folders = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            folders.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=folders[-1]))
        os.unlink("bottom.bin", dir_fd=folders[-1])
        for level in range(depth, 0, -1):
            os.close(folders.pop())
            os.rmdir("d", dir_fd=folders[level - 1])
    finally:
        for fd in folders:
            os.close(fd)
