"""Hostile images against verify and sign-image, on the real engine.

Each image here is what anyone could publish: built FROM a genuine signed
(or unsigned) image with one change. verify must exit 3 naming the problem
(never 1, never 70); the other commands must give one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
from conftest import (
    assert_one_line_error,
    build_custom_cli,
    engine_events,
    owner_pid,
    read_file_from_image,
    run_cli,
    unique_tag,
)

from ppml_image.images.engine.context import BuildContext
from ppml_image.testing import stand_in_elf

pytestmark = pytest.mark.docker

OS_PY = "/usr/lib/python3.11/os.py"
LIBPAL = "/usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so"


def build_from(client, janitor, base: str, steps: list[str],
               files: dict[str, bytes] | None = None, name: str = "redteam") -> str:
    """An image FROM *base*: how an attacker derives one (labels inherited)."""
    tag = janitor.track(unique_tag(name))
    context = BuildContext()
    for path, data in (files or {}).items():
        context.add_bytes(path, data, 0o755)
    context.add_bytes("Dockerfile", ("\n".join([f"FROM {base}", *steps]) + "\n").encode())
    client.images.build(fileobj=context.finish(), custom_context=True, tag=tag, rm=True,
                        network_mode="none")
    return tag


def verify_fails(image: str, base: str | None, *fragments: str,
                 extra: tuple[str, ...] = ()) -> None:
    """verify exits 3 naming *fragments*; *base* is the pinned base (None: none pinned)."""
    result = run_cli("verify", image, *(("--base", base) if base else ()), *extra)
    assert result.returncode == 3, result
    assert_one_line_error(result, *fragments)


def trusted_hash(client, image: str, path: str) -> str:
    text = read_file_from_image(client, image, "/ppml/python-ml.manifest.sgx").decode()
    for entry in tomllib.loads(text)["sgx"]["trusted_files"]:
        if entry["uri"] == f"file:{path}":
            return str(entry["sha256"])
    raise AssertionError(f"{path} is not a trusted file of {image}")


# --------------------------------------------------------------------------
# What runs
# --------------------------------------------------------------------------
def test_an_image_with_volumes_leaves_no_volume_behind(custom_image: dict, docker_client,
                                                       janitor) -> None:
    import docker.errors

    image = build_from(docker_client, janitor, custom_image["image"],
                       ["VOLUME /ppml/data /var/lib/extra"])
    since = time.time()
    result = run_cli("inspect", image)
    assert result.returncode == 0, result.stderr
    # Our temporary container (its label names our pid) and the volumes mounted for it.
    ours = {e["Actor"]["ID"] for e in engine_events(docker_client, since, "container", "create")
            if owner_pid(e) == result.pid}
    assert len(ours) == 1, ours
    volumes = {e["Actor"]["ID"] for e in engine_events(docker_client, since, "volume", "mount")
               if e["Actor"]["Attributes"].get("container") in ours}
    assert len(volumes) == 2, volumes  # one per VOLUME of the image
    for volume in volumes:
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_volume(volume)


def test_cmd_that_runs_python_instead(custom_image: dict, docker_client, janitor) -> None:
    image = build_from(docker_client, janitor, custom_image["image"],
                       ['CMD ["python3", "-c", "print(open(\'/ppml/keys/k\').read())"]'])
    verify_fails(image, custom_image["base_image_id"],
                 "would run `python3 -c")


def test_entrypoint_that_reads_the_keys_then_execs(custom_image: dict, docker_client,
                                                   janitor) -> None:
    script = b'#!/bin/sh\ncat /ppml/keys/* >/dev/null 2>&1\nexec "$@"\n'
    image = build_from(docker_client, janitor, custom_image["image"],
                       ["COPY steal /usr/local/bin/steal",
                        'ENTRYPOINT ["/usr/local/bin/steal"]'], {"steal": script})
    verify_fails(image, custom_image["base_image_id"],
                 "ENTRYPOINT", "runs before any enclave")


def test_replaced_gramine_sgx(custom_image: dict, docker_client, janitor) -> None:
    script = b'#!/bin/sh\ncat /ppml/keys/*\nexec /usr/bin/gramine-direct "$@"\n'
    image = build_from(docker_client, janitor, custom_image["image"],
                       ["COPY gramine-sgx /usr/bin/gramine-sgx"], {"gramine-sgx": script})
    verify_fails(image, custom_image["base_image_id"],
                 "outside the enclave",
                 "/usr/bin/gramine-sgx changed", "launcher")


def test_ld_preload_in_the_environment(custom_image: dict, docker_client, janitor) -> None:
    image = build_from(docker_client, janitor, custom_image["image"],
                       ["ENV LD_PRELOAD=/ppml/app/lib/helpers.py"])
    verify_fails(image, custom_image["base_image_id"],
                 "config Env differs: +'LD_PRELOAD=")


def test_labels_pointing_at_genuine_copies(custom_image: dict, docker_client,
                                           janitor) -> None:
    """Genuine .sig and .manifest.sgx copied elsewhere; the labels point there; the
    enclave the command starts is another one."""
    image = build_from(docker_client, janitor, custom_image["image"], [
        "RUN mkdir /genuine && cp /ppml/python-ml.sig /ppml/python-ml.manifest.sgx /genuine/"
        " && printf 'libos.entrypoint = \"/bin/sh\"\\n' > /ppml/python-ml.manifest.sgx"
        " && rm /ppml/python-ml.sig",
        'LABEL ppml-image.sig=/genuine/python-ml.sig '
        'ppml-image.manifest-sgx=/genuine/python-ml.manifest.sgx'])
    verify_fails(image, custom_image["base_image_id"],
                 "/ppml/python-ml.sig: no such file in the image")


# --------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------
def test_tampered_libpal(custom_image: dict, docker_client, janitor) -> None:
    image = build_from(docker_client, janitor, custom_image["image"],
                       [f"COPY libpal.so {LIBPAL}"], {"libpal.so": stand_in_elf(b"evil")})
    verify_fails(image, custom_image["base_image_id"],
                 "MRENCLAVE recomputed from the image is", "libpal.so changed")


def test_missing_sig_and_json_report(custom_image: dict, docker_client, janitor) -> None:
    image = build_from(docker_client, janitor, custom_image["image"],
                       ["RUN rm /ppml/python-ml.sig"])
    verify_fails(image, custom_image["base_image_id"],
                 "/ppml/python-ml.sig: no such file in the image")
    report = run_cli("verify", image, "--json", "--base", custom_image["base_image_id"])
    assert report.returncode == 3
    data = json.loads(report.stdout)  # the full report, on failure too
    assert data["ok"] is False and data["enclave"] == "python-ml"
    assert any("python-ml.sig" in p for p in data["problems"])


def test_huge_sparse_sig_uses_bounded_memory(custom_image: dict, docker_client,
                                             janitor) -> None:
    """A 2 GiB sparse .sig (nothing in a registry) costs neither reading nor RAM."""
    image = build_from(docker_client, janitor, custom_image["image"],
                       ["RUN truncate -s 2G /ppml/python-ml.sig"])
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "print(p.stderr, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "ppml_image",
                           "verify", image, "--base", custom_image["base_image_id"]],
                          capture_output=True, text=True, timeout=600,
                          check=False)
    returncode, peak_kib = map(int, proc.stdout.split())
    assert returncode == 3, proc.stderr
    # Refused from its tar header: not one of its 2 GiB is read or hashed.
    assert "python-ml.sig is 2147483648 bytes, more than the 1808-byte limit for it: " \
        "refused before reading it" in proc.stderr
    assert peak_kib < 400 * 1024, f"verify peaked at {peak_kib} KiB for a 2 GiB .sig"


@pytest.mark.parametrize("content,fragment", [
    (b"{}", 'no "gramine" object'),
    (b"\xff not json", "not valid JSON"),
])
def test_hostile_base_json(content: bytes, fragment: str, custom_image: dict, slim_base: dict,
                           enclave_key: Path, app_dir: Path, docker_client, janitor) -> None:
    image = build_from(docker_client, janitor, custom_image["image"],
                       ["COPY base.json /etc/ppml-image/base.json"], {"base.json": content})
    verify_fails(image, custom_image["base_image_id"], fragment)
    base = build_from(docker_client, janitor, slim_base["tags"][0],
                      ["COPY base.json /etc/ppml-image/base.json"], {"base.json": content})
    result = build_custom_cli(enclave_key, base, app_dir, unique_tag("never"))
    assert result.returncode == 1
    assert_one_line_error(result, fragment)


def test_deeply_nested_manifest(custom_image: dict, docker_client, janitor) -> None:
    deep = b"x = " + b"[" * 200_000 + b"]" * 200_000 + b"\n"
    image = build_from(docker_client, janitor, custom_image["image"],
                       ["COPY m /ppml/python-ml.manifest.sgx"], {"m": deep})
    verify_fails(image, custom_image["base_image_id"],
                 "nested more than 64 levels deep")


def test_pal_with_a_terabyte_segment(custom_image: dict, docker_client, janitor) -> None:
    pal = bytearray(stand_in_elf())
    struct.pack_into("<Q", pal, 64 + 56 + 40, 1 << 40)  # the second PT_LOAD's p_memsz
    image = build_from(docker_client, janitor, custom_image["image"],
                       [f"COPY libpal.so {LIBPAL}"], {"libpal.so": bytes(pal)})
    verify_fails(image, custom_image["base_image_id"],
                 "PAL segments span 1073741836 KiB, which does not fit")


def test_non_utf8_file_name_in_app(slim_base: dict, enclave_key: Path, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print(1)\n")
    with open(os.path.join(os.fsencode(app), b"caf\xe9.py"), "w") as handle:
        handle.write("x\n")
    result = build_custom_cli(enclave_key, slim_base["tags"][0], app, unique_tag("never"))
    assert result.returncode == 2
    assert_one_line_error(result, "file name is not UTF-8")


# --------------------------------------------------------------------------
# sign-image reads every layer; labels are never paths
# --------------------------------------------------------------------------
def test_derived_unsigned_image_with_changed_usr_file(custom_image: dict, enclave_key: Path,
                                                      docker_client, janitor) -> None:
    """FROM the unsigned image, a trusted file under /usr changed, labels inherited."""
    unsigned = build_from(docker_client, janitor, custom_image["unsigned_image"],
                          [f"RUN echo 'print(\"changed\")' >> {OS_PY}"], name="derived")
    tag = janitor.track(unique_tag("derived-signed"))
    signed = run_cli("sign-image", unsigned, "--key", enclave_key, "--tag", tag, "--json",
                     "--base", custom_image["base_image_id"])
    assert signed.returncode == 0, signed.stderr
    real = read_file_from_image(docker_client, tag, OS_PY)
    assert real.endswith(b'print("changed")\n')
    assert trusted_hash(docker_client, tag, OS_PY) == hashlib.sha256(real).hexdigest()
    assert json.loads(signed.stdout)["mr_enclave"] != custom_image["mr_enclave"]
    verified = run_cli("verify", tag, "--base", custom_image["base_image_id"])
    assert verified.returncode == 0, verified.stderr


def test_planted_base_label_cannot_load_an_index(custom_image: dict, enclave_key: Path,
                                                 tmp_path: Path, docker_client,
                                                 janitor) -> None:
    """The old cache took the label as a file name: ../../tmp/planted loaded this index."""
    cache = tmp_path / "cache"
    planted = cache / "index" / ".." / ".." / "tmp" / "planted.json"
    planted.parent.mkdir(parents=True)
    entries = {OS_PY: ["file", "", 10, "0" * 64]}
    planted.write_text(json.dumps({"format": 1, "entries": entries}))
    unsigned = build_from(docker_client, janitor, custom_image["unsigned_image"],
                          ["LABEL ppml-image.base-image-id=../../tmp/planted"], name="planted")
    tag = janitor.track(unique_tag("planted-signed"))
    signed = run_cli("sign-image", unsigned, "--key", enclave_key, "--tag", tag,
                     "--base", custom_image["base_image_id"],
                     env={"PPML_IMAGE_CACHE": str(cache)})
    assert signed.returncode == 0, signed.stderr
    real = read_file_from_image(docker_client, tag, OS_PY)
    assert trusted_hash(docker_client, tag, OS_PY) == hashlib.sha256(real).hexdigest()
    verify_fails(tag, None, "was not checked", "no pinned base", "--allow-unpinned-base")
    base = run_cli("verify", tag, "--base", custom_image["base_image_id"])
    assert base.returncode == 0, base.stderr


def test_onbuild_trigger_of_a_hostile_base_is_measured(slim_base: dict, enclave_key: Path,
                                                       app_dir: Path, docker_client,
                                                       janitor) -> None:
    hostile = build_from(docker_client, janitor, slim_base["tags"][0],
                         [f"ONBUILD RUN echo 'import socket' >> {OS_PY}"], name="onbuild")
    tag = janitor.track(unique_tag("onbuild-app"))
    janitor.track(tag + "-unsigned")
    built = build_custom_cli(enclave_key, hostile, app_dir, tag)
    assert built.returncode == 0, built.stderr
    real = read_file_from_image(docker_client, tag, OS_PY)
    assert real.endswith(b"import socket\n")
    assert trusted_hash(docker_client, tag, OS_PY) == hashlib.sha256(real).hexdigest()
    verified = run_cli("verify", tag, "--base", hostile)
    assert verified.returncode == 0, verified.stderr


def test_verify_without_expected_values_says_so(custom_image: dict) -> None:
    result = run_cli("verify", custom_image["image"], "--base", custom_image["base_image_id"])
    assert result.returncode == 0, result.stderr
    assert f"mr_signer {custom_image['mr_signer']}" in result.stdout
    assert "internal consistency only" in result.stdout
    assert "closed world" in result.stdout
    checked = run_cli("verify", custom_image["image"], "--mr-signer",
                      custom_image["mr_signer"], "--base", custom_image["base_image_id"])
    assert "internal consistency" not in checked.stdout


def test_verify_without_the_base_image(custom_image: dict, docker_client, janitor) -> None:
    image = build_from(docker_client, janitor, custom_image["image"],
                       [f"LABEL ppml-image.base-image-id=sha256:{'ab' * 32}"])
    verify_fails(image, f"sha256:{'ab' * 32}", "was not checked", "is not on")
