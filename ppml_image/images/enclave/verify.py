"""``inspect`` and ``verify``: what a security team runs on a published image.

``verify`` trusts the image's content and content-addressed ids only, never
its labels or any host cache:

* which enclave runs comes from the image's command (ENTRYPOINT empty or
  the base's, CMD ``gramine-sgx NAME``, NAME in WORKDIR): an image that
  would run anything else fails, naming what it would run;
* the ``.sig`` is exactly 1808 bytes and its RSA signature is checked
  before anything is measured;
* every file of the image is streamed from the engine and hashed afresh;
  every trusted file is compared with the ``.manifest.sgx``, and MRENCLAVE
  is recomputed from the image's manifest and its own ``libpal.so`` (paths
  from its ``/etc/ppml-image/base.json``);
* the manifest must pass the release policy (``--allow-debug`` accepts a
  debug enclave only, ``--allow-insecure`` every violation);
* a closed world outside the enclave (:mod:`.outside`): the image may
  differ from the base the user pinned (``base``, or the record's
  ``base_image_id``; never a label) only in the enclave's own files and in
  CMD/WORKDIR/labels. Without a pinned base what runs outside is not
  checked, and that is a problem unless ``allow_unpinned_base`` is given;
* labels are compared with what the content says; a disagreeing label is a
  problem, a missing one is not.

Without ``--mr-enclave``/``--mr-signer`` only internal consistency is
checked: anyone can sign a consistent image with their own key.

By digest (``REGISTRY/NAME@sha256:...``): the image is pulled when the engine
does not have it (``pull=True`` pulls any reference first). The engine checks
the pulled manifest against that digest and every layer against its own, and
the report names the digest only if the engine records it for the very image
that was then verified (its RepoDigests): content-addressed all the way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppml_image.defaults import MAX_IMAGE_BYTES, REGISTRY_TIMEOUT
from ppml_image.errors import (
    ElfError,
    ImageContentError,
    ManifestError,
    PolicyError,
    RegistryError,
    SigstructError,
    UsageError,
    VerificationError,
)
from ppml_image.images.enclave.measure import ImageMeasurement, measure_image
from ppml_image.images.enclave.outside import BaseReading, check_outside
from ppml_image.images.enclave.platform import check_platform, platform_named
from ppml_image.images.enclave.record import pinned_values
from ppml_image.images.engine.core import Engine, ImageInfo, connect
from ppml_image.images.engine.reference import (
    Reference,
    check_image,
    check_registry_timeout,
    digest_reference,
    parse_reference,
)
from ppml_image.images.layout import (
    LABEL_PREFIX,
    EnclaveLayout,
    enclave_layout,
    establish_base,
)
from ppml_image.images.progress import Progress
from ppml_image.sgx.manifest.policy import load_policy, release_violations
from ppml_image.sgx.sign import enclave_attributes
from ppml_image.sgx.signing.identity import identity_fields
from ppml_image.sgx.signing.sigstruct import SIGSTRUCT_SIZE, Sigstruct

# What a hostile image can make the measuring code raise: all mean "verification failed".
CONTENT_ERRORS = (ManifestError, ElfError, SigstructError, PolicyError, ImageContentError,
                  VerificationError)


@dataclass
class Inspection:
    image: str
    image_id: str
    sig_path: str
    sigstruct: Sigstruct
    labels: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        view = self.sigstruct.view()
        # Whether the host can launch it as debug goes first, before any field.
        first = {"debug_launchable": view.pop("debug_launchable"),
                 "mask_problems": view.pop("mask_problems")}
        return {**first, "image": self.image, "image_id": self.image_id,
                "sig": self.sig_path, **view, **identity_fields(view)}


def inspect_image(ref: str, *, check_signature: bool = True,
                  engine: Engine | None = None) -> Inspection:
    """Read the ``.sig`` of the enclave *ref*'s command starts, and parse it (no key needed)."""
    check_image(ref)
    engine = engine or connect()
    info = engine.image(ref)
    layout = enclave_layout(info, ref)
    with engine.open(info.id) as files:
        data = files.read_file(layout.sig, limit=SIGSTRUCT_SIZE, what=f"{ref}:{layout.sig}")
    sig = Sigstruct.from_bytes(data, f"{ref}:{layout.sig}")
    if check_signature:
        sig.verify(f"{ref}:{layout.sig}")
    return Inspection(ref, info.id, layout.sig, sig, dict(info.labels))


_FIRST = ("debug_launchable", "mask_problems")


