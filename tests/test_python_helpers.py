"""The ``python.*`` template helpers behave as Gramine 1.9's (issue 12, point 7).

Gramine's ``python.get_sys_path(interpreter)`` runs the interpreter and yields
a ``pathlib.Path`` for every ``sys.path`` entry that exists; its Python
example template calls ``.is_dir()`` on each. On the host ppml-image runs the
interpreter too; for an image, the answers come from what build-base recorded
(see test_python_helpers_image.py for the real engine).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import ManifestError
from ppml_image.sgx.manifest import python_helpers
from ppml_image.sgx.manifest.document import render_template
from ppml_image.sgx.manifest.python_helpers import PythonInfo, TemplateHelperError, run_bounded

# In the style of Gramine's CI-Examples/python/python.manifest.template.
GRAMINE_STYLE = """\
loader.entrypoint.uri = "file:/bin/sh"
libos.entrypoint = "{{ entrypoint }}"
sgx.allowed_files = [
{% for path in python.get_sys_path(entrypoint) %}{% if path.is_dir() %}
  "file:{{ path }}/",
{% else %}
  "file:{{ path }}",
{% endif %}{% endfor %}
]
"""


def gramine_expected(interpreter: str) -> list[str]:
    """What Gramine's template yields: its own algorithm, with the real pathlib."""
    out = subprocess.run([interpreter, "-c", "import sys; print('\\0'.join(p for p in "
                          "sys.path if p), end='')"], capture_output=True, check=True).stdout
    entries = [pathlib.Path(os.fsdecode(p)) for p in out.split(b"\0")]
    return [f"file:{p}/" if p.is_dir() else f"file:{p}" for p in entries if p.exists()]


def render_cli(tmp_path: Path, template: str, *defines: str,
               env: dict[str, str] | None = None,
               python: tuple[str | Path, ...] = ()) -> tuple[object, str]:
    """``manifest`` with *defines*; each of *python* named with ``--python`` (the
    interpreters the template may run: issue 16 point 4)."""
    source = tmp_path / "app.manifest.template"
    source.write_text(template)
    out = tmp_path / "app.manifest"
    named = [arg for path in python for arg in ("--python", str(path))]
    result = run_cli("manifest", source, out, "--no-check", *(f"-D{d}" for d in defines),
                     *named, env=env)
    return result, out.read_text() if out.exists() else ""


def allowed_files(manifest: str) -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return list(tomllib.loads(manifest)["sgx"]["allowed_files"])


def fake_interpreter(folder: Path, script: str, name: str = "fake-python") -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------
# get_sys_path on the host: the named interpreter runs, as in Gramine
# --------------------------------------------------------------------------
def test_real_python3_matches_gramines_algorithm(tmp_path: Path) -> None:
    # The system's python3 (what Gramine's example names), not the one running us.
    interpreter = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    result, manifest = render_cli(tmp_path, GRAMINE_STYLE, f"entrypoint={interpreter}",
                                  python=(interpreter,))
    assert result.returncode == 0, result.stderr
    expected = gramine_expected(interpreter)
    assert expected, "python3 has no existing sys.path entry?"
    assert allowed_files(manifest) == expected
    # Not ppml-image's own sys.path: the named interpreter's.
    assert not any(str(Path(__file__).parent.parent) in f for f in expected)


def test_entries_that_do_not_exist_are_left_out_and_files_have_no_slash(tmp_path: Path) -> None:
    folder, regular = tmp_path / "lib", tmp_path / "lib.zip"
    folder.mkdir()
    regular.write_bytes(b"PK")
    (tmp_path / "link").symlink_to(folder)
    python = fake_interpreter(tmp_path, f"printf '%s\\0%s\\0%s\\0%s' {tmp_path}/missing "
                              f"{regular} {folder} {tmp_path}/link\n")
    result, manifest = render_cli(tmp_path, GRAMINE_STYLE, f"entrypoint={python}",
                                  python=(python,))
    assert result.returncode == 0, result.stderr
    assert allowed_files(manifest) == [f"file:{regular}", f"file:{folder}/",
                                       f"file:{tmp_path}/link/"]


