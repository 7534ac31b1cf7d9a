"""Policy tests: ``policies/tests/*_test.yaml``, expected decisions as data (Cerbos style).

Cases are loaded and validated against the policy (:mod:`gateway.policy.validation`,
every problem collected before failing) and run against a real ``casbin.Enforcer``
built from ``model.conf``, so they check what Casbin decides, not what this module
thinks it should decide.

Everything here is pure except reading the files and running Casbin in memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import casbin
from casbin.util import key_match

from gateway.engine.rules import (
    ALL_WORKSPACES,
    USER_PREFIX,
    Rule,
    role_subject,
)
from gateway.policy.validation import (
    _PERMISSION_PART,
    _WORKSPACE,
    PolicyProblem,
    PolicySet,
    _did_you_mean,
    _invalid,
    _read_yaml,
    _source,
    _string_list,
    _type_name,
    _unknown_keys,
    load_policies,
)

TESTS_DIRNAME = "tests"
TEST_FILE_SUFFIX = "_test.yaml"

ALLOW = "allow"
DENY = "deny"

_TEST_FILE_KEYS = ("name", "description", "principals", "tests")
_PRINCIPAL_KEYS = ("roles",)
_CASE_KEYS = ("name", "description", "principal", "workspace", "resource", "owner", "actions")
_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


def principal_subject(name: str) -> str:
    """The Casbin subject of a policy-test principal: ``user:<name>``."""
    return f"{USER_PREFIX}{name}"


@dataclass(frozen=True)
class PolicyTestCase:
    """One expected decision: may ``principal`` do ``resource:action`` in ``workspace``?

    ``grants`` are the principal's ``(workspace, role)`` pairs from its test file;
    ``owner`` the principal owning the resource (None: nobody); ``source`` and
    ``entry`` say where the case is written (``tests[3]``).
    """

    source: str
    suite: str
    name: str
    entry: str
    principal: str
    grants: tuple[tuple[str, str], ...]
    workspace: str
    resource: str
    action: str
    expected: bool
    owner: str | None = None

    @property
    def permission(self) -> str:
        return f"{self.resource}:{self.action}"

    @property
    def subject(self) -> str:
        return principal_subject(self.principal)

    @property
    def owner_subject(self) -> str:
        """The request's ``owner`` value: ``user:<owner>``, or empty for no owner."""
        return principal_subject(self.owner) if self.owner is not None else ""

    def __str__(self) -> str:
        effect = ALLOW if self.expected else DENY
        return (
            f"{self.suite} / {self.name}: {self.principal} in {self.workspace}: "
            f"{self.permission} should be {effect}"
        )


@dataclass
class PolicyTestResult:
    """What Casbin decided for a case (``actual``: allowed) and whether it matched."""

    case: PolicyTestCase
    actual: bool
    passed: bool


def load_policy_tests(directory: Path, policy: PolicySet | None = None) -> list[PolicyTestCase]:
    """The cases of ``directory/tests/*_test.yaml``, one per action, validated.

    Principals' roles are checked against ``policy`` (loaded from ``directory`` when
    not given). Raises :class:`~gateway.errors.PolicyInvalid` listing every problem.
    """
    if policy is None:
        policy = load_policies(directory)
    problems: list[PolicyProblem] = []
    cases: list[PolicyTestCase] = []
    tests_dir = directory / TESTS_DIRNAME
    if tests_dir.is_dir():
        for path in sorted(tests_dir.glob(f"*{TEST_FILE_SUFFIX}")):
            if path.is_file():
                source = _source(path, directory)
                cases.extend(_load_test_file(path, source, policy, problems))
    if problems:
        raise _invalid(problems, "policy tests")
    return cases


