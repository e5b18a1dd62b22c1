"""The base image: ``build-base``, locks, the wheelhouse, ``bootstrap-os``, the config file.

May import :mod:`ppml_image.images.engine`, :mod:`ppml_image.images.layout`,
``sgx`` and the shared modules. Never :mod:`ppml_image.images.enclave`.
"""
