"""The RFC 7512 PKCS#11 URI parser: round trips, RFC examples, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml_image.errors import UsageError
from ppml_image.sgx.signing.pkcs11_uri import (
    OBJECT_TYPES,
    QUERY_ATTRIBUTES,
    Pkcs11Uri,
    is_pkcs11_uri,
    parse_uri,
)

TEXT_PATH = ("token", "manufacturer", "serial", "model", "library-manufacturer",
             "library-description", "object", "slot-description", "slot-manufacturer")
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def uris(draw: st.DrawFn) -> Pkcs11Uri:
    path = draw(st.dictionaries(st.sampled_from(TEXT_PATH), any_text, max_size=5))
    if draw(st.booleans()):
        path["type"] = draw(st.sampled_from(OBJECT_TYPES))
    if draw(st.booleans()):
        path["slot-id"] = str(draw(st.integers(0, 2**32)))
    if draw(st.booleans()):
        path["library-version"] = draw(st.sampled_from(["1", "2.6", "10.23"]))
    query = draw(st.dictionaries(st.sampled_from(QUERY_ATTRIBUTES), any_text, max_size=3))
    key_id = draw(st.none() | st.binary(max_size=20))
    return Pkcs11Uri(path=path, query=query, id=key_id)


@given(uris())
def test_format_then_parse_is_the_identity(uri: Pkcs11Uri) -> None:
    text = uri.format()
    assert parse_uri(text) == uri
    assert parse_uri(text).format() == text


@given(st.text(max_size=200))
@settings(max_examples=500)
def test_any_text_parses_or_fails_with_one_usage_error(tail: str) -> None:
    try:
        uri = parse_uri("pkcs11:" + tail)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(uri, Pkcs11Uri)


@given(pin=st.text(min_size=1, max_size=30).map(lambda s: "SECRET" + s),
       before=st.sampled_from(["", "pin-source=file:/x&", "module-path=/m.so&"]),
       in_path=st.booleans())
def test_pin_value_is_refused_and_never_echoed(pin: str, before: str, in_path: bool) -> None:
    from urllib.parse import quote

    encoded = quote(pin, safe="")
    text = (f"pkcs11:token=t;pin-value={encoded};object=o" if in_path
            else f"pkcs11:token=t;object=o?{before}pin-value={encoded}")
    with pytest.raises(UsageError, match="pin-value") as caught:
        parse_uri(text)
    assert "SECRET" not in str(caught.value)
    assert encoded not in str(caught.value)


@pytest.mark.parametrize("text,expected", [
    ("pkcs11:", Pkcs11Uri()),
    ("PKCS11:object=k", Pkcs11Uri(path={"object": "k"})),
    ("pkcs11:object=my-pubkey;type=public", Pkcs11Uri(path={"object": "my-pubkey",
                                                              "type": "public"})),
    ("pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
     Pkcs11Uri(path={"object": "my-key", "type": "private"},
               query={"pin-source": "file:/etc/token"})),
    ("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
     "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=",
     Pkcs11Uri(path={"token": "The Software PKCS#11 Softtoken",
                     "manufacturer": "Snake Oil, Inc.", "model": "1.0",
                     "object": "my-certificate", "type": "cert", "serial": ""},
               id=bytes.fromhex("69953e5cf4bdec91"))),
    ("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
     Pkcs11Uri(path={"object": "my-sign-key", "type": "private"},
               query={"module-path": "/mnt/libmypkcs11.so.1"})),
    ("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
     Pkcs11Uri(path={"token": "A name with a substring %;", "object": "my-certificate",
                     "type": "cert"})),
    ("pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;"
     "type=cert",
     Pkcs11Uri(path={"token": "Name with a small A with acute: \u00e1",
                     "object": "my-certificate", "type": "cert"})),
    ("pkcs11:slot-description=Sun%20Metaslot", Pkcs11Uri(path={"slot-description":
                                                               "Sun Metaslot"})),
    ("pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20"
     "Library;library-version=1.23",
     Pkcs11Uri(path={"library-manufacturer": "Snake Oil, Inc.",
                     "library-description": "Soft Token Library", "library-version": "1.23"})),
    ("pkcs11:token=a&b;object=x=y", Pkcs11Uri(path={"token": "a&b", "object": "x=y"})),
    ("pkcs11:object=k?pin-source=file:/a/b?c|d", Pkcs11Uri(
        path={"object": "k"}, query={"pin-source": "file:/a/b?c|d"})),
])
def test_rfc_examples(text: str, expected: Pkcs11Uri) -> None:
    assert parse_uri(text) == expected


def test_typed_views() -> None:
    uri = parse_uri("pkcs11:slot-id=7;library-version=2;object=k")
    assert uri.slot_id == 7 and uri.library_version == (2, 0)
    assert uri.where() == "PKCS#11 token (any) object 'k'"
    assert parse_uri("pkcs11:token=t;id=%01%ff").where() == "PKCS#11 token 't' object id=01ff"


@pytest.mark.parametrize("text,fragment", [
    ("pkcs11:token=a;token=b", "more than once"),
    ("pkcs11:object=a?module-path=/x&module-path=/y", "more than once"),
    ("pkcs11:objet=k", "unknown path attribute 'objet'"),
    ("pkcs11:object=k?shoe=1", "unknown query attribute 'shoe'"),
    ("pkcs11:x-vendor=1", "vendor attribute 'x-vendor'"),
    ("pkcs11:module-path=/x.so", "belongs in the query"),
    ("pkcs11:?object=k", "belongs in the path"),
    ("pkcs11:object", "expected name=value"),
    ("pkcs11:object=k;", "expected name=value"),
    ("pkcs11:=k", "expected name=value"),
    ("pkcs11:-object=k", "expected name=value"),
    ("pkcs11:object=a/b", "'/'"),
    ("pkcs11:object=a b", "' '"),
    ("pkcs11:object=a#b", "'#'"),
    ("pkcs11:object=\u00e1", "percent-encoded"),
    ("pkcs11:object=a%2", "two hex digits"),
    ("pkcs11:object=a%zz", "two hex digits"),
    ("pkcs11:object=%ff", "not valid UTF-8"),
    ("pkcs11:type=secret", "type must be one of"),
    ("pkcs11:slot-id=0x1", "slot-id"),
    ("pkcs11:library-version=1.2.3", "library-version"),
    ("pkcs11:pin%2Dvalue=1234", "expected name=value"),
    ("file:key.pem", "must start with 'pkcs11:'"),
    ("pkcs11:object=" + "a" * 5000, "longer than"),
])
def test_malformed_uris_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_uri(text)
    assert fragment.lower() in str(caught.value).lower()


def test_scheme_detection() -> None:
    assert is_pkcs11_uri("pkcs11:") and is_pkcs11_uri("PKCS11:token=x")
    assert not is_pkcs11_uri("keys/pkcs11:x.pem") and not is_pkcs11_uri("pkcs11")
