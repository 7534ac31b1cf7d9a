"""The audit chain's signed checkpoints in a real browser (the system's Chromium): from
the audit trail to the checkpoints, one signed by hand; axe-core finds no violation in
either state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import shot, super_admin_console
from tests.helpers import LiveServer, create_workspaces

pytestmark = pytest.mark.browser


def test_signed_checkpoints_in_the_browser(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str
) -> None:
    with server.admin() as admin:
        create_workspaces(admin, "acme")
    context, page, watch = super_admin_console(chromium, server)
    page.get_by_role("link", name="Audit", exact=True).click()
    page.get_by_role("link", name="Signed checkpoints").click()
    page.get_by_role("heading", name="Signed checkpoints").wait_for()
    assert_accessible(page, axe, "checkpoints, none signed by hand")

    page.get_by_role("button", name="Sign the chain's head now").click()
    notice = page.get_by_role("status")
    notice.wait_for()
    assert "Signed the head of the chain" in notice.inner_text()
    assert page.get_by_role("cell", name="by hand").count() == 1
    assert_accessible(page, axe, "a checkpoint signed by hand")
    shot(page, artifacts, "audit-checkpoints")
    assert watch.problems == []
    context.close()
