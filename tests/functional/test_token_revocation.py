"""Ending service tokens, through HTTP: a deleted client, a revoked token or a retired
key is refused on the very next decision call of the process that made the change, and
by other processes as soon as they hear of the change (the revision check here; the
Redis notice in tests/integration/test_replicas.py), however long the decision token
cache would remember it; while the database is away a remembered token works only for
``RINGFENCE_DECISION_TOKEN_OUTAGE_GRACE_SECONDS`` (and never past its expiry).

Also RFC 7009 / RFC 7662 with any ``token_type_hint``, and the RFC 8414 metadata: each
thing it advertises works, and nothing it does not offer is claimed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from flask import Flask

from gateway.app import create_app
from gateway.config import Settings
from gateway.identity.signing import DECISIONS_AUDIENCE
from tests.cluster import through_proxy, wait_until
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    client_token,
    close_app,
    create_client,
    create_workspaces,
    run_cli,
    sign_token,
)
from tests.helpers import serving as serving_wsgi
from tests.tcp_proxy import TcpProxy

# Far longer than any test: a token refused within a test was not forgotten by age.
LONG_CACHE = 600.0

CHECK = {"subject": ADMIN_EMAIL, "workspace": "acme", "resource": "documents", "action": "read"}
EVALUATION = {
    "subject": {"type": "user", "id": ADMIN_EMAIL},
    "action": {"name": "read"},
    "resource": {"type": "documents", "id": "1", "properties": {"workspace": "acme"}},
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, decision_token_cache_seconds=LONG_CACHE)


def check(url: str, token: str, path: str = "/v1/check") -> httpx.Response:
    body = CHECK if path == "/v1/check" else EVALUATION
    return httpx.post(
        url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def form(url: str, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(url + path, data=data, timeout=30, **kwargs)


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """``app`` on a real HTTP socket on loopback (another gateway process's stand-in:
    its own engine, token cache and revision check); its URL."""
    try:
        with serving_wsgi(app) as httpd:
            yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        close_app(app)


def accepted(url: str, token: str) -> None:
    """``token`` is accepted by the plain check (the check lane, once remembered) and by
    an AuthZEN evaluation (through Flask), twice each: remembered now."""
    for path in ("/v1/check", "/v1/check", "/access/v1/evaluation", "/access/v1/evaluation"):
        response = check(url, token, path)
        assert response.status_code == 200, response.text


def stale_answer(url: str, token: str) -> httpx.Response | None:
    """An evaluation's answer if it says it came from memory (database away)."""
    response = check(url, token, "/access/v1/evaluation")
    return response if response.headers.get("X-Ringfence-Stale") == "true" else None


def refused(url: str, token: str, reason: str) -> None:
    for path in ("/v1/check", "/access/v1/evaluation"):
        problem = assert_problem(check(url, token, path), 401, "unauthorized")
        assert problem["reason"] == reason, problem


# -- this process: the very next call ---------------------------------------------------


