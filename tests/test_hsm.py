"""Signing with a key inside a real PKCS#11 token (SoftHSM2): same bytes as a
key file, keys made inside the token, and one line for every token error."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import COMMON, VECTORS, assert_one_line_error, cases, load_case, run_cli
from ptyrun import answer_prompt
from softhsm import SoftHsm

PAL = COMMON / "fake_libpal.so"
VECTOR = "sign-basic-256m-4t-debug"
KEY_LABELS = {"../_common/key.pem": "vector-key", "../_common/key2.pem": "vector-key2"}


def sign_case(name: str, key: str, out: Path, *extra: str,
              env: dict[str, str] | None = None):
    """Sign a conformance vector's manifest with *key* (a file or a URI)."""
    case = load_case(name)
    args = ["sign", "--manifest", case["manifest"], "--libpal", case["libpal"], "--key", key,
            "--date", case["date"], "--output", out / "out.manifest.sgx",
            "--pkglibdir", case["pkglibdir"], *extra]
    if case["chroot"]:
        args += ["--chroot", case["chroot"]]
    return run_cli(*args, cwd=VECTORS / name, env=env)


def _objects(listing: str) -> list[dict[str, str]]:
    """``pkcs11-tool --list-objects`` output as one dict per object."""
    objects: list[dict[str, str]] = []
    for line in listing.splitlines():
        if line and not line[0].isspace() and "Object" in line:
            objects.append({"kind": line.split(";")[0].strip()})
        elif objects and ":" in line:
            key, _, value = line.strip().partition(":")
            objects[-1][key] = value.strip()
    return objects


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------
# The same .sig from a token as from the key file, and as Gramine's.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in cases("sign", errors=False)
                                  if load_case(n)["key"] in KEY_LABELS])
def test_token_signature_is_byte_identical_to_gramine(name: str, softhsm: SoftHsm,
                                                      out: Path) -> None:
    case = load_case(name)
    result = sign_case(name, softhsm.uri(KEY_LABELS[case["key"]]), out, env=softhsm.env)
    assert result.returncode == 0, result.stderr
    assert (out / "out.sig").read_bytes() == (VECTORS / name / "expected.sig").read_bytes()
    assert ((out / "out.manifest.sgx").read_bytes()
            == (VECTORS / name / "expected.manifest.sgx").read_bytes())


def test_token_and_file_key_give_the_same_sig(softhsm: SoftHsm, tmp_path: Path) -> None:
    by_file, by_token = tmp_path / "file", tmp_path / "token"
    by_file.mkdir()
    by_token.mkdir()
    assert sign_case(VECTOR, str(COMMON / "key.pem"), by_file).returncode == 0
    result = sign_case(VECTOR, softhsm.uri("vector-key"), by_token, env=softhsm.env)
    assert result.returncode == 0, result.stderr
    assert (by_token / "out.sig").read_bytes() == (by_file / "out.sig").read_bytes()


def test_module_and_pin_from_the_environment(softhsm: SoftHsm, out: Path) -> None:
    uri = softhsm.uri("vector-key", module=False, pin=False)
    env = {**softhsm.env, "PPML_IMAGE_PKCS11_MODULE": softhsm.module,
           "PPML_IMAGE_PKCS11_PIN": softhsm.pin}
    result = sign_case(VECTOR, uri, out, env=env)
    assert result.returncode == 0, result.stderr
    assert (out / "out.sig").read_bytes() == (VECTORS / VECTOR / "expected.sig").read_bytes()


def test_key_selected_by_id_and_percent_encoded_label(softhsm: SoftHsm, out: Path) -> None:
    # "vector-key" spelt with every letter percent-encoded, and its CKA_ID.
    label = "".join(f"%{b:02x}" for b in b"vector-key")
    uri = softhsm.uri(None, extra_path=f"object={label};id=%01;type=private")
    result = sign_case(VECTOR, uri, out, env=softhsm.env)
    assert result.returncode == 0, result.stderr
    assert (out / "out.sig").read_bytes() == (VECTORS / VECTOR / "expected.sig").read_bytes()


