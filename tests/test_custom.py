"""build-custom, sign-image, inspect and verify on a real engine and slim base."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from conftest import (
    COMMON,
    assert_one_line_error,
    build_custom_cli,
    containers_of,
    read_file_from_image,
    run_cli,
    tag_id,
    unique_tag,
)

from ppml_image.images.engine.context import BuildContext
from ppml_image.sgx.signing.keys import load_signing_key, mr_signer_of

pytestmark = pytest.mark.docker


def _labels(client, ref: str) -> dict:
    return client.images.get(ref).labels


def _build_from(client, janitor, base: str, files: dict[str, bytes], steps: list[str]) -> str:
    """An image FROM *base* with *files* copied in: how an attacker would tamper."""
    tag = janitor.track(unique_tag("tampered"))
    context = BuildContext()
    for name, data in files.items():
        context.add_bytes(name, data)
    context.add_bytes("Dockerfile", ("\n".join([f"FROM {base}", *steps]) + "\n").encode())
    client.images.build(fileobj=context.finish(), custom_context=True, tag=tag, rm=True)
    return tag


def test_build_custom_prints_and_labels_measurement(custom_image: dict, enclave_key: Path,
                                                    docker_client) -> None:
    expected_signer = mr_signer_of(load_signing_key(enclave_key).public_key())
    assert custom_image["mr_signer"] == expected_signer
    assert len(custom_image["mr_enclave"]) == 64
    assert custom_image["sigstruct"]["date"] == "2025-01-31"
    assert custom_image["unsigned_image"].endswith("-unsigned")
    labels = _labels(docker_client, custom_image["image"])
    assert labels["ppml-image.mr_enclave"] == custom_image["mr_enclave"]
    assert labels["ppml-image.mr_signer"] == expected_signer
    assert labels["ppml-image.debug"] == "false"
    assert labels["ppml-image.isv_svn"] == "0"
    assert docker_client.images.get(custom_image["unsigned_image"]).id == \
        custom_image["unsigned_image_id"]


def test_inspect_reads_sigstruct(custom_image: dict) -> None:
    result = run_cli("inspect", custom_image["image"], "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["mr_enclave"] == custom_image["mr_enclave"]
    assert data["mr_signer"] == custom_image["mr_signer"]
    assert data["debug_enclave"] is False


def test_image_measurement_equals_signing_the_exported_rootfs(
        custom_image: dict, enclave_key: Path, tmp_path: Path, docker_client) -> None:
    """Reading files through the Docker API measures exactly like `sign --chroot`."""
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    container = docker_client.containers.create(custom_image["unsigned_image"], ["true"])
    try:
        stream = b"".join(container.export())
    finally:
        container.remove()
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        tar.extractall(rootfs, filter="fully_trusted")
    result = run_cli("sign", "--manifest", rootfs / "ppml/python-ml.manifest", "--output",
                     tmp_path / "x.manifest.sgx", "--libpal",
                     rootfs / "usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so",
                     "--key", enclave_key, "--date", "2025-01-31", "--chroot", rootfs, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mr_enclave"] == custom_image["mr_enclave"]
    # The archive API gives the file's exact bytes (container logs can truncate).
    in_image = read_file_from_image(docker_client, custom_image["image"],
                                    "/ppml/python-ml.manifest.sgx")
    assert (tmp_path / "x.manifest.sgx").read_bytes() == in_image


def test_verify_passes_and_checks_expected_values(custom_image: dict) -> None:
    result = run_cli("verify", custom_image["image"], "--mr-enclave", custom_image["mr_enclave"],
                     "--mr-signer", custom_image["mr_signer"], "--base",
                     custom_image["base_image_id"])
    assert result.returncode == 0, result.stderr
    assert "trusted files re-hashed" in result.stdout
    wrong = run_cli("verify", custom_image["image"], "--mr-enclave", "0" * 64, "--base",
                    custom_image["base_image_id"])
    assert wrong.returncode == 3
    assert_one_line_error(wrong, "mr_enclave is", "expected " + "0" * 64)


def test_resign_with_second_key_keeps_mrenclave(custom_image: dict, second_key: Path,
                                                janitor) -> None:
    tag = janitor.track(unique_tag("custom-prod"))
    result = run_cli("sign-image", custom_image["unsigned_image"], "--key", second_key,
                     "--tag", tag, "--date", "2025-01-31", "--json", "--base",
                     custom_image["base_image_id"])
    assert result.returncode == 0, result.stderr
    resigned = json.loads(result.stdout)
    assert resigned["mr_enclave"] == custom_image["mr_enclave"]
    assert resigned["mr_signer"] == mr_signer_of(load_signing_key(second_key).public_key())
    assert resigned["mr_signer"] != custom_image["mr_signer"]
    verified = run_cli("verify", tag, "--mr-signer", resigned["mr_signer"], "--base",
                       custom_image["base_image_id"])
    assert verified.returncode == 0, verified.stderr


def test_verify_catches_a_changed_trusted_file(custom_image: dict, docker_client,
                                               janitor) -> None:
    tampered = _build_from(docker_client, janitor, custom_image["image"],
                           {"main.py": b"print('exfiltrate the data')\n"},
                           ["COPY main.py /ppml/app/main.py"])
    result = run_cli("verify", tampered, "--base", custom_image["base_image_id"])
    assert result.returncode == 3
    assert_one_line_error(result, "file:/ppml/app/main.py changed")


def test_verify_catches_a_swapped_sig(custom_image: dict, slim_base: dict, enclave_key: Path,
                                      tmp_path: Path, docker_client, janitor) -> None:
    other_app = tmp_path / "other"
    other_app.mkdir()
    (other_app / "main.py").write_text("print('another enclave')\n")
    other_tag = janitor.track(unique_tag("custom-other"))
    janitor.track(other_tag + "-unsigned")
    built = build_custom_cli(enclave_key, slim_base["tags"][0], other_app, other_tag)
    assert built.returncode == 0, built.stderr
    other_sig = read_file_from_image(docker_client, other_tag, "/ppml/python-ml.sig")
    swapped = _build_from(docker_client, janitor, custom_image["image"],
                          {"python-ml.sig": other_sig}, ["COPY python-ml.sig /ppml/python-ml.sig"])
    result = run_cli("verify", swapped, "--base", custom_image["base_image_id"])
    assert result.returncode == 3
    assert_one_line_error(result, "MRENCLAVE recomputed from the image is "
                          + custom_image["mr_enclave"])


def test_debug_enclave_refused_for_release_and_flagged(slim_base: dict, enclave_key: Path,
                                                       app_dir: Path, docker_client,
                                                       janitor) -> None:
    tag = unique_tag("custom-debug")
    refused = build_custom_cli(enclave_key, slim_base["tags"][0], app_dir, tag, "-D", "debug",
                               "--release")
    assert_one_line_error(refused, "sgx.debug = true", "--release")
    assert _tags_of(docker_client, tag) == set()
    janitor.track(tag)
    janitor.track(tag + "-unsigned")
    allowed = build_custom_cli(enclave_key, slim_base["tags"][0], app_dir, tag, "-D", "debug")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stderr.count("DEBUG enclave") == 1, allowed.stderr  # once, not per stage
    assert json.loads(allowed.stdout)["sigstruct"]["debug_enclave"] is True
    base = ("--base", slim_base["tags"][0])
    assert run_cli("verify", tag, *base).returncode == 3
    assert run_cli("verify", tag, "--allow-debug", *base).returncode == 0


def test_measurements_output_file(slim_base: dict, enclave_key: Path, app_dir: Path,
                                  tmp_path: Path, janitor) -> None:
    tag = janitor.track(unique_tag("custom-out"))
    janitor.track(tag + "-unsigned")
    out = tmp_path / "measurements.json"
    result = run_cli("build-custom", "--key", enclave_key, "--base", slim_base["tags"][0],
                     "--app", app_dir, "--tag", tag, "--output", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert f"mr_enclave: {data['mr_enclave']}" in result.stdout
    assert f"mr_signer:  {data['mr_signer']}" in result.stdout
    assert data["base_image_id"] == slim_base["image_id"]
    assert data["sigstruct"]["isv_prod_id"] == 0


# --------------------------------------------------------------------------
# Bad input: one line, non-zero, nothing tagged, no container left
# --------------------------------------------------------------------------
def _tags_of(client, tag: str) -> set[str]:
    """Which of *tag* and its unsigned tag exist: exact look-ups, never a listing of the
    repository (other runs share it, and remove their images while we list)."""
    return {name for name in (tag, tag + "-unsigned") if tag_id(client, name) is not None}


@pytest.mark.parametrize("case", ["missing-base", "missing-app", "bad-key", "undefined-var",
                                  "missing-trusted-file", "unknown-template"])
def test_build_custom_bad_input(case: str, slim_base: dict, enclave_key: Path, app_dir: Path,
                                tmp_path: Path, docker_client) -> None:
    tag = unique_tag("custom-bad")
    base, app, key, extra = slim_base["tags"][0], app_dir, enclave_key, []
    fragment = ""
    if case == "missing-base":
        base, fragment = "ppml-test/no-such-base:1", "ppml-test/no-such-base:1"
    elif case == "missing-app":
        app, fragment = tmp_path / "nope", "does not exist"
    elif case == "bad-key":
        key, fragment = COMMON / "key_2048.pem", "3072"
    elif case == "undefined-var":
        template = tmp_path / "t.manifest.j2"
        template.write_text('libos.entrypoint = "{{ nothing_here }}"\n')
        extra, fragment = ["--manifest", str(template)], "nothing_here"
    elif case == "missing-trusted-file":
        template = tmp_path / "t.manifest.j2"
        template.write_text(
            'libos.entrypoint = "/usr/bin/python3"\nfs.mounts = []\n'
            'loader.entrypoint.uri = "file:{{ gramine.libos }}"\n'
            'sgx.trusted_files = ["file:/opt/not-in-the-image.so"]\n')
        extra, fragment = ["--manifest", str(template)], "/opt/not-in-the-image.so"
    elif case == "unknown-template":
        extra, fragment = ["--manifest", "no-such-template"], "no such manifest template"
    result = build_custom_cli(key, base, app, tag, *extra)
    assert_one_line_error(result, fragment)
    # Tags move only once everything succeeded: neither the final nor the unsigned one.
    assert _tags_of(docker_client, tag) == set()
    assert containers_of(docker_client, result.pid) == []


def test_shipped_templates_render_against_the_base(slim_base: dict, docker_client) -> None:
    """Both shipped templates render and pass Gramine's schema with the base's answers."""
    from ppml_image.images.base.build import base_info
    from ppml_image.images.enclave.custom import find_template, render_for_base
    from ppml_image.images.engine.core import connect
    from ppml_image.sgx.manifest.document import parse_manifest
    from ppml_image.sgx.manifest.schema import check_schema

    info = base_info(connect(), slim_base["image_id"])
    for name in ("python-ml", "spark"):
        text = render_for_base(find_template(name), {}, info)
        manifest = parse_manifest(text, name)
        check_schema(manifest, name)
        assert "allow_all_but_log" not in text
        uris = [tf["uri"] for tf in manifest["sgx"]["trusted_files"]]
        assert "file:/ppml/app/" in uris
        assert any(uri.startswith("file:/usr/lib/python3") for uri in uris)
        assert manifest["sgx"]["debug"] is False  # by default, a production enclave
    debug = parse_manifest(render_for_base(find_template("python-ml"), {"debug": True}, info),
                           "python-ml -D debug")
    assert debug["sgx"]["debug"] is True
