"""``ppml-image attest``: records, quotes, policies and registration.

Subcommands register themselves on :data:`attest_app`; library modules load
when a command runs, so ``--help`` stays quick (``attest verify`` runs in well
under 0.3 s as a whole process: dcap-qvl is its only heavy import).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ppml_image.cli.common import (
    MAX_IMAGE_BYTES_HELP,
    app,
    emit_json,
    handles_errors,
    lazy_module,
    max_image_bytes,
    registry_timeout_option,
)
from ppml_image.errors import UsageError

if TYPE_CHECKING:
    from ppml_image.attest import policies, verify
    from ppml_image.sgx.signing import record
else:
    policies = lazy_module("ppml_image.attest.policies")
    record = lazy_module("ppml_image.sgx.signing.record")
    verify = lazy_module("ppml_image.attest.verify")

# The phase `make bench` reports for `attest verify` (PPML_IMAGE_PHASES): dcap-qvl's
# import, the DCAP chain and the record checks.
VERIFYING = "verifying the quote"

attest_app = typer.Typer(
    help="Register enclave measurements and check SGX quotes against them.",
    no_args_is_help=True)
app.add_typer(attest_app, name="attest")


def _measurement(value: str | None, option: str) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise UsageError(f"{option} {value[:80]!r}: expected 64 hex digits")
    return None if value is None else value.lower()


def _read(path: Path, limit: int, what: str) -> bytes:
    from ppml_image._fs import read_capped

    return read_capped(path, limit, what, UsageError)


def _check_outputs(output: Path | None, *inputs: Path | None) -> None:
    if output is not None:
        from ppml_image._fs import check_output_files

        check_output_files([output], [p for p in inputs if p is not None])


@attest_app.command("record", epilog=(
    "Example: ppml-image attest record 127.0.0.1:5000/ppml/job@sha256:4f1c...9e0b "
    "--base ppml-image/base:1.0 --output record.json\n\n"
    "Exit 0: written; 3: the image failed verification (nothing written)."))
@handles_errors
def record_cmd(
    image: str = typer.Argument(..., help="A signed image: a local tag or id, or "
                                "REGISTRY/NAME@sha256:... (pulled when not local)."),
    output: Path | None = typer.Option(None, "--output", help="Write the record here "
                                       "(JSON; written only when verification passes)."),
    base: str | None = typer.Option(None, "--base", help="The base image to compare with, "
                                    "as for `ppml-image verify`."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Accept a debug enclave."),
    allow_insecure: bool = typer.Option(False, "--allow-insecure",
                                        help="Do not apply the release policy."),
    pull: bool = typer.Option(False, "--pull", help="Pull the image first."),
    registry_timeout: int = registry_timeout_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
    max_bytes: str | None = typer.Option(None, "--max-image-bytes", metavar="SIZE",
                                         help=MAX_IMAGE_BYTES_HELP),
) -> None:
    """Verify a signed image, then write its measurement record (what policies are made of)."""
    _check_outputs(output)
    verifier = lazy_module("ppml_image.images.enclave.verify")
    result = verifier.verify_image(image, allow_debug=allow_debug,
                                   allow_insecure=allow_insecure, base=base, pull=pull,
                                   quiet=True, max_image_bytes=max_image_bytes(max_bytes),
                                   registry_timeout=registry_timeout)
    if not result.ok:
        raise result.error()
    from ppml_image import __version__

    # The keys build-custom's record has (where verify knows them), so both compare.
    made = record.MeasurementRecord.from_sigstruct_view(
        result.sigstruct, image=image, image_id=result.image_id,
        repo_digest=result.digest or None, base_image_id=result.base_image_id or None,
        enclave=result.enclave, debug_enclave=result.sigstruct["debug_enclave"],
        date=result.sigstruct["date"], tool="ppml-image", tool_version=__version__,
        sigstruct=dict(result.sigstruct), verified=True)
    if output is not None:
        made.dump(output)
    if as_json:
        emit_json(made.to_json())
        return
    typer.echo(f"verified {image}: mr_enclave {made.mr_enclave}")
    typer.echo(f"mr_signer {made.mr_signer} isv_prod_id {made.isv_prod_id} "
               f"isv_svn {made.isv_svn} debug {str(made.debug).lower()}")
    if output is not None:
        typer.echo(f"wrote {output}")


@attest_app.command("verify", epilog=(
    "Examples:\n\n"
    "  ppml-image attest verify quote.bin --collateral collateral.json --record record.json "
    "--nonce \"$NONCE\"\n\n"
    "  ppml-image attest verify quote.bin --collateral c.json --mr-signer 815f...e0e6 "
    "--isv-prod-id 1 --min-isv-svn 2 --at 2025-06-20T00:00:00Z --json\n\n"
    "Exit 0: accepted; 3: refused (every reason named); 2: a quote, collateral or record "
    "that cannot be read."))
@handles_errors
def verify_cmd(
    quote: Path = typer.Argument(..., help="The raw DCAP quote (binary)."),
    collateral: Path = typer.Option(..., "--collateral", help="Its collateral (JSON: TCB "
                                    "info, QE identity, CRLs and their chains)."),
    record_file: Path | None = typer.Option(None, "--record", help="The measurement record "
                                            "to check the report against."),
    mr_enclave: str | None = typer.Option(None, "--mr-enclave", help="Expected MRENCLAVE."),
    mr_signer: str | None = typer.Option(None, "--mr-signer", help="Expected MRSIGNER (with "
                                         "--isv-prod-id and --min-isv-svn)."),
    isv_prod_id: int | None = typer.Option(None, "--isv-prod-id", min=0, max=0xFFFF,
                                           help="Expected product ID."),
    min_isv_svn: int | None = typer.Option(None, "--min-isv-svn", min=0, max=0xFFFF,
                                           help="Lowest accepted SVN (default: the "
                                           "record's)."),
    report_data: str | None = typer.Option(None, "--report-data", help="Expected report "
                                           "data, hex (up to 64 bytes, zero-padded)."),
    nonce: str | None = typer.Option(None, "--nonce", help="Expected report data as text "
                                     "(UTF-8, up to 64 bytes, zero-padded)."),
    at: str | None = typer.Option(None, "--at", help="Evaluation time, ISO 8601 "
                                  "(2025-06-20T00:00:00Z); default now."),
    allow_tcb: str | None = typer.Option(None, "--allow-tcb", help="TCB statuses accepted "
                                         "besides UpToDate, comma-separated."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Accept a DEBUG enclave "
                                     "(only if the record is one)."),
    root_ca: Path | None = typer.Option(None, "--root-ca", help="TESTS ONLY: a root CA "
                                        "(DER) instead of Intel's; named in the verdict."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON, "
                                 "accepted or refused."),
    service: str | None = typer.Option(None, "--service", help="Also ask this service "
                                       "(ehsm: VerifyQuote); reported next to our own "
                                       "verdict, never instead of it."),
    url: str | None = typer.Option(None, "--url", help="The service's address (https)."),
    app_id: str | None = typer.Option(None, "--app-id", help="The service's app id."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file", help="File whose "
                                             "first line is the API key (else a prompt)."),
    policy_id: str | None = typer.Option(None, "--policy-id", help="The policy the "
                                         "service registered (attest register)."),
    ca_bundle: Path | None = typer.Option(None, "--ca-bundle", help="Trust only these CA "
                                          "certificates for the service."),
    insecure_http: bool = typer.Option(False, "--insecure-http", help="Allow http:// to a "
                                       "loopback address (tests)."),
) -> None:
    """Check an SGX quote: the DCAP chain to Intel's root, then the report against the record."""
    expected = _expectation(record_file, mr_enclave, mr_signer, isv_prod_id, min_isv_svn)
    asked = _service_request(service, url, app_id, policy_id)
    import datetime as dt

    moment = verify.parse_time(at) if at is not None else dt.datetime.now(dt.timezone.utc)
    allowed = verify.parse_tcb_allow(allow_tcb)
    wanted_data = verify.report_data_of(report_data, nonce)
    from ppml_image._phases import READING, phase
    from ppml_image.attest.quote import QUOTE_LIMIT

    with phase(READING):
        quote_bytes = _read(quote, QUOTE_LIMIT, "SGX quote")
        collateral_bytes = _read(collateral, verify.COLLATERAL_LIMIT, "collateral (JSON)")
        root_der = None if root_ca is None else _read(root_ca, verify.ROOT_CA_LIMIT,
                                                      "root CA certificate (DER)")
    with phase(VERIFYING):
        verdict = verify.verify_quote(
            quote_bytes, collateral_bytes, expected, at=moment, allow_tcb=allowed,
            allow_debug=allow_debug, report_data=wanted_data, root_ca_der=root_der,
            names=(str(quote), str(collateral)))
    second = None
    if asked is not None:
        from ppml_image.attest import services

        second = services.verify_quote_with_ehsm(
            quote_bytes, url=asked[0], app_id=asked[1], policy_id=asked[2],
            api_key=services.read_api_key(api_key_file), ca_bundle=ca_bundle,
            insecure_http=insecure_http)
    # Accepted only when our own verification accepts and the service, if asked, agrees.
    accepted = verdict.accepted and (second is None or second.accepted)
    line = verdict.line()
    if second is not None:
        policy = f" (policy {second.policy_id})" if second.policy_id else ""
        if verdict.accepted and not second.accepted:
            line = (f"refused: eHSM at {second.url} refuses the quote{policy}; our own "
                    f"verification {line}")
        else:
            line += (f"; eHSM at {second.url} {'accepts' if second.accepted else 'refuses'} "
                     f"it{policy}")
    if as_json:
        report = verdict.to_json()
        if second is not None:
            report["service_verdict"] = second.to_json()
            report["ok"] = accepted
            report["verdict"] = "accepted" if accepted else "refused"
        emit_json(report)
        if not accepted:
            raise typer.Exit(3)
        return
    if not accepted:
        from ppml_image.errors import VerificationError

        raise VerificationError(line)
    typer.echo(line)


