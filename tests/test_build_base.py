"""build-base on a real Docker engine: the slim image, built and run for real."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import (
    assert_one_line_error,
    build_base_cli,
    docker_run,
    gramine_debs,
    read_file_from_image,
    unique_tag,
)

import ppml_image

pytestmark = pytest.mark.docker

TRAIN = """
import lightgbm as lgb, sklearn
from sklearn.datasets import make_classification
X, y = make_classification(n_samples=300, n_features=8, random_state=0)
model = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
print("accuracy", model.score(X, y))
"""


def _checkout_revision() -> str:
    """The git commit of the ppml-image that built the image, or "unknown" outside git."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False, cwd=Path(ppml_image.__file__).parent)
    if head.returncode != 0:
        return "unknown"
    revision = head.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", revision), revision
    return revision


def test_slim_image_trains_lightgbm(slim_base: dict, docker_client) -> None:
    out = docker_run(docker_client, slim_base["tags"][0], ["python3", "-c", TRAIN])
    accuracy = float(out.split()[-1])
    assert accuracy > 0.9


def _checkout_revision() -> str:
    """The commit of the checkout the package runs from ("unknown" outside a checkout)."""
    import ppml_image

    found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                           cwd=Path(ppml_image.__file__).parent, check=False)
    revision = found.stdout.strip()
    if found.returncode != 0:
        return "unknown"
    assert len(revision) == 40, revision
    return revision


def test_labels_and_recorded_gramine_paths(slim_base: dict, docker_client) -> None:
    labels = docker_client.images.get(slim_base["image_id"]).labels
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["org.opencontainers.image.title"] == "ppml-image base (slim)"
    assert labels["org.opencontainers.image.revision"] == _checkout_revision()
    assert labels["ppml-image.gramine.libpal"] == \
        "/usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so"
    assert labels["ppml-image.version.lightgbm"] == "4.7.0"
    assert slim_base["versions"]["scikit-learn"] == "1.9.1"
    info = json.loads(read_file_from_image(docker_client, slim_base["tags"][0],
                                           "/etc/ppml-image/base.json"))
    assert info["gramine"]["libsysdb"] == "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
    assert info["python_packages"]["lightgbm"] == "4.7.0"
    assert info["python"]["paths"]["stdlib"] == "/usr/lib/python3.11"
    listing = docker_run(docker_client, slim_base["tags"][0],
                         ["ls", "/usr/lib/x86_64-linux-gnu/gramine/sgx/"])
    assert "libpal.so" in listing


def test_no_caches_wheels_or_build_tools_left(slim_base: dict, docker_client) -> None:
    script = ("find / -xdev \\( -name '*.whl' -o -name '*.deb' \\) -print; "
              "ls -A /var/lib/apt/lists /var/cache/apt/archives 2>/dev/null "
              "| grep -v -x -e partial -e lock -e auxfiles -e '/var/.*:' -e ''; "
              "ls -A /root/.cache 2>/dev/null; "
              "command -v gcc; true")
    out = docker_run(docker_client, slim_base["tags"][0], ["sh", "-c", script])
    assert out.strip() == "", out


def test_no_spark_or_jdk_in_slim(slim_base: dict, docker_client) -> None:
    out = docker_run(docker_client, slim_base["tags"][0],
                     ["sh", "-c", "command -v java spark-submit; python3 -c 'import pyspark' "
                      "2>&1 | tail -1; true"])
    assert "java" not in out.split("\n")[0]
    assert "No module named 'pyspark'" in out


def test_unchanged_rebuild_is_the_same_image(slim_base: dict, gramine_tree: Path,
                                             janitor) -> None:
    tag = janitor.track(unique_tag("base-slim-again"))
    result = build_base_cli(tag, gramine_tree)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["image_id"] == slim_base["image_id"]


def test_failed_build_moves_no_tag(slim_base: dict, gramine_tree: Path, tmp_path: Path,
                                   docker_client) -> None:
    tag = slim_base["tags"][0]
    config = tmp_path / "ppml-image.toml"
    config.write_text('[base]\nextra_apt_packages = ["ppml-no-such-package"]\n')
    result = build_base_cli(tag, gramine_tree, "--config", str(config))
    assert_one_line_error(result, "build failed at step", "ppml-no-such-package")
    assert docker_client.images.get(tag).id == slim_base["image_id"]


def test_deb_dir_source_installs_gramine_packages(os_image: str, gramine_tree: Path,
                                                  tmp_path: Path, janitor, docker_client) -> None:
    """A Gramine .deb (made here from the stand-in tree) installed from a local folder."""
    debs = gramine_debs(gramine_tree, tmp_path)
    tag = janitor.track(unique_tag("base-debs"))
    result = build_base_cli(tag, debs, source="deb-dir")
    assert result.returncode == 0, result.stderr
    info = json.loads(read_file_from_image(docker_client, tag, "/etc/ppml-image/base.json"))
    assert info["gramine"]["version"] == "0.0+standin"
    assert info["gramine"]["source"] == "deb-dir"
    leftovers = docker_run(docker_client, tag, ["sh", "-c", "find / -xdev -name '*.deb'"])
    assert leftovers.strip() == ""


def test_missing_os_image_says_how_to_bootstrap(gramine_tree: Path) -> None:
    result = build_base_cli(unique_tag("never"), gramine_tree, "--os-image",
                            "ppml-test/no-such-os:1")
    assert_one_line_error(result, "ppml-test/no-such-os:1", "bootstrap-os")


