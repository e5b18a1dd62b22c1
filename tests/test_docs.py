"""The README and docs/ stay true: short enough, links that resolve, and every
``ppml-image`` command line in them a real command with real options.

The workflow's host-only steps (keygen, Spark material, Kubernetes files) are
run for real, exactly as the README writes them.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from ppml_image.cli import _register_commands, app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "manifests/README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
# typer vendors click in some releases: take its classes from typer's own exceptions.
USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _commands(text: str) -> list[str]:
    """Every ``ppml-image ...`` line of the shell blocks, continuation lines joined."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang not in ("sh", "bash", "console", ""):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("ppml-image "):
                found.append(line.split(" #", 1)[0].strip())
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m) for m in re.findall(r"^#+ (.*)$", text, re.M)}


ALL_COMMANDS = [(path.relative_to(ROOT).as_posix(), line)
                for path in DOCS for line in _commands(path.read_text())]


def test_the_readme_starts_small() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_docs_hold_command_lines() -> None:
    """The extraction works: a test over nothing could not fail."""
    assert len(ALL_COMMANDS) >= 20
    assert any(line.startswith("ppml-image build-custom") for _, line in ALL_COMMANDS)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path: Path) -> None:
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{path.name}: {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{path.name}: {target}"


@pytest.mark.parametrize("where,line", ALL_COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in
                                                          enumerate(ALL_COMMANDS)])
def test_every_command_line_names_real_options(where: str, line: str) -> None:
    """Parsed by the real command line: an unknown command or option fails here.

    ``--help`` at the end stops after parsing, so placeholders such as
    ``sha256:4f1c...`` are never converted or acted on.
    """
    _register_commands()
    command = typer.main.get_command(app)
    words = shlex.split(line)[1:]
    try:
        code = command.main(args=[*words, "--help"], prog_name="ppml-image",
                            standalone_mode=False)
    except USAGE_ERROR as error:  # typer releases that let click's error through
        pytest.fail(f"{where}: {line}: {error}")
    assert code in (0, None), f"{where}: {line}: the parser refused it (exit {code})"


def test_the_workflows_host_steps_run_as_written(tmp_path: Path) -> None:
    """keygen, Spark material and Kubernetes files: the README's lines, run as they are."""
    readme = [line for where, line in ALL_COMMANDS if where == "README.md"]
    steps = [line for line in readme
             if line.split()[1] in ("keygen", "secrets", "k8s")]
    assert len(steps) >= 5
    (tmp_path / "pw.txt").write_text("a-long-test-password-123\n")
    for line in steps:
        done = subprocess.run([sys.executable, "-m", "ppml_image", *shlex.split(line)[1:]],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (line, done.stderr)
    assert (tmp_path / "enclave-key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k8s/spark-secret.yaml").is_file()