def _service_request(service: str | None, url: str | None, app_id: str | None,
                     policy_id: str | None) -> tuple[str, str, str | None] | None:
    """--service and its options, checked before any work: (url, app id, policy id)."""
    if service is None:
        if url or app_id or policy_id:
            raise UsageError("--url, --app-id and --policy-id name a service to ask: add "
                             "--service ehsm")
        return None
    if service != "ehsm":
        raise UsageError(f"--service {service[:40]!r}: only ehsm answers quotes (VerifyQuote)")
    if not url or not app_id:
        raise UsageError("--service ehsm needs --url and --app-id (and --api-key-file)")
    return url, app_id, policy_id


def _expectation(record_file: Path | None, mr_enclave: str | None, mr_signer: str | None,
                 isv_prod_id: int | None, min_isv_svn: int | None) -> verify.Expectation:
    if record_file is not None:
        if mr_enclave or mr_signer or isv_prod_id is not None:
            raise UsageError("--record names the enclave: give it alone, without "
                             "--mr-enclave/--mr-signer/--isv-prod-id")
        return verify.Expectation.from_record(record.load_record(record_file), min_isv_svn)
    enclave = _measurement(mr_enclave, "--mr-enclave")
    signer = _measurement(mr_signer, "--mr-signer")
    if enclave is None and signer is None:
        raise UsageError("name the enclave: --record R.json, --mr-enclave HEX, or "
                         "--mr-signer HEX --isv-prod-id N --min-isv-svn N")
    if signer is not None and (isv_prod_id is None or min_isv_svn is None):
        raise UsageError("--mr-signer needs --isv-prod-id and --min-isv-svn: a signer signs "
                         "many enclaves")
    return verify.Expectation(mr_enclave=enclave, mr_signer=signer, isv_prod_id=isv_prod_id,
                              min_isv_svn=min_isv_svn)


