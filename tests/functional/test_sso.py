"""Single sign-on against a real OpenID Connect provider on loopback (tests/oidc_provider.py):
the whole code flow over HTTP, the test playing the browser (redirects followed by hand,
cookies kept). Existing active accounts only; invitations can be accepted the same way;
forged or replayed answers are refused."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    accept_token,
    assert_problem,
    create_workspaces,
    full_width,
    invite,
    onboard,
    outbox_messages,
)
from tests.oidc_provider import OidcProvider, Person, running_provider

PUBLIC_URL = "http://ringfence.test"  # the settings fixture's public URL
CALLBACK = f"{PUBLIC_URL}/auth/sso/callback"


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with running_provider("ringfence", "provider-secret-" + "x" * 20, CALLBACK) as running:
        yield running


@pytest.fixture
def return_url(request: pytest.FixtureRequest) -> str:
    """RINGFENCE_OIDC_RETURN_URL for the test (parametrize indirectly); empty by default."""
    return str(getattr(request, "param", ""))


@pytest.fixture
def settings(settings: Settings, provider: OidcProvider, return_url: str) -> Settings:
    return replace(
        settings,
        oidc_issuer=provider.issuer,
        oidc_client_id="ringfence",
        oidc_client_secret=provider.client.client_secret,
        oidc_return_url=return_url,
    )


class Browser:
    """A user agent: one cookie jar, redirects followed by hand. ``ringfence.test`` (the
    public URL in links) resolves to the live server."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = httpx.Client(timeout=30)

    def get(self, url: str) -> httpx.Response:
        if url.startswith("/"):
            url = self.server.url + url
        return self.http.get(url.replace(PUBLIC_URL, self.server.url, 1))

    def to_callback(self, start: str, provider: OidcProvider) -> str:
        """Follow ``start`` to the provider and back: the callback URL it sends us to."""
        to_provider = self.get(start)
        assert to_provider.status_code == 302, to_provider.text
        assert to_provider.headers["Location"].startswith(f"{provider.issuer}/authorize?")
        back = self.get(to_provider.headers["Location"])
        assert back.status_code == 302, back.text
        location = back.headers["Location"]
        assert location.startswith(CALLBACK + "?"), location
        return location

    def sign_on(self, provider: OidcProvider, start: str = "/auth/sso/login") -> httpx.Response:
        return self.get(self.to_callback(start, provider))


def exchange(server: LiveServer, code: str) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/sso/exchange", json={"code": code})


def signed_in_as(server: LiveServer, tokens: dict[str, Any]) -> str:
    """The email of the person the access token belongs to (their audit trail names them)."""
    with server.client(tokens["access_token"]) as client:
        assert client.get("/workspaces").status_code == 200
    events = server.admin().get("/audit", params={"action": "auth", "page_size": 100}).json()
    return next(e["after"]["email"] for e in events if e["action"] == "auth.login_sso")


