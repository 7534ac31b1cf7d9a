"""AuthZEN wire format: the request parts (subject, action, resource, context, options)
parsed and validated into :class:`Question` s, and the vocabulary of the protocol
(evaluation semantics, property names). Errors are reported as marshmallow nests them,
with AuthZEN's 400."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import BadRequest

SUBJECT_TYPES = frozenset({"user", "identity"})
EXECUTE_ALL = "execute_all"
DENY_ON_FIRST_DENY = "deny_on_first_deny"
PERMIT_ON_FIRST_PERMIT = "permit_on_first_permit"
SEMANTICS = (EXECUTE_ALL, DENY_ON_FIRST_DENY, PERMIT_ON_FIRST_PERMIT)
MAX_NAME = 255
OWNER_PROPERTY = "ownerID"
WORKSPACE_PROPERTY = "workspace"
#: A resource search answers "every resource of the type in the workspace" (Ringfence
#: permissions are per resource type, so it knows no instances): this is that id.
ANY_RESOURCE = "*"
_MISSING = "Missing data for required field."

Errors = dict[str, Any]


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


# ------------------------------------------------------------- batches, typed (msgspec)

# A batch in the shape nearly every caller sends, decoded and validated in one pass by
# msgspec (C, no dicts built for the parts): names of 1-255 characters, ids on subjects
# and resources, properties and context objects or null, unknown members ignored, as the
# parsers above read them. It accepts only bodies the parsers above find valid in every
# part, and reads them alike (the same JSON: RFC 8259, duplicate members' last value,
# nesting up to the interpreter's recursion limit). Anything else fails to decode, and
# the request takes the full way, which says what is wrong.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
_Properties = dict[str, Any] | None


class TypedEntity(msgspec.Struct, frozen=True, gc=False):
    type: _Name
    id: _Name
    properties: _Properties = None


class TypedAction(msgspec.Struct, frozen=True, gc=False):
    name: _Name
    properties: _Properties = None


class TypedItem(msgspec.Struct, frozen=True, gc=False):
    # Unset, not None: an item's null part is an error, not "use the default".
    subject: TypedEntity | msgspec.UnsetType = msgspec.UNSET
    action: TypedAction | msgspec.UnsetType = msgspec.UNSET
    resource: TypedEntity | msgspec.UnsetType = msgspec.UNSET
    context: _Properties | msgspec.UnsetType = msgspec.UNSET


class TypedOptions(msgspec.Struct, frozen=True, gc=False):
    explain: bool = False
    # SEMANTICS (tests/unit/test_authzen.py holds them equal)
    evaluations_semantic: Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"] = (
        "execute_all"
    )


class TypedBatch(msgspec.Struct, frozen=True, gc=False):
    # The defaults may be null (or absent): it matters only to an item that uses them.
    evaluations: list[TypedItem]
    subject: TypedEntity | None = None
    action: TypedAction | None = None
    resource: TypedEntity | None = None
    context: _Properties = None
    options: TypedOptions | None = None


_BATCH = msgspec.json.Decoder(TypedBatch)


def decode_batch(raw: bytes) -> TypedBatch | None:
    """``raw`` as a :class:`TypedBatch`, or None if it is not one (see above)."""
    try:
        return _BATCH.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
