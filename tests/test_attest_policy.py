"""`attest policy`: each format accepts the vector quote's claims when the record matches,
and refuses each single changed field.

The Rego formats (ita, trustee) are evaluated by a real Rego engine (regopy,
rego-cpp). The others are parsed (JSON, an env file, Azure's policy language)
and evaluated here with each service's documented semantics, written from
their documentation.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import regopy
from conftest import assert_one_line_error, run_cli
from test_attest_verify import QUOTE, RECORD

from ppml_image.attest.policies import FORMATS, policy_input, render
from ppml_image.attest.quote import parse_quote_layout
from ppml_image.sgx.signing.record import MeasurementRecord

BODY = parse_quote_layout(QUOTE.read_bytes()).sgx_body
assert BODY is not None


@dataclasses.dataclass(frozen=True)
class Claims:
    """What a service reads from a quote, here taken from the vector's report body."""

    mr_enclave: str = BODY.mr_enclave
    mr_signer: str = BODY.mr_signer
    isv_prod_id: int = BODY.isv_prod_id
    isv_svn: int = BODY.isv_svn
    attributes: bytes = BODY.field("attributes")
    misc_select: bytes = BODY.field("misc_select")

    @property
    def debug(self) -> bool:
        return bool(self.attributes[0] & 0x02)


def _debug_on(claims: Claims) -> Claims:
    attributes = bytearray(claims.attributes)
    attributes[0] |= 0x02
    return dataclasses.replace(claims, attributes=bytes(attributes))


# --- evaluators, one per format ------------------------------------------------------
def _rego(policy: str, rule: str, data: dict) -> object:
    """The value of *rule* in package ``policy``. The whole package is queried: rego-cpp
    answers ``undefined`` for a single rule whose body fails even with a default, but
    gives the default in the package's document, as OPA does for both."""
    interpreter = regopy.Interpreter()
    interpreter.add_module("policy.rego", policy)
    interpreter.set_input_term(json.dumps(data))
    output = interpreter.query("data.policy")
    assert output.ok(), output
    return json.loads(str(output))["expressions"][0][rule]


def ita_accepts(policy: str, c: Claims) -> bool:
    claims = {"sgx_mrenclave": c.mr_enclave, "sgx_mrsigner": c.mr_signer,
              "sgx_isvprodid": c.isv_prod_id, "sgx_isvsvn": c.isv_svn,
              "sgx_is_debuggable": c.debug}
    return _rego(policy, "matches_sgx_policy", claims) is True


def trustee_accepts(policy: str, c: Claims) -> bool:
    # Trustee's SGX claims: hex of the quote's bytes (little-endian), under input.sgx.body.
    body = {"mr_enclave": c.mr_enclave, "mr_signer": c.mr_signer,
            "isv_prod_id": c.isv_prod_id.to_bytes(2, "little").hex(),
            "isv_svn": c.isv_svn.to_bytes(2, "little").hex(),
            "attributes.flags": c.attributes[:8].hex(), "attributes.xfrm": c.attributes[8:].hex(),
            "misc_select": c.misc_select.hex(), "report_data": BODY.field("report_data").hex()}
    allowed = _rego(policy, "allow", {"sgx": {"body": body}})
    executables = _rego(policy, "executables", {"sgx": {"body": body}})
    assert (executables == 3) is (allowed is True)
    return allowed is True


_MAA_CLAUSE = re.compile(r'\[\s*type=="([a-z0-9-]+)",\s*value(==|>=)("[0-9a-f]+"|\d+|true|false)'
                         r'\s*\]')


def parse_maa(policy: str) -> list[tuple[str, str, object]]:
    """Azure's policy language, the subset an SGX policy uses: version, one authorization
    rule of conjoined claim conditions ending in permit(), issuance rules."""
    match = re.fullmatch(r"version=1\.0;\nauthorizationrules\n\{\n(.*?)=> permit\(\);\n\};\n"
                         r"issuancerules\n\{\n(.*?)\};\n", policy, re.S)
    assert match, policy
    clauses = [part.strip() for part in match.group(1).split("&&")]
    parsed = []
    for clause in clauses:
        found = _MAA_CLAUSE.fullmatch(clause)
        assert found, clause
        parsed.append((found.group(1), found.group(2), json.loads(found.group(3))))
    for line in match.group(2).strip().splitlines():
        assert re.fullmatch(r'c:\[type=="x-ms-sgx-[a-z]+"\] => issue\(type="[a-z-]+", '
                            r'value=c\.value\);', line.strip()), line
    return parsed


