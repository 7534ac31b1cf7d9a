"""Confirmations and a revoked invitation's row in the console (issue 23's rough edges),
through real HTTP against a live gateway:

- "Deactivate…" and "Revoke invitation…" ask first, on the Users row, a person's page and
  a workspace's members page: a panel naming the person and saying what happens, with
  Confirm and Cancel, working as plain forms, CSRF-protected; the confirmed POST still
  refuses what the services refuse.
- A revoked invitation's row says "Invitation revoked" and offers **Invite again** (a
  fresh invitation with the same roles, by the invitation service's own rules) besides
  Remove, exactly when the service would carry it out.
- For another workspace's admin, every new route answers as an unknown id does."""

from __future__ import annotations

import re

import httpx

from tests.console_support import Console, sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    accept_invitation,
    accept_token,
    allowed,
    create_workspaces,
    invite,
    invite_and_accept,
    outbox_messages,
    user_id_of,
)

UNKNOWN_ID = 2_000_000_000


def row_of(console: Console, person: int, email: str) -> str:
    """The person's row on Users, as the console sends it."""
    page = console.get("/console/users", params={"q": email})
    assert page.status_code == 200, page.text
    row = re.search(rf'<tr id="user-{person}">(.*?)</tr>', page.text, re.S)
    assert row is not None, page.text[:2000]
    return row.group(1)


def without_id(response: httpx.Response, some_id: int) -> str:
    """The page's main part (the CSRF token differs), the id asked about as X."""
    main = response.text.split('<main id="main"', 1)[-1]
    return re.sub(rf"\b{some_id}\b", "X", main)


def status_of(api: httpx.Client, person: int) -> str:
    return str(api.get(f"/users/{person}").json()["status"])


def test_deactivating_asks_first_and_the_confirmed_post_does_it(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    eve, eve_api = invite_and_accept(server, root, "eve@example.com", "Eve", [("acme", "editor")])
    olga = invite_and_accept(server, root, "olga@example.com", "Olga", [("acme", "owner")])[0]
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)

    # The row offers a link to a confirmation, not a button that acts at once.
    row = row_of(console, eve, "eve@example.com")
    confirm_url = f"/console/users/{eve}/deactivate"
    assert f'href="{confirm_url}" hx-get="{confirm_url}" hx-target="#panel"' in row
    assert "Deactivate…" in row
    assert f'action="{confirm_url}"' not in row  # no form posting from the row itself

    # The panel (htmx) names her, says what happens, and changes nothing yet.
    panel = console.get(confirm_url, headers={"HX-Request": "true"})
    assert panel.status_code == 200, panel.text
    assert "<html" not in panel.text  # a fragment for the panel
    assert 'id="deactivate-title" tabindex="-1">Deactivate Eve?</h2>' in panel.text
    assert "<strong>Eve</strong> (eve@example.com)" in panel.text
    assert "every sign-in session they have ends" in panel.text
    assert "every check for them is denied from now on" in panel.text
    assert "editor in acme" in panel.text
    assert re.search(
        rf'<form method="post" action="{confirm_url}" hx-post="{confirm_url}"', panel.text
    )
    assert 'name="csrf_token"' in panel.text
    assert "data-close-panel>Cancel</a>" in panel.text
    assert ">Deactivate Eve</button>" in panel.text
    assert status_of(root, eve) == "active" and allowed(server, "eve@example.com", "acme")
    assert eve_api.get("/workspaces").status_code == 200  # her session
    # Without script: a page of its own, Cancel back to Users.
    page = console.get(confirm_url)
    assert page.status_code == 200 and "<html" in page.text and "Deactivate Eve?" in page.text
    assert 'href="/console/users" data-close-panel>Cancel</a>' in page.text

    # Confirming without the form's CSRF token is refused; nothing changes.
    forged = console.client.post(confirm_url, data={})
    assert forged.status_code == 403 and "did not come from this console" in forged.text
    assert status_of(root, eve) == "active"

    # Confirmed: she is deactivated, her sessions end and every check denies.
    done = console.post(confirm_url, htmx=True)
    assert done.status_code == 200, done.text
    assert "Deactivated Eve: every check denies and their sessions ended." in done.text
    assert status_of(root, eve) == "deactivated"
    assert not allowed(server, "eve@example.com", "acme")
    assert eve_api.get("/workspaces").status_code == 401
    # Nothing left to confirm: she is not active.
    again = console.get(confirm_url, headers={"HX-Request": "true"})
    assert again.status_code == 409 and "not someone you may deactivate now" in again.text
    assert 'class="message error" role="alert"' in again.text

    # The last owner of acme: no link, no confirmation, and the POST refuses as before.
    assert f"/console/users/{olga}/deactivate" not in row_of(console, olga, "olga@example.com")
    assert console.get(f"/console/users/{olga}/deactivate").status_code == 409
    refused = console.post(f"/console/users/{olga}/deactivate", htmx=True)
    assert refused.status_code == 409 and "last owner" in refused.text
    assert status_of(root, olga) == "active"


