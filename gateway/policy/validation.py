"""Role and permission definitions from ``policies/``: loading and validation.

``policies/*.yaml`` hold the permission catalogue (``permissions:``) and the roles
(``roles:``). Loading collects *every* problem before failing, so a reviewer sees all
of them at once, each naming the file and the entry it comes from. The policy tests
(``policies/tests/``) are loaded and run by :mod:`gateway.policy.testing`, which shares
this module's YAML reading and problem reporting.

Everything here is pure except reading the files.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from gateway.engine.rules import (
    ALL_WORKSPACES,
    OWN_SUFFIX,
    Rule,
    inheritance_rule,
    permission_rule,
)
from gateway.errors import PolicyInvalid

WILDCARD = "*"
_POLICY_KEYS = ("permissions", "roles")
_ROLE_KEYS = ("description", "permissions", "inherits", "workspace", "scope")
# Where a role may be granted: in any one workspace (the default), or only in every
# workspace at once (``*``: an installation-wide role such as the super admin's).
SCOPE_WORKSPACE = "workspace"
SCOPE_INSTALLATION = "installation"
SCOPES = (SCOPE_WORKSPACE, SCOPE_INSTALLATION)

ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_PERMISSION_PART = re.compile(r"[a-z][a-z0-9_]*")
# No `*` (a domain pattern in Casbin), no commas or spaces (they break the CSV form).
_WORKSPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class RoleDefinition:
    """One role as written in a policy file.

    ``workspace`` is None for a role shared by every workspace, or the slug of the one
    workspace the role exists in. ``source`` is the file it comes from, relative to
    the policies directory. ``scope`` is ``installation`` for a role granted only in
    every workspace at once (``*``), never in one, and ``workspace`` otherwise.
    """

    name: str
    description: str
    permissions: tuple[str, ...]
    inherits: tuple[str, ...]
    workspace: str | None
    source: str
    scope: str = SCOPE_WORKSPACE

    @property
    def installation_only(self) -> bool:
        return self.scope == SCOPE_INSTALLATION

    @property
    def domain(self) -> str:
        """The Casbin domain of this role's rules: its workspace, or ``*``."""
        return self.workspace if self.workspace is not None else ALL_WORKSPACES


@dataclass(frozen=True)
class PolicySet:
    """The permission catalogue (name → description) and the roles, by name."""

    permissions: Mapping[str, str]
    roles: Mapping[str, RoleDefinition]

    def rules(self) -> list[Rule]:
        """The Casbin ``p`` and ``g`` rules these definitions stand for, sorted."""
        rules: set[Rule] = set()
        for role in self.roles.values():
            for permission in role.permissions:
                rules.add(permission_rule(role.name, permission, role.domain))
            for parent in role.inherits:
                rules.add(inheritance_rule(role.name, parent, role.domain))
        return sorted(rules)

    def role_names(self, workspace: str) -> set[str]:
        """Roles whose rules hold in ``workspace``: shared ones and its own.

        For ``*`` (every workspace) that is the shared roles only. (An installation-wide
        role is among them: its rules hold everywhere, though it is granted only in
        ``*``: :meth:`installation_roles`.)
        """
        return {
            role.name
            for role in self.roles.values()
            if role.workspace is None or role.workspace == workspace
        }

    def installation_roles(self) -> frozenset[str]:
        """The roles granted only in every workspace at once (``scope: installation``)."""
        return frozenset(role.name for role in self.roles.values() if role.installation_only)

    def effective_permissions(self, role: str) -> frozenset[str]:
        """Catalogue permissions ``role`` holds, directly or inherited, wildcards expanded;
        one held only on the subject's own resources is named with ``:own``
        (``todos:update:own``), one held on every resource without it."""
        granted: set[str] = set()
        seen: set[str] = set()
        pending = [role]
        while pending:
            name = pending.pop()
            if name in seen or name not in self.roles:
                continue
            seen.add(name)
            definition = self.roles[name]
            granted.update(definition.permissions)
            pending.extend(definition.inherits)
        suffix = f":{OWN_SUFFIX}"
        everywhere = {p for p in granted if not p.endswith(suffix)}
        own = {p.removesuffix(suffix) for p in granted if p.endswith(suffix)}
        held = {p for p in self.permissions if _covers_any(everywhere, p)}
        held |= {f"{p}{suffix}" for p in self.permissions if p not in held and _covers_any(own, p)}
        return frozenset(held)


