"""The AuthZEN mapping (gateway.services.authzen) over a real engine: validation, batch
defaults and semantics, owner-only permissions, the searches and their page tokens."""

from __future__ import annotations

import json
import re
from typing import Any, get_args, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import PROJECT_ROOT
from gateway.engine.engine import DecisionEngine, RuleAdded, SubjectChanged, WorkspaceAdded
from gateway.engine.rules import GrantKey, grant_rule, inheritance_rule, permission_rule
from gateway.errors import BadRequest, PayloadTooLarge
from gateway.policy.validation import catalogue_actions
from gateway.services.authzen.directories import Refinements, SubjectDirectory, load_refinements
from gateway.services.authzen.paging import PageTokens
from gateway.services.authzen.resources import ResourceDirectory, load_resource_directory
from gateway.services.authzen.service import AuthZenService
from gateway.services.authzen.wire import (
    SEMANTICS,
    Action,
    Entity,
    TypedOptions,
    _Invalid,
    parse_action,
    parse_action_in_steps,
    parse_entity,
    parse_entity_in_steps,
)
from gateway.services.decisions import DecisionService
from tests.casbin_reference import MODEL
from tests.helpers import AUTHZEN_POLICIES

RICK, MORTY, BETH, GONE = 1, 2, 3, 4
EMAILS = {
    RICK: "rick@citadel.test",
    MORTY: "morty@citadel.test",
    BETH: "beth@smiths.test",
    GONE: "gone@smiths.test",
}
DIRECTORY = {
    "beth": "beth@smiths.test",
    "opaque-rick": {"email": "rick@citadel.test", "name": "Rick"},
    "rick@citadel.test": {"email": "rick@citadel.test"},
    "morty": "morty@citadel.test",
}


@pytest.fixture
def engine() -> DecisionEngine:
    engine = DecisionEngine(MODEL)
    rules = [
        permission_rule("reader", "todo:read", "todo"),
        permission_rule("writer", "todo:update:own", "todo"),
        permission_rule("writer", "todo:create", "todo"),
        inheritance_rule("writer", "reader", "todo"),
        permission_rule("boss", "todo:update", "todo"),
        inheritance_rule("boss", "writer", "todo"),
        permission_rule("reader", "todo:read", "other"),
    ]
    grants = [
        GrantKey(RICK, "boss", "todo"),
        GrantKey(MORTY, "writer", "todo"),
        GrantKey(BETH, "reader", "todo"),
        GrantKey(BETH, "reader", "other"),
        GrantKey(GONE, "boss", "todo"),
    ]
    engine.apply(
        [
            WorkspaceAdded("todo"),
            WorkspaceAdded("other"),
            *(SubjectChanged(uid, email, active=uid != GONE) for uid, email in EMAILS.items()),
            *(RuleAdded(rule) for rule in rules),
            *(RuleAdded(grant_rule(grant)) for grant in grants),
        ],
        revision=7,
    )
    return engine


@pytest.fixture
def authzen(engine: DecisionEngine) -> AuthZenService:
    return service(engine)


def service(engine: DecisionEngine, **options: Any) -> AuthZenService:
    """The AuthZEN service over ``engine`` with the test directory (and ``options``)."""
    return AuthZenService(
        DecisionService(engine),
        SubjectDirectory.from_mapping(DIRECTORY),
        PageTokens("secret"),
        max_evaluations=5,
        emails_of=lambda ids: {i: EMAILS[i] for i in ids if i in EMAILS},
        **options,
    )


