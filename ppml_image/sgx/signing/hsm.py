"""Enclave keys inside a PKCS#11 token (an HSM, a smart card, SoftHSM).

The key is named by an RFC 7512 URI (:mod:`ppml_image.sgx.signing.pkcs11_uri`):

* the module (the token vendor's ``.so``) comes from the URI's
  ``module-path``, else from ``PPML_IMAGE_PKCS11_MODULE``; it must be an
  absolute path, so that no library search path picks another one;
* the PIN comes from the URI's ``pin-source=file:PATH``, else from
  ``PPML_IMAGE_PKCS11_PIN``, else from a hidden prompt on a terminal. It is
  asked for once and never retried: tokens lock after a few wrong PINs.

Every error is one line that names the token and the object. python-pkcs11
is imported only here, and this module only when a ``pkcs11:`` key is used.
The module runs inside this process: no child process ever sees the PIN.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image._fs import read_capped
from ppml_image.errors import TokenError, UsageError
from ppml_image.sgx.signing.keys import SGX_RSA_KEY_SIZE, SGX_RSA_PUBLIC_EXPONENT, mr_signer_of
from ppml_image.sgx.signing.keys import sgx_key_problem as _sgx_key_problem
from ppml_image.sgx.signing.pkcs11_uri import Pkcs11Uri, parse_uri
from ppml_image.sgx.signing.signers import _Closing

if TYPE_CHECKING:
    import pkcs11

log = logging.getLogger("ppml_image")

MODULE_ENV = "PPML_IMAGE_PKCS11_MODULE"
PIN_ENV = "PPML_IMAGE_PKCS11_PIN"
MAX_PIN_FILE = 4096  # a PIN is short; never read /dev/zero to the end


class Pkcs11Signer(_Closing):
    """Signs with a private key that stays inside a PKCS#11 token."""

    def __init__(self, session: pkcs11.Session, key: Any,
                 public_key: rsa.RSAPublicKey, where: str) -> None:
        self._session: pkcs11.Session | None = session
        self._key = key
        self._public = public_key
        self._where = where

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def name(self) -> str:
        return self._where

    def sign(self, data: bytes) -> bytes:
        import pkcs11

        if self._session is None:
            raise TokenError(f"{self._where}: the token session is closed")
        with token_errors(self._where, "signing"):
            return bytes(self._key.sign(data, mechanism=pkcs11.Mechanism.SHA256_RSA_PKCS))

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            with contextlib.suppress(Exception):  # closing a dead session is not an error
                session.close()


@dataclass(frozen=True)
class TokenKeyInfo:
    """What ``keygen --pkcs11`` reports about a key pair it made in a token."""

    token: str
    object: str
    id: bytes
    mr_signer: str

    def to_json(self) -> dict[str, str]:
        return {"token": self.token, "object": self.object, "id": self.id.hex(),
                "mr_signer": self.mr_signer}


# --------------------------------------------------------------------------
# Errors: one line naming the token and the object.
# --------------------------------------------------------------------------
_MESSAGES = {
    "PinIncorrect": "wrong PIN",
    "PinInvalid": "the token refused the PIN (invalid characters)",
    "PinLenRange": "the token refused the PIN (wrong length)",
    "PinLocked": "the PIN is locked after too many wrong PINs; the token's security "
                 "officer must unlock it",
    "PinExpired": "the PIN has expired; change it with the token's own tools",
    "UserPinNotInitialized": "the token has no user PIN yet; initialise it first",
    "TokenNotPresent": "the token is not present (removed?)",
    "DeviceRemoved": "the token was removed",
    "TokenNotRecognised": "the token is not recognised by the module",
    "DeviceError": "the token reported a device error",
    "MechanismInvalid": "the token does not offer RSA PKCS#1 v1.5 signing with SHA-256",
    "KeySizeRange": "the token does not support this RSA key size",
    "TokenWriteProtected": "the token is write-protected",
    "SessionReadOnly": "the token only allows read-only sessions",
}


@contextlib.contextmanager
def token_errors(where: str, doing: str) -> Iterator[None]:
    """Turn python-pkcs11's exceptions into one :class:`TokenError` line."""
    import pkcs11

    try:
        yield
    except pkcs11.PKCS11Error as exc:
        kind = type(exc).__name__
        detail = _MESSAGES.get(kind) or f"{doing} failed: {kind}" + (f" ({exc})" if str(exc)
                                                                    else "")
        raise TokenError(f"{where}: {detail}") from None


