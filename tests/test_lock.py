"""Lock files for base builds (issue 12, point 4): format, validation, rendering.

A lock file comes from elsewhere (a repository, a colleague, an attacker):
its values end up in a Dockerfile RUN line, so every field is checked
against its grammar and every value reaches the shell quoted.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import UsageError
from ppml_image.images.base import lock as lk
from ppml_image.images.base.build import render_dockerfile
from ppml_image.images.base.config import BaseConfig
from ppml_image.testing import make_gramine_tree

ID = "sha256:" + "ab" * 32
GOOD = {
    "format": "ppml-image/base-lock/1",
    "tool_version": "0.1.0",
    "image_id": "sha256:" + "cd" * 32,
    "profile": "slim",
    "os_image": {"ref": "debian:bookworm", "id": ID},
    "debian_mirror": "http://snapshot.debian.org/archive/debian/20250101T000000Z/",
    "debian_packages": {
        "bash": {"version": "5.2.15-2+b2", "architecture": "amd64", "layer": "os"},
        "python3": {"version": "3.11.2-1+b1", "architecture": "amd64", "layer": "system"},
        "libfoo1": {"version": "1:2.0~rc1+dfsg-3", "architecture": "amd64", "layer": "system"},
        "tzdata": {"version": "2024a-0+deb12u1", "architecture": "all", "layer": "system"},
    },
    "wheels": {
        "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl": {
            "name": "numpy", "version": "2.4.6", "sha256": "0" * 64, "group": "ml",
            "built_from_sdist": False},
        "pyspark-4.3.0-py2.py3-none-any.whl": {
            "name": "pyspark", "version": "4.3.0", "sha256": "1" * 64, "group": "spark",
            "built_from_sdist": True},
    },
    "gramine": {"source": "tree",
                "inputs": {"usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so": "2" * 64,
                           "usr/lib/x86_64-linux-gnu/gramine/runtime/glibc/libc.so":
                               "symlink:libc.so.6"},
                "files": {"sgx/libpal.so": "2" * 64}},
}


def write(tmp_path: Path, doc: object, name: str = "base.lock") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def changed(path: str, value: object) -> dict:
    """GOOD with the field at *path* ("a|b|c") set to *value* (None: removed)."""
    doc = json.loads(json.dumps(GOOD))
    *parents, last = path.split("|")
    node = doc
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


def test_a_lock_round_trips(tmp_path: Path) -> None:
    lock = lk.read_lock(write(tmp_path, GOOD))
    assert lock.packages["libfoo1"] == lk.DebPackage("1:2.0~rc1+dfsg-3", "amd64", "system")
    assert lock.pins("system") == ["libfoo1=1:2.0~rc1+dfsg-3", "python3=3.11.2-1+b1",
                                   "tzdata=2024a-0+deb12u1"]
    assert lock.group("spark")[0].built is True
    assert json.loads(lock.dumps()) == GOOD


HOSTILE = [
    ("not json", "{", "not a JSON lock file"),
    ("json but a list", "[]", "the lock is missing or not an object"),
    ("deep nesting", "[" * 200_000 + "]" * 200_000, "not a JSON lock file"),
    ("other format", changed("format", "ppml-image/base-lock/2"), "format"),
    ("no format", changed("format", None), 'no "format" field'),
    ("unknown key", {**GOOD, "extra": 1}, "unknown key(s): extra"),
    ("shell in a name", changed("debian_packages|bash; rm -rf ~", GOOD["debian_packages"]["bash"]),
     "is not a Debian package name"),
    ("command substitution", changed("debian_packages|$(reboot)",
                                     GOOD["debian_packages"]["bash"]),
     "is not a Debian package name"),
    ("option as a name", changed("debian_packages|-oDebug::pkgProblemResolver=1",
                                 GOOD["debian_packages"]["bash"]),
     "is not a Debian package name"),
    ("upper case name", changed("debian_packages|Bash", GOOD["debian_packages"]["bash"]),
     "is not a Debian package name"),
    ("quote in a version", changed("debian_packages|bash|version", "5.2'; reboot; '"),
     "is not a Debian version"),
    ("space in a version", changed("debian_packages|bash|version", "5.2 other=1"),
     "is not a Debian version"),
    ("newline in a version", changed("debian_packages|bash|version", "5.2\nRUN id"),
     "is not a Debian version"),
    ("backtick in a version", changed("debian_packages|bash|version", "5.2`id`"),
     "is not a Debian version"),
    ("version ending in -", changed("debian_packages|bash|version", "5.2-"),
     "is not a Debian version"),
    ("version not starting with a digit", changed("debian_packages|bash|version", "v5"),
     "is not a Debian version"),
    ("number as a version", changed("debian_packages|bash|version", 5),
     "is missing or not a short text"),
    ("bad architecture", changed("debian_packages|bash|architecture", "amd64 evil"),
     "is not a Debian architecture"),
    ("bad layer", changed("debian_packages|bash|layer", "kernel"), "not one of os"),
    ("wheel path", changed("wheels|../../etc/passwd.whl", GOOD["wheels"][
        "pyspark-4.3.0-py2.py3-none-any.whl"]), "is not a wheel file name"),
    ("wheel name mismatch", changed("wheels|pyspark-4.3.0-py2.py3-none-any.whl|name", "numpy"),
     "do not match the wheel file name"),
    ("short sha256", changed("wheels|pyspark-4.3.0-py2.py3-none-any.whl|sha256", "ab"),
     "is not 64 lowercase hex digits"),
    ("upper sha256", changed("wheels|pyspark-4.3.0-py2.py3-none-any.whl|sha256", "A" * 64),
     "is not 64 lowercase hex digits"),
    ("string boolean", changed("wheels|pyspark-4.3.0-py2.py3-none-any.whl|built_from_sdist",
                               "yes"), "is not true or false"),
    ("bad group", changed("wheels|pyspark-4.3.0-py2.py3-none-any.whl|group", "x"),
     "not one of ml, spark"),
    ("dot-dot in gramine", changed("gramine|inputs|../../etc/shadow", "2" * 64),
     "is not a clean relative path"),
    ("absolute gramine path", changed("gramine|files|/etc/shadow", "2" * 64),
     "is not a clean relative path"),
    ("bad gramine hash", changed("gramine|files|sgx/libpal.so", "md5:abc"),
     "is not a sha256"),
    ("bad gramine source", changed("gramine|source", "curl|sh"), "not one of apt"),
    ("not an image id", changed("os_image|id", "debian:bookworm"), "is not an image id"),
    ("mirror with a quote", changed("debian_mirror", "http://x/'; id; '"),
     "is not a plain http(s) URL"),
    ("ftp mirror", changed("debian_mirror", "ftp://deb.debian.org/debian"),
     "is not a plain http(s) URL"),
    ("huge text", changed("tool_version", "x" * 5000), "is missing or not a short text"),
    ("NUL in text", changed("os_image|ref", "debian\0x"), "is missing or not a short text"),
    ("bad profile", changed("profile", "fat"), "not one of full, slim"),
]


@pytest.mark.parametrize("label, doc, fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_locks_are_one_line_errors(tmp_path: Path, label: str, doc: object,
                                           fragment: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(lk.LockError) as caught:
        lk.read_lock(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert fragment in message, (fragment, message)


def test_a_huge_lock_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "base.lock"
    with open(path, "wb") as handle:
        handle.truncate(lk.MAX_LOCK + 10)  # sparse: no disk used
    with pytest.raises(lk.LockError, match="larger than 16 MiB"):
        lk.read_lock(path)
    with pytest.raises(lk.LockError, match="is a folder"):
        lk.read_lock(tmp_path)
    with pytest.raises(lk.LockError, match="not found"):
        lk.read_lock(tmp_path / "nope.lock")


def test_a_hostile_lock_fails_build_base_before_any_work(tmp_path: Path) -> None:
    tree = make_gramine_tree(tmp_path / "tree")
    path = write(tmp_path, changed("debian_packages|bash|version", "5.2'; touch /pwned; '"))
    result = run_cli("build-base", "--profile", "slim", "--gramine-source", "tree",
                     "--gramine-path", tree, "--tag", "ppml-test/never:1", "--lock", path,
                     env={"DOCKER_HOST": "unix:///nonexistent.sock"})  # no engine needed
    assert_one_line_error(result, str(path), "debian_packages.bash.version",
                          "is not a Debian version")
    assert result.returncode == 1


def test_a_lock_for_another_profile_is_refused(tmp_path: Path) -> None:
    tree = make_gramine_tree(tmp_path / "tree")
    path = write(tmp_path, changed("profile", "full"))
    result = run_cli("build-base", "--profile", "slim", "--gramine-source", "tree",
                     "--gramine-path", tree, "--lock", path,
                     env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert_one_line_error(result, "written for profile 'full'", "this build is 'slim'")
    assert result.returncode == 2


@pytest.mark.parametrize("content", ["#!/bin/sh\necho precious\n", '{"format": "other"}', ""])
def test_write_lock_never_replaces_a_file_that_is_not_a_lock(tmp_path: Path,
                                                             content: str) -> None:
    tree = make_gramine_tree(tmp_path / "tree")
    target = tmp_path / "precious"
    target.write_text(content)
    result = run_cli("build-base", "--profile", "slim", "--gramine-source", "tree",
                     "--gramine-path", tree, "--write-lock", target,
                     env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert_one_line_error(result, str(target), "not a ppml-image lock file")
    assert target.read_text() == content


def test_replace_ok_accepts_an_existing_lock_and_refuses_a_folder(tmp_path: Path) -> None:
    lk.replace_ok(write(tmp_path, GOOD))
    lk.replace_ok(tmp_path / "new.lock")
    with pytest.raises(UsageError, match="is a folder"):
        lk.replace_ok(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        lk.replace_ok(tmp_path / "no" / "such.lock")


@pytest.mark.parametrize("url", [
    "http://x/'; id; '", "http://x/$(id)", "http://x/ a", "http://x/\nRUN id", "ftp://x/",
    "javascript:alert(1)", "http://", "http://x:99999999/", "file:///srv/debian", "-o x",
    "http://user@host/", "http://x/a`id`",
])
def test_bad_mirrors_are_refused(url: str) -> None:
    with pytest.raises(UsageError, match="debian_mirror"):
        BaseConfig(debian_mirror=url).validate()


def test_a_good_mirror_is_accepted() -> None:
    BaseConfig(debian_mirror="http://snapshot.debian.org/archive/debian/20250101T000000Z/"
               ).validate()
    BaseConfig(debian_mirror="https://mirror.example:8443/debian").validate()


# --------------------------------------------------------------------------
# The Dockerfile a lock renders: every value quoted, every layer pinned
# --------------------------------------------------------------------------
def _render(lock: lk.BaseLock, config: BaseConfig | None = None) -> str:
    return render_dockerfile(config or BaseConfig(profile="slim"), file_server="http://s",
                             ml_digest="m", spark_digest="s", debs=[], debs_digest="d",
                             lock=lock)


def _install_words(dockerfile: str) -> list[str]:
    """The words of the system layer's apt-get install, as the shell splits them."""
    run = dockerfile.split("# Layer 1")[1].split("\n\n")[0]
    command = run.split("apt-get install -y --no-install-recommends")[1].split("&&")[0]
    return shlex.split(command.replace("\\\n", " "))


