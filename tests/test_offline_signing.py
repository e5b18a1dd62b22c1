"""The offline two-step flow: export the signing data, sign it with the real
openssl (or pkcs11-tool on a SoftHSM2 token), assemble and verify."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import COMMON, VECTORS, assert_one_line_error, load_case, run_cli
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from softhsm import SoftHsm

VECTOR = "sign-basic-256m-4t-debug"
OPENSSL = shutil.which("openssl") or "openssl"


def sign_case(out: Path, *extra: str | Path, name: str = VECTOR, date: str | None = None,
              output: Path | None = None, env: dict[str, str] | None = None):
    case = load_case(name)
    args = ["sign", "--manifest", case["manifest"], "--libpal", case["libpal"],
            "--date", date or case["date"], "--output", output or out / "out.manifest.sgx",
            "--pkglibdir", case["pkglibdir"], *extra]
    if case["chroot"]:
        args += ["--chroot", case["chroot"]]
    return run_cli(*args, cwd=VECTORS / name, env=env)


def openssl(*args: str | Path) -> None:
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=60)


def public_pem(private: Path, out: Path) -> Path:
    openssl("rsa", "-in", private, "-pubout", "-out", out)
    return out


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """The vector exported: out/out.manifest.sgx, out/app.tbs, out/app.tbs.json."""
    out = tmp_path / "out"
    out.mkdir()
    result = sign_case(out, "--export-signing-data", out / "app.tbs")
    assert result.returncode == 0, result.stderr
    return out


def test_export_writes_data_json_and_manifest_but_no_sig(exported: Path) -> None:
    folder = VECTORS / VECTOR
    case = load_case(VECTOR)
    assert names(exported) == ["app.tbs", "app.tbs.json", "out.manifest.sgx"]
    assert ((exported / "out.manifest.sgx").read_bytes()
            == (folder / "expected.manifest.sgx").read_bytes())
    data = (exported / "app.tbs").read_bytes()
    expected_sig = (folder / "expected.sig").read_bytes()
    assert data == expected_sig[0:128] + expected_sig[900:1028]  # exactly the signed bytes
    record = json.loads((exported / "app.tbs.json").read_text())
    assert record["mr_enclave"] == case["expected"]["mr_enclave"]
    assert record["signing_data_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["manifest_sgx_sha256"] == case["expected"]["manifest_sgx_sha256"]
    view = json.loads((folder / "expected.view.json").read_text())
    for field in ("isv_prod_id", "isv_svn", "attribute_flags", "attribute_xfrms", "misc_select",
                  "attribute_flags_mask", "attribute_xfrm_mask", "misc_mask", "date"):
        assert record["sigstruct"][field] == view[field], field
    assert record["sigstruct"]["enclave_hash"] == view["mr_enclave"]
    assert record["debug_enclave"] is view["debug_enclave"]


def test_review_decodes_the_bytes_themselves(exported: Path) -> None:
    result = run_cli("sigstruct", "--signing-data", exported / "app.tbs", "--json")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    expected = json.loads((VECTORS / VECTOR / "expected.view.json").read_text())
    del expected["mr_signer"]
    assert {k: view[k] for k in expected} == expected
    # A signing-data file with a flipped reserved byte, or the wrong size, is not ours.
    data = bytearray((exported / "app.tbs").read_bytes())
    data[100] ^= 1
    (exported / "bad.tbs").write_bytes(bytes(data))
    assert_one_line_error(run_cli("sigstruct", "--signing-data", exported / "bad.tbs"),
                          "bad.tbs", "reserved bytes")
    (exported / "short.tbs").write_bytes(bytes(data[:200]))
    assert_one_line_error(run_cli("sigstruct", "--signing-data", exported / "short.tbs"),
                          "short.tbs", "256 bytes")


def test_openssl_signature_assembles_to_gramines_sig(exported: Path, tmp_path: Path) -> None:
    sig = exported / "app.tbs.sig"
    openssl("dgst", "-sha256", "-sign", COMMON / "key.pem", "-out", sig, exported / "app.tbs")
    pub = public_pem(COMMON / "key.pem", tmp_path / "pub.pem")
    result = sign_case(exported, "--signature", sig, "--public-key", pub)
    assert result.returncode == 0, result.stderr
    expected = (VECTORS / VECTOR / "expected.sig").read_bytes()
    assert (exported / "out.sig").read_bytes() == expected
    assert run_cli("sigstruct", exported / "out.sig").returncode == 0


@pytest.mark.parametrize("form", ["der-spki", "pkcs1-pem", "certificate"])
def test_public_key_forms(form: str, exported: Path, tmp_path: Path) -> None:
    sig = exported / "app.tbs.sig"
    openssl("dgst", "-sha256", "-sign", COMMON / "key.pem", "-out", sig, exported / "app.tbs")
    pub = tmp_path / "pub"
    if form == "der-spki":
        openssl("rsa", "-in", COMMON / "key.pem", "-pubout", "-outform", "DER", "-out", pub)
    elif form == "pkcs1-pem":
        openssl("rsa", "-in", COMMON / "key.pem", "-RSAPublicKey_out", "-out", pub)
    else:
        openssl("req", "-new", "-x509", "-key", COMMON / "key.pem", "-subj", "/CN=enclave",
                "-days", "1", "-out", pub)
    result = sign_case(exported, "--signature", sig, "--public-key", pub)
    assert result.returncode == 0, result.stderr
    assert (exported / "out.sig").read_bytes() == (VECTORS / VECTOR / "expected.sig").read_bytes()


def test_pkcs11_tool_signature_assembles_to_gramines_sig(exported: Path, softhsm: SoftHsm,
                                                         tmp_path: Path) -> None:
    sig = exported / "app.tbs.sig"
    softhsm.tool("--sign", "--mechanism", "SHA256-RSA-PKCS", "--id", "01",
                 "--input-file", str(exported / "app.tbs"), "--output-file", str(sig))
    pub_der = tmp_path / "pub.der"
    softhsm.tool("--read-object", "--type", "pubkey", "--id", "01",
                 "--output-file", str(pub_der))
    result = sign_case(exported, "--signature", sig, "--public-key", pub_der)
    assert result.returncode == 0, result.stderr
    assert (exported / "out.sig").read_bytes() == (VECTORS / VECTOR / "expected.sig").read_bytes()


def test_the_json_record_is_enough_to_reassemble(exported: Path) -> None:
    from ppml_image.errors import SigstructError
    from ppml_image.sgx.offline import sigstruct_from_record
    from ppml_image.sgx.signing.external import ExternalSignature
    from ppml_image.sgx.signing.signers import sign_sigstruct

    record = json.loads((exported / "app.tbs.json").read_text())
    key = serialization.load_pem_private_key((COMMON / "key.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    tbs = sigstruct_from_record(record)
    signature = key.sign((exported / "app.tbs").read_bytes(),
                         *_pkcs1_sha256())
    sign_sigstruct(tbs, ExternalSignature(key.public_key(), signature))
    assert tbs.to_bytes() == (VECTORS / VECTOR / "expected.sig").read_bytes()
    record["sigstruct"]["isv_svn"] = 7  # a hand-edited field no longer matches its hash
    with pytest.raises(SigstructError, match="signing_data_sha256"):
        sigstruct_from_record(record)


def _pkcs1_sha256():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256()


# --------------------------------------------------------------------------
# Refusals: nothing assembled, no .sig written, an old .sig left alone.
# --------------------------------------------------------------------------
def _sign_with(key: Path, data: Path, sig: Path) -> Path:
    openssl("dgst", "-sha256", "-sign", key, "-out", sig, data)
    return sig


def _wrong_key_pub(tmp: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    path = tmp / "other-pub.pem"
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


REFUSALS = [
    # id, (out, tmp) -> extra args, fragments, exit code
    ("signed-by-another-key",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key2.pem", out / "app.tbs",
                                                 tmp / "s"),
                       "--public-key", public_pem(COMMON / "key.pem", tmp / "p.pem")],
     ["does not verify", "p.pem"], 3),
    ("public-key-of-another-key",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s"),
                       "--public-key", _wrong_key_pub(tmp)],
     ["does not verify", "other-pub.pem"], 3),
    ("signed-over-other-data",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key.pem", out / "out.manifest.sgx",
                                                 tmp / "s"),
                       "--public-key", public_pem(COMMON / "key.pem", tmp / "p.pem")],
     ["does not verify", "other data"], 3),
    ("truncated-signature",
     lambda out, tmp: ["--signature", _truncated(out, tmp),
                       "--public-key", public_pem(COMMON / "key.pem", tmp / "p.pem")],
     ["383 bytes", "384"], 1),
    ("public-key-2048",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s"),
                       "--public-key", public_pem(COMMON / "key_2048.pem", tmp / "p.pem")],
     ["p.pem", "2048-bit"], 1),
    ("public-key-e65537",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s"),
                       "--public-key", public_pem(COMMON / "key_e65537.pem", tmp / "p.pem")],
     ["p.pem", "exponent is 65537"], 1),
    ("public-key-is-a-private-key",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s"),
                       "--public-key", COMMON / "key.pem"],
     ["key.pem", "is a private key"], 1),
    ("public-key-missing",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s"),
                       "--public-key", tmp / "absent.pem"],
     ["absent.pem", "not found"], 1),
    ("public-key-garbage",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s"),
                       "--public-key", out / "app.tbs.json"],
     ["app.tbs.json", "not a PEM or DER"], 1),
    ("signature-without-public-key",
     lambda out, tmp: ["--signature", _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s")],
     ["--signature and --public-key go together"], 2),
    ("signature-and-key",
     lambda out, tmp: ["--key", COMMON / "key.pem",
                       "--signature", _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s"),
                       "--public-key", public_pem(COMMON / "key.pem", tmp / "p.pem")],
     ["either --key or --signature"], 2),
    ("no-key-at-all", lambda out, tmp: [], ["missing --key"], 2),
]


def _truncated(out: Path, tmp: Path) -> Path:
    sig = _sign_with(COMMON / "key.pem", out / "app.tbs", tmp / "s")
    sig.write_bytes(sig.read_bytes()[:-1])
    return sig


@pytest.mark.parametrize("args_of,fragments,code", [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_assembly_refusals(args_of, fragments: list[str], code: int, exported: Path,
                           tmp_path: Path) -> None:
    tmp = tmp_path / "work"
    tmp.mkdir()
    old_sig = exported / "out.sig"
    old_sig.write_bytes(b"an older signature, to be left alone")
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    result = sign_case(exported, *args_of(exported, tmp))
    assert_one_line_error(result, *fragments)
    assert result.returncode == code, result.stderr
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before


def test_signature_made_for_another_date_is_refused(exported: Path, tmp_path: Path) -> None:
    """The data is recomputed from the inputs: a signature over yesterday's export fails."""
    sig = _sign_with(COMMON / "key.pem", exported / "app.tbs", tmp_path / "s")
    pub = public_pem(COMMON / "key.pem", tmp_path / "p.pem")
    result = sign_case(exported, "--signature", sig, "--public-key", pub, date="2024-01-16")
    assert_one_line_error(result, "does not verify")
    assert "out.sig" not in names(exported)


