"""The AuthZEN Authorization API 1.0 over HTTP: evaluation, evaluations, the three
searches and the discovery metadata, unscoped and per workspace.

Unscoped (``/access/v1/...``) the workspace is ``resource.properties.workspace``;
scoped (``/pdp/<workspace>/access/v1/...``) it is the URL's, so requests look exactly
like other decision points' (the Todo interop scenario sends no workspace). Each
workspace's metadata is at ``/.well-known/authzen-configuration/pdp/<workspace>``
(the metadata path of the decision point ``<base>/pdp/<workspace>``, as RFC 8414
places an issuer's). Handlers only read the JSON body; the mapping is
:mod:`gateway.services.authzen`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request

from gateway.errors import BadRequest
from gateway.services.authzen.paging import MAX_PAGE_LIMIT
from gateway.services.authzen.service import AuthZenService, EncodedAnswer
from gateway.services.authzen.wire import MAX_NAME, OWNER_PROPERTY, SEMANTICS, WORKSPACE_PROPERTY
from gateway.web.http import answered, answered_json, decision_services
from gateway.web.json_input import TOO_DEEP, Blueprint, TooDeeplyNested, loads
from gateway.web.state import state

blp = Blueprint(
    "authzen",
    __name__,
    description="AuthZEN Authorization API 1.0: evaluations, searches, discovery",
)

SCOPE = "/pdp/<workspace>"


# The bodies in the OpenAPI document, as plain JSON Schema: the service validates
# (AuthZEN wants 400s, and a batch item's error is a deny, not a refusal), and these say
# exactly what it accepts and answers.
_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME}
# An optional member may be null: the service reads null as "not given".
_OBJECT = {"type": ["object", "null"]}


def _entity(*, with_id: bool = True, workspace: bool = False) -> dict[str, Any]:
    """A subject or resource; ``workspace``: ``properties.workspace`` is required (a
    resource on the unscoped endpoints, which take the workspace from it)."""
    properties: dict[str, Any] = {"type": _NAME, "properties": _OBJECT}
    required = ["type"]
    if with_id:
        properties["id"] = _NAME
        required.append("id")
    if workspace:
        properties["properties"] = {
            "type": "object",
            "required": [WORKSPACE_PROPERTY],
            "properties": {WORKSPACE_PROPERTY: {"type": "string", "minLength": 1}},
        }
        required.append("properties")
    return {"type": "object", "required": required, "properties": properties}


_ACTION = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _NAME, "properties": _OBJECT},
}
_RESOURCE_NOTE = (
    "type is the Ringfence resource; properties.workspace the workspace (unscoped "
    "endpoints only: per workspace, another one there is a deny), properties.ownerID "
    "the owner"
)
_OPTIONS = {
    "type": ["object", "null"],
    "properties": {
        "explain": {"type": "boolean", "description": "Ringfence: say why, in the context"}
    },
}
_PAGE = {
    "type": ["object", "null"],
    "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT},
        "token": {
            "type": ["string", "null"],
            "description": "page.next_token of the previous page",
        },
    },
}


def _question(scoped: bool) -> dict[str, Any]:
    resource = {**_entity(workspace=not scoped), "description": _RESOURCE_NOTE}
    return {"subject": _entity(), "action": _ACTION, "resource": resource, "context": _OBJECT}


def evaluation_request(scoped: bool) -> dict[str, Any]:
    properties = {**_question(scoped), "options": _OPTIONS}
    return {
        "type": "object",
        "required": ["subject", "action", "resource"],
        "properties": properties,
    }


def evaluations_request(scoped: bool) -> dict[str, Any]:
    semantic = {"evaluations_semantic": {"enum": list(SEMANTICS)}}
    single = evaluation_request(scoped)
    single["properties"]["evaluations"] = {"maxItems": 0}  # none (or null): one evaluation
    return {
        "type": "object",
        "properties": {
            "context": _OBJECT,
            "options": _OPTIONS,
            "evaluations": {
                "type": ["array", "null"],
                "items": {
                    "description": "subject, action, resource and/or context, each replacing "
                    "the default of the same name; an item that is not valid (after the "
                    "defaults) is answered by a deny with context.error"
                },
            },
        },
        # With items, subject, action, resource and context are defaults for them (an
        # item's problem is its own deny) and options.evaluations_semantic says when to
        # stop; without, the request is one evaluation.
        "anyOf": [
            {
                "required": ["evaluations"],
                "properties": {
                    "evaluations": {"type": "array", "minItems": 1},
                    "options": {"properties": semantic},
                },
            },
            single,
        ],
    }


def search_request(kind: str, scoped: bool) -> dict[str, Any]:
    parts = _question(scoped)
    if kind == "subject":
        parts["subject"] = _entity(with_id=False)
    elif kind == "resource":
        resource = _entity(with_id=False)
        resource["properties"]["properties"] = {
            "type": ["object", "null"],
            "properties": {WORKSPACE_PROPERTY: {"type": ["string", "null"]}},
        }
        parts["resource"] = {**resource, "description": _RESOURCE_NOTE}
    else:
        del parts["action"]
    return {
        "type": "object",
        "required": sorted(set(parts) - {"context"}),
        "properties": {**parts, "page": _PAGE},
    }


_CONTEXT = {
    "type": "object",
    "properties": {
        "revision": {"type": "integer", "description": "Policy revision of the answer"},
        "reason_admin": {
            "type": "object",
            "description": "With a deny: why, by language",
            "additionalProperties": {"type": "string"},
        },
        "explanation": {"type": "object", "description": "With options.explain"},
        "error": {
            "type": "object",
            "description": "A batch item that is not valid (its answer is a deny)",
            "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        },
    },
}
EVALUATION_ANSWER = {
    "type": "object",
    "required": ["decision", "context"],
    "properties": {"decision": {"type": "boolean"}, "context": _CONTEXT},
}
EVALUATIONS_ANSWER = {
    "anyOf": [
        {
            "type": "object",
            "required": ["evaluations"],
            "properties": {"evaluations": {"type": "array", "items": EVALUATION_ANSWER}},
            "description": "In request order; fewer than asked when evaluations_semantic "
            "stopped early",
        },
        {**EVALUATION_ANSWER, "description": "Without items: one evaluation's answer"},
    ]
}
_STRING = {"type": "string"}


def search_answer(result: dict[str, Any]) -> dict[str, Any]:
    page = {
        "type": "object",
        "required": ["next_token", "count", "total"],
        "properties": {
            "next_token": {"type": "string", "description": "Empty on the last page"},
            "count": {"type": "integer", "minimum": 0},
            "total": {"type": "integer", "minimum": 0},
        },
    }
    return {
        "type": "object",
        "required": ["results", "page"],
        "properties": {"results": {"type": "array", "items": result}, "page": page},
    }


SUBJECT_RESULT = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {"type": _STRING, "id": _STRING},
}
RESOURCE_RESULT = {
    "type": "object",
    "required": ["type", "id", "properties"],
    "properties": {
        "type": _STRING,
        "id": {"type": "string", "description": "* for every resource of the type"},
        "properties": {
            "type": "object",
            "required": [WORKSPACE_PROPERTY],
            "properties": {WORKSPACE_PROPERTY: _STRING, OWNER_PROPERTY: _STRING},
        },
    },
}
ACTION_RESULT = {"type": "object", "required": ["name"], "properties": {"name": _STRING}}


def _raw_body() -> bytes:
    """The request's body; 400 for another content type than JSON, or an empty body."""
    if not request.is_json:
        raise BadRequest("Send the request as JSON (Content-Type: application/json)")
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise BadRequest("The request body is empty")
    return raw


