"""Attestation policies, one per service format, written from a measurement record.

Every format says the same thing in its own language: the enclave named by
``--by`` (``enclave``: MRENCLAVE; ``signer``: MRSIGNER + product ID + minimum
SVN; default both), SGX only, and DEBUG refused unless the record is a debug
enclave *and* ``allow_debug`` was given. A debug record without it is
refused here: its policy could accept nothing but debug enclaves.

Formats (each a file the service takes as it is):

``ra-tls``
    Gramine's ``RA_TLS_*`` environment variables, ``any`` where ``--by`` leaves one open.
``ita``
    Intel Trust Authority SGX appraisal policy (Rego, rule ``matches_sgx_policy``).
``maa``
    Azure Attestation SGX policy (policy language version 1.0).
``trustee``
    CoCo Trustee attestation-service Rego on its SGX claims (``input.sgx.body``),
    with the reference values inline; ``allow`` and the EAR trust claims.
``marblerun``
    A MarbleRun manifest ``Packages`` entry.
``intel-appraisal``
    Intel's SGX enclave appraisal policy (``tee_appraisal_tool gen_payload`` shape).
``ehsm`` / ``bigdl-as``
    The registration bodies: eHSM ``UploadQuotePolicy`` payload and BigDL
    ``registerPolicy`` (without ``appID``/``apiKey``: credentials never go in a file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from ppml_image.errors import UsageError
from ppml_image.sgx.signing.record import MeasurementRecord

FORMATS = ("ra-tls", "ita", "maa", "trustee", "marblerun", "intel-appraisal", "ehsm",
           "bigdl-as")
BY = ("enclave", "signer", "both")
INTEL_SGX_ENCLAVE_CLASS_ID = "bef7cb8c-31aa-42c1-854c-10db005d5c41"
_FLAG_INIT = 0x1
_FLAG_DEBUG = 0x2


@dataclass(frozen=True)
class PolicyInput:
    """The record and the choices that shape every format."""

    record: MeasurementRecord
    by: str
    min_isv_svn: int
    debug: bool  # the policy accepts a DEBUG enclave (and only then)

    @property
    def enclave(self) -> bool:
        return self.by in ("enclave", "both")

    @property
    def signer(self) -> bool:
        return self.by in ("signer", "both")


def policy_input(record: MeasurementRecord, *, by: str = "both",
                 min_isv_svn: int | None = None, allow_debug: bool = False) -> PolicyInput:
    """Check the choices against the record (one line naming what is wrong)."""
    if by not in BY:
        raise UsageError(f"--by {by!r}: expected enclave or signer")
    svn = record.isv_svn if min_isv_svn is None else min_isv_svn
    if not 0 <= svn <= 0xFFFF:
        raise UsageError(f"--min-isv-svn {svn}: expected 0 to 65535")
    if record.debug and not allow_debug:
        raise UsageError("the record is a DEBUG enclave (its memory is readable by the host): "
                         "a policy for it accepts only debug enclaves; pass --allow-debug to "
                         "write one anyway")
    return PolicyInput(record, by, svn, record.debug and allow_debug)


def render(fmt: str, spec: PolicyInput) -> str:
    """The policy text in *fmt*."""
    try:
        writer = _WRITERS[fmt]
    except KeyError:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}") from None
    return writer(spec)


def _json(data: object) -> str:
    return json.dumps(data, indent=2) + "\n"


def _ra_tls(spec: PolicyInput) -> str:
    r = spec.record
    lines = [
        "# Gramine RA-TLS verification (ra_tls_verify_callback): source this file or pass",
        "# it as an env file to the verifying process.",
        f"RA_TLS_MRENCLAVE={r.mr_enclave if spec.enclave else 'any'}",
        f"RA_TLS_MRSIGNER={r.mr_signer if spec.signer else 'any'}",
        f"RA_TLS_ISV_PROD_ID={r.isv_prod_id if spec.signer else 'any'}",
        f"RA_TLS_ISV_SVN={spec.min_isv_svn if spec.signer else 'any'}",
    ]
    if spec.debug:
        lines.append("RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE=1")
    return "\n".join(lines) + "\n"


def _rego_string(value: str) -> str:
    return json.dumps(value)


def _ita(spec: PolicyInput) -> str:
    r = spec.record
    body = [f"\tinput.sgx_is_debuggable == {str(spec.debug).lower()}"]
    if spec.enclave:
        body.append(f"\tinput.sgx_mrenclave == {_rego_string(r.mr_enclave)}")
    if spec.signer:
        body += [f"\tinput.sgx_mrsigner == {_rego_string(r.mr_signer)}",
                 f"\tinput.sgx_isvprodid == {r.isv_prod_id}",
                 f"\tinput.sgx_isvsvn >= {spec.min_isv_svn}"]
    return ("# Intel Trust Authority SGX appraisal policy, written by ppml-image.\n"
            "package policy\n\nimport rego.v1\n\n"
            "default matches_sgx_policy := false\n\n"
            "matches_sgx_policy if {\n" + "\n".join(body) + "\n}\n")


def _maa(spec: PolicyInput) -> str:
    r = spec.record
    rules = [f'[ type=="x-ms-sgx-is-debuggable", value=={str(spec.debug).lower()} ]']
    if spec.enclave:
        rules.append(f'[ type=="x-ms-sgx-mrenclave", value=="{r.mr_enclave}" ]')
    if spec.signer:
        rules += [f'[ type=="x-ms-sgx-mrsigner", value=="{r.mr_signer}" ]',
                  f'[ type=="x-ms-sgx-product-id", value=={r.isv_prod_id} ]',
                  f'[ type=="x-ms-sgx-svn", value>={spec.min_isv_svn} ]']
    joined = "\n    && ".join(rules)
    return ("version=1.0;\nauthorizationrules\n{\n    " + joined + "\n    => permit();\n};\n"
            "issuancerules\n{\n"
            '    c:[type=="x-ms-sgx-mrenclave"] => issue(type="sgx-mrenclave", value=c.value);\n'
            '    c:[type=="x-ms-sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);\n'
            "};\n")


def _le_hex(value: int, size: int) -> str:
    return value.to_bytes(size, "little").hex()


def _trustee(spec: PolicyInput) -> str:
    r = spec.record
    reference: dict[str, object] = {}
    if spec.enclave:
        reference["mr_enclave"] = [r.mr_enclave]
    if spec.signer:
        reference |= {"mr_signer": [r.mr_signer], "isv_prod_id": [_le_hex(r.isv_prod_id, 2)],
                      "min_isv_svn": spec.min_isv_svn}
    checks = ["\tinput.sgx", "\tdebug_ok"]
    if spec.enclave:
        checks.append("\tinput.sgx.body.mr_enclave in reference.mr_enclave")
    if spec.signer:
        checks += ["\tinput.sgx.body.mr_signer in reference.mr_signer",
                   "\tinput.sgx.body.isv_prod_id in reference.isv_prod_id",
                   "\tisv_svn >= reference.min_isv_svn"]
    debug_rule = _trustee_debug_rule(spec.debug)
    return ("# CoCo Trustee attestation-service policy for one SGX enclave (ppml-image).\n"
            "# Reference values are inline (RVPS names: sgx.body.*); claims: input.sgx.body.\n"
            "package policy\n\nimport rego.v1\n\n"
            f"reference := {json.dumps(reference, indent=4)}\n\n"
            "isv_svn := (byte_at(input.sgx.body.isv_svn, 2) * 256) + "
            "byte_at(input.sgx.body.isv_svn, 0)\n\n"
            + _TRUSTEE_HELPERS + debug_rule +
            "\ndefault allow := false\n\nallow if {\n" + "\n".join(checks) + "\n}\n\n"
            "default executables := 33\n\nexecutables := 3 if allow\n\n"
            "default hardware := 97\n\nhardware := 2 if allow\n\n"
            "default configuration := 36\n\nconfiguration := 2 if allow\n")


_TRUSTEE_HELPERS = """\
hexdigit := {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "7": 7, "8": 8, "9": 9,
\t"a": 10, "b": 11, "c": 12, "d": 13, "e": 14, "f": 15}

