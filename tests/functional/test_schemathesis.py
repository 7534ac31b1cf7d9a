"""Schemathesis 4 against the live server's OpenAPI document, with every check it has
(``--checks all``): no answer is a server error, every answer (errors included, as
``application/problem+json``) matches what the document says, 405s carry ``Allow``,
operations that declare bearer auth enforce it and public ones declare none, and an
object one workspace's admin can read is not handed to the other's.

Three runs, each through schemathesis' own engine (examples, coverage, fuzzing and
stateful phases, as ``schemathesis run`` does):

- as the admins of two workspaces, acme and globex, signing in through ``/auth/login``
  (a Web Fuzzing Commons auth document naming them ``peers``: that is what makes
  ``object_level_authorization`` replay one admin's reads as the other);
- with no token at all;
- with a service's token (``decisions:check``, for the decision endpoints).

What is not checked is in ``EXCLUSIONS`` below, each with its reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
import schemathesis.engine
from schemathesis.engine import events

from gateway.config import Settings
from tests.helpers import (
    PASSWORD,
    LiveServer,
    client_token,
    create_client,
    create_workspaces,
    invite,
    invite_and_accept,
)

WORKSPACES = ("acme", "globex")
# Few generated cases per operation and phase, from a fixed seed, the same every run:
# the whole file has to stay a few minutes of the suite on two shared cores. The
# coverage phase adds its own deterministic boundary cases (every documented limit,
# every missing required field, undeclared methods) on top of these.
EXAMPLES_PER_OPERATION = 5
SEED = 20_260_101
STATEFUL_STEPS = 8

# Checks a few operations cannot pass by their nature, with the reason. Everything else
# runs every check on every operation.
#
# positive_data_acceptance: "a request the schema allows is accepted". These operations
# take a secret the generator cannot know, so a schema-valid one is a refusal: an
# invitation or password reset token (emailed), a refresh token or a single sign-on code
# (issued once), the current password, a page token or cursor (opaque, signed by the
# server). Or a value no schema can rule out: a new password among the 30,000 most
# common (zxcvbn's list), a deadline or a grant's end that is not in the future. They
# answer the documented problem+json all the same (the other checks still run on them).
SECRET_INPUT = {
    "POST /auth/refresh": ["401"],  # refresh token: unknown or used
    "POST /auth/password": ["422"],  # current password wrong, new one too common
    "POST /auth/password-reset/confirm": ["410", "422"],  # reset token; common password
    "POST /auth/sso/exchange": ["400", "404"],  # one-time code; 404 with SSO not set up
    "POST /invitations/accept": ["410", "422"],  # invitation token; common password
    "GET /audit": ["422"],  # cursor
    # A date in the future: the generator draws "now" too, which is past on arrival.
    "POST /reviews/campaigns": ["422"],  # deadline
    "POST /users/{user_id}/grants": ["422"],  # expires_at
    # page.token
    **{
        f"POST {scope}/access/v1/search/{kind}": ["400"]
        for scope in ("", "/pdp/{workspace}")
        for kind in ("subject", "resource", "action")
    },
}
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
EXCLUSIONS: list[dict[str, Any]] = [
    {
        # An operation by its name ("METHOD /path"); a method and a path given apart
        # would select every operation with either.
        "include-name": label,
        "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES + statuses}},
    }
    for label, statuses in SECRET_INPUT.items()
] + [
    # Signing out would end the session of the admin the run is signed in as, again and
    # again; its own test is in test_sessions.py.
    {"include-name": "POST /auth/logout", "enabled": False},
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every generated sign-in fails (the generator does not know a password), and from
    loopback: with the usual limits, the admins the run signs in as would be locked out
    after the first few."""
    return replace(
        settings,
        login_failures_per_account="100000 per 15 minutes",
        login_failures_per_client="100000 per 15 minutes",
    )


@schemathesis.check
def json_header_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
    """Headers documented as JSON content (``X-Pagination``) parse and match their schema:
    schemathesis itself validates a header's ``schema`` only, not its ``content``."""
    definition = case.operation.responses.find_by_status_code(response.status_code)
    if definition is None:
        return None
    components = case.operation.schema.raw_schema.get("components", {})
    for name, header in definition.headers.items():
        media = header.definition.get("content", {}).get("application/json")
        values = response.headers.get(name.lower())
        if media is None or values is None:
            continue
        validator = jsonschema_rs.validator_for({**media["schema"], "components": components})
        validator.validate(json.loads(values[0]))
    return None


