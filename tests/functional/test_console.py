"""The web console through real HTTP: sign-in sessions and cookies, CSRF, the
Content-Security-Policy, field errors from the API's validation, and what each admin
sees and may press."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from flask import Flask

from gateway.app import create_app
from gateway.config import Settings
from tests.console_support import Console, csrf_of, sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    PASSWORD,
    LiveServer,
    close_app,
    create_workspaces,
    invite,
    invite_and_accept,
    onboard,
    user_id_of,
)
from tests.smtp_support import REFUSAL, Mailbox, running_smtp

PAGES = (
    "/console/users",
    "/console/users/invite",
    "/console/workspaces",
    "/console/workspaces/acme",
    "/console/roles",
    "/console/audit",
    "/console/settings",
    "/console/reviews",
    "/console/reviews/queue",
    "/console/reports",
    "/console/reports/admins",
)


@pytest.fixture
def root(server: LiveServer) -> Iterator[Console]:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    yield console
    console.close()


def user_status(server: LiveServer, user_id: int) -> str:
    with server.admin() as api:
        return str(api.get(f"/users/{user_id}").json()["status"])


# -- sessions ------------------------------------------------------------------------


def test_signing_in_opens_a_session_that_sign_out_and_deactivation_end(
    server: LiveServer,
) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    anna_id = onboard(server, admin, "anna@example.com", "Anna", [("acme", "admin")])

    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/console/users").status_code == 303  # to the sign-in page
        page = anonymous.get("/console/sign-in")
        wrong = anonymous.post(
            "/console/sign-in",
            data={
                "email": "anna@example.com",
                "password": "nope",
                "csrf_token": csrf_of(page.text),
            },
        )
        assert wrong.status_code == 401
        assert "Invalid email or password" in wrong.text
        assert "ringfence_console=" not in wrong.headers.get("set-cookie", "")
        right = anonymous.post(
            "/console/sign-in",
            data={
                "email": "anna@example.com",
                "password": PASSWORD,
                "csrf_token": csrf_of(page.text),
            },
        )
        assert right.status_code == 303
        cookie = next(
            c for c in right.headers.get_list("set-cookie") if c.startswith("ringfence_console=")
        )
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        assert "Anna" in anonymous.get("/console/users").text

        # Deactivation ends the console session on the next request.
        assert admin.post(f"/users/{anna_id}/deactivate").status_code == 200
        assert anonymous.get("/console/users").status_code == 303
        admin.post(f"/users/{anna_id}/reactivate")

    anna = sign_in(server, "anna@example.com", PASSWORD)
    assert anna.get("/console/users").status_code == 200
    assert anna.post("/console/sign-out").status_code == 303
    assert anna.get("/console/users").status_code == 303
    events = admin.get("/audit", params={"actor_id": anna_id, "page_size": 50}).json()
    assert {"auth.login", "auth.logout"} <= {e["action"] for e in events}


def test_cookies_are_secure_when_served_over_https(
    settings: Settings, admin_password: str, tmp_path: Path
) -> None:
    app: Flask = create_app(
        replace(settings, public_url="https://console.example", revision_poll_seconds=0)
    )
    client = app.test_client()
    page = client.get("/console/sign-in", base_url="https://console.example")
    pre = page.headers.get("Set-Cookie", "")
    assert pre.startswith("__Host-ringfence_console_pre=") and "Secure" in pre
    response = client.post(
        "/console/sign-in",
        base_url="https://console.example",
        data={
            "email": ADMIN_EMAIL,
            "password": admin_password,
            "csrf_token": csrf_of(page.get_data(as_text=True)),
        },
    )
    assert response.status_code == 303
    session_cookie = next(
        c
        for c in response.headers.getlist("Set-Cookie")
        if c.startswith("__Host-ringfence_console=")
    )
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in session_cookie
    close_app(app)  # a second app: its pool and writer threads are ours to close


# -- CSRF ----------------------------------------------------------------------------


def test_every_change_needs_the_sessions_csrf_token(server: LiveServer, root: Console) -> None:
    admin = server.admin()
    eve = onboard(server, admin, "eve@example.com", "Eve", [("acme", "editor")])
    path = f"/console/users/{eve}/deactivate"

    missing = root.client.post(path)
    assert missing.status_code == 403 and "reload the page" in missing.text
    wrong = root.client.post(path, data={"csrf_token": "0" * 64})
    assert wrong.status_code == 403
    # Another session's token does not work in this one.
    other = sign_in(server, ADMIN_EMAIL, server.admin_password)
    assert other.token != root.token
    assert root.client.post(path, data={"csrf_token": other.token}).status_code == 403
    assert user_status(server, eve) == "active"

    # The header htmx sends (console.js sets it) works like the form field.
    ok = root.client.post(path, headers={"X-CSRF-Token": root.token, "HX-Request": "true"})
    assert ok.status_code == 200, ok.text
    assert user_status(server, eve) == "deactivated"


def test_signing_in_needs_the_sign_in_pages_token(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as browser:
        refused = browser.post(
            "/console/sign-in", data={"email": ADMIN_EMAIL, "password": server.admin_password}
        )
        assert refused.status_code == 403
        assert "ringfence_console=" not in refused.headers.get("set-cookie", "")
        # A token from another browser's pre-session cookie is refused too.
        with httpx.Client(base_url=server.url) as elsewhere:
            foreign = csrf_of(elsewhere.get("/console/sign-in").text)
        browser.get("/console/sign-in")
        forged = browser.post(
            "/console/sign-in",
            data={"email": ADMIN_EMAIL, "password": server.admin_password, "csrf_token": foreign},
        )
        assert forged.status_code == 403


# -- Content-Security-Policy -----------------------------------------------------------

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle\s*=|\son[a-z]+\s*=", re.I)


def test_console_pages_have_a_strict_csp_and_nothing_inline(
    server: LiveServer, root: Console
) -> None:
    admin = server.admin()
    eve = onboard(server, admin, "eve@example.com", "Eve", [("acme", "editor")])
    pages = [*PAGES, f"/console/users/{eve}/roles", f"/console/users/{eve}/remove"]
    with httpx.Client(base_url=server.url) as anonymous:
        responses = [anonymous.get("/console/sign-in")]
    responses += [root.get(path) for path in pages]
    for response in responses:
        assert response.status_code == 200, (response.url, response.text[:300])
        csp = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert not INLINE_SCRIPT.search(response.text), response.url
        assert not INLINE_STYLE.search(response.text), response.url
    # The vendored files are served by the gateway itself.
    for name in ("htmx.min.js", "console.js", "console.css"):
        assert root.get(f"/console/static/{name}").status_code == 200


# -- validation ----------------------------------------------------------------------


def test_form_errors_come_from_the_apis_validation_next_to_the_field(
    server: LiveServer, root: Console
) -> None:
    bad = root.post(
        "/console/users/invite", {"name": "", "email": "not-an-address", "roles": []}, htmx=True
    )
    assert bad.status_code == 422
    assert re.search(r'id="invite-name-error" class="field-error">Length must be', bad.text)
    assert re.search(r'id="invite-email-error" class="field-error">Not a valid email', bad.text)
    assert 'id="invite-roles-error" class="field-error">Pick at least one role' in bad.text
    assert 'aria-describedby="invite-email-hint invite-email-error" aria-invalid="true"' in bad.text

    # The company-domain allow-list (a service rule) lands next to the email field too.
    saved = root.post(
        "/console/settings/email",
        {"smtp_security": "starttls", "allowed_domains": "example.com", "mail_from": "R <r@x.io>"},
    )
    assert saved.status_code == 200, saved.text
    outside = root.post(
        "/console/users/invite",
        {"name": "Mal", "email": "mal@elsewhere.io", "roles": ["acme:viewer"]},
        htmx=True,
    )
    assert outside.status_code == 422
    assert re.search(
        r'id="invite-email-error" class="field-error">not in the allowed', outside.text
    )
    assert 'data-allowed-domains="example.com"' in outside.text

    slug = root.post("/console/workspaces", {"slug": "Not A Slug", "name": "X"})
    assert slug.status_code == 422
    assert re.search(r'id="ws-slug-error" class="field-error">Use 1-63 lowercase', slug.text)
    port = root.post("/console/settings/email", {"smtp_port": "99999", "smtp_security": "tls"})
    assert port.status_code == 422
    assert re.search(r'id="s-smtp_port-error" class="field-error">Must be greater', port.text)


def test_role_preview_lists_what_the_person_gains_and_loses(
    server: LiveServer, root: Console
) -> None:
    eve = onboard(server, server.admin(), "eve@example.com", "Eve", [("acme", "editor")])
    up = root.post(f"/console/users/{eve}/roles/acme/preview", {"roles": ["admin"]}, htmx=True)
    assert up.status_code == 200
    assert "<summary>Gains 13 permissions</summary>" in up.text
    assert re.findall(r'<span class="perm">([^<]+)</span>', up.text) == [
        "audit:read",
        "directory:manage",
        "documents:delete",
        "event_streams:write",
        "reviews:read",
        "reviews:write",
        "role_management:define",
        "role_management:read",
        "role_management:write",
        "users:deactivate",
        "users:invite",
        "users:read",
        "users:reset_mfa",
    ]
    assert "Loses" not in up.text
    down = root.post(f"/console/users/{eve}/roles/acme/preview", {"roles": ["viewer"]}, htmx=True)
    assert "<summary>Loses 1 permission</summary>" in down.text and "Gains" not in down.text
    assert '<span class="perm">documents:write</span>' in down.text
    # A preview changes nothing.
    assert server.admin().get(f"/users/{eve}").json()["roles"] == {"acme": ["editor"]}


# -- what each admin sees and may press ------------------------------------------------


def nav_labels(page: str) -> list[str]:
    nav = re.search(r'<nav aria-label="Console">(.*?)</nav>', page, re.S)
    assert nav is not None, page[:500]
    return re.findall(r"<a [^>]*>([^<]+)</a>", nav.group(1))


def test_what_an_admin_sees_follows_their_permissions(server: LiveServer) -> None:
    root_api = server.admin()
    create_workspaces(root_api, "acme", "globex")
    eve = onboard(server, root_api, "eve@example.com", "Eve", [("acme", "editor")])
    invite_and_accept(server, root_api, "adam@example.com", "Adam", [("acme", "admin")])
    invite_and_accept(server, root_api, "olga@example.com", "Olga", [("acme", "owner")])
    invite_and_accept(server, root_api, "vic@example.com", "Vic", [("acme", "viewer")])

    adam = sign_in(server, "adam@example.com", PASSWORD)
    page = adam.get("/console/users").text
    assert nav_labels(page) == [
        "Users",
        "Workspaces",
        "Roles",
        "Reviews",
        "Audit",
        "Directory",
        "Log streams",
    ]
    eve_row = re.search(rf'<tr id="user-{eve}">(.*?)</tr>', page, re.S)
    assert eve_row is not None
    assert "Deactivate" in eve_row.group(1) and "Manage roles" in eve_row.group(1)
    assert "Remove" not in eve_row.group(1)  # admins lack users:remove
    assert "Invite user" in page
    invite_form = adam.get("/console/users/invite").text
    # An admin cannot grant owner (it gives more than they hold): shown, not pressable.
    assert re.search(r'value="acme:owner" disabled', invite_form)
    assert "globex" not in invite_form
    assert adam.get("/console/settings").status_code == 403
    assert adam.post(f"/console/users/{eve}/remove").status_code == 403
    assert user_status(server, eve) == "active"

    olga = sign_in(server, "olga@example.com", PASSWORD)
    eve_row = re.search(rf'<tr id="user-{eve}">(.*?)</tr>', olga.get("/console/users").text, re.S)
    assert eve_row is not None and "Remove" in eve_row.group(1)

    # A viewer may only read workspaces: that is all the console offers them.
    vic = sign_in(server, "vic@example.com", PASSWORD)
    landing = vic.get("/console/")
    assert landing.headers["Location"] == "/console/workspaces"
    assert nav_labels(vic.get("/console/workspaces").text) == ["Workspaces"]
    assert "Invite user" not in vic.get("/console/users").text
    assert "Rename" not in vic.get("/console/workspaces").text
    assert vic.post(f"/console/users/{eve}/deactivate").status_code in (403, 404)
    assert "No events match." in vic.get("/console/audit").text
    assert user_status(server, eve) == "active"

    # Nobody sees a button on their own row.
    own = re.search(
        r'<tr id="user-1">(.*?)</tr>',
        sign_in(server, ADMIN_EMAIL, server.admin_password).get("/console/users").text,
        re.S,
    )
    assert own is not None and "<button" not in own.group(1)


def test_pending_people_show_their_invitation_delivery(server: LiveServer, root: Console) -> None:
    admin = server.admin()
    pat = invite(admin, "pat@example.com", [("acme", "viewer"), ("globex", "editor")], "Pat")
    pat_id = user_id_of(admin, "pat@example.com")
    row = re.search(rf'<tr id="user-{pat_id}">(.*?)</tr>', root.get("/console/users").text, re.S)
    assert row is not None
    cells = row.group(1)
    assert "badge-pending" in cells and "delivery-sent" in cells
    assert "acme</span>: viewer" in cells and "globex</span>: editor" in cells
    assert "Resend invitation" in cells and "Revoke invitation" in cells
    revoked = root.post(f"/console/invitations/{pat['id']}/revoke", htmx=True)
    assert revoked.status_code == 200 and "delivery-revoked" in revoked.text
    assert admin.get(f"/invitations/{pat['id']}").json()["status"] == "revoked"


def test_a_refused_delivery_shows_its_reason_and_the_test_email_its_outcome(
    server: LiveServer, root: Console
) -> None:
    with running_smtp(Mailbox(rcpt_refusal=REFUSAL)) as port:
        saved = root.post(
            "/console/settings/email",
            {
                "smtp_host": "127.0.0.1",
                "smtp_port": str(port),
                "smtp_security": "none",
                "smtp_timeout": "5",
                "mail_from": "Ringfence <ringfence@example.com>",
                "allowed_domains": "",
            },
        )
        assert saved.status_code == 200, saved.text
        assert f"127.0.0.1:{port}" in saved.text
        tested = root.post("/console/settings/email/test", {"to": "ops@example.com"}, htmx=True)
        assert tested.status_code == 200
        assert re.search(
            r'id="test-result" class="message error"[^>]*>Not sent: [^<]*550', tested.text
        )
        invited = root.post(
            "/console/users/invite",
            {"name": "Fay", "email": "fay@example.com", "roles": ["acme:viewer"]},
            htmx=True,
        )
        assert invited.status_code == 200, invited.text
        assert invited.headers["HX-Trigger"] == "users-changed"
    page = root.get("/console/users", params={"q": "fay"}).text
    row = re.search(r'<tr id="user-\d+">(.*?)</tr>', page, re.S)
    assert row is not None
    assert "delivery-failed" in row.group(1)
    assert re.search(r'class="reason">[^<]*550 5\.1\.1 mailbox unavailable', row.group(1))
    assert "Resend invitation" in row.group(1)


def test_pages_of_people_resend_and_reactivate(server: LiveServer, root: Console) -> None:
    admin = server.admin()
    for n in range(26):
        invite(admin, f"p{n:02d}@example.com", [("acme", "viewer")], f"Person {n:02d}")
    first = root.get("/console/users", params={"status": "pending"}).text
    assert "26 people, page 1 of 2" in first
    assert len(re.findall(r'<tr id="user-\d+">', first)) == 25
    second = root.get(
        "/console/users",
        params={"status": "pending", "page": "2"},
        headers={"HX-Request": "true", "HX-Target": "users-results"},
    )
    # htmx gets only the results, and the page keeps the filters in its links.
    assert "<html" not in second.text and 'id="filters"' not in second.text
    assert len(re.findall(r'<tr id="user-\d+">', second.text)) == 1
    assert "status=pending" in second.text and "Previous" in second.text

    pending = admin.get("/invitations", params={"status": "sent"}).json()[0]
    resent = root.post(f"/console/invitations/{pending['id']}/resend", htmx=True)
    assert resent.status_code == 200 and "old link no longer works" in resent.text
    assert admin.get(f"/invitations/{pending['id']}").json()["resend_count"] == 1
    again = root.post(f"/console/invitations/{pending['id']}/resend", htmx=True)
    assert again.status_code == 429  # the service's limit, shown in the message area
    assert again.headers["HX-Retarget"] == "#messages" and "moments ago" in again.text

    eve = onboard(server, admin, "eve@example.com", "Eve", [("acme", "editor")])
    assert root.post(f"/console/users/{eve}/deactivate", htmx=True).status_code == 200
    back = root.post(f"/console/users/{eve}/reactivate", htmx=True)
    assert back.status_code == 200 and "badge-active" in back.text
    assert user_status(server, eve) == "active"
