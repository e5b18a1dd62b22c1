"""Issue 17 on the real engine: a pinned base, never a label, and a closed world outside
the enclave (the launcher is a bash script, as Gramine's is).

Each hostile image is what anyone could publish or hand to a signer; the
commands must exit 3 naming what differs, and nothing may be signed or tagged.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line_error, read_file_from_image, run_cli, unique_tag
from test_images_redteam import build_from

pytestmark = pytest.mark.docker

EVIL_NSS = b"\x7fELF a module bash would load before the enclave starts\n"
NSSWITCH = b"passwd: evil files\ngroup: files\n"


def _nss_steps() -> tuple[list[str], dict[str, bytes]]:
    return (["COPY libnss_evil.so.2 /usr/lib/", "COPY nsswitch.conf /etc/nsswitch.conf"],
            {"libnss_evil.so.2": EVIL_NSS, "nsswitch.conf": NSSWITCH})


def test_the_stand_in_launcher_is_bash_like_gramines(slim_base: dict, docker_client) -> None:
    head = read_file_from_image(docker_client, slim_base["tags"][0], "/usr/bin/gramine-sgx")
    assert head.startswith(b"#!/usr/bin/env bash\n")
    # bash is there to run it (it looks users up through NSS: the attack surface).
    assert read_file_from_image(docker_client, slim_base["tags"][0], "/bin/bash")[:4] == \
        b"\x7fELF"


def test_genuine_image_passes_the_closed_world(custom_image: dict) -> None:
    result = run_cli("verify", custom_image["image"], "--base", custom_image["base_image_id"],
                     "--mr-enclave", custom_image["mr_enclave"], "--json")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["outside_checked"] is True
    assert any("closed world" in c for c in report["checks"])


def test_nss_module_next_to_a_signed_image(custom_image: dict, docker_client, janitor) -> None:
    steps, files = _nss_steps()
    image = build_from(docker_client, janitor, custom_image["image"], steps, files, name="nss")
    result = run_cli("verify", image, "--base", custom_image["base_image_id"],
                     "--mr-enclave", custom_image["mr_enclave"],
                     "--mr-signer", custom_image["mr_signer"])
    assert result.returncode == 3, result
    assert_one_line_error(result, "/usr/lib/libnss_evil.so.2 added",
                          "/etc/nsswitch.conf changed")


def test_unpinned_verify_exits_3_unless_allowed(custom_image: dict) -> None:
    result = run_cli("verify", custom_image["image"])
    assert result.returncode == 3
    assert_one_line_error(result, "was not checked", "--base", "--allow-unpinned-base")
    allowed = run_cli("verify", custom_image["image"], "--allow-unpinned-base", "--json")
    assert allowed.returncode == 0, allowed.stdout
    report = json.loads(allowed.stdout)
    assert report["outside_checked"] is False
    assert any(c.startswith("NOT CHECKED") for c in report["checks"])


def _attacker_based(custom_image: dict, slim_base: dict, docker_client, janitor
                    ) -> tuple[str, str]:
    """A base FROM the real one with a trojaned bash launcher, and the app on it with the
    original /ppml, CMD and WORKDIR, its label naming the attacker's base."""
    trojan = b"#!/usr/bin/env bash\ncat /ppml/keys/* >&2\nexit 0\n"
    evil_base = build_from(docker_client, janitor, slim_base["tags"][0],
                           ["COPY gramine-sgx /usr/bin/gramine-sgx"], {"gramine-sgx": trojan},
                           name="evil-base")
    evil_id = docker_client.images.get(evil_base).id
    image = build_from(docker_client, janitor, evil_base, [
        f"COPY --from={custom_image['image']} /ppml /ppml", "WORKDIR /ppml",
        'CMD ["gramine-sgx", "python-ml"]', f"LABEL ppml-image.base-image-id={evil_id}"],
        name="evil-app")
    return evil_base, image


