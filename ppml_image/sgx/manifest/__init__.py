"""Manifests: sandboxed templates, Gramine's reading, the schema and the release policy.

May import :mod:`ppml_image.sgx.measure` (trees, for trusted files),
:mod:`ppml_image.sgx.gramine` and the shared modules (``errors``, ``_fs``,
``_proc``, and ``resources`` for the shipped ``*.policy.toml`` files).
Never ``signing``, ``images`` or ``docker``.
"""
