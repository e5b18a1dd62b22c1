"""``build-custom`` and ``sign-image``: signed customer images.

The private key never reaches the engine. The image is built in stages:

1. *Unsigned*: FROM the base image, the application and the rendered
   manifest, ``WORKDIR /ppml`` and ``CMD ["gramine-sgx", NAME]``. No key
   anywhere.
2. On the host, :func:`.measure.measure_image` streams every file of the
   unsigned image out of the engine and hashes it (every layer, whatever
   the labels say: a base's ONBUILD triggers or an image derived from an
   unsigned one are measured as they are), writes the ``.manifest.sgx``,
   measures the enclave, and SIGSTRUCT is signed in this process.
3. *Final*: FROM the unsigned image, only ``NAME.manifest.sgx`` and
   ``NAME.sig`` are added beside the manifest, with the measurement as
   labels (outputs for people and registries; nothing reads them back).

Tags move only at the end, once everything succeeded: ``TAG-unsigned`` and
``TAG`` (``build-custom``), or ``TAG`` (``sign-image``).

``sign-image`` runs steps 2-3 on an existing unsigned image, so a production
key can sign, in a separate locked-down step, exactly what was built before:
the same content gives the same MRENCLAVE. With ``export_signing_data`` no
key is involved: step 2 writes the 256 bytes to sign (and ``DATA.json``), and
``sign-image --signature SIG --public-key PUB`` later recomputes them from the
image, checks the signature and runs step 3: the image is the one a direct
signature with that key and date gives.

``expect_mr_enclave`` stops before anything is signed, built or tagged when
the measured MRENCLAVE is not the registered one (exit 3). ``push`` pushes
the signed tag (and the unsigned one with ``push_unsigned``) after tagging,
see :mod:`.publish`: if a push fails, the tags go back to where they were.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image import __version__
from ppml_image._phases import BASE, BUILDING, CHECKING, SIGNING, WRITING, phase
from ppml_image.defaults import DEFAULT_BASE as DEFAULT_BASE
from ppml_image.defaults import DEFAULT_TAG as DEFAULT_TAG
from ppml_image.defaults import DEFAULT_TEMPLATE as DEFAULT_TEMPLATE
from ppml_image.defaults import MAX_IMAGE_BYTES, REGISTRY_TIMEOUT
from ppml_image.errors import (
    ImageContentError,
    PolicyError,
    RegistryError,
    UsageError,
    VerificationError,
)
from ppml_image.images.base.build import base_info, get_base_image
from ppml_image.images.enclave.measure import ImageMeasurement, measure_image
from ppml_image.images.enclave.outside import BaseReading, check_outside
from ppml_image.images.enclave.record import load_record
from ppml_image.images.engine.context import BuildContext
from ppml_image.images.engine.core import Engine, ImageInfo, connect
from ppml_image.images.engine.publish import push as push_tag
from ppml_image.images.engine.publish import tags_restored_on_failure
from ppml_image.images.engine.reference import (
    check_image,
    check_registry_timeout,
    check_tag,
    is_image_id,
    push_target,
    with_tag_suffix,
)
from ppml_image.images.layout import (
    BASE_ID_LABEL,
    LABEL_PREFIX,
    LAUNCHER,
    BaseInfo,
    EnclaveLayout,
    enclave_layout,
    establish_base,
)
from ppml_image.images.progress import Progress
from ppml_image.resources import data_dir
from ppml_image.sgx import offline
from ppml_image.sgx.manifest import document as mf
from ppml_image.sgx.manifest.policy import (
    Release,
    as_policy,
    enforce_release,
    release_violations,
)
from ppml_image.sgx.measure.tree import Tree
from ppml_image.sgx.sign import enclave_attributes, parse_date
from ppml_image.sgx.signing.external import ExternalSignature
from ppml_image.sgx.signing.identity import identity_fields
from ppml_image.sgx.signing.keys import load_signing_key
from ppml_image.sgx.signing.signers import Signer, sign_sigstruct
from ppml_image.sgx.signing.sigstruct import Sigstruct, SigstructDate

log = logging.getLogger("ppml_image")

ENCLAVE_DIR = "/ppml"
APP_DIR = f"{ENCLAVE_DIR}/app"


@dataclass
class CustomImage:
    """A signed image and its measurement (what ``--json``/``--output`` write).

    ``repo_digest`` is ``REGISTRY/NAME@sha256:...`` once the registry has
    acknowledged a push, and None otherwise: never a digest that was not pushed.
    """

    image: str
    image_id: str
    unsigned_image: str
    unsigned_image_id: str
    base_image_id: str
    enclave: str
    sigstruct: dict[str, Any]
    repo_digest: str | None = None
    unsigned_repo_digest: str | None = None

    @property
    def mr_enclave(self) -> str:
        return str(self.sigstruct["mr_enclave"])

    @property
    def mr_signer(self) -> str:
        return str(self.sigstruct["mr_signer"])

    def to_json(self) -> dict[str, Any]:
        """Everything a security team registers, and the SIGSTRUCT in full."""
        return {"image": self.image, "image_id": self.image_id,
                "repo_digest": self.repo_digest,
                "unsigned_image": self.unsigned_image,
                "unsigned_image_id": self.unsigned_image_id,
                "unsigned_repo_digest": self.unsigned_repo_digest,
                "base_image_id": self.base_image_id, "enclave": self.enclave,
                "mr_enclave": self.mr_enclave, "mr_signer": self.mr_signer,
                "isv_prod_id": self.sigstruct["isv_prod_id"],
                "isv_svn": self.sigstruct["isv_svn"],
                "debug_enclave": self.sigstruct["debug_enclave"],
                # What an attestation policy needs beyond the two measurements.
                **identity_fields(self.sigstruct),
                "date": self.sigstruct["date"],
                "tool": "ppml-image", "tool_version": __version__,
                "sigstruct": self.sigstruct}


class PushFailed(RegistryError):
    """A push failed after the image was built and signed; tags were put back.

    ``result`` is the measurement of what was built, with no digest: for
    ``--json`` reports of the failure, never for a record on disk.
    """

    def __init__(self, error: RegistryError, result: CustomImage) -> None:
        super().__init__(str(error), error.reason)
        self.result = result


@dataclass
class ExportedImage:
    """What ``--export-signing-data`` on an image wrote, and which image it measured."""

    image: str
    image_id: str
    exported: offline.ExportedSigningData

    @property
    def mr_enclave(self) -> str:
        return self.exported.mr_enclave

    def to_json(self) -> dict[str, Any]:
        return {"unsigned_image": self.image, "unsigned_image_id": self.image_id,
                "signing_data_path": str(self.exported.data_path),
                "signing_data_json_path": str(self.exported.json_path),
                **self.exported.record}


def expected_mr_enclave(value: str | None) -> str | None:
    """``--expect-mr-enclave``: 64 hex digits (either case), or None."""
    if value is None:
        return None
    text = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise UsageError(f"--expect-mr-enclave {value[:80]!r}: expected 64 hex digits")
    return text


def check_mr_enclave(actual: str, expected: str | None, ref: str) -> None:
    """Refuse (exit 3) a measurement that is not the registered one; nothing is tagged."""
    if expected is not None and actual != expected.lower():
        raise VerificationError(f"{ref}: MRENCLAVE is {actual}, expected {expected.lower()} "
                                "(--expect-mr-enclave); nothing signed or tagged")


def find_template(name_or_path: str | Path) -> Path:
    """A template path, or the name of a shipped one (``python-ml``, ``spark``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = data_dir("manifests") / f"{name_or_path}.manifest.j2"
    if shipped.is_file():
        return shipped
    names = sorted(p.name.removesuffix(".manifest.j2")
                   for p in data_dir("manifests").glob("*.manifest.j2"))
    raise UsageError(f"{name_or_path}: no such manifest template (shipped: {', '.join(names)})")


def enclave_name(template: Path) -> str:
    name = template.name
    for suffix in (".manifest.j2", ".manifest.template", ".j2", ".template", ".manifest"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not re.fullmatch(r"[A-Za-z0-9_+@][A-Za-z0-9._+@-]*", name):
        raise UsageError(f"{template}: the template's name gives no plain enclave name "
                         "(letters, digits and '._+@-')")
    return name


def render_for_base(template: Path, defines: dict[str, Any], info: BaseInfo,
                    where: str = "base image") -> str:
    """Render *template* with the base image's Gramine paths and Python."""
    values = {"app_dir": APP_DIR, "enclave_dir": ENCLAVE_DIR, "base": info.raw, **defines}
    text = mf.read_text(template, "template")
    return mf.render_template(text, values, pkglibdir=info.pkglibdir,
                              python=info.python(where), name=str(template))


def unsigned_tag(tag: str) -> str:
    """``NAME:TAG-unsigned`` for ``NAME:TAG`` (``latest`` if none); both checked."""
    return str(with_tag_suffix(check_tag(tag), "-unsigned"))


# --------------------------------------------------------------------------
# Stage 1: the unsigned image
# --------------------------------------------------------------------------
def build_unsigned(engine: Engine, *, base: str = DEFAULT_BASE, app: Path | None = None,
                   template: str | Path = DEFAULT_TEMPLATE,
                   defines: dict[str, Any] | None = None, tag: str = DEFAULT_TAG,
                   release: Release = False, quiet: bool = False) -> str:
    """Stage 1: build the unsigned image (untagged); returns its id."""
    return _build_unsigned(engine, base=base, app=app, template=template, defines=defines,
                           tag=tag, release=release, quiet=quiet)[0]


def _build_unsigned(engine: Engine, *, base: str, app: Path | None, template: str | Path,
                    defines: dict[str, Any] | None, tag: str, release: Release,
                    quiet: bool) -> tuple[str, str]:
    """Stage 1; returns the unsigned image's id and the id of the base it was built FROM."""
    template_path = find_template(template)
    if app is not None and not Path(app).is_dir():
        raise UsageError(f"{app}: application folder does not exist")
    base_image = get_base_image(engine, base)
    info = base_info(engine, base_image.id, where=base)
    name = enclave_name(template_path)
    text = render_for_base(template_path, defines or {}, info, base)
    rendered = f"{template_path} (rendered)"
    parsed = mf.read_manifest(text, rendered, pkglibdir=info.pkglibdir)  # schema too
    if release:  # fail before building; the finalised manifest is checked again
        _enforce_release(parsed, rendered, release)

    context = BuildContext()
    lines = [f"FROM {base_image.id}"]
    if app is not None:
        context.add_tree(Path(app), "app")
        lines.append(f"COPY app/ {APP_DIR}/")
    context.add_bytes(f"{name}.manifest", text.encode())
    lines += [f"COPY {name}.manifest {ENCLAVE_DIR}/{name}.manifest", f"WORKDIR {ENCLAVE_DIR}",
              f'CMD ["{LAUNCHER}", "{name}"]']
    context.add_bytes("Dockerfile", ("\n".join(lines) + "\n").encode())
    labels = {f"{LABEL_PREFIX}signed": "false", BASE_ID_LABEL: base_image.id,
              f"{LABEL_PREFIX}enclave": name,
              f"{LABEL_PREFIX}manifest": f"{ENCLAVE_DIR}/{name}.manifest"}
    progress = Progress(f"build-custom {tag} (unsigned)", quiet=quiet)
    # No network: our steps only copy, and a base's ONBUILD trigger reaches nothing.
    image_id = engine.build(context.finish(), what=f"build-custom {tag}", progress=progress,
                            labels=labels, network_mode="none")
    progress.done(f"built the unsigned image {image_id[7:19]}")
    return image_id, base_image.id


# --------------------------------------------------------------------------
# Stages 2-3: measure, sign, and build the final image
# --------------------------------------------------------------------------
@dataclass
class SignedImage:
    """A measured unsigned image and its signed SIGSTRUCT (nothing built yet)."""

    measurement: ImageMeasurement
    sigstruct: Sigstruct
    base: ImageInfo | None


def measure_and_sign(engine: Engine, unsigned: ImageInfo, ref: str,
                     key: Signer | rsa.RSAPrivateKey, *,
                     date: SigstructDate, release: Release, base: str | None,
                     progress: Progress | None = None,
                     max_bytes: int | None = MAX_IMAGE_BYTES) -> SignedImage:
    """Measure the unsigned image from its content and sign it (nothing is built yet)."""
    prepared = measure_for_signing(engine, unsigned, ref, date=date, release=release,
                                   base=base, progress=progress, max_bytes=max_bytes)
    sign_sigstruct(prepared.sigstruct, key)
    return prepared


def measure_for_signing(engine: Engine, unsigned: ImageInfo, ref: str, *, date: SigstructDate,
                        release: Release, base: str | None,
                        progress: Progress | None = None,
                        max_bytes: int | None = MAX_IMAGE_BYTES) -> SignedImage:
    """Measure the unsigned image; its SIGSTRUCT has every field but the signature.

    *base* is the pinned base (a reference or an image id): the image must
    derive from it and differ from it only in the enclave's own files (the
    closed world of :mod:`.outside`), else nothing is signed (exit 3).
    """
    if unsigned.onbuild:
        raise ImageContentError(
            f"{ref}: has ONBUILD triggers ({'; '.join(unsigned.onbuild)[:120]}), which would "
            "change the image after it is measured: refused")
    match = establish_base(engine, unsigned, explicit=base)
    if match.base is None:
        error = UsageError if base is None else VerificationError
        raise error(f"{ref}: {match.reason}; nothing signed")
    layout = enclave_layout(unsigned, ref, match.base)
    with BaseReading(engine, match.base) as base_reading:  # overlaps the image's reading
        measured = measure_image(engine, unsigned, layout, signed=False, ref=ref,
                                 progress=progress, max_bytes=max_bytes)
        if release:
            _enforce_release(measured.manifest, measured.name, release, measured.tree)
        else:
            _warn_about_debug(measured)
        with phase(BASE):
            outside = check_outside(unsigned, measured.tree, measured.manifest, layout,
                                    base_reading)
    if outside.problems:
        raise VerificationError(f"{ref}: outside the enclave, the image differs from the "
                                f"pinned base {match.base.id}: " + "; ".join(outside.problems)
                                + "; nothing signed")
    sgx = measured.manifest["sgx"]
    flags, misc, xfrm, xfrm_mask = enclave_attributes(sgx)
    sigstruct = Sigstruct(enclave_hash=bytes.fromhex(measured.mr_enclave), date=date,
                          attribute_flags=flags, attribute_xfrms=xfrm,
                          attribute_xfrm_mask=xfrm_mask, misc_select=misc,
                          isv_prod_id=sgx["isvprodid"], isv_svn=sgx["isvsvn"])
    return SignedImage(measured, sigstruct, match.base)


def _enforce_release(manifest: dict[str, Any], name: str, release: Release,
                     tree: Tree | None = None) -> None:
    try:
        enforce_release(manifest, name, tree, as_policy(release))
    except PolicyError as exc:
        raise PolicyError(f"{exc} (refused because of --release)") from None


def _warn_about_debug(measured: ImageMeasurement) -> None:
    """Without --release, a debug enclave is allowed, and said once, loudly."""
    if any(v.debug for v in release_violations(measured.manifest)):
        log.warning("%s: sgx.debug = true: this is a DEBUG enclave; the host can read its "
                    "memory. Never give it production data; use --release to forbid this.",
                    measured.name)


def _build_final(engine: Engine, signed: SignedImage, unsigned: ImageInfo, tag: str,
                 quiet: bool) -> str:
    layout: EnclaveLayout = signed.measurement.layout
    name = posixpath.basename(layout.stem)
    view = signed.sigstruct.view()
    context = BuildContext()
    context.add_bytes(f"{name}.manifest.sgx", signed.measurement.manifest_sgx)
    context.add_bytes(f"{name}.sig", signed.sigstruct.to_bytes())
    context.add_bytes("Dockerfile", (
        f"FROM {unsigned.id}\n"
        f"COPY {name}.manifest.sgx {name}.sig {layout.folder.rstrip('/')}/\n").encode())
    labels = {
        f"{LABEL_PREFIX}signed": "true",
        f"{LABEL_PREFIX}enclave": layout.name,
        f"{LABEL_PREFIX}unsigned-image-id": unsigned.id,
        BASE_ID_LABEL: signed.base.id if signed.base is not None else "",
        f"{LABEL_PREFIX}manifest-sgx": layout.manifest_sgx,
        f"{LABEL_PREFIX}sig": layout.sig,
        f"{LABEL_PREFIX}mr_enclave": signed.sigstruct.mr_enclave,
        f"{LABEL_PREFIX}mr_signer": signed.sigstruct.mr_signer,
        f"{LABEL_PREFIX}isv_prod_id": str(view["isv_prod_id"]),
        f"{LABEL_PREFIX}isv_svn": str(view["isv_svn"]),
        f"{LABEL_PREFIX}debug": str(view["debug_enclave"]).lower(),
    }
    progress = Progress(f"sign-image {tag}", quiet=quiet)
    with phase(BUILDING):
        image_id = engine.build(context.finish(), what=f"signing {tag}", progress=progress,
                                labels=labels, network_mode="none")
    with phase(CHECKING):
        final = engine.image(image_id)
    # The final image must be the measured one plus exactly the layer we added.
    if final.layers[: len(unsigned.layers)] != unsigned.layers or \
            len(final.layers) != len(unsigned.layers) + 1:
        raise ImageContentError(f"signing {tag}: the engine built an image that is not the "
                                "measured one plus the signature layer")
    progress.done(f"built {tag}")
    return image_id


@dataclass(frozen=True)
class Publish:
    """What to do once the signed image is built: check, tag, push."""

    expect_mr_enclave: str | None = None
    push: bool = False
    push_unsigned: bool = False
    registry_timeout: int = REGISTRY_TIMEOUT  # seconds the registry may stay silent

    def check(self, tag: str, unsigned: str | None) -> None:
        """Refuse a bad combination or push target before any long work."""
        check_registry_timeout(self.registry_timeout)
        if self.push_unsigned and not self.push:
            raise UsageError("--push-unsigned goes with --push")
        if self.push:
            push_target(tag)
            if self.push_unsigned and unsigned is not None:
                push_target(unsigned, "the unsigned image")


def sign_image(unsigned: str, key: Path | Signer, *, tag: str | None = None,
               date: str | dt.date | SigstructDate | None = None,
               passphrase: bytes | None = None, release: Release = False, quiet: bool = False,
               engine: Engine | None = None, publish: Publish | None = None,
               base: str | None = None, record: Path | None = None,
               max_image_bytes: int = MAX_IMAGE_BYTES) -> CustomImage:
    """Sign an unsigned image with *key* (a PEM file or an open Signer) and build ``tag``.

    The pinned base is *base* or the *record*'s ``base_image_id``; a record that
    names the measured image (``unsigned_image_id``, as ``DATA.json`` does) must
    name this one, and an external signature (the offline step) needs such a
    record: a reviewed signature is assembled onto the reviewed image only.
    """
    check_image(unsigned)
    if tag is None and is_image_id(unsigned):
        raise UsageError(f"{unsigned[:19]}...: an image id gives no name to tag the signed "
                         "image with; give --tag")
    final = tag or unsigned.removesuffix("-unsigned")
    check_tag(final, "--tag" if tag else f"the signed image's tag (from {unsigned}; give --tag)")
    publish = publish or Publish()
    publish.check(final, unsigned)
    pinned, measured_id = _pinned_for_signing(base, record, external=isinstance(
        key, ExternalSignature))
    signing_key = _signer(key, passphrase)
    when = parse_date(date)
    engine = engine or connect()
    info = engine.image(unsigned)
    if measured_id is not None and info.id != measured_id:
        raise VerificationError(f"{unsigned} is image {info.id}, but {record} records the "
                                f"measured image {measured_id}: refused, nothing signed")
    return _sign(engine, info, unsigned, signing_key, tag=final, date=when, release=release,
                 quiet=quiet, publish=publish, base=pinned,
                 push_unsigned_ref=unsigned if publish.push_unsigned else None,
                 max_bytes=max_image_bytes)


def _pinned_for_signing(base: str | None, record: Path | None, *, external: bool
                        ) -> tuple[str | None, str | None]:
    """The pinned base and the measured image id the options and the record give."""
    if base is not None:
        check_image(base, "--base")
    loaded = load_record(record) if record is not None else None
    if external and (loaded is None or loaded.unsigned_image_id is None):
        raise UsageError("--signature needs --record DATA.json (written with the signing "
                         "data): it names the image whose data was signed")
    if loaded is None:
        if base is None:
            raise UsageError("sign-image needs the pinned base: --base REF (a digest is best) "
                             "or --record R.json; a label is never trusted")
        return base, None
    if base is not None and loaded.base_image_id is not None and base != loaded.base_image_id:
        raise UsageError(f"--base {base} and {record}'s base_image_id "
                         f"{loaded.base_image_id} differ: give one")
    pinned = base or loaded.base_image_id
    if pinned is None:
        raise UsageError(f"{record} names no base_image_id: give --base REF")
    return pinned, loaded.unsigned_image_id


def export_signing_data(unsigned: str, data: Path, *,
                        date: str | dt.date | SigstructDate | None = None,
                        release: Release = False, expect_mr_enclave: str | None = None,
                        quiet: bool = False, engine: Engine | None = None,
                        base: str | None = None, record: Path | None = None,
                        max_image_bytes: int = MAX_IMAGE_BYTES) -> ExportedImage:
    """``sign-image --export-signing-data``: measure *unsigned*, write DATA and DATA.json.

    No key, nothing built or tagged. Assemble later with ``sign_image`` and an
    :class:`~ppml_image.sgx.signing.external.ExternalSignature` over the same image and date.
    """
    check_image(unsigned)
    pinned, measured_id = _pinned_for_signing(base, record, external=False)
    data = Path(data)
    offline.check_outputs([data, offline.json_path_for(data)])
    when = parse_date(date)
    engine = engine or connect()
    info = engine.image(unsigned)
    if measured_id is not None and info.id != measured_id:
        raise VerificationError(f"{unsigned} is image {info.id}, but {record} records the "
                                f"measured image {measured_id}: refused")
    return _export(engine, info, unsigned, data, date=when, release=release,
                   expect=expect_mr_enclave, quiet=quiet, base=pinned, max_bytes=max_image_bytes)


def _export(engine: Engine, info: ImageInfo, ref: str, data: Path, *, date: SigstructDate,
            release: Release, expect: str | None, quiet: bool, base: str | None,
            max_bytes: int | None) -> ExportedImage:
    measuring = Progress(f"measure {ref}", quiet=quiet)
    prepared = measure_for_signing(engine, info, ref, date=date, release=release,
                                   base=base, progress=measuring, max_bytes=max_bytes)
    measuring.done(f"mr_enclave {prepared.sigstruct.mr_enclave[:16]}...")
    check_mr_enclave(prepared.sigstruct.mr_enclave, expect, ref)
    files, record = offline.signing_data_files(
        prepared.sigstruct, data, source=f"image {ref} ({info.id})",
        manifest_sgx=prepared.measurement.manifest_sgx)
    # Which image was measured, and on which pinned base: the --signature step
    # assembles onto this very image only (sign-image --record DATA.json).
    assert prepared.base is not None
    record.update(unsigned_image_id=info.id, base_image_id=prepared.base.id)
    files[1] = (files[1][0], (json.dumps(record, indent=2) + "\n").encode())
    offline.write_together(files)
    return ExportedImage(ref, info.id, offline.ExportedSigningData(
        data, offline.json_path_for(data), record))


def _signer(key: Path | Signer, passphrase: bytes | None) -> Signer | rsa.RSAPrivateKey:
    # A Signer (a token, an external signature) was opened and checked by the caller.
    return key if isinstance(key, Signer) else load_signing_key(key, passphrase)


def _sign(engine: Engine, info: ImageInfo, ref: str, key: Signer | rsa.RSAPrivateKey, *,
          tag: str, date: SigstructDate, release: Release, quiet: bool, publish: Publish,
          base: str | None, unsigned_tag: str | None = None,
          push_unsigned_ref: str | None = None, max_bytes: int | None) -> CustomImage:
    measuring = Progress(f"measure {ref}", quiet=quiet)
    signed = measure_for_signing(engine, info, ref, date=date, release=release, base=base,
                                 progress=measuring, max_bytes=max_bytes)
    measuring.done(f"mr_enclave {signed.sigstruct.mr_enclave[:16]}...")
    # Before the key signs anything (a token, a signature to check): the registered value.
    check_mr_enclave(signed.sigstruct.mr_enclave, publish.expect_mr_enclave, ref)
    with phase(SIGNING):
        sign_sigstruct(signed.sigstruct, key)
    image_id = _build_final(engine, signed, info, tag, quiet)
    result = CustomImage(image=tag, image_id=image_id, unsigned_image=unsigned_tag or ref,
                         unsigned_image_id=info.id,
                         base_image_id=signed.base.id if signed.base is not None else "",
                         enclave=signed.measurement.layout.name,
                         sigstruct=signed.sigstruct.view())
    tags = [tag] if unsigned_tag is None else [unsigned_tag, tag]
    try:
        with phase(WRITING), tags_restored_on_failure(engine, tags):
            if unsigned_tag is not None:
                engine.tag(info.id, unsigned_tag)
            engine.tag(image_id, tag)
            if push_unsigned_ref is not None:
                result.unsigned_repo_digest = push_tag(
                    engine, push_unsigned_ref, quiet=quiet, timeout=publish.registry_timeout)
            if publish.push:
                result.repo_digest = push_tag(engine, tag, quiet=quiet,
                                              timeout=publish.registry_timeout)
    except RegistryError as exc:
        result.repo_digest = result.unsigned_repo_digest = None
        raise PushFailed(exc, result) from None
    return result


def build_custom(key: Path | Signer, *, base: str = DEFAULT_BASE, app: Path | None = None,
                 template: str | Path = DEFAULT_TEMPLATE, defines: dict[str, Any] | None = None,
                 tag: str = DEFAULT_TAG, date: str | dt.date | SigstructDate | None = None,
                 release: Release = False, passphrase: bytes | None = None,
                 quiet: bool = False, engine: Engine | None = None,
                 publish: Publish | None = None) -> CustomImage:
    """Build, measure and sign a customer image (see the module docstring)."""
    unsigned = unsigned_tag(tag)  # both tags are checked before anything is built
    check_image(base, "--base")
    publish = publish or Publish()
    publish.check(tag, unsigned)
    signing_key = _signer(key, passphrase)  # fail before building anything
    when = parse_date(date)
    engine = engine or connect()
    unsigned_id, base_id = _build_unsigned(engine, base=base, app=app, template=template,
                                           defines=defines, tag=tag, release=release,
                                           quiet=quiet)
    return _sign(engine, engine.image(unsigned_id), unsigned, signing_key, tag=tag, date=when,
                 release=release, quiet=quiet, publish=publish, base=base_id,
                 unsigned_tag=unsigned,
                 push_unsigned_ref=unsigned if publish.push_unsigned else None,
                 max_bytes=None)  # built here from the user's own files: no bound


def build_custom_export(data: Path, *, base: str = DEFAULT_BASE, app: Path | None = None,
                        template: str | Path = DEFAULT_TEMPLATE,
                        defines: dict[str, Any] | None = None, tag: str = DEFAULT_TAG,
                        date: str | dt.date | SigstructDate | None = None,
                        release: Release = False, expect_mr_enclave: str | None = None,
                        quiet: bool = False,
                        engine: Engine | None = None) -> ExportedImage:
    """``build-custom --export-signing-data``: the unsigned stage only, no key anywhere.

    Builds the unsigned image, writes DATA and DATA.json, and tags ``TAG-unsigned``
    (only once both are written); ``sign-image TAG-unsigned --signature ...`` follows.
    """
    unsigned = unsigned_tag(tag)  # the tag is checked before anything is built
    check_image(base, "--base")
    data = Path(data)
    offline.check_outputs([data, offline.json_path_for(data)])
    when = parse_date(date)
    engine = engine or connect()
    unsigned_id, base_id = _build_unsigned(engine, base=base, app=app, template=template,
                                           defines=defines, tag=tag, release=release,
                                           quiet=quiet)
    exported = _export(engine, engine.image(unsigned_id), unsigned, data, date=when,
                       release=release, expect=expect_mr_enclave, quiet=quiet, base=base_id,
                       max_bytes=None)
    engine.tag(unsigned_id, unsigned)
    return exported


def write_measurements(result: CustomImage, path: Path) -> None:
    from ppml_image._fs import write_atomic

    write_atomic(path, (json.dumps(result.to_json(), indent=2) + "\n").encode())
