"""Policy files: the shipped ones are valid and pass their tests; every problem in a
policy or test file is reported with its file and entry; rules come out as Casbin
expects them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from gateway.engine.rules import Rule
from gateway.errors import PolicyInvalid
from gateway.policy.testing import (
    PolicyTestCase,
    format_results,
    load_policy_tests,
    run_policy_tests,
)
from gateway.policy.validation import PolicyProblem, PolicySet, RoleDefinition, load_policies
from gateway.services.permissions import Permission
from tests.helpers import AUTHZEN_POLICIES

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
MODEL = ROOT / "model.conf"

CATALOGUE = """
permissions:
  audit:read: Read the audit log
  documents:read: Read documents
  documents:write: Write documents
  users:invite: Invite people
"""

ROLES = """
roles:
  viewer:
    description: Reads
    permissions: [documents:read]
  editor:
    description: Writes
    inherits: [viewer]
    permissions: [documents:write]
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


def policy_problems(directory: Path) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        load_policies(directory)
    problems = info.value.extensions["problems"]
    assert isinstance(problems, list) and problems
    return problems


def case_file_problems(directory: Path) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        load_policy_tests(directory)
    return list(info.value.extensions["problems"])


# --------------------------------------------------------------------------- shipped


def test_shipped_policies_load() -> None:
    policy = load_policies(POLICIES)
    assert set(policy.roles) >= {"viewer", "editor", "admin", "owner", "superadmin"}
    defaults = ("viewer", "editor", "admin", "owner", "superadmin")
    assert all(policy.roles[role].source == "roles.yaml" for role in defaults)
    assert all(role.workspace is None for role in policy.roles.values() if role.name in defaults)
    assert policy.roles["superadmin"].permissions == ("*",)


def test_the_default_policy_holds_only_the_products_roles() -> None:
    """Every installation applies policies/ and the console lists it: no test suite's or
    example's roles (the AuthZEN scenarios' are in tests/conformance/authzen/policies)."""
    policy = load_policies(POLICIES)
    assert set(policy.roles) == {"viewer", "editor", "admin", "owner", "superadmin"}
    assert {role.source for role in policy.roles.values()} == {"roles.yaml"}
    assert sorted(path.name for path in POLICIES.glob("*.yaml")) == [
        "permissions.yaml",
        "roles.yaml",
    ]


@pytest.mark.parametrize("directory", [POLICIES, AUTHZEN_POLICIES], ids=["product", "authzen"])
def test_shipped_policy_tests_pass(directory: Path) -> None:
    policy = load_policies(directory)
    cases = load_policy_tests(directory, policy)
    assert len(cases) > 20
    results = run_policy_tests(policy, cases, MODEL)
    report = format_results(results)
    assert all(result.passed for result in results), report
    assert report == f"{len(results)} passed, 0 failed"


def test_shipped_tests_cover_allow_and_deny_for_every_default_role() -> None:
    policy = load_policies(POLICIES)
    cases = load_policy_tests(POLICIES, policy)
    for role in ("viewer", "editor", "admin", "owner", "superadmin"):
        expectations = {c.expected for c in cases if any(r == role for _, r in c.grants)}
        # Nothing is denied to a superadmin, so there is nothing to deny-test.
        assert expectations == ({True} if role == "superadmin" else {True, False}), role


def test_default_roles_grant_what_the_design_says() -> None:
    policy = load_policies(POLICIES)
    viewer = {"documents:read", "reports:read", "workspaces:read"}
    editor = viewer | {"documents:write"}
    admin = editor | {
        "users:read",
        "users:invite",
        "users:deactivate",
        "users:reset_mfa",
        "role_management:read",
        "role_management:write",
        "role_management:define",
        "audit:read",
        "directory:manage",
        "documents:delete",
        "event_streams:write",
        "reviews:read",
        "reviews:write",
    }
    owner = admin | {"users:remove", "workspaces:update", "workspaces:delete", "settings:write"}
    owner |= {"sso:manage"}
    assert policy.effective_permissions("viewer") == viewer
    assert policy.effective_permissions("editor") == editor
    assert policy.effective_permissions("admin") == admin
    assert policy.effective_permissions("owner") == owner
    assert policy.effective_permissions("superadmin") == set(policy.permissions)
    assert "workspaces:create" not in owner


