"""The change feed over HTTP (SQLite and PostgreSQL): ``GET /v1/snapshot`` and ``GET
/v1/changes`` (at once, by long poll, and as Server-Sent Events), with a service token
holding ``decisions:replicate`` and nothing less."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from sqlalchemy import delete

from gateway.db.models import PolicyChange
from gateway.db.session import make_engine
from tests.helpers import (
    LiveServer,
    assert_problem,
    client_token,
    create_client,
    create_workspaces,
    decision_headers,
    onboard,
)

JOHN = "john@example.com"


def replicator(server: LiveServer) -> httpx.Client:
    client_id, secret = create_client(server.settings, "decisions:replicate", name="replica")
    return server.client(client_token(server, client_id, secret))


def grant(admin: httpx.Client, user_id: int, workspace: str, role: str) -> int:
    response = admin.post(f"/users/{user_id}/grants", json={"workspace": workspace, "role": role})
    assert response.status_code == 201, response.text
    return int(response.headers["X-Ringfence-Revision"])


def test_snapshot_then_changes_only_for_replicating_tokens(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    john = onboard(server, admin, JOHN, "John Smith", [("acme", "editor")])

    # Who may read it: a token with decisions:replicate; not a decision token, not a person.
    for client, status, type_ in (
        (server.client(), 401, "unauthorized"),
        (server.client(decision_headers(server)["Authorization"][7:]), 403, "insufficient-scope"),
        (admin, 401, "unauthorized"),
    ):
        for path in ("/v1/snapshot", "/v1/changes?since=0"):
            assert_problem(client.get(path), status, type_)
    feed = replicator(server)

    snapshot = feed.get("/v1/snapshot")
    assert snapshot.status_code == 200 and snapshot.headers["Cache-Control"] == "no-store"
    state = snapshot.json()
    at = state["revision"]
    assert at > 0 and state["workspaces"] == ["acme", "globex"]
    assert ["g", f"user:{john}", "role:editor", "acme"] in state["rules"]
    assert {"user_id": john, "email": JOHN, "active": True} in state["subjects"]
    assert any(rule[0] == "p" for rule in state["rules"]) and state["expiries"] == []

    nothing = feed.get("/v1/changes", params={"since": at}).json()
    assert nothing == {"since": at, "revision": at, "head": at, "changes": []}

    revision = grant(admin, john, "globex", "viewer")
    assert revision == at + 1
    after = feed.get("/v1/changes", params={"since": at}).json()
    assert after["revision"] == after["head"] == revision
    [change] = after["changes"]
    assert change["revision"] == revision
    assert {
        "type": "rule_added",
        "ptype": "g",
        "values": [f"user:{john}", "role:viewer", "globex"],
    } in change["entries"]

    # Narrowed to workspaces: their rules and every workspace's (*), every revision listed.
    globex = feed.get("/v1/snapshot", params={"workspace": "globex"}).json()
    assert globex["revision"] == revision and globex["workspaces"] == ["globex"]
    domains = {rule[2] if rule[0] == "p" else rule[3] for rule in globex["rules"]}
    assert (
        domains == {"*", "globex"}
        and globex["subjects"] == feed.get("/v1/snapshot").json()["subjects"]
    )
    assert ["g", f"user:{john}", "role:viewer", "globex"] in globex["rules"]
    scoped = feed.get("/v1/changes", params={"since": at, "workspace": ["acme", "other"]}).json()
    assert scoped["changes"] == [{"revision": revision, "entries": []}]
    assert feed.get("/v1/changes", params={"since": at, "workspace": "globex"}).json() == after

    # From the beginning, in pages of at most `limit` revisions.
    first = feed.get("/v1/changes", params={"since": 0, "limit": 2}).json()
    assert [c["revision"] for c in first["changes"]] == [1, 2] and first["revision"] == 2

    for params in (
        {},
        {"since": "-1"},
        {"since": "x"},
        {"since": 0, "timeout": 31},
        {"since": 0, "limit": 0},
        {"since": 0, "workspace": ""},
    ):
        assert_problem(feed.get("/v1/changes", params=params), 400, "bad-request")

    # Pruned from the log: start again from a snapshot.
    db = make_engine(server.settings.sqlalchemy_url)
    try:
        with db.begin() as connection:
            connection.execute(delete(PolicyChange).where(PolicyChange.revision <= 2))
    finally:
        db.dispose()
    gone = assert_problem(feed.get("/v1/changes", params={"since": 1}), 410, "changes-pruned")
    assert gone["head"] == revision
    assert feed.get("/v1/changes", params={"since": 2}).status_code == 200


def test_long_poll_and_event_stream(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "acme")
    john = onboard(server, admin, JOHN, "John Smith", [("acme", "viewer")])
    feed = replicator(server)
    at = feed.get("/v1/snapshot").json()["revision"]

    # A long poll answers as soon as a revision is committed (here: within its 20 s).
    answers: list[dict[str, Any]] = []
    poll = threading.Thread(
        target=lambda: answers.append(
            feed.get("/v1/changes", params={"since": at, "timeout": 20}).json()
        )
    )
    poll.start()
    first = grant(admin, john, "acme", "editor")
    poll.join(timeout=30)
    assert [c["revision"] for c in answers[0]["changes"]] == [first]

    # The stream: one event per revision, its id the revision; resumed by Last-Event-ID.
    events: list[tuple[str, dict[str, Any]]] = []
    stream_headers = {"Accept": "text/event-stream"}
    with feed.stream(
        "GET", "/v1/changes", params={"since": at, "timeout": 20}, headers=stream_headers
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        second = None
        for line in stream.iter_lines():
            if line.startswith(("id: ", "event: ", "data: ")):
                name, _, value = line.partition(": ")
                event[name] = value
            elif not line and "data" in event:
                events.append((event["id"], json.loads(event["data"])))
                event = {}
                if len(events) == 1:
                    second = grant(admin, john, "acme", "admin")  # arrives on the open stream
                else:
                    break
    assert [(i, e["revision"]) for i, e in events] == [(str(first), first), (str(second), second)]
    assert any(e["type"] == "rule_added" for e in events[1][1]["entries"])

    resumed = feed.get(
        "/v1/changes",
        params={"timeout": 0},
        headers={**stream_headers, "Last-Event-ID": str(first)},
    )
    assert resumed.status_code == 200
    assert [line for line in resumed.text.splitlines() if line.startswith("id: ")] == [
        f"id: {second}"
    ]
