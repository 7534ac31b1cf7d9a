"""``ringfence policy plan --gateway URL``: the applied policy and the grants in force read
from a running gateway's admin API (``GET /policy/applied`` and the pages of ``GET
/policy/grants``) instead of its database, with an access token of someone who may read
roles (``role_management:read``): what a CI job without database credentials can use.

The token sees what its holder may read roles of: with a workspace admin's token the
plan is that of their workspaces (:attr:`LiveState.everything` is False). The policy
revision is read before and after the grants; if it moved (someone changed a grant or
the policy meanwhile), everything is read again, so the plan is of one state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from gateway.engine.rules import GrantKey, Rule
from gateway.policy.plan import Person

PAGE_SIZE = 10_000  # the endpoint's largest page
ATTEMPTS = 3  # reads of the whole state before giving up on a moving one
TIMEOUT_S = 120.0  # per request


class GatewayUnreadable(Exception):
    """The gateway did not answer, refused the token, or kept changing."""


@dataclass(frozen=True)
class LiveState:
    url: str
    revision: int
    everything: bool  # the token reads every workspace (and grants in "*")
    workspaces: list[str]
    rules: list[Rule]  # the applied rules of policies/, of "*" and those workspaces
    custom_rules: list[Rule]  # the rules of those workspaces' custom roles
    grants: list[GrantKey]
    people: dict[int, Person]
    # The installation-wide roles the gateway's applied policy recorded; None: a gateway
    # that does not say (older than scopes).
    installation_roles: frozenset[str] | None = None


def _get(session: requests.Session, url: str, params: dict[str, Any] | None = None) -> Any:
    try:
        response = session.get(url, params=params, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise GatewayUnreadable(f"{url} did not answer: {type(exc).__name__}") from exc
    if response.status_code != 200:
        try:
            problem = response.json()
            detail = problem.get("detail") or problem.get("title") or response.reason
        except ValueError:
            detail = response.reason
        raise GatewayUnreadable(f"{url} answered {response.status_code}: {detail}")
    return response


def _read_once(session: requests.Session, base: str) -> tuple[int, LiveState]:
    applied = _get(session, f"{base}/policy/applied").json()
    grants: list[GrantKey] = []
    people: dict[int, Person] = {}
    params: dict[str, Any] = {"page_size": PAGE_SIZE}
    while True:
        response = _get(session, f"{base}/policy/grants", params)
        for row in response.json():
            grants.append(GrantKey(row["user_id"], row["role"], row["workspace"]))
            user_id = row["user_id"]
            people[user_id] = Person(user_id, row["email"], row["name"], row["active"])
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            break
        params = {"page_size": PAGE_SIZE, "cursor": cursor}
    after = _get(session, f"{base}/policy/applied").json()["revision"]
    state = LiveState(
        base,
        applied["revision"],
        applied["everything"],
        list(applied["workspaces"]),
        [Rule(r["ptype"], tuple(r["values"])) for r in applied["rules"]],
        [Rule(r["ptype"], tuple(r["values"])) for r in applied["custom_rules"]],
        grants,
        people,
        None
        if applied.get("installation_roles") is None
        else frozenset(applied["installation_roles"]),
    )
    return after, state


def read_gateway(url: str, token: str) -> LiveState:
    """The applied policy and the grants in force at ``url`` (the gateway's base URL),
    as ``token`` may read them."""
    base = url.rstrip("/")
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        session.headers["Accept"] = "application/json"
        for _ in range(ATTEMPTS):
            after, state = _read_once(session, base)
            if after == state.revision:
                return state
    raise GatewayUnreadable(
        f"{base} changed while its grants were read, {ATTEMPTS} times: run the plan again"
    )
