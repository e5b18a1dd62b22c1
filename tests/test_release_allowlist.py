"""Issue 16, point 2: the release policy allows by list.

Every case of the issue's "Why" point 3 is refused with one line naming the
key and the rule; what the signer names is accepted; what may never be
allowed is refused even when named.
"""

from __future__ import annotations

import posixpath
import shlex
from pathlib import Path

import pytest
from conftest import COMMON, assert_one_line_error, run_cli, write_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import ManifestError, PolicyError, UsageError
from ppml_image.sgx.manifest.document import parse_manifest
from ppml_image.sgx.manifest.policy import (
    ReleasePolicy,
    Violation,
    _Refused,
    _shell_commands,
    enforce_release,
    load_policy,
    make_policy,
    release_violations,
)

MOUNTS = """\
fs.mounts = [
  { path = "/usr", uri = "file:/usr" },
  { path = "/app", uri = "file:/app" },
  { path = "/etc", uri = "file:/etc" },
  { path = "/tmp", type = "tmpfs" },
  { path = "/data", uri = "file:/data", type = "encrypted", key_name = "_sgx_mrsigner" },
  { path = "/shm", uri = "dev:/dev/shm", type = "untrusted_shm" },
]
"""
TRUSTED = ('sgx.trusted_files = ["file:/usr/bin/python3", "file:/usr/bin/bash", '
           '"file:/usr/bin/java", "file:/usr/lib/", "file:/app/main.py", "file:/app/a.jar", '
           '"file:/app/run.sh"]\n')


def manifest(argv: str = '["python3", "/app/main.py"]', *, entry: str = "/usr/bin/python3",
             allowed: str = '["file:/etc/hosts"]', extra: str = "", mounts: str = MOUNTS) -> str:
    return (f'libos.entrypoint = "{entry}"\nloader.argv = {argv}\n'
            'loader.env.PATH = "/usr/bin"\n'
            f"sgx.allowed_files = {allowed}\n{TRUSTED}{extra}{mounts}")


HOSTS = ReleasePolicy(("file:/etc/hosts",))


def found(text: str, policy: ReleasePolicy = HOSTS) -> list[Violation]:
    return release_violations(parse_manifest(text, "m"), policy=policy)


def keys(text: str, policy: ReleasePolicy = HOSTS) -> list[str]:
    return [v.key for v in found(text, policy)]


def test_a_manifest_with_its_unmeasured_file_named_passes() -> None:
    assert found(manifest()) == []


# --- issue 16, "Why" 3: each is refused ---------------------------------------
def test_python_option_value_is_not_the_script() -> None:
    """`python3 -X dev /app/run`: dev is -X's value; /app/run is the script."""
    text = manifest('["/usr/bin/python3", "-X", "dev", "/app/run"]',
                    allowed='["file:/etc/hosts", "file:/app/run"]')
    refused = [v for v in found(text, make_policy(["file:/etc/hosts", "file:/app/run"]))
               if v.key.startswith("loader.argv")]
    assert [v.key for v in refused] == ["loader.argv[3]", "loader.argv[3]"]
    assert "the script python runs" in refused[0].reason
    assert "sgx.allowed_files[1] covers it" in refused[0].reason
    # Python also imports from the script's folder, which holds the allowed file.
    assert "imports from its script's folder" in refused[1].reason


def test_bash_c_source_is_code() -> None:
    text = manifest('["bash", "-c", "source /app/run"]', entry="/usr/bin/bash",
                    allowed='["file:/etc/hosts", "file:/app/run"]')
    [v] = found(text, make_policy(["file:/etc/hosts", "file:/app/run"]))
    assert v.key == "loader.argv[2]" and "sources" in v.reason and "/app/run" in v.reason


def test_relative_ld_preload_resolves_from_start_dir() -> None:
    text = manifest(extra='fs.start_dir = "/app"\nloader.env.LD_PRELOAD = "./data"\n',
                    allowed='["file:/etc/hosts", "file:/app/data"]')
    refused = {v.key: v for v in found(text, make_policy(["file:/etc/hosts",
                                                          "file:/app/data"]))}
    assert "/app/data is unmeasured" in refused["loader.env.LD_PRELOAD"].reason
    assert "holds unmeasured files" in refused["fs.start_dir"].reason