def test_include_nonexisting_and_a_single_pass(tmp_path: Path) -> None:
    python = fake_interpreter(tmp_path, f"printf '%s\\0%s' {tmp_path}/gone {tmp_path}\n")
    text = (f"{{% set p = python.get_sys_path('{python}', include_nonexisting=True) %}}"
            "a = {{ p | map('string') | list | tojson }}\nb = {{ p | list | length }}\n"
            f"c = {{{{ python.get_sys_path('{python}') | map('string') | list | tojson }}}}\n")
    info = PythonInfo.from_host(interpreters=[str(python)])
    out = render_template(text, python=info)
    assert out.splitlines() == [f'a = ["{tmp_path}/gone", "{tmp_path}"]', "b = 0",
                                f'c = ["{tmp_path}"]']


def test_the_interpreter_runs_once_per_name_without_our_secrets(tmp_path: Path) -> None:
    log = tmp_path / "runs"
    python = fake_interpreter(tmp_path, f"env >> {log}; echo --- >> {log}; cat; "
                              f"printf '%s' {tmp_path}\n")
    text = "".join(f"x{i} = {{{{ python.get_sys_path(entrypoint) | list | length }}}}\n"
                   for i in range(3))
    result, manifest = render_cli(
        tmp_path, 'loader.entrypoint.uri = "file:/bin/sh"\n' + text, f"entrypoint={python}",
        env={"PPML_IMAGE_KEY_PASSPHRASE": "hunter2", "PPML_IMAGE_PKCS11_PIN": "1234"},
        python=(python,))
    assert result.returncode == 0, result.stderr  # `cat` read an empty stdin: no hang
    runs = log.read_text()
    assert runs.count("---") == 1
    assert "PPML_IMAGE" not in runs and "hunter2" not in runs
    assert "x2 = 1" in manifest


def test_paths_are_pure_paths_with_three_questions_and_no_file_access(tmp_path: Path) -> None:
    info = PythonInfo.from_host()
    assert render_template(
        f"{{% for p in python.get_sys_path('{sys.executable}') %}}{{{{ p.exists() }}}}"
        "{{ p.is_file() }}{{ (p / 'x').name }}{{ p.parent.is_dir() }};{% endfor %}",
        python=info).startswith("True")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    for call in ("read_text()", "read_bytes()", "open()", "unlink()", "write_text('x')",
                 "touch()", "mkdir()", "rename('/tmp/x')", "resolve()", "stat()",
                 "iterdir() | list", "glob('*') | list", "_kinds", "__class__"):
        with pytest.raises(ManifestError):
            render_template(f"{{{{ (python.stdlib / '{secret}').{call} }}}}", python=info)
    assert secret.read_text() == "top secret"


@pytest.mark.parametrize("argument, fragment", [
    ("'/nonexistent/python3'", "cannot run it: No such file or directory"),
    ("'/etc/passwd'", "cannot run it: Permission denied"),
    ("'/'", "cannot run it: Permission denied"),
    ("''", "must be a path or a command name"),
    ("42", "must be a path or a command name"),
    ("none", "must be a path or a command name"),
    ("['/usr/bin/python3']", "must be a path or a command name"),
    ("'/usr/bin/python3\\x00x'", "must be a path or a command name"),
    ("'x' * 5000", "cannot run it"),
])
def test_interpreters_that_cannot_run_are_one_line_errors(tmp_path: Path, argument: str,
                                                           fragment: str) -> None:
    named = ("/nonexistent/python3", "/etc/passwd", "/", "x" * 5000)  # run only when named
    result, _ = render_cli(tmp_path, f"x = {{{{ python.get_sys_path({argument}) | list }}}}\n",
                           python=named)
    assert_one_line_error(result, "app.manifest.template:1", "python.get_sys_path", fragment)
    assert result.returncode == 1
    assert not (tmp_path / "app.manifest").exists()


def test_a_failing_interpreter_is_one_line_with_its_status(tmp_path: Path) -> None:
    python = fake_interpreter(tmp_path, "echo 'first' >&2; echo 'Fatal: no encodings' >&2; "
                              "exit 3\n")
    result, _ = render_cli(tmp_path, "x = {{ python.get_sys_path(e) | list }}\n", f"e={python}",
                           python=(python,))
    assert_one_line_error(result, "exited with status 3: Fatal: no encodings")


