"""The pinned base is read in a helper thread beside the image (issue 20): its
index or its error reaches the caller, a reading nobody takes is stopped,
and its temporary container never outlives it. Signals during the overlap
are in test_temporary_containers.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from ppml_image.errors import EngineError
from ppml_image.images.enclave.outside import BaseReading
from ppml_image.images.engine import imagefs
from ppml_image.images.engine.core import TEMPORARY_LABEL, connect
from ppml_image.images.engine.imagefs import Cancelled, ImageIndex, index_stream
from ppml_image.testing import MemFile, MemoryEngine


def _tar(files: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(files):
            data = f"file {n}\n".encode()
            member = tarfile.TarInfo(f"f{n}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


class _Gate:
    """A stream that holds its first read until released (a silent engine)."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)
        self.entered, self.release = threading.Event(), threading.Event()

    def read(self, size: int) -> bytes:
        self.entered.set()
        self.release.wait(60)
        return self.data.read(size)

    def close(self) -> None:
        self.release.set()


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(target())
        except BaseException as exc:
            out.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_overlapping_streams_restore_the_switch_interval() -> None:
    """Two exports at once: the first to end must not restore the interval under
    the second, and the last restores the caller's own."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(0.004)
    try:
        first, second = _Gate(_tar(3)), _Gate(_tar(5))
        a, a_out = _in_thread(lambda: index_stream(first, "first"))
        assert first.entered.wait(30)
        b, b_out = _in_thread(lambda: index_stream(second, "second"))
        assert second.entered.wait(30)
        first.release.set()
        a.join(30)
        assert sys.getswitchinterval() < 0.004  # the second still streams
        second.release.set()
        b.join(30)
        assert sys.getswitchinterval() == 0.004
        assert isinstance(a_out[0], ImageIndex) and isinstance(b_out[0], ImageIndex)
        assert "/f2" in a_out[0].entries and "/f4" in b_out[0].entries
    finally:
        sys.setswitchinterval(saved)


def test_a_cancelled_index_stops_while_its_stream_is_silent() -> None:
    gate, cancel = _Gate(_tar(3)), threading.Event()
    thread, out = _in_thread(lambda: index_stream(gate, "silent", cancel=cancel))
    assert gate.entered.wait(30)
    cancel.set()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(out[0], Cancelled)
    gate.release.set()


def _memory_base() -> tuple[MemoryEngine, str]:
    mem = MemoryEngine()
    base = mem.add_image({"/usr/bin/tool": MemFile("file", b"tool", mode=0o755),
                          "/etc/passwd": MemFile("file", b"root:x:0:0::/root:/bin/sh\n")},
                         tag="base:1")
    return mem, base


def test_the_reading_gives_the_same_index_as_reading_in_line() -> None:
    mem, base = _memory_base()
    with mem.open(base) as files:
        in_line = imagefs.index_image(files)
    with BaseReading(mem, mem.image(base)) as reading:
        assert reading.index().entries == in_line.entries
    assert mem.open_count == 0


def test_the_readings_error_reaches_the_caller() -> None:
    mem, base = _memory_base()
    info = mem.image(base)
    del mem.images[base]  # removed from the engine after it was pinned
    with BaseReading(mem, info) as reading, pytest.raises(EngineError, match="not found"):
        reading.index()


def _ours(client: Any) -> list[str]:
    found = client.api.containers(all=True, filters={"label": TEMPORARY_LABEL})
    return [c["Id"] for c in found
            if json.loads(c["Labels"][TEMPORARY_LABEL] or "{}").get("pid") == os.getpid()]


@pytest.mark.docker
def test_a_reading_nobody_takes_leaves_no_container(custom_image: dict, docker_client) -> None:
    engine = connect()
    with BaseReading(engine, engine.image(custom_image["image"])) as reading:
        deadline = time.monotonic() + 120
        while not _ours(docker_client) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _ours(docker_client), "the reading never created its temporary container"
    assert _ours(docker_client) == []  # removed before the block was left
    with contextlib.suppress(Cancelled):  # stopped mid-export, or (fast engine) finished first
        assert reading.index().entries
