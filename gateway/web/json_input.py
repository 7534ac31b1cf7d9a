"""Reading the JSON callers send: one loader for every request body.

Python's JSON parser recurses once per nesting level, so a body such as ``[[[[...`` a
few thousand levels deep makes it raise :class:`RecursionError`, which is not the
:class:`ValueError` every reader catches as "not valid JSON": it became a 500. Here
it is one more malformed body (:class:`TooDeeplyNested`, a ``JSONDecodeError``), so
each reader answers the 400 it gives any other bad JSON: the admin API and
``/v1/check`` (flask-smorest's argument parser, :class:`Blueprint` below), AuthZEN
(:func:`loads`), Flask's own ``request.get_json`` (:class:`JsonProvider`) and the check
lane (which hands such a body to Flask).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

import flask
import flask_smorest
from flask.json.provider import DefaultJSONProvider
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request

TOO_DEEP = "The JSON body is too deeply nested"


class TooDeeplyNested(json.JSONDecodeError):
    """Nesting deeper than the parser can follow: malformed, like any other bad JSON."""

    def __init__(self, doc: str | bytes | bytearray) -> None:
        text = doc if isinstance(doc, str) else "<bytes>"  # a JSONDecodeError's doc is text
        super().__init__(TOO_DEEP, text, 0)


def _parsed(parse: Callable[[Any], Any], raw: str | bytes | bytearray) -> Any:
    try:
        return parse(raw)
    except RecursionError:
        raise TooDeeplyNested(raw) from None


def loads(raw: str | bytes | bytearray) -> Any:
    """``json.loads``; :class:`TooDeeplyNested` (a ValueError) for nesting too deep."""
    return _parsed(json.loads, raw)


class JsonParser(FlaskParser):
    """webargs' parser, reading JSON bodies through :func:`_parsed` (as it reads them:
    UTF-8, then JSON) and saying why a too deeply nested one is refused."""

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            return core.missing
        return _parsed(core.parse_json, req.get_data(cache=True))

    def _handle_invalid_json_error(
        self,
        error: json.JSONDecodeError | UnicodeDecodeError,
        req: flask.Request,
        *args: Any,
        **kwargs: Any,
    ) -> NoReturn:
        # As webargs words it, but saying why when the nesting is the reason.
        message = TOO_DEEP if isinstance(error, TooDeeplyNested) else "Invalid JSON body."
        abort(400, exc=error, messages={"json": [message]})


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with :class:`JsonParser`: every API blueprint is one of
    these (the parser is bound when ``@blp.arguments`` decorates a view, at import)."""

    ARGUMENTS_PARSER = JsonParser()


class JsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with :func:`loads`: ``request.get_json`` refuses a too
    deeply nested body with its 400 for malformed JSON."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return _parsed(lambda raw: json.loads(raw, **kwargs), s)
