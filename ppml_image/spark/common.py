"""Shared rules for secret output folders and passwords.

Folders are 0700 and files 0600 from creation. A password comes from a file
or an interactive prompt, never from the command line (``ps`` and shell
history would show it).

Outputs are generated in a private staging folder beside the output and
swapped in only after everything succeeded (``_fs.staged_folder``): an error,
Ctrl-C or SIGTERM leaves the old output as it was, and ``--force`` replaces
only the files the command writes.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Collection
from pathlib import Path

from ppml_image._fs import check_output_folder, read_capped, write_private
from ppml_image.errors import PpmlError, UsageError

MIN_PASSWORD = 8
# RSA PKCS#1 v1.5 encryption with the 3072-bit key of `secrets password`
# carries at most 384 - 11 bytes.
MAX_PASSWORD = 373
PASSWORD_FILE_LIMIT = 64 * 1024  # /dev/zero as a password file must not eat the memory


class SecretsError(PpmlError):
    """Secret material could not be made or read."""


def check_output(out: Path, ours: Collection[str], *, force: bool,
                 keep: Collection[str] = ()) -> None:
    """Refuse an output folder we may not replace, before any prompt or long work."""
    check_output_folder(out, ours, force=force, keep=keep)


def password_problem(password: bytes, *, keystore: bool) -> str | None:
    """Why *password* cannot be used, or None.

    Every password must be UTF-8 text without control characters (a password
    file with a stray byte is a mistake, and a NUL cannot reach a child), of
    8 to 373 bytes (the PKCS#1 v1.5 limit of ``secrets password``, which
    carries the same password). A *keystore* password must also be printable
    ASCII: Java's PKCS#12 keystores (Spark, keytool) refuse to open one made
    with anything else ("keystore password was incorrect").
    """
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return "the password is not UTF-8 text"
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0x80 <= ord(c) < 0xA0 for c in text):
        return "the password contains a control character"
    if len(text) < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return (f"the password has {len(password)} bytes; at most {MAX_PASSWORD} fit the "
                "RSA-3072 encryption of `secrets password`")
    if keystore and not text.isascii():
        return ("the password is not ASCII; Java keystores (Spark, keytool) accept only "
                "printable ASCII passwords")
    return None


def check_password(password: bytes, where: str, *, keystore: bool) -> None:
    problem = password_problem(password, keystore=keystore)
    if problem:
        raise UsageError(f"{where}: {problem}")


def read_password(password_file: Path | None, *, confirm: bool = True,
                  keystore: bool = False) -> bytes:
    """The password from *password_file* (first line), else a hidden prompt; checked."""
    if password_file is not None:
        # A FIFO (<(...)) works too; /dev/zero or a huge file is refused.
        data = read_capped(password_file, PASSWORD_FILE_LIMIT, "password file", UsageError)
        lines = data.splitlines()
        password = lines[0] if lines else b""
        where = str(password_file)
    elif sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password again: ") != first:
            raise UsageError("the two passwords differ")
        password, where = first.encode("utf-8", "surrogateescape"), "the prompt"
    else:
        raise UsageError("no password: give --password-file (standard input is not a "
                         "terminal to prompt on)")
    check_password(password, where, keystore=keystore)
    return password


def save(out: Path, name: str, data: bytes) -> Path:
    path = out / name
    write_private(path, data, overwrite=True)
    return path
