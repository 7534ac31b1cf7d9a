"""The audit trail through real HTTP and the real CLI: what each event records (actor,
reason, source address, request id, hashes), the history of a removed person, cursor
pages, filters, JSON Lines and CSV exports that round-trip, and readers limited to the
workspaces where they hold audit:read."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from gateway.audit.chain import RECORD_FIELDS, read_jsonl
from gateway.db.models import utcnow
from gateway.policy.version import content_hash
from gateway.services.audit import csv_value
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    create_workspaces,
    invite,
    invite_and_accept,
    run_cli,
    set_invitation_expiry,
)


def events(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/audit", params={"page_size": 1000, **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_events_record_who_why_from_where_and_survive_removal(server: LiveServer) -> None:
    admin = server.admin()
    created = admin.post(
        "/workspaces",
        json={"slug": "acme", "name": "Acme"},
        headers={"X-Ringfence-Reason": "Ticket SEC-1", "X-Request-ID": "req-audit-1"},
    )
    assert created.status_code == 201, created.text
    [event] = events(admin, request_id="req-audit-1")
    assert event["action"] == "workspace.created" and event["workspace"] == "acme"
    assert event["reason"] == "Ticket SEC-1"
    assert event["source_address"] == "127.0.0.1"
    assert event["actor_name"] == f"Ada Admin <{ADMIN_EMAIL}>" and event["actor_id"]
    assert len(event["hash"]) == 64 and len(event["prev_hash"]) == 64
    assert event["after"] == {"slug": "acme", "name": "Acme"} or event["after"]["slug"] == "acme"

    # Any language, percent-encoded UTF-8; unprintable or overlong reasons are refused
    # and change nothing.
    renamed = admin.patch(
        "/workspaces/acme",
        json={"name": "Acme Corp"},
        headers={"X-Ringfence-Reason": "Pr%C3%BCfung 2026/Q4 (100% sicher)"},
    )
    assert renamed.status_code == 200, renamed.text
    assert events(admin, action="workspace.renamed")[0]["reason"] == (
        "Prüfung 2026/Q4 (100% sicher)"
    )
    count = len(events(admin))
    for bad in ("a%00b", "x" * 1001, "%FF"):
        refused = admin.patch(
            "/workspaces/acme", json={"name": "Nope"}, headers={"X-Ringfence-Reason": bad}
        )
        assert_problem(refused, 422, "invalid-input", "X-Ringfence-Reason")
    assert len(events(admin)) == count
    assert admin.get("/workspaces/acme").json()["name"] == "Acme Corp"

    # Deactivate, reactivate, remove: each with its reason; the history outlives the person.
    eve_id, _ = invite_and_accept(server, admin, "eve@example.com", "Eve", [("acme", "editor")])
    for step, path in (("deactivated", "deactivate"), ("reactivated", "reactivate")):
        response = admin.post(f"/users/{eve_id}/{path}", headers={"X-Ringfence-Reason": step})
        assert response.status_code == 200, response.text
    removed = admin.delete(f"/users/{eve_id}", headers={"X-Ringfence-Reason": "left the company"})
    assert removed.status_code in (200, 204), removed.text
    history = events(admin, target_type="user", target_id=str(eve_id), action="user")
    assert [e["action"] for e in reversed(history)] == [
        "user.deactivated",
        "user.reactivated",
        "user.removed",
    ]
    assert [e["reason"] for e in reversed(history)] == [
        "deactivated",
        "reactivated",
        "left the company",
    ]
    assert {e["target_name"] for e in history} == {"Eve"}
    # Eve's own sign-in stays, named as she was, and found by her address.
    [sign_in] = events(admin, actor="EVE@example.com", action="auth.login")
    assert sign_in["actor_name"] == "Eve <eve@example.com>" and sign_in["actor_id"] == eve_id
    assert sign_in["source_address"] == "127.0.0.1"
    accepted = events(admin, action="invitation.accepted")
    assert accepted and accepted[0]["actor_id"] == eve_id
    assert events(admin, action="invitation.created")[0]["actor_name"].startswith("Ada Admin")

    result = run_cli(server.settings, "audit", "verify")
    assert result.exit_code == 0 and "OK:" in result.output, result.output


def test_cursor_pages_and_filters(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, *(f"ws{n}" for n in range(7)))
    everything = [e["id"] for e in events(admin)]
    seen: list[int] = []
    params: dict[str, Any] = {"page_size": 3}
    pages = 0
    while True:
        response = admin.get("/audit", params=params)
        assert response.status_code == 200, response.text
        if not pages:
            assert json.loads(response.headers["X-Pagination"])["total"] == len(everything)
        seen += [e["id"] for e in response.json()]
        pages += 1
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in response.headers
            break
        assert (
            response.headers["Link"].endswith('>; rel="next"')
            and cursor in response.headers["Link"]
        )
        # Events added meanwhile do not shift the pages.
        create_workspaces(admin, f"late{pages}")
        params = {"page_size": 3, "cursor": cursor}
    assert seen == everything and pages == -(-len(everything) // 3)
    assert_problem(admin.get("/audit", params={"cursor": "not-a-cursor"}), 422, "invalid-input")

    # Filters: action prefix, workspace, time range; numbered pages still work.
    created = events(admin, action="workspace")
    assert {e["action"] for e in created} == {"workspace.created"}
    assert [e["workspace"] for e in events(admin, workspace="ws3")] == ["ws3"]
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert events(admin, since=future) == []
    assert len(events(admin, until=future)) == len(events(admin))
    numbered = admin.get("/audit", params={"page": 2, "page_size": 2})
    assert [e["id"] for e in numbered.json()] == [e["id"] for e in events(admin)][2:4]


def test_exports_round_trip_and_verify(server: LiveServer, tmp_path: Path) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    # A name a spreadsheet would run as a formula.
    admin.patch("/workspaces/acme", json={"name": "=HYPERLINK(evil)"})
    listed = list(reversed(events(admin)))

    jsonl = admin.get("/audit/export", params={"format": "jsonl"})
    assert jsonl.status_code == 200 and jsonl.headers["Content-Type"] == "application/jsonl"
    exported = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [e["id"] for e in exported] == [e["id"] for e in listed]
    for item, shown in zip(exported, listed, strict=True):
        assert list(item) == list(RECORD_FIELDS)
        for name in RECORD_FIELDS:
            if name == "at":
                continue
            assert item[name] == shown[name], name
    # The whole trail exported is the whole chain: it verifies as an archive does.
    path = tmp_path / "export.jsonl"
    path.write_text(jsonl.text)
    assert list(read_jsonl(path)) == exported
    checked = run_cli(server.settings, "audit", "verify", str(path), "--files-only")
    assert checked.exit_code == 0, checked.output

    # CSV: the same values, formulas defused, and the CLI writes the same file.
    as_csv = admin.get("/audit/export", params={"format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [int(r["id"]) for r in rows] == [e["id"] for e in exported]
    renamed = rows[-1]
    assert renamed["after"].startswith("{") and "=HYPERLINK" in renamed["after"]
    assert renamed["target_name"] == "'=HYPERLINK(evil)"
    for row, item in zip(rows, exported, strict=True):
        for name in ("actor_name", "action", "target_type", "hash", "prev_hash", "at"):
            assert csv_value(row[name]) == str(item[name]), name
        for name in ("before", "after"):
            assert (json.loads(csv_value(row[name])) if row[name] else None) == item[name]
    out = tmp_path / "cli.csv"
    cli = run_cli(server.settings, "audit", "export", "--format", "csv", "--output", str(out))
    assert cli.exit_code == 0, cli.output
    assert out.read_bytes().decode() == as_csv.text

    # A value starting like a formula is defused with an apostrophe, reversibly.
    admin.post("/workspaces", json={"slug": "formula", "name": "-1+2"})
    rows = list(csv.DictReader(io.StringIO(admin.get("/audit/export?format=csv").text)))
    assert rows[-1]["target_name"] == "'-1+2" and csv_value(rows[-1]["target_name"]) == "-1+2"

    filtered = admin.get("/audit/export", params={"format": "jsonl", "action": "workspace"})
    assert {json.loads(x)["action"] for x in filtered.text.splitlines()} == {
        "workspace.created",
        "workspace.renamed",
    }
    assert_problem(admin.get("/audit/export", params={"format": "xml"}), 422, "invalid-input")


def test_readers_see_only_workspaces_where_they_may_audit(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    _, acme_admin = invite_and_accept(server, admin, "ann@example.com", "Ann", [("acme", "admin")])
    _, editor = invite_and_accept(server, admin, "ed@example.com", "Ed", [("acme", "editor")])
    admin.patch("/workspaces/globex", json={"name": "Globex Secret"})

    mine = events(acme_admin)
    assert mine and {e["workspace"] for e in mine} == {"acme"}
    assert events(acme_admin, workspace="globex") == []
    exported = acme_admin.get("/audit/export", params={"format": "jsonl"}).text.splitlines()
    assert {json.loads(x)["workspace"] for x in exported} == {"acme"}
    assert "Globex Secret" not in acme_admin.get("/audit/export?format=csv").text
    # No audit:read anywhere: nothing at all.
    assert events(editor) == []
    assert editor.get("/audit/export", params={"format": "jsonl"}).text == ""
    with server.client() as anonymous:
        assert_problem(anonymous.get("/audit/export"), 401, "unauthorized")


def test_expiries_and_policy_versions_are_audited(server: LiveServer, tmp_path: Path) -> None:
    from mailer.tasks import housekeeping

    admin = server.admin()
    create_workspaces(admin, "acme")
    pending = invite(admin, "pat@example.com", [("acme", "viewer")], "Pat")
    set_invitation_expiry(server, pending["id"], timedelta(days=-1))
    # The hourly beat task (run here in this process, on this app's ledger).
    assert housekeeping.apply().get()["invitations_expired"] == 1
    assert housekeeping.apply().get()["invitations_expired"] == 0  # once per expiry
    [expired] = events(admin, action="invitation.expired")
    assert expired["workspace"] == "acme" and expired["target_id"] == str(pending["id"])
    assert expired["actor_name"] == "system" and expired["after"]["status"] == "expired"
    # Resent, it can expire (and be audited) again.
    assert admin.post(f"/invitations/{pending['id']}/resend").status_code == 200
    set_invitation_expiry(server, pending["id"], timedelta(seconds=-1))
    assert housekeeping.apply().get()["invitations_expired"] == 1
    assert len(events(admin, action="invitation.expired")) == 2

    # A policy change is applied with the files' version and the operator's reason.
    policies = tmp_path / "policies"
    shutil.copytree(server.settings.policies_dir, policies)
    roles = policies / "roles.yaml"
    roles.write_text(
        roles.read_text().replace(
            "roles:\n",
            "roles:\n  auditor:\n    description: Reads the audit trail\n"
            "    permissions:\n      - audit:read\n\n",
            1,
        )
    )
    changed = replace(server.settings, policies_dir=policies)
    result = run_cli(changed, "policy", "apply", "--yes", "--reason", "CHG-42 auditors")
    assert result.exit_code == 0 and "Policy applied" in result.output, result.output
    [applied] = events(admin, action="policy.applied")[:1]
    assert applied["reason"] == "CHG-42 auditors" and "auditor" in applied["after"]["roles"]
    version = applied["after"]["version"]
    assert version["sha256"] == content_hash(policies) != content_hash(server.settings.policies_dir)
    assert run_cli(changed, "audit", "verify").exit_code == 0


def test_sign_in_events_carry_the_request_id_the_client_sent(server: LiveServer) -> None:
    """Sign-in events (success, failure, refresh reuse, sign-out) name the request, so an
    event can be matched to the gateway's own logs and the decision log."""
    with server.client() as anonymous:
        failed = anonymous.post(
            "/auth/login",
            json={"email": ADMIN_EMAIL, "password": "not the password"},
            headers={"X-Request-ID": "req-login-bad"},
        )
        assert failed.status_code == 401, failed.text
        signed_in = anonymous.post(
            "/auth/login",
            json={"email": ADMIN_EMAIL, "password": server.admin_password},
            headers={"X-Request-ID": "req-login-1"},
        )
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.headers["X-Request-ID"] == "req-login-1"
        tokens = signed_in.json()
        for request_id in ("req-refresh-1", "req-refresh-again"):
            anonymous.post(
                "/auth/refresh",
                json={"refresh_token": tokens["refresh_token"]},
                headers={"X-Request-ID": request_id},
            )
    admin = server.admin()
    [login] = events(admin, request_id="req-login-1")
    assert login["action"] == "auth.login" and login["actor_name"].endswith(f"<{ADMIN_EMAIL}>")
    [failure] = events(admin, request_id="req-login-bad")
    assert failure["action"] == "auth.login_failed"
    [reused] = events(admin, request_id="req-refresh-again")
    assert reused["action"] == "auth.refresh_reused"
    with server.client(admin.headers["Authorization"].removeprefix("Bearer ")) as same:
        assert same.post("/auth/logout", headers={"X-Request-ID": "req-out-1"}).status_code == 204
    [signed_out] = events(server.admin(), request_id="req-out-1")
    assert signed_out["action"] == "auth.logout"
