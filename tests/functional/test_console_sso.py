"""Single sign-on into the web console against the real OpenID Connect provider on
loopback (tests/oidc_provider.py): /console/sso/start binds the browser with a cookie,
the provider's answer comes back to /console/sso/done with a one-time code, and only the
browser that started the sign-in gets a console session from it."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from gateway.config import Settings
from tests.functional.test_sso import CALLBACK, PUBLIC_URL, Browser
from tests.helpers import ADMIN_EMAIL, LiveServer, assert_problem
from tests.oidc_provider import OidcProvider, Person, running_provider

DONE = f"{PUBLIC_URL}/console/sso/done?"


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with running_provider("ringfence", "provider-secret-" + "x" * 20, CALLBACK) as running:
        yield running


@pytest.fixture
def settings(settings: Settings, provider: OidcProvider) -> Settings:
    return replace(
        settings,
        oidc_issuer=provider.issuer,
        oidc_client_id="ringfence",
        oidc_client_secret=provider.client.client_secret,
    )


def to_done(browser: Browser, provider: OidcProvider) -> str:
    """Start the console's sign-in in ``browser``, through the provider: the console URL
    the callback sends the browser back to."""
    start = browser.get("/console/sso/start")
    assert start.status_code == 303, start.text
    assert start.headers["Location"].startswith("/auth/sso/login?next=console&binding=")
    cookie = start.headers["Set-Cookie"].lower()
    assert "ringfence_console_sso=" in cookie and "httponly" in cookie
    assert "samesite=lax" in cookie and "max-age=600" in cookie
    back = browser.get(browser.to_callback(start.headers["Location"], provider))
    assert back.status_code == 303, back.text
    assert back.headers["Location"].startswith(DONE), back.headers["Location"]
    return back.headers["Location"]


def message_of(page: httpx.Response) -> str:
    assert page.headers["content-type"].startswith("text/html"), page.text[:300]
    assert "<h1>Sign in to Ringfence</h1>" in page.text
    return html.unescape(page.text)


def test_sso_signs_in_to_the_console_and_lands_on_the_users_page(
    server: LiveServer, provider: OidcProvider
) -> None:
    provider.user = Person("idp-ada", ADMIN_EMAIL)
    browser = Browser(server)
    sign_in = browser.get("/console/sign-in")
    assert 'href="/console/sso/start"' in sign_in.text
    done = browser.get(to_done(browser, provider))
    assert done.status_code == 303, done.text
    # The first page the person may use (console.index): Users, for a super admin.
    assert done.headers["Location"] == "/console/"
    assert browser.get("/console/").headers["Location"] == "/console/users"
    spent = [
        c for c in done.headers.get_list("Set-Cookie") if c.startswith("ringfence_console_sso=")
    ]
    assert spent and "max-age=0" in spent[0].lower()  # the binding is spent
    users = browser.get("/console/users")
    assert users.status_code == 200, users.text
    assert "<h1>Users</h1>" in users.text and ADMIN_EMAIL in users.text
    events = server.admin().get("/audit", params={"action": "auth", "page_size": 100}).json()
    assert "auth.login_sso" in {e["action"] for e in events}
    assert browser.get("/console/account").status_code == 200


def test_a_code_from_another_browser_is_refused_login_csrf(
    server: LiveServer, provider: OidcProvider
) -> None:
    provider.user = Person("idp-ada", ADMIN_EMAIL)
    mine = Browser(server)
    done = to_done(mine, provider)
    # Someone else's browser opening that link: no binding cookie, no session.
    victim = Browser(server)
    refused = victim.get(done)
    assert refused.status_code == 400
    assert "not started in this browser" in message_of(refused)
    assert "ringfence_console=" not in refused.headers.get("Set-Cookie", "")
    assert victim.get("/console/users").status_code == 303  # still signed out
    # Nor with a sign-in of its own under way: its cookie does not match this code's binding.
    victim.get("/console/sso/start")
    assert victim.get(done).status_code == 400
    assert victim.get("/console/users").status_code == 303
    # The code was not spent by the refusals: the browser that started it signs in.
    assert mine.get(done).status_code == 303
    assert mine.get("/console/users").status_code == 200
    # And only once.
    again = mine.get(done)
    assert again.status_code == 400  # the binding cookie is spent


def test_an_unknown_email_is_refused_with_a_message(
    server: LiveServer, provider: OidcProvider
) -> None:
    provider.user = Person("idp-stranger", "stranger@example.com")
    browser = Browser(server)
    done = to_done(browser, provider)
    assert "code=" not in done  # no code was issued
    refused = browser.get(done)
    assert refused.status_code == 403
    assert "no account for stranger@example.com" in message_of(refused)
    assert browser.get("/console/users").status_code == 303


def test_a_used_code_is_refused_with_a_message(server: LiveServer, provider: OidcProvider) -> None:
    provider.user = Person("idp-ada", ADMIN_EMAIL)
    browser = Browser(server)
    done = to_done(browser, provider)
    code = httpx.URL(done).params["code"]
    with server.client() as anonymous:  # spent elsewhere first
        assert anonymous.post("/auth/sso/exchange", json={"code": code}).status_code == 200
    refused = browser.get(done)
    assert refused.status_code == 401
    assert "not valid, used already or expired" in message_of(refused)


def test_only_allow_listed_return_targets(server: LiveServer, provider: OidcProvider) -> None:
    browser = Browser(server)
    for query in ("next=https://evil.example/", "next=/console/users", "next=console"):
        assert_problem(browser.get(f"/auth/sso/login?{query}"), 422, "invalid-input")
