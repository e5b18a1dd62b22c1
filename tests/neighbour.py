"""A hostile neighbour on the shared engine, so the suite runs as it would on a user's machine.

A user's engine holds other people's images, some of them odd, while other
builds run. Once per session (before the first base image is built) this
puts on the engine an image with a folder tree deeper than Python's
recursion limit, a symlink loop, a large sparse file and a VOLUME, and
starts an unrelated build that runs while the suite's own builds do.

Nothing in the suite may depend on what else the engine holds: a test that
walks the engine's data root, lists its images or shares its build cache
must pass next to this. Everything made here carries the session label, so
the janitor removes it at the end. ``PPML_TEST_NEIGHBOUR=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from typing import Any

NEIGHBOUR_LABEL = "ppml-test.neighbour"


def dockerfile_context(dockerfile: str) -> io.BytesIO:
    """A build context holding only *dockerfile*, for ``api.build(custom_context=True)``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def hostile_dockerfile(os_image: str, labels: dict[str, str]) -> str:
    label_line = " ".join(f'"{k}"="{v}"' for k, v in labels.items())
    return f"""FROM {os_image}
# 1,500 levels: deeper than Python's recursion limit, within PATH_MAX.
RUN d=/deep; i=0; while [ $i -lt 1500 ]; do d="$d/d"; i=$((i+1)); done; mkdir -p "$d" \\
 && echo neighbour > "$d/bottom"
RUN mkdir /loop && ln -s /loop /loop/self && ln -s /nowhere /dangling
# Sparse: 4 GiB of holes (the engine reads them once, to hash the layer).
RUN truncate -s 4G /sparse.bin
VOLUME /data
LABEL {label_line}
"""


def _build(client: Any, dockerfile: str, tag: str, labels: dict[str, str]) -> None:
    api = client.api
    for _ in api.build(fileobj=dockerfile_context(dockerfile), custom_context=True, tag=tag,
                       rm=True, forcerm=True, labels=labels, decode=True):
        pass


@contextlib.contextmanager
def hostile_neighbour(client: Any, os_image: str, session_label: str,
                      session: str) -> Iterator[None]:
    """The neighbour image, and an unrelated build running beside the suite's first builds."""
    if os.environ.get("PPML_TEST_NEIGHBOUR", "1") == "0":
        yield
        return
    labels = {session_label: session, NEIGHBOUR_LABEL: "1"}
    suffix = f"{os.getpid()}-{os.urandom(3).hex()}"
    _build(client, hostile_dockerfile(os_image, labels), f"ppml-neighbour/hostile:{suffix}", labels)
    # Unrelated work on the same engine while the suite builds: a build with
    # steps of its own (never a cache hit for anything of ours).
    busy = (f"FROM {os_image}\nRUN echo {suffix} > /marker && sleep 20 && "
            f"dd if=/dev/zero of=/zeros bs=1M count=64 status=none\n")
    errors: list[BaseException] = []

    def concurrent() -> None:
        try:
            _build(client, busy, f"ppml-neighbour/busy:{suffix}", labels)
        except BaseException as exc:  # reported at the end, never silently lost
            errors.append(exc)

    thread = threading.Thread(target=concurrent, name="neighbour-build", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=600)
    assert not errors, f"the neighbour's concurrent build failed: {errors[0]!r}"
