"""An invitation's life through HTTP: racing accepts of one link, inviting someone who
already has an account, the company-domain allow-list, the resend limit, the report of
invitations still waiting, reminders, and what dead links say."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import httpx
from sqlalchemy.orm import Session

from gateway.db.models import Invitation, utcnow
from gateway.db.session import make_engine
from gateway.services.delivery import DatabaseLedger
from gateway.web.state import gateway_state
from mailer.tasks import deliver_message
from tests.helpers import (
    PASSWORD,
    LiveServer,
    accept_invitation,
    accept_token,
    allowed,
    assert_problem,
    create_workspaces,
    invite,
    invite_and_accept,
    onboard,
    outbox_messages,
    post_invitation,
    run_cli,
    set_invitation_expiry,
    user_id_of,
)

# -- helpers ----------------------------------------------------------------------------


def newest_token(server: LiveServer, email: str) -> str:
    """The accept token of the newest email to ``email`` in the outbox folder."""
    mine = [m for m in outbox_messages(server.settings) if m["To"].addresses[0].addr_spec == email]
    assert mine, f"no email to {email}"
    return unquote(accept_token(mine[-1]))


def age_invitation(server: LiveServer, invitation_id: int, days: float) -> None:
    """Make an invitation ``days`` old (setup only: waiting days is not a test)."""
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with Session(db) as session, session.begin():
            invitation = session.get(Invitation, invitation_id)
            assert invitation is not None
            invitation.created_at = utcnow() - timedelta(days=days)
    finally:
        db.dispose()


def audit(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/audit", params={"page_size": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def listed(client: httpx.Client, **params: Any) -> list[int]:
    response = client.get("/invitations", params={"page_size": 100, **params})
    assert response.status_code == 200, response.text
    return [i["id"] for i in response.json()]


def doctor_agrees(server: LiveServer) -> None:
    result = run_cli(server.settings, "doctor")
    assert result.exit_code == 0, result.output


# -- accepting ----------------------------------------------------------------------------


def test_concurrent_accepts_of_one_link_activate_once(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    invitation = invite(admin, "john@example.com", [("acme", "editor"), ("globex", "viewer")])
    token = newest_token(server, "john@example.com")
    racers = 8
    start = threading.Barrier(racers)
    statuses: list[int] = []
    bodies: list[dict[str, Any]] = []
    lock = threading.Lock()

    def accept(i: int) -> None:
        with server.client() as anonymous:
            start.wait(timeout=10)
            response = anonymous.post(
                "/invitations/accept",
                json={"token": token, "password": PASSWORD, "name": f"John {i}"},
            )
        with lock:
            statuses.append(response.status_code)
            bodies.append(response.json())

    threads = [threading.Thread(target=accept, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(statuses) == racers, statuses
    assert statuses.count(200) == 1, statuses
    # The others learn the link is used; SQLite may instead say it is busy, never a 500.
    lost = {410} if server.settings.sqlalchemy_url.startswith("postgresql") else {410, 409, 503}
    assert set(statuses) - {200} <= lost, statuses
    for status, body in zip(statuses, bodies, strict=True):
        if status == 410:
            assert body["type"] == "urn:ringfence:problem:invalid-invitation", body
    [winner] = [b for s, b in zip(statuses, bodies, strict=True) if s == 200]
    assert winner["status"] == "active"
    assert admin.get(f"/invitations/{invitation['id']}").json()["user_id"] == winner["id"]

    # One account, one set of grants, one acceptance on record, rules in agreement.
    john = admin.get(f"/users/{winner['id']}").json()
    assert john["status"] == "active" and john["name"] == winner["name"]
    assert john["roles"] == {"acme": ["editor"], "globex": ["viewer"]}
    accepted = audit(admin, action="invitation.accepted")
    assert sorted(e["workspace"] for e in accepted) == ["acme", "globex"]
    assert {e["actor_name"] for e in accepted} == {f"{winner['name']} <john@example.com>"}
    doctor_agrees(server)
    assert allowed(server, "john@example.com", "acme", "write")
    assert not allowed(server, "john@example.com", "globex", "write")
    assert server.login("john@example.com", PASSWORD)
    assert accept_invitation(server, token).status_code == 410


# -- inviting someone who already has an account -------------------------------------------


def test_an_existing_account_gains_roles_only_when_its_owner_accepts(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    john_id = onboard(server, admin, "john@example.com", "John", [("acme", "viewer")])
    emails_before = len(outbox_messages(server.settings))

    response = post_invitation(
        admin, "JOHN@Example.COM", [("acme", "editor"), ("globex", "viewer")], "Johnny"
    )

    # Answered like any invitation: pending, emailed, no account named, nothing granted.
    assert response.status_code == 201, response.text
    invitation = response.json()
    assert invitation["status"] == "sent" and invitation["user_id"] is None
    assert invitation["email"] == "john@example.com"
    [message] = outbox_messages(server.settings)[emails_before:]
    assert not allowed(server, "john@example.com", "globex")
    assert not allowed(server, "john@example.com", "acme", "write")

    # The link adds the roles to the account; the password stays as it was.
    browser = server.client()
    page = browser.get(f"/invite/{accept_token(message)}")
    assert page.status_code == 200 and "already have an account" in page.text
    assert 'name="password"' not in page.text
    accepted = accept_invitation(server, accept_token(message), password="ignored for accounts")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["id"] == john_id and accepted.json()["name"] == "John"
    server.login("john@example.com", PASSWORD).close()  # the old password still works
    same = admin.get("/users", params={"q": "john"}).json()
    assert [u["id"] for u in same] == [john_id]  # no second account
    assert same[0]["roles"] == {"acme": ["editor", "viewer"], "globex": ["viewer"]}
    assert allowed(server, "john@example.com", "acme", "write")
    assert allowed(server, "john@example.com", "globex")
    shown = admin.get(f"/invitations/{invitation['id']}").json()
    assert shown["status"] == "accepted" and shown["user_id"] == john_id
    assert invitation["id"] in listed(admin, status="accepted")
    accepted_events = audit(admin, action="invitation.accepted")
    assert sorted(e["workspace"] for e in accepted_events)[:2] == ["acme", "acme"]
    doctor_agrees(server)


def test_a_signed_in_person_accepts_an_invitation_to_their_account(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    kim_id, kim = invite_and_accept(server, admin, "kim@example.com", "Kim", [("acme", "viewer")])
    other_id, other = invite_and_accept(
        server, admin, "olga@example.com", "Olga", [("acme", "viewer")]
    )
    invitation = invite(admin, "kim@example.com", [("globex", "editor")])

    assert [i["id"] for i in kim.get("/invitations/mine").json()] == [invitation["id"]]
    assert other.get("/invitations/mine").json() == []
    # Nobody accepts another person's invitation: it answers as an unknown id.
    refused = other.post(f"/invitations/{invitation['id']}/accept")
    unknown = other.post("/invitations/999999/accept")
    assert refused.status_code == unknown.status_code == 404
    assert refused.json()["detail"].replace(str(invitation["id"]), "N") == unknown.json()[
        "detail"
    ].replace("999999", "N")
    assert not allowed(server, "olga@example.com", "globex")

    response = kim.post(f"/invitations/{invitation['id']}/accept")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == kim_id
    assert response.json()["roles"] == {"acme": ["viewer"], "globex": ["editor"]}
    assert allowed(server, "kim@example.com", "globex", "write")
    assert kim.get("/invitations/mine").json() == []
    assert kim.post(f"/invitations/{invitation['id']}/accept").status_code == 409
    assert other_id != kim_id


def test_an_invitation_does_not_bring_back_a_deactivated_account(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    mary_id = onboard(server, admin, "mary@example.com", "Mary", [("acme", "viewer")])
    assert admin.post(f"/users/{mary_id}/deactivate").status_code == 200
    emails_before = len(outbox_messages(server.settings))

    # The inviter learns nothing: the same answer as for a new address.
    response = post_invitation(admin, "Mary@example.com", [("acme", "editor")])
    assert response.status_code == 201 and response.json()["user_id"] is None
    [message] = outbox_messages(server.settings)[emails_before:]
    refused = accept_invitation(server, accept_token(message))
    assert_problem(refused, 410, "invalid-invitation", "deactivated")
    mary = admin.get(f"/users/{mary_id}").json()
    assert mary["status"] == "deactivated" and mary["roles"] == {"acme": ["viewer"]}


# -- the company-domain allow-list ------------------------------------------------------


def test_only_company_addresses_may_be_invited_when_domains_are_set(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    response = admin.patch("/settings/email", json={"allowed_domains": ["example.com"]})
    assert response.status_code == 200, response.text
    assert response.json()["allowed_domains"] == ["example.com"]

    refused = post_invitation(admin, "eve@other.org", [("acme", "viewer")])

    problem = assert_problem(refused, 422, "invalid-input", "@example.com")
    assert "eve@other.org" in problem["detail"]
    assert problem["allowed_domains"] == ["example.com"]
    assert "email" in problem["errors"]
    # Nothing was written: no invitation, no person, no email, no audit event.
    assert listed(admin) == []
    assert admin.get("/users", params={"q": "other.org"}).json() == []
    assert outbox_messages(server.settings) == []
    assert audit(admin, action="invitation.created") == []

    ok = invite(admin, "Ann@Example.COM", [("acme", "viewer")])
    assert ok["email"] == "ann@example.com"
    assert admin.get(f"/invitations/{ok['id']}").json()["status"] == "sent"
    assert newest_token(server, "ann@example.com")
    # A look-alike domain is not the company's.
    for look_alike in ("bob@example.com.evil.org", "bob@sub.example.com", "bob@ex-ample.com"):
        refused = post_invitation(admin, look_alike, [("acme", "viewer")])
        assert refused.status_code == 422, look_alike

    cleared = admin.patch("/settings/email", json={"allowed_domains": []})
    assert cleared.status_code == 200 and cleared.json()["allowed_domains"] == []
    invite(admin, "eve@other.org", [("acme", "viewer")])
    assert len(listed(admin)) == 2


# -- resending --------------------------------------------------------------------------


def test_a_second_resend_within_the_interval_is_refused_and_changes_nothing(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    invitation = invite(admin, "john@example.com", [("acme", "viewer")])
    first_token = newest_token(server, "john@example.com")

    assert admin.post(f"/invitations/{invitation['id']}/resend").status_code == 200
    resent_token = newest_token(server, "john@example.com")
    emails_before = len(outbox_messages(server.settings))

    refused = admin.post(f"/invitations/{invitation['id']}/resend")

    assert_problem(refused, 429, "too-many-requests", "try again in")
    wait = int(refused.headers["Retry-After"])
    assert 0 < wait <= server.settings.resend_interval_seconds + 1
    assert refused.json()["retry_after"] == wait
    assert len(outbox_messages(server.settings)) == emails_before  # no email
    shown = admin.get(f"/invitations/{invitation['id']}").json()
    assert shown["resend_count"] == 1 and shown["status"] == "sent"
    resent = audit(admin, action="invitation.resent")
    assert [e["target_id"] for e in resent] == [str(invitation["id"])]
    # The refused call rotated nothing: the link of the first resend still works.
    assert accept_invitation(server, first_token).status_code == 410
    assert accept_invitation(server, resent_token).status_code == 200


# -- the report of invitations still waiting ------------------------------------------------


def closed_port() -> socket.socket:
    """A bound socket that does not listen: connections to its port are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def test_report_lists_live_invitations_older_than_n_days(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    ids = {
        who: invite(admin, f"{who}@example.com", [("acme", "viewer")])["id"]
        for who in ("sent", "accepted", "revoked", "expired", "recent", "borderline")
    }
    # One whose email could not be delivered: SMTP pointed at a port nobody listens on.
    with closed_port() as sock:
        settings = {"smtp_host": "127.0.0.1", "smtp_port": sock.getsockname()[1]}
        response = admin.patch("/settings/email", json={**settings, "smtp_security": "none"})
        assert response.status_code == 200, response.text
        ids["failed"] = invite(admin, "failed@example.com", [("acme", "viewer")])["id"]
    assert admin.patch("/settings/email", json={"smtp_host": ""}).status_code == 200
    assert admin.get(f"/invitations/{ids['failed']}").json()["status"] == "failed"

    accepted = accept_invitation(server, newest_token(server, "accepted@example.com"))
    assert accepted.status_code == 200, accepted.text
    assert admin.post(f"/invitations/{ids['revoked']}/revoke").status_code == 200
    set_invitation_expiry(server, ids["expired"], timedelta(seconds=-1))
    for who in ("sent", "failed", "accepted", "revoked", "expired"):
        age_invitation(server, ids[who], days=10)
    age_invitation(server, ids["borderline"], days=4.9)

    def report(days: int) -> dict[int, str]:
        response = admin.get("/invitations", params={"older_than_days": days, "page_size": 100})
        assert response.status_code == 200, response.text
        return {i["id"]: i["status"] for i in response.json()}

    assert report(5) == {ids["failed"]: "failed", ids["sent"]: "sent"}
    assert report(4) == {ids["failed"]: "failed", ids["sent"]: "sent", ids["borderline"]: "sent"}
    assert report(11) == {}
    every_live = {ids[who] for who in ("sent", "failed", "recent", "borderline")}
    assert set(report(0)) == every_live
    # With a status, the age applies to that status alone.
    aged_accepted = admin.get("/invitations", params={"older_than_days": 5, "status": "accepted"})
    assert [i["id"] for i in aged_accepted.json()] == [ids["accepted"]]
    assert admin.get("/invitations", params={"older_than_days": -1}).status_code == 422


# -- reminders --------------------------------------------------------------------------


def test_reminders_go_once_with_a_new_link(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    waiting = invite(admin, "john@example.com", [("acme", "viewer")], "John Smith")
    recent = invite(admin, "mary@example.com", [("acme", "viewer")])
    done = invite(admin, "paul@example.com", [("acme", "viewer")])
    assert accept_invitation(server, newest_token(server, "paul@example.com")).status_code == 200
    old_token = newest_token(server, "john@example.com")
    after_days = server.settings.reminder_after_days
    for invitation in (waiting, done):
        age_invitation(server, invitation["id"], days=after_days + 1)
    emails_before = len(outbox_messages(server.settings))
    state = gateway_state(server.app)
    ledger = DatabaseLedger(state.session_factory, state.engine, state.settings)

    message_ids = ledger.queue_reminders()

    assert len(message_ids) == 1
    for message_id in message_ids:
        assert deliver_message.delay(message_id).get()["status"] == "sent"
    [reminder] = outbox_messages(server.settings)[emails_before:]
    assert reminder["To"].addresses[0].addr_spec == "john@example.com"
    assert reminder["Subject"].startswith("Reminder:")
    assert "Ada Admin" in reminder["Subject"]
    new_token = unquote(accept_token(reminder))
    assert new_token != old_token
    shown = admin.get(f"/invitations/{waiting['id']}").json()
    assert shown["reminded_at"] and shown["status"] == "sent"
    assert admin.get(f"/invitations/{recent['id']}").json()["reminded_at"] is None
    reminded = audit(admin, action="invitation.reminded")
    assert [e["target_id"] for e in reminded] == [str(waiting["id"])]

    # Once only: a second run finds nobody to remind.
    assert ledger.queue_reminders() == []
    assert len(outbox_messages(server.settings)) == emails_before + 1

    with server.client() as browser:
        old = browser.get(f"/invite/{old_token}")
        assert old.status_code == 410
        assert "replaced by a newer invitation email" in old.text
        page = browser.get(f"/invite/{new_token}")
        assert page.status_code == 200 and "john@example.com" in page.text
        accepted = browser.post(f"/invite/{new_token}", data={"password": PASSWORD})
        assert accepted.status_code == 200, accepted.text
    assert server.login("john@example.com", PASSWORD)


# -- dead links say why ---------------------------------------------------------------------


def test_expired_and_revoked_links_say_which_and_whom_to_ask(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    expired = invite(admin, "old@example.com", [("acme", "viewer")])
    expired_token = newest_token(server, "old@example.com")
    revoked = invite(admin, "gone@example.com", [("acme", "viewer")])
    revoked_token = newest_token(server, "gone@example.com")
    set_invitation_expiry(server, expired["id"], timedelta(seconds=-1))
    assert admin.post(f"/invitations/{revoked['id']}/revoke").status_code == 200

    with server.client() as browser:
        page = browser.get(f"/invite/{expired_token}")
        assert page.status_code == 410
        assert "This invitation has expired. Ask Ada Admin" in page.text
        assert "for a new invitation." in page.text
        assert 'name="password"' not in page.text
        refused = browser.post(f"/invite/{expired_token}", data={"password": PASSWORD})
        assert refused.status_code == 410 and "has expired" in refused.text

        page = browser.get(f"/invite/{revoked_token}")
        assert page.status_code == 410
        assert "This invitation was revoked. Ask Ada Admin" in page.text
        assert "for a new invitation." in page.text
        assert "expired" not in page.text

    problem = assert_problem(
        accept_invitation(server, expired_token), 410, "invalid-invitation", "expired"
    )
    assert "Ada Admin" in problem["detail"]
    assert_problem(accept_invitation(server, revoked_token), 410, "invalid-invitation", "revoked")
    for invitation in (expired, revoked):
        user = admin.get(f"/users/{user_id_of(admin, invitation['email'])}").json()
        assert user["status"] == "pending"


def test_two_workspaces_invite_one_new_address_and_get_one_account(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _, alice = invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    _, gina = invite_and_accept(server, root, "gina@example.com", "Gina", [("globex", "admin")])
    sent = len(outbox_messages(server.settings))
    invite(alice, "new@example.com", [("acme", "editor")], "New A")
    invite(gina, "new@example.com", [("globex", "viewer")], "New G")
    acme_mail, globex_mail = outbox_messages(server.settings)[sent:]
    # Each admin sees the pending person they invited, not the other's.
    [seen_by_alice] = alice.get("/users", params={"q": "new@"}).json()
    [seen_by_gina] = gina.get("/users", params={"q": "new@"}).json()
    assert seen_by_alice["id"] != seen_by_gina["id"]
    assert (seen_by_alice["name"], seen_by_gina["name"]) == ("New A", "New G")
    assert seen_by_alice["roles"] == {"acme": ["editor"]}

    # Both links are accepted at once: one account with both workspaces' roles.
    results: list[httpx.Response] = []
    start = threading.Barrier(2)

    def accept(message: Any) -> None:
        start.wait(timeout=10)
        results.append(accept_invitation(server, accept_token(message)))

    threads = [threading.Thread(target=accept, args=(m,)) for m in (acme_mail, globex_mail)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    sqlite = server.settings.sqlalchemy_url.startswith("sqlite")
    for response, message in zip(results, (acme_mail, globex_mail), strict=True):
        if response.status_code == 503 and sqlite:  # "busy, try again" under SQLite's lock
            response = accept_invitation(server, accept_token(message))
        assert response.status_code in (200, 410), response.text
    everyone = root.get("/users", params={"q": "new@", "page_size": 100}).json()
    assert len(everyone) == 1 and everyone[0]["status"] == "active", everyone
    account = everyone[0]
    assert account["roles"] == {"acme": ["editor"], "globex": ["viewer"]}
    assert allowed(server, "new@example.com", "acme", "write")
    assert allowed(server, "new@example.com", "globex")
    # Each admin now sees the account, with their own workspace's roles only.
    assert [u["roles"] for u in alice.get("/users", params={"q": "new@"}).json()] == [
        {"acme": ["editor"]}
    ]
    assert [u["roles"] for u in gina.get("/users", params={"q": "new@"}).json()] == [
        {"globex": ["viewer"]}
    ]
    doctor_agrees(server)
