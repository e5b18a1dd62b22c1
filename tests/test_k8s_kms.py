"""k8s secrets --kms-... / --kubeconfig, and pod templates that read exactly those Secrets."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import assert_one_line_error, run_cli
from test_k8s_models import load_object

PASSWORD = "Pa55-word.for_tests"
APP_ID = "563173cf-f26d-4c74-82e1-a4105cf3fb48"
API_KEY = "xXH5nmw4J0NaKwKEJiKcxuJ859u1cwrE"
POLICY_ID = "49ac44ff-01f0-4b33-80ab-5249315ab5d4"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://10.0.0.1:6443", certificate-authority-data: QUJD}
  name: c
contexts:
- context: {cluster: c, user: spark-user}
  name: spark-context
current-context: spark-context
users:
- name: spark-user
  user: {token: not-a-real-token}
"""


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("k8s-kms")
    pw = root / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    for args in (["secrets", "tls", "--out", root / "keys", "--password-file", pw],
                 ["secrets", "password", "--out", root / "password", "--password-file", pw]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    key = root / "api-key.txt"
    key.write_text(API_KEY + "\n")
    key.chmod(0o600)
    (root / "kubeconfig").write_text(KUBECONFIG)
    return root


def _secrets(material: Path, out: Path, *extra: Any) -> Any:
    result = run_cli("k8s", "secrets", "--keys", material / "keys", "--password",
                     material / "password", "-o", out, *extra)
    assert API_KEY not in result.stdout + result.stderr
    return result


def _kms(material: Path) -> list[Any]:
    return ["--kms-app-id", APP_ID, "--kms-api-key-file", material / "api-key.txt",
            "--kms-policy-id", POLICY_ID]


def _documents(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, yaml.safe_load(path.read_text())) for path in sorted(folder.glob("*.yaml"))]


@pytest.fixture(scope="module")
def written(material: Path) -> Path:
    out = material / "k8s"
    result = _secrets(material, out, *_kms(material), "--kubeconfig", material / "kubeconfig")
    assert result.returncode == 0, result.stderr
    templates = run_cli("k8s", "spark-templates", "--image", "x:1", "--attestation",
                        "--mount-kubeconfig", "-o", out)
    assert templates.returncode == 0, templates.stderr
    return out


def _data(folder: Path, name: str) -> dict[str, bytes]:
    document = yaml.safe_load((folder / name).read_text())
    return {k: base64.b64decode(v) for k, v in document["data"].items()}


def test_kms_and_kubeconfig_secrets_hold_what_the_reference_workflow_creates(
        written: Path, material: Path) -> None:
    assert _data(written, "kms-secret.yaml") == {
        "app_id": APP_ID.encode(), "api_key": API_KEY.encode(), "policy_id": POLICY_ID.encode()}
    assert _data(written, "kubeconfig-secret.yaml") == {
        "kubeconfig": (material / "kubeconfig").read_bytes()}
    for name in ("kms-secret.yaml", "kubeconfig-secret.yaml"):
        assert stat.S_IMODE(os.stat(written / name).st_mode) == 0o600
        document = yaml.safe_load((written / name).read_text())
        assert document["metadata"]["name"] == name.removesuffix(".yaml")
        load_object(document, name)


def test_every_secret_a_template_references_is_one_that_k8s_secrets_writes(
        written: Path) -> None:
    secrets = {d["metadata"]["name"]: set(d["data"]) for _, d in _documents(written)
               if d["kind"] == "Secret"}
    referenced: set[tuple[str, str | None]] = set()
    for name, document in _documents(written):
        if document["kind"] != "Pod":
            continue
        pod = load_object(document, name)
        for volume in pod.spec.volumes or []:
            if volume.secret is not None:
                assert volume.secret.secret_name in secrets, (name, volume.name)
                for item in volume.secret.items or []:
                    assert item.key in secrets[volume.secret.secret_name], (name, item.key)
                    referenced.add((volume.secret.secret_name, item.key))
                referenced.add((volume.secret.secret_name, None))
        for container in pod.spec.containers:
            for env in container.env or []:
                ref = env.value_from.secret_key_ref if env.value_from else None
                if ref is not None:
                    assert ref.key in secrets.get(ref.name, set()), (name, ref.name, ref.key)
                    referenced.add((ref.name, ref.key))
    # The pods do read what the two new Secrets hold, under the names the reference uses.
    assert {("kms-secret", "app_id"), ("kms-secret", "api_key"), ("kms-secret", "policy_id"),
            ("kubeconfig-secret", "kubeconfig")} <= referenced


