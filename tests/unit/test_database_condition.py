"""What /readyz says of the database: a timeout is silence, a refusal is unreachable.

The CI run of stop 16 saw a stalled link reported as ``unreachable``: the probe's catch-up
opened a new connection through the stalled proxy and psycopg's connect timeout ran out,
which was counted as a refusal. The end-to-end case is
tests/functional/test_database_stall.py; these pin the classification itself."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from sqlalchemy.exc import OperationalError

from gateway.db.session import DatabaseSilent, is_silence
from gateway.replication.sync import SyncState
from gateway.web.freshness import database_condition


def wrapped(orig: Exception) -> OperationalError:
    """As SQLAlchemy raises a driver's error."""
    try:
        raise OperationalError("SELECT 1", {}, orig) from orig
    except OperationalError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "silent"),
    [
        (wrapped(psycopg.errors.ConnectionTimeout("connection timeout expired")), True),
        (wrapped(DatabaseSilent("the database did not answer within 1 s")), True),
        (DatabaseSilent("raised bare, outside SQLAlchemy"), True),
        (wrapped(psycopg.OperationalError("connection refused")), False),
        (wrapped(psycopg.OperationalError("password authentication failed")), False),
        (RuntimeError("anything else"), False),
    ],
)
def test_a_timeout_is_silence_and_a_refusal_is_not(error: Exception, silent: bool) -> None:
    assert is_silence(error) is silent


def test_the_probe_names_the_database_condition() -> None:
    state = SyncState()
    assert database_condition(state) == "ok"
    state.database_ok, state.database_silent = False, True
    assert database_condition(state) == "silent"
    state.database_silent = False
    assert database_condition(state) == "unreachable"
    # No failure yet, but the revision check has gone unanswered past stale_after.
    state.database_ok, state.stale_after, state.confirmed_at = True, 0.5, 0.0
    assert database_condition(state) == "silent"