def _json(raw: bytes) -> Any:
    """``raw`` read as JSON; 400 if it is malformed."""
    try:
        return loads(raw)
    except TooDeeplyNested as exc:
        raise BadRequest(TOO_DEEP) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The request body is not valid JSON") from exc


def _authzen() -> AuthZenService:
    return decision_services().authzen


Encoded = Callable[[AuthZenService], Callable[[bytes, str | None], EncodedAnswer | None]]


def _post(
    path: str,
    call: Callable[[AuthZenService], Callable[..., Any]],
    request_schema: Callable[[bool], dict[str, Any]],
    answer: dict[str, Any],
    doc: str,
    encoded: Encoded | None = None,
) -> None:
    """Route ``path`` unscoped and per workspace to one service method; documented with
    ``request_schema(scoped)`` and the 200 ``answer``. ``encoded``: a method answering
    the raw body in JSON when it can (None: it cannot), tried first."""

    def handle(scope: str | None) -> Any:
        raw = _raw_body()
        if encoded is not None:
            fast = encoded(_authzen())(raw, scope)
            if fast is not None:
                return answered_json(fast.body, {"allow": fast.allowed, "deny": fast.denied})
        return answered(call(_authzen())(_json(raw), scope))

    def unscoped() -> Any:
        return handle(None)

    def scoped(workspace: str) -> Any:
        return handle(workspace)

    name = path.strip("/").replace("/", "_")
    for endpoint, view, url, is_scoped in (
        (name, unscoped, path, False),
        (f"{name}_scoped", scoped, SCOPE + path, True),
    ):
        view.__name__ = endpoint
        view.__doc__ = doc
        body = {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema(is_scoped)}},
            },
            "responses": {
                "200": {
                    "description": "The answer (a deny is a 200 too)",
                    "content": {"application/json": {"schema": answer}},
                },
                # AuthZEN's status for a request that is not valid (not a 422)
                "400": "BAD_REQUEST",
            },
        }
        blp.route(url, methods=["POST"], endpoint=endpoint)(blp.doc(**body)(view))


