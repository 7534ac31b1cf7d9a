"""Differential through the real stack: after invitations, acceptances and role changes
made over the admin HTTP API, ``POST /v1/check`` answers exactly as a plain
``casbin.Enforcer`` that reads the stored rules through Casbin's own sqlalchemy-adapter
(SQLite and PostgreSQL), and ``ringfence doctor`` finds grants and rules in agreement."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import casbin
import httpx
import pytest
from casbin.util import key_match
from sqlalchemy import create_engine
from sqlalchemy_adapter import Adapter

from gateway.app import create_app
from gateway.db.models import CasbinRule
from tests.casbin_reference import ReferenceEnforcer
from tests.helpers import (
    LiveServer,
    accept_invitation,
    accept_token,
    create_workspaces,
    decision_headers,
    invite,
    outbox_messages,
    post_check,
    run_cli,
)

MODEL = Path(__file__).resolve().parents[2] / "model.conf"
PASSWORD = "correct horse battery staple"
WORKSPACES = ("acme", "globex", "initech")
# Catalogue resources and actions, one of each nobody holds, and the wildcard.
RESOURCES = ("documents", "reports", "users", "workspaces", "billing", "*")
ACTIONS = ("read", "write", "invite", "delete", "create", "*")


Loader = Callable[[], casbin.Enforcer]


@pytest.fixture
def stored_rules(server: LiveServer) -> Iterator[Loader]:
    """Loads a fresh plain Casbin enforcer from the gateway's database, knowing nothing
    of Ringfence but the adapter's table."""
    db = create_engine(server.settings.database_url)

    def load() -> casbin.Enforcer:
        adapter = Adapter(db, db_class=CasbinRule, create_table=False)
        enforcer = ReferenceEnforcer(str(MODEL), adapter)  # casbin.Enforcer, parsed once
        enforcer.add_named_domain_matching_func("g", key_match)
        enforcer.load_policy()
        return enforcer

    try:
        yield load
    finally:
        db.dispose()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def onboard_active(
    server: LiveServer, admin: httpx.Client, email: str, roles: list[tuple[str, str]]
) -> int:
    """Invite ``email`` with ``roles`` (workspace, role) and accept with the emailed link."""
    invite(admin, email, roles, email.split("@")[0].title())
    [message] = [
        m for m in outbox_messages(server.settings) if m["To"].addresses[0].addr_spec == email
    ]
    user = ok(accept_invitation(server, accept_token(message), PASSWORD))
    assert user["status"] == "active"
    return int(user["id"])


def check(client: httpx.Client, subject: str, workspace: str, resource: str, action: str) -> bool:
    """Whether ``POST /v1/check`` allows it; the answer must carry a revision."""
    body = post_check(client, subject, workspace, resource, action).json()
    assert isinstance(body["revision"], int)
    return bool(body["allowed"])


