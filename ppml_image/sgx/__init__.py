"""The SGX signing core: manifests, measurement and SIGSTRUCT, from bytes and files.

Pure Python and byte-compatible with Gramine 1.9's ``gramine-sgx-sign`` and
``gramine-manifest``; no Gramine installation is needed on the host.
``manifest/``, ``measure/`` and ``signing/`` are its rooms; ``sign`` and
``offline`` (which use all three) and ``gramine`` (install paths) sit at the
top. May import only the shared modules: never ``images``, ``cli`` or ``docker``.
"""
