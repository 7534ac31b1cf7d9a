"""The AuthZEN interop scenarios and certification cases, every one over real HTTP.

The people of each scenario are invited and granted their roles through the admin API;
their subject ids (opaque ids, emails, plain names) reach them through the subject
directory. Each test sends every request of its file and compares every answer.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from tests.helpers import (
    ADMIN_EMAIL,
    AUTHZEN_POLICIES,
    LiveServer,
    create_workspaces,
    onboard,
    post_decision,
)

# The scenarios' roles (policies/ here: the product's roles and the scenarios').
pytestmark = pytest.mark.policies_dir(AUTHZEN_POLICIES)

DATA = Path(__file__).parent
TODO_USERS: dict[str, dict[str, Any]] = json.loads((DATA / "todo/users.json").read_text())
CERTIFICATION = json.loads((DATA / "certification/cases.json").read_text())
# The certification fixture's subjects, as Ringfence people and roles.
CERTIFICATION_PEOPLE = {
    "alice": ("alice@certification.test", "certification_user"),
    "bob": ("bob@certification.test", "certification_admin"),
}

# The search scenario's people (search/users.json: alice and bob are the certification
# fixture's too) and records (search/records.json), with their department and owner.
SEARCH_USERS: list[dict[str, str]] = json.loads((DATA / "search/users.json").read_text())
SEARCH_RECORDS: list[dict[str, Any]] = json.loads((DATA / "search/records.json").read_text())
IDP_RECORDS: list[dict[str, str]] = json.loads((DATA / "idp/records.json").read_text())
SEARCH_EMAILS = {
    user["id"]: CERTIFICATION_PEOPLE.get(user["id"], (f"{user['id']}@search.test", ""))[0]
    for user in SEARCH_USERS
}


def resource_directory() -> list[dict[str, Any]]:
    """The resources the scenarios know, as Ringfence's resource directory: the
    certification fixture's two records, and the search scenario's records (owner as
    ``ownerID``, department as a property that refinements turn into a type)."""
    fixture = CERTIFICATION["fixture"]["resources"]
    certification = [
        {"type": "record", "id": record_id, "workspace": "certification", "properties": props}
        for record_id, props in fixture.items()
    ]
    search = [
        {
            "type": "record",
            "id": record["id"],
            "workspace": "search",
            "properties": {"ownerID": record["owner"], "department": record["department"]},
        }
        for record in SEARCH_RECORDS
    ]
    idp = [
        {"type": "record", "id": r["id"], "workspace": "idp", "properties": {"ownerID": r["owner"]}}
        for r in IDP_RECORDS
    ]
    return certification + search + idp


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The project's settings with the scenarios' subject directory (the Todo
    directory as published, the certification and search scenarios' names), their
    resource directory, and the refinements they need (policies/authzen/refinements.yaml
    here)."""
    subjects = {
        **TODO_USERS,
        **{name: email for name, (email, _) in CERTIFICATION_PEOPLE.items()},
        **SEARCH_EMAILS,
    }
    subjects_path = tmp_path / "authzen-subjects.json"
    subjects_path.write_text(json.dumps(subjects))
    resources_path = tmp_path / "authzen-resources.json"
    resources_path.write_text(json.dumps(resource_directory()))
    return dataclasses.replace(
        settings,
        authzen_subjects=subjects_path,
        authzen_resources=resources_path,
        authzen_refinements=settings.policies_dir / "authzen" / "refinements.yaml",
    )


def todo_people(server: LiveServer, workspace: str, role_prefix: str) -> httpx.Client:
    """Each Todo person (by email), with the scenario's roles in ``workspace``."""
    admin = server.admin()
    create_workspaces(admin, workspace)
    people = {entry["email"]: entry for entry in TODO_USERS.values()}
    assert len(people) == 5
    for email, entry in people.items():
        roles = [(workspace, f"{role_prefix}{role}") for role in entry["roles"]]
        onboard(server, admin, email, entry["name"], roles)
    return admin


def answer(server: LiveServer, path: str, body: Any) -> dict[str, Any]:
    response = post_decision(server, path, body)
    assert response.status_code == 200, (path, body, response.text)
    return response.json()  # type: ignore[no-any-return]


