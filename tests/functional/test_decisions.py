"""The decision API through HTTP: ``POST /v1/check`` and the AuthZEN single evaluation.

Decisions follow the grants made through the admin API, fail closed on anything unknown,
and carry the policy revision they were made at.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers import (
    ADMIN_EMAIL,
    AUTHZEN_POLICIES,
    LiveServer,
    assert_problem,
    create_workspaces,
    decision_client,
    decision_headers,
    invite,
    onboard,
    post_check,
    post_decision,
    post_invitation,
)

JOHN = "john@example.com"


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def acme(server: LiveServer) -> tuple[httpx.Client, int]:
    """Workspaces acme and globex; John is an editor in acme. The super admin client and
    John's id."""
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    john_id = onboard(server, admin, JOHN, "John Smith", [("acme", "editor")])
    return admin, john_id


def check(
    client: httpx.Client,
    subject: str,
    workspace: str = "acme",
    resource: str = "documents",
    action: str = "write",
) -> dict[str, Any]:
    """``POST /v1/check`` for documents in acme by default; the decision, as JSON."""
    response = post_check(client, subject, workspace, resource, action)
    assert response.headers["Content-Type"] == "application/json"
    return response.json()  # type: ignore[no-any-return]


def evaluation(
    subject: str = JOHN, action: str = "write", workspace: Any = "acme", **extra: Any
) -> dict[str, Any]:
    """An AuthZEN evaluation request for documents in ``workspace``."""
    return {
        "subject": {"type": "user", "id": subject},
        "action": {"name": action},
        "resource": {"type": "documents", "id": "doc-1", "properties": {"workspace": workspace}},
        **extra,
    }


