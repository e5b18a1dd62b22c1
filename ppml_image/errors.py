"""Errors that ppml-image reports to its users.

Every error raised on purpose by the library derives from :class:`PpmlError`.
Its message is one line naming the file or image and what is wrong; the CLI
prints it as is and exits with :attr:`PpmlError.exit_code`.
"""

from __future__ import annotations


class PpmlError(Exception):
    """Base class: a user-facing, one-line error."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class UsageError(PpmlError):
    """The command line or configuration asks for something impossible."""

    exit_code = 2


class KeyFileError(PpmlError):
    """A signing key is missing, unreadable, malformed or unsuitable for SGX."""


class ManifestError(PpmlError):
    """A manifest or manifest template is invalid, or a file it names is missing."""


class ElfError(PpmlError):
    """A file that should be an ELF64 x86-64 object is not one."""


class SigstructError(PpmlError):
    """A .sig file is truncated, malformed, or its signature does not verify."""


class VerificationError(PpmlError):
    """An image or signature does not match what was expected."""

    exit_code = 3


class EngineError(PpmlError):
    """The Docker engine is unreachable or an image operation failed."""


class BuildError(PpmlError):
    """An image build failed."""


class PolicyError(PpmlError):
    """A manifest breaks the release policy (``--release``)."""


class ImageContentError(PpmlError):
    """An image does not hold, or would not run, what a ppml-image image must."""


class TokenError(PpmlError):
    """A PKCS#11 module, token or key cannot be used: named by token and object."""


class RegistryError(EngineError):
    """A push or pull failed at the registry: unreachable, authentication, name, not found.

    ``reason`` is one of ``unreachable``, ``auth``, ``name``, ``not-found``,
    ``content`` (bytes that do not match their digest), ``timeout`` (the registry
    stayed silent longer than the deadline) or ``other``, so callers
    (and tests) need not parse the message.
    """

    def __init__(self, message: str, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason
