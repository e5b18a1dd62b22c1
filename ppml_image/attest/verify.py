"""An SGX quote checked against a measurement record, at a stated time.

Two stages, both always reported:

1. The DCAP chain, by dcap-qvl (never re-implemented here): the quote's
   signature, the QE report, the PCK chain up to Intel's SGX Root CA (the one
   dcap-qvl embeds, unless a test hands in another with ``root_ca_der``), the
   CRLs, the TCB info and the QE identity, all valid at ``at``.
2. The report body against what is expected, each mismatch named: MRENCLAVE,
   MRSIGNER and product ID, SVN at least the minimum, MISCSELECT and the
   attributes under the record's masks (INIT aside: a running enclave has
   it), the attribute checks Gramine's own quote verification makes (INIT
   and MODE64BIT set, no PROVISION_KEY or EINITTOKEN_KEY), DEBUG off unless
   allowed, SGX (not TDX), the TCB status in the allow-list, the report data.

A quote or collateral that cannot be read at all is a usage error (exit 2);
anything else is a :class:`Verdict`, accepted or refused with every reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from ppml_image import _json
from ppml_image.attest.quote import SgxReportBody, parse_quote_layout
from ppml_image.errors import UsageError
from ppml_image.sgx.signing.record import MeasurementRecord

COLLATERAL_LIMIT = 1 << 20
ROOT_CA_LIMIT = 64 * 1024
# Intel's TCB statuses (TCB info v3). Revoked is never acceptable, so it cannot be allowed.
TCB_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                "ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded")
DEFAULT_TCB = frozenset({"UpToDate"})

FLAG_INIT = 0x1
FLAG_DEBUG = 0x2
FLAG_MODE64BIT = 0x4
FLAG_PROVISION_KEY = 0x10
FLAG_EINITTOKEN_KEY = 0x20


@dataclass(frozen=True)
class Expectation:
    """What the report body must hold. ``None`` leaves a field open."""

    mr_enclave: str | None = None
    mr_signer: str | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    attributes: bytes | None = None
    attribute_mask: bytes | None = None
    misc_select: bytes | None = None
    misc_mask: bytes | None = None
    debug: bool | None = None  # the record's DEBUG, when a record is known

    def __post_init__(self) -> None:
        if self.mr_enclave is None and (self.mr_signer is None or self.isv_prod_id is None):
            raise UsageError("name the enclave: a record, an MRENCLAVE, or an MRSIGNER with "
                             "its product ID")

    @classmethod
    def from_record(cls, record: MeasurementRecord,
                    min_isv_svn: int | None = None) -> Expectation:
        """Everything the record fixes; the SVN minimum is the record's unless raised."""
        return cls(mr_enclave=record.mr_enclave, mr_signer=record.mr_signer,
                   isv_prod_id=record.isv_prod_id,
                   min_isv_svn=record.isv_svn if min_isv_svn is None else min_isv_svn,
                   attributes=bytes.fromhex(record.attributes),
                   attribute_mask=bytes.fromhex(record.attribute_mask),
                   misc_select=bytes.fromhex(record.misc_select),
                   misc_mask=bytes.fromhex(record.misc_mask), debug=record.debug)


