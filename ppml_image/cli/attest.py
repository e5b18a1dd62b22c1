"""``ppml-image attest``: records, quotes, policies and registration.

Subcommands register themselves on :data:`attest_app`; library modules load
when a command runs, so ``--help`` stays quick.
"""

from __future__ import annotations

import typer

from ppml_image.cli.common import app

attest_app = typer.Typer(
    help="Register enclave measurements and check SGX quotes against them.",
    no_args_is_help=True)
app.add_typer(attest_app, name="attest")
