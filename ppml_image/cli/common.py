"""What every command module shares: the Typer app, one-line errors, JSON output.

This module imports only typer and the standard library, so that the
command modules (which import it) and ``cli/__init__`` (which imports them) form
no cycle, and ``ppml-image --help`` stays quick. Library modules are loaded by
the commands that use them, through :func:`lazy_module`.

Exit codes: 0 success, 1 error, 2 usage error, 3 verification failed,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 70 internal error (a bug:
please report it with ``--debug`` output). With ``--json``, a failure also
prints ``{"ok": false, "error": "...", "exit_code": N}`` on stdout.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from ppml_image import __version__, _signals, defaults
from ppml_image._signals import Terminated
from ppml_image.errors import PpmlError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

_state: dict[str, bool] = {"debug": False, "json": False}


def _click_error() -> type[Exception]:
    """click's ClickException, wherever this typer keeps click (vendored or not)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """The root group: click's usage errors become one line too, like ours.

    click prints a usage error as a box of several lines; a pipeline that
    reads stderr line by line (and a user) gets one line naming the command
    and what is wrong instead, with exit code 2. ``main`` is what both the
    console script and typer's test runner call, so both see the same output.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        arguments = list(sys.argv[1:] if args is None else args)
        _state["json"] = "--json" in arguments[: _end_of_options(arguments)]
        try:
            code = super().main(arguments, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except _click_error() as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as click does
                exc.show()  # type: ignore[attr-defined]
                return _exit(2, standalone_mode)
            command = _command_of(arguments, self)
            where = f"{command}: " if command else ""
            hint = f"ppml-image {command} --help" if command else "ppml-image --help"
            code = _report(f"{where}{exc.format_message()} (see {hint})",  # type: ignore[attr-defined]
                           getattr(exc, "exit_code", 2))
        except typer.Abort:
            code = _report("aborted", 1)
        return _exit(code if isinstance(code, int) else 0, standalone_mode)


def _exit(code: int, standalone_mode: bool) -> int:
    if standalone_mode:
        sys.exit(code)
    return code


def _end_of_options(arguments: list[str]) -> int:
    return arguments.index("--") if "--" in arguments else len(arguments)


def _command_of(arguments: list[str], group: TyperGroup) -> str:
    """The (sub)command names at the start of *arguments*, e.g. ``secrets tls``."""
    names: list[str] = []
    current: Any = group
    for word in arguments:
        if word.startswith("-") or not hasattr(current, "commands"):
            continue
        if word not in current.commands:
            break
        names.append(word)
        current = current.commands[word]
    return " ".join(names)


app = typer.Typer(
    name="ppml-image",
    cls=OneLineErrors,
    help="Build, sign, measure and verify Gramine SGX images for privacy-preserving ML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: rich costs a tenth of a second at every start and we print
    # nothing else with it.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def registry_timeout_option() -> Any:
    """``--registry-timeout SECONDS``, for every command that pulls or pushes.

    click refuses anything but a whole number from 1 to the cap (exit 2, one
    line); the library checks the value again for callers that are not the CLI.
    """
    return typer.Option(
        defaults.REGISTRY_TIMEOUT, "--registry-timeout", metavar="SECONDS", min=1,
        max=defaults.REGISTRY_TIMEOUT_MAX, help="Give up (exit 1) when the registry stays "
        "silent this long during a pull or push (1 to "
        f"{defaults.REGISTRY_TIMEOUT_MAX}).")


def printable(text: str) -> str:
    """*text* on one line, every control character shown escaped.

    A message may quote a file name or a manifest key, which can hold a NUL,
    an escape sequence that repaints the terminal, a bidi override that
    reorders what the reader sees, or a lone surrogate (an undecodable file
    name). Ordinary blanks become single spaces; the rest is written as
    ``\\xNN`` or ``\\uNNNN``, so the line shows exactly what was there.
    """
    return " ".join(_CONTROL.sub(_escape, text).split())


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in " \t\n\r":
        return " "
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# Cc (C0, DEL, C1), Cf (format: bidi overrides, zero-width), line and paragraph
# separators, surrogates, and the whitespace str.split() would otherwise hide.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                      "\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]")


def _report(message: str, code: int) -> int:
    """Print one error line (and, with --json, the failure object); return *code*."""
    line = printable(message)
    typer.echo(f"ppml-image: error: {line}", err=True)
    if _state["json"]:
        typer.echo(json.dumps({"ok": False, "error": line, "exit_code": code}))
    return code


def fail(message: str, code: int = 1) -> None:
    """Stop the command: one line on stderr (and JSON with --json), exit *code*."""
    _report(message, code)
    raise typer.Exit(code)


def handles_errors(func: F) -> F:
    """Turn library errors into one line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("as_json"):
            _state["json"] = True
        try:
            with _signals.unwinding():  # raise inside, so that clean-up runs; exit outside
                result = func(*args, **kwargs)
                _signals.check()  # a signal whose exception was swallowed still counts
            return result
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Terminated:
            fail("terminated", 143)
        except Exception as exc:
            # A signal whose exception was swallowed (in an at-fork callback,
            # say) can make a later step fail: the outcome is still the signal.
            signalled = _signals.arrived()
            if isinstance(signalled, KeyboardInterrupt):
                fail("interrupted", 130)
            if signalled is not None:
                fail("terminated", 143)
            _report_exception(exc)

    return wrapper  # type: ignore[return-value]


def _report_exception(exc: Exception) -> None:
    """One line and an exit code for an exception a command raised."""
    if isinstance(exc, BrokenPipeError):  # `ppml-image ... | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    if _state["debug"]:
        raise exc
    if isinstance(exc, PpmlError):
        fail(str(exc), exc.exit_code)
    # A bug: say so in one line unless debugging.
    fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 70)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


class _LazyModule:
    """A module imported on first use: commands load docker, jinja2 or
    cryptography only when they run, not when the CLI starts."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


def lazy_module(name: str) -> ModuleType:
    """*name*, imported when an attribute is first read (typed as the module by
    the callers' ``TYPE_CHECKING`` imports)."""
    return _LazyModule(name)  # type: ignore[return-value]


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
        return f"ppml-image: {record.levelname.lower()}: {printable(record.getMessage())}"


def _setup_logging() -> None:
    """Library warnings go to stderr as one line each."""
    logger = logging.getLogger("ppml_image")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_WarningFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def print_sigstruct_fields(view: dict[str, Any]) -> None:
    """SIGSTRUCT fields as ``key: value`` lines; whether the host can launch
    it as debug, and every non-Gramine mask, first (and warned on stderr)."""
    if view.get("debug_launchable"):
        typer.secho("WARNING: debug_launchable: the host can launch this enclave in debug mode "
                    "and read its memory. Never use it for production data.",
                    err=True, fg="yellow")
    for key, value in view.items():
        if key == "mask_problems":
            typer.echo(f"{key + ':':22}{'none (Gramine 1.9 masks)' if not value else ''}")
            for problem in value:
                typer.echo(f"  - {problem}")
        else:
            shown = str(value).lower() if isinstance(value, bool) else value
            typer.echo(f"{key + ':':22}{shown}")


# --------------------------------------------------------------------------
# --max-image-bytes: how much of an image's files a reader reads at most
# --------------------------------------------------------------------------
MAX_IMAGE_BYTES_HELP = ("Read at most this many bytes of the image's files (as their tar "
                        "headers declare them; suffixes K, M, G, T are powers of 1024), and "
                        "refuse a larger image before reading it: a sparse or huge file does "
                        f"not set your cost. Default {defaults.MAX_IMAGE_BYTES >> 30}G.")
_SIZE = re.compile(r"([1-9][0-9]{0,15})([KMGT]?)(i?B)?")
_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}


def max_image_bytes(text: str | None) -> int:
    """Parse ``--max-image-bytes`` (an allow-list: digits and one binary suffix)."""
    if text is None:
        return defaults.MAX_IMAGE_BYTES
    match = _SIZE.fullmatch(text)
    if match is None or (match.group(3) and not match.group(2)):
        raise UsageError(f"--max-image-bytes {text!r}: give a positive whole number of bytes, "
                         "optionally with K, M, G or T (e.g. 8G)")
    return int(match.group(1)) << _UNITS[match.group(2)]