@pytest.mark.parametrize("extra,fragment", [
    (["--key", str(COMMON / "key.pem")], "drop --key"),
    (["--sigfile", "x.sig"], "drop --sigfile"),
    (["--public-key", str(COMMON / "key.pem")], "drop --public-key"),
])
def test_export_refuses_signing_options(extra: list[str], fragment: str, tmp_path: Path) -> None:
    result = sign_case(tmp_path, "--export-signing-data", tmp_path / "app.tbs", *extra)
    assert_one_line_error(result, fragment)
    assert result.returncode == 2
    assert names(tmp_path) == []


@pytest.mark.parametrize("output,data", [
    ("out.manifest.sgx", "out.manifest.sgx"),   # DATA is the .manifest.sgx
    ("app.tbs.json", "app.tbs"),                # DATA.json is the .manifest.sgx
])
def test_export_refuses_colliding_outputs(output: str, data: str, tmp_path: Path) -> None:
    result = sign_case(tmp_path, "--export-signing-data", tmp_path / data,
                       output=tmp_path / output)
    assert_one_line_error(result, "same file")
    assert result.returncode == 2
    assert names(tmp_path) == []


def test_export_into_a_missing_folder_leaves_nothing(tmp_path: Path) -> None:
    result = sign_case(tmp_path, "--export-signing-data", tmp_path / "no" / "such" / "app.tbs")
    assert_one_line_error(result, "no/such/app.tbs", "cannot write")
    assert ".tmp" not in result.stderr  # the user's file is named, not our temporary one
    assert names(tmp_path) == []


