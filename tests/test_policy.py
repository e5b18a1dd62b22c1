"""The release policy (issue 8, point 5): every rule, what it must not flag,
and `sign --release`.

Issue 16 made the policy allow by list: the clean manifest's allowed files
and its TZ passthrough are accepted only because NAMED names them."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import COMMON, assert_one_line_error, run_cli, write_manifest

from ppml_image.errors import PolicyError
from ppml_image.sgx.manifest.document import parse_manifest
from ppml_image.sgx.manifest.policy import (
    ReleasePolicy,
    Violation,
    enforce_release,
    release_violations,
)
from ppml_image.sgx.measure.tree import tree_for

CLEAN = """\
libos.entrypoint = "/usr/bin/python3"
loader.argv = ["python3", "/app/main.py", "--input", "/data/in.csv"]
loader.env.HOME = "/tmp"
loader.env.LD_LIBRARY_PATH = "/lib"
loader.env.TZ = { passthrough = true }
sgx.debug = false
sgx.file_check_policy = "strict"
sgx.trusted_files = ["file:/usr/bin/python3", "file:/app/main.py", "file:/app/args"]
sgx.allowed_files = [
  "file:/etc/hosts", "file:/etc/host.conf", "file:/etc/resolv.conf", "file:/etc/nsswitch.conf",
  "file:/etc/gai.conf", "file:/etc/passwd", "file:/etc/group", "file:/etc/localtime",
  "file:/data/in.csv", "file:/data/model.txt", "file:/ppml/data/out.json",
]
loader.argv_src_file = "file:/app/args"
fs.mounts = [
  { path = "/tmp", type = "tmpfs" },
  { path = "/shm", uri = "dev:/dev/shm", type = "untrusted_shm" },
]
"""


# Issue 16: what CLEAN lists as unmeasured or passed through is named.
NAMED = ReleasePolicy(("file:/etc/", "file:/data/in.csv", "file:/data/model.txt",
                       "file:/ppml/data/out.json", "file:/app", "file:/opt", "file:/usr",
                       "file:/", "file:/link"), ("TZ",))


def violations(extra: str = "", base: str = CLEAN) -> list[Violation]:
    return release_violations(parse_manifest(base + extra, "m"), policy=NAMED)


def keys(extra: str, base: str = CLEAN) -> list[str]:
    return [v.key for v in violations(extra, base)]


def test_a_clean_manifest_has_no_violation() -> None:
    """Data files, name-service files, tmpfs, untrusted_shm and a harmless
    passthrough variable are fine."""
    assert violations() == []
    enforce_release(parse_manifest(CLEAN, "m"), "m", policy=NAMED)


def test_debug_is_flagged_as_debug() -> None:
    [found] = violations("sgx.debug = true\n", CLEAN.replace("sgx.debug = false\n", ""))
    assert (found.key, found.value, found.debug) == ("sgx.debug", "true", True)


@pytest.mark.parametrize("line,key", [
    ("loader.insecure__use_cmdline_argv = true\n", "loader.insecure__use_cmdline_argv"),
    ("loader.insecure__use_host_env = true\n", "loader.insecure__use_host_env"),
    ("loader.insecure__disable_aslr = true\n", "loader.insecure__disable_aslr"),
    ("sgx.insecure__allow_memfaults_without_exinfo = true\n",
     "sgx.insecure__allow_memfaults_without_exinfo"),
    ("fs.insecure__keys.default = \"00112233445566778899aabbccddeeff\"\n",
     "fs.insecure__keys"),
    ("sys.insecure__allow_eventfd = true\n", "sys.insecure__allow_eventfd"),
    ('x = [{ y = [{ insecure__z = 1 }] }]\n', "x[0].y[0].insecure__z"),
])
def test_every_insecure_key_is_flagged(line: str, key: str) -> None:
    assert keys(line) == [key]
    assert not violations(line)[0].debug


def test_allow_all_but_log_is_flagged() -> None:
    base = CLEAN.replace('sgx.file_check_policy = "strict"\n', "")
    assert keys('sgx.file_check_policy = "allow_all_but_log"\n', base) == \
        ["sgx.file_check_policy"]


@pytest.mark.parametrize("uri,fragment", [
    ("file:/", "a folder"),
    ("file:/app/lib/libfoo.so", "code"),
    ("file:/usr/lib/x86_64-linux-gnu/libc.so.6", "code"),
    ("file:/app/helpers.py", "code"),
    ("file:/app/HELPERS.PY", "code"),
    ("file:/usr/lib/python3.11/__pycache__/os.cpython-311.pyc", "code"),
    ("file:/usr/lib/python311.zip", "code"),
    ("file:/usr/lib/python3/dist-packages/x.pth", "code"),
    ("file:/opt/spark/jars/spark-core.jar", "code"),
    ("file:/app/Main.class", "code"),
    ("file:/app/run.sh", "code"),
    ("file:/usr/bin/env", "a program"),
    ("file:/usr/local/sbin/tool", "a program"),
    ("file:/etc/ld.so.preload", "dynamic loader"),
    ("file:/etc/ld.so.conf.d/x.conf", "dynamic loader"),
    ("file:/usr/lib/jvm/java-17/lib/modules", "JDK"),
    ("file:/usr/lib/jvm/java-17/conf/security/java.security", "JDK"),
    ("file:/usr/bin/perl", "a program"),
])
def test_allowed_files_that_are_folders_or_code(uri: str, fragment: str) -> None:
    """Issue 16: refused even though NAMED names them (it names file:/); the reasons
    are the new rules' (a whole file system, a bin or lib folder, code...)."""
    del fragment  # the old reasons; every entry is still refused
    found = violations(f'sgx.allowed_files = ["{uri}"]\n',
                       CLEAN.replace("sgx.allowed_files", "old_allowed_files"))
    assert "sgx.allowed_files[0]" in [v.key for v in found], found


