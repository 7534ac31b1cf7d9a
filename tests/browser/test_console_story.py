"""The onboarding story in a real browser (the system's Chromium): an admin signs in to
the console, creates workspaces, invites John with roles in two workspaces, John opens
the link from the email the SMTP server received and accepts, the admin changes his role
with a preview, deactivates him and finds it all on the Audit page; another workspace's
admin sees none of it. Every page is saved as a screenshot in test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ADMIN_EMAIL, PASSWORD, LiveServer
from tests.smtp_support import Mailbox

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/invite/[A-Za-z0-9_\-%]+)")


def latest_link(mailbox: Mailbox, to: str) -> str:
    for recipients, message in reversed(mailbox.deliveries()):
        if to in recipients:
            body = message.get_body(preferencelist=("plain",))
            assert body is not None
            match = LINK.search(body.get_content())
            assert match, body.get_content()
            return match.group(1)
    raise AssertionError(f"no email to {to}: {[r for r, _ in mailbox.deliveries()]}")


class Watch:
    """Collects Content-Security-Policy violations and script errors of a page."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # Failed loads are judged by their response below (the browser's own favicon
        # request is no failure of the console).
        if message.text.startswith("Failed to load resource"):
            return
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            self.problems.append(f"{response.status} {response.url}")


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"console-{name}.png"), full_page=True)


def sign_in(page: Any, url: str, email: str, password: str) -> None:
    page.goto(f"{url}/console/users")
    assert "/console/sign-in" in page.url
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/console/(users|workspaces)"))