def maa_accepts(policy: str, c: Claims) -> bool:
    claims = {"x-ms-sgx-mrenclave": c.mr_enclave, "x-ms-sgx-mrsigner": c.mr_signer,
              "x-ms-sgx-product-id": c.isv_prod_id, "x-ms-sgx-svn": c.isv_svn,
              "x-ms-sgx-is-debuggable": c.debug}
    for name, op, value in parse_maa(policy):
        have = claims[name]
        if not (have == value if op == "==" else have >= value):  # type: ignore[operator]
            return False
    return True


def parse_env(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        key, _, value = line.partition("=")
        assert re.fullmatch(r"RA_TLS_[A-Z_]+", key) and key not in values, line
        values[key] = value
    return values


def ra_tls_accepts(policy: str, c: Claims) -> bool:
    """Gramine's ra_tls_verify_callback: each value or `any`, SVN at least, DEBUG off unless
    RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE=1."""
    env = parse_env(policy)
    assert set(env) <= {"RA_TLS_MRENCLAVE", "RA_TLS_MRSIGNER", "RA_TLS_ISV_PROD_ID",
                        "RA_TLS_ISV_SVN", "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE"}
    checks = [env["RA_TLS_MRENCLAVE"] in ("any", c.mr_enclave),
              env["RA_TLS_MRSIGNER"] in ("any", c.mr_signer),
              env["RA_TLS_ISV_PROD_ID"] in ("any", str(c.isv_prod_id)),
              env["RA_TLS_ISV_SVN"] == "any" or c.isv_svn >= int(env["RA_TLS_ISV_SVN"]),
              not c.debug or env.get("RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE") == "1"]
    return all(checks)


def marblerun_accepts(policy: str, c: Claims) -> bool:
    """MarbleRun's package check: UniqueID, or SignerID + ProductID + SecurityVersion (at
    least), and Debug."""
    packages = json.loads(policy)["Packages"]
    ((_name, package),) = packages.items()
    assert set(package) <= {"UniqueID", "SignerID", "ProductID", "SecurityVersion", "Debug"}
    assert "UniqueID" in package or {"SignerID", "ProductID", "SecurityVersion"} <= set(package)
    checks = [package.get("UniqueID", c.mr_enclave) == c.mr_enclave,
              package.get("SignerID", c.mr_signer) == c.mr_signer,
              package.get("ProductID", c.isv_prod_id) == c.isv_prod_id,
              c.isv_svn >= package.get("SecurityVersion", 0),
              package["Debug"] or not c.debug]
    return all(checks)


def _masked_equal(have: bytes, want: str, mask: str) -> bool:
    return all((h & m) == (w & m) for h, w, m in
               zip(have, bytes.fromhex(want), bytes.fromhex(mask), strict=True))


def intel_appraisal_accepts(policy: str, c: Claims) -> bool:
    """Intel's enclave appraisal (its Rego: attributes and MISCSELECT under their masks,
    MRENCLAVE/MRSIGNER equal, product ID equal, SVN at least the minimum)."""
    ((entry,),) = [json.loads(policy)["policy_array"]]
    assert entry["environment"]["class_id"] == "bef7cb8c-31aa-42c1-854c-10db005d5c41"
    ref = entry["reference"]
    checks = [_masked_equal(c.attributes, ref["sgx_attributes"], ref["sgx_attributes_mask"]),
              _masked_equal(c.misc_select, ref["sgx_miscselect"], ref["sgx_miscselect_mask"]),
              ref.get("sgx_mrenclave", c.mr_enclave) == c.mr_enclave,
              ref.get("sgx_mrsigner", c.mr_signer) == c.mr_signer,
              ref.get("sgx_isvprodid", c.isv_prod_id) == c.isv_prod_id,
              c.isv_svn >= ref.get("sgx_isvsvn_min", 0)]
    return all(checks)


EVALUATORS: dict[str, Callable[[str, Claims], bool]] = {
    "ita": ita_accepts, "trustee": trustee_accepts, "maa": maa_accepts,
    "ra-tls": ra_tls_accepts, "marblerun": marblerun_accepts,
    "intel-appraisal": intel_appraisal_accepts,
}


def policy(fmt: str, *, by: str = "both", min_isv_svn: int | None = None,
           allow_debug: bool = False, **changes: object) -> str:
    record = MeasurementRecord.from_json({**RECORD, **changes})
    return render(fmt, policy_input(record, by=by, min_isv_svn=min_isv_svn,
                                    allow_debug=allow_debug))


CHANGED = {
    "mr_enclave": Claims(mr_enclave="00" * 32),
    "mr_signer": Claims(mr_signer="ff" * 32),
    "isv_prod_id": Claims(isv_prod_id=1),
    "debug": _debug_on(Claims()),
}


@pytest.mark.parametrize("fmt", sorted(EVALUATORS))
def test_accepts_the_vector_claims_when_the_record_matches(fmt: str) -> None:
    assert EVALUATORS[fmt](policy(fmt), Claims())


@pytest.mark.parametrize("field", sorted(CHANGED))
@pytest.mark.parametrize("fmt", sorted(EVALUATORS))
def test_refuses_each_single_changed_field(fmt: str, field: str) -> None:
    assert not EVALUATORS[fmt](policy(fmt), CHANGED[field])


@pytest.mark.parametrize("fmt", sorted(EVALUATORS))
def test_refuses_an_svn_below_the_minimum(fmt: str) -> None:
    text = policy(fmt, min_isv_svn=1)
    assert not EVALUATORS[fmt](text, Claims())
    assert EVALUATORS[fmt](text, Claims(isv_svn=1))
    assert EVALUATORS[fmt](policy(fmt, isv_svn=3), Claims(isv_svn=4))
    assert not EVALUATORS[fmt](policy(fmt, isv_svn=3), Claims(isv_svn=2))


@pytest.mark.parametrize("fmt", sorted(EVALUATORS))
def test_by_signer_leaves_mrenclave_open_and_by_enclave_the_signer(fmt: str) -> None:
    other_enclave = Claims(mr_enclave="00" * 32)
    assert EVALUATORS[fmt](policy(fmt, by="signer"), other_enclave)
    assert not EVALUATORS[fmt](policy(fmt, by="signer"), Claims(isv_prod_id=3))
    assert not EVALUATORS[fmt](policy(fmt, by="enclave"), other_enclave)
    if fmt != "intel-appraisal":  # Intel's policy always carries MRSIGNER's attributes
        assert EVALUATORS[fmt](policy(fmt, by="enclave"), Claims(mr_signer="ff" * 32))
    # DEBUG stays refused whatever --by leaves open.
    for by in ("signer", "enclave"):
        assert not EVALUATORS[fmt](policy(fmt, by=by), _debug_on(Claims()))


DEBUG_RECORD = {"attributes": "0600000000000000e700000000000000", "debug": True}


@pytest.mark.parametrize("fmt", sorted(EVALUATORS))
def test_debug_only_for_a_debug_record_with_allow_debug(fmt: str) -> None:
    # A production record: --allow-debug changes nothing.
    assert not EVALUATORS[fmt](policy(fmt, allow_debug=True), _debug_on(Claims()))
    # A debug record with --allow-debug: a debug enclave is accepted.
    assert EVALUATORS[fmt](policy(fmt, allow_debug=True, **DEBUG_RECORD), _debug_on(Claims()))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_debug_record_without_allow_debug_is_refused(tmp_path: Path, fmt: str) -> None:
    record = tmp_path / "record.json"
    record.write_text(json.dumps({**RECORD, **DEBUG_RECORD}))
    result = run_cli("attest", "policy", record, "--format", fmt)
    assert result.returncode == 2
    assert_one_line_error(result, "DEBUG enclave", "--allow-debug")


def test_intel_appraisal_compares_attributes_under_the_mask() -> None:
    text = policy("intel-appraisal")
    xfrm_changed = bytearray(Claims().attributes)
    xfrm_changed[8] ^= 0x01  # x87 state bit: under the record's xfrm mask
    assert not intel_appraisal_accepts(text, Claims(attributes=bytes(xfrm_changed)))
    misc = Claims(misc_select=b"\x01\0\0\0")
    assert not intel_appraisal_accepts(text, misc)


def test_registration_bodies() -> None:
    assert json.loads(policy("ehsm")) == {"mr_enclave": RECORD["mr_enclave"],
                                          "mr_signer": RECORD["mr_signer"]}
    assert json.loads(policy("bigdl-as")) == {"policyType": "SGXMREnclavePolicy",
                                              "mrEnclave": RECORD["mr_enclave"],
                                              "mrSigner": RECORD["mr_signer"]}
    assert json.loads(policy("bigdl-as", by="signer", min_isv_svn=2)) == {
        "policyType": "SGXMRSignerPolicy", "mrSigner": RECORD["mr_signer"], "isvProdID": "0",
        "isvSVN": "2"}
    # Credentials never go into a policy file.
    for fmt in ("ehsm", "bigdl-as"):
        assert not {"appID", "apiKey", "appid", "api_key"} & set(json.loads(policy(fmt)))


def test_ra_tls_any_where_by_leaves_one_open() -> None:
    assert parse_env(policy("ra-tls", by="signer")) == {
        "RA_TLS_MRENCLAVE": "any", "RA_TLS_MRSIGNER": RECORD["mr_signer"],
        "RA_TLS_ISV_PROD_ID": "0", "RA_TLS_ISV_SVN": "0"}
    assert parse_env(policy("ra-tls", by="enclave")) == {
        "RA_TLS_MRENCLAVE": RECORD["mr_enclave"], "RA_TLS_MRSIGNER": "any",
        "RA_TLS_ISV_PROD_ID": "any", "RA_TLS_ISV_SVN": "any"}


# --- the command ----------------------------------------------------------------------
def test_command_writes_every_format(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    record.write_text(json.dumps(RECORD))
    for fmt in FORMATS:
        out = tmp_path / f"policy.{fmt}"
        result = run_cli("attest", "policy", record, "--format", fmt, "--output", out)
        assert result.returncode == 0, result.stderr
        assert out.read_text() == policy(fmt)
        printed = run_cli("attest", "policy", record, "--format", fmt)
        assert printed.stdout == policy(fmt)
    as_json = run_cli("attest", "policy", record, "--format", "ita", "--by", "signer",
                      "--min-isv-svn", "4", "--json")
    data = json.loads(as_json.stdout)
    assert data["ok"] and data["by"] == "signer" and "sgx_isvsvn >= 4" in data["policy"]


@pytest.mark.parametrize(("args", "said"), [
    (["--format", "opa"], "--format 'opa': expected one of ra-tls"),
    (["--format", "ita", "--by", "both"], "--by 'both': expected enclave or signer"),
    (["--format", "ita", "--min-isv-svn", "70000"], "--min-isv-svn"),
])
def test_command_usage_errors(tmp_path: Path, args: list[str], said: str) -> None:
    record = tmp_path / "record.json"
    record.write_text(json.dumps(RECORD))
    result = run_cli("attest", "policy", record, *args)
    assert result.returncode == 2
    assert_one_line_error(result, said)


def test_command_never_overwrites_its_record(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    record.write_text(json.dumps(RECORD))
    link = tmp_path / "link.json"
    link.symlink_to(record)
    for out in (record, link):
        result = run_cli("attest", "policy", record, "--format", "ehsm", "--output", out)
        assert result.returncode == 2
        assert_one_line_error(result)
    assert json.loads(record.read_text()) == RECORD
