"""Signing in through a workspace's own connection, over real HTTP, against real OpenID
Connect providers (tests/oidc_provider.py) and a real DNS server (tests/dns_server.py)
on loopback: people of a verified domain are routed to it, may be required to use it
(password refused, by the domain alone), may be provisioned just in time; the connection
is believed about its workspace's verified domains only; forged, replayed and misplaced
answers are refused; an SSO-only person deactivated, or whose connection is turned off,
loses access at once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import TokenPurpose, UserToken, utcnow
from gateway.db.session import make_engine
from tests.dns_server import Zone, running_dns
from tests.helpers import (
    PASSWORD,
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
    onboard,
    user_id_of,
)
from tests.oidc_provider import OidcProvider, Person, running_provider

PUBLIC_URL = "http://ringfence.test"
SECRET = "provider-secret-" + "y" * 20


@pytest.fixture
def dns() -> Iterator[Zone]:
    with running_dns() as zone:
        yield zone


@pytest.fixture
def acme_idp() -> Iterator[OidcProvider]:
    with running_provider("ringfence-acme", SECRET, "") as running:
        yield running


@pytest.fixture
def settings(settings: Settings, dns: Zone) -> Settings:
    return replace(
        settings, sso_allow_private_issuers=True, dns_nameservers=dns.address, dns_timeout=2.0
    )


@dataclass
class Sso:
    """A workspace with its connection and a verified domain."""

    connection: dict[str, Any]
    owner: httpx.Client

    @property
    def id(self) -> int:
        return int(self.connection["id"])

    def set(self, **fields: Any) -> dict[str, Any]:
        changed = self.owner.patch(f"/sso-connections/{self.id}", json=fields)
        assert changed.status_code == 200, changed.text
        return changed.json()  # type: ignore[no-any-return]


def set_up_sso(
    server: LiveServer,
    dns: Zone,
    provider: OidcProvider,
    owner: httpx.Client,
    workspace: str,
    domain: str,
    **fields: Any,
) -> Sso:
    """``workspace``'s connection to ``provider`` and ``domain`` verified for it."""
    made = owner.post(
        "/sso-connections",
        json={
            "workspace": workspace,
            "name": f"{workspace} IdP",
            "issuer": provider.issuer,
            "client_id": provider.client.client_id,
            "client_secret": SECRET,
            **fields,
        },
    )
    assert made.status_code == 201, made.text
    provider.client.redirect_uri = made.json()["redirect_uri"]
    claim = owner.post("/sso-domains", json={"workspace": workspace, "domain": domain}).json()
    dns.publish(claim["txt_name"], claim["txt_value"])
    assert owner.post(f"/sso-domains/{claim['id']}/verify").json()["verified"] is True
    return Sso(made.json(), owner)


class Browser:
    """A user agent: one cookie jar, redirects followed by hand; ``ringfence.test`` (the
    public URL) is the live server."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = httpx.Client(timeout=30)

    def get(self, url: str) -> httpx.Response:
        if url.startswith("/"):
            url = self.server.url + url
        return self.http.get(url.replace(PUBLIC_URL, self.server.url, 1))

    def to_callback(self, connection_id: int, provider: OidcProvider) -> str:
        start = self.get(f"/auth/sso/connections/{connection_id}/login")
        assert start.status_code == 302, start.text
        assert start.headers["Location"].startswith(f"{provider.issuer}/authorize?")
        back = self.get(start.headers["Location"])
        assert back.status_code == 302, back.text
        callback = f"{PUBLIC_URL}/auth/sso/connections/{connection_id}/callback?"
        assert back.headers["Location"].startswith(callback), back.headers["Location"]
        return str(back.headers["Location"])

    def sign_on(self, connection_id: int, provider: OidcProvider) -> httpx.Response:
        return self.get(self.to_callback(connection_id, provider))


def exchange(server: LiveServer, code: str) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/sso/exchange", json={"code": code})


def signed_on(server: LiveServer, sso: Sso, provider: OidcProvider) -> httpx.Client:
    """Sign on as ``provider.user``; a client holding the session's access token."""
    answer = Browser(server).sign_on(sso.id, provider)
    assert answer.status_code == 200, answer.text
    tokens = exchange(server, answer.json()["code"])
    assert tokens.status_code == 200, tokens.text
    return server.client(tokens.json()["access_token"])


def password_login(server: LiveServer, email: str, password: str = PASSWORD) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/login", json={"email": email, "password": password})


