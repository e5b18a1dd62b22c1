"""Registration of a measurement record with an attestation service.

Two services, as the toolkit's users run them:

* **eHSM-KMS** (intel/ehsm): ``POST URL/ehsm?Action=UploadQuotePolicy`` with
  ``appid``, a 13-digit millisecond ``timestamp``, a random ``nonce`` (at most
  64 characters), ``payload{mr_enclave, mr_signer}`` and ``sign``: the base64
  HMAC-SHA256, under the API key, of the parameters sorted by name and
  flattened to ``k=v&...`` (nested objects the same way), exactly as the
  server's ``params_sort_str`` recomputes it. The answer is HTTP 200 with a
  JSON ``code``; ``result.policyId`` must be a UUID.
* **BigDL attestation service**: ``POST URL/registerPolicy`` with ``appID``,
  ``apiKey``, ``policyType`` (``SGXMREnclavePolicy`` with ``mrEnclave``, or
  ``SGXMRSignerPolicy`` with ``mrSigner`` and ``isvProdID``); the answer's
  ``policyID`` must be a UUID.

Transport rules: TLS is verified (the system's roots, or only the given CA
bundle); plain ``http://`` only on request and only to a loopback address;
no proxy, no redirect; a connect timeout and a deadline for the whole
exchange; answers of at most 64 KiB. The API key is read from a file or a
prompt, kept in memory, and never put in a message (a server that echoes it
back has it blanked out).
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import ssl
import stat
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppml_image import _json
from ppml_image._fs import KiB, MiB, read_capped
from ppml_image.errors import PpmlError, UsageError
from ppml_image.sgx.signing import record as records

SERVICES = ("ehsm", "bigdl-as")
BY = ("enclave", "signer")
MAX_RESPONSE = 64 * KiB
MAX_API_KEY_FILE = 4 * KiB
CONNECT_TIMEOUT = 10.0
DEADLINE = 30.0
EHSM_NONCE_LENGTH = 32  # the server takes at most 64
_HEX64 = re.compile(r"[0-9a-fA-F]{64}\Z")
_APP_ID = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")
# eHSM answers "sign error" for a wrong key and "keyid not found" (or no
# message at all) for an unknown appid; BigDL "Invalid app_id and api_key.".
_EHSM_AUTH = ("sign error", "keyid not found", "")
_BIGDL_AUTH = "invalid app_id and api_key"
_log = logging.getLogger("ppml_image.attest")


class ServiceError(PpmlError):
    """An attestation service could not be reached, or refused, or answered nonsense.

    ``reason`` is ``unreachable``, ``tls``, ``auth``, ``refused`` or
    ``malformed``, so callers and tests need not parse the message.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------
# The record, read tolerantly: every field is kept; the ones we use are checked.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """A measurement record (``build-custom --output``), as a dict plus checked fields."""

    path: Path
    data: dict[str, Any]
    mr_enclave: str
    mr_signer: str
    isv_prod_id: int
    isv_svn: int
    debug: bool


def load_record(path: Path) -> Record:
    """The record at *path* (read by :func:`records.read_record`): 64-hex ``mr_enclave``/
    ``mr_signer``, ``isv_prod_id``/``isv_svn`` of 0..65535 and a boolean ``debug`` (or
    the older ``debug_enclave``). Older records without the other attestation fields
    are taken; anything else in it is kept as it is."""
    data = records.read_record(path)
    where = str(path)
    return Record(path=path, data=data,
                  mr_enclave=records.hex_field(data.get("mr_enclave"), 32, f"{where}: mr_enclave"),
                  mr_signer=records.hex_field(data.get("mr_signer"), 32, f"{where}: mr_signer"),
                  isv_prod_id=records.uint_field(data.get("isv_prod_id"), 16,
                                                f"{where}: isv_prod_id"),
                  isv_svn=records.uint_field(data.get("isv_svn"), 16, f"{where}: isv_svn"),
                  debug=records.debug_field(data.get("debug", data.get("debug_enclave")), where))


