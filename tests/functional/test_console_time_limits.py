"""Time-limited roles in the console, through real HTTP: the roles panel gives a role
until an end (UTC) and its preview says so, refuses a past or malformed end beside its
field with nothing saved, shows the ends of the roles held and moves or lifts one; bulk
"give a role" takes an end too; and a role whose end passes is gone at once, on the
person's page and in checks, before any cleanup ran."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.db.models import utcnow
from tests.console_support import sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    create_workspaces,
    invite_and_accept,
    post_check,
)


def field(at: datetime) -> str:
    """An end as a browser's datetime-local field sends it."""
    return at.strftime("%Y-%m-%dT%H:%M")


def shown(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def ends_of(api: httpx.Client, user_id: int) -> dict[tuple[str, str], datetime | None]:
    grants = api.get(f"/users/{user_id}").json()["grants"]
    return {
        (g["workspace"], g["role"]): (
            datetime.fromisoformat(g["expires_at"]) if g["expires_at"] else None
        )
        for g in grants
    }


def events(api: httpx.Client, user_id: int, action: str) -> list[dict[str, Any]]:
    found = api.get(
        "/audit", params={"action": action, "target_type": "user", "target_id": str(user_id)}
    )
    assert found.status_code == 200, found.text
    return list(found.json())


def allowed(server: LiveServer, email: str, action: str) -> bool:
    with server.client() as anyone:
        return bool(post_check(anyone, email, "acme", "documents", action).json()["allowed"])


def text_of(page: str) -> str:
    """The page's text, tags out and spaces folded (to read sentences split by markup)."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_the_roles_panel_gives_moves_and_lifts_an_end(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    bob, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "viewer")])
    alice = sign_in(server, "alice@example.com", PASSWORD)
    save = f"/console/users/{bob}/roles/acme"

    panel = alice.get(f"/console/users/{bob}/roles")
    assert panel.status_code == 200, panel.text
    assert 'id="until-acme-editor" name="until-editor" type="datetime-local"' in panel.text
    assert "UTC, optional" in panel.text and "(empty: no end)" in panel.text

    # -- the preview says the end ------------------------------------------------------------
    end = (utcnow() + timedelta(days=30)).replace(second=0, microsecond=0)
    wanted = {"roles": ["viewer", "editor"], "until-editor": field(end)}
    preview = alice.post(f"{save}/preview", wanted, htmx=True)
    assert preview.status_code == 200, preview.text
    assert f"editor in acme until {shown(end)}" in preview.text
    assert "viewer → <strong>editor, viewer</strong>" in preview.text
    # Without script, the panel again with the preview in it.
    whole = alice.post(f"{save}/preview", wanted)
    assert whole.status_code == 200 and f"editor in acme until {shown(end)}" in whole.text

    # -- a past or malformed end: beside its field, nothing saved ------------------------------
    before = len(events(root, bob, "grant.replaced"))
    past = alice.post(save, {**wanted, "until-editor": field(utcnow() - timedelta(hours=1))})
    assert past.status_code == 422, past.text
    assert 'id="until-acme-editor-error" class="field-error">The end must be in the future' in (
        past.text
    )
    assert re.search(r'id="until-acme-editor"[^>]*aria-invalid="true"', past.text)
    # What was typed is kept, and the role stays ticked.
    assert re.search(r'value="editor" checked', past.text)
    bad = alice.post(save, {**wanted, "until-editor": "next tuesday"}, htmx=True)
    assert bad.status_code == 422
    assert "Not a date and time: write it as YYYY-MM-DD HH:MM, in UTC." in bad.text
    assert 'value="next tuesday"' in bad.text
    early = alice.post(f"{save}/preview", {**wanted, "until-editor": "2001-01-01T00:00"}, htmx=True)
    assert "Until for editor: The end must be in the future" in early.text
    assert ends_of(root, bob) == {("acme", "viewer"): None}
    assert len(events(root, bob, "grant.replaced")) == before

    # -- saved: the grant with its end, the audit event recording it ---------------------------
    saved = alice.post(save, wanted)
    assert saved.status_code == 200, saved.text
    assert f"Bob now has editor (until {shown(end)}), viewer in acme (before: viewer)." in (
        saved.text
    )
    assert ends_of(root, bob) == {("acme", "viewer"): None, ("acme", "editor"): end}
    assert allowed(server, "bob@example.com", "write")
    event = events(root, bob, "grant.replaced")[0]
    assert event["before"] == {"roles": ["viewer"]}
    assert event["after"] == {
        "roles": ["editor", "viewer"],
        "expires_at": {"editor": end.isoformat()},
    }
    assert event["actor_name"].startswith("Alice") and event["workspace"] == "acme"
    trail = text_of(alice.get("/console/audit").text)
    assert f"roles in acme: viewer → editor, viewer; expires at: editor: {end.isoformat()}" in (
        trail
    )

    # -- the panel and the person's page show it ------------------------------------------------
    panel = alice.get(f"/console/users/{bob}/roles").text
    assert f"editor until {shown(end)}" in text_of(panel)
    assert f'name="until-editor" type="datetime-local" step="60" value="{field(end)}"' in panel
    person = text_of(alice.get(f"/console/users/{bob}").text)
    assert f"Until {shown(end)}" in person

    # Saved as shown (the fields untouched): nothing changes, no event.
    count = len(events(root, bob, "grant.replaced"))
    same = alice.post(save, {"roles": ["viewer", "editor"], "until-editor": field(end)})
    assert same.status_code == 200
    assert len(events(root, bob, "grant.replaced")) == count

    # -- moved: the same grant, its end changed, audited before and after ----------------------
    later = end + timedelta(days=7, hours=3)
    moved = alice.post(f"{save}/preview", {**wanted, "until-editor": field(later)}, htmx=True)
    assert f"editor in acme until {shown(later)} (was until {shown(end)})" in moved.text
    assert "No change." not in moved.text
    assert alice.post(save, {**wanted, "until-editor": field(later)}).status_code == 200
    assert ends_of(root, bob)[("acme", "editor")] == later
    event = events(root, bob, "grant.replaced")[0]
    assert event["before"]["expires_at"] == {"editor": end.isoformat()}
    assert event["after"]["expires_at"] == {"editor": later.isoformat()}

    # -- lifted: the field emptied, no end any more ---------------------------------------------
    lifted = alice.post(f"{save}/preview", {**wanted, "until-editor": ""}, htmx=True)
    assert f"editor in acme: no end any more (was until {shown(later)})" in lifted.text
    assert alice.post(save, {**wanted, "until-editor": ""}).status_code == 200
    assert ends_of(root, bob) == {("acme", "viewer"): None, ("acme", "editor"): None}
    event = events(root, bob, "grant.replaced")[0]
    assert "expires_at" not in event["after"] and event["after"]["roles"] == ["editor", "viewer"]
    assert allowed(server, "bob@example.com", "write")

    # An end on a held role keeps its seconds when the form is saved untouched.
    exact = (utcnow() + timedelta(days=3)).replace(microsecond=0, second=41)
    with server.admin() as api:
        assert api.delete(f"/users/{bob}/grants/acme/viewer").status_code == 200
        given = api.post(
            f"/users/{bob}/grants",
            json={"workspace": "acme", "role": "viewer", "expires_at": exact.isoformat()},
        )
        assert given.status_code == 201, given.text
    untouched = {"roles": ["viewer", "editor"], "until-viewer": field(exact)}
    assert alice.post(save, untouched).status_code == 200
    assert ends_of(root, bob)[("acme", "viewer")] == exact


def test_an_end_on_the_last_owner_is_refused_and_other_walls_hold(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    olga, _ = invite_and_accept(server, root, "olga@example.com", "Olga", [("acme", "owner")])
    invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    bob, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "viewer")])
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    end = field(utcnow() + timedelta(days=2))

    # Putting an end on the last owner's role is taking it from them at that time.
    refused = console.post(
        f"/console/users/{olga}/roles/acme", {"roles": ["owner"], "until-owner": end}, htmx=True
    )
    assert refused.status_code == 409
    assert "Cannot put an end to the last owner of &#39;acme&#39;" in refused.text
    assert ends_of(root, olga) == {("acme", "owner"): None}

    # An admin may not put an end on a role they could not give (owner), nor see it offered.
    alice = sign_in(server, "alice@example.com", PASSWORD)
    panel = alice.get(f"/console/users/{olga}/roles").text
    assert re.search(r'id="until-acme-owner"[^>]*disabled', panel)
    kept = alice.post(
        f"/console/users/{olga}/roles/acme", {"roles": ["owner"], "until-owner": end}, htmx=True
    )
    assert kept.status_code == 403
    assert ends_of(root, olga) == {("acme", "owner"): None}
    # The owner's role, held and not the admin's to change, goes back as it was (its
    # hidden field carries its end): a save of Bob's roles next to it is unaffected.
    assert alice.post(f"/console/users/{bob}/roles/acme", {"roles": ["viewer"]}).status_code == 200

    # A CSRF token is needed, as for every change.
    stolen = alice.client.post(
        f"/console/users/{bob}/roles/acme", data={"roles": ["editor"], "until-editor": end}
    )
    assert stolen.status_code in (400, 403)
    assert ends_of(root, bob) == {("acme", "viewer"): None}


def test_bulk_gives_a_role_until_an_end(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    bob, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "viewer")])
    carol, _ = invite_and_accept(server, root, "carol@example.com", "Carol", [("acme", "viewer")])
    alice = sign_in(server, "alice@example.com", PASSWORD)
    users = alice.get("/console/users").text
    assert 'id="b-until" name="until" type="datetime-local"' in users

    end = (utcnow() + timedelta(days=10)).replace(second=0, microsecond=0)
    give = {"action": "add-role", "workspace": "acme", "role": "editor", "user": [bob, carol]}
    confirm = alice.get("/console/users/bulk", params={**give, "until": field(end)})
    assert confirm.status_code == 200, confirm.text
    assert f"Give editor in acme until {shown(end)} to 2 people?" in confirm.text
    assert f'name="until" value="{end.isoformat()}"' in confirm.text

    # A past or malformed end: said in words, and nobody changed.
    for typed, words in (
        (field(utcnow() - timedelta(minutes=5)), "Until: the end must be in the future"),
        ("soon", "Until: not a date and time. Write it as YYYY-MM-DD HH:MM, in UTC."),
    ):
        refused = alice.post("/console/users/bulk", {**give, "until": typed})
        assert refused.status_code == 422 and words in refused.text
        assert alice.get("/console/users/bulk", params={**give, "until": typed}).status_code == 422
    assert events(root, bob, "grant.added") == events(root, carol, "grant.added") == []

    done = alice.post("/console/users/bulk", {**give, "until": end.isoformat()})
    assert done.status_code == 200, done.text
    assert f"Gave editor in acme until {shown(end)} to 2: Bob, Carol." in done.text
    for person in (bob, carol):
        assert ends_of(root, person)[("acme", "editor")] == end
        (added,) = events(root, person, "grant.added")  # the API's path and event
        assert added["after"] == {
            "roles": ["editor", "viewer"],
            "expires_at": {"editor": end.isoformat()},
        }
    # Without an end, as before.
    plain = {**give, "role": "viewer", "action": "remove-role"}
    assert alice.post("/console/users/bulk", plain).status_code == 200
    again = alice.post("/console/users/bulk", {**plain, "action": "add-role", "until": ""})
    assert "Gave viewer in acme to 2: Bob, Carol." in again.text
    assert ends_of(root, bob)[("acme", "viewer")] is None


def test_a_role_whose_end_passes_is_gone_at_once_on_the_page_and_in_checks(
    server: LiveServer,
) -> None:
    """Waits for an end 1.5 s away, as tests/functional/test_grant_expiry.py does: the
    engine's expiry schedule reads the wall clock."""
    root = server.admin()
    create_workspaces(root, "acme")
    bob, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "viewer")])
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    save = f"/console/users/{bob}/roles/acme"

    ends = utcnow() + timedelta(seconds=1.5)
    typed = ends.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    saved = console.post(save, {"roles": ["viewer", "editor"], "until-editor": typed})
    assert saved.status_code == 200, saved.text
    # The same end given through the API, for the API's way of giving it again below.
    by_api = {"workspace": "acme", "role": "admin", "expires_at": ends.isoformat()}
    assert root.post(f"/users/{bob}/grants", json=by_api).status_code == 201
    assert allowed(server, "bob@example.com", "write")
    assert "editor" in text_of(console.get(f"/console/users/{bob}").text)

    time.sleep(max(0.0, (ends - utcnow()).total_seconds()) + 0.05)
    # No cleanup has run: the check denies, and the role is gone from every page.
    assert not allowed(server, "bob@example.com", "write")
    assert allowed(server, "bob@example.com", "read")
    person = text_of(console.get(f"/console/users/{bob}").text)
    assert "acme viewer" in person and "acme editor" not in person
    assert root.get(f"/users/{bob}").json()["roles"] == {"acme": ["viewer"]}
    assert ends_of(root, bob) == {("acme", "viewer"): None}
    assert "bob@example.com" not in console.get("/console/users", params={"role": "admin"}).text
    panel = console.get(f"/console/users/{bob}/roles").text
    assert "(now: viewer)" in text_of(panel)
    assert not re.search(r'value="editor" checked', panel)
    listed = console.get("/console/users", params={"role": "editor"}).text
    assert "bob@example.com" not in listed

    # Ticked again before the cleanup: given anew, the ended grant cleared as the cleanup
    # would (grant.expired), then the new one without an end.
    again = console.post(save, {"roles": ["viewer", "editor"]})
    assert again.status_code == 200, again.text
    assert allowed(server, "bob@example.com", "write")
    assert ends_of(root, bob) == {("acme", "viewer"): None, ("acme", "editor"): None}
    (expired,) = events(root, bob, "grant.expired")
    assert expired["after"]["role"] == "editor"
    assert events(root, bob, "grant.replaced")[0]["before"] == {"roles": ["viewer"]}
    # The API's POST gives an ended role again the same way (it was a 409 "already has").
    again_by_api = root.post(f"/users/{bob}/grants", json={"workspace": "acme", "role": "admin"})
    assert again_by_api.status_code == 201, again_by_api.text
    assert ends_of(root, bob)[("acme", "admin")] is None
    assert [e["after"]["role"] for e in events(root, bob, "grant.expired")] == ["admin", "editor"]
    assert events(root, bob, "grant.added")[0]["before"] == {"roles": ["editor", "viewer"]}