def actions(root: httpx.Client, prefix: str) -> list[str]:
    events = root.get("/audit", params={"action": prefix, "page_size": 200}).json()
    return [e["action"] for e in reversed(events)]


def refusal_reasons(root: httpx.Client) -> list[str]:
    events = root.get("/audit", params={"action": "auth.sso_refused", "page_size": 200}).json()
    return [e["after"]["reason"] for e in reversed(events)]


@pytest.fixture
def acme(server: LiveServer, dns: Zone, acme_idp: OidcProvider) -> Iterator[Sso]:
    """acme (owner Olivia, member Eve with a password) and globex (owner Gina), acme's
    connection to acme_idp and acme.test verified for acme."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _, olivia = invite_and_accept(server, root, "olivia@acme.test", "Olivia", [("acme", "owner")])
    invite_and_accept(server, root, "eve@acme.test", "Eve", [("acme", "viewer")])
    invite_and_accept(server, root, "gina@globex.test", "Gina", [("globex", "owner")])
    yield set_up_sso(server, dns, acme_idp, olivia, "acme", "acme.test")


def test_people_of_a_verified_domain_sign_in_through_their_workspaces_connection(
    server: LiveServer, acme: Sso, acme_idp: OidcProvider
) -> None:
    root = server.admin()
    acme_idp.user = Person("idp-eve", "eve@acme.test", name="Eve at the IdP")
    eve = signed_on(server, acme, acme_idp)
    assert eve.get("/workspaces").json()[0]["slug"] == "acme"
    logins = root.get("/audit", params={"action": "auth.sso_login", "page_size": 10}).json()
    assert logins[0]["after"]["email"] == "eve@acme.test"
    assert logins[0]["after"]["issuer"] == acme_idp.issuer

    # Linked: the subject signs in even after the provider's address changed.
    acme_idp.user = Person("idp-eve", "eve.renamed@acme.test")
    assert signed_on(server, acme, acme_idp).get("/workspaces").status_code == 200
    # Another subject claiming Eve's address cannot take her account over.
    acme_idp.user = Person("idp-impostor", "eve@acme.test")
    refused = Browser(server).sign_on(acme.id, acme_idp)
    assert_problem(refused, 403, "sso-refused", "linked to another identity")


def test_a_connection_is_believed_only_about_its_workspaces_verified_domains(
    server: LiveServer, acme: Sso, acme_idp: OidcProvider, dns: Zone
) -> None:
    root = server.admin()
    users_before = root.get("/users").json()
    # acme's provider vouching for globex's owner (or anyone outside acme.test): refused,
    # whatever it says, even with provisioning on.
    acme.set(jit_role="viewer")
    for email in ("gina@globex.test", "someone@elsewhere.test"):
        acme_idp.user = Person(f"idp-{email}", email)
        answer = Browser(server).sign_on(acme.id, acme_idp)
        assert_problem(answer, 403, "sso-refused", f"not the one for {email}")
    # The installation's operators: never signed in by a workspace's connection.
    ops = invite_and_accept(server, root, "ops@acme.test", "Ops", [("acme", "viewer")])[0]
    granted = root.post(f"/users/{ops}/grants", json={"workspace": "*", "role": "superadmin"})
    assert granted.status_code == 201, granted.text
    acme_idp.user = Person("idp-ops", "ops@acme.test")
    assert_problem(Browser(server).sign_on(acme.id, acme_idp), 403, "sso-refused", "operators")
    emails_before = {u["email"] for u in users_before}
    assert {u["email"] for u in root.get("/users").json()} == emails_before | {"ops@acme.test"}
    reasons = refusal_reasons(root)
    assert [r.split(" (")[0] for r in reasons] == [
        "address outside the workspace's verified domains",
        "address outside the workspace's verified domains",
        "an installation operator",
    ]

    # The domain's record gone and its verification lapsed: the connection no longer
    # speaks for acme.test, even for a linked person.
    acme_idp.user = Person("idp-eve", "eve@acme.test")
    signed_on(server, acme, acme_idp)
    dns.txt.clear()
    [claim] = acme.owner.get("/sso-domains").json()
    assert acme.owner.post(f"/sso-domains/{claim['id']}/verify").json()["verified"] is False
    assert_problem(Browser(server).sign_on(acme.id, acme_idp), 403, "sso-refused", "not the one")


def test_required_sso_refuses_passwords_by_the_domain_alone(
    server: LiveServer, acme: Sso, acme_idp: OidcProvider
) -> None:
    root = server.admin()
    assert password_login(server, "eve@acme.test").status_code == 200  # not required yet
    acme.set(require_sso=True)
    answers = [
        password_login(server, "eve@acme.test"),  # the right password
        password_login(server, "eve@acme.test", "not her password at all"),
        password_login(server, "nobody@acme.test"),  # no account
        password_login(server, "EVE@Acme.Test"),
    ]
    problems = [assert_problem(a, 403, "sso-required", "single sign-on") for a in answers]
    # The same answer whoever it is: only the domain speaks.
    assert {(p["detail"], p["sso_login"], p["domain"]) for p in problems} == {
        (problems[0]["detail"], f"/auth/sso/connections/{acme.id}/login", "acme.test")
    }
    assert actions(root, "auth.sso_required").count("auth.sso_required") == 4
    # Other domains are untouched; an operator at the domain keeps the password (only
    # with the right one: a wrong one is told the same as everyone).
    assert password_login(server, "gina@globex.test").status_code == 200
    ops = onboard(server, root, "ops@acme.test", "Ops", [("acme", "viewer")])
    assert root.post(f"/users/{ops}/grants", json={"workspace": "*", "role": "superadmin"})
    assert password_login(server, "ops@acme.test").status_code == 200
    wrong = password_login(server, "ops@acme.test", "a wrong password here")
    assert assert_problem(wrong, 403, "sso-required")["detail"] == problems[0]["detail"]
    # Through the connection, Eve gets in.
    acme_idp.user = Person("idp-eve", "eve@acme.test")
    assert signed_on(server, acme, acme_idp).get("/workspaces").status_code == 200
    # Turned off, the connection holds nobody to it.
    acme.set(enabled=False)
    assert password_login(server, "eve@acme.test").status_code == 200


def test_just_in_time_provisioning_is_off_until_the_owners_turn_it_on(
    server: LiveServer, acme: Sso, acme_idp: OidcProvider
) -> None:
    root = server.admin()
    acme_idp.user = Person("idp-newbie", "newbie@acme.test", name="Newbie Doe")
    refused = Browser(server).sign_on(acme.id, acme_idp)
    assert_problem(refused, 403, "sso-refused", "no account for newbie@acme.test")
    assert "newbie@acme.test" not in {u["email"] for u in root.get("/users").json()}

    assert acme.set(jit_role="editor")["jit_role"] == "editor"
    newbie = signed_on(server, acme, acme_idp)
    assert newbie.get("/workspaces").json()[0]["slug"] == "acme"
    [user] = [u for u in root.get("/users").json() if u["email"] == "newbie@acme.test"]
    assert user["status"] == "active" and user["name"] == "Newbie Doe"
    assert user["roles"] == {"acme": ["editor"]}
    assert "sso.provisioned" in actions(root, "sso.provisioned")
    provisioned = root.get("/audit", params={"action": "sso.provisioned"}).json()[0]
    assert provisioned["workspace"] == "acme" and provisioned["after"]["roles"] == {
        "acme": ["editor"]
    }
    jit = [a for a in actions(root, "sso.connection") if "jit" in a]
    assert jit == ["sso.connection.jit_enabled"]
    # No password: the account's only way in is the connection.
    assert_problem(password_login(server, "newbie@acme.test"), 401, "invalid-credentials")
    # Signing in again finds the same account.
    assert signed_on(server, acme, acme_idp).get("/workspaces").status_code == 200
    assert [u["email"] for u in root.get("/users").json()].count("newbie@acme.test") == 1


def test_an_sso_only_person_loses_access_at_once(
    server: LiveServer, acme: Sso, acme_idp: OidcProvider
) -> None:
    root = server.admin()
    acme.set(jit_role="viewer")
    acme_idp.user = Person("idp-sam", "sam@acme.test")
    sam = signed_on(server, acme, acme_idp)
    acme_idp.user = Person("idp-kim", "kim@acme.test")
    kim = signed_on(server, acme, acme_idp)
    acme_idp.user = Person("idp-eve", "eve@acme.test")
    eve = signed_on(server, acme, acme_idp)  # Eve has a password too
    for client in (sam, kim, eve):
        assert client.get("/workspaces").status_code == 200

    # Deactivated (by an admin here; by the company directory over SCIM the same way).
    sam_id = user_id_of(root, "sam@acme.test")
    assert acme.owner.post(f"/users/{sam_id}/deactivate").status_code == 200
    assert_problem(sam.get("/workspaces"), 401, "unauthorized")
    acme_idp.user = Person("idp-sam", "sam@acme.test")
    assert_problem(Browser(server).sign_on(acme.id, acme_idp), 403, "sso-refused", "deactivated")

    # The connection turned off: Kim (no password) is out at once; Eve keeps her session.
    acme.set(enabled=False)
    assert_problem(kim.get("/workspaces"), 401, "unauthorized")
    assert eve.get("/workspaces").status_code == 200
    disabled = root.get("/audit", params={"action": "sso.connection.disabled"}).json()[0]
    assert disabled["after"]["sessions_ended_of"] == [user_id_of(root, "kim@acme.test")]
    off = Browser(server).get(f"/auth/sso/connections/{acme.id}/login")
    assert_problem(off, 404, "sso-not-configured", "turned off")


# -- abuse -----------------------------------------------------------------------------


def test_forged_replayed_and_expired_answers_and_codes_are_refused(
    server: LiveServer, acme: Sso, acme_idp: OidcProvider
) -> None:
    root = server.admin()
    acme_idp.user = Person("idp-eve", "eve@acme.test")
    browser = Browser(server)
    callback = browser.to_callback(acme.id, acme_idp)
    assert_problem(browser.get(callback.replace("state=", "state=forged", 1)), 400, "sso-failed")
    # The real answer in another browser (login CSRF): no state there.
    assert_problem(Browser(server).get(callback), 400, "sso-failed", "state")
    answer = browser.get(callback)
    assert answer.status_code == 200, answer.text
    assert_problem(browser.get(callback), 400, "sso-failed", "state")  # replayed
    code = answer.json()["code"]
    assert exchange(server, code).status_code == 200
    assert_problem(exchange(server, code), 401, "unauthorized")  # used
    # An expired code (its minute passed).
    fresh = Browser(server).sign_on(acme.id, acme_idp).json()["code"]
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            session.execute(
                update(UserToken)
                .where(UserToken.purpose == TokenPurpose.SSO_CODE, UserToken.used_at.is_(None))
                .values(expires_at=utcnow())
            )
            session.commit()
    finally:
        db.dispose()
    assert_problem(exchange(server, fresh), 401, "unauthorized", "expired")
    # A wrong code at the provider's end: the provider refuses it.
    wrong = callback.split("?")[0] + "?code=not-a-code&state=whatever"
    assert_problem(Browser(server).get(wrong), 400, "sso-failed")
    # Audited by sample (the first refusal of each kind from this source).
    sampled = {e["action"] for e in root.get("/audit", params={"action": "auth"}).json()}
    assert {"auth.sso_failed", "auth.sso_code_refused"} <= sampled


def test_an_answer_for_another_workspaces_connection_is_refused(
    server: LiveServer, acme: Sso, acme_idp: OidcProvider, dns: Zone
) -> None:
    root = server.admin()
    gina = server.login("gina@globex.test", PASSWORD)
    with running_provider("ringfence-globex", SECRET, "") as globex_idp:
        globex = set_up_sso(server, dns, globex_idp, gina, "globex", "globex.test")
        # globex's provider answers for globex's connection; the answer is carried to
        # acme's callback instead (or acme's round trip ends at globex's): no such
        # round trip was started there, in this browser or any.
        globex_idp.user = Person("idp-gina", "gina@globex.test")
        browser = Browser(server)
        to_globex = browser.to_callback(globex.id, globex_idp)
        to_acme = to_globex.replace(f"/connections/{globex.id}/", f"/connections/{acme.id}/")
        assert_problem(browser.get(to_acme), 400, "sso-failed", "state")
        acme_idp.user = Person("idp-eve", "eve@acme.test")
        other = Browser(server)
        from_acme = other.to_callback(acme.id, acme_idp)
        moved = from_acme.replace(f"/connections/{acme.id}/", f"/connections/{globex.id}/")
        assert_problem(other.get(moved), 400, "sso-failed", "state")
        # The right browser at the right callback still works, once.
        assert browser.get(to_globex).status_code == 200
    # Nobody was signed in or linked by the misplaced answers.
    logins = root.get("/audit", params={"action": "auth.sso_login"}).json()
    assert [e["after"]["email"] for e in logins] == ["gina@globex.test"]
