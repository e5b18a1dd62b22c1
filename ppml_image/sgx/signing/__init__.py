"""Signing: SIGSTRUCT (data and EINIT-exact checks), keys, signers, PKCS#11 tokens.

May import the shared modules and each other, layered bottom up: ``keys`` and
``pkcs11_uri``, then ``sigstruct``, then ``signers``, then ``hsm``;
``identity`` and ``record`` (the measurement record every command reads, kept
here so that ``images`` and ``attest`` share it) import no other signing
module but ``identity``. Never ``manifest``, ``images`` or ``docker``.
"""
