"""Parallel SHA-256 of files, that stops at once when asked to.

hashlib releases the GIL while it hashes a buffer, so a thread pool keeps
every core busy without processes. Each file is read with ``readv`` into one
reusable 1 MiB buffer per thread: large reads, no per-chunk allocation.

Stopping: every worker checks a shared flag before each chunk, so Ctrl-C,
SIGTERM or the first failing file stops all of them within one chunk (about
a millisecond), and batches still queued are cancelled instead of run.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from ppml_image import _signals

CHUNK = 1 << 20
_local = threading.local()
T = TypeVar("T")


class Stopped(Exception):
    """Hashing was abandoned because another file failed or the user interrupted."""


def _buffer() -> memoryview:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = memoryview(bytearray(CHUNK))
        _local.buf = buf
    return buf


def sha256_fd(fd: int, stop: threading.Event | None = None) -> str:
    """Hex SHA-256 of what remains to be read from *fd*; checks *stop* before each chunk."""
    digest = hashlib.sha256()
    buf = _buffer()
    while True:
        if stop is not None and stop.is_set():
            raise Stopped()
        count = os.readv(fd, [buf])
        if not count:
            break
        digest.update(buf[:count])
    return digest.hexdigest()


def sha256_file(path: Path | str, stop: threading.Event | None = None) -> str:
    """Hex SHA-256 of the file at *path* (raises OSError as open/read do)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        return sha256_fd(fd, stop)
    finally:
        os.close(fd)


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))


def sha256_many(
    items: Iterable[T],
    hasher: Callable[[T, threading.Event], str],
    *,
    workers: int | None = None,
) -> list[str]:
    """``hasher(item, stop)`` for every item, in parallel; results in the order of *items*.

    *hasher* must raise :class:`Stopped` soon after *stop* is set (as
    :func:`sha256_fd` does). The first failure stops the other workers and is
    raised; an interrupt (KeyboardInterrupt, or any BaseException raised in
    this thread by a signal handler) stops them too, without waiting for them.
    """
    todo = list(items)
    stop = threading.Event()
    if len(todo) <= 1:
        return [hasher(item, stop) for item in todo]
    workers = workers or default_workers()
    # Few tasks, each a batch: a future per small file would cost more than
    # hashing it. Interleaving spreads large files over the batches.
    count = min(len(todo), workers * 4)
    batches = [todo[i::count] for i in range(count)]

    def run(batch: list[T]) -> list[str]:
        try:
            results = []
            for item in batch:
                if stop.is_set():
                    raise Stopped()
                results.append(hasher(item, stop))
            return results
        except BaseException:
            stop.set()  # one failure fails the whole call: the others stop now
            raise

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ppml-sha256",
                              initializer=_signals.leave_to_main_thread)
    try:
        futures = [pool.submit(run, batch) for batch in batches]
        _wait_in_slices(futures)
    except BaseException:
        # Ctrl-C or SIGTERM in this thread: the workers see the flag within a
        # chunk; queued batches are cancelled and nobody waits for them.
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True, cancel_futures=True)  # quick: done, or stopped within a chunk
    _raise_first_failure(futures)
    ordered: list[str] = [""] * len(todo)
    for i, future in enumerate(futures):
        ordered[i::count] = future.result()
    return ordered


def _wait_in_slices(futures: list[Future[list[str]]]) -> None:
    """Wait until all are done or one failed, waking often enough to act on a signal."""
    while True:
        done, not_done = wait(futures, timeout=_signals.WAIT_SLICE, return_when=FIRST_EXCEPTION)
        if not not_done or any(f.exception() is not None for f in done):
            return


def _raise_first_failure(futures: list[Future[list[str]]]) -> None:
    """Raise the real error of the first failed batch (not a mere :class:`Stopped`)."""
    failures = [exc for f in futures if not f.cancelled() and (exc := f.exception()) is not None]
    for exc in failures:
        if not isinstance(exc, Stopped):
            raise exc
    if failures:  # only Stopped: cannot happen, a worker stops the others only when it fails
        raise failures[0]
