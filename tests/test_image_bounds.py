"""The image does not set the verifier's cost: --max-image-bytes (issue 17, point 3).

Every file's size is in its tar header, before its bytes: a reader refuses an
image whose files declare more than the bound, and a ``.sig``, manifest,
``base.json`` or ``libpal.so`` larger than its own limit, without reading them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, unique_tag
from hypothesis import given
from hypothesis import strategies as st

from ppml_image.cli.common import MAX_IMAGE_BYTES_HELP, max_image_bytes
from ppml_image.defaults import MAX_IMAGE_BYTES
from ppml_image.errors import UsageError

TOO_SMALL = "1M"  # the slim custom image holds far more than a MiB of files


@pytest.mark.parametrize("text", ["0", "-1", "8X", "1.5G", "", "8B", "G", "08G", "8 G",
                                  "99999999999999999G", "8g", "0x10"])
def test_a_bound_that_is_not_a_size_is_a_usage_error(text: str) -> None:
    result = run_cli("verify", "ppml/none:1", "--max-image-bytes", text)
    assert result.returncode == 2, result
    assert_one_line_error(result, f"--max-image-bytes {text!r}")


@given(st.integers(min_value=1, max_value=10**15), st.sampled_from(["", "K", "M", "G", "T"]),
       st.sampled_from(["", "iB", "B"]))
def test_an_accepted_size_is_the_number_times_its_unit(number: int, unit: str,
                                                       tail: str) -> None:
    text = f"{number}{unit}{tail if unit else ''}"
    factor = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
    assert max_image_bytes(text) == number * factor


def test_no_bound_given_is_the_default() -> None:
    assert max_image_bytes(None) == MAX_IMAGE_BYTES == 8 << 30
    # The help text says the default the parser returns, not a copy of it.
    assert MAX_IMAGE_BYTES_HELP.endswith("Default 8G.")
    with pytest.raises(UsageError):
        max_image_bytes("8 GiB")


@pytest.mark.docker
def test_an_image_above_the_bound_is_refused_from_its_headers(custom_image: dict,
                                                              enclave_key: Path, docker_client,
                                                              janitor) -> None:
    image, base = custom_image["image"], custom_image["base_image_id"]
    fragments = ("its files hold more than 1048576 bytes", "refused before reading them")
    result = run_cli("verify", image, "--base", base, "--max-image-bytes", TOO_SMALL)
    assert result.returncode == 3, result
    assert_one_line_error(result, *fragments)
    report = run_cli("verify", image, "--base", base, "--max-image-bytes", TOO_SMALL, "--json")
    assert report.returncode == 3, report
    data = json.loads(report.stdout)
    assert data["ok"] is False and any(fragments[0] in p for p in data["problems"])
    # The same bound on the other readers of images anyone can publish.
    recorded = run_cli("attest", "record", image, "--base", base, "--max-image-bytes", "1K")
    assert recorded.returncode == 3, recorded
    assert_one_line_error(recorded, "its files hold more than 1024 bytes")
    tag = janitor.track(unique_tag("bounded"))
    signed = run_cli("sign-image", custom_image["unsigned_image"], "--base", base, "--key",
                     enclave_key, "--date", "2025-01-31", "--tag", tag,
                     "--max-image-bytes", TOO_SMALL, "--json")
    assert signed.returncode == 1, signed
    assert_one_line_error(signed, *fragments)
    assert not docker_client.images.list(name=tag)  # nothing signed, nothing tagged
    # The bound is big enough by default: the same image verifies.
    assert run_cli("verify", image, "--base", base).returncode == 0