def test_export_refuses_a_folder_where_the_json_goes(tmp_path: Path) -> None:
    (tmp_path / "app.tbs.json").mkdir()
    result = sign_case(tmp_path, "--export-signing-data", tmp_path / "app.tbs")
    assert_one_line_error(result, "app.tbs.json", "is a folder")
    assert result.returncode == 2
    assert names(tmp_path) == ["app.tbs.json"]


def test_export_never_overwrites_its_inputs(tmp_path: Path) -> None:
    case = load_case(VECTOR)
    manifest = VECTORS / VECTOR / case["manifest"]
    copy = tmp_path / "input.manifest"
    copy.write_bytes(manifest.read_bytes())
    result = run_cli("sign", "--manifest", copy, "--libpal", COMMON / "fake_libpal.so",
                     "--output", tmp_path / "out.manifest.sgx", "--chroot",
                     VECTORS / VECTOR / "rootfs", "--export-signing-data", copy)
    assert_one_line_error(result, "same file")
    assert copy.read_bytes() == manifest.read_bytes()
    assert names(tmp_path) == ["input.manifest"]


def test_export_json_for_pipelines(tmp_path: Path) -> None:
    result = sign_case(tmp_path, "--export-signing-data", tmp_path / "app.tbs", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["signing_data_path"] == str(tmp_path / "app.tbs")
    assert printed["signing_data_json_path"] == str(tmp_path / "app.tbs.json")
    assert printed["signing_data"] == "app.tbs"
    assert printed["mr_enclave"] == load_case(VECTOR)["expected"]["mr_enclave"]
    written = json.loads((tmp_path / "app.tbs.json").read_text())
    assert {k: printed[k] for k in written} == written
