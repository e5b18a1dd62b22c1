"""A whole command reports where its time went when asked, and writes nothing otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import COMMON

MANIFEST = ('libos.entrypoint = "/x"\nfs.mounts = []\n'  # the schema signing checks
            'loader.entrypoint.uri = "file:/x"\nloader.entrypoint.sha256 = "' + "0" * 64
            + '"\nsgx.enclave_size = "256M"\nsgx.max_threads = 4\n')


def _sign(tmp_path: Path, key: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "app.manifest"
    manifest.write_text(MANIFEST)
    return subprocess.run(
        [sys.executable, "-m", "ppml_image", "sign", "-m", str(manifest), "-o",
         str(tmp_path / "app.manifest.sgx"), "--libpal", str(COMMON / "gcc_libpal.so"),
         "-k", str(key), "--date", "2025-01-01"], env=env, capture_output=True, text=True,
        timeout=120)


def test_sign_reports_its_phases(tmp_path: Path, enclave_key: Path) -> None:
    report = tmp_path / "phases.json"
    done = _sign(tmp_path, enclave_key, {**os.environ, "PPML_IMAGE_PHASES": str(report)})
    assert done.returncode == 0, done.stderr
    phases = json.loads(report.read_text())["phases"]
    assert list(phases) == ["start-up and imports", "reading inputs", "measuring", "signing",
                            "writing outputs"]
    assert all(seconds >= 0 for seconds in phases.values())
    assert phases["measuring"] > phases["signing"] / 100  # a measured phase, not a stub


def test_no_report_unless_asked(tmp_path: Path, enclave_key: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PPML_IMAGE_PHASES"}
    done = _sign(tmp_path, enclave_key, env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "app.manifest", "app.manifest.sgx", "app.sig"]