def test_a_persons_page_and_the_members_page_ask_first_too(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "owner")])
    bob = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "editor")])[0]
    carol = invite_and_accept(server, root, "carol@example.com", "Carol", [("acme", "viewer")])[0]
    alice = sign_in(server, "alice@example.com", PASSWORD)

    # A person's page: a link to the confirmation, whose Cancel leads back to the page.
    person = alice.get(f"/console/users/{bob}").text
    link = f"/console/users/{bob}/deactivate?back=/console/users/{bob}"
    assert f'<a class="button danger" href="{link}">Deactivate…' in person.replace("%2F", "/")
    assert f'action="/console/users/{bob}/deactivate"' not in person
    back = {"back": f"/console/users/{bob}"}
    confirm = alice.get(f"/console/users/{bob}/deactivate", params=back)
    assert confirm.status_code == 200 and "Deactivate Bob?" in confirm.text
    assert f'<a class="button" href="/console/users/{bob}" data-close-panel>Cancel</a>' in (
        confirm.text
    )
    # Cancel never leads out of the console.
    outside = alice.get(f"/console/users/{bob}/deactivate", params={"back": "//evil.example/"})
    assert 'href="/console/users" data-close-panel>Cancel</a>' in outside.text
    assert "evil.example" not in outside.text
    assert status_of(root, bob) == "active"

    # A workspace's members page: the same, as a card above the members.
    members = alice.get("/console/workspaces/acme").text
    member_row = re.search(rf'<tr id="member-{carol}">.*?</tr>', members, re.S)
    assert member_row is not None
    confirm_url = f"/console/workspaces/acme/members/{carol}/deactivate"
    assert f'href="{confirm_url}">Deactivate…' in member_row.group(0)
    assert f'action="{confirm_url}"' not in members
    card = alice.get(confirm_url)
    assert card.status_code == 200, card.text
    assert "Deactivate Carol?" in card.text and "(carol@example.com)" in card.text
    assert f'<form method="post" action="{confirm_url}" class="row-buttons">' in card.text
    assert 'href="/console/workspaces/acme">Cancel</a>' in card.text
    assert "every check for them is denied" in card.text
    assert status_of(root, carol) == "active"
    done = alice.post(confirm_url)
    assert done.status_code == 200 and "Deactivated Carol" in done.text
    assert status_of(root, carol) == "deactivated"
    # Not active any more: nothing to confirm; Reactivate is a plain button.
    assert alice.get(confirm_url).status_code == 409
    assert ">Reactivate<span" in alice.get("/console/workspaces/acme").text


