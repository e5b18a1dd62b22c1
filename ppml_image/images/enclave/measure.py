"""The one way an image is measured: ``build-custom``, ``sign-image`` and ``verify`` use it.

:func:`measure_image` reads the enclave's layout from the image's content
(:mod:`.layout`: the command, WORKDIR and ``/etc/ppml-image/base.json``),
streams and hashes every file of the image (:mod:`.imagefs`), and measures
the enclave from the image's own manifest and ``libpal.so``:

* an *unsigned* image: ``NAME.manifest`` is finalised against the image
  (trusted files expanded and hashed) into the ``.manifest.sgx`` to sign;
* a *signed* image: the ``.sig`` is read (exactly 1808 bytes) and its RSA
  signature checked first, then the image's ``.manifest.sgx`` is measured
  and every trusted file it lists is re-hashed from the image.

Every file read out of the image has a size limit (:mod:`.imagefs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ppml_image._gc import cycle_collection_paused
from ppml_image._phases import MEASURING, READING, phase
from ppml_image.defaults import MAX_IMAGE_BYTES
from ppml_image.errors import ManifestError
from ppml_image.images.engine import imagefs
from ppml_image.images.engine.core import Engine, ImageInfo
from ppml_image.images.layout import BASE_INFO_PATH, BaseInfo, EnclaveLayout
from ppml_image.images.progress import Progress
from ppml_image.sgx import gramine
from ppml_image.sgx.manifest import document as mf
from ppml_image.sgx.measure.elf import ElfImage, parse_elf
from ppml_image.sgx.sign import measure_manifest
from ppml_image.sgx.signing.sigstruct import SIGSTRUCT_SIZE, Sigstruct


@dataclass
class ImageMeasurement:
    """An image's enclave, measured from the image's content."""

    info: ImageInfo
    layout: EnclaveLayout
    base_info: BaseInfo
    tree: imagefs.ImageTree
    manifest: dict[str, Any]  # the finalised manifest (what .manifest.sgx holds)
    manifest_sgx: bytes
    pal: ElfImage
    mr_enclave: str
    sigstruct: Sigstruct | None = None  # signed images: the image's .sig, signature checked
    changed_files: list[str] = field(default_factory=list)  # signed: differing trusted files
    trusted_files: int = 0

    @property
    def name(self) -> str:
        """How errors name the enclave's manifest."""
        path = self.layout.manifest_sgx if self.sigstruct else self.layout.manifest
        return self.tree.display(path)


def measure_image(engine: Engine, info: ImageInfo, layout: EnclaveLayout, *, signed: bool,
                  ref: str | None = None, progress: Progress | None = None,
                  max_bytes: int | None = MAX_IMAGE_BYTES) -> ImageMeasurement:
    """Measure the enclave *layout* names in the image *info* (see the module docstring).

    At most *max_bytes* of file content is read (None: no bound, for an image
    the user just built from their own files).
    """
    shown = ref or info.id
    # Files the measurement reads, kept as the export streams by (where they
    # usually are; a symlinked or moved one is read again through the archive).
    keep = {BASE_INFO_PATH: imagefs.BASE_JSON_LIMIT, gramine.libpal(): imagefs.LIBPAL_LIMIT,
            layout.manifest: imagefs.MANIFEST_LIMIT, layout.manifest_sgx: imagefs.MANIFEST_LIMIT,
            layout.sig: SIGSTRUCT_SIZE}
    with phase(READING), engine.open(info.id) as files:
        index = imagefs.index_image(files, progress, keep, max_bytes)
        tree = imagefs.ImageTree(index, files, shown)
        base_info = BaseInfo.parse(tree.read(BASE_INFO_PATH, limit=imagefs.BASE_JSON_LIMIT),
                                   shown)
        sigstruct = None
        if signed:
            sig_name = tree.display(layout.sig)
            sigstruct = Sigstruct.from_bytes(
                tree.read(layout.sig, limit=SIGSTRUCT_SIZE, exact=SIGSTRUCT_SIZE), sig_name)
            sigstruct.verify(sig_name)  # before any measuring: a forged .sig stops here
            name = tree.display(layout.manifest_sgx)
            manifest_sgx = tree.read(layout.manifest_sgx, limit=imagefs.MANIFEST_LIMIT)
            with cycle_collection_paused():  # a manifest's objects: no cycles
                manifest = _parse(manifest_sgx, name, base_info)
        else:
            name = tree.display(layout.manifest)
            with cycle_collection_paused():
                draft = _parse(tree.read(layout.manifest, limit=imagefs.MANIFEST_LIMIT),
                               name, base_info)
                manifest = mf.finalize(draft, tree, name)
                manifest_sgx = mf.dumps(manifest).encode("utf-8")
        pal = parse_elf(tree.read(base_info.libpal, limit=imagefs.LIBPAL_LIMIT),
                        tree.display(base_info.libpal))
    tree.files = None  # the container is gone: the index stays, reads are over
    result = ImageMeasurement(info, layout, base_info, tree, manifest, manifest_sgx, pal, "",
                              sigstruct)
    if signed:
        result.changed_files, result.trusted_files = changed_trusted_files(manifest, tree, name)
    else:
        result.trusted_files = len(manifest["sgx"]["trusted_files"])
    if progress is not None:
        progress.step(2, 2, "measuring the enclave")
    with phase(MEASURING):
        result.mr_enclave = measure_manifest(manifest_sgx, manifest, pal, name).hex()
    return result


def _parse(data: bytes, name: str, base_info: BaseInfo) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{name}: manifest is not UTF-8 text") from None
    try:
        return mf.read_manifest(text, name, pkglibdir=base_info.pkglibdir)  # schema too
    except RecursionError:
        raise ManifestError(f"{name}: manifest nests tables or arrays too deeply") from None


def changed_trusted_files(manifest: dict[str, Any], tree: imagefs.ImageTree,
                          name: str) -> tuple[list[str], int]:
    """Trusted files (and the loader entrypoint) whose image content differs from the manifest."""
    entries = list(manifest["sgx"]["trusted_files"])
    entrypoint = manifest["loader"]["entrypoint"]
    if isinstance(entrypoint, dict) and "sha256" in entrypoint:
        entries.append({"uri": entrypoint["uri"], "sha256": entrypoint["sha256"]})
    changed = []
    for entry in entries:
        path = mf.uri_to_path(entry["uri"], name)
        found = tree.entry(path)
        if found is None or found.sha256 is None:
            changed.append(f"{entry['uri']} is missing")
        elif found.sha256 != entry.get("sha256"):
            changed.append(f"{entry['uri']} changed (sha256 {found.sha256[:16]}..., "
                           f"manifest says {str(entry.get('sha256'))[:16]}...)")
    return changed, len(entries)
