"""OAuth 2.0 for services, through HTTP: clients, the token endpoint (client credentials),
revocation (RFC 7009), introspection (RFC 7662), the published keys and their rotation,
and the decision endpoints' demand for a ``decisions:check`` token, bad tokens included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.app import create_app
from gateway.config import Settings, load_settings
from gateway.db.models import OAuthClient, SigningKey, utcnow
from gateway.db.session import make_engine
from gateway.identity.security import token_digest
from gateway.identity.signing import ADMIN_AUDIENCE, DECISIONS_AUDIENCE, KeyRing
from gateway.web.state import gateway_state
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    client_token,
    create_client,
    create_workspaces,
    decision_headers,
    run_cli,
    sign_token,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """These tests check that a revocation, a deleted client or a retired key ends a token
    on the very next call, so the per-process token cache is off here; its own test below
    runs with it on."""
    return replace(settings, decision_token_cache_seconds=0)


CHECK = {"subject": ADMIN_EMAIL, "workspace": "acme", "resource": "documents", "action": "read"}
EVALUATION = {
    "subject": {"type": "user", "id": ADMIN_EMAIL},
    "action": {"name": "read"},
    "resource": {"type": "documents", "id": "1", "properties": {"workspace": "acme"}},
}


# -- helpers ----------------------------------------------------------------------------


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


def header_of(token: str) -> dict[str, Any]:
    return unb64(token.split(".")[0])


def claims_of(token: str) -> dict[str, Any]:
    return unb64(token.split(".")[1])


def check(server: LiveServer, token: str | None, path: str = "/v1/check") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = CHECK if path == "/v1/check" else EVALUATION
    with httpx.Client(base_url=server.url) as client:
        return client.post(path, json=body, headers=headers)


def refusal_counts(server: LiveServer) -> Counter[str]:
    """``ringfence_auth_refusals_total{kind="decision_token"}`` by reason (``/metrics``)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return Counter(
        {
            sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "ringfence_auth_refusals_total"
            and sample.labels["kind"] == "decision_token"
        }
    )


