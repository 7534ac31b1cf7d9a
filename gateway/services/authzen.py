"""AuthZEN Authorization API 1.0 over the decision service.

This module owns the mapping between AuthZEN's entities and Ringfence's question
(user, workspace, resource, action) and everything AuthZEN adds around one decision:
request validation, batch defaults and ``evaluations_semantic``, the three searches
and their paging, and the discovery metadata. The HTTP layer only reads the body and
says which workspace the URL is scoped to.

The mapping (documented in README.md, "AuthZEN"):

- ``subject`` of type ``user`` or ``identity`` is a Ringfence user: its ``id`` is an
  email, ``user:<id>``, a plain user id, or an alias from the subject directory
  (``RINGFENCE_AUTHZEN_SUBJECTS``: external id -> email). Other types are unknown
  subjects: denied, never an error. Subject properties are not trusted: what a user
  may do comes from their grants, not from what the caller says about them.
- ``resource.type`` is the Ringfence resource and ``action.name`` the action, both
  lowercased (permission names are lowercase; HTTP methods arrive as ``GET``).
- The workspace is the URL's (``/pdp/<workspace>/access/v1/...``) or, on the
  unscoped endpoints, ``resource.properties.workspace``.
- ``resource.properties.ownerID`` is the owner for owner-only permissions.
- Refinements (``RINGFENCE_AUTHZEN_REFINEMENTS``) may turn a resource or action with
  given properties into a more specific one (an archived ``record`` into
  ``archived_record``), so attributes that change the answer get their own permissions.

Fail closed: anything unknown is a deny (or an empty search), never an allow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import yaml

from gateway.emails import normalise_email
from gateway.engine import Decision
from gateway.errors import BadRequest, PayloadTooLarge
from gateway.resource_directory import Resource, ResourceDirectory
from gateway.services.decisions import DecisionService

SUBJECT_TYPES = frozenset({"user", "identity"})
EXECUTE_ALL = "execute_all"
DENY_ON_FIRST_DENY = "deny_on_first_deny"
PERMIT_ON_FIRST_PERMIT = "permit_on_first_permit"
SEMANTICS = (EXECUTE_ALL, DENY_ON_FIRST_DENY, PERMIT_ON_FIRST_PERMIT)
DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000
MAX_NAME = 255
OWNER_PROPERTY = "ownerID"
WORKSPACE_PROPERTY = "workspace"
#: A resource search answers "every resource of the type in the workspace" (Ringfence
#: permissions are per resource type, so it knows no instances): this is that id.
ANY_RESOURCE = "*"
_MISSING = "Missing data for required field."

Errors = dict[str, Any]
T = TypeVar("T")


class _Invalid(Exception):
    """A request part that is missing or of the wrong type; ``errors`` as marshmallow
    nests them (``{"subject": {"id": [message]}}``)."""

    def __init__(self, errors: Errors, detail: str) -> None:
        super().__init__(detail)
        self.errors = errors
        self.detail = detail


# --------------------------------------------------------------------------- entities


@dataclass(frozen=True)
class Entity:
    """An AuthZEN subject or resource; ``id`` is None where a search leaves it out."""

    type: str
    id: str | None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    name: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Question:
    """One evaluation, after defaults were applied and its parts validated."""

    subject: Entity
    action: Action
    resource: Entity
    context: Mapping[str, Any]


def _name(value: Any, path: tuple[str, ...]) -> str:
    if value is None:
        raise _invalid(path, _MISSING)
    if not isinstance(value, str):
        raise _invalid(path, "Not a valid string.")
    if not 1 <= len(value) <= MAX_NAME:
        raise _invalid(path, f"Length must be between 1 and {MAX_NAME}.")
    return value


def _invalid(path: tuple[str, ...], message: str) -> _Invalid:
    errors: Errors = {path[-1]: [message]}
    for key in reversed(path[:-1]):
        errors = {key: errors}
    return _Invalid(errors, f"{'.'.join(path)}: {message}")


def _object(value: Any, path: tuple[str, ...], *, required: bool = True) -> dict[str, Any]:
    if value is None:
        if required:
            raise _invalid(path, _MISSING)
        return {}
    if not isinstance(value, dict):
        raise _invalid(path, "Not a valid object.")
    return value


def parse_entity(value: Any, part: str, *, with_id: bool = True) -> Entity:
    """A subject or resource: ``type`` (and ``id`` unless ``with_id`` is false, where a
    search targets the entity and an id, if any, is ignored), optional ``properties``."""
    # The valid shape, checked inline (a batch parses two entities per item); anything
    # else is parsed step by step below, which says what is wrong.
    if type(value) is dict:
        type_, entity_id = value.get("type"), value.get("id")
        properties = value.get("properties")
        if (
            type(type_) is str
            and 1 <= len(type_) <= MAX_NAME
            and (not with_id or (type(entity_id) is str and 1 <= len(entity_id) <= MAX_NAME))
            and (properties is None or type(properties) is dict)
        ):
            return Entity(type_, entity_id if with_id else None, properties or {})
    return parse_entity_in_steps(value, part, with_id=with_id)


def parse_entity_in_steps(value: Any, part: str, *, with_id: bool = True) -> Entity:
    """:func:`parse_entity` one field at a time: the first problem raises ``_Invalid``."""
    body = _object(value, (part,))
    type_ = _name(body.get("type"), (part, "type"))
    entity_id = _name(body.get("id"), (part, "id")) if with_id else None
    properties = _object(body.get("properties"), (part, "properties"), required=False)
    return Entity(type_, entity_id, properties)


def parse_action(value: Any) -> Action:
    if type(value) is dict:  # the valid shape inline, as in parse_entity
        name, properties = value.get("name"), value.get("properties")
        if (
            type(name) is str
            and 1 <= len(name) <= MAX_NAME
            and (properties is None or type(properties) is dict)
        ):
            return Action(name, properties or {})
    return parse_action_in_steps(value)


def parse_action_in_steps(value: Any) -> Action:
    """:func:`parse_action` one field at a time: the first problem raises ``_Invalid``."""
    body = _object(value, ("action",))
    name = _name(body.get("name"), ("action", "name"))
    properties = _object(body.get("properties"), ("action", "properties"), required=False)
    return Action(name, properties)


def parse_question(body: Mapping[str, Any]) -> Question:
    """An evaluation request's subject, action, resource and optional context."""
    subject = parse_entity(body.get("subject"), "subject")
    action = parse_action(body.get("action"))
    resource = parse_entity(body.get("resource"), "resource")
    context = _object(body.get("context"), ("context",), required=False)
    return Question(subject, action, resource, context)