# --------------------------------------------------------------------------
# Module, token, PIN, session.
# --------------------------------------------------------------------------
def module_path(uri: Pkcs11Uri, where: str) -> str:
    """The module: the URI's ``module-path``, else ``PPML_IMAGE_PKCS11_MODULE``."""
    if "module-name" in uri.query and "module-path" not in uri.query:
        raise UsageError(f"{where}: module-name is not supported; give module-path=/abs/path.so "
                         f"in the URI or set {MODULE_ENV}")
    path = uri.query.get("module-path") or os.environ.get(MODULE_ENV)
    if not path:
        raise UsageError(f"{where}: no PKCS#11 module: add module-path=/path/to/module.so to "
                         f"the URI (after '?') or set {MODULE_ENV}")
    if not os.path.isabs(path):
        raise UsageError(f"{where}: PKCS#11 module {path}: must be an absolute path")
    return path


def load_module(path: str, where: str) -> Any:
    """Load (and initialise) the module; a file that is not one gives one line."""
    import pkcs11

    problem = _module_file_problem(path)
    if problem:
        raise TokenError(f"{where}: PKCS#11 module {path} cannot be loaded: {problem}")
    try:
        return pkcs11.lib(path)
    except pkcs11.PKCS11Error as exc:
        text = str(exc)
        if "C_GetFunctionList" in text:
            reason = "not a PKCS#11 module (it has no C_GetFunctionList)"
        else:  # python-pkcs11 says "OS exception while loading PATH: PATH: why"
            reason = text.rsplit(": ", 1)[-1] or type(exc).__name__
        raise TokenError(f"{where}: PKCS#11 module {path} cannot be loaded: {reason}") from None


def _module_file_problem(path: str) -> str:
    """Why *path* cannot be a module file ("" if it is a regular file), in the user's words."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "is a symbolic link to nothing" if os.path.islink(path) else "no such file"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a module file (give the path of the .so)"
    if not stat.S_ISREG(info.st_mode):
        return "is a device, FIFO or socket, not a module file (give the path of the .so)"
    return ""


def find_token(lib: Any, uri: Pkcs11Uri, where: str, module: str) -> pkcs11.Token:
    """The one initialised token the URI's path attributes select."""
    import pkcs11

    _check_library(lib, uri, where, module)
    with token_errors(where, "listing tokens"):
        slots = lib.get_slots(token_present=True)
        tokens = [slot.get_token() for slot in slots]
    tokens = [t for t in tokens if t.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED]
    chosen = [t for t in tokens if _token_matches(t, uri)]
    if not chosen:
        present = ", ".join(repr(t.label) for t in tokens) or "none"
        raise TokenError(f"{where}: no such token in module {module} "
                         f"(initialised tokens: {present})")
    if len(chosen) > 1:
        raise TokenError(f"{where}: {len(chosen)} tokens match; add token=, serial= or "
                         "slot-id= to the URI")
    token: pkcs11.Token = chosen[0]
    return token


def _check_library(lib: Any, uri: Pkcs11Uri, where: str, module: str) -> None:
    wanted = {"library-manufacturer": lib.manufacturer_id,
              "library-description": lib.library_description}
    for name, actual in wanted.items():
        if name in uri.path and uri.path[name] != actual:
            raise TokenError(f"{where}: module {module} is not the library the URI names "
                             f"({name} is {actual!r})")
    version = uri.library_version
    if version is not None and tuple(lib.library_version) != version:
        raise TokenError(f"{where}: module {module} is not the library the URI names "
                         "(library-version differs)")


def _token_matches(token: pkcs11.Token, uri: Pkcs11Uri) -> bool:
    slot = token.slot
    serial = token.serial.decode("ascii", "replace").strip()
    actual: dict[str, object] = {
        "token": token.label, "manufacturer": token.manufacturer_id, "model": token.model,
        "serial": serial, "slot-description": slot.slot_description,
        "slot-manufacturer": slot.manufacturer_id,
    }
    if uri.slot_id is not None and slot.slot_id != uri.slot_id:
        return False
    return all(uri.path[name] == value for name, value in actual.items() if name in uri.path)


def read_pin(uri: Pkcs11Uri, where: str) -> str:
    """The user PIN: ``pin-source=file:...``, else PPML_IMAGE_PKCS11_PIN, else a prompt."""
    source = uri.query.get("pin-source")
    if source is not None:
        path = _pin_file(source, where)
        try:  # PKCS#11 PINs are UTF-8 (CK_UTF8CHAR)
            return _read_pin_file(path, where).decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError(f"{where}: PIN file {path}: not UTF-8 text") from None
    env = os.environ.get(PIN_ENV)
    if env is not None:
        return env
    if sys.stdin.isatty():
        return getpass.getpass(f"PIN for {where}: ")
    raise TokenError(f"{where}: no PIN: add pin-source=file:PATH to the URI, set {PIN_ENV}, "
                     "or run on a terminal to be asked")


