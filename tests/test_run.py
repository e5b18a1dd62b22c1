"""run: the signed image natively (--no-sgx), the SGX checks, and --print."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error, containers_of, run_cli

from ppml_image.images.run import missing_sgx

pytestmark = pytest.mark.docker


def test_run_no_sgx_runs_the_measured_command(custom_image: dict, docker_client) -> None:
    result = run_cli("run", custom_image["image"], "--no-sgx")
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
    assert containers_of(docker_client, result.pid) == []
    # The run's own container is gone too (--rm), whoever else uses the image.
    assert docker_client.api.containers(
        all=True, filters={"ancestor": custom_image["image_id"], "status": "exited"}) == []


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


def test_missing_image_and_unreadable_folder(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("run", "ppml-test/no-such:1", "--no-sgx"),
                          "ppml-test/no-such:1", "not found")
    assert_one_line_error(run_cli("run", "x:1", "--no-sgx", "--keys", tmp_path / "nope"),
                          "--keys folder")