def test_an_existing_active_user_signs_in_and_the_identity_is_linked(
    server: LiveServer, provider: OidcProvider
) -> None:
    provider.user = Person("idp-ada", ADMIN_EMAIL, name="Ada at the IdP")
    callback = Browser(server).sign_on(provider)
    assert callback.status_code == 200, callback.text
    answer = callback.json()
    assert answer["expires_in"] == 60 and answer["code"]
    tokens = exchange(server, answer["code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer" and body["refresh_token"] and body["expires_in"] == 900
    assert signed_in_as(server, body) == ADMIN_EMAIL
    # The same tokens as a password sign-in: they refresh.
    with server.client() as anonymous:
        refreshed = anonymous.post("/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    # The code works once.
    assert_problem(exchange(server, answer["code"]), 401, "unauthorized")
    assert_problem(exchange(server, "made-up"), 401, "unauthorized")
    # Audited by sample: the first refusal of this source in the window, by category
    # (the second is counted, and goes with the source's next event).
    events = server.admin().get("/audit", params={"action": "auth", "page_size": 100}).json()
    refused = [e["after"]["reasons"] for e in events if e["action"] == "auth.sso_code_refused"]
    assert refused == [{"used-code": 1}]

    # Linked: the subject signs in even after the email at the provider changed.
    provider.user = Person("idp-ada", "ada.new@elsewhere.example", name="Ada")
    again = Browser(server).sign_on(provider)
    assert again.status_code == 200, again.text
    assert exchange(server, again.json()["code"]).status_code == 200
    # Another subject claiming the linked account's email cannot take it over.
    provider.user = Person("idp-impostor", ADMIN_EMAIL)
    assert_problem(Browser(server).sign_on(provider), 403, "sso-refused", "linked to another")


def test_unknown_and_unverified_emails_are_refused_without_provisioning(
    server: LiveServer, provider: OidcProvider
) -> None:
    users_before = {u["email"] for u in server.admin().get("/users").json()}
    provider.user = Person("idp-stranger", "stranger@example.com")
    refused = Browser(server).sign_on(provider)
    assert_problem(refused, 403, "sso-refused", "no account for stranger@example.com")
    provider.user = Person("idp-unverified", ADMIN_EMAIL, email_verified=False)
    assert_problem(Browser(server).sign_on(provider), 403, "sso-refused", "did not vouch")
    # Nobody was created.
    assert {u["email"] for u in server.admin().get("/users").json()} == users_before
    events = server.admin().get("/audit", params={"action": "auth", "page_size": 100}).json()
    refusals = [e for e in events if e["action"] == "auth.sso_refused"]
    assert {e["after"]["email"] for e in refusals} == {"stranger@example.com", ADMIN_EMAIL}


def test_inactive_and_pending_users_are_refused(server: LiveServer, provider: OidcProvider) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    gone = onboard(server, admin, "gone@example.com", "Gone", [("acme", "viewer")])
    assert admin.post(f"/users/{gone}/deactivate").status_code == 200
    invite(admin, "pat@example.com", [("acme", "viewer")], "Pat")
    provider.user = Person("idp-gone", "gone@example.com")
    assert_problem(Browser(server).sign_on(provider), 403, "sso-refused", "deactivated")
    provider.user = Person("idp-pat", "pat@example.com")
    assert_problem(Browser(server).sign_on(provider), 403, "sso-refused", "invitation")


def test_an_invitation_is_accepted_through_sso(server: LiveServer, provider: OidcProvider) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    invitation = invite(admin, "pat@example.com", [("acme", "editor")], "Pat")
    token = accept_token(outbox_messages(server.settings)[-1])
    browser = Browser(server)
    page = browser.get(f"/invite/{token}")
    assert page.status_code == 200 and f"/invite/{token}/sso" in page.text

    # The provider vouches for someone else: refused, the invitation stays pending.
    provider.user = Person("idp-mallory", "mallory@example.com")
    assert_problem(browser.sign_on(provider, f"/invite/{token}/sso"), 403, "sso-refused")
    assert admin.get(f"/invitations/{invitation['id']}").json()["status"] in ("pending", "sent")

    provider.user = Person("idp-pat", "pat@example.com", name="Pat Doe")
    callback = browser.sign_on(provider, f"/invite/{token}/sso")
    assert callback.status_code == 200, callback.text
    tokens = exchange(server, callback.json()["code"]).json()
    with server.client(tokens["access_token"]) as pat:
        assert pat.get("/workspaces").status_code == 200
    assert admin.get(f"/invitations/{invitation['id']}").json()["status"] == "accepted"
    [user] = [u for u in admin.get("/users").json() if u["email"] == "pat@example.com"]
    assert user["status"] == "active" and user["name"] == "Pat Doe"
    assert user["roles"] == {"acme": ["editor"]}
    # The link is spent; signing in later works through SSO alone (the subject is linked).
    assert browser.get(f"/invite/{token}").status_code == 410
    assert Browser(server).sign_on(provider).status_code == 200
    # No password was set: changing it says how to get one.
    with server.client(tokens["access_token"]) as pat:
        response = pat.post(
            "/auth/password",
            json={"current_password": "anything at all", "new_password": "a brand new passphrase"},
        )
    assert_problem(response, 422, "invalid-input", "password reset")


def test_a_forged_state_or_another_browser_is_refused(
    server: LiveServer, provider: OidcProvider
) -> None:
    provider.user = Person("idp-ada", ADMIN_EMAIL)
    browser = Browser(server)
    callback = browser.to_callback("/auth/sso/login", provider)
    forged = callback.replace("state=", "state=forged", 1)
    assert_problem(browser.get(forged), 400, "sso-failed", "state")
    # The real answer, but in a browser that did not start the sign-on (login CSRF).
    assert_problem(Browser(server).get(callback), 400, "sso-failed", "state")
    # The browser that started it completes it, once: the state is spent afterwards.
    assert browser.get(callback).status_code == 200
    assert_problem(browser.get(callback), 400, "sso-failed", "state")


def test_a_wrong_nonce_in_the_id_token_is_refused(
    server: LiveServer, provider: OidcProvider
) -> None:
    provider.user = Person("idp-ada", ADMIN_EMAIL)
    provider.nonce_override = "not-the-nonce-we-sent"
    assert_problem(Browser(server).sign_on(provider), 400, "sso-failed", "nonce")
    provider.nonce_override = None
    assert Browser(server).sign_on(provider).status_code == 200


@pytest.mark.parametrize("return_url", ["https://app.example/signed-in?via=sso"], indirect=True)
def test_with_a_return_url_the_browser_carries_the_code_back_to_the_app(
    server: LiveServer, provider: OidcProvider
) -> None:
    provider.user = Person("idp-ada", ADMIN_EMAIL)
    callback = Browser(server).sign_on(provider)
    assert callback.status_code == 303, callback.text
    target = httpx.URL(callback.headers["Location"])
    assert (target.host, target.path, target.params["via"]) == ("app.example", "/signed-in", "sso")
    tokens = exchange(server, target.params["code"])
    assert tokens.status_code == 200, tokens.text
    assert "access_token" not in str(target)  # tokens never travel in a URL


def test_concurrent_first_sign_ons_of_one_person_all_succeed(
    server: LiveServer, provider: OidcProvider
) -> None:
    # Several tabs (or a retrying client) finishing the first sign-on at once: each
    # links the same identity to the same account, and each gets its own code.
    provider.user = Person("idp-ada", ADMIN_EMAIL, name="Ada at the IdP")
    callbacks = [Browser(server) for _ in range(4)]
    urls = [browser.to_callback("/auth/sso/login", provider) for browser in callbacks]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(Browser.get, callbacks, urls))
    assert [answer.status_code for answer in answers] == [200] * 4, [a.text for a in answers]
    codes = {answer.json()["code"] for answer in answers}
    assert len(codes) == 4
    for code in codes:
        tokens = exchange(server, code)
        assert tokens.status_code == 200, tokens.text
        assert signed_in_as(server, tokens.json()) == ADMIN_EMAIL


def test_a_look_alike_spelling_from_the_provider_is_the_same_address(
    server: LiveServer, provider: OidcProvider
) -> None:
    """The provider's email claim is normalised as a typed address is (security finding
    7): full-width letters or capitals sign the account in and accept its invitation."""
    provider.user = Person("idp-ada", full_width(ADMIN_EMAIL, keep="@"), name="Ada")
    callback = Browser(server).sign_on(provider)
    assert callback.status_code == 200, callback.text
    tokens = exchange(server, callback.json()["code"]).json()
    assert signed_in_as(server, tokens) == ADMIN_EMAIL

    admin = server.admin()
    create_workspaces(admin, "acme")
    invitation = invite(admin, "pat@example.com", [("acme", "editor")], "Pat")
    token = accept_token(outbox_messages(server.settings)[-1])
    provider.user = Person("idp-pat", full_width("PAT@example.com"), name="Pat Doe")
    callback = Browser(server).sign_on(provider, f"/invite/{token}/sso")
    assert callback.status_code == 200, callback.text
    assert admin.get(f"/invitations/{invitation['id']}").json()["status"] == "accepted"
    [pat] = [u for u in admin.get("/users").json() if u["email"] == "pat@example.com"]
    assert pat["status"] == "active" and pat["roles"] == {"acme": ["editor"]}
