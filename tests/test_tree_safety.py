"""Trees under hostile input: a --chroot cannot be escaped, even by a race;
FIFOs, sockets and devices are refused at once; every tree error is one line;
Ctrl-C and SIGTERM stop hashing and measuring at once, leaving nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import COMMON, Result, assert_one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppml_image.errors import ManifestError
from ppml_image.sgx.manifest.document import finalize, parse_manifest
from ppml_image.sgx.measure.tree import DiskTree, HostTree, NotRegularFile, tree_for

PAL = COMMON / "fake_libpal.so"
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.syscall.restype = ctypes.c_long


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sparse(path: Path, size: int) -> None:
    """A file of *size* zero bytes that takes no disk space."""
    with open(path, "wb") as handle:
        handle.truncate(size)


# --------------------------------------------------------------------------
# A chroot cannot be escaped, even by a race
# --------------------------------------------------------------------------
def _exchange(first: Path, second: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically (a folder and a link)."""
    if _LIBC.renameat2(-100, bytes(first), -100, bytes(second), 2) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(first))


@dataclass
class _Swapper:
    """A thread that swaps pairs of names for as long as it runs."""

    pairs: list[tuple[Path, Path]]
    swaps: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for first, second in self.pairs:
                _exchange(first, second)
                self.swaps += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self.stop.set()
            thread.join()


def test_swapping_folders_for_host_links_never_reads_the_host(tmp_path: Path) -> None:
    """A thread swaps a folder (and a file) for absolute links to a host folder
    while large files are hashed. The host's bytes and names never appear."""
    root, host = tmp_path / "root", tmp_path / "host"
    host.mkdir()
    (host / "secret").write_bytes(b"HOST SECRET")
    (host / "host-only").write_bytes(b"HOST ONLY")
    forbidden = {_sha(b"HOST SECRET"), _sha(b"HOST ONLY")}
    (root / "big").mkdir(parents=True)
    for index in range(4):  # sparse: hashing takes real time, the disk nothing
        _sparse(root / "big" / f"f{index}", (16 + index) << 20)
    (root / "data").mkdir()
    (root / "data/secret").write_bytes(b"inside")
    (root / "swap").symlink_to(host)  # absolute: the host folder, if followed on the host
    (root / "files").mkdir()
    (root / "files/secret").write_bytes(b"inside file")
    (root / "files/swap").symlink_to(host / "secret")
    decoy = root / str(host).lstrip("/")  # where the links lead inside the root
    decoy.mkdir(parents=True)
    (decoy / "secret").write_bytes(b"decoy")
    manifest = parse_manifest(
        'loader.entrypoint.uri = "file:/data/secret"\n'
        'sgx.trusted_files = ["file:/big/", "file:/data/secret", "file:/data/", '
        '"file:/files/secret"]\n', "race")
    swapper = _Swapper([(root / "data", root / "swap"),
                        (root / "files/secret", root / "files/swap")])
    outcomes: list[str] = []
    with swapper.running():
        for _ in range(40):
            try:
                final = finalize(manifest, tree_for(root), "race")
            except ManifestError:
                outcomes.append("error")  # the tree changed under us: a fine answer
                continue
            entries = [final["loader"]["entrypoint"], *final["sgx"]["trusted_files"]]
            assert not forbidden & {e["sha256"] for e in entries}, entries
            assert not any("host-only" in e["uri"] for e in entries), entries
            outcomes.append("ok")
    assert swapper.swaps > 1000, swapper.swaps  # the race was real
    print(f"race: {swapper.swaps} swaps, outcomes {sorted(set(outcomes))}: "
          f"{outcomes.count('ok')} ok, {outcomes.count('error')} errors")
    assert "ok" in outcomes, outcomes  # and measuring went through it


