"""build-base refuses an incomplete Gramine before it builds anything, naming what is missing.

Trees and folders of .deb files are checked on the host (no engine is
reached: DOCKER_HOST points nowhere); a .deb compressed with zstd, which the
standard library cannot list, is caught by the build step after Gramine's
install, on a real engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import (
    OS_IMAGE,
    assert_one_line_error,
    gramine_debs,
    run_cli,
    unique_tag,
)

from ppml_image.images.base import gramine_install
from ppml_image.testing import make_gramine_tree

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
PKGLIB = "usr/lib/x86_64-linux-gnu/gramine"


def _tree(tmp_path: Path, *, drop: str = "", not_executable: str = "") -> Path:
    tree = make_gramine_tree(tmp_path / "tree")
    if drop:
        (tree / drop).unlink()
    if not_executable:
        (tree / not_executable).chmod(0o644)
    return tree


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _build_base(source: str, path: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("build-base", "--profile", "slim", "--gramine-source", source,
                   "--gramine-path", path, "--tag", "ppml-test/never:1", env=NO_ENGINE)


def test_the_stand_in_tree_is_complete(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    gramine_install.check_tree(tree)
    gramine_install.check_debs(gramine_debs(tree, _folder(tmp_path / "d")))


@pytest.mark.parametrize("missing", [
    "usr/bin/gramine-sgx",
    f"{PKGLIB}/sgx/libpal.so",
    f"{PKGLIB}/libsysdb.so",
])
def test_a_tree_without_a_required_file_is_refused(tmp_path: Path, missing: str) -> None:
    tree = _tree(tmp_path, drop=missing)
    result = _build_base("tree", tree)
    assert_one_line_error(result, str(tree), "incomplete Gramine install tree", missing)
    assert result.returncode == 2
    assert "engine" not in result.stderr  # refused before any engine work


def test_a_launcher_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    tree = _tree(tmp_path, not_executable="usr/bin/gramine-sgx")
    assert_one_line_error(_build_base("tree", tree), "usr/bin/gramine-sgx (not executable)")


@pytest.mark.parametrize("missing", ["usr/bin/gramine-sgx", f"{PKGLIB}/sgx/libpal.so"])
def test_debs_without_a_required_file_are_refused(tmp_path: Path, missing: str) -> None:
    debs = gramine_debs(_tree(tmp_path, drop=missing), _folder(tmp_path / "d"))
    result = _build_base("deb-dir", debs)
    assert_one_line_error(result, str(debs), "do not install a complete Gramine", "/" + missing)
    assert result.returncode == 2


def test_the_files_of_several_debs_add_up(tmp_path: Path) -> None:
    """The launcher in one package and the libraries in another is a complete install."""
    tree = _tree(tmp_path)
    tools = tmp_path / "tools-tree"
    (tools / "usr/bin").mkdir(parents=True)
    shutil.move(tree / "usr/bin/gramine-sgx", tools / "usr/bin/gramine-sgx")
    first = gramine_debs(tree, _folder(tmp_path / "a"))
    second = gramine_debs(tools, _folder(tmp_path / "b"), version="0.0+tools")
    for deb in second.iterdir():
        shutil.move(deb, first / deb.name.replace("gramine_", "gramine-tools_"))
    gramine_install.check_debs(first)
    tools_files = gramine_install.deb_files(next(first.glob("gramine-tools_*.deb")))
    assert tools_files is not None and "usr/bin/gramine-sgx" in tools_files


def test_a_file_that_is_not_a_deb_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "debs"
    folder.mkdir()
    (folder / "gramine.deb").write_bytes(b"PK\x03\x04 not an ar archive")
    assert_one_line_error(_build_base("deb-dir", folder), "gramine.deb", "not a .deb package")


def test_a_truncated_deb_is_refused(tmp_path: Path) -> None:
    debs = gramine_debs(_tree(tmp_path), _folder(tmp_path / "d"))
    deb = next(debs.iterdir())
    deb.write_bytes(deb.read_bytes()[:200])
    result = _build_base("deb-dir", debs)
    assert result.returncode in (1, 2)
    assert_one_line_error(result, deb.name)


def _zstd_debs(tree: Path, folder: Path) -> Path:
    folder.mkdir()
    package = folder / "pkg"
    subprocess.run(["cp", "-a", f"{tree}/.", str(package)], check=True)
    (package / "DEBIAN").mkdir()
    (package / "DEBIAN/control").write_text(
        "Package: gramine\nVersion: 0.0+zstd\nArchitecture: amd64\n"
        "Maintainer: ppml-image tests <tests@invalid>\nDescription: stand-in, not Gramine\n")
    debs = folder / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "-Zzstd", "--root-owner-group", "--build", str(package),
                    str(debs / "gramine_0.0+zstd_amd64.deb")], check=True, capture_output=True)
    return debs


def test_a_zstd_deb_is_left_to_the_build_check(tmp_path: Path) -> None:
    debs = _zstd_debs(_tree(tmp_path, drop="usr/bin/gramine-sgx"), tmp_path / "d")
    assert gramine_install.deb_files(next(debs.iterdir())) is None
    gramine_install.check_debs(debs)  # cannot tell here: no refusal


@pytest.mark.docker
def test_the_build_step_names_what_the_install_lacks(tmp_path: Path, slim_base: dict,
                                                     janitor) -> None:
    """A zstd .deb without the launcher: the build stops right after Gramine's layer.

    The slim base was built from the same OS image, so the layers before
    Gramine's come from the engine's cache.
    """
    debs = _zstd_debs(_tree(tmp_path, drop="usr/bin/gramine-sgx"), tmp_path / "d")
    tag = janitor.track(unique_tag("incomplete-gramine"))
    result = run_cli("build-base", "--profile", "slim", "--os-image", OS_IMAGE,
                     "--gramine-source", "deb-dir", "--gramine-path", debs, "--tag", tag,
                     "--json")  # no progress lines: a slow step on a busy engine prints some
    assert_one_line_error(result, str(debs), "the Gramine install lacks",
                          "gramine-sgx (an executable on PATH)")
    line = result.stderr.strip()
    assert line.endswith("the Gramine install lacks gramine-sgx (an executable on PATH)"), line
    assert json.loads(result.stdout)["ok"] is False
