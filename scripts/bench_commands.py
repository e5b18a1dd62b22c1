"""`make bench` (whole commands): where a command's time goes, beside its physical limit.

Every figure is a whole ``ppml-image`` process timed from outside, run side by
side (interleaved) with the reference it should approach, and broken down
into the phases the command reports through ``PPML_IMAGE_PHASES`` (start-up
and imports, reading inputs, measuring, signing, comparing with the base,
building and checking the final image, writing outputs; see
``ppml_image/_phases.py``). Peak memory is the process's own (``wait4``).

1. ``sign`` of a 256M enclave (a small one: start-up dominates).
2. ``sign`` of a 64G enclave against one ``hashlib.sha256`` pass over the same
   EADD/EEXTEND record bytes (target <= 1.4x).
3. ``sign`` of a 64G enclave with 65,536 threads: time and peak memory
   (``BENCH_THREADS=0`` skips it: it takes minutes).
4. ``sign-image`` of an unsigned slim image against the engine's raw
   ``docker export`` of the same image (target <= 1.3x); ``BENCH_IMAGES=0``
   skips it (it builds the slim base on the engine).

``--json`` prints one JSON document instead of the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import eadd_bytes, manifest_text  # the same minimal manifest as the in-process bench

ROOT = Path(__file__).resolve().parent.parent
PAL = ROOT / "tests/vectors/_common/gcc_libpal.so"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DOCKER = shutil.which("docker") or "docker"


@dataclass
class Run:
    """One whole process: wall seconds, peak memory and its own phase breakdown."""

    seconds: float
    max_rss_mb: float
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class Figure:
    """A command beside its reference, over interleaved rounds."""

    name: str
    runs: list[Run]
    reference: str = ""
    reference_seconds: list[float] = field(default_factory=list)
    target: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def ratio(self) -> float | None:
        if not self.reference_seconds:
            return None
        return self.median / statistics.median(self.reference_seconds)

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "median_seconds": round(self.median, 3),
                "reference": self.reference,
                "reference_median_seconds": (round(statistics.median(self.reference_seconds), 3)
                                             if self.reference_seconds else None),
                "ratio": None if self.ratio is None else round(self.ratio, 2),
                "target": self.target, "runs": [asdict(r) for r in self.runs]}


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("ppml-image")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ppml_image"]


def whole_process(argv: list[str], env: dict[str, str]) -> Run:
    """Run *argv* once; its wall time, peak RSS and the phases it reported."""
    with tempfile.TemporaryDirectory(prefix="ppml-bench-phases-") as tmp:
        report = Path(tmp) / "phases.json"
        start = time.perf_counter()
        child = subprocess.Popen(argv, env={**env, "PPML_IMAGE_PHASES": str(report)},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert child.stderr is not None
        errors = child.stderr.read()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"bench: {' '.join(argv[:3])} failed: {errors.decode()[-400:]}")
        phases = json.loads(report.read_text())["phases"] if report.exists() else {}
    return Run(round(seconds, 4), round(usage.ru_maxrss / 1024, 1),
               {k: round(v, 4) for k, v in phases.items()})


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("PPML_IMAGE_")}
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")  # compiled once, as a wheel has it
    return env


def _manifest(root: Path, size: str, threads: int) -> Path:
    path = root / f"{size}-{threads}.manifest"
    path.write_text(manifest_text(size, threads))
    return path


def bench_sign(root: Path, key: Path, env: dict[str, str]) -> list[Figure]:
    def sign(size: str, threads: int = 4) -> list[str]:
        manifest = _manifest(root, size, threads)
        return [*_cli(), "sign", "-m", str(manifest), "-o", str(root / f"{manifest.stem}.sgx"),
                "--libpal", str(PAL), "-k", str(key), "--date", "2025-01-01"]

    whole_process(sign("256M"), env)  # compiles the bytecode once
    small = Figure("sign 256M", [whole_process(sign("256M"), env) for _ in range(5)])
    records = bytes(eadd_bytes("64G"))
    big = Figure("sign 64G", [], "one sha256 pass over the same EADD records", target=1.4)
    for _ in range(ROUNDS):  # interleaved: the machine's load hits both alike
        big.runs.append(whole_process(sign("64G"), env))
        start = time.perf_counter()
        hashlib.sha256(records).digest()
        big.reference_seconds.append(time.perf_counter() - start)
    del records
    figures = [small, big]
    if os.environ.get("BENCH_THREADS", "1") != "0":
        figures.append(Figure("sign 64G, 65,536 threads",
                              [whole_process(sign("64G", 65536), env)]))
    return figures


@contextlib.contextmanager
def _slim_unsigned(work: Path, key: Path) -> Iterator[tuple[str, str]]:
    """(unsigned custom image, its base's image id) on a slim base built with the
    stand-in Gramine; removed after."""
    from ppml_image.images.base import config
    from ppml_image.images.base.build import build_base
    from ppml_image.images.enclave import custom
    from ppml_image.images.engine.core import connect
    from ppml_image.testing import make_gramine_tree

    stamp = f"bench-cmd-{os.getpid()}"
    base_tag, app_tag = f"ppml-image/base:{stamp}", f"ppml-image/bench-cmd:{stamp}"
    engine = connect()
    tags = [base_tag, app_tag, custom.unsigned_tag(app_tag)]
    try:
        build_base(config.load_config(None, {
            "profile": "slim", "gramine_source": "tree", "tag": base_tag,
            "gramine_path": str(make_gramine_tree(work / "gramine"))}), quiet=True)
        app = work / "app"
        app.mkdir()
        (app / "main.py").write_text("print('hello')\n")
        custom.build_custom(key, base=base_tag, app=app, tag=app_tag, quiet=True)
        base_id = subprocess.run([DOCKER, "image", "inspect", "--format", "{{.Id}}", base_tag],
                                 capture_output=True, text=True, check=True).stdout.strip()
        yield custom.unsigned_tag(app_tag), base_id
    finally:
        for ref in tags:
            with contextlib.suppress(Exception):
                engine.remove_image(ref)


def _raw_export(image: str) -> float:
    container = subprocess.run([DOCKER, "create", image, "/bin/true"], capture_output=True,
                               text=True, check=True).stdout.strip()
    try:
        start = time.perf_counter()
        subprocess.run([DOCKER, "export", container], stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - start
    finally:
        subprocess.run([DOCKER, "rm", "-f", container], capture_output=True, check=False)


def bench_sign_image(work: Path, key: Path, env: dict[str, str]) -> list[Figure]:
    figure = Figure("sign-image (slim, nothing cached)", [],
                    "raw `docker export` of the same image", target=1.3)
    with _slim_unsigned(work, key) as (unsigned, base_id):
        out = f"ppml-image/bench-cmd-signed:{os.getpid()}"
        try:
            for _ in range(ROUNDS):
                figure.reference_seconds.append(_raw_export(unsigned))
                figure.runs.append(whole_process(
                    [*_cli(), "sign-image", unsigned, "--base", base_id, "--key", str(key),
                     "--tag", out, "--date", "2025-01-01"], env))
        finally:
            subprocess.run([DOCKER, "rmi", out], capture_output=True, check=False)
    return [figure]


def _print(figures: list[Figure]) -> None:
    for fig in figures:
        line = f"{fig.name}: median {fig.median:.3f} s over {len(fig.runs)} runs, peak " \
               f"{max(r.max_rss_mb for r in fig.runs):.0f} MB"
        if fig.ratio is not None:
            line += (f"; {fig.reference} {statistics.median(fig.reference_seconds):.3f} s; "
                     f"ratio {fig.ratio:.2f}x (target <= {fig.target}x)")
        print(line)
        middle = sorted(fig.runs, key=lambda r: r.seconds)[len(fig.runs) // 2]
        for name, seconds in middle.phases.items():
            print(f"    {name:42s} {seconds:7.3f} s")
        rest = middle.seconds - sum(middle.phases.values())
        print(f"    {'between phases and exit':42s} {rest:7.3f} s")
        print(f"    {'(whole process)':42s} {middle.seconds:7.3f} s")


def main(argv: list[str]) -> int:
    from ppml_image.sgx.signing.keys import generate_key

    work = Path(tempfile.mkdtemp(prefix="ppml-bench-cmd-"))
    try:
        key = work / "key.pem"
        generate_key(key)
        env = _env(work)
        figures = bench_sign(work, key, env)
        if os.environ.get("BENCH_IMAGES", "1") != "0":
            figures += bench_sign_image(work, key, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "--json" in argv:
        print(json.dumps([f.as_json() for f in figures], indent=2))
    else:
        _print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
