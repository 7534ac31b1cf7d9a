"""The AuthZEN API through HTTP: batches, searches with paging, discovery, the
workspace-scoped endpoints, request ids and refusals (the scenarios' decisions are in
tests/conformance/authzen)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    create_workspaces,
    onboard,
    post_decision,
)

PEOPLE = {
    "ann@example.com": [("acme", "viewer")],
    "ben@example.com": [("acme", "editor")],
    "cat@example.com": [("acme", "admin"), ("globex", "viewer")],
    "dan@example.com": [("globex", "editor")],
}
SEARCHES = ("subject", "resource", "action")


@pytest.fixture
def people(server: LiveServer) -> httpx.Client:
    admin = server.admin()
    create_workspaces(admin, "acme", "globex")
    for email, roles in PEOPLE.items():
        onboard(server, admin, email, email.split("@")[0].title(), roles)
    return admin


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()  # type: ignore[no-any-return]


def documents(workspace: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"type": "documents", "id": "doc-1"}
    if workspace:
        resource["properties"] = {"workspace": workspace}
    return resource


def user(email: str) -> dict[str, str]:
    return {"type": "user", "id": email}


def test_batches_scoped_and_unscoped(server: LiveServer, people: httpx.Client) -> None:
    body = {
        "subject": user("ben@example.com"),
        "action": {"name": "write"},
        "resource": documents(),
        "evaluations": [
            {},
            {"action": {"name": "delete"}},
            {"subject": user("cat@example.com"), "action": {"name": "delete"}},
            {"subject": user("dan@example.com")},
            {"resource": {"type": "reports", "id": "r"}, "action": {"name": "read"}},
            {"subject": "not an object"},
        ],
    }
    scoped = ok(post_decision(server, "/pdp/acme/access/v1/evaluations", body))
    assert [e["decision"] for e in scoped["evaluations"]] == [True, False, True, False, True, False]
    assert scoped["evaluations"][5]["context"]["error"]["status"] == 400
    in_globex = ok(post_decision(server, "/pdp/globex/access/v1/evaluations", body))
    assert [e["decision"] for e in in_globex["evaluations"]] == [False] * 3 + [True] + [False] * 2

    # Unscoped, each resource names its workspace; the semantics stop the loop.
    body["resource"] = documents("acme")
    body["evaluations"] = [
        {},
        {"resource": documents("globex")},
        {"subject": user("dan@example.com"), "resource": documents("globex")},
    ]
    answers = ok(post_decision(server, "/access/v1/evaluations", body))["evaluations"]
    assert [e["decision"] for e in answers] == [True, False, True]
    body["options"] = {"evaluations_semantic": "deny_on_first_deny"}
    answers = ok(post_decision(server, "/access/v1/evaluations", body))["evaluations"]
    assert [e["decision"] for e in answers] == [True, False]
    body["options"] = {"evaluations_semantic": "permit_on_first_permit"}
    answers = ok(post_decision(server, "/access/v1/evaluations", body))["evaluations"]
    assert [e["decision"] for e in answers] == [True]

    # A scoped single evaluation needs no workspace property; a different one is denied.
    single = {"subject": user("ann@example.com"), "action": {"name": "read"}}
    assert ok(post_decision(server, "/pdp/acme/access/v1/evaluation", {
        **single, "resource": documents()}))["decision"] is True  # fmt: skip
    assert ok(post_decision(server, "/pdp/acme/access/v1/evaluation", {
        **single, "resource": documents("globex")}))["decision"] is False  # fmt: skip
    assert ok(post_decision(server, "/pdp/initech/access/v1/evaluation", {
        **single, "resource": documents()}))["decision"] is False  # fmt: skip


def test_refusals(server: LiveServer, people: httpx.Client) -> None:
    valid = {"subject": user(ADMIN_EMAIL), "action": {"name": "read"}, "resource": documents()}
    paths = [
        f"{scope}/access/v1/{endpoint}"
        for scope in ("", "/pdp/acme")
        for endpoint in ("evaluation", "evaluations", *(f"search/{s}" for s in SEARCHES))
    ]
    for path in paths:
        for content, content_type in (
            (b'{"subject": {', "application/json"),
            (b"", "application/json"),
            (b"[]", "application/json"),
            (b'"x"', "application/json"),
            (b"{}", "text/plain"),
        ):
            response = post_decision(
                server,
                path,
                content=content,
                headers={"Content-Type": content_type, "X-Request-ID": "req-refused"},
            )
            problem = assert_problem(response, 400, "bad-request")
            assert problem["detail"], (path, content)
            assert response.headers["X-Request-ID"] == "req-refused"
        response = post_decision(server, path, {}, headers={"X-Request-ID": "req-empty"})
        assert "errors" in assert_problem(response, 400, "bad-request"), path
        assert response.headers["X-Request-ID"] == "req-empty"

    # Oversized batches: 413, with the maximum.
    too_many = {**valid, "evaluations": [{}] * (server.settings.authzen_max_evaluations + 1)}
    problem = assert_problem(
        post_decision(server, "/pdp/acme/access/v1/evaluations", too_many),
        413,
        "payload-too-large",
    )
    assert problem["max_evaluations"] == server.settings.authzen_max_evaluations
    as_many = {**valid, "evaluations": [{}] * server.settings.authzen_max_evaluations}
    answers = ok(post_decision(server, "/pdp/acme/access/v1/evaluations", as_many))
    assert len(answers["evaluations"]) == server.settings.authzen_max_evaluations
    assert all(answer["decision"] is True for answer in answers["evaluations"])


def test_subject_search_pages_through_everyone(server: LiveServer, people: httpx.Client) -> None:
    body: dict[str, Any] = {
        "subject": {"type": "user"},
        "action": {"name": "read"},
        "resource": documents(),
        "page": {"limit": 2},
    }
    found: list[str] = []
    pages = 0
    while True:
        answer = ok(post_decision(server, "/pdp/acme/access/v1/search/subject", body))
        pages += 1
        found += [result["id"] for result in answer["results"]]
        assert all(result["type"] == "user" for result in answer["results"])
        token = answer["page"]["next_token"]
        if not token:
            break
        body["page"] = {"limit": 2, "token": token}
    # The super admin holds superadmin everywhere; deactivated or other workspaces' not.
    assert sorted(found) == sorted([ADMIN_EMAIL, *(e for e in PEOPLE if e != "dan@example.com")])
    assert pages == 2

    # A token cannot be altered, nor used for another question.
    token = token_of(server, body)
    # Another last character (the signature's; "A" would be no change one time in 64).
    forged = token[:-1] + ("B" if token.endswith("A") else "A")
    altered = {**body, "page": {"limit": 2, "token": forged}}
    response = post_decision(server, "/pdp/acme/access/v1/search/subject", altered)
    assert "page" in assert_problem(response, 400, "bad-request")["errors"]
    other = {**body, "action": {"name": "write"}, "page": {"token": token_of(server, body)}}
    assert_problem(
        post_decision(server, "/pdp/acme/access/v1/search/subject", other), 400, "bad-request"
    )


def token_of(server: LiveServer, body: dict[str, Any]) -> str:
    first = {**body, "page": {"limit": 2}}
    answer = ok(post_decision(server, "/pdp/acme/access/v1/search/subject", first))
    return str(answer["page"]["next_token"])


def test_action_and_resource_search(server: LiveServer, people: httpx.Client) -> None:
    body = {"subject": user("ben@example.com"), "resource": documents()}
    answer = ok(post_decision(server, "/pdp/acme/access/v1/search/action", body))
    assert [r["name"] for r in answer["results"]] == ["read", "write"]
    assert answer["page"] == {"next_token": "", "count": 2, "total": 2}
    assert ok(post_decision(server, "/pdp/globex/access/v1/search/action", body))["results"] == []

    body = {"subject": user("cat@example.com"), "action": {"name": "read"}, "resource": {
        "type": "documents"}}  # fmt: skip
    answer = ok(post_decision(server, "/access/v1/search/resource", body))
    assert answer["results"] == [
        {"type": "documents", "id": "*", "properties": {"workspace": "acme"}},
        {"type": "documents", "id": "*", "properties": {"workspace": "globex"}},
    ]
    scoped = ok(post_decision(server, "/pdp/globex/access/v1/search/resource", body))
    assert scoped["results"] == answer["results"][1:]
    body["action"] = {"name": "delete"}
    answer = ok(post_decision(server, "/access/v1/search/resource", body))
    assert [r["properties"]["workspace"] for r in answer["results"]] == ["acme"]


def test_discovery(server: LiveServer) -> None:
    base = server.settings.public_url
    with server.client() as anonymous:
        root = ok(anonymous.get("/.well-known/authzen-configuration"))
        scoped = ok(anonymous.get("/.well-known/authzen-configuration/pdp/acme"))
        assert anonymous.post("/.well-known/authzen-configuration").status_code == 405
        document = anonymous.get("/openapi.json").json()
    assert root == {
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
        "search_subject_endpoint": f"{base}/access/v1/search/subject",
        "search_resource_endpoint": f"{base}/access/v1/search/resource",
        "search_action_endpoint": f"{base}/access/v1/search/action",
    }
    assert scoped == {
        key: value.replace(base, f"{base}/pdp/acme", 1) for key, value in root.items()
    }
    for path in (*root.values(), *scoped.values()):
        if path not in (base, f"{base}/pdp/acme"):
            route = path.removeprefix(base).replace("/pdp/acme/", "/pdp/{workspace}/")
            assert route in document["paths"], route
