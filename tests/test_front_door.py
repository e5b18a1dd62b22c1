"""The front door (issue 11.9): what starting the CLI loads, one-line usage
errors, and JSON failures for pipelines. Speed itself is measured by
`make bench`, never asserted here: these tests check the causes (which
modules a command imports), which do not depend on the machine's load."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMON, assert_one_line_error, run_cli, write_manifest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PACKAGE = Path(__file__).resolve().parent.parent / "ppml_image"
HEAVY = ("docker", "requests", "rich", "jinja2", "yaml", "cryptography", "pkcs11",
         "kubernetes", "pydantic", "urllib3")
# Modules reported by their full name: parts a command loads only when it needs them.
PARTS = ("cryptography.x509", "ppml_image.sgx.manifest.policy",
         "ppml_image.sgx.manifest.templating", "ppml_image.sgx.manifest.python_helpers")


def _loaded_by(*args: str) -> set[str]:
    """The HEAVY modules and PARTS a real `ppml-image ARGS` run has imported when it exits."""
    probe = (
        "import atexit, json, sys\n"
        f"heavy = {HEAVY!r}\n"
        f"parts = {PARTS!r}\n"
        "atexit.register(lambda: sys.stderr.write('\\nLOADED ' + json.dumps(sorted(\n"
        "    ({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "    | (set(sys.modules) & set(parts)))) + '\\n'))\n"
        "from ppml_image.cli import main\n"
        f"main({list(args)!r})\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False, timeout=120)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED "))
    return set(json.loads(line[len("LOADED "):]))


@pytest.mark.parametrize("args", [["--help"], ["sign", "--help"], ["build-custom", "--help"],
                                  ["secrets", "tls", "--help"], ["--version"]])
def test_help_loads_no_library(args: list[str]) -> None:
    assert _loaded_by(*args) == set()


def _sign_loads(tmp_path: Path, rootfs: Path, key: Path, *extra: str) -> set[str]:
    """What a real `sign` of a finished manifest loads, with *extra* options."""
    loaded = _loaded_by("sign", "-m", str(write_manifest(tmp_path)),
                        "-o", str(tmp_path / "a.manifest.sgx"),
                        "--libpal", str(COMMON / "fake_libpal.so"), "-k", str(key),
                        "--chroot", str(rootfs), *extra)
    assert (tmp_path / "a.sig").is_file()
    assert "cryptography" in loaded  # the probe sees what is loaded
    return loaded


def test_sign_loads_only_what_signing_needs(tmp_path: Path, rootfs: Path,
                                            enclave_key: Path) -> None:
    loaded = _sign_loads(tmp_path, rootfs, enclave_key)
    # No engine client, no HTTP stack, no YAML, no token library, no pretty printer.
    assert loaded & {"docker", "requests", "urllib3", "rich", "yaml", "pkcs11", "kubernetes",
                     "pydantic"} == set(), loaded
    # A finished manifest needs no template engine, a PEM key no X.509, and
    # a signing without --release no release policy.
    assert loaded & {"jinja2", *PARTS} == set(), loaded


def test_a_release_signing_loads_the_policy(tmp_path: Path, rootfs: Path,
                                            enclave_key: Path) -> None:
    assert "ppml_image.sgx.manifest.policy" in _sign_loads(tmp_path, rootfs, enclave_key,
                                                           "--release")


@pytest.mark.parametrize("module", ["ppml_image.images.enclave.verify",
                                    "ppml_image.images.enclave.custom"])
def test_verify_and_sign_image_load_no_template_engine(module: str) -> None:
    """verify and sign-image read finished manifests: jinja2 and the Python
    helpers are for build-custom's and build-base's rendering only."""
    probe = (f"import sys, {module}\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jinja2'\n"
             "             or m.endswith(('.templating', '.python_helpers'))))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _command_modules() -> list[Path]:
    return sorted(m for m in (PACKAGE / "cli").glob("*.py") if m.name != "__init__.py")


def test_no_import_cycle_between_cli_and_command_modules() -> None:
    """Command modules take the app from cli.common, never from the package that imports them."""
    modules = _command_modules()
    assert len(modules) >= 5
    siblings = {m.stem for m in modules}
    for module in modules:
        for name in _imports(module):
            if name.startswith("ppml_image.cli."):
                assert name.split(".")[2] in siblings, (module.name, name)
    common = _imports(PACKAGE / "cli/common.py")
    assert not any(name.startswith("ppml_image.cli") for name in common), common


def test_each_command_module_imports_alone() -> None:
    for module in _command_modules():
        name = f"ppml_image.cli.{module.stem}"
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                              text=True, check=False, timeout=60)
        assert proc.returncode == 0, (name, proc.stderr)


@pytest.mark.parametrize("args,fragments", [
    (["sign", "-m", "x"], ["sign:", "--output", "ppml-image sign --help"]),
    (["no-such-command"], ["no-such-command"]),
    (["secrets", "tls", "--bogus"], ["secrets tls:", "--bogus"]),
    (["keygen", "a", "b"], ["keygen:", "unexpected extra argument"]),
    (["sigstruct"], ["sigstruct:", "SIGFILE"]),
])
def test_usage_errors_are_one_line_with_exit_2(args: list[str], fragments: list[str]) -> None:
    result = run_cli(*args)
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2
    assert result.stdout == ""


def _failure(stdout: str) -> dict[str, object]:
    data = json.loads(stdout)
    assert isinstance(data, dict)
    return data


def test_json_failure_object_for_a_library_error(tmp_path: Path, enclave_key: Path) -> None:
    missing = tmp_path / "missing.manifest"
    result = run_cli("sign", "-m", missing, "-o", tmp_path / "a.manifest.sgx",
                     "--libpal", COMMON / "fake_libpal.so", "-k", enclave_key, "--json")
    assert_one_line_error(result, str(missing))
    assert result.returncode == 1
    failure = _failure(result.stdout)
    assert failure == {"ok": False, "error": result.stderr.strip()[len("ppml-image: error: "):],
                       "exit_code": 1}


def test_json_failure_object_for_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("sign", "--json", "-m", tmp_path / "m")
    assert result.returncode == 2
    failure = _failure(result.stdout)
    assert failure["ok"] is False and failure["exit_code"] == 2
    assert "--output" in str(failure["error"])


def test_json_failure_object_for_an_option_check(tmp_path: Path) -> None:
    result = run_cli("secrets", "tls", "--out", tmp_path / "k", "--days", "1e20", "--json")
    assert result.returncode == 2
    assert _failure(result.stdout)["exit_code"] == 2
    assert not (tmp_path / "k").exists()


def test_without_json_a_failure_prints_nothing_on_stdout(tmp_path: Path) -> None:
    result = run_cli("secrets", "tls", "--out", tmp_path / "k", "--days", "1e20")
    assert result.returncode == 2 and result.stdout == ""


def test_json_after_double_dash_is_not_ours(tmp_path: Path) -> None:
    """After `--`, a `--json` is an argument (e.g. of the command `run` starts), not ours."""
    result = run_cli("sigstruct", "--", "--json")
    assert_one_line_error(result, "--json")
    assert result.stdout == ""


def test_an_inconsistent_private_key_is_refused(tmp_path: Path, rootfs: Path) -> None:
    """OpenSSL's slow key check is skipped; our own check of the numbers must hold."""
    good = rsa.generate_private_key(public_exponent=3, key_size=3072).private_numbers()
    broken = rsa.RSAPrivateNumbers(p=good.p, q=good.q, d=good.d, dmp1=good.dmp1 ^ 2,
                                   dmq1=good.dmq1, iqmp=good.iqmp,
                                   public_numbers=good.public_numbers)
    key = broken.private_key(unsafe_skip_rsa_key_validation=True)
    path = tmp_path / "broken.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("sign", "-m", write_manifest(tmp_path), "-o", out / "a.manifest.sgx",
                     "--libpal", COMMON / "fake_libpal.so", "-k", path, "--chroot", rootfs)
    assert_one_line_error(result, str(path), "not a valid RSA private key")
    assert list(out.iterdir()) == []
