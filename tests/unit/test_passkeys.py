"""The passkeys' relying party as the public URL makes it (gateway.identity.passkeys): its
host is the RP id, its scheme, host and port (a default port left out, as browsers write
origins) the one origin accepted; a URL without an http(s) host is refused at once."""

from __future__ import annotations

import pytest

from gateway.identity.passkeys import (
    RelyingParty,
    b64url,
    from_b64url,
    relying_party,
    sent_challenge,
    sent_credential_id,
)


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        ("https://Gate.Example.com", RelyingParty("gate.example.com", "https://gate.example.com")),
        (
            "https://gate.example.com:443/x/",
            RelyingParty("gate.example.com", "https://gate.example.com"),
        ),
        (
            "https://gate.example.com:8443",
            RelyingParty("gate.example.com", "https://gate.example.com:8443"),
        ),
        ("http://localhost:8000", RelyingParty("localhost", "http://localhost:8000")),
        ("http://localhost:80", RelyingParty("localhost", "http://localhost")),
    ],
)
def test_the_relying_party_is_the_public_url_s(public_url: str, expected: RelyingParty) -> None:
    assert relying_party(public_url) == expected


@pytest.mark.parametrize("public_url", ["", "gate.example.com", "ftp://gate.example.com"])
def test_a_public_url_without_an_http_host_is_refused(public_url: str) -> None:
    with pytest.raises(ValueError, match="names no http"):
        relying_party(public_url)


def test_answers_not_shaped_as_webauthn_name_nothing() -> None:
    assert from_b64url(b64url(b"\x00\xff" * 9)) == b"\x00\xff" * 9
    for answer in ({}, {"response": "x"}, {"response": {"clientDataJSON": "%%"}}):
        assert sent_challenge(answer) is None
    for raw in (None, "", "%%", b64url(b"x" * 1024)):
        assert sent_credential_id({"rawId": raw}) is None
    assert sent_credential_id({"rawId": b64url(b"key")}) == b64url(b"key")