def test_bash_func_is_never_allowed() -> None:
    text = manifest(extra='loader.env."BASH_FUNC_echo%%" = { passthrough = true }\n')
    assert keys(text) == ['loader.env."BASH_FUNC_echo%%"']
    text = manifest(extra='loader.env.BASH_FUNC_x = "() { :; }"\n')
    assert keys(text) == ["loader.env.BASH_FUNC_x"]


@pytest.mark.parametrize("mask", ["0x0000000000000000", "0xfffffffffffffffd",
                                  "0x0000000000000001"])  # malformed: test_gramine_reading
def test_seal_key_flags_mask_must_cover_debug(mask: str) -> None:
    [v] = found(manifest(extra=f'sgx.seal_key.flags_mask = "{mask}"\n'))
    assert v.key == "sgx.seal_key.flags_mask" and "DEBUG" in v.reason


@pytest.mark.parametrize("mask", ["0x0000000000000002", "0xffffffffffffffff",
                                  "0x0000000000000003"])
def test_seal_key_flags_mask_with_debug_passes(mask: str) -> None:
    assert found(manifest(extra=f'sgx.seal_key.flags_mask = "{mask}"\n')) == []


@pytest.mark.parametrize("name", ["OPENSSL_CONF", "PYSPARK_PYTHON", "JAVA_HOME", "LD_PRELOAD",
                                  "PYTHONPATH", "JAVA_TOOL_OPTIONS", "CLASSPATH", "SPARK_HOME",
                                  "HOME", "PATH"])
def test_code_variables_are_never_passed_through_even_when_named(name: str) -> None:
    text = manifest(extra=f"loader.env.{name} = {{ passthrough = true }}\n")
    if name == "PATH":  # the manifest sets PATH once
        text = text.replace('loader.env.PATH = "/usr/bin"\n', "")
    assert f"loader.env.{name}" in keys(text)
    with pytest.raises(UsageError, match=f"--allow-passthrough {name}: never allowed"):
        make_policy(allow_passthrough=[name])


@pytest.mark.parametrize("level", ["all", "trace", "debug", "warning"])
def test_log_level_must_be_error_or_none(level: str) -> None:
    [v] = found(manifest(extra=f'loader.log_level = "{level}"\n'))
    assert v.key == "loader.log_level"
    for quiet in ("error", "none"):
        assert found(manifest(extra=f'loader.log_level = "{quiet}"\n')) == []


@pytest.mark.parametrize("path", ["/usr/bin", "/usr", "/app", "/opt/lib"])  # "/": reading
def test_untrusted_shm_over_code_is_refused(path: str) -> None:
    mounts = MOUNTS.replace('{ path = "/shm"', f'{{ path = "{path}"')
    assert "fs.mounts[5].path" in keys(manifest(mounts=mounts))


def test_every_class_path_entry_is_checked() -> None:
    text = manifest('["java", "-cp", "/app/a.jar:/app/classes", "Main"]', entry="/usr/bin/java",
                    allowed='["file:/etc/hosts", "file:/app/classes"]')
    [v] = found(text, make_policy(["file:/etc/hosts", "file:/app/classes"]))
    assert v.key == "loader.argv[2]" and "/app/classes" in v.reason and "-cp" in v.reason


# --- unmeasured files -----------------------------------------------------------
def test_an_unnamed_allowed_file_is_refused() -> None:
    [v] = found(manifest(), ReleasePolicy())
    assert v.key == "sgx.allowed_files[0]" and "--allow-unmeasured file:/etc/hosts" in v.reason


