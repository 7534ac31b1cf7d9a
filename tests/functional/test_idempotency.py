"""``Idempotency-Key`` on admin writes (issue 25, item 2): a client that timed out
retries safely; the first outcome comes back, the change is made once."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from gateway.app import create_app
from gateway.config import Settings
from gateway.db.models import Grant
from gateway.web.state import gateway_state
from tests.cluster import through_proxy
from tests.functional.test_token_revocation import serving
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    create_workspaces,
    invite_and_accept,
    onboard,
    outbox_messages,
)
from tests.tcp_proxy import TcpProxy

INVITE = {
    "email": "kim@example.com",
    "name": "Kim",
    "roles": [{"workspace": "acme", "role": "viewer"}],
}


def test_a_retry_with_the_same_key_gets_the_first_outcome(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    key = {"Idempotency-Key": "invite-kim-1"}
    sent = len(outbox_messages(server.settings))

    first = root.post("/invitations", json=INVITE, headers=key)
    again = root.post("/invitations", json=INVITE, headers=key)

    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["X-Ringfence-Revision"] == first.headers["X-Ringfence-Revision"]
    assert len(root.get("/invitations").json()) == 1  # one invitation, one email
    assert len(outbox_messages(server.settings)) == sent + 1

    # The same key for another request is refused, and changes nothing.
    other = root.post("/invitations", json={**INVITE, "email": "lee@example.com"}, headers=key)
    assert_problem(other, 422, "idempotency-key-reused", "another request")
    assert len(root.get("/invitations").json()) == 1
    # An answer that was a refusal comes back as well (the change was not made either).
    refused = root.post(
        "/users/2000000000/grants",
        json={"workspace": "acme", "role": "viewer"},
        headers={"Idempotency-Key": "g-1"},
    )
    assert refused.status_code == 404
    assert (
        root.post(
            "/users/2000000000/grants",
            json={"workspace": "acme", "role": "viewer"},
            headers={"Idempotency-Key": "g-1"},
        ).headers["Idempotent-Replayed"]
        == "true"
    )
    # Without the header, or with a new key, a request is a request.
    assert root.post("/invitations", json=INVITE).status_code == 409  # Kim is invited


def test_keys_are_each_callers_own_and_must_be_sane(server: LiveServer) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    _, ada = invite_and_accept(server, root, "ada@example.com", "Ada", [("acme", "admin")])
    key = {"Idempotency-Key": "same"}
    mine = root.post("/invitations", json=INVITE, headers=key)
    theirs = ada.post("/invitations", json={**INVITE, "email": "max@example.com"}, headers=key)
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers  # another caller's key space
    for bad in ("", "x" * 256):
        response = root.post("/invitations", json=INVITE, headers={"Idempotency-Key": bad})
        assert_problem(response, 422, "invalid-input", "Idempotency-Key")


def test_a_change_committed_before_the_link_dropped_is_reported_and_replayed_as_made(
    server: LiveServer, settings: Settings
) -> None:
    """The link drops right after the grant's COMMIT: the answer cannot be read back nor
    kept. The key's row learned the revision inside the change's own transaction, so the
    client's retry is told the change was made (not made twice, not reported failed)."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("a dropped link needs a database across the network (PostgreSQL)")
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    eve = onboard(server, root, "eve@example.com", "Eve", [("acme", "editor")])
    proxy = TcpProxy("127.0.0.1", 5432)
    app = create_app(replace(settings, database_url=through_proxy(settings.database_url, proxy)))
    factory = gateway_state(app).session_factory

    @event.listens_for(factory, "after_flush")
    def granting(session: Session, _context: object) -> None:
        if any(isinstance(row, Grant) for row in session.new):
            session.info["drop_link_after_commit"] = True

    @event.listens_for(factory, "after_commit")
    def drop(session: Session) -> None:
        if session.info.pop("drop_link_after_commit", False):
            proxy.cut()

    grant = {"workspace": "globex", "role": "viewer"}
    try:
        with serving(app) as url:
            login = httpx.post(
                f"{url}/auth/login",
                json={"email": ADMIN_EMAIL, "password": server.admin_password},
                timeout=30,
            )
            headers = {
                "Authorization": f"Bearer {login.json()['access_token']}",
                "Idempotency-Key": "grant-eve-globex",
            }
            first = httpx.post(f"{url}/users/{eve}/grants", json=grant, headers=headers, timeout=30)
            # Answered as made (it was a 503 "nothing was changed", and a retry without
            # a key would have made it twice): committed, at which revision.
            assert proxy.is_cut and first.status_code == 201, first.text
            assert first.json()["committed"] is True and first.json()["revision"] > 0
            assert first.headers["X-Ringfence-Revision"] == str(first.json()["revision"])
            proxy.restore()
            again = httpx.post(f"{url}/users/{eve}/grants", json=grant, headers=headers, timeout=30)
    finally:
        proxy.close()
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["committed"] is True
    assert again.json()["revision"] == first.json()["revision"]
    assert root.get(f"/users/{eve}").json()["roles"] == {"acme": ["editor"], "globex": ["viewer"]}
