"""The console's admin work in a real browser (the system's Chromium): the super admin
starts an access review, revokes one grant with a reason from the keyboard, keeps
another by ticking it, closes the campaign after the confirmation, downloads a report as
CSV, opens the person whose grant went (from Users, by keyboard) to find it in their
trail, gives two people a role at once after one confirmation listing both, reads the
workspaces' member counts and members and deletes one by typing its slug; at desktop and
phone widths, with axe-core finding no violation on any page or state. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import latest_link, shot, super_admin_console
from tests.helpers import ADMIN_EMAIL, LiveServer, accept_invitation, create_workspaces, invite
from tests.smtp_support import Mailbox

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def onboard_by_mail(server: LiveServer, box: Mailbox, people: dict[str, tuple[str, str]]) -> None:
    """Invite each person (name -> (workspace, role)) and accept with the emailed link."""
    with server.admin() as admin:
        create_workspaces(admin, "acme", "globex")
        for name, (workspace, role) in people.items():
            email = f"{name.lower()}@example.com"
            invite(admin, email, [(workspace, role)], name)
            token = latest_link(box, email).rsplit("/", 1)[1]
            assert accept_invitation(server, token).status_code == 200


def test_a_review_and_a_persons_page_in_the_browser_by_keyboard_at_two_widths(
    server: LiveServer, chromium: Any, mailbox: tuple[Mailbox, int], artifacts: Path, axe: str
) -> None:
    onboard_by_mail(server, mailbox[0], {"Bob": ("acme", "editor"), "Carol": ("acme", "viewer")})
    context, page, watch = super_admin_console(chromium, server, accept_downloads=True)

    # -- start a campaign ------------------------------------------------------------------
    page.get_by_role("link", name="Reviews", exact=True).click()
    page.get_by_role("heading", name="Access reviews").wait_for()
    page.wait_for_load_state()
    assert_accessible(page, axe, "reviews")
    page.get_by_label("Name", exact=True).fill("Q4 acme")
    page.get_by_label("Scope").select_option("acme")
    page.get_by_role("button", name="Start campaign").click()
    message = page.locator("#messages .message")
    message.filter(has_text="Started Q4 acme: 2 grants to review").wait_for()
    expect(message).to_be_focused()  # what happened is where the keyboard is
    assert_accessible(page, axe, "campaign")
    shot(page, artifacts, "reviews-1-campaign")

    # -- the queue: revoke with a reason, by keyboard ----------------------------------------
    page.get_by_role("link", name="Access reviews").click()
    page.get_by_role("link", name=re.compile(r"Your queue \(2 to decide\)")).click()
    page.get_by_role("heading", name="Your review queue").wait_for()
    page.wait_for_load_state()
    assert_accessible(page, axe, "queue")
    reason = page.get_by_label("Reason for Carol's viewer in acme")
    reason.focus()
    page.keyboard.type("left the project")
    page.keyboard.press("Enter")  # Enter in the reason decides nothing
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Keep Carol's viewer in acme")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Revoke Carol's viewer in acme")).to_be_focused()
    page.keyboard.press("Enter")
    message.filter(has_text="Revoked Carol's viewer in acme (the grant is gone).").wait_for()
    expect(message).to_be_focused()
    assert_accessible(page, axe, "queue after a revocation")

    # A revocation without a reason is refused next to the field.
    page.get_by_label("Show").select_option("undecided")
    page.get_by_role("button", name="Revoke Bob's editor in acme").click()
    error = page.locator(".field-error", has_text="Give a reason to revoke")
    error.wait_for()
    assert page.get_by_label("Reason for Bob's editor in acme").get_attribute("aria-invalid")
    assert_accessible(page, axe, "queue with a refused revocation")
    shot(page, artifacts, "reviews-2-queue-error")

    # -- bulk keep: tick, then one button ----------------------------------------------------
    page.get_by_label("Select Bob's editor in acme").check()
    page.get_by_role("button", name="Keep selected").click()
    message.filter(has_text="Kept 1: Bob's editor in acme.").wait_for()
    assert page.get_by_text("Nothing here.").is_visible()

    # -- progress, then close after the confirmation -----------------------------------------
    page.get_by_role("link", name="Access reviews").click()
    page.get_by_role("link", name="Q4 acme").click()
    progress = page.locator("dl.facts")
    assert "2 of 2 decided: 1 kept, 1 revoked" in progress.inner_text()
    page.get_by_role("link", name="Close now…").click()
    page.get_by_role("heading", name="Close Q4 acme now?").wait_for()
    assert_accessible(page, axe, "close confirmation")
    shot(page, artifacts, "reviews-3-close")
    page.get_by_role("button", name="Close Q4 acme").click()
    message.filter(has_text="Closed Q4 acme; 0 undecided flagged.").wait_for()
    assert "Closed" in progress.inner_text()

    # -- a report and its CSV ----------------------------------------------------------------
    page.get_by_role("link", name="Reviews", exact=True).click()
    page.get_by_role("link", name="Reports").click()
    page.get_by_role("link", name="Admins").click()
    page.get_by_role("heading", name="Admins").wait_for()
    assert_accessible(page, axe, "report")
    shot(page, artifacts, "reviews-4-report")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == "admins.csv"
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.splitlines()[0].startswith("user_id,") or "email" in csv_text.splitlines()[0]
    assert ADMIN_EMAIL in csv_text

    # -- Carol's page, reached by keyboard from Users ------------------------------------------
    page.get_by_role("link", name="Users", exact=True).click()
    page.wait_for_load_state()
    page.get_by_role("link", name="Carol", exact=True).focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Carol", exact=True).wait_for()
    carol_url = page.url
    changes = page.get_by_role("table", name="Changes to Carol").inner_text()
    assert "grant.removed" in changes and "roles in acme: viewer → none" in changes
    assert "Live" not in page.get_by_role("table", name="Sign-in sessions").inner_text()
    assert_accessible(page, axe, "a person's page")
    shot(page, artifacts, "reviews-5-person")

    # -- bulk role change: tick two people, one confirmation listing both -------------------
    page.get_by_role("link", name="Users", exact=True).click()
    page.wait_for_load_state()
    page.get_by_label("Select Bob").check()
    page.get_by_label("Select Carol").check()
    page.get_by_label("With the people ticked").select_option("add-role")
    page.get_by_label("In workspace").select_option("acme")
    page.get_by_label("Role to give or take").select_option("viewer")
    page.get_by_role("button", name="Review…").click()
    page.get_by_role("heading", name="Give viewer in acme to 2 people?").wait_for()
    bulk_url = page.url
    affected = page.get_by_role("table", name="Everyone affected").inner_text()
    assert "bob@example.com" in affected and "carol@example.com" in affected
    assert_accessible(page, axe, "bulk confirmation")
    shot(page, artifacts, "reviews-6-bulk-confirm")
    page.get_by_role("button", name="Give viewer in acme to 2 people").click()
    message.filter(has_text="Gave viewer in acme to 2: Bob, Carol.").wait_for()
    bob_row = page.locator("tr", has_text="bob@example.com")
    assert "acme: editor, viewer" in bob_row.locator("td[data-label=Roles]").inner_text()

    # -- bulk invite: a pasted list previewed (a bad row flagged), then the good rows sent -----
    page.get_by_role("link", name="Invite many").click()
    page.get_by_role("heading", name="Invite many people").wait_for()
    page.get_by_label("One person per line: name, email, roles").fill(
        "Dora Dev, dora@example.com, acme:viewer\nNo Such Role, nobody@example.com, acme:astronaut"
    )
    page.get_by_role("button", name="Preview").click()
    page.get_by_text("1 of 2 rows ready to send.").wait_for()
    preview = page.get_by_role("table", name="The preview").inner_text()
    assert "Ready" in preview and "astronaut" in preview
    assert_accessible(page, axe, "a bulk invite's preview")
    shot(page, artifacts, "reviews-7-bulk-invite-preview")
    page.get_by_role("button", name="Send 1 invitation").click()
    page.get_by_text("Sent 1 invitation; 1 row not sent").wait_for()
    assert "Invited" in page.get_by_role("table", name="What was sent").inner_text()
    assert_accessible(page, axe, "a bulk invite sent")

    # -- workspaces: member counts, the members page, deleting one by typing its slug --------
    page.get_by_role("link", name="Workspaces", exact=True).click()
    page.wait_for_load_state()
    # Bob and Carol, and Dora, invited just now.
    assert page.locator("#workspace-acme td[data-label=Members]").inner_text() == "3"
    assert_accessible(page, axe, "workspaces")
    page.get_by_role("link", name="Members of Acme").click()
    page.get_by_role("link", name="Deactivate… Bob").wait_for()
    assert_accessible(page, axe, "members")
    page.get_by_role("link", name="Workspaces", exact=True).click()
    page.get_by_role("link", name="Delete… Globex").click()
    confirm = page.get_by_label("Type globex to confirm")
    confirm.focus()
    page.keyboard.type("globe")
    page.keyboard.press("Enter")
    page.locator("#confirm-slug-error").wait_for()
    expect(confirm).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, axe, "a refused deletion")
    shot(page, artifacts, "reviews-8-delete-workspace")
    confirm.fill("globex")
    page.keyboard.press("Enter")
    message.filter(has_text="Deleted workspace Globex (globex)").wait_for()
    assert page.locator("#workspace-globex").count() == 0

    # -- the audit trail in words, with a details drawer -------------------------------------
    page.get_by_role("link", name="Audit", exact=True).click()
    page.wait_for_load_state()
    deleted = page.locator("#audit-results tbody tr", has_text="workspace.deleted").first
    deleted.get_by_text("Details").click()
    expect(deleted.locator("pre.raw")).to_be_visible()
    assert "Chain" in deleted.inner_text()
    assert_accessible(page, axe, "audit with a details drawer open")

    # -- phone width: no sideways scrolling, still no violation -------------------------------
    page.set_viewport_size({"width": 390, "height": 844})
    for url in (
        f"{server.url}/console/reviews",
        f"{server.url}/console/reviews/queue",
        carol_url,
        f"{server.url}/console/workspaces/acme",
        bulk_url,
        f"{server.url}/console/audit",
        f"{server.url}/console/reports/admins",
    ):
        page.goto(url)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
        assert_accessible(page, axe, f"{url} on a phone")
    page.get_by_role("link", name="Download CSV").wait_for()
    shot(page, artifacts, "reviews-9-report-phone")
    # The refusals the story asks for (a revocation without a reason, a mistyped slug) are all.
    assert len(watch.problems) == 2, watch.problems
    assert re.fullmatch(r"422 \S+/decision", watch.problems[0])
    assert re.fullmatch(r"422 \S+/workspaces/globex/delete", watch.problems[1])
    context.close()
