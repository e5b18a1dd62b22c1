"""CLI commands of the signing core: keygen, manifest, sign, sigstruct."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ppml_image.cli import signers as _cli_signers
from ppml_image.cli.common import (
    app,
    emit_json,
    handles_errors,
    lazy_module,
    print_sigstruct_fields,
)
from ppml_image.defaults import PASSPHRASE_ENV
from ppml_image.errors import PpmlError, UsageError, VerificationError
from ppml_image.sgx.gramine import PKGLIBDIR

if TYPE_CHECKING:
    from ppml_image.sgx import offline, sign
    from ppml_image.sgx.manifest import document as manifest
    from ppml_image.sgx.manifest import policy, python_helpers
    from ppml_image.sgx.measure import enclave, tree
    from ppml_image.sgx.signing import keys, sigstruct
else:  # loaded when a command runs: `--help` needs none of them
    enclave, keys, manifest, offline, policy, python_helpers, sign, sigstruct, tree = (
        lazy_module(f"ppml_image.sgx.{name}")
        for name in ("measure.enclave", "signing.keys", "manifest.document", "offline",
                     "manifest.policy", "manifest.python_helpers", "sign", "signing.sigstruct",
                     "measure.tree"))

PKGLIBDIR_HELP = "Where Gramine lives in the target file system."
ALLOW_UNMEASURED_HELP = ("With --release: accept this sgx.allowed_files URI and any entry below "
                         "it (repeatable; e.g. file:/etc/hosts).")
ALLOW_PASSTHROUGH_HELP = ("With --release: let the host set this loader.env variable "
                          "(passthrough; repeatable; never LD_*, PYTHON*, *_HOME, ...).")
POLICY_HELP = ("With --release: a policy file ([release] allow_unmeasured, allow_passthrough) "
               "or a shipped one by name (name-service); repeatable.")


def release_policy(release: bool, allow_unmeasured: list[str], allow_passthrough: list[str],
                   policies: list[str]) -> bool | policy.ReleasePolicy:
    """``--release`` and its allowances as the library takes them."""
    named = allow_unmeasured or allow_passthrough or policies
    if not release:
        if named:
            raise UsageError("--allow-unmeasured, --allow-passthrough and --policy name what "
                             "the release policy accepts: add --release")
        return False
    return policy.make_policy(allow_unmeasured, allow_passthrough, policies)


@app.command(epilog=(
    "Examples:\n\n"
    "  ppml-image keygen keys/enclave-key.pem\n\n"
    "  ppml-image keygen --pkcs11 'pkcs11:token=ppml;object=enclave-key"
    "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/pin'"))
@handles_errors
def keygen(
    path: Path | None = typer.Argument(None, help="Where to write the key "
                                       "(default: enclave-key.pem)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key file."),
    pkcs11_uri: str | None = typer.Option(
        None, "--pkcs11", help="Make the key pair inside this PKCS#11 token instead "
        "(sensitive, never extractable; an existing object is never replaced)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Generate an SGX enclave signing key (RSA-3072, e=3): a file (mode 0600) or in a token."""
    if pkcs11_uri is not None:
        _keygen_token(pkcs11_uri, path, force, as_json)
        return
    info = keys.generate_key(path or Path("enclave-key.pem"), force=force)
    if as_json:
        emit_json({"path": str(info.path), "mr_signer": info.mr_signer})
    else:
        typer.echo(f"wrote {info.path} (mode 0600)")
        typer.echo(f"mr_signer: {info.mr_signer}")