def question(
    subject: str = "morty",
    action: str = "read",
    owner: str | None = None,
    workspace: str | None = None,
    type_: str = "todo",
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if owner is not None:
        properties["ownerID"] = owner
    if workspace is not None:
        properties["workspace"] = workspace
    return {
        "subject": {"type": "user", "id": subject},
        "action": {"name": action},
        "resource": {"type": type_, "id": "t-1", "properties": properties},
    }


def decide(authzen: AuthZenService, body: Any, scope: str | None = "todo") -> bool:
    answer = authzen.evaluate(body, scope)
    assert answer["context"]["revision"] == 7
    return bool(answer["decision"])


# -- one evaluation ---------------------------------------------------------------------


def test_subjects_by_alias_email_or_id_and_names_lowercased(authzen: AuthZenService) -> None:
    for subject in ("opaque-rick", "rick@citadel.test", "RICK@citadel.test", "1", "user:1"):
        assert decide(authzen, question(subject, "update")), subject
    body = question("morty", "READ", type_="Todo")
    assert decide(authzen, body)
    assert not decide(authzen, question("morty", "delete"))
    # Unknown, inactive, other types and other workspaces: denied, with the reason.
    for subject in ("nobody", "gone@smiths.test", "4"):
        answer = authzen.evaluate(question(subject), "todo")
        assert answer["decision"] is False and answer["context"]["reason_admin"]["en"]
    robot = question()
    robot["subject"]["type"] = "robot"
    assert authzen.evaluate(robot, "todo")["context"]["reason_admin"] == {
        "en": "unknown subject type"
    }
    assert not decide(authzen, question("beth", "read"), "nowhere")


def test_owner_only_permissions_follow_the_owner_id(authzen: AuthZenService) -> None:
    assert decide(authzen, question("morty", "update", owner="morty@citadel.test"))
    assert decide(authzen, question("morty", "update", owner="morty"))  # an alias too
    assert not decide(authzen, question("morty", "update", owner="rick@citadel.test"))
    assert not decide(authzen, question("morty", "update"))  # no owner: nobody's own
    assert not decide(authzen, question("beth", "update", owner="beth@smiths.test"))
    assert decide(authzen, question("rick@citadel.test", "update", owner="morty"))


def test_the_workspace_comes_from_the_url_or_the_resource(authzen: AuthZenService) -> None:
    assert decide(authzen, question("beth", workspace="other"), None)
    assert decide(authzen, question("beth", workspace="todo"), "todo")
    # A resource naming another workspace than the URL's is denied, not re-scoped.
    assert not decide(authzen, question("beth", workspace="other"), "todo")
    with pytest.raises(BadRequest) as refused:
        authzen.evaluate(question("beth"), None)
    [message] = refused.value.extensions["errors"]["resource"]["properties"]["workspace"]
    assert "/pdp/<workspace>/" in message


MISSING = ["Missing data for required field."]
NOT_OBJECT = ["Not a valid object."]


@pytest.mark.parametrize(
    ("change", "errors"),
    [
        (lambda b: b.pop("subject"), {"subject": MISSING}),
        (lambda b: b["subject"].pop("id"), {"subject": {"id": MISSING}}),
        (lambda b: b["subject"].pop("type"), {"subject": {"type": MISSING}}),
        (lambda b: b.update(subject="rick"), {"subject": NOT_OBJECT}),
        (lambda b: b["action"].update(name=123), {"action": {"name": ["Not a valid string."]}}),
        (
            lambda b: b["action"].update(name=""),
            {"action": {"name": ["Length must be between 1 and 255."]}},
        ),
        (lambda b: b["resource"].pop("id"), {"resource": {"id": MISSING}}),
        (lambda b: b["resource"].update(properties=[]), {"resource": {"properties": NOT_OBJECT}}),
        (lambda b: b.update(context="x"), {"context": NOT_OBJECT}),
    ],
)
def test_invalid_requests_are_refused_with_what_is_wrong(
    authzen: AuthZenService, change: Any, errors: dict[str, Any]
) -> None:
    body = question()
    change(body)
    with pytest.raises(BadRequest) as refused:
        authzen.evaluate(body, "todo")
    assert refused.value.extensions["errors"] == errors


def test_unknown_fields_are_ignored(authzen: AuthZenService) -> None:
    body = {**question("beth"), "future": {"x": 1}, "context": {"ip": "10.0.0.1"}}
    body["subject"]["properties"] = {"role": "boss"}  # claims about the subject change nothing
    assert decide(authzen, body)
    body["action"] = {"name": "update", "properties": {"soft": True}}
    assert not decide(authzen, body)
    for bad in ([], "x", None, 3):
        with pytest.raises(BadRequest):
            authzen.evaluate(bad, "todo")


# -- batches ----------------------------------------------------------------------------


def decisions(answer: dict[str, Any]) -> list[bool]:
    return [item["decision"] for item in answer["evaluations"]]


def test_items_replace_the_defaults_whole(authzen: AuthZenService) -> None:
    body = {
        "subject": {"type": "user", "id": "morty"},
        "action": {"name": "update"},
        "resource": {"type": "todo", "id": "t", "properties": {"ownerID": "morty"}},
        "evaluations": [
            {},
            # The item's resource replaces the default one, properties included.
            {"resource": {"type": "todo", "id": "t2"}},
            {"subject": {"type": "user", "id": "beth@smiths.test"}},
            {"action": {"name": "read"}, "resource": {"type": "todo", "id": "t3"}},
            {"subject": {"type": "user", "id": "opaque-rick"}, "context": {"x": 1}},
        ],
    }
    answer = authzen.evaluate_many(body, "todo")
    assert decisions(answer) == [True, False, False, True, True]
    assert all(item["context"]["revision"] == 7 for item in answer["evaluations"])


def test_an_invalid_item_is_a_deny_saying_why(authzen: AuthZenService) -> None:
    body = {
        "subject": {"type": "user", "id": "beth"},
        "action": {"name": "read"},
        "evaluations": [
            {"resource": {"type": "todo", "id": "t"}},
            {},
            "not an object",
            {"resource": {"type": "todo", "id": "t"}, "action": {"name": 5}},
        ],
    }
    answer = authzen.evaluate_many(body, "todo")
    assert decisions(answer) == [True, False, False, False]
    assert "error" not in answer["evaluations"][0]["context"]
    errors = [item["context"]["error"] for item in answer["evaluations"][1:]]
    assert [e["status"] for e in errors] == [400, 400, 400]
    assert "resource" in errors[0]["message"] and "action.name" in errors[2]["message"]


def test_semantics_stop_where_they_say(authzen: AuthZenService) -> None:
    items = [{"action": {"name": a}} for a in ("read", "create", "delete", "read", "delete")]
    body = {
        "subject": {"type": "user", "id": "morty"},
        "resource": {"type": "todo", "id": "t"},
        "evaluations": items,
    }
    assert decisions(authzen.evaluate_many(body, "todo")) == [True, True, False, True, False]
    body["options"] = {"evaluations_semantic": "execute_all"}
    assert decisions(authzen.evaluate_many(body, "todo")) == [True, True, False, True, False]
    body["options"] = {"evaluations_semantic": "deny_on_first_deny"}
    assert decisions(authzen.evaluate_many(body, "todo")) == [True, True, False]
    body["options"] = {"evaluations_semantic": "permit_on_first_permit"}
    assert decisions(authzen.evaluate_many(body, "todo")) == [True]
    body["evaluations"] = items[2:]
    assert decisions(authzen.evaluate_many(body, "todo")) == [False, True]
    body["options"] = {"evaluations_semantic": "first_come"}
    with pytest.raises(BadRequest):
        authzen.evaluate_many(body, "todo")


def test_without_items_a_batch_is_one_evaluation(authzen: AuthZenService) -> None:
    body = question("morty", "create")
    assert authzen.evaluate_many(body, "todo") == authzen.evaluate(body, "todo")
    assert authzen.evaluate_many({**body, "evaluations": []}, "todo")["decision"] is True
    with pytest.raises(BadRequest):
        authzen.evaluate_many({"evaluations": []}, "todo")
    with pytest.raises(BadRequest):
        authzen.evaluate_many({**body, "evaluations": {"a": 1}}, "todo")


def test_batches_have_a_maximum(authzen: AuthZenService) -> None:
    body = {**question(), "evaluations": [{}] * 5}
    assert len(authzen.evaluate_many(body, "todo")["evaluations"]) == 5
    with pytest.raises(PayloadTooLarge):
        authzen.evaluate_many({**body, "evaluations": [{}] * 6}, "todo")


# -- searches ---------------------------------------------------------------------------


def subject_search(action: str, owner: str | None = None, **page: Any) -> dict[str, Any]:
    body = question(action=action, owner=owner)
    body["subject"] = {"type": "user"}
    if page:
        body["page"] = page
    return body


def ids(answer: dict[str, Any]) -> list[str]:
    return [item.get("id", item.get("name")) for item in answer["results"]]


def test_subject_search_is_exactly_who_may(authzen: AuthZenService) -> None:
    # Active users only, in the order of their ids; named by their first alias, else
    # their email.
    assert ids(authzen.search_subjects(subject_search("read"), "todo")) == [
        "opaque-rick",
        "morty",
        "beth",
    ]
    assert ids(authzen.search_subjects(subject_search("update"), "todo")) == ["opaque-rick"]
    owned = subject_search("update", owner="morty@citadel.test")
    assert ids(authzen.search_subjects(owned, "todo")) == ["opaque-rick", "morty"]
    assert ids(authzen.search_subjects(subject_search("read"), "other")) == ["beth"]
    spaceship = subject_search("read")
    spaceship["subject"]["type"] = "spaceship"
    assert authzen.search_subjects(spaceship, "todo")["results"] == []
    assert authzen.search_subjects(subject_search("read"), "nowhere")["results"] == []
    missing = subject_search("read")
    del missing["resource"]["id"]
    with pytest.raises(BadRequest):
        authzen.search_subjects(missing, "todo")


def test_pages_follow_the_token_to_the_end(authzen: AuthZenService) -> None:
    seen: list[str] = []
    answer = authzen.search_subjects(subject_search("read", limit=2), "todo")
    assert answer["page"]["count"] == 2 and answer["page"]["total"] == 3
    seen += ids(answer)
    token = answer["page"]["next_token"]
    assert token
    answer = authzen.search_subjects(subject_search("read", limit=2, token=token), "todo")
    seen += ids(answer)
    assert answer["page"]["next_token"] == ""
    assert seen == ["opaque-rick", "morty", "beth"]

    # A token is bound to its query and cannot be made up or altered.
    for bad in (token[:-2] + "xx", "a.b", "", "x" * 40, token.replace(".", "")):
        if not bad:
            continue
        with pytest.raises(BadRequest):
            authzen.search_subjects(subject_search("read", limit=2, token=bad), "todo")
    with pytest.raises(BadRequest):
        authzen.search_subjects(subject_search("create", limit=2, token=token), "todo")
    with pytest.raises(BadRequest):
        authzen.search_subjects(subject_search("read", limit=3, token=token), "todo")
    other = AuthZenService(
        authzen.decisions,
        authzen.directory,
        PageTokens("another secret"),
        max_evaluations=5,
        emails_of=authzen.emails_of,
    )
    with pytest.raises(BadRequest):
        other.search_subjects(subject_search("read", limit=2, token=token), "todo")
    for limit in (0, -1, 1001, "2", True):
        with pytest.raises(BadRequest):
            authzen.search_subjects(subject_search("read", limit=limit), "todo")


def test_action_search_applies_the_owner_condition(authzen: AuthZenService) -> None:
    body: dict[str, Any] = question("morty")
    del body["action"]
    assert ids(authzen.search_actions(body, "todo")) == ["create", "read"]
    body["resource"]["properties"] = {"ownerID": "morty@citadel.test"}
    assert ids(authzen.search_actions(body, "todo")) == ["create", "read", "update"]
    body["subject"]["id"] = "nobody"
    assert ids(authzen.search_actions(body, "todo")) == []
    body["subject"] = {"type": "user"}
    with pytest.raises(BadRequest):
        authzen.search_actions(body, "todo")


def test_action_search_reads_wildcards_as_the_catalogues_actions(engine: DecisionEngine) -> None:
    # Beth may do anything on todos, but delete and archive only on her own; Morty holds
    # everything everywhere. The catalogue knows todo's create, read, update, delete
    # and archive (the rules name no delete or archive).
    engine.apply(
        [
            RuleAdded(permission_rule("owner", "todo:*:own", "todo")),
            RuleAdded(permission_rule("janitor", "todo:*", "todo")),
            RuleAdded(permission_rule("god", "*", "*")),
            RuleAdded(grant_rule(GrantKey(BETH, "owner", "todo"))),
            RuleAdded(grant_rule(GrantKey(MORTY, "god", "*"))),
        ],
        revision=7,
    )
    catalogue = {"todo": ["create", "read", "update", "delete", "archive"], "user": ["read"]}
    authzen = service(engine, catalogue=lambda: catalogue)
    body: dict[str, Any] = {"subject": {"type": "user", "id": "beth"}}
    body["resource"] = {"type": "todo", "id": "1", "properties": {"ownerID": "beth"}}
    everything = ["archive", "create", "delete", "read", "update"]
    assert ids(authzen.search_actions(body, "todo")) == everything
    body["resource"]["properties"] = {"ownerID": "morty"}
    assert ids(authzen.search_actions(body, "todo")) == ["read"]  # her reader grant
    body["subject"]["id"] = "morty"
    assert ids(authzen.search_actions(body, "todo")) == everything
    assert ids(authzen.search_actions(body, "other")) == everything
    # Without a catalogue, a wildcard names no action: only what rules name is listed
    # (Morty's writer grant; he owns the todo).
    bare = service(engine)
    assert ids(bare.search_actions(body, "todo")) == ["create", "read", "update"]


def test_the_shipped_catalogue_lists_actions_per_resource() -> None:
    actions = catalogue_actions(AUTHZEN_POLICIES)
    assert actions["record"] == {"delete", "read", "soft_delete", "write"}
    assert actions["legal_record"] == {"delete", "edit", "view"}
    assert catalogue_actions(PROJECT_ROOT / "no-such-folder") == {}


def test_resource_search_says_where_and_whose(authzen: AuthZenService) -> None:
    body: dict[str, Any] = question("beth")
    body["resource"] = {"type": "todo"}
    assert authzen.search_resources(body, None)["results"] == [
        {"type": "todo", "id": "*", "properties": {"workspace": "other"}},
        {"type": "todo", "id": "*", "properties": {"workspace": "todo"}},
    ]
    assert ids(authzen.search_resources(body, "todo")) == ["*"]
    body["subject"]["id"] = "morty"
    body["action"]["name"] = "update"
    assert authzen.search_resources(body, "todo")["results"] == [
        {"type": "todo", "id": "*", "properties": {"workspace": "todo", "ownerID": "morty"}}
    ]
    body["subject"]["id"] = "nobody"
    assert authzen.search_resources(body, None)["results"] == []
    body["subject"] = {"type": "user"}
    with pytest.raises(BadRequest):
        authzen.search_resources(body, None)


# -- directory and discovery ------------------------------------------------------------


def test_subject_directory() -> None:
    directory = SubjectDirectory.from_mapping(DIRECTORY)
    assert directory.email_of("opaque-rick") == "rick@citadel.test"
    assert directory.email_of("unknown") == "unknown"
    assert directory.public_id("rick@citadel.test") == "opaque-rick"
    assert directory.public_id("Morty@citadel.test") == "morty"
    assert directory.public_id("jerry@smiths.test") == "jerry@smiths.test"
    for bad in ([], {"x": {}}, {"x": "no-at-sign"}, {"x": 5}):
        with pytest.raises(ValueError):
            SubjectDirectory.from_mapping(bad)


def test_configuration_lists_every_endpoint() -> None:
    root = AuthZenService.configuration("https://pdp.test/")
    assert root["policy_decision_point"] == "https://pdp.test"
    assert root["access_evaluations_endpoint"] == "https://pdp.test/access/v1/evaluations"
    scoped = AuthZenService.configuration("https://pdp.test", "acme")
    assert scoped["policy_decision_point"] == "https://pdp.test/pdp/acme"
    assert scoped["search_action_endpoint"] == "https://pdp.test/pdp/acme/access/v1/search/action"
    assert len(scoped) == 6


# -- refinements ------------------------------------------------------------------------

REFINEMENTS = {
    "resources": [
        {"workspace": "todo", "type": "todo", "properties": {"status": "done"}, "as": "done_todo"}
    ],
    "actions": [{"name": "read", "properties": {"deep": True}, "as": "audit"}],
}


def test_refinements_select_a_more_specific_question(engine: DecisionEngine) -> None:
    engine.apply(
        [RuleAdded(permission_rule("reader", "done_todo:read", "todo"))], revision=engine.revision
    )
    authzen = service(engine, refinements=Refinements.from_mapping(REFINEMENTS))
    done = question("morty", "update", owner="morty")
    done["resource"]["properties"]["status"] = "done"
    # A done todo is a done_todo: the owner-only update of todos does not reach it.
    assert decide(authzen, question("morty", "update", owner="morty"))
    assert not decide(authzen, done)
    done["action"]["name"] = "read"
    assert decide(authzen, done)
    assert not decide(authzen, {**done, "resource": {**done["resource"], "id": "x"}}, "other")
    # Properties must match exactly (type included); others do not matter.
    for status in ("Done", True, None):
        body = question("morty", "update", owner="morty")
        body["resource"]["properties"]["status"] = status
        assert decide(authzen, body), status
    deep = question("morty", "read")
    deep["action"]["properties"] = {"deep": True, "why": "x"}
    assert not decide(authzen, deep)  # reading deeply is "audit", which nobody holds
    deep["action"]["properties"] = {"deep": 1}
    assert decide(authzen, deep)
    # Searches ask the refined question too.
    body: dict[str, Any] = question("beth", "read")
    del body["action"]
    body["resource"]["properties"] = {"status": "done"}
    assert ids(authzen.search_actions(body, "todo")) == ["read"]
    body["subject"]["id"] = "morty"
    assert ids(authzen.search_actions(body, "todo")) == ["read"]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"rules": []},
        {"resources": {}},
        {"resources": [{"type": "todo", "properties": {"s": 1}}]},
        {"resources": [{"type": "todo", "properties": {}, "as": "x"}]},
        {"resources": [{"type": "Todo", "properties": {"s": 1}, "as": "x"}]},
        {"resources": [{"type": "todo", "properties": {"s": [1]}, "as": "x"}]},
        {"actions": [{"name": "read", "properties": {"s": 1}, "as": "x", "extra": 1}]},
        {"actions": [{"type": "read", "properties": {"s": 1}, "as": "x"}]},
        {"actions": [{"name": "read", "properties": {"s": 1}, "as": "x", "workspace": 3}]},
    ],
)
def test_refinements_refuse_what_they_cannot_mean(bad: Any) -> None:
    with pytest.raises(ValueError):
        Refinements.from_mapping(bad)