def test_named_prefix_has_gramines_semantics() -> None:
    """A named folder covers what is below it, not a sibling that shares its prefix."""
    text = manifest(allowed='["file:/etc/ppml/a", "file:/etc/ppml/sub/b", "file:/etc/ppmlx"]')
    assert keys(text, make_policy(["file:/etc/ppml"])) == ["sgx.allowed_files[2]"]
    assert keys(text, make_policy(["file:/etc/ppml/"])) == ["sgx.allowed_files[2]"]


# dev:, "file:", "file:.", "//", "." and "..": refused by Gramine's reading
# before the policy (test_gramine_reading).
@pytest.mark.parametrize("uri", ["file:/usr/lib/x", "file:/usr", "file:/",
                                 "file:/app/main.py", "file:/app",
                                 "file:/opt/bin/tool", "file:/etc/ld.so.preload",
                                 "file:/etc/ld.so.conf.d/x.conf",
                                 "file:/opt/venv/lib/python3.11/x",
                                 "file:/srv/site-packages/m", "file:/srv/hook.so"])
def test_code_areas_are_refused_even_when_named(uri: str) -> None:
    text = manifest(allowed=f'["{uri}"]')
    # Where the area is also used as code (the entrypoint, the script), that
    # use is refused too.
    assert keys(text, make_policy([uri, "file:/"]))[0] == "sgx.allowed_files[0]"


def test_entrypoint_may_not_be_allowed() -> None:
    text = manifest(entry="/app/entry", allowed='["file:/app/entry"]')
    refused = found(text, make_policy(["file:/app/entry"]))
    assert "LibOS entrypoint" in refused[0].reason
    assert "libos.entrypoint" in [v.key for v in refused]


# --- passthrough ------------------------------------------------------------------
def test_passthrough_only_when_named() -> None:
    text = manifest(extra="loader.env.TZ = { passthrough = true }\n")
    [v] = found(text)
    assert v.key == "loader.env.TZ" and "--allow-passthrough TZ" in v.reason
    assert found(text, make_policy(["file:/etc/hosts"], ["TZ"])) == []


@pytest.mark.parametrize("name", ["A%B", "A=B", "1A", "A B", "-x", ""])
def test_names_that_are_not_variable_names_are_refused(name: str) -> None:
    text = manifest(extra=f'loader.env."{name}" = "x"\n')
    try:
        assert len(found(text)) == 1
    except ManifestError as exc:  # Gramine's reading refuses it first ("", "A B", "A=B")
        assert "loader.env." in str(exc)
    with pytest.raises(UsageError):
        make_policy(allow_passthrough=[name])