def test_a_deleted_clients_tokens_are_refused_on_the_very_next_call(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    client_id, secret = create_client(server.settings, "decisions:check", name="doomed")
    other_id, other_secret = create_client(server.settings, "decisions:check", name="other")
    token, second = client_token(server, client_id, secret), client_token(server, client_id, secret)
    bystander = client_token(server, other_id, other_secret)
    for each in (token, second, bystander):
        accepted(server.url, each)

    deleted = admin.delete(f"/clients/{client_id}")
    assert deleted.status_code == 200, deleted.text
    refused(server.url, token, "client-deleted")
    refused(server.url, second, "client-deleted")
    accepted(server.url, bystander)  # forgotten with the rest, checked again: still good


def test_a_revoked_token_is_refused_on_the_very_next_call(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    client_id, secret = create_client(server.settings, "decisions:check")
    token, kept = client_token(server, client_id, secret), client_token(server, client_id, secret)
    accepted(server.url, token)
    accepted(server.url, kept)

    revoked = form(server.url, "/oauth/revoke", {"token": token}, auth=(client_id, secret))
    assert revoked.status_code == 200, revoked.text
    refused(server.url, token, "revoked")
    accepted(server.url, kept)


def test_rotating_a_secret_keeps_the_tokens_already_issued(server: LiveServer) -> None:
    """As documented: the old secret stops working at once, tokens stay valid."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    client_id, secret = create_client(server.settings, "decisions:check")
    token = client_token(server, client_id, secret)
    accepted(server.url, token)
    rotated = admin.post(f"/clients/{client_id}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    accepted(server.url, token)
    issued = form(
        server.url, "/oauth/token", {"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert issued.status_code == 401 and issued.json()["error"] == "invalid_client"


# -- other processes: as soon as they hear of the change ---------------------------------


def test_other_processes_refuse_the_token_when_they_learn_of_the_change(
    server: LiveServer, settings: Settings
) -> None:
    """B remembers the tokens for ten minutes and hears of changes only through its
    revision check (no Redis here): a deleted client, a revoked token and a key retired
    by the CLI end there within the check's interval."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    poll = 0.3
    other = create_app(replace(settings, revision_poll_seconds=poll))
    deleted_id, deleted_secret = create_client(settings, "decisions:check", name="deleted")
    revoker_id, revoker_secret = create_client(settings, "decisions:check", name="revoker")
    of_deleted = client_token(server, deleted_id, deleted_secret)
    revoked, kept = (client_token(server, revoker_id, revoker_secret) for _ in range(2))
    with serving(other) as b:
        for token in (of_deleted, revoked, kept):
            accepted(b, token)

        started = time.monotonic()
        assert admin.delete(f"/clients/{deleted_id}").status_code == 200
        wait_until(lambda: check(b, of_deleted).status_code == 401, "B to refuse", 10)
        assert time.monotonic() - started < poll + 2, "not through the revision check"
        refused(b, of_deleted, "client-deleted")
        accepted(b, kept)

        answer = form(
            server.url, "/oauth/revoke", {"token": revoked}, auth=(revoker_id, revoker_secret)
        )
        assert answer.status_code == 200, answer.text
        wait_until(lambda: check(b, revoked).status_code == 401, "B to refuse", 10)
        refused(b, revoked, "revoked")
        accepted(b, kept)

        # A leaked key retired by the CLI (another process again) ends its tokens too.
        rotated = run_cli(settings, "keys", "rotate")
        assert rotated.exit_code == 0, rotated.output
        old_kid = _kid_of(kept)
        accepted(b, kept)  # the previous key still verifies after a rotation
        retired = run_cli(settings, "keys", "retire", old_kid)
        assert retired.exit_code == 0, retired.output
        wait_until(lambda: check(b, kept).status_code == 401, "B to refuse", 10)
        refused(b, kept, "retired-key")


def _kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


# -- the database away: remembered tokens for a bounded time -----------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_while_the_database_is_away_remembered_tokens_work_only_for_the_grace(
    server: LiveServer, settings: Settings
) -> None:
    """The gateway reaches PostgreSQL through a TCP proxy the test cuts. A token checked
    before works from memory for the grace, then gets 503 until the database is back; a
    token never outlives its expiry, whatever the grace."""
    create_workspaces(server.admin(), "acme")
    client_id, secret = create_client(settings, "decisions:check")
    token = client_token(server, client_id, secret)
    proxy = TcpProxy("127.0.0.1", 5432)
    grace = 6.0
    app = create_app(
        replace(
            settings,
            database_url=through_proxy(settings.database_url, proxy),
            decision_token_cache_seconds=0.2,
            decision_token_outage_grace_seconds=grace,
            revision_poll_seconds=0.2,
        )
    )
    claims = {"sub": client_id, "client_id": client_id, "scope": "decisions:check"}
    try:
        with serving(app) as url:
            short = sign_token(server, claims, DECISIONS_AUDIENCE, 3)  # expires in 3 s
            accepted(url, short)
            accepted(url, token)
            proxy.cut()
            cut_at = time.monotonic()
            from_memory = wait_until(lambda: stale_answer(url, token), "the outage noticed", 5)
            assert from_memory.status_code == 200, from_memory.text
            # The short token ends at its expiry, inside the grace; the other goes on.
            wait_until(lambda: check(url, short).status_code == 503, "the short token to end", 10)
            assert time.monotonic() - cut_at < grace - 2
            assert check(url, token).status_code == 200
            # Then the grace ends for the other one too (counted from its last check).
            wait_until(lambda: check(url, token).status_code == 503, "the grace to end", 10)
            assert grace - 1.5 < time.monotonic() - cut_at < grace + 1.5
            for path in ("/v1/check", "/access/v1/evaluation"):
                problem = assert_problem(check(url, token, path), 503, "database-unavailable")
                assert "access token" in problem["detail"], problem
            proxy.restore()
            wait_until(lambda: check(url, token).status_code == 200, "recovery", 15)
    finally:
        proxy.close()


# -- RFC 7009 / RFC 7662: any token_type_hint ---------------------------------------------


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "id_token", "no-such-type", ""])
def test_revocation_and_introspection_find_the_token_whatever_the_hint(
    server: LiveServer, hint: str
) -> None:
    create_workspaces(server.admin(), "acme")
    client_id, secret = create_client(server.settings, "decisions:check")
    token = client_token(server, client_id, secret)
    auth = (client_id, secret)
    params = {"token": token, "token_type_hint": hint}
    found = form(server.url, "/oauth/introspect", params, auth=auth)
    assert found.status_code == 200, found.text
    assert found.json()["active"] is True and found.json()["client_id"] == client_id
    revoked = form(server.url, "/oauth/revoke", params, auth=auth)
    assert revoked.status_code == 200, revoked.text
    assert form(server.url, "/oauth/introspect", params, auth=auth).json() == {"active": False}
    refused(server.url, token, "revoked")