def registered_record(loaded: Record, registration: Registration) -> dict[str, Any]:
    """The record with ``policy_id`` and ``service`` added; every other field as it was."""
    return {**loaded.data, "policy_id": registration.policy_id,
            "service": registration.service}


write_record = records.write_record


# --------------------------------------------------------------------------
# Options: service, app id, URL, API key.
# --------------------------------------------------------------------------
def check_service(service: str, by: str) -> None:
    if service not in SERVICES:
        raise UsageError(f"--service {service!r}: not one of {', '.join(SERVICES)}")
    if by not in BY:
        raise UsageError(f"--by {by!r}: not one of {', '.join(BY)}")
    if service == "ehsm" and by != "enclave":
        raise UsageError("--by signer: eHSM's UploadQuotePolicy always pins both MRENCLAVE "
                         "and MRSIGNER; --by applies to bigdl-as")


def check_app_id(app_id: str) -> None:
    if not _APP_ID.fullmatch(app_id):
        raise UsageError(f"--app-id {app_id!r:.80}: not an app id (1 to 128 letters, digits, "
                         "'.', '_' or '-')")


@dataclass(frozen=True)
class Endpoint:
    """Where a service listens: the base URL, split and checked."""

    scheme: str
    host: str
    port: int
    base: str  # the path prefix, without a trailing '/'

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base}"


def parse_url(url: str, *, insecure_http: bool = False) -> Endpoint:
    """The service's base URL; plain http only with *insecure_http* and to loopback."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise UsageError(f"--url {url!r:.120}: not a URL (printable ASCII without blanks)")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--url {url}: not a URL ({exc})") from None
    if parts.scheme not in ("https", "http"):
        raise UsageError(f"--url {url}: must start with https://")
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"--url {url.split('@')[-1]}: must not hold a user name or password "
                         "(they would sit on the command line)")
    if parts.query or parts.fragment or not parts.hostname:
        raise UsageError(f"--url {url}: give the service's base URL: a host, an optional "
                         "port and path, no '?' or '#'")
    host = parts.hostname
    if parts.scheme == "http":
        if not insecure_http:
            raise UsageError(f"--url {url}: plain http is refused (the API key and the answer "
                             "would travel unprotected); use https://, or --insecure-http "
                             "for a test service on a loopback address")
        if not _is_loopback(host):
            raise UsageError(f"--url {url}: --insecure-http is only for a loopback address "
                             f"(127.0.0.1, ::1, localhost), not {host}")
    return Endpoint(parts.scheme, host, port or (443 if parts.scheme == "https" else 80),
                    parts.path.rstrip("/"))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_key(path: Path | None) -> str:
    """The API key: the first line of *path*, else a hidden prompt. Never an argument."""
    if path is not None:
        data = read_capped(path, MAX_API_KEY_FILE, "API key file", UsageError)
        lines = data.splitlines()
        raw, where = (lines[0] if lines else b""), str(path)
    elif sys.stdin.isatty():
        raw = getpass.getpass("API key: ").encode("utf-8", "surrogateescape")
        where = "the prompt"
    else:
        raise UsageError("no API key: give --api-key-file (standard input is not a terminal "
                         "to prompt on)")
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where}: the API key is not UTF-8 text") from None
    if not key:
        raise UsageError(f"{where}: the API key is empty")
    if not key.isprintable() or key != key.strip():
        raise UsageError(f"{where}: the API key holds a control character or blank at an end")
    if path is not None:
        _warn_if_readable(path)
    return key


def _warn_if_readable(path: Path) -> None:
    try:
        info = os.stat(path)
    except OSError:
        return  # read_capped says what is wrong
    if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
        _log.warning("%s: the API key file is readable by other users (mode %o); "
                     "chmod 600 it", path, stat.S_IMODE(info.st_mode))


# --------------------------------------------------------------------------
# eHSM's signature.
# --------------------------------------------------------------------------
def _js_skipped(value: Any) -> bool:
    """What ``value != '' && value != undefined && value != null`` drops in JavaScript."""
    return value is None or value == "" or value is False or (
        isinstance(value, int) and not isinstance(value, bool) and value == 0)


def ehsm_sign_string(params: Mapping[str, Any]) -> str:
    """eHSM's ``params_sort_str``: names in code-unit order, ``k=v`` joined by '&',
    objects flattened the same way, empty/null/0/false values left out."""
    parts = []
    for key in sorted(params, key=lambda k: k.encode("utf-16-be")):  # JS sorts UTF-16 units
        value = params[key]
        if _js_skipped(value):
            continue
        if isinstance(value, Mapping):
            text = ehsm_sign_string(value)
        elif isinstance(value, bool):
            text = "true"
        elif isinstance(value, (str, int)):
            text = str(value)
        else:  # lists and floats: JavaScript's spelling of them is not ours to guess
            raise ValueError(f"eHSM parameter {key!r}: cannot sign a {type(value).__name__}")
        parts.append(f"{key}={text}")
    return "&".join(parts)


def ehsm_sign(api_key: str, params: Mapping[str, Any]) -> str:
    """base64(HMAC-SHA256(api_key, sign string)), as the server recomputes it."""
    digest = hmac.new(api_key.encode("utf-8"), ehsm_sign_string(params).encode("utf-8"),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def ehsm_request(app_id: str, api_key: str, payload: Mapping[str, Any], *,
                 timestamp: str | None = None, nonce: str | None = None) -> dict[str, Any]:
    """A signed eHSM request body: fresh nonce and the current time unless given."""
    params: dict[str, Any] = {
        "appid": app_id,
        "nonce": nonce if nonce is not None else secrets.token_urlsafe(24)[:EHSM_NONCE_LENGTH],
        "timestamp": timestamp if timestamp is not None else str(time.time_ns() // 1_000_000),
        "payload": dict(payload),
    }
    params["sign"] = ehsm_sign(api_key, params)
    return params


# --------------------------------------------------------------------------
# Transport.
# --------------------------------------------------------------------------
def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verified TLS: the system's roots, or only the CA bundle given (a private CA)."""
    if ca_bundle is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
    return _only_ca(read_capped(ca_bundle, MiB, "CA bundle", UsageError), ca_bundle)


