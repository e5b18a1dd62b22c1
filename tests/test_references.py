"""Image references: Docker's grammar, checked before any build (issue 11.7).

Hypothesis builds references from the grammar's parts and mutates them;
the Docker CLI (its reference parser, as it tags) is the oracle for the
differential test, which never creates a tag: the source image does not
exist, so a target the CLI accepts is answered "No such image" by the engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, unique_tag
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ppml_image.errors import UsageError
from ppml_image.images.enclave.custom import unsigned_tag
from ppml_image.images.engine.reference import (
    MAX_PATH,
    MAX_TAG,
    Reference,
    check_image,
    check_tag,
    parse_reference,
    with_tag_suffix,
)

LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
ALNUM = LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

alnum = st.text(LOWER, min_size=1, max_size=8)
separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_component(draw: st.DrawFn) -> str:
    parts = [draw(alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(separator), draw(alnum)]
    return "".join(parts)


@st.composite
def domain_label(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(ALNUM, min_size=1, max_size=1))
    middle = draw(st.text(ALNUM + "-", max_size=10))
    return draw(st.text(ALNUM, min_size=1, max_size=1)) + middle + \
        draw(st.text(ALNUM, min_size=1, max_size=1))


@st.composite
def domain(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["dns", "localhost", "ipv6"]))
    if kind == "localhost":
        host = "localhost"
    elif kind == "ipv6":
        host = "[" + draw(st.text("0123456789abcdefABCDEF:", min_size=1, max_size=12)) + "]"
    else:
        # Docker reads a first component as a host only with a '.', a ':' or upper case.
        host = ".".join(draw(st.lists(domain_label(), min_size=2, max_size=3)))
    port = draw(st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}")))
    return host + port


tag_text = st.builds(lambda first, rest: first + rest,
                     st.text(ALNUM + "_", min_size=1, max_size=1),
                     st.text(ALNUM + "_.-", max_size=MAX_TAG - 1))
digest_text = st.sampled_from([("sha256", 64), ("sha384", 96), ("sha512", 128)]).flatmap(
    lambda algo: st.text("0123456789abcdef", min_size=algo[1], max_size=algo[1]).map(
        lambda hexes: f"{algo[0]}:{hexes}"))


@st.composite
def reference(draw: st.DrawFn, *, with_digest: bool = True) -> tuple[str, str, str, str]:
    """(text, name, tag, digest) of a reference valid by construction."""
    components = draw(st.lists(path_component(), min_size=1, max_size=4))
    name = "/".join(components)
    if draw(st.booleans()):
        name = f"{draw(domain())}/{name}"
    tag = draw(st.one_of(st.just(""), tag_text))
    digest = draw(st.one_of(st.just(""), digest_text)) if with_digest else ""
    text = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return text, name, tag, digest


@given(reference())
@settings(max_examples=400)
def test_every_reference_of_the_grammar_is_accepted_and_split(
        case: tuple[str, str, str, str]) -> None:
    text, name, tag, digest = case
    parsed = parse_reference(text)
    assert (parsed.name, parsed.tag, parsed.digest) == (name, tag, digest)
    assert str(parsed) == text


BAD_CHARACTERS = [" ", "\t", "\n", "!", "$", "`", ";", "é", "\0", "*", "?", "\\", "'"]


@given(reference(), st.sampled_from(BAD_CHARACTERS), st.data())
def test_a_foreign_character_anywhere_is_refused(case: tuple[str, str, str, str], bad: str,
                                                 data: st.DataObject) -> None:
    text = case[0]
    at = data.draw(st.integers(0, len(text)))
    mutated = text[:at] + bad + text[at:]
    with pytest.raises(UsageError) as caught:
        parse_reference(mutated, "--tag")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("--tag ")


@given(reference(with_digest=False), st.data())
def test_upper_case_in_the_repository_path_is_refused(case: tuple[str, str, str, str],
                                                      data: st.DataObject) -> None:
    """The last path component is never a registry host: upper case there is refused."""
    _, name, tag, _ = case
    last = name.rsplit("/", 1)[-1]
    at = data.draw(st.integers(0, len(last) - 1))
    upper = name[: len(name) - len(last)] + last[:at] + last[at].upper() + last[at + 1:]
    if upper == name:  # a digit has no upper case
        return
    with pytest.raises(UsageError, match="lowercase"):
        parse_reference(upper + (f":{tag}" if tag else ""))


@given(st.text(max_size=300))
@settings(suppress_health_check=[HealthCheck.too_slow])
@example("redteam/x:1:2")
@example("a" * 5000 + "!")
@example("a" + "-" * 3000 + "!")
@example("a." * 1000 + "/x")
def test_any_text_is_a_reference_or_one_line(text: str) -> None:
    try:
        parsed = parse_reference(text, "--tag")
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert text.isascii() and text.isprintable() and " " not in text
    assert len(parsed.tag) <= MAX_TAG
    assert parsed.name.rsplit("/", 1)[-1] == parsed.name.rsplit("/", 1)[-1].lower()


@given(reference(with_digest=False))
def test_the_unsigned_tag_is_checked_with_the_tag(case: tuple[str, str, str, str]) -> None:
    text, _name, tag, _ = case
    try:
        derived = unsigned_tag(text)
    except UsageError as exc:
        assert len((tag or "latest") + "-unsigned") > MAX_TAG, exc
        return
    assert derived == check_tag(derived).name + ":" + (tag or "latest") + "-unsigned"


@pytest.mark.parametrize("value,fragment", [
    ("redteam/x:1:2", "redteam/x:1 is not a valid image name"),
    ("x:" + "a" * (MAX_TAG + 1), "longer than 128"),
    ("x:.hidden", "must start with"),
    ("x:-dash", "must start with"),
    ("Team/App:1", "lowercase"),
    ("team/App", "lowercase"),
    ("a" * 64, "image id"),
    ("a" * (MAX_PATH - len("library/") + 1), "longer than 255"),
    ("team/" + "a" * (MAX_PATH - 4), "longer than 255"),
    ("x@sha256:abc", "ALGORITHM:HEX"),
    ("x@256:" + "a" * 64, "ALGORITHM:HEX"),
    ("x@sha256:" + "a" * 63, "64 lowercase hex"),
    ("x@sha256:" + "A" * 64, "64 lowercase hex"),
    ("x@sha512:" + "a" * 64, "128 lowercase hex"),
    ("x@md5:" + "a" * 32, "not one Docker supports"),
    ("x@sha256+b64u:" + "a" * 64, "not one Docker supports"),
    ("", "empty"),
    ("x:", "must start with"),
    ("/x", "not a valid image name"),
    ("x/", "not a valid image name"),
    ("x//y", "not a valid image name"),
    ("x.-y", "not a valid image name"),
    ("x___y", "not a valid image name"),
    ("-x", "not a valid image name"),
    ("host:port/x", "not a valid image name"),
    ("[::1/x", "not a valid image name"),
    ("x" * 2000, "longer than 1024"),
])
def test_refused_references(value: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=None) as caught:
        check_tag(value)
    assert fragment in str(caught.value), str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("value,expected", [
    ("ubuntu", Reference("ubuntu")),
    # Docker Engine 20.10 counts the normalised name: docker.io/library/NAME.
    ("a" * (MAX_PATH - len("docker.io/library/")),
     Reference("a" * (MAX_PATH - len("docker.io/library/")))),
    ("team/" + "a" * (MAX_PATH - 15), Reference("team/" + "a" * (MAX_PATH - 15))),
    ("x:" + "a" * MAX_TAG, Reference("x", "a" * MAX_TAG)),
    ("localhost:5000/team/app:1.0", Reference("localhost:5000/team/app", "1.0", "",
                                              "localhost:5000")),
    ("Registry.Example/app:_x", Reference("Registry.Example/app", "_x", "", "Registry.Example")),
    ("[fe80::1]:5000/app", Reference("[fe80::1]:5000/app", "", "", "[fe80::1]:5000")),
    ("a__b.c---d/e:TAG", Reference("a__b.c---d/e", "TAG")),  # a "host" that is a path
    ("docker.io/x:1", Reference("docker.io/x", "1")),
    ("x:1@sha256:" + "f" * 64, Reference("x", "1", "sha256:" + "f" * 64)),
])
def test_accepted_references(value: str, expected: Reference) -> None:
    assert parse_reference(value) == expected


def test_a_tag_holds_no_digest_but_an_image_may() -> None:
    ref = "x@sha256:" + "a" * 64
    with pytest.raises(UsageError, match="cannot hold a digest"):
        check_tag(ref)
    assert check_image(ref) == ref
    assert check_image("sha256:" + "b" * 64) == "sha256:" + "b" * 64
    assert check_image("b" * 64) == "b" * 64  # a full id without its algorithm


def test_the_suffix_must_fit_in_a_tag() -> None:
    assert str(with_tag_suffix(check_tag("x"), "-unsigned")) == "x:latest-unsigned"
    longest = "x:" + "a" * (MAX_TAG - len("-unsigned"))
    assert unsigned_tag(longest).endswith("-unsigned")
    with pytest.raises(UsageError, match="implies"):
        unsigned_tag(longest + "a")


# --------------------------------------------------------------------------
# Every command refuses a bad reference before doing anything
# --------------------------------------------------------------------------
NOWHERE = {"DOCKER_HOST": "unix:///nonexistent/ppml-image-test.sock"}


@pytest.mark.parametrize("args,fragment", [
    (["build-custom", "--key", "{key}", "--tag", "redteam/x:1:2"], "--tag redteam/x:1:2"),
    (["build-custom", "--key", "{key}", "--tag", "x:" + "a" * 120], "implies"),
    (["build-custom", "--key", "{key}", "--base", "Base:1"], "--base Base:1"),
    (["sign-image", "x:1-unsigned", "--key", "{key}", "--tag", "x:1@sha256:" + "a" * 64],
     "cannot hold a digest"),
    (["sign-image", "sha256:" + "a" * 64, "--key", "{key}"], "give --tag"),
    (["sign-image", "X:1-unsigned", "--key", "{key}"], "lowercase"),
    (["build-base", "--tag", "x:1:2"], "tag x:1:2"),
    (["build-base", "--tag", "ok:1", "--os-image", "debian:-x"], "os_image debian:-x"),
    (["bootstrap-os", "--tag", "debian:"], "--tag debian:"),
    (["bootstrap-os", "--suite", "bookworm!"], "debian:bookworm!"),
    (["verify", "Bad:1"], "Bad:1"),
    (["inspect", "x::1"], "x::1"),
    (["run", "x:1 ", "--no-sgx"], "x:1 "),
    (["verify", "x:1", "--base", "base@md5:1"], "base@md5:1"),
], ids=lambda v: "-".join(v) if isinstance(v, list) else v[:20])
def test_commands_refuse_bad_references_before_reaching_the_engine(
        args: list[str], fragment: str, enclave_key: Path) -> None:
    """With no engine at all, the reference is what the one-line error is about."""
    result = run_cli(*[a.replace("{key}", str(enclave_key)) for a in args], env=NOWHERE)
    assert_one_line_error(result, fragment)
    assert result.returncode == 2, result
    assert "no Docker engine" not in result.stderr


# --------------------------------------------------------------------------
# Differential: the Docker CLI's own parser, on the real engine, with no tag made
# --------------------------------------------------------------------------
DOCKER_CLI = shutil.which("docker") or "/usr/local/bin/docker"
ABSENT_IMAGE = "sha256:" + "0" * 63 + "1"


def _docker_accepts(target: str) -> bool:
    """Whether ``docker tag`` parses *target* (the engine then says the source is absent)."""
    result = subprocess.run([DOCKER_CLI, "tag", ABSENT_IMAGE, target], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "DOCKER_CLI_HINTS": "0"})
    assert result.returncode != 0, f"docker tagged {target!r}"
    text = result.stderr.lower()
    if "no such image" in text:
        return True
    assert "invalid" in text or "refusing" in text or "must be" in text or \
        "not a valid" in text or "cannot specify" in text, result.stderr
    return False


def _ours(target: str) -> bool:
    try:
        check_tag(target)
    except UsageError:
        return False
    return True


def _mutations() -> st.SearchStrategy[str]:
    def mutate(case: tuple[str, str, str, str], at: int, insert: str) -> str:
        text = case[0]
        at = min(at, len(text))
        return text[:at] + insert + text[at:]

    valid = reference().map(lambda c: c[0])
    mutated = st.builds(mutate, reference(), st.integers(0, 60),
                        st.sampled_from(["", ":", "/", "@", ".", "-", "_", "__", "A", ":1",
                                         "//", "..", "x" * 130]))
    # docker 20.10 engines refuse IPv6 registry hosts that the CLI's newer parser accepts
    return st.one_of(valid, mutated).filter(lambda t: "[" not in t and "\n" not in t)


@pytest.mark.docker
@pytest.mark.skipif(not Path(DOCKER_CLI).exists(), reason="no docker CLI")
@given(_mutations())
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_the_docker_cli_agrees(target: str) -> None:
    assert _ours(target) == _docker_accepts(target), target


@pytest.mark.docker
def test_a_bad_tag_moves_no_tag_and_leaves_no_stray(enclave_key: Path, slim_base: dict,
                                                    app_dir: Path, docker_client) -> None:
    """Once: --tag NAME:1:2 exited 1 after building, and left NAME:2-unsigned behind."""
    import docker.errors

    name = unique_tag("stray").split(":")[0]
    result = run_cli("build-custom", "--key", enclave_key, "--base", slim_base["tags"][0],
                     "--app", app_dir, "--tag", f"{name}:1:2", "--json")
    assert_one_line_error(result, f"{name}:1:2")
    assert result.returncode == 2
    for stray in (f"{name}:2-unsigned", f"{name}:1:2-unsigned", f"{name}:2"):
        with pytest.raises((docker.errors.ImageNotFound, docker.errors.APIError)):
            docker_client.images.get(stray)
