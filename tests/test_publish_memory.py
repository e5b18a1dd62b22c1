"""Publishing logic over the in-memory engine: references, tags that move together,
--expect-mr-enclave, and the offline flow on images. No Docker, no registry: what a
real registry does is tested in test_publish.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import UsageError, VerificationError
from ppml_image.images.enclave import custom
from ppml_image.images.enclave import verify as attest
from ppml_image.images.engine.reference import parse_reference, push_target
from ppml_image.sgx.signing.external import ExternalSignature
from ppml_image.sgx.signing.keys import load_signing_key
from ppml_image.sgx.signing.signers import PemSigner
from ppml_image.testing import MemoryEngine

SMALL = {"enclave_size": "256M", "max_threads": "4"}
REG = "registry.test:5000"


# --------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------
# The grammar itself (every refusal, hypothesis over the grammar, agreement with
# the docker CLI) is tested in test_references.py; here, what publishing reads
# from a reference: its registry, its repository path, tag and digest.
@pytest.mark.parametrize("text, expected", [
    ("ppml/job:1", ("", "ppml/job", "1", "")),
    ("127.0.0.1:5000/ppml/job:1", ("127.0.0.1:5000", "ppml/job", "1", "")),
    ("localhost/job", ("localhost", "job", "", "")),
    ("reg.example.org/a/b/c@sha256:" + "a" * 64,
     ("reg.example.org", "a/b/c", "", "sha256:" + "a" * 64)),
    ("reg:5000/a__b.c-d:v1.0-rc_1@sha256:" + "0" * 64,
     ("reg:5000", "a__b.c-d", "v1.0-rc_1", "sha256:" + "0" * 64)),
    ("job", ("", "library/job", "", "")),
    ("docker.io/acme/job:2", ("", "acme/job", "2", "")),
])
def test_references_parse_as_registries_read_them(text: str,
                                                   expected: tuple[str, str, str, str]) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == expected
    assert str(ref) == text


_COMPONENT = st.from_regex(r"[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["reg.example", "127.0.0.1:5000", "localhost"]),
       st.lists(_COMPONENT, min_size=1, max_size=4),
       st.none() | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
       st.none() | st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_registry_references_round_trip(domain: str, components: list[str], tag: str | None,
                                        digest: str | None) -> None:
    path = "/".join(components)
    text = f"{domain}/{path}" + (f":{tag}" if tag else "") + \
        (f"@sha256:{digest}" if digest else "")
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag) == (domain, path, tag or "")
    assert ref.digest == (f"sha256:{digest}" if digest else "")
    assert ref.with_digest("sha256:" + "b" * 64) == f"{domain}/{path}@sha256:{'b' * 64}"


@pytest.mark.parametrize("text, fragment", [
    ("ppml/job:1", "names no registry"),
    ("job", "names no registry"),
    ("docker.io:acme", "names no registry"),
    ("127.0.0.1:5000/Job:1", "lowercase"),
    ("127.0.0.1:5000/job@sha256:" + "a" * 64, "digest"),
    ("127.0.0.1:5000/job:1 ", "tag"),
])
def test_push_targets_must_name_a_registry_and_a_tag(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        push_target(text)
    assert str(push_target("127.0.0.1:5000/job")) == "127.0.0.1:5000/job:latest"
    assert str(push_target("docker.io/acme/job:2")) == "docker.io/acme/job:2"


# --------------------------------------------------------------------------
# The in-memory engine
# --------------------------------------------------------------------------
def build(mem: MemoryEngine, key: Path, mem_app: Path, tag: str,
          publish: custom.Publish | None = None) -> custom.CustomImage:
    return custom.build_custom(key, base="mem/base:1", app=mem_app, tag=tag, defines=dict(SMALL),
                               date="2025-01-31", quiet=True, engine=mem, publish=publish)


def test_push_records_the_registrys_digest_and_verify_pulls_by_it(
        mem: MemoryEngine, enclave_key: Path, mem_app: Path) -> None:
    tag = f"{REG}/ppml/app:1"
    result = build(mem, enclave_key, mem_app, tag, custom.Publish(push=True))
    assert result.repo_digest is not None
    assert result.repo_digest.startswith(f"{REG}/ppml/app@sha256:")
    assert result.unsigned_repo_digest is None
    assert f"{REG}/ppml/app:1-unsigned" not in mem.registry  # never without --push-unsigned
    record = result.to_json()
    for field in ("repo_digest", "mr_enclave", "mr_signer", "isv_prod_id", "isv_svn",
                  "base_image_id", "tool_version", "image_id"):
        assert record[field] not in (None, ""), field
    # Every local copy gone: verify by digest pulls, and names the digest it verified.
    mem.remove_image(tag)
    assert mem.find_image(result.repo_digest) is None
    verified = attest.verify_image(result.repo_digest, engine=mem,
                                   mr_enclave=result.mr_enclave, base=result.base_image_id)
    assert verified.ok, verified.problems
    assert verified.pulled and verified.digest == result.repo_digest


def test_push_unsigned_pushes_it_first(mem: MemoryEngine, enclave_key: Path, mem_app: Path) -> None:
    tag = f"{REG}/ppml/app:2"
    result = build(mem, enclave_key, mem_app, tag, custom.Publish(push=True, push_unsigned=True))
    assert result.unsigned_repo_digest is not None
    assert mem.registry[f"{REG}/ppml/app:2-unsigned"] == result.unsigned_image_id
    assert mem.registry[tag] == result.image_id


def test_a_failed_push_puts_every_tag_back(mem: MemoryEngine, enclave_key: Path,
                                           mem_app: Path) -> None:
    tag = f"{REG}/ppml/app:3"
    old = build(mem, enclave_key, mem_app, tag)  # the tags as they were
    (mem_app / "extra.py").write_text("print('changed')\n")
    try:
        mem.unreachable.add(REG)
        with pytest.raises(custom.PushFailed, match="does not answer") as caught:
            build(mem, enclave_key, mem_app, tag, custom.Publish(push=True))
    finally:
        (mem_app / "extra.py").unlink()
    assert caught.value.result.repo_digest is None
    assert caught.value.result.image_id != old.image_id
    assert mem.tags[tag] == old.image_id
    assert mem.tags[f"{tag}-unsigned"] == old.unsigned_image_id
    # A tag that did not exist before does not exist after.
    with pytest.raises(custom.PushFailed):
        build(mem, enclave_key, mem_app, f"{REG}/ppml/new:1", custom.Publish(push=True))
    assert f"{REG}/ppml/new:1" not in mem.tags and f"{REG}/ppml/new:1-unsigned" not in mem.tags


def test_push_target_is_checked_before_any_work(mem: MemoryEngine, enclave_key: Path,
                                                mem_app: Path) -> None:
    images = len(mem.images)
    with pytest.raises(UsageError, match="names no registry"):
        build(mem, enclave_key, mem_app, "ppml/app:1", custom.Publish(push=True))
    with pytest.raises(UsageError, match="goes with --push"):
        build(mem, enclave_key, mem_app, f"{REG}/a:1", custom.Publish(push_unsigned=True))
    assert len(mem.images) == images


def test_expect_mr_enclave_stops_before_signing_or_tagging(mem: MemoryEngine,
                                                           enclave_key: Path,
                                                           mem_app: Path) -> None:
    good = build(mem, enclave_key, mem_app, "mem/app:1")
    wrong = "ab" * 32
    with pytest.raises(VerificationError, match=f"expected {wrong}"):
        build(mem, enclave_key, mem_app, "mem/app:2", custom.Publish(expect_mr_enclave=wrong))
    assert "mem/app:2" not in mem.tags and "mem/app:2-unsigned" not in mem.tags
    with pytest.raises(VerificationError):
        custom.sign_image("mem/app:1-unsigned", enclave_key, tag="mem/app:3", quiet=True,
                          engine=mem, publish=custom.Publish(expect_mr_enclave=wrong),
                          base="mem/base:1")
    assert "mem/app:3" not in mem.tags
    same = build(mem, enclave_key, mem_app, "mem/app:4",
                 custom.Publish(expect_mr_enclave=good.mr_enclave.upper()))
    assert same.mr_enclave == good.mr_enclave


@pytest.mark.parametrize("value", ["", "abc", "g" * 64, "0" * 63, "0" * 65, "0x" + "0" * 62])
def test_expect_mr_enclave_must_be_64_hex_digits(value: str) -> None:
    with pytest.raises(UsageError, match="64 hex digits"):
        custom.expected_mr_enclave(value)
    assert custom.expected_mr_enclave("AB" * 32) == "ab" * 32


def test_offline_flow_on_an_image_equals_signing_directly(mem: MemoryEngine, enclave_key: Path,
                                                          mem_app: Path, tmp_path: Path) -> None:
    direct = build(mem, enclave_key, mem_app, "mem/app:1")
    data = tmp_path / "app.tbs"
    exported = custom.export_signing_data("mem/app:1-unsigned", data, date="2025-01-31",
                                          engine=mem, quiet=True, base="mem/base:1")
    record = tmp_path / "app.tbs.json"  # names the exported image and its pinned base
    assert exported.mr_enclave == direct.mr_enclave
    assert json.loads((tmp_path / "app.tbs.json").read_text())["mr_enclave"] == \
        direct.mr_enclave
    key = load_signing_key(enclave_key)
    signature = PemSigner(key).sign(data.read_bytes())
    assembled = custom.sign_image("mem/app:1-unsigned",
                                  ExternalSignature(key.public_key(), signature),
                                  tag="mem/app:assembled", date=dt.date(2025, 1, 31),
                                  engine=mem, quiet=True, record=record)
    assert assembled.sigstruct == direct.sigstruct
    a, d = mem.find_image("mem/app:assembled"), mem.find_image("mem/app:1")
    assert a is not None and d is not None
    assert a.labels == d.labels and a.layers == d.layers
    # Another date: the signature was made over other data, and nothing is tagged.
    with pytest.raises(VerificationError, match="does not verify"):
        custom.sign_image("mem/app:1-unsigned", ExternalSignature(key.public_key(), signature),
                          tag="mem/app:other-date", date="2025-02-01", engine=mem, quiet=True,
                          record=record)
    assert "mem/app:other-date" not in mem.tags


def test_verify_by_a_digest_the_engine_does_not_record_fails(mem: MemoryEngine,
                                                              enclave_key: Path,
                                                              mem_app: Path) -> None:
    result = build(mem, enclave_key, mem_app, f"{REG}/ppml/app:5", custom.Publish(push=True))
    assert result.repo_digest is not None
    # The same content under another digest reference: the engine does not vouch for it.
    forged = f"{REG}/ppml/app@sha256:" + "1" * 64
    mem.tags[forged] = result.image_id
    verified = attest.verify_image(forged, engine=mem, base="mem/base:1")
    assert not verified.ok
    assert any("does not record digest" in p for p in verified.problems)


# --------------------------------------------------------------------------
# The command line refuses bad publishing options before it needs an engine.
# --------------------------------------------------------------------------
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.mark.parametrize("args, fragments", [
    (["verify", "127.0.0.1:5000/x@sha256:" + "AB" * 32], ["64 lowercase hex digits"]),
    (["verify", "127.0.0.1:5000/x@sha256:abc"], ["digest", "at least 32 hex digits"]),
    (["build-custom", "--tag", "ppml/x:1", "--push"], ["names no registry"]),
    (["build-custom", "--tag", "127.0.0.1:5000/x:1", "--push-unsigned"],
     ["--push-unsigned goes with --push"]),
    (["build-custom", "--export-signing-data", "d.tbs", "--push", "--tag",
      "127.0.0.1:5000/x:1"], ["nothing to push"]),
    (["build-custom", "--export-signing-data", "d.tbs", "--output", "m.json"],
     ["--output records a signed image"]),
    (["build-custom", "--output", "."], ["is a folder"]),
    (["build-custom", "--expect-mr-enclave", "12"], ["64 hex digits"]),
    (["sign-image", "x-unsigned", "--tag", "127.0.0.1:5000/Upper:1", "--push"],
     ["--tag", "must be lowercase"]),
    (["sign-image", "sha256:" + "0" * 64, "--push", "--push-unsigned", "--tag",
      "127.0.0.1:5000/x:1"], ["the unsigned image", "names no registry"]),
])
def test_publishing_options_are_checked_before_any_work(args: list[str], fragments: list[str],
                                                       tmp_path: Path, enclave_key: Path
                                                       ) -> None:
    from conftest import assert_one_line_error, run_cli

    if args[0] in ("build-custom", "sign-image") and "--export-signing-data" not in args:
        args = [*args, "--key", str(enclave_key)]
    result = run_cli(*args, cwd=tmp_path, env=NO_ENGINE)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