@attest_app.command("policy", epilog=(
    "Examples:\n\n"
    "  ppml-image attest policy record.json --format ita --output policy.rego\n\n"
    "  ppml-image attest policy record.json --format ra-tls --by signer --min-isv-svn 2\n\n"
    "Formats: ra-tls, ita, maa, trustee, marblerun, intel-appraisal, ehsm, bigdl-as."))
@handles_errors
def policy_cmd(
    record_file: Path = typer.Argument(..., help="The measurement record (JSON)."),
    fmt: str = typer.Option(..., "--format", help="The service's format."),
    by: str | None = typer.Option(None, "--by", help="enclave (MRENCLAVE) or signer "
                                  "(MRSIGNER + product ID + SVN); default both."),
    min_isv_svn: int | None = typer.Option(None, "--min-isv-svn", min=0, max=0xFFFF,
                                           help="Lowest accepted SVN (default: the "
                                           "record's)."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Write a policy for a "
                                     "DEBUG enclave (only if the record is one)."),
    output: Path | None = typer.Option(None, "--output", help="Write the policy here "
                                       "(default: standard output)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Write the attestation policy of a record in a service's own format."""
    if fmt not in policies.FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(policies.FORMATS)}")
    if by is not None and by not in ("enclave", "signer"):
        raise UsageError(f"--by {by!r}: expected enclave or signer")
    _check_outputs(output, record_file)
    spec = policies.policy_input(record.load_record(record_file), by=by or "both",
                                 min_isv_svn=min_isv_svn, allow_debug=allow_debug)
    text = policies.render(fmt, spec)
    if output is not None:
        from ppml_image._fs import write_atomic

        write_atomic(output, text.encode())
    if as_json:
        emit_json({"ok": True, "format": fmt, "by": spec.by, "output": output and str(output),
                   "policy": text})
    elif output is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {output} ({fmt})")
