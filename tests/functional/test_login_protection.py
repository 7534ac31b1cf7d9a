"""Sign-in protection: throttling per address and per client that reveals nothing about
who has an account, and a password policy that refuses common passwords."""

from __future__ import annotations

import httpx
import pytest

from gateway.errors import TooManyRequests
from gateway.identity.throttle import LoginThrottle
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    accept_token,
    assert_problem,
    create_workspaces,
    invite,
    onboard,
    outbox_messages,
)


def login(client: httpx.Client, email: str, password: str) -> httpx.Response:
    return client.post("/auth/login", json={"email": email, "password": password})


def test_repeated_failures_lock_the_address_the_same_way_for_known_and_unknown(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, "bob@example.com", "Bob", [("acme", "viewer")])
    with server.client() as anonymous:
        for email in (ADMIN_EMAIL, "nobody@example.com"):
            for _ in range(5):
                assert_problem(
                    login(anonymous, email, "wrong password!"), 401, "invalid-credentials"
                )
            locked = login(anonymous, email, server.admin_password)
            problem = assert_problem(locked, 429, "too-many-requests", "try again in")
            assert int(locked.headers["Retry-After"]) > 0
            assert set(problem) == {"type", "title", "status", "detail", "retry_after"}
        # Another account from the same client still signs in; the admin's existing
        # session is not affected by the lock on new sign-ins.
        assert login(anonymous, "bob@example.com", PASSWORD).status_code == 200
        assert admin.get("/workspaces").status_code == 200


def test_common_passwords_are_refused_on_acceptance(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    invite(admin, "ann@example.com", [("acme", "viewer")], "Ann")
    token = accept_token(outbox_messages(server.settings)[-1])
    with server.client() as anonymous:
        for weak in ("password1234", "qwerty123456", "aaaaaaaaaaaaaaa"):
            response = anonymous.post(
                "/invitations/accept", json={"token": token, "password": weak}
            )
            problem = assert_problem(response, 422, "invalid-input", "too common")
            assert "password" in problem["errors"]
        ok = anonymous.post("/invitations/accept", json={"token": token, "password": PASSWORD})
        assert ok.status_code == 200, ok.text


def test_the_client_limit_applies_across_addresses() -> None:
    throttle = LoginThrottle("memory://", "100 per minute", "3 per minute")
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        throttle.check(email, "203.0.113.9")
        throttle.failed(email, "203.0.113.9")
    with pytest.raises(TooManyRequests):
        throttle.check("d@example.com", "203.0.113.9")
    throttle.check("d@example.com", "198.51.100.7")  # another client is not affected


def test_sign_ins_are_audited_without_moving_the_policy_revision(server: LiveServer) -> None:
    admin = server.admin()
    with server.client() as anonymous:
        revision = anonymous.get("/healthz").json()["revision"]
        login(anonymous, ADMIN_EMAIL, "wrong password!")
        login(anonymous, "ghost@example.com", "wrong password!")
        assert login(anonymous, ADMIN_EMAIL, server.admin_password).status_code == 200
        assert anonymous.get("/healthz").json()["revision"] == revision
    events = admin.get("/audit", params={"action": "auth", "page_size": 50}).json()
    by_action = {(e["action"], e["target_type"], e["target_name"]) for e in events}
    assert ("auth.login_failed", "user", "Ada Admin") in by_action
    assert ("auth.login_failed", "login", "ghost@example.com") in by_action
    assert ("auth.login", "user", "Ada Admin") in by_action
    failed = next(e for e in events if e["target_name"] == "ghost@example.com")
    assert failed["after"]["source_address"] == "127.0.0.1"
    assert failed["revision"] is None
    assert "wrong password" not in str(events)  # passwords are never recorded
