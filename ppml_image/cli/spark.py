"""CLI commands: secrets tls/password, k8s secrets/spark-templates, run."""

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
)
from ppml_image.errors import UsageError
from ppml_image.k8s import SECRET_FILES, TEMPLATE_FILES

if TYPE_CHECKING:
    from ppml_image.attest import services
    from ppml_image.images.enclave import run as run_mod
    from ppml_image.k8s import secret_manifests as k8s_secrets
    from ppml_image.k8s import templates
    from ppml_image.spark import common, password, tls
else:  # cryptography, yaml and docker load when a command runs
    run_mod = lazy_module("ppml_image.images.enclave.run")
    services = lazy_module("ppml_image.attest.services")
    k8s_secrets = lazy_module("ppml_image.k8s.secret_manifests")
    templates = lazy_module("ppml_image.k8s.templates")
    common, password, tls = (lazy_module(f"ppml_image.spark.{name}")
                             for name in ("common", "password", "tls"))

secrets_app = typer.Typer(help="Spark security material: TLS keys, keystores, password.",
                          no_args_is_help=True)
k8s_app = typer.Typer(help="Kubernetes Secrets and Spark pod templates.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
app.add_typer(k8s_app, name="k8s")

_FORCE_HELP = ("Replace this command's own earlier files (only after success; a folder "
               "holding other files is refused).")


def _days(text: str) -> int:
    # Parsed here rather than by click, whose error is a multi-line usage box.
    if not re.fullmatch(r"[0-9]+", text):
        raise UsageError(f"--days {text!r}: not a positive whole number of days")
    if len(text) > 12:  # far past 9999-12-31; int() of huge strings is slow or refused
        raise UsageError(f"--days {text}: the certificate would end after 9999-12-31, the "
                         "last date X.509 can hold")
    return int(text)


@secrets_app.command("tls", epilog=(
    "Example: ppml-image secrets tls --out keys/ --cn spark.example.org --san 10.0.0.5 "
    "--password-file pw.txt"))
@handles_errors
def tls_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder (created 0700)."),
    cn: str = typer.Option("localhost", "--cn", help="Certificate common name (also a SAN)."),
    san: list[str] = typer.Option([], "--san", help="Extra subject alternative name "
                                  "(host name or IP); repeatable."),
    days: str = typer.Option("365", "--days", help="Validity in days (the certificate "
                             "must end by 9999-12-31)."),
    password_file: Path | None = typer.Option(None, "--password-file",
                                              help="File with the password (else a prompt)."),
    unencrypted_key: bool = typer.Option(False, "--unencrypted-key",
                                         help="Also leave server.key unencrypted (avoid)."),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """TLS key, self-signed certificate, PKCS#12 and JKS keystores for Spark (all 0600).

    The password must be printable ASCII (Java keystores accept nothing else),
    8 to 373 bytes. Names are host names or IP addresses in ASCII (an
    internationalised name as its xn-- A-label); the CN has at most 64 characters.
    """
    valid_days = _days(days)
    tls.check_days(valid_days)  # all checks before the prompt and the output
    tls.certificate_names(cn, san)
    common.check_output(out, tls.TLS_FILES, force=force)
    secret = common.read_password(password_file, keystore=True)
    result = tls.generate_tls(out, secret, cn=cn, sans=san, days=valid_days,
                              unencrypted_key=unencrypted_key, force=force)
    if as_json:
        emit_json({"folder": str(out), "files": result.files, "sans": result.sans,
                   "not_after": result.not_after, "jks": result.jks})
        return
    typer.echo(f"wrote {', '.join(result.files)} to {out} (folder 0700, files 0600)")
    if not result.jks:
        typer.secho("warning: no keytool on this machine: keystore.jks not written "
                    "(keystore.p12 is what Spark reads)", err=True, fg="yellow")


@secrets_app.command("password", epilog=(
    "Example: ppml-image secrets password --out password/ --password-file pw.txt"))
@handles_errors
def password_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder (created 0700)."),
    password_file: Path | None = typer.Option(None, "--password-file",
                                              help="File with the password (else a prompt)."),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
) -> None:
    """The password encrypted to a fresh RSA key (key.txt, output.bin; 0600).

    The password must be UTF-8 text without control characters, 8 to 373 bytes
    (what RSA-3072 PKCS#1 v1.5 encryption carries).
    """
    common.check_output(out, password.PASSWORD_FILES, force=force)
    files = password.generate_password_files(out, common.read_password(password_file),
                                              force=force)
    typer.echo(f"wrote {files.key} and {files.encrypted}; decrypt with: openssl pkeyutl "
               f"-decrypt -inkey {files.key} -in {files.encrypted}")


