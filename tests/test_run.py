"""run: the signed image natively (--no-sgx), the SGX checks, and --print."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    assert_one_line_error,
    containers_of,
    engine_events,
    owner_pid,
    run_cli,
)

from ppml_image.images.enclave.run import missing_sgx

pytestmark = pytest.mark.docker
DOCKER_CLI = "/usr/local/bin/docker"


def test_run_no_sgx_runs_the_measured_command(custom_image: dict, docker_client) -> None:
    since = time.time()
    result = run_cli("run", custom_image["image"], "--no-sgx")
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    assert containers_of(docker_client, result.pid) == []
    # The run's own container is gone too (--rm). It is the one created from the
    # image by this session's tag (its temporary container names the image by id).
    runs = [e["Actor"]["ID"] for e in engine_events(docker_client, since, "container", "create")
            if e["Actor"]["Attributes"].get("image") == custom_image["image"]
            and owner_pid(e) is None]
    assert len(runs) == 1, runs
    destroyed = {e["Actor"]["ID"]
                 for e in engine_events(docker_client, since, "container", "destroy")}
    assert runs[0] in destroyed


def test_run_no_sgx_on_the_slim_base_with_a_command(slim_base: dict, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("hello from the data folder\n")
    result = run_cli("run", slim_base["tags"][0], "--no-sgx", "--data", data, "--",
                     "sh", "-c", "cat /ppml/data/input.txt; touch /ppml/data/x || echo ro")
    assert result.returncode == 0, result.stderr
    assert "hello from the data folder" in result.stdout
    assert "ro" in result.stdout.split()  # mounted read-only


def test_exit_code_of_the_command_is_kept(slim_base: dict) -> None:
    result = run_cli("run", slim_base["tags"][0], "--no-sgx", "--", "sh", "-c", "exit 7")
    assert result.returncode == 7


@pytest.mark.skipif(not missing_sgx(), reason="this host has SGX")
def test_sgx_without_devices_names_what_is_missing(custom_image: dict) -> None:
    result = run_cli("run", custom_image["image"])
    assert_one_line_error(result, "/dev/sgx_enclave", "--no-sgx")


def test_print_shows_the_docker_command(custom_image: dict, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    result = run_cli("run", custom_image["image"], "--keys", keys, "--print")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert "--device /dev/sgx_enclave" in line and "--device /dev/sgx_provision" in line
    assert f"{keys}:/ppml/keys:ro" in line
    assert "/var/run/aesmd/aesm.socket" in line


def test_missing_image(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("run", "ppml-test/no-such:1", "--no-sgx"),
                          "ppml-test/no-such:1", "not found")


# --------------------------------------------------------------------------
# run and run --print: one plan, the same container
# --------------------------------------------------------------------------
def _settings(client, container: str) -> dict:
    """HostConfig and Config, with Docker's equivalent spellings of "nothing" merged."""
    attrs = client.api.inspect_container(container)

    def clean(section: dict) -> dict:
        out = {k: v for k, v in section.items() if v not in (None, [], {}, "")}
        if out.get("RestartPolicy") == {"Name": "", "MaximumRetryCount": 0}:
            out["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
        if "Binds" in out:  # the CLI keeps -v options in a set: their order means nothing
            out["Binds"] = sorted(out["Binds"])
        return out

    return {"HostConfig": clean(attrs["HostConfig"]), "Config": clean(attrs["Config"])}


def _cli_create(printed_line: str) -> str:
    args = shlex.split(printed_line)
    assert args[:2] == ["docker", "run"], printed_line
    created = subprocess.run([DOCKER_CLI, "create", *args[2:]], capture_output=True,
                             text=True, check=True)
    return created.stdout.strip()


@pytest.mark.skipif(not Path(DOCKER_CLI).exists(), reason="no docker CLI")
def test_printed_sgx_line_creates_the_container_run_creates(custom_image: dict,
                                                             tmp_path: Path,
                                                             docker_client) -> None:
    from ppml_image.images.enclave.run import plan_run, printed
    from ppml_image.images.engine.core import connect

    keys = tmp_path / "keys"
    keys.mkdir()
    result = run_cli("run", custom_image["image"], "--keys", keys, "--print")
    assert result.returncode == 0, result.stderr
    plan = plan_run(custom_image["image"], sgx=True, keys=keys, check_host=False)
    assert printed(plan) == result.stdout.strip()
    engine = connect()
    ours = engine.create_container(plan)  # what `run` creates, on an SGX host
    theirs = _cli_create(result.stdout)
    try:
        assert _settings(docker_client, ours) == _settings(docker_client, theirs)
    finally:
        for container in (ours, theirs):
            docker_client.api.remove_container(container, force=True)


@pytest.mark.skipif(not Path(DOCKER_CLI).exists(), reason="no docker CLI")
def test_printed_native_line_matches_the_running_container(custom_image: dict,
                                                           tmp_path: Path,
                                                           docker_client) -> None:
    data = tmp_path / "data"
    data.mkdir()
    marker = f"sleep 60 # {os.getpid()}-{time.monotonic_ns()}"
    options = ["run", custom_image["image"], "--no-sgx", "--data", str(data)]
    command = ["--", "sh", "-c", marker]
    args = [*options, *command]
    printed_line = run_cli(*options, "--print", *command).stdout.strip()
    running = subprocess.Popen([sys.executable, "-m", "ppml_image", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    theirs = None
    try:
        ours = _wait_for(docker_client, marker)
        theirs = _cli_create(printed_line)
        assert _settings(docker_client, ours) == _settings(docker_client, theirs)
    finally:
        running.send_signal(signal.SIGTERM)
        running.communicate(timeout=60)
        if theirs:
            docker_client.api.remove_container(theirs, force=True)
    assert running.returncode == 143
    assert _wait_gone(docker_client, marker)


def _find(client, marker: str) -> list[str]:
    return [c["Id"] for c in client.api.containers(all=True)
            if marker in " ".join(c.get("Command", "").split())]


def _wait_for(client, marker: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _find(client, marker)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError("run never started its container")


def _wait_gone(client, marker: str) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not _find(client, marker):
            return True
        time.sleep(0.1)
    return False
