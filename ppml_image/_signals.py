"""Ctrl-C and SIGTERM: unwind, and never commit an output after either.

The CLI turns SIGINT into KeyboardInterrupt (exit 130) and SIGTERM into
:class:`Terminated` (exit 143), so every ``finally`` and context manager
removes its temporary files and containers.

An exception raised by a signal handler can be swallowed: when the signal
lands inside an at-fork callback (subprocess with ``preexec_fn``), a
``__del__`` method or a weakref callback, Python prints "Exception ignored"
and carries on. So the handler also records the signal, and every commit
point (the rename of an output file, the swap of an output folder, a tag)
calls :func:`check` first: once a signal has arrived, nothing is committed,
whether or not its exception made it through.
"""

from __future__ import annotations

# Only modules that start-up has loaded anyway (and signal): the program
# imports this first, and a Ctrl-C before the handlers are set is Python's.
import os
import signal
import sys


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` swallows it on the way out."""


_received: list[int] = []


def _handler(signum: int, frame: object) -> None:
    _received.append(signum)
    raise _exception(signum)


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """Keep a swallowed signal exception quiet: it is recorded, and check() acts on it."""
    if isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)) and _received:
        return
    sys.__unraisablehook__(unraisable)


def install() -> None:
    """Handle SIGINT and SIGTERM as described above (the CLI calls this once)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    sys.unraisablehook = _unraisable


# --------------------------------------------------------------------------
# Outside a command (start-up, parsing, printing the result): nothing to
# clean up, so a signal ends the process at once with one line, never with a
# traceback from whatever import or parse it interrupted.
# --------------------------------------------------------------------------
_program: dict[str, bool] = {}


def exit_on_signal(*, json: bool | None = None) -> None:
    """From now on SIGINT / SIGTERM end the process at once: exit 130 / 143 and
    one line on stderr (and the JSON failure on stdout with *json*).

    The ``ppml-image`` program calls this first thing, before importing the
    CLI; :func:`unwinding` switches to raising while a command runs.
    """
    if json is not None:
        _program["json"] = json
    _program["on"] = True
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGTERM, _exit_now)


def _exit_now(signum: int, frame: object) -> None:
    code, word = (130, "interrupted") if signum == signal.SIGINT else (143, "terminated")
    # os.write and os._exit: nothing here may raise, wait on a lock or run
    # Python clean-up that the signal interrupted halfway.
    try:
        os.write(2, f"ppml-image: error: {word}\n".encode())
        if _program.get("json"):
            os.write(1, f'{{"ok": false, "error": "{word}", "exit_code": {code}}}\n'.encode())
    except OSError:
        pass
    os._exit(code)


def ignore_from_now() -> None:
    """Ignore SIGINT and SIGTERM for the rest of the process: the program
    calls this once its outcome is printed, so that its exit code is that
    outcome's. Python restores the default actions during shut-down but
    leaves an ignored signal ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class unwinding:
    """While a command runs, signals raise (see :func:`install`) so that every
    ``finally`` cleans up; before and after, they end the process at once.

    Only in the ``ppml-image`` program (after :func:`exit_on_signal`): a
    library caller or a test runner keeps its own signal handlers.
    """

    def __enter__(self) -> None:
        if _program.get("on"):
            install()

    def __exit__(self, *exc_info: object) -> None:
        if _program.get("on"):
            exit_on_signal()


def leave_to_main_thread() -> None:
    """Block SIGINT and SIGTERM in the calling (helper) thread.

    Python runs handlers in the main thread only, and only when that thread
    runs Python code. The kernel hands a process's signal to any thread that
    does not block it: given to a helper, it would wait until the main
    thread next wakes (a stream that stalls: never). Every thread we start
    calls this first, so the main thread gets the signal and its wait is
    interrupted; main-thread waits on helpers also wake in short slices (see
    :data:`WAIT_SLICE`), for threads that are not ours.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


WAIT_SLICE = 0.1  # seconds: how long the main thread waits on a helper before checking again


def arrived() -> BaseException | None:
    """The exception of the first signal that arrived, if one did (see :func:`check`)."""
    return _exception(_received[0]) if _received else None


def check() -> None:
    """Raise again if a signal arrived: called just before committing an output."""
    signal_exception = arrived()
    if signal_exception is not None:
        raise signal_exception
