"""``secrets tls``: Spark's TLS key, certificate and keystores, without openssl.

Writes, in a 0700 folder, each file 0600:

* ``server.key``: RSA-3072 key, PKCS#8 PEM, encrypted with the password
  (unencrypted only with ``unencrypted_key=True``, for tools that need it);
* ``server.crt``: self-signed X.509 certificate with the requested SANs;
* ``server.pem``: certificate followed by the (encrypted) key;
* ``keystore.p12``: PKCS#12 with key and certificate (what Spark reads);
* ``keystore.jks``: Java KeyStore made by the JDK's own ``keytool`` from the
  PKCS#12 (for older Spark setups), when a ``keytool`` is on the machine.

The password reaches keytool through its ``:env`` options, in an environment
holding only PATH, JAVA_HOME, LANG and that one variable: never a file, never
its command line. keytool is killed if we are (PR_SET_PDEATHSIG), and writes
only into the private staging folder, which becomes *out* only on success.

Checked before anything is written: the password (printable ASCII, which Java
keystores require, 8 to 373 bytes), the names (host names or IP addresses,
ASCII: give an internationalised name as its IDNA A-label ``xn--...``; the CN
at most 64 characters, the X.509 upper bound) and the validity (at least one
day, ending by 9999-12-31, the last date X.509 can hold).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from ppml_image._fs import prctl_function, staged_folder
from ppml_image._proc import child_env
from ppml_image.errors import UsageError
from ppml_image.spark.common import SecretsError, check_password, save

KEYSTORE_ALIAS = "spark"
TLS_FILES = ("server.key", "server.crt", "server.pem", "keystore.p12", "keystore.jks")
MAX_CN = 64  # ub-common-name (RFC 5280)
LAST_DATE = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
# keytool reads the password from this variable (-storepass:env); it is not
# a PPML_IMAGE_* name, which children never receive.
PASSWORD_VARIABLE = "PPML_KEYTOOL_PASSWORD"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The last label (the top-level domain) starts with a letter (RFC 3696 2.:
# no all-numeric TLD): "1.2.3.999", "127.1" or "0x7f.1" is a mistyped or
# shortened IP address, which resolvers may read as one, never a host name.
_TOP_LABEL = r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_TOP_LABEL}\Z")


@dataclass
class TlsMaterial:
    folder: Path
    files: list[str] = field(default_factory=list)
    sans: list[str] = field(default_factory=list)
    not_after: str = ""
    jks: bool = False


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def name_problem(name: str) -> str | None:
    """Why *name* cannot be a subject alternative name, or None."""
    if not name:
        return "empty"
    if not name.isprintable():
        return "contains a control character"
    if not name.isascii():
        return ("not ASCII; give an internationalised name as its IDNA A-label "
                "(xn--...), for example from `idn2`")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        if len(name) > 253 or not _HOST_NAME.fullmatch(name):
            return ("neither a host name (labels of letters, digits and '-', the last one "
                    "starting with a letter) nor an IP address (IPv4 is four numbers of 0 "
                    "to 255)")
        return None
    if getattr(address, "scope_id", None):
        return "an IPv6 address with a zone cannot be a certificate name"
    return None


def certificate_names(cn: str, sans: list[str]) -> list[str]:
    """The CN followed by the other SANs, without duplicates; checked."""
    if len(cn) > MAX_CN:
        raise UsageError(f"--cn {cn!r}: {len(cn)} characters; X.509 allows a common name "
                         f"of at most {MAX_CN}")
    for option, name in [("--cn", cn), *(("--san", s) for s in sans)]:
        problem = name_problem(name)
        if problem:
            raise UsageError(f"{option} {name!r}: {problem}")
    return list(dict.fromkeys([cn, *sans]))


def check_days(days: int, now: dt.datetime | None = None) -> dt.datetime:
    """The certificate's end for *days* from *now*; refused if X.509 cannot hold it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if days < 1:
        raise UsageError(f"--days {days}: the certificate must be valid for at least a day")
    if days > (LAST_DATE - now).days:
        raise UsageError(f"--days {days}: the certificate would end after 9999-12-31, the "
                         "last date X.509 can hold")
    return now + dt.timedelta(days=days)


