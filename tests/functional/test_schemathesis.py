"""Schemathesis against the live server's OpenAPI document, with the real tokens of two
workspaces' admins: whatever schemathesis generates for every operation, no answer is a
server error and every documented response matches its schema.

Operations are walked by hand (schemathesis' own pytest collection does not run under
pytest 9 yet); each gets a few generated cases, as each of the two admins.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.helpers import PASSWORD, LiveServer, create_workspaces, invite, invite_and_accept

CHECKS = [not_a_server_error, response_schema_conformance]
EXAMPLES_PER_OPERATION = 6


# Signing out would only end the admins' own sessions for the rest of the run.
SKIPPED = {("POST", "/auth/logout")}


class Admins:
    """acme's and globex's admins, with some data in each workspace; signed in again
    whenever a generated call ended their session (say, a password change)."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        root = server.admin()
        create_workspaces(root, "acme", "globex")
        self.tokens: dict[str, str] = {}
        self.suspect: set[str] = set()  # answered 401: check the token before its next use
        for slug in ("acme", "globex"):
            invite_and_accept(server, root, self.email(slug), f"{slug} boss", [(slug, "admin")])
            invite(root, f"pending@{slug}.example", [(slug, "viewer")], "Pending")

    @staticmethod
    def email(slug: str) -> str:
        return f"boss@{slug}.example"

    def token(self, slug: str) -> str:
        token = self.tokens.get(slug)
        if token is not None and slug not in self.suspect:
            return token
        self.suspect.discard(slug)
        if token is not None:
            with self.server.client(token) as client:
                if client.get("/workspaces").status_code == 200:
                    return token
        with self.server.client() as anonymous:
            response = anonymous.post(
                "/auth/login", json={"email": self.email(slug), "password": PASSWORD}
            )
        assert response.status_code == 200, response.text
        self.tokens[slug] = response.json()["access_token"]
        return self.tokens[slug]


def test_generated_input_causes_no_server_error_and_answers_match_the_schema(
    server: LiveServer,
) -> None:
    admins = Admins(server)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            for slug in ("acme", "globex"):
                response = case.call_and_validate(
                    base_url=server.url,
                    headers={"Authorization": f"Bearer {admins.token(slug)}"},
                    checks=CHECKS,
                )
                statuses[response.status_code] += 1
                if response.status_code == 401:
                    admins.suspect.add(slug)

        try:
            run()
        except Exception as exc:  # collect them all, then report
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    # The run reached the handlers: successes and refusals of every kind.
    assert statuses[200] + statuses[201] > 20, statuses
    assert {401, 403, 404, 422} & set(statuses), statuses