def test_the_shipped_refinements_load() -> None:
    refinements = load_refinements(AUTHZEN_POLICIES / "authzen" / "refinements.yaml")
    archived = Entity("record", "record-2", {"status": "archived"})
    assert refinements.resource("certification", archived) == "archived_record"
    assert refinements.resource("acme", archived) == "record"
    assert refinements.action("certification", Action("delete", {"soft": True})) == "soft_delete"
    assert refinements.action("certification", Action("delete", {"soft": False})) == "delete"


def test_explain_says_which_rule_and_role_path(authzen: AuthZenService) -> None:
    body = {**question("morty", "update", owner="morty"), "options": {"explain": True}}
    explanation = authzen.evaluate(body, "todo")["context"]["explanation"]
    assert explanation["rule"] == ["role:writer", "todo", "todo", "update", "owner"]
    assert explanation["path"][0][:2] == ["user:2", "role:writer"]
    denied = authzen.evaluate({**body, "action": {"name": "delete"}}, "todo")["context"]
    assert denied["explanation"]["rule"] is None
    batch = {**body, "evaluations": [{}, {"action": {"name": "delete"}}]}
    answers = authzen.evaluate_many(batch, "todo")["evaluations"]
    assert [a["context"]["explanation"]["rule"] is not None for a in answers] == [True, False]
    assert "explanation" not in authzen.evaluate(question("morty"), "todo")["context"]
    with pytest.raises(BadRequest):
        authzen.evaluate({**body, "options": {"explain": "yes"}}, "todo")


