"""The measurement record: its attestation fields from the SIGSTRUCT, its strict reading,
and `attest record` of a verified image (docker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_attest_verify import COLLATERAL, QUOTE, RECORD

from ppml_image.errors import UsageError
from ppml_image.sgx.signing.record import MeasurementRecord, load_record
from ppml_image.sgx.signing.sigstruct import read_sigstruct

VECTORS = Path(__file__).parent / "vectors"
ATTESTATION_KEYS = {"tee", "isv_prod_id", "isv_svn", "attributes", "attribute_mask",
                    "misc_select", "misc_mask", "debug"}


def test_fields_from_a_sigstruct_with_every_value_set() -> None:
    # Gramine's vector: isvprodid 4660, isvsvn 7, misc_select 1, production.
    sig = read_sigstruct(str(VECTORS / "sign-isv-exinfo/expected.sig"))
    record = MeasurementRecord.from_sigstruct_view(sig.view(), image="x")
    assert (record.isv_prod_id, record.isv_svn, record.debug) == (4660, 7, False)
    assert record.misc_select == "01000000"  # the SIGSTRUCT's bytes, little-endian
    assert record.attributes == (sig.attribute_flags.to_bytes(8, "little")
                                 + sig.attribute_xfrms.to_bytes(8, "little")).hex()
    assert record.attribute_mask == (sig.attribute_flags_mask.to_bytes(8, "little")
                                     + sig.attribute_xfrm_mask.to_bytes(8, "little")).hex()
    assert record.misc_mask == sig.misc_mask.to_bytes(4, "little").hex()
    assert record.tee == "sgx" and record.extra == {"image": "x"}


def test_debug_comes_from_the_attributes() -> None:
    sig = read_sigstruct(str(VECTORS / "sign-basic-256m-4t-debug/expected.sig"))
    assert MeasurementRecord.from_sigstruct_view(sig.view()).debug is True
    sig = read_sigstruct(str(VECTORS / "sign-1g-16t-nodebug-gcc/expected.sig"))
    assert MeasurementRecord.from_sigstruct_view(sig.view()).debug is False


def test_a_gramine_record_of_the_vector_enclave_accepts_its_quote(tmp_path: Path) -> None:
    # Gramine's masks (flags all ones, xfrm 0xfffffffffff9ff1b) and attributes (MODE64BIT,
    # xfrm 3): the vector's report (INIT|MODE64BIT, xfrm 0xe7) matches under them.
    sig = read_sigstruct(str(VECTORS / "sign-1g-16t-nodebug-gcc/expected.sig"))
    view = {**sig.view(), "mr_enclave": RECORD["mr_enclave"], "mr_signer": RECORD["mr_signer"]}
    path = tmp_path / "record.json"
    MeasurementRecord.from_sigstruct_view(view).dump(path)
    result = run_cli("attest", "verify", QUOTE, "--collateral", COLLATERAL, "--record", path,
                     "--at", "2025-06-20T00:00:00Z", "--allow-tcb",
                     "ConfigurationAndSWHardeningNeeded")
    assert result.returncode == 0, result.stderr


def test_dump_and_load_keep_every_other_key(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    data = {**RECORD, "sigstruct": {"date": "2025-01-31"}, "repo_digest": None}
    path.write_text(json.dumps(data))
    record = load_record(path)
    registered = record.with_registration("3f2a9c1e-0b7d-4e5f-9a8b-1c2d3e4f5a6b", "ehsm")
    out = tmp_path / "registered.json"
    registered.dump(out)
    written = json.loads(out.read_text())
    assert written == {**data, "policy_id": "3f2a9c1e-0b7d-4e5f-9a8b-1c2d3e4f5a6b",
                       "service": "ehsm"}
    again = MeasurementRecord.load(out)
    assert again == registered and again.policy_id and again.service == "ehsm"
    assert set(tmp_path.iterdir()) == {path, out}  # no temporary file left behind


BAD = [
    ({"attributes": None}, "attributes: expected 32 hex digits"),
    ({"mr_enclave": "ab" * 31}, "mr_enclave: expected 64 hex digits"),
    ({"mr_signer": "zz" * 32}, "mr_signer: expected 64 hex digits"),
    ({"misc_mask": "ffffffff00"}, "misc_mask: expected 8 hex digits"),
    ({"isv_prod_id": 65536}, "isv_prod_id: expected an integer from 0 to 65535"),
    ({"isv_svn": True}, "isv_svn: expected an integer"),
    ({"isv_svn": "1"}, "isv_svn: expected an integer"),
    ({"debug": "false"}, "debug must be true or false"),
    ({"debug": True}, "debug is true but the attributes"),
    ({"tee": "tdx"}, "tee 'tdx' is not supported"),
    ({"service": "vault"}, "service 'vault' is not one of ehsm, bigdl-as"),
    ({"policy_id": "a b"}, "policy_id 'a b' is not an identifier"),
]


@pytest.mark.parametrize(("changes", "said"), BAD)
def test_a_bad_record_is_one_line_naming_the_key(tmp_path: Path, changes: dict,
                                                  said: str) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps({**RECORD, **changes}))
    with pytest.raises(UsageError, match=r"record\.json: "):
        load_record(path)
    result = run_cli("attest", "policy", path, "--format", "ehsm")
    assert result.returncode == 2
    assert_one_line_error(result, said)


def test_an_old_record_without_the_attestation_fields(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"mr_enclave": RECORD["mr_enclave"],
                                "mr_signer": RECORD["mr_signer"], "isv_prod_id": 0,
                                "isv_svn": 0}))
    result = run_cli("attest", "policy", path, "--format", "ehsm")
    assert result.returncode == 2
    assert_one_line_error(result, "has no attributes, attribute_mask", "attest record")


@pytest.mark.parametrize("content", [b"", b"[]", b"{", b"\xff", b"[" * 50000, b"1e400"])
def test_a_record_that_is_not_a_json_object(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "record.json"
    path.write_bytes(content)
    with pytest.raises(UsageError):
        load_record(path)


def test_a_huge_record_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    with path.open("wb") as handle:
        handle.truncate(2 << 20)
    with pytest.raises(UsageError, match="larger than"):
        load_record(path)


_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 70000), st.text(max_size=70),
                    st.sampled_from(["00" * 32, "ff" * 16, "00" * 4, "sgx"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*sorted(RECORD), "policy_id", "service"]), _values))
def test_record_reader_on_any_object(changes: dict) -> None:
    try:
        record = MeasurementRecord.from_json({**RECORD, **changes})
    except UsageError:
        return
    # Whatever is accepted round-trips and is internally consistent.
    assert MeasurementRecord.from_json(record.to_json()) == record
    assert record.debug == bool(bytes.fromhex(record.attributes)[0] & 2)


# --- the images (docker) ------------------------------------------------------------
@pytest.mark.docker
def test_build_custom_and_inspect_carry_the_attestation_fields(custom_image: dict) -> None:
    assert set(custom_image) >= ATTESTATION_KEYS
    assert custom_image["tee"] == "sgx"
    assert custom_image["debug"] == custom_image["debug_enclave"]
    inspected = run_cli("inspect", custom_image["image"], "--json")
    assert inspected.returncode == 0, inspected.stderr
    fields = json.loads(inspected.stdout)
    assert {k: fields[k] for k in ATTESTATION_KEYS} == {k: custom_image[k]
                                                         for k in ATTESTATION_KEYS}
    # The build's own record reads as a MeasurementRecord.
    record = MeasurementRecord.from_json(custom_image)
    assert record.mr_enclave == custom_image["mr_enclave"]


@pytest.mark.docker
def test_attest_record_writes_the_record_of_a_verified_image(custom_image: dict,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "record.json"
    flags = ["--allow-debug", "--allow-insecure"] if custom_image["debug"] else []
    # verify compares with a base the user pins, never one a label names.
    result = run_cli("attest", "record", custom_image["image"], "--base",
                     custom_image["base_image_id"], "--output", out, "--json", *flags)
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    assert written == json.loads(result.stdout)
    for key in ATTESTATION_KEYS | {"mr_enclave", "mr_signer"}:
        assert written[key] == custom_image[key], key
    assert written["image_id"] == custom_image["image_id"]
    # The same record as build-custom's, key for key where both know the value.
    for key in ("enclave", "debug_enclave", "date", "sigstruct", "tool", "base_image_id"):
        assert written[key] == custom_image[key], key
    load_record(out)


@pytest.mark.docker
def test_attest_record_refuses_when_verify_refuses(custom_image: dict, os_image: str,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "record.json"
    # Compared with a base it was not built on, the image fails verification.
    result = run_cli("attest", "record", custom_image["image"], "--base", os_image,
                     "--allow-debug", "--allow-insecure", "--output", out)
    assert result.returncode == 3, result
    assert_one_line_error(result, "verify")
    assert not out.exists()
