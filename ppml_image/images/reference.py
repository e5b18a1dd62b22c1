"""Image references as registries read them: ``[DOMAIN/]PATH[:TAG][@DIGEST]``.

The grammar is the distribution project's (``distribution/reference``),
which the Docker engine and every registry apply: lower-case path
components, an optional domain (a first component with a ``.`` or ``:``, or
``localhost``), a tag of at most 128 word characters, a name of at most 255
characters. Digests here are ``sha256:`` and 64 lower-case hex digits only:
the one algorithm registries use, and a digest is compared as a string.

Pure: no engine. ``--push`` checks its target here before any long work, and
``verify`` recognises a reference by digest here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ppml_image.errors import UsageError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]{{1,5}})?\Z")
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    """A parsed reference; ``domain`` is "" when the text names none."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``DOMAIN/PATH`` (what RepoDigests and ``docker push`` name)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def with_digest(self, digest: str) -> str:
        """``DOMAIN/PATH@DIGEST``: this repository's content with that digest."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + \
            (f"@{self.digest}" if self.digest else "")


def _looks_like_domain(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_reference(text: str) -> Reference:
    """Parse *text*; ``ValueError`` says what makes the name invalid."""
    if not text or text != text.strip() or any(c.isspace() or not c.isprintable()
                                              for c in text):
        raise ValueError("empty, or holds blanks or control characters")
    rest, at, digest = text.partition("@")
    if at and not _DIGEST.match(digest):
        raise ValueError(f"digest {digest[:80]!r} is not sha256: and 64 lower-case hex digits")
    tag: str | None = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise ValueError(f"tag {tag[:80]!r} is not 1-128 letters, digits, '_', '.', '-' "
                             "(not starting with '.' or '-')")
    domain, slash, path = rest.partition("/")
    if not slash or not _looks_like_domain(domain):
        domain, path = "", rest
    elif not _DOMAIN.match(domain):
        raise ValueError(f"registry {domain[:80]!r} is not a host name or address[:port]")
    if not _PATH.match(path):
        raise ValueError(f"repository {path[:80]!r} must be lower-case components of letters "
                         "and digits separated by '/', '.', '_', '__' or '-'")
    if len(rest) > NAME_MAX:
        raise ValueError(f"the name is {len(rest)} characters long (at most {NAME_MAX})")
    return Reference(domain, path, tag, digest or None)


def push_target(text: str, option: str = "--tag") -> Reference:
    """A reference ``--push`` may push to: a registry, a repository and a tag.

    A name without a registry would go to Docker Hub; that is never what an
    internal release pipeline meant, so it must be spelled out (``docker.io/...``).
    """
    try:
        ref = parse_reference(text)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: name invalid: {exc}") from None
    if ref.digest:
        raise UsageError(f"{option} {text}: name invalid: a digest names pushed content; "
                         "push to a tag (REGISTRY/NAME:TAG)")
    if not ref.domain:
        raise UsageError(f"{option} {text}: name invalid for --push: it names no registry "
                         "(REGISTRY/NAME:TAG, e.g. 127.0.0.1:5000/ppml/job:1; docker.io/... "
                         "for Docker Hub)")
    return ref if ref.tag else Reference(ref.domain, ref.path, "latest")


def digest_reference(text: str) -> Reference | None:
    """The reference if *text* names an image by digest (``NAME@sha256:...``), else None."""
    if "@" not in text:
        return None
    try:
        return parse_reference(text)
    except ValueError as exc:
        raise UsageError(f"{text}: not a valid image reference: {exc}") from None
