"""`make bench` (images part): measuring an image against the engine's raw export.

Measured side by side, interleaved, on the slim base (and the full base with
BENCH_FULL=1, which builds it: about 3 minutes):

1. the engine's raw ``docker export`` of the unsigned custom image to
   /dev/null (the CLI), against ``measure_image`` on the same image with
   nothing cached (what build-custom, sign-image and every CI runner pay):
   every file streamed, parsed and hashed, the manifest finalised and the
   enclave measured. Target: at most 1.2x.
2. ``docker save`` of the same image to /dev/null: the stream that reading
   only the layers above a cached base would need. On the classic image
   store it costs more than the whole export, which is why images are
   measured from the export.
3. build-custom end to end (a first build, and after a one-file change) and
   verify end to end.

Only images this script tags are removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ppml_image.images import attest, config, custom
from ppml_image.images.base import build_base
from ppml_image.images.engine import connect
from ppml_image.images.layout import enclave_layout
from ppml_image.images.measure import measure_image
from ppml_image.sgx.keys import generate_key
from ppml_image.testing import make_gramine_tree

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DOCKER = shutil.which("docker") or "docker"


def _time(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _cli_to_devnull(*args: str) -> None:
    subprocess.run([DOCKER, *args], stdout=subprocess.DEVNULL, check=True)


def raw_export(image: str) -> float:
    container = subprocess.run([DOCKER, "create", image, "/bin/true"], capture_output=True,
                               text=True, check=True).stdout.strip()
    try:
        return _time(lambda: _cli_to_devnull("export", container))
    finally:
        subprocess.run([DOCKER, "rm", "-f", container], capture_output=True, check=False)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def side_by_side(profile: str, unsigned: str) -> None:
    engine = connect()
    info = engine.image(unsigned)
    layout = enclave_layout(info, unsigned)
    raws, ours, saves, cpus = [], [], [], []
    for _ in range(ROUNDS):  # interleaved: the machine's load hits both alike
        raws.append(raw_export(info.id))
        before = _cpu()
        ours.append(_time(lambda: measure_image(engine, info, layout, signed=False)))
        cpus.append(_cpu() - before)
        saves.append(_time(lambda: _cli_to_devnull("save", info.id)))
    ratios = [o / r for o, r in zip(ours, raws, strict=True)]
    size = info.size / 1e6
    print(f"[{profile}] {size:.0f} MB image, {ROUNDS} interleaved rounds:")
    print(f"  raw `docker export` > /dev/null   median {statistics.median(raws):5.2f} s "
          f"(best {min(raws):.2f})")
    print(f"  measure_image, nothing cached     median {statistics.median(ours):5.2f} s "
          f"(best {min(ours):.2f}): {statistics.median(ratios):.2f}x the raw export "
          f"(best round {min(ratios):.2f}x; target <= 1.2x)")
    print(f"  measure_image's own CPU time       median {statistics.median(cpus):5.2f} s (the "
          "rest of its time it waits for the engine; a loaded machine delays both)")
    print(f"  `docker save` > /dev/null          median {statistics.median(saves):5.2f} s: "
          f"{statistics.median(saves) / statistics.median(raws):.2f}x the raw export (the "
          "layer stream alone costs more than measuring the whole export)")


def bench_profile(profile: str, tree: Path, key: Path, app: Path, base_tag: str,
                  app_tag: str) -> None:
    build_base(config.load_config(None, {
        "profile": profile, "gramine_source": "tree", "gramine_path": str(tree),
        "tag": base_tag}), quiet=True)
    (app / "main.py").write_text("print('hello')\n")
    first = _time(lambda: custom.build_custom(key, base=base_tag, app=app, tag=app_tag,
                                              quiet=True))
    (app / "main.py").write_text("print('hello, again')\n")
    again = _time(lambda: custom.build_custom(key, base=base_tag, app=app, tag=app_tag,
                                              quiet=True))
    verify = _time(lambda: attest.verify_image(app_tag))
    side_by_side(profile, custom.unsigned_tag(app_tag))
    print(f"  build-custom: first {first:.1f} s, after a one-file change {again:.1f} s; "
          f"verify {verify:.1f} s (every file read, no cache)")


def main() -> int:
    engine = connect()
    work = Path(tempfile.mkdtemp(prefix="ppml-bench-"))
    stamp = f"bench-{os.getpid()}"
    tags: list[str] = []
    try:
        tree = make_gramine_tree(work / "gramine")
        key = work / "key.pem"
        generate_key(key)
        app = work / "app"
        app.mkdir()
        for profile in ["slim", "full"] if os.environ.get("BENCH_FULL") else ["slim"]:
            base_tag = f"ppml-image/base:{stamp}-{profile}"
            app_tag = f"ppml-image/bench-app:{stamp}-{profile}"
            tags += [base_tag, app_tag, custom.unsigned_tag(app_tag)]
            bench_profile(profile, tree, key, app, base_tag, app_tag)
    finally:
        for ref in tags:
            with contextlib.suppress(Exception):
                engine.remove_image(ref)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
