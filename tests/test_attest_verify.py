"""`attest verify`: real SGX and TDX quotes (dcap-qvl's samples) checked against a record.

Every test gives the evaluation time: the collateral expired in July 2025. The
DCAP chain is dcap-qvl's; these tests check what we add (the body against the
record, the TCB allow-list, DEBUG, TEE type, report data) and that no input
can get past either stage or crash the command.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.attest.quote import (
    HEADER_SIZE,
    SGX_REPORT_FIELDS,
    SgxReportBody,
    parse_quote_layout,
)
from ppml_image.attest.verify import Expectation, Verdict, check_body, verify_quote
from ppml_image.errors import UsageError
from ppml_image.sgx.signing.record import MeasurementRecord

VECTORS = Path(__file__).parent / "attestation"
QUOTE = VECTORS / "sgx_quote"
COLLATERAL = VECTORS / "sgx_quote_collateral.json"
TDX_QUOTE = VECTORS / "tdx_quote"
TDX_COLLATERAL = VECTORS / "tdx_quote_collateral.json"
AT = "2025-06-20T00:00:00Z"
WHEN = dt.datetime(2025, 6, 20, tzinfo=dt.timezone.utc)
STATUS = "ConfigurationAndSWHardeningNeeded"
MR_ENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MR_SIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
# What a SIGSTRUCT of this enclave says: MODE64BIT (no INIT: EINIT sets it), xfrm 0xe7.
RECORD = {"tee": "sgx", "mr_enclave": MR_ENCLAVE, "mr_signer": MR_SIGNER, "isv_prod_id": 0,
          "isv_svn": 0, "attributes": "0400000000000000e700000000000000",
          "attribute_mask": "ffffffffffffffff0300000000000000", "misc_select": "00000000",
          "misc_mask": "ffffffff", "debug": False, "image": "registry.example/ppml/job:1"}


def write_record(folder: Path, **changes: object) -> Path:
    path = folder / "record.json"
    path.write_text(json.dumps({**RECORD, **changes}))
    return path


def attest(*args: object) -> object:
    return run_cli("attest", "verify", *args)


def verify_bytes(quote: bytes, **changes: object) -> Verdict:
    record = MeasurementRecord.from_json({**RECORD, **changes})
    return verify_quote(quote, COLLATERAL.read_bytes(), Expectation.from_record(record),
                        at=WHEN, allow_tcb={"UpToDate", STATUS})


# --- accepted ------------------------------------------------------------------
def test_accepts_the_vector_quote_against_its_record(tmp_path: Path) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record", write_record(tmp_path),
                    "--at", AT, "--allow-tcb", STATUS, "--nonce", "Hello, world!")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert len(line.splitlines()) == 1 and line.startswith("accepted: ")
    assert MR_ENCLAVE in line and STATUS in line
    # Advisories are printed, and the root that anchored the chain is named.
    assert "INTEL-SA-00289" in line and "INTEL-SA-00615" in line
    assert "Intel SGX Root CA (pinned" in line


def test_json_verdict_when_accepted(tmp_path: Path) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record", write_record(tmp_path),
                    "--at", AT, "--allow-tcb", STATUS, "--json")
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is True and verdict["verdict"] == "accepted"
    assert verdict["tcb_status"] == STATUS
    assert verdict["advisories"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert verdict["evaluated_at"] == AT and verdict["tee"] == "sgx"
    assert verdict["report"]["mr_enclave"] == MR_ENCLAVE
    assert verdict["report"]["attributes"] == "0500000000000000e700000000000000"


def test_accepts_by_mrenclave_and_by_signer_without_a_record() -> None:
    by_enclave = attest(QUOTE, "--collateral", COLLATERAL, "--mr-enclave", MR_ENCLAVE.upper(),
                        "--at", AT, "--allow-tcb", STATUS)
    assert by_enclave.returncode == 0, by_enclave.stderr
    by_signer = attest(QUOTE, "--collateral", COLLATERAL, "--mr-signer", MR_SIGNER,
                       "--isv-prod-id", "0", "--min-isv-svn", "0", "--at", AT,
                       "--allow-tcb", STATUS)
    assert by_signer.returncode == 0, by_signer.stderr


# --- each single-field mismatch is named ---------------------------------------------
MISMATCHES = [
    ({"mr_enclave": "00" * 32}, "MRENCLAVE is " + MR_ENCLAVE),
    ({"mr_signer": "11" * 32}, "MRSIGNER is " + MR_SIGNER),
    ({"isv_prod_id": 7}, "ISVPRODID is 0, expected 7"),
    ({"isv_svn": 1}, "ISVSVN is 0, below the minimum 1"),
    ({"attributes": "0400000000000000e600000000000000",
      "attribute_mask": "ffffffffffffffffff00000000000000"}, "ATTRIBUTES"),
    ({"misc_select": "01000000"}, "MISCSELECT"),
    # A record of a debug enclave does not match a production quote (DEBUG is under the mask).
    ({"attributes": "0600000000000000e700000000000000", "debug": True}, "ATTRIBUTES"),
]


@pytest.mark.parametrize(("changes", "named"), MISMATCHES)
def test_each_single_field_mismatch_is_refused_and_named(tmp_path: Path, changes: dict,
                                                         named: str) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record",
                    write_record(tmp_path, **changes), "--at", AT, "--allow-tcb", STATUS)
    assert result.returncode == 3, result
    assert_one_line_error(result, "refused: 1 problem(s)", named)


def test_a_field_outside_the_record_mask_is_not_compared(tmp_path: Path) -> None:
    # xfrm differs, but the record's mask leaves that bit out: accepted.
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record",
                    write_record(tmp_path, attributes="0400000000000000e780000000000000"),
                    "--at", AT, "--allow-tcb", STATUS)
    assert result.returncode == 0, result.stderr


def test_all_mismatches_are_named_at_once(tmp_path: Path) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record",
                    write_record(tmp_path, mr_enclave="00" * 32, mr_signer="11" * 32),
                    "--at", AT, "--report-data", "ff", "--json")
    assert result.returncode == 3
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is False and len(verdict["problems"]) == 4
    assert any(p.startswith("TCB status") for p in verdict["problems"])


def test_mismatch_with_the_options_instead_of_a_record() -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--mr-signer", MR_SIGNER,
                    "--isv-prod-id", "0", "--min-isv-svn", "1", "--at", AT,
                    "--allow-tcb", STATUS)
    assert result.returncode == 3
    assert_one_line_error(result, "ISVSVN is 0, below the minimum 1")


def test_report_data_must_equal(tmp_path: Path) -> None:
    record = write_record(tmp_path)
    ok = attest(QUOTE, "--collateral", COLLATERAL, "--record", record, "--at", AT,
                "--allow-tcb", STATUS, "--report-data", b"Hello, world!".hex())
    assert ok.returncode == 0, ok.stderr
    for other in (["--nonce", "Hello, world?"], ["--report-data", "00"],
                  ["--report-data", (b"Hello, world!" + b"\0" * 51).hex()[:-2] + "01"]):
        result = attest(QUOTE, "--collateral", COLLATERAL, "--record", record, "--at", AT,
                        "--allow-tcb", STATUS, *other)
        assert result.returncode == 3
        assert_one_line_error(result, "REPORTDATA is 48656c6c6f")


# --- a changed bit anywhere in the body: the signature fails ---------------------------
@pytest.mark.parametrize(("name", "offset", "size"), SGX_REPORT_FIELDS,
                         ids=[f[0] for f in SGX_REPORT_FIELDS])
def test_a_changed_bit_in_every_body_field_is_refused(name: str, offset: int, size: int) -> None:
    for position in (offset, offset + size - 1):
        quote = bytearray(QUOTE.read_bytes())
        quote[HEADER_SIZE + position] ^= 0x01
        verdict = verify_bytes(bytes(quote))
        assert not verdict.accepted, name
        assert any("signature" in p.lower() for p in verdict.problems), verdict.problems


def test_a_changed_body_bit_is_refused_by_the_command(tmp_path: Path) -> None:
    quote = bytearray(QUOTE.read_bytes())
    quote[HEADER_SIZE + 64] ^= 0x80  # the first byte of MRENCLAVE
    tampered = tmp_path / "quote"
    tampered.write_bytes(bytes(quote))
    result = attest(tampered, "--collateral", COLLATERAL, "--mr-enclave",
                    bytes(quote[HEADER_SIZE + 64:HEADER_SIZE + 96]).hex(), "--at", AT,
                    "--allow-tcb", STATUS)
    assert result.returncode == 3
    assert_one_line_error(result, "report signature is invalid")


# --- time ------------------------------------------------------------------------------
@pytest.mark.parametrize(("when", "said"), [
    ("2025-07-30T00:00:00Z", "collateral expired: tcb_info valid until 2025-07-19T10:56:11Z"),
    ("2024-01-01T00:00:00+00:00", "collateral not yet valid: tcb_info issued 2025-06-19"),
])
def test_collateral_outside_its_validity_is_one_line(tmp_path: Path, when: str,
                                                     said: str) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record", write_record(tmp_path),
                    "--at", when, "--allow-tcb", STATUS)
    assert result.returncode == 3
    assert_one_line_error(result, said)


def test_without_at_the_time_is_now_and_the_expiry_is_said(tmp_path: Path) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record", write_record(tmp_path),
                    "--allow-tcb", STATUS, "--json")
    assert result.returncode == 3
    verdict = json.loads(result.stdout)
    assert verdict["problems"][0].startswith("collateral expired")
    evaluated = dt.datetime.fromisoformat(verdict["evaluated_at"].replace("Z", "+00:00"))
    assert abs((evaluated - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 600


@pytest.mark.parametrize("bad", ["2025-06-20T00:00:00", "yesterday", "2025-13-01T00:00:00Z"])
def test_a_bad_or_zoneless_time_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record", write_record(tmp_path),
                    "--at", bad)
    assert result.returncode == 2
    assert_one_line_error(result, "--at")


# --- TEE type, DEBUG, TCB ----------------------------------------------------------------
def test_a_tdx_quote_is_refused(tmp_path: Path) -> None:
    result = attest(TDX_QUOTE, "--collateral", TDX_COLLATERAL, "--record",
                    write_record(tmp_path), "--at", AT, "--json")
    assert result.returncode == 3
    verdict = json.loads(result.stdout)
    # Its chain is fine (UpToDate): the TEE type alone refuses it.
    assert verdict["tcb_status"] == "UpToDate"
    assert verdict["problems"] == ["TEE type is TDX, not SGX"] and verdict["tee"] == "tdx"


def _debug_body() -> SgxReportBody:
    raw = bytearray(parse_quote_layout(QUOTE.read_bytes()).sgx_body.raw)  # type: ignore[union-attr]
    raw[48] |= 0x02  # DEBUG in attributes.flags
    return SgxReportBody(bytes(raw))


def _body_problems(body: SgxReportBody, expected: Expectation, allow_debug: bool) -> list[str]:
    verdict = Verdict(at=WHEN, root_ca="test")
    check_body(verdict, body, expected, allow_debug=allow_debug, report_data=None)
    return verdict.problems


def test_a_debug_enclave_is_refused_unless_allowed_and_recorded() -> None:
    debug_record = MeasurementRecord.from_json(
        {**RECORD, "attributes": "0600000000000000e700000000000000", "debug": True})
    production = MeasurementRecord.from_json(RECORD)
    body = _debug_body()
    refused = _body_problems(body, Expectation.from_record(debug_record), False)
    assert refused == ["DEBUG is set: a debug enclave's memory is readable by the host "
                       "(--allow-debug accepts it)"]
    assert _body_problems(body, Expectation.from_record(debug_record), True) == []
    # --allow-debug does not turn a production record into a debug one.
    problems = _body_problems(body, Expectation.from_record(production), True)
    assert "DEBUG is set but the record is a production enclave" in problems
    # Without a record, --allow-debug alone decides.
    by_enclave = Expectation(mr_enclave=MR_ENCLAVE)
    assert _body_problems(body, by_enclave, True) == []
    assert len(_body_problems(body, by_enclave, False)) == 1


@pytest.mark.parametrize(("flag_change", "named"), [
    (lambda f: f & ~0x01, "INIT is not set"),
    (lambda f: f & ~0x04, "MODE64BIT is not set"),
    (lambda f: f | 0x10, "PROVISION_KEY"),
    (lambda f: f | 0x20, "EINITTOKEN_KEY"),
])
def test_gramines_attribute_checks(flag_change, named: str) -> None:  # type: ignore[no-untyped-def]
    raw = bytearray(parse_quote_layout(QUOTE.read_bytes()).sgx_body.raw)  # type: ignore[union-attr]
    raw[48] = flag_change(raw[48])
    problems = _body_problems(SgxReportBody(bytes(raw)), Expectation(mr_enclave=MR_ENCLAVE),
                              False)
    assert any(named in p for p in problems), problems


def test_tcb_allow_list(tmp_path: Path) -> None:
    record = write_record(tmp_path)
    default = attest(QUOTE, "--collateral", COLLATERAL, "--record", record, "--at", AT)
    assert default.returncode == 3
    assert_one_line_error(default, f"TCB status {STATUS} is not allowed (allowed: UpToDate",
                          "INTEL-SA-00289")
    other = attest(QUOTE, "--collateral", COLLATERAL, "--record", record, "--at", AT,
                   "--allow-tcb", "SWHardeningNeeded,OutOfDate")
    assert other.returncode == 3
    for bad in ("Revoked", "UpToDate,uptodate", "Anything"):
        result = attest(QUOTE, "--collateral", COLLATERAL, "--record", record, "--at", AT,
                        "--allow-tcb", bad)
        assert result.returncode == 2, bad
        assert_one_line_error(result, "--allow-tcb")


# --- the root of trust ---------------------------------------------------------------------
def _self_signed_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Intel SGX Root CA")])
    now = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=20000))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _intel_root_der() -> bytes:
    pem = json.loads(COLLATERAL.read_text())["tcb_info_issuer_chain"].encode()
    certs = x509.load_pem_x509_certificates(pem)
    root = next(c for c in certs if c.subject == c.issuer)
    return root.public_bytes(serialization.Encoding.DER)


def test_another_root_ca_is_refused_and_named(tmp_path: Path) -> None:
    fake = tmp_path / "root.der"
    fake.write_bytes(_self_signed_der())
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record", write_record(tmp_path),
                    "--at", AT, "--allow-tcb", STATUS, "--root-ca", fake)
    assert result.returncode == 3
    assert_one_line_error(result, "--root-ca sha256:", "(tests only)")


def test_root_ca_option_is_printed_in_the_verdict(tmp_path: Path) -> None:
    intel = tmp_path / "intel.der"
    intel.write_bytes(_intel_root_der())
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record", write_record(tmp_path),
                    "--at", AT, "--allow-tcb", STATUS, "--root-ca", intel)
    assert result.returncode == 0, result.stderr
    assert re.search(r"root --root-ca sha256:[0-9a-f]{64} \(tests only\)", result.stdout)


# --- malformed input: one line, exit 2 ------------------------------------------------------
@pytest.mark.parametrize("length", [0, 10, 47, 48, 431, 436, 437, 1000, 4599])
def test_a_truncated_quote_is_a_usage_error(tmp_path: Path, length: int) -> None:
    short = tmp_path / "quote"
    short.write_bytes(QUOTE.read_bytes()[:length])
    result = attest(short, "--collateral", COLLATERAL, "--mr-enclave", MR_ENCLAVE, "--at", AT)
    assert result.returncode == 2, result
    assert_one_line_error(result, str(short))


def test_bytes_after_the_signature_data_must_be_zero_padding(tmp_path: Path) -> None:
    padded = tmp_path / "padded"
    padded.write_bytes(QUOTE.read_bytes() + b"\0" * 16)
    assert attest(padded, "--collateral", COLLATERAL, "--mr-enclave", MR_ENCLAVE, "--at", AT,
                  "--allow-tcb", STATUS).returncode == 0
    trailing = tmp_path / "trailing"
    trailing.write_bytes(QUOTE.read_bytes() + b"\0\x01")
    result = attest(trailing, "--collateral", COLLATERAL, "--mr-enclave", MR_ENCLAVE)
    assert result.returncode == 2
    assert_one_line_error(result, "not zero padding")


@pytest.mark.parametrize(("content", "said"), [
    (b"not json", "collateral is not JSON"),
    (b"[1, 2]", "collateral is not a JSON object"),
    (b'{"tcb_info": 3}', "not DCAP collateral"),
    (b"\xff\xfe{}", "collateral is not JSON"),
    (b"[" * 100000, "collateral is not JSON"),
])
def test_bad_collateral_is_a_usage_error(tmp_path: Path, content: bytes, said: str) -> None:
    bad = tmp_path / "collateral.json"
    bad.write_bytes(content)
    result = attest(QUOTE, "--collateral", bad, "--mr-enclave", MR_ENCLAVE, "--at", AT)
    assert result.returncode == 2, result
    assert_one_line_error(result, said)


def test_reads_are_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: refused by its size, never read
    for args in ((big, "--collateral", COLLATERAL), (QUOTE, "--collateral", big),
                 (QUOTE, "--collateral", "/dev/zero")):
        result = attest(*args, "--mr-enclave", MR_ENCLAVE, "--at", AT)
        assert result.returncode == 2, result
        assert_one_line_error(result)


@pytest.mark.parametrize(("args", "said"), [
    ([], "name the enclave"),
    (["--mr-signer", MR_SIGNER], "--mr-signer needs --isv-prod-id and --min-isv-svn"),
    (["--mr-signer", MR_SIGNER, "--isv-prod-id", "0"], "--min-isv-svn"),
    (["--mr-enclave", "12ab"], "--mr-enclave '12ab': expected 64 hex digits"),
    (["--mr-enclave", MR_ENCLAVE, "--report-data", "00", "--nonce", "x"], "not both"),
    (["--mr-enclave", MR_ENCLAVE, "--report-data", "zz"], "--report-data 'zz': not hex"),
    (["--mr-enclave", MR_ENCLAVE, "--nonce", "x" * 65], "more than the report's 64"),
])
def test_usage_errors(args: list[str], said: str) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, *args, "--at", AT)
    assert result.returncode == 2, result
    assert_one_line_error(result, said)


def test_a_record_excludes_the_measurement_options(tmp_path: Path) -> None:
    result = attest(QUOTE, "--collateral", COLLATERAL, "--record", write_record(tmp_path),
                    "--mr-enclave", MR_ENCLAVE, "--at", AT)
    assert result.returncode == 2
    assert_one_line_error(result, "--record names the enclave")


def test_a_failure_with_json_is_a_json_object(tmp_path: Path) -> None:
    short = tmp_path / "quote"
    short.write_bytes(b"\x03\x00")
    result = attest(short, "--collateral", COLLATERAL, "--mr-enclave", MR_ENCLAVE, "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout) == {"ok": False, "error": json.loads(result.stdout)["error"],
                                         "exit_code": 2}


# --- hypothesis: the layout reader and the whole check never crash --------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_layout_reader_on_any_bytes(data: bytes) -> None:
    try:
        layout = parse_quote_layout(data)
    except UsageError:
        return
    assert layout.body_offset + layout.body_size + 4 <= len(data)
    assert (layout.sgx_body is not None) == (layout.tee == "sgx")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4599), st.integers(0, 255), st.integers(0, 4600))
def test_layout_reader_on_damaged_quotes(position: int, value: int, cut: int) -> None:
    quote = bytearray(QUOTE.read_bytes())
    quote[position] = value
    try:
        parse_quote_layout(bytes(quote[:cut]))
    except UsageError:
        return
    assert cut >= HEADER_SIZE + 384 + 4


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 4599), st.integers(1, 255))
def test_any_changed_byte_is_refused_or_malformed(position: int, flip: int) -> None:
    quote = bytearray(QUOTE.read_bytes())
    quote[position] ^= flip
    try:
        verdict = verify_bytes(bytes(quote))
    except UsageError:
        return
    # Bytes dcap-qvl does not sign or use (e.g. in the certification data's padding)
    # could leave the verdict accepted; a change in the header or body never does.
    if position < HEADER_SIZE + 384:
        assert not verdict.accepted, (position, flip)


# --- the front door: what `attest verify` loads (its speed is measured by make bench) -------
def test_attest_verify_loads_no_heavy_library(tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom ppml_image.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = {'docker', 'requests', 'rich', 'jinja2', 'yaml', 'cryptography', 'pkcs11',\n"
        "         'kubernetes', 'pydantic', 'urllib3', 'regopy', 'email', 'zipfile'}\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & heavy), code)\n")
    proc = subprocess.run(
        [sys.executable, "-c", probe, "attest", "verify", str(QUOTE), "--collateral",
         str(COLLATERAL), "--record", str(write_record(tmp_path)), "--at", AT, "--allow-tcb",
         STATUS], capture_output=True, text=True, check=False, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "LOADED [] 0", proc


def test_the_dcap_extension_loaded_alone_is_the_packages_own() -> None:
    # attest verify loads dcap-qvl's compiled module without the package's __init__
    # (importlib.metadata); importing the package afterwards must give the same objects.
    probe = (
        "import sys\nfrom ppml_image.attest import verify\n"
        "module = verify._dcap_qvl()\n"
        "assert 'importlib.metadata' not in sys.modules and 'dcap_qvl' not in sys.modules\n"
        "import dcap_qvl\n"
        "assert dcap_qvl.verify is module.py_verify\n"
        "assert dcap_qvl.QuoteCollateralV3 is module.PyQuoteCollateralV3\n"
        "print('same')\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.stdout.strip() == "same", proc


def test_a_panic_in_the_rust_library_is_one_line_about_the_input() -> None:
    from ppml_image.attest.verify import _no_panic

    class PanicException(BaseException):  # what pyo3 raises when Rust code panics
        pass

    with pytest.raises(UsageError, match=r"^quote\.bin: dcap-qvl cannot read it: boom$"), \
            _no_panic("quote.bin"):
        raise PanicException("boom")
    with pytest.raises(KeyboardInterrupt), _no_panic("quote.bin"):
        raise KeyboardInterrupt
