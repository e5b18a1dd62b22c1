"""CLI commands for images: bootstrap-os, build-base (build-custom and friends follow)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ppml_image import defaults
from ppml_image.cli import signers as _cli_signers
from ppml_image.cli.common import (
    MAX_IMAGE_BYTES_HELP,
    app,
    emit_json,
    fail,
    handles_errors,
    lazy_module,
    max_image_bytes,
    print_sigstruct_fields,
    registry_timeout_option,
)
from ppml_image.cli.sgx import (
    ALLOW_PASSTHROUGH_HELP,
    ALLOW_UNMEASURED_HELP,
    POLICY_HELP,
    release_policy,
)
from ppml_image.cli.signers import DATE_HELP
from ppml_image.errors import UsageError

if TYPE_CHECKING:
    from ppml_image.images.base import bootstrap, config
    from ppml_image.images.base import build as base
    from ppml_image.images.enclave import custom
    from ppml_image.images.enclave import verify as attest
    from ppml_image.sgx.manifest.document import parse_defines
    from ppml_image.sgx.signing.signers import Signer
else:  # docker and the signing core load when a command runs, not for `--help`
    attest, base, bootstrap, config, custom = (
        lazy_module(f"ppml_image.images.{name}")
        for name in ("enclave.verify", "base.build", "base.bootstrap", "base.config",
                     "enclave.custom"))

    def parse_defines(define: list[str]) -> dict[str, object]:
        return lazy_module("ppml_image.sgx.manifest.document").parse_defines(define)

EXPECT_HELP = ("Fail (exit 3) before signing, building or tagging anything if the measured "
               "MRENCLAVE is not this one: the registered value, when rebuilding from source.")
PUSH_HELP = ("Push the signed image to the registry its tag names (REGISTRY/NAME:TAG) with "
             "the engine's credentials (docker login), and print its digest.")
PUSH_UNSIGNED_HELP = "Also push the -unsigned image (with --push; it is pushed first)."
RECORD_HELP = ("A measurement record (build-custom/sign-image --output, or DATA.json of "
               "--export-signing-data): pins the base image id, and gives the expected "
               "mr_enclave/mr_signer and the measured image.")
SIGN_BASE_HELP = ("The pinned base: the image must derive from it and differ from it only "
                  "in the enclave's own files, else nothing is signed (exit 3).")


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
    registry_timeout: int = registry_timeout_option(),
    as_json: bool = typer.Option(False, "--json", help="No progress; print one JSON object."),
) -> None:
    """Build the public ML base image (Gramine, JDK, Spark, LightGBM, scikit-learn...)."""
    cfg = config.load_config(config_file, {
        "tag": tag, "profile": profile, "os_image": os_image, "gramine_source": gramine_source,
        "gramine_path": gramine_path, "debian_mirror": debian_mirror})
    result = base.build_base(cfg, nocache=no_cache, quiet=as_json, lock=lock,
                             write_lock=write_lock, registry_timeout=registry_timeout)
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
    if result.unsigned_repo_digest:
        typer.echo(f"unsigned digest: {result.unsigned_repo_digest}")
    if result.repo_digest:
        typer.echo(f"digest: {result.repo_digest}")
    typer.echo("Register these values with your attestation service:")
    typer.echo(f"mr_enclave: {result.mr_enclave}")
    typer.echo(f"mr_signer:  {result.mr_signer}")


@contextlib.contextmanager
def _push_failure_reported(as_json: bool) -> Iterator[None]:
    """A failed push with --json: one failure object that also holds the measurement of
    what was built (with ``repo_digest`` null); the error line on stderr as always."""
    try:
        yield
    except custom.PushFailed as exc:
        if not as_json:
            raise
        typer.echo(f"ppml-image: error: {exc}", err=True)
        emit_json({"ok": False, "error": str(exc), "exit_code": exc.exit_code,
                   **exc.result.to_json()})
        raise typer.Exit(exc.exit_code) from None


def _check_output(output: Path | None, export_data: Path | None, key: str | None,
                  *inputs: Path | None) -> None:
    """--output is checked before any long work; it records a signed image only."""
    if output is not None and export_data is not None:
        raise UsageError("--output records a signed image; with --export-signing-data the "
                         "record is DATA.json")
    key_file = Path(key) if key is not None and not key.startswith("pkcs11:") else None
    _check_record(output, key_file, *inputs)


def _print_exported(exported: custom.ExportedImage, as_json: bool) -> None:
    if as_json:
        emit_json(exported.to_json())
        return
    if exported.exported.record["debug_launchable"]:
        typer.secho("WARNING: sgx.debug = true: this is a DEBUG enclave; its memory can be read "
                    "by the host. Never use it for production data.", err=True, fg="yellow")
    typer.echo(f"unsigned:    {exported.image} ({exported.image_id[7:19]})")
    typer.echo(f"wrote {exported.exported.data_path} (the 256 bytes to sign) and "
               f"{exported.exported.json_path}")
    typer.echo(f"mr_enclave: {exported.mr_enclave}")
    typer.echo(f"next: openssl dgst -sha256 -sign KEY.pem -out SIG {exported.exported.data_path}"
               f", then: ppml-image sign-image {exported.image} --signature SIG "
               "--public-key PUB.pem --date SAME-DATE")


def _signer(key: str | None, passphrase_file: Path | None, signature: Path | None = None,
            public_key: Path | None = None) -> contextlib.closing[Signer]:
    """The signer the options name, opened (a token: logged in, its key checked) before work."""
    return contextlib.closing(_cli_signers.choose_signer(
        key, passphrase_file=passphrase_file, signature=signature, public_key=public_key))


@app.command("build-custom", epilog=(
    "Examples:\n\n"
    "  ppml-image build-custom --key enclave-key.pem --app ./app -D entrypoint=train.py\n\n"
    "  ppml-image build-custom --key k.pem --manifest spark --base ppml/base:full "
    "--tag 127.0.0.1:5000/ppml/job:1 --release --push --output measurements.json\n\n"
    "  ppml-image build-custom --key 'pkcs11:token=ppml;object=enclave-key' --app ./app\n\n"
    "  ppml-image build-custom --app ./app --tag ppml/job:1 --export-signing-data job.tbs   "
    "(no key: then sign job.tbs offline and run sign-image ppml/job:1-unsigned "
    "--signature ...)"))
@handles_errors
def build_custom_cmd(
    key: str | None = typer.Option(None, "--key", "-k", help=_cli_signers.KEY_HELP
                                   + " Never leaves this process."),
    base_image: str = typer.Option(defaults.DEFAULT_BASE, "--base", help="Base image."),
    app_dir: Path | None = typer.Option(None, "--app", help="Application folder (-> /ppml/app)."),
    manifest: str = typer.Option(defaults.DEFAULT_TEMPLATE, "--manifest",
                                 help="Template: a shipped name (python-ml, spark) or a path."),
    define: list[str] = typer.Option([], "--define", "-D", help="Template variable key=value."),
    tag: str = typer.Option(defaults.DEFAULT_TAG, "--tag", help="Final image tag (NAME:TAG)."),
    date: str | None = typer.Option(None, "--date", help=DATE_HELP),
    release: bool = typer.Option(False, "--release", help="Refuse a manifest that breaks the "
                                 "release policy (debug, insecure__ options, ...)."),
    allow_unmeasured: list[str] = typer.Option([], "--allow-unmeasured", metavar="URI",
                                               help=ALLOW_UNMEASURED_HELP),
    allow_passthrough: list[str] = typer.Option([], "--allow-passthrough", metavar="NAME",
                                                help=ALLOW_PASSTHROUGH_HELP),
    policies: list[str] = typer.Option([], "--policy", metavar="FILE", help=POLICY_HELP),
    allow_debug: bool = typer.Option(False, "--allow-debug",
                                     help="Accept a debug enclave (with a warning)."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file",
                                                help="File with the key's passphrase."),
    export_data: Path | None = typer.Option(
        None, "--export-signing-data", metavar="DATA", help="Build the unsigned stage only "
        "(tagged TAG-unsigned) and write the 256 bytes to sign (and DATA.json); no key."),
    expect_mr_enclave: str | None = typer.Option(None, "--expect-mr-enclave", metavar="HEX",
                                                 help=EXPECT_HELP),
    push: bool = typer.Option(False, "--push", help=PUSH_HELP),
    push_unsigned: bool = typer.Option(False, "--push-unsigned", help=PUSH_UNSIGNED_HELP),
    output: Path | None = typer.Option(None, "--output", help="Write the measurements as JSON "
                                       "(with the digest when pushed)."),
    registry_timeout: int = registry_timeout_option(),
    as_json: bool = typer.Option(False, "--json", help="No progress; print one JSON object."),
) -> None:
    """Build a customer image, measure and sign it on the host, print mr_enclave/mr_signer."""
    if release and allow_debug:
        fail("--release and --allow-debug exclude each other", 2)
    checked = release_policy(release, allow_unmeasured, allow_passthrough, policies)
    expected = custom.expected_mr_enclave(expect_mr_enclave)
    _check_output(output, export_data, key, passphrase_file)
    if export_data is not None:
        _cli_signers.check_export_options(key, passphrase_file=passphrase_file)
        if push or push_unsigned:
            raise UsageError("--export-signing-data signs nothing, so there is nothing to push "
                             "yet: push with sign-image --push")
        _print_exported(custom.build_custom_export(
            export_data, base=base_image, app=app_dir, template=manifest,
            defines=parse_defines(define), tag=tag, date=date, release=checked,
            expect_mr_enclave=expected, quiet=as_json), as_json)
        return
    publish = custom.Publish(expected, push, push_unsigned, registry_timeout)
    publish.check(tag, custom.unsigned_tag(tag))
    with _signer(key, passphrase_file) as signer, _push_failure_reported(as_json):
        result = custom.build_custom(
            signer, base=base_image, app=app_dir, template=manifest,
            defines=parse_defines(define), tag=tag, date=date, release=checked,
            quiet=as_json, publish=publish)
    _report(result, output, as_json)


@app.command("sign-image", epilog=(
    "Examples:\n\n"
    "  ppml-image sign-image ppml/job:1-unsigned --key prod-key.pem --tag ppml/job:1\n\n"
    "  ppml-image sign-image ppml/job:1-unsigned --key 'pkcs11:token=ppml;object=prod-key' "
    "--tag 127.0.0.1:5000/ppml/job:1 --push --output measurements.json\n\n"
    "  ppml-image sign-image ppml/job:1-unsigned --date 2025-06-01 --export-signing-data "
    "job.tbs   (then, offline: openssl dgst -sha256 -sign prod-key.pem -out job.tbs.sig "
    "job.tbs)\n\n"
    "  ppml-image sign-image ppml/job:1-unsigned --date 2025-06-01 --signature job.tbs.sig "
    "--public-key prod-pub.pem --tag ppml/job:1"))
@handles_errors
def sign_image_cmd(
    unsigned: str = typer.Argument(..., help="An unsigned image made by build-custom."),
    key: str | None = typer.Option(None, "--key", "-k", help=_cli_signers.KEY_HELP),
    tag: str | None = typer.Option(None, "--tag", help="Signed image tag (default: the "
                                   "unsigned tag without -unsigned)."),
    date: str | None = typer.Option(None, "--date", help=DATE_HELP),
    release: bool = typer.Option(False, "--release", help="Refuse a manifest that breaks the "
                                 "release policy (debug, insecure__ options, ...)."),
    allow_unmeasured: list[str] = typer.Option([], "--allow-unmeasured", metavar="URI",
                                               help=ALLOW_UNMEASURED_HELP),
    allow_passthrough: list[str] = typer.Option([], "--allow-passthrough", metavar="NAME",
                                                help=ALLOW_PASSTHROUGH_HELP),
    policies: list[str] = typer.Option([], "--policy", metavar="FILE", help=POLICY_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file",
                                                help="File with the key's passphrase."),
    export_data: Path | None = typer.Option(None, "--export-signing-data", metavar="DATA",
                                            help=_cli_signers.EXPORT_HELP),
    signature: Path | None = typer.Option(None, "--signature", help=_cli_signers.SIGNATURE_HELP),
    public_key: Path | None = typer.Option(None, "--public-key",
                                           help=_cli_signers.PUBLIC_KEY_HELP),
    expect_mr_enclave: str | None = typer.Option(None, "--expect-mr-enclave", metavar="HEX",
                                                 help=EXPECT_HELP),
    push: bool = typer.Option(False, "--push", help=PUSH_HELP),
    push_unsigned: bool = typer.Option(False, "--push-unsigned", help="Also push the unsigned "
                                       "image under its own name (with --push; pushed first)."),
    output: Path | None = typer.Option(None, "--output", help="Write the measurements as JSON "
                                       "(with the digest when pushed)."),
    registry_timeout: int = registry_timeout_option(),
    as_json: bool = typer.Option(False, "--json", help="No progress; print one JSON object."),
    base: str | None = typer.Option(None, "--base", help=SIGN_BASE_HELP),
    record: Path | None = typer.Option(None, "--record", metavar="R.json", help=RECORD_HELP
                                       + " Needed with --signature (its DATA.json)."),
    max_bytes: str | None = typer.Option(None, "--max-image-bytes", metavar="SIZE",
                                         help=MAX_IMAGE_BYTES_HELP),
) -> None:
    """Sign an unsigned image (e.g. with the production key): same MRENCLAVE, new MRSIGNER."""
    checked = release_policy(release, allow_unmeasured, allow_passthrough, policies)
    expected = custom.expected_mr_enclave(expect_mr_enclave)
    limit = max_image_bytes(max_bytes)
    _check_output(output, export_data, key, passphrase_file, signature,
                  public_key)
    if export_data is not None:
        _cli_signers.check_export_options(key, passphrase_file=passphrase_file,
                                          signature=signature, public_key=public_key)
        if push or push_unsigned or tag is not None:
            raise UsageError("--export-signing-data builds and tags nothing: drop "
                             + ", ".join(name for name, given in (
                                 ("--tag", tag is not None), ("--push", push),
                                 ("--push-unsigned", push_unsigned)) if given))
        _print_exported(custom.export_signing_data(
            unsigned, export_data, date=date, release=checked, expect_mr_enclave=expected,
            quiet=as_json, base=base, record=record, max_image_bytes=limit), as_json)
        return
    publish = custom.Publish(expected, push, push_unsigned, registry_timeout)
    publish.check(tag or unsigned.removesuffix("-unsigned"), unsigned)
    with _signer(key, passphrase_file, signature, public_key) as signer, \
            _push_failure_reported(as_json):
        result = custom.sign_image(unsigned, signer, tag=tag, date=date, release=checked,
                                   quiet=as_json, publish=publish, base=base, record=record,
                                   max_image_bytes=limit)
    _report(result, output, as_json)


@app.command("inspect", epilog="Example: ppml-image inspect ppml/job:1 --json")
@handles_errors
def inspect_cmd(
    image: str = typer.Argument(..., help="A signed image."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Print the SIGSTRUCT fields of a signed image (no key needed); debug_launchable
    (DEBUG set, or a mask that leaves it out) and non-Gramine masks first."""
    result = attest.inspect_image(image)
    if as_json:
        emit_json(result.to_json())
        return
    print_sigstruct_fields(result.to_json())


