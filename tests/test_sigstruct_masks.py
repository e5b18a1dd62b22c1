"""The SIGSTRUCT's masks are part of "debug" (issue 16, point 3).

EINIT compares SECS.ATTRIBUTES with SIGSTRUCT.ATTRIBUTES only under
ATTRIBUTEMASK: signing data whose mask leaves DEBUG out can be launched in
debug mode by the host, with the same MRENCLAVE and MRSIGNER. Every report
(``sigstruct``, ``sigstruct --signing-data``, ``inspect``, ``verify``) says
``debug_launchable``; a release review (``sigstruct --release``) and
``sign --release`` refuse it; ``verify`` refuses it unless ``--allow-debug``.

Hostile SIGSTRUCTs are Gramine's own vectors with one mask changed and
re-signed with the vector's (public, throw-away) key: valid in every other
respect, so only the mask can be what is refused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import (
    VECTORS,
    Result,
    assert_one_line_error,
    load_case,
    read_file_from_image,
    run_cli,
    unique_tag,
)
from hypothesis import given
from hypothesis import strategies as st

from ppml_image.errors import PolicyError
from ppml_image.images.engine.context import BuildContext
from ppml_image.sgx.signing.keys import load_signing_key
from ppml_image.sgx.signing.signers import sign_sigstruct
from ppml_image.sgx.signing.sigstruct import (
    GRAMINE_XFRM_MASK_CONST,
    Sigstruct,
    read_sigstruct,
    refuse_for_release,
)

RELEASE_VECTOR = "sign-1g-16t-nodebug-gcc"  # debug = false, Gramine's masks
ALL_ONES = 0xFFFFFFFFFFFFFFFF
NO_DEBUG_MASK = ALL_ONES & ~0x2
OPENSSL = shutil.which("openssl") or "openssl"

# (what changes, the fields, a phrase of the problem, debug_launchable)
HOSTILE = [
    ("flags mask without DEBUG", {"attribute_flags_mask": NO_DEBUG_MASK},
     "does not cover DEBUG", True),
    ("flags mask of zero", {"attribute_flags_mask": 0}, "does not cover DEBUG", True),
    ("flags mask without PROVISIONKEY", {"attribute_flags_mask": ALL_ONES & ~0x10},
     "leaves attribute bits 0x10 to the host", False),
    ("xfrm mask without PKRU", {"attribute_xfrm_mask": GRAMINE_XFRM_MASK_CONST & ~0x200},
     "leaves XFRM bits 0x200", False),
    ("xfrm mask with half of AVX-512", {"attribute_xfrm_mask": GRAMINE_XFRM_MASK_CONST | 0x20},
     "adds bits that no sgx.cpu_features setting adds", False),
    ("misc mask without EXINFO", {"misc_mask": 0xFFFFFFFE}, "leaves MISCSELECT bits 0x1",
     False),
]
IDS = [case[0] for case in HOSTILE]


def vector_sig(name: str = RELEASE_VECTOR) -> Sigstruct:
    return read_sigstruct(VECTORS / name / "expected.sig")


def resigned(fields: dict[str, int], name: str = RELEASE_VECTOR) -> Sigstruct:
    """The vector's SIGSTRUCT with *fields* changed, signed again with its key."""
    key = load_signing_key(VECTORS / name / load_case(name)["key"])
    tbs = replace(vector_sig(name), raw=None, **fields)
    sign_sigstruct(tbs, key)
    return tbs


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------
# sigstruct: a .sig
# --------------------------------------------------------------------------
@pytest.mark.parametrize(("what", "fields", "phrase", "debug"), HOSTILE, ids=IDS)
def test_sigstruct_reports_every_non_gramine_mask(what: str, fields: dict[str, int],
                                                  phrase: str, debug: bool,
                                                  tmp_path: Path) -> None:
    sig = write(tmp_path / "hostile.sig", resigned(fields).to_bytes())
    result = run_cli("sigstruct", sig, "--json")
    assert result.returncode == 0, result.stderr  # a valid SIGSTRUCT: reported, not refused
    view = json.loads(result.stdout)
    assert list(view)[:2] == ["debug_launchable", "mask_problems"]  # first, before any field
    assert view["debug_launchable"] is debug
    assert view["debug_enclave"] is False  # what Gramine's view says: the trap itself
    assert phrase in view["mask_problems"][0]
    # A zero flags mask leaves DEBUG and every other attribute bit to the host: two lines.
    assert len(view["mask_problems"]) == (2 if fields.get("attribute_flags_mask") == 0 else 1)
    refused = run_cli("sigstruct", sig, "--release")
    assert refused.returncode == 3
    assert_one_line_error(refused, "hostile.sig", "refused for release", phrase)


