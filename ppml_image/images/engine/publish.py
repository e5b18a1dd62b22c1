"""Publishing: tags that move together, and pushes that name their digest.

``build-custom --push`` and ``sign-image --push`` end with a commit that has
two halves: the local tags and the registry. A registry cannot be rolled
back, so the order is chosen for it:

1. every local tag is set (a push sends a tag: the engine pushes NAME:TAG);
2. the unsigned image is pushed first, if asked (``--push-unsigned``), so
   that a failure leaves the registry's signed tag where it was;
3. the signed image is pushed; the registry's manifest digest is the result.

If any step fails (or Ctrl-C, SIGTERM), every local tag is put back where it
was before the command, and no measurement record is written: a record that
names a digest names one the registry acknowledged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from ppml_image.defaults import REGISTRY_TIMEOUT
from ppml_image.images.engine.core import Engine
from ppml_image.images.engine.reference import push_target
from ppml_image.images.progress import Progress


@contextlib.contextmanager
def tags_restored_on_failure(engine: Engine, refs: Sequence[str]) -> Iterator[None]:
    """Tags set inside the block are put back as they were if the block fails."""
    before: dict[str, str | None] = {}
    for ref in refs:
        info = engine.find_image(ref)
        before[ref] = info.id if info is not None else None
    try:
        yield
    except BaseException:
        for ref, image_id in before.items():
            # Best effort: the error that got us here is the one to report.
            with contextlib.suppress(Exception):
                if image_id is None:
                    if engine.find_image(ref) is not None:
                        engine.remove_image(ref)
                else:
                    engine.tag(image_id, ref, restore=True)
        raise


def push(engine: Engine, ref: str, *, quiet: bool = False,
         timeout: int = REGISTRY_TIMEOUT) -> str:
    """Push the tag *ref*; returns ``REGISTRY/NAME@sha256:...`` as the registry has it.

    *timeout*: seconds the registry may stay silent (the push then fails, and
    :func:`tags_restored_on_failure` around it puts the tags back).
    """
    target = push_target(ref)
    progress = Progress(f"push {ref}", quiet=quiet)
    transfer = engine.push(str(target), progress=progress, timeout=timeout)
    progress.done(f"{transfer.layers_sent} layer(s) sent, {transfer.layers_present} already "
                  f"there: {transfer.digest}")
    return target.with_digest(transfer.digest)
