"""Temporary containers: removed on Ctrl-C and SIGTERM; after kill -9, by the next run.

The next run removes only containers whose owner is certainly gone: never a
concurrent run's (same machine, process alive) nor another machine's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from ppml_image.images.engine.core import (
    TEMPORARY_LABEL,
    _process_start,
    _this_machine,
    owner_is_gone,
    owner_label,
)


def label_for(pid: int, **changes: object) -> str:
    owner: dict[str, object] = {**_this_machine(), "pid": pid, "start": _process_start(pid)}
    owner.update(changes)
    return json.dumps(owner)


# --------------------------------------------------------------------------
# Who owns a container (pure)
# --------------------------------------------------------------------------
def test_this_process_is_alive() -> None:
    assert not owner_is_gone(owner_label())


def test_an_ended_process_is_gone() -> None:
    child = subprocess.Popen(["sleep", "30"])
    label = label_for(child.pid)
    assert not owner_is_gone(label)
    child.kill()
    child.wait()
    assert owner_is_gone(label)


def test_a_reused_pid_is_not_the_owner() -> None:
    assert owner_is_gone(label_for(os.getpid(), start="1"))


@pytest.mark.parametrize("changes", [{"host": "another-machine"}, {"pidns": "pid:[1]"},
                                     {"boot": ""}])
def test_owners_elsewhere_are_left_alone(changes: dict[str, object]) -> None:
    assert not owner_is_gone(label_for(os.getpid(), start="1", **changes))


def test_another_boot_of_this_machine_is_gone() -> None:
    assert owner_is_gone(label_for(os.getpid(), boot="00000000-0000-0000-0000-000000000000"))


@pytest.mark.parametrize("label", ["", "garbage", "[]", '{"pid": 1}', "null"])
def test_unreadable_labels_are_left_alone(label: str) -> None:
    assert not owner_is_gone(label)


# --------------------------------------------------------------------------
# On the engine: signals and kill -9
# --------------------------------------------------------------------------
def _start_verify(image: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_IMAGE_")}
    return subprocess.Popen([sys.executable, "-m", "ppml_image", "verify", image, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _ours(client, pid: int) -> list[str]:
    found = client.api.containers(all=True, filters={"label": TEMPORARY_LABEL})
    return [c["Id"] for c in found
            if json.loads(c["Labels"][TEMPORARY_LABEL] or "{}").get("pid") == pid]


def _wait_for_container(client, proc: subprocess.Popen[str], count: int = 1) -> list[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        held = _ours(client, proc.pid)
        if len(held) >= count:
            return held
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("verify never created its temporary container")


@pytest.mark.docker
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_remove_the_temporary_container(signum: int, code: int, custom_image: dict,
                                                docker_client) -> None:
    proc = _start_verify(custom_image["image"])
    _wait_for_container(docker_client, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert _ours(docker_client, proc.pid) == []


@pytest.mark.docker
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_remove_both_containers_of_a_pinned_verify(signum: int, code: int,
                                                           custom_image: dict,
                                                           docker_client) -> None:
    """With a pinned base, the image and the base are read at once (two temporary
    containers, one of them a helper thread's): a signal removes both."""
    proc = _start_verify(custom_image["image"], "--base", custom_image["base_image_id"])
    assert len(_wait_for_container(docker_client, proc, count=2)) == 2
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert _ours(docker_client, proc.pid) == []


@pytest.mark.docker
def test_kill_9_leftovers_are_removed_by_the_next_run(custom_image: dict,
                                                      docker_client) -> None:
    proc = _start_verify(custom_image["image"])
    left = _wait_for_container(docker_client, proc)
    proc.kill()
    proc.wait()
    assert _ours(docker_client, proc.pid) == left  # kill -9: nothing could remove it
    # A concurrent run's container (its owner is alive) must survive the sweep.
    alive = subprocess.Popen(["sleep", "300"])
    concurrent = docker_client.api.create_container(
        custom_image["image"], ["true"], labels={TEMPORARY_LABEL: label_for(alive.pid)})["Id"]
    try:
        result = run_cli("inspect", custom_image["image"])
        assert result.returncode == 0, result.stderr
        assert _ours(docker_client, proc.pid) == []
        assert _ours(docker_client, alive.pid) == [concurrent]
    finally:
        alive.kill()
        alive.wait()
        docker_client.api.remove_container(concurrent, force=True)
