"""Every Kubernetes object the tool writes loads, strictly, into the official client's models.

The client's own deserialiser ignores unknown fields and coerces types, so
it would accept a misspelt ``mountPth``. This loader walks each object with
the models' ``attribute_map`` and ``openapi_types`` (the API's schema as the
client ships it) and fails on an unknown field or a value of the wrong type.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli

kubernetes = pytest.importorskip("kubernetes")
from kubernetes.client import models  # noqa: E402

PASSWORD = "Pa55-word.for_tests"
# Both spellings: `list[X]`/`dict(str, X)` (older clients) and `List[X]`/`Dict[str, X]`.
_LIST = re.compile(r"[lL]ist\[(.+)\]\Z")
_DICT = re.compile(r"(?:dict\(|Dict\[)(\w+), (.+)[)\]]\Z")
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "object": (object,),
    "datetime": (str,), "date": (str,), "bytes": (str,),  # base64 text in YAML
}


class StrictError(AssertionError):
    pass


def load_strict(value: Any, type_name: str, where: str = "") -> Any:
    """*value* (parsed YAML) as the model *type_name*; unknown fields and wrong types fail."""
    if (match := _LIST.match(type_name)) is not None:
        if not isinstance(value, list):
            raise StrictError(f"{where}: expected a list, got {type(value).__name__}")
        return [load_strict(item, match.group(1), f"{where}[{i}]") for i, item in enumerate(value)]
    if (match := _DICT.match(type_name)) is not None:
        if not isinstance(value, dict):
            raise StrictError(f"{where}: expected a map, got {type(value).__name__}")
        return {k: load_strict(v, match.group(2), f"{where}.{k}") for k, v in value.items()}
    if type_name in _SCALARS:
        allowed = _SCALARS[type_name]
        if (type_name in ("int", "float") and isinstance(value, bool)) or not isinstance(
                value, allowed):
            raise StrictError(f"{where}: expected {type_name}, got {value!r}")
        return value
    model = getattr(models, type_name)
    if not isinstance(value, dict):
        raise StrictError(f"{where}: expected a {type_name} object, got {value!r}")
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    unknown = sorted(set(value) - set(by_json))
    if unknown:
        raise StrictError(f"{where}: unknown field(s) {unknown} in {type_name}")
    kwargs = {by_json[k]: load_strict(v, model.openapi_types[by_json[k]], f"{where}.{k}")
              for k, v in value.items()}
    return model(**kwargs)  # the model's setters check required fields and enums


KINDS = {("v1", "Secret"): "V1Secret", ("v1", "Pod"): "V1Pod"}


def load_object(document: dict[str, Any], name: str) -> Any:
    kind = KINDS.get((document.get("apiVersion"), document.get("kind")))
    if kind is None:
        raise StrictError(f"{name}: unexpected apiVersion/kind {document.get('apiVersion')}/"
                          f"{document.get('kind')}")
    return load_strict(document, kind, name)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `k8s secrets` and `k8s spark-templates` write, into one folder."""
    root = tmp_path_factory.mktemp("k8s-models")
    pw = root / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    for args in (["secrets", "tls", "--out", root / "keys", "--password-file", pw],
                 ["secrets", "password", "--out", root / "password", "--password-file", pw],
                 ["k8s", "secrets", "--keys", root / "keys", "--password", root / "password",
                  "-o", root / "k8s"],
                 ["k8s", "spark-templates", "--image", "x:1", "--password", root / "password",
                  "-o", root / "k8s"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    return root / "k8s"


def _documents(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(folder.glob("*.yaml")):
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document is not None:
                found.append((f"{path.name}#{index}", document))
    return found


def test_the_strict_loader_refuses_what_the_client_would_let_through() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
    load_object(pod, "pod")
    misspelt = {**pod, "spec": {"containers": [{"name": "c", "image": "x", "mountPth": "/a"}]}}
    with pytest.raises(StrictError, match="mountPth"):
        load_object(misspelt, "pod")
    wrong_type = {**pod, "spec": {"containers": [{"name": "c", "image": "x",
                                                   "ports": [{"containerPort": "80"}]}]}}
    with pytest.raises(StrictError, match="containerPort: expected int"):
        load_object(wrong_type, "pod")
    no_name = {**pod, "spec": {"containers": [{"image": "x:1"}]}}
    with pytest.raises(ValueError, match="name"):
        load_object(no_name, "pod")


def test_every_written_object_loads_strictly(written: Path) -> None:
    documents = _documents(written)
    kinds = [d["kind"] for _, d in documents]
    assert kinds.count("Pod") == 2 and kinds.count("Secret") >= 3, kinds
    for name, document in documents:
        load_object(document, name)


def test_pod_templates_keep_the_container_names_spark_expects(written: Path) -> None:
    """Spark picks the container by spark.kubernetes.{driver,executor}.podTemplateContainerName."""
    conf = (written / "spark-security.conf").read_text()
    for role in ("driver", "executor"):
        pod = load_object(yaml.safe_load((written / f"spark-{role}-template.yaml").read_text()),
                          role)
        names = [c.name for c in pod.spec.containers]
        expected = f"spark-kubernetes-{role}"
        assert names == [expected]
        setting = re.search(rf"^spark\.kubernetes\.{role}\.podTemplateContainerName\s+(\S+)",
                            conf, re.M)
        assert setting is None or setting.group(1) == expected


def test_every_secret_a_template_mounts_is_one_that_is_written(written: Path) -> None:
    secrets = {d["metadata"]["name"]: set(d.get("data", {})) | set(d.get("stringData", {}))
               for _, d in _documents(written) if d["kind"] == "Secret"}
    for name, document in _documents(written):
        if document["kind"] != "Pod":
            continue
        pod = load_object(document, name)
        for volume in pod.spec.volumes or []:
            if volume.secret is not None:
                assert volume.secret.secret_name in secrets, (name, volume.name)
        for container in pod.spec.containers:
            for env in container.env or []:
                ref = env.value_from.secret_key_ref if env.value_from else None
                if ref is not None:
                    assert ref.key in secrets.get(ref.name, set()), (name, ref.name, ref.key)