# The kernel is the reference for chroot semantics: openat2(RESOLVE_IN_ROOT)
# resolves absolute links at the root and stops `..` there, as Gramine's
# chroot does. Random trees of folders, files and links must resolve alike.
_NAMES = ["a", "b", "c"]
_component = st.sampled_from([*_NAMES, "..", "."])
_rel_path = st.lists(_component, min_size=1, max_size=4).map("/".join)
_target = st.tuples(st.booleans(), _rel_path).map(lambda t: ("/" if t[0] else "") + t[1])
_node_path = st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3).map("/".join)
_node = st.tuples(_node_path, st.sampled_from(["file", "dir", "link"]), _target)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _kernel_open(root_fd: int, path: str) -> int | None:
    """openat2(root, path, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), or None."""
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, 0x10 | 0x02)
    fd = _LIBC.syscall(437, root_fd, path.encode(), ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        return int(fd)
    if ctypes.get_errno() == 38:  # ENOSYS: a kernel before 5.6
        pytest.skip("openat2 is not available")
    return None


def _real_folder(path: Path) -> bool:
    """A folder that is not a link (the test must never write through its own links)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _build(root: Path, nodes: list[tuple[str, str, str]]) -> None:
    for path, kind, target in nodes:
        where = root / path
        parents = [root / "/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
        if not all(_real_folder(p) for p in parents) or os.path.lexists(where):
            continue
        if kind == "file":
            where.write_bytes(path.encode())  # the content names the file
        elif kind == "dir":
            where.mkdir()
        else:
            where.symlink_to(target)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(nodes=st.lists(_node, max_size=12), queries=st.lists(_rel_path, min_size=1, max_size=6))
def test_chroot_resolution_matches_the_kernels_resolve_in_root(
        tmp_path_factory: pytest.TempPathFactory, nodes: list[tuple[str, str, str]],
        queries: list[str]) -> None:
    root = tmp_path_factory.mktemp("tree")
    _build(root, nodes)
    tree = DiskTree(root)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for query in ["/" + q for q in queries]:
            fd = _kernel_open(root_fd, query)
            kind = tree.kind(query)
            if fd is None:
                assert kind is None, (query, kind)
                continue
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISDIR(mode):
                    listed = os.listdir(f"/proc/self/fd/{fd}")
                    assert kind == "dir", query
                    assert sorted(tree.list_dir(query)) == sorted(listed), query
                else:
                    content = Path(f"/proc/self/fd/{fd}").read_bytes()
                    assert kind == "file", query
                    # hash_files resolves on its own (descriptor walk), from the raw path too
                    assert tree.hash_files([query]) == [_sha(content)], query
                    assert tree.hash_files([tree.resolve(query)]) == [_sha(content)], query
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)


def test_folder_descriptors_stay_bounded_over_many_folders(tmp_path: Path) -> None:
    """More folders than descriptors kept open: results stay right, fds stay few."""
    root = tmp_path / "root"
    for index in range(700):
        folder = root / "many" / f"d{index:03}" / "sub"
        folder.mkdir(parents=True)
        (folder / "f").write_bytes(str(index).encode())
    manifest = parse_manifest('loader.entrypoint.uri = "file:/many/d000/sub/f"\n'
                              'sgx.trusted_files = ["file:/many/"]\n', "many")
    before = len(os.listdir("/proc/self/fd"))
    tree = tree_for(root)
    final = finalize(manifest, tree, "many")
    held = len(os.listdir("/proc/self/fd")) - before
    assert [e["sha256"] for e in final["sgx"]["trusted_files"]] == [
        _sha(str(i).encode()) for i in range(700)]
    assert 0 < held <= 260, held  # the root, and at most 256 folders
    del tree, final
    assert len(os.listdir("/proc/self/fd")) <= before


# --------------------------------------------------------------------------
# FIFOs, sockets and devices are refused at once, on the descriptor read
# --------------------------------------------------------------------------
@contextlib.contextmanager
def _special(kind: str, where: Path) -> Iterator[None]:
    """Create a FIFO, a listening socket or a character device at *where*."""
    if kind == "fifo":
        os.mkfifo(where)
        yield
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(where.parent)  # a socket path is limited to 108 bytes: bind by name
        try:
            sock.bind(where.name)
        finally:
            os.chdir(cwd)
        sock.listen()
        with sock:
            yield
    else:
        try:
            os.mknod(where, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            pytest.skip("creating a device needs CAP_MKNOD")
        yield


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
@pytest.mark.parametrize("chroot", [True, False], ids=["chroot", "host"])
def test_hash_files_checks_the_descriptor_it_reads(kind: str, chroot: bool,
                                                   tmp_path: Path) -> None:
    """Below the manifest's own kind check: a special file given straight to
    hash_files (as if swapped in after that check) is refused without blocking."""
    with _special(kind, tmp_path / "special"):
        tree = DiskTree(tmp_path) if chroot else HostTree()
        path = "/special" if chroot else str(tmp_path / "special")
        with pytest.raises(NotRegularFile, match="special is not a regular file"):
            tree.hash_files([path])
        with pytest.raises(NotRegularFile):
            tree.hash_files([path, path])  # the parallel path too
        with pytest.raises(NotRegularFile):
            tree.read_bytes(path)


# --------------------------------------------------------------------------
# Bad input: one line naming the user's path, exit 1, nothing written.
# One table; every case runs with --chroot and without (host paths).
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    id: str
    fragment: str
    trusted: tuple[str, ...] = ()
    entrypoint: str = "/app/bin/app"
    setup: Callable[[Path], contextlib.AbstractContextManager[None]] | None = None
    modes: tuple[str, ...] = ("chroot", "host")
    without_dac_override: bool = False  # as root: drop CAP_DAC_OVERRIDE so modes apply
    raw: bool = False  # trusted URIs are host paths as written, never under the chroot


def _make(kind: str, rel: str) -> Callable[[Path], contextlib.AbstractContextManager[None]]:
    return lambda root: _special(kind, root / rel)


@contextlib.contextmanager
def _non_utf8_name(root: Path) -> Iterator[None]:
    (root / "app/data").mkdir()
    (root / "app/data/ok").write_bytes(b"ok")
    with open(os.path.join(os.fsencode(root / "app/data"), b"caf\xe9"), "wb") as handle:
        handle.write(b"latin-1 name")
    yield


@contextlib.contextmanager
def _unreadable(root: Path) -> Iterator[None]:
    (root / "app/secret").write_bytes(b"secret")
    os.chmod(root / "app/secret", 0)
    (root / "app/private").mkdir()
    (root / "app/private/x").write_bytes(b"x")
    os.chmod(root / "app/private", 0)
    yield


BAD_TREE_INPUTS = [
    Bad("fifo-trusted", "is not a regular file", ("/app/fifo",), setup=_make("fifo", "app/fifo")),
    Bad("fifo-entrypoint", "is not a regular file", entrypoint="/app/fifo",
        setup=_make("fifo", "app/fifo")),
    Bad("socket-trusted", "is not a regular file", ("/app/sock",),
        setup=_make("socket", "app/sock")),
    Bad("socket-entrypoint", "is not a regular file", entrypoint="/app/sock",
        setup=_make("socket", "app/sock")),
    Bad("device-trusted", "is not a regular file", ("/app/null",),
        setup=_make("device", "app/null")),
    Bad("device-entrypoint", "is not a regular file", entrypoint="/app/null",
        setup=_make("device", "app/null")),
    Bad("host-device-trusted", "is not a regular file", ("/dev/null",), modes=("host",),
        raw=True),
    Bad("entrypoint-folder-slash", "must be a file", entrypoint="/app/"),
    Bad("entrypoint-folder", "must be a file", entrypoint="/app/bin"),
    Bad("entrypoint-dot", "not a canonical URI", entrypoint="/app/bin/."),  # Gramine reading
    Bad("entrypoint-file-slash", "must be a file", entrypoint="/app/bin/app/"),
    Bad("non-utf8-name", "not UTF-8", ("/app/data/",), setup=_non_utf8_name),
    Bad("file-as-folder", "app/bin/app", ("/app/bin/app/x",)),
    Bad("nul-in-uri", "NUL", ("/app/a\\u0000b",)),
    # /proc/self/mem gave a read error here; a trusted file under /proc is now
    # refused before any read (issue 16.5), which is what this case sees.
    Bad("read-error", "under /proc", ("/proc/self/mem",), modes=("host",), raw=True),
    Bad("unreadable-file", "Permission denied", ("/app/secret",), setup=_unreadable,
        without_dac_override=True),
    Bad("unlistable-folder", "Permission denied", ("/app/private/",), setup=_unreadable,
        without_dac_override=True),
]


def _drop_dac_override() -> None:
    """In the child, before exec: root without CAP_DAC_OVERRIDE/READ_SEARCH obeys file modes."""
    for cap in (1, 2):
        if _LIBC.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _sign(manifest: Path, key: Path, out: Path, *extra: str | Path,
          drop_dac: bool = False, timeout: float = 120) -> Result:
    """``ppml-image sign`` in a subprocess; a hang fails after *timeout* instead of blocking."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_IMAGE_")}
    args = [sys.executable, "-m", "ppml_image", "sign", "--manifest", manifest, "--output",
            out / "app.manifest.sgx", "--libpal", PAL, "--key", key, "--date", "2024-01-01",
            *extra]
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False,
                          preexec_fn=_drop_dac_override if drop_dac else None)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("case,mode", [
    pytest.param(case, mode, id=f"{case.id}-{mode}")
    for case in BAD_TREE_INPUTS for mode in case.modes])