# --- paths by role ------------------------------------------------------------------
@pytest.mark.parametrize("argv,entry", [
    ('["python3", "/tmp/x.py"]', "/usr/bin/python3"),  # tmpfs
    ('["python3", "/data/x.py"]', "/usr/bin/python3"),  # encrypted
    ('["python3", "/shm/x.py"]', "/usr/bin/python3"),  # shared with the host
    ('["python3", "/app/other.py"]', "/usr/bin/python3"),  # not listed
    ('["python3", "-B", "-Wignore", "/tmp/x.py"]', "/usr/bin/python3"),
    ('["python3", "-Xpycache_prefix=/tmp/c", "/app/main.py"]', "/usr/bin/python3"),
    ('["python3", "-c", "import os"]', "/usr/bin/python3"),
    ('["python3", "-i", "/app/main.py"]', "/usr/bin/python3"),
    ('["python3", "-m", "evil"]', "/usr/bin/python3"),  # imports from / (holds /tmp)
    ('["python3", "/app/main.py"]\nloader.env.PYTHONPATH = "lib:"', "/usr/bin/python3"),
    ('["python3", "/app/main.py"]\nloader.env.LD_LIBRARY_PATH = ":/usr/lib"',
     "/usr/bin/python3"),
    ('["python3"]', "/usr/bin/python3"),
    ('["python3", "-"]', "/usr/bin/python3"),
    ('["python3", "--unknown", "/app/main.py"]', "/usr/bin/python3"),
    ('["java", "-jar", "/tmp/x.jar"]', "/usr/bin/java"),
    ('["java", "-javaagent:/tmp/a.jar", "-cp", "/app/a.jar", "M"]', "/usr/bin/java"),
    ('["java", "-XX:OnOutOfMemoryError=sh", "-cp", "/app/a.jar", "M"]', "/usr/bin/java"),
    ('["java", "@/app/args", "M"]', "/usr/bin/java"),
    ('["java", "-Djava.library.path=/tmp", "-cp", "/app/a.jar", "M"]', "/usr/bin/java"),
    ('["bash", "/tmp/x.sh"]', "/usr/bin/bash"),
    ('["bash"]', "/usr/bin/bash"),
    ('["bash", "-s"]', "/usr/bin/bash"),
    ('["bash", "-c", "/tmp/x"]', "/usr/bin/bash"),
    ('["bash", "-c", ". /tmp/x"]', "/usr/bin/bash"),
    ('["bash", "-c", "python3 /tmp/x.py"]', "/usr/bin/bash"),
    ('["bash", "-c", "LD_PRELOAD=/tmp/x python3 /app/main.py"]', "/usr/bin/bash"),
    ('["bash", "-c", "eval x"]', "/usr/bin/bash"),
    ('["bash", "-c", "cd /tmp && ./x"]', "/usr/bin/bash"),
    ('["bash", "-c", "$(cat /etc/hosts)"]', "/usr/bin/bash"),
    ('["bash", "-c", "python3 /app/main.py > /tmp/o"]', "/usr/bin/bash"),
    ('["bash", "-c", "unknown-tool"]', "/usr/bin/bash"),
    ('["bash", "-c", "exec python3 -c pass"]', "/usr/bin/bash"),
    ('["/tmp/python3", "/app/main.py"]', "/usr/bin/python3"),
    ('["python3", "/app/main.py"]', "/tmp/python3"),
])
def test_code_in_an_unmeasured_area_is_refused(argv: str, entry: str) -> None:
    refused = found(manifest(argv, entry=entry))
    assert refused, argv
    assert all(v.key.startswith(("loader.argv", "libos.entrypoint", "fs.mounts",
                                 "loader.env"))
               for v in refused), refused


@pytest.mark.parametrize("argv,entry", [
    ('["python3", "-B", "-X", "dev", "/app/main.py", "--in", "/data/in.csv", "/tmp/o"]',
     "/usr/bin/python3"),
    ('["python3", "-m", "json.tool", "/tmp/x"]\nfs.start_dir = "/app"', "/usr/bin/python3"),
    ('["java", "-Xmx1g", "-cp", "/app/a.jar:/usr/lib/jvm/*", "Main", "/tmp/x"]',
     "/usr/bin/java"),
    ('["java", "-jar", "/app/a.jar", "/data/in"]', "/usr/bin/java"),
    ('["bash", "/app/run.sh", "/data/in"]', "/usr/bin/bash"),
    ('["bash", "-c", "python3 \'/app/main.py\' && echo done"]', "/usr/bin/bash"),
    ('["bash", "-ec", "exec /usr/bin/python3 /app/main.py --out /tmp/x"]', "/usr/bin/bash"),
])
def test_measured_code_with_data_arguments_passes(argv: str, entry: str) -> None:
    assert found(manifest(argv, entry=entry)) == []


@pytest.mark.parametrize("line", [
    'loader.env.LD_LIBRARY_PATH = "/usr/lib:/tmp"',
    'loader.env.PYTHONPATH = "/data/py"',
    'loader.env.JAVA_TOOL_OPTIONS = "-javaagent:/tmp/a.jar"',
    'loader.env.BASH_ENV = "/app/unlisted"',
    'loader.env.CLASSPATH = "/etc"',  # holds the allowed /etc/hosts
    'fs.start_dir = "/tmp"',
    'loader.env.DATA = "/shm/x"',
])
def test_environment_and_start_dir_paths_are_checked(line: str) -> None:
    refused = found(manifest(extra=line + "\n"))
    assert refused and refused[0].key == line.split(" = ")[0], refused


