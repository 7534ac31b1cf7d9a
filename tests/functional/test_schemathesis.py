"""Schemathesis 4 against the live server's OpenAPI document, with every check it has
(``--checks all``): no answer is a server error, every answer (errors included, as
``application/problem+json``) matches what the document says, 405s carry ``Allow``,
operations that declare bearer auth enforce it and public ones declare none, and an
object one workspace's admin can read is not handed to the other's.

Three runs (three tests), each through schemathesis' own engine (examples, coverage, fuzzing and
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

import httpx
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
PHASES = ("examples", "coverage", "fuzzing", "stateful")

# The admins' run explores every operation through every phase; in one piece it was the
# longest test of the suite (over 200 s under the suite's load), which the suite's
# workers could not share. So its unit phases run in three groups of operations, by their
# OpenAPI tags (about 30 operations each), and the stateful phase, whose sequences cross
# groups (create a workspace, then read its custom roles), runs on them all at once.
# test_every_operation_is_in_one_group keeps a new tag from falling outside them.
ADMIN_GROUPS = {
    "people": ("users", "invitations", "reviews", "reports", "user_mfa", "audit"),
    "workspaces": (
        *("workspaces", "custom_roles", "roles", "policy", "settings", "workspace_mfa"),
        *("clients", "directory", "sso_connections", "sso_domains"),
    ),
    "sign-in-decisions-streams": ("auth", "mfa", "authzen", "decisions", "event_streams"),
}
# What a service token (decisions:check) may call; every other operation refuses it.
DECISION_TAGS = ("authzen", "decisions")
# Where a run only shows that an operation refuses its caller (a service at an admin
# operation, anyone without a token at one that needs it), the refusal comes before the
# input is read: a few generated requests show it (answer, status, problem+json); the
# coverage phase's hundreds of boundary cases would only show the same refusal again.
REFUSED_ONLY = {
    "phases": {"coverage": {"enabled": False}},
    "generation": {"max-examples": 2},
}

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
    "GET /policy/grants": ["422"],  # cursor
    # A code from the person's authenticator app, a recovery code, the password step's ticket.
    **{f"POST /auth/mfa/{p}": ["422"] for p in ("totp/confirm", "totp/remove", "recovery-codes")},
    # A custom role's permissions come from the catalogue in policies/, which the schema
    # cannot list (it is the installation's).
    "POST /workspaces/{slug}/custom-roles": ["422"],
    "PUT /workspaces/{slug}/custom-roles/{name}": ["422"],
    # An event stream's destination must resolve to a public address, which no
    # generated host does offline (and a webhook's URL must be https).
    "POST /event-streams": ["422"],
    "PATCH /event-streams/{stream_id}": ["422"],
    # A sender address (mail_from): a From header holding one email address, plain or
    # with a display name, which no JSON schema describes.
    "PATCH /settings/email": ["422"],
    # The same settings, tried before they are saved (and a new server needs the password
    # while one is stored, which no generator can know).
    "POST /settings/email/test": ["422"],
    # A date in the future: the generator draws "now" too, which is past on arrival.
    "POST /reviews/campaigns": ["422"],  # deadline
    "POST /users/{user_id}/grants": ["422"],  # expires_at
    # A role the workspace defines (its custom roles too): no schema can list them.
    "POST /directory-connections": ["422"],
    "PUT /directory-connections/{connection_id}/roles": ["422"],
    # A single sign-on connection's issuer must be an https URL on a public address
    # (it resolves, offline, to none), and a provisioning role one the workspace defines.
    "POST /sso-connections": ["422"],
    "PATCH /sso-connections/{connection_id}": ["422"],
    # Verifying a domain asks DNS for its TXT record, which no generated claim holds.
    "POST /sso-domains/{domain_id}/verify": ["409", "503"],
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
    after the first few. A test email with generated settings tries the server they name,
    and anything that is not an SMTP server answers after the test's connect time: a short
    one keeps those cases from adding seconds each."""
    return replace(
        settings,
        login_failures_per_account="100000 per 15 minutes",
        login_failures_per_client="100000 per 15 minutes",
        smtp_test_connect_seconds=0.2,
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


def run_schemathesis(
    server: LiveServer,
    project: dict[str, Any],
    *,
    tags: tuple[str, ...] | None = None,
    phases: tuple[str, ...] = PHASES,
    operations: list[dict[str, Any]] | None = None,
) -> Run:
    """One run of schemathesis' engine over the operations tagged ``tags`` (all of them
    when None), in ``phases``, with ``operations``' settings on top of ``EXCLUSIONS``."""
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
            "phases": {
                **{phase: {"enabled": phase in phases} for phase in PHASES},
                "stateful": {"enabled": "stateful" in phases, "max-steps": STATEFUL_STEPS},
            },
            "operations": [
                *EXCLUSIONS,
                *(operations or []),
                # Only the operations tagged ``tags``. (Not ``schema.include(tag=...)``:
                # with an operation disabled in EXCLUSIONS it selected every operation.)
                *([{"exclude-tag": list(tags), "enabled": False}] if tags else []),
            ],
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


def openapi_document(server: LiveServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def operations_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every operation of ``document`` that the runs call, by its name ("METHOD /path")."""
    disabled = {entry["include-name"] for entry in EXCLUSIONS if entry.get("enabled") is False}
    return {
        name: operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "put", "post", "patch", "delete")
        and (name := f"{method.upper()} {path}") not in disabled
    }


def test_every_operation_is_in_one_group(server: LiveServer) -> None:
    """The admins' runs cover every operation: each one's tags are in exactly one group."""
    groups = {tag: name for name, tags in ADMIN_GROUPS.items() for tag in tags}
    assert sum(map(len, ADMIN_GROUPS.values())) == len(groups)  # no tag in two groups
    for name, operation in operations_of(openapi_document(server)).items():
        assert len({groups.get(tag) for tag in operation.get("tags", [])} - {None}) == 1, name


@pytest.mark.parametrize("group", [*ADMIN_GROUPS, "stateful"])
def test_the_api_keeps_its_contract_for_two_workspaces_admins(
    server: LiveServer, tmp_path: Path, group: str
) -> None:
    set_up(server)
    wfc = admins_auth_document(tmp_path / "admins.json")
    stateful = group == "stateful"
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
        tags=None if stateful else ADMIN_GROUPS[group],
        phases=("stateful",) if stateful else ("examples", "coverage", "fuzzing"),
        # The decision endpoints take a service's token, not a person's session (wrong
        # audience): for an admin they only refuse. The service's run explores them (and
        # the anonymous run AuthZEN's public discovery documents).
        operations=[{"include-tag": list(DECISION_TAGS), **REFUSED_ONLY}],
    )
    assert not admins.failures, report(admins)
    if stateful:
        # Sequences of calls ran, and got answers.
        assert len(admins.answered(200)) >= 3, admins.statuses
        assert admins.checks["use_after_free"] > 20, admins.checks
        return
    # Every operation of the group was called, the run got past sign-in into the
    # handlers (successes and refusals of every kind), and the object-level replay of
    # one admin's reads as the other did run.
    document = operations_of(openapi_document(server))
    group_operations = {
        name
        for name, operation in document.items()
        if set(operation.get("tags", [])) & set(ADMIN_GROUPS[group])
    }
    # (Checks such as use_after_free call operations of other groups too.)
    assert group_operations <= {operation for operation, _ in admins.statuses}
    for name in group_operations:
        operation = document[name]
        if set(operation.get("tags", [])) & set(DECISION_TAGS) and operation.get("security") != []:
            statuses = {status for operation, status in admins.statuses if operation == name}
            assert 401 in statuses and statuses <= {401, 404}, (name, statuses)
    assert len(admins.answered(200) | admins.answered(201)) > len(group_operations) / 3
    assert {401, 404, 405, 422} <= admins.status_codes(), admins.statuses
    assert admins.checks["object_level_authorization"] > 5, admins.checks
    assert admins.checks["ignored_auth"] > 5, admins.checks


def test_the_api_keeps_its_contract_without_a_token(server: LiveServer) -> None:
    set_up(server)
    # The public operations (sign-in, password reset, accepting an invitation, AuthZEN
    # discovery) through every phase; the others refuse, whatever the input.
    protected = [
        name
        for name, operation in operations_of(openapi_document(server)).items()
        if operation.get("security") != []
    ]
    anonymous = run_schemathesis(
        server,
        {"auth": {"auto-signup": False}},
        operations=[{"include-name": protected, **REFUSED_ONLY}],
    )
    assert not anonymous.failures, report(anonymous)
    assert "POST /auth/password-reset" in anonymous.answered(202)  # public: no token
    assert "GET /workspaces" in anonymous.answered(401)
    # Every operation that needs a token was called without one and refused it, before
    # reading any input: 401, or 404 where no route matched (an id that is no number).
    for operation in protected:
        statuses = {status for name, status in anonymous.statuses if name == operation}
        assert 401 in statuses and statuses <= {401, 404}, (operation, statuses)


def test_the_api_keeps_its_contract_for_a_service(server: LiveServer) -> None:
    set_up(server)
    client_id, secret = create_client(server.settings, "decisions:check", name="schemathesis")
    token = client_token(server, client_id, secret)
    service = run_schemathesis(
        server,
        {"auth": {"openapi": {"bearerAuth": {"bearer": token}}, "auto-signup": False}},
        # The decision operations through every phase; the admin API refuses a service.
        operations=[{"exclude-tag": list(DECISION_TAGS), **REFUSED_ONLY}],
    )
    assert not service.failures, report(service)
    assert {
        "POST /v1/check",
        "POST /access/v1/evaluation",
        "POST /pdp/{workspace}/access/v1/evaluations",
        "POST /access/v1/search/action",
    } <= service.answered(200), service.statuses
