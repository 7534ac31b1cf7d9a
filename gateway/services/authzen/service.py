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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec
from msgspec import UNSET

from gateway.engine.engine import Decision
from gateway.errors import BadRequest, PayloadTooLarge
from gateway.services.authzen.directories import Refinements, SubjectDirectory
from gateway.services.authzen.paging import PageTokens, parse_page
from gateway.services.authzen.resources import Resource, ResourceDirectory
from gateway.services.authzen.wire import (
    _PARTS,
    ANY_RESOURCE,
    DENY_ON_FIRST_DENY,
    EXECUTE_ALL,
    OWNER_PROPERTY,
    PERMIT_ON_FIRST_PERMIT,
    SEMANTICS,
    SUBJECT_TYPES,
    WORKSPACE_PROPERTY,
    Action,
    Entity,
    Question,
    _bad,
    _explain,
    _Invalid,
    _invalid,
    _item_error,
    _object,
    _parsed,
    _request_object,
    decode_batch,
    parse_action,
    parse_entity,
    parse_question,
)
from gateway.services.decisions import DecisionService

T = TypeVar("T")
# Keys sorted and compact, as Flask writes a view's dict (the slow path's answer).
_ENCODER = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True)
class EncodedAnswer:
    """An answer already in JSON, and how many of its decisions allow and deny (for the
    decision metrics, which would otherwise parse it back)."""

    body: bytes
    allowed: int
    denied: int


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
        return AuthZenService._workspace_named(resource.properties.get(WORKSPACE_PROPERTY), scope)

    @staticmethod
    def _workspace_named(named: Any, scope: str | None) -> str:
        """:meth:`_workspace` of a resource whose ``properties.workspace`` is ``named``."""
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

    def evaluate_many_json(self, raw: bytes, scope: str | None = None) -> EncodedAnswer | None:
        """:meth:`evaluate_many` of a JSON body, answered as JSON, at engine speed for the
        batch nearly every caller sends (wire.TypedBatch: decoded and validated in one
        pass; without ``options.explain``). The work the items share is done once per
        request: the engine's per-request upkeep and subjects resolved
        (DecisionService.asker), subjects mapped, and each distinct answer encoded once.
        None for any other body (not JSON, another shape, an item that lacks a part, too
        many items): the caller then parses it and calls :meth:`evaluate_many`, which
        answers it or says what is wrong, as ever. The JSON is what Flask writes for
        :meth:`evaluate_many`'s answer (keys sorted, compact, a final newline)."""
        batch = decode_batch(raw)
        if batch is None or not batch.evaluations or len(batch.evaluations) > self.max_evaluations:
            return None
        options = batch.options
        semantic = EXECUTE_ALL
        if options is not None:
            if options.explain:
                return None
            semantic = options.evaluations_semantic
        stop_at = None if semantic == EXECUTE_ALL else semantic == PERMIT_ON_FIRST_PERMIT
        refinements, aliases = self.refinements, self.directory.emails
        known, refine_resource = bool(self.resources), bool(refinements.resources)
        refine_action = bool(refinements.actions)
        ask = self.decisions.asker()
        # Each distinct answer (a few: the engine shares its Decision objects) encoded
        # once; by identity, the Decision kept alive beside its JSON so no id is reused.
        encoded: dict[int, tuple[Decision, bytes]] = {}
        fragments: list[bytes] = []
        allowed = 0
        for item in batch.evaluations:
            subject = batch.subject if item.subject is UNSET else item.subject
            action = batch.action if item.action is UNSET else item.action
            resource = batch.resource if item.resource is UNSET else item.resource
            if subject is None or action is None or resource is None:
                return None  # the full way says which part is missing
            properties: Mapping[str, Any] | None = resource.properties
            named = properties.get(WORKSPACE_PROPERTY) if properties else None
            if scope is None and type(named) is str and named:
                workspace = named
            else:
                try:
                    workspace = self._workspace_named(named, scope)
                except _Invalid as invalid:
                    fragments.append(_ENCODER.encode(_item_error(invalid.detail)))
                    if stop_at is False:
                        break
                    continue
            kind = subject.type
            if kind == "user" or kind.lower() in SUBJECT_TYPES:  # self._subject, inline
                type_ = resource.type.lower()
                if known or refine_resource:
                    entity = Entity(resource.type, resource.id, properties or {})
                    entity = self._known(entity, workspace)
                    properties = entity.properties
                    if refine_resource:
                        type_ = refinements.resource(workspace, entity)
                name = (
                    refinements.action(workspace, Action(action.name, action.properties or {}))
                    if refine_action
                    else action.name.lower()
                )
                owner = properties.get(OWNER_PROPERTY) if properties else None
                owner = aliases.get(owner, owner) if type(owner) is str and owner else None
                decision = ask(aliases.get(subject.id, subject.id), workspace, type_, name, owner)
            else:
                decision = Decision(False, self.decisions.engine.revision, "unknown subject type")
            hit = encoded.get(id(decision))
            if hit is None:
                hit = encoded[id(decision)] = (decision, _ENCODER.encode(self._answer(decision)))
            fragments.append(hit[1])
            allowed += decision.allowed
            if decision.allowed is stop_at:
                break
        body = b'{"evaluations":[' + b",".join(fragments) + b"]}\n"
        return EncodedAnswer(body, allowed, len(fragments) - allowed)

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
