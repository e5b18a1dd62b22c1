"""secrets tls/password and k8s manifests: real files, real parsers, real modes."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import assert_one_line_error, run_cli
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from kubernetes.client import ApiClient

PASSWORD = "correct horse battery"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pw_file(tmp_path: Path) -> Path:
    path = tmp_path / "pw.txt"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def material(tmp_path: Path, pw_file: Path) -> dict[str, Path]:
    keys, password = tmp_path / "keys", tmp_path / "password"
    tls = run_cli("secrets", "tls", "--out", keys, "--cn", "spark.example.org", "--san",
                  "10.1.2.3", "--san", "driver.local", "--days", "30", "--password-file", pw_file)
    assert tls.returncode == 0, tls.stderr
    pw = run_cli("secrets", "password", "--out", password, "--password-file", pw_file)
    assert pw.returncode == 0, pw.stderr
    return {"keys": keys, "password": password}


def k8s_round_trip(doc: dict, kind: str) -> None:
    """The document survives the Kubernetes client's typed models unchanged."""

    api = ApiClient()
    typed = api.deserialize(json.dumps(doc), kind, "application/json")
    back = api.sanitize_for_serialization(typed)
    assert back == doc


def test_tls_material(material: dict[str, Path]) -> None:
    keys = material["keys"]
    assert _mode(keys) == 0o700
    for path in keys.iterdir():
        assert _mode(path) == 0o600, path
    key_store = pkcs12.load_pkcs12((keys / "keystore.p12").read_bytes(), PASSWORD.encode())
    cert = key_store.cert.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"spark.example.org", "driver.local"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    remaining = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=29) < remaining <= dt.timedelta(days=30)
    assert key_store.key is not None and key_store.key.key_size == 3072
    with pytest.raises(TypeError):  # encrypted: no unencrypted key is left behind
        serialization.load_pem_private_key((keys / "server.key").read_bytes(), None)
    serialization.load_pem_private_key((keys / "server.key").read_bytes(), PASSWORD.encode())


@pytest.mark.skipif(shutil.which("keytool") is None, reason="no JDK keytool on this machine")
def test_jks_is_read_by_java_keytool(material: dict[str, Path], pw_file: Path) -> None:
    listing = subprocess.run(["keytool", "-list", "-keystore", str(material["keys"] /
                                                                  "keystore.jks"),
                              "-storetype", "JKS", "-storepass:file", str(pw_file)],
                             capture_output=True, text=True, check=True).stdout
    assert "PrivateKeyEntry" in listing and "spark," in listing


def test_unencrypted_key_only_on_request(tmp_path: Path, pw_file: Path) -> None:
    out = tmp_path / "plain"
    result = run_cli("secrets", "tls", "--out", out, "--password-file", pw_file,
                     "--unencrypted-key")
    assert result.returncode == 0, result.stderr
    serialization.load_pem_private_key((out / "server.key").read_bytes(), None)


def test_password_decrypts_with_openssl(material: dict[str, Path]) -> None:
    folder = material["password"]
    assert _mode(folder) == 0o700
    assert {_mode(p) for p in folder.iterdir()} == {0o600}
    out = subprocess.run(["openssl", "pkeyutl", "-decrypt", "-inkey", str(folder / "key.txt"),
                          "-in", str(folder / "output.bin")], capture_output=True, check=True)
    assert out.stdout == PASSWORD.encode()


def test_existing_folder_refused_without_force(material: dict[str, Path], pw_file: Path) -> None:
    before = (material["keys"] / "server.crt").read_bytes()
    result = run_cli("secrets", "tls", "--out", material["keys"], "--password-file", pw_file)
    assert_one_line_error(result, str(material["keys"]), "--force")
    assert (material["keys"] / "server.crt").read_bytes() == before
    forced = run_cli("secrets", "tls", "--out", material["keys"], "--password-file", pw_file,
                     "--force")
    assert forced.returncode == 0
    assert (material["keys"] / "server.crt").read_bytes() != before


