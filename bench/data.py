"""Benchmark data of a realistic shape, generated deterministically.

About 10 shared roles of about 20 permissions each (an inheritance chain, one
owner-only permission, a super admin with ``*``), a workspace-specific role in about 1%
of the workspaces, each user holding 1-3 grants, a few super admins granted in ``*``,
and one big workspace whose members are 10% of all users (the "first check in a
workspace of 100k members" at the 1M size).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from gateway.engine.rules import GrantKey, Rule, grant_rule, inheritance_rule, permission_rule

RESOURCES = (
    "documents",
    "reports",
    "users",
    "invoices",
    "projects",
    "tasks",
    "comments",
    "files",
    "settings",
    "audit",
    "billing",
    "webhooks",
)
ACTIONS = ("read", "write", "delete", "create", "approve", "export")
CATALOGUE = [f"{r}:{a}" for r in RESOURCES for a in ACTIONS]
BIG_WORKSPACE = "big"

SIZES = {"10k": (10_000, 100), "100k": (100_000, 1_000), "1M": (1_000_000, 10_000)}


@dataclass
class Dataset:
    label: str
    users: int
    workspaces: list[str]
    policy_rules: list[Rule] = field(default_factory=list)
    grants: list[GrantKey] = field(default_factory=list)
    shared_roles: list[str] = field(default_factory=list)

    def rules(self) -> list[Rule]:
        return [*self.policy_rules, *(grant_rule(g) for g in self.grants)]


def _roles(rng: random.Random) -> tuple[list[Rule], list[str]]:
    reads = [p for p in CATALOGUE if p.endswith(":read")]
    writes = [p for p in CATALOGUE if p.endswith((":write", ":create"))]
    others = [p for p in CATALOGUE if p not in reads and p not in writes]
    definitions: dict[str, tuple[list[str], list[str]]] = {
        "viewer": (reads + rng.sample(others, 8), []),
        "commenter": (["comments:*", *rng.sample(writes, 19)], ["viewer"]),
        "editor": ([*rng.sample(writes, 19), "documents:delete:own"], ["viewer"]),
        "reviewer": (rng.sample(others, 20), ["viewer"]),
        "manager": (rng.sample(others + writes, 20), ["editor", "reviewer"]),
        "admin": (rng.sample(CATALOGUE, 20), ["manager"]),
        "owner": (rng.sample(CATALOGUE, 20), ["admin"]),
        "billing": (["billing:*", "invoices:*", *rng.sample(CATALOGUE, 18)], []),
        "auditor": (["audit:*", *rng.sample(reads, 12), *rng.sample(others, 7)], []),
        "superadmin": (["*"], []),
    }
    rules: list[Rule] = []
    for role, (permissions, parents) in definitions.items():
        rules += [permission_rule(role, p) for p in dict.fromkeys(permissions)]
        rules += [inheritance_rule(role, parent) for parent in parents]
    return rules, list(definitions)


def generate(label: str, seed: int = 7) -> Dataset:
    users, workspace_count = SIZES[label]
    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    workspaces = [f"ws{i:05d}" for i in range(workspace_count - 1)] + [BIG_WORKSPACE]
    policy_rules, roles = _roles(rng)
    data = Dataset(label, users, workspaces, policy_rules, shared_roles=roles)
    special: dict[str, str] = {}
    for workspace in rng.sample(workspaces, max(1, workspace_count // 100)):
        role = f"{workspace}_lead"
        special[workspace] = role
        data.policy_rules.append(inheritance_rule(role, "editor", workspace))
        for permission in rng.sample(CATALOGUE, 5):
            data.policy_rules.append(permission_rule(role, permission, workspace))
    grantable = [r for r in roles if r != "superadmin"]
    weights = [30, 10, 25, 8, 8, 6, 3, 4, 6]
    grants: set[GrantKey] = set()
    for user_id in range(1, users + 1):
        if user_id % 10 == 0:
            grants.add(GrantKey(user_id, rng.choices(grantable, weights)[0], BIG_WORKSPACE))
        for _ in range(rng.choices((1, 2, 3), (50, 35, 15))[0]):
            workspace = rng.choice(workspaces)
            role = rng.choices(grantable, weights)[0]
            if workspace in special and rng.random() < 0.1:
                role = special[workspace]
            grants.add(GrantKey(user_id, role, workspace))
    for user_id in range(1, users + 1, max(1, users // 10)):
        grants.add(GrantKey(user_id, "superadmin", "*"))
    data.grants = sorted(grants)
    return data
