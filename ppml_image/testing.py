"""Stand-ins for Gramine, for tests and demos on machines without it.

:func:`make_gramine_tree` writes a folder shaped like a Gramine install
(``usr/lib/x86_64-linux-gnu/gramine`` with ``sgx/libpal.so``, ``libsysdb.so``
and ``runtime/glibc/``). The files are NOT Gramine: ``libpal.so`` is a small,
valid ELF64 shared object that measures like a PAL but does nothing, and the
rest are placeholders. Enclaves "signed" against this tree will not run; the
measurement and signing pipeline around them is real.

:class:`MemoryEngine` is an in-memory container engine behind the same seam
as the Docker engine (:mod:`ppml_image.images.engine.core`), and
:func:`memory_base` puts a stand-in base image in it: the logic of
``build-custom``, ``sign-image`` and ``verify`` runs in tests without Docker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import posixpath
import shlex
import struct
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from ppml_image.defaults import REGISTRY_TIMEOUT
from ppml_image.errors import BuildError, EngineError, RegistryError
from ppml_image.images.engine.core import (
    ContainerSpec,
    Engine,
    ImageFiles,
    ImageInfo,
    MissingError,
    PathStat,
    Transfer,
    registry_of,
    split_tag,
)
from ppml_image.images.engine.tarstream import ByteStream, normalise
from ppml_image.images.progress import Progress
from ppml_image.sgx import gramine

_RUNTIME_FILES = ("ld-linux-x86-64.so.2", "libc.so.6", "libdl.so.2", "libm.so.6",
                  "libpthread.so.0", "librt.so.1", "libutil.so.1", "libresolv.so.2")


def stand_in_elf(seed: bytes = b"ppml-image stand-in libpal") -> bytes:
    """A 2-segment ELF64 x86-64 shared object (R+X text, R+W data with .bss)."""
    text = (hashlib.sha256(seed).digest() * 200)[:0x1800 - 0x100]
    data = (hashlib.sha256(seed + b"data").digest() * 30)[:0x300]
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 3, 62, 1,
                       0x1010, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    phdrs = (struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, 0x1800, 0x1800, 0x1000)
             + struct.pack("<IIQQQQQQ", 1, 6, 0x1800, 0x2800, 0x2800, 0x300, 0x2000, 0x1000))
    head = ehdr + phdrs
    return head + text[: 0x1800 - len(head)].ljust(0x1800 - len(head), b"\0") + data


def make_gramine_tree(root: Path) -> Path:
    """Write a stand-in Gramine install tree under *root*; returns *root*."""
    pkglibdir = root / gramine.PKGLIBDIR.lstrip("/")
    (pkglibdir / "sgx").mkdir(parents=True, exist_ok=True)
    (pkglibdir / "runtime/glibc").mkdir(parents=True, exist_ok=True)
    (pkglibdir / "sgx/libpal.so").write_bytes(stand_in_elf())
    (pkglibdir / "libsysdb.so").write_bytes(stand_in_elf(b"stand-in libsysdb"))
    for name in _RUNTIME_FILES:
        (pkglibdir / "runtime/glibc" / name).write_bytes(
            b"stand-in runtime file " + name.encode() + b"\n" * 64)
    bindir = root / "usr/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for tool in ("gramine-sgx", "gramine-direct"):
        script = bindir / tool
        # A bash script, like Gramine's own: bash looks users up (NSS) and
        # loads modules before any enclave starts, which the tests must see.
        script.write_text("#!/usr/bin/env bash\n"
                          "echo 'this is a stand-in for Gramine, not Gramine' >&2\n"
                          "exit 78\n")
        script.chmod(0o755)
    return root


# --------------------------------------------------------------------------
# An in-memory engine: the logic above the engine seam, tested without Docker
# --------------------------------------------------------------------------
@dataclass
class MemFile:
    """One entry of an in-memory image: a file (bytes, or *size* zero bytes), folder or link."""

    kind: str  # "file", "dir", "link" or "other"
    data: bytes | None = None
    mode: int = 0o644
    link: str = ""
    size: int = 0  # for data=None files: that many zero bytes, generated as they stream

    @property
    def length(self) -> int:
        return len(self.data) if self.data is not None else self.size


def mem_file(data: bytes, mode: int = 0o644) -> MemFile:
    return MemFile("file", data, mode)


def mem_link(target: str) -> MemFile:
    return MemFile("link", mode=0o777, link=target)


@dataclass
class _MemImage:
    info: ImageInfo
    files: dict[str, MemFile]


class _GeneratedStream:
    """A ByteStream over a generator of byte pieces (bounded memory)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buffer = bytearray()
        self.closed = False

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and not self.closed:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def close(self) -> None:
        self.closed = True


