"""The console's audit trail in words, through real HTTP with two tenants: changes read
"roles in acme: editor → viewer", each event has a details drawer with its raw record and
its place in the hash chain, the action filter's choices come from the service, and the
export streams what the filters select, only of the admin's own workspaces."""

from __future__ import annotations

import csv
import io
import json

from tests.console_support import sign_in
from tests.helpers import (
    PASSWORD,
    LiveServer,
    create_workspaces,
    invite,
    invite_and_accept,
)


def test_the_audit_trail_in_words_with_details_and_export(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    bob, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "editor")])
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "owner")])
    invite(root, "pat@example.com", [("acme", "viewer"), ("globex", "viewer")], "Pat")
    root.patch("/workspaces/globex", json={"name": "Globex Corporation"})
    alice = sign_in(server, "alice@example.com", PASSWORD)
    alice.post(f"/console/users/{bob}/roles/acme", {"roles": ["viewer"]})

    page = alice.get("/console/audit").text
    assert "roles in acme: editor → viewer" in page
    assert "{&#39;" not in page and "[&#39;" not in page  # no Python reprs
    assert 'Details<span class="visually-hidden"> of entry' in page and "<dt>Chain</dt>" in page
    assert '<option value="grant.replaced">' in page and '<option value="grant">' in page
    assert "globex" not in page.lower()  # the half of Pat's invitation that is not hers

    exported = alice.get("/console/audit/export", params={"format": "csv", "action": "grant"})
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["action"] for r in rows] == ["grant.replaced"] and rows[0]["hash"]
    lines = alice.get("/console/audit/export", params={"format": "jsonl"}).text.splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all(r["workspace"] == "acme" for r in records)
    assert alice.get("/console/audit/export", params={"since": "yesterday"}).status_code == 422

    # One line per change: Pat's invitation, one event per workspace, reads as one line
    # naming both (for whoever sees both), with each event in its details.
    everything = sign_in(server, server.settings.admin_email, server.admin_password)
    whole = everything.get("/console/audit", params={"action": "invitation.created"}).text
    [pats] = [r for r in whole.split("<tr>") if 'data-label="When"' in r and "pat@" in r]
    assert '<td data-label="Workspace">acme, globex</td>' in pats
    assert "roles in acme: viewer; email: pat@example.com" in pats
    assert "roles in globex: viewer" in pats and pats.count("email: pat@example.com") == 1
    assert pats.count("<dt>Chain</dt>") == 2 and "(globex), revision" in pats
    assert (
        alice.get("/console/audit", params={"action": "invitation.created"}).text.count(
            "pat@example.com"
        )
        >= 1
    )  # her half: acme's

    gina = sign_in(server, "gina@example.com", PASSWORD)
    theirs = gina.get("/console/audit/export", params={"format": "csv", "workspace": "acme"})
    assert theirs.status_code == 200 and len(theirs.text.strip().splitlines()) == 1  # header
    assert "name: Globex → Globex Corporation" in gina.get("/console/audit").text
    for console in (alice, gina, everything):
        console.close()
