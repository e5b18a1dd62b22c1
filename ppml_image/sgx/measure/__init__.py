"""Measuring: ELF files, race-free trees, hashing, the enclave layout and MRENCLAVE.

May import only the shared modules (``errors``, ``_fs``, ``_signals``) and each other.
"""
