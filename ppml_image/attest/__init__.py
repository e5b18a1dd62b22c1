"""Attestation: policies for attestation services, registration with those
services, and SGX quotes checked against the measurement record (which lives
in :mod:`ppml_image.sgx.signing.record`, shared with ``images``).

One concept per module. May import ``sgx`` and the shared modules
(``errors``, ``_fs``, ``_signals``); never ``images`` (a record is read from
a file or handed in by the caller) and never ``cli``. ``sgx`` and ``images``
never import this package.
"""