def test_pin_prompt_on_a_terminal_is_hidden(softhsm: SoftHsm, out: Path) -> None:
    case = load_case(VECTOR)
    argv = [sys.executable, "-m", "ppml_image", "sign", "--manifest", case["manifest"],
            "--libpal", case["libpal"], "--key", softhsm.uri("vector-key", pin=False),
            "--date", case["date"], "--chroot", case["chroot"],
            "--output", str(out / "out.manifest.sgx")]
    def prepare() -> None:  # in the child, before exec
        os.chdir(VECTORS / VECTOR)
        for name in ("PPML_IMAGE_PKCS11_PIN", "PPML_IMAGE_PKCS11_MODULE"):
            os.environ.pop(name, None)
        os.environ.update(softhsm.env)

    code, output = answer_prompt(argv, b"PIN for", softhsm.pin.encode(), before_exec=prepare)
    assert code == 0, output
    assert b"PKCS#11 token 'ppml' object 'vector-key'" in output  # the prompt names the key
    assert softhsm.pin.encode() not in output  # not echoed
    assert (out / "out.sig").read_bytes() == (VECTORS / VECTOR / "expected.sig").read_bytes()


# --------------------------------------------------------------------------
# keygen --pkcs11: a key pair made inside the token.
# --------------------------------------------------------------------------
def test_keygen_in_token_then_sign_with_it(softhsm: SoftHsm, out: Path, token_session) -> None:
    label = f"gen-{os.urandom(4).hex()}"
    made = run_cli("keygen", "--pkcs11", softhsm.uri(label), "--json", env=softhsm.env)
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["token"] == "ppml" and info["object"] == label and len(info["mr_signer"]) == 64

    made_objects = [o for o in _objects(softhsm.tool("--list-objects").stdout)
                    if o.get("label") == label]
    assert sorted(o["kind"] for o in made_objects) == ["Private Key Object",
                                                       "Public Key Object"], made_objects
    private = next(o for o in made_objects if o["kind"] == "Private Key Object")
    assert {"sensitive", "always sensitive", "never extractable", "local"} <= set(
        private["Access"].split(", ")), private
    assert private["Usage"] == "sign", private  # no decrypt, no unwrap
    # The private exponent cannot be read out of the token, even logged in.
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    key = token_session.get_key(ObjectClass.PRIVATE_KEY, label=label)
    with pytest.raises(pkcs11.AttributeSensitive):
        key[Attribute.PRIVATE_EXPONENT]
    with pytest.raises(pkcs11.AttributeSensitive):
        key[Attribute.PRIME_1]

    result = sign_case(VECTOR, softhsm.uri(label), out, env=softhsm.env)
    assert result.returncode == 0, result.stderr
    assert f"mr_signer:  {info['mr_signer']}" in result.stdout
    view = run_cli("sigstruct", out / "out.sig", "--json")
    assert view.returncode == 0, view.stderr
    assert json.loads(view.stdout)["mr_signer"] == info["mr_signer"]
    assert json.loads(view.stdout)["mr_enclave"] == load_case(VECTOR)["expected"]["mr_enclave"]


def test_keygen_never_replaces_a_token_object(softhsm: SoftHsm) -> None:
    before = softhsm.tool("--list-objects").stdout
    result = run_cli("keygen", "--pkcs11", softhsm.uri("vector-key"), env=softhsm.env)
    assert_one_line_error(result, "token 'ppml'", "object 'vector-key'", "already exists")
    assert softhsm.tool("--list-objects").stdout == before


