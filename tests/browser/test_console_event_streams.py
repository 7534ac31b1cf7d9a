"""Editing an event stream in a real browser (the system's Chromium): a file stream made
over the API, its page, the edit form with an error beside its field, then saved with a
share of decisions; axe-core finds no violation in either state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.a11y import assert_accessible
from tests.browser.test_console_story import shot, super_admin_console
from tests.helpers import LiveServer, create_workspaces

pytestmark = pytest.mark.browser


def test_editing_a_stream_in_the_browser(
    server: LiveServer, chromium: Any, artifacts: Path, axe: str
) -> None:
    with server.admin() as admin:
        create_workspaces(admin, "acme")
        made = admin.post(
            "/event-streams",
            json={
                "name": "Corp SIEM",
                "workspace": "acme",
                "kind": "file",
                "target": "acme.jsonl",
                "event_types": ["user.*"],
            },
        )
        assert made.status_code == 201, made.text
    context, page, watch = super_admin_console(chromium, server)
    stream_id = made.json()["stream"]["id"]
    page.goto(f"{server.url}/console/event-streams/{stream_id}")
    page.get_by_role("heading", name="Edit").wait_for()
    assert_accessible(page, axe, "a stream's page with its edit form")

    page.get_by_label("Share of decisions sent").fill("3")
    page.get_by_role("button", name="Save").click()
    error = page.locator("#edit-decisions-error")
    error.wait_for()
    assert "Must be greater" in error.inner_text()
    assert page.get_by_label("Share of decisions sent").get_attribute("aria-invalid") == "true"
    assert_accessible(page, axe, "the edit form with an error beside its field")

    page.get_by_label("Name").fill("Renamed SIEM")
    page.get_by_label("Share of decisions sent").fill("0.5")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").wait_for()
    assert "Saved." in page.get_by_role("status").inner_text()
    page.get_by_role("heading", name="Renamed SIEM").wait_for()
    assert_accessible(page, axe, "the stream saved")
    shot(page, artifacts, "event-stream-edit")
    # The one refused save, and nothing else (no script error, no console message).
    assert watch.problems == [f"422 {server.url}/console/event-streams/{stream_id}/edit"], (
        watch.problems
    )
    context.close()
