"""Only canonical user references resolve (security finding 7): ``user:<id>`` and
``<id>`` in ASCII digits without a leading zero, nothing trimmed, and the email address
in any case and any NFKC-equivalent spelling (gateway.emails). Any other spelling of an
id is an unknown subject, so it is denied, as Casbin (which compares strings) would deny
it; the decision service, AuthZEN and owners go through the same resolution (owners
too)."""

from __future__ import annotations

import pytest

from gateway.engine.engine import DecisionEngine, RuleAdded, SubjectChanged, WorkspaceAdded
from gateway.engine.rules import GrantKey, grant_rule, permission_rule
from gateway.services.decisions import DecisionService
from tests.casbin_reference import MODEL
from tests.helpers import full_width

JOHN = 1
MARY = 12


@pytest.fixture
def engine() -> DecisionEngine:
    engine = DecisionEngine(MODEL)
    engine.apply(
        [
            WorkspaceAdded("acme"),
            SubjectChanged(JOHN, "john@example.com", active=True),
            SubjectChanged(MARY, "mary@example.com", active=True),
            RuleAdded(permission_rule("editor", "documents:write")),
            RuleAdded(grant_rule(GrantKey(JOHN, "editor", "acme"))),
            RuleAdded(grant_rule(GrantKey(MARY, "editor", "acme"))),
        ],
        revision=1,
    )
    return engine


@pytest.mark.parametrize(
    ("subject", "user_id"),
    [
        ("user:1", JOHN),
        ("1", JOHN),
        ("user:12", MARY),
        ("12", MARY),
        ("john@example.com", JOHN),
        ("John@Example.COM", JOHN),
        # Any NFKC-equivalent spelling of the address (gateway.emails): full-width letters,
        # at sign and dot; mathematical bold letters.
        (full_width("john@example.com", keep="@."), JOHN),
        (full_width("JOHN@example.com"), JOHN),
        ("\U0001d423ohn@example.com", JOHN),  # bold j,
    ],
)
def test_canonical_references_resolve(engine: DecisionEngine, subject: str, user_id: int) -> None:
    assert engine.resolve_subject(subject) == user_id


NOT_CANONICAL = [
    "user:01",
    "01",
    "user:012",
    "0012",
    "user:0",
    "0",
    " user:1 ",
    "user:1 ",
    " 1",
    "1\n",
    "\tuser:1",
    "user: 1",
    "user:\uff11",  # full-width digit one
    "\uff11",
    "user:\uff11\uff12",  # full-width 12
    "user:\u0661",  # Arabic-Indic digit one
    "\u0967",  # Devanagari digit one
    "user:\U0001d7cf",  # mathematical bold digit one
    "user:1\u200b",  # zero-width space
    "user:+1",
    "user:1_0",
    "USER:1",
    " john@example.com",
    "john@example.com ",
    full_width("john@example.com") + "\u3000",  # an ideographic space: trimmed by nobody
    "\u3000john@example.com",
]


@pytest.mark.parametrize("subject", NOT_CANONICAL)
def test_other_spellings_are_unknown_subjects(engine: DecisionEngine, subject: str) -> None:
    assert engine.resolve_subject(subject) is None


@pytest.mark.parametrize("subject", NOT_CANONICAL)
def test_other_spellings_are_denied_on_the_decision_path(
    engine: DecisionEngine, subject: str
) -> None:
    decisions = DecisionService(engine)
    decision = decisions.check(subject, "acme", "documents", "write", seen=False)
    assert not decision.allowed
    assert decision.reason == "unknown subject"
    assert decisions.permissions(subject, "acme") == set()
    assert decisions.workspaces_where(subject, "documents", "write") == set()


def test_the_canonical_id_is_still_allowed(engine: DecisionEngine) -> None:
    decisions = DecisionService(engine)
    assert decisions.check("user:1", "acme", "documents", "write", seen=False).allowed
    assert decisions.check("12", "acme", "documents", "write", seen=False).allowed
