"""Access reports through HTTP, as JSON and CSV, scoped to the caller's workspaces."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.orm import Session

from gateway.db.models import Invitation, User, utcnow
from gateway.db.session import make_engine
from tests.helpers import (
    LiveServer,
    assert_problem,
    create_workspaces,
    invite,
    invite_and_accept,
)


def report(client: httpx.Client, name: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/reports/{name}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()  # type: ignore[no-any-return]


def csv_rows(client: httpx.Client, name: str, **params: Any) -> list[dict[str, str]]:
    response = client.get(f"/reports/{name}", params={**params, "format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/csv")
    assert f'filename="{name}.csv"' in response.headers["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.text)))


def age(server: LiveServer, model: Any, row_id: int, days: int, *columns: str) -> None:
    """Move timestamps back ``days`` (setup only: waiting months is not a test)."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            when = utcnow() - timedelta(days=days)
            session.execute(
                update(model).where(model.id == row_id).values(dict.fromkeys(columns, when))
            )
    finally:
        db.dispose()


def test_reports_list_what_compliance_asks_for_in_json_and_csv(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex", "initech")
    _, alice_client = invite_and_accept(
        server, root, "alice@example.com", "Alice", [("acme", "admin")]
    )
    dora, _ = invite_and_accept(
        server,
        root,
        "dora@partner.org",
        "=Dora",  # a name a spreadsheet would run as a formula
        [("acme", "viewer"), ("globex", "viewer"), ("initech", "editor")],
    )
    _, gina_client = invite_and_accept(
        server, root, "gina@example.com", "Gina", [("globex", "admin")]
    )
    old = invite(root, "olly@example.com", [("acme", "viewer")], "Olly")
    fresh = invite(root, "fred@example.com", [("acme", "viewer")], "Fred")
    age(server, Invitation, old["id"], 10, "created_at")
    age(server, User, dora, 120, "last_login_at", "created_at")
    patched = root.patch("/settings/email", json={"allowed_domains": ["example.com"]})
    assert patched.status_code == 200, patched.text

    names = root.get("/reports").json()["reports"]
    assert set(names) == {
        "admins",
        "dormant-accounts",
        "grants-changed",
        "many-workspaces",
        "outside-domains",
        "pending-invitations",
    }

    dormant = report(root, "dormant-accounts", days=90)
    assert [r["email"] for r in dormant["rows"]] == ["dora@partner.org"]
    assert dormant["parameters"] == {"days": 90}
    assert dormant["rows"][0]["roles"] == "acme: viewer; globex: viewer; initech: editor"

    pending = report(root, "pending-invitations", days=7)
    assert [r["invitation_id"] for r in pending["rows"]] == [old["id"]]
    assert pending["rows"][0]["days_pending"] >= 10
    assert fresh["id"] in [
        r["invitation_id"] for r in report(root, "pending-invitations", days=0)["rows"]
    ]

    admins = {(r["email"], r["workspace"], r["role"]) for r in report(root, "admins")["rows"]}
    assert admins == {
        ("admin@example.com", "*", "superadmin"),
        ("alice@example.com", "acme", "admin"),
        ("gina@example.com", "globex", "admin"),
    }

    outside = report(root, "outside-domains")
    assert outside["parameters"] == {"allowed_domains": ["example.com"]}
    assert [(r["email"], r["domain"]) for r in outside["rows"]] == [
        ("dora@partner.org", "partner.org")
    ]

    many = report(root, "many-workspaces", min_workspaces=3)
    # The super admin's global grant reaches all three.
    assert [(r["email"], r["workspace_count"]) for r in many["rows"]] == [
        ("admin@example.com", 3),
        ("dora@partner.org", 3),
    ]

    changed = report(root, "grants-changed")
    accepted = {(r["target_name"], r["workspace"], r["roles_after"]) for r in changed["rows"]}
    assert {
        ("alice@example.com", "acme", "admin"),
        ("dora@partner.org", "initech", "editor"),
        ("gina@example.com", "globex", "admin"),
    } <= accepted
    assert all(r["action"] == "invitation.accepted" for r in changed["rows"])
    removed = root.delete(f"/users/{dora}/grants/initech/editor")
    assert removed.status_code == 200, removed.text
    last = report(root, "grants-changed")["rows"][-1]
    assert (last["action"], last["target_type"], last["target_id"]) == (
        "grant.removed",
        "user",
        str(dora),
    )
    assert (last["roles_before"], last["roles_after"]) == ("editor", "")
    future = report(
        root,
        "grants-changed",
        since=(utcnow() + timedelta(days=1)).isoformat(),
        until=(utcnow() + timedelta(days=2)).isoformat(),
    )
    assert future["rows"] == []

    # CSV: the same rows, a header, and formula-like cells defused.
    rows = csv_rows(root, "dormant-accounts", days=90)
    assert [r["email"] for r in rows] == ["dora@partner.org"]
    assert rows[0]["name"] == "'=Dora"
    assert set(rows[0]) == set(dormant["columns"])
    assert [r["email"] for r in csv_rows(root, "admins")] == [
        r["email"] for r in report(root, "admins")["rows"]
    ]

    # Scoped: Gina (globex) sees globex only; Alice sees acme only.
    gina_admins = {(r["email"], r["workspace"]) for r in report(gina_client, "admins")["rows"]}
    assert gina_admins == {("gina@example.com", "globex")}
    gina_dormant = report(gina_client, "dormant-accounts", days=90)["rows"]
    assert [r["roles"] for r in gina_dormant] == ["globex: viewer"]
    assert report(gina_client, "pending-invitations", days=0)["rows"] == []
    assert "acme" not in gina_client.get("/reports/grants-changed").text
    assert report(alice_client, "many-workspaces", min_workspaces=2)["rows"] == []
    acme_many = report(alice_client, "many-workspaces", min_workspaces=1)["rows"]
    assert {r["email"] for r in acme_many} == {"alice@example.com", "dora@partner.org"}


def test_reports_refuse_what_they_cannot_answer(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    _, viewer = invite_and_accept(server, root, "vic@example.com", "Vic", [("acme", "viewer")])
    assert_problem(viewer.get("/reports/admins"), 403, "forbidden", "reviews:read")
    assert_problem(root.get("/reports/nope"), 404, "not-found")
    assert_problem(root.get("/reports/admins", params={"format": "xml"}), 422, "invalid-input")
    assert_problem(root.get("/reports/dormant-accounts", params={"days": -1}), 422, "invalid-input")
    now = utcnow()
    assert_problem(
        root.get(
            "/reports/grants-changed",
            params={"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()},
        ),
        422,
        "invalid-input",
    )
    with server.client() as anonymous:
        assert_problem(anonymous.get("/reports/admins"), 401, "unauthorized")
    # No allowed domains configured: nobody is outside them.
    assert report(root, "outside-domains")["rows"] == []