@app.command("verify", epilog=(
    "Examples:\n\n"
    "  ppml-image verify ppml/job:1 --mr-enclave 6c04...a229 --mr-signer 5c3f...15a0\n\n"
    "  ppml-image verify 127.0.0.1:5000/ppml/job@sha256:4f1c...9e0b --mr-enclave 6c04...a229"
    "   (pulled if not local)\n\n"
    "  ppml-image verify ppml/job:1 --base ppml-image/base:1.0 --json\n\n"
    "Exit 0: verified; 3: the image failed verification (every problem is named);"
    " 1: the engine or the image could not be read."))
@handles_errors
def verify_cmd(
    image: str = typer.Argument(..., help="A signed image: a local tag or id, or "
                                "REGISTRY/NAME@sha256:... (pulled when not local)."),
    mr_enclave: str | None = typer.Option(None, "--mr-enclave", help="Expected MRENCLAVE."),
    mr_signer: str | None = typer.Option(None, "--mr-signer", help="Expected MRSIGNER."),
    base: str | None = typer.Option(None, "--base", help="The pinned base (a digest is best): "
                                    "the image may differ from it only in the enclave's own "
                                    "files. Never taken from a label."),
    record: Path | None = typer.Option(None, "--record", metavar="R.json", help=RECORD_HELP),
    allow_unpinned_base: bool = typer.Option(
        False, "--allow-unpinned-base", help="Without --base/--record, check the enclave only "
        "and exit 0 although what runs outside it was not checked."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Accept a debug enclave."),
    allow_insecure: bool = typer.Option(False, "--allow-insecure",
                                        help="Do not apply the release policy."),
    pull: bool = typer.Option(False, "--pull", help="Pull the image from its registry first, "
                              "even if the engine has it."),
    registry_timeout: int = registry_timeout_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON, "
                                 "whether verification passes or fails."),
    max_bytes: str | None = typer.Option(None, "--max-image-bytes", metavar="SIZE",
                                         help=MAX_IMAGE_BYTES_HELP),
) -> None:
    """Re-hash and re-measure an image from its own files; exit 3 on any difference."""
    result = attest.verify_image(image, mr_enclave=mr_enclave, mr_signer=mr_signer,
                                 allow_debug=allow_debug, allow_insecure=allow_insecure,
                                 base=base, quiet=as_json or not sys.stderr.isatty(),
                                 pull=pull, record=record,
                                 allow_unpinned_base=allow_unpinned_base,
                                 max_image_bytes=max_image_bytes(max_bytes),
                                 registry_timeout=registry_timeout)
    if as_json:
        emit_json(result.to_json())
        if not result.ok:
            raise typer.Exit(3)
        return
    if not result.ok:
        raise result.error()
    for check in result.checks:
        # What was not checked is never shown as "ok".
        typer.echo(f"{'WARNING' if check.startswith('NOT CHECKED') else 'ok'}: {check}")
    typer.echo(f"verified {image}: mr_enclave {result.sigstruct['mr_enclave']}")
    if result.digest:
        typer.echo(f"digest: {result.digest}")
    if result.digest_kind == "index":
        typer.echo(f"note: that digest names an index (manifest list) of "
                   f"{', '.join(result.index_platforms)}: only its {result.platform} image "
                   "was verified")
    typer.echo(f"signer: mr_signer {result.sigstruct['mr_signer']}")
    if result.consistency_only:
        typer.echo("note: without --mr-enclave/--mr-signer this checked internal consistency "
                   "only: anyone can sign a consistent image. Compare the values above with "
                   "the ones you registered.")
