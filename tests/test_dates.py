"""SIGSTRUCT dates as Gramine 1.9 writes them, and SOURCE_DATE_EPOCH.

``gramine-sgx-sign --date`` takes any ``YYYY-MM-DD`` of digits and stores
each part in BCD (bytes 20-23: DD, MM, then YYYY little-endian);
``0000-00-00`` makes the field all zeros, for reproducible builds.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import VECTORS, assert_one_line_error, load_case, run_cli
from hypothesis import given
from hypothesis import strategies as st

from ppml_image.errors import SigstructError, UsageError
from ppml_image.sgx.signing.sigstruct import Sigstruct, SigstructDate, read_sigstruct

VECTOR = "sign-basic-256m-4t-debug"


def sign_vector(out: Path, *extra: str, env: dict[str, str] | None = None,
                name: str = "out"):
    case = load_case(VECTOR)
    args = ["sign", "--manifest", case["manifest"], "--libpal", case["libpal"],
            "--key", case["key"], "--output", out / f"{name}.manifest.sgx",
            "--pkglibdir", case["pkglibdir"], "--chroot", case["chroot"], *extra]
    return run_cli(*args, cwd=VECTORS / VECTOR, env=env)


def date_bytes(sig: Path) -> bytes:
    return sig.read_bytes()[20:24]


def view_date(sig: Path) -> str:
    result = run_cli("sigstruct", sig, "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["date"])


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_zero_date_is_all_zero_bytes_and_viewable(out: Path) -> None:
    result = sign_vector(out, "--date", "0000-00-00")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr  # the reproducible-builds value is not a mistake
    assert date_bytes(out / "out.sig") == bytes(4)
    assert view_date(out / "out.sig") == "0000-00-00"
    # Only the date differs from Gramine's own output for 2024-01-15.
    expected = (VECTORS / VECTOR / "expected.manifest.sgx").read_bytes()
    assert (out / "out.manifest.sgx").read_bytes() == expected
    sig = read_sigstruct(str(out / "out.sig"))
    assert sig.mr_enclave == load_case(VECTOR)["expected"]["mr_enclave"]


def test_not_a_calendar_date_signs_with_a_warning_in_bcd(out: Path) -> None:
    result = sign_vector(out, "--date", "2024-13-45")
    assert result.returncode == 0, result.stderr
    assert "2024-13-45 is not a calendar date" in result.stderr
    assert date_bytes(out / "out.sig") == bytes([0x45, 0x13, 0x24, 0x20])
    assert view_date(out / "out.sig") == "2024-13-45"


def test_calendar_date_matches_gramines_bytes(out: Path) -> None:
    result = sign_vector(out, "--date", "2024-01-15")
    assert result.returncode == 0, result.stderr
    assert "calendar" not in result.stderr
    assert (out / "out.sig").read_bytes() == (VECTORS / VECTOR / "expected.sig").read_bytes()


@pytest.mark.parametrize("value", [
    "2024-1-5", "24-01-15", "20240-01-15", "2024/01/15", "2024-01-15 ", " 2024-01-15",
    "2024-01-15\n", "+024-01-15", "-001-01-15", "",
    "\uff12\uff10\uff12\uff14-01-15", "2024-01-1\uff15",
    "yesterday", "Today", "0x12-01-15", "2024-01-15T00:00", "1e3-01-15",
])
def test_malformed_dates_are_one_line_usage_errors(out: Path, value: str) -> None:
    result = sign_vector(out, "--date", value)
    assert_one_line_error(result, "--date")
    assert result.returncode == 2
    assert list(out.iterdir()) == []


def test_two_signings_are_byte_identical(out: Path) -> None:
    for name in ("a", "b"):
        result = sign_vector(out, "--date", "0000-00-00", name=name)
        assert result.returncode == 0, result.stderr
    assert (out / "a.sig").read_bytes() == (out / "b.sig").read_bytes()
    assert (out / "a.manifest.sgx").read_bytes() == (out / "b.manifest.sgx").read_bytes()


# --------------------------------------------------------------------------
# SOURCE_DATE_EPOCH: the date when --date is not given
# --------------------------------------------------------------------------
def test_source_date_epoch_is_the_default_date(out: Path) -> None:
    result = sign_vector(out, env={"SOURCE_DATE_EPOCH": "1705276800"})  # 2024-01-15 00:00 UTC
    assert result.returncode == 0, result.stderr
    assert (out / "out.sig").read_bytes() == (VECTORS / VECTOR / "expected.sig").read_bytes()


def test_source_date_epoch_takes_the_utc_day(out: Path) -> None:
    # 2024-01-15 23:30 UTC is already the 16th east of UTC: the UTC day counts.
    result = sign_vector(out, env={"SOURCE_DATE_EPOCH": "1705361400", "TZ": "Asia/Tokyo"})
    assert result.returncode == 0, result.stderr
    assert view_date(out / "out.sig") == "2024-01-15"


def test_explicit_date_wins_over_source_date_epoch(out: Path) -> None:
    result = sign_vector(out, "--date", "0000-00-00", env={"SOURCE_DATE_EPOCH": "1705276800"})
    assert result.returncode == 0, result.stderr
    assert date_bytes(out / "out.sig") == bytes(4)


def test_today_ignores_source_date_epoch(out: Path) -> None:
    before = dt.date.today()
    result = sign_vector(out, "--date", "today", env={"SOURCE_DATE_EPOCH": "0"})
    assert result.returncode == 0, result.stderr
    assert view_date(out / "out.sig") in {before.isoformat(), dt.date.today().isoformat()}


def test_empty_source_date_epoch_means_unset(out: Path) -> None:
    before = dt.date.today()
    result = sign_vector(out, env={"SOURCE_DATE_EPOCH": ""})
    assert result.returncode == 0, result.stderr
    assert view_date(out / "out.sig") in {before.isoformat(), dt.date.today().isoformat()}


@pytest.mark.parametrize("value", [
    "abc", "1.5", "1e9", "-5", " 170000000", "170000000 ", "0x10", "99999999999999",
    "999999999999", "\u0661\u0667" + "\u0660" * 8, "1_000",
])
def test_malformed_source_date_epoch_is_a_usage_error(out: Path, value: str) -> None:
    result = sign_vector(out, env={"SOURCE_DATE_EPOCH": value})
    assert_one_line_error(result, "SOURCE_DATE_EPOCH")
    assert result.returncode == 2
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------
# The offline flow keeps the date, and export/assemble agree on it
# --------------------------------------------------------------------------
def test_export_and_assemble_with_the_zero_date(out: Path, tmp_path: Path) -> None:
    import subprocess

    case = load_case(VECTOR)
    key = (VECTORS / VECTOR / case["key"]).resolve()
    # --export-signing-data takes no --key: export without it.
    case_args = ["sign", "--manifest", case["manifest"], "--libpal", case["libpal"],
                 "--output", out / "x.manifest.sgx", "--pkglibdir", case["pkglibdir"],
                 "--chroot", case["chroot"], "--date", "0000-00-00"]
    result = run_cli(*case_args, "--export-signing-data", out / "app.tbs",
                     cwd=VECTORS / VECTOR)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "app.tbs.json").read_text())
    assert record["sigstruct"]["date"] == "0000-00-00"
    review = run_cli("sigstruct", "--signing-data", out / "app.tbs", "--json")
    assert json.loads(review.stdout)["date"] == "0000-00-00"
    sig, pub = tmp_path / "app.tbs.sig", tmp_path / "pub.pem"
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", key, "-out", sig, out / "app.tbs"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    result = run_cli(*case_args, "--signature", sig, "--public-key", pub,
                     "--sigfile", out / "assembled.sig", cwd=VECTORS / VECTOR)
    assert result.returncode == 0, result.stderr
    direct = sign_vector(out, "--date", "0000-00-00", name="direct")
    assert direct.returncode == 0, direct.stderr
    assert (out / "assembled.sig").read_bytes() == (out / "direct.sig").read_bytes()


# --------------------------------------------------------------------------
# The byte-exact reader takes every BCD date Gramine can write, and no other
# --------------------------------------------------------------------------
def _sig(date: SigstructDate) -> bytes:
    return Sigstruct(enclave_hash=bytes(32), date=date, attribute_flags=4, attribute_xfrms=3,
                     attribute_xfrm_mask=0xFFFFFFFFFFF9FF1B).to_bytes()


@given(st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99))
def test_every_bcd_date_round_trips(year: int, month: int, day: int) -> None:
    date = SigstructDate(year, month, day)
    data = _sig(date)
    assert data[20:24] == bytes([int(f"{day:02d}", 16), int(f"{month:02d}", 16),
                                 int(f"{year:04d}"[2:], 16), int(f"{year:04d}"[:2], 16)])
    parsed = Sigstruct.from_bytes(data)
    assert parsed.date == date
    assert parsed.view()["date"] == f"{year:04d}-{month:02d}-{day:02d}"
    assert SigstructDate.parse(date.isoformat()) == date


@given(st.integers(0, 3), st.integers(0, 255))
def test_a_nibble_above_nine_is_refused(index: int, byte: int) -> None:
    data = bytearray(_sig(SigstructDate(2024, 1, 15)))
    data[20 + index] = byte
    if all(nibble <= 9 for b in data[20:24] for nibble in (b >> 4, b & 0xF)):
        assert Sigstruct.from_bytes(bytes(data)).to_bytes() == bytes(data)
    else:
        with pytest.raises(SigstructError, match="not BCD"):
            Sigstruct.from_bytes(bytes(data))


@pytest.mark.parametrize("parts", [(10000, 1, 1), (2024, 100, 1), (2024, 1, 100), (-1, 1, 1),
                                   (2024, True, 1)])
def test_out_of_range_parts_are_refused(parts: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        SigstructDate(*parts)


# --------------------------------------------------------------------------
# build-custom and sign-image take the same dates (in-memory engine)
# --------------------------------------------------------------------------
def test_build_custom_and_sign_image_take_source_date_epoch_and_zero_dates(
        tmp_path: Path, enclave_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ppml_image.images.enclave import custom
    from ppml_image.testing import MemoryEngine, make_gramine_tree, memory_base

    mem = MemoryEngine()
    memory_base(mem, make_gramine_tree(tmp_path / "gramine"))
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print(1)\n")
    small = {"enclave_size": "256M", "max_threads": "4"}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 UTC
    built = custom.build_custom(enclave_key, base="mem/base:1", app=app, tag="mem/d:1",
                                defines=dict(small), quiet=True, engine=mem)
    assert built.sigstruct["date"] == "2023-11-14"
    resigned = custom.sign_image("mem/d:1-unsigned", enclave_key, tag="mem/d:2",
                                 date="0000-00-00", quiet=True, engine=mem, base="mem/base:1")
    assert resigned.sigstruct["date"] == "0000-00-00"
    assert resigned.mr_enclave == built.mr_enclave
    sig = mem.read_file(resigned.image_id, "/ppml/python-ml.sig", limit=4096)
    assert sig[20:24] == bytes(4)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        custom.sign_image("mem/d:1-unsigned", enclave_key, tag="mem/d:3", quiet=True,
                          engine=mem, base="mem/base:1")
    assert mem.find_image("mem/d:3") is None