def test_decisions_match_casbin_on_the_stored_rules(
    server: LiveServer, stored_rules: Loader
) -> None:
    admin = server.admin()
    create_workspaces(admin, *WORKSPACES)

    ann = onboard_active(
        server, admin, "ann@example.com", [("acme", "editor"), ("globex", "viewer")]
    )
    bob = onboard_active(server, admin, "bob@example.com", [("acme", "admin")])
    cid = onboard_active(server, admin, "cid@example.com", [("globex", "viewer")])
    dee = onboard_active(server, admin, "dee@example.com", [("initech", "owner")])
    eve = onboard_active(server, admin, "eve@example.com", [("acme", "owner")])
    # Pending: invited, never accepted.
    invite(admin, "pat@example.com", [("acme", "owner")], "Pat")

    # Role changes of every kind.
    ok(admin.put(f"/users/{ann}/workspaces/acme/roles", json={"roles": ["viewer"]}))
    ok(admin.put(f"/users/{bob}/workspaces/globex/roles", json={"roles": ["editor", "viewer"]}))
    ok(admin.post(f"/users/{cid}/grants", json={"workspace": "acme", "role": "admin"}), 201)
    ok(admin.post(f"/users/{cid}/grants", json={"workspace": "initech", "role": "viewer"}), 201)
    ok(admin.delete(f"/users/{cid}/grants/globex/viewer"))
    ok(admin.put(f"/users/{dee}/workspaces/*/roles", json={"roles": ["superadmin"]}))
    # (Not initech's last owner any more: the workspace keeps one.)
    ok(admin.post(f"/users/{cid}/grants", json={"workspace": "initech", "role": "owner"}), 201)
    ok(admin.put(f"/users/{dee}/workspaces/initech/roles", json={"roles": []}))
    ok(admin.post(f"/users/{bob}/grants", json={"workspace": "acme", "role": "owner"}), 201)
    ok(admin.post(f"/users/{eve}/deactivate"))

    users = {u["email"]: u for u in ok(admin.get("/users", params={"page_size": 100}))}
    assert users["ann@example.com"]["roles"] == {"acme": ["viewer"], "globex": ["viewer"]}
    assert users["dee@example.com"]["roles"] == {"*": ["superadmin"]}
    active = sorted((u["id"], u["email"]) for u in users.values() if u["status"] == "active")
    assert {email for _, email in active} >= {
        "ann@example.com",
        "bob@example.com",
        "cid@example.com",
        "dee@example.com",
    }

    expected = stored_rules()
    allowed = 0
    with server.client() as client:
        for (user_id, email), workspace, resource, action in itertools.product(
            active, WORKSPACES, RESOURCES, ACTIONS
        ):
            want = expected.enforce(f"user:{user_id}", workspace, resource, action, "")
            got = check(client, f"user:{user_id}", workspace, resource, action)
            assert got == want, (email, workspace, resource, action)
            allowed += want
        # Other spellings of the same subjects give the same answers.
        for (user_id, email), workspace in itertools.product(active, WORKSPACES):
            want = expected.enforce(f"user:{user_id}", workspace, "documents", "write", "")
            assert check(client, email.upper(), workspace, "documents", "write") == want
            assert check(client, str(user_id), workspace, "documents", "write") == want

        # The grid is not trivially all-deny or all-allow.
        assert 0 < allowed < len(active) * len(WORKSPACES) * len(RESOURCES) * len(ACTIONS)
        assert check(client, f"user:{dee}", "globex", "billing", "delete")  # super admin
        assert not check(client, f"user:{ann}", "acme", "documents", "write")  # demoted

        # Deactivated and pending people are denied whatever their stored rules say.
        assert expected.enforce(f"user:{eve}", "acme", "documents", "write", "")
        assert not check(client, f"user:{eve}", "acme", "documents", "write")
        pending = users["pat@example.com"]
        assert pending["status"] == "pending"
        assert not check(client, "pat@example.com", "acme", "documents", "read")
        # Unknown workspaces are denied, even for a super admin.
        assert expected.enforce(f"user:{dee}", "umbrella", "documents", "read", "")
        assert not check(client, f"user:{dee}", "umbrella", "documents", "read")

    # A freshly started gateway (engine loaded from the database) agrees as well.
    restarted = create_app(replace(server.settings, revision_poll_seconds=0))
    with restarted.test_client() as fresh:
        for (user_id, _), workspace, resource, action in itertools.product(
            active, WORKSPACES, ("documents", "billing"), ("read", "write")
        ):
            response = fresh.post(
                "/v1/check",
                json={
                    "subject": f"user:{user_id}",
                    "workspace": workspace,
                    "resource": resource,
                    "action": action,
                },
                headers=decision_headers(server),
            )
            assert response.status_code == 200, response.text
            want = expected.enforce(f"user:{user_id}", workspace, resource, action, "")
            assert response.get_json()["allowed"] == want

    result = run_cli(server.settings, "doctor")
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_removed_person_is_denied_after_star_and_workspace_grants(
    server: LiveServer, stored_rules: Loader
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    mia = onboard_active(server, admin, "mia@example.com", [("acme", "editor"), ("acme", "viewer")])
    ok(admin.put(f"/users/{mia}/workspaces/*/roles", json={"roles": ["editor"]}))
    with server.client() as client:
        assert check(client, "mia@example.com", "acme", "documents", "write")
        ok(admin.put(f"/users/{mia}/workspaces/*/roles", json={"roles": []}))
        # Mia still holds editor in acme: Casbin on the stored rules says so.
        assert stored_rules().enforce(f"user:{mia}", "acme", "documents", "write", "")
        still_editor = check(client, "mia@example.com", "acme", "documents", "write")
        removal = admin.delete(f"/users/{mia}")
        removed_denied = not check(client, "mia@example.com", "acme", "documents", "read")
    assert not stored_rules().enforce(f"user:{mia}", "acme", "documents", "read", "")
    assert (still_editor, removal.status_code, removed_denied) == (True, 200, True)