def _load_test_file(
    path: Path, source: str, policy: PolicySet, problems: list[PolicyProblem]
) -> list[PolicyTestCase]:
    ok, data = _read_yaml(path, source, problems)
    if not ok:
        return []
    if not isinstance(data, dict):
        problems.append(
            PolicyProblem(
                source,
                "",
                "a test file must be a mapping with 'name', 'principals' and 'tests', "
                f"got {_type_name(data)}",
            )
        )
        return []
    problems.extend(_unknown_keys(data, _TEST_FILE_KEYS, source, ""))

    suite = data.get("name")
    if not isinstance(suite, str) or not suite.strip():
        problems.append(
            PolicyProblem(source, "name", f"must be a non-empty string, got {_type_name(suite)}")
        )
        suite = path.name.removesuffix(TEST_FILE_SUFFIX)
    if "description" in data and not isinstance(data["description"], str):
        problems.append(
            PolicyProblem(
                source,
                "description",
                f"must be a string, got {_type_name(data['description'])}",
            )
        )

    principals = _load_principals(data.get("principals"), source, policy, problems)

    tests = data.get("tests")
    if not isinstance(tests, list) or not tests:
        problems.append(
            PolicyProblem(source, "tests", f"must be a non-empty list, got {_type_name(tests)}")
        )
        return []
    cases: list[PolicyTestCase] = []
    names: set[str] = set()
    for index, body in enumerate(tests):
        cases.extend(
            _load_case(body, index, source, suite.strip(), principals, names, policy, problems)
        )
    return cases


def _load_principals(
    section: Any, source: str, policy: PolicySet, problems: list[PolicyProblem]
) -> dict[str, tuple[tuple[str, str], ...]]:
    if not isinstance(section, dict):
        problems.append(
            PolicyProblem(
                source,
                "principals",
                "must be a mapping of principal name to {roles: {workspace: [role, ...]}}, "
                f"got {_type_name(section)}",
            )
        )
        return {}
    principals: dict[str, tuple[tuple[str, str], ...]] = {}
    for name, body in section.items():
        entry = f"principals.{name}"
        if not isinstance(name, str) or not _PRINCIPAL.fullmatch(name):
            problems.append(
                PolicyProblem(
                    source,
                    entry,
                    f"principal name {name!r} must be letters, digits, '.', '_', '@', '+' or '-'",
                )
            )
            continue
        if not isinstance(body, dict):
            problems.append(
                PolicyProblem(
                    source,
                    entry,
                    f"must be a mapping with 'roles', got {_type_name(body)}",
                )
            )
            continue
        problems.extend(_unknown_keys(body, _PRINCIPAL_KEYS, source, entry))
        roles = body.get("roles")
        if not isinstance(roles, dict):
            problems.append(
                PolicyProblem(
                    source,
                    entry,
                    "'roles' must be a mapping of workspace (or '*') to a list of roles, "
                    f"got {_type_name(roles)}",
                )
            )
            continue
        grants: set[tuple[str, str]] = set()
        for workspace, role_list in roles.items():
            if not isinstance(workspace, str) or not (
                workspace == ALL_WORKSPACES or _WORKSPACE.fullmatch(workspace)
            ):
                problems.append(
                    PolicyProblem(
                        source,
                        entry,
                        f"{workspace!r} is not a workspace slug or '*'",
                    )
                )
                continue
            field = f"roles.{workspace}"
            for role in _string_list(role_list, field, source, entry, problems):
                problem = _grant_problem(policy, role, workspace)
                if problem:
                    problems.append(PolicyProblem(source, entry, problem))
                else:
                    grants.add((workspace, role))
        principals[name] = tuple(sorted(grants))
    return principals


