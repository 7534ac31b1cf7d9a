"""Custom roles in a real browser (the system's Chromium): the super admin defines a
role for acme by keyboard, sees a refusal next to the form, changes the role and deletes
it; at desktop and phone widths, with axe-core finding no violation in any state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import shot, super_admin_console
from tests.helpers import LiveServer, create_workspaces

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def test_custom_roles_in_the_browser(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str
) -> None:
    with server.admin() as admin:
        create_workspaces(admin, "acme")
    context, page, watch = super_admin_console(chromium, server)

    page.get_by_role("link", name="Roles", exact=True).click()
    page.get_by_role("link", name="Custom roles of Acme").click()
    page.get_by_role("heading", name="Custom roles of acme").wait_for()
    page.wait_for_load_state()
    assert_accessible(page, axe, "custom roles, none yet")

    # Define one by keyboard: type, tab to the permissions, tick with the space bar.
    page.get_by_label("Name", exact=True).fill("auditor")
    page.get_by_label("Description", exact=True).fill("Reads the audit log")
    offered = page.get_by_role("group", name="Permissions (those you hold in acme)")
    offered.get_by_label("audit:read").focus()
    page.keyboard.press("Space")
    offered.get_by_label("documents:read").check()
    page.get_by_role("button", name="Define role").click()
    page.locator("#messages .message").filter(has_text="Defined the role auditor").wait_for()
    assert_accessible(page, axe, "custom role defined")
    shot(page, artifacts, "custom-roles-1-defined")

    # A refusal stays on the page, beside the form.
    page.get_by_label("Name", exact=True).fill("admin")
    offered.get_by_label("workspaces:read").check()
    page.get_by_role("button", name="Define role").click()
    page.get_by_role("alert").filter(has_text="already a role").wait_for()
    assert_accessible(page, axe, "custom role refused")

    page.get_by_text("Change auditor").click()
    page.get_by_role("group", name="Permissions of auditor").get_by_label(
        "documents:read"
    ).uncheck()
    page.get_by_role("button", name="Save auditor").click()
    page.locator("#messages .message").filter(has_text="Changed the role auditor").wait_for()
    expect(page.locator("#role-auditor .perm")).to_have_text(["audit:read"])

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "custom roles on a phone")
    shot(page, artifacts, "custom-roles-2-phone")
    page.get_by_role("button", name="Delete auditor").click()
    page.locator("#messages .message").filter(has_text="Deleted the role auditor").wait_for()

    # The one refusal the story asks for (a name already taken) is all.
    assert [p.split(" ")[0] for p in watch.problems] == ["409"], watch.problems
    context.close()
