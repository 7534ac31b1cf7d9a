"""gateway.web.check_lane over real HTTP: the plain check with a remembered token is answered
below Flask with the same status, body and headers as the Flask route; every request it
is not sure of goes through Flask, and fails closed like it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from flask import request, request_started

from gateway.web.check_lane import CheckLane
from gateway.web.http import decision_services_of
from gateway.web.state import gateway_state
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    client_token,
    create_client,
    create_workspaces,
    decision_headers,
    post_decision,
)

# Neither way depends on the database engine: SQLite is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

QUESTIONS = [
    (ADMIN_EMAIL, "acme", "documents", "read"),  # allowed (super admin)
    ("nobody@example.com", "acme", "documents", "read"),  # unknown subject
    (ADMIN_EMAIL, "no-such-workspace", "documents", "read"),  # unknown workspace
    (ADMIN_EMAIL, "acme", "no-such-resource", "frobnicate"),  # super admin: anything
    ("user:999999", "acme", "documents", "read"),  # unknown user id
]
ALLOWED = [True, False, False, True, False]
# Headers that differ between any two answers (time, connection) or are the server's own.
VARYING = {"x-ringfence-staleness", "date", "server", "connection"}


@contextmanager
def flask_requests(server: LiveServer) -> Iterator[list[str]]:
    """The paths of the requests Flask handled meanwhile (the lane's never start one)."""
    seen: list[str] = []

    def started(_app: Any, **_: Any) -> None:
        seen.append(request.path)

    with request_started.connected_to(started, server.app):
        yield seen


@contextmanager
def through_flask(server: LiveServer) -> Iterator[None]:
    """Take the lane out for a moment: every request goes the Flask way."""
    lane = server.app.wsgi_app
    assert isinstance(lane, CheckLane)
    server.app.wsgi_app = lane.flask_wsgi  # type: ignore[method-assign]
    try:
        yield
    finally:
        server.app.wsgi_app = lane  # type: ignore[method-assign]


def comparable(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in VARYING}
    return response.status_code, response.content, headers


def plain(question: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(("subject", "workspace", "resource", "action"), question, strict=True))


def check(server: LiveServer, question: tuple[str, ...], **headers: str) -> httpx.Response:
    return post_decision(
        server, "/v1/check", plain(question), headers={"X-Request-ID": "same", **headers}
    )


def test_the_lane_answers_like_flask(server: LiveServer) -> None:
    create_workspaces(server.admin(), "acme")
    check(server, QUESTIONS[0])  # the token is checked in full (by Flask) and remembered
    with flask_requests(server) as handled_by_flask:
        by_lane = [check(server, question) for question in QUESTIONS]
    assert handled_by_flask == []
    with through_flask(server), flask_requests(server) as handled_by_flask:
        by_flask = [check(server, question) for question in QUESTIONS]
    assert handled_by_flask == ["/v1/check"] * len(QUESTIONS)

    assert [comparable(r) for r in by_lane] == [comparable(r) for r in by_flask]
    assert [r.json()["allowed"] for r in by_lane] == ALLOWED
    first = by_lane[0]
    assert first.headers["X-Request-ID"] == "same"
    assert first.headers["Cache-Control"] == "no-store"
    assert first.headers["X-Ringfence-Stale"] == "false"
    assert float(first.headers["X-Ringfence-Staleness"]) >= 0
    # A request id of its own when the caller sends none (or an unprintable one).
    for sent in ({}, {"X-Request-ID": "tab\there"}):
        fresh = post_decision(server, "/v1/check", plain(QUESTIONS[0]), headers=sent)
        assert fresh.status_code == 200 and len(fresh.headers["X-Request-ID"]) == 32


def test_the_lane_counts_its_decisions(server: LiveServer) -> None:
    create_workspaces(server.admin(), "acme")
    check(server, QUESTIONS[0])

    def counted() -> dict[str, float]:
        with server.client() as client:
            text = client.get("/metrics").text
        return {
            result: float(line.rsplit(" ", 1)[1])
            for result in ("allow", "deny")
            for line in text.splitlines()
            if line.startswith(f'ringfence_decisions_total{{result="{result}"}}')
        }

    before = counted()
    with flask_requests(server) as handled_by_flask:
        for question in QUESTIONS:
            check(server, question)
    assert handled_by_flask == []
    after = counted()
    assert after["allow"] - before["allow"] == ALLOWED.count(True)
    assert after["deny"] - before["deny"] == ALLOWED.count(False)


def test_what_the_lane_is_not_sure_of_goes_through_flask(server: LiveServer) -> None:
    create_workspaces(server.admin(), "acme")
    body = plain(QUESTIONS[0])
    check(server, QUESTIONS[0])  # the token is remembered
    token = decision_headers(server)["Authorization"]
    with flask_requests(server) as handled_by_flask, server.client() as client:
        # A token this process has not accepted: checked in full, and refused.
        refused = client.post("/v1/check", json=body, headers={"Authorization": "Bearer x.y.z"})
        assert_problem(refused, 401, "unauthorized")
        # No token at all.
        assert_problem(client.post("/v1/check", json=body), 401, "unauthorized")
        auth = {"Authorization": token}
        # Not exactly application/json; X-Min-Revision; a body the schema must judge.
        charset = client.post(
            "/v1/check",
            content=httpx.Request("POST", "/", json=body).content,
            headers={**auth, "Content-Type": "application/json; charset=utf-8"},
        )
        assert charset.status_code == 200 and charset.json()["allowed"] is True
        waited = client.post("/v1/check", json=body, headers={**auth, "X-Min-Revision": "0"})
        assert waited.status_code == 200 and waited.json()["allowed"] is True
        explained = client.post("/v1/check", json={**body, "explain": True}, headers=auth)
        assert explained.status_code == 200 and "explanation" in explained.json()
        empty = client.post("/v1/check", json={**body, "action": ""}, headers=auth)
        assert_problem(empty, 422, "invalid-input")
        broken = client.post(
            "/v1/check",
            content=b'{"subject": "x", "workspace"',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert broken.status_code == 400
        assert broken.headers["Content-Type"] == "application/problem+json"
        # Another path or method.
        assert client.get("/v1/check", headers=auth).status_code == 405
    assert handled_by_flask == ["/v1/check"] * 8


def test_a_token_revoked_here_is_refused_at_once(server: LiveServer) -> None:
    """The lane answers only tokens the cache calls fresh; revoking one in this process
    takes it out of the cache, so the very next check is refused (by Flask)."""
    create_workspaces(server.admin(), "acme")
    client_id, secret = create_client(server.settings, "decisions:check")
    token = client_token(server, client_id, secret)
    auth = {"Authorization": f"Bearer {token}"}
    assert check(server, QUESTIONS[0], **auth).status_code == 200  # remembered
    with flask_requests(server) as handled_by_flask:
        assert check(server, QUESTIONS[0], **auth).json()["allowed"] is True
    assert handled_by_flask == []
    with server.client() as client:
        revoked = client.post("/oauth/revoke", data={"token": token}, auth=(client_id, secret))
    assert revoked.status_code == 200, revoked.text
    with flask_requests(server) as handled_by_flask:
        problem = assert_problem(check(server, QUESTIONS[0], **auth), 401, "unauthorized")
    assert problem["reason"] == "revoked" and handled_by_flask == ["/v1/check"]


def test_a_failing_decision_is_never_an_allow(server: LiveServer) -> None:
    """An error in the lane hands the request to Flask, which fails the same way: a 500
    problem, never an answer."""
    create_workspaces(server.admin(), "acme")
    check(server, QUESTIONS[0])  # the token is remembered

    class Broken:
        def check(self, *_: Any, **__: Any) -> Any:
            raise RuntimeError("the engine is broken")

    services = decision_services_of(gateway_state(server.app))
    working = services.decisions
    services.decisions = Broken()
    try:
        with flask_requests(server) as handled_by_flask:
            failed = check(server, QUESTIONS[0])
    finally:
        services.decisions = working
    assert_problem(failed, 500, "internal-error")
    assert handled_by_flask == ["/v1/check"]
    assert check(server, QUESTIONS[0]).json()["allowed"] is True


def test_batches_take_the_lane_and_answer_like_flask(server: LiveServer) -> None:
    """The usual AuthZEN batch, unscoped and per workspace, is answered below Flask with
    Flask's status, bytes and headers; a body the typed path declines goes to Flask."""
    create_workspaces(server.admin(), "acme")
    check(server, QUESTIONS[0])  # the token is checked in full (by Flask) and remembered
    items = [
        {
            "subject": {"type": "user", "id": subject},
            "action": {"name": action},
            "resource": {"type": resource, "id": "r-1", "properties": {"workspace": workspace}},
        }
        for subject, workspace, resource, action in QUESTIONS
    ]
    items.append({**items[0], "resource": {"type": "documents", "id": "r-2"}})  # no workspace
    batches = [
        ("/access/v1/evaluations", {"evaluations": items}),
        ("/pdp/acme/access/v1/evaluations", {"evaluations": items}),
        (
            "/pdp/acme/access/v1/evaluations",
            {"evaluations": items[:2], "options": {"explain": True}},
        ),
    ]

    def send() -> list[httpx.Response]:
        return [
            post_decision(server, path, body, headers={"X-Request-ID": "same"})
            for path, body in batches
        ]

    with flask_requests(server) as handled_by_flask:
        by_lane = send()
    assert handled_by_flask == ["/pdp/acme/access/v1/evaluations"]  # explain: Flask's
    with through_flask(server), flask_requests(server) as handled_by_flask:
        by_flask = send()
    assert len(handled_by_flask) == len(batches)
    assert [comparable(r) for r in by_lane] == [comparable(r) for r in by_flask]
    unscoped = [answer["decision"] for answer in by_lane[0].json()["evaluations"]]
    assert unscoped == [*ALLOWED, False]
    assert by_lane[0].json()["evaluations"][-1]["context"]["error"]["status"] == 400
    assert [a["decision"] for a in by_lane[1].json()["evaluations"]] == [*ALLOWED, True]
