"""policies/schema.json stays in step with the validator (gateway.policy).

Every shipped file and every valid example is accepted by both the schema and
``ringfence policy validate``/``test``; every shape error the validator documents is
refused by both; and the errors a schema cannot see (a permission missing from the
catalogue, an unknown role, a cycle...) are pinned as the validator's alone, so the
boundary written in the schema's description and policies/README.md stays true.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from gateway.errors import PolicyInvalid
from gateway.policy.testing import TEST_FILE_SUFFIX, TESTS_DIRNAME, load_policy_tests
from gateway.policy.validation import load_policies

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "policies" / "schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema_rs.Draft202012Validator(SCHEMA)
# Every policy directory the project ships or tests with.
POLICY_DIRS = [ROOT / "policies", ROOT / "tests" / "conformance" / "authzen" / "policies"]
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)

BASE = {
    "permissions.yaml": """
        permissions:
          documents:read: Read documents
          documents:write: Write documents
          todos:update: Change todos
        """,
    "roles.yaml": """
        roles:
          viewer:
            description: Reads
            permissions: [documents:read]
        """,
}
PRINCIPALS = "principals: {john: {roles: {acme: [viewer]}}}\n"


def schema_errors(text: str) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(yaml.safe_load(text))]


def validator_problems(tmp_path: Path, name: str, text: str) -> list[str]:
    """The validator's problems for ``BASE`` plus ``name`` (a policy file, or a test
    file under tests/); empty when it accepts the directory."""
    files = {**BASE, name: text}
    for file, body in files.items():
        path = tmp_path / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    try:
        load_policy_tests(tmp_path, load_policies(tmp_path))
    except PolicyInvalid as exc:
        problems = exc.extensions["problems"]
        assert isinstance(problems, list)
        return [str(problem) for problem in problems]
    return []


def shipped_files() -> list[Path]:
    files = []
    for directory in POLICY_DIRS:
        # The conformance directory links the product's files (symlinks): check them once.
        files += sorted(path for path in directory.glob("*.yaml") if not path.is_symlink())
        files += sorted((directory / TESTS_DIRNAME).glob(f"*{TEST_FILE_SUFFIX}"))
    return files


def test_the_schema_is_a_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert jsonschema_rs.meta.is_valid(SCHEMA)


def test_there_are_shipped_files_in_every_policy_directory() -> None:
    for directory in POLICY_DIRS:
        assert any(path.parent == directory for path in shipped_files()), directory


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_file_names_the_schema_and_validates(path: Path) -> None:
    """The editor finds the schema through the modeline (a path relative to the file),
    and the file is valid under it."""
    text = path.read_text()
    match = MODELINE.search(text)
    assert match, f"{path.name}: no '# yaml-language-server: $schema=...' line"
    assert (path.parent / match.group(1)).resolve() == SCHEMA_PATH
    assert schema_errors(text) == []


@pytest.mark.parametrize("directory", POLICY_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_directory_passes_the_validator(directory: Path) -> None:
    load_policy_tests(directory, load_policies(directory))


# --------------------------------------------------------------------------- valid

VALID = {
    "empty file": ("extra.yaml", ""),
    "permissions only": ("extra.yaml", "permissions: {reports:read: Read reports}"),
    "empty sections": ("extra.yaml", "permissions: {}\nroles: {}"),
    "every permission form": (
        "extra.yaml",
        """
        roles:
          janitor:
            description: Anything on their own todos, reads everything
            permissions: ["todos:*:own", documents:read, "documents:*", "*", todos:update:own]
        """,
    ),
    "inherits only, workspace role": (
        "extra.yaml",
        """
        roles:
          acme_reader-2:
            description: Acme's reader
            workspace: acme.corp_1
            inherits: [viewer]
            permissions: null
        """,
    ),
    "installation-wide role": (
        "extra.yaml",
        """
        roles:
          root:
            description: Everything, everywhere
            scope: installation
            permissions: ["*"]
          root_too:
            description: Inherits it, installation-wide as well
            scope: installation
            inherits: [root]
          reader:
            description: Scope given as the default
            scope: workspace
            permissions: [documents:read]
        """,
    ),
    "shared role with workspace null": (
        "extra.yaml",
        "roles: {reader: {description: R, workspace: null, permissions: [documents:read]}}",
    ),
    "test file": (
        "tests/a_test.yaml",
        """
        name: suite
        description: about it
        principals:
          john.doe@example.com: {roles: {acme: [viewer], "*": [viewer]}}
          nobody: {roles: {}}
          empty: {roles: {acme: null}}
        tests:
          - name: reads
            description: why
            principal: john.doe@example.com
            workspace: Acme.1
            resource: documents
            owner: nobody
            actions: {read: allow, write: deny}
          - name: nothing
            principal: nobody
            workspace: acme
            resource: todos
            owner: null
            actions: {update: deny}
        """,
    ),
}


@pytest.mark.parametrize("example", VALID)
def test_valid_examples_pass_both(example: str, tmp_path: Path) -> None:
    name, text = VALID[example]
    assert validator_problems(tmp_path, name, text) == []
    assert schema_errors(textwrap.dedent(text)) == []


# --------------------------------------------------------------------------- invalid

# Each shape error the validator reports (a fragment of its message), with a file that
# has it: the schema refuses the file too.
INVALID = {
    "not a mapping": ("extra.yaml", "[a, b]", "the file must be a mapping"),
    "unknown top-level key": ("extra.yaml", "rolse: {}", "unknown key 'rolse'"),
    "permissions not a mapping": ("extra.yaml", "permissions: [a:b]", "must be a mapping"),
    "permission without action": (
        "extra.yaml",
        "permissions: {documents: Docs}",
        "is not of the form resource:action",
    ),
    "permission in capitals": (
        "extra.yaml",
        "permissions: {Reports:read: Read}",
        "is not of the form resource:action",
    ),
    "wildcard in the catalogue": (
        "extra.yaml",
        "permissions: {'reports:*': All}",
        "is not of the form resource:action",
    ),
    "empty permission description": (
        "extra.yaml",
        "permissions: {reports:read: '  '}",
        "the description must be a non-empty string",
    ),
    "permission description not a string": (
        "extra.yaml",
        "permissions: {reports:read: 3}",
        "the description must be a non-empty string",
    ),
    "roles not a mapping": ("extra.yaml", "roles: [viewer]", "must be a mapping of role name"),
    "role name in capitals": (
        "extra.yaml",
        "roles: {Reader: {description: R, permissions: [documents:read]}}",
        "must be lowercase letters",
    ),
    "role not a mapping": ("extra.yaml", "roles: {reader: documents:read}", "must be a mapping"),
    "misspelled role key": (
        "extra.yaml",
        "roles: {reader: {description: R, permisions: [documents:read]}}",
        "unknown key 'permisions'",
    ),
    "missing description": (
        "extra.yaml",
        "roles: {reader: {permissions: [documents:read]}}",
        "'description' must be a non-empty string",
    ),
    "empty description": (
        "extra.yaml",
        "roles: {reader: {description: '', permissions: [documents:read]}}",
        "'description' must be a non-empty string",
    ),
    "role grants nothing": (
        "extra.yaml",
        "roles: {reader: {description: R}}",
        "the role grants nothing",
    ),
    "role with empty lists": (
        "extra.yaml",
        "roles: {reader: {description: R, permissions: [], inherits: []}}",
        "the role grants nothing",
    ),
    "permissions not a list": (
        "extra.yaml",
        "roles: {reader: {description: R, permissions: documents:read}}",
        "'permissions' must be a list",
    ),
    "permission not a string": (
        "extra.yaml",
        "roles: {reader: {description: R, permissions: [documents:read, 3]}}",
        "'permissions'[1] must be a string",
    ),
    "permission listed twice": (
        "extra.yaml",
        "roles: {reader: {description: R, permissions: [documents:read, documents:read]}}",
        "lists 'documents:read' twice",
    ),
    "role permission without action": (
        "extra.yaml",
        "roles: {reader: {description: R, permissions: [documents]}}",
        "is not of the form resource:action",
    ),
    "unknown condition": (
        "extra.yaml",
        "roles: {reader: {description: R, permissions: ['documents:read:mine']}}",
        "has an unknown condition",
    ),
    "own on everything": (
        "extra.yaml",
        "roles: {reader: {description: R, permissions: ['*:own']}}",
        "is not of the form resource:action",
    ),
    "inherits not a list": (
        "extra.yaml",
        "roles: {reader: {description: R, inherits: viewer}}",
        "'inherits' must be a list",
    ),
    "workspace star": (
        "extra.yaml",
        "roles: {reader: {description: R, workspace: '*', inherits: [viewer]}}",
        "'workspace' cannot be '*'",
    ),
    "workspace not a slug": (
        "extra.yaml",
        "roles: {reader: {description: R, workspace: 'a b', inherits: [viewer]}}",
        "is not a workspace slug",
    ),
    "workspace not a string": (
        "extra.yaml",
        "roles: {reader: {description: R, workspace: [acme], inherits: [viewer]}}",
        "'workspace' must be a workspace slug",
    ),
    "unknown scope": (
        "extra.yaml",
        "roles: {reader: {description: R, scope: instalation, inherits: [viewer]}}",
        "'scope' must be one of: workspace, installation, got 'instalation' (did you mean",
    ),
    "scope not a string": (
        "extra.yaml",
        "roles: {reader: {description: R, scope: [installation], inherits: [viewer]}}",
        "'scope' must be one of: workspace, installation, got a list",
    ),
    "installation-wide role of one workspace": (
        "extra.yaml",
        "roles: {reader: {description: R, scope: installation, workspace: acme, "
        + "inherits: [viewer]}}",
        "an installation-wide role (scope: installation) cannot belong to workspace 'acme'",
    ),
    # ---- test files
    "test file not a mapping": ("tests/a_test.yaml", "[a]", "a test file must be a mapping"),
    "test file unknown key": (
        "tests/a_test.yaml",
        "name: s\nprincipal: {}\n" + PRINCIPALS + "tests: [{name: t}]",
        "unknown key 'principal'",
    ),
    "test file without name": (
        "tests/a_test.yaml",
        PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "actions: {read: allow}}]",
        "tests/a_test.yaml: name: must be a non-empty string",
    ),
    "test file description not a string": (
        "tests/a_test.yaml",
        "name: s\ndescription: [x]\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "actions: {read: allow}}]",
        "description: must be a string",
    ),
    "test file without principals": (
        "tests/a_test.yaml",
        "name: s\ntests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "actions: {read: allow}}]",
        "principals: must be a mapping",
    ),
    "principal name with a space": (
        "tests/a_test.yaml",
        "name: s\nprincipals: {'john doe': {roles: {}}}\ntests: [{name: t}]",
        "principal name 'john doe'",
    ),
    "principal without roles": (
        "tests/a_test.yaml",
        "name: s\nprincipals: {john: {grants: {}}}\ntests: [{name: t}]",
        "unknown key 'grants'",
    ),
    "principal roles not a mapping": (
        "tests/a_test.yaml",
        "name: s\nprincipals: {john: {roles: [viewer]}}\ntests: [{name: t}]",
        "'roles' must be a mapping of workspace",
    ),
    "principal roles in a bad workspace": (
        "tests/a_test.yaml",
        "name: s\nprincipals: {john: {roles: {'a b': [viewer]}}}\ntests: [{name: t}]",
        "'a b' is not a workspace slug or '*'",
    ),
    "principal roles not a list": (
        "tests/a_test.yaml",
        "name: s\nprincipals: {john: {roles: {acme: viewer}}}\ntests: [{name: t}]",
        "'roles.acme' must be a list",
    ),
    "no tests": ("tests/a_test.yaml", "name: s\n" + PRINCIPALS + "tests: []", "non-empty list"),
    "test without name": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{principal: john, workspace: acme, resource: documents, "
        + "actions: {read: allow}}]",
        "'name' must be a non-empty string",
    ),
    "test with unknown key": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "action: read, actions: {read: allow}}]",
        "unknown key 'action'",
    ),
    "test description not a string": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, description: 3, principal: john, workspace: acme, "
        + "resource: documents, actions: {read: allow}}]",
        "'description' must be a string, got int",
    ),
    "test without principal": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, workspace: acme, resource: documents, actions: {read: allow}}]",
        "'principal' is missing",
    ),
    "test in every workspace": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: '*', resource: documents, "
        + "actions: {read: allow}}]",
        "'workspace' must be one workspace slug",
    ),
    "test resource with a colon": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: 'documents:read', "
        + "actions: {read: allow}}]",
        "'resource' must be a resource name",
    ),
    "test without actions": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "actions: {}}]",
        "'actions' must be a non-empty mapping",
    ),
    "yes instead of allow": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "actions: {read: yes}}]",
        "expected 'allow' or 'deny', got True",
    ),
    "action in capitals": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "actions: {Read: allow}}]",
        "'Read' is not an action name",
    ),
}


@pytest.mark.parametrize("example", INVALID)
def test_invalid_examples_fail_both(example: str, tmp_path: Path) -> None:
    name, text, message = INVALID[example]
    problems = validator_problems(tmp_path, name, text)
    assert any(message in problem for problem in problems), problems
    assert schema_errors(textwrap.dedent(text)) != []


# Errors that need more than one file, the catalogue or the test's principals: the
# validator's alone. The schema accepts these files; `validate`/`test` refuse them.
VALIDATOR_ONLY = {
    "permission not in the catalogue": (
        "extra.yaml",
        "roles: {reader: {description: R, permissions: [documnts:read]}}",
        "unknown permission 'documnts:read' (did you mean 'documents:read'?)",
    ),
    "inherits an unknown role": (
        "extra.yaml",
        "roles: {reader: {description: R, inherits: [viewr]}}",
        "inherits unknown role 'viewr'",
    ),
    "inheritance cycle": (
        "extra.yaml",
        "roles: {a: {description: A, inherits: [b]}, b: {description: B, inherits: [a]}}",
        "inheritance cycle: a -> b -> a",
    ),
    "defined twice": (
        "extra.yaml",
        "permissions: {documents:read: Again}",
        "is already defined in",
    ),
    "a workspace role inherits an installation-wide one": (
        "extra.yaml",
        "roles: {root: {description: R, scope: installation, permissions: ['*']}, "
        + "deputy: {description: D, inherits: [root]}}",
        "a role granted per workspace cannot inherit 'root', which is installation-wide only",
    ),
    "undefined principal": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: veera, workspace: acme, resource: documents, "
        + "actions: {read: allow}}]",
        "principal 'veera' is not defined",
    ),
    "same test name twice": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "actions: {read: allow}}, {name: t, principal: john, workspace: acme, "
        + "resource: documents, actions: {write: deny}}]",
        "another test has the same name",
    ),
    "test of an unknown permission": (
        "tests/a_test.yaml",
        "name: s\n"
        + PRINCIPALS
        + "tests: [{name: t, principal: john, workspace: acme, resource: documents, "
        + "actions: {delete: deny}}]",
        "unknown permission 'documents:delete'",
    ),
}


@pytest.mark.parametrize("example", VALIDATOR_ONLY)
def test_what_only_the_validator_refuses(example: str, tmp_path: Path) -> None:
    name, text, message = VALIDATOR_ONLY[example]
    problems = validator_problems(tmp_path, name, text)
    assert any(message in problem for problem in problems), problems
    assert schema_errors(textwrap.dedent(text)) == []
