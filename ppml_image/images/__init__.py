"""Container images: the engine seam, the base image, the enclave image.

``engine/`` is the only room that imports ``docker``; ``base/`` and
``enclave/`` sit above it, with ``layout`` (where an image's enclave and
Gramine live) and ``progress`` shared by both. May import ``sgx`` and the
shared modules; ``sgx`` never imports this package.
"""
