"""What an image runs and where its enclave lives, read from its content only.

* The enclave that runs is the one the image's command starts: ENTRYPOINT
  empty (or the base image's) and CMD ``gramine-sgx NAME``; ``NAME`` is
  resolved in WORKDIR, as ``gramine-sgx`` does, so the enclave's files are
  ``WORKDIR/NAME.manifest``, ``.manifest.sgx`` and ``.sig``.
* Gramine's paths (pkglibdir, ``libpal.so``) come from the image's own
  ``/etc/ppml-image/base.json``, validated.
* The base image is the one the user pinned (``--base``, or the
  measurement record), never one a label names; an image derives from it
  when its RootFS layers begin with all of the base's layers (diff ids are
  content hashes).

Labels are outputs, for people and registries; nothing here reads them for
a decision.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ppml_image import _json
from ppml_image.errors import ImageContentError
from ppml_image.images.engine.core import Engine, ImageInfo

if TYPE_CHECKING:  # the helpers import jinja2, which verify never needs
    from ppml_image.sgx.manifest.python_helpers import PythonInfo

LABEL_PREFIX = "ppml-image."
BASE_INFO_PATH = "/etc/ppml-image/base.json"
BASE_ID_LABEL = f"{LABEL_PREFIX}base-image-id"
LAUNCHER = "gramine-sgx"
_PLAIN_PATH = re.compile(r"/?[A-Za-z0-9_+@][A-Za-z0-9._+@-]*(/[A-Za-z0-9_+@][A-Za-z0-9._+@-]*)*\Z")


def shown_command(info: ImageInfo) -> str:
    """What the image runs, as a shell would spell it."""
    words = [*(info.entrypoint or ()), *(info.cmd or ())]
    return shlex.join(words) if words else "(nothing: no ENTRYPOINT and no CMD)"


@dataclass(frozen=True)
class EnclaveLayout:
    """The enclave an image's command starts, and where its files are."""

    name: str  # as the command gives it (gramine-sgx NAME)
    launcher: str  # as the command gives it: "gramine-sgx" or an absolute path
    stem: str  # WORKDIR/NAME, normalised: the files are STEM.manifest, .manifest.sgx, .sig
    arguments: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.stem)

    @property
    def enclave(self) -> str:
        return posixpath.basename(self.stem)

    @property
    def manifest(self) -> str:
        return f"{self.stem}.manifest"

    @property
    def manifest_sgx(self) -> str:
        return f"{self.stem}.manifest.sgx"

    @property
    def sig(self) -> str:
        return f"{self.stem}.sig"


def enclave_layout(info: ImageInfo, ref: str, base: ImageInfo | None = None) -> EnclaveLayout:
    """The enclave *info*'s command starts; an image that starts anything else is refused."""
    instead = f"it would run `{shown_command(info)}` instead"
    base_entrypoint = base.entrypoint if base is not None else None
    if info.entrypoint and info.entrypoint != base_entrypoint:
        raise ImageContentError(
            f"{ref}: ENTRYPOINT {list(info.entrypoint)} runs before any enclave (it must be "
            f"empty or the base image's): {instead}")
    words = [*(info.entrypoint or ()), *(info.cmd or ())]
    if len(words) < 2 or not _is_launcher(words[0]):
        raise ImageContentError(f"{ref}: the image does not start an enclave with "
                                f"`{LAUNCHER} NAME`: {instead}")
    name = words[1]
    stem = "/" + posixpath.normpath(posixpath.join(info.workdir or "/", name)).lstrip("/")
    # Plain names only: sign-image writes them into the final image's Dockerfile.
    if not _PLAIN_PATH.match(name) or not _PLAIN_PATH.match(stem):
        raise ImageContentError(f"{ref}: `{LAUNCHER} {name!r}` in WORKDIR {info.workdir!r} does "
                                "not name an enclave by a plain path (letters, digits, "
                                f"'._+@-' and '/'): {instead}")
    return EnclaveLayout(name=name, launcher=words[0], stem=stem, arguments=tuple(words[2:]))


