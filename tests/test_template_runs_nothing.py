"""Templates run nothing unless the user says so (issue 16, point 4).

A template, or a ``-D`` value, can never choose a program: ``python.get_sys_path(X)``
runs X only when the user named the same X with ``manifest --python X``.
When it does run, X is confined (ppml_image._confined): its process group
and any session it starts are gone when the call returns, fails or times
out, a child holding its stdout is not waited for, and its CPU time is
bounded. A render's own CPU time is bounded too, whatever filter burns it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from ppml_image import _confined
from ppml_image.errors import ManifestError
from ppml_image.sgx.manifest import templating
from ppml_image.sgx.manifest.document import render_template
from ppml_image.sgx.manifest.python_helpers import PythonInfo

REFUSED = "a template cannot choose a program to run"


def planted(root: Path, marker: Path) -> Path:
    """An executable script in a chroot that, if run, copies a 'secret' out."""
    script = root / "rootfs" / "app" / "evil.sh"
    script.parent.mkdir(parents=True)
    secret = root / "root-only.txt"
    secret.write_text("top secret\n")
    script.write_text(f"#!/bin/sh\ncat {secret} > {marker}\nprintf '%s' {root}\n")
    script.chmod(0o755)
    return script


def manifest(tmp_path: Path, template: str, *args: str | Path):
    source = tmp_path / "app.manifest.template"
    source.write_text('loader.entrypoint.uri = "file:/bin/sh"\n' + template)
    return run_cli("manifest", source, tmp_path / "app.manifest", "--no-check", *args,
                   cwd=tmp_path)


@pytest.mark.parametrize("spelling", [
    "rootfs/app/evil.sh",  # relative, as the template
    "./rootfs/app/evil.sh",
    "{root}/rootfs/app/evil.sh",  # absolute
    "{root}/rootfs/app/../app/evil.sh",
])
def test_a_planted_script_named_by_the_template_is_not_run(tmp_path: Path,
                                                           spelling: str) -> None:
    marker = tmp_path / "stolen.txt"
    planted(tmp_path, marker)
    name = spelling.format(root=tmp_path)
    result = manifest(tmp_path, f"x = {{{{ python.get_sys_path('{name}') | list }}}}\n",
                      "--chroot", tmp_path / "rootfs")
    assert result.returncode == 1
    assert_one_line_error(result, "app.manifest.template:2", "python.get_sys_path", REFUSED,
                          "name the same path with manifest --python")
    assert not marker.exists()
    assert not (tmp_path / "app.manifest").exists()


def test_a_define_cannot_name_a_program_either(tmp_path: Path) -> None:
    marker = tmp_path / "stolen.txt"
    script = planted(tmp_path, marker)
    for value in (str(script), "sh", "python3", "/bin/sh"):
        result = manifest(tmp_path, "x = {{ python.get_sys_path(e) | list }}\n",
                          f"-De={value}")
        assert_one_line_error(result, "python.get_sys_path", REFUSED)
    assert not marker.exists()


def test_the_same_path_named_with_python_runs(tmp_path: Path) -> None:
    marker = tmp_path / "stolen.txt"
    planted(tmp_path, marker)
    template = "x = {{ python.get_sys_path('rootfs/app/evil.sh') | map('string') | list | toml }}\n"
    # Another spelling of the same file is not the same path: refused, not run.
    other = manifest(tmp_path, template, "--python", "./rootfs/app/evil.sh")
    assert_one_line_error(other, REFUSED)
    assert not marker.exists()
    named = manifest(tmp_path, template, "--python", "rootfs/app/evil.sh")
    assert named.returncode == 0, named.stderr
    assert marker.read_text() == "top secret\n"  # the user chose to run it
    assert (tmp_path / "app.manifest").read_text().startswith(f'x = [\n    "{tmp_path}",\n]\n')


@pytest.mark.parametrize("interpreter", [repr(sys.executable), "python.executable"])
def test_the_interpreter_ppml_image_runs_on_needs_no_option(tmp_path: Path,
                                                           interpreter: str) -> None:
    result = manifest(tmp_path, f"x = {{{{ python.get_sys_path({interpreter}) "
                      "| list | length | toml }}\n")
    assert result.returncode == 0, result.stderr
    first = (tmp_path / "app.manifest").read_text().splitlines()[0]
    assert first.startswith("x = ") and int(first[4:]) > 0  # its sys.path, run and read


def test_build_custom_answers_from_the_record_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "stolen.txt"
    script = planted(tmp_path, marker)
    record = {"paths": {"stdlib": "/usr/lib/python3.11"}, "config_vars": {},
              "executable": "/usr/bin/python3.11",
              "sys_paths": {"/usr/bin/python3": ["/usr/lib/python3.11"]},
              "kinds": {"/usr/lib/python3.11": "dir"}}
    info = PythonInfo.from_snapshot(record, where="the base image")
    assert render_template("{{ python.get_sys_path('/usr/bin/python3') | map('string') "
                           "| list }}", python=info) == "['/usr/lib/python3.11']"
    with pytest.raises(ManifestError, match="build-custom runs nothing"):
        render_template(f"{{{{ python.get_sys_path('{script}') | list }}}}", python=info)
    assert not marker.exists()


# --------------------------------------------------------------------------
# A named interpreter runs confined
# --------------------------------------------------------------------------
def fake(folder: Path, body: str) -> Path:
    path = folder / "fake-python"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_background_child_holding_stdout_is_not_waited_for_and_is_killed(
        tmp_path: Path) -> None:
    """It prints, leaves a child holding stdout (and one escaped into its own
    session, re-parented twice), and exits: the output is read, the call
    returns (no TimeoutError although the children hold the pipe for 300 s),
    and both children are dead, reaped, when it returns."""
    python = fake(tmp_path, f"""
