"""Progress on stderr for the long steps (builds, reading an image's files).

On a terminal it is one line rewritten in place; otherwise one line per
step, so CI logs stay readable. ``quiet`` (for ``--json``) prints nothing.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO


class Progress:
    """Step N/M, the current instruction and the elapsed time."""

    def __init__(self, title: str, *, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.title = title
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.tty = self.stream.isatty()

    def step(self, number: int, total: int, instruction: str) -> None:
        if self.quiet:
            return
        text = f"{self.title}: step {number}/{total} [{self.elapsed():5.0f}s] {instruction}"
        if self.tty:
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
            self.stream.write("\r" + text[:width].ljust(width))
        else:
            self.stream.write(text[:200] + "\n")
        self.stream.flush()

    def say(self, line: str) -> None:
        """One line of its own (what we are waiting for), unless quiet."""
        if self.quiet:
            return
        self.stream.write(line + "\n")
        self.stream.flush()

    def done(self, message: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\n")
        self.stream.write(f"{self.title}: {message} in {self.elapsed():.1f}s\n")
        self.stream.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.start
