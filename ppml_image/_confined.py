"""Run a program the user named, so that nothing it starts outlives the call.

``python.get_sys_path(PATH)`` in a manifest template runs an interpreter the
user named with ``manifest --python PATH``. Even a program the user chose
may misbehave: print without end, hang, spin, or leave a background child
holding its output (which would make a reader wait for an end of file that
never comes, and outlive the command). So :func:`run_confined`:

* starts it in a session of its own (``start_new_session``), without our
  secrets in its environment (:func:`ppml_image._proc.child_env`), stdin
  closed, its CPU time bounded (``RLIMIT_CPU``, inherited by what it starts);
* reads at most *limit* bytes of its stdout for at most *timeout* seconds,
  and stops reading when the program itself exits: what it printed before
  exiting is in the pipe, and a child it left behind is not waited for;
* when the call returns, fails, times out or is interrupted, kills its whole
  process group and, on Linux, every descendant that escaped into a session
  of its own: this process becomes a child subreaper for the call, so an
  orphan is re-parented here, where it is found and killed, and reaped.

Standard library only; imports nothing of ppml_image but ``_proc`` and ``_fs``
(the C library lookup).
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ppml_image._fs import prctl_function
from ppml_image._proc import child_env

CPU_SECONDS = 10  # CPU time a named interpreter may use to print its sys.path
STDERR_KEPT = 4096  # the end of stderr says why it failed
_PR_SET_CHILD_SUBREAPER = 36
_SWEEP_ROUNDS = 1000  # kill-and-look rounds before giving up on a fork storm
_HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGPROF}


class Output(NamedTuple):
    returncode: int
    stdout: bytes
    stderr: bytes


def run_confined(argv: list[str], *, limit: int, timeout: float,
                 cpu_seconds: int = CPU_SECONDS) -> Output:
    """Run *argv* confined (see the module docstring).

    Raises TimeoutError (no exit within *timeout* seconds), OverflowError
    (more than *limit* bytes on stdout), or OSError (it cannot be started).
    Whatever happens, its process group and escaped descendants are gone
    when this returns or raises.
    """
    with _subreaper():
        before = _children()
        # Held while it starts: a Ctrl-C or CPU timer between fork and Popen's
        # return would leave a child nobody tracks (it unblocks them itself).
        with _signals_held():
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=child_env(), start_new_session=True, preexec_fn=_child_setup(cpu_seconds))
        try:
            stdout, stderr = _read_until_exit(proc, limit, time.monotonic() + timeout)
            return Output(proc.wait(), stdout, stderr)
        finally:
            with _signals_held():  # a Ctrl-C or a CPU timer must not cut the clean-up short
                _kill_all(proc, before)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def _child_setup(cpu_seconds: int) -> Callable[[], None]:
    """The pre-exec hook: bound the child's CPU time (SIGXCPU, then SIGKILL one
    second later), write no core file when it is stopped, and unblock the
    signals held while it was started."""

    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)

    return setup


def _read_until_exit(proc: subprocess.Popen[bytes], limit: int,
                     deadline: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr until both end or the program exits (then drain
    what is already in the pipes, without waiting for a child that holds them)."""
    buffers = {"out": bytearray(), "err": bytearray()}
    with selectors.DefaultSelector() as selector:
        for pipe, which in ((proc.stdout, "out"), (proc.stderr, "err")):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe, selectors.EVENT_READ, which)
        while selector.get_map():
            exited = proc.poll() is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not exited:
                raise TimeoutError
            # Short waits, so that the program's exit is noticed even when a
            # child it left keeps the pipes open.
            events = selector.select(0 if exited else min(remaining, 0.05))
            for key, _ in events:
                if not _read_chunk(key, buffers, limit):
                    selector.unregister(key.fileobj)
            if exited and not events:
                break  # everything it printed before exiting has been read
    return bytes(buffers["out"]), bytes(buffers["err"])


def _read_chunk(key: selectors.SelectorKey, buffers: dict[str, bytearray], limit: int) -> bool:
    try:
        chunk = os.read(key.fd, 1 << 16)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    buffer = buffers[key.data]
    buffer += chunk
    if key.data == "out" and len(buffer) > limit:
        raise OverflowError
    if key.data == "err" and len(buffer) > STDERR_KEPT:
        del buffer[:-STDERR_KEPT]
    return True


# --------------------------------------------------------------------------
# Killing everything it started
# --------------------------------------------------------------------------
def _kill_all(proc: subprocess.Popen[bytes], before: set[int]) -> None:
    """Kill the program's group and session, and every descendant re-parented
    here (an escaped one, with a session of its own), until none is left."""
    leader = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        proc.wait()
    for _ in range(_SWEEP_ROUNDS):
        victims = [pid for pid, ppid, pgrp, sid in _processes()
                   if pid != os.getpid() and (pgrp == leader or sid == leader
                                             or (ppid == os.getpid() and pid not in before))]
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _reap(before)
        time.sleep(0.001)  # let the kernel re-parent the orphans of those just killed


def _reap(before: set[int]) -> None:
    """Collect our new children that have died (orphans re-parented here)."""
    for pid in _children() - before:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _children() -> set[int]:
    me = os.getpid()
    return {pid for pid, ppid, _, _ in _processes() if ppid == me}


def _processes() -> Iterator[tuple[int, int, int, int]]:
    """(pid, ppid, process group, session) of every process we can see (Linux /proc)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its end.
        fields = stat[stat.rfind(b")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            yield int(name), int(fields[1]), int(fields[2]), int(fields[3])


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGPROF: delivered (and raised) after the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """Make this process the child subreaper for the call (Linux), then stop."""
    prctl = prctl_function()
    enabled = prctl is not None and prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if enabled and prctl is not None:
            prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