def _tar_pieces(entries: list[tuple[str, MemFile]]) -> Iterator[bytes]:
    """A tar archive of *entries* (archive names, no leading "/"), piece by piece."""
    for name, entry in entries:
        info = tarfile.TarInfo(name + ("/" if entry.kind == "dir" else ""))
        info.mode, info.mtime = entry.mode, 0
        info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE,
                     "other": tarfile.FIFOTYPE}[entry.kind]
        info.linkname = entry.link
        info.size = entry.length if entry.kind == "file" else 0
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if entry.kind == "file":
            if entry.data is not None:
                yield entry.data
            else:
                left = entry.size
                while left:
                    step = min(left, 1 << 20)
                    yield bytes(step)
                    left -= step
            yield bytes(-info.size % 512)
    yield bytes(1024)


class _MemFiles(ImageFiles):
    def __init__(self, engine: MemoryEngine, image: _MemImage) -> None:
        super().__init__(image.info.id)
        self.engine, self.mem = engine, image

    def export(self) -> ByteStream:
        return _GeneratedStream(_tar_pieces(
            [(path.lstrip("/"), entry) for path, entry in sorted(self.mem.files.items())
             if path != "/"]))

    def archive(self, path: str) -> ByteStream:
        files = self.mem.files
        resolved = _resolve(files, path, follow_last=path.endswith("/"))
        if resolved is None or resolved not in files:
            raise MissingError(f"{self.image}:{path}: not found")
        name = posixpath.basename(path.rstrip("/")) or "."
        entries = [(name, files[resolved])]
        if files[resolved].kind == "dir":
            prefix = resolved.rstrip("/") + "/"
            entries += [(name + "/" + p[len(prefix):], e) for p, e in sorted(files.items())
                        if p.startswith(prefix)]
        return _GeneratedStream(_tar_pieces(entries))

    def stat(self, path: str) -> PathStat | None:
        files = self.mem.files
        parent = _resolve(files, posixpath.dirname(path), follow_last=True)
        where = posixpath.join(parent, posixpath.basename(path)) if parent else None
        entry = files.get(where) if where else None
        if entry is None or where is None:
            return None
        target = ""
        if entry.kind == "link":
            target = _resolve(files, where, follow_last=True) or ""
        return PathStat(entry.kind, entry.mode & 0o7777, entry.length, target)


def _resolve(files: dict[str, MemFile], path: str, *, follow_last: bool,
             depth: int = 0) -> str | None:
    """*path* with its folders' symlinks (and the last one's, if asked) resolved in-image."""
    if depth > 40:
        return None
    parts = [p for p in path.split("/") if p and p != "."]
    current = "/"
    for index, part in enumerate(parts):
        if part == "..":
            current = posixpath.dirname(current)
            continue
        candidate = posixpath.join(current, part)
        entry = files.get(candidate)
        last = index == len(parts) - 1
        if entry is not None and entry.kind == "link" and (follow_last or not last):
            target = entry.link if entry.link.startswith("/") else posixpath.join(current,
                                                                                  entry.link)
            resolved = _resolve(files, target, follow_last=True, depth=depth + 1)
            if resolved is None:
                return None
            current = resolved
        else:
            current = candidate
    return current


