"""The in-memory expiry schedule of time-limited grants (gateway.engine.expiry), on a real
decision engine: ended grants stop counting at their end time, and a grant removed and
given again does not inherit an old end time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.config import Settings
from gateway.engine.engine import (
    DecisionEngine,
    RuleAdded,
    RuleRemoved,
    SubjectChanged,
    WorkspaceAdded,
)
from gateway.engine.expiry import ExpirySchedule, expire_due, schedule_for
from gateway.engine.rules import GrantKey, Rule, grant_rule, permission_rule

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def rule(user: int, role: str = "viewer", workspace: str = "acme") -> Rule:
    return grant_rule(GrantKey(user, role, workspace))


def test_due_takes_out_entries_in_time_order() -> None:
    schedule = ExpirySchedule()
    schedule.load([(T0 + timedelta(seconds=2), rule(2)), (T0, rule(1))])
    assert schedule.next_at() == T0.timestamp()
    assert schedule.due(T0.timestamp() - 1) == []
    assert schedule.due(T0.timestamp()) == [rule(1)]
    assert schedule.next_at() == (T0 + timedelta(seconds=2)).timestamp()
    assert schedule.due((T0 + timedelta(days=1)).timestamp()) == [rule(2)]
    assert schedule.next_at() == float("inf") and len(schedule) == 0


def test_a_rule_removed_or_added_again_loses_its_old_end() -> None:
    schedule = ExpirySchedule()
    schedule.committed([], [(rule(1), T0), (rule(2), T0), (rule(3), T0)])
    schedule.committed([RuleRemoved(rule(1)), RuleAdded(rule(2))], [(rule(3), T0 + timedelta(1))])
    assert schedule.due(T0.timestamp()) == []
    assert schedule.due((T0 + timedelta(days=1)).timestamp()) == [rule(3)]


def test_expire_due_removes_ended_grants_from_the_engine_without_a_new_revision() -> None:
    engine = DecisionEngine(Settings().model_path)
    engine.apply(
        [
            WorkspaceAdded("acme"),
            SubjectChanged(1, "a@example.com", active=True),
            RuleAdded(permission_rule("viewer", "documents:read")),
            RuleAdded(rule(1)),
        ],
        revision=5,
    )
    schedule_for(engine).committed([], [(rule(1), T0)])
    expire_due(engine, now=T0.timestamp() - 0.001)
    assert engine.check(1, "acme", "documents", "read").allowed
    expire_due(engine, now=T0.timestamp())
    decision = engine.check(1, "acme", "documents", "read")
    assert not decision.allowed and decision.revision == 5
    assert len(schedule_for(engine)) == 0
