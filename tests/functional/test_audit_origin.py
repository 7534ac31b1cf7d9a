"""Events of people acting on their own account (accepting an invitation, changing or
resetting a password, single sign-on, refused sign-ons) record the request id and the
source address, as sign-ins do, over real HTTP. Sign-ons that fail before anyone is
identified are audited by sample, with the address but not the caller's request id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from tests.functional.test_passwords import reset_token, wait_for_mail
from tests.functional.test_sso import CALLBACK, Browser
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    accept_token,
    create_workspaces,
    invite,
    outbox_messages,
)
from tests.oidc_provider import OidcProvider, Person, running_provider

LOOPBACK = "127.0.0.1"  # where the live server sees the test's requests come from


def events(server: LiveServer, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The audit events of the request ``request_id`` once there are ``count`` (some are
    written after the answer)."""
    deadline = time.monotonic() + 10
    with server.admin() as admin:
        while True:
            response = admin.get("/audit", params={"request_id": request_id, "page_size": 100})
            assert response.status_code == 200, response.text
            found: list[dict[str, Any]] = response.json()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def audit_of(server: LiveServer, action: str) -> list[dict[str, Any]]:
    with server.admin() as admin:
        response = admin.get("/audit", params={"action": action, "page_size": 100})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_from_the_request(found: list[dict[str, Any]], request_id: str, *actions: str) -> None:
    assert sorted(e["action"] for e in found) == sorted(actions), found
    for event in found:
        assert event["request_id"] == request_id
        assert event["source_address"] == LOOPBACK


def post(server: LiveServer, path: str, body: dict[str, Any], request_id: str) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post(path, json=body, headers={"X-Request-ID": request_id})


def test_invitation_accept_and_password_events_carry_request_id_and_address(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    invite(root, "eve@example.com", [("acme", "viewer")], "Eve")
    [message] = outbox_messages(server.settings)
    accepted = post(
        server,
        "/invitations/accept",
        {"token": accept_token(message), "password": PASSWORD},
        "req-accept",
    )
    assert accepted.status_code == 200, accepted.text
    found = events(server, "req-accept")
    assert "invitation.accepted" in {e["action"] for e in found}
    assert_from_the_request(found, "req-accept", *(e["action"] for e in found))

    eve = server.login("eve@example.com", PASSWORD)
    wrong = eve.post(
        "/auth/password",
        json={"current_password": "not the password", "new_password": "a brand new password"},
        headers={"X-Request-ID": "req-pw-wrong"},
    )
    assert wrong.status_code == 422, wrong.text
    assert_from_the_request(
        events(server, "req-pw-wrong"), "req-pw-wrong", "auth.password_change_failed"
    )
    changed = eve.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "a brand new password"},
        headers={"X-Request-ID": "req-pw"},
    )
    assert changed.status_code == 200, changed.text
    assert_from_the_request(
        events(server, "req-pw", 2),
        "req-pw",
        "auth.password_changed",
        "auth.login_after_password_change",
    )

    sent_before = len(outbox_messages(server.settings))
    asked = post(server, "/auth/password-reset", {"email": "eve@example.com"}, "req-reset-ask")
    assert asked.status_code == 202, asked.text
    assert_from_the_request(
        events(server, "req-reset-ask", 1), "req-reset-ask", "auth.password_reset_requested"
    )
    token = reset_token(wait_for_mail(server, sent_before + 1)[-1])
    reset = post(
        server,
        "/auth/password-reset/confirm",
        {"token": token, "new_password": "yet another good password"},
        "req-reset",
    )
    assert reset.status_code == 204, reset.text
    assert_from_the_request(events(server, "req-reset"), "req-reset", "auth.password_reset")


# -- single sign-on -------------------------------------------------------------------


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


def callback_with_id(browser: Browser, url: str, request_id: str) -> httpx.Response:
    return browser.http.get(
        url.replace("http://ringfence.test", browser.server.url, 1),
        headers={"X-Request-ID": request_id},
    )


def test_sso_sign_in_and_refusal_events_carry_request_id_and_address(
    server: LiveServer, provider: OidcProvider
) -> None:
    provider.user = Person("idp-ada", ADMIN_EMAIL)
    browser = Browser(server)
    answer = callback_with_id(browser, browser.to_callback("/auth/sso/login", provider), "req-sso")
    assert answer.status_code == 200, answer.text
    assert_from_the_request(events(server, "req-sso"), "req-sso", "auth.sso_login")
    tokens = post(server, "/auth/sso/exchange", {"code": answer.json()["code"]}, "req-exchange")
    assert tokens.status_code == 200, tokens.text
    assert_from_the_request(events(server, "req-exchange"), "req-exchange", "auth.login_sso")
    spent = post(server, "/auth/sso/exchange", {"code": answer.json()["code"]}, "req-spent")
    assert spent.status_code == 401
    # Refusals of callers not signed in are audited by sample, without the request id
    # the caller chose (tests/functional/test_refusal_sampling.py); the address stays.
    assert events(server, "req-spent", count=0) == []
    [event] = audit_of(server, "auth.sso_code_refused")
    assert event["source_address"] == LOOPBACK and event["request_id"] is None
    assert event["after"]["reasons"] == {"used-code": 1}

    provider.user = Person("idp-stranger", "stranger@example.com")
    browser = Browser(server)
    refused = callback_with_id(browser, browser.to_callback("/auth/sso/login", provider), "req-no")
    assert refused.status_code == 403, refused.text
    assert_from_the_request(events(server, "req-no"), "req-no", "auth.sso_refused")

    # Failed before anyone was identified (a forged state): anyone can send that, so it
    # is audited by sample as auth.sso_failed, with the address and the reason category.
    browser = Browser(server)
    forged = browser.to_callback("/auth/sso/login", provider).replace("state=", "state=forged", 1)
    failed = callback_with_id(browser, forged, "req-forged")
    assert failed.status_code == 400, failed.text
    assert events(server, "req-forged", count=0) == []
    [event] = audit_of(server, "auth.sso_failed")
    assert event["after"]["reasons"] == {"state-mismatch": 1}
    assert event["source_address"] == LOOPBACK and event["request_id"] is None
    assert event["actor_name"] == "anonymous"