@dataclass
class Verification:
    """The outcome of ``verify``: every check made and every difference found."""

    image: str
    image_id: str = ""
    enclave: str = ""
    base_image_id: str = ""
    sigstruct: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    trusted_files: int = 0
    expected_values_checked: bool = False
    digest: str = ""  # NAME@sha256:... verified, when the reference or the pull names one
    repo_digests: list[str] = field(default_factory=list)
    pulled: bool = False
    platform: str = ""  # the verified image's OS/ARCH (its config says)
    digest_kind: str = ""  # by digest: "manifest", "index" (names other platforms too), "unknown"
    index_platforms: list[str] = field(default_factory=list)  # every platform an index names
    outside_checked: bool = False  # the closed world was checked against a pinned base
    # What was measured (for run: the argv of the measured .manifest.sgx); not reported.
    measured: ImageMeasurement | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def consistency_only(self) -> bool:
        """No expected MRENCLAVE/MRSIGNER was given: only internal consistency was checked."""
        return not self.expected_values_checked

    def to_json(self) -> dict[str, Any]:
        # Whether the host can launch it as debug first, when the .sig was read.
        first: dict[str, Any] = {key: self.sigstruct[key] for key in _FIRST
                                 if key in self.sigstruct}
        return {**first, "image": self.image, "image_id": self.image_id, "ok": self.ok,
                "digest": self.digest or None, "repo_digests": self.repo_digests,
                "pulled": self.pulled, "problems": self.problems, "checks": self.checks,
                "consistency_only": self.consistency_only, "enclave": self.enclave,
                "base_image_id": self.base_image_id, "trusted_files": self.trusted_files,
                "platform": self.platform, "digest_kind": self.digest_kind or None,
                "index_platforms": self.index_platforms,
                "outside_checked": self.outside_checked, **self.sigstruct}

    def error(self) -> VerificationError:
        return VerificationError(f"verify {self.image}: {len(self.problems)} problem(s): "
                                 + "; ".join(self.problems))


def verify_image(ref: str, *, mr_enclave: str | None = None, mr_signer: str | None = None,
                 allow_debug: bool = False, allow_insecure: bool = False,
                 base: str | None = None, engine: Engine | None = None,
                 quiet: bool = True, pull: bool = False, record: Path | None = None,
                 allow_unpinned_base: bool = False,
                 max_image_bytes: int = MAX_IMAGE_BYTES,
                 registry_timeout: int = REGISTRY_TIMEOUT) -> Verification:
    """Verify *ref* from its own content; the result lists every check and problem.

    A reference by digest is pulled when the engine does not have it; *pull*
    pulls any reference first; *registry_timeout* is how many seconds the
    registry may stay silent meanwhile. Raises only for what stops verification
    itself (no engine, no image, a registry that cannot be read); everything the
    image is or holds is reported in :class:`Verification`. At most
    *max_image_bytes* of the image's files are read: the image does not set
    the verifier's cost.
    """
    check_image(ref)  # a malformed reference is a usage error, before any work
    check_registry_timeout(registry_timeout)
    loaded, base, mr_enclave, mr_signer = pinned_values(record, base, mr_enclave, mr_signer)
    record_base = loaded.base_image_id if loaded is not None else None
    if base is not None:
        check_image(base, "--base")
    by_digest = digest_reference(ref)
    engine = engine or connect()
    pulled = False
    if pull or (by_digest is not None and engine.find_image(ref) is None):
        progress = Progress(f"pull {ref}", quiet=quiet)
        try:
            engine.pull(ref, progress=progress, timeout=registry_timeout)
        except RegistryError as exc:
            if exc.reason not in ("content", "platform"):
                raise
            # Bytes that are not what the digest names (tampering), or no linux/amd64 image.
            return Verification(image=ref, problems=[platform_named(engine, ref, exc,
                                                                    registry_timeout)])
        progress.done("pulled")
        pulled = True
    info = engine.image(ref)
    result = Verification(image=ref, image_id=info.id, pulled=pulled,
                          repo_digests=list(info.repo_digests))
    _check_digest(result, info, ref, by_digest)
    _check_platform(result, engine, info, ref, by_digest, registry_timeout)
    match = establish_base(engine, info, explicit=base if base is not None else record_base)
    result.base_image_id = match.base.id if match.base else ""
    if match.base is not None and record_base is not None and match.base.id != record_base:
        result.problems.append(f"--base {base} is image {match.base.id}, but the record "
                               f"{record} names base {record_base}")
    try:
        layout = enclave_layout(info, ref, match.base)
    except ImageContentError as exc:
        result.problems.append(str(exc))
        return result
    result.enclave = layout.name
    progress = Progress(f"verify {ref}", quiet=quiet)
    with contextlib.ExitStack() as stack:
        # The pinned base is read alongside the image (see outside.BaseReading).
        reading = (stack.enter_context(BaseReading(engine, match.base))
                   if match.base is not None else None)
        try:
            measured = measure_image(engine, info, layout, signed=True, ref=ref,
                                     progress=progress, max_bytes=max_image_bytes)
        except CONTENT_ERRORS as exc:
            result.problems.append(str(exc))
            return result
        assert measured.sigstruct is not None
        result.measured = measured
        result.sigstruct = measured.sigstruct.view()
        result.checks.append(f"{layout.sig}: SIGSTRUCT signature and Q1/Q2 (signer "
                             f"{measured.sigstruct.mr_signer})")
        _check_content(result, measured)
        _check_masks(result, measured.sigstruct, allow_debug=allow_debug)
        _check_policy(result, measured, allow_debug=allow_debug, allow_insecure=allow_insecure)
        _check_labels(result, info.labels, measured, layout)
        _check_expectations(result, measured.sigstruct, mr_enclave, mr_signer)
        if reading is None:  # no pinned base
            _unpinned(result, match.reason, pinned=base is not None or record_base is not None,
                      allowed=allow_unpinned_base)
        else:
            base_reading = reading
            _check(result, lambda: _outside(result, measured, base_reading))
    progress.done("ok" if result.ok else f"{len(result.problems)} problem(s)")
    return result