def test_a_label_naming_an_attacker_base(custom_image: dict, slim_base: dict,
                                         enclave_key: Path, docker_client, janitor) -> None:
    _, image = _attacker_based(custom_image, slim_base, docker_client, janitor)
    expected = ("--mr-enclave", custom_image["mr_enclave"])
    unpinned = run_cli("verify", image, *expected)
    assert unpinned.returncode == 3
    assert_one_line_error(unpinned, "no pinned base")
    pinned = run_cli("verify", image, "--base", custom_image["base_image_id"], *expected)
    assert pinned.returncode == 3
    assert_one_line_error(pinned, "/usr/bin/gramine-sgx changed", "launcher")
    # sign-image, pinned to the genuine base, refuses the image derived from the other one.
    tag = janitor.track(unique_tag("never"))
    refused = run_cli("sign-image", "--json", image, "--key", enclave_key, "--tag", tag,
                      "--base", custom_image["base_image_id"])
    assert refused.returncode == 3, refused
    assert_one_line_error(refused, "/usr/bin/gramine-sgx changed", "nothing signed")
    assert not docker_client.images.list(name=tag.partition(":")[0])


def test_sign_image_refuses_a_non_derived_image(custom_image: dict, slim_base: dict,
                                                enclave_key: Path, docker_client,
                                                janitor) -> None:
    other = build_from(docker_client, janitor, slim_base["tags"][0],
                       ["RUN echo other > /etc/other-base"], name="other-base")
    tag = janitor.track(unique_tag("never"))
    result = run_cli("sign-image", "--json", custom_image["unsigned_image"], "--key", enclave_key,
                     "--tag", tag, "--base", other)
    assert result.returncode == 3, result
    assert_one_line_error(result, "does not derive from the pinned base", "nothing signed")
    unpinned = run_cli("sign-image", "--json", custom_image["unsigned_image"], "--key", enclave_key,
                       "--tag", tag)
    assert unpinned.returncode == 2
    assert_one_line_error(unpinned, "--base", "never trusted")