# -- resource directory -----------------------------------------------------------------

RESOURCES = [
    {"type": "todo", "id": "t1", "workspace": "todo", "properties": {"ownerID": "morty"}},
    {"type": "todo", "id": "t2", "workspace": "todo", "properties": {"ownerID": "beth"}},
    {"type": "Todo", "id": 3, "properties": {"ownerID": "morty"}},  # in every workspace
    {"type": "todo", "id": "t4", "workspace": "other", "properties": {"ownerID": "morty"}},
]


@pytest.fixture
def known(engine: DecisionEngine) -> AuthZenService:
    return service(engine, resources=ResourceDirectory.from_list(RESOURCES))


def resource_search(subject: str, action: str, workspace: str | None = None) -> dict[str, Any]:
    body = question(subject, action, workspace=workspace)
    del body["resource"]["id"]
    return body


def test_resource_search_lists_the_directorys_resources_the_subject_may(
    known: AuthZenService,
) -> None:
    # Morty updates only his own todos: t1 and 3 in `todo` (t4 is another workspace's).
    assert ids(known.search_resources(resource_search("morty", "update"), "todo")) == ["t1", "3"]
    # Rick updates any todo; Beth none (she only reads).
    everything = ids(known.search_resources(resource_search("opaque-rick", "update"), "todo"))
    assert everything == ["t1", "t2", "3"]
    assert ids(known.search_resources(resource_search("beth", "update"), "todo")) == []
    assert ids(known.search_resources(resource_search("beth", "read"), "other")) == ["t4", "3"]
    # Unscoped: every workspace where the subject may, and the directory's workspaces.
    answer = known.search_resources(resource_search("morty", "update"), None)
    assert [(r["id"], r["properties"]["workspace"]) for r in answer["results"]] == [
        ("t1", "todo"),
        ("3", "todo"),
    ]
    # A type the directory does not know: every resource of the type, as before.
    unknown = resource_search("beth", "read")
    unknown["resource"]["type"] = "user"
    known.decisions.engine.apply(
        [RuleAdded(permission_rule("reader", "user:read", "todo"))], revision=7
    )
    assert ids(known.search_resources(unknown, "todo")) == ["*"]
    # Paged like any search.
    page = {**resource_search("opaque-rick", "update"), "page": {"limit": 2}}
    first = known.search_resources(page, "todo")
    assert ids(first) == ["t1", "t2"]
    page["page"]["token"] = first["page"]["next_token"]
    assert ids(known.search_resources(page, "todo")) == ["3"]