@pytest.mark.parametrize("content,fragment", [(None, "cannot read"), ("short\n", "at least")])
def test_bad_password_file(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    result = run_cli("secrets", "password", "--out", tmp_path / "o", "--password-file", path)
    assert_one_line_error(result, str(path), fragment)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_no_password_and_no_terminal(tmp_path: Path) -> None:
    result = run_cli("secrets", "tls", "--out", tmp_path / "k")
    assert_one_line_error(result, "--password-file")


def test_k8s_secrets(material: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = run_cli("k8s", "secrets", "--keys", material["keys"], "--password",
                     material["password"], "--namespace", "ml", "-o", out)
    assert result.returncode == 0, result.stderr
    docs = {p.name: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}
    assert set(docs) == {"keys.yaml", "password.yaml", "spark-secret.yaml"}
    for name, doc in docs.items():
        k8s_round_trip(doc, "V1Secret")
        assert doc["metadata"]["namespace"] == "ml"
        assert _mode(out / name) == 0o600
    keys = docs["keys.yaml"]["data"]
    assert base64.b64decode(keys["keystore.p12"]) == \
        (material["keys"] / "keystore.p12").read_bytes()
    assert base64.b64decode(docs["spark-secret.yaml"]["data"]["secret"]) == PASSWORD.encode()
    assert docs["spark-secret.yaml"]["metadata"]["name"] == "spark-secret"


def test_k8s_secrets_bad_input(material: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("k8s", "secrets", "--keys", tmp_path / "nope", "--password",
                     material["password"], "-o", tmp_path / "o")
    assert_one_line_error(result, str(tmp_path / "nope"), "does not exist")
    result = run_cli("k8s", "secrets", "--keys", material["keys"], "--password",
                     material["keys"], "-o", tmp_path / "o")
    assert_one_line_error(result, "not a password folder")


def test_spark_templates(material: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = run_cli("k8s", "spark-templates", "--image", "registry.example/ppml/job:1",
                     "--sgx-epc", "16Gi", "-o", out)
    assert result.returncode == 0, result.stderr
    for role in ("driver", "executor"):
        doc = yaml.safe_load((out / f"spark-{role}-template.yaml").read_text())
        k8s_round_trip(doc, "V1Pod")
        container = doc["spec"]["containers"][0]
        assert container["image"] == "registry.example/ppml/job:1"
        limits = container["resources"]["limits"]
        assert limits == {"sgx.intel.com/epc": "16Gi", "sgx.intel.com/enclave": "1",
                          "sgx.intel.com/provision": "1"}
        assert {v["secret"]["secretName"] for v in doc["spec"]["volumes"] if "secret" in v} \
            == {"ssl-keys", "ssl-password"}
    conf = (out / "spark-security.conf").read_text()
    for prop in ("spark.authenticate true", "spark.network.crypto.enabled true",
                 "spark.io.encryption.enabled true", "spark.ssl.enabled true"):
        assert prop in conf
    assert PASSWORD not in conf
    with_pw = run_cli("k8s", "spark-templates", "--image", "x:1", "--password",
                      material["password"], "-o", tmp_path / "k8s2")
    assert with_pw.returncode == 0, with_pw.stderr
    secret_conf = tmp_path / "k8s2" / "spark-security.conf"
    assert f"spark.ssl.keyStorePassword {PASSWORD}" in secret_conf.read_text()
    assert _mode(secret_conf) == 0o600


def test_spark_templates_reject_bad_quantity(tmp_path: Path) -> None:
    result = run_cli("k8s", "spark-templates", "--image", "x:1", "--sgx-epc", "lots", "-o",
                     tmp_path / "k")
    assert_one_line_error(result, "lots", "quantity")


def test_k8s_validation_catches_mistakes() -> None:
    """The round trip above can fail: a misspelt field or a wrong type is caught."""
    good = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}
    k8s_round_trip(good, "V1Pod")
    typo = {**good, "spec": {"containres": [{"name": "c", "image": "i"}]}}
    with pytest.raises((AssertionError, ValueError)):
        k8s_round_trip(typo, "V1Pod")
    no_image_name = {**good, "spec": {"containers": [{"image": "i"}]}}
    with pytest.raises((AssertionError, ValueError)):
        k8s_round_trip(no_image_name, "V1Pod")


@pytest.mark.skipif(shutil.which("keytool") is None, reason="no JDK keytool on this machine")
def test_longest_accepted_password_works_in_keytool_and_openssl(tmp_path: Path) -> None:
    """The upper bound we accept (373 bytes, any printable ASCII) is one Java and RSA take."""
    password = ("\\ =:#!\"'$`" + "".join(map(chr, range(0x20, 0x7F))) * 4)[:373]
    assert len(password) == 373 and password.startswith("\\ ")
    pw_file = tmp_path / "pw"
    pw_file.write_text(password + "\n")
    keys, folder = tmp_path / "keys", tmp_path / "password"
    for args in (["secrets", "tls", "--out", keys], ["secrets", "password", "--out", folder]):
        result = run_cli(*args, "--password-file", pw_file)
        assert result.returncode == 0, result.stderr
    env = {"PATH": os.environ["PATH"], "STOREPASS": password}
    for store, kind in (("keystore.jks", "JKS"), ("keystore.p12", "PKCS12")):
        listing = subprocess.run(["keytool", "-list", "-keystore", str(keys / store),
                                  "-storetype", kind, "-storepass:env", "STOREPASS"],
                                 capture_output=True, text=True, env=env, check=False)
        assert listing.returncode == 0 and "PrivateKeyEntry" in listing.stdout, listing
    out = subprocess.run(["openssl", "pkeyutl", "-decrypt", "-inkey", str(folder / "key.txt"),
                          "-in", str(folder / "output.bin")], capture_output=True, check=True)
    assert out.stdout == password.encode()
    too_long = tmp_path / "pw374"
    too_long.write_text(password + "x\n")
    result = run_cli("secrets", "password", "--out", tmp_path / "p2", "--password-file",
                     too_long)
    assert_one_line_error(result, str(too_long), "373")
    assert not (tmp_path / "p2").exists()
