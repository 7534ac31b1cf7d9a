"""OpenID Connect Back-Channel Logout 1.0 for a workspace's connection, over real HTTP:
the real OpenID Connect providers of tests/oidc_provider.py (each with its own keys) sign
people in through acme's and globex's connections and then post logout tokens to the
connection's back channel. A valid token ends exactly the sessions its subject (or its
provider session, ``sid``) started through that connection, at once; every token the
spec says to refuse is refused (400, nothing ends) and audited; replays are caught; the
upkeep forgets what it no longer needs.

And the owners' side: the accounts linked to their connection, and unlinking one, which
ends the sessions that person started through it, says whether they have another way
in, and answers for anyone outside the workspace as for an unknown id."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from joserfc.jwk import OctKey, RSAKey
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import AuthSession, SsoLogoutToken, utcnow
from gateway.db.session import make_engine
from tests.dns_server import Zone, running_dns
from tests.functional.test_workspace_sso_sign_in import (
    PUBLIC_URL,
    SECRET,
    Browser,
    Sso,
    exchange,
    password_login,
    set_up_sso,
)
from tests.helpers import (
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
    user_id_of,
)
from tests.oidc_provider import (
    BACKCHANNEL_LOGOUT_EVENT,
    OMIT,
    OidcProvider,
    Person,
    running_provider,
)


@pytest.fixture
def dns() -> Iterator[Zone]:
    with running_dns() as zone:
        yield zone


@pytest.fixture
def settings(settings: Settings, dns: Zone) -> Settings:
    return replace(
        settings, sso_allow_private_issuers=True, dns_nameservers=dns.address, dns_timeout=2.0
    )


@dataclass
class World:
    server: LiveServer
    root: httpx.Client
    acme: Sso
    acme_idp: OidcProvider
    globex: Sso
    globex_idp: OidcProvider

    def logout(self, token: str | None, connection: int | None = None) -> httpx.Response:
        """The provider's back-channel post of ``token`` (a form, as the spec says)."""
        target = self.acme.id if connection is None else connection
        with self.server.client() as provider:
            return provider.post(
                f"/auth/sso/connections/{target}/backchannel-logout",
                data={} if token is None else {"logout_token": token},
            )


