"""A private Docker engine for the tests that kill one (issue 11.7).

The machine's engine is shared (other runs, other people): a test never
stops it. Tests that need an engine to die start their own ``dockerd``, with
its own socket, data root, exec root and pidfile under a short temporary
folder, a bridge of its own and no iptables rules (nothing of the host's
network setup is touched), and point ``DOCKER_HOST`` at it for the CLI under
test.

Why a bridge of its own: ``--bridge none`` makes dockerd *delete* the
interface named ``docker0`` at start (moby's removeDefaultBridgeInterface),
which is the machine engine's bridge; every later container of that engine
would then fail to start. So each private engine gets a bridge created here,
on a /24 no route of the host uses, and removed at close.

Images come from the machine's engine through the API (``docker save`` into
``docker load``), never by bootstrapping again.

Every process stopped here is one this module started: the ``dockerd`` (by
the PID of the child we spawned) and, when it was killed, what it left
running from its own exec root (its ``containerd`` and shims, found by their
command lines naming that folder). Nothing is looked up by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
START_TIMEOUT = 90.0


class PrivateEngine:
    """One ``dockerd`` of our own; :meth:`kill` it, :meth:`start` it again, :meth:`close` it."""

    def __init__(self, parent: Path | None = None) -> None:
        # Unix socket paths are limited to 107 bytes, and containerd puts its
        # own sockets deep under the exec root: keep the root short.
        self.root = Path(tempfile.mkdtemp(prefix="ppml-e-", dir=parent or "/tmp"))
        self.socket = self.root / "docker.sock"
        self.data = self.root / "data"
        self.exec_root = self.root / "x"
        self.pidfile = self.root / "docker.pid"
        self.log = self.root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.bridge = f"ppmlt{os.getpid() % 100000}{self.root.name[-4:]}"[:15]
        self.bridge_made = False

    # -- what the CLI under test needs ---------------------------------------
    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def client(self, timeout: int = 300) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    # -- life cycle -----------------------------------------------------------
    def start(self) -> None:
        """Start (or restart, over the same data root) and wait until it answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for folder in (self.data, self.exec_root):
            folder.mkdir(parents=True, exist_ok=True)
        self._make_bridge()
        log = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(
                [DOCKERD, "--host", self.host, "--data-root", str(self.data),
                 "--exec-root", str(self.exec_root), "--pidfile", str(self.pidfile),
                 "--bridge", self.bridge, "--iptables=false", "--ip6tables=false",
                 "--ip-masq=false", "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self.starts += 1
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"private dockerd exited {self.proc.returncode}: "
                                     f"{self.tail()}")
            with contextlib.suppress(Exception):
                client = self.client(timeout=5)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            time.sleep(0.1)
        raise AssertionError(f"private dockerd did not answer in {START_TIMEOUT:.0f} s: "
                             f"{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the dockerd (by the PID we spawned), as a crash would end it."""
        assert self.proc is not None and self.proc.poll() is None, "not running"
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        containerd = pidfile.read_text().strip() if pidfile.exists() else ""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        # Its containerd dies with it (parent-death signal), but stays a zombie
        # until init reaps it, and dockerd would take a zombie named by the
        # pidfile for a live containerd and wait for it in vain: wait for the
        # reaping, and drop the pidfile of the dead process.
        deadline = time.monotonic() + 10
        while containerd and Path(f"/proc/{containerd}").exists() and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self._leftovers("--config"), "the private containerd outlived dockerd"
        pidfile.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop everything this engine started, unmount, and remove its folder."""
        if (self.proc is None or self.proc.poll() is not None) and self._leftovers():
            # Killed and not restarted: its shims still run containers (a build
            # step's hour of sleep). A restart stops those; then stop it cleanly.
            with contextlib.suppress(AssertionError, OSError):
                self.start()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        for pid in self._leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self._leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
        for mount in self._mounts():
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.bridge_made:
            subprocess.run(["ip", "link", "delete", self.bridge, "type", "bridge"],
                           check=False, capture_output=True)
            self.bridge_made = False

    def _make_bridge(self) -> None:
        """Create this engine's own bridge on a free 10.213.x.0/24 (once)."""
        if self.bridge_made:
            return
        routes = subprocess.run(["ip", "-4", "route", "show"], check=True,
                                capture_output=True, text=True).stdout
        free = [x for x in range(1, 255) if f"10.213.{x}." not in routes]
        assert free, "no free 10.213.x.0/24 for a private engine's bridge"
        subnet = free[(os.getpid() + len(self.root.name)) % len(free)]
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"],
                       check=True, capture_output=True)
        self.bridge_made = True
        subprocess.run(["ip", "addr", "add", f"10.213.{subnet}.1/24", "dev", self.bridge],
                       check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True,
                       capture_output=True)

    def _leftovers(self, name: str = "") -> list[int]:
        """PIDs of processes whose command line names our exec root (and *name*, if given)."""
        marker = str(self.exec_root).encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and name.encode() in cmdline:
                found.append(int(entry))
        return found

    def _mounts(self) -> list[str]:
        """Mount points under our folder, deepest first."""
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(self.root) or point.startswith(f"{self.root}/"):
                points.append(point)
        return sorted(points, key=len, reverse=True)

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -- images ----------------------------------------------------------------
    def load_from(self, source: docker.DockerClient, *refs: str) -> None:
        """``docker save`` *refs* from *source* into this engine (tags come along)."""
        stream = source.api.get_image(refs[0], chunk_size=1 << 20) if len(refs) == 1 else \
            _save_many(source, refs)
        client = self.client()
        try:
            for line in client.api.load_image(stream):
                assert "error" not in line, line
        finally:
            client.close()


def _save_many(source: docker.DockerClient, refs: tuple[str, ...]) -> Any:
    api = source.api
    response = api._get(api._url("/images/get"), params={"names": list(refs)}, stream=True)
    api._raise_for_status(response)
    return response.iter_content(1 << 20)


def running_processes(argv_fragment: bytes) -> list[int]:
    """PIDs whose command line contains *argv_fragment* (the tests' unique markers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if argv_fragment in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
    return found
