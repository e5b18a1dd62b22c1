"""One reading, Gramine's (issue 16, point 1): a manifest that Gramine 1.9's
parser (tomlc99, C strings) or its path rules (get_norm_path) would read
differently from Python is refused, in one line naming the key path and the
rule, by the library and by every signing command; and signing always runs
the full schema check."""

from __future__ import annotations

import posixpath
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import COMMON, assert_one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import ManifestError
from ppml_image.sgx.manifest.document import dumps, parse_manifest, read_manifest
from ppml_image.sgx.manifest.reading import (
    MAX_TABLE_PARTS,
    canonical_path,
    gramine_norm_path,
    key_path,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PAL = COMMON / "fake_libpal.so"

# A manifest that signs, under --release too, in the conftest rootfs. Each
# case below replaces or adds lines, keyed by the line's key.
BASE = {
    "libos.entrypoint": '"/app/bin/app"',
    "loader.argv": '["/app/bin/app"]',
    "loader.log_level": '"error"',
    "fs.mounts": '[{ path = "/app", uri = "file:/app" }]',
    "sgx.debug": "false",
    "sgx.enclave_size": '"64M"',
    "sgx.max_threads": "2",
    "sgx.file_check_policy": '"strict"',
    "sgx.trusted_files": '["file:/app/bin/app", "file:/app/lib/libfoo.so"]',
}


def manifest_text(**changes: str | None) -> str:
    """BASE with *changes*: ``key=value`` (the TOML key with '.' written as
    '__', a value of None drops the line) or ``_extra`` for raw lines."""
    lines = dict(BASE)
    extra = changes.pop("_extra", None) or ""
    for key, value in changes.items():
        toml_key = key.replace("__", ".")
        if value is None:
            lines.pop(toml_key, None)
        else:
            lines[toml_key] = value
    return "".join(f"{k} = {v}\n" for k, v in lines.items()) + extra


# (id, changes, fragments of the one-line error). The first group is the
# issue's own list ("Why", points 1 and 2); the rest are the rules behind it.
CASES: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = [
    ("nul-in-file-check-policy-key",
     {"_extra": 'sgx."file_check_policy\\u0000x" = "allow_all_but_log"\n'},
     ('sgx."file_check_policy\\u0000x"', "U+0000", "sgx.file_check_policy")),
    ("nul-in-allowed-files-key", {"_extra": 'sgx."allowed_files\\u0000" = ["file:/usr/lib/"]\n'},
     ('sgx."allowed_files\\u0000"', "U+0000", "C strings")),
    ("nul-in-env-key", {"_extra": 'loader."env\\u0000".LD_PRELOAD = { passthrough = true }\n'},
     ('loader."env\\u0000"', "U+0000")),
    ("nul-in-argv-src-file-key", {"_extra": 'loader."argv_src_file\\u0000" = "file:/app/args"\n'},
     ('loader."argv_src_file\\u0000"', "U+0000")),
    ("nul-in-allowed-file", {"sgx__allowed_files": '["file:/app/run\\u0000.txt"]',
                             "loader__argv": '["/app/run"]'},
     ("sgx.allowed_files[0]", "NUL", '"file:/app/run"')),
    ("nul-in-libos-entrypoint", {"libos__entrypoint": '"/app/main\\u0000"'},
     ("libos.entrypoint", "NUL", '"/app/main"')),
    ("nul-in-ld-preload", {"_extra": 'loader.env.LD_PRELOAD = "/app/data\\u0000"\n'},
     ("loader.env.LD_PRELOAD", "NUL", '"/app/data"')),
    ("dev-uri-in-allowed-files", {"sgx__allowed_files": '["dev:/usr/lib"]'},
     ("sgx.allowed_files[0]", '"dev:/usr/lib"', "only file:")),
    ("double-slash-trusted", {"sgx__trusted_files": '["file:/app/bin/app", "file://app/main"]'},
     ("sgx.trusted_files[1].uri", "canonical", '"file:/app/main"')),
    ("double-slash-allowed", {"sgx__allowed_files": '["file://app/main"]'},
     ("sgx.allowed_files[0]", "'//'", '"file:/app/main"')),
    # Control characters, not only NUL, in values and in keys.
    ("tab-in-string", {"_extra": 'loader.env.X = "a\\tb"\n'}, ("loader.env.X", "U+0009")),
    ("newline-in-argv", {"loader__argv": '["/app/bin/app", "a\\nb"]'},
     ("loader.argv[1]", "U+000A")),
    ("del-in-string", {"_extra": 'loader.env.X = "a\\u007Fb"\n'}, ("loader.env.X", "U+007F")),
    ("c1-in-string", {"_extra": 'loader.env.X = "a\\u0085b"\n'}, ("loader.env.X", "U+0085")),
    ("bidi-override-in-uri", {"sgx__trusted_files": '["file:/app/bin/app", '
                              '"file:/app/\\u202Eos.bil"]'},
     ("sgx.trusted_files[1].uri", "U+202E")),
    ("control-in-env-name", {"_extra": 'loader.env."A\\u0001" = "x"\n'},
     ('loader.env."A\\u0001"', "U+0001")),
    # Keys Gramine cannot look up, or would look up as something else.
    ("empty-key", {"_extra": 'loader.env."" = "x"\n'}, ('loader.env.""', "empty key")),
    ("dotted-quoted-key", {"_extra": '"sgx.debug" = true\n'}, ('"sgx.debug"', "'.'")),
    ("dotted-env-name", {"_extra": 'loader.env."A.B" = "x"\n'}, ('loader.env."A.B"', "'.'")),
    ("equals-in-env-name", {"_extra": 'loader.env."A=B" = "x"\n'},
     ('loader.env."A=B"', "'='")),
    ("non-bare-key", {"_extra": 'sgx."debug " = true\n'}, ('sgx."debug "', "plain key")),
    ("unicode-key", {"_extra": 'sgx."d\\u0435bug" = true\n'}, ("sgx.", "plain key")),
    # Types no Gramine key takes.
    ("float", {"sgx__max_threads": "2.0"}, ("sgx.max_threads", "float")),
    ("float-in-array", {"_extra": "sys.x = [1, 1.5]\n"}, ("sys.x[1]", "float")),
    ("date", {"_extra": "sgx.when = 2024-01-01\n"}, ("sgx.when", "date")),
    ("datetime", {"_extra": "sgx.when = 2024-01-01T00:00:00Z\n"}, ("sgx.when", "date")),
    ("tables-too-deep",
     {"_extra": "sys." + ".".join("t" * i for i in range(1, MAX_TABLE_PARTS + 2)) + " = 1\n"},
     ("sys.t.tt", f"at most {MAX_TABLE_PARTS}")),
    # URIs: the scheme each key takes, and the canonical form.
    ("dev-uri-trusted", {"sgx__trusted_files": '["dev:/app/bin/app"]'},
     ("sgx.trusted_files[0].uri", "only file:")),
    ("upper-case-scheme", {"sgx__trusted_files": '["FILE:/app/bin/app"]'},
     ("sgx.trusted_files[0].uri", "'file:'")),
    ("empty-uri-path", {"sgx__allowed_files": '["file:"]'},
     ("sgx.allowed_files[0]", "names no path")),
    ("dot-component", {"sgx__trusted_files": '["file:/app/./bin/app"]'},
     ("sgx.trusted_files[0].uri", "'.'", '"file:/app/bin/app"')),
    ("dotdot-component", {"sgx__trusted_files": '["file:/app/lib/../bin/app"]'},
     ("sgx.trusted_files[0].uri", "'..'", '"file:/app/bin/app"')),
    ("dotdot-relative", {"sgx__allowed_files": '["file:../etc/hosts"]'},
     ("sgx.allowed_files[0]", "'..'")),
    ("two-trailing-slashes", {"sgx__trusted_files": '["file:/app/bin/app", "file:/app/lib//"]'},
     ("sgx.trusted_files[1].uri", '"file:/app/lib/"')),
    ("entrypoint-uri-dotdot", {"_extra": 'loader.entrypoint.uri = "file:/app/../app/bin/app"\n'},
     ("loader.entrypoint.uri", "'..'")),
    ("argv-src-file-slash", {"_extra": 'loader.argv_src_file = "file:/app/args/"\n'},
     ("loader.argv_src_file", "must be a file")),
    ("mount-uri-slash", {"fs__mounts": '[{ path = "/app", uri = "file:/app/" }]'},
     ("fs.mounts[0].uri", "ends with '/'")),
    ("mount-uri-double-slash", {"fs__mounts": '[{ path = "/app", uri = "file:/app//x" }]'},
     ("fs.mounts[0].uri", "'//'")),
    ("encrypted-mount-dev", {"fs__mounts": '[{ path = "/d", uri = "dev:/d", type = "encrypted" }]'},
     ("fs.mounts[0].uri", "only file:")),
    ("shm-mount-file", {"fs__mounts": '[{ path = "/s", uri = "file:/s", type = "untrusted_shm" }]'},
     ("fs.mounts[0].uri", "only dev:")),
    ("mount-path-dotdot", {"fs__mounts": '[{ path = "/app/../etc", uri = "file:/app" }]'},
     ("fs.mounts[0].path", "'..'")),
    ("mount-path-relative", {"fs__mounts": '[{ path = "app", uri = "file:/app" }]'},
     ("fs.mounts[0].path", "absolute")),
    ("mount-over-root", {"fs__mounts": '[{ path = "/", uri = "file:/app" }]'},
     ("fs.mounts[0].path", "root")),
    ("start-dir-dot", {"_extra": 'fs.start_dir = "/app/."\n'}, ("fs.start_dir", "'.'")),
    ("entrypoint-double-slash", {"libos__entrypoint": '"/app//bin/app"'},
     ("libos.entrypoint", "'//'", '"/app/bin/app"')),
    # Sizes only the LibOS reads (parse_size_str: decimal, K/M/G).
    ("hex-stack-size", {"_extra": 'sys.stack.size = "0x100000"\n'}, ("sys.stack.size", "decimal")),
    ("underscore-brk-size", {"_extra": 'sys.brk.max_size = "1_000M"\n'},
     ("sys.brk.max_size", "decimal")),
    ("short-seal-mask", {"_extra": 'sgx.seal_key.flags_mask = "0x0"\n'},
     ("sgx.seal_key.flags_mask", "exactly 16 hex digits")),
    ("misc-mask-too-long", {"_extra": 'sgx.seal_key.misc_mask = "0xffffffffff"\n'},
     ("sgx.seal_key.misc_mask", "exactly 8 hex digits")),
    ("huge-stack-size", {"_extra": 'sys.stack.size = "99999999999999999999G"\n'},
     ("sys.stack.size", "64 bits")),
]


def _ids(cases: list[Any]) -> list[str]:
    return [case[0] for case in cases]


@pytest.mark.parametrize("case_id,changes,fragments", CASES, ids=_ids(CASES))
def test_library_refuses_in_one_line(case_id: str, changes: dict[str, str | None],
                                     fragments: tuple[str, ...]) -> None:
    text = manifest_text(**changes)
    with pytest.raises(ManifestError) as refused:
        parse_manifest(text, "app.manifest")
    message = str(refused.value)
    assert message.startswith("app.manifest: "), message
    assert "\n" not in message and "\0" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def _sign(tmp_path: Path, rootfs: Path, key: Path, text: str, *extra: str):
    manifest = tmp_path / "app.manifest"
    manifest.write_text(text)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    result = run_cli("sign", "--manifest", manifest, "--output", out / "app.manifest.sgx",
                     "--libpal", PAL, "--chroot", rootfs, "--date", "2024-01-01", *extra,
                     *([] if "--export-signing-data" in extra else ["--key", key]))
    return result, out


def test_the_base_manifest_signs_under_release(tmp_path: Path, rootfs: Path,
                                               enclave_key: Path) -> None:
    """So that each refusal below is the case's doing, not the base's."""
    result, out = _sign(tmp_path, rootfs, enclave_key, manifest_text(), "--release")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["app.manifest.sgx", "app.sig"]


# The issue's own cases, through the commands a user runs.
ISSUE_CASES = CASES[:10]


@pytest.mark.parametrize("case_id,changes,fragments", ISSUE_CASES, ids=_ids(ISSUE_CASES))
def test_sign_release_refuses_in_one_line(case_id: str, changes: dict[str, str | None],
                                          fragments: tuple[str, ...], tmp_path: Path,
                                          rootfs: Path, enclave_key: Path) -> None:
    result, out = _sign(tmp_path, rootfs, enclave_key, manifest_text(**changes), "--release")
    assert_one_line_error(result, str(tmp_path / "app.manifest"), *fragments)
    assert result.returncode == 1
    assert "\0" not in result.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("case_id,changes,fragments", ISSUE_CASES, ids=_ids(ISSUE_CASES))
def test_export_signing_data_refuses_in_one_line(case_id: str, changes: dict[str, str | None],
                                                 fragments: tuple[str, ...], tmp_path: Path,
                                                 rootfs: Path, enclave_key: Path) -> None:
    data = tmp_path / "out" / "app.tbs"
    result, out = _sign(tmp_path, rootfs, enclave_key, manifest_text(**changes),
                        "--export-signing-data", str(data))
    assert_one_line_error(result, *fragments)
    assert list(out.iterdir()) == []


# --- signing always runs the full schema ----------------------------------
SCHEMA_BREAKERS = [
    ("typo", {"_extra": "sgx.debugg = true\n"}, "unknown key sgx.debugg"),
    ("wrong-type", {"_extra": 'loader.uid = "0"\n'}, "loader.uid must be an integer"),
    ("missing-fs", {"fs__mounts": None}, "required key fs is missing"),
    ("both-value-and-passthrough",
     {"_extra": 'loader.env.X = { value = "a", passthrough = true }\n'}, "loader.env.X"),
]


@pytest.mark.parametrize("case_id,changes,fragment", SCHEMA_BREAKERS, ids=_ids(SCHEMA_BREAKERS))
def test_sign_runs_the_schema_check(case_id: str, changes: dict[str, str | None], fragment: str,
                                    tmp_path: Path, rootfs: Path, enclave_key: Path) -> None:
    text = manifest_text(**changes)
    with pytest.raises(ManifestError, match="Gramine's schema"):
        read_manifest(text, "m")
    for extra in ((), ("--release",), ("--export-signing-data", str(tmp_path / "out/a.tbs"))):
        result, out = _sign(tmp_path, rootfs, enclave_key, text, *extra)
        assert_one_line_error(result, "Gramine's schema", fragment)
        assert list(out.iterdir()) == []


def test_only_manifest_no_check_skips_the_schema(tmp_path: Path, rootfs: Path) -> None:
    template = tmp_path / "app.manifest.template"
    template.write_text(manifest_text(_extra="sgx.debugg = true\n"))
    assert_one_line_error(run_cli("manifest", template, "--chroot", rootfs),
                          "unknown key sgx.debugg")
    result = run_cli("manifest", template, "--no-check", "--chroot", rootfs)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["sgx"]["debugg"] is True
    # Gramine's reading is never skipped.
    template.write_text(manifest_text(libos__entrypoint='"/app/main\\u0000"'))
    assert_one_line_error(run_cli("manifest", template, "--no-check", "--chroot", rootfs),
                          "libos.entrypoint", "NUL")


# --- what stays accepted --------------------------------------------------
@pytest.mark.parametrize("changes", [
    {"sgx__allowed_files": '["file:/etc/hosts", "file:/tmp/", "file:/tmp", "file:data"]'},
    {"sgx__trusted_files": '["file:/app/bin/app", "file:/app/lib/"]'},
    {"_extra": 'fs.root.uri = "file:."\n'},
    {"_extra": 'fs.root.uri = "file:/"\n'},
    {"fs__mounts": '[{ path = "/tmp", type = "tmpfs" }, '
                   '{ path = "/dev/shm", uri = "dev:/dev/shm", type = "untrusted_shm" }, '
                   '{ path = "/data", uri = "file:data", type = "encrypted" }, '
                   '{ path = "/dev/x", uri = "dev:/dev/x" }]'},
    {"_extra": 'loader.env.JAVA_OPTS = "-Xmx1g é ✓"\nloader.env."odd-NAME%" = "x"\n'},
    {"_extra": 'sys.stack.size = "8M"\nsys.brk.max_size = "1024"\n'
               'sgx.seal_key.flags_mask = "0xFFFFFFFFFFFFFFFF"\n'
               'sgx.seal_key.misc_mask = "0x00000000"\n'},
    {"_extra": "sys." + ".".join("t" * i for i in range(1, MAX_TABLE_PARTS + 1)) + " = 1\n"},
], ids=["allowed", "trusted-folder", "root-dot", "root-slash", "mounts", "env-text", "sizes",
        "ten-deep"])
def test_canonical_manifests_are_read(changes: dict[str, str | None]) -> None:
    parse_manifest(manifest_text(**changes), "m")


# --- hypothesis: a C-string view changes nothing that is accepted ----------
def c_view(node: Any) -> Any:
    """What a C reader sees: every key and string cut at its first NUL."""
    if isinstance(node, dict):
        return {k.split("\0")[0]: c_view(v) for k, v in node.items()}
    if isinstance(node, list):
        return [c_view(v) for v in node]
    return node.split("\0")[0] if isinstance(node, str) else node


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
NASTY = st.sampled_from(["\0", "\t", "\n", "\x7f", "\x85", "\u202e", ".", "=", "", " ", "é"])
KEY = st.one_of(TEXT, st.builds(lambda a, b, c: a + b + c, TEXT, NASTY, TEXT))


@settings(max_examples=300, deadline=None)
@given(env=st.dictionaries(KEY, st.one_of(TEXT, st.builds(lambda a, b: a + b, TEXT, NASTY)),
                           max_size=4),
       top=st.dictionaries(KEY, st.lists(TEXT, max_size=3), max_size=3),
       argv=st.lists(st.one_of(TEXT, st.builds(lambda a, b: a + b, NASTY, TEXT)), max_size=3))
def test_accepted_manifests_survive_a_c_string_view(env: dict[str, str],
                                                    top: dict[str, list[str]],
                                                    argv: list[str]) -> None:
    document = tomllib.loads(manifest_text())
    document["loader"]["env"] = env
    document["loader"]["argv"] = argv
    document["sys"] = top
    text = tomli_w.dumps(document)
    try:
        manifest = parse_manifest(text, "m")
    except ManifestError as exc:
        assert "\n" not in str(exc) and "\0" not in str(exc)
        return
    assert c_view(manifest) == manifest
    # What we write is what Gramine reads back: no escape tomlc99 refuses
    # (it reads \\u only with upper-case hex) is ever needed.
    written = dumps(manifest)
    assert tomllib.loads(written) == manifest
    assert all(ch >= " " and not "\x7f" <= ch <= "\x9f" for ch in written.replace("\n", ""))


# --- hypothesis: URIs accepted are Gramine's normal form -------------------
COMPONENT = st.sampled_from(["", ".", "..", "a", "b", "lib", "x y", "é"])
RAW_PATH = st.builds(lambda lead, parts, trail: lead + "/".join(parts) + trail,
                     st.sampled_from(["", "/", "//"]), st.lists(COMPONENT, max_size=5),
                     st.sampled_from(["", "/", "//"]))


def _normal(path: str) -> bool:
    """Gramine's normal form, and no '..' (which Gramine keeps at the start
    of a relative path, to climb out of the host's current folder)."""
    return path != "" and path == gramine_norm_path(path) and ".." not in path.split("/")


@settings(max_examples=500, deadline=None)
@given(path=RAW_PATH)
def test_accepted_uris_equal_their_gramine_normal_form(path: str) -> None:
    entry = f'"file:{path}"'
    try:
        parse_manifest(manifest_text(_extra=f"loader.entrypoint.uri = {entry}\n"), "m")
        accepted_file = True
    except ManifestError as exc:
        assert "loader.entrypoint.uri" in str(exc)
        accepted_file = False
    assert accepted_file == _normal(path), path
    try:
        parse_manifest(manifest_text(sgx__allowed_files=f"[{entry}]"), "m")
        accepted_folder = True
    except ManifestError as exc:
        assert "sgx.allowed_files[0]" in str(exc)
        accepted_folder = False
    # A folder entry may end in one '/': without it, it is in normal form.
    body = path[:-1] if path.endswith("/") and path != "/" else path
    assert accepted_folder == _normal(body), path


@given(path=RAW_PATH)
def test_gramine_norm_path_matches_posix_rules(path: str) -> None:
    """An independent check of our port of get_norm_path: POSIX normpath,
    except that Gramine writes '' for '.' and one '/' for a leading '//'."""
    norm = gramine_norm_path(path)
    assert gramine_norm_path(norm) == norm
    assert (canonical_path(norm) is None) == (norm != "" and ".." not in norm.split("/"))
    posix = posixpath.normpath("/" + path.lstrip("/") if path.startswith("/") else path)
    assert (norm or ".") == posix


@pytest.mark.parametrize("path,norm", [
    # Gramine's own get_norm_path behaviour (common/src/path_utils.c).
    ("/a/b/../c", "/a/c"), ("../a", "../a"), ("a/../../b", "../b"), ("/..", "/"),
    ("//a//b/", "/a/b"), ("", ""), (".", ""), ("./", ""), ("/", "/"), ("a/./b/.", "a/b"),
    ("../../x/..", "../.."),
])
def test_gramine_norm_path_vectors(path: str, norm: str) -> None:
    assert gramine_norm_path(path) == norm


def test_key_paths_are_shown_escaped() -> None:
    assert key_path(("sgx", "file_check_policy\0x")) == 'sgx."file_check_policy\\u0000x"'
    assert key_path(("fs", "mounts", 2, "uri")) == "fs.mounts[2].uri"
    assert key_path(("loader", "env", "A\u202eB")) == 'loader.env."A\\u202eB"'
    assert key_path(()) == "the manifest"


# --- build-custom and sign-image read the same way (in-memory engine) ------
SMALL = {"enclave_size": "256M", "max_threads": "4"}
UNSIGNED_MANIFEST = "/ppml/python-ml.manifest"


@pytest.mark.parametrize("old,new,fragments", [
    ("", "sgx.debugg = true\n", ("Gramine's schema", "unknown key sgx.debugg")),
    ("", 'sgx."file_check_policy\\u0000x" = "allow_all_but_log"\n',
     ('sgx."file_check_policy\\u0000x"', "U+0000")),
    ('"file:/etc/hosts"', '"dev:/usr/lib"', ("sgx.allowed_files[0]", "only file:")),
], ids=["schema", "nul-key", "dev-uri"])
def test_build_custom_reads_as_gramine(old: str, new: str, fragments: tuple[str, ...],
                                       mem: Any, enclave_key: Path, mem_app: Path,
                                       tmp_path: Path) -> None:
    from ppml_image.images.enclave import custom

    shipped = (Path(__file__).parent.parent / "manifests" / "python-ml.manifest.j2").read_text()
    template = tmp_path / "hostile.manifest.j2"
    assert old in shipped
    template.write_text(shipped.replace(old, new) if old else shipped + new)
    for release in (False, True):
        with pytest.raises(ManifestError) as refused:
            custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/h:1",
                                template=template, defines=dict(SMALL), release=release,
                                quiet=True, engine=mem)
        for fragment in fragments:
            assert fragment in str(refused.value)
        assert "mem/h:1" not in mem.tags and "mem/h:1-unsigned" not in mem.tags