def test_the_libos_entrypoint_and_the_script_argv_runs_are_code() -> None:
    base = CLEAN.replace("sgx.allowed_files", "old_allowed_files") \
        .replace('"/app/main.py", "--input"', '"/app/main", "--input"')
    found = violations('sgx.allowed_files = ["file:/opt/python", "file:/app/main", '
                       '"file:/data/in.csv"]\nlibos.entrypoint = "/opt/python"\n',
                       base.replace('libos.entrypoint = "/usr/bin/python3"\n', ""))
    keys_found = [v.key for v in found]
    assert keys_found[0] == "sgx.allowed_files[0]"
    assert "LibOS entrypoint" in found[0].reason
    # Issue 16: the paths themselves are refused where they are used.
    assert {"libos.entrypoint", "loader.argv[1]"} <= set(keys_found)


def test_bash_c_first_word_is_code() -> None:
    base = CLEAN.replace("sgx.allowed_files", "old_allowed_files").replace(
        'loader.argv = ["python3", "/app/main.py", "--input", "/data/in.csv"]',
        'loader.argv = ["bash", "-c", "/opt/run --data /data/in.csv"]').replace(
        'libos.entrypoint = "/usr/bin/python3"', 'libos.entrypoint = "/usr/bin/bash"')
    found = violations('sgx.allowed_files = ["file:/opt/run", "file:/data/in.csv"]\n', base)
    assert [v.key for v in found] == ["libos.entrypoint", "loader.argv[2]"]
    assert "/opt/run is unmeasured" in found[1].reason


def test_allowed_file_named_by_a_code_variable_is_code() -> None:
    found = violations('loader.env.LD_PRELOAD = "/opt/hook"\n'
                       'loader.env.PYTHONSTARTUP = { value = "/etc/startup" }\n'
                       'sgx.allowed_files = ["file:/opt/hook", "file:/etc/startup"]\n',
                       CLEAN.replace("sgx.allowed_files", "old_allowed_files"))
    assert [v.key for v in found] == ["loader.env.LD_PRELOAD", "loader.env.PYTHONSTARTUP"]
    assert "LD_PRELOAD" in found[0].reason and "PYTHONSTARTUP" in found[1].reason


def test_malformed_allowed_files_cannot_be_checked() -> None:
    base = CLEAN.replace("sgx.allowed_files", "old_allowed_files")
    assert keys('sgx.allowed_files = "file:/"\n', base) == ["sgx.allowed_files"]
    assert keys('sgx.allowed_files = [1, "file:/etc/hosts"]\n', base) == \
        ["sgx.allowed_files[0]"]


def test_a_named_folder_is_accepted_with_gramines_prefix_semantics(tmp_path: Path) -> None:
    """Issue 16: a folder is refused unless named; a named data folder is accepted."""
    (tmp_path / "data" / "sub").mkdir(parents=True)
    manifest = parse_manifest(CLEAN.replace("sgx.allowed_files", "old_allowed_files")
                              + 'sgx.allowed_files = ["file:/data/sub", "file:/link", '
                              '"file:/data/in.csv"]\n', "m")
    assert release_violations(manifest, tree_for(tmp_path), NAMED) == []
    assert [v.key for v in release_violations(manifest)] == [
        "sgx.allowed_files[0]", "sgx.allowed_files[1]", "sgx.allowed_files[2]",
        "loader.env.TZ"]


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_AUDIT", "PYTHONPATH", "PYTHONHOME",
                                  "JAVA_TOOL_OPTIONS", "CLASSPATH", "BASH_ENV", "PATH",
                                  "GLIBC_TUNABLES", "SPARK_HOME"])