def _covers_any(granted: set[str], permission: str) -> bool:
    resource = permission.partition(":")[0]
    return bool({permission, f"{resource}:{WILDCARD}", WILDCARD} & granted)


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong in a policy file: where (file, entry) and what."""

    file: str
    entry: str
    message: str

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.entry) if part)
        return f"{where}: {self.message}" if where else self.message


def _invalid(problems: Sequence[PolicyProblem], what: str) -> PolicyInvalid:
    count = len(problems)
    noun = "problem" if count == 1 else "problems"
    return PolicyInvalid(
        f"{count} {noun} in the {what}: {problems[0]}",
        problems=[str(p) for p in problems],
    )


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _read_yaml(path: Path, source: str, problems: list[PolicyProblem]) -> tuple[bool, Any]:
    """``(ok, data)`` of one YAML file; a problem (with its line) when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(PolicyProblem(source, "", f"cannot read the file: {exc}"))
        return False, None
    try:
        loader = _StrictLoader(text)
        try:
            return True, loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        entry = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = ": ".join(str(part) for part in (exc.context, exc.problem) if part)
        problems.append(PolicyProblem(source, entry, f"YAML syntax error: {detail}"))
    except yaml.YAMLError as exc:
        problems.append(PolicyProblem(source, "", f"YAML syntax error: {exc}"))
    return False, None


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _unknown_keys(
    body: Mapping[Any, Any], allowed: Sequence[str], source: str, entry: str
) -> list[PolicyProblem]:
    return [
        PolicyProblem(source, entry, f"unknown key {key!r} (expected one of: {', '.join(allowed)})")
        for key in body
        if key not in allowed
    ]


