"""Publishing on a real engine and a real registry: push, verify by digest, push errors,
--expect-mr-enclave, the offline two-step flow on images (openssl), and a key made
inside a SoftHSM2 token signing a custom image."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    assert_one_line_error,
    build_base_cli,
    read_file_from_image,
    run_cli,
    unique_tag,
)
from registry import auth_registry, blob_file, free_port, manifest_layers, private_registry
from softhsm import SoftHsm

from ppml_image.images.engine.context import BuildContext

pytestmark = pytest.mark.docker
COMMON_KEY = Path(__file__).resolve().parent / "vectors" / "_common" / "key.pem"
DIGEST_LINE = re.compile(r"^digest: (\S+@sha256:[0-9a-f]{64})$", re.M)


def _gone(client, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return True
    return False


def _remove(client, ref: str) -> None:
    """Untag *ref* (our own tag), as `docker rmi` would."""
    client.images.remove(ref, force=True)
    assert _gone(client, ref)


def _tampered(client, janitor, signed: str, tag: str) -> None:
    """What an attacker with push rights does: same tag, a changed trusted file."""
    context = BuildContext()
    context.add_bytes("main.py", b"print('exfiltrate the data')\n")
    context.add_bytes("Dockerfile", f"FROM {signed}\nCOPY main.py /ppml/app/main.py\n".encode())
    janitor.track(tag)
    client.images.build(fileobj=context.finish(), custom_context=True, tag=tag, rm=True)
    for chunk in client.api.push(tag.rsplit(":", 1)[0], tag=tag.rsplit(":", 1)[1], stream=True,
                                 decode=True):
        assert "error" not in chunk, chunk


# --------------------------------------------------------------------------
# Push, drop every local copy, verify by digest; then a tampered push.
# --------------------------------------------------------------------------
def test_push_then_verify_by_digest_and_a_tampered_tag(
        slim_base: dict, enclave_key: Path, app_dir: Path, tmp_path: Path, registry,
        docker_client, janitor) -> None:
    repo = registry.repository("app")
    tag = janitor.track(f"{repo}:1")
    janitor.track(f"{tag}-unsigned")
    record = tmp_path / "measurements.json"
    built = run_cli("build-custom", "--key", enclave_key, "--base", slim_base["tags"][0],
                    "--app", app_dir, "--tag", tag, "--date", "2025-01-31", "--push",
                    "--output", record)
    assert built.returncode == 0, built.stderr
    found = DIGEST_LINE.findall(built.stdout)
    assert len(found) == 1, built.stdout
    digest = found[0]
    assert digest.startswith(f"{repo}@sha256:")
    data = json.loads(record.read_text())
    assert data["repo_digest"] == digest
    assert data["base_image_id"] == slim_base["image_id"]
    for name in ("mr_enclave", "mr_signer", "isv_prod_id", "isv_svn", "tool_version",
                 "image_id", "unsigned_image_id"):
        assert data[name] not in (None, ""), name
    assert data["unsigned_repo_digest"] is None
    # The registry holds the signed tag, never the unsigned one, under the digest printed.
    assert registry.tags(repo) == ["1"]
    assert registry.digest_of(repo, "1") == digest.partition("@")[2]
    assert digest in docker_client.images.get(tag).attrs["RepoDigests"]

    # Every local copy of the signed image gone: verify pulls it by digest.
    _remove(docker_client, tag)
    assert _gone(docker_client, digest)
    verified = run_cli("verify", digest, "--base", data["base_image_id"], "--mr-enclave",
                       data["mr_enclave"], "--mr-signer",
                       data["mr_signer"], "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["pulled"] and report["digest"] == digest
    assert report["image_id"] == data["image_id"]  # the content that was measured and signed
    plain = run_cli("verify", digest, "--base", data["base_image_id"], "--mr-enclave",
                    data["mr_enclave"])
    assert plain.returncode == 0, plain.stderr
    assert f"digest: {digest}" in plain.stdout

    # Someone pushes a tampered image under the same tag.
    docker_client.api.tag(digest, repo, "1")
    _tampered(docker_client, janitor, digest, tag)
    assert registry.digest_of(repo, "1") != digest.partition("@")[2]
    for extra in ([], ["--pull"]):
        by_digest = run_cli("verify", digest, "--base", data["base_image_id"], "--mr-enclave",
                            data["mr_enclave"], *extra)
        assert by_digest.returncode == 0, (extra, by_digest.stderr)
        by_tag = run_cli("verify", tag, "--base", data["base_image_id"], "--mr-enclave",
                         data["mr_enclave"], *extra)
        assert by_tag.returncode == 3, (extra, by_tag.stderr)
        assert_one_line_error(by_tag, "file:/ppml/app/main.py changed")
    # And from a cold store again: the registry still serves the measured content by digest.
    _remove(docker_client, tag)
    _remove(docker_client, digest)
    cold = run_cli("verify", digest, "--base", data["base_image_id"], "--mr-enclave",
                   data["mr_enclave"], "--json")
    assert cold.returncode == 0, cold.stdout
    assert json.loads(cold.stdout)["pulled"] is True


def test_push_unsigned_only_when_asked(custom_image: dict, registry, docker_client,
                                       janitor) -> None:
    repo = registry.repository("both")
    unsigned = janitor.track(f"{repo}:2-unsigned")
    docker_client.api.tag(custom_image["unsigned_image_id"], repo, "2-unsigned")
    tag = janitor.track(f"{repo}:2")
    result = run_cli("sign-image", unsigned, "--base", custom_image["base_image_id"], "--key",
                     COMMON_KEY, "--date", "2025-01-31",
                     "--push", "--push-unsigned", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["image"] == tag
    assert data["unsigned_repo_digest"].startswith(f"{repo}@sha256:")
    assert data["repo_digest"].startswith(f"{repo}@sha256:")
    assert registry.tags(repo) == ["2", "2-unsigned"]
    assert registry.digest_of(repo, "2-unsigned") == data["unsigned_repo_digest"].split("@")[1]


# --------------------------------------------------------------------------
# Push errors: one line each; no record claims a digest; tags put back.
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def locked_registry(tmp_path_factory: pytest.TempPathFactory):
    with auth_registry(tmp_path_factory.mktemp("auth-registry")) as found:
        yield found


def _sign_and_push(custom_image: dict, tag: str, record: Path, *extra: str,
                   env: dict[str, str] | None = None):
    return run_cli("sign-image", custom_image["unsigned_image"], "--base",
                   custom_image["base_image_id"], "--key", COMMON_KEY,
                   "--date", "2025-01-31", "--tag", tag, "--push", "--output", record, *extra,
                   env=env)


@pytest.mark.parametrize("case", ["down", "no-credentials", "wrong-password"])
def test_push_errors_are_one_line_and_leave_no_digest_and_no_tag(
        case: str, custom_image: dict, locked_registry, tmp_path: Path,
        docker_client, janitor) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path / "no-docker-config")}
    if case == "down":
        address, fragments = f"127.0.0.1:{free_port()}", ["does not answer", "connection refused"]
    else:
        address, fragments = locked_registry.address, ["refused authentication",
                                                       f"docker login {locked_registry.address}"]
        if case == "wrong-password":
            env["DOCKER_CONFIG"] = str(locked_registry.docker_config(tmp_path / "dc", "wrong"))
    tag = janitor.track(f"{address}/ppml-test/refused-{os.getpid()}:1")
    record = tmp_path / "measurements.json"
    result = _sign_and_push(custom_image, tag, record, "--json", env=env)  # --json: no progress
    assert result.returncode == 1
    assert_one_line_error(result, f"pushing {tag}", *fragments)
    assert not record.exists()
    assert _gone(docker_client, tag)  # the tag set for the push was taken back


def test_a_failed_push_puts_an_existing_tag_back_and_reports_json(
        custom_image: dict, tmp_path: Path, docker_client, janitor) -> None:
    tag = janitor.track(f"127.0.0.1:{free_port()}/ppml-test/back-{os.getpid()}:1")
    repository, version = tag.rsplit(":", 1)
    docker_client.api.tag(custom_image["unsigned_image_id"], repository, version)
    record = tmp_path / "measurements.json"
    result = _sign_and_push(custom_image, tag, record, "--json")
    assert result.returncode == 1
    assert_one_line_error(result, "does not answer")
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["repo_digest"] is None
    assert "does not answer" in report["error"]
    assert report["mr_enclave"] == custom_image["mr_enclave"]
    assert not record.exists()
    assert docker_client.images.get(tag).id == custom_image["unsigned_image_id"]


@pytest.mark.parametrize("tag, fragment", [
    ("ppml-test/no-registry:1", "names no registry"),
    ("127.0.0.1:5000/Ppml-Test/upper:1", "must be lowercase"),
    ("127.0.0.1:5000/ppml-test/x@sha256:" + "a" * 64, "digest"),
])
def test_invalid_push_names_are_refused_before_any_work(tag: str, fragment: str,
                                                        custom_image: dict,
                                                        tmp_path: Path) -> None:
    result = _sign_and_push(custom_image, tag, tmp_path / "m.json")
    assert result.returncode == 2
    assert_one_line_error(result, "--tag", fragment)  # and nothing measured before


def test_push_with_the_engines_credentials(custom_image: dict, locked_registry,
                                           tmp_path: Path, docker_client, janitor) -> None:
    """docker login's config is what pushes use; the password appears in no output."""
    config = locked_registry.docker_config(tmp_path / "docker-config")
    tag = janitor.track(f"{locked_registry.address}/ppml-test/login-{os.getpid()}:1")
    result = _sign_and_push(custom_image, tag, tmp_path / "m.json",
                            env={"DOCKER_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert DIGEST_LINE.search(result.stdout)
    assert locked_registry.password not in result.stdout + result.stderr
    assert json.loads((tmp_path / "m.json").read_text())["repo_digest"] == \
        DIGEST_LINE.findall(result.stdout)[0]


# --------------------------------------------------------------------------
# --expect-mr-enclave: exit 3 before anything is tagged or pushed.
# --------------------------------------------------------------------------
def test_expect_mr_enclave(custom_image: dict, slim_base: dict, enclave_key: Path,
                           app_dir: Path, registry, docker_client, janitor) -> None:
    wrong = "0" * 64
    repo = registry.repository("expect")
    tag = janitor.track(f"{repo}:1")
    janitor.track(f"{tag}-unsigned")
    refused = run_cli("build-custom", "--key", enclave_key, "--base", slim_base["tags"][0],
                      "--app", app_dir, "--tag", tag, "--expect-mr-enclave", wrong, "--push",
                      "--json")
    assert refused.returncode == 3
    assert_one_line_error(refused, f"MRENCLAVE is {custom_image['mr_enclave']}",
                          f"expected {wrong}")
    assert _gone(docker_client, tag) and _gone(docker_client, f"{tag}-unsigned")
    assert registry.tags(repo) == []
    resigned = run_cli("sign-image", custom_image["unsigned_image"], "--base",
                       custom_image["base_image_id"], "--key", enclave_key,
                       "--tag", tag, "--expect-mr-enclave", wrong, "--json")
    assert resigned.returncode == 3
    assert_one_line_error(resigned, f"expected {wrong}")
    assert _gone(docker_client, tag)
    matching = run_cli("sign-image", custom_image["unsigned_image"], "--base",
                       custom_image["base_image_id"], "--key", enclave_key,
                       "--tag", tag, "--expect-mr-enclave", custom_image["mr_enclave"].upper(),
                       "--json")
    assert matching.returncode == 0, matching.stderr
    assert json.loads(matching.stdout)["mr_enclave"] == custom_image["mr_enclave"]
    bad = run_cli("sign-image", custom_image["unsigned_image"], "--base",
                  custom_image["base_image_id"], "--key", enclave_key,
                  "--expect-mr-enclave", "xyz")
    assert bad.returncode == 2
    assert_one_line_error(bad, "64 hex digits")


# --------------------------------------------------------------------------
# The offline two-step flow on an image, signed by the openssl command line.
# --------------------------------------------------------------------------
def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def test_offline_two_step_on_an_image_equals_signing_directly(
        custom_image: dict, tmp_path: Path, docker_client, janitor) -> None:
    key = tmp_path / "prod-key.pem"
    assert run_cli("keygen", key).returncode == 0
    _openssl("rsa", "-in", key, "-pubout", "-out", tmp_path / "prod-pub.pem")
    unsigned = custom_image["unsigned_image"]
    data = tmp_path / "app.tbs"
    exported = run_cli("sign-image", unsigned, "--base", custom_image["base_image_id"], "--date",
                       "2025-01-31",
                       "--export-signing-data", data, "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["mr_enclave"] == custom_image["mr_enclave"]
    assert data.stat().st_size == 256 and (tmp_path / "app.tbs.json").is_file()
    _openssl("dgst", "-sha256", "-sign", key, "-out", tmp_path / "app.tbs.sig", data)

    assembled = janitor.track(unique_tag("assembled"))
    direct = janitor.track(unique_tag("direct"))
    two_step = run_cli("sign-image", unsigned, "--record", tmp_path / "app.tbs.json", "--date",
                       "2025-01-31", "--signature",
                       tmp_path / "app.tbs.sig", "--public-key", tmp_path / "prod-pub.pem",
                       "--tag", assembled, "--json")
    assert two_step.returncode == 0, two_step.stderr
    one_step = run_cli("sign-image", unsigned, "--base", custom_image["base_image_id"], "--date",
                       "2025-01-31", "--key", key,
                       "--tag", direct, "--json")
    assert one_step.returncode == 0, one_step.stderr
    assert json.loads(two_step.stdout)["sigstruct"] == json.loads(one_step.stdout)["sigstruct"]
    for path in ("/ppml/python-ml.sig", "/ppml/python-ml.manifest.sgx"):
        assert read_file_from_image(docker_client, assembled, path) == \
            read_file_from_image(docker_client, direct, path), path
    a, d = docker_client.images.get(assembled), docker_client.images.get(direct)
    assert a.labels == d.labels
    assert a.attrs["RootFS"]["Layers"] == d.attrs["RootFS"]["Layers"]  # content hashes
    verified = run_cli("verify", assembled, "--base", custom_image["base_image_id"], "--mr-signer",
                       json.loads(one_step.stdout)["mr_signer"])
    assert verified.returncode == 0, verified.stderr

    # The same signature assembled for another date: refused, nothing tagged.
    other = unique_tag("other-date")
    refused = run_cli("sign-image", unsigned, "--record", tmp_path / "app.tbs.json", "--date",
                      "2025-02-01", "--signature",
                      tmp_path / "app.tbs.sig", "--public-key", tmp_path / "prod-pub.pem",
                      "--tag", other, "--json")
    assert refused.returncode == 3
    assert_one_line_error(refused, "does not verify")
    assert _gone(docker_client, other)


def test_export_on_an_image_refuses_signing_and_publishing_options(
        custom_image: dict, tmp_path: Path) -> None:
    unsigned = custom_image["unsigned_image"]
    for extra, fragment in ((["--key", str(COMMON_KEY)], "--key"),
                            (["--tag", "x:1"], "--tag"), (["--push"], "--push"),
                            (["--output", str(tmp_path / "m.json")], "--output")):
        result = run_cli("sign-image", unsigned, "--export-signing-data", tmp_path / "d.tbs",
                         *extra)
        assert result.returncode == 2, (extra, result.stderr)
        assert_one_line_error(result, fragment)
        assert not (tmp_path / "d.tbs").exists()


# --------------------------------------------------------------------------
# A key generated inside a SoftHSM2 token signs a custom image.
# --------------------------------------------------------------------------
def _token_patterns(hsm: SoftHsm) -> dict[str, bytes]:
    """The PINs, and high-entropy pieces of the token's object files (its encrypted keys)."""
    patterns = {"user PIN": hsm.pin.encode(), "SO PIN": hsm.so_pin.encode()}
    for path in sorted((hsm.root / "tokens").rglob("*.object")):
        data = path.read_bytes()
        for offset in range(len(data) // 2, len(data) - 48, 16):
            piece = data[offset: offset + 40]
            if len(set(piece)) >= 30:
                patterns[f"token file {path.name}@{offset}"] = piece
                break
    return patterns


def test_a_token_key_signs_a_custom_image_and_no_pin_reaches_the_engine(
        softhsm: SoftHsm, slim_base: dict, app_dir: Path, tmp_path: Path, docker_client,
        janitor) -> None:
    from conftest import SESSION_START
    from test_key_safety import Scanner

    label = f"image-key-{os.urandom(3).hex()}"
    made = run_cli("keygen", "--pkcs11", softhsm.uri(label), "--json", env=softhsm.env)
    assert made.returncode == 0, made.stderr
    mr_signer = json.loads(made.stdout)["mr_signer"]
    tag = janitor.track(unique_tag("custom-token"))
    janitor.track(f"{tag}-unsigned")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    built = run_cli("build-custom", "--key", softhsm.uri(label), "--base", slim_base["tags"][0],
                    "--app", app_dir, "--tag", tag, "--json",
                    env={**softhsm.env, "TMPDIR": str(private_tmp)})
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["mr_signer"] == mr_signer
    verified = run_cli("verify", tag, "--base", slim_base["tags"][0], "--mr-signer",
                       mr_signer)
    assert verified.returncode == 0, verified.stderr

    patterns = _token_patterns(softhsm)
    assert len(patterns) >= 4, patterns.keys()  # PINs and at least two token objects
    scanner = Scanner(patterns)
    api = docker_client.api
    response = api._get(api._url("/images/get"), params={"names": [tag, f"{tag}-unsigned"]},
                        stream=True)
    api._raise_for_status(response)
    scanner.scan_stream(response.iter_content(1 << 20), f"docker save of {tag}")
    for image in docker_client.images.list(all=True):
        scanner._find(json.dumps(image.history()).encode(), f"history of {image.id[:19]}")
        scanner._find(json.dumps(image.attrs).encode(), f"config of {image.id[:19]}")
    scanner.scan_tree(Path(docker_client.info()["DockerRootDir"]), changed_since=SESSION_START)
    scanner.scan_tree(private_tmp)
    assert scanner.scanned > 100 << 20
    assert scanner.hits == []
    # The scan can fail: the PIN and a token file, planted, are found.
    planted = Scanner(patterns)
    planted.scan_tree(softhsm.root)
    assert any("user PIN" in hit for hit in planted.hits)
    assert any("token file" in hit for hit in planted.hits)


# --------------------------------------------------------------------------
# Hostile registries, and Ctrl-C in the middle of a push.
# --------------------------------------------------------------------------
def test_a_registry_serving_other_bytes_for_a_digest_is_caught(
        custom_image: dict, tmp_path: Path, docker_client, janitor) -> None:
    """The engine checks every pulled blob against its digest: tampering in the registry's
    storage fails verify by digest (exit 3), it is never verified."""
    with private_registry(tmp_path) as address:
        repo = f"{address}/ppml-test/served-{os.getpid()}"
        tag = janitor.track(f"{repo}:1")
        # A signed image of its own (another date): its signature layer exists nowhere else.
        pushed = run_cli("sign-image", custom_image["unsigned_image"], "--base",
                         custom_image["base_image_id"], "--key", COMMON_KEY,
                         "--date", "2025-03-03", "--tag", tag, "--push", "--json")
        assert pushed.returncode == 0, pushed.stderr
        digest = json.loads(pushed.stdout)["repo_digest"]
        _remove(docker_client, tag)
        assert _gone(docker_client, digest)
        top = blob_file(tmp_path / "storage", manifest_layers(address, repo, "1")[-1])
        data = bytearray(top.read_bytes())
        data[len(data) // 2] ^= 0xFF
        top.write_bytes(bytes(data))
        result = run_cli("verify", digest, "--json")
        assert result.returncode == 3, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is False and report["digest"] is None
        assert any("does not match its digest" in p for p in report["problems"]), report
        assert _gone(docker_client, digest)


def test_verify_by_digest_when_the_registry_is_down(tmp_path: Path) -> None:
    digest = f"127.0.0.1:{free_port()}/ppml-test/x@sha256:" + "ab" * 32
    result = run_cli("verify", digest)
    assert result.returncode == 1
    assert_one_line_error(result, f"pulling {digest}", "does not answer")


def test_ctrl_c_during_a_push_puts_the_tags_back(custom_image: dict, tmp_path: Path,
                                                 docker_client, janitor) -> None:
    """A registry that accepts the connection and never answers; SIGINT mid-push."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        tag = janitor.track(f"127.0.0.1:{silent.getsockname()[1]}/ppml-test/int-{os.getpid()}:1")
        record = tmp_path / "m.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_IMAGE_")}
        with subprocess.Popen(
                [sys.executable, "-m", "ppml_image", "sign-image",
                 custom_image["unsigned_image"], "--base", custom_image["base_image_id"], "--key",
                 str(COMMON_KEY), "--date",
                 "2025-01-31", "--tag", tag, "--push", "--output", str(record)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None
            seen = ""
            deadline = time.monotonic() + 300
            while f"built {tag}" not in seen and time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                seen += line
            assert f"built {tag}" in seen, seen
            time.sleep(2)  # inside the push: the engine waits for the silent registry
            assert proc.poll() is None, seen
            assert not _gone(docker_client, tag)  # tagged for the push
            proc.send_signal(signal.SIGINT)
            _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + rest
    assert "ppml-image: error: interrupted" in rest
    assert _gone(docker_client, tag)
    assert not record.exists()


# --------------------------------------------------------------------------
# A registry that accepts the connection and never answers: --registry-timeout.
# --------------------------------------------------------------------------
@pytest.fixture
def silent_registry():
    """127.0.0.1:PORT: a socket that listens (the engine's connections queue) and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield f"127.0.0.1:{silent.getsockname()[1]}"


def _timed(*args: str | Path):
    start = time.monotonic()
    result = run_cli(*args)
    return result, time.monotonic() - start


@pytest.mark.parametrize("as_json", [False, True])
def test_verify_pull_from_a_silent_registry_stops_at_the_deadline(
        as_json: bool, silent_registry: str, docker_client) -> None:
    ref = f"{silent_registry}/ppml-test/silent-{os.getpid()}:1"
    result, took = _timed("verify", ref, "--pull", "--registry-timeout", "3",
                          *(["--json"] if as_json else []))
    assert result.returncode == 1, result
    # The engine on its own gives up on this registry after about 25 s, and never
    # on one that answers the connection's first bytes and then goes silent.
    assert took < 15, took
    assert_one_line_error(result, f"pulling {ref}: registry {silent_registry} did not answer "
                          "within 3 s")
    if as_json:
        report = json.loads(result.stdout)
        assert report["ok"] is False and report["exit_code"] == 1
        assert "did not answer within 3 s" in report["error"]
    assert _gone(docker_client, ref)  # nothing pulled, nothing half-tagged


@pytest.mark.parametrize("as_json", [False, True])
def test_a_push_to_a_silent_registry_stops_at_the_deadline_and_puts_the_tag_back(
        as_json: bool, silent_registry: str, custom_image: dict, tmp_path: Path,
        docker_client, janitor) -> None:
    tag = janitor.track(f"{silent_registry}/ppml-test/silent-{os.getpid()}:1")
    record = tmp_path / "measurements.json"
    start = time.monotonic()
    result = _sign_and_push(custom_image, tag, record, "--registry-timeout", "3",
                            *(["--json"] if as_json else []))
    took = time.monotonic() - start
    assert result.returncode == 1, result
    assert took < 60, took  # measuring and building the signed image included
    message = f"pushing {tag}: registry {silent_registry} did not answer within 3 s"
    if as_json:
        assert_one_line_error(result, message)
        report = json.loads(result.stdout)
        assert report["ok"] is False and report["repo_digest"] is None
        assert message in report["error"]
        assert report["mr_enclave"] == custom_image["mr_enclave"]
    else:
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr
        # While the engine waits, the user is told what for.
        assert f"pushing {tag} to {silent_registry} ..." in lines
        assert lines[-1].startswith("ppml-image: error: ") and message in lines[-1], lines
    assert not record.exists()
    assert _gone(docker_client, tag)


def test_build_base_pulling_its_os_image_from_a_silent_registry_stops_at_the_deadline(
        silent_registry: str, gramine_tree: Path, docker_client) -> None:
    os_image = f"{silent_registry}/ppml-test/os-{os.getpid()}:1"
    start = time.monotonic()
    result = build_base_cli(f"ppml-test/never-built-{os.getpid()}:1", gramine_tree,
                            "--os-image", os_image, "--registry-timeout", "3")
    assert time.monotonic() - start < 15
    assert result.returncode == 1, result
    assert_one_line_error(result, f"OS image {os_image} is not on this engine and cannot be "
                          f"pulled (pulling {os_image}: registry {silent_registry} did not "
                          "answer within 3 s", "bootstrap-os")
    assert json.loads(result.stdout)["ok"] is False
    assert _gone(docker_client, os_image)


def _stderr_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); its code and stderr."""
    import pty
    import select

    master, slave = pty.openpty()
    with subprocess.Popen([sys.executable, "-m", "ppml_image", *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=slave) as proc:
        os.close(slave)
        shown = bytearray()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        os.close(master)
        code = proc.wait(timeout=30)
    return code, shown.decode(errors="replace")


def test_verify_pull_tells_a_terminal_whom_it_waits_for(silent_registry: str,
                                                         attest_args: list[str]) -> None:
    ref = f"{silent_registry}/ppml-test/silent-{os.getpid()}:1"
    code, shown = _stderr_on_a_terminal(*attest_args, ref, "--pull", "--registry-timeout", "3")
    assert code == 1, shown
    lines = [line.strip() for line in shown.replace("\r", "\n").splitlines() if line.strip()]
    if attest_args == ["verify"]:  # attest record shows no progress: it prints a record
        assert lines[0] == f"pulling {ref} from {silent_registry} ...", shown
    assert lines[-1] == (f"ppml-image: error: pulling {ref}: registry {silent_registry} did "
                         "not answer within 3 s (--registry-timeout)"), shown
    assert "Traceback" not in shown


@pytest.fixture(params=[["verify"], ["attest", "record"]], ids=" ".join)
def attest_args(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)