def _request_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


def _bad(invalid: _Invalid, what: str) -> BadRequest:
    # AuthZEN asks for 400 (not 422) on a request missing required fields.
    return BadRequest(f"The {what} is not valid: {invalid.detail}", errors=invalid.errors)


# --------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class SubjectDirectory:
    """External subject ids (e.g. an identity provider's opaque ``sub``) → emails.

    Read from a JSON object whose values are emails, or objects with an ``email``
    member (so a directory export such as the Todo scenario's ``users.json`` works
    as it is). Several aliases may name one person; the first one listed is the id
    searches answer with.
    """

    emails: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)  # email -> first alias

    @classmethod
    def from_mapping(cls, data: Any) -> SubjectDirectory:
        if not isinstance(data, dict):
            raise ValueError("the subject directory must be a JSON object")
        emails: dict[str, str] = {}
        aliases: dict[str, str] = {}
        for alias, value in data.items():
            email = value.get("email") if isinstance(value, dict) else value
            # Stored as accounts are (gateway.emails), so a look-alike spelling in the
            # directory names the account, not nobody.
            email = normalise_email(email) if isinstance(email, str) else None
            if email is None or "@" not in email:
                raise ValueError(f"subject {alias!r}: no email")
            emails[alias] = email
            if normalise_email(alias) != email:
                aliases.setdefault(email, alias)
        return cls(emails, aliases)

    def email_of(self, subject_id: str) -> str:
        """The email an alias stands for, or the id itself."""
        return self.emails.get(subject_id, subject_id)

    def public_id(self, email: str) -> str:
        """How searches name a user: their first alias, else their email."""
        return self.aliases.get(normalise_email(email), email)


