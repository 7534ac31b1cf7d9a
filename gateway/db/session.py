"""Database engine, sessions and migrations (Alembic owns the schema)."""

from __future__ import annotations

import time
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys and a busy timeout. A pooled
    connection that sat unused for :data:`PING_AFTER_IDLE` seconds is pinged before it
    is handed out (:func:`_ping_if_idle`)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("postgresql"):
        kwargs["connect_args"] = postgres_connect_args(url)
    engine = create_engine(url, **kwargs)
    event.listen(engine, "checkin", _note_idle)

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        _ping_if_idle(engine.dialect, dbapi_connection, record)

    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.driver == "psycopg":
        event.listen(engine, "do_connect", _bounded_connection)
    return engine


# Seconds a pooled connection may sit unused and still be handed out without a ping.
# SQLAlchemy's pool_pre_ping pinged at every checkout: a round trip for every request
# (and for every read made beside its session), 2-3% of a SCIM create's CPU, where a
# connection in steady use answered a moment ago. One that sat idle (the database may
# have restarted, a proxy may have dropped it) is pinged and, if dead, replaced: replicas
# recover by themselves as before. A connection that broke within a second of its last
# use fails the statement that meets it, as a break under way does (a 503, "nothing was
# changed"), and SQLAlchemy then replaces every connection of the pool older than that.
PING_AFTER_IDLE = 1.0
_IDLE_SINCE = "ringfence_idle_since"


def _note_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _ping_if_idle(dialect: Any, dbapi_connection: Any, record: Any) -> None:
    """A checkout's ping, for a connection idle for PING_AFTER_IDLE seconds (a new one
    is not, and carries no mark: the record's info is emptied when it reconnects)."""
    since = record.info.get(_IDLE_SINCE)
    if since is None or time.monotonic() - since < PING_AFTER_IDLE:
        return
    try:
        alive = dialect.do_ping(dbapi_connection)
    except dialect.loaded_dbapi.Error as exc:
        # Any failure of the ping (a closed link, a silent one: DatabaseSilent): the
        # pool disposes of this connection and tries a new one.
        raise DisconnectionError(f"the pooled connection is gone: {exc}") from exc
    if not alive:
        raise DisconnectionError("the pooled connection is gone")


# Bounds on every PostgreSQL session, so that nothing waits for ever on a database that
# stopped answering: a connection attempt fails after 3 s (a 503); TCP keepalives and
# tcp_user_timeout notice a dead link within ~20 s; a statement (a bulk load included)
# ends after 60 s, a lock wait after 10 s; and a transaction left open by a client that
# vanished (a replica whose link stalled while it held the revision row) is ended by
# the server after 60 s, so that it cannot block every other replica's writes.
POSTGRES_SESSION = {
    "statement_timeout": "60s",
    "lock_timeout": "10s",
    "idle_in_transaction_session_timeout": "60s",
}
POSTGRES_LINK = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,  # milliseconds
}


def postgres_connect_args(url: str) -> dict[str, Any]:
    """libpq arguments with :data:`POSTGRES_LINK` and the :data:`POSTGRES_SESSION`
    settings added to the URL's own ``options`` (a search_path, say), which stay."""
    own = make_url(url).query.get("options", "")
    options = " ".join(f"-c {name}={value}" for name, value in POSTGRES_SESSION.items())
    return {**POSTGRES_LINK, "options": f"{options} {own}".strip()}


# A request's wait for one answer of the server (gateway.app bounds the admin API's and the
# console's requests by RINGFENCE_DATABASE_REQUEST_WAIT_SECONDS, 15 s unless set;
# decisions have their own, shorter bound: gateway.web.bounded). A stalled
# link or a frozen server refuses nothing and answers nothing, and as long as the kernel
# at the other end still acknowledges (a frozen server's does, and so does a proxy's),
# neither keepalives nor tcp_user_timeout notice: psycopg would wait for ever. A request's
# statements are short, and the server ends a lock wait after lock_timeout (10 s): an
# answer not there 5 s after that will not come. The request then gets a clean 503.
# Once one wait of a request ran out, the rest of it (answering, keeping an idempotent
# answer) waits this long at most: the server was silent a moment ago.
AFTER_SILENCE_SECONDS = 1.0
_request_wait: ContextVar[float | None] = ContextVar("ringfence_request_wait", default=None)


class DatabaseSilent(psycopg.OperationalError):
    """The server did not answer within the request's bound; the connection is closed
    (its protocol state is unknown), so the pool replaces it."""


def is_silence(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is the database not answering in time (a
    connect timeout, or a bounded wait that ran out), as opposed to refusing (connection
    refused, authentication failed, the server shutting down)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (DatabaseSilent, psycopg.errors.ConnectionTimeout)):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def bound_request_waits(seconds: float | None) -> None:
    """From now on (in this thread's context) no wait for the database lasts longer than
    ``seconds``; None lifts the bound."""
    _request_wait.set(seconds)


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server (queries, COMMIT, the pool's
    ping) is bounded while a request's bound is set (:func:`bound_request_waits`)."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        bound = _request_wait.get()
        if bound is None or timeout is not None:
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, bound)
        except psycopg.errors._WaitTimeout:
            _request_wait.set(min(bound, AFTER_SILENCE_SECONDS))
            self.close()
            raise DatabaseSilent(
                f"connection: the database did not answer within {bound:g} s (timeout)"
            ) from None


def _bounded_connection(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    return BoundedConnection.connect(*cargs, **cparams)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    # Alembic is imported here, not above: only migrations need it, and a replica, a
    # worker or a CLI command that does not migrate would load it for nothing.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; running it again is a no-op."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)
