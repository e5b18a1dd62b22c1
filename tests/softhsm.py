"""A real SoftHSM2 token for the tests, private to one test session.

``make test`` installs SoftHSM2 and OpenSC (scripts/ensure-softhsm.sh). Each
session writes its own ``softhsm2.conf`` whose token folder is inside the
session's temporary folder, and points ``SOFTHSM2_CONF`` at it: the
machine's own tokens (``/var/lib/softhsm``) are never opened. Test PINs are
test data; ``softhsm2-util`` and ``pkcs11-tool`` take them on their command
lines because that is how those tools take them (ppml-image itself never
does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TOKEN = "ppml"
COMMON = Path(__file__).resolve().parent / "vectors" / "_common"


def find_module() -> str:
    for candidate in MODULE_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    pytest.fail("SoftHSM2 is not installed: run `make test` or scripts/ensure-softhsm.sh")


@dataclass
class SoftHsm:
    root: Path
    module: str
    pin: str
    so_pin: str

    @property
    def conf(self) -> Path:
        return self.root / "softhsm2.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}

    @property
    def pin_file(self) -> Path:
        return self.root / "user.pin"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        return subprocess.run(list(args), env=env, capture_output=True, text=True, check=True,
                              timeout=120)

    def init_token(self, label: str) -> None:
        self.run("softhsm2-util", "--init-token", "--free", "--label", label,
                 "--so-pin", self.so_pin, "--pin", self.pin)

    def import_pem(self, pem: Path, label: str, key_id: str, token: str = TOKEN) -> None:
        """Import a PEM private key; softhsm2-util wants PKCS#8, converted in our tmp dir."""
        key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
        self.import_key(key, label, key_id, token)

    def import_key(self, key: object, label: str, key_id: str, token: str = TOKEN) -> None:
        p8 = self.root / f"import-{label}-{key_id}.p8"
        fd = os.open(p8, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        try:
            self.run("softhsm2-util", "--import", str(p8), "--token", token, "--label", label,
                     "--id", key_id, "--pin", self.pin)
        finally:
            p8.unlink()

    def uri(self, obj: str | None = None, *, token: str | None = TOKEN, pin: bool = True,
            module: bool = True, extra_path: str = "", extra_query: str = "") -> str:
        """A URI for *obj*; by default with module-path and pin-source=file:."""
        path = []
        if token is not None:
            path.append(f"token={quote(token, safe='')}")
        if obj is not None:
            path.append(f"object={quote(obj, safe='')}")
        if extra_path:
            path.append(extra_path)
        query = []
        if module:
            query.append(f"module-path={self.module}")
        if pin:
            query.append(f"pin-source=file:{self.pin_file}")
        if extra_query:
            query.append(extra_query)
        return "pkcs11:" + ";".join(path) + ("?" + "&".join(query) if query else "")

    def tool(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """OpenSC's pkcs11-tool on our token, logged in."""
        env = {**os.environ, **self.env}
        return subprocess.run(["pkcs11-tool", "--module", self.module, "--token-label", TOKEN,
                               "--login", "--pin", self.pin, *args],
                              env=env, capture_output=True, text=True, check=check, timeout=120)


def make_softhsm(root: Path) -> SoftHsm:
    """A fresh token 'ppml' holding the published vector keys (and some that SGX refuses)."""
    for tool in ("softhsm2-util", "pkcs11-tool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make test` or scripts/ensure-softhsm.sh")
    root.mkdir(parents=True, exist_ok=True)
    (root / "tokens").mkdir(mode=0o700)
    (root / "softhsm2.conf").write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n")
    hsm = SoftHsm(root=root, module=find_module(), pin=os.urandom(6).hex(),
                  so_pin=os.urandom(6).hex())
    hsm.pin_file.write_text(hsm.pin + "\n")
    hsm.pin_file.chmod(0o600)
    hsm.init_token(TOKEN)
    hsm.import_pem(COMMON / "key.pem", "vector-key", "01")
    hsm.import_pem(COMMON / "key2.pem", "vector-key2", "02")
    hsm.import_pem(COMMON / "key_2048.pem", "rsa-2048", "03")
    hsm.import_pem(COMMON / "key_e65537.pem", "rsa-e65537", "04")
    hsm.import_key(ec.generate_private_key(ec.SECP256R1()), "ec-key", "05")
    hsm.import_pem(COMMON / "key.pem", "twice", "06")
    hsm.import_pem(COMMON / "key.pem", "twice", "07")
    return hsm