class MemoryEngine(Engine):
    """Images in memory, with the seam's semantics: content-addressed ids, untagged builds.

    ``build`` understands the Dockerfile subset ppml-image writes (FROM,
    COPY, WORKDIR, CMD, ENTRYPOINT, ENV, USER, LABEL, ONBUILD COPY); RUN
    needs a real engine. :meth:`add_image` and :meth:`derive` make images
    directly, as a hostile publisher would.

    ``registry`` stands for every registry at once (``NAME:TAG`` and
    ``NAME@DIGEST`` to image ids); a registry host in ``unreachable`` does
    not answer. Tests of what a real registry does use a real one.
    """

    where = "the in-memory engine"

    def __init__(self) -> None:
        self.images: dict[str, _MemImage] = {}
        self.tags: dict[str, str] = {}
        self.containers: dict[str, ContainerSpec] = {}
        self.open_count = 0
        self.digests: dict[str, str] = {}  # local NAME@DIGEST references
        self.registry: dict[str, str] = {}
        self.unreachable: set[str] = set()

    # -- making images --------------------------------------------------------
    def add_image(self, files: Mapping[str, MemFile | None], *, parent: str | None = None,
                  tag: str | None = None, **config: Any) -> str:
        """A new image: *parent*'s files and config, plus *files* (None deletes) as one layer."""
        base = self._get(parent) if parent else None
        merged = dict(base.files) if base else {"/": MemFile("dir", mode=0o755)}
        for path, entry in files.items():
            _put(merged, path, entry)
        layer = hashlib.sha256(json.dumps(
            sorted((p, e.kind, e.mode, e.link, e.length,
                    hashlib.sha256(e.data or b"").hexdigest() if e.data is not None else "")
                   for p, e in files.items() if e is not None)
            + sorted(p for p, e in files.items() if e is None)).encode()).hexdigest()
        layers = (base.info.layers if base else ()) + ((f"sha256:{layer}",) if files else ())
        values: dict[str, Any] = dict(base.info.__dict__) if base else {}
        values.update(config, layers=layers)
        values.pop("id", None)
        values.pop("tags", None)
        if base and "labels" in config:
            values["labels"] = {**base.info.labels, **config["labels"]}
        digest = hashlib.sha256(json.dumps(
            {k: v for k, v in sorted(values.items())}, default=str).encode()).hexdigest()
        image_id = f"sha256:{digest}"
        values["size"] = sum(e.length for e in merged.values())
        self.images[image_id] = _MemImage(ImageInfo(id=image_id, **values), merged)
        if tag:
            self.tag(image_id, tag)
        return image_id

    def derive(self, image: str, files: Mapping[str, MemFile | None] | None = None, *,
               tag: str | None = None, **config: Any) -> str:
        """An image FROM *image* with *files* changed (None: deleted) and *config* set."""
        return self.add_image(files or {}, parent=image, tag=tag, **config)

    def _get(self, ref: str) -> _MemImage:
        image_id = self.tags.get(ref) or self.digests.get(ref) or ref
        if image_id not in self.images:
            raise EngineError(f"image {ref} not found")
        return self.images[image_id]

    # -- the seam ---------------------------------------------------------------
    def find_image(self, ref: str) -> ImageInfo | None:
        image_id = self.tags.get(ref) or self.digests.get(ref) or ref
        image = self.images.get(image_id)
        if image is None:
            return None
        tags = tuple(t for t, i in sorted(self.tags.items()) if i == image_id)
        digests = tuple(d for d, i in sorted(self.digests.items()) if i == image_id)
        return dataclasses.replace(image.info, tags=tags, repo_digests=digests)

    @contextlib.contextmanager
    def open(self, image: str) -> Iterator[ImageFiles]:
        mem = self._get(image)
        self.open_count += 1
        try:
            yield _MemFiles(self, mem)
        finally:
            self.open_count -= 1

    def tag(self, image_id: str, ref: str, *, restore: bool = False) -> None:
        self.tags[ref] = self._get(image_id).info.id

    def remove_image(self, ref: str) -> None:
        image_id = self.tags.pop(ref, None) or self.digests.pop(ref, None)
        if image_id is not None and image_id not in self.tags.values():
            # Like the engine: the last tag gone, the image and its digests go too.
            for digest in [d for d, i in self.digests.items() if i == image_id]:
                del self.digests[digest]

    def pull(self, ref: str, *, progress: Progress | None = None,
             timeout: int = REGISTRY_TIMEOUT) -> Transfer:
        self._registry_answers(f"pulling {ref}", ref)
        image_id = self.registry.get(ref)
        if image_id is None:
            raise RegistryError(f"pulling {ref}: not found in registry {registry_of(ref)}",
                                "not-found")
        name, at, _ = ref.partition("@")
        if not at:
            self.tags[ref] = image_id
            name = split_tag(ref)[0]
        self.digests[f"{name}@{self._digest_of(image_id)}"] = image_id
        return Transfer(ref, self._digest_of(image_id),
                        layers_present=len(self.images[image_id].info.layers))

    def push(self, ref: str, *, progress: Progress | None = None,
             timeout: int = REGISTRY_TIMEOUT) -> Transfer:
        self._registry_answers(f"pushing {ref}", ref)
        image_id = self._get(ref).info.id
        digest = self._digest_of(image_id)
        name = split_tag(ref)[0]
        self.registry[ref] = self.registry[f"{name}@{digest}"] = image_id
        self.digests[f"{name}@{digest}"] = image_id
        return Transfer(ref, digest, layers_sent=len(self.images[image_id].info.layers))

    def _registry_answers(self, what: str, ref: str) -> None:
        if registry_of(ref) in self.unreachable:
            raise RegistryError(f"{what}: registry {registry_of(ref)} does not answer",
                                "unreachable")

    @staticmethod
    def _digest_of(image_id: str) -> str:
        """A manifest digest: content-addressed, and not the image id (as in a registry)."""
        return "sha256:" + hashlib.sha256(b"manifest " + image_id.encode()).hexdigest()

    def import_rootfs(self, tarball: Path, ref: str, changes: list[str]) -> str:
        files: dict[str, MemFile] = {}
        with tarfile.open(tarball) as tar:
            for member in tar:
                files[normalise(member.name)] = _from_member(tar, member)
        return self.add_image(files, tag=ref, cmd=("/bin/bash",))

    def create_container(self, spec: ContainerSpec) -> str:
        container = hashlib.sha256(repr((spec, len(self.containers))).encode()).hexdigest()
        self.containers[container] = spec
        return container

    def run_container(self, spec: ContainerSpec, stdout: BinaryIO, stderr: BinaryIO) -> int:
        raise EngineError(f"running {spec.image}: the in-memory engine cannot run containers")

    def remove_container(self, container: str) -> None:
        self.containers.pop(container, None)

    def build(self, context: IO[bytes], *, what: str, progress: Progress,
              labels: dict[str, str] | None = None, buildargs: dict[str, str] | None = None,
              nocache: bool = False, network_mode: str | None = None,
              extra_hosts: dict[str, str] | None = None) -> str:
        with tarfile.open(fileobj=context) as tar:
            source = {"/" + m.name.strip("/"): _from_member(tar, m) for m in tar}
        dockerfile = source.pop("/Dockerfile").data or b""
        lines = [line for line in dockerfile.decode().splitlines()
                 if line.strip() and not line.startswith("#")]
        image: str | None = None
        for number, line in enumerate(lines, 1):
            progress.step(number, len(lines), line)
            verb, _, rest = line.partition(" ")
            if verb.upper() == "FROM":
                image = self._get(rest.strip()).info.id
                for trigger in self._get(image).info.onbuild:
                    image = self._instruction(image, trigger, source, what)
                image = self.derive(image, onbuild=())
            elif image is None:
                raise BuildError(f"{what}: build failed: {line!r} before FROM")
            else:
                image = self._instruction(image, line, source, what)
        if image is None:
            raise BuildError(f"{what}: build failed: no FROM")
        if labels:
            image = self.derive(image, labels=dict(labels))
        return image

    def _instruction(self, image: str, line: str, source: dict[str, MemFile],
                     what: str) -> str:
        verb, _, rest = line.strip().partition(" ")
        verb, rest = verb.upper(), rest.strip()
        config = self._get(image).info
        if verb == "COPY":
            *sources, dest = shlex.split(rest)
            return self.derive(image, _copy(self._get(image).files, source, sources, dest,
                                            config.workdir))
        if verb in ("CMD", "ENTRYPOINT"):
            value = tuple(json.loads(rest)) if rest.startswith("[") else ("/bin/sh", "-c", rest)
            if verb == "CMD":
                return self.derive(image, cmd=value)
            return self.derive(image, entrypoint=value)
        if verb == "WORKDIR":
            return self.derive(image, {rest: MemFile("dir", mode=0o755)}, workdir=rest)
        if verb == "ENV":
            key, _, setting = rest.partition("=")
            env = tuple(e for e in config.env if not e.startswith(key + "="))
            return self.derive(image, env=(*env, f"{key}={setting}"))
        if verb == "USER":
            return self.derive(image, user=rest)
        if verb == "LABEL":
            key, _, label = rest.partition("=")
            return self.derive(image, labels={key: label.strip('"')})
        if verb == "ONBUILD":
            return self.derive(image, onbuild=(*config.onbuild, rest))
        raise BuildError(f"{what}: build failed: the in-memory engine cannot {verb} "
                         "(use a real engine)")


