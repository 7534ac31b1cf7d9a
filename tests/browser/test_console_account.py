"""The account page and an admin's reset of someone's two-step sign-in in a real browser
(the system's Chromium): the reset's confirmation opens as a panel on the person's page
(focus on its heading, Escape closes it), the confirmed reset says what happened; on the
account page a refused password change puts the focus on the first field in error, a
right one says that the other sign-ins ended, and accepting the invitation waiting there
shows the new role. axe-core finds no violation in any of these states, at desktop and
phone widths, and the CSP reports nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_confirmations import onboard
from tests.browser.test_console_story import Watch, shot
from tests.helpers import PASSWORD, LiveServer, create_workspaces, invite, user_id_of
from tests.smtp_support import Mailbox

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

PHONE = {"width": 390, "height": 844}
NEW_PASSWORD = "a brand new passphrase, long"


def console_as(chromium: Any, server: LiveServer, email: str) -> tuple[Any, Any, Watch]:
    """A desktop-sized browser context signed in to the console as ``email``."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    watch = Watch(page)
    page.goto(f"{server.url}/console/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/console/(users|workspaces|account)"))
    return context, page, watch


def test_an_admin_resets_two_step_sign_in_and_a_person_uses_their_account_page(
    server: LiveServer, chromium: Any, mailbox: tuple[Mailbox, int], artifacts: Path, axe: str
) -> None:
    with server.admin() as root:
        create_workspaces(root, "acme")
        made = root.post("/workspaces", json={"slug": "globex", "name": "Globex Corporation"})
        assert made.status_code == 201, made.text
    onboard(server, mailbox, "John", [("acme", "viewer")])
    onboard(server, mailbox, "Alice", [("acme", "admin")])
    onboard(server, mailbox, "Val", [("acme", "viewer")])
    onboard(server, mailbox, "Gina", [("globex", "admin")])
    with server.login("john@example.com", PASSWORD) as john:
        secret = john.post("/auth/mfa/totp").json()["secret"]
        code = pyotp.TOTP(secret).now()
        assert john.post("/auth/mfa/totp/confirm", json={"code": code}).status_code == 200
    with server.login("gina@example.com", PASSWORD) as gina:
        invite(gina, "val@example.com", [("globex", "editor")], "Val")
    with server.admin() as root:
        john_id = user_id_of(root, "john@example.com")

    # -- Alice resets John's two-step sign-in from his page ------------------------------
    context, page, watch = console_as(chromium, server, "alice@example.com")
    page.goto(f"{server.url}/console/users/{john_id}")
    expect(page.locator("#two-step-state")).to_contain_text("On: an authenticator app")
    reset = page.get_by_role("link", name="Reset two-step sign-in… of John")
    reset.click()
    heading = page.locator("#mfa-reset-title")
    expect(heading).to_be_focused()
    expect(page.locator("#panel")).to_contain_text("Every sign-in session they have ends")
    assert_accessible(page, axe, "the reset's confirmation")
    shot(page, artifacts, "account-1-reset-confirmation")
    page.keyboard.press("Escape")
    expect(page.locator("#panel")).to_be_empty()
    reset.click()
    expect(heading).to_be_focused()
    page.get_by_role("button", name="Reset two-step sign-in of John").click()
    message = page.locator("#messages .message")
    expect(message).to_contain_text("Reset John's two-step sign-in")
    expect(message).to_be_focused()
    expect(page.locator("#two-step-state")).to_have_text("Off: the password alone signs them in")
    expect(page.get_by_role("link", name="Reset two-step sign-in… of John")).to_have_count(0)
    assert_accessible(page, axe, "after the reset")
    shot(page, artifacts, "account-2-reset-done")
    page.set_viewport_size(PHONE)
    assert_accessible(page, axe, "after the reset, on a phone")
    assert watch.problems == [], watch.problems
    context.close()

    # -- Val's account page: the invitation waiting, her password ------------------------
    context, page, watch = console_as(chromium, server, "val@example.com")
    page.get_by_role("link", name="Val (your account)").click()
    page.get_by_role("heading", name="Your account").wait_for()
    waiting = page.locator(".invitations-waiting li")
    expect(waiting).to_have_count(1)
    expect(waiting).to_contain_text("Gina invites you as editor in Globex Corporation")
    assert_accessible(page, axe, "the account page with an invitation waiting")
    shot(page, artifacts, "account-3-page")

    current = page.get_by_label("Current password")
    new = page.get_by_label("New password")
    current.fill("not my password")
    new.fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(current).to_be_focused()
    expect(current).to_have_attribute("aria-invalid", "true")
    expect(current).to_have_accessible_description("The current password is not correct")
    assert_accessible(page, axe, "a wrong current password")
    shot(page, artifacts, "account-4-wrong-password")
    current.fill(PASSWORD)
    new.fill("short")
    page.get_by_role("button", name="Change password").click()
    expect(new).to_be_focused()
    expect(new).to_have_accessible_description(
        re.compile("The password must have at least 12 characters")
    )
    expect(current).not_to_have_attribute("aria-invalid", "true")
    assert_accessible(page, axe, "a new password too short")
    current.fill(PASSWORD)
    new.fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#messages .message")).to_contain_text(
        "Every other sign-in of yours has ended"
    )
    assert_accessible(page, axe, "the password changed")
    shot(page, artifacts, "account-5-password-changed")

    # Still signed in, in the new session: accepting works, and shows the new role.
    page.get_by_role("button", name="Accept (editor in Globex Corporation)").click()
    expect(page.locator("#messages .message")).to_contain_text(
        "Invitation accepted: you are now editor in Globex Corporation."
    )
    roles = page.get_by_role("table", name="Your roles")
    expect(roles).to_contain_text("Globex Corporation")
    expect(roles).to_contain_text("editor")
    expect(page.locator(".invitations-waiting")).to_have_count(0)
    assert_accessible(page, axe, "the invitation accepted")
    shot(page, artifacts, "account-6-accepted")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert_accessible(page, axe, "the account page on a phone")
    shot(page, artifacts, "account-7-phone")
    account_url = f"{server.url}/console/account/password"
    assert watch.problems == [f"422 {account_url}"] * 2, watch.problems
    context.close()
