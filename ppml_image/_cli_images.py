"""CLI commands for images: bootstrap-os, build-base (build-custom and friends follow)."""

from __future__ import annotations

from pathlib import Path

import typer

from ppml_image.cli import app, emit_json, handles_errors
from ppml_image.images import base, bootstrap, config


@app.command("bootstrap-os", epilog=(
    "Example: ppml-image bootstrap-os --suite bookworm --tag debian:bookworm"))
@handles_errors
def bootstrap_os_cmd(
    suite: str = typer.Option("bookworm", "--suite", help="Debian suite to bootstrap."),
    tag: str | None = typer.Option(None, "--tag", help="Image tag (default: debian:SUITE)."),
    mirror: str = typer.Option(bootstrap.DEFAULT_MIRROR, "--mirror", help="Debian mirror URL."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Build an OS base image from Debian packages (debootstrap) when no registry answers."""
    image_id = bootstrap.bootstrap_os(suite, tag, mirror=mirror, quiet=as_json)
    if as_json:
        emit_json({"image_id": image_id, "tag": tag or f"debian:{suite}"})
    else:
        typer.echo(f"{tag or f'debian:{suite}'} {image_id}")


@app.command("build-base", epilog=(
    "Examples:\n\n"
    "  ppml-image build-base --profile slim --gramine-source tree --gramine-path ./gramine\n\n"
    "  ppml-image build-base --config ppml-image.toml --tag registry.example/ppml/base:1.0 --json"))
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
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the build cache."),
    as_json: bool = typer.Option(False, "--json", help="No progress; print one JSON object."),
) -> None:
    """Build the public ML base image (Gramine, JDK, Spark, LightGBM, scikit-learn...)."""
    cfg = config.load_config(config_file, {
        "tag": tag, "profile": profile, "os_image": os_image, "gramine_source": gramine_source,
        "gramine_path": gramine_path})
    result = base.build_base(cfg, nocache=no_cache, quiet=as_json)
    if as_json:
        emit_json(result.to_json())
        return
    typer.echo(f"image:   {result.image_id}")
    typer.echo(f"tags:    {', '.join(result.tags)}")
    typer.echo(f"size:    {result.size / 1e6:.0f} MB")
    typer.echo(f"libpal:  {result.gramine['libpal']}")
