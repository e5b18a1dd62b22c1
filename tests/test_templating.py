"""Templates are data: sandboxed, bounded, and -D values cannot become syntax
(issue 8, points 3 and 4)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from conftest import TESTS, assert_one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import ManifestError
from ppml_image.sgx.manifest import templating
from ppml_image.sgx.manifest.document import (
    PythonInfo,
    loads_toml,
    render_template,
    template_env,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MANIFESTS = TESTS.parent / "manifests"
SNAPSHOT = PythonInfo.from_snapshot({
    "paths": {"stdlib": "/usr/lib/python3.11", "platstdlib": "/usr/lib/python3.11",
              "purelib": "/usr/local/lib/python3.11/dist-packages"},
    "config_vars": {"py_version_short": "3.11", "EXT_SUFFIX": ".cpython-311.so"},
    "sys_paths": {"/usr/bin/python3.11": ["/usr/lib/python311.zip", "/usr/lib/python3.11"]},
    "kinds": {"/usr/lib/python311.zip": "missing", "/usr/lib/python3.11": "dir"},
    "executable": "/usr/bin/python3.11"})
GIVEN = {"app_dir": "/ppml/app", "enclave_dir": "/ppml", "base": {}}
INJECTION = 'm.py"]\nloader.insecure__use_cmdline_argv = true\n#'
# Any text a -D value can hold (NUL cannot be in an argv; see the toml test).
TEXT = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))


def render_shipped(name: str, **defines: object) -> dict:
    text = (MANIFESTS / f"{name}.manifest.j2").read_text()
    rendered = render_template(text, {**GIVEN, **defines}, python=SNAPSHOT, name=name)
    # The TOML as written: what a -D value does to the text. (Gramine's reading,
    # which refuses e.g. a newline in a value, is tested in test_gramine_reading.)
    return loads_toml(rendered, f"{name} (rendered)")


def keys_of(node: object, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    found = set()
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        found |= {path} | keys_of(value, path)
    return found


# --- helpers keep working in the sandbox ----------------------------------
def test_gramine_python_and_env_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPML_TEST_VALUE", "hello")
    text = ('a = "{{ gramine.libos }}|{{ gramine.pkglibdir }}|{{ gramine.runtimedir() }}|'
            '{{ gramine.runtimedir(libc=\'musl\') }}|{{ gramine.runtimedir() / \'x\' }}"\n'
            'b = "{{ python.stdlib }}|{{ python.distlib }}|{{ python.purelib }}|'
            '{{ python.get_path(\'stdlib\') }}|{{ python.get_config_var(\'EXT_SUFFIX\') }}|'
            '{{ python.ext_suffix }}|'
            '{{ python.get_sys_path(python.executable) | join(\',\') }}|'
            '{{ python.executable }}"\n'
            'c = "{{ env.PPML_TEST_VALUE }}|{{ env.get(\'NOPE\', \'dflt\') }}"\n')
    out = tomllib.loads(render_template(text, python=SNAPSHOT, pkglibdir="/g"))
    assert out["a"] == "/g/libsysdb.so|/g|/g/runtime/glibc|/g/runtime/musl|/g/runtime/glibc/x"
    assert out["b"] == ("/usr/lib/python3.11|/usr/lib/python3/dist-packages|"
                        "/usr/local/lib/python3.11/dist-packages|/usr/lib/python3.11|"
                        ".cpython-311.so|.cpython-311.so|/usr/lib/python3.11|"
                        "/usr/bin/python3.11")
    assert out["c"] == "hello|dflt"


def test_env_never_holds_ppml_image_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPML_IMAGE_KEY_PASSPHRASE", "s3cret")
    monkeypatch.setenv("PPML_IMAGE_ANYTHING", "x")
    assert not [k for k in template_env() if k.startswith("PPML_IMAGE_")]
    dumped = render_template("{{ env | dictsort }}{{ env.values() | list }}")
    assert "s3cret" not in dumped and "PPML_IMAGE" not in dumped
    with pytest.raises(ManifestError, match="undefined"):
        render_template("{{ env['PPML_IMAGE_KEY_PASSPHRASE'] }}")


@pytest.mark.parametrize("text", [
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ python.get_config_var.__self__ }}",
    "{{ gramine.runtimedir._pkglibdir }}",
    "{{ self._TemplateReference__context }}",
    "{{ namespace.__init__ }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{{ (''|attr('__class__')) }}",
    "{{ '{0.__class__}'.format('') }}",
])
def test_sandbox_refuses_python_internals(text: str) -> None:
    with pytest.raises(ManifestError, match=r"not allowed|unsafe"):
        render_template(text, name="t.j2")


def test_errors_name_the_template_line() -> None:
    with pytest.raises(ManifestError, match=r"^t\.j2:3: template error: division by zero$"):
        render_template("a = 1\nb = 2\nc = {{ 1 % 0 }}\n", name="t.j2")


def test_limits_allow_ordinary_templates() -> None:
    """What real templates do stays well inside every limit."""
    text = ("{% for i in range(20000) %}\"file:/app/f{{ i }}.py\",\n{% endfor %}"
            "{{ 'x' * 1000 }}{{ '%08d' % 42 }}{{ '{:>10}'.format('r') }}"
            "{{ ['a', 'b'] | join(',') }}{{ 'a b c'.split() | length }}"
            "{{ 2 ** 64 }}{{ 'abc' | center(9) }}{{ [3, 1, 2] | sort | list }}")
    out = render_template(text)
    assert out.count('"file:/app/f') == 20000
    assert out.endswith("18446744073709551616   abc   [1, 2, 3]")


def test_budgets_are_per_render() -> None:
    """Each render starts with a fresh budget (a shared one would fail the 2nd)."""
    text = "{% for i in range(100000) %}{% for j in range(60) %}{% endfor %}{% endfor %}"
    for _ in range(2):  # 6.1 million iterations each; 10 million per render
        render_template(text)


# --- the toml, sh, word, bool and int filters --------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_toml_filter_writes_any_text_as_that_text(value: str) -> None:
    try:
        rendered = render_template("k = {{ v | toml }}\n", {"v": value})
    except ManifestError as exc:
        assert "\0" in value and "NUL" in str(exc)
        return
    assert tomllib.loads(rendered) == {"k": value}


def has_none(value: object) -> bool:
    if isinstance(value, dict):
        return any(has_none(v) for v in value.values())
    if isinstance(value, list):
        return any(has_none(v) for v in value)
    return value is None


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1)
                    | st.floats(allow_nan=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=5).filter(lambda k: "\0" not in k),
                                      inner, max_size=4), max_leaves=12))
def test_toml_filter_round_trips_values(value: object) -> None:
    if has_none(value):
        with pytest.raises(ManifestError, match="cannot be written as a TOML value"):
            render_template("k = {{ v | toml }}\n", {"v": value})
        return
    assert tomllib.loads(render_template("k = {{ v | toml }}\n", {"v": value}))["k"] == value


def test_toml_filter_refuses_what_toml_cannot_hold() -> None:
    for value, fragment in ((1 << 64, "64 bits"), ("a\udcffb", "not valid Unicode"),
                            ("a\0b", "NUL"), (object(), "cannot be written")):
        with pytest.raises(ManifestError, match=fragment):
            render_template("k = {{ v | toml }}\n", {"v": value})


@given(TEXT)
def test_sh_filter_is_one_shell_word(value: str) -> None:
    assert shlex.split(render_template("{{ v | sh }}", {"v": value})) == [value]


@pytest.mark.parametrize("value,expected", [
    (True, True), ("true", True), ("YES", True), ("1", True), ("on", True),
    ("false", False), ("no", False), ("0", False), ("", False), ("off", False)])
def test_bool_filter(value: object, expected: bool) -> None:
    assert render_template("{{ v | bool }}", {"v": value}) == str(expected)


def test_bool_and_int_filters_refuse_garbage() -> None:
    with pytest.raises(ManifestError, match="not true or false"):
        render_template("{{ v | bool }}", {"v": "maybe"})
    with pytest.raises(ManifestError, match="not an integer"):
        render_template("{{ v | int }}", {"v": "2x"})
    assert render_template("{{ v | int }}|{{ w | int(default=7) }}", {"v": " 42 ", "w": "x"}) \
        == "42|7"


def test_word_filter() -> None:
    assert render_template("{{ '8g' | word }}") == "8g"
    for bad in ("8g -javaagent:/x.jar", "", "a;b", "a'b", "a\nb"):
        with pytest.raises(ManifestError, match="one plain word"):
            render_template("{{ v | word }}", {"v": bad})


# --- -D values in the shipped templates --------------------------------------
@pytest.mark.parametrize("template", ["python-ml", "spark"])
def test_injection_in_entrypoint_stays_a_string(template: str) -> None:
    plain = render_shipped(template)
    injected = render_shipped(template, entrypoint=INJECTION)
    assert keys_of(injected) == keys_of(plain), "a -D value added manifest keys"
    assert "insecure__use_cmdline_argv" not in injected["loader"]
    if template == "python-ml":
        assert injected["loader"]["argv"] == ["python3", "/ppml/app/" + INJECTION]
    else:
        command = injected["loader"]["argv"][2]
        assert shlex.split(command)[-1] == "/ppml/app/" + INJECTION


@pytest.mark.parametrize("template", ["python-ml", "spark"])
@settings(max_examples=150, deadline=None)
@given(value=TEXT)
def test_any_text_value_lands_verbatim(template: str, value: str) -> None:
    plain = render_shipped(template)
    manifest = render_shipped(template, entrypoint=value, log_level=value,
                              remote_attestation=value, enclave_dir=value)
    assert keys_of(manifest) == keys_of(plain)
    assert manifest["loader"]["log_level"] == value
    assert manifest["sgx"]["remote_attestation"] == value
    assert manifest["fs"]["mounts"][4] == {"path": value, "uri": "file:" + value}
    if template == "python-ml":
        assert manifest["loader"]["argv"][1] == "/ppml/app/" + value
    else:
        words = shlex.split(manifest["loader"]["argv"][2])
        assert words == ["spark-submit", "--master", "local[2]", "/ppml/app/" + value]


@settings(max_examples=100, deadline=None)
@given(TEXT)
def test_spark_master_cannot_add_shell_commands(master: str) -> None:
    """The measured command line runs spark-submit with exactly that master."""
    manifest = render_shipped("spark", master=master)
    words = shlex.split(manifest["loader"]["argv"][2])
    assert words == ["spark-submit", "--master", master, "/ppml/app/main.py"]


def test_spark_jvm_options_are_one_word_each() -> None:
    manifest = render_shipped("spark", java_heap="4g", cpus="8")
    assert manifest["loader"]["env"]["JAVA_TOOL_OPTIONS"] == \
        "-Xmx4g -XX:ActiveProcessorCount=8"
    for name, value in (("java_heap", "4g -javaagent:/tmp/evil.jar"), ("cpus", "8 -Dx=y")):
        with pytest.raises(ManifestError, match=r"one plain word|not an integer"):
            render_shipped("spark", **{name: value})


@pytest.mark.parametrize("template", ["python-ml", "spark"])
def test_numbers_are_integers_and_flags_are_booleans(template: str) -> None:
    manifest = render_shipped(template, max_threads="8", isvprodid="2", isvsvn="3",
                              debug="false", edmm=True)
    sgx = manifest["sgx"]
    assert (sgx["max_threads"], sgx["isvprodid"], sgx["isvsvn"]) == (8, 2, 3)
    assert sgx["debug"] is False  # -D debug=false used to give a DEBUG enclave
    assert sgx["edmm_enable"] is True
    for name in ("max_threads", "isvsvn"):
        with pytest.raises(ManifestError, match="not an integer"):
            render_shipped(template, **{name: "1\nsgx.debug = true"})


def test_injection_through_the_cli(tmp_path: Path, rootfs: Path) -> None:
    """gramine-manifest style: -D on the command line, a one-line template."""
    template = tmp_path / "t.j2"
    template.write_text("loader.argv = [{{ entrypoint | toml }}]\n")
    result = run_cli("manifest", template, "--no-check", "--chroot", rootfs,
                     "-D", f"entrypoint={INJECTION}")
    # The value stays one string, whose newline Gramine's reading refuses
    # (even under --no-check): nothing is printed, certainly no insecure__ key.
    assert_one_line_error(result, "loader.argv[0]")
    assert "U+000A" in result.stderr
    assert result.stdout == ""


def test_include_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "other.j2").write_text("x = 1\n")
    template = tmp_path / "t.j2"
    template.write_text('{% include "other.j2" %}\n')
    assert_one_line_error(run_cli("manifest", template), str(template), "{% include %}")


nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=30)


@settings(max_examples=300)
@given(nested)
def test_text_size_is_an_upper_bound(value: object) -> None:
    """The limits on printing a container rely on this bound being safe."""
    size, visits = templating.text_size(value, cap=1 << 40)
    assert size >= len(str(value))
    assert visits >= 1


def test_text_size_stops_early() -> None:
    big = ["a" * 1000] * 1_000_000
    size, visits = templating.text_size(big, cap=10_000)
    assert size > 10_000 and visits < 20


def test_limits_are_documented_values() -> None:
    assert templating.MAX_OUTPUT == 256 << 20
