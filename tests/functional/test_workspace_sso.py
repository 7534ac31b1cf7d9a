"""A workspace's own single sign-on connection, through the admin API over real HTTP:
owners set it up (issuer, client, sealed secret), edit and disable it; nobody else sees
it; the secret never comes back; every change is audited. The provider is the real
OpenID Connect provider of tests/oidc_provider.py on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import SsoConnection, SsoDomain, SsoLink, utcnow
from gateway.db.session import make_engine
from gateway.identity.security import seal
from tests.dns_server import Zone, running_dns
from tests.helpers import (
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
)
from tests.oidc_provider import OidcProvider, running_provider

PUBLIC_URL = "http://ringfence.test"  # the settings fixture's public URL
SECRET = "provider-secret-" + "x" * 20


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    # The redirect URI names the connection's id: each test sets it once it knows it.
    with running_provider("ringfence-acme", SECRET, "") as running:
        yield running


@pytest.fixture
def allow_private(request: pytest.FixtureRequest) -> bool:
    """RINGFENCE_SSO_ALLOW_PRIVATE_ISSUERS (parametrize indirectly): on by default, as
    the provider runs on loopback over http."""
    return bool(getattr(request, "param", True))


@pytest.fixture
def dns() -> Iterator[Zone]:
    """The DNS server the gateway asks for TXT records (tests/dns_server.py)."""
    with running_dns() as zone:
        yield zone


@pytest.fixture
def settings(settings: Settings, allow_private: bool, dns: Zone) -> Settings:
    return replace(
        settings,
        sso_allow_private_issuers=allow_private,
        dns_nameservers=dns.address,
        dns_timeout=2.0,
    )


def connection_body(provider: OidcProvider, **extra: object) -> dict[str, object]:
    return {
        "workspace": "acme",
        "name": "Acme IdP",
        "issuer": provider.issuer,
        "client_id": "ringfence-acme",
        "client_secret": SECRET,
        **extra,
    }


def people(server: LiveServer) -> dict[str, httpx.Client]:
    """acme's owner Olivia, acme's admin Alice, globex's owner Gina, signed in."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _, olivia = invite_and_accept(server, root, "olivia@acme.test", "Olivia", [("acme", "owner")])
    _, alice = invite_and_accept(server, root, "alice@acme.test", "Alice", [("acme", "admin")])
    _, gina = invite_and_accept(server, root, "gina@globex.test", "Gina", [("globex", "owner")])
    return {"root": root, "olivia": olivia, "alice": alice, "gina": gina}