def _grant_problem(policy: PolicySet, role: str, workspace: str) -> str | None:
    """Why ``role`` cannot be granted in ``workspace``, or None when it can."""
    definition = policy.roles.get(role)
    if definition is None:
        return f"unknown role {role!r}{_did_you_mean(role, policy.roles)}"
    if definition.workspace is not None and definition.workspace != workspace:
        where = "every workspace ('*')" if workspace == ALL_WORKSPACES else repr(workspace)
        return (
            f"role {role!r} is specific to workspace {definition.workspace!r} "
            f"and cannot be granted in {where}"
        )
    if definition.installation_only and workspace != ALL_WORKSPACES:
        return (
            f"role {role!r} is installation-wide (scope: installation) and is granted "
            f"only in every workspace ('*'), not in {workspace!r}"
        )
    return None


def _load_case(
    body: Any,
    index: int,
    source: str,
    suite: str,
    principals: Mapping[str, tuple[tuple[str, str], ...]],
    names: set[str],
    policy: PolicySet,
    problems: list[PolicyProblem],
) -> list[PolicyTestCase]:
    entry = f"tests[{index}]"
    if not isinstance(body, dict):
        problems.append(
            PolicyProblem(
                source,
                entry,
                "must be a mapping with name, principal, workspace, resource and actions, "
                f"got {_type_name(body)}",
            )
        )
        return []
    name = body.get("name")
    if isinstance(name, str) and name.strip():
        name = name.strip()
        entry = f"{entry} {name!r}"
        if name in names:
            problems.append(PolicyProblem(source, entry, "another test has the same name"))
        names.add(name)
    else:
        problems.append(
            PolicyProblem(
                source, entry, f"'name' must be a non-empty string, got {_type_name(name)}"
            )
        )
        name = entry
    before = len(problems)
    problems.extend(_unknown_keys(body, _CASE_KEYS, source, entry))
    if "description" in body and not isinstance(body["description"], str):
        problems.append(
            PolicyProblem(
                source,
                entry,
                f"'description' must be a string, got {_type_name(body['description'])}",
            )
        )

    principal = body.get("principal")
    if principal is None:
        problems.append(PolicyProblem(source, entry, "'principal' is missing"))
    elif not isinstance(principal, str) or principal not in principals:
        known = ", ".join(sorted(principals)) or "none"
        problems.append(
            PolicyProblem(
                source,
                entry,
                f"principal {principal!r} is not defined under 'principals' (defined: {known})",
            )
        )
    workspace = body.get("workspace")
    if not isinstance(workspace, str) or not _WORKSPACE.fullmatch(workspace):
        problems.append(
            PolicyProblem(
                source,
                entry,
                f"'workspace' must be one workspace slug, got {workspace!r}",
            )
        )
    resource = body.get("resource")
    if not isinstance(resource, str) or not _PERMISSION_PART.fullmatch(resource):
        problems.append(
            PolicyProblem(
                source,
                entry,
                f"'resource' must be a resource name such as 'documents', got {resource!r}",
            )
        )
        resource = None
    owner = body.get("owner")
    if owner is not None and (not isinstance(owner, str) or owner not in principals):
        known = ", ".join(sorted(principals)) or "none"
        problems.append(
            PolicyProblem(
                source,
                entry,
                f"owner {owner!r} is not defined under 'principals' (defined: {known})",
            )
        )

    actions = body.get("actions")
    expectations: list[tuple[str, bool]] = []
    if not isinstance(actions, dict) or not actions:
        problems.append(
            PolicyProblem(
                source,
                entry,
                "'actions' must be a non-empty mapping of action to allow or deny, "
                f"got {_type_name(actions)}",
            )
        )
    else:
        for action, effect in actions.items():
            if effect not in (ALLOW, DENY):
                problems.append(
                    PolicyProblem(
                        source,
                        entry,
                        f"action {action!r}: expected 'allow' or 'deny', got {effect!r}",
                    )
                )
                continue
            if not isinstance(action, str) or not _PERMISSION_PART.fullmatch(action):
                problems.append(PolicyProblem(source, entry, f"{action!r} is not an action name"))
                continue
            if resource is not None:
                permission = f"{resource}:{action}"
                if permission not in policy.permissions:
                    problems.append(
                        PolicyProblem(
                            source,
                            entry,
                            f"unknown permission {permission!r}"
                            f"{_did_you_mean(permission, policy.permissions)}",
                        )
                    )
                    continue
            expectations.append((action, effect == ALLOW))

    if len(problems) > before or not (
        isinstance(principal, str) and isinstance(workspace, str) and resource
    ):
        return []
    return [
        PolicyTestCase(
            source=source,
            suite=suite,
            name=name,
            entry=entry,
            principal=principal,
            grants=principals[principal],
            workspace=workspace,
            resource=resource,
            action=action,
            expected=expected,
            owner=owner,
        )
        for action, expected in expectations
    ]


