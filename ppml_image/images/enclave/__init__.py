"""The enclave image: ``build-custom``, ``sign-image``, measuring, ``inspect``/``verify``, ``run``.

May import :mod:`ppml_image.images.engine`, :mod:`ppml_image.images.base`,
``sgx`` and the shared modules.
"""
