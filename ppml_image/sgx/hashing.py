"""Parallel SHA-256 of files.

hashlib releases the GIL while it hashes a buffer, so a thread pool keeps
every core busy without processes. Each file is read with ``readinto`` into
one reusable 1 MiB buffer per thread: large reads, no per-chunk allocation.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHUNK = 1 << 20
_local = threading.local()


def _buffer() -> memoryview:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = memoryview(bytearray(CHUNK))
        _local.buf = buf
    return buf


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of the file at *path* (raises OSError as open/read do)."""
    digest = hashlib.sha256()
    buf = _buffer()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        while True:
            count = os.readv(fd, [buf])
            if not count:
                break
            digest.update(buf[:count])
    finally:
        os.close(fd)
    return digest.hexdigest()


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))


def sha256_many(
    paths: Iterable[Path],
    *,
    workers: int | None = None,
    hasher: Callable[[Path], str] = sha256_file,
) -> list[str]:
    """Hash every path, in parallel; results are in the order of *paths*.

    The first OSError raised by a file propagates (as :class:`OSError` with
    ``filename`` set) after the pool has stopped.
    """
    items = list(paths)
    if len(items) <= 1:
        return [hasher(p) for p in items]
    # Few tasks, each a batch: a future per small file would cost more than
    # hashing it. Interleaving spreads large files over the batches.
    count = min(len(items), (workers or default_workers()) * 4)
    batches = [items[i::count] for i in range(count)]
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        results = list(pool.map(lambda batch: [hasher(p) for p in batch], batches))
    ordered: list[str] = [""] * len(items)
    for i, batch_result in enumerate(results):
        ordered[i::count] = batch_result
    return ordered
