"""The console's pages for an installation's security team in a real browser (the
system's Chromium): a log stream to a JSON Lines file, a company directory connected to a
workspace (its token shown once), and a workspace's two-step sign-in policy chosen by
keyboard; at desktop and phone widths, with axe-core finding no violation in any state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import shot, super_admin_console
from tests.helpers import LiveServer, create_workspaces

pytestmark = pytest.mark.browser


def test_log_streams_directories_and_two_step_policy_in_the_browser(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str
) -> None:
    with server.admin() as admin:
        create_workspaces(admin, "acme")
    context, page, watch = super_admin_console(chromium, server)

    # -- a log stream -----------------------------------------------------------------------
    page.get_by_role("link", name="Log streams", exact=True).click()
    page.get_by_role("heading", name="Log streams", exact=True).wait_for()
    assert_accessible(page, axe, "log streams, none yet")
    page.get_by_label("Name", exact=True).fill("SIEM file")
    page.get_by_label("Kind", exact=True).select_option("file")
    page.get_by_label("Destination", exact=True).fill("audit.jsonl")
    page.get_by_label("Audit actions", exact=True).fill("workspace.* user.*")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name="SIEM file").wait_for()
    assert_accessible(page, axe, "a log stream made")
    shot(page, artifacts, "admin-1-log-stream")

    # -- a company directory ----------------------------------------------------------------
    page.get_by_role("link", name="Directory", exact=True).click()
    page.get_by_role("heading", name="Company directories").wait_for()
    assert_accessible(page, axe, "directories, none yet")
    page.get_by_label("Workspace", exact=True).select_option("acme")
    page.get_by_label("Name", exact=True).fill("Okta")
    page.get_by_label("Groups and the role they give").fill("engineering = editor")
    page.get_by_role("button", name="Connect").click()
    page.get_by_role("heading", name="The directory's token").wait_for()
    assert page.locator("#directory-token").inner_text().startswith("rfd_")
    assert_accessible(page, axe, "a directory connected, its token shown once")
    shot(page, artifacts, "admin-2-directory")

    # -- a workspace's two-step sign-in policy, by keyboard -------------------------------
    page.goto(f"{server.url}/console/workspaces/acme")
    policy = page.get_by_role("group", name="Who of the members of Acme must use a second factor")
    policy.get_by_label("Admins: whoever holds a permission here other than reading").focus()
    page.keyboard.press("Space")
    page.get_by_role("button", name="Save").click()
    saved = page.locator("#messages .message").filter(has_text="Two-step sign-in in acme: Admins")
    saved.wait_for()
    assert_accessible(page, axe, "two-step policy saved")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert_accessible(page, axe, "a workspace's page on a phone")
    shot(page, artifacts, "admin-3-two-step-phone")

    assert watch.problems == [], watch.problems
    context.close()