def _only_ca(pem: bytes, ca_bundle: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cadata=pem.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError):
        raise UsageError(f"{ca_bundle}: not a PEM CA bundle") from None
    return context


def post_json(endpoint: Endpoint, path: str, body: dict[str, Any], *,
              context: ssl.SSLContext | None = None,
              deadline: float = DEADLINE) -> tuple[int, bytes]:
    """POST *body* as JSON to *endpoint* + *path*; the status and at most 64 KiB of answer."""
    shown = endpoint.shown
    end = time.monotonic() + deadline
    connection: http.client.HTTPConnection
    if endpoint.scheme == "https":
        connection = http.client.HTTPSConnection(
            endpoint.host, endpoint.port, timeout=min(CONNECT_TIMEOUT, deadline),
            context=context or tls_context(None))
    else:
        connection = http.client.HTTPConnection(endpoint.host, endpoint.port,
                                                timeout=min(CONNECT_TIMEOUT, deadline))
    data = json.dumps(body).encode()
    # A hard deadline: a server that trickles one byte at a time defeats per-read
    # timeouts, so a timer shuts the socket down when the time is up.
    expired = threading.Event()
    timer = threading.Timer(deadline, _expire, (connection, expired))
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", endpoint.base + path, body=data, headers={
            "Content-Type": "application/json", "Accept": "application/json",
            "User-Agent": "ppml-image"})
        _remaining(connection, end, deadline, shown)
        response = connection.getresponse()
        return response.status, _read_bounded(response, connection, end, deadline, shown)
    except (OSError, http.client.HTTPException) as exc:
        raise _transport_error(exc, shown, deadline, expired.is_set()) from None
    finally:
        timer.cancel()
        connection.close()