@k8s_app.command("secrets", epilog=(
    "Example: ppml-image k8s secrets --keys keys/ --password password/ -o k8s/ && "
    "kubectl apply -f k8s/"))
@handles_errors
def k8s_secrets_cmd(
    keys: Path = typer.Option(..., "--keys", help="Folder from `secrets tls`."),
    password_dir: Path = typer.Option(..., "--password", help="Folder from `secrets password`."),
    namespace: str = typer.Option("default", "--namespace", help="Kubernetes namespace."),
    output: Path = typer.Option(Path("k8s"), "-o", "--output", help="Output folder (may "
                                "also hold the files of `k8s spark-templates`)."),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    kms_app_id: str | None = typer.Option(None, "--kms-app-id", help="Also write "
                                          "kms-secret.yaml (app_id, api_key, policy_id)."),
    kms_api_key_file: Path | None = typer.Option(None, "--kms-api-key-file", help="File "
                                                 "whose first line is the API key (else a "
                                                 "prompt)."),
    kms_policy_id: str | None = typer.Option(None, "--kms-policy-id",
                                             help="The policy id `attest register` printed."),
    kms_record: Path | None = typer.Option(None, "--kms-record", help="Take the policy id "
                                           "from this record (`attest register --output`)."),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Also write "
                                           "kubeconfig-secret.yaml holding this file."),
) -> None:
    """Kubernetes Secret manifests: keys.yaml, password.yaml, spark-secret.yaml (0600),
    and kms-secret.yaml and kubeconfig-secret.yaml on request.

    Only regular files are read from --keys and --password (a symbolic link is
    refused, and so is a --kubeconfig that is one); each Secret must fit
    Kubernetes' 1 MiB.
    """
    common.check_output(output, SECRET_FILES, force=force, keep=TEMPLATE_FILES)
    kms = _kms_credentials(kms_app_id, kms_api_key_file, kms_policy_id, kms_record)
    paths = k8s_secrets.write_secrets(keys, password_dir, output, namespace=namespace,
                                      force=force, kms=kms, kubeconfig=kubeconfig)
    typer.echo("wrote " + ", ".join(str(p) for p in paths) + " (they hold secrets: mode 0600)")


def _kms_credentials(app_id: str | None, api_key_file: Path | None, policy_id: str | None,
                     record: Path | None) -> k8s_secrets.KmsCredentials | None:
    """The --kms-* options, checked together; the API key read last (it may prompt)."""
    given = [name for name, value in (("--kms-api-key-file", api_key_file),
                                      ("--kms-policy-id", policy_id), ("--kms-record", record))
             if value is not None]
    if app_id is None:
        if given:
            raise UsageError(f"{given[0]} needs --kms-app-id")
        return None
    if (policy_id is None) == (record is None):
        raise UsageError("--kms-app-id needs the policy id: give --kms-policy-id or "
                         "--kms-record, one of them")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", app_id):
        raise UsageError(f"--kms-app-id {app_id!r:.80}: not an app id (1 to 128 letters, "
                         "digits, '.', '_' or '-')")
    where = "--kms-policy-id"
    if record is not None:
        policy_id, where = services.load_record(record).data.get("policy_id"), str(record)
    if not isinstance(policy_id, str) or not re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", policy_id):
        raise UsageError(f"{where}: policy id {policy_id!r:.80} is not a UUID (register the "
                         "record with `ppml-image attest register --output` first)")
    return k8s_secrets.KmsCredentials(app_id, services.read_api_key(api_key_file), policy_id)


