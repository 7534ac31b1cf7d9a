"""gateway.policy.plan.compute_plan on small policies: owner-only permissions, roles of
one workspace, escalation in a workspace, and the saved plan's round trip; its people
against every person asked of engines holding every grant."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.engine.rules import GrantKey
from gateway.policy.plan import (
    Person,
    compute_plan,
    plan_from_json,
    policy_engine,
    render_json,
)
from gateway.policy.validation import PolicySet, load_policies

MODEL = Path(__file__).resolve().parents[2] / "model.conf"
CATALOGUE = {
    "todos:read": "Read todos",
    "todos:update": "Update todos",
    "role_management:write": "Grant roles",
}


def _policy(tmp_path: Path, name: str, roles: dict[str, Any]) -> PolicySet:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "p.yaml").write_text(yaml.safe_dump({"permissions": CATALOGUE, "roles": roles}))
    return load_policies(folder)


BASE = {
    "reader": {"description": "Reads", "permissions": ["todos:read"]},
    "writer": {"description": "Own todos", "inherits": ["reader"], "permissions": ["todos:*:own"]},
    "lead": {"description": "Leads acme", "workspace": "acme", "permissions": ["todos:read"]},
}


def _plan(before: PolicySet, after: PolicySet, grants: list[GrantKey]) -> Any:
    people = {g.user_id: Person(g.user_id, f"u{g.user_id}@example.com", "") for g in grants}
    return compute_plan(
        model_path=MODEL,
        baseline_rules=before.rules(),
        candidate_rules=after.rules(),
        catalogue=set(before.permissions) | set(after.permissions),
        grants=grants,
        people=people,
        workspaces=["acme", "globex"],
        candidate="after",
        baseline="before",
        policy_digest="x",
    )


def test_owner_only_permissions_and_a_workspace_role_escalating(tmp_path: Path) -> None:
    before = _policy(tmp_path, "before", BASE)
    roles = {name: dict(body) for name, body in BASE.items()}
    # The acme lead now manages roles and updates every todo: it can grant writer (whose
    # todos:update:own it covers) and reader in acme, which it could not before.
    roles["lead"]["permissions"] = ["todos:read", "todos:update", "role_management:write"]
    after = _policy(tmp_path, "after", roles)
    grants = [GrantKey(1, "lead", "acme"), GrantKey(2, "writer", "globex")]
    plan = _plan(before, after, grants)

    [lead] = plan.roles
    assert (lead.role, lead.workspace, lead.added) == (
        "lead",
        "acme",
        ["role_management:write", "todos:update"],
    )
    paths = {(e.role, e.can_now_grant, e.workspace, e.holders) for e in plan.escalations}
    assert paths == {
        ("lead", "lead", "acme", 1),
        ("lead", "reader", "acme", 1),
        ("lead", "writer", "acme", 1),
    }
    gains = {(i.workspace, i.permission, len(i.gained)) for i in plan.impacts}
    assert gains == {("acme", "role_management:write", 1), ("acme", "todos:update", 1)}
    assert plan.exit_code == 3

    again = plan_from_json(render_json(plan, details=True))
    assert again == plan


def test_a_role_moved_to_another_workspace_orphans_its_grants(tmp_path: Path) -> None:
    before = _policy(tmp_path, "before", BASE)
    roles = {name: dict(body) for name, body in BASE.items()}
    roles["lead"]["workspace"] = "globex"
    after = _policy(tmp_path, "after", roles)
    plan = _plan(before, after, [GrantKey(1, "lead", "acme"), GrantKey(2, "reader", "*")])
    assert [(o.user_id, o.role, o.workspace) for o in plan.orphaned_grants] == [(1, "lead", "acme")]
    assert [(r.workspace, r.status, r.added, r.removed) for r in plan.roles] == [
        ("acme", "removed", [], ["todos:read"]),
        ("globex", "added", ["todos:read"], []),
    ]
    # User 1 held todos:read in acme only through lead; user 2 keeps it as reader.
    assert [(i.workspace, i.permission, [p.user_id for p in i.lost]) for i in plan.impacts] == [
        ("acme", "todos:read", [1])
    ]
    assert plan.exit_code == 3


def _roles(**changes: dict[str, Any]) -> dict[str, Any]:
    roles: dict[str, Any] = {
        "reader": {"description": "Reads", "permissions": ["todos:read"]},
        "writer": {"description": "Own", "inherits": ["reader"], "permissions": ["todos:*:own"]},
        "manager": {
            "description": "Grants",
            "inherits": ["writer"],
            "permissions": ["role_management:write"],
        },
        "lead": {"description": "Acme", "workspace": "acme", "permissions": ["todos:update"]},
        "auditor": {"description": "Acme", "workspace": "acme", "inherits": ["reader"]},
    }
    for name, body in changes.items():
        roles[name] = {**roles.get(name, {"description": name}), **body}
    return {name: body for name, body in roles.items() if body.get("permissions") != "gone"}


# The candidates: an inherited role changed, an owner-only one made
# outright, a wildcard, a workspace role moved, a role removed, a role added.
CANDIDATES = {
    "inherited changed": _roles(reader={"permissions": ["todos:update"]}),
    "own made outright": _roles(writer={"permissions": ["todos:update"]}),
    "wildcard": _roles(lead={"permissions": ["todos:*", "role_management:write"]}),
    "moved": _roles(auditor={"workspace": "globex"}),
    "removed": _roles(manager={"permissions": "gone"}),
    "inheritance cut": _roles(manager={"inherits": []}, auditor={"inherits": ["writer"]}),
}


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_the_plans_people_are_everyones_answers_asked_of_full_engines(
    tmp_path: Path, name: str
) -> None:
    """Differential: compute_plan asks one person per set of grants, of engines holding
    only those asked; its people must be what engines holding every grant answer when
    every person is asked, in every workspace, every permission the roles' changes
    name (random grants, inactive people, grants in every workspace and of roles a
    workspace does not define)."""
    before = _policy(tmp_path, "before", _roles())
    after = _policy(tmp_path, "after", CANDIDATES[name])
    rng = random.Random(20)
    workspaces = ["acme", "globex"]
    names = ["reader", "writer", "manager", "lead", "auditor"]
    grants = sorted(
        {
            GrantKey(user_id, rng.choice(names), rng.choice([*workspaces, "*"]))
            for user_id in range(1, 61)
            for _ in range(rng.randint(1, 3))
        }
    )
    people = {
        u: Person(u, f"u{u}@example.com", "", active=rng.random() > 0.15)
        for u in {g.user_id for g in grants}
    }
    plan = compute_plan(
        model_path=MODEL,
        baseline_rules=before.rules(),
        candidate_rules=after.rules(),
        catalogue=CATALOGUE,
        grants=grants,
        people=people,
        workspaces=workspaces,
        candidate="after",
        baseline="before",
        policy_digest="x",
    )

    old = policy_engine(MODEL, before.rules(), grants, people.values(), workspaces)
    new = policy_engine(MODEL, after.rules(), grants, people.values(), workspaces)
    expected: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for scope in ["*", *workspaces]:
        for permission in sorted({p for r in plan.roles for p in (*r.added, *r.removed)}):
            resource, _, action = permission.partition(":")
            for user_id in sorted(people):
                had = old.holds(user_id, scope, resource, action)
                has = new.holds(user_id, scope, resource, action)
                if had != has:
                    gained, lost = expected.setdefault((scope, permission), ([], []))
                    (gained if has else lost).append(user_id)
    found = {
        (i.workspace, i.permission): ([p.user_id for p in i.gained], [p.user_id for p in i.lost])
        for i in plan.impacts
    }
    assert expected, "the candidate changes someone's permissions"
    assert found == expected