@dataclass
class Verdict:
    """The outcome: accepted only with no problem at all."""

    at: dt.datetime
    root_ca: str
    tee: str = ""
    tcb_status: str | None = None
    advisories: list[str] = field(default_factory=list)
    body: SgxReportBody | None = None
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """The verdict in one line."""
        when = f"at {_iso(self.at)}; root {self.root_ca}"
        advisories = f"; advisories {', '.join(self.advisories)}" if self.advisories else ""
        if not self.accepted:
            return (f"refused: {len(self.problems)} problem(s): {'; '.join(self.problems)}"
                    f"{advisories}; {when}")
        assert self.body is not None
        return (f"accepted: mr_enclave {self.body.mr_enclave} mr_signer {self.body.mr_signer} "
                f"isv_prod_id {self.body.isv_prod_id} isv_svn {self.body.isv_svn}; "
                f"TCB {self.tcb_status}{advisories}; {when}")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.accepted, "verdict": "accepted" if self.accepted else "refused",
                "problems": self.problems, "checks": self.checks, "tee": self.tee,
                "tcb_status": self.tcb_status, "advisories": self.advisories,
                "evaluated_at": _iso(self.at), "root_ca": self.root_ca,
                "report": self.body.to_json() if self.body else None}


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    """``--at``: ISO 8601 with a zone (``2025-06-20T00:00:00Z``), or a date (midnight UTC)."""
    value = text.strip()
    try:
        if len(value) == 10:
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc)
        moment = dt.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z"))
                                           else value)
    except ValueError:
        raise UsageError(f"--at {text[:60]!r}: not an ISO 8601 time "
                         "(e.g. 2025-06-20T00:00:00Z)") from None
    if moment.tzinfo is None:
        raise UsageError(f"--at {text[:60]!r}: give a time zone (Z for UTC)")
    return moment


def parse_tcb_allow(text: str | None) -> frozenset[str]:
    """``--allow-tcb A,B``: Intel TCB statuses; UpToDate is always allowed."""
    if not text:
        return DEFAULT_TCB
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(TCB_STATUSES))
    if unknown:
        raise UsageError(f"--allow-tcb {', '.join(unknown)[:80]}: not a TCB status that can be "
                         f"allowed (one of {', '.join(TCB_STATUSES)})")
    return DEFAULT_TCB | wanted


def report_data_of(hex_text: str | None = None, nonce: str | None = None) -> bytes | None:
    """The 64 bytes of report data expected: ``--report-data HEX`` or ``--nonce TEXT``.

    Both are zero-padded to 64 bytes, as an enclave fills REPORTDATA.
    """
    if hex_text is not None and nonce is not None:
        raise UsageError("give --report-data or --nonce, not both")
    if hex_text is not None:
        try:
            data = bytes.fromhex(hex_text.removeprefix("0x"))
        except ValueError:
            raise UsageError(f"--report-data {hex_text[:40]!r}: not hex") from None
        what = "--report-data"
    elif nonce is not None:
        data, what = nonce.encode(), "--nonce"
    else:
        return None
    if len(data) > 64:
        raise UsageError(f"{what}: {len(data)} bytes, more than the report's 64")
    return data.ljust(64, b"\0")


def _dcap_qvl() -> Any:
    """dcap-qvl's compiled module (``py_verify``, ``parse_quote``...).

    The package's ``__init__`` only re-exports this module, after importing
    importlib.metadata for a version string (email, zipfile, csv, socket...):
    more import time than the rest of ``attest verify`` together. So the
    extension is loaded by itself; the package is the fallback if its layout
    ever changes. Importing ``dcap_qvl`` later reuses the same module.
    """
    name = "dcap_qvl._dcap_qvl"
    if name in sys.modules:
        return sys.modules[name]
    import importlib.machinery
    import importlib.util
    import os

    spec = importlib.util.find_spec("dcap_qvl")  # locates the package; runs nothing
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_dcap_qvl" + suffix)
            extension = importlib.util.spec_from_file_location(name, path)
            if os.path.isfile(path) and extension is not None and extension.loader:
                module = importlib.util.module_from_spec(extension)
                extension.loader.exec_module(module)
                sys.modules[name] = module
                return module
    import dcap_qvl._dcap_qvl as package_module  # a changed package layout

    return package_module


@contextlib.contextmanager
def _no_panic(name: str) -> Iterator[None]:
    """A panic in the Rust library (pyo3's PanicException is a BaseException) on some
    input becomes one line about that input, never a traceback."""
    try:
        yield
    except Exception:
        raise
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise UsageError(f"{name}: dcap-qvl cannot read it: {_first_line(exc)}") from None


