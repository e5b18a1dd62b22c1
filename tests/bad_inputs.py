"""THE table of bad inputs (issue 11.5): every hostile or broken input a
host-side command must answer with ONE line on stderr naming the user's
file, exit 1 or 2 (never 70), no traceback, and nothing written.

tests/test_bad_inputs.py runs every case, in-process through the real CLI
(typer's runner: same parsing, error handling and exit codes as the console
script). Add new cases here. Domain tables elsewhere (test_tree_safety,
test_spark_outputs, test_hsm, test_offline_signing, test_sign_outputs) keep
the cases that need a subprocess, a token or a race; every case of the issue's
list is here (see ISSUE_11_5).

Placeholders in arguments and fragments: {w} the work folder (its out/
must stay empty), {key} a fresh enclave key, {rootfs} a small chroot,
{pal} the test PAL.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conftest import COMMON, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from ppml_image.cli import _register_commands, app

PAL = COMMON / "fake_libpal.so"
HEADER = ('libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
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
        'libos.entrypoint = "/app/bin/app"\nfs.mounts = []\nx = {{ "[" * 100 }}{{ "]" * 100 }}\n',
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


@dataclass
class Case:
    """One bad input: a command line, the files it needs, and the one line it must give."""

    id: str
    args: tuple[str, ...]
    fragments: tuple[str, ...]
    code: int = 1
    files: dict[str, bytes] = field(default_factory=dict)  # written under {w} first
    setup: Callable[[Path], None] | None = None  # more preparation, given {w}
    env: dict[str, str] = field(default_factory=dict)


def _from_bad(bad: Bad) -> Case:
    """A manifest/template case of the compact form above, as a full case."""
    if bad.command == "manifest":
        files = {"app.manifest.j2": bad.text.encode()}
        args: tuple[str, ...] = ("manifest", "{w}/app.manifest.j2", "{w}/out/app.manifest",
                                 "--chroot", "{rootfs}", *bad.args)
        source = "{w}/app.manifest.j2"
    else:
        files = {"app.manifest": bad.text.encode()}
        pal = "{pal}"
        if bad.pal is not None:
            files["libpal.so"] = bad.pal
            pal = "{w}/libpal.so"
        args = ("sign", "--manifest", "{w}/app.manifest", "--output",
                "{w}/out/app.manifest.sgx", "--libpal", pal,
                *(("--key", "{key}") if bad.key else ()), "--chroot", "{rootfs}",
                "--date", "2024-01-01", *(a.replace("{out}", "{w}/out") for a in bad.args))
        source = "{w}/app.manifest"
    fragments = bad.fragments + ((source,) if bad.code == 1 else ())
    return Case(bad.id, args, fragments, bad.code, files, env=bad.env)


def _sign(*extra: str, chroot: bool = True,
          output: str = "{w}/out/app.manifest.sgx") -> tuple[str, ...]:
    return ("sign", "--manifest", "{w}/app.manifest", "--output", output,
            "--libpal", "{pal}", "--date", "2024-01-01",
            *(("--chroot", "{rootfs}") if chroot else ()), *extra)


def _manifest(text: str) -> dict[str, bytes]:
    return {"app.manifest": text.encode()}


def _non_utf8_name(work: Path) -> None:
    folder = work.parent / "rootfs/app/data"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9"), "wb") as handle:
        handle.write(b"a latin-1 name")


def _encrypted_key(work: Path) -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    (work / "encrypted.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"correct horse")))


_ENTRY = ('libos.entrypoint = "/app/bin/app"\nfs.mounts = []\n'
          'sgx.enclave_size = "64M"\nsgx.max_threads = 2\n')
_TLS = ("secrets", "tls", "--out", "{w}/out/keys", "--password-file", "{w}/pw")
_PASSWORD = ("secrets", "password", "--out", "{w}/out/password", "--password-file", "{w}/pw")

MORE_CASES = [
    # --- trusted files and the entrypoint (issue 11.5) -----------------------
    Case("non-utf8-name-in-trusted-folder",
         _sign("--key", "{key}"), ("not UTF-8", "/app/data", "{w}/app.manifest"),
         files=_manifest(_ENTRY + 'sgx.trusted_files = ["file:/app/data/"]\n'),
         setup=_non_utf8_name),
    Case("entrypoint-uri-is-a-folder", _sign("--key", "{key}"),
         ("must be a file", "file:/app/", "{w}/app.manifest"),
         files=_manifest(_ENTRY + 'loader.entrypoint.uri = "file:/app/"\n')),
    Case("entrypoint-uri-is-a-folder-without-chroot", _sign("--key", "{key}", chroot=False),
         ("must be a file", "/app/", "{w}/app.manifest"),
         files=_manifest(_ENTRY + 'loader.entrypoint.uri = "file:/app/"\n')),
    Case("read-error-on-a-trusted-file", _sign("--key", "{key}", chroot=False),
         # Refused before the read now: a trusted file under /proc (issue 16.5).
         ("/proc/self/mem", "under /proc", "{w}/app.manifest"),
         files=_manifest(_ENTRY + 'loader.entrypoint.uri = "file:{rootfs}/app/bin/app"\n'
                         'sgx.trusted_files = ["file:/proc/self/mem"]\n')),
    # --- keys and passphrases (issue 11.5, 11.3) -----------------------------
    Case("empty-passphrase-file-for-an-encrypted-key",
         _sign("--key", "{w}/encrypted.pem", "--passphrase-file", "{w}/empty"),
         ("{w}/empty", "passphrase file is empty"), files={"empty": b""}, setup=_encrypted_key),
    Case("blank-first-line-passphrase-file",
         _sign("--key", "{w}/encrypted.pem", "--passphrase-file", "{w}/blank"),
         ("{w}/blank", "empty on its first line"), files={"blank": b"\ncorrect horse\n"},
         setup=_encrypted_key),
    Case("empty-passphrase-variable", _sign("--key", "{w}/encrypted.pem"),
         ("PPML_IMAGE_KEY_PASSPHRASE", "empty"), setup=_encrypted_key,
         env={"PPML_IMAGE_KEY_PASSPHRASE": ""}),
    Case("key-is-dev-zero", _sign("--key", "/dev/zero"), ("/dev/zero", "1 MiB")),
    Case("libpal-is-dev-zero", ("sign", "--manifest", "{w}/app.manifest", "--output",
                                "{w}/out/a.manifest.sgx", "--libpal", "/dev/zero", "--key",
                                "{key}"), ("/dev/zero", "512 MiB"),
         files=_manifest(_ENTRY)),
    Case("manifest-is-dev-zero", ("sign", "--manifest", "/dev/zero", "--output",
                                  "{w}/out/a.manifest.sgx", "--libpal", "{pal}", "--key",
                                  "{key}"), ("/dev/zero", "256 MiB")),
    Case("sig-is-dev-zero", ("sigstruct", "/dev/zero"), ("/dev/zero", "1808 bytes")),
    # --- outputs (issue 11.2, 11.5) ------------------------------------------
    Case("sign-output-is-a-folder", _sign("--key", "{key}", output="{w}/d"),
         ("{w}/d", "is a folder"), code=2, files=_manifest(_ENTRY),
         setup=lambda w: (w / "d").mkdir()),
    Case("sign-output-in-proc", _sign("--key", "{key}", output="/proc/a.manifest.sgx"),
         ("/proc/a.manifest.sgx", "proc"), code=2, files=_manifest(_ENTRY)),
    Case("tls-output-is-a-file", ("secrets", "tls", "--out", "{w}/afile", "--password-file",
                                  "{w}/pw"), ("{w}/afile", "not a folder"), code=2,
         files={"afile": b"mine", "pw": b"long enough\n"}),
    Case("password-output-is-a-file", ("secrets", "password", "--out", "{w}/afile",
                                       "--password-file", "{w}/pw"),
         ("{w}/afile", "not a folder"), code=2, files={"afile": b"mine", "pw": b"long enough\n"}),
    Case("k8s-output-is-a-file", ("k8s", "spark-templates", "--image", "x:1", "-o", "{w}/afile"),
         ("{w}/afile", "not a folder"), code=2, files={"afile": b"mine"}),
    # --- secrets (issue 11.5) -------------------------------------------------
    Case("days-1e20", (*_TLS, "--days", "1e20"), ("--days", "whole number"), code=2,
         files={"pw": b"long enough\n"}),
    Case("days-past-9999", (*_TLS, "--days", "99999999"), ("--days", "9999-12-31"), code=2,
         files={"pw": b"long enough\n"}),
    Case("tls-password-over-373-bytes", _TLS, ("{w}/pw", "374 bytes", "373"), code=2,
         files={"pw": b"a" * 374 + b"\n"}),
    Case("password-over-373-bytes-utf8", _PASSWORD, ("{w}/pw", "373"), code=2,
         files={"pw": "é".encode() * 187 + b"\n"}),
    Case("tls-password-over-the-keytool-limit", _TLS, ("{w}/pw", "ASCII", "keytool"), code=2,
         files={"pw": "pässwörd-long".encode() + b"\n"}),
    Case("password-file-is-dev-zero", ("secrets", "password", "--out", "{w}/out/password",
                                       "--password-file", "/dev/zero"),
         ("/dev/zero", "64 KiB"), code=2),
]

CASES = [_from_bad(b) for b in BAD_INPUTS] + MORE_CASES

# Each item of issue 11.5's list, and the cases that stand for it.
ISSUE_11_5 = {
    "deep TOML nesting": ["deep-arrays", "deep-inline-tables", "deep-dotted-key",
                          "deep-table-header"],
    "sizes of 2^64 and more": ["size-2-64", "size-2-64-G", "integer-2-64"],
    "{% include %} and {% import %}": ["include", "import", "from-import"],
    "python.get_path('x')": ["get-path-unknown"],
    "division by zero and recursion in templates": ["division-by-zero",
                                                    "floor-division-by-zero", "recursion"],
    "a non-UTF-8 file name in a trusted folder": ["non-utf8-name-in-trusted-folder"],
    'loader.entrypoint.uri = "file:/app/"': ["entrypoint-uri-is-a-folder",
                                             "entrypoint-uri-is-a-folder-without-chroot"],
    "an output that is a file where a folder is expected": [
        "tls-output-is-a-file", "password-output-is-a-file", "k8s-output-is-a-file"],
    "--days 1e20": ["days-1e20"],
    "passwords over 373 bytes or the keytool limit": [
        "tls-password-over-373-bytes", "password-over-373-bytes-utf8",
        "tls-password-over-the-keytool-limit"],
    "a PAL whose memory size does not fit the enclave": ["pal-memsz-2-40"],
    "an empty passphrase file for an encrypted key": [
        "empty-passphrase-file-for-an-encrypted-key"],
    "a read error on a trusted file, naming the file": ["read-error-on-a-trusted-file"],
}


def run_inprocess(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """``ppml-image ARGS`` in this process, without PPML_IMAGE_KEY_PASSPHRASE
    unless *env* sets it."""
    _register_commands()
    environment: dict[str, str | None] = {"PPML_IMAGE_KEY_PASSPHRASE": None, **(env or {})}
    result = CliRunner().invoke(app, [str(a) for a in args], env=environment)
    return Result(result.exit_code, result.stdout, result.stderr)