def test_catalogue_contains_the_required_permissions() -> None:
    required = {
        "users:read",
        "users:invite",
        "users:deactivate",
        "users:remove",
        "role_management:read",
        "role_management:write",
        "workspaces:read",
        "workspaces:create",
        "workspaces:update",
        "workspaces:delete",
        "audit:read",
        "settings:write",
        "documents:read",
        "documents:write",
        "documents:delete",
        "reports:read",
    }
    assert required <= set(load_policies(POLICIES).permissions)


def test_permission_enum_is_in_the_catalogue() -> None:
    catalogue = load_policies(POLICIES).permissions
    missing = sorted(p.value for p in Permission if p.value not in catalogue)
    assert not missing, f"add to policies/permissions.yaml: {missing}"


def test_permission_enum_is_sorted() -> None:
    values = [p.value for p in Permission]
    names = [p.name for p in Permission]
    assert values == sorted(values)
    assert names == sorted(names)


def test_catalogue_file_is_sorted() -> None:
    data = yaml.safe_load((POLICIES / "permissions.yaml").read_text())
    keys = list(data["permissions"])
    assert keys == sorted(keys)


def test_effective_permissions_agree_with_casbin() -> None:
    """What ``effective_permissions`` says is exactly what Casbin allows (a role granted
    in acme, or in every workspace for an installation-wide one)."""
    policy = load_policies(POLICIES)
    everywhere = policy.installation_roles()
    cases = [
        PolicyTestCase(
            source="generated",
            suite="agreement",
            name=f"{role} {permission}",
            entry=f"{role}/{permission}",
            principal=f"holder-of-{role}",
            grants=(("*" if role in everywhere else "acme", role),),
            workspace=workspace,
            resource=permission.partition(":")[0],
            action=permission.partition(":")[2],
            expected=(workspace == "acme" or role in everywhere)
            and permission in policy.effective_permissions(role),
        )
        for role in policy.role_names("acme")
        for permission in policy.permissions
        for workspace in ("acme", "globex")
    ]
    results = run_policy_tests(policy, cases, MODEL)
    assert all(r.passed for r in results), format_results(results)


# --------------------------------------------------------------------------- model


def test_rules_of_a_tiny_policy() -> None:
    policy = PolicySet(
        permissions={"documents:read": "r", "documents:write": "w", "audit:read": "a"},
        roles={
            "viewer": RoleDefinition("viewer", "v", ("documents:read",), (), None, "roles.yaml"),
            "editor": RoleDefinition(
                "editor", "e", ("documents:write",), ("viewer",), None, "roles.yaml"
            ),
            "acme_auditor": RoleDefinition(
                "acme_auditor", "a", ("audit:*",), ("viewer",), "acme", "acme.yaml"
            ),
            "root": RoleDefinition("root", "r", ("*",), (), None, "roles.yaml"),
        },
    )
    assert [str(rule) for rule in policy.rules()] == [
        "g, role:acme_auditor, role:viewer, acme",
        "g, role:editor, role:viewer, *",
        "p, role:acme_auditor, acme, audit, *, ",
        "p, role:editor, *, documents, write, ",
        "p, role:root, *, *, *, ",
        "p, role:viewer, *, documents, read, ",
    ]
    assert policy.rules() == sorted(policy.rules())
    assert all(isinstance(rule, Rule) for rule in policy.rules())


