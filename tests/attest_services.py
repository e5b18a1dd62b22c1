"""Protocol stand-ins for the attestation services, on 127.0.0.1, over TLS with a test CA.

Neither eHSM-KMS nor the BigDL attestation service can run here (both need
SGX). These stand-ins check what the real servers check before they store a
policy, written from their sources, not from our client:

* eHSM (``ehsm_kms_service/function.js`` ``_checkParams``, ``payload_checker.js``):
  ``appid``, ``timestamp`` and ``sign`` present and strings, ``payload`` an
  object, ``nonce`` at most 64 characters, a 13-character timestamp within
  10 minutes of now, the same nonce and timestamp refused a second time
  ("Timestamp can't be repeated in 20 minutes"), ``mr_enclave`` and
  ``mr_signer`` strings of 64 characters, and the HMAC-SHA256 recomputed under
  the app's key over ``params_sort_str`` (sorted ``k=v&...``, nested objects
  flattened, empty values left out). Every answer is HTTP 200 with a JSON
  ``code``, as eHSM's ``res.send(_result(...))`` does.
* BigDL (``BigDLRemoteAttestationService.scala``): ``appID``/``apiKey`` must be
  an enrolled pair (else HTTP 400 "Invalid app_id and api_key."), a known
  ``policyType`` (else 400 "Unsupported policy type."), and its fields.

``misbehave`` makes a stand-in answer what a broken or hostile server would,
once its checks have passed, for the client's error paths.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MAX_TIME_STAMP_DIFF_MS = 10 * 60 * 1000
MAX_NONCE_LEN = 64
TIMESTAMP_LEN = 13


# --------------------------------------------------------------------------
# A CA made in the test, and a server certificate for 127.0.0.1/localhost.
# --------------------------------------------------------------------------
@dataclass
class LocalCA:
    folder: Path
    name: str = "ppml-image test CA"
    key: Any = None
    cert: Any = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1))
                     .not_valid_after(now + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                  False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def pem(self) -> Path:
        return self.folder / "ca.pem"

    def server_files(self, host_names: tuple[str, ...] = ("localhost",),
                     ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in host_names]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in")]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        stem = f"server-{x509.random_serial_number():x}"  # each call its own files
        cert_path, key_path = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


# --------------------------------------------------------------------------
# The HTTP plumbing shared by both stand-ins.
# --------------------------------------------------------------------------
Answer = tuple[int, bytes]


@dataclass
class StandIn:
    tls: tuple[Path, Path] | None = None
    misbehave: Callable[[dict[str, Any]], Answer] | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, body: bytes) -> Answer:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandIn:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1 << 20))
                with owner._lock:
                    status, answer = owner.handle(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass  # the tests read `received`, not stderr

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


# --------------------------------------------------------------------------
# eHSM-KMS.
# --------------------------------------------------------------------------
def params_sort_str(params: dict[str, Any]) -> str:
    """eHSM's function.js ``params_sort_str``, transcribed for the stand-in."""
    out = ""
    for key in sorted(params):
        value = params[key]
        if value in ("", None) or value is False or (type(value) is int and value == 0):
            continue
        text = params_sort_str(value) if isinstance(value, dict) else (
            "true" if value is True else str(value))
        out += ("&" if out else "") + f"{key}={text}"
    return out


