"""Builds that are slow by construction, and watching a command get to them.

A build step that sleeps for an hour, with an argument no other process on
the machine has, is a moment the tests can wait for (the process shows in
/proc) and then interrupt, kill, or take the engine away from.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import gramine_debs
from private_engine import running_processes


def sleep_marker() -> str:
    """An argument for sleep(1) that no other process on the machine has: an hour and a tag."""
    return f"3600.{os.getpid()}{random.randrange(10**9):09d}"


def sleeping(marker: str) -> Callable[[], bool]:
    return lambda: bool(running_processes(b"sleep\0" + marker.encode() + b"\0"))


def cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None
        ) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PPML_IMAGE_")}
    full.update(env or {})
    full["PYTHONFAULTHANDLER"] = "1"  # a test that finds it stuck can see where (SIGABRT)
    return subprocess.Popen([sys.executable, "-m", "ppml_image", *map(str, args)], env=full,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str,
               limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"never got to {what}")
        time.sleep(0.02)


def sleeping_deb(folder: Path, tree: Path, marker: str) -> Path:
    """A stand-in Gramine package whose install script sleeps for an hour."""
    return gramine_debs(tree, folder, version="0.0+sleeps", postinst=f"sleep {marker}")
