"""Shared rules for secret output folders and passwords.

Folders are 0700 and files 0600 from creation. A password comes from a file
or an interactive prompt, never from the command line (``ps`` and shell
history would show it).
"""

from __future__ import annotations

import getpass
import os
import shutil
import sys
from pathlib import Path

from ppml_image._fs import make_private_dirs, write_private
from ppml_image.errors import PpmlError, UsageError

MIN_PASSWORD = 8


class SecretsError(PpmlError):
    """Secret material could not be made or read."""


def prepare_folder(out: Path, *, force: bool) -> None:
    """Create *out* (0700); an existing non-empty folder needs *force*."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            if not force:
                raise UsageError(f"{out}: folder exists and is not empty; pass --force to "
                                 "replace its contents")
            shutil.rmtree(out)
    make_private_dirs(out)
    os.chmod(out, 0o700)


def read_password(password_file: Path | None, *, confirm: bool = True) -> bytes:
    """The password from *password_file* (first line), else a hidden prompt."""
    if password_file is not None:
        try:
            lines = Path(password_file).read_bytes().splitlines()
        except OSError as exc:
            raise UsageError(f"{password_file}: cannot read password file: "
                             f"{exc.strerror}") from None
        password = lines[0] if lines else b""
        where = str(password_file)
    elif sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password again: ") != first:
            raise UsageError("the two passwords differ")
        password, where = first.encode(), "the prompt"
    else:
        raise UsageError("no password: give --password-file (standard input is not a "
                         "terminal to prompt on)")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"{where}: the password must have at least {MIN_PASSWORD} characters")
    return password


def save(out: Path, name: str, data: bytes) -> Path:
    path = out / name
    write_private(path, data, overwrite=True)
    return path
