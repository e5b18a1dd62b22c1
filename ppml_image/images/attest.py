"""``inspect`` and ``verify``: what a security team runs on a published image.

``verify`` trusts nothing the pipeline recorded: it re-reads every file of
the image through the Docker API (no host cache), re-hashes every trusted
file against the image's ``.manifest.sgx``, re-measures the enclave from the
manifest and the image's own ``libpal.so``, checks the SIGSTRUCT signature,
and compares the result with the ``.sig``, the labels and the values the
caller expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ppml_image.errors import EngineError, ManifestError, PpmlError, VerificationError
from ppml_image.images import engine, imagefs
from ppml_image.images.base import LABEL_PREFIX
from ppml_image.images.custom import ENCLAVE_DIR
from ppml_image.sgx import gramine
from ppml_image.sgx import manifest as mf
from ppml_image.sgx.elf import parse_elf
from ppml_image.sgx.sign import enclave_attributes, measure_manifest
from ppml_image.sgx.sigstruct import Sigstruct


@dataclass
class Inspection:
    image: str
    image_id: str
    sig_path: str
    sigstruct: Sigstruct
    labels: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "image_id": self.image_id, "sig": self.sig_path,
                **self.sigstruct.view()}


def _sig_path(labels: dict[str, str], ref: str) -> str:
    path = labels.get(f"{LABEL_PREFIX}sig")
    if path:
        return path
    enclave = labels.get(f"{LABEL_PREFIX}enclave")
    if enclave:
        return f"{ENCLAVE_DIR}/{enclave}.sig"
    raise EngineError(f"{ref}: no {LABEL_PREFIX}sig label: not a signed ppml-image image")


def inspect_image(ref: str, *, check_signature: bool = True) -> Inspection:
    """Read the ``.sig`` out of *ref* and parse it (no key needed)."""
    client = engine.connect()
    image = engine.get_image(client, ref)
    labels = dict(image.labels or {})
    path = _sig_path(labels, ref)
    data = engine.read_file_from_image(client, image.id, path)
    sig = Sigstruct.from_bytes(data, f"{ref}:{path}")
    if check_signature:
        sig.verify(f"{ref}:{path}")
    return Inspection(ref, str(image.id), path, sig, labels)


@dataclass
class Verification:
    """The outcome of ``verify``: every check made and every difference found."""

    image: str
    sigstruct: dict[str, Any]
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    trusted_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "ok": self.ok, "problems": self.problems,
                "checks": self.checks, "trusted_files": self.trusted_files,
                **self.sigstruct}


def verify_image(ref: str, *, mr_enclave: str | None = None, mr_signer: str | None = None,
                 allow_debug: bool = False) -> Verification:
    """Verify *ref* from its own files; raise VerificationError listing every problem."""
    client = engine.connect()
    image = engine.get_image(client, ref)
    labels = dict(image.labels or {})
    sig_path = _sig_path(labels, ref)
    sgx_path = labels.get(f"{LABEL_PREFIX}manifest-sgx") or sig_path[:-4] + ".manifest.sgx"
    index = imagefs.index_image(client, image.id)  # fresh: no pipeline cache is trusted
    tree = imagefs.ImageTree(index, client, str(image.id))
    try:
        sig = Sigstruct.from_bytes(tree.read_bytes(sig_path), f"{ref}:{sig_path}")
    except PpmlError as exc:
        raise VerificationError(str(exc)) from None
    result = Verification(image=ref, sigstruct=sig.view())
    _check(result, "SIGSTRUCT signature and Q1/Q2", lambda: sig.verify(f"{ref}:{sig_path}"))
    name = f"{ref}:{sgx_path}"
    try:
        manifest_sgx = tree.read_bytes(sgx_path)
    except ManifestError as exc:
        raise VerificationError(f"{name}: cannot read the signed manifest: {exc}") from None
    try:
        manifest = mf.parse_manifest(manifest_sgx.decode("utf-8"), name)
    except (ManifestError, UnicodeDecodeError) as exc:
        raise VerificationError(f"{name}: unreadable manifest: {exc}") from None
    _check_trusted_files(result, manifest, tree, name)
    _check_measurement(result, sig, manifest, manifest_sgx, tree, labels, name)
    _check_expectations(result, sig, labels, mr_enclave, mr_signer, allow_debug)
    if result.problems:
        raise VerificationError(f"verify {ref}: {len(result.problems)} problem(s): "
                                + "; ".join(result.problems))
    return result


def _check(result: Verification, what: str, func: Any) -> None:
    try:
        func()
        result.checks.append(what)
    except PpmlError as exc:
        result.problems.append(str(exc))


def _check_trusted_files(result: Verification, manifest: dict[str, Any],
                         tree: imagefs.ImageTree, name: str) -> None:
    entries = manifest["sgx"]["trusted_files"]
    result.trusted_files = len(entries)
    entrypoint = manifest["loader"]["entrypoint"]
    if isinstance(entrypoint, dict) and "sha256" in entrypoint:
        entries = [*entries, {"uri": entrypoint["uri"], "sha256": entrypoint["sha256"],
                              "what": "loader.entrypoint"}]
    changed = []
    for entry in entries:
        path = mf.uri_to_path(entry["uri"], name)
        try:
            actual = tree.hash_files([tree.resolve(path)])[0]
        except ManifestError:
            changed.append(f"{entry['uri']} is missing")
            continue
        if actual != entry.get("sha256"):
            changed.append(f"{entry['uri']} changed (sha256 {actual[:16]}..., "
                           f"manifest says {str(entry.get('sha256'))[:16]}...)")
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5
                                          else "")
        result.problems.append(f"{len(changed)} trusted file(s) differ from .manifest.sgx: "
                               f"{shown}")
    else:
        result.checks.append(f"{len(entries)} trusted files re-hashed")


def _check_measurement(result: Verification, sig: Sigstruct, manifest: dict[str, Any],
                       manifest_sgx: bytes, tree: imagefs.ImageTree, labels: dict[str, str],
                       name: str) -> None:
    libpal = labels.get(f"{LABEL_PREFIX}gramine.libpal", gramine.libpal())
    real = tree.resolve(libpal)
    pal = parse_elf(tree.read_bytes(real), f"{result.image}:{libpal}")
    mrenclave = measure_manifest(manifest_sgx, manifest, pal, name).hex()
    if mrenclave != sig.mr_enclave:
        result.problems.append(f"MRENCLAVE recomputed from the image is {mrenclave}, "
                               f"the .sig says {sig.mr_enclave}")
    else:
        result.checks.append("MRENCLAVE recomputed from the image's manifest and libpal.so")
    flags, misc, xfrm, xfrm_mask = enclave_attributes(manifest["sgx"])
    expected = {"attribute_flags": flags, "misc_select": misc, "attribute_xfrms": xfrm,
                "attribute_xfrm_mask": xfrm_mask, "isv_prod_id": manifest["sgx"]["isvprodid"],
                "isv_svn": manifest["sgx"]["isvsvn"]}
    for key, value in expected.items():
        if getattr(sig, key) != value:
            result.problems.append(f"{key} in the .sig is {getattr(sig, key)!r}, the manifest "
                                   f"gives {value!r}")


def _check_expectations(result: Verification, sig: Sigstruct, labels: dict[str, str],
                        mr_enclave: str | None, mr_signer: str | None,
                        allow_debug: bool) -> None:
    for key, actual in (("mr_enclave", sig.mr_enclave), ("mr_signer", sig.mr_signer)):
        label = labels.get(f"{LABEL_PREFIX}{key}")
        if label is not None and label != actual:
            result.problems.append(f"label {LABEL_PREFIX}{key}={label} but the .sig has {actual}")
    for key, wanted, actual in (("mr_enclave", mr_enclave, sig.mr_enclave),
                                ("mr_signer", mr_signer, sig.mr_signer)):
        if wanted is not None:
            if wanted.lower() != actual:
                result.problems.append(f"{key} is {actual}, expected {wanted.lower()}")
            else:
                result.checks.append(f"{key} matches the expected value")
    if sig.debug and not allow_debug:
        result.problems.append("this is a DEBUG enclave (its memory is readable by the host); "
                               "pass --allow-debug to accept it")
