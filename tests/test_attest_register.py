"""attest register: eHSM and BigDL attestation service, against protocol stand-ins over TLS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import stat
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attest_services import BigdlStandIn, EhsmStandIn, LocalCA
from conftest import assert_one_line_error, run_cli
from hypothesis import given
from hypothesis import strategies as st

from ppml_image.attest import services
from ppml_image.attest.services import ServiceError

APP_ID = "563173cf-f26d-4c74-82e1-a4105cf3fb48"
API_KEY = "xXH5nmw4J0NaKwKEJiKcxuJ859u1cwrE"
MR_ENCLAVE = "e38104fe6938" + "ab" * 26
MR_SIGNER = "d412a4f07ef8" + "cd" * 26


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls(ca: LocalCA) -> tuple[Path, Path]:
    return ca.server_files()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-key.txt"
    path.write_text(API_KEY + "\n")
    path.chmod(0o600)
    return path


def _record(tmp_path: Path, **changes: Any) -> Path:
    """A record shaped as build-custom --output writes it today."""
    data: dict[str, Any] = {
        "image": "127.0.0.1:5000/ppml/job:1", "image_id": "sha256:" + "1" * 64,
        "repo_digest": None, "enclave": "bash", "mr_enclave": MR_ENCLAVE,
        "mr_signer": MR_SIGNER, "isv_prod_id": 7, "isv_svn": 3, "debug_enclave": False,
        "date": "2025-06-20", "tool": "ppml-image", "tool_version": "0.1.0",
        "sigstruct": {"mr_enclave": MR_ENCLAVE, "attribute_flags": "0x4"},
    }
    data.update(changes)
    path = tmp_path / "record.json"
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture
def ehsm(tls: tuple[Path, Path]) -> Iterator[EhsmStandIn]:
    with EhsmStandIn(tls=tls, accounts={APP_ID: API_KEY}) as server:
        assert isinstance(server, EhsmStandIn)
        yield server


@pytest.fixture
def bigdl(tls: tuple[Path, Path]) -> Iterator[BigdlStandIn]:
    with BigdlStandIn(tls=tls, accounts={APP_ID: API_KEY}) as server:
        assert isinstance(server, BigdlStandIn)
        yield server


def register(record: Path, service: str, url: str, key_file: Path | None, *extra: Any,
             ca_bundle: Path | None = None, app_id: str = APP_ID) -> Any:
    args: list[Any] = ["attest", "register", record, "--service", service, "--url", url,
                       "--app-id", app_id]
    if key_file is not None:
        args += ["--api-key-file", key_file]
    if ca_bundle is not None:
        args += ["--ca-bundle", ca_bundle]
    result = run_cli(*args, *extra)
    # Whatever happened, the key is never printed.
    assert API_KEY not in result.stdout and API_KEY not in result.stderr
    return result


# --------------------------------------------------------------------------
# Success.
# --------------------------------------------------------------------------
def test_ehsm_registration_prints_the_policy_id_and_writes_the_record(
        tmp_path: Path, ca: LocalCA, ehsm: EhsmStandIn, key_file: Path) -> None:
    record = _record(tmp_path)
    out = tmp_path / "registered.json"
    result = register(record, "ehsm", ehsm.url, key_file, "--output", out, ca_bundle=ca.pem)
    assert result.returncode == 0, result.stderr
    (policy_id,) = ehsm.policies
    assert result.stdout.splitlines()[0] == f"policy_id: {policy_id}"
    assert ehsm.policies[policy_id] == {"appid": APP_ID, "mr_enclave": MR_ENCLAVE,
                                        "mr_signer": MR_SIGNER}
    written = json.loads(out.read_text())
    assert written == {**json.loads(record.read_text()), "policy_id": policy_id,
                       "service": "ehsm"}
    assert API_KEY not in out.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_the_ehsm_request_has_every_field_the_server_requires(
        tmp_path: Path, ca: LocalCA, ehsm: EhsmStandIn, key_file: Path) -> None:
    record = _record(tmp_path)
    for _ in range(2):
        assert register(record, "ehsm", ehsm.url, key_file, ca_bundle=ca.pem).returncode == 0
    first, second = ehsm.received
    for request in (first, second):
        assert set(request) == {"appid", "nonce", "timestamp", "payload", "sign"}
        assert len(request["timestamp"]) == 13 and request["timestamp"].isdigit()
        assert abs(int(request["timestamp"]) - time.time() * 1000) < 10 * 60 * 1000
        assert 16 <= len(request["nonce"]) <= 64
        assert request["payload"] == {"mr_enclave": MR_ENCLAVE, "mr_signer": MR_SIGNER}
    assert first["nonce"] != second["nonce"]  # random, never a constant


def test_json_output(tmp_path: Path, ca: LocalCA, ehsm: EhsmStandIn, key_file: Path) -> None:
    result = register(_record(tmp_path), "ehsm", ehsm.url, key_file, "--json",
                      ca_bundle=ca.pem)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is True and answer["service"] == "ehsm"
    assert answer["policy_id"] in ehsm.policies


@pytest.mark.parametrize("by,policy", [
    ("enclave", {"policyType": "SGXMREnclavePolicy", "mrEnclave": MR_ENCLAVE}),
    ("signer", {"policyType": "SGXMRSignerPolicy", "mrSigner": MR_SIGNER, "isvProdID": "7"}),
])
def test_bigdl_registration(tmp_path: Path, ca: LocalCA, bigdl: BigdlStandIn, key_file: Path,
                            by: str, policy: dict[str, str]) -> None:
    out = tmp_path / "r2.json"
    result = register(_record(tmp_path), "bigdl-as", bigdl.url, key_file, "--by", by,
                      "--output", out, ca_bundle=ca.pem)
    assert result.returncode == 0, result.stderr
    (policy_id,) = bigdl.policies
    assert bigdl.policies[policy_id] == {"appID": APP_ID, **policy}
    assert json.loads(out.read_text())["service"] == "bigdl-as"
    assert json.loads(out.read_text())["policy_id"] == policy_id


def test_plain_http_works_only_to_loopback_and_only_when_asked(
        tmp_path: Path, key_file: Path) -> None:
    record = _record(tmp_path)
    with EhsmStandIn(accounts={APP_ID: API_KEY}) as plain:
        refused = register(record, "ehsm", plain.url, key_file)
        assert refused.returncode == 2
        assert_one_line_error(refused, "plain http is refused", "--insecure-http")
        allowed = register(record, "ehsm", plain.url, key_file, "--insecure-http")
        assert allowed.returncode == 0, allowed.stderr
    remote = register(record, "ehsm", "http://10.0.0.5:9000", key_file, "--insecure-http")
    assert remote.returncode == 2
    assert_one_line_error(remote, "only for a loopback address", "10.0.0.5")


# --------------------------------------------------------------------------
# eHSM's signature, against eHSM's documentation.
# --------------------------------------------------------------------------
def _documented_sign(api_key: str, appid: str, nonce: str, timestamp: str,
                     payload: dict[str, str]) -> str:
    """docs/API_Reference.md: Signature = base64(HMAC-SHA256(APIKey, RequestData)), where
    RequestData = appid=<appid>&payload=<payload>&timestamp=<timestamp> in ASCII order, the
    payload itself ordered; written as the reference's python sample does (urlencode)."""
    ordered_payload = OrderedDict(sorted(payload.items()))
    params = OrderedDict(sorted({
        "appid": appid, "nonce": nonce, "timestamp": timestamp,
        "payload": urllib.parse.unquote_plus(urllib.parse.urlencode(ordered_payload)),
    }.items()))
    sign_string = urllib.parse.unquote_plus(urllib.parse.urlencode(params))
    digest = hmac.new(api_key.encode(), sign_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_the_signature_matches_the_documented_construction() -> None:
    payload = {"mr_signer": MR_SIGNER, "mr_enclave": MR_ENCLAVE}
    request = services.ehsm_request(APP_ID, API_KEY, payload, timestamp="1718841600000",
                                    nonce="n0nce")
    assert services.ehsm_sign_string(request | {"sign": ""}) == (
        f"appid={APP_ID}&nonce=n0nce&payload=mr_enclave={MR_ENCLAVE}&mr_signer={MR_SIGNER}"
        "&timestamp=1718841600000")
    assert request["sign"] == _documented_sign(API_KEY, APP_ID, "n0nce", "1718841600000",
                                               payload)


_TEXT = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                       exclude_characters="&=+%"), min_size=1, max_size=20)


