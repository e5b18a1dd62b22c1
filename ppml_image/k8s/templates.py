"""``k8s spark-templates``: Spark-on-Kubernetes pod templates for SGX, and
``spark-security.conf`` with the reference workflow's security properties.

The pods ask the Intel SGX device plugin for EPC memory and the enclave and
provision devices, mount the TLS keys and the encrypted password from the
Secrets that ``k8s secrets`` writes, and take the Spark authentication
secret from ``spark-secret``. We generate what Spark needs; Kubernetes and
Spark do the scheduling.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ppml_image._fs import make_private_dirs, write_atomic
from ppml_image.errors import UsageError
from ppml_image.k8s.secret_manifests import KEYS_SECRET, PASSWORD_SECRET, SPARK_SECRET
from ppml_image.spark.common import save
from ppml_image.spark.password import decrypt_password

KEYS_MOUNT = "/ppml/keys"
PASSWORD_MOUNT = "/ppml/password"
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def _container(image: str, role: str, epc: str, jvm_mem: str, log_level: str) -> dict[str, Any]:
    sgx = {"sgx.intel.com/epc": epc, "sgx.intel.com/enclave": "1",
           "sgx.intel.com/provision": "1"}
    return {
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


def pod_template(image: str, role: str, *, epc: str, jvm_mem: str,
                 log_level: str = "error") -> dict[str, Any]:
    """A pod template for the Spark *role* (driver or executor)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "ppml-image",
                                "spark-role": role}},
        "spec": {
            "containers": [_container(image, role, epc, jvm_mem, log_level)],
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


def security_properties(password: bytes | None) -> list[tuple[str, str]]:
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
        text = password.decode()
        props += [("spark.authenticate.secret", text), ("spark.ssl.keyPassword", text),
                  ("spark.ssl.keyStorePassword", text), ("spark.ssl.trustStorePassword", text)]
    return props


def write_spark_templates(image: str, out: Path, *, epc: str = "32Gi", jvm_mem: str = "12g",
                          driver_epc: str | None = None, password: Path | None = None,
                          log_level: str = "error") -> list[Path]:
    """Write driver/executor pod templates and spark-security.conf into *out*.

    With *password* (a ``secrets password`` folder) the properties include
    the passwords and the file is written 0600; without, it holds no secret
    and the passwords are left to the submit step.
    """
    for value in (epc, driver_epc or epc):
        if not _QUANTITY.match(value):
            raise UsageError(f"--sgx-epc {value!r}: not a Kubernetes quantity such as 32Gi")
    make_private_dirs(out)
    written = []
    for role, size in (("driver", driver_epc or epc), ("executor", epc)):
        doc = pod_template(image, role, epc=size, jvm_mem=jvm_mem, log_level=log_level)
        path = out / f"spark-{role}-template.yaml"
        write_atomic(path, yaml.safe_dump(doc, sort_keys=False).encode())
        written.append(path)
    secret_password = decrypt_password(password) if password is not None else None
    lines = ["# Spark security properties (ppml-image): spark-submit --properties-file",
             "# Passwords: " + ("included; this file is a secret (mode 0600)."
                                if secret_password else
                                "not included; pass them at submit time."), ""]
    lines += [f"{key} {value}" for key, value in security_properties(secret_password)]
    data = ("\n".join(lines) + "\n").encode()
    conf = out / "spark-security.conf"
    if secret_password is not None:
        written.append(save(out, "spark-security.conf", data))
    else:
        write_atomic(conf, data)
        written.append(conf)
    return written