def test_role_names_include_workspace_specific_roles_only_in_their_workspace(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            "permissions.yaml": CATALOGUE,
            "roles.yaml": ROLES,
            "acme.yaml": """
                roles:
                  acme_auditor:
                    description: Audits Acme
                    workspace: acme
                    inherits: [viewer]
                    permissions: [audit:read]
            """,
        },
    )
    policy = load_policies(tmp_path)
    auditor = policy.roles["acme_auditor"]
    assert auditor.workspace == "acme"
    assert auditor.source == "acme.yaml"
    assert policy.role_names("acme") == {"viewer", "editor", "acme_auditor"}
    assert policy.role_names("globex") == {"viewer", "editor"}
    assert policy.role_names("*") == {"viewer", "editor"}
    assert Rule("p", ("role:acme_auditor", "acme", "audit", "read", "")) in policy.rules()
    assert Rule("g", ("role:acme_auditor", "role:viewer", "acme")) in policy.rules()


def test_wildcard_permissions_are_accepted(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "policy.yaml": CATALOGUE
            + """
roles:
  doc_admin:
    description: All about documents
    permissions: ["documents:*"]
  everything:
    description: Everything
    permissions: ["*"]
""",
        },
    )
    policy = load_policies(tmp_path)
    assert policy.effective_permissions("doc_admin") == {"documents:read", "documents:write"}
    assert Rule("p", ("role:doc_admin", "*", "documents", "*", "")) in policy.rules()


def test_problem_str() -> None:
    problem = PolicyProblem("roles.yaml", "roles.editor", "unknown permission 'documnts:read'")
    assert str(problem) == "roles.yaml: roles.editor: unknown permission 'documnts:read'"
    assert str(PolicyProblem("a.yaml", "", "oops")) == "a.yaml: oops"


# --------------------------------------------------------------------------- validation

ROLE_PROBLEMS = [
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documnts:read]
        """,
        "roles.yaml: roles.editor: unknown permission 'documnts:read' "
        "(did you mean 'documents:read'?)",
        id="unknown-permission",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documents.read]
        """,
        "roles.yaml: roles.editor: permission 'documents.read' is not of the form resource:action",
        id="permission-syntax",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: ["reprts:*"]
        """,
        "roles.yaml: roles.editor: unknown resource in 'reprts:*'",
        id="wildcard-unknown-resource",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: ["*:read"]
        """,
        "roles.yaml: roles.editor: permission '*:read' is not of the form resource:action",
        id="wildcard-resource",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            inherits: [viewr]
        """,
        "roles.yaml: roles.editor: inherits unknown role 'viewr'",
        id="unknown-parent",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documents:write]
            permisions: [documents:read]
        """,
        "roles.yaml: roles.editor: unknown key 'permisions'",
        id="unknown-role-key",
    ),
    pytest.param(
        """
        roles:
          Editor:
            description: Writes
            permissions: [documents:write]
        """,
        "roles.yaml: roles.Editor: role name 'Editor' must be lowercase letters, digits, "
        "'_' or '-'",
        id="role-name",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Nothing at all
        """,
        "roles.yaml: roles.editor: the role grants nothing",
        id="empty-role",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: documents:write
        """,
        "roles.yaml: roles.editor: 'permissions' must be a list, got a string",
        id="permissions-not-a-list",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documents:write]
            inherits: viewer
        """,
        "roles.yaml: roles.editor: 'inherits' must be a list, got a string",
        id="inherits-not-a-list",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documents:write, 3]
        """,
        "roles.yaml: roles.editor: 'permissions'[1] must be a string, got int",
        id="permission-not-a-string",
    ),
    pytest.param(
        """
        roles:
          editor:
            permissions: [documents:write]
        """,
        "roles.yaml: roles.editor: 'description' must be a non-empty string, got nothing",
        id="missing-description",
    ),
    pytest.param(
        """
        roles:
          editor: [documents:write]
        """,
        "roles.yaml: roles.editor: must be a mapping",
        id="role-not-a-mapping",
    ),
    pytest.param(
        """
        roles:
          - editor
        """,
        "roles.yaml: roles: must be a mapping of role name to definition, got a list",
        id="roles-not-a-mapping",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documents:write]
        groups: {}
        """,
        "roles.yaml: unknown key 'groups' (expected one of: permissions, roles)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documents:write
        """,
        "roles.yaml: line 6, column 1: YAML syntax error",
        id="yaml-syntax",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documents:write]
          editor:
            description: Writes again
            permissions: [documents:read]
        """,
        "roles.yaml: line 6, column 3: YAML syntax error: duplicate key 'editor'",
        id="duplicate-key-in-file",
    ),
    pytest.param(
        """
        - just a list
        """,
        "roles.yaml: the file must be a mapping",
        id="file-not-a-mapping",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            workspace: "*"
            permissions: [documents:write]
        """,
        "roles.yaml: roles.editor: 'workspace' cannot be '*'",
        id="workspace-star",
    ),
    pytest.param(
        """
        roles:
          editor:
            description: Writes
            permissions: [documents:write, documents:write]
        """,
        "roles.yaml: roles.editor: 'permissions' lists 'documents:write' twice",
        id="listed-twice",
    ),
]