def test_what_the_directory_knows_wins_over_what_the_caller_says(known: AuthZenService) -> None:
    # t2 is Beth's: Morty saying he owns it does not make it his.
    claimed = question("morty", "update", owner="morty")
    claimed["resource"]["id"] = "t2"
    assert not decide(known, claimed)
    claimed["resource"]["id"] = "t1"
    assert decide(known, claimed)
    # Without an owner in the request, the directory's owner decides.
    assert decide(known, {**question("morty", "update"), "resource": {"type": "todo", "id": "t1"}})
    # A resource the directory does not know: the caller's properties, as before.
    claimed["resource"]["id"] = "not-listed"
    assert decide(known, claimed)
    # A workspace's resource is unknown elsewhere (t4 is in `other`, not `todo`).
    assert not decide(
        known, {**question("morty", "update"), "resource": {"type": "todo", "id": "t4"}}
    )
    # Subject and action searches ask about the resource as the directory knows it.
    subjects = {"subject": {"type": "user"}, "action": {"name": "update"}}
    subjects["resource"] = {"type": "todo", "id": "t1", "properties": {"ownerID": "beth"}}
    assert ids(known.search_subjects(subjects, "todo")) == ["opaque-rick", "morty"]
    actions = {"subject": {"type": "user", "id": "morty"}, "resource": {"type": "todo", "id": "3"}}
    assert ids(known.search_actions(actions, "todo")) == ["create", "read", "update"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"type": "todo", "id": "t1"}, "JSON array"),
        ([{"type": "todo"}], "[0]: 'id'"),
        ([{"type": "todo", "id": True}], "[0]: 'id'"),
        ([{"type": "", "id": "x"}], "[0]: 'type'"),
        ([{"type": "todo", "id": "x", "owner": "me"}], "[0]: expected an object"),
        ([{"type": "todo", "id": "x", "workspace": 1}], "[0]: 'workspace'"),
        ([{"type": "todo", "id": "x", "properties": []}], "[0]: 'properties'"),
        (
            [{"type": "todo", "id": "x"}, {"type": "TODO", "id": "x"}],
            "[1]: todo 'x' is listed twice",
        ),
    ],
)
def test_the_resource_directory_refuses_what_it_cannot_mean(bad: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ResourceDirectory.from_list(bad)


def test_a_bad_resource_directory_file_names_itself(tmp_path: Any) -> None:
    path = tmp_path / "resources.json"
    path.write_text("[{")
    with pytest.raises(ValueError, match=r"resources\.json"):
        load_resource_directory(path)
    assert load_resource_directory(None).of_type("todo", "todo") == []


# -- the inline parse of the valid shape --------------------------------------------------

_names = st.one_of(
    st.text(max_size=3),
    st.text(min_size=254, max_size=257),
    st.none(),
    st.integers(),
    st.booleans(),
    st.lists(st.text(max_size=2), max_size=1),
)
_properties = st.one_of(
    st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.text()
)
_missing = st.just(Ellipsis)  # a key left out


def _body(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not Ellipsis}


def _outcome(parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except _Invalid as invalid:
        return ("invalid", invalid.errors, invalid.detail)


@given(
    value=st.one_of(
        st.builds(
            _body,
            type=st.one_of(_names, _missing),
            id=st.one_of(_names, _missing),
            properties=st.one_of(_properties, _missing),
        ),
        _names,
    ),
    with_id=st.booleans(),
)
def test_entities_parse_inline_as_in_steps(value: Any, with_id: bool) -> None:
    """The inline check of the valid shape (a batch's hot path) accepts exactly what the
    step-by-step parse accepts, with the same result; what it refuses gets the same
    error as before."""
    assert _outcome(lambda v: parse_entity(v, "resource", with_id=with_id), value) == _outcome(
        lambda v: parse_entity_in_steps(v, "resource", with_id=with_id), value
    )


@given(
    value=st.one_of(
        st.builds(
            _body, name=st.one_of(_names, _missing), properties=st.one_of(_properties, _missing)
        ),
        _names,
    )
)
def test_actions_parse_inline_as_in_steps(value: Any) -> None:
    assert _outcome(parse_action, value) == _outcome(parse_action_in_steps, value)


# -- batches in JSON at engine speed (evaluate_many_json) --------------------------------

_subject_ids = st.sampled_from(["morty", "beth", "opaque-rick", "rick@citadel.test", "user:2", "x"])
_entity_values = st.one_of(
    st.builds(
        _body,
        type=st.one_of(
            st.sampled_from(["user", "USER", "identity", "group", "todo", ""]), _missing
        ),
        id=st.one_of(_subject_ids, st.integers(), _missing),
        properties=st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "workspace": st.sampled_from(["todo", "other", "", 3]),
                    "ownerID": st.sampled_from(["morty", "beth", "", 5]),
                },
            ),
            st.just([]),
            _missing,
        ),
    ),
    st.none(),
    st.just("user"),
)
_action_values = st.one_of(
    st.builds(
        _body,
        name=st.one_of(st.sampled_from(["read", "UPDATE", "create", "delete", ""]), _missing),
        properties=st.one_of(st.none(), st.just({"deep": True}), _missing),
    ),
    st.none(),
)
_parts = {
    "subject": st.one_of(_entity_values, _missing),
    "action": st.one_of(_action_values, _missing),
    "resource": st.one_of(_entity_values, _missing),
    "context": st.one_of(st.none(), st.just({"x": 1}), st.just(2), _missing),
}