def _collateral(text: bytes, name: str) -> Any:
    dcap_qvl = _dcap_qvl()

    try:
        parsed = _json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{name}: collateral is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"{name}: collateral is not a JSON object")
    try:
        return dcap_qvl.PyQuoteCollateralV3.from_json(text.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{name}: not DCAP collateral: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n\n")[0].split()).removeprefix("Verification failed: ")


def _expired_detail(collateral_text: bytes, at: dt.datetime) -> str:
    """Which collateral piece is outside its validity at *at*, for the one-line message."""
    parsed = _json.loads(collateral_text)
    for key in ("tcb_info", "qe_identity"):
        try:
            info = _json.loads(parsed[key])
            issued = parse_time(info["issueDate"])
            next_update = parse_time(info["nextUpdate"])
        except (KeyError, ValueError, TypeError, UsageError):
            continue
        if at > next_update:
            return f"collateral expired: {key} valid until {_iso(next_update)}"
        if at < issued:
            return f"collateral not yet valid: {key} issued {_iso(issued)}"
    return ""


def verify_quote(quote: bytes, collateral: bytes, expected: Expectation, *, at: dt.datetime,
                 allow_tcb: Collection[str] = DEFAULT_TCB, allow_debug: bool = False,
                 report_data: bytes | None = None, root_ca_der: bytes | None = None,
                 names: tuple[str, str] = ("quote", "collateral")) -> Verdict:
    """Check *quote* with *collateral* at *at*, then against *expected*."""
    dcap_qvl = _dcap_qvl()

    layout = parse_quote_layout(quote, names[0])
    try:
        with _no_panic(names[0]):
            dcap_qvl.parse_quote(quote)
    except ValueError as exc:
        raise UsageError(f"{names[0]}: malformed quote: {_first_line(exc)}") from None
    with _no_panic(names[1]):
        coll = _collateral(collateral, names[1])
    root = "Intel SGX Root CA (pinned, built into dcap-qvl)"
    if root_ca_der is not None:
        import hashlib

        root = f"--root-ca sha256:{hashlib.sha256(root_ca_der).hexdigest()} (tests only)"
    verdict = Verdict(at=at, root_ca=root, tee=layout.tee)
    now = int(at.timestamp())
    try:
        with _no_panic(names[0]):
            report = (dcap_qvl.py_verify(quote, coll, now) if root_ca_der is None
                      else dcap_qvl.py_verify_with_root_ca(quote, coll, root_ca_der, now))
    except ValueError as exc:
        reason = _first_line(exc)
        if "decode quote" in reason.lower():
            raise UsageError(f"{names[0]}: malformed quote: {reason}") from None
        detail = _expired_detail(collateral, at)
        verdict.problems.append(f"{detail} (dcap-qvl: {reason})" if detail
                                else f"DCAP verification failed: {reason}")
    else:
        verdict.checks.append("DCAP chain: quote signature, QE report, PCK chain to the root, "
                              "CRLs, TCB info and QE identity")
        verdict.tcb_status = report.status
        verdict.advisories = list(report.advisory_ids)
        # Only Intel's known statuses can be allowed: Revoked or a new one never is.
        if report.status in allow_tcb and report.status in TCB_STATUSES:
            verdict.checks.append(f"TCB status {report.status} allowed")
        else:
            verdict.problems.append(f"TCB status {report.status} is not allowed (allowed: "
                                    f"{', '.join(sorted(allow_tcb))}; see --allow-tcb)")
    if layout.sgx_body is None:
        verdict.problems.append(f"TEE type is {layout.tee.upper()}, not SGX")
        return verdict
    if verdict.tcb_status is not None and not _same_body(report.to_json(), layout.sgx_body):
        # The body we check must be the one dcap-qvl verified, byte for byte.
        verdict.problems.append("the report body dcap-qvl verified is not the one read here")
        return verdict
    verdict.body = layout.sgx_body
    check_body(verdict, layout.sgx_body, expected, allow_debug=allow_debug,
               report_data=report_data)
    return verdict


def _same_body(report_json: str, body: SgxReportBody) -> bool:
    try:
        verified = json.loads(report_json)["report"]["SgxEnclave"]
        return bool(verified["mr_enclave"] == body.mr_enclave
                    and verified["mr_signer"] == body.mr_signer
                    and verified["attributes"] == body.field("attributes").hex()
                    and verified["report_data"] == body.field("report_data").hex()
                    and verified["cpu_svn"] == body.field("cpu_svn").hex()
                    and verified["isv_prod_id"] == body.isv_prod_id
                    and verified["isv_svn"] == body.isv_svn
                    and verified["misc_select"] == int.from_bytes(body.field("misc_select"),
                                                                  "little"))
    except (KeyError, TypeError, ValueError):
        return False


def check_body(verdict: Verdict, body: SgxReportBody, expected: Expectation, *,
               allow_debug: bool, report_data: bytes | None) -> None:
    """Each field of *body* against *expected*: every mismatch named in *verdict*."""
    problems, checks = verdict.problems, verdict.checks
    for name, want in (("MRENCLAVE", expected.mr_enclave), ("MRSIGNER", expected.mr_signer)):
        if want is not None:
            have = body.mr_enclave if name == "MRENCLAVE" else body.mr_signer
            if have != want.lower():
                problems.append(f"{name} is {have}, expected {want.lower()}")
            else:
                checks.append(f"{name} matches")
    if expected.isv_prod_id is not None and body.isv_prod_id != expected.isv_prod_id:
        problems.append(f"ISVPRODID is {body.isv_prod_id}, expected {expected.isv_prod_id}")
    if expected.min_isv_svn is not None and body.isv_svn < expected.min_isv_svn:
        problems.append(f"ISVSVN is {body.isv_svn}, below the minimum {expected.min_isv_svn}")
    _check_masked(problems, "MISCSELECT", body.field("misc_select"), expected.misc_select,
                  expected.misc_mask, b"")
    # A running enclave's report has INIT set, which its SIGSTRUCT never has: INIT is
    # left out of the comparison (Intel's appraisal policy generator adds it instead).
    ignored = FLAG_INIT.to_bytes(8, "little") + bytes(8)
    _check_masked(problems, "ATTRIBUTES", body.field("attributes"), expected.attributes,
                  expected.attribute_mask, ignored)
    _check_flags(problems, body.attribute_flags, expected, allow_debug)
    if report_data is not None:
        data = body.field("report_data")
        if data != report_data:
            problems.append(f"REPORTDATA is {data.hex()}, expected {report_data.hex()}")
        else:
            checks.append("REPORTDATA matches")


def _check_masked(problems: list[str], name: str, have: bytes, want: bytes | None,
                  mask: bytes | None, ignored: bytes) -> None:
    if want is None or mask is None:
        return
    ignored = ignored or bytes(len(mask))
    mask = bytes(m & ~i & 0xFF for m, i in zip(mask, ignored, strict=True))
    if any((h ^ w) & m for h, w, m in zip(have, want, mask, strict=True)):
        problems.append(f"{name} {have.hex()} differ from the record's {want.hex()} under "
                        f"its mask {mask.hex()}")


def _check_flags(problems: list[str], flags: int, expected: Expectation,
                 allow_debug: bool) -> None:
    # The checks Gramine's own quote verification makes on every quote.
    if not flags & FLAG_INIT:
        problems.append("ATTRIBUTES: INIT is not set (not an initialized enclave)")
    if not flags & FLAG_MODE64BIT:
        problems.append("ATTRIBUTES: MODE64BIT is not set")
    if flags & (FLAG_PROVISION_KEY | FLAG_EINITTOKEN_KEY):
        problems.append("ATTRIBUTES: PROVISION_KEY or EINITTOKEN_KEY is set")
    if flags & FLAG_DEBUG:
        if not allow_debug:
            problems.append("DEBUG is set: a debug enclave's memory is readable by the host "
                            "(--allow-debug accepts it)")
        elif expected.debug is False:
            problems.append("DEBUG is set but the record is a production enclave")