def add_connection_row(settings: Settings, workspace: str) -> int:
    """A connection written straight to the database (for walks whose settings refuse a
    loopback issuer); its id."""
    db = make_engine(settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            row = SsoConnection(
                workspace_slug=workspace,
                name=f"{workspace} IdP",
                issuer=f"https://idp.{workspace}.example",
                client_id=f"ringfence-{workspace}",
                sealed_client_secret=seal(settings.secret_key, {"secret": SECRET}),
            )
            session.add(row)
            session.commit()
            return row.id
    finally:
        db.dispose()


def add_link_row(settings: Settings, connection_id: int, user_id: int, subject: str) -> None:
    """A person linked to a connection's subject, written straight to the database (as
    their first sign-on through it would)."""
    db = make_engine(settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            session.add(SsoLink(connection_id=connection_id, user_id=user_id, subject=subject))
            session.commit()
    finally:
        db.dispose()


def stored_connections(server: LiveServer) -> list[SsoConnection]:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            rows = list(session.scalars(select(SsoConnection)))
            session.expunge_all()
            return rows
    finally:
        db.dispose()


def test_an_owner_sets_up_edits_and_checks_the_workspace_connection(
    server: LiveServer, provider: OidcProvider
) -> None:
    who = people(server)
    olivia = who["olivia"]
    made = olivia.post("/sso-connections", json=connection_body(provider, jit_role="viewer"))
    assert made.status_code == 201, made.text
    body = made.json()
    cid = body["id"]
    assert body["workspace"] == "acme" and body["client_secret_set"] is True
    assert body["redirect_uri"] == f"{PUBLIC_URL}/auth/sso/connections/{cid}/callback"
    assert body["enabled"] is True and body["require_sso"] is False
    assert body["jit_role"] == "viewer"
    assert SECRET not in made.text
    assert olivia.get("/sso-connections").json() == [body]
    assert olivia.get(f"/sso-connections/{cid}").json() == body
    # Sealed at rest.
    [row] = stored_connections(server)
    assert SECRET not in row.sealed_client_secret

    # One per workspace.
    again = olivia.post("/sso-connections", json=connection_body(provider))
    assert_problem(again, 409, "conflict", "already")

    # A new issuer needs the secret again; the same issuer does not.
    moved = olivia.patch(f"/sso-connections/{cid}", json={"issuer": provider.issuer + "/other"})
    assert_problem(moved, 422, "invalid-input", "client secret again")
    renamed = olivia.patch(f"/sso-connections/{cid}", json={"name": "Acme Okta"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Acme Okta"
    off = olivia.patch(f"/sso-connections/{cid}", json={"jit_role": None, "require_sso": True})
    assert off.json()["jit_role"] is None and off.json()["require_sso"] is True

    # The provider answers as the sign-in needs.
    check = olivia.post(f"/sso-connections/{cid}/check")
    assert check.status_code == 200 and check.json()["ok"] is True, check.text

    events = who["root"].get("/audit", params={"action": "sso", "page_size": 100}).json()
    actions = [e["action"] for e in reversed(events)]
    assert actions == [
        "sso.connection.created",
        "sso.connection.jit_enabled",
        "sso.connection.updated",
        "sso.connection.updated",
        "sso.connection.jit_disabled",
    ]
    assert SECRET not in json.dumps(events)
    assert {e["workspace"] for e in events} == {"acme"}


def test_only_the_workspaces_owners_see_or_change_its_connection(
    server: LiveServer, provider: OidcProvider
) -> None:
    who = people(server)
    cid = who["olivia"].post("/sso-connections", json=connection_body(provider)).json()["id"]
    before = [(c.name, c.issuer, c.sealed_client_secret) for c in stored_connections(server)]
    for name in ("alice", "gina"):  # acme's admin; globex's owner
        client = who[name]
        assert client.get("/sso-connections").json() == []
        assert client.get("/sso-connections", params={"workspace": "acme"}).json() == []
        assert_problem(client.get(f"/sso-connections/{cid}"), 404, "not-found")
        assert_problem(
            client.patch(f"/sso-connections/{cid}", json={"name": "Mine"}), 404, "not-found"
        )
        assert_problem(client.post(f"/sso-connections/{cid}/check"), 404, "not-found")
        refused = client.post("/sso-connections", json=connection_body(provider))
        assert_problem(refused, 403, "forbidden", "sso:manage")
    after = [(c.name, c.issuer, c.sealed_client_secret) for c in stored_connections(server)]
    assert after == before


def test_bad_connections_are_refused_with_each_field_named(
    server: LiveServer, provider: OidcProvider
) -> None:
    olivia = people(server)["olivia"]
    cases = [
        ({"issuer": "ftp://idp.example"}, "issuer"),
        ({"issuer": "https://idp.example/?tenant=1"}, "issuer"),
        ({"jit_role": "superadmin"}, None),  # an installation role: never one workspace's
        ({"jit_role": "no-such-role"}, None),
    ]
    for extra, field in cases:
        refused = olivia.post("/sso-connections", json=connection_body(provider, **extra))
        problem = assert_problem(refused, 422, "invalid-input")
        if field:
            assert field in problem["errors"], problem
    missing = {k: v for k, v in connection_body(provider).items() if k != "client_secret"}
    assert_problem(olivia.post("/sso-connections", json=missing), 422, "invalid-input")
    assert stored_connections(server) == []


@pytest.mark.parametrize("allow_private", [False], indirect=True)
def test_without_the_setting_an_issuer_must_be_https_on_a_public_address(
    server: LiveServer, provider: OidcProvider
) -> None:
    olivia = people(server)["olivia"]
    plain = olivia.post("/sso-connections", json=connection_body(provider))
    assert_problem(plain, 422, "invalid-input", "RINGFENCE_SSO_ALLOW_PRIVATE_ISSUERS")
    loopback = olivia.post(
        "/sso-connections", json=connection_body(provider, issuer="https://127.0.0.1:8443")
    )
    assert_problem(loopback, 422, "invalid-input", "loopback")


# -- verified domains --------------------------------------------------------------------


def checked_days_ago(server: LiveServer, days: int) -> None:
    """Every domain's last check ``days`` ago (the upkeep rechecks those due)."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            session.execute(
                update(SsoDomain).values(last_checked_at=utcnow() - timedelta(days=days))
            )
            session.commit()
    finally:
        db.dispose()


def audit_actions(root: httpx.Client, prefix: str = "sso.domain") -> list[str]:
    events = root.get("/audit", params={"action": prefix, "page_size": 100}).json()
    return [e["action"] for e in reversed(events)]


def test_a_workspace_proves_its_domain_by_a_txt_record(server: LiveServer, dns: Zone) -> None:
    who = people(server)
    olivia, root = who["olivia"], who["root"]
    claimed = olivia.post("/sso-domains", json={"workspace": "acme", "domain": " Acme.TEST. "})
    assert claimed.status_code == 201, claimed.text
    claim = claimed.json()
    did, name, value = claim["id"], claim["txt_name"], claim["txt_value"]
    assert (claim["domain"], claim["verified"], name) == (
        "acme.test",
        False,
        "_ringfence.acme.test",
    )
    assert value.startswith("ringfence-domain-verification=") and len(value) > 40
    assert olivia.get("/sso-domains").json() == [claim]
    again = olivia.post("/sso-domains", json={"workspace": "acme", "domain": "acme.test"})
    assert_problem(again, 409, "conflict", "already")

    # Not published yet, then published wrong: refused, audited, nothing changed.
    missing = olivia.post(f"/sso-domains/{did}/verify")
    assert_problem(missing, 409, "domain-not-verified", "_ringfence.acme.test does not exist")
    dns.publish(name, "ringfence-domain-verification=someone-elses", "v=spf1 -all")
    wrong = olivia.post(f"/sso-domains/{did}/verify")
    assert_problem(wrong, 409, "domain-not-verified", "not this workspace's value")
    assert olivia.get(f"/sso-domains/{did}").json() == claim

    dns.publish(name, "v=spf1 -all", value)
    verified = olivia.post(f"/sso-domains/{did}/verify")
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True and verified.json()["verified_at"]

    # DNS away: a clear error, and the domain stays verified.
    dns.failing = True
    assert_problem(olivia.post(f"/sso-domains/{did}/verify"), 503, "dns-unavailable")
    assert olivia.get(f"/sso-domains/{did}").json()["verified"] is True
    dns.failing = False

    # The record gone: checking again unverifies it.
    dns.withdraw(name)
    lapsed = olivia.post(f"/sso-domains/{did}/verify")
    assert lapsed.status_code == 200 and lapsed.json()["verified"] is False, lapsed.text
    assert "does not exist" in lapsed.json()["last_check"]
    assert audit_actions(root) == [
        "sso.domain.claimed",
        "sso.domain.verify_refused",
        "sso.domain.verify_refused",
        "sso.domain.verified",
        "sso.domain.verify_refused",
        "sso.domain.unverified",
    ]
    assert olivia.delete(f"/sso-domains/{did}").status_code == 204
    assert olivia.get("/sso-domains").json() == []

    for bad in ("localhost", "10.0.0.1", "acme..test", "-acme.test", "a" * 64 + ".test"):
        refused = olivia.post("/sso-domains", json={"workspace": "acme", "domain": bad})
        assert_problem(refused, 422, "invalid-input")


def test_a_domain_is_verified_by_one_workspace_at_a_time(server: LiveServer, dns: Zone) -> None:
    who = people(server)
    olivia, gina, root = who["olivia"], who["gina"], who["root"]
    create_workspaces(root, "initech")
    acme = olivia.post("/sso-domains", json={"workspace": "acme", "domain": "shared.test"}).json()
    # Claiming first blocks nobody: globex may claim it too while it is unverified.
    globex = gina.post("/sso-domains", json={"workspace": "globex", "domain": "shared.test"})
    assert globex.status_code == 201, globex.text
    globex_claim = globex.json()
    dns.publish("_ringfence.shared.test", acme["txt_value"], globex_claim["txt_value"])
    assert olivia.post(f"/sso-domains/{acme['id']}/verify").json()["verified"] is True

    refused = gina.post(f"/sso-domains/{globex_claim['id']}/verify")
    assert_problem(refused, 409, "domain-not-verified", "verified by another workspace")
    assert gina.get(f"/sso-domains/{globex_claim['id']}").json()["verified"] is False
    late = root.post("/sso-domains", json={"workspace": "initech", "domain": "shared.test"})
    assert_problem(late, 409, "conflict", "verified by another workspace")
    # Neither saw the other's claim.
    assert [d["workspace"] for d in gina.get("/sso-domains").json()] == ["globex"]
    assert_problem(gina.get(f"/sso-domains/{acme['id']}"), 404, "not-found")
    assert_problem(gina.post(f"/sso-domains/{acme['id']}/verify"), 404, "not-found")
    assert_problem(gina.delete(f"/sso-domains/{acme['id']}"), 404, "not-found")
    assert olivia.get(f"/sso-domains/{acme['id']}").json()["verified"] is True

    # acme's record goes; the scheduled upkeep's recheck (beat's task, through this app's
    # housekeeping port) unverifies it; then globex may verify.
    from mailer.housekeeping import recheck_domains

    dns.publish("_ringfence.shared.test", globex_claim["txt_value"])
    assert recheck_domains() == 0  # verified a moment ago: not due
    checked_days_ago(server, 2)
    assert recheck_domains() == 1
    assert olivia.get(f"/sso-domains/{acme['id']}").json()["verified"] is False
    assert gina.post(f"/sso-domains/{globex_claim['id']}/verify").json()["verified"] is True
    assert recheck_domains() == 0  # checked just now: not due again for a day