@given(
    defaults=st.fixed_dictionaries(_parts),
    items=st.lists(st.one_of(st.fixed_dictionaries(_parts).map(lambda d: _body(**d)), st.just(1))),
    options=st.one_of(
        _missing,
        st.none(),
        st.builds(
            _body,
            evaluations_semantic=st.one_of(st.sampled_from([*SEMANTICS, None, "first"]), _missing),
            explain=st.one_of(st.booleans(), st.just("yes"), _missing),
        ),
    ),
    scope=st.sampled_from([None, "todo", "other"]),
    refined=st.booleans(),
)
# The engine is only read: one for every example.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_batches_in_json_answer_as_the_batch_path(
    engine: DecisionEngine,
    defaults: dict[str, Any],
    items: list[Any],
    options: Any,
    scope: str | None,
    refined: bool,
) -> None:
    """The typed batch path (JSON in, JSON out) answers exactly what evaluate_many answers,
    as Flask writes it, or declines (None) and leaves the request to it: then only for
    what it does not take (an invalid part, explain, too many items, no items)."""
    authzen = service(
        engine, refinements=Refinements.from_mapping(REFINEMENTS) if refined else None
    )
    body = {**_body(**defaults), "evaluations": items, **_body(options=options)}
    fast = authzen.evaluate_many_json(json.dumps(body).encode(), scope)
    try:
        expected: Any = authzen.evaluate_many(body, scope)
    except (BadRequest, PayloadTooLarge) as refused:
        assert fast is None, refused
        return
    if fast is None:
        return
    assert (
        fast.body == (json.dumps(expected, sort_keys=True, separators=(",", ":")) + "\n").encode()
    )
    allowed = sum(answer["decision"] for answer in expected["evaluations"])
    assert (fast.allowed, fast.denied) == (allowed, len(expected["evaluations"]) - allowed)


