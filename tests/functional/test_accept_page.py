"""The page behind the emailed link, ``/invite/<token>``, driven as a browser would:
GET the link, POST the form."""

from __future__ import annotations

import logging
from urllib.parse import unquote

import pytest

from tests.helpers import (
    PASSWORD,
    LiveServer,
    accept_token,
    create_workspaces,
    invite,
    outbox_messages,
)


def invite_ann(server: LiveServer) -> tuple[str, int]:
    """Workspace acme and Ann invited into it as a viewer; her token and invitation id."""
    admin = server.admin()
    create_workspaces(admin, "acme")
    invitation = invite(admin, "ann@example.com", [("acme", "viewer")], "Ann")
    return unquote(accept_token(outbox_messages(server.settings)[-1])), invitation["id"]


def test_the_link_shows_the_invitation_and_activates_the_account(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token, _ = invite_ann(server)
    with server.client() as browser:
        page = browser.get(f"/invite/{token}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "ann@example.com" in page.text
        assert "<td>Acme</td><td>viewer</td>" in page.text
        assert "Ada Admin" in page.text  # who invited her
        assert 'name="password"' in page.text and 'value="Ann"' in page.text

        too_short = browser.post(f"/invite/{token}", data={"password": "short"})
        assert too_short.status_code == 422
        assert "at least 12 characters" in too_short.text

        done = browser.post(f"/invite/{token}", data={"password": PASSWORD, "name": "Ann Lee"})
        assert done.status_code == 200, done.text
        assert "ann@example.com is active" in done.text

        used = browser.get(f"/invite/{token}")
        assert used.status_code == 410
        assert "accepted already" in used.text
        reused = browser.post(f"/invite/{token}", data={"password": PASSWORD})
        assert reused.status_code == 410
    assert server.login("ann@example.com", PASSWORD)
    # The request log names the page, never the token.
    assert "/invite/[redacted]" in caplog.text
    request_lines = [
        r.getMessage() for r in caplog.records if r.name in ("werkzeug", "granian.access")
    ]
    assert request_lines
    assert not any(token in line for line in request_lines)


def test_revoked_and_replaced_links_say_why_and_whom_to_ask(server: LiveServer) -> None:
    token, invitation_id = invite_ann(server)
    admin = server.admin()
    assert admin.post(f"/invitations/{invitation_id}/resend").status_code == 200
    new_token = unquote(accept_token(outbox_messages(server.settings)[-1]))
    with server.client() as browser:
        old = browser.get(f"/invite/{token}")
        assert old.status_code == 410
        assert "replaced by a newer invitation email" in old.text
        assert "Ada Admin" in old.text
        assert admin.post(f"/invitations/{invitation_id}/revoke").status_code == 200
        revoked = browser.get(f"/invite/{new_token}")
        assert revoked.status_code == 410
        assert "revoked" in revoked.text and "Ask Ada Admin" in revoked.text


def test_the_page_escapes_and_rejects_unknown_tokens(server: LiveServer) -> None:
    with server.client() as browser:
        page = browser.get('/invite/"><img src=x onerror=alert(1)>')
        assert page.status_code == 410
        assert "<img" not in page.text
        unknown = browser.post("/invite/nope", data={"password": PASSWORD})
        assert unknown.status_code == 410
        assert "not valid" in unknown.text