def _check_digest(result: Verification, info: ImageInfo, ref: str,
                  by_digest: Reference | None) -> None:
    """Name the digest verified: the reference's, or the one a tag of a pulled image has."""
    if by_digest is not None:
        wanted = by_digest.with_digest(by_digest.digest or "")
        if any(_same_repo_digest(found, wanted) for found in info.repo_digests):
            result.digest = wanted
            result.checks.append(f"{wanted}: the engine records this digest for image "
                                 f"{info.id} (content-addressed)")
        else:
            result.problems.append(f"the engine's image {info.id} for {ref} does not record "
                                   f"digest {by_digest.digest}")
        return
    with contextlib.suppress(UsageError):
        name = parse_reference(ref).name
        mine = [d for d in info.repo_digests if _same_repo_digest(d.partition("@")[0], name)]
        if len(mine) == 1:
            result.digest = mine[0]


def _check_platform(result: Verification, engine: Engine, info: ImageInfo, ref: str,
                    by_digest: Reference | None, registry_timeout: int) -> None:
    report = check_platform(engine, info, ref, by_digest.digest if by_digest else None,
                            timeout=registry_timeout)
    result.platform, result.digest_kind = report.platform, report.digest_kind
    result.index_platforms = report.index_platforms
    result.checks += report.checks
    result.problems += report.problems


def _same_repo_digest(found: str, wanted: str) -> bool:
    """Equal up to Docker Hub's short names (``docker.io/library/x`` is shown as ``x``)."""
    return _canonical(found) == _canonical(wanted)


def _canonical(text: str) -> str:
    try:
        ref = parse_reference(text)
    except UsageError:
        return text
    # Docker Hub's names are normalised by the parser (domain "", library/ added).
    return f"{ref.domain or 'docker.io'}/{ref.path}" + (f"@{ref.digest}" if ref.digest else "")


def _check(result: Verification, func: Callable[[], None]) -> None:
    try:
        func()
    except CONTENT_ERRORS as exc:
        result.problems.append(str(exc))


def _unpinned(result: Verification, reason: str, *, pinned: bool, allowed: bool) -> None:
    """No base to compare with: said, and a problem unless the user accepts it."""
    if pinned or not allowed:
        hint = "" if pinned else " (or --allow-unpinned-base to check the enclave only)"
        result.problems.append(f"what runs outside the enclave was not checked: {reason}{hint}")
    else:
        result.checks.append("NOT CHECKED: what runs outside the enclave (no pinned base; "
                             "--allow-unpinned-base): the launcher, bash and every library "
                             "around the enclave may be anything")


def _outside(result: Verification, measured: ImageMeasurement, reading: BaseReading) -> None:
    report = check_outside(measured.info, measured.tree, measured.manifest, measured.layout,
                           reading)
    if report.problems:
        result.problems += [f"outside the enclave: {p}" for p in report.problems]
    else:
        result.outside_checked = True
        result.checks.append(report.summary)


