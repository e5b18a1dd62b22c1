"""Ctrl-C, SIGTERM and kill -9 while a command waits on the engine (issue 11.4, 11.7).

Real signals to real CLI processes, at points of a build that are slow by
construction: a base whose ONBUILD trigger runs ``sleep`` (build-custom's
first build waits on it), a Gramine package whose install script sleeps
(build-base), and images with a 2 GiB (sparse) file (measuring streams
it). Each ``sleep`` has a unique argument, so the test sees the moment the
engine runs it (in /proc) and finds the step's container by it.

Each time: exit 130 (SIGINT) or 143 (SIGTERM), the process gone at once
(the bound below is a liveness bound, not a speed claim: the sleeps last
an hour), no tag made or moved, no container of that run left, no step still
running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    SESSION,
    SESSION_LABEL,
    ImageJanitor,
    build_custom_cli,
    containers_of,
    read_file_from_image,
    remove_labelled_images,
    run_cli,
    tag_id,
    unique_tag,
)
from slow_steps import cli, sleep_marker, sleeping, sleeping_deb, wait_until

from ppml_image.images.engine.context import BuildContext

pytestmark = pytest.mark.docker

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGNALS = pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM],
                                  ids=["SIGINT", "SIGTERM"])
IMAGE_LABEL = "ppml-test.image"  # one test image and what is built on it
LIVENESS = 20.0  # seconds; the steps interrupted here would run for an hour


def interrupt(proc: subprocess.Popen[str], signum: int) -> tuple[int, str, float]:
    """Send *signum*; (exit code, stderr, seconds until the process ended)."""
    proc.send_signal(signum)
    sent = time.monotonic()
    try:
        _, err = proc.communicate(timeout=LIVENESS)
    except subprocess.TimeoutExpired:
        # Where is it stuck? faulthandler (PYTHONFAULTHANDLER, set by cli())
        # prints every thread's stack on SIGABRT.
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        pytest.fail(f"still running {LIVENESS:.0f} s after signal {signum}; its threads:\n"
                    f"{err[-6000:]}")
    seconds = time.monotonic() - sent
    print(f"signal {signum}: exit {proc.returncode} after {seconds:.3f} s")
    return proc.returncode, err, seconds


def containers_running(client, marker: str) -> list[str]:
    """Containers (any state) whose command holds *marker*: the step of our build."""
    found = []
    for container in client.api.containers(all=True):
        if marker in (container.get("Command") or ""):
            found.append(container["Id"])
    return found


def build_image(client, janitor: ImageJanitor, name: str, base: str, steps: list[str],
                files: dict[str, bytes] | None = None) -> str:
    """An image of this session only: its label makes its id (and its children's) ours."""
    tag = janitor.track(unique_tag(name))
    steps = [f"LABEL {SESSION_LABEL}={SESSION} {IMAGE_LABEL}={tag.rsplit(':', 1)[1]}", *steps]
    context = BuildContext()
    for path, data in (files or {}).items():
        context.add_bytes(path, data, 0o755)
    context.add_bytes("Dockerfile", "\n".join([f"FROM {base}", *steps, ""]).encode())
    client.images.build(fileobj=context.finish(), custom_context=True, tag=tag, rm=True,
                        forcerm=True, network_mode="none")
    return tag


@pytest.fixture(scope="module")
def sleeping_base(docker_client, slim_base: dict, janitor: ImageJanitor) -> tuple[str, str]:
    """A ppml base whose ONBUILD trigger sleeps for an hour: (tag, the sleep's marker)."""
    marker = sleep_marker()
    tag = build_image(docker_client, janitor, "base-sleeps", slim_base["image_id"],
                      [f"ONBUILD RUN sleep {marker}"])
    return tag, marker


@pytest.fixture(scope="module")
def big_images(docker_client, slim_base: dict, custom_image: dict,
               janitor: ImageJanitor) -> Iterator[tuple[str, str]]:
    """(a base, an unsigned image) holding a 2 GiB sparse file: seconds of export.

    One file of that size costs the engine a while to commit, so both share
    it: the unsigned image is the big base with the custom image's /ppml.
    Removed with what was built on them when the module ends, not the
    session: other tests read every recent image.
    """
    base = build_image(docker_client, janitor, "big-base", slim_base["image_id"],
                       ["RUN truncate -s 2G /opt/big-sparse-file"])
    unsigned = build_image(docker_client, janitor, "big-unsigned", base, [
        f"COPY --from={custom_image['unsigned_image_id']} /ppml /ppml", "WORKDIR /ppml",
        'CMD ["gramine-sgx", "python-ml"]', "LABEL ppml-image.signed=false"])
    yield base, unsigned
    for tag in (unsigned, base):
        remove_labelled_images(docker_client, f"{IMAGE_LABEL}={tag.rsplit(':', 1)[1]}")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def streaming(client, proc: subprocess.Popen[str]) -> Callable[[], bool]:
    """True once one temporary container of *proc* has been there for a CPU second of
    its work: hashing the export (short-lived containers that read one file never get
    there, and socket reads do not show in /proc/PID/io)."""
    seen: dict[str, float] = {}

    def ready() -> bool:
        held = containers_of(client, proc.pid)
        for container in held:
            seen.setdefault(container, cpu_seconds(proc.pid))
        return any(cpu_seconds(proc.pid) - seen[c] > 1.0 for c in held)

    return ready


def assert_nothing_left(client, pid: int, tags: list[str], before: dict[str, str | None],
                        marker: str | None = None) -> None:
    assert containers_of(client, pid) == []
    for tag in tags:
        assert tag_id(client, tag) == before.get(tag), f"{tag} moved"
    if marker is not None:
        assert containers_running(client, marker) == []
        assert not sleeping(marker)()


# --------------------------------------------------------------------------
# While waiting on a build
# --------------------------------------------------------------------------
@SIGNALS
def test_signal_while_build_custom_waits_on_its_build(
        signum: int, sleeping_base: tuple[str, str], enclave_key: Path, app_dir: Path,
        docker_client) -> None:
    base, marker = sleeping_base
    tag = unique_tag("custom-int")
    proc = cli("build-custom", "--key", enclave_key, "--base", base, "--app", app_dir,
               "--tag", tag)
    wait_until(proc, sleeping(marker), "the base's sleeping ONBUILD step")
    code, err, _ = interrupt(proc, signum)
    assert code == EXIT[signum], err
    assert err.strip().splitlines()[-1] in ("ppml-image: error: interrupted",
                                            "ppml-image: error: terminated"), err
    assert_nothing_left(docker_client, proc.pid, [tag, tag + "-unsigned"], {}, marker)


@SIGNALS
def test_signal_while_build_base_waits_on_its_build(
        signum: int, tmp_path: Path, gramine_tree: Path, slim_base: dict, os_image: str,
        docker_client) -> None:
    marker = sleep_marker()
    debs = sleeping_deb(tmp_path, gramine_tree, marker)
    tag = slim_base["tags"][0]  # an existing tag: it must not move
    before = {tag: tag_id(docker_client, tag)}
    proc = cli("build-base", "--profile", "slim", "--gramine-source", "deb-dir",
               "--gramine-path", debs, "--tag", tag, env={"SOURCE_DATE_EPOCH": "1700000000"})
    wait_until(proc, sleeping(marker), "the package's sleeping install script", limit=600)
    code, err, _ = interrupt(proc, signum)
    assert code == EXIT[signum], err
    assert_nothing_left(docker_client, proc.pid, [tag], before, marker)


# --------------------------------------------------------------------------
# While streaming an image's files out of the engine
# --------------------------------------------------------------------------
@SIGNALS
def test_signal_while_build_custom_measures(signum: int, big_images: tuple[str, str],
                                            enclave_key: Path, app_dir: Path,
                                            docker_client) -> None:
    base = big_images[0]
    tag = unique_tag("custom-int")
    proc = cli("build-custom", "--key", enclave_key, "--base", base, "--app", app_dir,
               "--tag", tag)
    wait_until(proc, streaming(docker_client, proc), "streaming the unsigned image")
    code, err, _ = interrupt(proc, signum)
    assert code == EXIT[signum], err
    assert_nothing_left(docker_client, proc.pid, [tag, tag + "-unsigned"], {})


@SIGNALS
def test_signal_while_sign_image_measures(signum: int, big_images: tuple[str, str],
                                          second_key: Path, docker_client) -> None:
    unsigned = big_images[1]
    tag = unique_tag("signed-int")
    proc = cli("sign-image", unsigned, "--key", second_key, "--tag", tag, "--base",
               big_images[0])
    wait_until(proc, streaming(docker_client, proc), "streaming the unsigned image")
    code, err, _ = interrupt(proc, signum)
    assert code == EXIT[signum], err
    assert_nothing_left(docker_client, proc.pid, [tag, unsigned],
                        {unsigned: tag_id(docker_client, unsigned)})


# --------------------------------------------------------------------------
# At any moment: signals spread over a whole run
# --------------------------------------------------------------------------
def test_signals_at_any_point_of_build_custom_and_sign_image(
        slim_base: dict, enclave_key: Path, second_key: Path, app_dir: Path, docker_client,
        janitor: ImageJanitor) -> None:
    """Whatever the moment: exit 0 with both tags, or 130/143 with neither; no container."""
    reference = unique_tag("custom-any")
    janitor.track(reference)
    janitor.track(reference + "-unsigned")
    started = time.monotonic()
    done = build_custom_cli(enclave_key, slim_base["tags"][0], app_dir, reference)
    assert done.returncode == 0, done.stderr
    whole = time.monotonic() - started
    expected = json.loads(done.stdout)
    outcomes = []
    for index, fraction in enumerate((0.15, 0.35, 0.55, 0.75, 0.95)):
        signum = (signal.SIGINT, signal.SIGTERM)[index % 2]
        for command in ("build-custom", "sign-image"):
            tag = janitor.track(unique_tag("custom-any"))
            janitor.track(tag + "-unsigned")
            if command == "build-custom":
                proc = cli("build-custom", "--key", enclave_key, "--base",
                           slim_base["tags"][0], "--app", app_dir, "--tag", tag,
                           "--date", "2025-01-31", "--json")
                tags = [tag, tag + "-unsigned"]
            else:
                proc = cli("sign-image", expected["unsigned_image"], "--key", second_key,
                           "--tag", tag, "--date", "2025-01-31", "--json", "--base",
                           expected["base_image_id"])
                tags = [tag]
            time.sleep(whole * fraction)
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=600)
            outcomes.append((command, fraction, proc.returncode))
            assert containers_of(docker_client, proc.pid) == []
            if proc.returncode == 0:
                result = json.loads(out)
                assert result["mr_enclave"] == expected["mr_enclave"]
                assert all(tag_id(docker_client, t) is not None for t in tags)
                assert read_file_from_image(docker_client, tag, "/ppml/python-ml.sig") == \
                    read_file_from_image(docker_client, result["image_id"],
                                         "/ppml/python-ml.sig")
            else:
                # Before the CLI installs its handlers (interpreter start-up), the
                # signal's default action ends it: the shell shows 128+N all the same.
                assert proc.returncode in (EXIT[signum], -signum), err
                assert all(tag_id(docker_client, t) is None for t in tags), (command, err)
    print("outcomes:", outcomes)
    assert any(code != 0 for _, _, code in outcomes), "no signal landed before the end"