def test_an_interpreter_printing_without_end_is_cut_off(tmp_path: Path) -> None:
    python = fake_interpreter(tmp_path, "exec yes /usr/lib\n")
    result, _ = render_cli(tmp_path, "x = {{ python.get_sys_path(e) | list }}\n", f"e={python}",
                           python=(python,))
    assert_one_line_error(result, "python.get_sys_path(", "printed more than 1 MiB")


def test_more_than_sixteen_interpreters_are_refused(tmp_path: Path) -> None:
    python = fake_interpreter(tmp_path, f"printf '%s' {tmp_path}\n")
    names = [f"{tmp_path}/{'./' * i}fake-python" for i in range(17)]
    text = "".join(f"x{i} = {{{{ python.get_sys_path('{n}') | list | length }}}}\n"
                   for i, n in enumerate(names))
    assert python.exists()
    result, _ = render_cli(tmp_path, text, python=tuple(names))
    assert_one_line_error(result, "more than 16 different interpreters")


def test_run_bounded_kills_a_hanging_interpreter_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    python = fake_interpreter(tmp_path, f"sleep 300 & echo $! > {pidfile}; printf /x; wait\n")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_bounded([str(python), "-c", "x"], timeout=2)
    assert time.monotonic() - started < 30
    child = int(pidfile.read_text())
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break  # killed, waiting for init to reap it
        time.sleep(0.05)
    else:
        pytest.fail(f"the interpreter's child {child} outlived the call")


def test_a_hanging_interpreter_is_a_template_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(python_helpers, "TIMEOUT", 1.0)
    python = fake_interpreter(tmp_path, "exec sleep 300\n")
    with pytest.raises(ManifestError, match="did not answer within 1 s"):
        render_template(f"{{{{ python.get_sys_path('{python}') | list }}}}",
                        python=PythonInfo.from_host(interpreters=[str(python)]))


# --------------------------------------------------------------------------
# The other helpers: sysconfig's answers, with sysconfig's types
# --------------------------------------------------------------------------
def test_helpers_answer_as_sysconfig_does() -> None:
    info = PythonInfo.from_host()
    helpers = info.globals()
    for scheme in sysconfig.get_scheme_names():
        assert info.get_paths(scheme) == sysconfig.get_paths(scheme), scheme
        assert info.get_paths(scheme, expand=False) == sysconfig.get_paths(scheme, expand=False)
    assert info.get_paths() == sysconfig.get_paths()
    assert info.get_path("purelib") == sysconfig.get_path("purelib")
    assert isinstance(info.get_path("stdlib"), str)  # Gramine's get_path gives a str
    for name in ("EXT_SUFFIX", "py_version_short", "LIBDIR", "SOABI", "nope"):
        assert info.get_config_var(name) == sysconfig.get_config_var(name)
    assert helpers["ext_suffix"] == sysconfig.get_config_var("EXT_SUFFIX")
    assert str(helpers["stdlib"]) == sysconfig.get_paths()["stdlib"]
    distlib = pathlib.Path(sysconfig.get_path(
        "stdlib", vars={"py_version_short": sys.version_info[0]})) / "dist-packages"
    assert str(helpers["distlib"]) == str(distlib)
    assert str(helpers["implementation"]) == str(sys.implementation)
    assert helpers["implementation"].name == sys.implementation.name
    assert helpers["implementation"].version.major == sys.version_info.major


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0{}"),
               max_size=30),
       st.sampled_from(sorted(sysconfig.get_scheme_names())),
       st.sampled_from(["base", "platbase", "installed_base", "py_version_short", "userbase"]))
def test_vars_substitute_as_sysconfig_does(value: str, scheme: str, name: str) -> None:
    info = PythonInfo.from_host()
    assert info.get_paths(scheme, {name: value}) == sysconfig.get_paths(scheme, vars={name: value})


def test_get_path_string_concatenation_works_as_in_gramine() -> None:
    out = render_template("{{ python.get_path('stdlib') + '/os.py' }}|"
                          "{{ python.get_paths()['purelib'] }}", python=PythonInfo.from_host())
    assert out == f"{sysconfig.get_path('stdlib')}/os.py|{sysconfig.get_path('purelib')}"


