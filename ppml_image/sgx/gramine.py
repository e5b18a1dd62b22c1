"""Where Gramine 1.9 installs itself: the Debian/Ubuntu package layout.

One place for these paths. The signing core uses them as defaults (the
default ``loader.entrypoint``, the ``gramine.*`` template helpers); the image
code uses them to install Gramine and to find it in a base image.
"""

from __future__ import annotations

PKGLIBDIR = "/usr/lib/x86_64-linux-gnu/gramine"


def libpal(pkglibdir: str = PKGLIBDIR) -> str:
    """The SGX PAL, which the loader maps into the enclave and which is measured."""
    return f"{pkglibdir}/sgx/libpal.so"


def libsysdb(pkglibdir: str = PKGLIBDIR) -> str:
    """The LibOS, the default ``loader.entrypoint``."""
    return f"{pkglibdir}/libsysdb.so"


def runtimedir(pkglibdir: str = PKGLIBDIR, libc: str = "glibc") -> str:
    """Gramine's patched C library, mounted at ``/lib`` in the enclave."""
    return f"{pkglibdir}/runtime/{libc}"
