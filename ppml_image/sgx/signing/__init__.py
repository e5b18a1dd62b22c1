"""Signing: SIGSTRUCT (data and EINIT-exact checks), keys, signers, PKCS#11 tokens.

May import the shared modules and each other, layered bottom up: ``keys`` and
``pkcs11_uri``, then ``sigstruct``, then ``signers``, then ``hsm``. Never
``manifest``, ``images`` or ``docker``.
"""