def test_bad_tree_inputs(case: Bad, mode: str, tmp_path: Path, rootfs: Path,
                         enclave_key: Path) -> None:
    prefix = "" if mode == "chroot" else str(rootfs)
    trusted = ", ".join(f'"file:{"" if case.raw else prefix}{t}"' for t in case.trusted)
    manifest = tmp_path / "app.manifest"
    manifest.write_text(
        f'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
        f'loader.entrypoint.uri = "file:{prefix}{case.entrypoint}"\n'
        f'sgx.enclave_size = "64M"\nsgx.max_threads = 2\nsgx.trusted_files = [{trusted}]\n')
    out = tmp_path / "out"
    out.mkdir()
    extra = ["--chroot", rootfs] if mode == "chroot" else []
    with (case.setup or (lambda _root: contextlib.nullcontext()))(rootfs):
        result = _sign(manifest, enclave_key, out, *extra,
                       drop_dac=case.without_dac_override and os.geteuid() == 0)
    assert_one_line_error(result, case.fragment, str(manifest))
    assert result.returncode == 1, result
    assert sorted(os.listdir(out)) == []
    shown = [t for t in (*case.trusted, case.entrypoint) if t != "/app/bin/app"]
    assert any(t.split("\\")[0].rstrip("/.") in result.stderr for t in shown), result.stderr