def make_certificate(key: rsa.RSAPrivateKey, cn: str, sans: list[str],
                     days: int, now: dt.datetime | None = None) -> x509.Certificate:
    now = now or dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))


def generate_tls(out: Path, password: bytes, *, cn: str = "localhost",
                 sans: list[str] | None = None, days: int = 365,
                 unencrypted_key: bool = False, force: bool = False) -> TlsMaterial:
    """Write Spark's TLS material to *out* (see the module docstring)."""
    check_password(password, "the password", keystore=True)
    names = certificate_names(cn, sans or [])
    now = dt.datetime.now(dt.timezone.utc)
    check_days(days, now)
    with staged_folder(out, TLS_FILES, force=force) as stage:
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        cert = make_certificate(key, cn, names, days, now)
        encryption: serialization.KeySerializationEncryption = (
            serialization.NoEncryption() if unencrypted_key
            else serialization.BestAvailableEncryption(password))
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8, encryption)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        save(stage, "server.key", key_pem)
        save(stage, "server.crt", cert_pem)
        save(stage, "server.pem", cert_pem + key_pem)
        p12 = pkcs12.serialize_key_and_certificates(
            KEYSTORE_ALIAS.encode(), key, cert, None,
            serialization.BestAvailableEncryption(password))
        save(stage, "keystore.p12", p12)
        jks = _make_jks(stage, password, out)
        files = sorted(os.listdir(stage))
    return TlsMaterial(folder=out, files=files, sans=names,
                       not_after=cert.not_valid_after_utc.isoformat(), jks=jks)


def keytool_env(password: bytes) -> dict[str, str]:
    """All keytool gets: PATH, JAVA_HOME if set, LANG, and the password variable."""
    ours = child_env()  # already without any PPML_IMAGE_* variable
    env: dict[str, str] = {name: ours[name] for name in ("PATH", "JAVA_HOME") if name in ours}
    env["LANG"] = "C.UTF-8"
    env[PASSWORD_VARIABLE] = password.decode("ascii")  # check_password: printable ASCII
    return env


def _die_with_parent() -> Callable[[], None]:
    """A preexec function: the child gets SIGKILL when we die, even by kill -9.

    Otherwise an orphaned keytool would keep the password in its environment
    (and write into a folder nobody will clean). Resolved here, before fork.
    """
    prctl = prctl_function()
    if prctl is None:
        raise UsageError("secrets tls runs keytool only on Linux: elsewhere nothing would "
                         "kill it, holding the password, if we died")
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # we died before the call took effect
            os._exit(1)

    return set_death_signal


def _make_jks(stage: Path, password: bytes, out: Path) -> bool:
    """Convert keystore.p12 to keystore.jks with keytool; False if there is none."""
    keytool = shutil.which("keytool")
    if keytool is None:
        return False
    variable = PASSWORD_VARIABLE
    # Relative names, run in the staging folder: keytool's messages then never
    # show the temporary name. -XX:-UsePerfData: no hsperfdata file in /tmp.
    command = [keytool, "-J-XX:-UsePerfData", "-importkeystore", "-noprompt",
               "-srckeystore", "keystore.p12", "-srcstoretype", "PKCS12",
               "-srcstorepass:env", variable,
               "-destkeystore", "keystore.jks", "-deststoretype", "JKS",
               "-deststorepass:env", variable, "-destkeypass:env", variable,
               "-srcalias", KEYSTORE_ALIAS, "-destalias", KEYSTORE_ALIAS]
    proc = subprocess.run(command, cwd=stage, env=keytool_env(password), capture_output=True,
                          text=True, check=False, umask=0o077,
                          preexec_fn=_die_with_parent())
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no message"]
        raise SecretsError(f"{out}/keystore.jks: keytool failed: {last[0]}")
    os.chmod(stage / "keystore.jks", 0o600)
    return True