_post(
    "/access/v1/evaluation",
    lambda s: s.evaluate,
    evaluation_request,
    EVALUATION_ANSWER,
    "AuthZEN access evaluation: one decision (a deny is a 200)",
)
_post(
    "/access/v1/evaluations",
    lambda s: s.evaluate_many,
    evaluations_request,
    EVALUATIONS_ANSWER,
    "AuthZEN evaluations: a batch with defaults and an evaluations_semantic",
    encoded=lambda s: s.evaluate_many_json,
)
_post(
    "/access/v1/search/subject",
    lambda s: s.search_subjects,
    lambda scoped: search_request("subject", scoped),
    search_answer(SUBJECT_RESULT),
    "AuthZEN subject search: who may; paged with page.limit and page.token",
)
_post(
    "/access/v1/search/resource",
    lambda s: s.search_resources,
    lambda scoped: search_request("resource", scoped),
    search_answer(RESOURCE_RESULT),
    "AuthZEN resource search: where the subject may; paged",
)
_post(
    "/access/v1/search/action",
    lambda s: s.search_actions,
    lambda scoped: search_request("action", scoped),
    search_answer(ACTION_RESULT),
    "AuthZEN action search: what the subject may do on the resource; paged",
)


_ENDPOINT = {"type": "string", "format": "uri"}
CONFIGURATION = {
    "type": "object",
    "required": ["policy_decision_point", "access_evaluation_endpoint"],
    "properties": {
        name: _ENDPOINT
        for name in (
            "policy_decision_point",
            "access_evaluation_endpoint",
            "access_evaluations_endpoint",
            "search_subject_endpoint",
            "search_resource_endpoint",
            "search_action_endpoint",
        )
    },
}
_CONFIGURATION_DOC = {
    "responses": {
        "200": {
            "description": "AuthZEN metadata",
            "content": {"application/json": {"schema": CONFIGURATION}},
        }
    },
    "security": [],
}


@blp.route("/.well-known/authzen-configuration", methods=["GET"])
@blp.doc(**_CONFIGURATION_DOC)
def configuration() -> Any:
    """AuthZEN discovery metadata of the unscoped decision point."""
    return AuthZenService.configuration(state().settings.public_url)


@blp.route("/.well-known/authzen-configuration/pdp/<workspace>", methods=["GET"])
@blp.doc(**_CONFIGURATION_DOC)
def workspace_configuration(workspace: str) -> Any:
    """AuthZEN discovery metadata of one workspace's decision point.

    Answered for any name, existing or not, so it tells nobody which workspaces exist.
    """
    settings = state().settings
    return AuthZenService.configuration(settings.public_url, workspace)
