"""``k8s spark-templates``: Spark-on-Kubernetes pod templates for SGX, and
``spark-security.conf`` with the reference workflow's security properties.

The pods ask the Intel SGX device plugin for EPC memory and the enclave and
provision devices, mount the TLS keys and the encrypted password from the
Secrets that ``k8s secrets`` writes, and take the Spark authentication
secret from ``spark-secret``. We generate what Spark needs; Kubernetes and
Spark do the scheduling.

The three files are generated together and swapped in together: never pod
templates without their ``spark-security.conf``. The folder may also hold
the files of ``k8s secrets``, which are kept.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from ppml_image._fs import atomic_output, staged_folder
from ppml_image.errors import UsageError
from ppml_image.k8s import SECRET_FILES, TEMPLATE_FILES
from ppml_image.k8s.secret_manifests import (
    KEYS_SECRET,
    KMS_SECRET,
    KUBECONFIG_KEY,
    KUBECONFIG_SECRET,
    PASSWORD_SECRET,
    SPARK_SECRET,
)
from ppml_image.spark.common import save
from ppml_image.spark.password import decrypt_password
from ppml_image.spark.properties import format_properties

KEYS_MOUNT = "/ppml/keys"
PASSWORD_MOUNT = "/ppml/password"
KUBECONFIG_MOUNT = "/root/.kube"
# What BigDL's attestation step reads (ATTESTATION_ID/KEY/POLICYID), from the
# keys that `k8s secrets --kms-...` writes into kms-secret.
ATTESTATION_ENV = (("ATTESTATION_ID", "app_id"), ("ATTESTATION_KEY", "api_key"),
                   ("ATTESTATION_POLICYID", "policy_id"))
# Anchored with \Z: `$` would also match before a trailing newline.
_QUANTITY = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?\Z")
_JVM_SIZE = re.compile(r"[1-9][0-9]{0,17}[kKmMgGtT]?\Z")  # what -Xmx takes
_IMAGE = re.compile(r"[\x21-\x7e]{1,4096}\Z")  # printable ASCII, no blank
_JAVA_TRIM = "".join(map(chr, range(0x21)))  # what Java's String.trim() removes
_log = logging.getLogger("ppml_image.k8s")


def _secret_env(name: str, secret_name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def _container(image: str, role: str, epc: str, jvm_mem: str, log_level: str,
               attestation: bool, kubeconfig: bool) -> dict[str, Any]:
    sgx = {"sgx.intel.com/epc": epc, "sgx.intel.com/enclave": "1",
           "sgx.intel.com/provision": "1"}
    container: dict[str, Any] = {
        "name": f"spark-kubernetes-{role}",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "SGX_ENABLED", "value": "true"},
            {"name": "SGX_LOG_LEVEL", "value": log_level},
            {"name": f"SGX_{role.upper()}_MEM", "value": epc},
            {"name": f"SGX_{role.upper()}_JVM_MEM", "value": jvm_mem},
            {"name": "SPARK_AUTHENTICATE_SECRET",
             "valueFrom": {"secretKeyRef": {"name": SPARK_SECRET, "key": "secret"}}},
        ],
        "resources": {"requests": dict(sgx), "limits": dict(sgx)},
        "volumeMounts": [
            {"name": "ssl-keys", "mountPath": KEYS_MOUNT, "readOnly": True},
            {"name": "ssl-password", "mountPath": PASSWORD_MOUNT, "readOnly": True},
            {"name": "aesm-socket", "mountPath": "/var/run/aesmd/aesm.socket"},
        ],
    }
    if attestation:
        container["env"].append({"name": "ATTESTATION", "value": "true"})
        container["env"].extend(_secret_env(name, KMS_SECRET, key)
                                for name, key in ATTESTATION_ENV)
    if kubeconfig:
        container["env"].append({"name": "KUBECONFIG", "value": f"{KUBECONFIG_MOUNT}/config"})
        container["volumeMounts"].append({"name": "kubeconfig", "mountPath": KUBECONFIG_MOUNT,
                                          "readOnly": True})
    return container


def pod_template(image: str, role: str, *, epc: str, jvm_mem: str,
                 log_level: str = "error", attestation: bool = False,
                 kubeconfig: bool = False) -> dict[str, Any]:
    """A pod template for the Spark *role* (driver or executor).

    With *attestation*, the container reads ``kms-secret`` (app id, API key,
    policy id) into BigDL's ``ATTESTATION_*`` variables; with *kubeconfig*,
    ``kubeconfig-secret`` is mounted as ``/root/.kube/config``.
    """
    template: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "ppml-image",
                                "spark-role": role}},
        "spec": {
            "containers": [_container(image, role, epc, jvm_mem, log_level, attestation,
                                      kubeconfig)],
            "volumes": [
                {"name": "ssl-keys", "secret": {"secretName": KEYS_SECRET,
                                                "defaultMode": 0o400}},
                {"name": "ssl-password", "secret": {"secretName": PASSWORD_SECRET,
                                                    "defaultMode": 0o400}},
                {"name": "aesm-socket", "hostPath": {"path": "/var/run/aesmd/aesm.socket",
                                                     "type": "Socket"}},
            ],
        },
    }
    if kubeconfig:
        template["spec"]["volumes"].append(
            {"name": "kubeconfig", "secret": {
                "secretName": KUBECONFIG_SECRET, "defaultMode": 0o400,
                "items": [{"key": KUBECONFIG_KEY, "path": "config"}]}})
    return template


def security_properties(password: str | None) -> list[tuple[str, str]]:
    """The reference workflow's Spark security properties."""
    props = [
        ("spark.authenticate", "true"),
        ("spark.kubernetes.driver.secretKeyRef.SPARK_AUTHENTICATE_SECRET",
         f"{SPARK_SECRET}:secret"),
        ("spark.kubernetes.executor.secretKeyRef.SPARK_AUTHENTICATE_SECRET",
         f"{SPARK_SECRET}:secret"),
        ("spark.authenticate.enableSaslEncryption", "true"),
        ("spark.network.crypto.enabled", "true"),
        ("spark.network.crypto.keyLength", "128"),
        ("spark.network.crypto.keyFactoryAlgorithm", "PBKDF2WithHmacSHA1"),
        ("spark.io.encryption.enabled", "true"),
        ("spark.io.encryption.keySizeBits", "128"),
        ("spark.io.encryption.keygen.algorithm", "HmacSHA1"),
        ("spark.ssl.enabled", "true"),
        ("spark.ssl.port", "8043"),
        ("spark.ssl.keyStore", f"{KEYS_MOUNT}/keystore.p12"),
        ("spark.ssl.keyStoreType", "PKCS12"),
        ("spark.ssl.trustStore", f"{KEYS_MOUNT}/keystore.p12"),
        ("spark.ssl.trustStoreType", "PKCS12"),
    ]
    if password is not None:
        text = password
        props += [("spark.authenticate.secret", text), ("spark.ssl.keyPassword", text),
                  ("spark.ssl.keyStorePassword", text), ("spark.ssl.trustStorePassword", text)]
    return props


