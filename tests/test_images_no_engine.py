"""Image commands' checks that need no engine: they run in `make test-fast`.

Each command here is given a Docker socket where nothing answers, so a check
that only happened after connecting to the engine would fail differently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error, build_custom_cli, run_cli

from ppml_image.images.base.build import render_dockerfile
from ppml_image.images.base.config import BaseConfig

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.mark.parametrize("args,fragment", [
    (["--profile", "huge"], "profile"),
    (["--gramine-source", "tree"], "needs --gramine-path"),
    (["--gramine-source", "tree", "--gramine-path", "/nonexistent"], "does not exist"),
])
def test_bad_options(args: list[str], fragment: str) -> None:
    assert_one_line_error(run_cli("build-base", *args, env=NO_ENGINE), fragment)


def test_config_file_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[base]\nprofil = "slim"\n')
    assert_one_line_error(run_cli("build-base", "--config", config, env=NO_ENGINE), str(config),
                          "profil")


@pytest.mark.parametrize("source", ["apt", "deb-dir", "tree"])
@pytest.mark.parametrize("profile", ["full", "slim"])
def test_dockerfile_for_each_source_and_profile(source: str, profile: str) -> None:
    config = BaseConfig(profile=profile, gramine_source=source)
    text = render_dockerfile(config, file_server="http://127.0.0.1:1", ml_digest="m" * 64,
                             spark_digest="s" * 64, debs=["gramine_1.9_amd64.deb"],
                             debs_digest="d" * 64)
    assert ("packages.gramineproject.io" in text) == (source == "apt")
    assert ("gramine_1.9_amd64.deb" in text) == (source == "deb-dir")
    assert ("COPY gramine-tree/ /" in text) == (source == "tree")
    assert ("openjdk-17" in text) == (profile == "full")
    assert ("/spark/requirements.txt" in text) == (profile == "full")
    # The Python list is the last heavy layer: changing it cannot re-run the OS or JDK.
    assert text.index("/ml/requirements.txt") > text.index("Layer 3: Gramine")
    assert "m" * 64 in text  # the requirements hash is part of the cache key


def test_run_with_an_unreadable_folder(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("run", "x:1", "--no-sgx", "--keys", tmp_path / "nope",
                                  env=NO_ENGINE), "--keys folder")


def test_engine_that_does_not_answer(enclave_key: Path, app_dir: Path) -> None:
    result = build_custom_cli(enclave_key, "x", app_dir, "y:1",
                              env=NO_ENGINE)
    assert_one_line_error(result, "no Docker engine answers", "/nonexistent/docker.sock")
