"""One table of hostile and broken inputs to `manifest` and `sign`.

Every case must give ONE line on stderr naming the user's file, exit 1 or 2
(never 70), no traceback, and write nothing. Add new cases to BAD_INPUTS.

The commands run in-process through the real CLI (typer's runner: same
parsing, error handling and exit codes as the console script), so the table
stays fast; test_every_case_kind_in_a_subprocess checks a few the slow way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import COMMON, Result, assert_one_line_error, run_cli
from typer.testing import CliRunner

from ppml_image.cli import _register_commands, app

PAL = COMMON / "fake_libpal.so"
HEADER = ('libos.entrypoint = "/app/bin/app"\n'
          'sgx.trusted_files = ["file:/app/bin/app"]\n')


def elf(*segments: tuple[int, int, int, int, int], entry: int = 0x1000) -> bytes:
    """An ELF64 x86-64 file with PT_LOAD (offset, vaddr, filesz, memsz, flags) segments."""
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 3, 62, 1,
                         entry, 64, 0, 0, 64, 56, len(segments), 64, 0, 0)
    table = b"".join(struct.pack("<IIQQQQQQ", 1, flags, off, vaddr, vaddr, filesz, memsz,
                                 0x1000) for off, vaddr, filesz, memsz, flags in segments)
    data = header + table
    end = max(off + filesz for off, _, filesz, _, _ in segments)
    return data + bytes(max(0, end - len(data)))


@dataclass
class Bad:
    """A bad input: *text* is the template (`manifest`) or manifest (`sign`)."""

    id: str
    command: str
    text: str
    fragments: tuple[str, ...]
    code: int = 1
    args: tuple[str, ...] = ()
    pal: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)
    key: bool = True  # sign: pass --key (not with --export-signing-data)


BAD_INPUTS = [
    # --- templates: no code, no other files, bounded (issue 8.3, 11.5) ------
    Bad("include", "manifest", 'a = 1\n{% include "/etc/passwd" %}\n',
        ("{% include %}", "not allowed", ":2")),
    Bad("import", "manifest", '{% import "x.j2" as x %}\n', ("{% import %}", "not allowed")),
    Bad("from-import", "manifest", '{% from "x.j2" import y %}\n', ("not allowed",)),
    Bad("extends", "manifest", '{% extends "base.j2" %}\n', ("{% extends %}", "not allowed")),
    Bad("division-by-zero", "manifest", "a = 1\nb = {{ 1 / 0 }}\n", ("division by zero", ":2")),
    Bad("floor-division-by-zero", "manifest", "b = {{ 7 // 0 }}\n", ("division by zero",)),
    Bad("recursion", "manifest", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}\n",
        ("recursion",)),
    Bad("get-path-unknown", "manifest", "a = \"{{ python.get_path('x') }}\"\n",
        ("python.get_path('x')", "no such path")),
    Bad("python-internals", "manifest",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}\n", ("not allowed in a template",)),
    Bad("os-popen", "manifest",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}\n", ("not allowed",)),
    Bad("mutate-list", "manifest", "{% set x = [] %}{{ x.append(1) }}\n", ("not allowed",)),
    Bad("passphrase-in-env", "manifest", 'a = "{{ env.PPML_IMAGE_KEY_PASSPHRASE }}"\n',
        ("undefined", "PPML_IMAGE_KEY_PASSPHRASE"), env={"PPML_IMAGE_KEY_PASSPHRASE": "s3cret"}),
    Bad("string-times-huge", "manifest", "{{ 'a' * 10**12 }}\n", ("template refused", "'*'")),
    Bad("power-huge", "manifest", "{{ 2 ** (10**9) }}\n", ("template refused", "'**'")),
    Bad("range-huge", "manifest", "{{ range(10**12) | list }}\n", ("range too big",)),
    Bad("nested-loops", "manifest",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n",
        ("loops run more than",)),
    Bad("output-cap", "manifest",
        "{% for i in range(100000) %}{{ 'a' * 10000000 }}{% endfor %}\n", ("256 MiB",)),
    Bad("concat-doubling", "manifest",
        "{% set ns = namespace(s='a') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}\n", ("'~'", "limited")),
    Bad("center-huge", "manifest", "{{ 'a'.center(10**10) }}\n", (".center()",)),
    Bad("format-width", "manifest", "{{ '{:>10000000000}'.format(1) }}\n", ("width",)),
    Bad("percent-repeat", "manifest", "{{ '%(a)s' * 100000 % {'a': 'a' * 1000000} }}\n",
        ("'%' format",)),
    Bad("lipsum", "manifest", "{{ lipsum(10**7) }}\n", ("undefined", "lipsum")),
    Bad("macro-fork-bomb", "manifest",
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}"
        "{{ f(60) }}\n", ("calls",)),
    Bad("compare-big-strings", "manifest",
        "{% set s = 'a' * 16000000 %}{% for i in range(100000) %}"
        "{% if s == s ~ '' %}{% endif %}{% endfor %}\n", ("string and list operations",)),
    Bad("print-huge-list", "manifest",
        "{% set s = 'a' * 16000000 %}{{ [s] * 1000000 }}\n", ("printed value", "as text")),
    Bad("string-filter-huge-list", "manifest",
        "{% set s = 'a' * 16000000 %}{{ ([s] * 1000000) | string }}\n", ("'string' filter",)),
    Bad("list-append-loop", "manifest",
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
        "{% set ns.l = ns.l + [i] %}{% endfor %}\n", ("string and list operations",)),
    Bad("compare-big-lists", "manifest",
        "{% set s = 'a' * 16000000 %}{% set t = 'a' * 15999999 ~ 'a' %}"
        "{{ [s] * 1000000 == [t] * 1000000 }}\n", ("string and list operations",)),
    Bad("compare-nested-lists", "manifest",
        "{% set s = 'a' * 16000000 %}{% set t = 'a' * 15999999 ~ 'b' %}"
        "{{ [[s]] * 1000000 == [[t]] * 1000000 }}\n", ("string and list operations",)),
    Bad("list-count-big-items", "manifest",
        "{% set s = 'a' * 16000000 %}{% set t = 'a' * 15999999 ~ 'b' %}"
        "{{ ([s] * 1000000).count(t) }}\n", ("string and list operations",)),
    Bad("strict-int", "manifest", "sgx.isvsvn = {{ '2x' | int }}\n", ("'2x' is not an integer",)),
    Bad("toml-nul", "manifest", 'a = {{ "x\\x00y" | toml }}\n', ("NUL",)),
    Bad("define-not-utf8", "manifest", "a = 1\n", ("-D", "UTF-8"), code=2,
        args=("-D", "x=\udcff")),
    Bad("define-without-name", "manifest", "a = 1\n", ("-D", "needs a name"), code=2,
        args=("-D", "=1")),
    # --- manifests: TOML limits (issue 11.5) --------------------------------
    Bad("deep-arrays", "sign", HEADER + "x = " + "[" * 200_000 + "]" * 200_000 + "\n",
        ("nested more than 64",)),
    Bad("deep-inline-tables", "sign", HEADER + "x = " + "{a=" * 200_000 + "1"
        + "}" * 200_000 + "\n", ("nested more than 64",)),
    Bad("deep-dotted-key", "sign", HEADER + "x" + ".a" * 200_000 + " = 1\n",
        ("dotted key",)),
    Bad("deep-table-header", "sign", HEADER + "[x" + ".a" * 200_000 + "]\n", ("dotted key",)),
    Bad("deep-manifest-from-template", "manifest",
        'libos.entrypoint = "/app/bin/app"\nx = {{ "[" * 100 }}{{ "]" * 100 }}\n',
        ("nested more than 64",)),
    Bad("integer-2-64", "sign", HEADER + "sgx.max_threads = 18446744073709551616\n",
        ("64 bits",)),
    Bad("integer-5000-digits", "sign", HEADER + "x = " + "9" * 5000 + "\n",
        ("invalid TOML",)),
    Bad("size-2-64", "sign", HEADER + 'sgx.enclave_size = "0x10000000000000000"\n',
        ("x86-64",)),
    Bad("size-2-64-G", "sign", HEADER + 'sgx.enclave_size = "17179869184G"\n', ("x86-64",)),
    Bad("size-above-2-47", "sign", HEADER + 'sgx.edmm_enable = true\n'
        'sgx.enclave_size = "0x1000000000000"\n', ("256 TiB", "128 TiB")),
    Bad("size-huge-digits", "sign", HEADER + 'sgx.enclave_size = "' + "9" * 100 + '"\n',
        ("not a size",)),
    # --- enclave limits and layout (issue 10.5, 10.6, 11.5) -----------------
    Bad("non-edmm-above-limit", "sign", HEADER + 'sgx.enclave_size = "2048G"\n',
        ("2 TiB", "--max-enclave-size")),
    Bad("non-edmm-above-given-limit", "sign", HEADER + 'sgx.enclave_size = "256M"\n',
        ("256 MiB", "128 MiB"), args=("--max-enclave-size", "128M")),
    Bad("max-enclave-size-bad", "sign", HEADER, ("--max-enclave-size",), code=2,
        args=("--max-enclave-size", "lots")),
    Bad("pal-memsz-2-40", "sign", HEADER + 'sgx.enclave_size = "256M"\n',
        ("libpal.so", "PAL segments span 1 TiB", "256 MiB"),
        pal=elf((0, 0, 0x200, 1 << 40, 5))),
    Bad("pal-fixed-beyond-enclave", "sign", HEADER + 'sgx.enclave_size = "64M"\n',
        ("libpal.so", "beyond the end"), pal=elf((0, 0x8000000, 0x200, 0x1000, 5))),
    Bad("pal-segments-overlap", "sign", HEADER + 'sgx.enclave_size = "64M"\n',
        ("overlap",), pal=elf((0, 0, 0x200, 0x2000, 5), (0x200, 0x1000, 0x100, 0x1000, 6))),
    Bad("pal-in-the-heap", "sign", HEADER + 'sgx.enclave_size = "64M"\n',
        ("lies in the heap",), pal=elf((0, 0x3FFF000, 0x200, 0x1000, 5), entry=0x3FFF000)),
    Bad("pal-measured-part-huge", "sign", HEADER + 'sgx.edmm_enable = true\n'
        'sgx.enclave_size = "64G"\n', ("measured part",),
        pal=elf((0, 0, 0x200, 40 << 30, 5))),
    # --- the release policy (issue 8.5) --------------------------------------
    Bad("release-debug-and-insecure", "sign", HEADER + "sgx.debug = true\n"
        "loader.insecure__use_cmdline_argv = true\n"
        'sgx.file_check_policy = "allow_all_but_log"\n'
        'sgx.allowed_files = ["file:/app/lib/", "file:/app/lib/libfoo.so"]\n',
        ("release policy", "sgx.debug", "loader.insecure__use_cmdline_argv",
         "allow_all_but_log", "sgx.allowed_files[0]", "sgx.allowed_files[1]"),
        args=("--release",)),
    Bad("release-export-signing-data", "sign", HEADER + "sgx.debug = true\n",
        ("release policy", "sgx.debug"), args=("--release", "--export-signing-data", "{out}/a.tbs"),
        key=False),
]


def run_inprocess(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """``ppml-image ARGS`` in this process, without PPML_IMAGE_KEY_PASSPHRASE
    unless *env* sets it."""
    _register_commands()
    environment: dict[str, str | None] = {"PPML_IMAGE_KEY_PASSPHRASE": None, **(env or {})}
    result = CliRunner().invoke(app, [str(a) for a in args], env=environment)
    return Result(result.exit_code, result.stdout, result.stderr)


def _run(case: Bad, tmp_path: Path, rootfs: Path, key: Path,
         run: Callable[..., Result] = run_inprocess) -> tuple[Result, Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    pal = PAL
    if case.pal is not None:
        pal = tmp_path / "libpal.so"
        pal.write_bytes(case.pal)
    if case.command == "manifest":
        source = tmp_path / "app.manifest.j2"
        source.write_text(case.text, encoding="utf-8")
        result = run("manifest", source, out / "app.manifest", "--chroot", rootfs,
                     *case.args, env=case.env)
    else:
        source = tmp_path / "app.manifest"
        source.write_text(case.text, encoding="utf-8")
        args = [a.replace("{out}", str(out)) for a in case.args]
        result = run("sign", "--manifest", source, "--output", out / "app.manifest.sgx",
                     "--libpal", pal, *(("--key", key) if case.key else ()), "--chroot", rootfs,
                     "--date", "2024-01-01", *args, env=case.env)
    return result, source, out


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_bad_input_is_one_line(case: Bad, tmp_path: Path, rootfs: Path,
                               enclave_key: Path) -> None:
    result, source, out = _run(case, tmp_path, rootfs, enclave_key)
    _check(case, result, source, out)


def _check(case: Bad, result: Result, source: Path, out: Path) -> None:
    assert_one_line_error(result, *case.fragments)
    assert result.returncode == case.code, result
    if case.code == 1:
        assert str(source) in result.stderr
    assert list(out.iterdir()) == [], "a failed command must write nothing"
    assert "s3cret" not in result.stderr


_SUBPROCESS = [c for c in BAD_INPUTS if c.id in (
    "include", "deep-arrays", "pal-memsz-2-40", "define-not-utf8", "release-debug-and-insecure")]


@pytest.mark.parametrize("case", _SUBPROCESS, ids=[c.id for c in _SUBPROCESS])
def test_every_case_kind_in_a_subprocess(case: Bad, tmp_path: Path, rootfs: Path,
                                         enclave_key: Path) -> None:
    """The console script itself, for a sample of the table."""
    result, source, out = _run(case, tmp_path, rootfs, enclave_key, run_cli)
    _check(case, result, source, out)