@pytest.mark.parametrize(("roles_yaml", "expected"), ROLE_PROBLEMS)
def test_role_problems_name_file_and_entry(tmp_path: Path, roles_yaml: str, expected: str) -> None:
    write(tmp_path, {"permissions.yaml": CATALOGUE, "roles.yaml": roles_yaml})
    problems = policy_problems(tmp_path)
    assert any(p.startswith(expected) for p in problems), problems


def test_inheritance_cycle_names_the_path(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "permissions.yaml": CATALOGUE,
            "roles.yaml": """
                roles:
                  viewer:
                    description: Reads
                    inherits: [owner]
                    permissions: [documents:read]
                  editor:
                    description: Writes
                    inherits: [viewer]
                  owner:
                    description: Owns
                    inherits: [editor]
                  loner:
                    description: Inherits itself
                    inherits: [loner]
            """,
        },
    )
    problems = policy_problems(tmp_path)
    assert "roles.yaml: roles.editor: inheritance cycle: editor -> viewer -> owner -> editor" in (
        problems
    )
    assert "roles.yaml: roles.loner: inheritance cycle: loner -> loner" in problems
    assert len([p for p in problems if "cycle" in p]) == 2


def test_duplicate_role_across_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "permissions.yaml": CATALOGUE,
            "roles.yaml": ROLES,
            "team.yaml": """
                roles:
                  editor:
                    description: Another editor
                    permissions: [documents:read]
            """,
        },
    )
    assert policy_problems(tmp_path) == [
        "team.yaml: roles.editor: role 'editor' is already defined in roles.yaml"
    ]


def test_duplicate_permission_across_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "permissions.yaml": CATALOGUE,
            "roles.yaml": ROLES,
            "reports.yaml": """
                permissions:
                  documents:read: Read documents again
                  reports:read: Read reports
            """,
        },
    )
    assert policy_problems(tmp_path) == [
        "reports.yaml: permissions.documents:read: permission 'documents:read' is already "
        "defined in permissions.yaml"
    ]


@pytest.mark.parametrize(
    ("catalogue", "expected"),
    [
        (
            "permissions:\n  Documents:Read: x\n",
            "permissions.yaml: permissions.Documents:Read: permission 'Documents:Read' is "
            "not of the form resource:action",
        ),
        (
            "permissions:\n  documents:*: x\n",
            "permissions.yaml: permissions.documents:*: permission 'documents:*' is not of "
            "the form resource:action",
        ),
        (
            "permissions:\n  documents:read:\n",
            "permissions.yaml: permissions.documents:read: the description must be a "
            "non-empty string, got nothing",
        ),
        (
            "permissions: [documents:read]\n",
            "permissions.yaml: permissions: must be a mapping of permission name to "
            "description, got a list",
        ),
    ],
)
def test_catalogue_problems(tmp_path: Path, catalogue: str, expected: str) -> None:
    write(tmp_path, {"permissions.yaml": catalogue})
    assert expected in "\n".join(policy_problems(tmp_path))


