"""Where a whole command spends its time: a few named phases, reported on request.

Commands mark their phases (``with phase("measuring"):``); the marks cost a
clock read each. With ``PPML_IMAGE_PHASES=FILE`` in the environment, the
process writes the totals to FILE as JSON when it exits, so that ``make
bench`` can break a whole command's time down (start-up and imports, reading
inputs, measuring, signing, building the final image, checking it, writing
outputs) and a regression shows where it happened. Nothing is written
otherwise. The file holds only durations, never a value from the command.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "PPML_IMAGE_PHASES"

# The standard phase names, in the order a command goes through them.
STARTUP = "start-up and imports"
READING = "reading inputs"
MEASURING = "measuring"
SIGNING = "signing"
BUILDING = "building and committing the final image"
CHECKING = "checking the final image"
BASE = "comparing with the base image"
WRITING = "writing outputs"

_totals: dict[str, float] = {}
_first_mark: list[float] = []


def _process_age() -> float | None:
    """Seconds since this process started (Linux: /proc, in clock ticks), or None."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the time spent in the block to *name*'s total (nested phases count in both)."""
    if not _first_mark:
        age = _process_age()
        if age is not None:
            _totals[STARTUP] = age
        _first_mark.append(time.perf_counter())
    start = time.perf_counter()
    try:
        yield
    finally:
        _totals[name] = _totals.get(name, 0.0) + time.perf_counter() - start


def totals() -> dict[str, float]:
    """The phases measured so far, in seconds."""
    return dict(_totals)


def _write_report(path: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump({"phases": totals()}, out)
        os.replace(temporary, path)
    except OSError:
        pass  # a report is a convenience for benchmarks: never fail the command for it


def install() -> None:
    """Write the report at exit when the environment asks for one."""
    path = os.environ.get(ENV)
    if path:
        atexit.register(_write_report, path)
