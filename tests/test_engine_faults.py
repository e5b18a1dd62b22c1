"""Engine faults and races (issue 11.7): a private dockerd killed mid-build; concurrent runs.

The engine killed here is our own (:mod:`private_engine`), never the
machine's. Each time the engine dies in the middle of a build: one line
naming the engine (its DOCKER_HOST), a non-zero exit that is not 70 (not
our bug), no tag moved; after a restart the next build succeeds.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ImageJanitor,
    build_custom_cli,
    read_file_from_image,
    run_cli,
    tag_id,
    unique_tag,
)
from private_engine import PrivateEngine
from slow_steps import cli, sleep_marker, sleeping, sleeping_deb, wait_until

from ppml_image.images.engine.context import BuildContext

pytestmark = pytest.mark.docker

SOURCE_DATE = {"SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture(scope="module")
def engine(docker_client, slim_base: dict, os_image: str) -> Iterator[PrivateEngine]:
    """A private dockerd holding the OS image and the slim base (saved from the main one)."""
    before = host_links()
    private = PrivateEngine()
    try:
        private.start()
        private.load_from(docker_client, os_image, slim_base["tags"][0])
        yield private
    finally:
        private.close()
    # The machine's network is not ours: no interface of it (docker0 above
    # all, which ``--bridge none`` would delete) is gone, none of ours stays.
    # Other people's containers come and go meanwhile: their veth pairs are
    # theirs, so they are left out of the comparison.
    after = host_links()
    assert {link for link in before if not link.startswith("veth")} <= after
    assert private.bridge not in after


def host_links() -> set[str]:
    return {link.name for link in Path("/sys/class/net").iterdir()}


def one_line_naming(result: Any, engine: PrivateEngine) -> str:
    """*result*: (exit code, stderr), or anything with returncode and stderr."""
    code, err = result if isinstance(result, tuple) else (result.returncode, result.stderr)
    lines = err.strip().splitlines()
    assert code not in (0, 70), (code, err)
    assert len(lines) == 1 and lines[0].startswith("ppml-image: error: "), err
    assert engine.host in lines[0], lines[0]
    return lines[0]


def kill_during(engine: PrivateEngine, proc: subprocess.Popen[str], marker: str,
                limit: float = 300) -> tuple[int, str]:
    """Kill the engine once *proc*'s build runs the step sleeping with *marker*."""
    wait_until(proc, sleeping(marker), "the sleeping build step", limit=limit)
    engine.kill()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_engine_killed_during_build_custom(engine: PrivateEngine, slim_base: dict,
                                           enclave_key: Path, app_dir: Path) -> None:
    client = engine.client()
    base = slim_base["tags"][0]
    marker = sleep_marker()
    context = BuildContext()
    context.add_bytes("Dockerfile", f"FROM {base}\nONBUILD RUN sleep {marker}\n".encode())
    sleepy, _ = client.images.build(fileobj=context.finish(), custom_context=True, rm=True)
    tag = "ppml-test/job:1"
    before = tag_id(client, base)
    for name in (tag, tag + "-unsigned"):  # tags that exist: they must not move
        client.api.tag(base, *name.split(":"))
    proc = cli("build-custom", "--key", enclave_key, "--base", sleepy.id, "--app", app_dir,
               "--tag", tag, "--json", env=engine.env)
    line = one_line_naming(kill_during(engine, proc, marker), engine)
    print(line)
    engine.start()
    client = engine.client()
    assert tag_id(client, tag) == before and tag_id(client, tag + "-unsigned") == before
    again = build_custom_cli(enclave_key, base, app_dir, tag, env=engine.env)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert tag_id(client, tag) == result["image_id"] != before
    assert tag_id(client, tag + "-unsigned") == result["unsigned_image_id"]


def test_engine_killed_during_build_base(engine: PrivateEngine, slim_base: dict,
                                         gramine_tree: Path, tmp_path: Path) -> None:
    client = engine.client()
    os_image = slim_base["tags"][0]  # has Python already: the first layer is quick
    marker = sleep_marker()
    debs = sleeping_deb(tmp_path, gramine_tree, marker)
    tag = "ppml-test/base:1"
    before = tag_id(client, os_image)
    client.api.tag(os_image, *tag.split(":"))
    proc = cli("build-base", "--profile", "slim", "--os-image", os_image, "--gramine-source",
               "deb-dir", "--gramine-path", debs, "--tag", tag, "--json",
               env={**engine.env, **SOURCE_DATE})
    line = one_line_naming(kill_during(engine, proc, marker, limit=600), engine)
    print(line)
    engine.start()
    client = engine.client()
    assert tag_id(client, tag) == before
    again = run_cli("build-base", "--profile", "slim", "--os-image", os_image,
                    "--gramine-source", "tree", "--gramine-path", gramine_tree, "--tag", tag,
                    "--json", env={**engine.env, **SOURCE_DATE})
    assert again.returncode == 0, again.stderr
    assert tag_id(client, tag) == json.loads(again.stdout)["image_id"] != before


def test_an_engine_that_dies_between_commands(engine: PrivateEngine, slim_base: dict,
                                              enclave_key: Path, app_dir: Path) -> None:
    """No engine at all on the socket (killed, not restarted): one line naming it."""
    engine.kill()
    try:
        result = build_custom_cli(enclave_key, slim_base["tags"][0], app_dir, "x:1",
                                  env=engine.env)
        one_line_naming(result, engine)
    finally:
        engine.start()


# --------------------------------------------------------------------------
# Races: two build-custom runs at once on one base
# --------------------------------------------------------------------------
def test_concurrent_build_custom_runs_give_the_sequential_results(
        slim_base: dict, enclave_key: Path, tmp_path: Path, docker_client,
        janitor: ImageJanitor) -> None:
    apps = {}
    for name in ("a", "b"):
        apps[name] = tmp_path / name
        apps[name].mkdir()
        (apps[name] / "main.py").write_text(f"print('app {name}')\n")
    base = slim_base["tags"][0]

    def tags() -> dict[str, str]:
        made = {name: janitor.track(unique_tag(f"race-{name}")) for name in apps}
        for tag in made.values():
            janitor.track(tag + "-unsigned")
        return made

    alone = tags()
    sequential = {}
    for name, tag in alone.items():
        done = build_custom_cli(enclave_key, base, apps[name], tag)
        assert done.returncode == 0, done.stderr
        sequential[name] = json.loads(done.stdout)
    together = tags()
    procs = {name: cli("build-custom", "--key", enclave_key, "--base", base, "--app",
                       apps[name], "--tag", tag, "--date", "2025-01-31", "--json")
             for name, tag in together.items()}
    concurrent = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
        concurrent[name] = json.loads(out)
    assert sequential["a"]["mr_enclave"] != sequential["b"]["mr_enclave"]
    for name in apps:
        first, second = sequential[name], concurrent[name]
        for key in ("mr_enclave", "mr_signer", "sigstruct", "image_id", "unsigned_image_id"):
            assert first[key] == second[key], (name, key)
        for path in ("/ppml/python-ml.sig", "/ppml/python-ml.manifest.sgx"):
            assert read_file_from_image(docker_client, together[name], path) == \
                read_file_from_image(docker_client, alone[name], path)
        assert tag_id(docker_client, together[name]) == first["image_id"]
        assert tag_id(docker_client, together[name] + "-unsigned") == first["unsigned_image_id"]