def test_the_locked_dockerfile_pins_every_layer_and_checks_the_mirror(tmp_path: Path) -> None:
    lock = lk.read_lock(write(tmp_path, GOOD))
    text = _render(lock, BaseConfig(profile="slim", debian_mirror=GOOD["debian_mirror"]))
    assert f"FROM {ID}\n" in text
    assert _install_words(text) == lock.pins("system")
    assert "apt-get -o Acquire::Check-Valid-Until=false update" in text
    assert "locked package not on the mirror" in text
    assert "bash=" not in text  # in the OS image already: not reinstalled


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               min_size=1, max_size=40))
def test_values_reach_the_shell_as_single_words(text: str) -> None:
    # Even a lock built in memory, never validated, cannot add shell syntax.
    lock = lk.BaseLock(profile="slim", os_image="x", os_image_id=ID,
                       packages={"pkg": lk.DebPackage(text, "amd64", "system")}, wheels={},
                       gramine_source="tree", gramine_inputs={}, gramine_files={})
    assert _install_words(_render(lock)) == [f"pkg={text}"]


def test_unlocked_rendering_is_unchanged_by_the_lock_machinery() -> None:
    text = _render(None)  # type: ignore[arg-type]
    assert "FROM debian:bookworm\n" in text
    assert _install_words(text) == ["ca-certificates", "python3", "python3-pip", "libgomp1",
                                    "procps", "bash"]
    assert "locked package" not in text and "Check-Valid-Until" not in text