def _from_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> MemFile:
    if member.isdir():
        return MemFile("dir", mode=member.mode)
    if member.issym():
        return mem_link(member.linkname)
    if member.isfile():
        handle = tar.extractfile(member)
        return MemFile("file", handle.read() if handle else b"", member.mode)
    return MemFile("other", mode=member.mode)


def _put(files: dict[str, MemFile], path: str, entry: MemFile | None) -> None:
    """Write (or delete) *path*, creating parent folders, following folder symlinks."""
    parent = _resolve(files, posixpath.dirname(path), follow_last=True) or "/"
    target = posixpath.join(parent, posixpath.basename(path)) if path != "/" else "/"
    if entry is None:
        for name in [p for p in files if p == target or p.startswith(target + "/")]:
            del files[name]
        return
    folder = parent
    while folder not in files:
        files[folder] = MemFile("dir", mode=0o755)
        folder = posixpath.dirname(folder)
    if entry.kind == "dir" and files.get(target, entry).kind == "dir":
        files.setdefault(target, entry)
        return
    files[target] = entry


def _copy(image_files: dict[str, MemFile], source: dict[str, MemFile], sources: list[str],
          dest: str, workdir: str) -> dict[str, MemFile]:
    dest = posixpath.join(workdir or "/", dest)
    into_folder = dest.endswith("/") or len(sources) > 1
    changes: dict[str, MemFile] = {}
    for name in sources:
        key = "/" + name.strip("/")
        if key not in source:
            raise BuildError(f"COPY {name}: not in the build context")
        if source[key].kind == "dir":
            prefix = key + "/"
            for path, entry in sorted(source.items()):
                if path.startswith(prefix):
                    changes[posixpath.join(dest, path[len(prefix):])] = entry
            changes.setdefault(dest.rstrip("/") or "/", MemFile("dir", mode=0o755))
        else:
            target = posixpath.join(dest, posixpath.basename(key)) if into_folder else dest
            changes[target] = source[key]
    return dict(sorted(changes.items(), key=lambda item: item[0].count("/")))


