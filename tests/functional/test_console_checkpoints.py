"""The audit chain's signed checkpoints in the console (issue 24's checkpoints, issue 23's
"every admin task of the API"): the super admin lists them and signs the head now, as
``GET``/``POST /audit/checkpoints`` do; a workspace's admin neither sees the link nor
reaches the page."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.config import Settings
from tests.console_support import sign_in
from tests.helpers import ADMIN_EMAIL, PASSWORD, LiveServer, create_workspaces, invite_and_accept


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, audit_checkpoint_every=5)


def test_the_super_admin_lists_and_signs_checkpoints(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex", "initech")  # enough events for one at 5
    automatic = root.get("/audit/checkpoints").json()
    assert automatic and all(c["trigger"] == "auto" for c in automatic)

    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    assert (
        'href="/console/audit/checkpoints">Signed checkpoints</a>'
        in console.get("/console/audit").text
    )
    page = console.get("/console/audit/checkpoints")
    assert page.status_code == 200
    assert "One is made every 5 events" in page.text
    assert f'<td data-label="Head event">{automatic[0]["head_id"]}</td>' in page.text

    signed = console.post("/console/audit/checkpoints")
    assert signed.status_code == 201, signed.text
    [newest, *_] = root.get("/audit/checkpoints").json()
    assert newest["trigger"] == "manual"
    assert f"Signed the head of the chain: event {newest['head_id']}" in signed.text
    assert "by hand" in signed.text


def test_a_workspace_admin_does_not_reach_the_checkpoints(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    invite_and_accept(server, root, "ann@example.com", "Ann", [("acme", "admin")])
    ann = sign_in(server, "ann@example.com", PASSWORD)
    before = root.get("/audit/checkpoints").json()
    assert "Signed checkpoints" not in ann.get("/console/audit").text
    assert ann.get("/console/audit/checkpoints").status_code == 403
    assert ann.post("/console/audit/checkpoints").status_code == 403
    assert root.get("/audit/checkpoints").json() == before
