"""Passwords people manage themselves, over real HTTP: changing it ends every other
session; a reset by email answers the same for any address, mails a single-use link
through the outbox, and ends every session."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import OutboxMessage, TokenPurpose, UserToken, utcnow
from gateway.db.session import make_engine
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    assert_problem,
    create_workspaces,
    onboard,
    outbox_messages,
)

NEW_PASSWORD = "correct horse battery staple 42"


def sign_in(server: LiveServer, email: str, password: str) -> dict[str, Any]:
    with server.client() as anonymous:
        response = anonymous.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def works(server: LiveServer, session: dict[str, Any]) -> bool:
    """Whether the session's access token is still accepted."""
    with server.client(session["access_token"]) as client:
        status = client.get("/workspaces").status_code
    assert status in (200, 401)
    return status == 200


def refresh(server: LiveServer, refresh_token: str) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/refresh", json={"refresh_token": refresh_token})


def change(server: LiveServer, session: dict[str, Any], current: str, new: str) -> httpx.Response:
    with server.client(session["access_token"]) as client:
        return client.post(
            "/auth/password", json={"current_password": current, "new_password": new}
        )


def request_reset(server: LiveServer, email: str) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/password-reset", json={"email": email})


def wait_for_mail(server: LiveServer, count: int) -> list[Any]:
    """The outbox once it holds ``count`` emails (reset mail is handed over off the request)."""
    deadline = time.monotonic() + 10
    while len(messages := outbox_messages(server.settings)) < count:
        assert time.monotonic() < deadline, f"expected {count} emails, have {len(messages)}"
        time.sleep(0.05)
    return messages


def reset_token(message: Any) -> str:
    body = message.get_body(preferencelist=("plain",)).get_content()
    match = re.search(r"http://ringfence\.test/reset/([A-Za-z0-9_\-%]+)", body)
    assert match, body
    return match.group(1)


def confirm(server: LiveServer, token: str, new: str = NEW_PASSWORD) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post(
            "/auth/password-reset/confirm", json={"token": token, "new_password": new}
        )


def audit_actions(server: LiveServer, admin_password: str | None = None) -> list[str]:
    with server.login(ADMIN_EMAIL, admin_password or server.admin_password) as admin:
        events = admin.get("/audit", params={"action": "auth", "page_size": 100})
    assert events.status_code == 200, events.text
    return [e["action"] for e in events.json()]


# -- change ---------------------------------------------------------------------------