@pytest.mark.parametrize("extra,fragment", [
    (["some-key.pem"], "drop the key file path"),
    (["--force"], "drop --force"),
])
def test_keygen_pkcs11_refuses_file_options(extra: list[str], fragment: str,
                                            softhsm: SoftHsm, tmp_path: Path) -> None:
    result = run_cli("keygen", "--pkcs11", softhsm.uri("unused"), *extra, env=softhsm.env,
                     cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert result.returncode == 2
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# Every token error: one line naming the token and the object, nothing written.
# --------------------------------------------------------------------------
def _wrong_pin_file(hsm: SoftHsm) -> str:
    path = hsm.root / "wrong.pin"
    path.write_text("not-the-pin\n")
    return f"pin-source=file:{path}"


TOKEN_ERRORS = [
    # id, (hsm -> URI), extra env, fragments, exit code
    ("wrong-pin-file", lambda h: h.uri("vector-key", pin=False, extra_query=_wrong_pin_file(h)),
     {}, ["token 'ppml'", "object 'vector-key'", "wrong PIN"], 1),
    ("wrong-pin-env", lambda h: h.uri("vector-key", pin=False),
     {"PPML_IMAGE_PKCS11_PIN": "wrong-pin"}, ["object 'vector-key'", "wrong PIN"], 1),
    ("object-missing", lambda h: h.uri("no-such-key"), {},
     ["token 'ppml'", "object 'no-such-key'", "object missing"], 1),
    ("no-such-token", lambda h: h.uri("vector-key", token="no-such-token"), {},
     ["token 'no-such-token'", "object 'vector-key'", "no such token"], 1),
    ("module-missing", lambda h: h.uri("vector-key", module=False,
                                       extra_query="module-path=/nonexistent/libnope.so"), {},
     ["token 'ppml'", "object 'vector-key'", "/nonexistent/libnope.so", "cannot be loaded"], 1),
    ("module-not-elf", lambda h: h.uri("vector-key", module=False,
                                       extra_query=f"module-path={h.conf}"), {},
     ["token 'ppml'", "object 'vector-key'", "cannot be loaded"], 1),
    ("module-not-pkcs11", lambda h: h.uri("vector-key", module=False,
                                          extra_query=f"module-path={COMMON}/gcc_libpal.so"),
     {}, ["token 'ppml'", "object 'vector-key'", "not a PKCS#11 module"], 1),
    ("module-relative", lambda h: h.uri("vector-key", module=False,
                                        extra_query="module-path=lib/libsofthsm2.so"), {},
     ["object 'vector-key'", "absolute path"], 2),
    ("no-module", lambda h: h.uri("vector-key", module=False), {},
     ["object 'vector-key'", "module-path", "PPML_IMAGE_PKCS11_MODULE"], 2),
    ("module-name", lambda h: h.uri("vector-key", module=False,
                                    extra_query="module-name=softhsm2"), {},
     ["object 'vector-key'", "module-name is not supported"], 2),
    ("key-2048", lambda h: h.uri("rsa-2048"), {},
     ["token 'ppml'", "object 'rsa-2048'", "2048-bit", "3072"], 1),
    ("key-e65537", lambda h: h.uri("rsa-e65537"), {},
     ["token 'ppml'", "object 'rsa-e65537'", "exponent is 65537"], 1),
    ("key-ec", lambda h: h.uri("ec-key"), {}, ["object 'ec-key'", "EC key", "RSA-3072"], 1),
    ("two-keys-match", lambda h: h.uri("twice"), {}, ["object 'twice'", "2 private keys"], 1),
    ("no-pin-no-terminal", lambda h: h.uri("vector-key", pin=False), {},
     ["object 'vector-key'", "no PIN", "pin-source", "PPML_IMAGE_PKCS11_PIN"], 1),
    ("pin-file-missing", lambda h: h.uri("vector-key", pin=False,
                                         extra_query="pin-source=file:/nonexistent/pin"), {},
     ["object 'vector-key'", "/nonexistent/pin", "cannot read"], 1),
    ("pin-file-endless", lambda h: h.uri("vector-key", pin=False,
                                         extra_query="pin-source=file:/dev/zero"), {},
     ["object 'vector-key'", "/dev/zero", "not a PIN file"], 1),
    ("pin-source-command", lambda h: h.uri("vector-key", pin=False,
                                           extra_query="pin-source=|/bin/cat"), {},
     ["object 'vector-key'", "file: URI"], 2),
    ("pin-source-remote", lambda h: h.uri("vector-key", pin=False,
                                          extra_query="pin-source=file://evil.example/pin"),
     {}, ["object 'vector-key'", "local file"], 2),
    ("public-key-object", lambda h: h.uri("vector-key", extra_path="type=public"), {},
     ["object 'vector-key'", "type=public cannot sign"], 2),
    ("no-object", lambda h: h.uri(None), {}, ["token 'ppml'", "names no key"], 2),
    ("unknown-attribute", lambda h: h.uri(None, extra_path="objet=vector-key"), {},
     ["unknown path attribute 'objet'"], 2),
]


@pytest.mark.parametrize("uri_of,env,fragments,code", [c[1:] for c in TOKEN_ERRORS],
                         ids=[c[0] for c in TOKEN_ERRORS])
def test_token_errors_are_one_line(uri_of, env: dict[str, str], fragments: list[str],
                                   code: int, softhsm: SoftHsm, out: Path) -> None:
    result = sign_case(VECTOR, uri_of(softhsm), out, env={**softhsm.env, **env})
    assert_one_line_error(result, *fragments)
    assert result.returncode == code, result.stderr
    assert softhsm.pin not in result.stderr
    assert _outputs(out) == []


def test_key_that_may_not_sign(softhsm: SoftHsm, out: Path, token_session) -> None:
    from pkcs11 import Attribute, KeyType, MechanismFlag

    label = f"nosign-{os.urandom(3).hex()}"
    token_session.generate_keypair(
        KeyType.RSA, 3072, label=label, id=os.urandom(4), store=True,
        capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
        public_template={Attribute.PUBLIC_EXPONENT: b"\x03"})
    result = sign_case(VECTOR, softhsm.uri(label), out, env=softhsm.env)
    assert_one_line_error(result, f"object '{label}'", "may not sign")
    assert _outputs(out) == []


def test_pin_value_is_refused_and_never_echoed(softhsm: SoftHsm, out: Path) -> None:
    uri = softhsm.uri("vector-key", pin=False, extra_query=f"pin-value={softhsm.pin}")
    result = sign_case(VECTOR, uri, out, env=softhsm.env)
    assert_one_line_error(result, "pin-value", "command line")
    assert result.returncode == 2
    assert softhsm.pin not in result.stderr + result.stdout
    assert _outputs(out) == []


def test_passphrase_file_is_not_a_pin(softhsm: SoftHsm, out: Path) -> None:
    result = sign_case(VECTOR, softhsm.uri("vector-key"), out, "--passphrase-file",
                       str(softhsm.pin_file), env=softhsm.env)
    assert_one_line_error(result, "--passphrase-file", "pin-source")
    assert result.returncode == 2


def test_token_errors_name_the_token_before_long_work(softhsm: SoftHsm, tmp_path: Path,
                                                      out: Path) -> None:
    """A bad token key fails before any trusted file is read (a missing one here)."""
    manifest = tmp_path / "app.manifest"
    manifest.write_text('sgx.trusted_files = ["file:/missing/file"]\nsgx.enclave_size = "64M"\n'
                        'sgx.max_threads = 2\nlibos.entrypoint = "/missing/file"\n')
    result = run_cli("sign", "--manifest", manifest, "--libpal", PAL, "--key",
                     softhsm.uri("no-such-key"), "--output", out / "app.manifest.sgx",
                     env=softhsm.env)
    assert_one_line_error(result, "object 'no-such-key'")
    assert "/missing/file" not in result.stderr


# --------------------------------------------------------------------------
# The library seam, in process: every signer gives the same SIGSTRUCT.
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_env(softhsm: SoftHsm):
    """SOFTHSM2_CONF for python-pkcs11 in this process (our session's token only)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SOFTHSM2_CONF", str(softhsm.conf))
    yield softhsm
    mp.undo()


@pytest.fixture
def token_session(token_env: SoftHsm):
    from ppml_image.sgx.signing.hsm import open_session
    from ppml_image.sgx.signing.pkcs11_uri import parse_uri

    with open_session(parse_uri(token_env.uri(None)), rw=True) as session:
        yield session


def test_every_signer_makes_the_same_sigstruct(token_env: SoftHsm) -> None:
    from cryptography.hazmat.primitives import serialization

    from ppml_image.sgx.signing import choose
    from ppml_image.sgx.signing.external import ExternalSignature
    from ppml_image.sgx.signing.signers import sign_sigstruct
    from ppml_image.sgx.signing.sigstruct import read_sigstruct

    expected = (VECTORS / VECTOR / "expected.sig").read_bytes()
    tbs = read_sigstruct(VECTORS / VECTOR / "expected.sig", verify=True)
    key = serialization.load_pem_private_key((COMMON / "key.pem").read_bytes(), None)
    with choose.signer_from_option(token_env.uri("vector-key")) as token:
        pem = choose.signer_from_option(COMMON / "key.pem")
        external = ExternalSignature(
            key.public_key(), tbs.signature.to_bytes(384, "big"))  # type: ignore[union-attr]
        for signer in (key, pem, token, external):
            tbs.signature = tbs.q1 = tbs.q2 = tbs.modulus = 0
            sign_sigstruct(tbs, signer)  # type: ignore[arg-type]
            assert tbs.to_bytes() == expected, signer
    # Closing twice is harmless; signing after close is a clear error.
    token.close()
    with pytest.raises(Exception, match="session is closed"):
        token.sign(b"x" * 256)


def test_a_signer_that_returns_a_bad_signature_is_refused(token_env: SoftHsm) -> None:
    from cryptography.hazmat.primitives import serialization

    from ppml_image.errors import SigstructError
    from ppml_image.sgx.signing.signers import PemSigner, sign_sigstruct
    from ppml_image.sgx.signing.sigstruct import read_sigstruct

    class Lying(PemSigner):
        """Claims one key, signs with another: what a misconfigured HSM might do."""

        def __init__(self) -> None:
            super().__init__(serialization.load_pem_private_key(  # type: ignore[arg-type]
                (COMMON / "key2.pem").read_bytes(), None), "lying signer")
            self._claimed = serialization.load_pem_private_key(
                (COMMON / "key.pem").read_bytes(), None).public_key()

        @property
        def public_key(self):  # type: ignore[no-untyped-def]
            return self._claimed

    tbs = read_sigstruct(VECTORS / VECTOR / "expected.sig")
    with pytest.raises(SigstructError, match=r"lying signer: .*does not verify"):
        sign_sigstruct(tbs, Lying())