# --------------------------------------------------------------------------
# Ctrl-C and SIGTERM: hashing and measuring stop at once, nothing is left
# --------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reads_under(pid: int, folder: Path) -> bool:
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(folder) + "/"):
                    return True
    return False


def _interrupt(args: list[str | Path], ready: Callable[[int], bool], signum: int,
               limit: float = 120) -> tuple[int, float]:
    """Start ppml-image, wait until *ready*(pid), send *signum*; (exit code, seconds to exit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_IMAGE_")}
    proc = subprocess.Popen([sys.executable, "-m", "ppml_image", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + limit
        while not ready(proc.pid):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the command never got to work"
            time.sleep(0.02)
        proc.send_signal(signum)
        sent = time.monotonic()
        try:
            code = proc.wait(timeout=5)  # a liveness bound, not a speed claim
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 5 s after signal {signum}")
        return code, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_stops_hashing_many_large_files(signum: int, code: int, tmp_path: Path,
                                               rootfs: Path, enclave_key: Path) -> None:
    big = rootfs / "big"
    big.mkdir()
    for index in range(8):  # 32 GB, sparse: minutes of hashing, no disk
        _sparse(big / f"f{index}", 4 << 30)
    manifest = tmp_path / "app.manifest"
    manifest.write_text('libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                        'sgx.enclave_size = "64M"\n'
                        'sgx.trusted_files = ["file:/app/bin/app", "file:/big/"]\n')
    out = tmp_path / "out"
    out.mkdir()
    got, _seconds = _interrupt(
        ["sign", "--manifest", manifest, "--output", out / "app.manifest.sgx", "--libpal", PAL,
         "--key", enclave_key, "--chroot", rootfs], lambda pid: _reads_under(pid, big), signum)
    assert got == code
    assert os.listdir(out) == []


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_stops_measuring_a_huge_enclave(signum: int, code: int, tmp_path: Path,
                                               rootfs: Path, enclave_key: Path) -> None:
    manifest = tmp_path / "app.manifest"
    # 4 TiB without EDMM: a billion EADD records, minutes of SHA-256.
    manifest.write_text('libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
                        'sgx.enclave_size = "4096G"\n'
                        'sgx.trusted_files = ["file:/app/bin/app"]\n')
    out = tmp_path / "out"
    out.mkdir()
    got, _seconds = _interrupt(
        ["sign", "--manifest", manifest, "--output", out / "app.manifest.sgx", "--libpal", PAL,
         "--key", enclave_key, "--chroot", rootfs, "--max-enclave-size", "8192G"],
        lambda pid: _cpu_seconds(pid) > 1.5, signum)  # past start-up: measuring
    assert got == code
    assert os.listdir(out) == []


@pytest.mark.parametrize("chroot", [True, False], ids=["chroot", "host"])
def test_a_very_deep_tree_is_walked_without_exhausting_the_stack(chroot: bool,
                                                                 tmp_path: Path) -> None:
    """1100 nested folders: more than Python's recursion limit, within PATH_MAX."""
    root = tmp_path / "root"
    (root / "deep").mkdir(parents=True)
    fd = os.open(root / "deep", os.O_RDONLY)
    for _ in range(1100):  # by descriptor: the full path is too long for the test itself
        os.mkdir("d", dir_fd=fd)
        fd, parent = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(parent)
    leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
    os.write(leaf, b"deep")
    os.close(leaf)
    os.close(fd)
    prefix = "" if chroot else str(root)
    uri = f"file:{prefix}/deep{'/d' * 1100}/leaf"
    manifest = parse_manifest(f'loader.entrypoint.uri = "{uri}"\n'
                              f'sgx.trusted_files = ["file:{prefix}/deep/"]\n', "deep")
    try:
        final = finalize(manifest, tree_for(root if chroot else None), "deep")
    finally:
        _remove_chain(root / "deep")
    assert final["sgx"]["trusted_files"] == [{"uri": uri, "sha256": _sha(b"deep")}]
    assert final["loader"]["entrypoint"]["sha256"] == _sha(b"deep")