# -- RFC 8414 metadata: what is advertised works, nothing else is claimed ------------------


def test_the_metadata_advertises_exactly_what_is_offered(server: LiveServer) -> None:
    create_workspaces(server.admin(), "acme")
    meta = httpx.get(f"{server.url}/.well-known/oauth-authorization-server", timeout=30).json()
    base = server.settings.public_url.rstrip("/")
    assert meta == {
        "issuer": server.settings.issuer,
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "scopes_supported": ["decisions:check", "decisions:replicate", "tokens:introspect"],
        # No authorization endpoint: no response type at all (RFC 8414 requires the field).
        "response_types_supported": [],
    }

    def local(endpoint: str) -> str:
        assert meta[endpoint].startswith(base)
        return meta[endpoint][len(base) :]

    def authenticated(method: str, client_id: str, secret: str) -> dict[str, Any]:
        if method == "client_secret_basic":
            return {"auth": (client_id, secret)}
        assert method == "client_secret_post"
        return {"extra": {"client_id": client_id, "client_secret": secret}}

    def call(
        endpoint: str, method: str, ids: tuple[str, str], data: dict[str, str]
    ) -> httpx.Response:
        how = authenticated(method, *ids)
        return form(
            server.url, local(endpoint), {**data, **how.get("extra", {})}, auth=how.get("auth")
        )

    # Every scope can be had, by every advertised grant and client authentication.
    for scope in meta["scopes_supported"]:
        ids = create_client(server.settings, scope, name=scope)
        for method in meta["token_endpoint_auth_methods_supported"]:
            for grant in meta["grant_types_supported"]:
                issued = call("token_endpoint", method, ids, {"grant_type": grant, "scope": scope})
                assert issued.status_code == 200, (scope, method, issued.text)
                assert issued.json()["scope"] == scope
    ids = create_client(server.settings, "decisions:check")
    tokens = [
        call(
            "token_endpoint", "client_secret_basic", ids, {"grant_type": "client_credentials"}
        ).json()["access_token"]
        for _ in meta["revocation_endpoint_auth_methods_supported"]
    ]
    for method in meta["introspection_endpoint_auth_methods_supported"]:
        answer = call("introspection_endpoint", method, ids, {"token": tokens[0]})
        assert answer.status_code == 200 and answer.json()["active"] is True, (method, answer.text)
    for method, token in zip(
        meta["revocation_endpoint_auth_methods_supported"], tokens, strict=True
    ):
        answer = call("revocation_endpoint", method, ids, {"token": token})
        assert answer.status_code == 200, (method, answer.text)
        assert check(server.url, token).status_code == 401
    keys = httpx.get(server.url + local("jwks_uri"), timeout=30).json()["keys"]
    assert keys and all(key["alg"] == "RS256" for key in keys)

    # Nothing else: other grants, other client authentication, a scope not listed.
    for grant in (
        "authorization_code",
        "password",
        "refresh_token",
        "implicit",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ):
        answer = call("token_endpoint", "client_secret_basic", ids, {"grant_type": grant})
        assert answer.status_code == 400 and answer.json()["error"] in (
            "unsupported_grant_type",
            "invalid_request",
        ), (grant, answer.text)
    # "none": a client id without its secret.
    anonymous = form(
        server.url, "/oauth/token", {"grant_type": "client_credentials", "client_id": ids[0]}
    )
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    unknown_scope = call(
        "token_endpoint",
        "client_secret_basic",
        ids,
        {"grant_type": "client_credentials", "scope": "admin:everything"},
    )
    assert unknown_scope.status_code == 400 and unknown_scope.json()["error"] == "invalid_scope"
    assert httpx.get(f"{server.url}/oauth/authorize", timeout=30).status_code in (404, 405)