def test_the_usual_batches_take_the_typed_path(authzen: AuthZenService) -> None:
    items = [
        question(subject, action) for subject in ("morty", "beth") for action in ("read", "update")
    ]
    for body, scope in (
        ({"evaluations": items}, "todo"),
        ({**question("morty"), "evaluations": [{}, {"action": {"name": "create"}}]}, "todo"),
        ({"evaluations": [question(workspace="todo"), question(workspace="nope")]}, None),
        ({"evaluations": [question("rick@citadel.test", "update", owner="morty")]}, "todo"),
        ({"evaluations": items, "options": {"evaluations_semantic": "deny_on_first_deny"}}, "todo"),
    ):
        fast = authzen.evaluate_many_json(json.dumps(body).encode(), scope)
        assert fast is not None, body
        assert json.loads(fast.body) == authzen.evaluate_many(body, scope)
    # Anything else is left to evaluate_many: not JSON, too deep, explain, too many.
    for raw in (
        b"{",
        b'{"evaluations": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
        json.dumps({"evaluations": items, "options": {"explain": True}}).encode(),
        json.dumps({"evaluations": [question()] * 6}).encode(),
        json.dumps({"evaluations": [{**question(), "subject": None}]}).encode(),
    ):
        assert authzen.evaluate_many_json(raw, "todo") is None


def test_the_typed_batch_knows_the_semantics() -> None:
    assert get_args(get_type_hints(TypedOptions)["evaluations_semantic"]) == SEMANTICS