def test_a_password_change_ends_every_other_session_and_returns_a_new_one(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, "john@example.com", "John", [("acme", "viewer")])
    other = sign_in(server, "john@example.com", PASSWORD)
    this = sign_in(server, "john@example.com", PASSWORD)

    response = change(server, this, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 200, response.text
    fresh = response.json()
    assert fresh["token_type"] == "Bearer" and fresh["refresh_token"]
    assert works(server, fresh)
    # Every earlier token is dead: the other session's and this one's, access and refresh.
    for old in (other, this):
        assert not works(server, old)
        assert_problem(refresh(server, old["refresh_token"]), 401, "unauthorized")
    assert refresh(server, fresh["refresh_token"]).status_code == 200
    # The old password no longer signs in; the new one does.
    with server.client() as anonymous:
        refused = anonymous.post(
            "/auth/login", json={"email": "john@example.com", "password": PASSWORD}
        )
    assert_problem(refused, 401, "invalid-credentials")
    sign_in(server, "john@example.com", NEW_PASSWORD)
    assert "auth.password_changed" in audit_actions(server)


def test_a_wrong_current_password_or_a_weak_new_one_changes_nothing(server: LiveServer) -> None:
    session = sign_in(server, ADMIN_EMAIL, server.admin_password)
    wrong = change(server, session, "not my password at all", NEW_PASSWORD)
    problem = assert_problem(wrong, 422, "invalid-input", "current password")
    assert set(problem["errors"]) == {"current_password"}
    for weak in ("short", "password1234", "aaaaaaaaaaaaaaaa"):
        response = change(server, session, server.admin_password, weak)
        problem = assert_problem(response, 422, "invalid-input")
        assert set(problem["errors"]) == {"new_password"}, problem
    same = change(server, session, server.admin_password, server.admin_password)
    assert_problem(same, 422, "invalid-input", "differ")
    missing = server.client(session["access_token"]).post("/auth/password", json={})
    assert set(assert_problem(missing, 422, "invalid-input")["errors"]) == {
        "current_password",
        "new_password",
    }
    assert works(server, session)  # nothing changed
    sign_in(server, ADMIN_EMAIL, server.admin_password)
    assert "auth.password_change_failed" in audit_actions(server)
    with server.client() as anonymous:  # signed in only
        anonymous_change = anonymous.post(
            "/auth/password",
            json={"current_password": server.admin_password, "new_password": NEW_PASSWORD},
        )
    assert_problem(anonymous_change, 401, "unauthorized")


def test_guessing_the_current_password_is_throttled(server: LiveServer) -> None:
    session = sign_in(server, ADMIN_EMAIL, server.admin_password)
    for _ in range(5):
        assert change(server, session, "a wrong guess here", NEW_PASSWORD).status_code == 422
    locked = change(server, session, server.admin_password, NEW_PASSWORD)
    assert_problem(locked, 429, "too-many-requests")
    assert int(locked.headers["Retry-After"]) > 0


# -- reset ------------------------------------------------------------------------------


def test_reset_answers_the_same_for_known_unknown_and_inactive_addresses(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    gone = onboard(server, admin, "gone@example.com", "Gone", [("acme", "viewer")])
    assert admin.post(f"/users/{gone}/deactivate").status_code == 200
    sent_before = len(outbox_messages(server.settings))

    answers = {}
    for email in (ADMIN_EMAIL, "nobody@example.com", "gone@example.com", "ADMIN@Example.com "):
        response = request_reset(server, email)
        assert response.status_code == 202, response.text
        answers[email] = (response.headers["Content-Type"], response.json())
    assert len({repr(answer) for answer in answers.values()}) == 1, answers

    # Only the active account got an email (twice: as typed and differently cased).
    messages = wait_for_mail(server, sent_before + 2)[sent_before:]
    time.sleep(0.3)  # nothing else arrives
    assert len(outbox_messages(server.settings)) == sent_before + 2
    assert {m["To"].addresses[0].addr_spec for m in messages} == {ADMIN_EMAIL}
    assert messages[-1]["Subject"] == "Reset your Ringfence password"
    assert_problem(request_reset(server, ""), 422, "invalid-input")


def test_the_emailed_link_works_once_and_ends_every_session(server: LiveServer) -> None:
    sessions = [sign_in(server, ADMIN_EMAIL, server.admin_password) for _ in range(2)]
    assert request_reset(server, ADMIN_EMAIL).status_code == 202
    [message] = wait_for_mail(server, 1)
    token = reset_token(message)
    assert token not in str(stored_reset_tokens(server))  # only its hash is kept

    assert_problem(confirm(server, token, "password1234"), 422, "invalid-input", "common")
    response = confirm(server, token)
    assert response.status_code == 204, response.text
    for session in sessions:
        assert not works(server, session)
        assert refresh(server, session["refresh_token"]).status_code == 401
    sign_in(server, ADMIN_EMAIL, NEW_PASSWORD)
    # A second use fails, the page says so too.
    assert_problem(confirm(server, token, "yet another good password"), 410, "invalid-reset-token")
    with server.client() as browser:
        page = browser.get(f"/reset/{token}")
    assert page.status_code == 410 and "used already" in page.text
    actions = set(audit_actions(server, NEW_PASSWORD))
    assert {"auth.password_reset_requested", "auth.password_reset"} <= actions


def test_an_expired_or_replaced_link_is_refused(server: LiveServer) -> None:
    assert request_reset(server, ADMIN_EMAIL).status_code == 202
    first = reset_token(wait_for_mail(server, 1)[0])
    assert request_reset(server, ADMIN_EMAIL).status_code == 202
    second = reset_token(wait_for_mail(server, 2)[1])
    # Asking again replaces the earlier link.
    assert_problem(confirm(server, first), 410, "invalid-reset-token", "used already or replaced")
    expire_reset_tokens(server)
    assert_problem(confirm(server, second), 410, "invalid-reset-token", "expired")
    assert_problem(confirm(server, "made-up-token"), 410, "invalid-reset-token", "not valid")
    sign_in(server, ADMIN_EMAIL, server.admin_password)  # unchanged


def test_the_reset_page_sets_the_password(server: LiveServer) -> None:
    session = sign_in(server, ADMIN_EMAIL, server.admin_password)
    assert request_reset(server, ADMIN_EMAIL).status_code == 202
    token = reset_token(wait_for_mail(server, 1)[0])
    with server.client() as browser:
        page = browser.get(f"/reset/{token}")
        assert page.status_code == 200 and ADMIN_EMAIL in page.text
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["Referrer-Policy"] == "no-referrer"
        weak = browser.post(f"/reset/{token}", data={"password": "short"})
        assert weak.status_code == 422 and "at least 12" in weak.text
        done = browser.post(f"/reset/{token}", data={"password": NEW_PASSWORD})
        assert done.status_code == 200 and "Sign in with the new password" in done.text
        again = browser.post(f"/reset/{token}", data={"password": NEW_PASSWORD + "x"})
        assert again.status_code == 410
    assert not works(server, session)
    sign_in(server, ADMIN_EMAIL, NEW_PASSWORD)


def test_two_concurrent_uses_of_one_link_set_the_password_once(server: LiveServer) -> None:
    assert request_reset(server, ADMIN_EMAIL).status_code == 202
    token = reset_token(wait_for_mail(server, 1)[0])
    passwords = [f"first concurrent passphrase {i}" for i in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda p: confirm(server, token, p).status_code, passwords))
    assert sorted(statuses) == [204, 410, 410, 410], statuses
    winner = passwords[statuses.index(204)]
    sign_in(server, ADMIN_EMAIL, winner)


def test_reset_requests_are_throttled_per_address(server: LiveServer) -> None:
    for email in (ADMIN_EMAIL, "nobody@example.com"):
        for _ in range(3):
            assert request_reset(server, email).status_code == 202
        assert_problem(request_reset(server, email), 429, "too-many-requests", "try again in")
    wait_for_mail(server, 3)
    assert "auth.password_reset_throttled" in audit_actions(server)
    with server.client() as anonymous:  # sign-in is not affected
        ok = anonymous.post(
            "/auth/login", json={"email": ADMIN_EMAIL, "password": server.admin_password}
        )
    assert ok.status_code == 200


def test_reset_mail_goes_through_the_outbox_and_is_wiped_once_sent(server: LiveServer) -> None:
    assert request_reset(server, ADMIN_EMAIL).status_code == 202
    wait_for_mail(server, 1)
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        deadline = time.monotonic() + 10
        while True:
            with Session(db) as session:
                message = session.scalar(
                    select(OutboxMessage).where(OutboxMessage.kind == "password_reset")
                )
            assert message is not None
            if message.status == "sent" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert message.status == "sent" and message.sealed_payload is None
    finally:
        db.dispose()


# -- helpers over the database (setup and inspection only) ---------------------------------


def stored_reset_tokens(server: LiveServer) -> list[str]:
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            return list(
                session.scalars(
                    select(UserToken.token_hash).where(
                        UserToken.purpose == TokenPurpose.PASSWORD_RESET
                    )
                )
            )
    finally:
        db.dispose()


def expire_reset_tokens(server: LiveServer) -> None:
    """Move every reset link's expiry into the past (waiting 30 minutes is not a test)."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            for row in session.scalars(select(UserToken)):
                row.expires_at = utcnow() - timedelta(seconds=1)
    finally:
        db.dispose()
