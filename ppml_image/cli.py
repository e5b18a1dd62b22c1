"""The ``ppml-image`` command line: parse, call the library, print.

Every command is a thin wrapper over a documented library function. Errors
are one line on stderr (``ppml-image: error: ...``) with a non-zero exit code;
``--debug`` shows the traceback instead.

Exit codes: 0 success, 1 error, 2 usage error, 3 verification failed,
70 internal error (a bug: please report it with ``--debug`` output).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from ppml_image import __version__, _signals
from ppml_image._signals import Terminated
from ppml_image.errors import PpmlError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="ppml-image",
    help="Build, sign, measure and verify Gramine SGX images for privacy-preserving ML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"ppml-image: error: {message}", err=True)
    raise typer.Exit(code)


def handles_errors(func: F) -> F:
    """Turn library errors into one line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = func(*args, **kwargs)
            _signals.check()  # a signal whose exception was swallowed still counts
            return result
        except (typer.Exit, typer.Abort):
            raise
        except PpmlError as exc:
            if _state["debug"]:
                raise
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Terminated:
            fail("terminated", 143)
        except BrokenPipeError:  # `ppml-image ... | head`: the reader has gone, not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:  # a bug: say so in one line unless debugging
            if _state["debug"]:
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 70)

    return wrapper  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ppml-image {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    _state["debug"] = debug
    _setup_logging()


class _WarningFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"ppml-image: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging() -> None:
    """Library warnings go to stderr as one line each."""
    logger = logging.getLogger("ppml_image")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_WarningFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _register_commands() -> None:
    # Each group lives beside its library code; importing registers it.
    from ppml_image import _cli_images, _cli_sgx, _cli_spark  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    # Without this, SIGTERM (docker stop, CI timeouts, kill) ends the process
    # at once and leaves temporary files and containers behind.
    _signals.install()
    _register_commands()
    app(args=argv if argv is not None else sys.argv[1:], prog_name="ppml-image")


__all__ = ["Path", "Terminated", "app", "emit_json", "fail", "handles_errors", "main"]
