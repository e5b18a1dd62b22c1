"""Stand-ins for Gramine, for tests and demos on machines without it.

:func:`make_gramine_tree` writes a folder shaped like a Gramine install
(``usr/lib/x86_64-linux-gnu/gramine`` with ``sgx/libpal.so``, ``libsysdb.so``
and ``runtime/glibc/``). The files are NOT Gramine: ``libpal.so`` is a small,
valid ELF64 shared object that measures like a PAL but does nothing, and the
rest are placeholders. Enclaves "signed" against this tree will not run; the
measurement and signing pipeline around them is real.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from ppml_image.sgx import gramine

_RUNTIME_FILES = ("ld-linux-x86-64.so.2", "libc.so.6", "libdl.so.2", "libm.so.6",
                  "libpthread.so.0", "librt.so.1", "libutil.so.1", "libresolv.so.2")


def stand_in_elf(seed: bytes = b"ppml-image stand-in libpal") -> bytes:
    """A 2-segment ELF64 x86-64 shared object (R+X text, R+W data with .bss)."""
    text = (hashlib.sha256(seed).digest() * 200)[:0x1800 - 0x100]
    data = (hashlib.sha256(seed + b"data").digest() * 30)[:0x300]
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 3, 62, 1,
                       0x1010, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    phdrs = (struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, 0x1800, 0x1800, 0x1000)
             + struct.pack("<IIQQQQQQ", 1, 6, 0x1800, 0x2800, 0x2800, 0x300, 0x2000, 0x1000))
    head = ehdr + phdrs
    return head + text[: 0x1800 - len(head)].ljust(0x1800 - len(head), b"\0") + data


def make_gramine_tree(root: Path) -> Path:
    """Write a stand-in Gramine install tree under *root*; returns *root*."""
    pkglibdir = root / gramine.PKGLIBDIR.lstrip("/")
    (pkglibdir / "sgx").mkdir(parents=True, exist_ok=True)
    (pkglibdir / "runtime/glibc").mkdir(parents=True, exist_ok=True)
    (pkglibdir / "sgx/libpal.so").write_bytes(stand_in_elf())
    (pkglibdir / "libsysdb.so").write_bytes(stand_in_elf(b"stand-in libsysdb"))
    for name in _RUNTIME_FILES:
        (pkglibdir / "runtime/glibc" / name).write_bytes(
            b"stand-in runtime file " + name.encode() + b"\n" * 64)
    bindir = root / "usr/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for tool in ("gramine-sgx", "gramine-direct"):
        script = bindir / tool
        script.write_text("#!/bin/sh\necho 'this is a stand-in for Gramine, not Gramine' >&2\n"
                          "exit 78\n")
        script.chmod(0o755)
    return root