def test_sigstruct_text_puts_debug_launchable_first_and_warns(tmp_path: Path) -> None:
    sig = write(tmp_path / "nodebugmask.sig",
                resigned({"attribute_flags_mask": NO_DEBUG_MASK}).to_bytes())
    result = run_cli("sigstruct", sig)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["debug_launchable:", "true"]
    assert lines[1].startswith("mask_problems:") and "does not cover DEBUG" in lines[2]
    assert "WARNING: debug_launchable" in result.stderr


@pytest.mark.parametrize("name", ["sign-1g-16t-nodebug-gcc", "sign-isv-exinfo",
                                  "sign-cpu-features", "sign-basic-256m-4t-debug"])
def test_gramines_own_sigs_have_no_mask_problem(name: str) -> None:
    view = json.loads(run_cli("sigstruct", VECTORS / name / "expected.sig", "--json").stdout)
    assert view["mask_problems"] == []
    assert view["debug_launchable"] is view["debug_enclave"]
    release = run_cli("sigstruct", VECTORS / name / "expected.sig", "--release")
    if view["debug_enclave"]:  # DEBUG set: refused for release, naming why
        assert release.returncode == 3
        assert_one_line_error(release, "ATTRIBUTES.DEBUG is set")
    else:
        assert release.returncode == 0, release.stderr


# --------------------------------------------------------------------------
# The offline review: sigstruct --signing-data, and sign --release
# --------------------------------------------------------------------------
def test_signing_data_review_prints_debug_launchable_first(tmp_path: Path) -> None:
    data = write(tmp_path / "app.tbs",
                 resigned({"attribute_flags_mask": NO_DEBUG_MASK}).signed_bytes())
    result = run_cli("sigstruct", "--signing-data", data, "--json")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert next(iter(view)) == "debug_launchable" and view["debug_launchable"] is True
    assert view["debug_enclave"] is False
    text = run_cli("sigstruct", "--signing-data", data)
    assert text.stdout.splitlines()[0].split() == ["debug_launchable:", "true"]
    assert "WARNING: debug_launchable" in text.stderr
    refused = run_cli("sigstruct", "--signing-data", data, "--release", "--json")
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["exit_code"] == 3
    assert "does not cover DEBUG" in json.loads(refused.stdout)["error"]


@pytest.mark.parametrize(("what", "fields", "phrase", "debug"), HOSTILE, ids=IDS)
def test_release_review_refuses_hostile_signing_data(what: str, fields: dict[str, int],
                                                     phrase: str, debug: bool,
                                                     tmp_path: Path) -> None:
    data = write(tmp_path / "app.tbs", resigned(fields).signed_bytes())
    refused = run_cli("sigstruct", "--signing-data", data, "--release")
    assert refused.returncode == 3
    assert_one_line_error(refused, "app.tbs", phrase)


def _sign_vector(out: Path, *extra: str | Path) -> Result:
    case = load_case(RELEASE_VECTOR)
    return run_cli("sign", "--manifest", case["manifest"], "--libpal", case["libpal"],
                   "--date", case["date"], "--output", out / "out.manifest.sgx",
                   "--pkglibdir", case["pkglibdir"], "--chroot", case["chroot"], "--release",
                   *extra, cwd=VECTORS / RELEASE_VECTOR)


def test_release_export_passes_the_release_review(tmp_path: Path) -> None:
    result = _sign_vector(tmp_path, "--export-signing-data", tmp_path / "app.tbs")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "app.tbs.json").read_text())
    assert record["debug_launchable"] is False and record["mask_problems"] == []
    review = run_cli("sigstruct", "--signing-data", tmp_path / "app.tbs", "--release")
    assert review.returncode == 0, review.stderr
    assert review.stdout.splitlines()[0].split() == ["debug_launchable:", "false"]


def test_sign_release_refuses_a_signature_over_debug_launchable_data(tmp_path: Path) -> None:
    """Signing data with DEBUG left out of the mask, signed offline, then brought
    to ``sign --release``: refused, the .sig is never written."""
    hostile = write(tmp_path / "hostile.tbs",
                    resigned({"attribute_flags_mask": NO_DEBUG_MASK}).signed_bytes())
    key = VECTORS / RELEASE_VECTOR / load_case(RELEASE_VECTOR)["key"]
    subprocess.run([OPENSSL, "dgst", "-sha256", "-sign", str(key), "-out",
                    str(tmp_path / "hostile.sig.bin"), str(hostile)], check=True, timeout=60)
    subprocess.run([OPENSSL, "rsa", "-in", str(key), "-pubout", "-out",
                    str(tmp_path / "pub.pem")], check=True, capture_output=True, timeout=60)
    out = tmp_path / "out"
    out.mkdir()
    result = _sign_vector(out, "--signature", tmp_path / "hostile.sig.bin",
                          "--public-key", tmp_path / "pub.pem")
    assert result.returncode == 3
    assert_one_line_error(result, "hostile.sig.bin", "does not verify")
    assert list(out.iterdir()) == []


