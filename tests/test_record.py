"""The one measurement-record reader: what is written reads back equal, unknown fields
survive, and every command that reads a record says the same one line about a bad one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_attest_verify import RECORD

from ppml_image.attest import services
from ppml_image.errors import UsageError
from ppml_image.images.enclave import record as pinned
from ppml_image.sgx.signing.record import MeasurementRecord, load_record, read_record

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
# Keys no reader interprets (the image, dates, the SIGSTRUCT view...).
_UNKNOWN = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in RECORD
                                                       and k not in ("policy_id", "service")),
                           _JSON, max_size=4)
_HEX = st.sampled_from("0123456789abcdefABCDEF")


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text(_HEX, min_size=2 * size, max_size=2 * size)


@st.composite
def _records(draw: st.DrawFn) -> MeasurementRecord:
    debug = draw(st.booleans())
    flags = draw(st.integers(0, (1 << 64) - 1)) & ~2 | (2 if debug else 0)
    attributes = flags.to_bytes(8, "little").hex() + draw(_hex(8))
    registered = draw(st.booleans())
    return MeasurementRecord.from_json({
        **draw(_UNKNOWN), "tee": "sgx", "mr_enclave": draw(_hex(32)),
        "mr_signer": draw(_hex(32)), "isv_prod_id": draw(st.integers(0, 0xFFFF)),
        "isv_svn": draw(st.integers(0, 0xFFFF)), "attributes": attributes,
        "attribute_mask": draw(_hex(16)), "misc_select": draw(_hex(4)),
        "misc_mask": draw(_hex(4)), "debug": debug,
        **({"policy_id": "3f2a9c1e-0b7d-4e5f-9a8b-1c2d3e4f5a6b", "service": "ehsm"}
           if registered else {})})


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_records())
def test_a_dumped_record_loads_back_equal_with_every_unknown_field(
        tmp_path: Path, record: MeasurementRecord) -> None:
    path = tmp_path / "record.json"
    record.dump(path)
    again = load_record(path)
    assert again == record and again.extra == record.extra
    assert again.to_json() == record.to_json() == json.loads(path.read_text())
    # Registration's tolerant view keeps every field too.
    assert services.load_record(path).data == record.to_json()


@pytest.mark.parametrize(("changes", "said"), [
    ({"mr_enclave": "zz" * 32}, "mr_enclave: expected 64 hex digits"),
    ({"mr_signer": 7}, "mr_signer: expected 64 hex digits"),
])
def test_every_reader_says_the_same_about_a_bad_field(tmp_path: Path, changes: dict[str, Any],
                                                      said: str) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps({**RECORD, **changes}))
    for reader in (load_record, services.load_record, pinned.load_record):
        with pytest.raises(UsageError) as caught:
            reader(path)
        assert str(caught.value).startswith(f"{path}: {said}"), reader


@pytest.mark.parametrize("content", [b"", b"[]", b"{", b"\xff", b'{"a": 1, "a": 2}', b"NaN"])
def test_a_file_that_is_not_one_json_object_is_one_line_naming_it(tmp_path: Path,
                                                                  content: bytes) -> None:
    path = tmp_path / "record.json"
    path.write_bytes(content)
    for reader in (read_record, load_record, services.load_record, pinned.load_record):
        with pytest.raises(UsageError) as caught:
            reader(path)
        assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_the_pinned_values_read_image_ids_and_lower_the_mr_values(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    base = "sha256:" + "ab" * 32
    path.write_text(json.dumps({"base_image_id": base, "mr_enclave": "AB" * 32}))
    loaded = pinned.load_record(path)
    assert (loaded.base_image_id, loaded.mr_enclave, loaded.mr_signer) == (base, "ab" * 32,
                                                                          None)
    path.write_text(json.dumps({"unsigned_image_id": "sha256:xyz"}))
    with pytest.raises(UsageError, match=r"unsigned_image_id: expected a sha256:\.\.\. image id"):
        pinned.load_record(path)