def test_workspace_role_cannot_inherit_a_role_of_another_workspace(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "permissions.yaml": CATALOGUE,
            "roles.yaml": ROLES,
            "acme.yaml": """
                roles:
                  acme_auditor:
                    description: Audits Acme
                    workspace: acme
                    permissions: [audit:read]
            """,
            "globex.yaml": """
                roles:
                  globex_auditor:
                    description: Audits Globex
                    workspace: globex
                    inherits: [acme_auditor]
                  everyone_auditor:
                    description: Shared, but inherits a workspace role
                    inherits: [acme_auditor]
            """,
        },
    )
    problems = policy_problems(tmp_path)
    assert (
        "globex.yaml: roles.globex_auditor: a role of workspace 'globex' cannot inherit "
        "'acme_auditor', which is specific to workspace 'acme'" in problems
    )
    assert (
        "globex.yaml: roles.everyone_auditor: a shared role cannot inherit "
        "'acme_auditor', which is specific to workspace 'acme'" in problems
    )


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "permissions.yaml": CATALOGUE + "  bad name: x\n",
            "roles.yaml": """
                roles:
                  editor:
                    description: Writes
                    permissions: [documnts:write]
                    inherits: [nobody]
                  viewer:
                    description: Nothing
            """,
            "broken.yaml": "roles: [\n",
        },
    )
    with pytest.raises(PolicyInvalid) as info:
        load_policies(tmp_path)
    problems = info.value.extensions["problems"]
    files = {p.split(":")[0] for p in problems}
    assert files == {"permissions.yaml", "roles.yaml", "broken.yaml"}
    assert len(problems) == 5
    assert info.value.detail is not None
    assert info.value.detail.startswith("5 problems in the policy files: ")
    assert info.value.to_problem()["problems"] == problems


def test_missing_directory_and_no_files(tmp_path: Path) -> None:
    assert "does not exist" in policy_problems(tmp_path / "nope")[0]
    assert "no policy files" in policy_problems(tmp_path)[0]


def test_files_in_tests_and_other_extensions_are_not_policy_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "permissions.yaml": CATALOGUE,
            "roles.yaml": ROLES,
            "notes.yml": "not: [policy",
            "tests/x_test.yaml": "name: x\n",
            "README.md": "# hello",
        },
    )
    assert set(load_policies(tmp_path).roles) == {"viewer", "editor"}


# --------------------------------------------------------------------------- policy tests

TESTS_OK = """
name: tiny
principals:
  john: {roles: {acme: [editor], globex: [viewer]}}
  audrey: {roles: {acme: [acme_auditor]}}
tests:
  - name: editors write in acme
    principal: john
    workspace: acme
    resource: documents
    actions: {write: allow, read: allow}
  - name: viewers do not write in globex
    principal: john
    workspace: globex
    resource: documents
    actions: {write: deny, read: allow}
  - name: the acme auditor reads the acme audit log only
    principal: audrey
    workspace: acme
    resource: audit
    actions: {read: allow}
  - name: workspace roles stay in their workspace
    principal: audrey
    workspace: globex
    resource: audit
    actions: {read: deny}
"""

ACME_ROLES = """
roles:
  acme_auditor:
    description: Audits Acme
    workspace: acme
    inherits: [viewer]
    permissions: [audit:read]
"""


def tiny_policies(tmp_path: Path, tests: dict[str, str]) -> Path:
    files = {"permissions.yaml": CATALOGUE, "roles.yaml": ROLES, "acme.yaml": ACME_ROLES}
    return write(tmp_path, files | {f"tests/{name}": text for name, text in tests.items()})


