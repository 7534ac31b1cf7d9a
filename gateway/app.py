"""The app factory: the one place that wires settings, database, engine, mailer and the
HTTP APIs together."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import swagger_ui_bundle
from flask import Flask, Response, has_request_context, request, send_from_directory
from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

import admin_api
import console
import gateway.web.changes_api
import gateway.web.reset_page
import gateway.web.sso
from gateway.audit import activity, decision_feed, decision_log
from gateway.config import Settings, load_settings
from gateway.db.session import bound_request_waits, make_engine, make_session_factory
from gateway.engine.engine import DecisionEngine
from gateway.errors import ServiceUnavailable
from gateway.identity.security import prepare_password_hashing
from gateway.identity.signing import KeyRing
from gateway.identity.token_cache import DecisionTokenCache
from gateway.logs import configure_logging, request_id
from gateway.notifier import Notifier
from gateway.replication import sync
from gateway.replication.loading import load_engine
from gateway.replication.sync import RevisionPoller, apply_notice, catch_up, state_of
from gateway.replication.watcher import RedisWatcher, notice_revision
from gateway.services import login_throttle
from gateway.services.authzen.directories import load_refinements, load_subject_directory
from gateway.services.authzen.resources import load_resource_directory
from gateway.web import (
    accept_page,
    authzen_api,
    decision_api,
    freshness,
    idempotency,
    oauth_api,
    scim_mount,
)
from gateway.web.bounded import BoundedCalls
from gateway.web.check_lane import CheckLane
from gateway.web.http import (
    ALWAYS_HEADERS,
    LANE_REQUEST_ID,
    ProblemApi,
    close_services,
    is_decision_request,
    register_error_handlers,
)
from gateway.web.json_input import JsonProvider
from gateway.web.state import EXTENSION, GatewayState

# The interactive API docs (/docs, flask-smorest's Swagger UI page) and their files: our
# own scripts and styles only (Swagger UI sets inline styles; its icons are data: URIs),
# requests to this origin only (the spec, "Try it out"). The page's one inline script
# (the Swagger UI config) is allowed by its hash, computed from the page as served.
DOCS_PATH = "/docs"
DOCS_CSP = (
    "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def docs_csp(page: bytes) -> str:
    """The docs' Content-Security-Policy, allowing the inline scripts of ``page``."""
    hashes = "".join(
        " 'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return DOCS_CSP.format(hashes=hashes)


class CanonicalInt(IntegerConverter):
    """``<int:...>`` in URLs: ASCII digits without leading zeros only. Werkzeug's own
    takes any Unicode digits and leading zeros, so ``/users/01`` (and a full-width 1)
    were user 1: one id, one spelling, as for ``user:<id>`` on the decision path."""

    regex = r"(?:0|[1-9][0-9]*)"


def default_notifier(settings: Settings) -> Notifier:
    from mailer.configure import configure_celery
    from mailer.notifier import CeleryNotifier

    configure_celery(settings)
    return CeleryNotifier()


def install_delivery_ledger(
    session_factory: sessionmaker[Session], engine: DecisionEngine, settings: Settings
) -> Callable[[], None]:
    """Let the mail tasks of this process record deliveries in this database, until
    the returned function is called (when the app closes).

    Process-wide on purpose, unlike everything in GatewayState: Celery tasks are module
    functions found by name (in the worker, or run eagerly here), with no app to ask, so
    they reach the ledger through mailer.delivery (the worker installs its own, from the
    ``ringfence.delivery_ledger`` entry point)."""
    from gateway.services.delivery import DatabaseLedger
    from mailer.delivery import install_ledger, uninstall_ledger

    ledger = DatabaseLedger(session_factory, engine, settings)
    install_ledger(ledger)
    return partial(uninstall_ledger, ledger)


def start_watcher(
    engine: DecisionEngine,
    db: Engine,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> RedisWatcher | None:
    """Change notices on Redis: publish each revision committed here, and wake the
    revision check when another replica commits one (None: no watcher configured)."""
    state = state_of(engine)
    state.tracked = True
    if not settings.watcher_url:
        return None
    watcher = RedisWatcher(settings.watcher_url, health_seconds=settings.watcher_health_seconds)

    def on_notice(message: str) -> None:
        revision = notice_revision(message)
        if revision is None or revision > engine.revision:
            # Caught up right here, on the watcher's thread: no hand-over to the poller.
            try:
                if revision is None:
                    catch_up(engine, db, session_factory, settings)
                else:
                    apply_notice(engine, db, session_factory, settings, revision)
            except Exception:
                state.wake.set()  # the poller retries (and keeps the stale flag)

    def on_connection(connected: bool) -> None:
        state.watcher_connected = connected

    watcher.set_update_callback(on_notice)
    watcher.on_connection_change(on_connection)
    state.publish = watcher.update
    if not sync.START_THREADS_AFTER_FORK:
        watcher.start()
    return watcher


def bound_database_waits(app: Flask, seconds: float) -> None:
    """No wait of an admin or console request for the database lasts longer than
    ``seconds`` (RINGFENCE_DATABASE_REQUEST_WAIT_SECONDS): a stalled link gets a clean
    503, not a request that hangs as long as the stall (decisions have their own bound:
    gateway.web.bounded). First
    of the hooks (the token and idempotency checks read the database), and lifted only
    after the request's session is closed."""

    @app.before_request
    def bound() -> None:
        if not is_decision_request():
            bound_request_waits(seconds)

    @app.teardown_appcontext
    def lift(_exc: BaseException | None) -> None:
        # Registered before close_services: teardowns run in reverse, so this is last.
        bound_request_waits(None)


def _request_id_if_any() -> str | None:
    return request_id() if has_request_context() else LANE_REQUEST_ID.get()


def install_housekeeping(
    db: Engine, session_factory: sessionmaker[Session], engine: DecisionEngine, settings: Settings
) -> None:
    """Let the upkeep tasks of this process (grant expiry, review deadlines) use it:
    process-wide on purpose, as the delivery ledger (Celery tasks have no app to ask)."""
    from gateway.services.housekeeping import DatabaseHousekeeping
    from mailer.housekeeping import install_housekeeping

    install_housekeeping(DatabaseHousekeeping(db, session_factory, engine, settings))


def create_app(settings: Settings | None = None, notifier: Notifier | None = None) -> Flask:
    """A ready gateway on a migrated database (``ringfence init`` migrates it)."""
    settings = (settings or load_settings()).with_secret()
    logging.getLogger("casbin").setLevel(logging.WARNING)  # it logs the model at INFO
    configure_logging(settings.log_level, settings.log_format)
    prepare_password_hashing(settings.password_hash_profile)
    db = make_engine(settings.sqlalchemy_url)
    if not inspect(db).has_table("policy_state"):
        raise ServiceUnavailable(
            f"The database at {db.url.render_as_string(hide_password=True)} is not set up; "
            "run `ringfence init` first"
        )
    session_factory = make_session_factory(db)
    with session_factory() as session:
        engine = load_engine(db, session, settings)
    # AuthZEN's directories and refinements: a bad file stops start-up, not a request.
    load_subject_directory(settings.authzen_subjects)
    load_refinements(settings.authzen_refinements)
    load_resource_directory(settings.authzen_resources)

    app = Flask("ringfence")
    app.json = JsonProvider(app)  # request.get_json: 400 for too deeply nested JSON too
    app.url_map.converters["int"] = CanonicalInt  # before any route is added
    bound_database_waits(app, settings.database_request_wait_seconds)
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
        # No online validator: its badge would send the spec's address to a third party
        # (and the docs' Content-Security-Policy refuses it).
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
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
    uninstall_ledger = install_delivery_ledger(session_factory, engine, settings)
    install_housekeeping(db, session_factory, engine, settings)
    app_state = GatewayState(
        settings,
        db,
        session_factory,
        engine,
        notifier or default_notifier(settings),
        login_throttle(settings),
        token_cache=DecisionTokenCache(
            settings.decision_token_cache_seconds, settings.decision_token_outage_grace_seconds
        ),
        db_calls=BoundedCalls(settings.database_call_timeout_seconds),
        decision_log=decision_log.from_settings(
            settings.decision_log, settings.decision_log_sample, _request_id_if_any
        ),
        activity=activity.from_settings(session_factory, settings.activity_flush_seconds),
        decision_feed=decision_feed.from_settings(
            session_factory, _request_id_if_any, start_after_fork=sync.START_THREADS_AFTER_FORK
        ),
    )
    if app_state.decision_feed is not None:
        # A batch of sampled decisions written: stream delivery starts at once.
        app_state.decision_feed.on_written = getattr(app_state.notifier, "events_committed", None)
    app_state.on_close.append(uninstall_ledger)
    app.extensions[EXTENSION] = app_state  # the one key: read through gateway_state(app)
    if settings.revision_poll_seconds > 0 or settings.watcher_url:
        app_state.poller = RevisionPoller(engine, db, session_factory, settings)
        if not sync.START_THREADS_AFTER_FORK:
            app_state.poller.start()
    app_state.watcher = start_watcher(engine, db, session_factory, settings)
    # The plain /v1/check with a remembered token, answered below Flask (the rest goes
    # through it); inside ProxyFix, which must see every request first.
    app.wsgi_app = CheckLane(app, app.wsgi_app)  # type: ignore[method-assign]
    if settings.trusted_proxies > 0:
        # Behind a load balancer: the client address (throttling, audit) is the one it
        # saw, taken from X-Forwarded-For as far as the trusted hops go.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    api = ProblemApi(app, public_endpoints=admin_api.PUBLIC_ENDPOINTS)
    api.register_blueprint(decision_api.blp)
    api.register_blueprint(authzen_api.blp)
    admin_api.register(api)
    app.register_blueprint(accept_page.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(gateway.web.reset_page.bp)
    scim_mount.init_app(app)  # /scim/v2: company directories (their own tokens and errors)
    gateway.web.sso.init_app(app, settings)
    accept_page.install_log_redaction()
    register_error_handlers(app)
    app.teardown_appcontext(close_services)
    oauth_api.init_app(app)
    # GET /v1/changes and /v1/snapshot: the change feed (its own token check).
    app.register_blueprint(gateway.web.changes_api.bp)
    # Before freshness: the answer it keeps must carry the revision header freshness adds.
    idempotency.install(app)
    # After the decision token check: an unauthenticated caller must not make a replica
    # wait for a revision, nor learn which revision it holds.
    freshness.install(app)
    with session_factory() as session:  # sign with a key from the first request on
        KeyRing(session, settings).ensure_signing_key()
        session.commit()

    @app.after_request
    def add_headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = request_id()
        for name, value in ALWAYS_HEADERS:
            response.headers.setdefault(name, value)
        if request.path == DOCS_PATH or request.path.startswith(DOCS_PATH + "/"):
            page = b"" if response.direct_passthrough else response.get_data()
            response.headers["Content-Security-Policy"] = docs_csp(page)
        return response

    @app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok", "revision": engine.revision}

    @app.get("/docs/static/<path:filename>")
    def swagger_ui_static(filename: str) -> Response:
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename, max_age=86400)

    return app