def test_passthrough_of_a_code_variable(name: str) -> None:
    assert keys(f"loader.env.{name} = {{ passthrough = true }}\n") == [f"loader.env.{name}"]


@pytest.mark.parametrize("name", ["LC_ALL", "LANG", "OMP_NUM_THREADS", "HOSTNAME"])
def test_passthrough_of_a_data_variable_only_when_named(name: str) -> None:
    """Issue 16: stricter; a data variable is passed through only when named."""
    line = f"loader.env.{name} = {{ passthrough = true }}\n"
    assert keys(line) == [f"loader.env.{name}"]
    named = ReleasePolicy(NAMED.allow_unmeasured, ("TZ", name))
    assert release_violations(parse_manifest(CLEAN + line, "m"), policy=named) == []


@pytest.mark.parametrize("key", ["argv_src_file", "env_src_file"])
def test_src_files_must_be_trusted(key: str) -> None:
    base = CLEAN.replace('loader.argv_src_file = "file:/app/args"\n', "")
    assert keys(f'loader.{key} = "file:/tmp/host-written"\n', base) == [f"loader.{key}"]
    assert keys(f'loader.{key} = "file:/app/args"\n', base) == []


def test_enforce_release_names_every_violation() -> None:
    manifest = parse_manifest(CLEAN.replace("sgx.debug = false\n", "") + "sgx.debug = true\n"
                              "loader.insecure__use_host_env = true\n", "m")
    with pytest.raises(PolicyError) as info:
        enforce_release(manifest, "app.manifest")
    message = str(info.value)
    assert message.startswith("app.manifest: refused by the release policy: ")
    assert "sgx.debug = true" in message and "loader.insecure__use_host_env = true" in message
    assert "\n" not in message


# --- sign --release ----------------------------------------------------------
PAL = COMMON / "fake_libpal.so"


def _sign(manifest: Path, key: Path, out: Path, rootfs: Path, *extra: str):
    return run_cli("sign", "--manifest", manifest, "--output", out / "app.manifest.sgx",
                   "--libpal", PAL, "--key", key, "--chroot", rootfs, "--date", "2024-01-01",
                   *extra)


def test_sign_release_refuses_naming_every_violation(tmp_path: Path, rootfs: Path,
                                                     enclave_key: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    manifest = write_manifest(tmp_path, 'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                              "sgx.debug = true\nsgx.insecure__rpc_thread_num = 2\n"
                              'sgx.allowed_files = ["file:/app/lib", "file:/app/bin/app"]\n'
                              'sgx.trusted_files = ["file:/app/bin/app"]\n')
    result = _sign(manifest, enclave_key, out, rootfs, "--release")
    assert_one_line_error(result, str(manifest), "release policy", "sgx.debug",
                          "sgx.insecure__rpc_thread_num", "sgx.allowed_files[0]",
                          "sgx.allowed_files[1]")
    assert result.returncode == 1
    assert list(out.iterdir()) == []
    # Without --release the same manifest signs (with the debug warning).
    unchecked = _sign(manifest, enclave_key, out, rootfs)
    assert unchecked.returncode == 0, unchecked.stderr


def test_sign_release_checks_the_expanded_manifest(tmp_path: Path, rootfs: Path,
                                                   enclave_key: Path) -> None:
    """argv_src_file inside a trusted folder is trusted once the folder is expanded."""
    (rootfs / "app" / "args").write_bytes(b"app\0")
    out = tmp_path / "out"
    out.mkdir()
    manifest = write_manifest(tmp_path, 'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                              'loader.argv_src_file = "file:/app/args"\n'
                              'sgx.trusted_files = ["file:/app/"]\n'
                              'sgx.allowed_files = ["file:/etc/hosts"]\n')
    # Issue 16: /etc/hosts is unmeasured, so it must be named.
    result = _sign(manifest, enclave_key, out, rootfs, "--release",
                   "--allow-unmeasured", "file:/etc/hosts")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["app.manifest.sgx", "app.sig"]


def test_sign_release_finds_folders_in_the_chroot(tmp_path: Path, rootfs: Path,
                                                  enclave_key: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    manifest = write_manifest(tmp_path, 'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                              'sgx.trusted_files = ["file:/app/bin/app"]\n'
                              'sgx.allowed_files = ["file:/app/lib"]\n')
    result = _sign(manifest, enclave_key, out, rootfs, "--release")
    assert_one_line_error(result, "sgx.allowed_files[0]", "bin or lib folder")
    assert list(out.iterdir()) == []