def _is_launcher(word: str) -> bool:
    return word == LAUNCHER or (word.startswith("/") and posixpath.basename(word) == LAUNCHER)


# --------------------------------------------------------------------------
# /etc/ppml-image/base.json
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseInfo:
    """The validated ``/etc/ppml-image/base.json`` of an image."""

    raw: dict[str, Any]
    pkglibdir: str
    libpal: str
    libsysdb: str
    runtimedir: str

    @classmethod
    def parse(cls, data: bytes, where: str) -> BaseInfo:
        """Parse and check the JSON that ``build-base`` wrote; one line if it is wrong."""
        name = f"{where}:{BASE_INFO_PATH}"
        raw = _json.load_document(data, name, ImageContentError)
        if not isinstance(raw, dict) or not isinstance(raw.get("gramine"), dict):
            raise ImageContentError(f"{name}: no \"gramine\" object: not written by "
                                    "ppml-image build-base")
        paths = {key: raw["gramine"].get(key) for key in
                 ("pkglibdir", "libpal", "libsysdb", "runtimedir")}
        for key, value in paths.items():
            if not _clean_absolute(value):
                raise ImageContentError(f"{name}: gramine.{key} is {value!r}, not a clean "
                                        "absolute path")
        pkglibdir = str(paths["pkglibdir"])
        for key in ("libpal", "libsysdb", "runtimedir"):
            if not str(paths[key]).startswith(pkglibdir.rstrip("/") + "/"):
                raise ImageContentError(f"{name}: gramine.{key} {paths[key]!r} is not inside "
                                        f"gramine.pkglibdir {pkglibdir!r}")
        return cls(raw, pkglibdir, str(paths["libpal"]), str(paths["libsysdb"]),
                   str(paths["runtimedir"]))

    @property
    def loader(self) -> str:
        """Gramine's SGX loader, which runs outside the enclave."""
        return f"{self.pkglibdir}/sgx/loader"

    def python(self, where: str) -> PythonInfo:
        """The image Python's answers for the manifest's ``python.*`` helpers:
        recorded at build-base time, answered without running anything."""
        from ppml_image.sgx.manifest.python_helpers import PythonInfo

        python = self.raw.get("python")
        try:
            if not isinstance(python, dict):
                raise TypeError("no python object")
            return PythonInfo.from_snapshot(python, where=f"the base image {where}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ImageContentError(f"{where}:{BASE_INFO_PATH}: no valid \"python\" object "
                                    f"({exc}): rebuild the base image with ppml-image "
                                    "build-base") from None


def _clean_absolute(value: object) -> bool:
    return (isinstance(value, str) and value.startswith("/") and "\0" not in value
            and posixpath.normpath(value) == value and len(value) < 4096)


# --------------------------------------------------------------------------
# The base image, by content
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseMatch:
    """The base an image derives from (by layers), or why none was established."""

    base: ImageInfo | None
    reason: str = ""


def establish_base(engine: Engine, info: ImageInfo, *, explicit: str | None = None
                   ) -> BaseMatch:
    """The base the user pinned (*explicit*: a reference or an image id), checked by layers.

    A label is never the source of trust: without *explicit* there is no
    base, and the reason says how to pin one. The pinned image must be on
    the engine and *info*'s layers must begin with all of its layers.
    """
    if explicit is None:
        return BaseMatch(None, "no pinned base: give --base REF (a digest is best) or --record "
                               "R.json (the measurement record names the base image id)")
    candidate = engine.find_image(explicit)
    if candidate is None:
        return BaseMatch(None, f"the pinned base image {explicit} is not on {engine.where} "
                               "(pull it first)")
    if not info.derives_from(candidate):
        return BaseMatch(None, f"the image does not derive from the pinned base {explicit} "
                               "(its layers do not begin with the base's layers)")
    return BaseMatch(candidate)
