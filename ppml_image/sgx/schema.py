"""Manifest checks that Gramine 1.9 makes before it signs.

Gramine validates a manifest against its schema; here we check what the
measurement and the enclave's start depend on and report each problem as one
line naming the key.
"""

from __future__ import annotations

import re
from typing import Any

from ppml_image.errors import ManifestError

CPU_FEATURES = ("avx", "avx512", "amx", "mpx", "pkru")
CPU_FEATURE_VALUES = ("unspecified", "required", "disabled")
_SIZE_RE = re.compile(r"^(0x[0-9a-fA-F]+|0o[0-7]+|0b[01]+|[0-9]+)([KMG]?)$")


def parse_size(value: Any, key: str, name: str) -> int:
    """A Gramine size: an integer or a string like "256M", "0x20000000", "1G"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ManifestError(f"{name}: {key} must be a size such as \"256M\", got {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value.strip())
    if not match:
        raise ManifestError(f"{name}: {key} = {value!r} is not a size (e.g. \"512M\", \"4G\")")
    number = int(match.group(1), 0)
    return number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]


def _require(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ManifestError(f"{name}: {message}")


def _check_bool(table: dict[str, Any], key: str, prefix: str, name: str) -> None:
    if key in table:
        _require(isinstance(table[key], bool), name,
                 f"{prefix}{key} must be true or false, got {table[key]!r}")


def _check_int(table: dict[str, Any], key: str, prefix: str, name: str, lo: int, hi: int) -> None:
    value = table.get(key)
    ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
    _require(ok, name, f"{prefix}{key} must be an integer from {lo} to {hi}, got {value!r}")


def validate_manifest(manifest: dict[str, Any], name: str) -> None:
    """Raise :class:`ManifestError` for the first problem found."""
    sgx = manifest["sgx"]
    for key in ("debug", "edmm_enable", "enable_stats", "use_exinfo"):
        _check_bool(sgx, key, "sgx.", name)
    _check_int(sgx, "max_threads", "sgx.", name, 1, 1 << 20)
    _check_int(sgx, "isvprodid", "sgx.", name, 0, 0xFFFF)
    _check_int(sgx, "isvsvn", "sgx.", name, 0, 0xFFFF)
    size = parse_size(sgx["enclave_size"], "sgx.enclave_size", name)
    _require(size > 0 and size & (size - 1) == 0, name,
             f"sgx.enclave_size = {sgx['enclave_size']!r} is not a power of two "
             "(Gramine's loader refuses such enclaves)")
    _require(sgx.get("remote_attestation") in ("none", "epid", "dcap"), name,
             f"sgx.remote_attestation must be \"none\", \"epid\" or \"dcap\", "
             f"got {sgx.get('remote_attestation')!r}")
    features = sgx["cpu_features"]
    for key, value in features.items():
        _require(key in CPU_FEATURES, name, f"unknown sgx.cpu_features.{key} "
                 f"(known: {', '.join(CPU_FEATURES)})")
        allowed = CPU_FEATURE_VALUES if key in ("avx", "avx512", "amx") else CPU_FEATURE_VALUES[1:]
        _require(value in allowed, name, f"sgx.cpu_features.{key} = {value!r} is not one of "
                 f"{', '.join(repr(v) for v in allowed)}")
    entrypoint = manifest["loader"]["entrypoint"]
    _require(isinstance(entrypoint, dict), name,
             "loader.entrypoint must be a table with uri (and sha256), e.g. "
             "loader.entrypoint.uri = \"file:...\"")
    _require(isinstance(entrypoint.get("uri"), str), name, "loader.entrypoint.uri must be a string")
    for tf in sgx["trusted_files"]:
        sha = tf.get("sha256")
        if sha is not None:
            _require(isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) is not None, name,
                     f"trusted file {tf['uri']!r}: sha256 must be 64 lower-case hex digits")