def _check_content(result: Verification, measured: ImageMeasurement) -> None:
    sig = measured.sigstruct
    assert sig is not None
    result.trusted_files = measured.trusted_files
    changed = measured.changed_files
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more"
                                          if len(changed) > 5 else "")
        result.problems.append(f"{len(changed)} trusted file(s) differ from .manifest.sgx: "
                               f"{shown}")
    else:
        result.checks.append(f"{measured.trusted_files} trusted files re-hashed")
    if measured.mr_enclave != sig.mr_enclave:
        result.problems.append(f"MRENCLAVE recomputed from the image is {measured.mr_enclave}, "
                               f"the .sig says {sig.mr_enclave}")
    else:
        result.checks.append("MRENCLAVE recomputed from the image's manifest and libpal.so")
    sgx = measured.manifest["sgx"]
    flags, misc, xfrm, xfrm_mask = enclave_attributes(sgx)
    expected = {"attribute_flags": flags, "misc_select": misc, "attribute_xfrms": xfrm,
                "attribute_xfrm_mask": xfrm_mask, "isv_prod_id": sgx["isvprodid"],
                "isv_svn": sgx["isvsvn"]}
    for key, value in expected.items():
        if getattr(sig, key) != value:
            result.problems.append(f"{key} in the .sig is {getattr(sig, key)!r}, the manifest "
                                   f"gives {value!r}")


def _check_masks(result: Verification, sig: Sigstruct, *, allow_debug: bool) -> None:
    """The masks are part of "debug": EINIT compares attributes only under them.

    A mask that leaves DEBUG out makes the enclave debug-launchable, which
    only ``--allow-debug`` accepts; any other mask Gramine 1.9 would not
    write is always a problem (the host would choose those bits).
    """
    problems = sig.mask_problems()
    for problem in problems:
        if problem.debug and allow_debug:
            result.checks.append(f"{problem} (accepted: --allow-debug)")
        elif problem.debug:
            result.problems.append(f"{problem}; pass --allow-debug to accept a debug-launchable "
                                   "enclave")
        else:
            result.problems.append(str(problem))
    if not problems:
        result.checks.append("SIGSTRUCT masks are Gramine 1.9's (nothing left to the host)")


def _check_policy(result: Verification, measured: ImageMeasurement, *, allow_debug: bool,
                  allow_insecure: bool) -> None:
    if allow_insecure:
        result.checks.append("release policy not applied (--allow-insecure)")
        return
    # The signer's allowances are not in the image: the shipped name-service
    # files (what the shipped templates list) are accepted, nothing else.
    violations = release_violations(measured.manifest, measured.tree,
                                    load_policy("name-service"))
    refused = [v for v in violations if not (allow_debug and v.debug)]
    for violation in refused:
        if violation.debug:
            result.problems.append("this is a DEBUG enclave (its memory is readable by the "
                                   "host); pass --allow-debug to accept it")
        else:
            result.problems.append(f"release policy: {violation} (--allow-insecure accepts it)")
    if not refused:
        result.checks.append("release policy" + (" (debug enclave accepted)"
                                                 if violations else ""))


def _check_labels(result: Verification, labels: dict[str, str], measured: ImageMeasurement,
                  layout: EnclaveLayout) -> None:
    """Labels are outputs: each one present must say what the content says."""
    sig = measured.sigstruct
    assert sig is not None
    view = sig.view()
    truth = {
        "enclave": layout.name, "manifest-sgx": layout.manifest_sgx, "sig": layout.sig,
        "mr_enclave": sig.mr_enclave, "mr_signer": sig.mr_signer,
        "isv_prod_id": str(view["isv_prod_id"]), "isv_svn": str(view["isv_svn"]),
        "debug": str(view["debug_enclave"]).lower(),
        "gramine.pkglibdir": measured.base_info.pkglibdir,
        "gramine.libpal": measured.base_info.libpal,
        "gramine.libsysdb": measured.base_info.libsysdb,
        "gramine.runtimedir": measured.base_info.runtimedir,
    }
    if result.base_image_id:
        truth["base-image-id"] = result.base_image_id
    # An empty label says nothing (sign-image empties a base label it could not confirm).
    wrong = [f"label {LABEL_PREFIX}{key}={labels[LABEL_PREFIX + key]!r} but the image says "
             f"{value!r}" for key, value in truth.items()
             if labels.get(LABEL_PREFIX + key) and labels[LABEL_PREFIX + key] != value]
    if labels.get(f"{LABEL_PREFIX}signed", "true") != "true":
        wrong.append(f"label {LABEL_PREFIX}signed={labels[LABEL_PREFIX + 'signed']!r} but the "
                     "image holds a signed enclave")
    result.problems += wrong
    if not wrong:
        result.checks.append("labels agree with the content")


def _check_expectations(result: Verification, sig: Sigstruct, mr_enclave: str | None,
                        mr_signer: str | None) -> None:
    for key, wanted, actual in (("mr_enclave", mr_enclave, sig.mr_enclave),
                                ("mr_signer", mr_signer, sig.mr_signer)):
        if wanted is not None:
            result.expected_values_checked = True
            if wanted.lower() != actual:
                result.problems.append(f"{key} is {actual}, expected {wanted.lower()}")
            else:
                result.checks.append(f"{key} matches the expected value")
