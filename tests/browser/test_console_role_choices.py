"""Role choices in a real browser (the system's Chromium): the Roles page searched as one
types (htmx) and its folded groups; the invite form's choices with their descriptions and
no superadmin in a workspace; a powerful role's warning in the roles panel; at desktop
and phone widths, with axe-core finding no violation in any state."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import latest_link, shot, super_admin_console
from tests.helpers import LiveServer, accept_invitation, create_workspaces, invite
from tests.smtp_support import Mailbox

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def test_roles_page_search_and_role_choices_in_the_browser(
    server: LiveServer, chromium: Any, mailbox: tuple[Mailbox, int], artifacts: Path, axe: str
) -> None:
    with server.admin() as admin:
        create_workspaces(admin, "acme")
        invite(admin, "eve@example.com", [("acme", "viewer")], "Eve")
    token = latest_link(mailbox[0], "eve@example.com").rsplit("/", 1)[1]
    assert accept_invitation(server, token).status_code == 200
    context, page, watch = super_admin_console(chromium, server)

    # -- the Roles page: grouped, each role's permissions folded ----------------------------
    page.get_by_role("link", name="Roles", exact=True).click()
    page.get_by_role("heading", name="Roles", exact=True).wait_for()
    headings = page.locator("#roles-results h3")
    expect(headings).to_have_text(["superadmin", "admin", "editor", "owner", "viewer"])
    viewer = page.locator("#role-viewer")
    expect(viewer.get_by_text("documents:read")).to_be_hidden()  # folded
    assert_accessible(page, axe, "the Roles page")

    # Searched as one types: the server filters, htmx swaps the results in.
    page.get_by_label("Search roles").fill("users:invite")
    expect(page.locator("#roles-count")).to_have_text("3 roles matching “users:invite”")
    expect(headings).to_have_text(["superadmin", "admin", "owner"])
    page.wait_for_url(re.compile(r"q=users%3Ainvite"))
    page.locator("#role-admin").get_by_text("17 permissions").click()
    expect(page.locator("#role-admin").get_by_text("users:invite")).to_be_visible()
    assert_accessible(page, axe, "the Roles page searched, a role unfolded")
    shot(page, artifacts, "roles-1-searched")
    page.get_by_label("Search roles").fill("nothing like it")
    page.get_by_text("No role matches “nothing like it”.").wait_for()
    assert_accessible(page, axe, "the Roles page, nothing found")
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_label("Search roles").fill("")
    expect(headings).to_have_count(5)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "the Roles page on a phone")
    shot(page, artifacts, "roles-2-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # -- the invite form: each choice described, no superadmin in a workspace ---------------
    page.get_by_role("link", name="Users", exact=True).click()
    page.get_by_role("link", name="Invite user").click()
    form = page.locator("#panel")
    viewer_box = form.get_by_role("checkbox", name="viewer", exact=True)
    expect(viewer_box).to_have_accessible_description("Reads documents, reports and the workspace")
    expect(form.get_by_role("checkbox", name="superadmin")).to_have_count(0)
    assert_accessible(page, axe, "the invite form with role descriptions")
    shot(page, artifacts, "roles-3-invite-descriptions")
    form.get_by_role("link", name="Cancel").click()

    # -- the roles panel: a powerful role is said in words before its permissions -----------
    eve_row = page.locator("tr", has_text="eve@example.com")
    eve_row.get_by_role("link", name="Manage roles of Eve").click()
    acme = page.locator("#panel form", has=page.get_by_text("(now: viewer)")).first
    acme.wait_for()
    expect(acme.get_by_role("checkbox", name="owner", exact=True)).to_have_accessible_description(
        "Admin who also removes people and changes or deletes the workspace"
    )
    acme.get_by_role("checkbox", name="owner", exact=True).check()
    preview = page.locator("#preview-acme")
    warning = preview.locator(".message.warning")
    expect(warning).to_contain_text("Gives admin rights in acme: they can invite people")
    expect(warning).to_contain_text("remove people")
    expect(preview.get_by_text("users:remove")).to_be_hidden()  # folded under the count
    assert_accessible(page, axe, "a powerful role's warning in the preview")
    shot(page, artifacts, "roles-4-powerful-warning")

    assert watch.problems == [], watch.problems
    context.close()
