"""Trusted-file expansion and hashing: folders, symlinks inside a chroot, dedup."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ppml_image.errors import ManifestError
from ppml_image.sgx.manifest.document import finalize, parse_manifest
from ppml_image.sgx.measure.tree import DiskTree, HostTree


def _finalize(root: Path | None, trusted: str, extra: str = "") -> list[dict]:
    text = f'loader.entrypoint.uri = "file:/bin/true"\nloader.entrypoint.sha256 = "{"0" * 64}"\n'
    text += f"sgx.trusted_files = [{trusted}]\n{extra}"
    manifest = parse_manifest(text, "m")
    tree = DiskTree(root) if root else HostTree()
    return finalize(manifest, tree, "m")["sgx"]["trusted_files"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_folder_expansion_order_hidden_files_and_links(tmp_path: Path) -> None:
    share = tmp_path / "srv/share"
    (share / "sub").mkdir(parents=True)
    (share / "B").write_bytes(b"B")
    (share / "a").write_bytes(b"a")
    (share / ".hidden").write_bytes(b"h")
    (share / "sub/x").write_bytes(b"x")
    (share / "link-to-a").symlink_to("a")
    (share / "dangling").symlink_to("nowhere")
    (share / "linked-dir").symlink_to("sub")
    got = _finalize(tmp_path, '"file:/srv/share/"')
    assert [e["uri"] for e in got] == [
        "file:/srv/share/.hidden", "file:/srv/share/B", "file:/srv/share/a",
        "file:/srv/share/link-to-a", "file:/srv/share/sub/x",
    ]
    assert got[3]["sha256"] == _sha(b"a")  # a link is hashed as what it points to


def test_absolute_symlink_resolves_inside_chroot(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real/lib.so").write_bytes(b"inside")
    (tmp_path / "lib").symlink_to("/real")  # absolute: must not escape to the host's /real
    got = _finalize(tmp_path, '"file:/lib/lib.so"')
    assert got == [{"uri": "file:/lib/lib.so", "sha256": _sha(b"inside")}]


def test_dotdot_cannot_escape_chroot(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/conf").write_bytes(b"c")
    (tmp_path / "up").symlink_to("../../../../etc")
    got = _finalize(tmp_path, '"file:/up/conf"')
    assert got[0]["sha256"] == _sha(b"c")


def test_symlink_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(ManifestError, match="loop"):
        _finalize(tmp_path, '"file:/a"')


def test_relative_uri_in_chroot_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="absolute"):
        _finalize(tmp_path, '"file:relative/x"')


def test_duplicates_keep_first_position_and_prefer_given_hash(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"f")
    (tmp_path / "g").write_bytes(b"g")
    given = "ab" * 32
    got = _finalize(tmp_path, f'"file:/f", "file:/g", {{uri = "file:/f", sha256 = "{given}"}}, '
                    '"file:/g"')
    assert got == [{"uri": "file:/f", "sha256": given}, {"uri": "file:/g", "sha256": _sha(b"g")}]


def test_without_chroot_host_paths_are_used(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/one").write_bytes(b"1")
    got = _finalize(None, f'"file:{tmp_path}/d/"')
    assert got == [{"uri": f"file:{tmp_path}/d/one", "sha256": _sha(b"1")}]


def test_relative_paths_without_chroot_use_working_folder(tmp_path: Path) -> None:
    (tmp_path / "rel").write_bytes(b"r")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        got = _finalize(None, '"file:rel"')
    finally:
        os.chdir(cwd)
    assert got == [{"uri": "file:rel", "sha256": _sha(b"r")}]


def test_many_files_hash_in_parallel_and_in_order(tmp_path: Path) -> None:
    data = {f"f{i:03}": os.urandom(i * 997) for i in range(120)}
    (tmp_path / "many").mkdir()
    for name, content in data.items():
        (tmp_path / "many" / name).write_bytes(content)
    got = _finalize(tmp_path, '"file:/many/"')
    assert [(e["uri"], e["sha256"]) for e in got] == [
        (f"file:/many/{n}", _sha(c)) for n, c in sorted(data.items())]


def test_a_given_hash_is_kept_without_looking_at_the_file(tmp_path: Path) -> None:
    # As Gramine keeps it: the file need not exist here, and what is at its
    # path (a folder, a link loop) is not read; the enclave checks the hash
    # when it opens the file.
    (tmp_path / "folder").mkdir()
    (tmp_path / "loop").symlink_to("loop")
    given = "ab" * 32
    entries = ", ".join(f'{{uri = "file:/{p}", sha256 = "{given}"}}'
                        for p in ("missing/file", "folder", "loop"))
    got = _finalize(tmp_path, entries)
    assert got == [{"uri": f"file:/{p}", "sha256": given}
                   for p in ("missing/file", "folder", "loop")]
    # Without a hash the same paths are looked at, and refused.
    with pytest.raises(ManifestError, match="is a folder"):
        _finalize(tmp_path, '"file:/folder"')
    with pytest.raises(ManifestError, match="loop"):
        _finalize(tmp_path, '"file:/loop"')


@pytest.mark.parametrize("path", ["/proc/self/environ", "/sys/kernel/x", "/proc"])
def test_a_given_hash_under_proc_or_sys_is_still_refused(tmp_path: Path, path: str) -> None:
    entry = f'{{uri = "file:{path}", sha256 = "{"ab" * 32}"}}'
    with pytest.raises(ManifestError, match=r"is under /(proc|sys)"):
        _finalize(tmp_path, entry)
