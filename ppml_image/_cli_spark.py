"""CLI commands: secrets tls/password, k8s secrets/spark-templates, run."""

from __future__ import annotations

from pathlib import Path

import typer

from ppml_image.cli import app, emit_json, handles_errors
from ppml_image.images import run as run_mod
from ppml_image.k8s import secret_manifests as k8s_secrets
from ppml_image.k8s import templates
from ppml_image.spark import common, password, tls

secrets_app = typer.Typer(help="Spark security material: TLS keys, keystores, password.",
                          no_args_is_help=True)
k8s_app = typer.Typer(help="Kubernetes Secrets and Spark pod templates.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
app.add_typer(k8s_app, name="k8s")


@secrets_app.command("tls", epilog=(
    "Example: ppml-image secrets tls --out keys/ --cn spark.example.org --san 10.0.0.5 "
    "--password-file pw.txt"))
@handles_errors
def tls_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder (created 0700)."),
    cn: str = typer.Option("localhost", "--cn", help="Certificate common name (also a SAN)."),
    san: list[str] = typer.Option([], "--san", help="Extra subject alternative name "
                                  "(host name or IP); repeatable."),
    days: int = typer.Option(365, "--days", help="Validity in days."),
    password_file: Path | None = typer.Option(None, "--password-file",
                                              help="File with the password (else a prompt)."),
    unencrypted_key: bool = typer.Option(False, "--unencrypted-key",
                                         help="Also leave server.key unencrypted (avoid)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing folder's contents."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """TLS key, self-signed certificate, PKCS#12 and JKS keystores for Spark (all 0600)."""
    secret = common.read_password(password_file)
    result = tls.generate_tls(out, secret, cn=cn, sans=san, days=days,
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
    force: bool = typer.Option(False, "--force", help="Replace an existing folder's contents."),
) -> None:
    """The password encrypted to a fresh RSA key (key.txt, output.bin; 0600)."""
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
    output: Path = typer.Option(Path("k8s"), "-o", "--output", help="Output folder."),
) -> None:
    """Kubernetes Secret manifests: keys.yaml, password.yaml, spark-secret.yaml (0600)."""
    paths = k8s_secrets.write_secrets(keys, password_dir, output, namespace=namespace)
    typer.echo("wrote " + ", ".join(str(p) for p in paths) + " (they hold secrets: mode 0600)")


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
    output: Path = typer.Option(Path("k8s"), "-o", "--output", help="Output folder."),
) -> None:
    """Driver/executor pod templates requesting SGX resources, and spark-security.conf."""
    paths = templates.write_spark_templates(image, output, epc=sgx_epc, jvm_mem=jvm_mem,
                                            driver_epc=driver_epc, password=password_dir)
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
) -> None:
    """Run an image with SGX devices and AESM mapped in, or natively with --no-sgx."""
    plan = run_mod.plan_run(image, sgx=sgx, data=data, keys=keys, password=password_dir,
                            command=list(ctx.args) or None, check_host=not print_only)
    if print_only:
        typer.echo(run_mod.printed(plan))
        return
    raise typer.Exit(run_mod.execute(plan))