def oauth_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 error answer (the OAuth endpoints' format, not problem+json)."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    return body  # type: ignore[no-any-return]


def audit(admin: httpx.Client, action: str) -> list[dict[str, Any]]:
    response = admin.get("/audit", params={"action": action, "page_size": 100})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def rows(server: LiveServer, model: Any) -> list[Any]:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            found = list(session.scalars(select(model)))
            session.expunge_all()
            return found
    finally:
        db.dispose()


def post_form(server: LiveServer, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=server.url) as client:
        return client.post(path, data=data, **kwargs)


# -- clients and the token endpoint -----------------------------------------------------


def test_clients_get_tokens_with_the_secret_shown_once(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    response = admin.post("/clients", json={"name": "billing", "scopes": ["decisions:check"]})
    assert response.status_code == 201, response.text
    created = response.json()
    client_id, secret = created["client"]["client_id"], created["client_secret"]
    assert created["client"]["scopes"] == ["decisions:check"]
    assert created["client"]["created_by"].endswith(f"<{ADMIN_EMAIL}>")

    # The secret is never shown again and is stored only as its hash.
    shown = admin.get(f"/clients/{client_id}")
    assert shown.status_code == 200 and "client_secret" not in shown.json()
    assert secret not in admin.get("/clients").text
    [stored] = [c for c in rows(server, OAuthClient) if c.client_id == client_id]
    assert stored.secret_hash == token_digest(secret)
    assert secret not in json.dumps({k: str(v) for k, v in vars(stored).items()})

    # Refused: unknown scopes, none, unknown fields, unknown clients.
    for body in (
        {"name": "x", "scopes": ["decisions:chek"]},
        {"name": "x", "scopes": []},
        {"name": "", "scopes": ["decisions:check"]},
        {"name": "x", "scopes": ["decisions:check"], "secret": "mine"},
    ):
        assert_problem(admin.post("/clients", json=body), 422, "invalid-input")
    assert_problem(admin.get("/clients/rfc_nope"), 404, "not-found")

    # client_secret_basic and client_secret_post both work.
    basic = post_form(
        server, "/oauth/token", {"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert basic.status_code == 200, basic.text
    assert basic.headers["Cache-Control"] == "no-store"
    issued = basic.json()
    assert issued["token_type"] == "Bearer" and issued["scope"] == "decisions:check"
    assert issued["expires_in"] == server.settings.client_token_ttl
    token = issued["access_token"]
    header, claims = header_of(token), claims_of(token)
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt" and header["kid"]
    assert claims["iss"] == server.settings.issuer == "http://ringfence.test"
    assert claims["aud"] == DECISIONS_AUDIENCE
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["exp"] - claims["iat"] == server.settings.client_token_ttl
    assert claims["jti"]
    posted = post_form(
        server,
        "/oauth/token",
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "decisions:check",
        },
    )
    assert posted.status_code == 200, posted.text
    assert claims_of(posted.json()["access_token"])["jti"] != claims["jti"]
    assert check(server, token).json()["allowed"] is True

    # Wrong secret, unknown client, no credentials: invalid_client (401 for Basic).
    wrong = post_form(
        server, "/oauth/token", {"grant_type": "client_credentials"}, auth=(client_id, "nope")
    )
    oauth_error(wrong, 401, "invalid_client")
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    unknown = post_form(
        server, "/oauth/token", {"grant_type": "client_credentials"}, auth=("rfc_x", secret)
    )
    oauth_error(unknown, 401, "invalid_client")
    oauth_error(
        post_form(server, "/oauth/token", {"grant_type": "client_credentials"}),
        401,
        "invalid_client",
    )
    form = {"grant_type": "client_credentials", "scope": "tokens:introspect"}
    oauth_error(
        post_form(server, "/oauth/token", form, auth=(client_id, secret)), 400, "invalid_scope"
    )
    form = {"grant_type": "client_credentials", "scope": "everything"}
    oauth_error(
        post_form(server, "/oauth/token", form, auth=(client_id, secret)), 400, "invalid_scope"
    )
    form = {"grant_type": "password", "username": ADMIN_EMAIL, "password": server.admin_password}
    oauth_error(
        post_form(server, "/oauth/token", form, auth=(client_id, secret)),
        400,
        "unsupported_grant_type",
    )

    # A new secret: the old one stops working, tokens already issued keep working.
    rotated = admin.post(f"/clients/{client_id}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    assert new_secret != secret
    oauth_error(
        post_form(
            server, "/oauth/token", {"grant_type": "client_credentials"}, auth=(client_id, secret)
        ),
        401,
        "invalid_client",
    )
    assert client_token(server, client_id, new_secret)
    assert check(server, token).status_code == 200

    # Deleted: no more tokens, and its tokens stop working at once.
    deleted = admin.delete(f"/clients/{client_id}")
    assert deleted.status_code == 200 and deleted.json()["deleted_at"]
    oauth_error(
        post_form(
            server,
            "/oauth/token",
            {"grant_type": "client_credentials"},
            auth=(client_id, new_secret),
        ),
        401,
        "invalid_client",
    )
    problem = assert_problem(check(server, token), 401, "unauthorized")
    assert problem["reason"] == "client-deleted"
    assert client_id not in admin.get("/clients").text
    assert client_id in admin.get("/clients", params={"include_deleted": "true"}).text
    assert_problem(admin.delete(f"/clients/{client_id}"), 404, "not-found")

    assert [e["target_id"] for e in audit(admin, "client.created")] == [client_id]
    assert [e["target_id"] for e in audit(admin, "client.secret_rotated")] == [client_id]
    assert [e["target_id"] for e in audit(admin, "client.deleted")] == [client_id]
    for event in audit(admin, "client.created") + audit(admin, "client.deleted"):
        assert secret not in json.dumps(event) and new_secret not in json.dumps(event)


def test_the_cli_creates_lists_and_deletes_clients(server: LiveServer) -> None:
    client_id, secret = create_client(server.settings, "decisions:check", name="reports")
    listed = run_cli(server.settings, "client", "list")
    assert listed.exit_code == 0 and client_id in listed.output and secret not in listed.output
    token = client_token(server, client_id, secret)
    assert check(server, token).status_code == 200
    bad = run_cli(server.settings, "client", "create", "--name", "x", "--scope", "all:things")
    assert bad.exit_code == 1 and "all:things" in bad.output
    assert run_cli(server.settings, "client", "delete", client_id).exit_code == 0
    assert assert_problem(check(server, token), 401, "unauthorized")["reason"] == "client-deleted"
    assert client_id not in run_cli(server.settings, "client", "list").output
    assert run_cli(server.settings, "client", "delete", client_id).exit_code == 1


# -- the decision endpoints -------------------------------------------------------------


def test_decision_endpoints_need_a_token_with_decisions_check(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    good = decision_headers(server)["Authorization"].split()[1]
    introspector = client_token(server, *create_client(server.settings, "tokens:introspect"))
    admin_token = str(admin.headers["Authorization"]).split()[1]

    # Every decision path, those added later under /access/v1/ included, by prefix.
    for path in ("/v1/check", "/access/v1/evaluation", "/access/v1/evaluations"):
        problem = assert_problem(check(server, None, path), 401, "unauthorized", "decisions:check")
        assert problem["detail"]
        wrong_scope = check(server, introspector, path)
        problem = assert_problem(wrong_scope, 403, "insufficient-scope", "decisions:check")
        assert problem["scope"] == "decisions:check"
        assert 'error="insufficient_scope"' in wrong_scope.headers["WWW-Authenticate"]
        # A person's token is for the admin API, not for decisions.
        person = check(server, admin_token, path)
        assert assert_problem(person, 401, "unauthorized")["reason"] == "wrong-audience"
        assert 'error="invalid_token"' in person.headers["WWW-Authenticate"]
    assert check(server, good).json()["allowed"] is True
    assert check(server, good, "/access/v1/evaluation").json()["decision"] is True
    # And a service token is refused by the admin API.
    with server.client(good) as service:
        assert assert_problem(service.get("/users"), 401, "unauthorized")["reason"] == (
            "wrong-audience"
        )

    # The decision endpoints only count refused tokens (no audit write on the decision
    # path, tests/functional/test_refusal_sampling.py); the admin API's refusal of the
    # service token is audited, by sample.
    [event] = audit(admin, "auth.token_rejected")
    assert event["after"]["reasons"] == {"wrong-audience": 1}
    assert event["source_address"] == "127.0.0.1"


def test_loopback_may_skip_the_token_only_when_the_setting_says_so(server: LiveServer) -> None:
    assert load_settings({}).decisions_allow_loopback is False
    assert load_settings({"RINGFENCE_DECISIONS_ALLOW_LOOPBACK": "1"}).decisions_allow_loopback
    relaxed = create_app(
        replace(server.settings, decisions_allow_loopback=True, revision_poll_seconds=0)
    )
    strict = create_app(replace(server.settings, revision_poll_seconds=0))
    with relaxed.test_client() as client:
        for address, status in (("127.0.0.1", 200), ("::1", 200), ("10.0.0.7", 401)):
            response = client.post("/v1/check", json=CHECK, environ_base={"REMOTE_ADDR": address})
            assert response.status_code == status, (address, response.get_json())
        # A token that is sent is checked all the same.
        response = client.post(
            "/v1/check", json=CHECK, headers={"Authorization": "Bearer nonsense"}
        )
        assert response.status_code == 401
    with strict.test_client() as client:
        assert client.post("/v1/check", json=CHECK).status_code == 401


def test_accepted_tokens_are_remembered_for_the_cache_time(
    server: LiveServer,
) -> None:
    """With the cache on, a token accepted once is not checked again for the cache time: in
    a process that hears of no changes (no revision check, no Redis) a deleted client's
    token still works within it, and is refused after it. Processes that hear of changes
    forget it at once: tests/functional/test_token_revocation.py."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    client_id, secret = create_client(server.settings, "decisions:check", name="cached")
    token = client_token(server, client_id, secret)
    # A minute: the steps below take well under it, however loaded the machine (with
    # half a second, a loaded CI run saw the cache time pass before the second check).
    app = create_app(
        replace(server.settings, decision_token_cache_seconds=60, revision_poll_seconds=0)
    )
    bearer = {"Authorization": f"Bearer {token}"}
    with app.test_client() as client:
        assert client.post("/v1/check", json=CHECK, headers=bearer).status_code == 200
        assert admin.delete(f"/clients/{client_id}").status_code == 200
        assert client.post("/v1/check", json=CHECK, headers=bearer).status_code == 200
        cache = gateway_state(app).token_cache  # the cache time passes, without a wait
        cache.clock = lambda: time.monotonic() + 61
        refused = client.post("/v1/check", json=CHECK, headers=bearer)
        assert refused.status_code == 401, refused.get_json()
        assert refused.get_json()["reason"] == "client-deleted"


def test_a_burst_of_first_calls_with_one_token_is_answered(server: LiveServer) -> None:
    """A worker that just started (a reload, a new replica) gets a burst of requests with
    a token it has not checked yet: they share one check (BoundedCalls.run_shared), where
    one check each took every database thread and the rest were refused with 503."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    client_id, secret = create_client(server.settings, "decisions:check", name="burst")
    token = client_token(server, client_id, secret)
    start = threading.Barrier(12)
    statuses: list[int] = []

    def ask() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            start.wait(5)
            bearer = {"Authorization": f"Bearer {token}"}
            statuses.append(client.post("/v1/check", json=CHECK, headers=bearer).status_code)

    askers = [threading.Thread(target=ask) for _ in range(12)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(15)
    assert statuses == [200] * 12


# -- introspection and revocation -------------------------------------------------------


def test_introspection_and_revocation(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    a_id, a_secret = create_client(server.settings, "decisions:check", name="a")
    b_id, b_secret = create_client(server.settings, "decisions:check", name="b")
    c_id, c_secret = create_client(server.settings, "tokens:introspect", name="c")
    token = client_token(server, a_id, a_secret)

    def introspect(auth: tuple[str, str] | None, value: str) -> httpx.Response:
        return post_form(server, "/oauth/introspect", {"token": value}, auth=auth)

    own = introspect((a_id, a_secret), token)
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["active"] is True and body["client_id"] == a_id
    assert body["scope"] == "decisions:check" and body["token_type"] == "Bearer"
    assert body["exp"] > body["iat"] and body["iss"] == server.settings.issuer
    assert introspect((b_id, b_secret), token).json() == {"active": False}  # not b's business
    assert introspect((c_id, c_secret), token).json()["active"] is True  # tokens:introspect
    assert introspect((a_id, a_secret), "garbage").json() == {"active": False}
    expired = sign_token(
        server,
        {"sub": a_id, "client_id": a_id, "scope": "decisions:check"},
        DECISIONS_AUDIENCE,
        -60,
    )
    assert introspect((a_id, a_secret), expired).json() == {"active": False}
    oauth_error(introspect(None, token), 401, "invalid_client")  # authentication required
    oauth_error(introspect((a_id, "wrong"), token), 401, "invalid_client")
    oauth_error(
        post_form(server, "/oauth/introspect", {}, auth=(a_id, a_secret)), 400, "invalid_request"
    )

    # Only the client a token was issued to may revoke it.
    def revoke(auth: tuple[str, str], value: str) -> httpx.Response:
        return post_form(server, "/oauth/revoke", {"token": value}, auth=auth)

    oauth_error(revoke((b_id, b_secret), token), 400, "invalid_grant")
    assert check(server, token).status_code == 200
    revoked = revoke((a_id, a_secret), token)
    assert revoked.status_code == 200, revoked.text
    assert introspect((a_id, a_secret), token).json() == {"active": False}
    problem = assert_problem(check(server, token), 401, "unauthorized", "revoked")
    assert problem["reason"] == "revoked"
    # Revoking again, or a token that is no token, is fine (RFC 7009).
    assert revoke((a_id, a_secret), token).status_code == 200
    assert revoke((a_id, a_secret), "garbage").status_code == 200
    # Other tokens of the same client are untouched.
    assert check(server, client_token(server, a_id, a_secret)).status_code == 200

    [event] = audit(admin, "token.revoked")
    assert event["target_id"] == claims_of(token)["jti"] and a_id in event["actor_name"]


# -- keys: publication and rotation -----------------------------------------------------


def test_published_keys_verify_tokens_and_rotate_without_downtime(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    client_id, secret = create_client(server.settings, "decisions:check")
    old_token = client_token(server, client_id, secret)
    old_person = str(admin.headers["Authorization"]).split()[1]

    def published() -> dict[str, Any]:
        with server.client() as anonymous:
            response = anonymous.get("/.well-known/jwks.json")
        assert response.status_code == 200
        jwks = response.json()
        for key in jwks["keys"]:
            assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)  # no private parts
        return jwks  # type: ignore[no-any-return]

    def verify(token: str, jwks: dict[str, Any], audience: str) -> dict[str, Any]:
        # A plain JOSE library and the published keys alone, as a service would.
        claims = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"]).claims  # type: ignore[arg-type]
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": server.settings.issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
        ).validate(claims)
        return claims

    first = published()
    [old_kid] = [key["kid"] for key in first["keys"]]
    assert set(first["keys"][0]) == {"kty", "n", "e", "kid", "alg", "use"}
    assert verify(old_token, first, DECISIONS_AUDIENCE)["client_id"] == client_id
    assert verify(old_person, first, ADMIN_AUDIENCE)["sub"]
    assert header_of(old_token)["kid"] == header_of(old_person)["kid"] == old_kid

    rotated = run_cli(server.settings, "keys", "rotate")
    assert rotated.exit_code == 0, rotated.output
    second = published()
    new_kid = second["keys"][0]["kid"]
    assert new_kid != old_kid and {k["kid"] for k in second["keys"]} == {new_kid, old_kid}
    new_token = client_token(server, client_id, secret)
    assert header_of(new_token)["kid"] == new_kid
    assert header_of(server.admin().headers["Authorization"].split()[1])["kid"] == new_kid
    # No downtime: tokens signed before the rotation keep working until they expire.
    assert check(server, old_token).status_code == 200
    assert check(server, new_token).status_code == 200
    assert server.client(old_person).get("/workspaces").status_code == 200
    verify(old_token, second, DECISIONS_AUDIENCE)
    verify(new_token, second, DECISIONS_AUDIENCE)
    listed = run_cli(server.settings, "keys", "list").output
    assert f"{new_kid}  RS256  signing" in listed and f"{old_kid}  RS256  verifying" in listed

    # The signing key cannot be retired; a previous one can (it leaked, say): at once.
    assert run_cli(server.settings, "keys", "retire", new_kid).exit_code == 1
    # A kid (a base64url thumbprint) may start with "-": still the argument, not an option.
    unknown = run_cli(server.settings, "keys", "retire", "-no-such-key")
    assert unknown.exit_code == 1 and "No signing key '-no-such-key'" in unknown.output
    assert run_cli(server.settings, "keys", "retire", old_kid).exit_code == 0
    assert [k["kid"] for k in published()["keys"]] == [new_kid]
    problem = assert_problem(check(server, old_token), 401, "unauthorized", "retired")
    assert problem["reason"] == "retired-key"
    assert server.client(old_person).get("/workspaces").status_code == 401
    assert check(server, new_token).status_code == 200

    # Without intervention, a previous key retires once its tokens have all expired.
    run_cli(server.settings, "keys", "rotate")
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            session.execute(
                update(SigningKey)
                .where(SigningKey.kid == new_kid)
                .values(
                    deactivated_at=utcnow()
                    - timedelta(seconds=server.settings.client_token_ttl + 10)
                )
            )
    finally:
        db.dispose()
    assert new_kid not in {k["kid"] for k in published()["keys"]}
    assert assert_problem(check(server, new_token), 401, "unauthorized")["reason"] == "retired-key"
    third = run_cli(server.settings, "keys", "rotate")
    assert f"Retired (all its tokens have expired): {new_kid}" in third.output
    assert len(published()["keys"]) == 2  # the signing key and the one before it

    fresh = server.admin()  # the first admin token died with the key that signed it
    rotations = audit(fresh, "signing_key.rotated")
    assert len(rotations) == 3 and rotations[-1]["target_id"] == new_kid
    assert [e["target_id"] for e in audit(fresh, "signing_key.retired")] == [old_kid]


def test_metadata_names_the_endpoints(server: LiveServer) -> None:
    with server.client() as anonymous:
        meta = anonymous.get("/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == server.settings.issuer
    assert meta["token_endpoint"] == "http://ringfence.test/oauth/token"
    assert meta["jwks_uri"].endswith("/.well-known/jwks.json")
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert "decisions:check" in meta["scopes_supported"]


# -- bad tokens -------------------------------------------------------------------------


def test_bad_service_tokens_get_401_problems_and_are_counted(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    client_id, _ = create_client(server.settings, "decisions:check")
    claims = {"sub": client_id, "client_id": client_id, "scope": "decisions:check"}
    good = sign_token(server, claims, DECISIONS_AUDIENCE, 600)
    assert check(server, good).status_code == 200
    head, body, _ = good.split(".")
    kid = header_of(good)["kid"]
    [ours] = [k for k in rows(server, SigningKey) if k.kid == kid]
    stranger = RSAKey.generate_key(2048)

    def hs256(secret: bytes) -> str:
        signing_input = f"{b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}.{body}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            other_issuer = KeyRing(
                session, replace(server.settings, token_issuer="https://evil.example")
            ).sign(claims, DECISIONS_AUDIENCE, 600)
            no_jti = KeyRing(session, server.settings).sign(
                {**claims, "jti": None}, DECISIONS_AUDIENCE, 600
            )
    finally:
        db.dispose()
    public_pem = RSAKey.import_key(ours.public_jwk).as_pem(private=False)
    widened = b64({**claims_of(good), "scope": "decisions:check tokens:introspect"})
    cases = {
        "malformed": ["abc", "a.b.c", f"{head}.{body}", f"{head}.!!!.x", "e30.e30.e30"],
        "expired": [sign_token(server, claims, DECISIONS_AUDIENCE, -60)],
        "bad-signature": [
            jwt.encode(header_of(good), claims_of(good), stranger),
            f"{head}.{widened}.{good.split('.')[2]}",  # claims changed after signing
        ],
        "unknown-key": [
            jwt.encode(
                {"alg": "RS256", "typ": "at+jwt", "kid": stranger.thumbprint()},
                claims_of(good),
                stranger,
            )
        ],
        "wrong-audience": [sign_token(server, claims, "someone-else", 600)],
        "wrong-issuer": [other_issuer],
        "unsupported-algorithm": [
            f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{body}.",
            hs256(public_pem),  # the public key as an HMAC secret: the classic confusion
            hs256(json.dumps(ours.public_jwk).encode()),
        ],
    }
    cases["malformed"].append(no_jti)
    counted = refusal_counts(server)
    for reason, tokens in cases.items():
        for token in tokens:
            for path in ("/v1/check", "/access/v1/evaluation"):
                response = check(server, token, path)
                problem = assert_problem(response, 401, "unauthorized")
                assert problem["reason"] == reason, (token, problem)
                assert response.headers["WWW-Authenticate"].startswith(
                    'Bearer error="invalid_token"'
                )
    # Counted by reason, never audited one by one on the decision path.
    after = refusal_counts(server)
    for reason, tokens in cases.items():
        assert after[reason] - counted[reason] == 2 * len(tokens), reason
    assert audit(admin, "auth.token_rejected") == []
    assert check(server, good).status_code == 200