def test_templates_without_the_flags_reference_neither_secret(tmp_path: Path) -> None:
    result = run_cli("k8s", "spark-templates", "--image", "x:1", "-o", tmp_path / "k8s")
    assert result.returncode == 0, result.stderr
    text = "".join(p.read_text() for p in (tmp_path / "k8s").glob("*.yaml"))
    assert "kms-secret" not in text and "kubeconfig-secret" not in text


def test_the_policy_id_can_come_from_a_registered_record(material: Path, tmp_path: Path) -> None:
    record = tmp_path / "registered.json"
    record.write_text(json.dumps({"mr_enclave": "ab" * 32, "mr_signer": "cd" * 32,
                                  "isv_prod_id": 1, "isv_svn": 1, "debug_enclave": False,
                                  "policy_id": POLICY_ID, "service": "ehsm"}))
    args = ["--kms-app-id", APP_ID, "--kms-api-key-file", material / "api-key.txt",
            "--kms-record", record]
    result = _secrets(material, tmp_path / "k8s", *args)
    assert result.returncode == 0, result.stderr
    assert _data(tmp_path / "k8s", "kms-secret.yaml")["policy_id"] == POLICY_ID.encode()
    unregistered = tmp_path / "unregistered.json"
    unregistered.write_text(json.dumps({**json.loads(record.read_text()), "policy_id": None}))
    refused = _secrets(material, tmp_path / "k8s2", *args[:-1], unregistered)
    assert refused.returncode == 2
    assert_one_line_error(refused, str(unregistered), "not a UUID", "attest register")
    assert not (tmp_path / "k8s2").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--kms-policy-id", POLICY_ID], "needs --kms-app-id"),
    (["--kms-app-id", APP_ID], "give --kms-policy-id or --kms-record"),
    (["--kms-app-id", APP_ID, "--kms-policy-id", POLICY_ID, "--kms-record", "r.json"],
     "one of them"),
    (["--kms-app-id", "a b", "--kms-policy-id", POLICY_ID], "not an app id"),
    (["--kms-app-id", APP_ID, "--kms-policy-id", "../../x"], "not a UUID"),
])
def test_inconsistent_kms_options(material: Path, tmp_path: Path, args: list[str],
                                  fragment: str) -> None:
    result = _secrets(material, tmp_path / "k8s", *args, "--kms-api-key-file",
                      material / "api-key.txt")
    assert result.returncode == 2
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "k8s").exists()


def test_no_api_key_file_and_no_terminal(material: Path, tmp_path: Path) -> None:
    result = _secrets(material, tmp_path / "k8s", "--kms-app-id", APP_ID, "--kms-policy-id",
                      POLICY_ID)
    assert_one_line_error(result, "no API key")


def test_kubeconfig_rules(material: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(material / "kubeconfig")
    refused = _secrets(material, tmp_path / "a", "--kubeconfig", link)
    assert refused.returncode == 2
    assert_one_line_error(refused, "symbolic link")
    not_config = tmp_path / "notes.txt"
    not_config.write_text("just some text\n")
    assert_one_line_error(_secrets(material, tmp_path / "b", "--kubeconfig", not_config),
                          "not a kubeconfig")
    huge = tmp_path / "huge"
    huge.write_text(KUBECONFIG + "#" + "x" * (1024 * 1024) + "\n")
    assert_one_line_error(_secrets(material, tmp_path / "c", "--kubeconfig", huge), "1 MiB")
    assert_one_line_error(_secrets(material, tmp_path / "d", "--kubeconfig", tmp_path),
                          "not a regular file")
    for out in "abcd":
        assert not (tmp_path / out).exists()


def test_force_replaces_only_this_commands_files(material: Path, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    assert _secrets(material, out, *_kms(material)).returncode == 0
    again = _secrets(material, out, *_kms(material))
    assert again.returncode == 2
    assert_one_line_error(again, "--force")
    # With --force and without --kms-..., the old kms-secret.yaml (ours) goes.
    assert _secrets(material, out, "--force").returncode == 0
    assert not (out / "kms-secret.yaml").exists()
    (out / "mine.txt").write_text("someone else's")
    foreign = _secrets(material, out, *_kms(material), "--force")
    assert_one_line_error(foreign, "mine.txt")
    assert (out / "mine.txt").read_text() == "someone else's"
