"""The revision oracle (tests/oracle.py) catches what it is meant to catch: an answer
that is not the state at its revision, one claiming a revision never committed, a
permission coming back after a denial, and an answer missing a change older than the
staleness it states."""

from __future__ import annotations

from gateway.config import PROJECT_ROOT
from gateway.engine.engine import RuleAdded, RuleRemoved, SubjectChanged, WorkspaceAdded
from gateway.engine.rules import Rule
from gateway.replication.changelog import Logged
from tests.oracle import Answer, Confirmed, judge

READ = ("ann@example.com", "acme", "documents", "read")
GRANT = Rule("g", ("user:1", "role:viewer", "acme"))
LOG = [
    Logged(
        1,
        [
            RuleAdded(Rule("p", ("role:viewer", "*", "documents", "read", ""))),
            WorkspaceAdded("acme"),
            SubjectChanged(1, "ann@example.com", True),
        ],
        [],
        False,
    ),
    Logged(2, [RuleAdded(GRANT)], [], False),
    Logged(3, [RuleRemoved(GRANT)], [], False),
]


def answer(allowed: bool, revision: int, at: float, staleness: float = 0.0) -> Answer:
    return Answer("a", READ, allowed, revision, at, at + 0.01, False, staleness)


def test_answers_true_to_their_revision_pass() -> None:
    answers = [answer(False, 1, 1.0), answer(True, 2, 2.0), answer(False, 3, 3.0)]
    verdict = judge(LOG, PROJECT_ROOT / "model.conf", answers, [Confirmed(2, 1.5)])
    assert verdict.ok and verdict.judged == 3, verdict.summary()


def test_each_kind_of_untruth_is_counted() -> None:
    answers = [
        answer(True, 1, 1.0),  # wrong: no grant yet at revision 1
        answer(True, 9, 1.1),  # wrong: revision 9 was never committed
        answer(False, 3, 2.0),
        answer(True, 2, 3.0),  # true at 2, but after a denial at 3: a flip
        answer(True, 2, 9.0, staleness=1.0),  # misses revision 3, confirmed at 5.0
    ]
    verdict = judge(LOG, PROJECT_ROOT / "model.conf", answers, [Confirmed(3, 5.0)])
    assert [(a.revision, truth) for a, truth in verdict.wrong] == [(9, None), (1, False)]
    assert [(d.revision, a.sent) for d, a in verdict.flips] == [(3, 3.0), (3, 9.0)]
    assert [(a.sent, missed) for a, missed in verdict.understated] == [(9.0, 3)]
    assert not verdict.ok
