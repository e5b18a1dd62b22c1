"""``k8s secrets``: Kubernetes Secret manifests, ready for ``kubectl apply -f``.

* ``keys.yaml``: Secret ``ssl-keys`` with the TLS files of ``secrets tls``;
* ``password.yaml``: Secret ``ssl-password`` with ``key.txt``/``output.bin``;
* ``spark-secret.yaml``: Secret ``spark-secret`` whose ``secret`` key is the
  Spark authentication secret (the password, as the reference requires);
* ``kms-secret.yaml`` (with KMS credentials): Secret ``kms-secret`` with
  ``app_id``, ``api_key`` and ``policy_id``, as the reference workflow's
  ``kubectl create secret generic kms-secret`` makes it;
* ``kubeconfig-secret.yaml`` (with a kubeconfig): Secret ``kubeconfig-secret``
  whose ``kubeconfig`` key is the file, as ``--from-file=.../kubeconfig`` makes it.

The files hold secrets (base64 is not encryption): they are written 0600 in
a 0700 folder. The input folders are read without following any link out of
them, and only regular files are accepted: a symlink to ``/etc/shadow`` in
``--keys`` is refused, not published.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ppml_image._fs import read_no_follow, read_regular_files, staged_folder
from ppml_image.errors import PpmlError, UsageError
from ppml_image.k8s import SECRET_FILES, TEMPLATE_FILES
from ppml_image.spark.common import save
from ppml_image.spark.password import PASSWORD_FILES, decrypt_password, read_password_folder

KEYS_SECRET = "ssl-keys"
PASSWORD_SECRET = "ssl-password"
SPARK_SECRET = "spark-secret"
KMS_SECRET = "kms-secret"
KMS_KEYS = ("app_id", "api_key", "policy_id")
KUBECONFIG_SECRET = "kubeconfig-secret"
KUBECONFIG_KEY = "kubeconfig"
# The API server refuses a Secret whose data values (decoded) total more.
MAX_SECRET_BYTES = 1024 * 1024
_NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")  # RFC 1123 label
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}\Z")  # IsConfigMapKey


def secret(name: str, namespace: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "ppml-image"}},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(data.items())},
    }


def check_namespace(namespace: str) -> None:
    if not _NAMESPACE.fullmatch(namespace):
        raise UsageError(f"--namespace {namespace!r}: not a Kubernetes namespace (an RFC 1123 "
                         "label: at most 63 lower-case letters, digits and '-', starting and "
                         "ending with a letter or digit)")


def check_secret_data(name: str, folder: Path, data: dict[str, bytes]) -> None:
    """Refuse what the API server would: bad key names, more than 1 MiB of data."""
    for key in data:
        if not _SECRET_KEY.fullmatch(key) or key in (".", "..") or key.startswith(".."):
            raise PpmlError(f"{folder}/{key!r}: this file name cannot be a key of a "
                            "Kubernetes Secret (letters, digits, '-', '_', '.')")
    total = sum(len(value) for value in data.values())
    if total > MAX_SECRET_BYTES:
        raise PpmlError(f"{folder}: Secret {name} would hold {total} bytes; Kubernetes "
                        f"allows at most {MAX_SECRET_BYTES} (1 MiB)")


def _folder_files(folder: Path, what: str) -> dict[str, bytes]:
    files = read_regular_files(folder, what, limit=MAX_SECRET_BYTES)
    if not files:
        raise UsageError(f"{folder}: {what} folder is empty")
    return files


@dataclass(frozen=True)
class KmsCredentials:
    """What the enclave's attestation step reads from ``kms-secret``."""

    app_id: str
    api_key: str
    policy_id: str

    def data(self) -> dict[str, bytes]:
        return {"app_id": self.app_id.encode(), "api_key": self.api_key.encode(),
                "policy_id": self.policy_id.encode()}


def read_kubeconfig(path: Path) -> bytes:
    """*path*'s bytes: a regular file (a symbolic link is refused), at most 1 MiB, that
    reads as a kubeconfig (a YAML mapping of ``kind: Config``)."""
    data = read_no_follow(path, MAX_SECRET_BYTES, f"--kubeconfig {path}", error=UsageError,
                          symlink_hint="give the file itself")
    if len(data) > MAX_SECRET_BYTES:
        raise PpmlError(f"--kubeconfig {path}: Secret {KUBECONFIG_SECRET} would hold more "
                        f"than {MAX_SECRET_BYTES} bytes; Kubernetes allows at most 1 MiB")
    try:
        parsed = yaml.safe_load(data)
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, dict) or parsed.get("kind") != "Config":
        raise UsageError(f"--kubeconfig {path}: not a kubeconfig (a YAML file of kind: Config, "
                         "as `kubectl config view --flatten --minify` writes)")
    return data


def write_secrets(keys: Path, password: Path, out: Path, *, namespace: str = "default",
                  force: bool = False, kms: KmsCredentials | None = None,
                  kubeconfig: Path | None = None) -> list[Path]:
    """Write the Secret manifests into *out*; returns their paths.

    ``kms-secret.yaml`` is written with *kms*, ``kubeconfig-secret.yaml`` with
    *kubeconfig*.

    *out* may also hold the files of ``k8s spark-templates``, which are kept;
    this command's own files are replaced only with *force*, and a folder
    holding anything else is refused.
    """
    check_namespace(namespace)
    key_files = _folder_files(keys, "keys")
    password_files = read_password_folder(password)
    password_data = {k: password_files[k] for k in PASSWORD_FILES}
    spark_auth = {"secret": decrypt_password(password, password_files)}
    check_secret_data(KEYS_SECRET, keys, key_files)
    check_secret_data(PASSWORD_SECRET, password, password_data)
    documents = {
        "keys.yaml": secret(KEYS_SECRET, namespace, key_files),
        "password.yaml": secret(PASSWORD_SECRET, namespace, password_data),
        "spark-secret.yaml": secret(SPARK_SECRET, namespace, spark_auth),
    }
    if kms is not None:
        documents["kms-secret.yaml"] = secret(KMS_SECRET, namespace, kms.data())
    if kubeconfig is not None:
        config = {KUBECONFIG_KEY: read_kubeconfig(kubeconfig)}
        documents["kubeconfig-secret.yaml"] = secret(KUBECONFIG_SECRET, namespace, config)
    with staged_folder(out, SECRET_FILES, force=force, keep=TEMPLATE_FILES) as stage:
        for name, doc in documents.items():
            save(stage, name, yaml.safe_dump(doc, sort_keys=False).encode())
    return [out / name for name in documents]
