"""CLI commands for images: bootstrap-os, build-base (build-custom and friends follow)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ppml_image import defaults
from ppml_image._cli_base import app, emit_json, fail, handles_errors, lazy_module
from ppml_image._cli_signers import DATE_HELP

if TYPE_CHECKING:
    from ppml_image.images import attest, base, bootstrap, config, custom
    from ppml_image.sgx import keys
    from ppml_image.sgx.manifest import parse_defines
else:  # docker and the signing core load when a command runs, not for `--help`
    attest, base, bootstrap, config, custom = (
        lazy_module(f"ppml_image.images.{name}")
        for name in ("attest", "base", "bootstrap", "config", "custom"))
    keys = lazy_module("ppml_image.sgx.keys")

    def parse_defines(define: list[str]) -> dict[str, object]:
        return lazy_module("ppml_image.sgx.manifest").parse_defines(define)


@app.command("bootstrap-os", epilog=(
    "Examples:\n\n"
    "  ppml-image bootstrap-os --suite bookworm --tag debian:bookworm\n\n"
    "  ppml-image bootstrap-os --config ppml-image.toml   (its [base] debian_mirror)"))
@handles_errors
def bootstrap_os_cmd(
    suite: str = typer.Option("bookworm", "--suite", help="Debian suite to bootstrap."),
    tag: str | None = typer.Option(None, "--tag", help="Image tag (default: debian:SUITE)."),
    mirror: str | None = typer.Option(
        None, "--mirror", help="Debian mirror URL (default: [base] debian_mirror of --config, "
        f"else {defaults.DEFAULT_MIRROR})."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML config ([base] table)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Build an OS base image from Debian packages (debootstrap) when no registry answers."""
    if mirror is None:
        mirror = (config.load_config(config_file, {}).debian_mirror if config_file is not None
                  else "") or defaults.DEFAULT_MIRROR
    image_id = bootstrap.bootstrap_os(suite, tag, mirror=mirror, quiet=as_json)
    if as_json:
        emit_json({"image_id": image_id, "tag": tag or f"debian:{suite}"})
    else:
        typer.echo(f"{tag or f'debian:{suite}'} {image_id}")


@app.command("build-base", epilog=(
    "Examples:\n\n"
    "  ppml-image build-base --profile slim --gramine-source tree --gramine-path ./gramine\n\n"
    "  ppml-image build-base --config ppml-image.toml --tag registry.example/ppml/base:1.0 --json"
    "\n\n"
    "  ppml-image build-base --config ppml-image.toml --write-lock base.lock   (record it)\n\n"
    "  ppml-image build-base --config ppml-image.toml --lock base.lock --no-cache   (again)"))
@handles_errors
def build_base_cmd(
    config_file: Path | None = typer.Option(None, "--config", help="TOML config ([base] table)."),
    tag: str | None = typer.Option(None, "--tag", help="Image tag (NAME:TAG)."),
    profile: str | None = typer.Option(None, "--profile", help="full (Spark + JDK) or slim."),
    os_image: str | None = typer.Option(None, "--os-image", help="OS base image."),
    gramine_source: str | None = typer.Option(None, "--gramine-source",
                                              help="apt, deb-dir or tree."),
    gramine_path: str | None = typer.Option(None, "--gramine-path",
                                            help="Folder of .deb files, or an install tree."),
    debian_mirror: str | None = typer.Option(
        None, "--debian-mirror", metavar="URL", help="Debian mirror for the image's apt "
        "sources (a snapshot mirror keeps old versions for --lock)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the build cache."),
    lock: Path | None = typer.Option(
        None, "--lock", help="Build exactly what this lock file names: the OS image id, each "
        "Debian package's version, each wheel's SHA-256, the Gramine source's files."),
    write_lock: Path | None = typer.Option(
        None, "--write-lock", help="Record what went into the image in this lock file "
        "(replaces only an existing ppml-image lock)."),
    as_json: bool = typer.Option(False, "--json", help="No progress; print one JSON object."),
) -> None:
    """Build the public ML base image (Gramine, JDK, Spark, LightGBM, scikit-learn...)."""
    cfg = config.load_config(config_file, {
        "tag": tag, "profile": profile, "os_image": os_image, "gramine_source": gramine_source,
        "gramine_path": gramine_path, "debian_mirror": debian_mirror})
    result = base.build_base(cfg, nocache=no_cache, quiet=as_json, lock=lock,
                             write_lock=write_lock)
    if as_json:
        emit_json(result.to_json())
        return
    typer.echo(f"image:   {result.image_id}")
    typer.echo(f"tags:    {', '.join(result.tags)}")
    typer.echo(f"size:    {result.size / 1e6:.0f} MB")
    typer.echo(f"libpal:  {result.gramine['libpal']}")
    if result.lock:
        typer.echo(f"lock:    {result.lock}")


