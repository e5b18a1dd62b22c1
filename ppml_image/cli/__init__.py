"""The ``ppml-image`` command line: parse, call the library, print.

Every command is a thin wrapper over a documented library function. Errors
are one line on stderr (``ppml-image: error: ...``) with a non-zero exit code;
``--debug`` shows the traceback instead. The shared pieces (the app, the
error handling, JSON output) live in :mod:`ppml_image.cli.common`; the command
groups live in the modules of this package, one per group. May import every
room, but only lazily (when a command runs), so that ``--help`` stays quick.

Exit codes: 0 success, 1 error, 2 usage error, 3 verification failed,
130 interrupted, 143 terminated, 70 internal error (a bug: please report it
with ``--debug`` output).
"""

from __future__ import annotations

import sys

from ppml_image import _phases, _signals
from ppml_image._signals import Terminated
from ppml_image.cli.common import app, emit_json, fail, handles_errors


def _register_commands() -> None:
    # Each group lives beside its library code; importing registers it. The
    # groups import only typer and cli.common at start-up: library modules
    # (docker, jinja2, cryptography...) load when a command runs.
    from ppml_image.cli import attest, images, sgx, spark  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    # Without this, SIGTERM (docker stop, CI timeouts, kill) ends the process
    # at once and leaves temporary files and containers behind.
    _signals.install()
    _phases.install()
    _register_commands()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="ppml-image")


__all__ = ["Terminated", "app", "emit_json", "fail", "handles_errors", "main"]