@given(payload=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), _TEXT,
                               min_size=1, max_size=6),
       appid=_TEXT, nonce=_TEXT, key=_TEXT)
def test_the_signature_matches_the_documentation_for_any_flat_payload(
        payload: dict[str, str], appid: str, nonce: str, key: str) -> None:
    request = services.ehsm_request(appid, key, payload, timestamp="1718841600000", nonce=nonce)
    assert request["sign"] == _documented_sign(key, appid, nonce, "1718841600000", payload)


def test_the_sign_string_leaves_out_what_javascript_leaves_out() -> None:
    params = {"b": "", "a": None, "c": 0, "d": False, "e": True, "f": {"y": 1, "x": "v"},
              "g": "0"}
    assert services.ehsm_sign_string(params) == "e=true&f=x=v&y=1&g=0"
    with pytest.raises(ValueError, match="list"):
        services.ehsm_sign_string({"a": [1]})


# --------------------------------------------------------------------------
# The stand-in refuses what eHSM refuses (so a passing client passes eHSM's checks).
# --------------------------------------------------------------------------
def _post(server: EhsmStandIn, ca: LocalCA, body: dict[str, Any]) -> dict[str, Any]:
    endpoint = services.parse_url(server.url)
    status, answer = services.post_json(endpoint, "/ehsm?Action=UploadQuotePolicy", body,
                                        context=services.tls_context(ca.pem))
    assert status == 200
    return json.loads(answer)