def _pin_file(source: str, where: str) -> Path:
    """The path of a ``file:`` pin-source (``file:/p``, ``file:///p``, ``file:rel``)."""
    if not source.startswith("file:"):
        raise UsageError(f"{where}: pin-source must be a file: URI (file:/path/to/pin); "
                         "commands and other sources are not supported")
    rest = source[len("file:"):]
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host not in ("", "localhost") or not slash:
            raise UsageError(f"{where}: pin-source file URI must name a local file")
        rest = "/" + path
    if not rest:
        raise UsageError(f"{where}: pin-source file URI names no file")
    return Path(rest)


def _read_pin_file(path: Path, where: str) -> bytes:
    try:
        data = read_capped(path, MAX_PIN_FILE, "PIN file", TokenError)
    except TokenError as exc:  # name the token too: several keys may be in play
        raise TokenError(f"{where}: PIN file {exc}") from None
    lines = data.splitlines()
    return lines[0] if lines else b""


@contextlib.contextmanager
def open_session(uri: Pkcs11Uri, *, rw: bool = False) -> Iterator[pkcs11.Session]:
    """Load the module, find the token, log in: a session closed on exit."""
    session = _login(uri, rw=rw)
    try:
        yield session
    finally:
        with contextlib.suppress(Exception):
            session.close()


def _login(uri: Pkcs11Uri, *, rw: bool) -> pkcs11.Session:
    import pkcs11

    where = uri.where()
    module = module_path(uri, where)
    lib = load_module(module, where)
    token = find_token(lib, uri, where, module)
    if token.flags & pkcs11.TokenFlag.PROTECTED_AUTHENTICATION_PATH:
        pin: Any = pkcs11.PROTECTED_AUTH  # a PIN pad: the token asks for it itself
    elif token.flags & pkcs11.TokenFlag.LOGIN_REQUIRED:
        pin = read_pin(uri, where)
    else:
        pin = None
    with token_errors(where, "logging in"):
        return token.open(rw=rw, user_pin=pin)


# --------------------------------------------------------------------------
# Signing with a token key.
# --------------------------------------------------------------------------
def open_token_signer(uri_text: str) -> Pkcs11Signer:
    """Open the token a URI names, find its private key and check it suits SGX."""
    uri = parse_uri(uri_text)
    where = uri.where()
    if uri.object is None and uri.id is None:
        raise UsageError(f"{where}: the URI names no key: add object=LABEL (or id=...)")
    if uri.type not in (None, "private"):
        raise UsageError(f"{where}: type={uri.type} cannot sign; name the private key "
                         "(type=private, or no type)")
    session = _login(uri, rw=False)
    try:
        key = find_private_key(session, uri, where)
        public = token_public_key(session, key, where)
        numbers = public.public_numbers()
        problem = _sgx_key_problem(numbers.n, numbers.e)
        if problem:
            raise TokenError(f"{where}: {problem}")
        _check_may_sign(key, where)
        _warn_if_exposed(key, where)
        return Pkcs11Signer(session, key, public, where)
    except BaseException:
        with contextlib.suppress(Exception):
            session.close()
        raise


def _check_may_sign(key: Any, where: str) -> None:
    from pkcs11 import Attribute

    with token_errors(where, "reading the key"):
        may_sign = key[Attribute.SIGN]
    if not may_sign:
        raise TokenError(f"{where}: the key may not sign (CKA_SIGN is false)")


def _warn_if_exposed(key: Any, where: str) -> None:
    """Warn when the token would hand the private key out: signing still works,
    but whoever holds the PIN can copy the enclave key off the token."""
    from pkcs11 import Attribute

    with token_errors(where, "reading the key"):
        sensitive, extractable = key[Attribute.SENSITIVE], key[Attribute.EXTRACTABLE]
    exposed = [name for name, bad in (("CKA_SENSITIVE is false", not sensitive),
                                      ("CKA_EXTRACTABLE is true", extractable)) if bad]
    if exposed:
        log.warning("%s: the private key can leave the token (%s): anyone with the PIN can "
                    "copy the enclave key; make a new one with `ppml-image keygen --pkcs11` "
                    "(sensitive, never extractable)", where, " and ".join(exposed))


def _selector(uri: Pkcs11Uri) -> dict[Any, Any]:
    from pkcs11 import Attribute

    attrs: dict[Any, Any] = {}
    if uri.object is not None:
        attrs[Attribute.LABEL] = uri.object
    if uri.id is not None:
        attrs[Attribute.ID] = uri.id
    return attrs


def find_private_key(session: pkcs11.Session, uri: Pkcs11Uri, where: str) -> Any:
    from pkcs11 import Attribute, ObjectClass

    with token_errors(where, "looking up the key"):
        found = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                          **_selector(uri)}))
    if not found:
        raise TokenError(f"{where}: no such private key in the token (object missing)")
    if len(found) > 1:
        raise TokenError(f"{where}: {len(found)} private keys match; add id=... to the URI")
    return found[0]