def check_template_options(image: str, *, epc: str, jvm_mem: str,
                           driver_epc: str | None) -> None:
    """Refuse values that are empty, hold control characters or are not what K8s takes."""
    if not _IMAGE.fullmatch(image):
        raise UsageError(f"--image {image!r}: not an image reference (printable ASCII "
                         "without blanks, such as registry.example/ppml/job:1)")
    for option, value in (("--sgx-epc", epc), ("--driver-epc", driver_epc)):
        if value is not None and not _QUANTITY.fullmatch(value):
            raise UsageError(f"{option} {value!r}: not a Kubernetes quantity such as 32Gi")
        if value is not None and not value.rstrip("KMGTPEik").strip("0."):
            # No digit but 0: a pod asking for no EPC is never scheduled on an SGX
            # node's EPC, and Gramine's enclave cannot start in it.
            raise UsageError(f"{option} {value}: must be more than zero EPC, such as 32Gi")
    if not _JVM_SIZE.fullmatch(jvm_mem):
        raise UsageError(f"--jvm-mem {jvm_mem!r}: not a JVM heap size such as 12g")


def write_spark_templates(image: str, out: Path, *, epc: str = "32Gi", jvm_mem: str = "12g",
                          driver_epc: str | None = None, password: Path | None = None,
                          log_level: str = "error", force: bool = False,
                          attestation: bool = False, kubeconfig: bool = False) -> list[Path]:
    """Write driver/executor pod templates and spark-security.conf into *out*.

    With *password* (a ``secrets password`` folder) the properties include
    the passwords and the file is written 0600; without, it holds no secret
    and the passwords are left to the submit step. Our own earlier files are
    replaced only with *force*; a folder holding other files is refused.
    """
    check_template_options(image, epc=epc, jvm_mem=jvm_mem, driver_epc=driver_epc)
    secret_password = decrypt_password(password).decode() if password is not None else None
    if secret_password is not None and secret_password != secret_password.strip(_JAVA_TRIM):
        _log.warning("%s: the password starts or ends with white space, which Spark strips "
                     "from --properties-file values; give it to Spark another way", password)
    comments = ["Spark security properties (ppml-image): spark-submit --properties-file",
                "Passwords: " + ("included; this file is a secret (mode 0600)."
                                 if secret_password is not None else
                                 "not included; pass them at submit time.")]
    conf = format_properties(security_properties(secret_password), comments)
    with staged_folder(out, TEMPLATE_FILES, force=force, keep=SECRET_FILES) as stage:
        for role, size in (("driver", driver_epc or epc), ("executor", epc)):
            doc = pod_template(image, role, epc=size, jvm_mem=jvm_mem, log_level=log_level,
                               attestation=attestation, kubeconfig=kubeconfig)
            with atomic_output(stage / f"spark-{role}-template.yaml") as handle:
                handle.write(yaml.safe_dump(doc, sort_keys=False).encode())
        if secret_password is not None:
            save(stage, "spark-security.conf", conf)
        else:
            with atomic_output(stage / "spark-security.conf") as handle:
                handle.write(conf)
    return [out / name for name in TEMPLATE_FILES]