def test_policy_tests_expand_per_action_and_pass(tmp_path: Path) -> None:
    directory = tiny_policies(tmp_path, {"tiny_test.yaml": TESTS_OK})
    policy = load_policies(directory)
    cases = load_policy_tests(directory)
    assert len(cases) == 6
    first = cases[0]
    assert first == PolicyTestCase(
        source="tests/tiny_test.yaml",
        suite="tiny",
        name="editors write in acme",
        entry="tests[0] 'editors write in acme'",
        principal="john",
        grants=(("acme", "editor"), ("globex", "viewer")),
        workspace="acme",
        resource="documents",
        action="write",
        expected=True,
    )
    assert first.subject == "user:john"
    assert first.permission == "documents:write"
    results = run_policy_tests(policy, cases, MODEL)
    assert [r.passed for r in results] == [True] * 6
    assert [r.actual for r in results] == [True, True, False, True, True, False]
    assert format_results(results) == "6 passed, 0 failed"


def test_failing_expectations_are_reported(tmp_path: Path) -> None:
    wrong = TESTS_OK.replace("actions: {write: deny, read: allow}", "actions: {write: allow}")
    directory = tiny_policies(tmp_path, {"tiny_test.yaml": wrong})
    policy = load_policies(directory)
    results = run_policy_tests(policy, load_policy_tests(directory, policy), MODEL)
    failed = [r for r in results if not r.passed]
    assert len(failed) == 1
    assert failed[0].actual is False
    assert format_results(results).splitlines() == [
        "FAIL tests/tiny_test.yaml: tests[1] 'viewers do not write in globex': john in "
        "globex: documents:write expected allow, got deny",
        "4 passed, 1 failed",
    ]


def test_principals_are_local_to_their_file(tmp_path: Path) -> None:
    other = """
        name: other
        principals:
          john: {roles: {globex: [editor]}}
        tests:
          - name: this john writes in globex
            principal: john
            workspace: globex
            resource: documents
            actions: {write: allow}
          - name: this john does not write in acme
            principal: john
            workspace: acme
            resource: documents
            actions: {write: deny}
    """
    directory = tiny_policies(tmp_path, {"tiny_test.yaml": TESTS_OK, "other_test.yaml": other})
    policy = load_policies(directory)
    cases = load_policy_tests(directory, policy)
    assert {c.source for c in cases} == {"tests/tiny_test.yaml", "tests/other_test.yaml"}
    results = run_policy_tests(policy, cases, MODEL)
    assert all(r.passed for r in results), format_results(results)


def test_no_tests_directory_means_no_cases(tmp_path: Path) -> None:
    write(tmp_path, {"permissions.yaml": CATALOGUE, "roles.yaml": ROLES})
    assert load_policy_tests(tmp_path) == []
    assert format_results([]) == "0 passed, 0 failed"


