"""Which image a reference names, platform included, as ``verify`` reports it.

A digest may name one image (a manifest) or an index (a manifest list): one
image per platform. An SGX enclave image is for ``linux/amd64`` only, so the
engine always pulls that platform explicitly (:data:`.core.PLATFORM`), the
image verified must say it is that platform (its config, content-addressed
by the image id), and an index digest is reported as an index, naming the
other platforms it also names: those were not verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ppml_image.defaults import REGISTRY_TIMEOUT
from ppml_image.errors import RegistryError
from ppml_image.images.engine.core import PLATFORM, Engine, ImageInfo

_SHOWN = 8  # platforms named in one line


@dataclass
class PlatformReport:
    platform: str
    digest_kind: str = ""  # "manifest", "index", "unknown" (registry not asked or not answering)
    index_platforms: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_platform(engine: Engine, info: ImageInfo, ref: str, digest: str | None, *,
                   timeout: int = REGISTRY_TIMEOUT) -> PlatformReport:
    """The platform of *info* (the image *ref* names) and, by *digest*, what the digest is."""
    report = PlatformReport(platform=info.platform)
    if info.platform != PLATFORM:
        report.problems.append(f"{ref} is an image for {info.platform}: an SGX enclave image is "
                               f"for {PLATFORM} only")
    if digest is None:
        return report
    try:
        found = engine.distribution(ref, timeout=timeout)
    except RegistryError as exc:
        found = None
        report.checks.append(f"{digest}: whether it names an index was not learned from the "
                             f"registry ({exc})")
    if found is None:
        report.digest_kind = "unknown"
        return report
    if found.digest != digest:
        report.problems.append(f"the registry says {ref} is {found.digest}, not {digest}")
        return report
    if not found.is_index:
        report.digest_kind = "manifest"
        report.checks.append(f"{digest} names one image (a manifest), not an index")
        return report
    report.digest_kind = "index"
    report.index_platforms = list(found.platforms)
    others = [p for p in found.platforms if p != PLATFORM]
    shown = ", ".join(others[:_SHOWN]) + (f" and {len(others) - _SHOWN} more"
                                          if len(others) > _SHOWN else "")
    if PLATFORM not in found.platforms:
        report.problems.append(f"{digest} is an index (manifest list) with no {PLATFORM} image "
                               f"(it names {shown or 'none'})")
    elif found.platforms.count(PLATFORM) > 1:
        report.problems.append(f"{digest} is an index that names {PLATFORM} more than once: "
                               "which image it means is up to the reader")
    else:
        report.checks.append(
            f"{digest} is an index (manifest list) of {len(found.platforms)} image(s): its "
            f"{PLATFORM} image {info.id} was verified"
            + (f"; the digest also names images for {shown}, which were not" if others else ""))
    return report


def platform_named(engine: Engine, ref: str, failure: RegistryError,
                   timeout: int = REGISTRY_TIMEOUT) -> str:
    """A failed pull's message; for a missing platform, with the platforms *ref* does name."""
    if failure.reason != "platform":
        return str(failure)
    try:
        found = engine.distribution(ref, timeout=timeout)
    except RegistryError:
        found = None
    if found is None or not found.platforms:
        return str(failure)
    kind = "an index (manifest list)" if found.is_index else "one image"
    shown = ", ".join(found.platforms[:_SHOWN]) + (
        f" and {len(found.platforms) - _SHOWN} more" if len(found.platforms) > _SHOWN else "")
    return f"{failure} ({ref} is {kind} for {shown})"