def test_revoking_an_invitation_asks_first(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    sent = len(outbox_messages(server.settings))
    pat = invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    [mail] = outbox_messages(server.settings)[sent:]
    pat_id = user_id_of(root, "pat@example.com")
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)

    row = row_of(console, pat_id, "pat@example.com")
    confirm_url = f"/console/invitations/{pat['id']}/revoke"
    assert f'href="{confirm_url}" hx-get="{confirm_url}" hx-target="#panel"' in row
    assert "Revoke invitation…" in row
    assert f'action="{confirm_url}"' not in row

    panel = console.get(confirm_url, headers={"HX-Request": "true"})
    assert panel.status_code == 200, panel.text
    assert "Revoke the invitation of Pat?" in panel.text
    assert "The link emailed to <strong>Pat</strong> (pat@example.com) stops working" in panel.text
    assert "viewer in acme" in panel.text
    assert f'hx-post="{confirm_url}"' in panel.text and 'name="csrf_token"' in panel.text
    assert "data-close-panel>Cancel</a>" in panel.text
    assert root.get(f"/invitations/{pat['id']}").json()["status"] == "sent"

    assert console.client.post(confirm_url, data={}).status_code == 403  # no CSRF token
    assert root.get(f"/invitations/{pat['id']}").json()["status"] == "sent"
    done = console.post(confirm_url, htmx=True)
    assert done.status_code == 200, done.text
    assert "Revoked the invitation of pat@example.com; its link no longer works." in done.text
    assert root.get(f"/invitations/{pat['id']}").json()["status"] == "revoked"
    gone = accept_invitation(server, accept_token(mail))
    assert gone.status_code == 410 and "revoked" in gone.text
    # Revoked already: no confirmation, and the service refuses the POST.
    assert console.get(confirm_url).status_code == 409
    assert console.post(confirm_url, htmx=True).status_code == 409


def test_a_revoked_invitation_says_so_and_can_be_sent_again(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    pat = invite(root, "pat@example.com", [("acme", "viewer"), ("globex", "editor")], "Pat")
    pat_id = user_id_of(root, "pat@example.com")
    assert root.post(f"/invitations/{pat['id']}/revoke").status_code == 200
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)

    row = row_of(console, pat_id, "pat@example.com")
    assert '<span class="badge badge-revoked">Invitation revoked</span>' in row
    assert "badge-pending" not in row and ">Pending<" not in row
    again_url = f"/console/invitations/{pat['id']}/invite-again"
    assert f'hx-post="{again_url}"' in row and "Invite again" in row
    assert "Remove…" in row
    assert "Resend invitation" not in row and "Revoke invitation" not in row
    person = console.get(f"/console/users/{pat_id}").text
    assert "Invitation revoked" in person and "was revoked" in person

    sent = len(outbox_messages(server.settings))
    done = console.post(again_url, htmx=True)
    assert done.status_code == 200, done.text
    assert "Invited Pat &lt;pat@example.com&gt; again with the same roles" in done.text
    # The row (swapped in place) is an invitee's again, with the new invitation's buttons.
    assert "badge-pending" in done.text and "Invitation revoked" not in done.text
    assert "Revoke invitation…" in done.text and "Invite again" not in done.text
    fresh = [i for i in root.get("/invitations").json() if i["email"] == "pat@example.com"]
    assert [i["status"] for i in fresh] == ["sent", "revoked"]
    assert fresh[0]["id"] != pat["id"]
    assert sorted((r["workspace"], r["role"]) for r in fresh[0]["roles"]) == [
        ("acme", "viewer"),
        ("globex", "editor"),
    ]
    assert user_id_of(root, "pat@example.com") == pat_id  # the same person, not a second
    # The old revoked one cannot be sent again while the new one is live.
    twice = console.post(again_url, htmx=True)
    assert twice.status_code == 409 and "already has a pending invitation" in twice.text
    # The new email's link works: Pat joins with the invited roles.
    [mail] = outbox_messages(server.settings)[sent:]
    accepted = accept_invitation(server, accept_token(mail))
    assert accepted.status_code == 200, accepted.text
    for workspace in ("acme", "globex"):
        assert allowed(server, "pat@example.com", workspace), workspace
    events = root.get("/audit", params={"target_type": "invitation"}).json()
    audited = {e["action"] for e in events if e["target_id"] == str(fresh[0]["id"])}
    assert {"invitation.created", "invitation.accepted"} <= audited