def test_the_same_nonce_and_timestamp_are_refused_a_second_time(
        ca: LocalCA, ehsm: EhsmStandIn) -> None:
    payload = {"mr_enclave": MR_ENCLAVE, "mr_signer": MR_SIGNER}
    body = services.ehsm_request(APP_ID, API_KEY, payload)
    assert _post(ehsm, ca, body)["code"] == 200
    again = _post(ehsm, ca, body)
    assert again == {"code": 400, "message": "Timestamp can't be repeated in 20 minutes",
                     "result": {}}
    fresh = services.ehsm_request(APP_ID, API_KEY, payload)
    assert _post(ehsm, ca, fresh)["code"] == 200


@pytest.mark.parametrize("minutes,accepted", [(-11, False), (-9, True), (9, True), (11, False)])
def test_the_timestamp_window_is_ten_minutes(ca: LocalCA, ehsm: EhsmStandIn, minutes: int,
                                             accepted: bool) -> None:
    stamp = str(time.time_ns() // 1_000_000 + minutes * 60_000)
    body = services.ehsm_request(APP_ID, API_KEY, {"mr_enclave": MR_ENCLAVE,
                                                   "mr_signer": MR_SIGNER}, timestamp=stamp)
    answer = _post(ehsm, ca, body)
    assert (answer["code"] == 200) is accepted, answer


@pytest.mark.parametrize("change,message", [
    ({"appid": None}, "Missing required parameters"),
    ({"sign": None}, "Missing required parameters"),
    ({"timestamp": "17188416000"}, "Timestamp length error"),
    ({"nonce": "n" * 65}, "Nonce length error"),
    ({"payload": {"mr_enclave": MR_ENCLAVE}}, "The mr_signer cannot be empty"),
    ({"payload": {"mr_enclave": MR_ENCLAVE[:63], "mr_signer": MR_SIGNER}},
     "The mr_enclave length error"),
    ({"payload": {"mr_enclave": MR_ENCLAVE, "mr_signer": MR_SIGNER, "x": "1"}}, "sign error"),
])
def test_the_stand_in_checks_what_ehsm_checks(ca: LocalCA, ehsm: EhsmStandIn,
                                              change: dict[str, Any], message: str) -> None:
    body = services.ehsm_request(APP_ID, API_KEY, {"mr_enclave": MR_ENCLAVE,
                                                   "mr_signer": MR_SIGNER})
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    answer = _post(ehsm, ca, body)
    assert answer["code"] == 400 and message in answer["message"], answer
    assert not ehsm.policies


# --------------------------------------------------------------------------
# Each error: one line, the right exit code, no key.
# --------------------------------------------------------------------------
def test_a_wrong_api_key_is_authentication_refused(tmp_path: Path, ca: LocalCA,
                                                   ehsm: EhsmStandIn,
                                                   bigdl: BigdlStandIn) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not-the-key-at-all\n")
    wrong.chmod(0o600)
    for service, server in (("ehsm", ehsm), ("bigdl-as", bigdl)):
        result = register(_record(tmp_path), service, server.url, wrong, ca_bundle=ca.pem)
        assert result.returncode == 1
        assert_one_line_error(result, "authentication refused", server.url)
        assert not server.policies


def test_an_unknown_app_id_is_authentication_refused(tmp_path: Path, ca: LocalCA,
                                                     ehsm: EhsmStandIn, key_file: Path) -> None:
    result = register(_record(tmp_path), "ehsm", ehsm.url, key_file, ca_bundle=ca.pem,
                      app_id="00000000-0000-4000-8000-000000000000")
    assert_one_line_error(result, "authentication refused")


def test_tls_with_another_ca_or_the_system_roots_fails(tmp_path: Path, ehsm: EhsmStandIn,
                                                       key_file: Path) -> None:
    other = LocalCA(tmp_path / "other", name="another CA")
    for bundle in (other.pem, None):
        result = register(_record(tmp_path), "ehsm", ehsm.url, key_file, ca_bundle=bundle)
        assert result.returncode == 1
        assert_one_line_error(result, "TLS failure", "certificate", ehsm.url)
    assert not ehsm.received  # nothing was sent


def test_a_certificate_for_another_host_name_fails(tmp_path: Path, ca: LocalCA,
                                                   key_file: Path) -> None:
    tls = ca.server_files(host_names=("kms.example",), ips=())
    with EhsmStandIn(tls=tls, accounts={APP_ID: API_KEY}) as server:
        result = register(_record(tmp_path), "ehsm", server.url, key_file, ca_bundle=ca.pem)
    assert_one_line_error(result, "TLS failure")


def test_an_unreachable_port(tmp_path: Path, ca: LocalCA, key_file: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = register(_record(tmp_path), "ehsm", f"https://127.0.0.1:{port}", key_file,
                      ca_bundle=ca.pem)
    assert result.returncode == 1
    assert_one_line_error(result, "unreachable", f"127.0.0.1:{port}")


def test_a_server_that_never_answers_meets_the_deadline(tmp_path: Path, ca: LocalCA) -> None:
    with socket.socket() as sock:  # listens, never accepts: the TLS handshake hangs
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        record = services.load_record(_record(tmp_path))
        with pytest.raises(ServiceError, match="no answer within") as caught:
            services.register(record, service="ehsm",
                              url=f"https://127.0.0.1:{sock.getsockname()[1]}",
                              app_id=APP_ID, api_key=API_KEY, ca_bundle=ca.pem, deadline=0.5)
    assert caught.value.reason == "unreachable"


_OVERSIZED = b'{"code": 200, "result": {"policyId": "' + b"a" * (70 * 1024) + b'"}}'


@pytest.mark.parametrize("service,answer,fragment", [
    ("ehsm", (200, b"<html>502 Bad Gateway</html>"), "malformed response: not JSON"),
    ("ehsm", (200, b"[1, 2]"), "not a JSON object"),
    ("ehsm", (200, _OVERSIZED), "more than the 64 KiB"),
    ("ehsm", (200, b'{"code": 200, "result": {"policyId": "12345"}}'), "is not a UUID"),
    ("ehsm", (200, b'{"code": 200, "result": {}}'), "is not a UUID"),
    ("ehsm", (200, b'{"code": "200", "result": {}}'), "no numeric 'code'"),
    ("ehsm", (200, b'{"code": 500, "message": "Server internal error"}'),
     "request refused: eHSM code 500"),
    ("ehsm", (502, b"Bad Gateway"), "request refused: HTTP 502"),
    ("bigdl-as", (200, b'{"policyID": "../../etc"}'), "is not a UUID"),
    ("bigdl-as", (200, b'{"policyID": 7}'), "is not a UUID"),
    ("bigdl-as", (400, b"Unsupported policy type."), "request refused: HTTP 400"),
    ("bigdl-as", (200, b"\xff\xfe"), "not JSON"),
])
def test_malformed_or_refusing_answers(tmp_path: Path, ca: LocalCA, tls: tuple[Path, Path],
                                       key_file: Path, service: str,
                                       answer: tuple[int, bytes], fragment: str) -> None:
    kind = EhsmStandIn if service == "ehsm" else BigdlStandIn
    with kind(tls=tls, accounts={APP_ID: API_KEY}, misbehave=lambda _: answer) as server:
        out = tmp_path / "r2.json"
        result = register(_record(tmp_path), service, server.url, key_file, "--output", out,
                          ca_bundle=ca.pem)
    assert result.returncode == 1
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_a_server_that_echoes_the_key_does_not_get_it_printed(
        tmp_path: Path, ca: LocalCA, tls: tuple[Path, Path], key_file: Path) -> None:
    echo = (400, f"refused request with apiKey {API_KEY}".encode())
    with BigdlStandIn(tls=tls, accounts={APP_ID: API_KEY}, misbehave=lambda _: echo) as server:
        result = register(_record(tmp_path), "bigdl-as", server.url, key_file, ca_bundle=ca.pem)
    assert_one_line_error(result, "apiKey ***")


# --------------------------------------------------------------------------
# Refusals before anything is sent.
# --------------------------------------------------------------------------
def test_a_debug_enclave_is_registered_only_with_allow_debug(
        tmp_path: Path, ca: LocalCA, ehsm: EhsmStandIn, key_file: Path) -> None:
    record = _record(tmp_path, debug_enclave=True)
    refused = register(record, "ehsm", ehsm.url, key_file, ca_bundle=ca.pem)
    assert refused.returncode == 2
    assert_one_line_error(refused, "DEBUG enclave", "--allow-debug")
    assert not ehsm.received
    allowed = register(record, "ehsm", ehsm.url, key_file, "--allow-debug", ca_bundle=ca.pem)
    assert allowed.returncode == 0, allowed.stderr
    newer = _record(tmp_path, debug=True)  # the record's newer field name counts too
    assert register(newer, "ehsm", ehsm.url, key_file, ca_bundle=ca.pem).returncode == 2


@pytest.mark.parametrize("changes,fragment", [
    ({"mr_enclave": "zz" * 32}, "mr_enclave: expected 64 hex digits"),
    ({"mr_signer": None}, "mr_signer: expected 64 hex digits"),
    ({"isv_prod_id": 70000}, "isv_prod_id: expected an integer from 0 to 65535"),
    ({"isv_svn": True}, "isv_svn: expected an integer"),
    ({"debug_enclave": "no"}, "must be true or false"),
])
def test_bad_records(tmp_path: Path, ehsm: EhsmStandIn, key_file: Path,
                     changes: dict[str, Any], fragment: str) -> None:
    result = register(_record(tmp_path, **changes), "ehsm", ehsm.url, key_file)
    assert result.returncode == 2
    assert_one_line_error(result, fragment)


def test_a_record_that_is_not_json(tmp_path: Path, ehsm: EhsmStandIn, key_file: Path) -> None:
    for text in ("{", "[]", "\xff"):
        path = tmp_path / "bad.json"
        path.write_bytes(text.encode("latin-1"))
        result = register(path, "ehsm", ehsm.url, key_file)
        assert result.returncode == 2
        assert_one_line_error(result, str(path))


@pytest.mark.parametrize("args,fragment", [
    (["--service", "vault"], "--service 'vault': not one of ehsm, bigdl-as"),
    (["--by", "signer"], "--by applies to bigdl-as"),
    (["--app-id", "a&b=c"], "not an app id"),
    (["--url", "https://user:pw@kms.example"], "must not hold a user name or password"),
    (["--url", "ftp://kms.example"], "must start with https://"),
    (["--url", "https://kms.example/?Action=x"], "no '?' or '#'"),
])
def test_bad_options(tmp_path: Path, key_file: Path, args: list[str], fragment: str) -> None:
    base = {"--service": "ehsm", "--url": "https://kms.example", "--app-id": APP_ID}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for pair in base.items() for x in pair if pair[0] != "--by"]
    if "--by" in base:
        flat += ["--by", base["--by"]]
    result = run_cli("attest", "register", _record(tmp_path), *flat, "--api-key-file", key_file)
    assert result.returncode == 2
    assert_one_line_error(result, fragment)
    assert "pw" not in result.stderr


def test_the_api_key_comes_from_a_file_or_a_prompt_only(tmp_path: Path) -> None:
    record = _record(tmp_path)
    no_key = run_cli("attest", "register", record, "--service", "ehsm", "--url",
                     "https://kms.example", "--app-id", APP_ID)
    assert no_key.returncode == 2
    assert_one_line_error(no_key, "no API key", "--api-key-file")
    flag = run_cli("attest", "register", record, "--service", "ehsm", "--url",
                   "https://kms.example", "--app-id", APP_ID, "--api-key", API_KEY)
    assert flag.returncode == 2  # there is no such option
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    result = run_cli("attest", "register", record, "--service", "ehsm", "--url",
                     "https://kms.example", "--app-id", APP_ID, "--api-key-file", empty)
    assert_one_line_error(result, "the API key is empty")


def test_a_key_file_others_can_read_is_warned_about(tmp_path: Path, ca: LocalCA,
                                                    ehsm: EhsmStandIn) -> None:
    loose = tmp_path / "key.txt"
    loose.write_text(API_KEY)
    loose.chmod(0o644)
    result = register(_record(tmp_path), "ehsm", ehsm.url, loose, ca_bundle=ca.pem)
    assert result.returncode == 0
    assert "readable by other users" in result.stderr and "chmod 600" in result.stderr
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o644  # we say so; we do not change it


def test_the_output_is_checked_before_the_service_is_asked(
        tmp_path: Path, ca: LocalCA, ehsm: EhsmStandIn, key_file: Path) -> None:
    result = register(_record(tmp_path), "ehsm", ehsm.url, key_file, "--output", key_file,
                      ca_bundle=ca.pem)
    assert result.returncode == 2
    assert_one_line_error(result, "same file")
    assert key_file.read_text().strip() == API_KEY
    missing = register(_record(tmp_path), "ehsm", ehsm.url, key_file, "--output",
                       tmp_path / "no" / "r.json", ca_bundle=ca.pem)
    assert_one_line_error(missing, "does not exist")
    assert not ehsm.received


# --------------------------------------------------------------------------
# eHSM VerifyQuote: its answer is believed only with a valid signature and our nonce.
# --------------------------------------------------------------------------
def _quote(mr_enclave: str = MR_ENCLAVE, mr_signer: str = MR_SIGNER) -> bytes:
    """An SGX quote's layout: 48-byte header, 384-byte report body, then signature data."""
    body = bytearray(384)
    body[64:96] = bytes.fromhex(mr_enclave)
    body[128:160] = bytes.fromhex(mr_signer)
    return bytes(48) + bytes(body) + b"\x00" * 64


def _registered(tmp_path: Path, ca: LocalCA, server: EhsmStandIn) -> str:
    record = services.load_record(_record(tmp_path))
    return services.register(record, service="ehsm", url=server.url, app_id=APP_ID,
                             api_key=API_KEY, ca_bundle=ca.pem).policy_id


def _ask(server: EhsmStandIn, ca: LocalCA, quote: bytes, policy_id: str | None,
         api_key: str = API_KEY) -> services.EhsmQuoteVerdict:
    return services.verify_quote_with_ehsm(quote, url=server.url, app_id=APP_ID,
                                           api_key=api_key, policy_id=policy_id,
                                           ca_bundle=ca.pem)


def test_ehsm_verify_quote_with_the_policy(tmp_path: Path, ca: LocalCA,
                                           ehsm: EhsmStandIn) -> None:
    policy_id = _registered(tmp_path, ca, ehsm)
    verdict = _ask(ehsm, ca, _quote(), policy_id)
    assert verdict.accepted is True
    assert (verdict.mr_enclave, verdict.mr_signer) == (MR_ENCLAVE, MR_SIGNER)
    assert verdict.to_json()["signature"] == "verified"
    sent = ehsm.received[-1]
    assert sent["payload"]["policyId"] == policy_id
    assert base64.b64decode(sent["payload"]["quote"]) == _quote()


def test_ehsm_refusal_is_signed_too(tmp_path: Path, ca: LocalCA, ehsm: EhsmStandIn) -> None:
    """eHSM leaves `result: false` out of the string it signs (JavaScript's != '')."""
    policy_id = _registered(tmp_path, ca, ehsm)
    verdict = _ask(ehsm, ca, _quote(mr_enclave="00" * 32), policy_id)
    assert verdict.accepted is False


def _answer(request: dict[str, Any], sign_over: dict[str, Any] | None = None,
            **changes: Any) -> tuple[int, bytes]:
    """A VerifyQuote answer; signed over *sign_over* when given, else over itself."""
    answer: dict[str, Any] = {"result": True, "nonce": request["payload"]["nonce"], **changes}
    answer["sign"] = services.ehsm_sign(API_KEY, sign_over if sign_over is not None else answer)
    return 200, json.dumps({"code": 200, "message": "ok", "result": answer}).encode()


def _flipped(request: dict[str, Any]) -> tuple[int, bytes]:
    """A refusal turned into an acceptance on the way: the signature covers the refusal."""
    nonce = request["payload"]["nonce"]
    return _answer(request, sign_over={"result": False, "nonce": nonce})


def _forged(request: dict[str, Any]) -> tuple[int, bytes]:
    status, body = _answer(request)
    data = json.loads(body)
    data["result"]["sign"] = base64.b64encode(b"\0" * 32).decode()
    return status, json.dumps(data).encode()


@pytest.mark.parametrize("misbehave,fragment", [
    (_forged, "signature does not verify"),
    (_flipped, "signature does not verify"),
    (lambda r: _answer(r, nonce="b2xkIG5vbmNl"), "nonce differs"),
    (lambda r: _answer(r, result="yes"), "'result' is not true or false"),
    (lambda r: _answer(r, mr_enclave="../etc"), "mr_enclave is not 64 hex digits"),
])
def test_ehsm_verify_quote_answers_that_are_not_believed(
        ca: LocalCA, tls: tuple[Path, Path], misbehave: Any, fragment: str) -> None:
    with (EhsmStandIn(tls=tls, accounts={APP_ID: API_KEY}, misbehave=misbehave) as server,
          pytest.raises(ServiceError, match=fragment)):
        _ask(server, ca, _quote(), None)


def test_ehsm_verify_quote_refusals(ca: LocalCA, ehsm: EhsmStandIn) -> None:
    with pytest.raises(ServiceError, match="authentication refused") as caught:
        _ask(ehsm, ca, _quote(), None, api_key="wrong-key")
    assert caught.value.reason == "auth"
    with pytest.raises(ServiceError, match=r"Invalid +policyId"):
        _ask(ehsm, ca, _quote(), "00000000-0000-4000-8000-000000000000")
    with pytest.raises(services.UsageError, match="not a UUID"):
        _ask(ehsm, ca, _quote(), "../x")
    with pytest.raises(services.UsageError, match="takes 1 to 8192"):
        _ask(ehsm, ca, b"\0" * 9000, None)


# --------------------------------------------------------------------------
# Parsers: whatever the input, a result or one UsageError.
# --------------------------------------------------------------------------
@given(st.text(max_size=200), st.booleans())
def test_parse_url_returns_an_endpoint_or_a_usage_error(url: str, insecure: bool) -> None:
    try:
        endpoint = services.parse_url(url, insecure_http=insecure)
    except services.UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert endpoint.scheme == "https" or (insecure and services._is_loopback(endpoint.host))
    assert 0 <= endpoint.port <= 65535 and "@" not in endpoint.shown


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=70),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