def _string_list(
    value: Any, field: str, source: str, entry: str, problems: list[PolicyProblem]
) -> list[str]:
    """The strings of a YAML list field; problems for a non-list or non-string items."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(
            PolicyProblem(source, entry, f"'{field}' must be a list, got {_type_name(value)}")
        )
        return []
    items: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            problems.append(
                PolicyProblem(
                    source,
                    entry,
                    f"'{field}'[{index}] must be a string, got {_type_name(item)}",
                )
            )
        elif item in items:
            problems.append(PolicyProblem(source, entry, f"'{field}' lists {item!r} twice"))
        else:
            items.append(item)
    return items


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _permission_syntax_problem(name: str, *, allow_wildcard: bool) -> str | None:
    if allow_wildcard and name == WILDCARD:
        return None
    resource, sep, action = name.partition(":")
    action_ok = bool(_PERMISSION_PART.fullmatch(action)) or (allow_wildcard and action == WILDCARD)
    if sep and _PERMISSION_PART.fullmatch(resource) and action_ok:
        return None
    return (
        f"permission {name!r} is not of the form resource:action "
        "(lowercase letters, digits and '_', starting with a letter)"
    )


def _permission_problem(name: str, catalogue: Mapping[str, str]) -> str | None:
    """Why a role may not grant ``name``, or None when it may. ``resource:action:own``
    (and ``resource:*:own``) grants a catalogue permission on the subject's own
    resources only."""
    base, sep, suffix = name.rpartition(":")
    if sep and base.count(":") == 1 and suffix == OWN_SUFFIX:
        return _permission_problem(base, catalogue)
    if name.count(":") > 1:
        return (
            f"permission {name!r} has an unknown condition: only "
            f"'resource:action:{OWN_SUFFIX}' (on the subject's own resources) exists"
        )
    syntax = _permission_syntax_problem(name, allow_wildcard=True)
    if syntax:
        return syntax
    if name == WILDCARD or name in catalogue:
        return None
    resource, _, action = name.partition(":")
    if action == WILDCARD:
        resources = {p.partition(":")[0] for p in catalogue}
        if resource in resources:
            return None
        return (
            f"unknown resource in {name!r}: no permission in the catalogue starts with "
            f"'{resource}:'{_did_you_mean(resource, resources)}"
        )
    return f"unknown permission {name!r}{_did_you_mean(name, catalogue)}"


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _RawRole:
    name: str
    body: Any
    source: str


def _policy_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())


def _source(path: Path, directory: Path) -> str:
    return path.relative_to(directory).as_posix()


def load_policies(directory: Path) -> PolicySet:
    """The permission catalogue and roles of ``directory/*.yaml``, fully validated.

    Raises :class:`~gateway.errors.PolicyInvalid` listing every problem found (in
    the ``problems`` extension, one ``"file: entry: message"`` string each).
    """
    policy, problems = _check_policies(directory)
    if problems:
        raise _invalid(problems, "policy files")
    return policy


def catalogue_actions(directory: Path) -> Mapping[str, frozenset[str]]:
    """Resource -> the actions the catalogue of ``directory`` names for it (what a
    ``resource:*`` or ``*`` grant means action by action); read again only when a file
    changed, and empty while the files are not valid."""
    files = _policy_files(directory) if directory.is_dir() else []
    return _catalogue_actions(directory, tuple((p.name, p.stat().st_mtime_ns) for p in files))


@lru_cache(maxsize=4)
def _catalogue_actions(
    directory: Path, _stamp: tuple[tuple[str, int], ...]
) -> Mapping[str, frozenset[str]]:
    policy, problems = _check_policies(directory)
    if problems:
        return {}
    actions: dict[str, set[str]] = {}
    for permission in policy.permissions:
        resource, _, action = permission.partition(":")
        actions.setdefault(resource, set()).add(action)
    return {resource: frozenset(names) for resource, names in actions.items()}


def installation_roles(directory: Path) -> frozenset[str]:
    """The roles of ``directory`` granted only in every workspace at once (``scope:
    installation``); read again only when a file changed, and empty while the files are
    not valid."""
    policy = current_policy(directory)
    return policy.installation_roles() if policy is not None else frozenset()


def current_policy(directory: Path) -> PolicySet | None:
    """The policy of ``directory``, read again only when a file changed; None while the
    files are not valid. For what the services show and check on every request (the
    roles' descriptions and scopes), without parsing the YAML each time."""
    files = _policy_files(directory) if directory.is_dir() else []
    return _current_policy(directory, tuple((p.name, p.stat().st_mtime_ns) for p in files))


@lru_cache(maxsize=4)
def _current_policy(directory: Path, _stamp: tuple[tuple[str, int], ...]) -> PolicySet | None:
    policy, problems = _check_policies(directory)
    return None if problems else policy


def _check_policies(directory: Path) -> tuple[PolicySet, list[PolicyProblem]]:
    problems: list[PolicyProblem] = []
    if not directory.is_dir():
        problem = PolicyProblem(str(directory), "", "the policy directory does not exist")
        return PolicySet({}, {}), [problem]
    files = _policy_files(directory)
    if not files:
        problem = PolicyProblem(str(directory), "", "no policy files (*.yaml) found")
        return PolicySet({}, {}), [problem]

    catalogue: dict[str, str] = {}
    catalogue_source: dict[str, str] = {}
    raw_roles: dict[str, _RawRole] = {}
    for path in files:
        source = _source(path, directory)
        ok, data = _read_yaml(path, source, problems)
        if not ok or data is None:
            continue
        if not isinstance(data, dict):
            problems.append(
                PolicyProblem(
                    source,
                    "",
                    "the file must be a mapping with the keys 'permissions' and/or "
                    f"'roles', got {_type_name(data)}",
                )
            )
            continue
        problems.extend(_unknown_keys(data, _POLICY_KEYS, source, ""))
        if "permissions" in data:
            _collect_permissions(data["permissions"], source, catalogue, catalogue_source, problems)
        if "roles" in data:
            _collect_roles(data["roles"], source, raw_roles, problems)

    roles = _check_roles(raw_roles, catalogue, problems)
    ordered = dict(sorted(roles.items()))
    return PolicySet(dict(sorted(catalogue.items())), ordered), problems


def _collect_permissions(
    section: Any,
    source: str,
    catalogue: dict[str, str],
    catalogue_source: dict[str, str],
    problems: list[PolicyProblem],
) -> None:
    if not isinstance(section, dict):
        problems.append(
            PolicyProblem(
                source,
                "permissions",
                f"must be a mapping of permission name to description, got {_type_name(section)}",
            )
        )
        return
    for name, description in section.items():
        entry = f"permissions.{name}"
        if not isinstance(name, str):
            problems.append(
                PolicyProblem(
                    source, entry, f"permission name must be a string, got {_type_name(name)}"
                )
            )
            continue
        syntax = _permission_syntax_problem(name, allow_wildcard=False)
        if syntax:
            problems.append(PolicyProblem(source, entry, syntax))
            continue
        if not isinstance(description, str) or not description.strip():
            problems.append(
                PolicyProblem(
                    source,
                    entry,
                    f"the description must be a non-empty string, got {_type_name(description)}",
                )
            )
            continue
        if name in catalogue:
            problems.append(
                PolicyProblem(
                    source,
                    entry,
                    f"permission {name!r} is already defined in {catalogue_source[name]}",
                )
            )
            continue
        catalogue[name] = description.strip()
        catalogue_source[name] = source


def _collect_roles(
    section: Any, source: str, raw_roles: dict[str, _RawRole], problems: list[PolicyProblem]
) -> None:
    if not isinstance(section, dict):
        problems.append(
            PolicyProblem(
                source,
                "roles",
                f"must be a mapping of role name to definition, got {_type_name(section)}",
            )
        )
        return
    for name, body in section.items():
        entry = f"roles.{name}"
        if not isinstance(name, str):
            problems.append(
                PolicyProblem(source, entry, f"role name must be a string, got {_type_name(name)}")
            )
            continue
        if not ROLE_NAME.fullmatch(name):
            problems.append(
                PolicyProblem(
                    source,
                    entry,
                    f"role name {name!r} must be lowercase letters, digits, '_' or '-', "
                    "starting with a letter",
                )
            )
            continue
        if name in raw_roles:
            problems.append(
                PolicyProblem(
                    source,
                    entry,
                    f"role {name!r} is already defined in {raw_roles[name].source}",
                )
            )
            continue
        raw_roles[name] = _RawRole(name, body, source)


def _role_workspace(raw: _RawRole, problems: list[PolicyProblem] | None) -> str | None:
    """The workspace of a role (None: shared); reports a bad value when asked to."""
    if not isinstance(raw.body, dict) or raw.body.get("workspace") is None:
        return None
    value = raw.body["workspace"]
    message: str | None = None
    if value == WILDCARD:
        message = "'workspace' cannot be '*': omit it for a role shared by every workspace"
    elif not isinstance(value, str):
        message = f"'workspace' must be a workspace slug, got {_type_name(value)}"
    elif not _WORKSPACE.fullmatch(value):
        message = (
            f"'workspace' {value!r} is not a workspace slug (letters, digits, '.', '_' or '-')"
        )
    if message is None:
        return str(value)
    if problems is not None:
        problems.append(PolicyProblem(raw.source, f"roles.{raw.name}", message))
    return None


def _role_scope(raw: _RawRole, problems: list[PolicyProblem] | None) -> str:
    """The scope of a role (``workspace`` when not given); reports a bad value when asked
    to."""
    if not isinstance(raw.body, dict) or raw.body.get("scope") is None:
        return SCOPE_WORKSPACE
    value = raw.body["scope"]
    if isinstance(value, str) and value in SCOPES:
        return value
    if problems is not None:
        got = f"{value!r}{_did_you_mean(value, SCOPES)}" if isinstance(value, str) else ""
        problems.append(
            PolicyProblem(
                raw.source,
                f"roles.{raw.name}",
                f"'scope' must be one of: {', '.join(SCOPES)}, got {got or _type_name(value)}",
            )
        )
    return SCOPE_WORKSPACE


def _check_roles(
    raw_roles: Mapping[str, _RawRole],
    catalogue: Mapping[str, str],
    problems: list[PolicyProblem],
) -> dict[str, RoleDefinition]:
    workspaces = {name: _role_workspace(raw, None) for name, raw in raw_roles.items()}
    scopes = {name: _role_scope(raw, None) for name, raw in raw_roles.items()}
    roles: dict[str, RoleDefinition] = {}
    edges: dict[str, list[str]] = {}
    for name, raw in raw_roles.items():
        entry = f"roles.{name}"
        body = raw.body
        if not isinstance(body, dict):
            problems.append(
                PolicyProblem(
                    raw.source,
                    entry,
                    "must be a mapping with 'description' and 'permissions' and/or "
                    f"'inherits', got {_type_name(body)}",
                )
            )
            continue
        problems.extend(_unknown_keys(body, _ROLE_KEYS, raw.source, entry))

        description = body.get("description")
        if not isinstance(description, str) or not description.strip():
            problems.append(
                PolicyProblem(
                    raw.source,
                    entry,
                    f"'description' must be a non-empty string, got {_type_name(description)}",
                )
            )
            description = ""

        workspace = _role_workspace(raw, problems)
        scope = _role_scope(raw, problems)
        if scope == SCOPE_INSTALLATION and workspace is not None:
            problems.append(
                PolicyProblem(
                    raw.source,
                    entry,
                    f"an installation-wide role (scope: {SCOPE_INSTALLATION}) cannot belong "
                    f"to workspace {workspace!r}: omit one of 'scope' and 'workspace'",
                )
            )

        permissions: list[str] = []
        for permission in _string_list(
            body.get("permissions"), "permissions", raw.source, entry, problems
        ):
            problem = _permission_problem(permission, catalogue)
            if problem:
                problems.append(PolicyProblem(raw.source, entry, problem))
            else:
                permissions.append(permission)

        inherits: list[str] = []
        for parent in _string_list(body.get("inherits"), "inherits", raw.source, entry, problems):
            if parent not in raw_roles:
                problems.append(
                    PolicyProblem(
                        raw.source,
                        entry,
                        f"inherits unknown role {parent!r}{_did_you_mean(parent, raw_roles)}",
                    )
                )
                continue
            if scopes[parent] == SCOPE_INSTALLATION and scope != SCOPE_INSTALLATION:
                problems.append(
                    PolicyProblem(
                        raw.source,
                        entry,
                        f"a role granted per workspace cannot inherit {parent!r}, which is "
                        f"installation-wide only (scope: {SCOPE_INSTALLATION}): it would "
                        "give its permissions in one workspace",
                    )
                )
                continue
            parent_workspace = workspaces[parent]
            if parent_workspace is not None and parent_workspace != workspace:
                holder = (
                    "a shared role" if workspace is None else f"a role of workspace {workspace!r}"
                )
                problems.append(
                    PolicyProblem(
                        raw.source,
                        entry,
                        f"{holder} cannot inherit {parent!r}, which is specific to "
                        f"workspace {parent_workspace!r}",
                    )
                )
                continue
            inherits.append(parent)
        edges[name] = list(inherits)

        if not body.get("permissions") and not body.get("inherits"):
            problems.append(
                PolicyProblem(
                    raw.source,
                    entry,
                    "the role grants nothing: give it 'permissions' or 'inherits'",
                )
            )

        roles[name] = RoleDefinition(
            name=name,
            description=description.strip(),
            permissions=tuple(permissions),
            inherits=tuple(inherits),
            workspace=workspace,
            source=raw.source,
            scope=scope,
        )

    for cycle in _cycles(edges):
        first = raw_roles[cycle[0]]
        problems.append(
            PolicyProblem(
                first.source,
                f"roles.{cycle[0]}",
                f"inheritance cycle: {' -> '.join(cycle)}",
            )
        )
    return roles


def _cycles(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Inheritance cycles (at least one per strongly connected knot), each as a path
    that starts and ends with its alphabetically first role."""
    found: dict[tuple[str, ...], list[str]] = {}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                loop = path[path.index(nxt) :]
                start = loop.index(min(loop))
                loop = loop[start:] + loop[:start]
                found.setdefault(tuple(loop), [*loop, loop[0]])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return [found[key] for key in sorted(found)]