def test_data_variables_may_name_private_storage() -> None:
    assert found(manifest(extra='loader.env.HOME = "/tmp"\nloader.env.IN = "/data/x"\n')) == []


# --- must be exactly ------------------------------------------------------------
@pytest.mark.parametrize("line,key", [
    ("sgx.debug = true", "sgx.debug"),
    ('sgx.file_check_policy = "allow_all_but_log"', "sgx.file_check_policy"),
    ("loader.insecure__use_host_env = true", "loader.insecure__use_host_env"),
])
def test_must_be_exactly(line: str, key: str) -> None:
    assert keys(manifest(extra=line + "\n")) == [key]


# --- policy files and the CLI ------------------------------------------------------
def test_policy_file_format(tmp_path: Path) -> None:
    path = tmp_path / "p.policy.toml"
    path.write_text('[release]\nallow_unmeasured = ["file:/etc/hosts"]\n'
                    'allow_passthrough = ["TZ"]\n')
    policy = load_policy(str(path))
    assert policy.allow_unmeasured == ("file:/etc/hosts",)
    assert policy.allow_passthrough == ("TZ",)
    for bad in ('[release]\nallow_everything = true\n', '[other]\n',
                '[release]\nallow_unmeasured = "file:/x"\n',
                '[release]\nallow_passthrough = ["LD_PRELOAD"]\n',
                '[release]\nallow_unmeasured = ["/etc/hosts"]\n', "not toml ["):
        path.write_text(bad)
        with pytest.raises(UsageError, match=str(path)):
            load_policy(str(path))


def test_the_shipped_name_service_policy_covers_the_shipped_templates() -> None:
    policy = load_policy("name-service")
    assert "file:/etc/resolv.conf" in policy.allow_unmeasured
    with pytest.raises(UsageError, match="shipped: name-service"):
        load_policy("no-such-policy")


PAL = COMMON / "fake_libpal.so"


def _sign(manifest_path: Path, key: Path, out: Path, rootfs: Path, *extra: str):
    return run_cli("sign", "--manifest", manifest_path, "--output", out / "app.manifest.sgx",
                   "--libpal", PAL, "--key", key, "--chroot", rootfs, "--date", "2024-01-01",
                   *extra)


def test_sign_release_names_the_allowances(tmp_path: Path, rootfs: Path,
                                           enclave_key: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    text = ('libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
            'sgx.trusted_files = ["file:/app/bin/app"]\n'
            'sgx.allowed_files = ["file:/etc/hosts"]\nloader.env.TZ = { passthrough = true }\n')
    path = write_manifest(tmp_path, text)
    refused = _sign(path, enclave_key, out, rootfs, "--release")
    assert_one_line_error(refused, "sgx.allowed_files[0]", "--allow-unmeasured",
                          "loader.env.TZ", "--allow-passthrough TZ")
    assert refused.returncode == 1 and list(out.iterdir()) == []
    usage = _sign(path, enclave_key, out, rootfs, "--allow-passthrough", "TZ")
    assert_one_line_error(usage, "--release")
    assert usage.returncode == 2
    never = _sign(path, enclave_key, out, rootfs, "--release", "--allow-passthrough",
                  "LD_PRELOAD")
    assert_one_line_error(never, "LD_PRELOAD", "never allowed")
    assert never.returncode == 2
    policy = tmp_path / "tz.policy.toml"
    policy.write_text('[release]\nallow_passthrough = ["TZ"]\n')
    signed = _sign(path, enclave_key, out, rootfs, "--release", "--policy", policy,
                   "--allow-unmeasured", "file:/etc/hosts")
    assert signed.returncode == 0, signed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["app.manifest.sgx", "app.sig"]


def test_enforce_release_is_one_line() -> None:
    text = manifest('["bash", "-c", "source /app/run"]', entry="/usr/bin/bash",
                    extra="sgx.debug = true\n")
    with pytest.raises(PolicyError) as info:
        enforce_release(parse_manifest(text, "m"), "app.manifest", policy=HOSTS)
    assert "\n" not in str(info.value) and "loader.argv[2]" in str(info.value)


# --- a command line or environment read from a trusted file ----------------------
def test_argv_and_env_src_files_are_judged_through_the_tree(tmp_path: Path) -> None:
    from ppml_image.sgx.measure.tree import tree_for

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "args").write_bytes(b"python3\0/tmp/x.py\0")
    (tmp_path / "app" / "env").write_bytes(b"LD_PRELOAD=/tmp/hook.so\0LANG=C\0")
    text = manifest(extra='loader.argv_src_file = "file:/app/args"\n'
                    'loader.env_src_file = "file:/app/env"\n').replace(
        'loader.argv = ["python3", "/app/main.py"]\n', "").replace(
        '"file:/app/run.sh"]', '"file:/app/run.sh", "file:/app/args", "file:/app/env"]')
    parsed = parse_manifest(text, "m")
    assert release_violations(parsed, policy=HOSTS) == []  # nothing to read without a tree
    refused = release_violations(parsed, tree_for(tmp_path), HOSTS)
    # The script, and the folder python imports from, are both in the tmpfs.
    assert [v.key for v in refused] == ["loader.env_src_file[0]", "loader.argv_src_file[1]",
                                        "loader.argv_src_file[1]"]
    (tmp_path / "app" / "args").write_bytes(b"python3\0/app/main.py\0--out\0/tmp/o\0")
    (tmp_path / "app" / "env").write_bytes(b"LANG=C\0")
    assert release_violations(parsed, tree_for(tmp_path), HOSTS) == []


