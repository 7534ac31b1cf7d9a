"""Look-alike spellings of an address are one address (security finding 7): full-width
letters (john@example.com in CJK forms), a full-width at sign, capitals and surrounding
spaces reach the same person everywhere an address comes in, through HTTP: inviting,
signing in, the sign-in throttle, password reset, decisions."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.helpers import (
    PASSWORD,
    LiveServer,
    accept_invitation,
    accept_token,
    assert_problem,
    create_workspaces,
    full_width,
    invite,
    onboard,
    outbox_messages,
    post_check,
    post_decision,
    post_invitation,
)

JOHN = "john@example.com"
FULL_WIDTH = full_width(JOHN, keep="@.")  # the letters; the @ and the dot plain
FULL_WIDTH_AT = full_width(JOHN)  # the @ too: not an address until normalised
SHOUTED = "JOHN@example.com "
LOOK_ALIKES = (FULL_WIDTH, FULL_WIDTH_AT, SHOUTED, "\u3000John@Example.COM")


def login(client: httpx.Client, email: str, password: str) -> httpx.Response:
    return client.post("/auth/login", json={"email": email, "password": password})


def people_named_john(admin: httpx.Client) -> list[dict[str, Any]]:
    return [u for u in admin.get("/users", params={"q": "john"}).json() if "ohn" in u["email"]]


def test_inviting_a_look_alike_spelling_reaches_the_one_account(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex", "initech")
    john_id = onboard(server, admin, JOHN, "John Smith", [("acme", "viewer")])

    for address, workspace in ((FULL_WIDTH, "globex"), (SHOUTED, "initech")):
        sent_before = len(outbox_messages(server.settings))
        invitation = invite(admin, address, [(workspace, "editor")], "John Smith")
        assert invitation["email"] == JOHN, invitation
        [message] = outbox_messages(server.settings)[sent_before:]
        assert message["To"].addresses[0].addr_spec == JOHN
        # Still pending: another look-alike spelling is the same pending invitation.
        again = post_invitation(admin, FULL_WIDTH_AT, [(workspace, "editor")])
        assert_problem(again, 409, "conflict", "already has a pending invitation")
        # The existing account accepts (its password stays): no second person.
        accepted = accept_invitation(server, accept_token(message))
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["id"] == john_id

    [john] = people_named_john(admin)
    assert john["id"] == john_id and john["status"] == "active"
    assert john["roles"] == {"acme": ["viewer"], "globex": ["editor"], "initech": ["editor"]}

    # Signing in by any spelling signs John in: the audit trail names his account.
    with server.client() as anonymous:
        for address in LOOK_ALIKES:
            response = login(anonymous, address, PASSWORD)
            assert response.status_code == 200, (address, response.text)
    events = admin.get("/audit", params={"action": "auth.login", "page_size": 100}).json()
    sign_ins = [e for e in events if e["action"] == "auth.login" and e["target_id"] == str(john_id)]
    assert len(sign_ins) == len(LOOK_ALIKES)


def test_the_sign_in_throttle_counts_look_alike_spellings_against_one_account(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, JOHN, "John Smith", [("acme", "viewer")])
    with server.client() as anonymous:
        # Five failures (the per-address limit), each under another spelling.
        for address in (*LOOK_ALIKES, JOHN):
            assert_problem(login(anonymous, address, "wrong password!"), 401, "invalid-credentials")
        for address in (JOHN, FULL_WIDTH):
            assert_problem(login(anonymous, address, PASSWORD), 429, "too-many-requests")


def test_a_password_reset_by_a_look_alike_spelling_goes_to_the_account(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, JOHN, "John Smith", [("acme", "viewer")])
    sent_before = len(outbox_messages(server.settings))
    with server.client() as anonymous:
        response = anonymous.post("/auth/password-reset", json={"email": FULL_WIDTH_AT})
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 10
    while len(messages := outbox_messages(server.settings)) <= sent_before:
        assert time.monotonic() < deadline, "no reset email"
        time.sleep(0.05)
    [message] = messages[sent_before:]
    assert message["Subject"] == "Reset your Ringfence password"
    assert message["To"].addresses[0].addr_spec == JOHN


def test_a_decision_about_a_look_alike_spelling_is_about_the_account(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    onboard(server, admin, JOHN, "John Smith", [("acme", "viewer")])
    with server.client() as client:
        for subject in (JOHN, FULL_WIDTH, FULL_WIDTH_AT, "JOHN@EXAMPLE.COM"):
            decision = post_check(client, subject, "acme", "documents", "read").json()
            assert decision["allowed"] is True, (subject, decision)
            assert post_check(client, subject, "acme", "documents", "write").json() == {
                **decision,
                "allowed": False,
                "reason": "no rule allows",
            }
            evaluation = post_decision(
                client,
                "/access/v1/evaluation",
                {
                    "subject": {"type": "user", "id": subject},
                    "action": {"name": "read"},
                    "resource": {
                        "type": "documents",
                        "id": "d",
                        "properties": {"workspace": "acme"},
                    },
                },
            )
            assert evaluation.status_code == 200 and evaluation.json()["decision"] is True
        # Decisions trim nothing (only canonical spellings), in any script alike; an id in
        # full-width digits names nobody.
        for subject in (" john@example.com", f"{FULL_WIDTH}\u3000", "user:\uff11"):
            decision = post_check(client, subject, "acme", "documents", "read").json()
            assert decision["allowed"] is False and decision["reason"] == "unknown subject"
