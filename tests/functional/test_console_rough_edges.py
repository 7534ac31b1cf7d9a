"""Rough edges of the console found by trying it as a new workspace admin (issue 23), each
with its test: the words a person needs where a validator's were, a failed invitation
announced as a failure, a sender address that is one, and a way to sign in from the
acceptance page."""

from __future__ import annotations

import re

import httpx

from tests.console_support import csrf_of, sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    accept_token,
    create_workspaces,
    invite,
    invite_and_accept,
    outbox_messages,
)
from tests.smtp_support import REFUSAL, Mailbox, running_smtp


def test_an_invitation_without_roles_asks_to_pick_one(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    form = console.post(
        "/console/users/invite", {"name": "Ann", "email": "ann@example.com"}, htmx=True
    )
    assert form.status_code == 422
    assert re.search(
        r'id="invite-roles-error" class="field-error">Pick at least one role', form.text
    )
    assert "Length must be between" not in form.text
    api = root.post("/invitations", json={"name": "Ann", "email": "ann@example.com", "roles": []})
    assert api.status_code == 422 and api.json()["errors"]["roles"] == ["Pick at least one role"]


def test_a_failed_invitation_is_announced_as_a_failure(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    with running_smtp(Mailbox(rcpt_refusal=REFUSAL)) as port:
        email = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none"}
        assert root.patch("/settings/email", json=email).status_code == 200
        invited = console.post(
            "/console/users/invite",
            {"name": "Fay", "email": "fay@example.com", "roles": ["acme:viewer"]},
            htmx=True,
        )
        plain = console.post(
            "/console/users/invite",
            {"name": "Gus", "email": "gus@example.com", "roles": ["acme:viewer"]},
        )
    assert invited.status_code == 200, invited.text
    assert re.search(
        r'class="message error" role="alert"[^>]*>Invited Fay &lt;fay@example.com&gt;, but the '
        r"invitation email could not be sent",
        invited.text,
    )
    assert 'class="message ok"' not in invited.text
    # Without htmx (the Users page) as well.
    assert re.search(r'class="message error" role="alert">Invited Gus', plain.text)


def test_the_sender_address_must_be_an_address(server: LiveServer) -> None:
    root = server.admin()
    for bad in ("not an address", "a@example.com, b@example.com", "Ops <ops>"):
        refused = root.patch("/settings/email", json={"mail_from": bad})
        assert refused.status_code == 422, bad
        assert refused.json()["errors"]["mail_from"] == [
            "Not a sender address: give ops@example.com or Name <ops@example.com>"
        ]
    for good in ("ops@example.com", "Ringfence <ops@example.com>"):
        assert root.patch("/settings/email", json={"mail_from": good}).status_code == 200, good


def test_the_acceptance_page_links_to_sign_in_once_accepted_or_used(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    invite(root, "hal@example.com", [("acme", "viewer")], "Hal")
    token = accept_token(outbox_messages(server.settings)[-1])
    with server.client() as browser:
        page = browser.get(f"/invite/{token}")
        # The workspace by its name, as the email names it, not its slug.
        assert "<tr><td>Acme</td><td>viewer</td></tr>" in page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        form = {"password": "a long enough passphrase 42"}
        if csrf:
            form["csrf_token"] = csrf.group(1)
        accepted = browser.post(f"/invite/{token}", data=form)
        assert accepted.status_code == 200, accepted.text
        assert "You can sign in now." in accepted.text
        assert '<a href="/console/sign-in">Sign in to Ringfence</a>' in accepted.text
        used = browser.get(f"/invite/{token}")
        assert used.status_code == 410
        assert '<a href="/console/sign-in">Sign in to Ringfence</a>' in used.text


def test_the_account_page_says_what_one_can_use_and_an_empty_install_how_to_start(
    server: LiveServer,
) -> None:
    root = server.admin()
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    # No workspace yet: the invite forms say so and link to making one, not a refusal.
    for form in ("/console/users/invite", "/console/users/invite-many"):
        page = console.get(form).text
        assert "There are no workspaces yet" in page, form
        assert 'href="/console/workspaces">Create a workspace</a>' in page
        assert "You may not invite anyone" not in page
    account = console.get("/console/account").text
    assert "no administrative permissions" not in account
    assert "You are a super admin" in account and '<a href="/console/users">Users</a>' in account

    create_workspaces(root, "acme")
    val, _ = invite_and_accept(server, root, "val@example.com", "Val", [("acme", "viewer")])
    member = sign_in(server, "val@example.com", PASSWORD)
    theirs = member.get("/console/account").text  # a viewer may read the workspaces
    assert '<li><a href="/console/workspaces">Workspaces</a></li></ul>' in theirs
    assert "super admin" not in theirs and "/console/users" not in theirs
    refused = member.get("/console/users/invite-many").text
    assert "You may not invite anyone to any workspace." in refused
    assert "There are no workspaces yet" not in refused
    assert root.delete(f"/users/{val}/grants/acme/viewer").status_code == 200
    assert "You have no administrative permissions" in member.get("/console/account").text


def test_a_removal_reloads_the_count_and_the_domain_warning_is_announced(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    bob, _ = invite_and_accept(server, root, "bob@example.com", "Bob", [("acme", "viewer")])
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    assert '<p class="count" id="users-count">2 people' in console.get("/console/users").text
    removed = console.post(f"/console/users/{bob}/remove", htmx=True)
    assert removed.status_code == 200, removed.text
    # The table, count included, reloads itself (users.html: hx-trigger users-changed).
    assert removed.headers["HX-Trigger"] == "users-changed"
    assert '<p class="count" id="users-count">1 person' in console.get("/console/users").text
    # The company-domain warning shows inside a live region that is always there.
    form = console.get("/console/users/invite").text
    assert re.search(r'<div role="status"><p id="invite-email-warning"[^>]*hidden>', form)


def test_a_sign_in_lands_on_the_first_page_one_may_use(server: LiveServer) -> None:
    """Not on an empty Users page for someone who may not read people: a viewer lands on
    Workspaces, someone with no role anywhere on their account page, an admin on Users;
    a page asked for (``next``) still wins."""
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "val@example.com", "Val", [("acme", "viewer")])
    bare, _ = invite_and_accept(server, root, "bo@example.com", "Bo", [("acme", "viewer")])
    assert root.delete(f"/users/{bare}/grants/acme/viewer").status_code == 200

    def landing(email: str, password: str, next_page: str = "") -> str:
        with httpx.Client(base_url=server.url, timeout=30) as browser:
            page = browser.get("/console/sign-in")
            form = {"email": email, "password": password, "csrf_token": csrf_of(page.text)}
            answer = browser.post("/console/sign-in", data={**form, "next": next_page})
            assert answer.status_code == 303, answer.text
            while answer.status_code == 303:
                location = answer.headers["Location"]
                answer = browser.get(location)
            assert answer.status_code == 200, answer.text
            return httpx.URL(location).path

    assert landing("val@example.com", PASSWORD) == "/console/workspaces"
    assert landing("bo@example.com", PASSWORD) == "/console/account"
    assert landing(ADMIN_EMAIL, server.admin_password) == "/console/users"
    assert landing("val@example.com", PASSWORD, "/console/account") == "/console/account"
