"""scripts/ensure-registry.sh: idempotent, loopback only, and it never takes over a port
that something else holds."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

from registry import ROOT, ensure_registry

SCRIPT = ROOT / "scripts" / "ensure-registry.sh"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def test_idempotent_and_loopback_only() -> None:
    first = ensure_registry()
    assert first.startswith("127.0.0.1:")
    again = _run({})
    assert again.returncode == 0 and again.stdout.strip() == first
    assert "starting" not in again.stderr  # found running, nothing started
    with socket.socket() as sock:  # the registry listens on loopback only
        sock.settimeout(5)
        assert sock.connect_ex(("127.0.0.1", int(first.rpartition(":")[2]))) == 0


def test_port_setting_is_checked(tmp_path: Path) -> None:
    for value in ("abc", "0", "70000", "5000; rm -rf /", "-1"):
        result = _run({"PPML_IMAGE_REGISTRY_PORT": value,
                       "PPML_IMAGE_REGISTRY_DIR": str(tmp_path / "r")})
        assert result.returncode == 2, (value, result.stderr)
        assert "is not a port number" in result.stderr
    assert not (tmp_path / "r").exists()


def test_a_port_held_by_something_else_is_left_alone(tmp_path: Path) -> None:
    """A listener that is not a registry: refused at once, nothing started or written."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]

        def answer_garbage() -> None:
            for _ in range(4):
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"SSH-2.0-not-a-registry\r\n")

        threading.Thread(target=answer_garbage, daemon=True).start()
        result = _run({"PPML_IMAGE_REGISTRY_PORT": str(port),
                       "PPML_IMAGE_REGISTRY_DIR": str(tmp_path / "r")})
    assert result.returncode == 1, result.stderr
    assert "not a registry" in result.stderr
    assert not (tmp_path / "r").exists()