def token_public_key(session: pkcs11.Session, key: Any, where: str) -> rsa.RSAPublicKey:
    """The public part of a token key: from the private key object's public
    attributes, else from the public key object with the same CKA_ID."""
    from pkcs11 import Attribute, KeyType, ObjectClass, PKCS11Error

    with token_errors(where, "reading the key"):
        key_type = key[Attribute.KEY_TYPE]
    if key_type != KeyType.RSA:
        kind = getattr(key_type, "name", str(key_type))
        raise TokenError(f"{where}: is a {kind} key; SGX requires an RSA-{SGX_RSA_KEY_SIZE} key "
                         f"with exponent {SGX_RSA_PUBLIC_EXPONENT}")
    try:
        modulus, exponent = key[Attribute.MODULUS], key[Attribute.PUBLIC_EXPONENT]
    except PKCS11Error:
        with token_errors(where, "reading the public key"):
            key_id = key[Attribute.ID]
            public = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                               Attribute.ID: key_id}))
            if len(public) != 1:
                raise TokenError(f"{where}: the token does not show the key's public part "
                                 "(no matching public key object)") from None
            modulus, exponent = public[0][Attribute.MODULUS], public[0][Attribute.PUBLIC_EXPONENT]
    return rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"),
                                int.from_bytes(modulus, "big")).public_key()


# --------------------------------------------------------------------------
# keygen --pkcs11: a key pair made inside the token.
# --------------------------------------------------------------------------
def generate_token_key(uri_text: str) -> TokenKeyInfo:
    """Generate an RSA-3072, e = 3 signing key pair inside the token.

    The private key is a token object, sensitive and never extractable, and
    may only sign. An existing object with the same label or id is never
    replaced. The result is read back and checked; a token that did not
    honour the template loses the new pair again and the command fails.
    """
    uri = parse_uri(uri_text)
    where = uri.where()
    if uri.object is None:
        raise UsageError(f"{where}: keygen needs object=LABEL in the URI")
    if uri.type not in (None, "private", "public"):
        raise UsageError(f"{where}: type={uri.type}: keygen makes an RSA key pair")
    key_id = uri.id if uri.id else os.urandom(8)
    with open_session(uri, rw=True) as session:
        _refuse_existing(session, uri.object, key_id, where)
        public, private = _generate_pair(session, uri.object, key_id, where)
        try:
            public_key = token_public_key(session, private, where)
            _check_generated(private, public_key, where)
        except BaseException:
            for obj in (private, public):
                with contextlib.suppress(Exception):
                    obj.destroy()
            raise
    return TokenKeyInfo(token=uri.token or "", object=uri.object, id=key_id,
                        mr_signer=mr_signer_of(public_key))


def _refuse_existing(session: pkcs11.Session, label: str, key_id: bytes, where: str) -> None:
    from pkcs11 import Attribute

    with token_errors(where, "looking for existing objects"):
        clash = (next(iter(session.get_objects({Attribute.LABEL: label})), None)
                 or next(iter(session.get_objects({Attribute.ID: key_id})), None))
    if clash is not None:
        raise TokenError(f"{where}: an object with this label or id already exists; keys in a "
                         "token are never replaced: choose another object= (or id=), or delete "
                         "the old one with the token's own tools")


def _generate_pair(session: pkcs11.Session, label: str, key_id: bytes,
                   where: str) -> tuple[Any, Any]:
    from pkcs11 import Attribute, KeyType, MechanismFlag

    public_template = {
        Attribute.PUBLIC_EXPONENT: SGX_RSA_PUBLIC_EXPONENT.to_bytes(1, "big"),
        Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
    }
    private_template = {
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
    }
    with token_errors(where, "generating the key pair"):
        return session.generate_keypair(
            KeyType.RSA, SGX_RSA_KEY_SIZE, id=key_id, label=label, store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template=public_template, private_template=private_template)


def _check_generated(private: Any, public_key: rsa.RSAPublicKey, where: str) -> None:
    from pkcs11 import Attribute

    numbers = public_key.public_numbers()
    problem = _sgx_key_problem(numbers.n, numbers.e)
    if problem:
        raise TokenError(f"{where}: the token made a key SGX cannot use: {problem}")
    with token_errors(where, "reading the new key's attributes"):
        sensitive = private[Attribute.SENSITIVE]
        extractable = private[Attribute.EXTRACTABLE]
    if not sensitive or extractable:
        raise TokenError(f"{where}: the token did not make the private key sensitive and "
                         "non-extractable")