@pytest.mark.parametrize("line,fragments", [
    ("sgx.debugg = true\n", ("Gramine's schema", "unknown key sgx.debugg")),
    ('loader."env\\u0000".LD_PRELOAD = { passthrough = true }\n',
     ('loader."env\\u0000"', "U+0000")),
], ids=["schema", "nul-key"])
def test_sign_image_reads_as_gramine(line: str, fragments: tuple[str, ...], mem: Any,
                                     enclave_key: Path, mem_app: Path) -> None:
    """An unsigned image whose manifest was changed after build-custom checked it."""
    from ppml_image.images.enclave import custom
    from ppml_image.testing import mem_file

    custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/app:1",
                        defines=dict(SMALL), quiet=True, engine=mem)
    original = mem.images[mem.tags["mem/app:1-unsigned"]].files[UNSIGNED_MANIFEST].data
    mem.derive("mem/app:1-unsigned", {UNSIGNED_MANIFEST: mem_file(original + line.encode())},
               tag="mem/h:1-unsigned")
    for release in (False, True):
        with pytest.raises(ManifestError) as refused:
            custom.sign_image("mem/h:1-unsigned", enclave_key, release=release, quiet=True,
                              base="mem/base:1", engine=mem)
        for fragment in fragments:
            assert fragment in str(refused.value)
        assert "mem/h:1" not in mem.tags


@pytest.mark.parametrize("file_name,code", [("a\x1fb", "U+001F"), ("a\x7fb", "U+007F"),
                                            ("evil\u202etxt.so", "U+202E")])
def test_names_found_in_trusted_folders_are_read_too(file_name: str, code: str,
                                                     tmp_path: Path, rootfs: Path,
                                                     enclave_key: Path) -> None:
    """A trusted folder's files join the manifest only after parsing: a name
    tomli-w would write as an escape tomlc99 refuses is refused when signing."""
    (rootfs / "app" / "lib" / file_name).write_bytes(b"x")
    text = manifest_text(sgx__trusted_files='["file:/app/bin/app", "file:/app/lib/"]')
    result, out = _sign(tmp_path, rootfs, enclave_key, text)
    assert_one_line_error(result, "sgx.trusted_files[", code)
    assert list(out.iterdir()) == []