def run_policy_tests(
    policy: PolicySet, cases: Sequence[PolicyTestCase], model_path: Path
) -> list[PolicyTestResult]:
    """Decide every case with a real ``casbin.Enforcer`` on ``model_path``.

    The enforcer holds ``policy.rules()`` and the principals' grants as ``g`` rules
    (``user:<principal>``), with ``key_match`` as the domain matching function for
    ``g``, exactly as the engine runs. Results come in the order of ``cases``.
    Raises :class:`~gateway.errors.PolicyInvalid` if a case grants a role the policy
    cannot grant there.
    """
    problems = [
        PolicyProblem(case.source, case.entry, problem)
        for case in cases
        for workspace, role in case.grants
        if (problem := _grant_problem(policy, role, workspace))
    ]
    if problems:
        raise _invalid(list(dict.fromkeys(problems)), "policy tests")

    # Cases share an enforcer unless one principal name has different grants in them
    # (two test files may each define their own "john").
    worlds: list[tuple[dict[str, tuple[tuple[str, str], ...]], list[int]]] = []
    for index, case in enumerate(cases):
        for grants, members in worlds:
            if grants.get(case.principal, case.grants) == case.grants:
                grants[case.principal] = case.grants
                members.append(index)
                break
        else:
            worlds.append(({case.principal: case.grants}, [index]))

    rules = policy.rules()
    actual: dict[int, bool] = {}
    for grants, members in worlds:
        enforcer = _enforcer(model_path, rules, grants)
        for index in members:
            case = cases[index]
            actual[index] = bool(
                enforcer.enforce(
                    case.subject, case.workspace, case.resource, case.action, case.owner_subject
                )
            )
    return [
        PolicyTestResult(case, actual[index], actual[index] == case.expected)
        for index, case in enumerate(cases)
    ]


def _enforcer(
    model_path: Path, rules: Sequence[Rule], grants: Mapping[str, Sequence[tuple[str, str]]]
) -> casbin.Enforcer:
    enforcer = casbin.Enforcer(str(model_path))
    enforcer.add_named_domain_matching_func("g", key_match)
    p_rules = [list(rule.values) for rule in rules if rule.ptype == "p"]
    g_rules = [list(rule.values) for rule in rules if rule.ptype == "g"]
    g_rules += [
        [principal_subject(principal), role_subject(role), workspace]
        for principal, pairs in sorted(grants.items())
        for workspace, role in pairs
    ]
    if p_rules:
        enforcer.add_policies(p_rules)
    if g_rules:
        enforcer.add_named_grouping_policies("g", g_rules)
    return enforcer


def format_results(results: Sequence[PolicyTestResult]) -> str:
    """The failures, one per line with where they are written, and "N passed, M failed"."""
    lines: list[str] = []
    for result in results:
        if result.passed:
            continue
        case = result.case
        expected = ALLOW if case.expected else DENY
        got = ALLOW if result.actual else DENY
        owned = f" (owned by {case.owner})" if case.owner is not None else ""
        lines.append(
            f"FAIL {case.source}: {case.entry}: {case.principal} in {case.workspace}: "
            f"{case.permission}{owned} expected {expected}, got {got}"
        )
    passed = sum(1 for result in results if result.passed)
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)
