"""TOML is read as Gramine reads it, and a hostile manifest cannot make the
parser (or anything after it) recurse, blow up or crawl (issue 11, point 5)."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppml_image.errors import ManifestError
from ppml_image.sgx.manifest.document import MAX_DEPTH, loads_toml, parse_manifest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

part = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,4}", fullmatch=True),
                 st.text(alphabet="ab.\"\\ ", max_size=4).map(
                     lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
                 st.from_regex(r"'[a-z. ]{0,3}'", fullmatch=True))
space = st.sampled_from(["", " ", "\t", "  "])


@given(st.lists(part, min_size=1, max_size=MAX_DEPTH + 3), space, st.booleans())
def test_dotted_keys_up_to_the_limit_parse(parts: list[str], gap: str, header: bool) -> None:
    """Whatever the quoting and spacing, a key of at most MAX_DEPTH parts is
    TOML (as tomllib reads it); one more part is a one-line error."""
    key = f"{gap}.{gap}".join(parts)
    text = f"[{key}]\n" if header else f"{key} = 1\n"
    try:
        expected = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        expected = None  # e.g. a duplicate key: not what this test is about
    if len(parts) > MAX_DEPTH:
        with pytest.raises(ManifestError, match=r"dotted key|nested"):
            loads_toml(text, "m")
    elif expected is not None:
        assert loads_toml(text, "m") == expected


@pytest.mark.parametrize("text", [
    'a = "' + "A" * 2_000_000 + '"\n',  # one long base64-like value
    'a = "' + "a." * 100_000 + '"\n',  # dotted words inside a string
    "".join(f"x{i}" + ".a" * 63 + " = 1\n" for i in range(200)),  # 64 parts: the limit
    "a = [" + "1.5, " * 100_000 + "]\n",  # floats have dots too
])
def test_big_but_shallow_manifests_parse(text: str) -> None:
    loads_toml(text, "m")


@pytest.mark.parametrize("depth,ok", [(MAX_DEPTH - 1, True), (MAX_DEPTH, True),
                                      (MAX_DEPTH + 1, False)])
def test_array_depth_limit(depth: int, ok: bool) -> None:
    text = "a = " + "[" * depth + "]" * depth + "\n"
    if ok:
        loads_toml(text, "m")
    else:
        with pytest.raises(ManifestError, match="nested more than 64"):
            loads_toml(text, "m")


@pytest.mark.parametrize("value,ok", [((1 << 63) - 1, True), (-(1 << 63), True),
                                      (1 << 63, False), (-(1 << 63) - 1, False)])
def test_integers_are_64_bit(value: int, ok: bool) -> None:
    text = f"sgx.x = [{{ y = {value} }}]\n"
    if ok:
        assert loads_toml(text, "m")["sgx"]["x"][0]["y"] == value
    else:
        with pytest.raises(ManifestError, match=r"sgx\.x\[0\]\.y = .* 64 bits"):
            loads_toml(text, "m")


def test_limit_messages_escape_hostile_keys() -> None:
    """A key with a control character is quoted and escaped in the one-line
    error, never echoed raw to the user's terminal."""
    with pytest.raises(ManifestError) as caught:
        loads_toml(f'sgx."a\\u001b[2Jb" = [{1 << 64}]\n', "m")
    assert str(caught.value).startswith('m: sgx."a\\u001b[2Jb"[0] = ')
    assert "\x1b" not in str(caught.value)
    deep = 'x."\\u0007" = ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    with pytest.raises(ManifestError, match=r"levels deep \(at x\.\"\\u0007\"\[0\]") as caught:
        loads_toml(deep, "m")
    assert "\x07" not in str(caught.value)


def test_enclave_size_up_to_2_47() -> None:
    parse_manifest('sgx.edmm_enable = true\nsgx.enclave_size = "0x800000000000"\n', "m")
    for size in ("0x800000001000", "0x10000000000000000", "18446744073709551616"):
        with pytest.raises(ManifestError, match="x86-64 user space"):
            parse_manifest(f'sgx.edmm_enable = true\nsgx.enclave_size = "{size}"\n', "m")