# --------------------------------------------------------------------------
# kill -9: nothing can clean up; the engine and the next run must
# --------------------------------------------------------------------------
def test_kill_9_during_the_build_leaves_no_container_and_no_tag(
        sleeping_base: tuple[str, str], enclave_key: Path, app_dir: Path,
        docker_client) -> None:
    base, marker = sleeping_base
    tag = unique_tag("custom-kill")
    proc = cli("build-custom", "--key", enclave_key, "--base", base, "--app", app_dir,
               "--tag", tag)
    wait_until(proc, sleeping(marker), "the base's sleeping ONBUILD step")
    proc.kill()
    proc.communicate()
    # The engine cancels a build whose client has gone: its step container goes.
    deadline = time.monotonic() + 60
    while (containers_running(docker_client, marker) or sleeping(marker)()) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert_nothing_left(docker_client, proc.pid, [tag, tag + "-unsigned"], {}, marker)


def test_kill_9_while_measuring_leaves_no_tag_and_the_next_run_cleans_up(
        big_images: tuple[str, str], enclave_key: Path, app_dir: Path, custom_image: dict,
        docker_client) -> None:
    base = big_images[0]
    tag = unique_tag("custom-kill")
    proc = cli("build-custom", "--key", enclave_key, "--base", base, "--app", app_dir,
               "--tag", tag)
    wait_until(proc, streaming(docker_client, proc), "streaming the unsigned image")
    proc.kill()
    proc.communicate()
    left = containers_of(docker_client, proc.pid)
    # kill -9: its temporary containers stay (the image's, and the pinned
    # base's when its reading beside the image has begun)...
    assert 1 <= len(left) <= 2, left
    for name in (tag, tag + "-unsigned"):
        assert tag_id(docker_client, name) is None
    later = run_cli("inspect", custom_image["image"])  # ...until the next run
    assert later.returncode == 0, later.stderr
    assert containers_of(docker_client, proc.pid) == []