@k8s_app.command("spark-templates", epilog=(
    "Example: ppml-image k8s spark-templates --image registry/ppml/job:1 --sgx-epc 32Gi -o k8s/"))
@handles_errors
def spark_templates_cmd(
    image: str = typer.Option(..., "--image", help="The signed image Spark pods run."),
    sgx_epc: str = typer.Option("32Gi", "--sgx-epc", help="EPC per executor (and driver)."),
    driver_epc: str | None = typer.Option(None, "--driver-epc", help="EPC for the driver."),
    jvm_mem: str = typer.Option("12g", "--jvm-mem", help="JVM heap inside the enclave."),
    password_dir: Path | None = typer.Option(None, "--password", help="Include the passwords "
                                             "in spark-security.conf (then 0600)."),
    output: Path = typer.Option(Path("k8s"), "-o", "--output", help="Output folder (may "
                                "also hold the files of `k8s secrets`)."),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    attestation: bool = typer.Option(False, "--attestation", help="Pods read kms-secret "
                                     "(`k8s secrets --kms-...`) into ATTESTATION_ID/KEY/"
                                     "POLICYID."),
    mount_kubeconfig: bool = typer.Option(False, "--mount-kubeconfig", help="Pods mount "
                                          "kubeconfig-secret (`k8s secrets --kubeconfig`) "
                                          "as /root/.kube/config."),
) -> None:
    """Driver/executor pod templates requesting SGX resources, and spark-security.conf."""
    paths = templates.write_spark_templates(image, output, epc=sgx_epc, jvm_mem=jvm_mem,
                                            driver_epc=driver_epc, password=password_dir,
                                            force=force, attestation=attestation,
                                            kubeconfig=mount_kubeconfig)
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@app.command("run", context_settings={"allow_extra_args": True,
                                      "ignore_unknown_options": True},
             epilog=("Examples:\n\n  ppml-image run ppml/job:1 --keys keys/ --password password/"
                     "\n\n  ppml-image run ppml/job:1 --no-sgx -- python3 -c 'print(1)'"))
@handles_errors
def run_cmd(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="The image to run."),
    sgx: bool = typer.Option(True, "--sgx/--no-sgx", help="Run in an SGX enclave (default) "
                             "or natively."),
    data: Path | None = typer.Option(None, "--data", help="Data folder (-> /ppml/data, ro)."),
    keys: Path | None = typer.Option(None, "--keys", help="Keys folder (-> /ppml/keys, ro)."),
    password_dir: Path | None = typer.Option(None, "--password",
                                             help="Password folder (-> /ppml/password, ro)."),
    print_only: bool = typer.Option(False, "--print", help="Print the equivalent docker run "
                                    "command line instead of running."),
    base: str | None = typer.Option(None, "--base", help="With --keys/--password: the pinned "
                                    "base to verify against first (as verify --base)."),
    record: Path | None = typer.Option(None, "--record", metavar="R.json",
                                       help="With --keys/--password: the measurement record "
                                       "to verify against first (as verify --record)."),
    mr_enclave: str | None = typer.Option(None, "--mr-enclave", help="Expected MRENCLAVE."),
    mr_signer: str | None = typer.Option(None, "--mr-signer", help="Expected MRSIGNER."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Accept a debug enclave."),
    max_bytes: str | None = typer.Option(None, "--max-image-bytes", metavar="SIZE",
                                         help=MAX_IMAGE_BYTES_HELP),
) -> None:
    """Run an image with SGX devices and AESM mapped in, or natively with --no-sgx.

    With --keys or --password the image is verified first (exit 3 if verify refuses it).
    """
    expected = run_mod.Expected(base, record, mr_enclave, mr_signer, allow_debug,
                                max_image_bytes(max_bytes))
    plan = run_mod.plan_run(image, sgx=sgx, data=data, keys=keys, password=password_dir,
                            command=list(ctx.args) or None, check_host=not print_only,
                            expected=expected)
    if print_only:
        typer.echo(run_mod.printed(plan))
        return
    raise typer.Exit(run_mod.execute(plan))
