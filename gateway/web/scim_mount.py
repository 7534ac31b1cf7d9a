"""``/scim/v2`` mounted without loading the SCIM server: :mod:`gateway.web.scim` (and
scim2-models, pydantic models built at import: half a second) is imported at the first
SCIM request. Most processes never serve one: a replica whose installation has no
directory connection, the CLI, every test that does not provision.

Flask adds no route after an app's first request, so the routes are here from the start
and hand every request to the server's router (scim2-server's ``ScimHandler.handle``,
the one scim2-flask's own fallback route uses); its errors keep the SCIM schema.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from flask import Blueprint, Flask, Response, current_app

if TYPE_CHECKING:
    from gateway.web.scim import DirectoryScimServer

URL_PREFIX = "/scim/v2"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_servers: WeakKeyDictionary[Flask, DirectoryScimServer] = WeakKeyDictionary()
_building = threading.Lock()


def server_of(app: Flask) -> DirectoryScimServer:
    """``app``'s SCIM server, built at its first request."""
    server = _servers.get(app)
    if server is None:
        with _building:
            server = _servers.get(app)
            if server is None:
                from gateway.web.scim import build_server

                server = _servers[app] = build_server(app, URL_PREFIX)
    return server


def _current() -> DirectoryScimServer:
    # The app itself, not its proxy: the servers are kept by app, weakly.
    return server_of(current_app._get_current_object())  # type: ignore[attr-defined]


def _serve(path: str = "") -> Response:
    return _current().serve()


def _error(error: Exception) -> Response:
    """Errors of this blueprint (the app's hooks included) in the SCIM error schema."""
    return _current().error_response(error)


def init_app(app: Flask) -> None:
    blueprint = Blueprint("scim", __name__, url_prefix=URL_PREFIX)
    # "search_root": the name scim2-flask gives the base URL, which it asks url_for for.
    view: Any = _serve
    blueprint.add_url_rule("/", "search_root", view, methods=METHODS, defaults={"path": ""})
    blueprint.add_url_rule("/<path:path>", "dispatch", view, methods=METHODS)
    blueprint.register_error_handler(Exception, _error)
    app.register_blueprint(blueprint)