def test_sign_release_guard_refuses_debug_launchable_sigstruct() -> None:
    """What ``sign --release`` runs on the SIGSTRUCT it is about to sign."""
    refuse_for_release(vector_sig(), "genuine", PolicyError)  # Gramine's masks, no debug
    for _, fields, phrase, _ in HOSTILE:
        with pytest.raises(PolicyError, match=phrase):
            refuse_for_release(replace(vector_sig(), raw=None, **fields), "tbs", PolicyError)


# --------------------------------------------------------------------------
# The rule itself, for every mask
# --------------------------------------------------------------------------
_U64 = st.integers(0, ALL_ONES)


@given(flags=_U64, flags_mask=_U64, xfrm_mask=_U64, misc_mask=st.integers(0, 0xFFFFFFFF))
def test_debug_launchable_is_what_einit_allows(flags: int, flags_mask: int, xfrm_mask: int,
                                               misc_mask: int) -> None:
    sig = replace(vector_sig(), raw=None, attribute_flags=flags, attribute_flags_mask=flags_mask,
                  attribute_xfrm_mask=xfrm_mask, misc_mask=misc_mask)
    # EINIT accepts SECS.ATTRIBUTES with DEBUG = 1 iff (1 ^ sig DEBUG) & mask DEBUG == 0.
    host_may_debug = ((0x2 ^ (flags & 0x2)) & flags_mask) == 0
    assert sig.debug_launchable is host_may_debug
    gramines = (flags_mask == ALL_ONES and misc_mask == 0xFFFFFFFF
                and xfrm_mask & GRAMINE_XFRM_MASK_CONST == GRAMINE_XFRM_MASK_CONST
                and all(xfrm_mask & bits in (0, bits) for bits in (0x4, 0xE0, 0x60000))
                and (not xfrm_mask & 0xE0 or xfrm_mask & 0x4)
                and xfrm_mask & ~(GRAMINE_XFRM_MASK_CONST | 0x600E4) == 0)
    assert (sig.mask_problems() == []) is gramines
    assert (sig.release_problems() == []) is (gramines and not flags & 0x2)


# --------------------------------------------------------------------------
# An image: inspect and verify (one docker test)
# --------------------------------------------------------------------------
@pytest.mark.docker
def test_image_with_debug_launchable_sig(custom_image: dict, enclave_key: Path, docker_client,
                                         janitor) -> None:
    """The genuine image's .sig, its mask without DEBUG, re-signed with the same key."""
    sig_path = "/ppml/python-ml.sig"
    genuine = Sigstruct.from_bytes(read_file_from_image(docker_client, custom_image["image"],
                                                        sig_path))
    hostile = replace(genuine, raw=None, attribute_flags_mask=NO_DEBUG_MASK)
    sign_sigstruct(hostile, load_signing_key(enclave_key))
    tag = janitor.track(unique_tag("masks"))
    context = BuildContext()
    context.add_bytes("python-ml.sig", hostile.to_bytes(), 0o644)
    context.add_bytes("Dockerfile", f"FROM {custom_image['image']}\n"
                      f"COPY python-ml.sig {sig_path}\n".encode())
    docker_client.images.build(fileobj=context.finish(), custom_context=True, tag=tag, rm=True,
                               network_mode="none")

    inspected = run_cli("inspect", tag, "--json")
    assert inspected.returncode == 0, inspected.stderr
    view = json.loads(inspected.stdout)
    assert next(iter(view)) == "debug_launchable" and view["debug_launchable"] is True
    assert view["debug_enclave"] is False and view["mr_enclave"] == custom_image["mr_enclave"]

    base = ["--base", custom_image["base_image_id"]]  # verify compares with a pinned base
    refused = run_cli("verify", tag, *base)
    assert refused.returncode == 3
    assert_one_line_error(refused, "does not cover DEBUG", "--allow-debug")
    accepted = run_cli("verify", tag, *base, "--allow-debug", "--json")
    assert accepted.returncode == 0, accepted.stdout
    report = json.loads(accepted.stdout)
    assert next(iter(report)) == "debug_launchable" and report["debug_launchable"] is True
    assert any("accepted: --allow-debug" in check for check in report["checks"])