TEST_FILE_PROBLEMS = [
    pytest.param(
        TESTS_OK.replace("acme: [editor]", "acme: [editr]"),
        "tests/t_test.yaml: principals.john: unknown role 'editr' (did you mean 'editor'?)",
        id="unknown-role",
    ),
    pytest.param(
        TESTS_OK.replace("{acme: [acme_auditor]}", "{globex: [acme_auditor]}"),
        "tests/t_test.yaml: principals.audrey: role 'acme_auditor' is specific to "
        "workspace 'acme' and cannot be granted in 'globex'",
        id="workspace-role-elsewhere",
    ),
    pytest.param(
        TESTS_OK.replace("{acme: [acme_auditor]}", '{"*": [acme_auditor]}'),
        "tests/t_test.yaml: principals.audrey: role 'acme_auditor' is specific to "
        "workspace 'acme' and cannot be granted in every workspace ('*')",
        id="workspace-role-everywhere",
    ),
    pytest.param(
        TESTS_OK.replace(
            "principal: john\n    workspace: acme", "principal: jon\n    workspace: acme"
        ),
        "tests/t_test.yaml: tests[0] 'editors write in acme': principal 'jon' is not "
        "defined under 'principals' (defined: audrey, john)",
        id="undefined-principal",
    ),
    pytest.param(
        TESTS_OK.replace("{write: allow, read: allow}", "{write: yes}"),
        "tests/t_test.yaml: tests[0] 'editors write in acme': action 'write': expected "
        "'allow' or 'deny', got True",
        id="bad-effect",
    ),
    pytest.param(
        TESTS_OK.replace(
            "resource: documents\n    actions: {write: allow, read: allow}",
            "resource: documnts\n    actions: {write: allow}",
        ),
        "tests/t_test.yaml: tests[0] 'editors write in acme': unknown permission 'documnts:write'",
        id="unknown-permission",
    ),
    pytest.param(
        TESTS_OK.replace(
            "    workspace: acme\n    resource: documents",
            '    workspace: "*"\n    resource: documents',
        ),
        "tests/t_test.yaml: tests[0] 'editors write in acme': 'workspace' must be one "
        "workspace slug, got '*'",
        id="star-workspace",
    ),
    pytest.param(
        TESTS_OK.replace("    actions: {write: allow, read: allow}", "    actions: {}"),
        "tests/t_test.yaml: tests[0] 'editors write in acme': 'actions' must be a "
        "non-empty mapping",
        id="no-actions",
    ),
    pytest.param(
        TESTS_OK.replace(
            "    principal: john\n    workspace: acme",
            "    principal: john\n    effect: allow\n    workspace: acme",
        ),
        "tests/t_test.yaml: tests[0] 'editors write in acme': unknown key 'effect'",
        id="unknown-case-key",
    ),
    pytest.param(
        TESTS_OK.replace("name: viewers do not write in globex", "name: editors write in acme"),
        "tests/t_test.yaml: tests[1] 'editors write in acme': another test has the same name",
        id="duplicate-name",
    ),
    pytest.param(
        TESTS_OK.replace("name: tiny\n", "name: tiny\nsetup: {}\n"),
        "tests/t_test.yaml: unknown key 'setup'",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "name: tiny\nprincipals: {}\n",
        "tests/t_test.yaml: tests: must be a non-empty list, got nothing",
        id="no-tests",
    ),
    pytest.param(
        TESTS_OK.replace(
            "john: {roles: {acme: [editor], globex: [viewer]}}", "john: {roles: [editor]}"
        ),
        "tests/t_test.yaml: principals.john: 'roles' must be a mapping of workspace",
        id="roles-not-a-mapping",
    ),
    pytest.param(
        "name: tiny\ntests: [\n",
        "tests/t_test.yaml: line 3, column 1: YAML syntax error",
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("text", "expected"), TEST_FILE_PROBLEMS)
def test_test_file_problems_name_file_and_entry(tmp_path: Path, text: str, expected: str) -> None:
    directory = tiny_policies(tmp_path, {"t_test.yaml": text})
    problems = case_file_problems(directory)
    assert any(p.startswith(expected) for p in problems), problems


def test_policy_tests_need_valid_policies(tmp_path: Path) -> None:
    write(tmp_path, {"permissions.yaml": CATALOGUE, "roles.yaml": "roles: 3\n"})
    with pytest.raises(PolicyInvalid):
        load_policy_tests(tmp_path)


def test_run_refuses_cases_granting_roles_the_policy_cannot_grant(tmp_path: Path) -> None:
    directory = tiny_policies(tmp_path, {})
    policy = load_policies(directory)
    case = PolicyTestCase(
        source="manual",
        suite="manual",
        name="ghost",
        entry="case 1",
        principal="john",
        grants=(("acme", "ghost"),),
        workspace="acme",
        resource="documents",
        action="read",
        expected=False,
    )
    with pytest.raises(PolicyInvalid) as info:
        run_policy_tests(policy, [case], MODEL)
    assert info.value.extensions["problems"] == ["manual: case 1: unknown role 'ghost'"]


# --------------------------------------------------------------------------- owner-only


OWN_ROLES = """
roles:
  author:
    description: Reads everything, writes only their own documents
    permissions: [documents:read, documents:write:own]
  curator:
    description: Anything on their own documents
    permissions: ["documents:*:own"]
"""

OWN_TESTS = """
name: owners
principals:
  john: {roles: {acme: [author]}}
  mary: {roles: {acme: [curator]}}
tests:
  - name: authors write their own documents
    principal: john
    workspace: acme
    resource: documents
    owner: john
    actions: {read: allow, write: allow}
  - name: authors do not write the documents of others
    principal: john
    workspace: acme
    resource: documents
    owner: mary
    actions: {read: allow, write: deny}
  - name: without an owner an owner-only permission does not hold
    principal: john
    workspace: acme
    resource: documents
    actions: {write: deny}
  - name: curators do anything to their own documents
    principal: mary
    workspace: acme
    resource: documents
    owner: mary
    actions: {read: allow, write: allow}
"""


def test_owner_only_permissions_load_test_and_expand(tmp_path: Path) -> None:
    directory = write(
        tmp_path,
        {"permissions.yaml": CATALOGUE, "roles.yaml": OWN_ROLES, "tests/own_test.yaml": OWN_TESTS},
    )
    policy = load_policies(directory)
    assert Rule("p", ("role:author", "*", "documents", "write", "owner")) in policy.rules()
    assert Rule("p", ("role:author", "*", "documents", "read", "")) in policy.rules()
    assert Rule("p", ("role:curator", "*", "documents", "*", "owner")) in policy.rules()
    assert policy.effective_permissions("author") == {"documents:read", "documents:write:own"}
    assert policy.effective_permissions("curator") == {
        "documents:read:own",
        "documents:write:own",
    }
    cases = load_policy_tests(directory, policy)
    assert [c.owner for c in cases[:2]] == ["john", "john"]
    assert cases[0].owner_subject == "user:john"
    assert cases[4].owner is None and cases[4].owner_subject == ""
    results = run_policy_tests(policy, cases, MODEL)
    assert format_results(results) == f"{len(cases)} passed, 0 failed"


def test_owner_only_failures_name_the_owner(tmp_path: Path) -> None:
    wrong = OWN_TESTS.replace("actions: {read: allow, write: deny}", "actions: {write: allow}")
    directory = write(
        tmp_path,
        {"permissions.yaml": CATALOGUE, "roles.yaml": OWN_ROLES, "tests/own_test.yaml": wrong},
    )
    output = format_results(
        run_policy_tests(load_policies(directory), load_policy_tests(directory), MODEL)
    )
    assert "john in acme: documents:write (owned by mary) expected allow, got deny" in output


@pytest.mark.parametrize(
    ("permission", "expected"),
    [
        ("documents:write:mine", "has an unknown condition"),
        ("documents:write:own:own", "has an unknown condition"),
        ("documnts:write:own", "unknown permission 'documnts:write'"),
        ("*:own", "is not of the form resource:action"),
        ("*:*:own", "is not of the form resource:action"),
    ],
)
def test_owner_only_permission_problems(tmp_path: Path, permission: str, expected: str) -> None:
    roles = f"roles:\n  author:\n    description: A\n    permissions: ['{permission}']\n"
    write(tmp_path, {"permissions.yaml": CATALOGUE, "roles.yaml": roles})
    problems = policy_problems(tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_test_owner_must_be_a_principal(tmp_path: Path) -> None:
    text = OWN_TESTS.replace("owner: mary", "owner: morty")
    directory = write(
        tmp_path,
        {"permissions.yaml": CATALOGUE, "roles.yaml": OWN_ROLES, "tests/own_test.yaml": text},
    )
    with pytest.raises(PolicyInvalid) as info:
        load_policy_tests(directory)
    assert "owner 'morty' is not defined under 'principals' (defined: john, mary)" in str(
        info.value.extensions["problems"]
    )