@dataclass
class Run:
    """What one schemathesis run saw."""

    failures: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (operation, status)
    checks: Counter[str] = field(default_factory=Counter)  # check name -> times run

    def status_codes(self) -> set[int]:
        return {status for _, status in self.statuses}

    def answered(self, status: int) -> set[str]:
        """The operations that gave ``status`` at least once."""
        return {operation for operation, code in self.statuses if code == status}


def run_schemathesis(server: LiveServer, project: dict[str, Any]) -> Run:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,  # two shared cores; and the peers' reads stay in order
            "base-url": server.url,
            "cache": {"enabled": False},  # nothing written to the working tree
            "generation": {
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
            },
            "phases": {"stateful": {"max-steps": STATEFUL_STEPS}},
            "operations": EXCLUSIONS,
            **project,
        }
    )
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    seen = Run()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, interaction in recorder.interactions.items():
                if interaction.response is not None:
                    label = recorder.cases[case_id].value.operation.label
                    seen.statuses[label, interaction.response.status_code] += 1
            for nodes in recorder.checks.values():
                for node in nodes:
                    seen.checks[node.name] += 1
                    if node.failure_info is not None:
                        failure = node.failure_info.failure
                        seen.failures.append(
                            f"[{event.phase.value}] {node.name}: {failure.operation}: "
                            f"{failure.title}\n{failure.message}\n{node.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            seen.failures.append(f"error in {event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            seen.failures.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            seen.failures.extend(f"{f.operation}: {f.title}\n{f.message}" for f in event.failures)
    return seen


def admins_auth_document(path: Path) -> Path:
    """The Web Fuzzing Commons auth document of acme's and globex's admins."""
    login = {
        "endpoint": "/auth/login",
        "verb": "POST",
        "contentType": "application/json",
        "token": {
            "extractFrom": "body",
            "extractSelector": "/access_token",
            "sendIn": "header",
            "sendName": "Authorization",
            "sendTemplate": "Bearer {token}",
        },
    }
    users = [
        {
            "name": slug,
            "loginEndpointAuth": {
                **login,
                "payloadUserPwd": {
                    "username": admin_email(slug),
                    "usernameField": "email",
                    "password": PASSWORD,
                    "passwordField": "password",
                },
            },
        }
        for slug in WORKSPACES
    ]
    path.write_text(json.dumps({"auth": users}))
    return path


def admin_email(slug: str) -> str:
    return f"boss@{slug}.example"


def set_up(server: LiveServer) -> None:
    """acme and globex, each with its admin, a pending invitation and a campaign."""
    root = server.admin()
    create_workspaces(root, *WORKSPACES)
    for slug in WORKSPACES:
        invite_and_accept(server, root, admin_email(slug), f"{slug} boss", [(slug, "admin")])
        invite(root, f"pending@{slug}.example", [(slug, "viewer")], "Pending")


def report(run: Run) -> str:
    return f"{len(run.failures)} failures:\n\n" + "\n\n".join(run.failures)


def test_the_api_keeps_its_openapi_contract_for_every_check(
    server: LiveServer, tmp_path: Path
) -> None:
    set_up(server)
    wfc = admins_auth_document(tmp_path / "admins.json")

    admins = run_schemathesis(
        server,
        {
            "auth": {
                # Every request as acme's admin (schemathesis would otherwise move an
                # operation to the next identity after a 403, which generated data for
                # another workspace gets); globex's admin replays acme's reads.
                "wfc": {"path": str(wfc), "user": "acme", "peers": list(WORKSPACES)},
                "auto-signup": False,
            }
        },
    )
    assert not admins.failures, report(admins)
    # The run got past sign-in into the handlers: successes and refusals of every kind,
    # and the object-level replay of one admin's reads as the other did run.
    assert len(admins.answered(200) | admins.answered(201)) > 20, admins.statuses
    assert {401, 403, 404, 405, 422} <= admins.status_codes(), admins.statuses
    assert admins.checks["object_level_authorization"] > 20, admins.checks
    assert admins.checks["ignored_auth"] > 20, admins.checks

    anonymous = run_schemathesis(server, {"auth": {"auto-signup": False}})
    assert not anonymous.failures, report(anonymous)
    assert "POST /auth/password-reset" in anonymous.answered(202)  # public: no token
    assert "GET /workspaces" in anonymous.answered(401)

    client_id, secret = create_client(server.settings, "decisions:check", name="schemathesis")
    token = client_token(server, client_id, secret)
    service = run_schemathesis(
        server, {"auth": {"openapi": {"bearerAuth": {"bearer": token}}, "auto-signup": False}}
    )
    assert not service.failures, report(service)
    assert {
        "POST /v1/check",
        "POST /access/v1/evaluation",
        "POST /pdp/{workspace}/access/v1/evaluations",
        "POST /access/v1/search/action",
    } <= service.answered(200), service.statuses