@given(st.dictionaries(st.sampled_from(["mr_enclave", "mr_signer", "isv_prod_id", "isv_svn",
                                        "debug", "debug_enclave", "other"]),
                       _JSON | st.just("ab" * 32) | st.integers(0, 70000), max_size=7))
def test_load_record_keeps_every_field_or_says_what_is_wrong(
        tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]) -> None:
    path = tmp_path_factory.mktemp("record") / "r.json"
    path.write_text(json.dumps(data))
    try:
        record = services.load_record(path)
    except services.UsageError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert record.data == data
    assert len(record.mr_enclave) == 64 and 0 <= record.isv_svn <= 0xFFFF


def test_register_help_loads_no_library() -> None:
    from test_front_door import _loaded_by

    assert _loaded_by("attest", "register", "--help") == set()


def test_a_server_that_trickles_its_answer_meets_the_deadline(tmp_path: Path) -> None:
    """Per-read timeouts alone would wait forever for a byte every 0.1 s."""
    import threading

    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def trickle() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.1):
                    try:
                        conn.sendall(b"X: y\r\n")
                    except OSError:
                        return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        record = services.load_record(_record(tmp_path))
        try:
            with pytest.raises(ServiceError, match="no answer within 1 s"):
                services.register(record, service="ehsm",
                                  url=f"http://127.0.0.1:{listener.getsockname()[1]}",
                                  app_id=APP_ID, api_key=API_KEY, insecure_http=True,
                                  deadline=1.0)
        finally:
            stop.set()
            thread.join(5)


