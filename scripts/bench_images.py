"""`make bench` (images part): build-custom timings and Docker-stream hashing speed.

1. build-custom on the slim base: the first build (base image index not yet
   cached) and a rebuild after changing one application file.
2. Hashing files straight out of the Docker API stream (the base image's
   export) in MB/s, against `find | xargs -P$(nproc) openssl dgst -sha256`
   over the same files extracted to disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ppml_image.images import config, custom, engine, imagefs
from ppml_image.images.base import build_base
from ppml_image.sgx.keys import generate_key
from ppml_image.testing import make_gramine_tree

BASE = "ppml-image/base:bench-slim"
TAG = "ppml-image/bench-app:latest"


def main() -> int:
    client = engine.connect()
    work = Path(tempfile.mkdtemp(prefix="ppml-bench-"))
    try:
        tree = make_gramine_tree(work / "gramine")
        base = build_base(config.load_config(None, {
            "profile": "slim", "gramine_source": "tree", "gramine_path": str(tree),
            "tag": BASE}), quiet=True)
        key = work / "key.pem"
        generate_key(key)
        app = work / "app"
        app.mkdir()
        (app / "main.py").write_text("print('hello')\n")
        start = time.perf_counter()
        custom.build_custom(key, base=BASE, app=app, tag=TAG, quiet=True)
        first = time.perf_counter() - start
        (app / "main.py").write_text("print('hello, again')\n")
        start = time.perf_counter()
        custom.build_custom(key, base=BASE, app=app, tag=TAG, quiet=True)
        again = time.perf_counter() - start
        print(f"build-custom on the slim base: first {first:.1f} s (hashes the base image), "
              f"after a one-file change {again:.1f} s (base index cached)")

        start = time.perf_counter()
        with client.open(base.image_id) as files:
            index = imagefs.index_image(files)
        stream = time.perf_counter() - start
        files = sum(e.size for e in index.entries.values() if e.kind == "file")
        rootfs = work / "rootfs"
        rootfs.mkdir()
        with client.open(base.image_id) as files, tempfile.TemporaryFile() as tar_file:
            export = files.export()
            while chunk := export.read(1 << 20):
                tar_file.write(chunk)
            tar_file.seek(0)
            with tarfile.open(fileobj=tar_file) as tar:
                tar.extractall(rootfs, filter="fully_trusted")
        cmd = (f"find {rootfs} -type f -print0 | xargs -0 -P{os.cpu_count()} "
               "openssl dgst -sha256 > /dev/null")
        subprocess.run(cmd, shell=True, check=True)  # warm the page cache
        start = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True)
        disk = time.perf_counter() - start
        print(f"hashing {files / 1e6:.0f} MB of files: from the Docker API stream "
              f"{files / stream / 1e6:.0f} MB/s ({stream:.1f} s, {index.bytes_read / 1e6:.0f} MB "
              f"of tar streamed); openssl on disk {files / disk / 1e6:.0f} MB/s ({disk:.1f} s); "
              f"ratio {stream / disk:.2f}")
        start = time.perf_counter()
        with client.open(base.image_id) as files:
            export = files.export()
            raw = 0
            while chunk := export.read(1 << 20):
                raw += len(chunk)
        ceiling = time.perf_counter() - start
        print(f"the engine's export stream alone (no parsing, no hashing): "
              f"{raw / ceiling / 1e6:.0f} MB/s; hashing keeps {ceiling / stream:.0%} of it")
    finally:
        for ref in (TAG, custom.unsigned_tag(TAG), BASE):
            with contextlib.suppress(Exception):
                client.remove_image(ref)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
