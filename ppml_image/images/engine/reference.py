"""Image references: Docker's grammar, checked before any work starts.

A tag is the last thing a build does. If the engine refuses it then, the
build's time is lost and, for ``build-custom``, the ``-unsigned`` tag may
already have moved. So every command that takes a tag or an image checks
it here first, against the grammar of ``distribution/reference`` (what the
Docker engine parses with)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path
    domain     := host [ ":" port ]      host: DNS-like labels, or [IPv6]
    path       := component ( "/" component )*     at most 255 characters
    component  := [a-z0-9]+ ( separator [a-z0-9]+ )*
    separator  := "." | "_" | "__" | "-"+
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex{32,}

and Docker's own rules on top (``ParseNormalizedNamed``, go-digest): the
repository part (everything but a registry host) is lowercase, its path
(``library/`` included for a single name) at most 255 characters, and the
whole normalised name (``docker.io/library/NAME``, or the registry host and
path) at most 255 characters too, as Docker Engine 20.10 counts it; a name of
64 hex digits is refused (it would read as an image id), and a digest is
sha256, sha384 or sha512 with exactly its number of lowercase hex digits.

What we refuse beyond the grammar: a reference longer than
:data:`MAX_REFERENCE` characters (no registry needs more, and it bounds the
regular expressions' work on hostile input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ppml_image.defaults import REGISTRY_TIMEOUT_MAX
from ppml_image.errors import UsageError

MAX_PATH = 255  # distribution/reference RepositoryNameTotalLengthMax
# Docker Engine 20.10's reference.NameTotalLengthMax: the normalised name,
# registry host included (docker.io/library/NAME for a name on Docker Hub).
# Newer engines count only the path; the stricter rule suits both.
MAX_NAME = 255
MAX_TAG = 128
MAX_REFERENCE = 1024

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE = re.compile(rf"(?P<name>(?:{_DOMAIN}/)?{_PATH})(?::(?P<tag>{_TAG}))?"
                        rf"(?:@(?P<digest>{_DIGEST}))?", re.ASCII)
_NAME = re.compile(rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
_IMAGE_ID = re.compile(r"sha256:[a-f0-9]{64}")

_EXAMPLE = "NAME[:TAG], e.g. registry.example:5000/team/app:1.0"
# go-digest, which Docker parses a digest with: the algorithms it knows, and
# their lengths in (lowercase) hex digits.
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    """A parsed reference, as written; *tag* and *digest* are "" when absent.

    *domain* is the registry host (and port) as Docker sees it: "" for a
    name on Docker Hub such as ``team/app``.
    """

    name: str
    tag: str = ""
    digest: str = ""
    domain: str = ""

    @property
    def path(self) -> str:
        """The repository path as Docker reads it (``library/x`` for Docker Hub's ``x``)."""
        return _docker_split(self.name)[1]

    def with_digest(self, digest: str) -> str:
        """``NAME@DIGEST``: this repository's content with that digest."""
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        return (self.name + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def parse_reference(value: str, what: str = "image") -> Reference:
    """*value* parsed by Docker's grammar; a :class:`UsageError` naming *what* if it is not."""
    problem = _problem(value)
    if problem:
        raise UsageError(f"{what} {_shown(value)}: {problem}")
    name, tag, digest = _split(value)
    return Reference(name, tag or "", digest or "", _docker_split(name)[0])


def check_tag(value: str, what: str = "--tag") -> Reference:
    """A reference an image can be tagged with: a name and an optional tag, no digest."""
    ref = parse_reference(value, what)
    if ref.digest:
        raise UsageError(f"{what} {_shown(value)}: a tag cannot hold a digest "
                         f"(@{ref.digest[:19]}...); give NAME:TAG")
    return ref


def push_target(value: str, what: str = "--tag") -> Reference:
    """A reference ``--push`` may push to: a registry named in it, a repository, a tag.

    A name without a registry would go to Docker Hub; that is never what an
    internal release pipeline meant, so Docker Hub must be spelled out
    (``docker.io/...``). No tag means ``latest``, as ``docker push`` reads it.
    """
    ref = check_tag(value, what)
    first, slash, _ = ref.name.partition("/")
    if not (slash and (first == "localhost" or any(c in first for c in ".:[")
                       or first.lower() != first)):
        raise UsageError(f"{what} {_shown(value)}: names no registry, so --push would send it "
                         "to Docker Hub; give REGISTRY/NAME:TAG (e.g. 127.0.0.1:5000/ppml/job:1, "
                         "or docker.io/... for Docker Hub)")
    return ref if ref.tag else Reference(ref.name, "latest", "", ref.domain)


def digest_reference(value: str, what: str = "image") -> Reference | None:
    """The parsed reference if *value* names an image by digest (``NAME@sha256:...``), else None.

    A malformed reference holding an ``@`` is a :class:`UsageError`, not None.
    """
    if not isinstance(value, str) or "@" not in value:
        return None
    return parse_reference(value, what)


def is_image_id(value: str) -> bool:
    """``sha256:`` and 64 hex digits, or the 64 digits alone: an id, never a name."""
    return bool(_IMAGE_ID.fullmatch(value) or _IDENTIFIER.fullmatch(value))


def check_image(value: str, what: str = "image") -> str:
    """An image to read: a reference (tag or digest) or an image id (``sha256:`` + 64 hex)."""
    if isinstance(value, str) and is_image_id(value):
        return value
    parse_reference(value, what)
    return value


def with_tag_suffix(ref: Reference, suffix: str, what: str = "--tag") -> Reference:
    """*ref* with *suffix* added to its tag (``latest`` if it has none), checked too."""
    derived = Reference(ref.name, (ref.tag or "latest") + suffix, "", ref.domain)
    if len(derived.tag) > MAX_TAG or not _TAG_RE.fullmatch(derived.tag):
        raise UsageError(f"{what} {_shown(str(ref))}: the tag it implies, {_shown(derived.tag)}, "
                         f"is not a valid tag (at most {MAX_TAG} characters)")
    return derived


def _problem(value: object) -> str:
    """Why *value* is not a reference ("" if it is one), as precisely as we can say."""
    if not isinstance(value, str) or not value:
        return "an image reference cannot be empty"
    if len(value) > MAX_REFERENCE:
        return f"longer than {MAX_REFERENCE} characters"
    if not value.isascii() or not value.isprintable():
        return "holds a character that is not printable ASCII"
    if _IDENTIFIER.fullmatch(value):
        return "64 hexadecimal digits are an image id, not a name"
    name, tag, digest = _split(value)
    if digest is not None:
        if not re.fullmatch(_DIGEST, digest, re.ASCII):
            return f"the digest {_shown(digest)} is not ALGORITHM:HEX (at least 32 hex digits)"
        algorithm, _, encoded = digest.partition(":")
        if algorithm not in _DIGEST_LENGTHS:
            return (f"the digest algorithm {_shown(algorithm)} is not one Docker supports "
                    f"({', '.join(_DIGEST_LENGTHS)})")
        if not re.fullmatch(f"[a-f0-9]{{{_DIGEST_LENGTHS[algorithm]}}}", encoded):
            return (f"a {algorithm} digest is {_DIGEST_LENGTHS[algorithm]} lowercase hex "
                    f"digits, not {_shown(encoded)}")
    if tag is not None:
        if len(tag) > MAX_TAG:
            return f"the tag is longer than {MAX_TAG} characters"
        if not _TAG_RE.fullmatch(tag):
            return (f"the tag {_shown(tag)} must start with a letter, digit or '_' and hold "
                    "only letters, digits, '_', '.' and '-'")
    if _NAME.fullmatch(name) is None:
        if _NAME.fullmatch(name.lower()) is not None:
            return "the repository name must be lowercase"
        return f"{_shown(name)} is not a valid image name ({_EXAMPLE})"
    host, path = _docker_split(name)
    if len(path) > MAX_PATH:
        return f"the repository name is longer than {MAX_PATH} characters"
    full = f"{host or 'docker.io'}/{path}"
    if len(full) > MAX_NAME:
        return (f"the full name {_shown(full)} is {len(full)} characters; Docker refuses a "
                f"name (registry host included) longer than {MAX_NAME}")
    if _REFERENCE.fullmatch(value) is None:  # the grammar decides; the above only explains
        return f"not a valid image reference ({_EXAMPLE})"
    return ""


def _split(value: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) by the separators alone: a tag's ':' comes after the last '/'."""
    name, at, digest = value.partition("@")
    head, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        return head, tag, digest if at else None
    return name, None, digest if at else None


def _docker_split(name: str) -> tuple[str, str]:
    """(registry host, repository path) of a valid name, as Docker reads it.

    ``ParseNormalizedNamed``: a first component is a host if it is
    ``localhost``, holds a '.' or a ':', or has upper case letters; any other
    name is on Docker Hub (``docker.io``), where a single component lives
    under ``library/``. The normalised name is then split by the grammar,
    and the path (``library/`` included) must fit in 255 characters. The
    host is "" for Docker Hub.
    """
    first, slash, rest = name.partition("/")
    if slash and (first == "localhost" or any(c in first for c in ".:")
                  or first.lower() != first):
        normalised = name if first != "index.docker.io" else f"docker.io/{rest}"
    else:
        normalised = f"docker.io/{name}"
    host, _, remote = normalised.partition("/")
    if host == "docker.io" and "/" not in remote:
        normalised = f"docker.io/library/{remote}"
    split = _NAME.fullmatch(normalised)
    if split is None:  # only for names the grammar refuses anyway
        return "", normalised
    domain = split.group("domain") or ""
    return ("" if domain == "docker.io" else domain), split.group("path")


def _shown(value: object) -> str:
    plain = isinstance(value, str) and value.isprintable() and value and " " not in value
    text = value if plain else repr(value)
    assert isinstance(text, str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_registry_timeout(seconds: object, option: str = "--registry-timeout") -> int:
    """A registry deadline in whole seconds, 1 to :data:`REGISTRY_TIMEOUT_MAX` (else a usage error).

    Whole seconds: the value becomes a socket timeout and a number in messages;
    a cap: an hour of silence is no longer a registry that is slow.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int) or \
            not 1 <= seconds <= REGISTRY_TIMEOUT_MAX:
        raise UsageError(f"{option} {str(seconds)[:40]!r}: expected whole seconds from 1 to "
                         f"{REGISTRY_TIMEOUT_MAX}")
    return seconds
