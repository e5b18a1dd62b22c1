"""Manifest checks.

Two levels, as in Gramine 1.9:

* :func:`validate_manifest` checks what signing depends on (sizes, thread
  count, cpu_features, ISV numbers, the loader entrypoint). ``sign`` runs it.
* :func:`check_schema` checks the whole manifest against Gramine's schema:
  unknown keys (usually typos) and wrong types are errors. ``manifest`` runs
  it after rendering, as ``gramine-manifest --check`` does.

Each problem is one line naming the manifest and the key.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ppml_image.errors import ManifestError
from ppml_image.sgx.measure.enclave import parse_size

log = logging.getLogger("ppml_image")

CPU_FEATURES = ("avx", "avx512", "amx", "mpx", "pkru")
# One C-level match per trusted entry: a manifest may list a million of them.
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRI = ("unspecified", "disabled", "required")
_HARDENING = ("disabled", "required")
# What x86-64 user space can address (47 bits): no enclave can be larger.
MAX_ENCLAVE_SIZE = 1 << 47


def _human(size: int) -> str:
    """A size as a person reads it: 1 TiB, 0x1000 bytes..."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0 and size >> shift < 1 << 20:
            return f"{size >> shift} {unit}"
    return f"{size:#x} bytes" if size < 1 << 80 else f"about 2^{size.bit_length() - 1} bytes"