# --- the library behind build-custom and sign-image takes the policy --------------
def test_build_custom_release_with_the_shipped_policy(mem, enclave_key: Path,
                                                      mem_app: Path) -> None:
    from ppml_image.images.enclave import custom

    small = {"enclave_size": "256M", "max_threads": "4"}
    with pytest.raises(PolicyError, match=r"sgx.allowed_files\[0\].*--allow-unmeasured"):
        custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/rel:1",
                            defines=small, release=True, quiet=True, engine=mem)
    assert "mem/rel:1" not in mem.tags
    policy = make_policy(policies=["name-service"])
    custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/rel:1",
                        defines=small, release=policy, quiet=True, engine=mem)
    assert "mem/rel:1" in mem.tags
    with pytest.raises(PolicyError, match=r"sgx.allowed_files\[0\]"):
        custom.sign_image("mem/rel:1-unsigned", enclave_key, tag="mem/rel:2", release=True,
                          quiet=True, engine=mem, base="mem/base:1")
    custom.sign_image("mem/rel:1-unsigned", enclave_key, tag="mem/rel:2", release=policy,
                      quiet=True, engine=mem, base="mem/base:1")
    assert "mem/rel:2" in mem.tags


def test_export_signing_data_takes_the_allowances(tmp_path: Path, rootfs: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path = write_manifest(tmp_path, 'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                          'sgx.trusted_files = ["file:/app/bin/app"]\n'
                          'sgx.allowed_files = ["file:/etc/hosts"]\n')
    base = ("sign", "--manifest", path, "--output", out / "app.manifest.sgx", "--libpal", PAL,
            "--chroot", rootfs, "--date", "2024-01-01", "--release",
            "--export-signing-data", out / "app.tbs")
    refused = run_cli(*base)
    assert_one_line_error(refused, "sgx.allowed_files[0]", "--allow-unmeasured")
    assert list(out.iterdir()) == []
    exported = run_cli(*base, "--allow-unmeasured", "file:/etc/hosts")
    assert exported.returncode == 0, exported.stderr


# --- more refusals found while modelling the programs ------------------------------
@pytest.mark.parametrize("argv,entry,extra", [
    ('["bash", "-lc", "python3 /app/main.py"]', "/usr/bin/bash", ""),  # profiles in HOME
    ('["java", "-agentlib:jdwp=transport=dt_socket", "-cp", "/app/a.jar", "M"]',
     "/usr/bin/java", ""),
    ('["java", "-Xrunjdwp:server=y", "-cp", "/app/a.jar", "M"]', "/usr/bin/java", ""),
    ('["python3", "/app/main.py"]', "/usr/bin/python3", 'loader.env.PYTHONINSPECT = "1"\n'),
    ('["python3", "/app/main.py"]', "/usr/bin/python3",
     'loader.env.JAVA_TOOL_OPTIONS = "-agentlib:jdwp=server=y"\n'),
])
def test_debuggers_and_stdin_are_refused(argv: str, entry: str, extra: str) -> None:
    assert found(manifest(argv, entry=entry, extra=extra))


# --- hypothesis: the shell reader and the rules on arbitrary input ------------------
SHELL_TEXT = st.text(alphabet=st.sampled_from(list("ab/._-=:' \"\t;&|$`<>()*?[]#\\\n~!{}x1")),
                     max_size=40)


@given(SHELL_TEXT)
@settings(max_examples=400, deadline=None)
def test_the_shell_reader_agrees_with_shlex_or_refuses(text: str) -> None:
    """Whatever it accepts, POSIX shlex splits into the same words (shlex drops an
    empty quoted word next to an operator, where bash keeps it: empty words are
    left out of the comparison)."""
    try:
        commands = _shell_commands(text)
    except _Refused:
        return
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    expected = [t for t in lexer if t and not set(t) <= set(";&|")]
    assert [w for c in commands for w in c if w] == expected


ARGS = st.lists(st.text(alphabet=st.sampled_from(list("/.-=:;&|' \"abcXWmcpjs@*$\0é")),
                        max_size=12), max_size=6)


@given(ARGS, st.sampled_from(["/usr/bin/python3", "/usr/bin/java", "/usr/bin/bash",
                              "/usr/bin/tool"]), st.text(max_size=20))
@settings(max_examples=300, deadline=None)
def test_the_rules_never_crash(args: list[str], entry: str, env: str) -> None:
    """Any command line and environment value gets violations or none, never an error."""
    parsed = parse_manifest(manifest(extra="loader.env.X = 'v'\n"), "m")
    parsed["libos"]["entrypoint"] = entry
    parsed["loader"]["argv"] = [posixpath.basename(entry), *args]
    parsed["loader"]["env"].update({"X": env, "LD_LIBRARY_PATH": env, "JAVA_TOOL_OPTIONS": env})
    result = release_violations(parsed, policy=HOSTS)
    assert all("\n" not in str(v) for v in result)


def test_a_search_folder_holding_a_remapped_allowed_file_is_refused() -> None:
    """PYTHONPATH=/app shows /app/cfg, a mount of the host's /srv/cfg, which holds an
    allowed file: python could import it."""
    mounts = MOUNTS.replace('  { path = "/tmp"', '  { path = "/app/cfg", uri = "file:/srv/cfg" },\n'
                            '  { path = "/tmp"')
    text = manifest(allowed='["file:/srv/cfg/x"]', mounts=mounts,
                    extra='loader.env.PYTHONPATH = "/app"\n')
    refused = found(text, make_policy(["file:/srv/cfg"]))
    # The script's folder is /app too.
    assert [v.key for v in refused] == ["loader.env.PYTHONPATH", "loader.argv[1]"]
    assert all("through /app/cfg" in v.reason for v in refused)


def test_a_private_mount_over_a_remapped_measured_file_is_refused() -> None:
    """tmpfs at /srv over a mount of the host's /code, which holds a trusted file."""
    mounts = MOUNTS.replace('  { path = "/tmp"', '  { path = "/srv/code", uri = "file:/code" },\n'
                            '  { path = "/srv", type = "tmpfs" },\n  { path = "/tmp"')
    text = manifest(mounts=mounts).replace('"file:/app/run.sh"]', '"file:/app/run.sh", '
                                           '"file:/code/x"]')
    [v] = found(text)
    assert v.key == "fs.mounts[4].path" and "file:/code/x" in v.reason
    assert found(manifest(mounts=mounts)) == []  # nothing measured below /srv
