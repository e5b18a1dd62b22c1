"""`make bench` keeps running: its scripts, in their smallest settings, on real commands.

Not a timing test (no figure is judged): each script must finish and report
every phase it promises. `make bench` once stopped at its first `sign`, for
two sessions, because its manifests no longer passed the full schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _run(script: str, *args: str, **env: str) -> object:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *args, "--json"],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_the_whole_command_bench_signs_and_reports_its_phases() -> None:
    figures = _run("bench_commands.py", BENCH_THREADS="0", BENCH_IMAGES="0", BENCH_ROUNDS="1")
    assert isinstance(figures, list)
    by_name = {f["name"]: f for f in figures}
    assert {"sign 256M", "sign 64G"} <= set(by_name)
    sixty_four = by_name["sign 64G"]
    assert sixty_four["reference_median_seconds"] > 0 and sixty_four["ratio"] > 0
    for run in sixty_four["runs"]:
        assert {"start-up and imports", "measuring", "signing"} <= set(run["phases"])


def test_the_trusted_entries_bench_signs_beside_its_estimate() -> None:
    report = _run("bench_entries.py", "--entries", "300")
    assert isinstance(report, dict) and report["entries"] == 300
    runs = report["runs"]
    assert set(runs) == {"ppml-image sign", "Gramine 1.9 sign (estimate)",
                         "tomllib.loads alone"}
    assert "measuring" in runs["ppml-image sign"]["phases"]