def _check_record(output: Path | None, *inputs: Path | None) -> None:
    """The --output record is checked before any build: never lose a build to a bad path."""
    if output is not None:
        from ppml_image._fs import check_output_files

        check_output_files([output], [p for p in inputs if p is not None])


def _report(result: custom.CustomImage, output: Path | None, as_json: bool) -> None:
    """The measurement: to --output, and as JSON or the lines teams copy."""
    if output is not None:
        custom.write_measurements(result, output)
    if as_json:
        emit_json(result.to_json())
        return
    typer.echo(f"image:       {result.image} ({result.image_id[7:19]})")
    typer.echo(f"unsigned:    {result.unsigned_image}")
    typer.echo("Register these values with your attestation service:")
    typer.echo(f"mr_enclave: {result.mr_enclave}")
    typer.echo(f"mr_signer:  {result.mr_signer}")


@app.command("build-custom", epilog=(
    "Examples:\n\n"
    "  ppml-image build-custom --key enclave-key.pem --app ./app -D entrypoint=train.py\n\n"
    "  ppml-image build-custom --key k.pem --manifest spark --base ppml/base:full "
    "--tag ppml/job:1 --release --output measurements.json"))
@handles_errors
def build_custom_cmd(
    key: Path = typer.Option(..., "--key", "-k", help="Enclave signing key (PEM); never "
                             "leaves this process."),
    base_image: str = typer.Option(defaults.DEFAULT_BASE, "--base", help="Base image."),
    app_dir: Path | None = typer.Option(None, "--app", help="Application folder (-> /ppml/app)."),
    manifest: str = typer.Option(defaults.DEFAULT_TEMPLATE, "--manifest",
                                 help="Template: a shipped name (python-ml, spark) or a path."),
    define: list[str] = typer.Option([], "--define", "-D", help="Template variable key=value."),
    tag: str = typer.Option(defaults.DEFAULT_TAG, "--tag", help="Final image tag (NAME:TAG)."),
    date: str | None = typer.Option(None, "--date", help=DATE_HELP),
    release: bool = typer.Option(False, "--release", help="Refuse a manifest that breaks the "
                                 "release policy (debug, insecure__ options, ...)."),
    allow_debug: bool = typer.Option(False, "--allow-debug",
                                     help="Accept a debug enclave (with a warning)."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file",
                                                help="File with the key's passphrase."),
    output: Path | None = typer.Option(None, "--output", help="Write the measurements as JSON."),
    as_json: bool = typer.Option(False, "--json", help="No progress; print one JSON object."),
) -> None:
    """Build a customer image, measure and sign it on the host, print mr_enclave/mr_signer."""
    if release and allow_debug:
        fail("--release and --allow-debug exclude each other", 2)
    _check_record(output, key, passphrase_file)
    result = custom.build_custom(
        key, base=base_image, app=app_dir, template=manifest,
        defines=parse_defines(define), tag=tag, date=date, release=release,
        passphrase=keys.read_passphrase(passphrase_file, key), quiet=as_json)
    _report(result, output, as_json)