def test_todo_scenario(server: LiveServer) -> None:
    todo_people(server, "todo", "todo_")
    decisions = json.loads((DATA / "todo/decisions.json").read_text())
    assert (len(decisions["evaluation"]), len(decisions["evaluations"])) == (40, 3)
    wrong = []
    for case in decisions["evaluation"]:
        got = answer(server, "/pdp/todo/access/v1/evaluation", case["request"])["decision"]
        if got is not case["expected"]:
            wrong.append((case["request"], case["expected"], got))
    for case in decisions["evaluations"]:
        got = answer(server, "/pdp/todo/access/v1/evaluations", case["request"])
        got_decisions = [{"decision": item["decision"]} for item in got["evaluations"]]
        if got_decisions != case["expected"]:
            wrong.append((case["request"], case["expected"], got_decisions))
    assert wrong == []


def test_api_gateway_scenario(server: LiveServer) -> None:
    todo_people(server, "api-gateway", "api_gateway_")
    decisions = json.loads((DATA / "api-gateway/decisions.json").read_text())
    assert len(decisions["evaluation"]) == 25
    wrong = []
    for case in decisions["evaluation"]:
        path = "/pdp/api-gateway/access/v1/evaluation"
        got = answer(server, path, case["request"])["decision"]
        if got is not case["expected"]:
            wrong.append((case["request"], case["expected"], got))
    assert wrong == []


# -- certification ----------------------------------------------------------------------

SCOPE = "/pdp/certification"


def _same(expected: dict[str, Any], result: dict[str, Any]) -> bool:
    return all(result.get(key) == value for key, value in expected.items())


def _check_response(case: dict[str, Any], response: httpx.Response) -> list[str]:
    """What is wrong with ``response`` for ``case`` (nothing: an empty list)."""
    if response.status_code != case["expect_status"]:
        return [f"status {response.status_code}, expected {case['expect_status']}"]
    if response.status_code != 200:
        return []
    body = response.json()
    problems: list[str] = []
    if "expect_decision" in case and body.get("decision") is not case["expect_decision"]:
        problems.append(f"decision {body.get('decision')}, expected {case['expect_decision']}")
    if "expect_evaluations" in case:
        got = [item.get("decision") for item in body.get("evaluations", [])]
        expected = case["expect_evaluations"]
        if len(got) != len(expected) or not all(
            isinstance(g, bool) and (e is None or g is e)
            for g, e in zip(got, expected, strict=False)
        ):
            problems.append(f"evaluations {got}, expected {expected}")
    if case.get("expect_results_include"):
        results = body.get("results", [])
        missing = [
            item
            for item in case["expect_results_include"]
            if not any(_same(item, result) for result in results)
        ]
        if missing:
            problems.append(f"results {results} lack {missing}")
    if "expect_results_exact" in case and body.get("results") != case["expect_results_exact"]:
        problems.append(f"results {body.get('results')}, expected {case['expect_results_exact']}")
    if "expect_keys" in case:
        problems += [f"no {key}" for key in case["expect_keys"] if key not in body]
    return problems


def run_certification_case(
    server: LiveServer, case: dict[str, Any], previous: dict[str, Any]
) -> list[str]:
    """Send ``case`` as its ``kind`` says; what went wrong. ``previous`` carries the last
    search request and answer, for the case that follows a page token."""
    path = SCOPE + case["endpoint"]
    kind = case.get("kind", "request")
    if kind == "metadata":
        with server.client() as anonymous:
            return _check_response(case, anonymous.get(case["endpoint"]))
    if kind == "raw":
        headers = {"Content-Type": case["content_type"]}
        response = post_decision(server, path, content=case["raw_body"].encode(), headers=headers)
        return _check_response(case, response)
    if kind == "header_echo":
        response = post_decision(server, path, case["request"], headers=case["headers"])
        problems = _check_response(case, response)
        for name, value in case["headers"].items():
            if response.headers.get(name) != value:
                problems.append(f"{name} {response.headers.get(name)!r}, expected {value!r}")
        return problems
    if kind == "repeat":
        return [
            problem
            for _ in range(case["repeat"])
            for problem in _check_response(case, post_decision(server, path, case["request"]))
        ]
    request = case["request"]
    if request is None:  # page token case: the previous search, next page
        token = previous["answer"]["page"]["next_token"]
        if not token:
            return []
        request = {**previous["request"], "page": {**previous["request"]["page"], "token": token}}
    response = post_decision(server, path, request)
    problems = _check_response(case, response)
    if "search" in path and response.status_code == 200:
        page = response.json().get("page", {})
        if not isinstance(page.get("next_token"), str):
            problems.append(f"page {page} has no next_token")
        limit = request.get("page", {}).get("limit")
        if limit is not None and len(response.json()["results"]) > limit:
            problems.append(f"more than {limit} results")
        if case["request"] is None and response.json()["results"] == previous["answer"]["results"]:
            problems.append("the next page repeats the first")
        previous.update(request=request, answer=response.json())
    return problems


