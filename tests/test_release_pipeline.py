"""examples/release-pipeline.sh, run as a release engineer would, against the local
registry: base, unsigned build, offline signature by openssl, push, local copies
dropped, verify by digest, measurement record."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, unique_tag

from ppml_image.sgx.signing.keys import load_signing_key, mr_signer_of

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "release-pipeline.sh"


def _pipeline(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("PPML_IMAGE_") or k == "PPML_IMAGE_CACHE"}
    full.update(env)
    return subprocess.run(["bash", str(SCRIPT)], env=full, cwd=cwd, capture_output=True,
                          text=True, timeout=1500)


def test_release_pipeline_end_to_end(slim_base: dict, gramine_tree: Path, app_dir: Path,
                                     tmp_path: Path, registry, docker_client,
                                     janitor) -> None:
    key = tmp_path / "prod-key.pem"
    assert run_cli("keygen", key).returncode == 0
    repo = registry.repository("release")
    path = repo.partition("/")[2]
    image = janitor.track(f"{repo}:7")
    janitor.track(f"{image}-unsigned")
    base_tag = janitor.track(unique_tag("release-base"))
    out = tmp_path / "out"
    result = _pipeline({
        "PPML": str(Path(sys.executable).parent / "ppml-image"), "PYTHON": sys.executable,
        "PROD_KEY": str(key), "REGISTRY": registry.address, "REPOSITORY": path,
        "VERSION": "7", "APP": str(app_dir), "BASE_TAG": base_tag, "PROFILE": "slim",
        "GRAMINE_SOURCE": "tree", "GRAMINE_PATH": str(gramine_tree),
        # The slim base fixture's inputs: the base build is a cache hit.
        "SOURCE_DATE_EPOCH": "1700000000", "OUT": str(out)}, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    record = json.loads((out / "measurements.json").read_text())
    verified = json.loads((out / "verify.json").read_text())
    assert record["repo_digest"].startswith(f"{repo}@sha256:")
    assert record["mr_signer"] == mr_signer_of(load_signing_key(key).public_key())
    assert record["date"] == "2023-11-14"  # from SOURCE_DATE_EPOCH
    assert record["base_image_id"] == json.loads((out / "base.json").read_text())["image_id"]
    assert record["debug_enclave"] is False
    assert verified["ok"] is True and verified["pulled"] is True
    assert verified["digest"] == record["repo_digest"]
    assert verified["image_id"] == record["image_id"]
    assert verified["mr_enclave"] == record["mr_enclave"] == \
        json.loads((out / "export.json").read_text())["mr_enclave"]
    assert verified["consistency_only"] is False
    # The summary names what to register; the registry holds the signed tag only.
    assert f"digest:     {record['repo_digest']}" in result.stdout
    assert registry.tags(repo) == ["7"]
    lock = json.loads((out / "base.lock").read_text())  # the base is locked, always
    assert lock["format"] == "ppml-image/base-lock/1"
    assert lock["image_id"] == record["base_image_id"]
    # 8-10: registered with the eHSM stand-in, policies exported, a quote checked.
    registered = json.loads((out / "registered.json").read_text())
    assert registered["service"] == "ehsm"
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", registered["policy_id"])
    assert registered["mr_enclave"] == record["mr_enclave"]
    assert f"policy_id:  {registered['policy_id']}" in result.stdout
    assert "LOCAL PROTOCOL STAND-IN" in result.stderr
    policies = sorted(p.name for p in (out / "policies").iterdir())
    assert len(policies) == 8
    assert record["mr_enclave"] in (out / "policies" / "ra-tls.policy").read_text()
    verdict = json.loads((out / "quote-verdict.json").read_text())
    assert verdict["ok"] is True and verdict["evaluated_at"] == "2025-06-20T00:00:00Z"
    api_key = (out / "ehsm-stand-in" / "api-key").read_text().strip()
    assert api_key not in result.stdout + result.stderr  # never printed
