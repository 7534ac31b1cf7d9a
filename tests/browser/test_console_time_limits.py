"""Time-limited roles in a real browser (the system's Chromium): the roles panel's Until
fields (the preview saying the end, a past end refused beside its field with focus on
it, the end saved and shown), and bulk "give a role" with an end in its confirmation; at
desktop and phone widths, with axe-core finding no violation in any state."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.db.models import utcnow
from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import latest_link, shot, super_admin_console
from tests.helpers import LiveServer, accept_invitation, create_workspaces, invite, user_id_of
from tests.smtp_support import Mailbox

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def test_roles_with_an_end_in_the_browser(
    server: LiveServer, chromium: Any, mailbox: tuple[Mailbox, int], artifacts: Path, axe: str
) -> None:
    people = {}
    with server.admin() as admin:
        create_workspaces(admin, "acme")
        for email, name in (("bob@example.com", "Bob"), ("carol@example.com", "Carol")):
            invite(admin, email, [("acme", "viewer")], name)
            token = latest_link(mailbox[0], email).rsplit("/", 1)[1]
            assert accept_invitation(server, token).status_code == 200
            people[name] = user_id_of(admin, email)
    bob, carol = people["Bob"], people["Carol"]
    context, page, watch = super_admin_console(chromium, server)
    end = (utcnow() + timedelta(days=30)).replace(second=0, microsecond=0)
    typed, said = end.strftime("%Y-%m-%dT%H:%M"), end.strftime("%Y-%m-%d %H:%M UTC")

    # -- the roles panel: an Until field per role, the preview says the end ---------------
    page.locator("tr", has_text="bob@example.com").get_by_role(
        "link", name="Manage roles of Bob"
    ).click()
    acme = page.locator("#panel form", has=page.get_by_text("(now: viewer)")).first
    acme.wait_for()
    acme.get_by_role("checkbox", name="editor", exact=True).check()
    until = acme.get_by_label("Until (for editor) UTC, optional")
    until.fill(typed)
    preview = page.locator("#preview-acme")
    preview.get_by_text(f"editor in acme until {said}").wait_for()
    assert_accessible(page, axe, "the roles panel with an end in its preview")
    shot(page, artifacts, "time-limits-1-preview")

    # A past end: refused beside its field, focus on it, nothing saved.
    until.fill((utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    acme.get_by_role("button", name="Save roles in acme").click()
    error = page.locator("#until-acme-editor-error")
    expect(error).to_contain_text("The end must be in the future")
    refused = page.locator("#until-acme-editor")
    expect(refused).to_have_attribute("aria-invalid", "true")
    expect(refused).to_be_focused()
    expect(refused).to_have_accessible_description(re.compile("must be in the future"))
    assert_accessible(page, axe, "the roles panel refusing a past end")
    shot(page, artifacts, "time-limits-2-past-end")

    # Put right and saved: the message and the row say it.
    acme = page.locator("#panel form", has=page.get_by_text("(now: viewer)")).first
    acme.get_by_label("Until (for editor) UTC, optional").fill(typed)
    acme.get_by_role("button", name="Save roles in acme").click()
    page.locator("#messages .message").filter(
        has_text=f"Bob now has editor (until {said}), viewer in acme"
    ).wait_for()
    bob_row = page.locator("tr", has_text="bob@example.com")
    bob_row.get_by_role("link", name="Manage roles of Bob").click()
    held = page.locator("#panel form", has=page.get_by_text(f"editor until {said}")).first
    held.wait_for()
    expect(held.get_by_label("Until (for editor) UTC, optional")).to_have_value(typed)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "the roles panel with a held end, on a phone")
    shot(page, artifacts, "time-limits-3-held-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.keyboard.press("Escape")

    # -- bulk "give a role" with an end, said in the confirmation ----------------------------
    page.goto(f"{server.url}/console/users")
    page.locator(f"#tick-{bob}").check()
    page.locator(f"#tick-{carol}").check()
    page.get_by_label("With the people ticked").select_option("add-role")
    page.get_by_label("Role to give or take").select_option("owner")
    page.get_by_label("Until (a role given; UTC, optional)").fill(typed)
    assert_accessible(page, axe, "Users with the bulk form's Until filled")
    page.get_by_role("button", name="Review…").click()
    heading = page.get_by_role("heading", name=f"Give owner in acme until {said} to 2 people?")
    heading.wait_for()
    assert_accessible(page, axe, "the bulk confirmation with an end")
    shot(page, artifacts, "time-limits-4-bulk-confirm")
    page.get_by_role("button", name=f"Give owner in acme until {said} to 2 people").click()
    page.get_by_text(f"Gave owner in acme until {said} to 2: Bob, Carol.").wait_for()

    # The one refusal is the past end's (422); no script error, no CSP violation.
    assert watch.problems == [f"422 {server.url}/console/users/{bob}/roles/acme"], watch.problems
    context.close()