def _fail(name: str, message: str) -> None:
    raise ManifestError(f"{name}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_manifest(manifest: dict[str, Any], name: str) -> None:
    """Check what measurement and signing use; raise for the first problem."""
    sgx = manifest["sgx"]
    for key in ("debug", "edmm_enable", "enable_stats", "use_exinfo"):
        if not isinstance(sgx.get(key), bool):
            _fail(name, f"sgx.{key} must be true or false, got {sgx.get(key)!r}")
    for key, low, high in (("max_threads", 1, 1 << 16), ("isvprodid", 0, 0xFFFF),
                           ("isvsvn", 0, 0xFFFF)):
        value = sgx.get(key)
        if not _is_int(value) or not low <= value <= high:
            _fail(name, f"sgx.{key} must be an integer from {low} to {high}, got {value!r}")
    size = parse_size(sgx["enclave_size"], "sgx.enclave_size", name)
    if size > MAX_ENCLAVE_SIZE:
        _fail(name, f"sgx.enclave_size = {sgx['enclave_size']!r} is {_human(size)}, more than "
              f"the {_human(MAX_ENCLAVE_SIZE)} x86-64 user space can address")
    if size & (size - 1):
        # gramine-sgx-sign accepts this, but Gramine's loader will refuse to
        # start the enclave; we sign (byte compatibility) and say so loudly.
        log.warning("%s: sgx.enclave_size = %r is not a power of two: Gramine's loader "
                    "will refuse to start this enclave", name, sgx["enclave_size"])
    _check_cpu_features(sgx["cpu_features"], name)
    entrypoint = manifest["loader"]["entrypoint"]
    if not isinstance(entrypoint, dict):
        _fail(name, "loader.entrypoint must be a table (loader.entrypoint.uri = \"file:...\"), "
              "not a string")
    if not isinstance(entrypoint.get("uri"), str):
        _fail(name, "loader.entrypoint.uri must be a string")
    for tf in sgx["trusted_files"]:
        sha = tf.get("sha256")
        if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            _fail(name, f"trusted file {tf['uri']!r}: sha256 must be 64 lower-case hex digits")


def _check_cpu_features(features: Any, name: str) -> None:
    if not isinstance(features, dict):
        _fail(name, "sgx.cpu_features must be a table")
    for key, value in features.items():
        if key not in CPU_FEATURES:
            _fail(name, f"unknown sgx.cpu_features.{key} (known: {', '.join(CPU_FEATURES)})")
        allowed = _HARDENING if key in ("mpx", "pkru") else _TRI
        if value not in allowed:
            _fail(name, f"sgx.cpu_features.{key} = {value!r}; allowed: "
                  + ", ".join(f'"{v}"' for v in allowed))


# --------------------------------------------------------------------------
# The full schema (gramine-manifest --check)
# --------------------------------------------------------------------------
class Req:
    """Marks a required key in a table spec."""

    def __init__(self, key: str) -> None:
        self.key = key


class OneOf:
    """The value must match one of several specs."""

    def __init__(self, *specs: Any) -> None:
        self.specs = specs


class Enum:
    def __init__(self, *values: str) -> None:
        self.values = values


_MOUNT = OneOf(
    {Req("path"): str, Req("uri"): str, "type": Enum("chroot")},
    {Req("path"): str, Req("uri"): str, Req("type"): Enum("encrypted"), "key_name": str,
     "enable_recovery": bool},
    {Req("path"): str, Req("type"): Enum("tmpfs"), "uri": str},
    {Req("path"): str, Req("uri"): str, Req("type"): Enum("untrusted_shm")},
)
_ENV_VALUE = OneOf(str, {Req("value"): str}, {Req("passthrough"): bool})
_LOG_LEVELS = Enum("none", "error", "warning", "debug", "trace", "all")

SCHEMA: dict[Any, Any] = {
    Req("libos"): {Req("entrypoint"): str, "check_invalid_pointers": bool},
    Req("loader"): {
        Req("entrypoint"): {Req("uri"): str, "sha256": str},
        "argv": [str], "argv_src_file": str, "env": {str: _ENV_VALUE}, "env_src_file": str,
        "gid": int, "uid": int, "insecure__use_cmdline_argv": bool,
        "insecure__use_host_env": bool, "insecure__disable_aslr": bool, "log_file": str,
        "log_level": _LOG_LEVELS,
    },
    Req("fs"): {Req("mounts"): [_MOUNT], "root": {"uri": str, "type": str}, "start_dir": str,
                "insecure__keys": {str: str}},
    "sgx": {
        "allowed_files": [str],
        "cpu_features": {"avx": Enum(*_TRI), "avx512": Enum(*_TRI), "amx": Enum(*_TRI),
                         "mpx": Enum(*_HARDENING), "pkru": Enum(*_HARDENING)},
        "debug": bool, "edmm_enable": bool, "enable_stats": bool, "enclave_size": str,
        "file_check_policy": Enum("strict", "allow_all_but_log"),
        "insecure__allow_memfaults_without_exinfo": bool, "insecure__rpc_thread_num": int,
        "isvprodid": int, "isvsvn": int, "max_threads": int, "preheat_enclave": bool,
        "profile": {"enable": Enum("none", "main", "all"),
                    "mode": Enum("aex", "ocall_inner", "ocall_outer"),
                    "with_stack": bool, "frequency": int},
        "remote_attestation": Enum("none", "dcap"),
        "seal_key": {"flags_mask": str, "xfrm_mask": str, "misc_mask": str},
        "trusted_files": [OneOf(str, {Req("uri"): str, "sha256": str})],
        "use_exinfo": bool, "vtune_profile": bool,
    },
    "sys": {
        "allowed_ioctls": [{Req("request_code"): int, "struct": str}],
        "brk": {"max_size": str}, "disallow_subprocesses": bool,
        "enable_extra_runtime_domain_names_conf": bool, "enable_sigterm_injection": bool,
        "experimental__enable_flock": bool, "insecure__allow_eventfd": bool,
        "ioctl_structs": {str: object}, "debug__mock_syscalls": [{Req("name"): str,
                                                                 "return": int}],
        "stack": {"size": str}, "fds": {"limit": int},
    },
}


def check_schema(manifest: dict[str, Any], name: str) -> None:
    """Check *manifest* against Gramine 1.9's manifest schema."""
    problem = _match(manifest, SCHEMA, "")
    if problem:
        _fail(name, f"manifest does not follow Gramine's schema: {problem}")


def _match(value: Any, spec: Any, where: str) -> str | None:
    """None if *value* fits *spec*, else a description of the first misfit."""
    label = where or "the manifest"
    if spec is object:
        return None
    if spec is bool or spec is str:
        return None if isinstance(value, spec) else f"{label} must be {_type_name(spec)}"
    if spec is int:
        return None if _is_int(value) else f"{label} must be an integer"
    if isinstance(spec, Enum):
        return None if value in spec.values else (
            f"{label} = {value!r}; allowed: " + ", ".join(f'"{v}"' for v in spec.values))
    if isinstance(spec, OneOf):
        for option in spec.specs:  # the first fit wins, judged without a label
            if _match(value, option, "") is None:
                return None
        return _match(value, spec.specs[-1], where)  # else the last option's misfit
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{label} must be an array"
        for index, item in enumerate(value):
            # Judged first without its label (a million trusted files would
            # format a million labels); a misfit is judged again to name it.
            if _match(item, spec[0], "") is not None:
                return _match(item, spec[0], f"{where}[{index}]")
        return None
    return _match_table(value, spec, where)


def _match_table(value: Any, spec: dict[Any, Any], where: str) -> str | None:
    if not isinstance(value, dict):
        return f"{where or 'the manifest'} must be a table"
    prefix = f"{where}." if where else ""
    keys, required = _table_spec(spec)
    for key in required:
        if key not in value:
            return f"required key {prefix}{key} is missing"
    for key, item in value.items():
        if key in keys:
            item_spec = keys[key]
        elif str in keys:  # a free-form table such as loader.env
            item_spec = keys[str]
        else:
            return f"unknown key {prefix}{key}"
        problem = _match(item, item_spec, f"{prefix}{key}")
        if problem:
            return problem
    return None


# id(spec) -> (spec, its keys, its required keys); the spec is held, so its id
# cannot be reused by another object while it is a key here.
_TABLE_SPECS: dict[int, tuple[dict[Any, Any], dict[Any, Any], tuple[str, ...]]] = {}


def _table_spec(spec: dict[Any, Any]) -> tuple[dict[Any, Any], tuple[str, ...]]:
    """(spec by plain key, required keys) of a table spec, worked out once per spec:
    a table spec such as a trusted file's is matched once per entry."""
    known = _TABLE_SPECS.get(id(spec))
    if known is None or known[0] is not spec:
        keys = {k.key if isinstance(k, Req) else k: v for k, v in spec.items()}
        required = tuple(k.key for k in spec if isinstance(k, Req))
        known = _TABLE_SPECS[id(spec)] = (spec, keys, required)
    return known[1], known[2]


def _type_name(spec: Any) -> str:
    return {bool: "true or false", str: "a string"}.get(spec, str(spec))
