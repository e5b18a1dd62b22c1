"""CLI commands of the signing core: keygen, manifest, sign, sigstruct."""

from __future__ import annotations

from pathlib import Path

import typer

from ppml_image.cli import app, emit_json, handles_errors
from ppml_image.errors import PpmlError, UsageError
from ppml_image.sgx import keys, manifest, schema, sign, sigstruct

PKGLIBDIR_HELP = "Where Gramine lives in the target file system."


@app.command(epilog="Example: ppml-image keygen keys/enclave-key.pem")
@handles_errors
def keygen(
    path: Path = typer.Argument(Path("enclave-key.pem"), help="Where to write the key."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key file."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Generate an SGX enclave signing key (RSA-3072, e=3, mode 0600)."""
    info = keys.generate_key(path, force=force)
    if as_json:
        emit_json({"path": str(info.path), "mr_signer": info.mr_signer})
    else:
        typer.echo(f"wrote {info.path} (mode 0600)")
        typer.echo(f"mr_signer: {info.mr_signer}")


@app.command("manifest", epilog=(
    "Example: ppml-image manifest app.manifest.template app.manifest "
    "-D entrypoint=/usr/bin/python3 --chroot rootfs/"))
@handles_errors
def manifest_cmd(
    template: Path = typer.Argument(..., help="Jinja2 manifest template."),
    outfile: Path | None = typer.Argument(None, help="Output manifest (default: stdout)."),
    define: list[str] = typer.Option([], "--define", "-D",
                                     help="Template variable: key=value, or a bare key (true)."),
    chroot: Path | None = typer.Option(None, "--chroot",
                                       help="Resolve file: URIs inside this root folder."),
    pkglibdir: str = typer.Option(manifest.DEFAULT_PKGLIBDIR, "--pkglibdir",
                                  help=PKGLIBDIR_HELP),
    check: bool = typer.Option(True, "--check/--no-check",
                               help="Check the result against Gramine's manifest schema."),
) -> None:
    """Render a manifest template like gramine-manifest (defaults, trusted files hashed)."""
    text = manifest.render_manifest_file(
        template, outfile, defines=manifest.parse_defines(define), chroot=chroot,
        pkglibdir=pkglibdir, check=check)
    if outfile is None:
        typer.echo(text, nl=False)


@app.command("sign", epilog=(
    "Example: ppml-image sign --manifest app.manifest --output app.manifest.sgx "
    "--libpal /usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so --key enclave-key.pem "
    "--release"))
@handles_errors
def sign_cmd(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Input manifest (TOML)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output .manifest.sgx."),
    libpal: Path = typer.Option(..., "--libpal", help="The SGX PAL (libpal.so) to measure."),
    key: Path = typer.Option(..., "--key", "-k", help="Enclave signing key (PEM)."),
    date: str = typer.Option("today", "--date", help="SIGSTRUCT date: YYYY-MM-DD or today."),
    sigfile: Path | None = typer.Option(None, "--sigfile", help="Output .sig (default: "
                                        "OUTPUT with .manifest.sgx replaced by .sig)."),
    chroot: Path | None = typer.Option(
        None, "--chroot", help="Read every file the manifest names inside this folder."),
    pkglibdir: str = typer.Option(manifest.DEFAULT_PKGLIBDIR, "--pkglibdir",
                                  help=PKGLIBDIR_HELP),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="File holding the key's passphrase "
        f"(or set {keys.PASSPHRASE_ENV})."),
    release: bool = typer.Option(
        False, "--release", help="Refuse a manifest that breaks the release policy (debug, "
        "insecure__ options, allow_all_but_log, code in allowed_files...), naming every "
        "violation."),
    max_enclave_size: str = typer.Option(
        "1024G", "--max-enclave-size", metavar="SIZE",
        help="Refuse to measure a non-EDMM enclave larger than this (e.g. 2048G)."),
    as_json: bool = typer.Option(False, "--json", help="Print the SIGSTRUCT fields as JSON."),
) -> None:
    """Hash trusted files, measure and sign an enclave like gramine-sgx-sign."""
    limit = parse_size_option(max_enclave_size, "--max-enclave-size")
    signed = sign.sign_manifest(
        manifest_path, output, libpal, key, date=date, sigfile=sigfile, chroot=chroot,
        pkglibdir=pkglibdir, passphrase=keys.read_passphrase(passphrase_file, key),
        release=release, max_enclave_size=limit)
    if as_json:
        emit_json(signed.sigstruct.view())
        return
    if signed.sigstruct.debug:
        typer.secho("WARNING: sgx.debug = true: this is a DEBUG enclave; its memory can be read "
                    "by the host. Never use it for production data.", err=True, fg="yellow")
    typer.echo(f"mr_enclave: {signed.mr_enclave}")
    typer.echo(f"mr_signer:  {signed.mr_signer}")


def parse_size_option(value: str, option: str) -> int:
    """A size option (``1024G``, ``0x10000000000``); a bad one is a usage error."""
    try:
        return schema.parse_size(value, option, "ppml-image")
    except PpmlError as exc:
        raise UsageError(str(exc)) from None


@app.command("sigstruct", epilog="Example: ppml-image sigstruct app.sig --json")
@handles_errors
def sigstruct_cmd(
    sigfile: Path = typer.Argument(..., help="A .sig file (SIGSTRUCT)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Check a .sig byte for byte as EINIT does, then print its fields.

    Size, headers, vendor, every reserved byte (zero), the RSA-3072/e=3 key,
    the signature over the file's own signed bytes, and Q1/Q2.
    """
    sig = sigstruct.read_sigstruct(str(sigfile))
    view = sig.view()
    if as_json:
        emit_json(view)
        return
    for key, value in view.items():
        typer.echo(f"{key + ':':22}{value}")
