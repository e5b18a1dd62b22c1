"""The enclave key never reaches Docker: no layer, no history, no cache, no temp copy.

A fresh key is generated for this test only. After build-custom, every image
on the engine is exported (docker save, one stream for all of them, so every
layer is read once), every image's history is read, and every file under
the engine's data root is scanned for any trace of the key: PEM lines, the
DER encoding, the primes and the private exponent.
"""

from __future__ import annotations

import base64
import json
import mmap
import os
from pathlib import Path

import pytest
from conftest import run_cli, unique_tag
from cryptography.hazmat.primitives import serialization

from ppml_image.sgx.keys import load_signing_key

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


class Scanner:
    def __init__(self, patterns: dict[str, bytes]) -> None:
        self.patterns = patterns
        self.overlap = max(len(p) for p in patterns.values())
        self.hits: list[str] = []
        self.scanned = 0

    def scan_stream(self, chunks, where: str) -> None:
        tail = b""
        for chunk in chunks:
            data = tail + chunk
            self._find(data, where)
            tail = data[-self.overlap:]
            self.scanned += len(chunk)

    def scan_file(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            if size == 0:
                return
            with open(path, "rb") as handle, \
                    mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                self._find(data, str(path))
                self.scanned += size
        except (OSError, ValueError):
            return

    def scan_tree(self, root: Path) -> None:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    self.scan_file(path)

    def _find(self, data, where: str) -> None:
        for name, pattern in self.patterns.items():
            if data.find(pattern) != -1:
                self.hits.append(f"{name} in {where}")


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


def test_no_trace_of_the_key_in_any_image_layer_or_history(secret_build: dict,
                                                           docker_client) -> None:
    scanner = Scanner(key_patterns(secret_build["key"]))
    images = docker_client.images.list(all=True)
    ids = [image.id for image in images]
    api = docker_client.api
    response = api._get(api._url("/images/get"), params={"names": ids}, stream=True)
    api._raise_for_status(response)
    scanner.scan_stream(response.iter_content(1 << 20), "docker save of every image")
    for image in images:
        history = json.dumps(image.history()).encode()
        scanner._find(history, f"history of {image.id[:19]}")
        scanner._find(json.dumps(image.attrs).encode(), f"config of {image.id[:19]}")
    assert scanner.scanned > 100 << 20, "the scan must have read the image layers"
    assert scanner.hits == []


def test_no_trace_of_the_key_in_the_engine_data_root(secret_build: dict, docker_client) -> None:
    root = Path(docker_client.info()["DockerRootDir"])
    scanner = Scanner(key_patterns(secret_build["key"]))
    scanner.scan_tree(root)
    assert scanner.scanned > 100 << 20
    assert scanner.hits == []


def test_key_is_not_copied_to_temporary_folders(secret_build: dict) -> None:
    from ppml_image.images.wheelhouse import cache_root

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
    scanner.scan_tree(tmp_path)
    assert any("DER head" in hit for hit in scanner.hits)
    assert any("PEM line" in hit and "copy.pem" in hit for hit in scanner.hits)
