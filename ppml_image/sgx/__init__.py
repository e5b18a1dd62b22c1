"""The SGX signing core: keys, manifests, ELF loading, measurement and SIGSTRUCT.

Pure Python and byte-compatible with Gramine 1.9's ``gramine-sgx-sign`` and
``gramine-manifest``; no Gramine installation is needed on the host.
"""