def test_sign_image_refuses_the_unsigned_variant_with_an_nss_module(
        custom_image: dict, enclave_key: Path, docker_client, janitor) -> None:
    steps, files = _nss_steps()
    unsigned = build_from(docker_client, janitor, custom_image["unsigned_image"], steps, files,
                          name="nss-unsigned")
    tag = janitor.track(unique_tag("never"))
    result = run_cli("sign-image", "--json", unsigned, "--key", enclave_key, "--tag", tag,
                     "--base", custom_image["base_image_id"])
    assert result.returncode == 3, result
    assert_one_line_error(result, "/usr/lib/libnss_evil.so.2 added",
                          "/etc/nsswitch.conf changed", "nothing signed")


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def test_the_offline_signature_onto_another_image_is_refused(
        custom_image: dict, enclave_key: Path, tmp_path: Path, docker_client,
        janitor) -> None:
    unsigned = custom_image["unsigned_image"]
    data = tmp_path / "app.tbs"
    exported = run_cli("sign-image", unsigned, "--date", "2025-01-31", "--export-signing-data",
                       data, "--base", custom_image["base_image_id"], "--json")
    assert exported.returncode == 0, exported.stderr
    record = tmp_path / "app.tbs.json"
    written = json.loads(record.read_text())
    assert written["unsigned_image_id"] == custom_image["unsigned_image_id"]
    assert written["base_image_id"] == custom_image["base_image_id"]
    _openssl("rsa", "-in", enclave_key, "-pubout", "-out", tmp_path / "pub.pem")
    _openssl("dgst", "-sha256", "-sign", enclave_key, "-out", tmp_path / "app.sig", data)
    # The same enclave, the same outside content, another image (a label differs):
    # the reviewed signature goes onto the reviewed image only.
    other = build_from(docker_client, janitor, unsigned, ["LABEL reviewed=no"], name="other")
    signature = ("--signature", tmp_path / "app.sig", "--public-key", tmp_path / "pub.pem",
                 "--date", "2025-01-31")
    tag = janitor.track(unique_tag("never"))
    refused = run_cli("sign-image", "--json", other, *signature, "--record", record, "--tag", tag)
    assert refused.returncode == 3, refused
    assert_one_line_error(refused, "records the measured image",
                          custom_image["unsigned_image_id"])
    no_record = run_cli("sign-image", "--json", unsigned, *signature, "--base",
                        custom_image["base_image_id"], "--tag", tag)
    assert no_record.returncode == 2
    assert_one_line_error(no_record, "--signature needs --record")
    assembled = janitor.track(unique_tag("assembled"))
    ok = run_cli("sign-image", unsigned, *signature, "--record", record, "--tag", assembled,
                 "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["mr_enclave"] == custom_image["mr_enclave"]


def test_run_with_keys_verifies_first(custom_image: dict, slim_base: dict, tmp_path: Path,
                                      docker_client, janitor) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k").write_text("TOPSECRET-4711\n")
    _, image = _attacker_based(custom_image, slim_base, docker_client, janitor)
    unpinned = run_cli("run", image, "--no-sgx", "--keys", keys)
    assert unpinned.returncode == 3
    assert_one_line_error(unpinned, "run refused", "no pinned base")
    trojan = run_cli("run", image, "--no-sgx", "--keys", keys, "--base",
                     custom_image["base_image_id"])
    assert trojan.returncode == 3
    assert "TOPSECRET-4711" not in trojan.stdout + trojan.stderr
    assert_one_line_error(trojan, "/usr/bin/gramine-sgx changed")


def test_run_refuses_a_data_folder_that_lands_on_path(custom_image: dict, tmp_path: Path,
                                                      docker_client, janitor) -> None:
    image = build_from(docker_client, janitor, custom_image["image"],
                       ["RUN ln -s /usr/local/bin /ppml/data"], name="datalink")
    data = tmp_path / "data"
    data.mkdir()
    result = run_cli("run", image, "--no-sgx", "--data", data)
    assert result.returncode == 3
    assert_one_line_error(result, "/ppml/data is a symlink", "/usr/local/bin")


def test_run_with_keys_runs_the_verified_image(custom_image: dict, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    result = run_cli("run", custom_image["image"], "--no-sgx", "--keys", keys,
                     "--base", custom_image["base_image_id"],
                     "--mr-enclave", custom_image["mr_enclave"])
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout  # loader.argv of the measured .manifest.sgx
    mine = run_cli("run", custom_image["image"], "--no-sgx", "--keys", keys,
                   "--base", custom_image["base_image_id"], "--", "sh", "-c", "cat /ppml/keys/*")
    assert mine.returncode == 2
    assert_one_line_error(mine, "nobody measured")


def test_reading_an_image_copies_nothing_into_its_volumes(custom_image: dict, os_image: str,
                                                          docker_client, janitor) -> None:
    """A VOLUME over a big sparse file: the temporary container's volume stays empty
    (NoCopy), so reading the image writes nothing of it to the verifier's disk."""
    from conftest import docker_run

    from ppml_image.images.engine.core import connect

    image = build_from(docker_client, janitor, custom_image["image"], [
        "RUN mkdir -p /opt/vol && truncate -s 1G /opt/vol/sparse && echo m > /opt/vol/marker",
        "VOLUME /opt/vol"], name="volume")
    with connect().open(image) as files:
        container = files.container  # type: ignore[attr-defined]
        mounts = docker_client.api.inspect_container(container)["Mounts"]
        names = [m["Name"] for m in mounts if m["Destination"] == "/opt/vol"]
        assert len(names) == 1, mounts
        assert docker_run(docker_client, os_image, ["ls", "-A", "/v"],
                          binds={names[0]: "/v"}) == ""
    result = run_cli("verify", image, "--base", custom_image["base_image_id"])
    assert result.returncode == 3
    assert_one_line_error(result, "config Volumes is {'/opt/vol': {}}")
