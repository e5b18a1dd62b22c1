"""A signal whose exception Python swallows still stops every commit.

Python prints "Exception ignored" and carries on when a signal handler's
exception is raised inside a __del__ method, a weakref callback or an
at-fork callback. The CLI records the signal, so the next commit point
(renaming an output into place) refuses, and the exit code says so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, signal, sys
from pathlib import Path
from ppml_image import _signals
from ppml_image._fs import write_atomic

_signals.install()

class Swallower:
    def __del__(self):
        os.kill(os.getpid(), signal.{name})  # handler runs here; its exception is ignored

Swallower()
print("still running", flush=True)
try:
    write_atomic(Path(sys.argv[1]), b"data")
except BaseException as exc:
    print("refused:", type(exc).__name__, flush=True)
    raise SystemExit(0)
print("written", flush=True)
"""


def _run(name: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT.replace("{name}", name), str(out)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_swallowed_sigterm_still_stops_the_rename(tmp_path: Path) -> None:
    result = _run("SIGTERM", tmp_path / "out.bin")
    assert result.stdout.splitlines() == ["still running", "refused: Terminated"], result
    assert "Exception ignored" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_swallowed_sigint_still_stops_the_rename(tmp_path: Path) -> None:
    result = _run("SIGINT", tmp_path / "out.bin")
    assert result.stdout.splitlines() == ["still running", "refused: KeyboardInterrupt"], result
    assert list(tmp_path.iterdir()) == []
