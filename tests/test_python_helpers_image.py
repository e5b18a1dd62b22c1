"""``python.*`` in build-custom: the base image's recorded answers (issue 12, point 7).

The template is written in the style of Gramine's Python example
(``tests/data/gramine-python.manifest.template``): a loop over
``python.get_sys_path(entrypoint)`` calling ``.is_dir()``. Inside
build-custom the paths are the image's, so the answers are what build-base
recorded in ``/etc/ppml-image/base.json``, never the host's.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import TESTS, build_custom_cli, read_file_from_image, unique_tag

from ppml_image.errors import ManifestError
from ppml_image.images.enclave import custom
from ppml_image.testing import MemoryEngine, make_gramine_tree, memory_base

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TEMPLATE = TESTS / "data" / "gramine-python.manifest.template"


def sys_path_files(trusted: list) -> list[str]:
    """The trusted files the get_sys_path loop wrote (between the fixed ones and the app)."""
    uris = [entry["uri"] if isinstance(entry, dict) else entry for entry in trusted]
    return uris


@pytest.fixture
def mem(tmp_path: Path) -> MemoryEngine:
    engine = MemoryEngine()
    memory_base(engine, make_gramine_tree(tmp_path / "gramine"))
    return engine


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "main.py").write_text("print('hello')\n")
    return folder


def rendered(engine: MemoryEngine, image: str) -> dict:
    name = TEMPLATE.name.removesuffix(".manifest.template")
    return tomllib.loads(engine.read_file(image, f"/ppml/{name}.manifest",
                                          limit=1 << 20).decode())


def test_memory_base_answers_from_its_record(mem: MemoryEngine, app: Path,
                                             enclave_key: Path) -> None:
    result = custom.build_custom(enclave_key, base="mem/base:1", app=app, tag="mem/py:1",
                                 template=TEMPLATE, defines={"entrypoint": "/usr/bin/python3"},
                                 date="0000-00-00", quiet=True, engine=mem)
    trusted = rendered(mem, result.unsigned_image_id)["sgx"]["trusted_files"]
    # The stand-in records python311.zip and lib-dynload as missing: both are
    # left out, whatever the host has (the host's lib-dynload may well exist).
    assert trusted[4:-1] == ["file:/usr/lib/python3.11/",
                             "file:/usr/local/lib/python3.11/dist-packages/",
                             "file:/usr/lib/python3/dist-packages/"]
    assert result.sigstruct["date"] == "0000-00-00"


def test_an_interpreter_the_base_did_not_record(mem: MemoryEngine, app: Path,
                                                enclave_key: Path) -> None:
    with pytest.raises(ManifestError, match=r"not an interpreter the base image mem/base:1 "
                       r"recorded \(build-custom runs nothing"):
        custom.build_custom(enclave_key, base="mem/base:1", app=app, tag="mem/py:1",
                            template=TEMPLATE, defines={"entrypoint": "/opt/venv/bin/python"},
                            quiet=True, engine=mem)
    assert mem.find_image("mem/py:1") is None


# --------------------------------------------------------------------------
# A real base image, built by build-base, on the real engine
# --------------------------------------------------------------------------
GRAMINE_IN_IMAGE = """\
import json, os, pathlib, subprocess, sys
out = subprocess.run([sys.argv[1], "-c", "import sys; print('\\\\0'.join(p for p in sys.path "
                      "if p), end='')"], stdout=subprocess.PIPE, check=True).stdout
paths = [pathlib.Path(os.fsdecode(p)) for p in out.split(b"\\0")]
files = [f"file:{p}/" if p.is_dir() else f"file:{p}" for p in paths if p.exists()]
with open("/tmp/expected.json", "w") as f:
    json.dump({"files": files, "all": [str(p) for p in paths]}, f)
"""


def gramine_answer_in(client, image: str, interpreter: str) -> dict:
    """Gramine's own algorithm run inside *image*; read back through the archive API."""
    container = client.containers.create(image, ["python3", "-c", GRAMINE_IN_IMAGE,
                                                 interpreter], network_disabled=True)
    try:
        container.start()
        assert container.wait(timeout=120)["StatusCode"] == 0
        stream, _ = container.get_archive("/tmp/expected.json")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            assert member is not None
            handle = tar.extractfile(member)
            assert handle is not None
            return dict(json.loads(handle.read()))
    finally:
        container.remove(force=True)


@pytest.mark.docker
@pytest.mark.parametrize("interpreter", ["/usr/bin/python3", "python3"])
def test_build_custom_on_a_real_base_renders_as_gramine_would_in_the_image(
        slim_base: dict, enclave_key: Path, app_dir: Path, janitor, docker_client,
        interpreter: str) -> None:
    base = slim_base["tags"][0]
    expected = gramine_answer_in(docker_client, base, interpreter)
    assert "/usr/lib/python311.zip" in expected["all"]  # on sys.path, not in the image
    tag = janitor.track(unique_tag("custom-gramine-py"))
    janitor.track(tag + "-unsigned")
    result = build_custom_cli(enclave_key, base, app_dir, tag, "--manifest", str(TEMPLATE),
                              "-D", "entrypoint=/usr/bin/python3",
                              "-D", f"interpreter={interpreter}")
    assert result.returncode == 0, result.stderr
    name = TEMPLATE.name.removesuffix(".manifest.template")
    manifest = tomllib.loads(read_file_from_image(
        docker_client, tag, f"/ppml/{name}.manifest").decode())
    uris = sys_path_files(manifest["sgx"]["trusted_files"])
    assert uris[4:-1] == expected["files"]
    assert "file:/usr/lib/python311.zip" not in uris