# --------------------------------------------------------------------------
# A stand-in base image for the in-memory engine
# --------------------------------------------------------------------------
PYTHON_PATHS = {
    "stdlib": "/usr/lib/python3.11", "platstdlib": "/usr/lib/python3.11",
    "purelib": "/usr/local/lib/python3.11/dist-packages",
    "platlib": "/usr/local/lib/python3.11/dist-packages", "scripts": "/usr/local/bin",
    "data": "/usr/local", "include": "/usr/include/python3.11",
    "platinclude": "/usr/include/python3.11",
}
PYTHON_SYS_PATH = ("/usr/lib/python311.zip", "/usr/lib/python3.11",
                   "/usr/lib/python3.11/lib-dynload", "/usr/local/lib/python3.11/dist-packages",
                   "/usr/lib/python3/dist-packages")
PYTHON_KINDS = {
    "/usr/lib/python311.zip": "missing", "/usr/lib/python3.11": "dir",
    "/usr/lib/python3.11/lib-dynload": "missing",
    "/usr/local/lib/python3.11/dist-packages": "dir", "/usr/lib/python3/dist-packages": "dir",
    "/usr/local/bin": "missing", "/usr/local": "dir", "/usr/include/python3.11": "missing",
    "/usr/bin/python3.11": "file",
}
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8")