def _remove_chain(top: Path) -> None:
    """Remove a deep chain of "d" folders (shutil.rmtree recurses; pytest would fail to)."""
    while (top / "d").is_dir():
        if (top / "d/d").is_dir():
            os.rename(top / "d/d", top / "up")  # pull the chain up by one level
            for entry in os.listdir(top / "d"):
                os.unlink(top / "d" / entry)
            os.rmdir(top / "d")
            os.rename(top / "up", top / "d")
        else:
            for entry in os.listdir(top / "d"):
                os.unlink(top / "d" / entry)
            os.rmdir(top / "d")


@pytest.mark.parametrize("chroot", [True, False], ids=["chroot", "host"])
def test_special_files_in_a_trusted_folder_are_skipped_unopened(chroot: bool,
                                                               tmp_path: Path) -> None:
    """As Gramine: a folder walk lists regular files only; a FIFO there must not block."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "b-file").write_bytes(b"b")
    (share / "fifo-link").symlink_to("a-fifo")
    with _special("fifo", share / "a-fifo"), _special("socket", share / "c-sock"):
        prefix = "" if chroot else str(tmp_path)
        manifest = parse_manifest(f'loader.entrypoint.uri = "file:{prefix}/share/b-file"\n'
                                  f'sgx.trusted_files = ["file:{prefix}/share/"]\n', "m")
        final = finalize(manifest, tree_for(tmp_path if chroot else None), "m")
    assert final["sgx"]["trusted_files"] == [{"uri": f"file:{prefix}/share/b-file",
                                              "sha256": _sha(b"b")}]


@pytest.mark.parametrize("chroot", [True, False], ids=["chroot", "host"])
def test_kind_of_a_path_with_nul_is_none(chroot: bool, tmp_path: Path) -> None:
    """sgx.policy asks Tree.kind about paths from the manifest: a NUL is not a crash."""
    tree = tree_for(tmp_path if chroot else None)
    assert tree.kind(("" if chroot else str(tmp_path)) + "/a\0b") is None
