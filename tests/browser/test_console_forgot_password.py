"""Forgot your password? in a real browser (the system's Chromium): from the sign-in page
by keyboard to the form, an empty address refused beside the field, then the answer that
is the same for every address; axe-core finds no violation in any state, at desktop and
phone widths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import Watch, shot
from tests.helpers import ADMIN_EMAIL, LiveServer

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width", [1280, 390])
def test_forgot_password_from_the_sign_in_page(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str, width: int
) -> None:
    context = chromium.new_context(viewport={"width": width, "height": 844})
    page = context.new_page()
    page.set_default_timeout(10_000)
    watch = Watch(page)
    page.goto(f"{server.url}/console/sign-in")
    page.get_by_role("link", name="Forgot your password?").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Forgot your password?").wait_for()
    assert_accessible(page, axe, f"forgot password form at {width}px")

    page.get_by_role("button", name="Email me a link").click()
    field = page.get_by_label("Email")
    field.wait_for()
    assert field.get_attribute("aria-invalid") == "true"
    assert "Enter the email address you sign in with" in page.locator("#email-error").inner_text()
    assert_accessible(page, axe, f"forgot password, no address, at {width}px")

    field.fill(ADMIN_EMAIL)
    field.press("Enter")
    status = page.get_by_role("status")
    status.wait_for()
    assert "If an active account uses this address" in status.inner_text()
    assert_accessible(page, axe, f"forgot password, asked, at {width}px")
    shot(page, artifacts, f"forgot-password-{width}")
    # No script error or policy violation; the one refusal is the empty address's 422.
    assert watch.problems == [f"422 {server.url}/console/forgot-password"], watch.problems
    context.close()