def base_json(pkglibdir: str = gramine.PKGLIBDIR) -> dict[str, Any]:
    """A ``/etc/ppml-image/base.json`` as ``build-base`` writes it, for the stand-in base."""
    return {
        "profile": "slim",
        "gramine": {"source": "tree", "pkglibdir": pkglibdir,
                    "libpal": f"{pkglibdir}/sgx/libpal.so",
                    "libsysdb": f"{pkglibdir}/libsysdb.so",
                    "runtimedir": f"{pkglibdir}/runtime/glibc", "version": ""},
        "python": {"paths": dict(PYTHON_PATHS),
                   "executable": "/usr/bin/python3.11",
                   "config_vars": {"py_version_short": "3.11",
                                   "EXT_SUFFIX": ".cpython-311-x86_64-linux-gnu.so"},
                   "implementation": {"name": "cpython", "cache_tag": "cpython-311"},
                   "distlib": "/usr/lib/python3/dist-packages",
                   # What python_snapshot records: each name's sys.path, and
                   # what each path is in this stand-in's file system.
                   "sys_paths": {name: list(PYTHON_SYS_PATH) for name in
                                 ("/usr/bin/python3", "/usr/bin/python3.11", "python3",
                                  "python3.11")},
                   "kinds": dict(PYTHON_KINDS)},
        "python_packages": {}, "os_packages": {},
    }


def memory_base(engine: MemoryEngine, gramine_tree: Path, tag: str = "mem/base:1") -> str:
    """A stand-in base image: a Gramine tree, a shell, a "Python", the recorded paths."""
    files: dict[str, MemFile] = {
        "/bin": mem_link("usr/bin"), "/lib": mem_link("usr/lib"),
        "/lib64": mem_link("usr/lib64"), "/sbin": mem_link("usr/sbin"),
        "/usr/bin/sh": mem_file(b"\x7fELF stand-in shell\n", 0o755),
        "/usr/bin/bash": mem_file(b"\x7fELF stand-in bash\n", 0o755),
        "/usr/bin/env": mem_file(b"\x7fELF stand-in env\n", 0o755),
        "/usr/bin/python3.11": mem_file(b"\x7fELF stand-in python\n", 0o755),
        "/usr/bin/python3": mem_link("python3.11"),
        "/usr/lib/python3.11/os.py": mem_file(b"# the real os module\n"),
        "/usr/lib/python3.11/json/__init__.py": mem_file(b"# json\n"),
        "/usr/lib/python3/dist-packages/six.py": mem_file(b"# six\n"),
        "/usr/local/lib/python3.11/dist-packages/numpy/__init__.py": mem_file(b"# numpy\n"),
        "/usr/lib/x86_64-linux-gnu/libc.so.6": mem_file(b"\x7fELF stand-in libc\n", 0o755),
        "/usr/lib64/ld-linux-x86-64.so.2": mem_link(
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": mem_file(b"\x7fELF ld.so\n", 0o755),
        "/etc/passwd": mem_file(b"root:x:0:0:root:/root:/bin/sh\n"),
        "/etc/ppml-image/base.json": mem_file(
            json.dumps(base_json(), indent=2, sort_keys=True).encode()),
    }
    for path in sorted(gramine_tree.rglob("*")):
        rel = "/" + str(path.relative_to(gramine_tree))
        if path.is_file():
            files[rel] = mem_file(path.read_bytes(), path.stat().st_mode & 0o777)
    labels = {f"ppml-image.gramine.{k}": v for k, v in base_json()["gramine"].items()
              if k in ("pkglibdir", "libpal", "libsysdb", "runtimedir", "source")}
    labels["ppml-image.profile"] = "slim"
    return engine.add_image(files, tag=tag, cmd=("/bin/bash",), env=BASE_ENV, labels=labels)
