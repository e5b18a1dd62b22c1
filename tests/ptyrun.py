"""Run a command on a pseudo-terminal, answer one prompt, and never hang.

Reads are non-blocking (select with a deadline): a prompt that never comes,
or a child that never exits, fails the test with what the terminal showed,
and the child is killed.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from collections.abc import Callable

import pytest


def _read_until(fd: int, done: Callable[[bytes], bool], deadline: float,
                output: bytearray) -> bool:
    """Read *fd* into *output* until *done*(output), end of file, or *deadline*."""
    while not done(bytes(output)):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return done(bytes(output))
        if not chunk:
            return done(bytes(output))
        output += chunk
    return True


def answer_prompt(argv: list[str], prompt: bytes, answer: bytes, *,
                  before_exec: Callable[[], None] | None = None,
                  timeout: float = 60) -> tuple[int, bytes]:
    """Run *argv* on a terminal; when *prompt* shows, type *answer* and Enter.

    Returns (exit code, everything the terminal showed). Fails, and kills the
    child, if the prompt does not come or the child does not end in *timeout*.
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the pseudo-terminal
        try:
            if before_exec:
                before_exec()
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    output = bytearray()
    finished = False
    try:
        deadline = time.monotonic() + timeout
        if not _read_until(fd, lambda out: prompt in out, deadline, output):
            pytest.fail(f"no {prompt!r} prompt within {timeout} s; the terminal showed: "
                        f"{bytes(output)!r}")
        os.write(fd, answer + b"\n")
        _read_until(fd, lambda out: False, deadline, output)  # to end of file or deadline
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                finished = True
                return os.waitstatus_to_exitcode(status), bytes(output)
            time.sleep(0.05)
        pytest.fail(f"still running {timeout} s after the answer; the terminal showed: "
                    f"{bytes(output)!r}")
    finally:
        if not finished:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
