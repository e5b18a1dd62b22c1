"""``ppml-image attest register``: a record's measurement, registered with eHSM or BigDL AS."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ppml_image.cli.attest import attest_app
from ppml_image.cli.common import emit_json, handles_errors, lazy_module

if TYPE_CHECKING:
    from ppml_image.attest import services
else:  # ssl, http.client load when the command runs
    services = lazy_module("ppml_image.attest.services")


@attest_app.command("register", epilog=(
    "Example: ppml-image attest register measurements.json --service ehsm --url "
    "https://kms.example:9000 --app-id 563173cf-... --api-key-file api-key.txt "
    "--ca-bundle kms-ca.pem --output registered.json"))
@handles_errors
def register_cmd(
    record: Path = typer.Argument(..., help="Measurement record (build-custom --output)."),
    service: str = typer.Option(..., "--service", help="ehsm or bigdl-as."),
    url: str = typer.Option(..., "--url", help="The service's base URL (https://HOST:PORT)."),
    app_id: str = typer.Option(..., "--app-id", help="Your app id at the service."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file", help="File whose first "
                                             "line is the API key (else a hidden prompt)."),
    ca_bundle: Path | None = typer.Option(None, "--ca-bundle", help="PEM CA certificates to "
                                          "trust instead of the system's (a private CA)."),
    by: str = typer.Option("enclave", "--by", help="bigdl-as: pin MRENCLAVE (enclave) or "
                           "MRSIGNER and product id (signer)."),
    allow_debug: bool = typer.Option(False, "--allow-debug",
                                     help="Register a DEBUG enclave too."),
    output: Path | None = typer.Option(None, "--output", help="Write the record with "
                                       "policy_id and service added."),
    insecure_http: bool = typer.Option(False, "--insecure-http", help="Allow http:// to a "
                                       "loopback address (tests only)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Register the record's MRENCLAVE/MRSIGNER; print the policy id the service returns.

    TLS is always verified; the API key comes only from a file or a prompt.
    """
    services.check_service(service, by)
    services.check_app_id(app_id)
    services.parse_url(url, insecure_http=insecure_http)
    loaded = services.load_record(record)
    if output is not None:  # checked before the service is asked: never lose a registration
        from ppml_image._fs import check_output_files

        check_output_files([output], [p for p in (api_key_file, ca_bundle) if p is not None])
    if ca_bundle is not None:
        services.tls_context(ca_bundle)  # a bad bundle is said before the prompt
    api_key = services.read_api_key(api_key_file)
    registration = services.register(
        loaded, service=service, url=url, app_id=app_id, api_key=api_key, by=by,
        ca_bundle=ca_bundle, insecure_http=insecure_http, allow_debug=allow_debug)
    if output is not None:
        services.write_record(output, services.registered_record(loaded, registration))
    if as_json:
        emit_json({"ok": True, **registration.to_json(), "mr_enclave": loaded.mr_enclave,
                   "mr_signer": loaded.mr_signer,
                   "output": str(output) if output is not None else None})
        return
    typer.echo(f"policy_id: {registration.policy_id}")
    if output is not None:
        typer.echo(f"wrote {output} (the record with policy_id and service)")
