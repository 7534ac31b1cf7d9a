"""Issue 23's rough edges of the Users page in a real browser (the system's Chromium):
Escape no longer throws away a started invitation or role change without asking, focus
after a refused invitation goes to the first field in error, deactivating and revoking ask
first (and a revoked invitation's row offers Invite again), and on a phone the filters fold
away so that the first person shows on the first screen. axe-core finds no violation in
any of these states."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import (
    Watch,
    latest_link,
    shot,
    sign_in,
    super_admin_console,
)
from tests.helpers import ADMIN_EMAIL, LiveServer, accept_invitation, create_workspaces, invite
from tests.smtp_support import Mailbox

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

PHONE = {"width": 390, "height": 844}


def onboard(
    server: LiveServer, mailbox: tuple[Mailbox, int], name: str, roles: list[tuple[str, str]]
) -> None:
    """Invite ``name`` (at example.com) with ``roles``; accept with the emailed link."""
    email = f"{name.lower()}@example.com"
    with server.admin() as admin:
        invite(admin, email, roles, name)
    token = latest_link(mailbox[0], email).rsplit("/", 1)[1]
    assert accept_invitation(server, token).status_code == 200


def test_escape_asks_before_discarding_and_focus_finds_the_field_in_error(
    server: LiveServer, chromium: Any, mailbox: tuple[Mailbox, int], artifacts: Path, axe: str
) -> None:
    with server.admin() as admin:
        create_workspaces(admin, "acme")
    onboard(server, mailbox, "Eve", [("acme", "editor")])
    context, page, watch = super_admin_console(chromium, server)
    panel = page.locator("#panel")
    invite_button = page.get_by_role("link", name="Invite user")

    # An untouched form: Escape closes it, as before.
    invite_button.click()
    expect(page.locator("#invite-title")).to_be_focused()
    page.keyboard.press("Escape")
    expect(panel).to_be_empty()

    # A started one: Escape asks, Keep editing (focused) keeps every character.
    invite_button.click()
    expect(page.locator("#invite-title")).to_be_focused()
    name = page.get_by_label("Name", exact=True)
    name.fill("Half Done")
    name.focus()
    page.keyboard.press("Escape")
    ask = page.get_by_role("alertdialog", name="Discard the invitation you started?")
    expect(ask).to_be_visible()
    expect(ask.get_by_role("button", name="Keep editing")).to_be_focused()
    assert_accessible(page, axe, "the discard question")
    shot(page, artifacts, "escape-1-discard-question")
    page.keyboard.press("Enter")  # Keep editing
    expect(ask).to_have_count(0)
    expect(name).to_be_focused()
    expect(name).to_have_value("Half Done")
    # Escape twice: the question, then Escape again is Keep editing.
    page.keyboard.press("Escape")
    expect(ask).to_be_visible()
    page.keyboard.press("Escape")
    expect(ask).to_have_count(0)
    expect(name).to_have_value("Half Done")
    # Discard: the panel closes, focus back on Invite user.
    page.keyboard.press("Escape")
    ask.get_by_role("button", name="Discard").click()
    expect(panel).to_be_empty()
    expect(invite_button).to_be_focused()

    # A refused invitation: focus on the first field in error, tied to its message.
    invite_button.click()
    page.get_by_label("Email", exact=True).fill("ann@example.com")
    page.get_by_role("group", name="Acme (acme)").get_by_label("viewer").check()
    page.get_by_role("button", name="Send invitation").click()
    name = page.get_by_label("Name", exact=True)
    expect(name).to_be_focused()
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(name).to_have_attribute("aria-describedby", "invite-name-error")
    assert page.locator("#invite-name-error").inner_text().strip() != ""
    assert_accessible(page, axe, "an invitation refused for its name")
    shot(page, artifacts, "escape-2-refused-name")
    # No role ticked: focus on the first role, described by "Pick at least one role".
    name.fill("Ann")
    page.get_by_role("group", name="Acme (acme)").get_by_label("viewer").uncheck()
    page.get_by_role("button", name="Send invitation").click()
    first_role = page.get_by_role("group", name="Acme (acme)").get_by_role("checkbox").first
    expect(first_role).to_be_focused()
    expect(first_role).to_have_attribute("aria-describedby", re.compile(r"\binvite-roles-error\b"))
    expect(page.locator("#invite-roles-error")).to_have_text("Pick at least one role")
    expect(page.get_by_label("Name", exact=True)).not_to_have_attribute("aria-invalid", "true")
    assert_accessible(page, axe, "an invitation refused for its roles")
    # The form the server sent back holds what was typed: Escape asks before losing it.
    page.keyboard.press("Escape")
    expect(ask).to_be_visible()
    ask.get_by_role("button", name="Discard").click()
    expect(panel).to_be_empty()
    assert page.locator("tr", has_text="ann@example.com").count() == 0

    # The roles panel: a ticked box is a started change.
    page.get_by_role("link", name="Manage roles of Eve").click()
    roles = panel.locator("form", has=page.get_by_text("(now: editor)")).first
    roles.wait_for()
    roles.get_by_label("viewer", exact=True).check()
    page.keyboard.press("Escape")
    ask = page.get_by_role("alertdialog", name="Discard the role changes you started?")
    expect(ask).to_be_visible()
    assert_accessible(page, axe, "the discard question of a role change")
    ask.get_by_role("button", name="Keep editing").click()
    expect(roles.get_by_label("viewer", exact=True)).to_be_checked()
    page.keyboard.press("Escape")
    ask.get_by_role("button", name="Discard").click()
    expect(panel).to_be_empty()

    # The two refused invitations, and nothing else.
    invite_url = f"{server.url}/console/users/invite"
    assert watch.problems == [f"422 {invite_url}"] * 2, watch.problems
    context.close()


def test_deactivate_and_revoke_ask_first_and_a_revoked_invitation_can_be_sent_again(
    server: LiveServer, chromium: Any, mailbox: tuple[Mailbox, int], artifacts: Path, axe: str
) -> None:
    with server.admin() as admin:
        create_workspaces(admin, "acme")
        invite(admin, "pat@example.com", [("acme", "viewer")], "Pat")
    onboard(server, mailbox, "Eve", [("acme", "editor")])
    context, page, watch = super_admin_console(chromium, server)
    panel = page.locator("#panel")
    eve = page.locator("tr", has_text="eve@example.com")
    pat = page.locator("tr", has_text="pat@example.com")

    # A person's page and a workspace's members page ask first too (as whole pages).
    page.goto(f"{server.url}/console/workspaces/acme")
    page.get_by_role("link", name="Deactivate… Eve").click()
    page.get_by_role("heading", name="Deactivate Eve?").wait_for()
    assert_accessible(page, axe, "the deactivation question on the members page")
    page.get_by_role("link", name="Cancel").click()
    page.get_by_role("link", name="Eve", exact=True).click()
    page.get_by_role("link", name="Deactivate… Eve").click()
    page.get_by_role("heading", name="Deactivate Eve?").wait_for()
    assert_accessible(page, axe, "the deactivation question from a person's page")
    page.get_by_role("link", name="Cancel").click()
    page.get_by_role("heading", name="Eve", exact=True).wait_for()  # back on her page
    page.get_by_role("link", name="Users", exact=True).click()
    page.wait_for_load_state()

    # Deactivate… asks, naming Eve and saying what happens; Cancel changes nothing.
    eve.get_by_role("link", name="Deactivate… Eve").click()
    expect(page.locator("#deactivate-title")).to_be_focused()
    assert "every sign-in session they have ends" in panel.inner_text()
    assert_accessible(page, axe, "the deactivation question")
    shot(page, artifacts, "confirm-1-deactivate")
    panel.get_by_role("link", name="Cancel").click()
    expect(panel).to_be_empty()
    assert eve.locator(".badge-active").count() == 1
    eve.get_by_role("link", name="Deactivate… Eve").click()
    panel.get_by_role("button", name="Deactivate Eve").click()
    eve.locator(".badge-deactivated").wait_for()
    expect(page.locator("#messages:focus-within")).to_have_count(1)

    # Revoke invitation… asks too; the revoked row says so and offers Invite again.
    pat.get_by_role("link", name="Revoke invitation… Pat").click()
    expect(page.locator("#revoke-title")).to_be_focused()
    assert "stops working at once" in panel.inner_text()
    assert_accessible(page, axe, "the revocation question")
    panel.get_by_role("button", name="Revoke the invitation of Pat").click()
    pat.locator(".badge-revoked").wait_for()
    assert "Invitation revoked" in pat.inner_text()
    assert pat.get_by_role("link", name="Remove… Pat").count() == 1
    assert_accessible(page, axe, "a revoked invitation's row")
    shot(page, artifacts, "confirm-2-revoked-row")
    pat.get_by_role("button", name="Invite again Pat").click()
    page.locator("#messages .message", has_text="Invited Pat <pat@example.com> again").wait_for()
    pat.locator(".badge-pending").wait_for()
    assert pat.get_by_role("link", name="Revoke invitation… Pat").count() == 1

    assert watch.problems == [], watch.problems
    context.close()


def test_on_a_phone_the_first_person_shows_on_the_first_screen(
    server: LiveServer, chromium: Any, mailbox: tuple[Mailbox, int], artifacts: Path, axe: str
) -> None:
    with server.admin() as admin:
        create_workspaces(admin, "acme", "globex")
        invite(admin, "pat@example.com", [("acme", "viewer")], "Pat")
    for name in ("Ann", "Ben", "Cid", "Dee"):
        onboard(server, mailbox, name, [("acme", "editor"), ("globex", "viewer")])
    context = chromium.new_context(viewport=PHONE)
    page = context.new_page()
    page.set_default_timeout(10_000)
    watch = Watch(page)
    sign_in(page, server.url, ADMIN_EMAIL, server.admin_password)
    page.wait_for_load_state()

    # The filters and the bulk form are folded behind their summaries.
    filters = page.locator("details.fold", has=page.locator("#filters"))
    expect(filters).not_to_have_attribute("open", "")
    expect(page.get_by_label("Search name or email")).to_be_hidden()
    expect(page.get_by_text("Filters", exact=True)).to_be_visible()
    rows = page.locator("#users-tbody tr")
    first = rows.first.bounding_box()
    assert first is not None
    assert first["y"] + first["height"] <= PHONE["height"], first
    # Each person's card is compact: well under a third of the screen.
    for i in range(rows.count()):
        box = rows.nth(i).bounding_box()
        assert box is not None and box["height"] < PHONE["height"] / 3, (i, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert_accessible(page, axe, "Users on a phone")
    shot(page, artifacts, "phone-1-users")

    # Opened, the filters work as on a wide screen.
    page.get_by_text("Filters", exact=True).click()
    search = page.get_by_label("Search name or email")
    expect(search).to_be_visible()
    assert_accessible(page, axe, "Users on a phone, filters open")
    search.fill("ben")
    page.wait_for_url("**q=ben**")
    expect(rows).to_have_count(1)
    shot(page, artifacts, "phone-2-filters-open")

    # On a wide screen they are open, with no summary to press.
    page.set_viewport_size({"width": 1280, "height": 900})
    expect(page.get_by_label("Search name or email")).to_be_visible()
    expect(page.get_by_text("Filters", exact=True)).to_be_hidden()
    assert_accessible(page, axe, "Users on a wide screen")
    assert watch.problems == [], watch.problems
    context.close()
