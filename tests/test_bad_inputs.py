"""Every case of THE table of bad inputs (tests/bad_inputs.py), run in full.

Every case must give ONE line on stderr naming the user's file, exit 1 or 2
(never 70), no traceback, and write nothing. Add new cases to the table.

The commands run in-process through the real CLI (typer's runner: same
parsing, error handling and exit codes as the console script), so the table
stays fast; test_every_case_kind_in_a_subprocess checks a few the slow way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from bad_inputs import CASES, ISSUE_11_5, PAL, Case, run_inprocess
from conftest import Result, assert_one_line_error, run_cli

__all__ = ["run_inprocess"]  # other tests run commands the same way


def _fill(text: str, work: Path, rootfs: Path, key: Path) -> str:
    return (text.replace("{w}", str(work)).replace("{rootfs}", str(rootfs))
            .replace("{key}", str(key)).replace("{pal}", str(PAL)))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o444}


def _run(case: Case, tmp_path: Path, rootfs: Path, key: Path,
         run: Callable[..., Result] = run_inprocess) -> tuple[Result, Path]:
    work = tmp_path / "w"
    (work / "out").mkdir(parents=True)
    for name, data in case.files.items():
        (work / name).write_bytes(_fill(data.decode("utf-8", "surrogateescape"), work, rootfs,
                                        key).encode("utf-8", "surrogateescape"))
    if case.setup:
        case.setup(work)
    before = snapshot(tmp_path)
    result = run(*(_fill(a, work, rootfs, key) for a in case.args), env=case.env)
    assert snapshot(tmp_path) == before, "a failed command must write nothing"
    assert list((work / "out").iterdir()) == [], "a failed command must write nothing"
    return result, work


def _check(case: Case, result: Result, work: Path, rootfs: Path, key: Path) -> None:
    assert_one_line_error(result, *(_fill(f, work, rootfs, key) for f in case.fragments))
    assert result.returncode == case.code, result
    assert "s3cret" not in result.stderr
    assert ".tmp" not in result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(case: Case, tmp_path: Path, rootfs: Path,
                               enclave_key: Path) -> None:
    result, work = _run(case, tmp_path, rootfs, enclave_key)
    _check(case, result, work, rootfs, enclave_key)


def test_the_table_holds_every_case_of_the_issue() -> None:
    ids = {c.id for c in CASES}
    assert len(ids) == len(CASES), "case ids must be unique"
    for item, cases in ISSUE_11_5.items():
        assert cases and set(cases) <= ids, item


_SUBPROCESS = [c for c in CASES if c.id in (
    "include", "deep-arrays", "pal-memsz-2-40", "define-not-utf8", "release-debug-and-insecure",
    "empty-passphrase-file-for-an-encrypted-key", "days-1e20", "sign-output-is-a-folder")]


@pytest.mark.parametrize("case", _SUBPROCESS, ids=[c.id for c in _SUBPROCESS])
def test_every_case_kind_in_a_subprocess(case: Case, tmp_path: Path, rootfs: Path,
                                         enclave_key: Path) -> None:
    """The console script itself, for a sample of the table."""
    result, work = _run(case, tmp_path, rootfs, enclave_key, run_cli)
    _check(case, result, work, rootfs, enclave_key)
