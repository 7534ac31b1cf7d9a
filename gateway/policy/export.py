"""Custom roles as a policy file: ``ringfence policy export`` writes the roles that a
workspace's admins defined (gateway.services.custom_roles) in the format of
``policies/``, so they can move into version control. Applied from there, a role with
the same name and ``workspace:`` adopts the custom one (its grants stay)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class ExportedRole:
    name: str
    workspace: str
    description: str
    permissions: Sequence[str]


class NamesCollide(ValueError):
    """Role names are unique across the files' workspaces, not across custom roles."""


def export_yaml(roles: Sequence[ExportedRole], note: str = "") -> str:
    """A policy file holding ``roles`` (each with its ``workspace:``), sorted by name;
    NamesCollide when two workspaces have a role of the same name."""
    twice = sorted(name for name, count in Counter(r.name for r in roles).items() if count > 1)
    if twice:
        where = {name: sorted(r.workspace for r in roles if r.name == name) for name in twice}
        raise NamesCollide(
            "role names must be unique across the policy files, and these are custom roles "
            "of several workspaces: "
            + "; ".join(f"'{n}' in {', '.join(ws)}" for n, ws in where.items())
            + " (export one workspace at a time with --workspace, and rename before both "
            "go into policies/)"
        )
    body = {
        "roles": {
            role.name: {
                "description": role.description or f"Custom role of {role.workspace}",
                "workspace": role.workspace,
                "permissions": sorted(role.permissions),
            }
            for role in sorted(roles, key=lambda r: r.name)
        }
    }
    header = [
        "# yaml-language-server: $schema=./schema.json",
        "# Custom roles exported by `ringfence policy export`. In policies/, each role here",
        "# adopts the custom role of the same name and workspace when applied (its grants",
        "# stay): run `ringfence policy plan` to see it first.",
    ]
    if note:
        header.append(f"# {note}")
    return "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False, width=88)
