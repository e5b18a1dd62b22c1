"""The full profile: JDK 17 and Spark, built and run for real (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TESTS, build_base_cli, docker_run, run_cli, unique_tag

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def full_base(os_image: str, gramine_tree: Path, janitor) -> dict:
    tag = janitor.track(unique_tag("base-full"))
    result = build_base_cli(tag, gramine_tree, profile="full")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_java_version(full_base: dict, docker_client) -> None:
    out = docker_run(docker_client, full_base["tags"][0], ["java", "-version"], stderr=True)
    assert 'version "17.' in out


def test_spark_local_random_forest(full_base: dict, docker_client) -> None:
    job = TESTS / "data" / "spark_random_forest.py"
    out = docker_run(docker_client, full_base["tags"][0],
                     ["spark-submit", "--master", "local[2]", "/job/job.py"],
                     binds={str(job): "/job/job.py"}, hostname="localhost",
                     environment={"SPARK_LOCAL_IP": "127.0.0.1"})
    accuracy = float(out.split("ACCURACY")[-1].split()[0])
    assert accuracy > 0.9


def test_full_image_labels(full_base: dict) -> None:
    assert full_base["profile"] == "full"
    assert full_base["versions"]["pyspark"] == "4.3.0"
    assert full_base["labels"]["ppml-image.profile"] == "full"


def test_spark_template_custom_image_signs_and_verifies(full_base: dict, enclave_key: Path,
                                                        tmp_path: Path, janitor) -> None:
    """The Spark manifest measures the JDK, Spark's jars and bash on the full base."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text((TESTS / "data" / "spark_random_forest.py").read_text())
    tag = janitor.track(unique_tag("custom-spark"))
    janitor.track(tag + "-unsigned")
    result = run_cli("build-custom", "--key", enclave_key, "--base", full_base["tags"][0],
                     "--app", app, "--manifest", "spark", "--tag", tag, "--release", "--policy",
                     "name-service", "--json")
    assert result.returncode == 0, result.stderr
    signed = json.loads(result.stdout)
    verified = run_cli("verify", tag, "--mr-enclave", signed["mr_enclave"], "--json",
                       "--base", signed["base_image_id"])
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["trusted_files"] > 1000
