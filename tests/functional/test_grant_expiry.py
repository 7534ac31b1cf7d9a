"""Time-limited grants through HTTP: a grant with an end date allows until then and
denies on the very first check after it, before any cleanup ran; the cleanup removes it
for good with a revision bump and a ``grant.expired`` audit event. Also: last login and
last seen in user details."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import AuditEvent, CasbinRule, Grant, utcnow
from gateway.db.session import make_engine
from tests.helpers import (
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
    post_check,
    run_cli,
)


def allowed(server: LiveServer, subject: str, workspace: str, action: str) -> dict[str, object]:
    with server.client() as anyone:
        return post_check(anyone, subject, workspace, "documents", action).json()  # type: ignore[no-any-return]


def test_an_expired_grant_denies_on_the_first_check_after_its_end(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    tim, _ = invite_and_accept(server, root, "tim@example.com", "Tim", [("acme", "viewer")])

    # The end date must be in the future.
    past = (utcnow() - timedelta(seconds=1)).isoformat()
    assert_problem(
        root.post(
            f"/users/{tim}/grants", json={"workspace": "acme", "role": "editor", "expires_at": past}
        ),
        422,
        "invalid-input",
        "future",
    )
    ends = utcnow() + timedelta(seconds=2.5)
    added = root.post(
        f"/users/{tim}/grants",
        json={"workspace": "acme", "role": "editor", "expires_at": ends.isoformat()},
    )
    assert added.status_code == 201, added.text
    grants = {(g["workspace"], g["role"]): g for g in added.json()["user"]["grants"]}
    assert datetime.fromisoformat(grants[("acme", "editor")]["expires_at"]) == ends
    assert grants[("acme", "viewer")]["expires_at"] is None
    # Allowed while the grant runs: a check answered after its end (a loaded machine
    # once took longer than the grant's 1.5 s to get here) says nothing of that.
    allowed_while_running = allowed(server, "tim@example.com", "acme", "write")["allowed"]
    assert allowed_while_running is True or utcnow() >= ends
    revision = added.json()["revision"]

    time.sleep(max(0.0, (ends - utcnow()).total_seconds()) + 0.05)
    # No cleanup has run: the decision path itself stops counting the grant.
    decision = allowed(server, "tim@example.com", "acme", "write")
    assert decision["allowed"] is False
    assert decision["revision"] == revision  # memory only: no revision is claimed
    assert allowed(server, "tim@example.com", "acme", "read")["allowed"] is True

    result = run_cli(server.settings, "grants", "expire")
    assert result.exit_code == 0 and "Expired 1 grant(s)." in result.output, result.output
    assert "Expired 0 grant(s)." in run_cli(server.settings, "grants", "expire").output
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session:
            assert session.scalars(select(Grant.role).where(Grant.user_id == tim)).all() == [
                "viewer"
            ]
            assert not session.scalars(
                select(CasbinRule).where(
                    CasbinRule.v0 == f"user:{tim}", CasbinRule.v1 == "role:editor"
                )
            ).all()
            event = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "grant.expired")
            ).one()
            assert event.target_id == str(tim) and event.workspace == "acme"
            assert event.before == {"roles": ["editor", "viewer"]}
            assert event.after is not None and event.after["roles"] == ["viewer"]
            assert event.revision is not None and event.revision > revision
    finally:
        db.dispose()
    assert allowed(server, "tim@example.com", "acme", "write")["allowed"] is False

    # Given again without an end, the old end date does not follow it.
    again = root.post(f"/users/{tim}/grants", json={"workspace": "acme", "role": "editor"})
    assert again.status_code == 201, again.text
    assert allowed(server, "tim@example.com", "acme", "write")["allowed"] is True


def test_an_ended_grant_gives_no_admin_permission_and_the_task_removes_it(
    server: LiveServer,
) -> None:
    from mailer.housekeeping import expire_grants

    root = server.admin()
    create_workspaces(root, "acme")
    ada, ada_client = invite_and_accept(
        server, root, "ada@example.com", "Ada", [("acme", "viewer")]
    )
    ends = utcnow() + timedelta(seconds=2.5)
    added = root.post(
        f"/users/{ada}/grants",
        json={"workspace": "acme", "role": "admin", "expires_at": ends.isoformat()},
    )
    assert added.status_code == 201, added.text
    assert ada_client.get("/users", params={"workspace": "acme"}).status_code == 200
    time.sleep(max(0.0, (ends - utcnow()).total_seconds()) + 0.05)
    assert ada_client.get("/users", params={"workspace": "acme"}).json() == []
    assert expire_grants() == 1  # beat's task, through this app's housekeeping port
    user = root.get(f"/users/{ada}").json()
    assert user["roles"] == {"acme": ["viewer"]}


def test_user_details_show_last_login_and_last_seen(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    sam, sam_client = invite_and_accept(server, root, "sam@example.com", "Sam", [("acme", "admin")])
    before = root.get(f"/users/{sam}").json()
    assert before["last_login_at"] is not None
    assert before["last_seen_at"] is None  # signed in, but no API request yet
    assert sam_client.get("/users").status_code == 200
    seen = root.get(f"/users/{sam}").json()["last_seen_at"]
    assert seen is not None
    assert abs((datetime.fromisoformat(seen) - utcnow()).total_seconds()) < 30
    # At most one write a minute: a second request leaves the time as it was.
    assert sam_client.get("/users").status_code == 200
    assert root.get(f"/users/{sam}").json()["last_seen_at"] == seen