def test_a_server_that_hangs_up_is_unreachable(tmp_path: Path) -> None:
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def hang_up() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        result = register(_record(tmp_path), "ehsm",
                           f"http://127.0.0.1:{listener.getsockname()[1]}", None,
                           "--insecure-http", "--api-key-file", _key(tmp_path))
        thread.join(5)
    assert result.returncode == 1
    assert_one_line_error(result, "unreachable", "closed the connection without an answer")


def _key(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text(API_KEY)
    path.chmod(0o600)
    return path


def test_the_api_key_can_be_typed_at_a_hidden_prompt(tmp_path: Path, ca: LocalCA,
                                                      ehsm: EhsmStandIn) -> None:
    import sys

    from ptyrun import answer_prompt

    out = tmp_path / "r2.json"
    code, shown = answer_prompt(
        [sys.executable, "-m", "ppml_image", "attest", "register", str(_record(tmp_path)),
         "--service", "ehsm", "--url", ehsm.url, "--app-id", APP_ID, "--ca-bundle",
         str(ca.pem), "--output", str(out)], b"API key: ", API_KEY.encode())
    assert code == 0, shown
    assert API_KEY.encode() not in shown  # not echoed
    assert json.loads(out.read_text())["policy_id"] in ehsm.policies


def test_the_output_may_be_the_record_itself(tmp_path: Path, ca: LocalCA, ehsm: EhsmStandIn,
                                             key_file: Path) -> None:
    record = _record(tmp_path)
    before = json.loads(record.read_text())
    result = register(record, "ehsm", ehsm.url, key_file, "--output", record, ca_bundle=ca.pem)
    assert result.returncode == 0, result.stderr
    assert json.loads(record.read_text()) == {**before, "policy_id": next(iter(ehsm.policies)),
                                              "service": "ehsm"}


def test_the_registration_code_starts_no_process() -> None:
    """The API key can reach no child: the module runs none."""
    import ast

    tree = ast.parse(Path(services.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom)}
    assert not imported & {"subprocess", "multiprocessing", "pty", "ppml_image._proc"}
    assert "os.system" not in Path(services.__file__).read_text()


def test_record_reads_are_bounded(tmp_path: Path, key_file: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text('{"pad": "' + "x" * (2 << 20) + '"}')
    for path, fragment in ((big, "larger than 1 MiB"), (Path("/dev/zero"), "device")):
        result = run_cli("attest", "register", path, "--service", "ehsm", "--url",
                         "https://kms.example", "--app-id", APP_ID, "--api-key-file", key_file)
        assert result.returncode == 2
        assert_one_line_error(result, fragment)


VECTORS = Path(__file__).resolve().parent / "attestation"
VECTOR_MR_ENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
VECTOR_MR_SIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"


def _vector_verify(*extra: Any) -> Any:
    return run_cli("attest", "verify", VECTORS / "sgx_quote", "--collateral",
                   VECTORS / "sgx_quote_collateral.json", "--mr-enclave", VECTOR_MR_ENCLAVE,
                   "--at", "2025-06-20T00:00:00Z", "--allow-tcb",
                   "ConfigurationAndSWHardeningNeeded", *extra)


def test_attest_verify_reports_ehsms_verdict_next_to_its_own(
        tmp_path: Path, ehsm: EhsmStandIn, ca: LocalCA, key_file: Path) -> None:
    """Both accept: exit 0 and both verdicts shown; eHSM refusing makes it a refusal."""
    record = _record(tmp_path, mr_enclave=VECTOR_MR_ENCLAVE, mr_signer=VECTOR_MR_SIGNER)
    out = tmp_path / "registered.json"
    assert register(record, "ehsm", ehsm.url, key_file, "--output", out,
                    ca_bundle=ca.pem).returncode == 0
    policy_id = json.loads(out.read_text())["policy_id"]
    service = ["--service", "ehsm", "--url", ehsm.url, "--app-id", APP_ID,
               "--api-key-file", key_file, "--ca-bundle", ca.pem]
    both = _vector_verify(*service, "--policy-id", policy_id, "--json")
    assert both.returncode == 0, both.stderr
    report = json.loads(both.stdout)
    assert report["ok"] is True and report["service_verdict"]["accepted"] is True
    assert report["service_verdict"]["policy_id"] == policy_id
    assert API_KEY not in both.stdout + both.stderr

    other = _record(tmp_path, mr_enclave="ab" * 32, mr_signer=VECTOR_MR_SIGNER)
    registered_other = tmp_path / "other.json"
    assert register(other, "ehsm", ehsm.url, key_file, "--output", registered_other,
                    ca_bundle=ca.pem).returncode == 0
    refused = _vector_verify(*service, "--policy-id",
                             json.loads(registered_other.read_text())["policy_id"])
    assert_one_line_error(refused, "eHSM", "refuses the quote", "our own verification")
    assert refused.returncode == 3


def test_attest_verify_service_options_are_checked_first() -> None:
    for extra, words in [(["--url", "https://x"], "add --service ehsm"),
                         (["--service", "bigdl-as", "--url", "https://x", "--app-id", "a"],
                          "only ehsm"),
                         (["--service", "ehsm"], "needs --url")]:
        result = _vector_verify(*extra)
        assert_one_line_error(result, words)
        assert result.returncode == 2


def test_duplicate_keys_in_a_record_or_collateral_are_refused(tmp_path: Path) -> None:
    """Two readers of one JSON file may keep different copies of a key: refused."""
    record = tmp_path / "dup.json"
    record.write_text(f'{{"mr_enclave": "{"ab" * 32}", "mr_enclave": "{"cd" * 32}"}}')
    result = run_cli("attest", "policy", record, "--format", "ra-tls")
    assert_one_line_error(result, "mr_enclave", "twice")
    collateral = tmp_path / "collateral.json"
    text = (VECTORS / "sgx_quote_collateral.json").read_text()
    collateral.write_text(text.replace("{", '{"pck_crl": "x", ', 1))
    result = run_cli("attest", "verify", VECTORS / "sgx_quote", "--collateral", collateral,
                     "--mr-enclave", VECTOR_MR_ENCLAVE, "--at", "2025-06-20T00:00:00Z")
    assert_one_line_error(result, "pck_crl", "twice")
    assert result.returncode == 2