sleep 300 & echo $! > {tmp_path}/child
( setsid sh -c 'echo $$ > {tmp_path}/escaped; exec sleep 300' & ) &
while [ ! -s {tmp_path}/escaped ]; do :; done
printf '%s' /usr/lib
""")
    result = _confined.run_confined([str(python)], limit=1 << 20, timeout=30)
    assert (result.returncode, result.stdout) == (0, b"/usr/lib")
    for name in ("child", "escaped"):
        pid = int((tmp_path / name).read_text())
        assert gone(pid), f"the interpreter's {name} {pid} outlived the call"


def test_through_the_cli_a_lingering_child_does_not_hold_the_render(tmp_path: Path) -> None:
    python = fake(tmp_path, f"sleep 300 & echo $! > {tmp_path}/child\nprintf '%s' {tmp_path}\n")
    result = manifest(tmp_path, f"x = {{{{ python.get_sys_path('{python}') | map('string') "
                      "| list | toml }}\n", "--python", python)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "app.manifest").read_text().startswith(f'x = [\n    "{tmp_path}",\n]\n')
    assert gone(int((tmp_path / "child").read_text()))


def test_a_failing_or_timed_out_call_leaves_nothing_behind(tmp_path: Path) -> None:
    python = fake(tmp_path, f"( setsid sleep 300 & echo $! > {tmp_path}/escaped ) \n"
                  f"sleep 300 & echo $! > {tmp_path}/child\nwait\n")
    with pytest.raises(TimeoutError):
        _confined.run_confined([str(python)], limit=1 << 20, timeout=1)
    for name in ("child", "escaped"):
        assert gone(int((tmp_path / name).read_text())), name
    flood = fake(tmp_path, f"sleep 300 & echo $! > {tmp_path}/child\nexec yes /usr/lib\n")
    with pytest.raises(OverflowError):
        _confined.run_confined([str(flood)], limit=1 << 16, timeout=30)
    assert gone(int((tmp_path / "child").read_text()))


def test_an_interpreter_that_spins_is_stopped_by_its_cpu_limit(tmp_path: Path) -> None:
    python = fake(tmp_path, "while :; do :; done\n")
    result = _confined.run_confined([str(python)], limit=1 << 20, timeout=120, cpu_seconds=1)
    assert result.returncode in (-signal.SIGXCPU, -signal.SIGKILL)


# --------------------------------------------------------------------------
# A render's CPU budget: super-linear filters
# --------------------------------------------------------------------------
@pytest.mark.parametrize("expression", [
    "('www.example.com ' * 600000) | urlize",
    "('a' * 4000000) | wordwrap(1)",
])
def test_super_linear_filters_are_bounded_by_cpu_time(expression: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Within every size limit, yet each would run for minutes; the budget is
    # lowered so that the test stops in a second, not in 30.
    monkeypatch.setattr(templating, "MAX_CPU_SECONDS", 1.0)
    with pytest.raises(ManifestError, match="more than 1 s of CPU time"):
        render_template(f"x = {{{{ {expression} | length }}}}")
    # The timer is off again, and an ordinary render is untouched.
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    assert render_template("{{ 'see www.example.com' | urlize }}").startswith(
        'see <a href="https://www.example.com"')


def test_the_interpreter_starts_with_no_signal_blocked_and_no_core_file(tmp_path: Path) -> None:
    """Signals are held while it starts (so that a Ctrl-C cannot leave it
    untracked), but not in it; a CPU-limit kill writes no core file."""
    python = fake(tmp_path, "grep -E '^SigBlk' /proc/$$/status | tr -d '\\n'; "
                  "printf ' core=%s' \"$(ulimit -c)\"\n")
    result = _confined.run_confined([str(python)], limit=1 << 20, timeout=30)
    assert result.stdout.decode().split() == ["SigBlk:", "0000000000000000", "core=0"]
