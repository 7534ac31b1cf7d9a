"""The gateway's state: everything the HTTP layers need beyond the request, in one typed
object kept on the Flask app.

:func:`gateway.app.create_app` builds one :class:`GatewayState` per app and stores it
under the app's only extension key; every module of the web layer (and ``admin_api``,
``console``, the check lane, the server's fork hook) reaches it through
:func:`gateway_state` (an app at hand) or :func:`state` (the current app). The services
never see it: they are handed the plain collaborators they need (the engine, a session,
the decision log, the activity recorder), so they stay free of Flask.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from authlib.integrations.flask_client import OAuth
from authlib.integrations.flask_oauth2 import AuthorizationServer
from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.activity import ActivityRecorder
from gateway.audit.decision_feed import DecisionFeed
from gateway.audit.decision_log import DecisionLog
from gateway.audit.refusals import RefusalSampler
from gateway.config import Settings
from gateway.engine.engine import DecisionEngine
from gateway.identity.throttle import LoginThrottle
from gateway.identity.token_cache import DecisionTokenCache
from gateway.notifier import Notifier
from gateway.replication.sync import RevisionPoller
from gateway.replication.watcher import RedisWatcher
from gateway.services import authzen_service
from gateway.services.authzen.service import AuthZenService
from gateway.services.decisions import DecisionService
from gateway.web.bounded import BoundedCalls

EXTENSION = "ringfence"  # the one key of app.extensions this project uses


class DecisionServices:
    """The decision endpoints' services, built once per app: they hold no session (the
    engine answers from memory), so a decision request does not pay for building every
    service around a database session, as ``gateway.web.http.services`` does."""

    def __init__(
        self, state: GatewayState, emails_of: Callable[[set[int]], dict[int, str]]
    ) -> None:
        self.decisions = DecisionService(
            state.engine,
            activity=state.activity,
            decision_log=state.decision_log,
            decision_events=state.decision_feed,
        )
        # Only a subject search asks the database (for emails): ``emails_of`` opens the
        # request's session then.
        self.authzen: AuthZenService = authzen_service(self.decisions, state.settings, emails_of)


@dataclass(eq=False)
class GatewayState:
    """What the gateway's HTTP side holds for the life of the app."""

    settings: Settings
    db: Engine
    session_factory: sessionmaker[Session]
    engine: DecisionEngine
    notifier: Notifier
    throttle: LoginThrottle
    # Service tokens accepted a moment ago (the decision guard and the check lane).
    token_cache: DecisionTokenCache
    # Database calls on the decision path and in /readyz, with a time bound.
    db_calls: BoundedCalls
    # Where decisions are logged and "last seen" is noted (None: off).
    decision_log: DecisionLog | None = None
    activity: ActivityRecorder | None = None
    # The sampled decisions event streams asked for (gateway.audit.decision_feed).
    decision_feed: DecisionFeed | None = None
    # The revision check and the Redis notices (None: not configured).
    poller: RevisionPoller | None = None
    watcher: RedisWatcher | None = None
    # Authlib's OAuth server (gateway.web.oauth_api) and OIDC client (gateway.web.sso:
    # None when no provider is configured), set as those modules register.
    oauth_server: AuthorizationServer | None = None
    sso: OAuth | None = None
    # Refusals of callers who are not signed in, sampled for the audit trail.
    refusals: RefusalSampler = field(default_factory=RefusalSampler)
    # The decision endpoints' services (gateway.web.http.decision_services), on first use.
    decisions: DecisionServices | None = None
    # The process this state's threads and pooled connections belong to.
    pid: int = field(default_factory=os.getpid)
    # What else ``close`` undoes, newest first: what the app factory plugged into the
    # process for this app (its delivery ledger).
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def restart_after_fork(self) -> None:
        """``ringfence serve`` builds the app before forking workers: their threads and
        pooled connections stay behind in the parent, so each worker starts its own
        (called by gateway.cli.server.worker_app in each worker, and again by the first
        request, which is free once done). The decision log and the activity recorder
        restart their writers themselves, at any fork (gateway.audit)."""
        if self.pid == os.getpid():
            return
        self.pid = os.getpid()
        self.db.dispose(close=False)
        if self.poller is not None:
            self.poller.restart_after_fork()
        if self.watcher is not None:
            self.watcher.restart_after_fork()

    def close(self) -> None:
        """Stop what runs beside requests (the revision poller, the decision log's and
        the activity recorder's writers, after they wrote what they hold) and close the
        pooled connections: for whoever ends an app before the process (tests)."""
        if self.poller is not None:
            self.poller.stop()
        if self.decision_log is not None:
            self.decision_log.close(timeout=2.0)
        if self.activity is not None:
            self.activity.close()
        if self.decision_feed is not None:
            self.decision_feed.close(timeout=2.0)
        while self.on_close:
            self.on_close.pop()()
        self.db.dispose()


def gateway_state(app: Flask) -> GatewayState:
    """The state of ``app`` (built by ``gateway.app.create_app``)."""
    found = app.extensions[EXTENSION]
    if not isinstance(found, GatewayState):
        raise TypeError(f"app.extensions[{EXTENSION!r}] is not a GatewayState: {found!r}")
    return found


def state() -> GatewayState:
    """The state of the current app (in a request or app context)."""
    return gateway_state(current_app)