@pytest.fixture
def world(server: LiveServer, dns: Zone) -> Iterator[World]:
    """acme (owner Olivia, Eve with a password) with its connection to acme_idp
    (provisioning viewers) and acme.test verified; globex (owner Gina) likewise with its
    own provider (its own keys) and globex.test."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _, olivia = invite_and_accept(server, root, "olivia@acme.test", "Olivia", [("acme", "owner")])
    invite_and_accept(server, root, "eve@acme.test", "Eve", [("acme", "viewer")])
    _, gina = invite_and_accept(server, root, "gina@globex.test", "Gina", [("globex", "owner")])
    with (
        running_provider("ringfence-acme", SECRET, "") as acme_idp,
        running_provider("ringfence-globex", SECRET, "") as globex_idp,
    ):
        acme = set_up_sso(server, dns, acme_idp, olivia, "acme", "acme.test", jit_role="viewer")
        globex = set_up_sso(server, dns, globex_idp, gina, "globex", "globex.test")
        yield World(server, root, acme, acme_idp, globex, globex_idp)


@dataclass
class Signed:
    """A session: its API client and its refresh token."""

    api: httpx.Client
    refresh_token: str

    def works(self) -> bool:
        answer = self.api.get("/workspaces")
        assert answer.status_code in (200, 401), answer.text
        return answer.status_code == 200

    def refreshes(self, server: LiveServer) -> bool:
        with server.client() as anonymous:
            answer = anonymous.post("/auth/refresh", json={"refresh_token": self.refresh_token})
        assert answer.status_code in (200, 401), answer.text
        if answer.status_code == 200:
            self.refresh_token = answer.json()["refresh_token"]
        return answer.status_code == 200


def sign_on(
    world: World, sso: Sso, idp: OidcProvider, person: Person, sid: str | None = None
) -> Signed:
    """``person`` signs on through ``sso``'s connection (the provider session ``sid``)."""
    idp.user, idp.sid = person, sid
    answer = Browser(world.server).sign_on(sso.id, idp)
    assert answer.status_code == 200, answer.text
    tokens = exchange(world.server, answer.json()["code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return Signed(world.server.client(body["access_token"]), body["refresh_token"])


def password_session(world: World, email: str) -> Signed:
    answer = password_login(world.server, email)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return Signed(world.server.client(body["access_token"]), body["refresh_token"])


EVE = Person("idp-eve", "eve@acme.test", name="Eve")
SAM = Person("idp-sam", "sam@acme.test", name="Sam")
GINA = Person("idp-gina", "gina@globex.test", name="Gina")


def events(root: httpx.Client, action: str) -> list[dict[str, Any]]:
    return list(reversed(root.get("/audit", params={"action": action, "page_size": 200}).json()))


def assert_logged_out(answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.content == b""
    assert answer.headers["Cache-Control"] == "no-store"


def test_a_logout_token_ends_exactly_its_subjects_sessions_through_the_connection(
    world: World,
) -> None:
    server, root = world.server, world.root
    # The URI to register at the provider, shown with the connection.
    shown = world.acme.owner.get(f"/sso-connections/{world.acme.id}").json()
    assert shown["backchannel_logout_uri"] == (
        f"{PUBLIC_URL}/auth/sso/connections/{world.acme.id}/backchannel-logout"
    )
    eve_sso = sign_on(world, world.acme, world.acme_idp, EVE)
    eve_sso_again = sign_on(world, world.acme, world.acme_idp, EVE)
    eve_password = password_session(world, "eve@acme.test")
    sam = sign_on(world, world.acme, world.acme_idp, SAM)  # just in time, no password
    gina = sign_on(world, world.globex, world.globex_idp, GINA)
    everyone = (eve_sso, eve_sso_again, eve_password, sam, gina)
    assert all(s.works() for s in everyone)

    assert_logged_out(world.logout(world.acme_idp.logout_token(sub="idp-eve")))
    # Eve's two sessions through acme's connection end at once, refresh tokens too.
    for ended in (eve_sso, eve_sso_again):
        assert_problem(ended.api.get("/workspaces"), 401, "unauthorized", "no longer valid")
        assert not ended.refreshes(server)
    # Her password session, Sam's, and Gina's through globex's connection stay.
    for kept in (eve_password, sam, gina):
        assert kept.works() and kept.refreshes(server)
    [event] = events(root, "sso.backchannel_logout")
    eve = user_id_of(root, "eve@acme.test")
    assert (event["workspace"], event["target_type"], event["target_id"]) == (
        "acme",
        "user",
        str(eve),
    )
    assert event["after"] == {
        "connection": world.acme.id,
        "subject": "idp-eve",
        "sid": None,
        "sessions_ended": 2,
        "people": [eve],
    }
    assert event["actor_name"] == "identity provider of acme IdP (acme)"
    assert event["actor_client_id"] == f"sso:{world.acme.id}"
    # She signs on again: a new session, which works.
    assert sign_on(world, world.acme, world.acme_idp, EVE).works()

    # A subject linked to nobody (or one of another connection): 200, nothing ends.
    for subject in ("idp-nobody", "idp-gina"):
        assert_logged_out(world.logout(world.acme_idp.logout_token(sub=subject)))
    assert all(s.works() for s in (eve_password, sam, gina))
    nobody = events(root, "sso.backchannel_logout")[-2:]
    assert [(e["target_type"], e["after"]["sessions_ended"]) for e in nobody] == [
        ("sso_connection", 0),
        ("sso_connection", 0),
    ]


def test_a_sid_ends_only_that_provider_session(world: World) -> None:
    root = world.root
    first = sign_on(world, world.acme, world.acme_idp, EVE, sid="sid-laptop")
    second = sign_on(world, world.acme, world.acme_idp, EVE, sid="sid-phone")
    sam = sign_on(world, world.acme, world.acme_idp, SAM, sid="sid-sam")

    # sub and sid: that session of hers only.
    assert_logged_out(world.logout(world.acme_idp.logout_token(sub="idp-eve", sid="sid-laptop")))
    assert not first.works()
    assert second.works() and sam.works()
    # sid alone names the provider session, whoever it was.
    assert_logged_out(world.logout(world.acme_idp.logout_token(sub=None, sid="sid-phone")))
    assert not second.works() and sam.works()
    # Another subject's sid: it is not Sam's session, so nothing ends.
    assert_logged_out(world.logout(world.acme_idp.logout_token(sub="idp-eve", sid="sid-sam")))
    assert sam.works()
    ended = [e["after"]["sessions_ended"] for e in events(root, "sso.backchannel_logout")]
    assert ended == [1, 1, 0]
    eve = user_id_of(root, "eve@acme.test")
    [_, by_sid, _] = events(root, "sso.backchannel_logout")
    assert (by_sid["target_id"], by_sid["after"]["subject"]) == (str(eve), None)


def unsigned(claims: dict[str, Any]) -> str:
    """A token with ``alg: none`` (no signature)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'logout+jwt'})}.{part(claims)}."


def test_every_token_the_spec_refuses_is_refused_and_ends_nothing(world: World) -> None:
    server, root, idp = world.server, world.root, world.acme_idp
    eve = sign_on(world, world.acme, idp, EVE, sid="sid-eve")
    now = int(time.time())
    stranger = RSAKey.generate_key(2048, parameters={"kid": "test-key-1"})  # the same kid
    good = idp.logout_token(sub="idp-eve")
    replay = idp.logout_token(sub="idp-nobody")
    assert_logged_out(world.logout(replay))
    claims = {"iss": idp.issuer, "aud": "ringfence-acme", "iat": now, "exp": now + 60}
    verified = {
        # Signed by acme's provider, but not a logout token Ringfence may act on.
        "wrong-issuer": idp.logout_token(iss="https://someone.else"),
        "wrong-audience": idp.logout_token(aud="ringfence-globex"),
        "nonce-present": idp.logout_token(nonce="n-0S6_WzA2Mj"),
        "not-a-logout-token": [
            idp.logout_token(events=OMIT),
            idp.logout_token(events={BACKCHANNEL_LOGOUT_EVENT: "yes"}),
            idp.logout_token(events={"http://schemas.openid.net/event/other": {}}),
            idp.logout_token(events=[BACKCHANNEL_LOGOUT_EVENT]),
        ],
        "no-subject": idp.logout_token(sub=None),
        "replayed": replay,
        "expired": idp.logout_token(iat=now - 300, exp=now - 200),
        "too-old": idp.logout_token(iat=now - 3600, exp=now + 60),
        "issued-in-future": idp.logout_token(iat=now + 3600, exp=now + 3700),
        "missing-claim": [idp.logout_token(jti=OMIT), idp.logout_token(exp=OMIT)],
        "invalid-claim": idp.logout_token(sid=["sid-eve"]),
        "wrong-type": idp.logout_token(header={"typ": "at+jwt"}),
    }
    unverified = {
        # Anyone could send these: the signature does not verify with acme's provider.
        "bad-signature": [
            idp.logout_token(key=stranger),
            # globex's provider's token for globex's client, posted to acme's connection.
            world.globex_idp.logout_token(sub="idp-eve"),
            idp.logout_token(key=OctKey.import_key(SECRET), header={"alg": "HS256"}),
            unsigned({**claims, "sub": "idp-eve", "jti": "x", "events": {}}),
            good[:-8] + ("A" * 8 if not good.endswith("A" * 8) else "B" * 8),
        ],
        "unknown-key": idp.logout_token(key=RSAKey.generate_key(2048, parameters={"kid": "k9"})),
        "malformed": ["", "not-a-jwt", "a.b", "x" * 9000, None],
        "encrypted": "a.b.c.d.e",
    }
    expected_audited = []
    for reason, tokens in {**verified, **unverified}.items():
        for token in tokens if isinstance(tokens, list) else [tokens]:
            answer = world.logout(token)
            problem = assert_problem(answer, 400, "invalid-logout-token")
            assert problem["error"] == "invalid_request", (reason, problem)
            assert problem["error_description"] == problem["detail"]
            assert answer.headers["Cache-Control"] == "no-store"
            if reason in verified:
                expected_audited.append(reason)
    assert eve.works()  # nothing ended

    # Each token the provider signed is audited in acme, with its reason.
    refused = events(root, "sso.backchannel_logout_refused")
    signed = [e for e in refused if e["workspace"] == "acme"]
    assert [e["after"]["reason"] for e in signed] == expected_audited
    assert {e["target_id"] for e in signed} == {str(world.acme.id)}
    # The rest by sample: one event for this source, counting them by reason.
    [sampled] = [e for e in refused if e["workspace"] is None]
    assert sampled["after"]["kind"] == "sso_logout" and sampled["after"]["refusals"] == 1

    # The connection turned off, or one that does not exist: 404, as its sign-in.
    world.acme.set(enabled=False)
    assert_problem(world.logout(good), 404, "sso-not-configured", "turned off")
    assert_problem(world.logout(good, 2_000_000_000), 404, "sso-not-configured")
    world.acme.set(enabled=True)
    # A body beyond what a logout token needs.
    assert_problem(world.logout("x" * 20_000), 413, "payload-too-large")
    # After all that, the good token still works (nothing of it was used).
    assert_logged_out(world.logout(good))
    assert not eve.works()
    assert not Signed(eve.api, eve.refresh_token).refreshes(server)


def test_the_providers_new_key_is_fetched_once_and_refusals_are_throttled(
    world: World,
) -> None:
    idp = world.acme_idp
    eve = sign_on(world, world.acme, idp, EVE)
    # The provider rotates its key: the first token naming the new key fetches the key
    # set again; one with a key it never published is refused, without a second fetch.
    fetched = idp.jwks_fetches
    idp.rotate("test-key-2")
    assert_logged_out(world.logout(idp.logout_token(sub="idp-eve")))
    assert not eve.works()
    assert idp.jwks_fetches == fetched + 1
    idp.rotate("test-key-3")
    idp.keys.remove(idp.key)  # never published
    answer = world.logout(idp.logout_token(sub="idp-eve"))
    assert_problem(answer, 400, "invalid-logout-token", "a key the provider does not list")
    assert idp.jwks_fetches == fetched + 1

    # From one address, 60 refusals a minute; then every post waits (429), good ones too.
    refusals = 1
    while (answer := world.logout("not-a-jwt")).status_code == 400 and refusals < 100:
        refusals += 1
    assert refusals == 60
    assert_problem(answer, 429, "too-many-requests", "logout tokens")
    limited = world.logout(idp.logout_token(sub="idp-eve", key=idp.keys[-1]))
    assert_problem(limited, 429, "too-many-requests")
    assert int(limited.headers["Retry-After"]) > 0


def test_replays_are_remembered_until_the_upkeep_forgets_them(world: World) -> None:
    from mailer.tasks import housekeeping

    token = world.acme_idp.logout_token(sub="idp-eve")
    assert_logged_out(world.logout(token))
    assert_problem(world.logout(token), 400, "invalid-logout-token", "received already")
    db = make_engine(world.server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            assert session.scalar(select(func.count()).select_from(SsoLogoutToken)) == 1
            assert housekeeping.apply().get()["sso_logout_tokens_pruned"] == 0  # still needed
            session.execute(update(SsoLogoutToken).values(expires_at=utcnow()))
            session.commit()
            assert housekeeping.apply().get()["sso_logout_tokens_pruned"] == 1
            assert session.scalar(select(func.count()).select_from(SsoLogoutToken)) == 0
            # Sessions record their connection and provider session; password ones none.
            sign_on(world, world.acme, world.acme_idp, EVE, sid="sid-1")
            password_session(world, "eve@acme.test")
            rows = session.execute(
                select(AuthSession.sso_connection_id, AuthSession.sso_sid).where(
                    AuthSession.user_id == user_id_of(world.root, "eve@acme.test")
                )
            ).all()
            # (Accepting her invitation signed her in with her password too.)
            assert set(rows) == {(world.acme.id, "sid-1"), (None, None)}
            assert rows.count((world.acme.id, "sid-1")) == 1
    finally:
        db.dispose()


# -- linked accounts and unlinking -----------------------------------------------------


def test_owners_list_and_unlink_the_accounts_linked_to_their_connection(world: World) -> None:
    server, root, acme = world.server, world.root, world.acme
    links_url = f"/sso-connections/{acme.id}/links"
    eve_sso = sign_on(world, acme, world.acme_idp, EVE)
    eve_password = password_session(world, "eve@acme.test")
    sam = sign_on(world, acme, world.acme_idp, SAM)  # just in time: no password
    gina = sign_on(world, world.globex, world.globex_idp, GINA)
    eve, sam_id = user_id_of(root, "eve@acme.test"), user_id_of(root, "sam@acme.test")
    gina_id, olivia = user_id_of(root, "gina@globex.test"), user_id_of(root, "olivia@acme.test")

    listed = acme.owner.get(links_url)
    assert listed.status_code == 200, listed.text
    assert [(x["email"], x["subject"], x["user_id"]) for x in listed.json()] == [
        ("eve@acme.test", "idp-eve", eve),
        ("sam@acme.test", "idp-sam", sam_id),
    ]
    assert all(x["linked_at"] and x["last_sign_in_at"] for x in listed.json())
    # globex's owner: acme's connection is not there for her.
    assert_problem(world.globex.owner.get(links_url), 404, "not-found")

    # Sam has no other way in: the answer says so; his session ends at once.
    gone = acme.owner.delete(f"{links_url}/{sam_id}")
    assert gone.status_code == 200, gone.text
    assert gone.json()["link"]["subject"] == "idp-sam"
    assert (gone.json()["sessions_ended"], gone.json()["other_ways_in"]) == (1, [])
    assert gone.json()["no_other_way_in"] is True
    assert not sam.works() and not sam.refreshes(server)
    # Eve keeps her password: only her session through the connection ends.
    kept = acme.owner.delete(f"{links_url}/{eve}").json()
    assert (kept["sessions_ended"], kept["other_ways_in"], kept["no_other_way_in"]) == (
        1,
        ["password"],
        False,
    )
    assert not eve_sso.works() and eve_password.works() and gina.works()
    assert acme.owner.get(links_url).json() == []
    unlinked = events(root, "sso.unlinked")
    assert [(e["target_id"], e["workspace"], e["before"]["subject"]) for e in unlinked] == [
        (str(sam_id), "acme", "idp-sam"),
        (str(eve), "acme", "idp-eve"),
    ]
    assert unlinked[0]["after"] == {"sessions_ended": 1, "other_ways_in": []}

    # Not linked (any more), unknown, or another workspace's person (Gina is linked to
    # globex's connection): the same 404.
    unknown = acme.owner.delete(f"{links_url}/2000000000")
    assert_problem(unknown, 404, "not-found", "no account 2000000000 is linked")
    for other in (sam_id, gina_id, olivia):
        answer = acme.owner.delete(f"{links_url}/{other}")
        assert answer.status_code == 404
        assert answer.json()["detail"] == unknown.json()["detail"].replace("2000000000", str(other))
    assert_problem(world.globex.owner.delete(f"{links_url}/{eve}"), 404, "not-found")
    # Gina's link to globex's connection is untouched, her session too.
    globex_links = world.globex.owner.get(f"/sso-connections/{world.globex.id}/links").json()
    assert [x["user_id"] for x in globex_links] == [gina_id] and gina.works()

    # Unlinking does not bar anyone: the provider still vouching for Sam, his next
    # sign-on links him again (deactivating him is what keeps him out).
    sam = sign_on(world, acme, world.acme_idp, SAM)
    assert sam.works()
    assert [x["user_id"] for x in acme.owner.get(links_url).json()] == [sam_id]

    # The connection moved to another provider: the old one's links go, and the sessions
    # it started (which its logout tokens could no longer reach) end.
    moved = acme.set(issuer=world.globex_idp.issuer, client_secret=SECRET)
    assert moved["issuer"] == world.globex_idp.issuer
    assert not sam.works() and eve_password.works() and gina.works()
    assert acme.owner.get(links_url).json() == []
    [updated] = [e for e in events(root, "sso.connection.updated") if "links_removed" in e["after"]]
    assert (updated["after"]["links_removed"], updated["after"]["sessions_ended"]) == (1, 1)