@dataclass
class EhsmStandIn(StandIn):
    accounts: dict[str, str] = field(default_factory=dict)  # appid -> API key
    policies: dict[str, dict[str, str]] = field(default_factory=dict)
    seen: dict[str, list[tuple[Any, str]]] = field(default_factory=dict)

    def handle(self, path: str, body: bytes) -> Answer:
        status, answer = self._handle(path, body)
        return status, _json(answer) if isinstance(answer, dict) else answer

    @staticmethod
    def result(code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"code": code, "message": message, "result": dict(data or {})}

    def _handle(self, path: str, body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        result = self.result
        action = path.removeprefix("/ehsm?Action=")
        if action not in ("UploadQuotePolicy", "VerifyQuote"):
            return 404, b"Cannot POST"
        try:
            request = json.loads(body)
        except ValueError:
            return 400, b"bad JSON"
        self.received.append(request)
        appid, nonce = request.get("appid"), request.get("nonce")
        timestamp, sign, payload = (request.get("timestamp"), request.get("sign"),
                                    request.get("payload"))
        if not appid or not timestamp or not sign:
            return 200, result(400, "Missing required parameters")
        if not payload:  # cryptographic and attestation actions must have one
            return 200, result(400, "Missing required parameters")
        if not all(isinstance(v, str) for v in (appid, timestamp, sign)) or not isinstance(
                payload, dict):
            return 200, result(400, "param type error")
        if nonce is not None and len(nonce) > MAX_NONCE_LEN:
            return 200, result(400, "Nonce length error")
        if len(timestamp) != TIMESTAMP_LEN:
            return 200, result(400, "Timestamp length error")
        now_ms = time.time_ns() // 1_000_000
        if not timestamp.isdigit() or abs(now_ms - int(timestamp)) >= MAX_TIME_STAMP_DIFF_MS:
            return 200, result(400, "Timestamp error")
        earlier = self.seen.setdefault(appid, [])
        if any(n == nonce for n, _ in earlier) and any(t == timestamp for _, t in earlier):
            return 200, result(400, "Timestamp can't be repeated in 20 minutes")
        earlier.insert(0, (nonce, timestamp))
        problem = _payload_problem(action, payload)
        if problem:
            return 200, result(400, problem)
        key = self.accounts.get(appid)
        if key is None:
            return 200, {"code": 400, "result": {}}  # gen_hmac's 'keyid not found' path
        if sign != _hmac(key, {"appid": appid, "nonce": nonce, "timestamp": timestamp,
                               "payload": payload}):
            return 200, result(400, "sign error")
        if self.misbehave is not None:
            return self.misbehave(request)
        if action == "VerifyQuote":
            return 200, self._verify_quote(appid, key, payload)
        policy_id = str(uuid.uuid4())
        self.policies[policy_id] = {"appid": appid, **payload}
        return 200, result(200, "Upload quote policy success.", {"policyId": policy_id})

    def _verify_quote(self, appid: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        """quote_manager_apis.js verifyQuote: the policy's values compared, the answer signed.

        The stand-in cannot check the DCAP chain; it compares the report body's
        MRENCLAVE and MRSIGNER (SGX quote offsets 112 and 176) with the policy.
        """
        quote = base64.b64decode(payload["quote"])
        answer: dict[str, Any] = {"result": True, "nonce": payload["nonce"]}
        policy_id = payload.get("policyId")
        if policy_id:
            policy = self.policies.get(policy_id)
            if policy is None or policy["appid"] != appid:
                return self.result(400, "Invalid  policyId.")
            answer["result"] = (quote[112:144].hex() == policy["mr_enclave"]
                                and quote[176:208].hex() == policy["mr_signer"])
            answer["mr_enclave"], answer["mr_signer"] = policy["mr_enclave"], policy["mr_signer"]
        answer["sign"] = _hmac(key, answer)
        return self.result(200, "Verify quote success.", answer)


def _hmac(key: str, params: dict[str, Any]) -> str:
    return base64.b64encode(hmac.new(key.encode(), params_sort_str(params).encode(),
                                     hashlib.sha256).digest()).decode()


_POLICY_ID = re.compile(r"^([a-z\d]{8}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{12})$")
_BASE64 = re.compile(r"^[a-zA-Z0-9+/]+={0,2}$")


def _payload_problem(action: str, payload: dict[str, Any]) -> str | None:
    """payload_checker.js, for the two actions the stand-in serves."""
    if action == "UploadQuotePolicy":
        rules = {"mr_enclave": ("string", 64, 64, True), "mr_signer": ("string", 64, 64, True)}
    else:
        rules = {"quote": ("base64", 1, 10924, True), "nonce": ("base64", 1, 4096, True),
                 "policyId": ("policy", 36, 36, False)}
    for name, (kind, low, high, required) in rules.items():
        value = payload.get(name)
        if value in (None, ""):
            if required:
                return f"Missing required parameters, The {name} cannot be empty."
            continue
        if not isinstance(value, str):
            return f"Parameter invalid, The {name} must be of string type."
        if not low <= len(value) <= high:
            return f"Parameter invalid, The {name} length error."
        if kind == "base64" and (len(value) % 4 or not _BASE64.match(value)):
            return f"Parameter invalid, The {name} not a vailed base64 string."
        if kind == "policy" and not _POLICY_ID.match(value):
            return f"Parameter invalid, The {name} format wrong."
    return None


# --------------------------------------------------------------------------
# BigDL attestation service.
# --------------------------------------------------------------------------
@dataclass
class BigdlStandIn(StandIn):
    accounts: dict[str, str] = field(default_factory=dict)  # appID -> apiKey
    policies: dict[str, dict[str, str]] = field(default_factory=dict)

    _FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "SGXMREnclavePolicy": ("mrEnclave",), "SGXMRSignerPolicy": ("mrSigner", "isvProdID")}

    def handle(self, path: str, body: bytes) -> Answer:
        if path != "/registerPolicy":
            return 404, b"The requested resource could not be found."
        try:
            request = json.loads(body)
        except ValueError:
            return 400, b"The request content was malformed"
        if not isinstance(request, dict):
            return 400, b"The request content was malformed"
        self.received.append(request)
        app_id, api_key = request.get("appID"), request.get("apiKey")
        if not app_id or self.accounts.get(app_id) != api_key:
            return 400, b"Invalid app_id and api_key."
        fields = self._FIELDS.get(request.get("policyType", ""))
        if fields is None:
            return 400, b"Unsupported policy type."
        for name in fields:
            if not isinstance(request.get(name), str) or not request[name]:
                return 400, f"The request content was malformed: {name}".encode()
        if self.misbehave is not None:
            return self.misbehave(request)
        policy_id = str(uuid.uuid4())
        self.policies[policy_id] = {k: request[k] for k in ("appID", "policyType", *fields)}
        return 200, _json({"policyID": policy_id})


# --------------------------------------------------------------------------
# Standalone: `python tests/attest_services.py ehsm FOLDER` for the release
# pipeline example. It makes a CA, a server certificate, an enrolled app id
# and API key (FOLDER/app-id, FOLDER/api-key, 0600), serves eHSM's protocol
# over TLS on a free loopback port, writes FOLDER/url last, and runs until
# SIGTERM or SIGINT.
# --------------------------------------------------------------------------
def _serve(folder: Path) -> None:
    import os
    import secrets
    import signal

    ca = LocalCA(folder)
    app_id, api_key = str(uuid.uuid4()), secrets.token_urlsafe(24)
    (folder / "app-id").write_text(app_id + "\n")
    fd = os.open(folder / "api-key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(api_key + "\n")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    with EhsmStandIn(tls=ca.server_files(), accounts={app_id: api_key}) as server:
        (folder / "url.tmp").write_text(server.url + "\n")
        os.replace(folder / "url.tmp", folder / "url")
        stopped.wait()


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "ehsm":
        raise SystemExit("usage: attest_services.py ehsm FOLDER")
    _serve(Path(sys.argv[2]))