# --------------------------------------------------------------------------
# dpkg's status file, and which layer installs what
# --------------------------------------------------------------------------
STATUS = """\
Package: python3
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1
Depends: python3.11 (>= 3.11.2-1~), libpython3-stdlib (= 3.11.2-1+b1)
Description: interactive high-level object-oriented language
 continues here
 .

Package: python3.11
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6
Pre-Depends: libc6 (>= 2.36)
Depends: mailcap | mime-support, libexpat1:any

Package: libpython3-stdlib
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1

Package: media-types
Status: install ok installed
Architecture: all
Version: 10.0.0
Provides: mailcap

Package: libexpat1
Status: install ok installed
Architecture: amd64
Version: 2.5.0-1

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def test_dpkg_status_and_layers() -> None:
    final = lk.parse_dpkg_status(STATUS)
    assert "removed-one" not in final
    assert final["python3.11"].depends == (("libc6",), ("mailcap", "mime-support"),
                                           ("libexpat1",))
    before = lk.parse_dpkg_status(STATUS.split("Package: libc6")[0].split(
        "Package: python3\n")[0] + "Package: libc6\nStatus: install ok installed\n"
        "Architecture: amd64\nVersion: 2.36-9+deb12u4\n")
    layers = lk.attribute_layers(final, before, {"system": ["python3"]}, rest="gramine")
    assert layers == {"python3": "system", "python3.11": "system", "libpython3-stdlib": "system",
                      "media-types": "system", "libexpat1": "system", "libc6": "os"}


def test_deb_package_names_are_read_from_the_control_file(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    for compression in ("xz", "gzip", "none"):
        package = tmp_path / compression / "pkg"
        (package / "DEBIAN").mkdir(parents=True)
        (package / "DEBIAN" / "control").write_text(
            "Package: gramine-extra\nVersion: 1.0\nArchitecture: amd64\n"
            "Maintainer: t <t@invalid>\nDescription: d\n")
        deb = tmp_path / compression / "x.deb"
        subprocess.run(["dpkg-deb", f"-Z{compression}", "--root-owner-group", "--build",
                        str(package), str(deb)], check=True, capture_output=True)
        assert lk.deb_package_name(deb) == "gramine-extra"
    bogus = tmp_path / "bogus.deb"
    bogus.write_bytes(b"!<arch>\n" + b"x" * 100)
    with pytest.raises(UsageError, match=r"bogus\.deb: cannot read the package name"):
        lk.deb_package_name(bogus)
    bogus.write_bytes(b"not an archive")
    with pytest.raises(UsageError, match="not an ar archive"):
        lk.deb_package_name(bogus)
