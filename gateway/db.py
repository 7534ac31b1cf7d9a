"""Database engine, sessions and migrations (Alembic owns the schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys and a busy timeout."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("postgresql"):
        kwargs["connect_args"] = postgres_connect_args(url)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; running it again is a no-op."""
    command.upgrade(alembic_config(engine), revision)
