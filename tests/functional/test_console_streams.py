"""Event streams in the console (issue 24): an acme admin creates one through the form
(field errors from the API's validation, next to the field), sees it, replays it and
deletes it; a globex admin gets 404 for every one of its pages and buttons, as for an
unknown id; the pages keep the console's strict CSP with nothing inline."""

from __future__ import annotations

import re

from tests.console_support import sign_in
from tests.functional.test_console import INLINE_SCRIPT, INLINE_STYLE
from tests.helpers import PASSWORD, LiveServer, create_workspaces, invite_and_accept

UNKNOWN_ID = 2_000_000_000


def test_an_admin_manages_a_stream_in_the_console_and_another_workspace_sees_none(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    invite_and_accept(server, root, "olive@example.com", "Olive", [("acme", "admin")])
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    olive = sign_in(server, "olive@example.com", PASSWORD)
    gina = sign_in(server, "gina@example.com", PASSWORD)

    page = olive.get("/console/event-streams")
    assert page.status_code == 200 and 'aria-current="page">Log streams<' in page.text
    assert '<option value="*"' not in page.text  # every event: super admins only
    form = {"workspace": "acme", "name": "Corp SIEM", "kind": "webhook", "event_types": "user.*"}
    bad = olive.post("/console/event-streams", {**form, "target": "http://siem.example.com/"})
    assert bad.status_code == 422
    assert re.search(r'id="stream-target-error" class="field-error">Must be an https', bad.text)
    made = olive.post(
        "/console/event-streams",
        {**form, "kind": "file", "target": "acme.jsonl", "event_types": "user.*, workspace.*"},
    )
    assert made.status_code == 201, made.text[:500]
    [stream] = root.get("/event-streams").json()
    assert (stream["workspace"], stream["event_types"]) == ("acme", ["user.*", "workspace.*"])
    url = f"/console/event-streams/{stream['id']}"
    shown = olive.get(url)
    assert shown.status_code == 200 and "acme.jsonl" in shown.text
    for response in (page, shown):
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
        assert not INLINE_SCRIPT.search(response.text) and not INLINE_STYLE.search(response.text)
    assert olive.post(f"{url}/replay", {"from_audit_id": "x"}).status_code == 422
    replayed = olive.post(f"{url}/replay", {"from_audit_id": "1"})
    assert replayed.status_code == 200 and "Replaying every matching event" in replayed.text
    assert olive.post(f"{url}/rotate-secret").status_code == 409  # a file has no secret
    assert olive.post(f"{url}/resume").status_code == 200

    # Globex's admin: the list shows nothing of acme's, each page and button is a 404.
    assert "Corp SIEM" not in gina.get("/console/event-streams").text
    for path in ("", "/edit", "/resume", "/replay", "/rotate-secret", "/delete"):
        for stream_id in (stream["id"], UNKNOWN_ID):
            call = gina.get if not path else gina.post
            response = call(f"/console/event-streams/{stream_id}{path}")
            assert response.status_code == 404, (path, stream_id)
            assert "acme" not in response.text and "Corp SIEM" not in response.text
    refused = gina.post("/console/event-streams", {**form, "target": "https://x.example/"})
    assert refused.status_code in (403, 404)
    assert "acme.jsonl" not in refused.text

    deleted = olive.post(f"{url}/delete")
    assert deleted.status_code == 200 and "Deleted Corp SIEM" in deleted.text
    assert root.get("/event-streams").json() == []
    actions = [
        e["action"] for e in root.get("/audit", params={"target_type": "event_stream"}).json()
    ]
    assert set(actions) == {
        "event_stream.created",
        "event_stream.replayed",
        "event_stream.resumed",
        "event_stream.deleted",
    }


def test_an_admin_edits_a_stream_in_the_console(server: LiveServer) -> None:
    """The edit form on a stream's page: the API's checks, errors beside their fields
    (the form keeps what was typed), CSRF, and the change audited like a PATCH."""
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "olive@example.com", "Olive", [("acme", "admin")])
    olive = sign_in(server, "olive@example.com", PASSWORD)
    made = olive.post(
        "/console/event-streams",
        {
            "workspace": "acme",
            "name": "Corp SIEM",
            "kind": "file",
            "target": "acme.jsonl",
            "event_types": "user.*",
            "decision_sample": "",
        },
    )
    assert made.status_code == 201, made.text[:500]
    [stream] = root.get("/event-streams").json()
    assert stream["decision_sample"] == 0.0
    url = f"/console/event-streams/{stream['id']}"
    page = olive.get(url)
    assert 'id="edit-name"' in page.text and 'value="Corp SIEM"' in page.text
    assert 'id="edit-decisions"' in page.text and 'value="0"' in page.text

    bad = olive.post(
        f"{url}/edit",
        {"name": "Renamed", "target": "../up.jsonl", "event_types": "*", "decision_sample": "1"},
    )
    assert bad.status_code == 422
    assert re.search(r'id="edit-target-error" class="field-error">Must be a plain file', bad.text)
    assert 'value="Renamed"' in bad.text and 'value="../up.jsonl"' in bad.text  # as typed
    too_high = olive.post(
        f"{url}/edit",
        {"name": "Renamed", "target": "acme.jsonl", "event_types": "*", "decision_sample": "2"},
    )
    assert too_high.status_code == 422
    assert 'id="edit-decisions-error" class="field-error">Must be greater' in too_high.text
    assert 'aria-describedby="edit-decisions-hint edit-decisions-error"' in too_high.text
    not_a_number = olive.post(
        f"{url}/edit",
        {"name": "Renamed", "target": "acme.jsonl", "event_types": "*", "decision_sample": "x"},
    )
    assert not_a_number.status_code == 422
    assert 'id="edit-decisions-error" class="field-error">Not a valid number' in not_a_number.text
    assert root.get(f"/event-streams/{stream['id']}").json()["name"] == "Corp SIEM"

    saved = olive.post(
        f"{url}/edit",
        {
            "name": "Renamed",
            "target": "renamed.jsonl",
            "event_types": "user.*, grant.*",
            "decision_sample": "0.25",
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    shown = root.get(f"/event-streams/{stream['id']}").json()
    assert (shown["name"], shown["target"], shown["event_types"], shown["decision_sample"]) == (
        "Renamed",
        "renamed.jsonl",
        ["user.*", "grant.*"],
        0.25,
    )
    assert "0.25 of the access checks" in saved.text
    actions = [
        e["action"] for e in root.get("/audit", params={"target_type": "event_stream"}).json()
    ]
    assert actions.count("event_stream.updated") == 1

    # Without the form's CSRF token: refused, nothing changed.
    forged = olive.client.post(f"{url}/edit", data={"name": "Forged", "target": "x.jsonl"})
    assert forged.status_code in (400, 403)
    assert root.get(f"/event-streams/{stream['id']}").json()["name"] == "Renamed"
