"""``k8s secrets``: Kubernetes Secret manifests, ready for ``kubectl apply -f``.

* ``keys.yaml``: Secret ``ssl-keys`` with the TLS files of ``secrets tls``;
* ``password.yaml``: Secret ``ssl-password`` with ``key.txt``/``output.bin``;
* ``spark-secret.yaml``: Secret ``spark-secret`` whose ``secret`` key is the
  Spark authentication secret (the password, as the reference requires).

The files hold secrets (base64 is not encryption): they are written 0600 in
a 0700 folder.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from ppml_image._fs import make_private_dirs
from ppml_image.errors import UsageError
from ppml_image.spark.common import save
from ppml_image.spark.password import decrypt_password

KEYS_SECRET = "ssl-keys"
PASSWORD_SECRET = "ssl-password"
SPARK_SECRET = "spark-secret"


def secret(name: str, namespace: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "ppml-image"}},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(data.items())},
    }


def _folder_files(folder: Path, what: str) -> dict[str, bytes]:
    if not folder.is_dir():
        raise UsageError(f"{folder}: {what} folder does not exist")
    try:
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    except OSError as exc:
        raise UsageError(f"{folder}: cannot read {what} folder: {exc.strerror}") from None
    if not files:
        raise UsageError(f"{folder}: {what} folder is empty")
    return files


def write_secrets(keys: Path, password: Path, out: Path, *,
                  namespace: str = "default") -> list[Path]:
    """Write the three Secret manifests into *out*; returns their paths."""
    key_files = _folder_files(keys, "keys")
    password_files = _folder_files(password, "password")
    missing = {"key.txt", "output.bin"} - set(password_files)
    if missing:
        raise UsageError(f"{password}: not a password folder (missing {', '.join(missing)})")
    spark_auth = decrypt_password(password)
    make_private_dirs(out)
    documents = {
        "keys.yaml": secret(KEYS_SECRET, namespace, key_files),
        "password.yaml": secret(PASSWORD_SECRET, namespace,
                                {k: password_files[k] for k in ("key.txt", "output.bin")}),
        "spark-secret.yaml": secret(SPARK_SECRET, namespace, {"secret": spark_auth}),
    }
    return [save(out, name, yaml.safe_dump(doc, sort_keys=False).encode())
            for name, doc in documents.items()]
