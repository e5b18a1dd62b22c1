"""spark-security.conf is read back exactly by a real JVM, whatever the password.

Each test launches the JDK once for a whole batch of files (a single-file
program, tests/data/LoadProperties.java), so the number of JVM starts stays
small: hypothesis makes a few batches of many passwords each.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import TESTS, run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ppml_image.k8s.templates import security_properties
from ppml_image.spark.properties import format_properties

LOADER = TESTS / "data" / "LoadProperties.java"
pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="no JDK on this machine")


def _hex(text: str) -> str:
    units = text.encode("utf-16-be", "surrogatepass")
    return "x" + units.hex()


def java_load(files: list[Path]) -> list[dict[str, str]]:
    """What java.util.Properties.load reads from each file: {key hex: value hex}.

    The loader reads every file both through a UTF-8 Reader (as spark-submit
    does) and as an ISO-8859-1 stream; the two must agree.
    """
    proc = subprocess.run(["java", "-XX:-UsePerfData", str(LOADER), *map(str, files)],
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr
    loaded: list[dict[str, str]] = [{} for _ in files]
    for line in proc.stdout.splitlines():
        index, key, via_reader, via_stream = line.split(" ")
        assert via_reader == via_stream, line
        loaded[int(index)][key] = via_reader
    return loaded


def expected(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return {_hex(k): _hex(v) for k, v in pairs}


# Every code point, lone surrogates included: Java strings can hold them too.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
tricky = st.text(st.sampled_from(list(" \t\f\r\n\\=:#!u0Aé\u2028\U0001f600\x00\x7f")),
                 max_size=12)
passwords = st.one_of(any_text, tricky)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.data_too_large])
@given(batch=st.lists(passwords, min_size=40, max_size=80),
       keys=st.dictionaries(st.one_of(st.text(st.characters(exclude_categories=()), min_size=1,
                                              max_size=20),
                                      st.text(st.sampled_from(list(" =:#!\\\t\n")),
                                              min_size=1, max_size=6)),
                            any_text, max_size=20))
@example(batch=["\\", " leading", "  two", "trailing\\", "a=b:c#d!e", "#x", "!x", "=x", ":x",
                "\\u0041", "line\nbreak", "cr\rlf", "\t\f tab", "é€😀", "\ud800lone", "",
                " ", "x\\", "\\\\", "end \\ "] * 2, keys={" a b": " v", "#k": "!v"})
def test_java_reads_back_every_value(tmp_path_factory: pytest.TempPathFactory,
                                     batch: list[str], keys: dict[str, str]) -> None:
    folder = tmp_path_factory.mktemp("props")
    cases = [security_properties(password) for password in batch] + [list(keys.items())]
    files = []
    for index, pairs in enumerate(cases):
        path = folder / f"{index}.conf"
        path.write_bytes(format_properties(pairs, ["a comment \\", "é\nsecond # line"]))
        files.append(path)
    for pairs, loaded in zip(cases, java_load(files), strict=True):
        assert loaded == expected(pairs)


def test_the_written_file_through_the_cli(tmp_path: Path) -> None:
    """`k8s spark-templates --password` with hostile (accepted) passwords, read by Java."""
    hostile = ["\\leading-backslash", "  two leading spaces", "trailing backslash\\",
               "a=b:c#d!e f", "#starts-with-hash", "!bang-start", "=equals-first",
               "\\u0041\\n\\t", "é€😀 unicode", "x" * 373]
    confs = []
    for index, password in enumerate(hostile):
        pw_file = tmp_path / f"pw{index}"
        pw_file.write_text(password + "\n", encoding="utf-8")
        folder, out = tmp_path / f"password{index}", tmp_path / f"k8s{index}"
        made = run_cli("secrets", "password", "--out", folder, "--password-file", pw_file)
        assert made.returncode == 0, made.stderr
        written = run_cli("k8s", "spark-templates", "--image", "x:1", "--password", folder,
                          "-o", out)
        assert written.returncode == 0, written.stderr
        # Spark trims --properties-file values: a blank at either end earns a warning
        blank_end = password != password.strip(" ")
        assert ("strips" in written.stderr) == blank_end, written.stderr
        confs.append(out / "spark-security.conf")
        assert confs[-1].read_bytes().isascii()
    for password, loaded in zip(hostile, java_load(confs), strict=True):
        want = expected(security_properties(password))
        assert loaded == want
        assert loaded[_hex("spark.ssl.keyStorePassword")] == _hex(password)


def test_a_naive_file_would_be_misread(tmp_path: Path) -> None:
    """The JVM check can fail: unescaped, these values are not what Java reads."""
    path = tmp_path / "naive.conf"
    path.write_text("a \\leading\nb   spaces\nc trailing\\\nd next\n")
    loaded = java_load([path])[0]
    assert loaded[_hex("a")] != _hex("\\leading")
    assert loaded[_hex("b")] != _hex("  spaces")
    assert loaded[_hex("c")] != _hex("trailing\\")