def _expire(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _transport_error(exc: BaseException, shown: str, deadline: float,
                     expired: bool) -> ServiceError:
    """One line for what went wrong on the way; TLS before OSError (SSLError is one)."""
    if expired or isinstance(exc, TimeoutError):
        return ServiceError(f"{shown}: unreachable: no answer within {deadline:g} s",
                            "unreachable")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ServiceError(f"{shown}: TLS failure: the server's certificate is not trusted "
                            f"({exc.verify_message}); give --ca-bundle for a private CA", "tls")
    if isinstance(exc, ssl.SSLError):
        return ServiceError(f"{shown}: TLS failure: {exc.reason or exc}", "tls")
    if isinstance(exc, http.client.RemoteDisconnected):
        return ServiceError(f"{shown}: unreachable: the server closed the connection without "
                            "an answer", "unreachable")
    if isinstance(exc, http.client.HTTPException):
        return ServiceError(f"{shown}: malformed response: not HTTP ({type(exc).__name__})",
                            "malformed")
    assert isinstance(exc, OSError)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return ServiceError(f"{shown}: unreachable: {reason}", "unreachable")


def _remaining(connection: http.client.HTTPConnection, end: float, deadline: float,
               shown: str) -> None:
    left = end - time.monotonic()
    if left <= 0:
        raise ServiceError(f"{shown}: unreachable: no answer within {deadline:g} s",
                           "unreachable")
    if connection.sock is not None:
        connection.sock.settimeout(left)


def _read_bounded(response: http.client.HTTPResponse, connection: http.client.HTTPConnection,
                  end: float, deadline: float, shown: str) -> bytes:
    declared = response.getheader("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_RESPONSE:
        raise ServiceError(f"{shown}: malformed response: {declared} bytes, more than the "
                           f"{MAX_RESPONSE // KiB} KiB an answer may have", "malformed")
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_RESPONSE:
        _remaining(connection, end, deadline, shown)
        chunk = response.read1(min(16 * KiB, MAX_RESPONSE + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_RESPONSE:
        raise ServiceError(f"{shown}: malformed response: more than the "
                           f"{MAX_RESPONSE // KiB} KiB an answer may have", "malformed")
    return b"".join(chunks)


# --------------------------------------------------------------------------
# Registration.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Registration:
    """What a service answered: the policy id, and where it lives."""

    service: str
    url: str
    policy_id: str
    policy_type: str

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "url": self.url, "policy_id": self.policy_id,
                "policy_type": self.policy_type}


def ehsm_payload(record: Record) -> dict[str, str]:
    return {"mr_enclave": record.mr_enclave, "mr_signer": record.mr_signer}


def bigdl_body(record: Record, app_id: str, api_key: str, by: str) -> dict[str, str]:
    body = {"appID": app_id, "apiKey": api_key}
    if by == "enclave":
        return {**body, "policyType": "SGXMREnclavePolicy", "mrEnclave": record.mr_enclave}
    # BigDL's SGXMRSignerPolicy holds isvProdID as a string.
    return {**body, "policyType": "SGXMRSignerPolicy", "mrSigner": record.mr_signer,
            "isvProdID": str(record.isv_prod_id)}


def register(record: Record, *, service: str, url: str, app_id: str, api_key: str,
             by: str = "enclave", ca_bundle: Path | None = None, insecure_http: bool = False,
             allow_debug: bool = False, deadline: float = DEADLINE) -> Registration:
    """Register *record*'s measurement with *service*; the checked policy id."""
    check_service(service, by)
    check_app_id(app_id)
    endpoint = parse_url(url, insecure_http=insecure_http)
    if record.debug and not allow_debug:
        raise UsageError(f"{record.path}: a DEBUG enclave (its memory is readable by the host); "
                         "refusing to register it unless --allow-debug")
    context = tls_context(ca_bundle) if endpoint.scheme == "https" else None
    if service == "ehsm":
        body = ehsm_request(app_id, api_key, ehsm_payload(record))
        status, answer = post_json(endpoint, "/ehsm?Action=UploadQuotePolicy", body,
                                   context=context, deadline=deadline)
        policy_id = _ehsm_policy_id(endpoint.shown, status, answer, api_key)
        return Registration(service, endpoint.shown, policy_id, "UploadQuotePolicy")
    body = bigdl_body(record, app_id, api_key, by)
    status, answer = post_json(endpoint, "/registerPolicy", body, context=context,
                               deadline=deadline)
    policy_id = _bigdl_policy_id(endpoint.shown, status, answer, api_key)
    return Registration(service, endpoint.shown, policy_id, body["policyType"])


def _said(answer: bytes | str, secret: str) -> str:
    """A server's words, safe for one line: printable, short, our secret blanked out."""
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer
    if secret:
        text = text.replace(secret, "***")
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _json_object(shown: str, answer: bytes) -> dict[str, Any]:
    try:
        data = _json.loads(answer.lstrip(b"\xef\xbb\xbf").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ServiceError(f"{shown}: malformed response: not JSON", "malformed") from None
    if not isinstance(data, dict):
        raise ServiceError(f"{shown}: malformed response: not a JSON object", "malformed")
    return data


def _uuid(shown: str, value: Any, field: str) -> str:
    text = value if isinstance(value, str) else ""
    try:
        canonical = str(uuid.UUID(text))
    except ValueError:
        canonical = ""
    if not canonical or canonical != text.lower():
        raise ServiceError(f"{shown}: malformed response: {field} {_said(repr(value), '')} is "
                           "not a UUID", "malformed")
    return canonical


def _ehsm_policy_id(shown: str, status: int, answer: bytes, secret: str) -> str:
    if status in (401, 403):
        raise ServiceError(f"{shown}: authentication refused (HTTP {status})", "auth")
    if status != 200:
        raise ServiceError(f"{shown}: request refused: HTTP {status}: "
                           f"{_said(answer, secret)}", "refused")
    data = _json_object(shown, answer)
    code, message = data.get("code"), data.get("message", "")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ServiceError(f"{shown}: malformed response: no numeric 'code'", "malformed")
    message = message if isinstance(message, str) else ""
    if code != 200:
        said = _said(message, secret)
        if message.strip().lower() in _EHSM_AUTH:
            raise ServiceError(f"{shown}: authentication refused: eHSM does not accept this "
                               f"app id and API key ({said or f'code {code}'})", "auth")
        raise ServiceError(f"{shown}: request refused: eHSM code {code}: {said}", "refused")
    result = data.get("result")
    if not isinstance(result, dict):
        raise ServiceError(f"{shown}: malformed response: no 'result' object", "malformed")
    return _uuid(shown, result.get("policyId"), "policyId")


def _bigdl_policy_id(shown: str, status: int, answer: bytes, secret: str) -> str:
    said = _said(answer, secret)
    if status in (401, 403) or (status == 400 and _BIGDL_AUTH in said.lower()):
        raise ServiceError(f"{shown}: authentication refused: the BigDL attestation service "
                           f"does not accept this app id and API key ({said})", "auth")
    if status != 200:
        raise ServiceError(f"{shown}: request refused: HTTP {status}: {said}", "refused")
    data = _json_object(shown, answer)
    return _uuid(shown, data.get("policyID"), "policyID")


# --------------------------------------------------------------------------
# eHSM VerifyQuote: a second opinion, never the only one.
# --------------------------------------------------------------------------
MAX_EHSM_QUOTE = 8 * KiB  # eHSM takes at most 10924 base64 characters
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@dataclass(frozen=True)
class EhsmQuoteVerdict:
    """eHSM's answer to VerifyQuote, after its HMAC signature and our nonce were checked.

    ``accepted`` is eHSM's own verdict; callers report it next to the local
    verification (dcap-qvl and the record), never instead of it.
    """

    accepted: bool
    policy_id: str | None
    mr_enclave: str | None
    mr_signer: str | None
    url: str

    def to_json(self) -> dict[str, Any]:
        return {"service": "ehsm", "url": self.url, "accepted": self.accepted,
                "policy_id": self.policy_id, "mr_enclave": self.mr_enclave,
                "mr_signer": self.mr_signer, "signature": "verified"}


def verify_quote_with_ehsm(quote: bytes, *, url: str, app_id: str, api_key: str,
                           policy_id: str | None = None, ca_bundle: Path | None = None,
                           insecure_http: bool = False,
                           deadline: float = DEADLINE) -> EhsmQuoteVerdict:
    """Ask eHSM (``VerifyQuote``) about *quote*; its answer's signature and nonce checked."""
    check_app_id(app_id)
    endpoint = parse_url(url, insecure_http=insecure_http)
    if not 0 < len(quote) <= MAX_EHSM_QUOTE:
        raise UsageError(f"the quote has {len(quote)} bytes; eHSM's VerifyQuote takes 1 to "
                         f"{MAX_EHSM_QUOTE}")
    if policy_id is not None and not _UUID.fullmatch(policy_id):
        raise UsageError(f"--policy-id {policy_id!r:.80}: not a UUID (lower-case, as eHSM "
                         "returns it)")
    challenge = base64.b64encode(secrets.token_bytes(24)).decode("ascii")
    payload = {"quote": base64.b64encode(quote).decode("ascii"), "nonce": challenge}
    if policy_id is not None:
        payload["policyId"] = policy_id
    context = tls_context(ca_bundle) if endpoint.scheme == "https" else None
    status, answer = post_json(endpoint, "/ehsm?Action=VerifyQuote",
                               ehsm_request(app_id, api_key, payload), context=context,
                               deadline=deadline)
    result = _ehsm_result(endpoint.shown, status, answer, api_key)
    return _checked_verdict(endpoint.shown, result, api_key, challenge, policy_id)


def _ehsm_result(shown: str, status: int, answer: bytes, secret: str) -> dict[str, Any]:
    """The ``result`` object of a code-200 answer; refusals as for registration."""
    if status != 200:
        _ehsm_policy_id(shown, status, answer, secret)  # raises with the right reason
    data = _json_object(shown, answer)
    if data.get("code") != 200:
        _ehsm_policy_id(shown, status, answer, secret)
    result = data.get("result")
    if not isinstance(result, dict):
        raise ServiceError(f"{shown}: malformed response: no 'result' object", "malformed")
    return result


def _checked_verdict(shown: str, result: dict[str, Any], api_key: str, challenge: str,
                     policy_id: str | None) -> EhsmQuoteVerdict:
    signed = {k: v for k, v in result.items() if k != "sign"}
    sign = result.get("sign")
    try:
        expected = ehsm_sign(api_key, signed)
    except ValueError:
        expected = ""
    if not isinstance(sign, str) or not expected or not hmac.compare_digest(
            sign.encode(), expected.encode()):
        raise ServiceError(f"{shown}: VerifyQuote answer refused: its signature does not "
                           "verify under the API key (forged or altered)", "signature")
    if result.get("nonce") != challenge:
        raise ServiceError(f"{shown}: VerifyQuote answer refused: it is not the answer to our "
                           "challenge (nonce differs: replayed?)", "signature")
    accepted = result.get("result")
    if not isinstance(accepted, bool):
        raise ServiceError(f"{shown}: malformed response: 'result' is not true or false",
                           "malformed")
    measured = {}
    for name in ("mr_enclave", "mr_signer"):
        value = result.get(name)
        if value is not None and not (isinstance(value, str) and _HEX64.fullmatch(value)):
            raise ServiceError(f"{shown}: malformed response: {name} is not 64 hex digits",
                               "malformed")
        measured[name] = value.lower() if isinstance(value, str) else None
    if policy_id is not None and None in measured.values():
        raise ServiceError(f"{shown}: malformed response: no mr_enclave/mr_signer for policy "
                           f"{policy_id}", "malformed")
    return EhsmQuoteVerdict(accepted, policy_id, measured["mr_enclave"], measured["mr_signer"],
                            shown)