def test_certification_cases(server: LiveServer) -> None:
    admin = server.admin()
    create_workspaces(admin, "certification")
    for name, (email, role) in CERTIFICATION_PEOPLE.items():
        onboard(server, admin, email, name.title(), [("certification", role)])
    cases = CERTIFICATION["cases"]
    assert len(cases) == 56

    failures: dict[tuple[str, str], list[str]] = {}
    previous: dict[str, Any] = {}
    for case in cases:
        problems = run_certification_case(server, case, previous)
        if problems:
            failures[(case["id"], case.get("label", case["title"]))] = problems
    assert failures == {}


# -- search ------------------------------------------------------------------------------


def search_roles(user: dict[str, str]) -> list[tuple[str, str]]:
    """The search scenario's person as grants in the workspace ``search``
    (policies/search.yaml here): managers manage their department, others are its
    members."""
    manager = user["role"] == "manager"
    department = user["department"].lower()
    roles = [
        "search_manager" if manager else "search_employee",
        f"search_{department}_{'manager' if manager else 'member'}",
    ]
    return [("search", role) for role in roles]


def every_page(server: LiveServer, path: str, request: dict[str, Any]) -> list[Any]:
    """The results of a search, following ``next_token`` through pages of 7."""
    request, results = {**request, "page": {"limit": 7}}, []
    while True:
        body = answer(server, path, request)
        # The gateway's own super admin may do anything anywhere; not a scenario person.
        results += [item for item in body["results"] if item.get("id") != ADMIN_EMAIL]
        if not body["page"]["next_token"]:
            return results
        request = {**request, "page": {"limit": 7, "token": body["page"]["next_token"]}}


def _as_set(results: list[dict[str, Any]], keys: tuple[str, ...]) -> set[tuple[Any, ...]]:
    return {tuple(result.get(key) for key in keys) for result in results}


@pytest.mark.parametrize(
    ("kind", "keys"),
    [("subject", ("type", "id")), ("resource", ("type", "id")), ("action", ("name",))],
)
def test_search_scenario(server: LiveServer, kind: str, keys: tuple[str, ...]) -> None:
    """Every search of the scenario (198), over HTTP, all pages: the same results (order
    is not part of AuthZEN's answer). The records' owners and departments come from the
    resource directory; the requests name records by id only."""
    admin = server.admin()
    create_workspaces(admin, "search")
    for user in SEARCH_USERS:
        onboard(server, admin, SEARCH_EMAILS[user["id"]], user["id"].title(), search_roles(user))
    cases = json.loads((DATA / f"search/{kind}-results.json").read_text())["evaluation"]
    wrong = []
    for case in cases:
        results = every_page(server, f"/pdp/search/access/v1/search/{kind}", case["request"])
        expected = case["expected"]["results"]
        if len(results) != len(expected) or _as_set(results, keys) != _as_set(expected, keys):
            wrong.append((case["request"], expected, results))
    assert wrong == []


def test_idp_scenario(server: LiveServer) -> None:
    """The identity-provider scenario's resource searches: each person deletes exactly
    the records the resource directory says they own."""
    admin = server.admin()
    create_workspaces(admin, "idp")
    for name in sorted({record["owner"] for record in IDP_RECORDS}):
        onboard(server, admin, SEARCH_EMAILS[name], name.title(), [("idp", "idp_user")])
    cases = json.loads((DATA / "idp/results.json").read_text())["search"]
    assert len(cases) == 6
    wrong = []
    for case in cases:
        results = every_page(server, "/pdp/idp/access/v1/search/resource", case["request"])
        expected = case["expected"]["results"]
        if _as_set(results, ("type", "id")) != _as_set(expected, ("type", "id")):
            wrong.append((case["request"], expected, results))
    assert wrong == []
