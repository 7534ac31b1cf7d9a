"""Sessions: short-lived access tokens, rotating single-use refresh tokens (a replayed one
ends the session), an absolute lifetime however often they rotate, sign-out, and
deactivation ending every session at once."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, update

from gateway.db.models import AuthSession, RefreshToken, utcnow
from tests.functional.test_mfa import database
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    assert_problem,
    create_workspaces,
    onboard,
)


def sign_in(server: LiveServer, email: str, password: str) -> dict:
    with server.client() as anonymous:
        response = anonymous.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["refresh_token"] and body["access_token"]
    return body


def refresh(server: LiveServer, token: str) -> httpx.Response:
    with server.client() as anonymous:
        return anonymous.post("/auth/refresh", json={"refresh_token": token})


def test_refresh_tokens_rotate_and_a_replay_ends_the_session(server: LiveServer) -> None:
    first = sign_in(server, ADMIN_EMAIL, server.admin_password)
    response = refresh(server, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    with server.client(second["access_token"]) as client:
        assert client.get("/workspaces").status_code == 200

    # Replaying the first (used) refresh token: refused, and the whole session ends.
    assert_problem(refresh(server, first["refresh_token"]), 401, "unauthorized", "used already")
    assert_problem(refresh(server, second["refresh_token"]), 401, "unauthorized")
    with server.client(second["access_token"]) as client:
        assert client.get("/workspaces").status_code == 401
    # Another session of the same person is not affected.
    other = sign_in(server, ADMIN_EMAIL, server.admin_password)
    with server.client(other["access_token"]) as client:
        assert client.get("/workspaces").status_code == 200
    assert_problem(refresh(server, "not-a-token"), 401, "unauthorized")


def test_a_session_ends_at_its_maximum_age_however_often_it_is_renewed(
    server: LiveServer,
) -> None:
    """RINGFENCE_SESSION_MAX_DAYS (30): refresh tokens never outlive their session's end,
    and a refresh after it ends the session (its access tokens are refused at once)."""
    first = sign_in(server, ADMIN_EMAIL, server.admin_password)
    renewed = refresh(server, first["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    with database(server) as session:
        started = session.scalars(select(AuthSession.created_at)).one()
        ends = session.scalars(select(RefreshToken.expires_at)).all()
        assert all(end <= started + timedelta(days=30) for end in ends)
        # 30 days of renewals later (the session started a day more than that ago).
        session.execute(update(AuthSession).values(created_at=utcnow() - timedelta(days=31)))
        session.commit()
    aged = refresh(server, renewed.json()["refresh_token"])
    assert_problem(aged, 401, "unauthorized", "maximum age")
    with server.client(renewed.json()["access_token"]) as client:
        assert client.get("/workspaces").status_code == 401
    with database(server) as session:
        assert (
            session.scalars(select(AuthSession.revoked_reason)).one() == "reached its maximum age"
        )
    second = sign_in(server, ADMIN_EMAIL, server.admin_password)  # signing in again works
    assert refresh(server, second["refresh_token"]).status_code == 200


def test_logout_ends_the_session(server: LiveServer) -> None:
    session = sign_in(server, ADMIN_EMAIL, server.admin_password)
    with server.client(session["access_token"]) as client:
        assert client.post("/auth/logout").status_code == 204
        assert client.get("/workspaces").status_code == 401
    assert refresh(server, session["refresh_token"]).status_code == 401
    with server.client() as anonymous:
        assert anonymous.post("/auth/logout").status_code == 401


def test_deactivation_ends_every_session_and_refresh(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    john = onboard(server, admin, "john@example.com", "John", [("acme", "viewer")])
    sessions = [sign_in(server, "john@example.com", PASSWORD) for _ in range(2)]
    assert admin.post(f"/users/{john}/deactivate").status_code == 200
    for session in sessions:
        with server.client(session["access_token"]) as client:
            assert client.get("/workspaces").status_code == 401
        assert refresh(server, session["refresh_token"]).status_code == 401
    assert admin.post(f"/users/{john}/reactivate").status_code == 200
    for session in sessions:  # reactivation does not revive old sessions
        assert refresh(server, session["refresh_token"]).status_code == 401


def test_replay_and_logout_are_audited(server: LiveServer) -> None:
    first = sign_in(server, ADMIN_EMAIL, server.admin_password)
    assert refresh(server, first["refresh_token"]).status_code == 200
    assert refresh(server, first["refresh_token"]).status_code == 401  # replay
    other = sign_in(server, ADMIN_EMAIL, server.admin_password)
    with server.client(other["access_token"]) as client:
        assert client.post("/auth/logout").status_code == 204
    actions = [e["action"] for e in server.admin().get("/audit", params={"action": "auth"}).json()]
    assert "auth.refresh_reused" in actions and "auth.logout" in actions
