"""The app factory: the one place that wires settings, database, engine, mailer and the
HTTP APIs together."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import swagger_ui_bundle
from flask import Flask, Response, send_from_directory
from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session, sessionmaker

import admin_api
from gateway import accept_page, authzen_api, decision_api
from gateway.config import Settings, load_settings
from gateway.db import make_engine, make_session_factory
from gateway.engine import DecisionEngine
from gateway.errors import ServiceUnavailable
from gateway.http import ProblemApi, close_services, register_error_handlers, request_id
from gateway.notifier import Notifier
from gateway.services import load_engine, login_throttle
from gateway.services.authzen import load_refinements, load_subject_directory
from gateway.sync import RevisionPoller
from gateway.throttle import LoginThrottle


@dataclass
class GatewayState:
    """What every request needs, kept in ``app.extensions["ringfence"]``."""

    settings: Settings
    db: Engine
    session_factory: sessionmaker[Session]
    engine: DecisionEngine
    notifier: Notifier
    throttle: LoginThrottle


def default_notifier(settings: Settings) -> Notifier:
    from mailer.celery_app import configure_celery
    from mailer.notifier import CeleryNotifier

    configure_celery(settings)
    return CeleryNotifier()


def install_delivery_ledger(
    session_factory: sessionmaker[Session], engine: DecisionEngine, settings: Settings
) -> None:
    """Let the mail tasks of this process record deliveries in this database."""
    from gateway.services.delivery import DatabaseLedger
    from mailer.delivery import install_ledger

    install_ledger(DatabaseLedger(session_factory, engine, settings))


def create_app(settings: Settings | None = None, notifier: Notifier | None = None) -> Flask:
    """A ready gateway on a migrated database (``ringfence init`` migrates it)."""
    settings = (settings or load_settings()).with_secret()
    logging.getLogger("casbin").setLevel(logging.WARNING)  # it logs the model at INFO
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    db = make_engine(settings.sqlalchemy_url)
    if not inspect(db).has_table("policy_state"):
        raise ServiceUnavailable(
            f"The database at {db.url.render_as_string(hide_password=True)} is not set up; "
            "run `ringfence init` first"
        )
    session_factory = make_session_factory(db)
    with session_factory() as session:
        engine = load_engine(db, session, settings)
    # AuthZEN's subject directory and refinements: a bad file stops start-up, not a request.
    load_subject_directory(settings.authzen_subjects)
    load_refinements(settings.authzen_refinements)

    app = Flask("ringfence")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Ringfence",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Swagger UI's files come from the swagger-ui-bundle package, served by us, so
        # the docs work without reaching a CDN.
        OPENAPI_SWAGGER_UI_URL="/docs/static/",
        API_SPEC_OPTIONS={
            "info": {"description": "Ringfence admin API and decision API"},
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                }
            },
            "security": [{"bearerAuth": []}],
        },
    )
    install_delivery_ledger(session_factory, engine, settings)
    app.extensions["ringfence"] = GatewayState(
        settings,
        db,
        session_factory,
        engine,
        notifier or default_notifier(settings),
        login_throttle(settings),
    )
    if settings.revision_poll_seconds > 0:
        app.extensions["ringfence_poller"] = RevisionPoller(
            engine, db, session_factory, settings
        ).start()
    api = ProblemApi(app)
    api.register_blueprint(decision_api.blp)
    api.register_blueprint(authzen_api.blp)
    admin_api.register(api)
    app.register_blueprint(accept_page.bp)
    accept_page.install_log_redaction()
    register_error_handlers(app)
    app.teardown_appcontext(close_services)

    @app.after_request
    def add_headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = request_id()
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok", "revision": app.extensions["ringfence"].engine.revision}

    @app.get("/docs/static/<path:filename>")
    def swagger_ui_static(filename: str) -> Response:
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)

    return app