@pytest.mark.parametrize("call, fragment", [
    ("python.get_path('nope')", "no such path"),
    ("python.get_paths('nope')", "no scheme 'nope'"),
    ("python.get_path('stdlib', 42)", "no scheme"),
])
def test_bad_helper_arguments_are_template_errors(call: str, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        render_template(f"{{{{ {call} }}}}", python=PythonInfo.from_host())


# --------------------------------------------------------------------------
# Recorded answers (an image): nothing runs, nothing is asked of the host
# --------------------------------------------------------------------------
RECORD = {
    "executable": "/usr/bin/python3.11",
    "paths": {"stdlib": "/usr/lib/python3.11", "platstdlib": "/usr/lib/python3.11",
              "purelib": "/usr/local/lib/python3.11/dist-packages"},
    "config_vars": {"py_version_short": "3.11", "base": "/usr", "installed_base": "/usr",
                    "platlibdir": "lib"},
    "default_scheme": "posix_local",
    "schemes": {"posix_prefix": {"purelib": "{base}/lib/python{py_version_short}/site-packages",
                                 "stdlib": "{installed_base}/{platlibdir}/python"
                                           "{py_version_short}"}},
    # /tmp exists on every host and /definitely-not-here on none: the record decides.
    "sys_paths": {"/usr/bin/python3": ["/tmp", "/definitely-not-here", "/zip"]},
    "kinds": {"/tmp": "missing", "/definitely-not-here": "dir", "/zip": "file",
              "/usr/lib/python3.11": "dir"},
}


def test_recorded_answers_come_from_the_record_not_the_host() -> None:
    info = PythonInfo.from_snapshot(RECORD, where="the base image b:1")
    out = render_template(GRAMINE_STYLE, {"entrypoint": "/usr/bin/python3"}, python=info)
    assert allowed_files(out) == ["file:/definitely-not-here/", "file:/zip"]
    assert render_template("{{ python.stdlib.is_dir() }}|{{ python.get_path('purelib', "
                           "'posix_prefix', {'base': '/opt'}) }}", python=info) \
        == "True|/opt/lib/python3.11/site-packages"


@pytest.mark.parametrize("template, fragment", [
    ("{{ python.get_sys_path('/usr/bin/python3.12') | list }}",
     "not an interpreter the base image b:1 recorded (build-custom runs nothing; recorded: "
     "/usr/bin/python3)"),
    ("{{ (python.stdlib / 'lib-dynload').is_dir() }}",
     "the base image b:1 recorded nothing about this path"),
    ("{{ python.executable.exists() }}", "recorded nothing about this path"),
    ("{{ python.get_paths('posix_user') }}", "no scheme 'posix_user'"),
])
def test_what_the_record_cannot_answer_is_a_template_error(template: str, fragment: str) -> None:
    info = PythonInfo.from_snapshot(RECORD, where="the base image b:1")
    with pytest.raises(ManifestError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        render_template(template, python=info)


def test_nothing_runs_for_a_record(tmp_path: Path) -> None:
    python = fake_interpreter(tmp_path, f"touch {tmp_path}/ran; printf /tmp\n")
    info = PythonInfo.from_snapshot(RECORD, where="the base image b:1")
    with pytest.raises(ManifestError, match="not an interpreter"):
        render_template(f"{{{{ python.get_sys_path('{python}') | list }}}}", python=info)
    assert not (tmp_path / "ran").exists()


def test_an_old_record_says_to_rebuild_the_base() -> None:
    old = {k: v for k, v in RECORD.items() if k not in ("sys_paths", "kinds", "schemes")}
    info = PythonInfo.from_snapshot(old, where="the base image b:1")
    with pytest.raises(ManifestError, match="rebuild the base image"):
        render_template("{{ python.get_sys_path('/usr/bin/python3') | list }}", python=info)


@pytest.mark.parametrize("field, value", [
    ("paths", ["/usr"]), ("paths", {"stdlib": 3}), ("config_vars", "x"),
    ("sys_paths", {"/usr/bin/python3": "/usr"}), ("sys_paths", {"p": [1]}),
    ("kinds", {"/tmp": "maybe"}), ("schemes", {"s": {"stdlib": None}}), ("executable", 7),
])
def test_a_malformed_record_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        PythonInfo.from_snapshot({**RECORD, field: value})


def test_template_helper_error_is_a_template_runtime_error() -> None:
    import jinja2

    assert issubclass(TemplateHelperError, jinja2.TemplateRuntimeError)