# The byte at hex digit i of a claim (claims are lowercase hex, little-endian).
byte_at(text, i) := (hexdigit[lower(substring(text, i, 1))] * 16)
	+ hexdigit[lower(substring(text, i + 1, 1))]

"""


def _trustee_debug_rule(debug: bool) -> str:
    if debug:
        return "debug_ok := true\n"
    return ("default debug_ok := false\n\n"
            "debug_ok if {\n"
            "\tbits.and(byte_at(input.sgx.body[\"attributes.flags\"], 0), 2) == 0\n}\n")


def _marblerun(spec: PolicyInput) -> str:
    r = spec.record
    entry: dict[str, object] = {}
    if spec.enclave:
        entry["UniqueID"] = r.mr_enclave
    if spec.signer:
        entry |= {"SignerID": r.mr_signer, "ProductID": r.isv_prod_id,
                  "SecurityVersion": spec.min_isv_svn}
    entry["Debug"] = spec.debug
    return _json({"Packages": {_package_name(r): entry}})


def _package_name(record: MeasurementRecord) -> str:
    name = str(record.extra.get("enclave") or "enclave")
    return name if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) else "enclave"


def _intel_appraisal(spec: PolicyInput) -> str:
    r = spec.record
    attributes = bytearray(bytes.fromhex(r.attributes))
    mask = bytearray(bytes.fromhex(r.attribute_mask))
    # A running enclave reports INIT (Intel's own generator adds it), and the DEBUG bit
    # is always compared: off, unless this policy is for a debug enclave.
    attributes[0] |= _FLAG_INIT
    mask[0] |= _FLAG_DEBUG
    attributes[0] = (attributes[0] | _FLAG_DEBUG) if spec.debug else (attributes[0] & ~_FLAG_DEBUG)
    reference: dict[str, object] = {"sgx_miscselect": r.misc_select,
                                    "sgx_miscselect_mask": r.misc_mask,
                                    "sgx_attributes": attributes.hex(),
                                    "sgx_attributes_mask": mask.hex()}
    if spec.enclave:
        reference["sgx_mrenclave"] = r.mr_enclave
    if spec.signer:
        reference |= {"sgx_mrsigner": r.mr_signer, "sgx_isvprodid": r.isv_prod_id,
                      "sgx_isvsvn_min": spec.min_isv_svn}
    return _json({"policy_array": [{
        "environment": {"class_id": INTEL_SGX_ENCLAVE_CLASS_ID,
                        "description": "Application SGX Enclave Policy"},
        "reference": reference}]})


def _ehsm(spec: PolicyInput) -> str:
    return _json({"mr_enclave": spec.record.mr_enclave, "mr_signer": spec.record.mr_signer})


def _bigdl(spec: PolicyInput) -> str:
    r = spec.record
    if spec.by == "signer":
        return _json({"policyType": "SGXMRSignerPolicy", "mrSigner": r.mr_signer,
                      "isvProdID": str(r.isv_prod_id), "isvSVN": str(spec.min_isv_svn)})
    return _json({"policyType": "SGXMREnclavePolicy", "mrEnclave": r.mr_enclave,
                  "mrSigner": r.mr_signer})


_WRITERS: dict[str, Callable[[PolicyInput], str]] = {
    "ra-tls": _ra_tls, "ita": _ita, "maa": _maa, "trustee": _trustee,
    "marblerun": _marblerun, "intel-appraisal": _intel_appraisal, "ehsm": _ehsm,
    "bigdl-as": _bigdl,
}