def _keygen_token(uri: str, path: Path | None, force: bool, as_json: bool) -> None:
    from ppml_image.sgx.signing.hsm import generate_token_key

    if path is not None or force:
        raise UsageError("--pkcs11 makes the key inside the token: drop "
                         + ("the key file path" if path is not None else "--force"))
    info = generate_token_key(uri)
    if as_json:
        emit_json(info.to_json())
        return
    typer.echo(f"generated {info.object!r} (id {info.id.hex()}) in PKCS#11 token {info.token!r}: "
               "RSA-3072, e=3, sensitive, not extractable")
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
    pkglibdir: str = typer.Option(PKGLIBDIR, "--pkglibdir", help=PKGLIBDIR_HELP),
    check: bool = typer.Option(True, "--check/--no-check",
                               help="Check the result against Gramine's manifest schema."),
    python: list[str] = typer.Option(
        [], "--python", metavar="PATH",
        help="An interpreter the template may run through python.get_sys_path(PATH), the "
        "same PATH exactly (repeatable). A template never chooses a program: without this "
        "it may name only the interpreter ppml-image runs on."),
) -> None:
    """Render a manifest template like gramine-manifest (defaults, trusted files hashed)."""
    if chroot is not None:  # before the template is read or rendered
        tree.check_chroot(chroot)
    text = manifest.render_manifest_file(
        template, outfile, defines=manifest.parse_defines(define), chroot=chroot,
        pkglibdir=pkglibdir, check=check,
        python=python_helpers.PythonInfo.from_host(interpreters=python))
    if outfile is None:
        typer.echo(text, nl=False)


@app.command("sign", epilog=(
    "Examples:\n\n"
    "  ppml-image sign --manifest app.manifest --output app.manifest.sgx "
    "--libpal /usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so --key enclave-key.pem "
    "--release\n\n"
    "  ppml-image sign ... --key 'pkcs11:token=ppml;object=enclave-key'\n\n"
    "  ppml-image sign ... --export-signing-data app.tbs   (then, offline: openssl dgst "
    "-sha256 -sign key.pem -out app.tbs.sig app.tbs)\n\n"
    "  ppml-image sign ... --signature app.tbs.sig --public-key pub.pem"))
@handles_errors
def sign_cmd(
    manifest_path: Path = typer.Option(..., "--manifest", "-m", help="Input manifest (TOML)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output .manifest.sgx."),
    libpal: Path = typer.Option(..., "--libpal", help="The SGX PAL (libpal.so) to measure."),
    key: str | None = typer.Option(None, "--key", "-k", help=_cli_signers.KEY_HELP),
    date: str | None = typer.Option(None, "--date", help=_cli_signers.DATE_HELP),
    sigfile: Path | None = typer.Option(None, "--sigfile", help="Output .sig (default: "
                                        "OUTPUT with .manifest.sgx replaced by .sig)."),
    chroot: Path | None = typer.Option(
        None, "--chroot", help="Read every file the manifest names inside this folder."),
    pkglibdir: str = typer.Option(PKGLIBDIR, "--pkglibdir", help=PKGLIBDIR_HELP),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="File holding the key's passphrase "
        f"(or set {PASSPHRASE_ENV})."),
    release: bool = typer.Option(
        False, "--release", help="Refuse a manifest that breaks the release policy (debug, "
        "insecure__ options, allow_all_but_log, unmeasured files or passthrough variables "
        "not named, code in an unmeasured place...), naming every violation."),
    allow_unmeasured: list[str] = typer.Option([], "--allow-unmeasured", metavar="URI",
                                               help=ALLOW_UNMEASURED_HELP),
    allow_passthrough: list[str] = typer.Option([], "--allow-passthrough", metavar="NAME",
                                                help=ALLOW_PASSTHROUGH_HELP),
    policies: list[str] = typer.Option([], "--policy", metavar="FILE", help=POLICY_HELP),
    max_enclave_size: str = typer.Option(
        "1024G", "--max-enclave-size", metavar="SIZE",
        help="Refuse to measure a non-EDMM enclave larger than this (e.g. 2048G)."),
    export_data: Path | None = typer.Option(None, "--export-signing-data", metavar="DATA",
                                            help=_cli_signers.EXPORT_HELP),
    signature: Path | None = typer.Option(None, "--signature", help=_cli_signers.SIGNATURE_HELP),
    public_key: Path | None = typer.Option(None, "--public-key",
                                           help=_cli_signers.PUBLIC_KEY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the SIGSTRUCT fields as JSON."),
) -> None:
    """Hash trusted files, measure and sign an enclave like gramine-sgx-sign."""
    limit = parse_size_option(max_enclave_size, "--max-enclave-size")
    checked = release_policy(release, allow_unmeasured, allow_passthrough, policies)
    if chroot is not None:  # before a PIN prompt, a key or any hashing
        tree.check_chroot(chroot)
    inputs = [p for p in (manifest_path, libpal, passphrase_file, signature, public_key)
              if p is not None]
    if key is not None and not key.startswith("pkcs11:"):
        inputs.append(Path(key))
    if export_data is None:  # outputs first: before a PIN prompt, a key or any hashing
        sign.check_outputs(output, sigfile or sign.default_sigfile(output), inputs)
    if export_data is not None:
        _cli_signers.check_export_options(key, passphrase_file=passphrase_file,
                                          signature=signature, public_key=public_key,
                                          sigfile=sigfile)
        exported = offline.export_manifest_signing_data(
            manifest_path, output, libpal, export_data, date=date, chroot=chroot,
            pkglibdir=pkglibdir, release=checked, max_enclave_size=limit)
        _print_export(exported, output, as_json)
        return
    with contextlib.closing(_cli_signers.choose_signer(
            key, passphrase_file=passphrase_file, signature=signature,
            public_key=public_key)) as signer:
        signed = sign.sign_manifest(manifest_path, output, libpal, signer, date=date,
                                    sigfile=sigfile, chroot=chroot, pkglibdir=pkglibdir,
                                    release=checked, max_enclave_size=limit, inputs=inputs)
    if as_json:
        emit_json(signed.sigstruct.view())
        return
    if signed.sigstruct.debug_launchable:
        typer.secho("WARNING: sgx.debug = true: this is a DEBUG enclave; its memory can be read "
                    "by the host. Never use it for production data.", err=True, fg="yellow")
    typer.echo(f"mr_enclave: {signed.mr_enclave}")
    typer.echo(f"mr_signer:  {signed.mr_signer}")


