"""A service authorised by Ringfence in three lines (marked below): a Flask app whose
document views run only for people the gateway allows.

    RINGFENCE_URL=https://ringfence.example RINGFENCE_CLIENT_ID=... \\
    RINGFENCE_CLIENT_SECRET=... flask --app examples.flask_service.app run

The signed-in person is whoever ``X-User`` names (stand-in for the service's own sign-in;
in a real service, ``lambda: current_user.email``). The suite runs this app against a
real gateway: clients/python/tests/test_sdk_example.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, request
from ringfence_client.flask import FlaskRingfence  # 1


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        config or {name: os.environ[name] for name in os.environ if name.startswith("RINGFENCE_")}
    )
    documents: dict[str, dict[int, str]] = {}
    ringfence = FlaskRingfence(app, subject=lambda: request.headers.get("X-User"))  # 2

    @app.get("/w/<workspace>/documents/<int:doc>")
    @ringfence.require("documents", "read")  # 3 (and once per view)
    def read(workspace: str, doc: int) -> Any:
        return {"doc": doc, "text": documents.get(workspace, {}).get(doc, "")}

    @app.put("/w/<workspace>/documents/<int:doc>")
    @ringfence.require("documents", "write")
    def write(workspace: str, doc: int) -> Any:
        documents.setdefault(workspace, {})[doc] = request.get_data(as_text=True)
        return {"doc": doc, "written": True}

    @app.delete("/w/<workspace>/documents/<int:doc>")
    @ringfence.require("documents", "delete")
    def delete(workspace: str, doc: int) -> Any:
        documents.get(workspace, {}).pop(doc, None)
        return {"doc": doc, "deleted": True}

    return app