def assert_refusal(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    """A problem document (:func:`assert_problem`) whose detail says what is wrong."""
    problem = assert_problem(response, status, type_)
    assert problem["detail"], problem
    return problem


# -- /v1/check --------------------------------------------------------------------------


def test_check_names_the_subject_and_fails_closed(
    server: LiveServer, acme: tuple[httpx.Client, int]
) -> None:
    admin, john_id = acme
    with server.client() as client:
        for subject in (JOHN, "John@Example.COM", f"user:{john_id}", str(john_id)):
            decision = check(client, subject)
            assert decision["allowed"] is True, subject
            assert decision["reason"] == "allowed by policy"
            assert isinstance(decision["revision"], int) and decision["revision"] > 0

        # What the editor role does not give, or gives elsewhere, is denied.
        assert check(client, JOHN, action="delete") == {
            **decision,
            "allowed": False,
            "reason": "no rule allows",
        }
        assert check(client, JOHN, workspace="globex")["allowed"] is False
        assert check(client, JOHN, action="read", resource="reports")["allowed"] is True
        # Wildcards are patterns of the policy, never of the question.
        for resource, action in (("*", "*"), ("documents", "*"), ("*", "write"), ("doc*", "write")):
            assert check(client, JOHN, resource=resource, action=action)["allowed"] is False
        assert check(client, ADMIN_EMAIL, action="delete")["allowed"] is True
        assert check(client, ADMIN_EMAIL, resource="anything", action="at-all")["allowed"] is True

    # Anything unknown or inactive is denied, with the reason.
    with server.client() as client:
        for subject in (
            "nobody@example.com",
            "user:424242",
            "424242",
            "role:editor",
            "role:superadmin",
            "user:",
            f"user:{john_id}x",
            "*",
            "john",
        ):
            decision = check(client, subject, action="read")
            assert decision == {**decision, "allowed": False, "reason": "unknown subject"}, subject
        for workspace in ("initech", "*", "ACME", "acme ", "acme*"):
            decision = check(client, ADMIN_EMAIL, workspace=workspace, action="read")
            assert decision["allowed"] is False, workspace
            assert decision["reason"] == "unknown workspace"

        # Invited but not yet accepted: no account yet (an invitation's placeholder is
        # not one, and may share its address with another workspace's), so unknown.
        invite(admin, "paula@example.com", [("acme", "owner")], "Paula")
        pending = check(client, "paula@example.com", action="read")
        assert pending["allowed"] is False and pending["reason"] == "unknown subject"

        assert admin.post(f"/users/{john_id}/deactivate").status_code == 200
        for subject in (JOHN, f"user:{john_id}", str(john_id)):
            decision = check(client, subject, action="read")
            assert decision["allowed"] is False and decision["reason"] == "subject is not active"
        assert admin.post(f"/users/{john_id}/reactivate").status_code == 200
        assert check(client, JOHN)["allowed"] is True

        assert admin.delete(f"/users/{john_id}").status_code == 200
        for subject in (JOHN, f"user:{john_id}"):
            assert check(client, subject)["reason"] == "unknown subject"

        assert admin.delete("/workspaces/globex").status_code == 200
        assert check(client, ADMIN_EMAIL, workspace="globex")["reason"] == "unknown workspace"


def test_check_refuses_incomplete_questions(server: LiveServer) -> None:
    complete = {
        "subject": ADMIN_EMAIL,
        "workspace": "acme",
        "resource": "documents",
        "action": "read",
    }
    with server.client() as client:
        problem = assert_refusal(post_decision(client, "/v1/check", {}), 422, "invalid-input")
        assert set(problem["errors"]) == set(complete)
        for field in complete:
            body = {k: v for k, v in complete.items() if k != field}
            problem = assert_refusal(post_decision(client, "/v1/check", body), 422, "invalid-input")
            assert list(problem["errors"]) == [field]
            assert field in problem["detail"]
            for bad in ("", None, 5, ["acme"], "x" * 256):
                response = post_decision(client, "/v1/check", {**complete, field: bad})
                assert list(assert_refusal(response, 422, "invalid-input")["errors"]) == [field]
        malformed = post_decision(
            client,
            "/v1/check",
            content=b'{"subject":',
            headers={"Content-Type": "application/json"},
        )
        assert_refusal(malformed, 400, "invalid-input")
        assert_refusal(
            client.get("/v1/check", headers=decision_headers(server)), 405, "method-not-allowed"
        )

        # Fields it does not know are ignored: other services send context along.
        response = post_decision(client, "/v1/check", {**complete, "context": {"ip": "10.0.0.1"}})
        assert response.status_code == 200, response.text
        assert response.json()["allowed"] is False  # acme does not exist


def test_plain_and_unusual_check_bodies_get_the_same_answers(
    server: LiveServer, acme: tuple[httpx.Client, int]
) -> None:
    """The plain body (the four names, nothing else) with a remembered token is answered
    without the schemas (gateway.web.check_lane); any other shape goes through them. Both
    must give the same answers, and a body that is only nearly plain must still be
    refused by the schema."""
    _, john_id = acme
    questions = [
        (JOHN, "acme", "documents", "write"),  # allowed
        (f"user:{john_id}", "acme", "documents", "read"),  # allowed, by id
        (JOHN, "globex", "documents", "write"),  # another workspace: denied
        (JOHN, "acme", "billing", "approve"),  # not in the role: denied
        ("nobody@example.com", "acme", "documents", "read"),  # unknown subject
        (JOHN, "ghost", "documents", "read"),  # unknown workspace
        ("é" * 255, "ws" * 100, "x" * 255, "y"),  # longest names, non-ASCII
    ]
    with server.client() as client:
        for subject, workspace, resource, action in questions:
            plain = {"subject": subject, "workspace": workspace, "resource": resource}
            plain["action"] = action
            expected = post_decision(client, "/v1/check", plain)
            assert expected.status_code == 200, expected.text
            assert expected.headers["Content-Type"] == "application/json"
            unusual = [
                post_decision(client, "/v1/check", {**plain, "explain": False}),
                post_decision(client, "/v1/check", {**plain, "context": {"ip": "10.0.0.1"}}),
                post_decision(
                    client,
                    "/v1/check",
                    content=json.dumps(plain).encode(),
                    headers={"Content-Type": "application/vnd.example+json"},
                ),
            ]
            for response in unusual:
                assert response.status_code == 200, response.text
                assert response.headers["Content-Type"] == "application/json"
                assert response.json() == expected.json(), (plain, response.text)

        # Nearly plain is not plain: the schema refuses what it refused before.
        complete = {"subject": JOHN, "workspace": "acme", "resource": "documents"}
        complete["action"] = "read"
        for field in complete:
            for bad in ("", None, 5, True, ["acme"], {"id": "x"}, "x" * 256):
                response = post_decision(client, "/v1/check", {**complete, field: bad})
                assert list(assert_refusal(response, 422, "invalid-input")["errors"]) == [field]
        for raw in (b"[]", b'"acme"', b"null", '{"subject": "\u00e9"}'.encode("utf-16")):
            response = post_decision(
                client, "/v1/check", content=raw, headers={"Content-Type": "application/json"}
            )
            assert response.status_code in (400, 422), response.text
            assert response.headers["Content-Type"] == "application/problem+json"
        # Without a token, the plain body is refused like any other.
        with httpx.Client(base_url=server.url) as anonymous:
            refused = anonymous.post("/v1/check", json=complete)
        assert_problem(refused, 401, "unauthorized")


def test_the_revision_increases_with_every_admin_change(
    server: LiveServer, acme: tuple[httpx.Client, int]
) -> None:
    admin, john_id = acme
    client = server.client()
    seen = [check(client, JOHN)["revision"]]

    def changed(response: httpx.Response) -> None:
        assert response.is_success, response.text
        decision = check(client, JOHN, action="read")
        assert decision["revision"] > seen[-1], response.request.url
        if "revision" in response.json():  # the change says when it is in effect
            assert decision["revision"] >= response.json()["revision"]
        seen.append(decision["revision"])

    changed(admin.post("/workspaces", json={"slug": "initech", "name": "Initech"}))
    changed(admin.patch("/workspaces/initech", json={"name": "Initech LLC"}))
    changed(admin.put(f"/users/{john_id}/workspaces/acme/roles", json={"roles": ["viewer"]}))
    changed(admin.post(f"/users/{john_id}/grants", json={"workspace": "globex", "role": "editor"}))
    changed(admin.delete(f"/users/{john_id}/grants/globex/editor"))
    invitation = post_invitation(admin, "mary@example.com", [("acme", "viewer")], "Mary")
    changed(invitation)
    changed(admin.post(f"/invitations/{invitation.json()['id']}/resend"))
    changed(admin.post(f"/invitations/{invitation.json()['id']}/revoke"))
    changed(admin.post(f"/users/{john_id}/deactivate"))
    changed(admin.post(f"/users/{john_id}/reactivate"))
    changed(admin.delete(f"/users/{john_id}"))
    changed(admin.delete("/workspaces/initech"))

    # Reads, refusals and changes that change nothing leave the revision alone.
    admin.get("/users")
    server.login(ADMIN_EMAIL, server.admin_password)
    assert admin.post("/workspaces", json={"slug": "acme", "name": "Again"}).status_code == 409
    assert admin.post(f"/users/{john_id}/deactivate").status_code == 404
    with server.client() as anonymous:
        assert anonymous.get("/healthz").json()["revision"] == seen[-1]
    assert check(client, JOHN)["revision"] == seen[-1]
    client.close()


# -- AuthZEN Authorization API 1.0: access evaluation -----------------------------------


def test_authzen_evaluation(server: LiveServer, acme: tuple[httpx.Client, int]) -> None:
    """Decides by ``resource.properties.workspace``; refuses incomplete requests with
    400 (as AuthZEN asks, where /v1/check says 422); echoes X-Request-ID."""
    _, john_id = acme
    with decision_client(server) as client:

        def evaluate(body: Any) -> dict[str, Any]:
            response = post_decision(client, "/access/v1/evaluation", body)
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"] == "application/json"
            return response.json()  # type: ignore[no-any-return]

        allowed = evaluate(evaluation())
        assert allowed["decision"] is True
        revision = allowed["context"]["revision"]
        assert revision == check(client, JOHN)["revision"]
        assert evaluate(evaluation(f"user:{john_id}"))["decision"] is True
        assert evaluate(evaluation(str(john_id), action="read"))["decision"] is True

        denied = evaluate(evaluation(workspace="globex"))
        assert denied["decision"] is False
        assert denied["context"]["revision"] == revision
        assert denied["context"]["reason_admin"]["en"]
        assert evaluate(evaluation(action="delete"))["decision"] is False
        assert evaluate(evaluation("nobody@example.com"))["decision"] is False
        assert evaluate(evaluation(workspace="initech"))["decision"] is False

        # Fields Ringfence does not use are ignored, wherever they are.
        body = evaluation(context={"time": "2025-01-01T00:00:00Z"}, extension={"a": 1})
        body["subject"]["properties"] = {"department": "Sales"}
        body["subject"]["tenant"] = "x"
        body["action"]["properties"] = {"method": "PUT"}
        body["resource"]["properties"]["owner"] = "someone-else"
        body["resource"]["version"] = 3
        assert evaluate(body)["decision"] is True

        def refused(body: Any) -> dict[str, Any]:
            return assert_refusal(
                post_decision(client, "/access/v1/evaluation", body), 400, "bad-request"
            )

        for part in ("subject", "action", "resource"):
            body = evaluation(ADMIN_EMAIL)
            del body[part]
            assert part in refused(body)["errors"], part
        for part, field in (
            ("subject", "id"),
            ("subject", "type"),
            ("action", "name"),
            ("resource", "type"),
        ):
            body = evaluation(ADMIN_EMAIL)
            del body[part][field]
            assert field in refused(body)["errors"][part], (part, field)
        for workspace in (None, "", 7, ["acme"], {"slug": "acme"}):
            problem = refused(evaluation(ADMIN_EMAIL, workspace=workspace))
            assert "resource.properties.workspace" in problem["detail"]
        body = evaluation(ADMIN_EMAIL)
        del body["resource"]["properties"]
        assert "workspace" in refused(body)["detail"]
        refused({})
        refused([evaluation(ADMIN_EMAIL)])
        refused("subject")
        response = post_decision(
            client,
            "/access/v1/evaluation",
            content=b"{",
            headers={"Content-Type": "application/json"},
        )
        assert "not valid JSON" in assert_refusal(response, 400, "bad-request")["detail"]

        # Request ids: the caller's is echoed (errors included), else one is made up.
        for path, body in (
            ("/access/v1/evaluation", evaluation(ADMIN_EMAIL)),
            ("/access/v1/evaluation", {}),
            ("/v1/check", {"subject": ADMIN_EMAIL}),
        ):
            response = post_decision(client, path, body, headers={"X-Request-ID": "req-42.abc"})
            assert response.headers["X-Request-ID"] == "req-42.abc", path
        generated = post_decision(client, "/access/v1/evaluation", evaluation(ADMIN_EMAIL))
        other = post_decision(client, "/access/v1/evaluation", evaluation(ADMIN_EMAIL))
        assert len(generated.headers["X-Request-ID"]) >= 16
        assert generated.headers["X-Request-ID"] != other.headers["X-Request-ID"]
        long = post_decision(
            client,
            "/access/v1/evaluation",
            evaluation(ADMIN_EMAIL),
            headers={"X-Request-ID": "r" * 500},
        )
        assert long.headers["X-Request-ID"] == "r" * 100  # kept bounded


@pytest.mark.policies_dir(AUTHZEN_POLICIES)
def test_check_with_owner_and_explain(server: LiveServer) -> None:
    """Owner-only permissions through /v1/check (the AuthZEN Todo scenario's roles,
    tests/conformance/authzen/policies/todo.yaml), and the explanation on request."""
    admin = server.admin()
    create_workspaces(admin, "todo")
    morty = onboard(server, admin, "morty@example.com", "Morty", [("todo", "todo_editor")])
    onboard(server, admin, "rick@example.com", "Rick", [("todo", "todo_viewer")])
    base = {"subject": "morty@example.com", "workspace": "todo", "resource": "todo"}
    with server.client() as client:

        def decide(**fields: Any) -> dict[str, Any]:
            response = post_decision(client, "/v1/check", {**base, **fields})
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        for owner in ("morty@example.com", f"user:{morty}", str(morty)):
            assert decide(action="can_update_todo", owner=owner)["allowed"] is True, owner
        for owner in ("rick@example.com", "nobody@example.com", "todo_editor"):
            assert decide(action="can_update_todo", owner=owner)["allowed"] is False, owner
        assert decide(action="can_update_todo")["allowed"] is False
        assert "explanation" not in decide(action="can_read_todos")

        allowed = decide(action="can_update_todo", owner="morty@example.com", explain=True)
        assert allowed["explanation"]["rule"] == [
            "role:todo_editor", "todo", "todo", "can_update_todo", "owner"
        ]  # fmt: skip
        assert allowed["explanation"]["path"][0][:2] == [f"user:{morty}", "role:todo_editor"]
        denied = decide(action="can_delete_todo", owner="rick@example.com", explain=True)
        assert denied["allowed"] is False and denied["explanation"]["rule"] is None
        response = post_decision(client, "/v1/check", {**base, "action": "x", "explain": "maybe"})
        assert_refusal(response, 422, "invalid-input")