@app.command("sign-image", epilog=(
    "Example: ppml-image sign-image ppml/job:1-unsigned --key prod-key.pem --tag ppml/job:1"))
@handles_errors
def sign_image_cmd(
    unsigned: str = typer.Argument(..., help="An unsigned image made by build-custom."),
    key: Path = typer.Option(..., "--key", "-k", help="Enclave signing key (PEM)."),
    tag: str | None = typer.Option(None, "--tag", help="Signed image tag (default: the "
                                   "unsigned tag without -unsigned)."),
    date: str | None = typer.Option(None, "--date", help=DATE_HELP),
    release: bool = typer.Option(False, "--release", help="Refuse a manifest that breaks the "
                                 "release policy (debug, insecure__ options, ...)."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file",
                                                help="File with the key's passphrase."),
    output: Path | None = typer.Option(None, "--output", help="Write the measurements as JSON."),
    as_json: bool = typer.Option(False, "--json", help="No progress; print one JSON object."),
) -> None:
    """Sign an unsigned image with another key: same MRENCLAVE, new MRSIGNER."""
    _check_record(output, key, passphrase_file)
    result = custom.sign_image(unsigned, key, tag=tag, date=date, release=release,
                               passphrase=keys.read_passphrase(passphrase_file, key), quiet=as_json)
    _report(result, output, as_json)


@app.command("inspect", epilog="Example: ppml-image inspect ppml/job:1 --json")
@handles_errors
def inspect_cmd(
    image: str = typer.Argument(..., help="A signed image."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Print the SIGSTRUCT fields of a signed image (no key needed)."""
    result = attest.inspect_image(image)
    if as_json:
        emit_json(result.to_json())
        return
    for key, value in result.to_json().items():
        typer.echo(f"{key + ':':22}{value}")


@app.command("verify", epilog=(
    "Examples:\n\n"
    "  ppml-image verify ppml/job:1 --mr-enclave 6c04...a229 --mr-signer 5c3f...15a0\n\n"
    "  ppml-image verify ppml/job:1 --base ppml-image/base:1.0 --json\n\n"
    "Exit 0: verified; 3: the image failed verification (every problem is named);"
    " 1: the engine or the image could not be read."))
@handles_errors
def verify_cmd(
    image: str = typer.Argument(..., help="A signed image."),
    mr_enclave: str | None = typer.Option(None, "--mr-enclave", help="Expected MRENCLAVE."),
    mr_signer: str | None = typer.Option(None, "--mr-signer", help="Expected MRSIGNER."),
    base: str | None = typer.Option(None, "--base", help="The base image to compare what runs "
                                    "outside the enclave with (default: the image the "
                                    "ppml-image.base-image-id label names, checked by layers)."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Accept a debug enclave."),
    allow_insecure: bool = typer.Option(False, "--allow-insecure",
                                        help="Do not apply the release policy."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON, "
                                 "whether verification passes or fails."),
) -> None:
    """Re-hash and re-measure an image from its own files; exit 3 on any difference."""
    result = attest.verify_image(image, mr_enclave=mr_enclave, mr_signer=mr_signer,
                                 allow_debug=allow_debug, allow_insecure=allow_insecure,
                                 base=base, quiet=as_json or not sys.stderr.isatty())
    if as_json:
        emit_json(result.to_json())
        if not result.ok:
            raise typer.Exit(3)
        return
    if not result.ok:
        raise result.error()
    for check in result.checks:
        typer.echo(f"ok: {check}")
    typer.echo(f"verified {image}: mr_enclave {result.sigstruct['mr_enclave']}")
    typer.echo(f"signer: mr_signer {result.sigstruct['mr_signer']}")
    if result.consistency_only:
        typer.echo("note: without --mr-enclave/--mr-signer this checked internal consistency "
                   "only: anyone can sign a consistent image. Compare the values above with "
                   "the ones you registered.")