@lru_cache(maxsize=8)
def load_subject_directory(path: Path | None) -> SubjectDirectory:
    """The directory in ``path`` (read once per process), or an empty one."""
    if path is None:
        return SubjectDirectory()
    return SubjectDirectory.from_mapping(json.loads(path.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- refinements


_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Refinement:
    """When an entity of ``match`` (type or action name) has all of ``properties``
    (in ``workspace``, or anywhere), Ringfence asks about ``becomes`` instead."""

    match: str
    properties: Mapping[str, Any]
    becomes: str
    workspace: str | None = None

    def applies(self, workspace: str, name: str, properties: Mapping[str, Any]) -> bool:
        return (
            self.match == name
            and self.workspace in (None, workspace)
            and all(
                key in properties
                and properties[key] == value
                and type(properties[key]) is type(value)  # True is not 1
                for key, value in self.properties.items()
            )
        )


@dataclass(frozen=True)
class Refinements:
    """AuthZEN attributes that select a more specific Ringfence resource or action.

    Ringfence decides by resource type and action name; an attribute that changes the
    answer (an archived record, a soft delete) is expressed as its own resource or
    action (``archived_record``, ``soft_delete``) with its own permissions, and this
    mapping, read from a YAML file, says which requests ask about it. First match wins.
    """

    resources: tuple[Refinement, ...] = ()
    actions: tuple[Refinement, ...] = ()

    def resource(self, workspace: str, resource: Entity) -> str:
        name = resource.type.lower()
        for rule in self.resources:
            if rule.applies(workspace, name, resource.properties):
                return rule.becomes
        return name

    def action(self, workspace: str, action: Action) -> str:
        name = action.name.lower()
        for rule in self.actions:
            if rule.applies(workspace, name, action.properties):
                return rule.becomes
        return name

    @classmethod
    def from_mapping(cls, data: Any) -> Refinements:
        """Raises ValueError naming the entry that is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or set(data) - {"resources", "actions"}:
            raise ValueError("expected a mapping with 'resources' and/or 'actions'")
        parsed: dict[str, tuple[Refinement, ...]] = {}
        for section, key in (("resources", "type"), ("actions", "name")):
            entries = data.get(section)
            if entries is None:
                entries = []
            if not isinstance(entries, list):
                raise ValueError(f"{section}: expected a list")
            parsed[section] = tuple(
                _refinement(entry, key, f"{section}[{index}]")
                for index, entry in enumerate(entries)
            )
        return cls(parsed["resources"], parsed["actions"])


def _refinement(entry: Any, key: str, where: str) -> Refinement:
    allowed = {key, "properties", "as", "workspace"}
    if not isinstance(entry, dict) or set(entry) - allowed:
        raise ValueError(f"{where}: expected a mapping of {', '.join(sorted(allowed))}")
    match, becomes, workspace = entry.get(key), entry.get("as"), entry.get("workspace")
    properties = entry.get("properties")
    for label, value in ((key, match), ("as", becomes)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise ValueError(f"{where}: '{label}' must be a lowercase name, got {value!r}")
    if not isinstance(properties, dict) or not properties:
        raise ValueError(f"{where}: 'properties' must be a non-empty mapping")
    if any(not isinstance(v, str | int | float | bool) for v in properties.values()):
        raise ValueError(f"{where}: property values must be strings, numbers or booleans")
    if workspace is not None and not isinstance(workspace, str):
        raise ValueError(f"{where}: 'workspace' must be a workspace slug")
    return Refinement(str(match), properties, str(becomes), workspace)


@lru_cache(maxsize=8)
def load_refinements(path: Path | None) -> Refinements:
    """The refinements in the YAML file ``path`` (read once per process), or none."""
    if path is None:
        return Refinements()
    try:
        return Refinements.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------- paging


class PageTokens:
    """Opaque page tokens: the offset, bound to the query it pages through, signed.

    A token cannot be forged (HMAC with the installation's secret) nor replayed
    against another query (the query's hash is inside); either is a 400.
    """

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(f"authzen-page:{secret}".encode()).digest()

    @staticmethod
    def query_hash(kind: str, query: Mapping[str, Any]) -> str:
        canonical = json.dumps([kind, query], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest()[:18])

    def issue(self, query_hash: str, offset: int) -> str:
        payload = json.dumps({"q": query_hash, "o": offset}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._sign(payload)}"

    def offset(self, token: str, query_hash: str) -> int:
        """The offset a token stands for; BadRequest unless issued for this query."""
        payload_part, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4))
            valid = hmac.compare_digest(self._sign(payload), signature)
            data = json.loads(payload) if valid else None
        except ValueError:
            data = None
        if (
            not isinstance(data, dict)
            or data.get("q") != query_hash
            or not isinstance(data.get("o"), int)
            or data["o"] < 0
        ):
            raise BadRequest(
                "page.token is not valid for this search; start again without a token",
                errors={"page": {"token": ["Not a valid page token."]}},
            )
        return int(data["o"])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class PageRequest:
    token: str | None
    limit: int


def parse_page(value: Any) -> PageRequest:
    body = _object(value, ("page",), required=False)
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        raise _invalid(("page", "token"), "Not a valid string.")
    limit = body.get("limit", DEFAULT_PAGE_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise _invalid(("page", "limit"), f"Must be an integer from 1 to {MAX_PAGE_LIMIT}.")
    return PageRequest(token or None, limit)


# --------------------------------------------------------------------------- service


class AuthZenService:
    """AuthZEN evaluations, searches and metadata over :class:`DecisionService`."""

    def __init__(
        self,
        decisions: DecisionService,
        directory: SubjectDirectory,
        tokens: PageTokens,
        *,
        max_evaluations: int,
        emails_of: Callable[[set[int]], dict[int, str]],
        refinements: Refinements | None = None,
        resources: ResourceDirectory | None = None,
        catalogue: Callable[[], Mapping[str, Iterable[str]]] | None = None,
    ) -> None:
        self.decisions = decisions
        self.refinements = refinements or Refinements()
        self.resources = resources or ResourceDirectory()
        # Resource -> its catalogue actions: what a wildcard grant lists in an action search.
        self.catalogue = catalogue or dict
        self.directory = directory
        self.tokens = tokens
        self.max_evaluations = max_evaluations
        # User id -> email for subject search results (a database lookup in the app).
        self.emails_of = emails_of

    # -- one decision ------------------------------------------------------------

    def _subject(self, subject: Entity) -> str | None:
        """The Ringfence subject (what the engine resolves) or None for other types."""
        if subject.type.lower() not in SUBJECT_TYPES or subject.id is None:
            return None
        return self.directory.email_of(subject.id)

    def _owner(self, resource: Entity) -> str | None:
        owner = resource.properties.get(OWNER_PROPERTY)
        if not isinstance(owner, str) or not owner:
            return None
        return self.directory.email_of(owner)

    @staticmethod
    def _workspace(resource: Entity, scope: str | None) -> str:
        """The workspace of a resource: the URL's, else ``properties.workspace``.

        A resource that names another workspace than the URL's gets ``""``, which no
        workspace is called, so the question is denied rather than answered for a
        workspace the caller did not mean.
        """
        named = resource.properties.get(WORKSPACE_PROPERTY)
        if scope is not None:
            return scope if named is None or named == scope else ""
        if not isinstance(named, str) or not named:
            raise _invalid(
                ("resource", "properties", WORKSPACE_PROPERTY),
                "Required on the unscoped endpoints (or use /pdp/<workspace>/access/v1/...).",
            )
        return named

    def _known(self, resource: Entity, workspace: str) -> Entity:
        """``resource`` with what the resource directory says about it, which wins over
        what the caller says (unknown to the directory: as the caller sent it)."""
        if resource.id is None or not self.resources:  # no directory: no lookups
            return resource
        known = self.resources.get(workspace, resource.type, resource.id)
        if known is None or not known.properties:
            return resource
        return Entity(resource.type, resource.id, {**resource.properties, **known.properties})

    def decide(self, question: Question, scope: str | None, *, explain: bool = False) -> Decision:
        """The decision for one validated question (``_Invalid`` if it has no workspace)."""
        return self._decide(question.subject, question.action, question.resource, scope, explain)

    def _decide(
        self, subject: Entity, action: Action, resource: Entity, scope: str | None, explain: bool
    ) -> Decision:
        # decide() without building a Question: a batch item's parts go straight here.
        workspace = self._workspace(resource, scope)
        email = self._subject(subject)
        if email is None:
            return Decision(False, self.decisions.engine.revision, "unknown subject type")
        resource = self._known(resource, workspace)
        refinements = self.refinements
        return self.decisions.check(
            email,
            workspace,
            refinements.resource(workspace, resource)
            if refinements.resources
            else resource.type.lower(),
            refinements.action(workspace, action) if refinements.actions else action.name.lower(),
            owner=self._owner(resource),
            explain=explain,
        )

    @staticmethod
    def _answer(decision: Decision) -> dict[str, Any]:
        context: dict[str, Any] = {"revision": decision.revision}
        if not decision.allowed:
            context["reason_admin"] = {"en": decision.reason}
        if decision.explanation is not None:
            context["explanation"] = decision.explanation
        return {"decision": decision.allowed, "context": context}

    def evaluate(self, body: Any, scope: str | None = None) -> dict[str, Any]:
        """``POST /access/v1/evaluation``: one decision; 400 on an invalid request.
        ``options.explain: true`` (a Ringfence extension) adds why to the context."""
        request = _request_object(body)
        try:
            explain = _explain(request)
            return self._answer(self.decide(parse_question(request), scope, explain=explain))
        except _Invalid as invalid:
            raise _bad(invalid, "evaluation request") from invalid

    # -- batches -----------------------------------------------------------------

    def evaluate_many(self, body: Any, scope: str | None = None) -> dict[str, Any]:
        """``POST /access/v1/evaluations``: the top-level subject, action, resource and
        context are defaults that each item may replace whole; answers in request
        order, stopping as ``options.evaluations_semantic`` says. Without items it is
        a single evaluation (and answers like one)."""
        request = _request_object(body)
        items = request.get("evaluations")
        if items is None or items == []:
            return self.evaluate(request, scope)
        if not isinstance(items, list):
            raise BadRequest(
                "evaluations must be an array",
                errors={"evaluations": ["Not a valid list."]},
            )
        if len(items) > self.max_evaluations:
            raise PayloadTooLarge(
                f"At most {self.max_evaluations} evaluations per request; got {len(items)}",
                max_evaluations=self.max_evaluations,
            )
        try:
            options = _object(request.get("options"), ("options",), required=False)
            _object(request.get("context"), ("context",), required=False)
        except _Invalid as invalid:
            raise _bad(invalid, "evaluations request") from invalid
        semantic = options.get("evaluations_semantic", EXECUTE_ALL)
        try:
            explain = _explain(request)
        except _Invalid as invalid:
            raise _bad(invalid, "evaluations request") from invalid
        if semantic not in SEMANTICS:
            raise BadRequest(
                f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}",
                errors={"options": {"evaluations_semantic": [f"Must be one of {SEMANTICS}."]}},
            )
        # The defaults are parsed once, not per item (a batch is often one subject and
        # many resources); a default that is invalid only matters to items using it.
        defaults = {key: _parsed(parse, request.get(key)) for key, parse in _PARTS.items()}
        answers: list[dict[str, Any]] = []
        for item in items:
            answer = self._item(item, defaults, scope, explain)
            answers.append(answer)
            if (semantic == DENY_ON_FIRST_DENY and not answer["decision"]) or (
                semantic == PERMIT_ON_FIRST_PERMIT and answer["decision"]
            ):
                break
        return {"evaluations": answers}

    def _item(
        self, item: Any, defaults: Mapping[str, Any], scope: str | None, explain: bool
    ) -> dict[str, Any]:
        """One batch item's answer; an invalid item is a deny saying why (AuthZEN's
        per-evaluation error), so one bad item does not cost the others."""
        if not isinstance(item, dict):
            return _item_error("each evaluation must be a JSON object")
        parts = dict(defaults)
        for key, value in item.items():  # usually one key: the part that differs
            parse = _PARTS.get(key)
            if parse is not None:
                parts[key] = _parsed(parse, value)
        for part in parts.values():  # in _PARTS order: the first problem is reported
            if isinstance(part, _Invalid):
                return _item_error(part.detail)
        try:
            decision = self._decide(
                parts["subject"], parts["action"], parts["resource"], scope, explain
            )
            return self._answer(decision)
        except _Invalid as invalid:
            return _item_error(invalid.detail)

    # -- searches ----------------------------------------------------------------

    def _page(
        self,
        kind: str,
        request: Mapping[str, Any],
        items: Sequence[T],
        render: Callable[[Sequence[T]], list[dict[str, Any]]],
    ) -> dict[str, Any]:
        """One page of ``items`` (in a stable order), only that page ``render``-ed."""
        try:
            page = parse_page(request.get("page"))
        except _Invalid as invalid:
            raise _bad(invalid, f"{kind} search") from invalid
        query = {k: v for k, v in request.items() if k != "page"}
        query_hash = self.tokens.query_hash(kind, {**query, "limit": page.limit})
        offset = self.tokens.offset(page.token, query_hash) if page.token else 0
        chunk = render(items[offset : offset + page.limit])
        end = offset + page.limit
        next_token = self.tokens.issue(query_hash, end) if end < len(items) else ""
        return {
            "results": chunk,
            "page": {"next_token": next_token, "count": len(chunk), "total": len(items)},
        }

    def search_subjects(self, body: Any, scope: str | None = None) -> dict[str, Any]:
        """``POST /access/v1/search/subject``: who may do the action on the resource."""
        request = _request_object(body)
        try:
            subject = parse_entity(request.get("subject"), "subject", with_id=False)
            action = parse_action(request.get("action"))
            resource = parse_entity(request.get("resource"), "resource")
            _object(request.get("context"), ("context",), required=False)
            workspace = self._workspace(resource, scope)
        except _Invalid as invalid:
            raise _bad(invalid, "subject search") from invalid
        user_ids: list[int] = []
        if subject.type.lower() in SUBJECT_TYPES and workspace:
            resource = self._known(resource, workspace)
            type_ = self.refinements.resource(workspace, resource)
            name = self.refinements.action(workspace, action)
            # From the engine's index: the active users who may, the resource's owner
            # too when an owner-only permission lets them. Ordered by user id, so pages
            # are stable; only the page's users are looked up.
            owner = self._owner(resource)
            user_ids = sorted(self.decisions.subjects_who_may(workspace, type_, name, owner=owner))

        def render(page: Sequence[int]) -> list[dict[str, Any]]:
            emails = self.emails_of(set(page))
            return [
                {"type": subject.type, "id": self.directory.public_id(emails[user_id])}
                for user_id in page
                if user_id in emails  # removed since
            ]

        return self._page("subject", request, user_ids, render)

    def search_resources(self, body: Any, scope: str | None = None) -> dict[str, Any]:
        """``POST /access/v1/search/resource``: where the subject may do the action on
        resources of the type. Ringfence permissions are per resource type, so each
        result is every resource of the type in one workspace (id ``*``), with
        ``ownerID`` when only the subject's own ones are allowed."""
        request = _request_object(body)
        try:
            subject = parse_entity(request.get("subject"), "subject")
            action = parse_action(request.get("action"))
            resource = parse_entity(request.get("resource"), "resource", with_id=False)
            _object(request.get("context"), ("context",), required=False)
            named = resource.properties.get(WORKSPACE_PROPERTY)
            if named is not None and not isinstance(named, str):
                raise _invalid(("resource", "properties", WORKSPACE_PROPERTY), "Not a string.")
        except _Invalid as invalid:
            raise _bad(invalid, "resource search") from invalid
        results: list[dict[str, Any]] = []
        who = self._subject(subject)
        if who is not None and (scope is None or named in (None, scope)):
            if scope is not None:
                workspaces = {scope}
            elif named is not None:
                workspaces = {named}
            else:
                base = (resource.type.lower(), action.name.lower())
                workspaces = set(self.decisions.workspaces_where(who, *base))
                workspaces |= self.resources.workspaces_with(resource.type)
            for workspace in sorted(workspaces):
                known = self.resources.of_type(workspace, resource.type)
                if known:
                    results.extend(self._known_resources(who, workspace, action, resource, known))
                    continue
                type_ = self.refinements.resource(workspace, resource)
                name = self.refinements.action(workspace, action)
                results.extend(self._resources_in(who, subject, workspace, type_, name, resource))
        return self._page("resource", request, results, list)

    def _known_resources(
        self,
        who: str,
        workspace: str,
        action: Action,
        searched: Entity,
        known: Sequence[Resource],
    ) -> list[dict[str, Any]]:
        """The directory's resources of the searched type that the subject may act on:
        each decided as an evaluation naming it would be (its properties, its owner, its
        refinements), in the directory's order."""
        name = self.refinements.action(workspace, action)
        allowed = []
        for item in known:
            resource = Entity(searched.type, item.id, {**searched.properties, **item.properties})
            type_ = self.refinements.resource(workspace, resource)
            owner = self._owner(resource)
            if self.decisions.check(who, workspace, type_, name, owner=owner, seen=False).allowed:
                allowed.append(
                    {
                        "type": searched.type,
                        "id": item.id,
                        "properties": {WORKSPACE_PROPERTY: workspace},
                    }
                )
        return allowed

    def _resources_in(
        self,
        who: str,
        subject: Entity,
        workspace: str,
        type_: str,
        action: str,
        resource: Entity,
    ) -> list[dict[str, Any]]:
        properties = {WORKSPACE_PROPERTY: workspace}
        if self.decisions.check(who, workspace, type_, action, seen=False).allowed:
            return [{"type": resource.type, "id": ANY_RESOURCE, "properties": properties}]
        assert subject.id is not None
        if self.decisions.check(who, workspace, type_, action, owner=who, seen=False).allowed:
            # Allowed on resources the subject owns only.
            owned = {**properties, OWNER_PROPERTY: subject.id}
            return [{"type": resource.type, "id": ANY_RESOURCE, "properties": owned}]
        return []

    def search_actions(self, body: Any, scope: str | None = None) -> dict[str, Any]:
        """``POST /access/v1/search/action``: what the subject may do on the resource."""
        request = _request_object(body)
        try:
            subject = parse_entity(request.get("subject"), "subject")
            resource = parse_entity(request.get("resource"), "resource")
            _object(request.get("context"), ("context",), required=False)
            workspace = self._workspace(resource, scope)
        except _Invalid as invalid:
            raise _bad(invalid, "action search") from invalid
        results: list[dict[str, Any]] = []
        who = self._subject(subject)
        if who is not None and workspace:
            resource = self._known(resource, workspace)
            type_ = self.refinements.resource(workspace, resource)
            owner = self._owner(resource)
            names = self._action_names(who, workspace, type_)
            # Re-checked one by one: the same answer an evaluation would give, with the
            # owner condition applied.
            results = [
                {"name": name}
                for name in sorted(names)
                if self.decisions.check(
                    who, workspace, type_, name, owner=owner, seen=False
                ).allowed
            ]
        return self._page("action", request, results, list)

    def _action_names(self, who: str, workspace: str, type_: str) -> set[str]:
        """The actions ``who`` may hold on ``type_`` (before owner conditions): from the
        rules that reach them, a wildcard (``record:*``, ``*``) read as the catalogue's
        actions of the type. An owner-only permission comes as ``<action>:own``."""
        names: set[str] = set()
        for granted_type, granted in self.decisions.permissions(who, workspace):
            if granted_type not in (type_, "*"):
                continue
            name = granted.partition(":")[0]
            if name == "*":
                names.update(self.catalogue().get(type_, ()))
            elif "*" not in name:  # another pattern: no action is named by it
                names.add(name)
        return names

    # -- discovery ---------------------------------------------------------------

    @staticmethod
    def configuration(base_url: str, workspace: str | None = None) -> dict[str, Any]:
        """The discovery metadata; per workspace, the endpoints scoped to it."""
        # Percent-encoded: the name comes from the request path and may be anything.
        pdp = base_url.rstrip("/") + (f"/pdp/{quote(workspace, safe='')}" if workspace else "")
        return {
            "policy_decision_point": pdp,
            "access_evaluation_endpoint": f"{pdp}/access/v1/evaluation",
            "access_evaluations_endpoint": f"{pdp}/access/v1/evaluations",
            "search_subject_endpoint": f"{pdp}/access/v1/search/subject",
            "search_resource_endpoint": f"{pdp}/access/v1/search/resource",
            "search_action_endpoint": f"{pdp}/access/v1/search/action",
        }


def _explain(request: Mapping[str, Any]) -> bool:
    options = _object(request.get("options"), ("options",), required=False)
    explain = options.get("explain", False)
    if not isinstance(explain, bool):
        raise _invalid(("options", "explain"), "Not a valid boolean.")
    return explain


_PARTS: dict[str, Callable[[Any], Any]] = {
    "subject": partial(parse_entity, part="subject"),
    "action": parse_action,
    "resource": partial(parse_entity, part="resource"),
    "context": partial(_object, path=("context",), required=False),
}


def _parsed(parse: Callable[[Any], Any], value: Any) -> Any:
    """``parse(value)``, or the :class:`_Invalid` it raised."""
    try:
        return parse(value)
    except _Invalid as invalid:
        return invalid


def _item_error(message: str) -> dict[str, Any]:
    return {"decision": False, "context": {"error": {"status": 400, "message": message}}}