def super_admin_console(
    chromium: Any, server: LiveServer, **context_options: Any
) -> tuple[Any, Any, Watch]:
    """A new desktop-sized browser context with the console open, signed in as the super
    admin: the context (close it at the end), its page and what watches the page."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, **context_options)
    page = context.new_page()
    page.set_default_timeout(10_000)
    watch = Watch(page)
    sign_in(page, server.url, ADMIN_EMAIL, server.admin_password)
    return context, page, watch


def test_onboarding_story_in_the_console(
    server: LiveServer, chromium: Any, mailbox: tuple[Mailbox, int], artifacts: Path
) -> None:
    box, _ = mailbox
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    watch = Watch(page)
    url = server.url

    # -- sign in ---------------------------------------------------------------------
    page.goto(f"{url}/console/sign-in")
    shot(page, artifacts, "01-sign-in")
    sign_in(page, url, ADMIN_EMAIL, server.admin_password)
    assert page.get_by_role("heading", name="Users").is_visible()

    # -- workspaces --------------------------------------------------------------------
    page.get_by_role("link", name="Workspaces").click()
    page.wait_for_load_state()  # htmx takes over the page once it has loaded
    for slug, name in (("acme", "Acme Inc."), ("globex", "Globex"), ("initech", "Initech")):
        page.get_by_label("Slug", exact=True).fill(slug)
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_role("button", name="Create workspace").click()
        page.get_by_role("status").filter(has_text=f"Created workspace {name}").wait_for()
    page.get_by_label("New name for globex").fill("Globex Corporation")
    page.locator("#workspace-globex").get_by_role("button", name="Rename").click()
    page.get_by_role("status").filter(has_text="Renamed globex to Globex Corporation").wait_for()
    name_cell = page.locator("#workspace-globex td[data-label=Name]")
    assert name_cell.inner_text() == "Globex Corporation"
    assert page.url.endswith("/console/workspaces")  # swapped in place, no navigation
    shot(page, artifacts, "02-workspaces")

    # -- invite John with roles in two workspaces ------------------------------------------
    page.get_by_role("link", name="Users").click()
    page.wait_for_load_state()  # htmx takes over the page once it has loaded
    page.get_by_role("link", name="Invite user").click()
    # htmx opened the form in place and moved focus into it.
    page.locator("#invite-title").wait_for()
    # Focus moves once htmx has settled the swap: wait for it (fails after the timeout).
    expect(page.locator("#invite-title")).to_be_focused()
    assert page.url.endswith("/console/users")
    page.get_by_label("Name", exact=True).fill("John Smith")
    page.get_by_label("Email", exact=True).fill("john@example.com")
    page.get_by_role("group", name="Acme Inc. (acme)").get_by_label("editor").check()
    page.get_by_role("group", name="Globex Corporation (globex)").get_by_label("viewer").check()
    shot(page, artifacts, "03-invite")
    page.get_by_role("button", name="Send invitation").click()
    message = page.locator("#messages .message")
    message.filter(has_text="Invited John Smith <john@example.com>").wait_for()
    john_row = page.locator("tr", has_text="john@example.com")
    john_row.wait_for()
    assert "Pending" in john_row.inner_text()
    assert "sent" in john_row.locator("td[data-label=Invitation]").inner_text()
    assert page.locator("#panel").inner_html().strip() == ""
    shot(page, artifacts, "04-users-invited")

    # -- John opens the emailed link and accepts --------------------------------------------
    link = latest_link(box, "john@example.com")
    assert link.startswith(url)
    john = context.browser.new_context(viewport={"width": 390, "height": 844})
    john_page = john.new_page()
    john_page.goto(link)
    # The workspaces by name, as the email names them.
    assert "Acme Inc." in john_page.content() and "Globex" in john_page.content()
    john_page.get_by_label("Choose a password").fill("correct horse battery staple")
    shot(john_page, artifacts, "05-accept-phone")
    john_page.get_by_role("button", name="Accept invitation").click()
    assert john_page.get_by_role("heading", name="Welcome to Ringfence").is_visible()
    john.close()

    # -- search, then change John's role with a preview --------------------------------------
    page.get_by_label("Search name or email").fill("john")
    page.wait_for_url(re.compile(r"q=john"))
    john_row = page.locator("tr", has_text="john@example.com")
    john_row.locator(".badge-active").wait_for()
    assert page.locator("#users-count").inner_text() == "1 person"
    john_row.get_by_role("link", name="Manage roles of John Smith").click()
    panel = page.locator("#panel")
    acme = panel.locator("form", has=page.get_by_text("(now: editor)")).first
    acme.wait_for()
    acme.get_by_label("editor", exact=True).uncheck()
    acme.get_by_label("admin", exact=True).check()
    preview = panel.locator("#preview-acme")
    # Admin rights said in words first; the raw permissions folded under their count.
    preview.get_by_text("Gives admin rights in acme: they can invite people").wait_for()
    preview.get_by_text("Gains 13 permissions").click()
    assert "audit:read" in preview.inner_text() and "users:invite" in preview.inner_text()
    assert "Loses" not in preview.inner_text()  # admin inherits everything editor gives
    shot(page, artifacts, "06-manage-roles-preview")
    acme.get_by_role("button", name="Save roles in acme").click()
    message.filter(has_text="John Smith now has admin in acme (before: editor)").wait_for()
    assert "acme: admin" in john_row.locator("td[data-label=Roles]").inner_text()

    # -- deactivate ----------------------------------------------------------------------
    john_row.get_by_role("link", name="Deactivate… John Smith").click()
    # It asks first, saying what happens (tests/functional/test_console_confirmations.py).
    page.get_by_role("heading", name="Deactivate John Smith?").wait_for()
    expect(page.locator("#deactivate-title")).to_be_focused()
    page.get_by_role("button", name="Deactivate John Smith").click()
    john_row.locator(".badge-deactivated").wait_for()
    assert john_row.get_by_role("button", name="Reactivate John Smith").is_visible()
    assert "Deactivated John Smith" in message.inner_text()
    # Focus went to the message saying what happened, not lost to the page.
    expect(page.locator("#messages:focus-within")).to_have_count(1)
    shot(page, artifacts, "07-users-deactivated")

    # -- the audit trail -------------------------------------------------------------------
    page.get_by_role("link", name="Audit").click()
    page.wait_for_load_state()  # htmx takes over the page once it has loaded
    trail = page.locator("#audit-results").inner_text()
    for action in (
        "workspace.created",
        "workspace.renamed",
        "invitation.created",
        "invitation.accepted",
        "grant.replaced",
        "user.deactivated",
    ):
        assert action in trail, action
    page.get_by_label("Workspace").select_option("acme")
    page.wait_for_url(re.compile(r"workspace=acme"))
    page.get_by_label("Action").fill("grant")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"action=grant"))
    rows = page.locator("#audit-results tbody tr")
    rows.first.wait_for()
    assert rows.count() == 1
    assert "grant.replaced" in rows.first.inner_text()
    assert "John Smith" in rows.first.inner_text()
    assert "roles in acme: editor → admin" in rows.first.inner_text()
    shot(page, artifacts, "08-audit")

    # -- roles, settings and a test email ---------------------------------------------------
    page.get_by_role("link", name="Roles").click()
    page.wait_for_load_state()  # htmx takes over the page once it has loaded
    admin_role = page.locator("#role-admin")
    assert "policies/roles.yaml" in admin_role.inner_text()
    admin_role.get_by_text("Held by 1").click()  # holders folded under their count
    assert "John Smith (john@example.com) in acme" in admin_role.inner_text()
    shot(page, artifacts, "09-roles")
    page.get_by_role("link", name="Settings").click()
    page.wait_for_load_state()  # htmx takes over the page once it has loaded
    page.get_by_label("Send to").fill("ops@example.com")
    page.get_by_role("button", name="Send test email").click()
    page.locator("#test-result").wait_for()
    outcome = page.locator("#test-result").inner_text()
    assert outcome.startswith("Sent: ") and "250 2.0.0 Queued as TEST1" in outcome
    assert any("ops@example.com" in r for r, _ in box.deliveries())
    shot(page, artifacts, "10-settings")

    # -- another workspace's admin sees none of it ------------------------------------------
    page.get_by_role("link", name="Users").click()
    page.wait_for_load_state()  # htmx takes over the page once it has loaded
    page.get_by_role("link", name="Invite user").click()
    page.get_by_label("Name", exact=True).fill("Gina Other")
    page.get_by_label("Email", exact=True).fill("gina@example.com")
    page.get_by_role("group", name="Initech (initech)").get_by_label("owner").check()
    page.get_by_role("button", name="Send invitation").click()
    message.filter(has_text="Invited Gina Other").wait_for()
    gina = chromium.new_context(viewport={"width": 1280, "height": 900})
    gina_page = gina.new_page()
    gina_watch = Watch(gina_page)
    gina_page.goto(latest_link(box, "gina@example.com"))
    gina_page.get_by_label("Choose a password").fill(PASSWORD)
    gina_page.get_by_role("button", name="Accept invitation").click()
    sign_in(gina_page, url, "gina@example.com", PASSWORD)
    for path in ("users", "workspaces", "roles", "audit"):
        gina_page.goto(f"{url}/console/{path}")
        text = gina_page.locator("main").inner_text()
        for secret in ("John", "john@example.com", "acme", "Globex"):
            assert secret not in text, (path, secret)
    assert gina_page.get_by_role("link", name="Settings").count() == 0
    gina_page.goto(f"{url}/console/users")
    shot(gina_page, artifacts, "11-other-workspace-admin")
    assert gina_watch.problems == []
    gina.close()

    # -- phone width ----------------------------------------------------------------------
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{url}/console/users")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, artifacts, "12-users-phone")

    assert watch.problems == [], watch.problems
    context.close()


def test_keyboard_only_sign_in_and_remove_with_confirmation(
    server: LiveServer, chromium: Any, artifacts: Path
) -> None:
    admin = server.admin()
    admin.post("/workspaces", json={"slug": "acme", "name": "Acme"})
    admin.post(
        "/invitations",
        json={
            "email": "pat@example.com",
            "name": "Pat Pending",
            "roles": [{"workspace": "acme", "role": "viewer"}],
        },
    )
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    watch = Watch(page)
    page.goto(f"{server.url}/console/sign-in")
    # The email field has focus; Tab reaches the password, Enter submits.
    page.keyboard.type(ADMIN_EMAIL)
    page.keyboard.press("Tab")
    page.keyboard.type(server.admin_password)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/console/users"))

    # The first Tab reaches the skip link.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"

    row = page.locator("tr", has_text="pat@example.com")
    row.get_by_role("link", name="Remove… Pat Pending").focus()
    page.keyboard.press("Enter")
    confirm = page.locator("#panel")
    confirm.get_by_role("heading", name="Remove Pat Pending?").wait_for()
    assert "This cannot be undone." in confirm.inner_text()
    assert "pat@example.com" in confirm.inner_text()
    shot(page, artifacts, "13-remove-confirmation")
    # Escape closes it; nothing happened.
    page.keyboard.press("Escape")
    assert confirm.inner_html().strip() == ""
    assert row.is_visible()
    row.get_by_role("link", name="Remove… Pat Pending").click()
    page.get_by_role("button", name="Remove Pat Pending").click()
    page.locator("#messages .message", has_text="Removed Pat Pending").wait_for()
    assert page.locator("tr", has_text="pat@example.com").count() == 0
    assert server.admin().get("/users", params={"q": "pat"}).json() == []
    assert watch.problems == [], watch.problems
    context.close()
