"""A manifest with 20,000 trusted entries signs to pinned bytes and MRENCLAVE.

The per-entry path (URI normalisation, sha256 checks, Gramine-reading checks)
was made cheaper for manifests of a million entries (issue 17 §3); the pinned
figures were taken with the code before that change, so any change to what is
written or measured shows here. The entries mix the forms that path treats
differently: absolute URIs with a sha256 (names starting with '.' or '..'
too), a trusted folder, unhashed files and duplicates.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from pathlib import Path, PurePosixPath

from ppml_image.sgx.manifest.document import (
    _NORMAL_PATH,
    finalize,
    parse_manifest,
    uri_to_path,
)
from ppml_image.sgx.measure.elf import load_elf
from ppml_image.sgx.measure.tree import DiskTree
from ppml_image.sgx.sign import prepare_enclave

PAL = Path(__file__).parent / "vectors/_common/gcc_libpal.so"
ENTRIES = 20_000
# Taken with the code of commit bf62c11, before the per-entry fast paths.
PINNED_MANIFEST_SHA256 = "ca2662b8e7f1a76472fca3792320cea349e2605ae45ea65360123456c74b0454"
PINNED_MRENCLAVE = "f775b7efa1ca23e3738170206b830dbe7d277a84760bff6fbed5456698cd48c3"
FORMS = ("file:/app/0/{i}.py", "file:/app/0/.{i}", "file:/app/0/..{i}", "file:/app/0/{i}")


def _tree(root: Path) -> None:
    (root / "app/0").mkdir(parents=True)
    (root / "app/share/sub").mkdir(parents=True)
    for name, data in (("main", b"main"), ("0/lib.so", b"lib"), ("share/a", b"a"),
                       ("share/sub/b", b"b")):
        (root / "app" / name).write_bytes(data)


def _manifest() -> str:
    lines = ['libos.entrypoint = "/app/main"', "fs.mounts = []",
             'loader.entrypoint.uri = "file:/app/main"',
             'sgx.enclave_size = "256M"', "sgx.max_threads = 4", ""]
    for uri in ("file:/app/0/lib.so", "file:/app/share/", "file:/app/main", "file:/app/0/lib.so"):
        lines += ["[[sgx.trusted_files]]", f'uri = "{uri}"', ""]
    for i in range(ENTRIES):
        digest = hashlib.sha256(str(i % (ENTRIES - 7)).encode()).hexdigest()
        uri = FORMS[i % len(FORMS)].format(i=i % (ENTRIES - 7))  # the last 7 repeat
        lines += ["[[sgx.trusted_files]]", f'uri = "{uri}"', f'sha256 = "{digest}"', ""]
    return "\n".join(lines)


def _signed(root: Path) -> tuple[str, str]:
    _tree(root)
    signed = prepare_enclave(_manifest(), pal=load_elf(PAL), tree=DiskTree(root),
                             date=dt.date(2025, 1, 1), name="many")
    return (hashlib.sha256(signed.manifest_sgx).hexdigest(),
            signed.sigstruct.enclave_hash.hex())


def test_many_entries_sign_to_pinned_bytes(tmp_path: Path) -> None:
    assert _signed(tmp_path) == (PINNED_MANIFEST_SHA256, PINNED_MRENCLAVE)


def test_fast_path_is_pathlib() -> None:
    """Every path the fast path takes is one PurePosixPath leaves as it is."""
    parts = ["/", ".", "..", "a", ".a", "a.", "\n"]
    paths = [""]
    for _ in range(6):
        paths = [p + q for p in paths for q in parts]
        for path in paths:
            assert uri_to_path(f"file:{path}", "m") == str(PurePosixPath(path)), path
            if _NORMAL_PATH.fullmatch(path):
                assert str(PurePosixPath(path)) == path, path


def test_finalize_leaves_its_input_as_it_was(tmp_path: Path) -> None:
    """The entries are shared with the result, not copied: they must not change."""
    _tree(tmp_path)
    manifest = parse_manifest('loader.entrypoint.uri = "file:/app/main"\n'
                              'sgx.trusted_files = ["file:/app/0/lib.so", "file:/app/share/"]\n',
                              "m")
    before = copy.deepcopy(manifest)
    final = finalize(manifest, DiskTree(tmp_path), "m")
    assert manifest == before
    assert [e["uri"] for e in final["sgx"]["trusted_files"]] == [
        "file:/app/0/lib.so", "file:/app/share/a", "file:/app/share/sub/b"]
    assert "sha256" in final["loader"]["entrypoint"]


def test_cycle_collection_is_restored() -> None:
    """Paused for a manifest, the collector comes back as it was, even on an error."""
    import gc

    from ppml_image._gc import cycle_collection_paused

    assert gc.isenabled()
    try:
        with cycle_collection_paused():
            assert not gc.isenabled()
            raise ValueError
    except ValueError:
        pass
    assert gc.isenabled()
    gc.disable()
    try:
        with cycle_collection_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


def test_deep_dotted_key_found_on_any_line() -> None:
    """The long-line filter in front of the dotted-key scan misses no deep key."""
    import pytest

    from ppml_image.errors import ManifestError

    deep = "a" + ".a" * 64 + " = 1"
    for text in (deep, f"x = 1\n{deep}\n", f"x = 1\n\n{deep}", "'q'" + ".'q'" * 64 + " = 1"):
        with pytest.raises(ManifestError, match="more than 64 parts"):
            parse_manifest(text, "m")
    parse_manifest('x = "' + "a." * 100 + '"\n', "m")  # a long line, no deep key: read
