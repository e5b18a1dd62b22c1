"""``bootstrap-os``: an OS base image built from Debian packages, no registry.

Machines without a container registry (air-gapped sites, corporate proxies,
CI behind a package mirror only) can still reach a Debian mirror. debootstrap
builds a minimal root file system from it, which is imported as an image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ppml_image._proc import child_env
from ppml_image.defaults import DEFAULT_MIRROR as DEFAULT_MIRROR
from ppml_image.errors import BuildError, UsageError
from ppml_image.images.engine.core import Engine, connect
from ppml_image.images.engine.reference import check_tag
from ppml_image.images.progress import Progress


def bootstrap_os(suite: str = "bookworm", tag: str | None = None, *,
                 mirror: str = DEFAULT_MIRROR, quiet: bool = False,
                 engine: Engine | None = None) -> str:
    """Build a minimal Debian *suite* root file system and import it as *tag*.

    Needs root (debootstrap creates device nodes and chroots). Returns the
    image id.
    """
    tag = tag or f"debian:{suite}"
    check_tag(tag)
    # debootstrap takes the mirror as an argument: a word starting with "-" would be an option.
    if not mirror.startswith(("http://", "https://", "file:///")) or any(
            c.isspace() for c in mirror):
        raise UsageError(f"--mirror {mirror[:80]!r}: expected an http://, https:// or file:/// "
                         "URL")
    if os.geteuid() != 0:
        raise UsageError("bootstrap-os needs root (debootstrap must chroot); rerun as root")
    if shutil.which("debootstrap") is None:
        raise UsageError("debootstrap is not installed (Debian/Ubuntu: apt-get install "
                         "debootstrap)")
    engine = engine or connect()
    progress = Progress(f"bootstrap-os {tag}", quiet=quiet)
    with tempfile.TemporaryDirectory(prefix="ppml-rootfs-") as tmp:
        root = Path(tmp) / "root"
        progress.step(1, 3, f"debootstrap --variant=minbase {suite} {mirror}")
        _run(["debootstrap", "--variant=minbase", suite, str(root), mirror],
             f"debootstrap {suite}")
        # No package caches or apt lists in the image.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        progress.step(2, 3, "packing the root file system")
        tarball = Path(tmp) / "rootfs.tar"
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
             "packing the root file system")
        progress.step(3, 3, f"importing as {tag}")
        image_id = engine.import_rootfs(tarball, tag, ['CMD ["/bin/bash"]'])
    progress.done(f"imported {tag} ({image_id[7:19]})")
    return image_id


def _run(command: list[str], what: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, check=False,
                          env=child_env())
    if proc.returncode != 0:
        last = " | ".join(proc.stderr.strip().splitlines()[-3:]
                          or proc.stdout.strip().splitlines()[-3:])
        raise BuildError(f"{what} failed (exit {proc.returncode}): {last}")