def test_invite_again_follows_the_invitation_services_rules(server: LiveServer) -> None:
    """Invite again is the invitation service's create, with its checks: an acme admin may
    send a revoked viewer's invitation again but not an owner's (a role above theirs), and
    a live invitation is resent instead. The button is offered exactly when the service
    would carry it out: not while the address is outside the company-domain list."""
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "adam@example.com", "Adam", [("acme", "admin")])
    cases = {}
    for name, role in (("Vera", "viewer"), ("Owen", "owner")):
        invitation = invite(root, f"{name.lower()}@example.com", [("acme", role)], name)
        assert root.post(f"/invitations/{invitation['id']}/revoke").status_code == 200
        cases[name] = (invitation["id"], user_id_of(root, f"{name.lower()}@example.com"))
    live = invite(root, "lia@example.com", [("acme", "viewer")], "Lia")
    adam = sign_in(server, "adam@example.com", PASSWORD)

    vera = adam.post(f"/console/invitations/{cases['Vera'][0]}/invite-again", htmx=True)
    assert vera.status_code == 200 and "Invited Vera" in vera.text
    owen = adam.post(f"/console/invitations/{cases['Owen'][0]}/invite-again", htmx=True)
    assert owen.status_code == 403, owen.text
    statuses: dict[str, list[str]] = {}
    for invitation in root.get("/invitations").json():  # newest first
        statuses.setdefault(invitation["email"], []).append(invitation["status"])
    assert statuses["vera@example.com"] == ["sent", "revoked"]
    assert statuses["owen@example.com"] == ["revoked"]
    refused = adam.post(f"/console/invitations/{live['id']}/invite-again", htmx=True)
    assert refused.status_code == 409 and "resend it instead" in refused.text

    # The super admin may give owner; not while the company-domain list leaves Owen out.
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    owen_id, owen_person = cases["Owen"]
    again = f"/console/invitations/{owen_id}/invite-again"
    only = root.patch("/settings/email", json={"allowed_domains": ["company.example"]})
    assert only.status_code == 200, only.text
    row = row_of(console, owen_person, "owen@example.com")
    assert "Invitation revoked" in row and "Invite again" not in row and "Remove…" in row
    outside = console.post(again, htmx=True)
    assert outside.status_code == 422 and "not a company address" in outside.text
    assert root.patch("/settings/email", json={"allowed_domains": []}).status_code == 200
    assert "Invite again" in row_of(console, owen_person, "owen@example.com")
    done = console.post(again, htmx=True)
    assert done.status_code == 200 and "Invited Owen" in done.text, done.text


def test_another_workspaces_people_answer_as_unknown_ids(server: LiveServer) -> None:
    """Gina (globex's owner) asks every new route about acme's people and invitation:
    the same 404 as an id nobody has, naming nothing of acme; nothing changes."""
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    eve = invite_and_accept(server, root, "eve@example.com", "Eve", [("acme", "editor")])[0]
    pat = invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    revoked = invite(root, "rita@example.com", [("acme", "viewer")], "Rita")
    assert root.post(f"/invitations/{revoked['id']}/revoke").status_code == 200
    invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "owner")])
    gina = sign_in(server, "gina@example.com", PASSWORD)

    calls = {
        "deactivate confirm": lambda i: gina.get(f"/console/users/{i}/deactivate"),
        "member deactivate confirm": lambda i: gina.get(
            f"/console/workspaces/globex/members/{i}/deactivate"
        ),
        "revoke confirm": lambda i: gina.get(f"/console/invitations/{i}/revoke"),
        "invite again": lambda i: gina.post(f"/console/invitations/{i}/invite-again"),
    }
    ids = {
        "deactivate confirm": [eve],
        "member deactivate confirm": [eve],
        "revoke confirm": [pat["id"]],
        "invite again": [revoked["id"], pat["id"]],
    }
    for name, call in calls.items():
        unknown = call(UNKNOWN_ID)
        assert unknown.status_code == 404, (name, unknown.text[:300])
        for some_id in ids[name]:
            answer = call(some_id)
            assert answer.status_code == 404, (name, answer.text[:300])
            assert without_id(answer, some_id) == without_id(unknown, UNKNOWN_ID), name
            for secret in ("eve@", "Eve", "pat@", "rita@", "Rita", "acme"):
                assert secret not in answer.text, (name, secret)
    assert status_of(root, eve) == "active"
    statuses = {i["email"]: i["status"] for i in root.get("/invitations").json()}
    assert statuses["pat@example.com"] == "sent" and statuses["rita@example.com"] == "revoked"