def parse_size_option(value: str, option: str) -> int:
    """A size option (``1024G``, ``0x10000000000``); a bad one is a usage error."""
    try:
        return enclave.parse_size(value, option, "ppml-image")
    except PpmlError as exc:
        raise UsageError(str(exc)) from None


def _print_export(exported: offline.ExportedSigningData, output: Path, as_json: bool) -> None:
    if as_json:
        emit_json({"manifest_sgx_path": str(output),
                   "signing_data_path": str(exported.data_path),
                   "signing_data_json_path": str(exported.json_path), **exported.record})
        return
    if exported.record["debug_launchable"]:
        typer.secho("WARNING: sgx.debug = true: this is a DEBUG enclave; its memory can be read "
                    "by the host. Never use it for production data.", err=True, fg="yellow")
    typer.echo(f"wrote {output}, {exported.data_path} (the 256 bytes to sign) and "
               f"{exported.json_path}")
    typer.echo(f"mr_enclave: {exported.mr_enclave}")
    typer.echo(f"next: openssl dgst -sha256 -sign KEY.pem -out SIG {exported.data_path}, then "
               "sign again with --signature SIG --public-key PUB.pem")


@app.command("sigstruct", epilog=(
    "Examples:\n\n  ppml-image sigstruct app.sig --json\n\n"
    "  ppml-image sigstruct --signing-data app.tbs   (review before signing it offline)"))
@handles_errors
def sigstruct_cmd(
    sigfile: Path = typer.Argument(..., help="A .sig file (SIGSTRUCT)."),
    signing_data: bool = typer.Option(
        False, "--signing-data", help="The file is exported signing data (256 bytes): decode "
        "its fields for review before signing it offline."),
    release: bool = typer.Option(
        False, "--release", help="Refuse (exit 3) a debug-launchable SIGSTRUCT (DEBUG set, or "
        "a mask without DEBUG) or any mask Gramine 1.9 would not write: run this on signing "
        "data before signing it offline for production."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Check a .sig byte for byte as EINIT does, then print its fields.

    Size, headers, vendor, every reserved byte (zero), the RSA-3072/e=3 key,
    the signature over the file's own signed bytes, and Q1/Q2. With
    --signing-data, decode exported signing data for review instead.
    debug_launchable (the host can launch it in debug mode: DEBUG set, or
    the attribute mask leaves DEBUG out) and mask_problems come first.
    """
    if signing_data:
        view = offline.review_signing_data(sigfile, release=release)
    else:
        sig = sigstruct.read_sigstruct(str(sigfile))
        if release:
            sigstruct.refuse_for_release(sig, str(sigfile), VerificationError)
        view = sig.view()
    if as_json:
        emit_json(view)
        return
    print_sigstruct_fields(view)
