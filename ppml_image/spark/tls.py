"""``secrets tls``: Spark's TLS key, certificate and keystores, without openssl.

Writes, in a 0700 folder, each file 0600:

* ``server.key``: RSA-3072 key, PKCS#8 PEM, encrypted with the password
  (unencrypted only with ``unencrypted_key=True``, for tools that need it);
* ``server.crt``: self-signed X.509 certificate with the requested SANs;
* ``server.pem``: certificate followed by the (encrypted) key;
* ``keystore.p12``: PKCS#12 with key and certificate (what Spark reads);
* ``keystore.jks``: Java KeyStore made by the JDK's own ``keytool`` from the
  PKCS#12 (for older Spark setups), when a ``keytool`` is on the machine. The
  passwords reach keytool through a 0600 file, never its command line.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from ppml_image.spark.common import SecretsError, prepare_folder, save

KEYSTORE_ALIAS = "spark"


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


def make_certificate(key: rsa.RSAPrivateKey, cn: str, sans: list[str],
                     days: int) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
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
    if days < 1:
        raise SecretsError(f"--days {days}: the certificate must be valid for at least a day")
    names = list(dict.fromkeys([cn, *(sans or [])]))
    prepare_folder(out, force=force)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    cert = make_certificate(key, cn, names, days)
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption() if unencrypted_key
        else serialization.BestAvailableEncryption(password))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                encryption)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    save(out, "server.key", key_pem)
    save(out, "server.crt", cert_pem)
    save(out, "server.pem", cert_pem + key_pem)
    p12 = pkcs12.serialize_key_and_certificates(
        KEYSTORE_ALIAS.encode(), key, cert, None,
        serialization.BestAvailableEncryption(password))
    save(out, "keystore.p12", p12)
    material = TlsMaterial(folder=out, sans=names,
                           not_after=cert.not_valid_after_utc.isoformat())
    material.jks = _make_jks(out, password)
    material.files = sorted(p.name for p in out.iterdir())
    return material


def _make_jks(out: Path, password: bytes) -> bool:
    """Convert keystore.p12 to keystore.jks with keytool; False if there is none."""
    keytool = shutil.which("keytool")
    if keytool is None:
        return False
    with tempfile.TemporaryDirectory(prefix="ppml-keytool-", dir=out) as tmp:
        pass_file = Path(tmp) / "pass"
        save(Path(tmp), "pass", password + b"\n")
        command = [keytool, "-importkeystore", "-noprompt",
                   "-srckeystore", str(out / "keystore.p12"), "-srcstoretype", "PKCS12",
                   "-srcstorepass:file", str(pass_file),
                   "-destkeystore", str(out / "keystore.jks"), "-deststoretype", "JKS",
                   "-deststorepass:file", str(pass_file), "-destkeypass:file", str(pass_file),
                   "-srcalias", KEYSTORE_ALIAS, "-destalias", KEYSTORE_ALIAS]
        proc = subprocess.run(command, capture_output=True, text=True, check=False,
                              preexec_fn=lambda: os.umask(0o077))
    if proc.returncode != 0:
        raise SecretsError(f"{out}/keystore.jks: keytool failed: "
                           f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    os.chmod(out / "keystore.jks", 0o600)
    return True
