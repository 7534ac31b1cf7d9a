"""A revision oracle: is every answer a replica gave true at the revision it claimed?

The change log (``policy_changes``, gateway.replication.changelog) holds every revision's engine
changes, from revision 1 (``ringfence init``) on. The oracle replays it into a fresh
:class:`gateway.engine.engine.DecisionEngine` (the replicas' own evaluator: no second one to
disagree with it) one revision at a time, and at each revision asks the engine every
question that some replica answered *claiming that revision*. It counts:

- wrong answers: the answer is not the state at the revision it claims (or it claims a
  revision that was never committed);
- deny->allow flips: on one replica, a question denied at revision r1 and then (asked
  after that denial arrived) allowed at an older revision r2 < r1: a revoked permission
  coming back because the replica went back in time;
- understated staleness: an answer missing a change that a client was told was
  committed longer ago than the answer's ``X-Ringfence-Staleness`` (so its staleness,
  stale label included, did not say what it missed); and how many answers were
  labelled stale (``X-Ringfence-Stale: true``).

Grants with an end time (``expires_at``) end by the clock, not by a revision: the
oracle refuses to judge a log that has any.

Used by tests/integration/test_faults.py and ``make chaos`` (bench/chaos.py).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from gateway.db.session import make_engine
from gateway.engine.engine import DecisionEngine
from gateway.replication import changelog

# (subject, workspace, resource, action): a /v1/check body.
Question = tuple[str, str, str, str]


@dataclass(frozen=True)
class Answer:
    """One 200 answer to a check, as a client saw it (times: ``time.monotonic()``)."""

    replica: str
    question: Question
    allowed: bool
    revision: int
    sent: float
    received: float
    stale: bool
    staleness: float


@dataclass(frozen=True)
class Confirmed:
    """A change a client was told was committed at ``revision``, at time ``at``."""

    revision: int
    at: float


def answer_of(
    replica: str, question: Question, sent: float, received: float, response: httpx.Response
) -> Answer | None:
    """The :class:`Answer` in ``response`` to a ``/v1/check`` of ``question``; None if
    it is not a 200 answer."""
    if response.status_code != 200:
        return None
    body = response.json()
    return Answer(
        replica,
        question,
        bool(body["allowed"]),
        int(body["revision"]),
        sent,
        received,
        response.headers.get("X-Ringfence-Stale") == "true",
        float(response.headers.get("X-Ringfence-Staleness", "0")),
    )


@dataclass
class Record:
    """What a run collected: answers and confirmed commits, from any thread."""

    answers: list[Answer] = field(default_factory=list)
    confirmed: list[Confirmed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_answer(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def add_confirmed(self, revision: int, at: float) -> None:
        with self._lock:
            self.confirmed.append(Confirmed(revision, at))

    def between(self, start: float, end: float) -> Record:
        """The answers sent in ``[start, end)`` (and every confirmed commit)."""
        with self._lock:
            answers = [a for a in self.answers if start <= a.sent < end]
            return Record(answers, list(self.confirmed))


@dataclass
class Verdict:
    judged: int = 0
    wrong: list[tuple[Answer, bool | None]] = field(default_factory=list)  # (answer, truth)
    flips: list[tuple[Answer, Answer]] = field(default_factory=list)  # (denial, later allow)
    understated: list[tuple[Answer, int]] = field(default_factory=list)  # (answer, missed)
    labelled_stale: int = 0
    last_revision: int = 0

    @property
    def ok(self) -> bool:
        return not (self.wrong or self.flips or self.understated)

    def summary(self) -> str:
        text = (
            f"{self.judged} answers judged up to revision {self.last_revision}: "
            f"{len(self.wrong)} wrong, {len(self.flips)} deny->allow flips, "
            f"{len(self.understated)} with understated staleness, "
            f"{self.labelled_stale} labelled stale"
        )
        examples = [f"wrong (truth {t}): {a}" for a, t in self.wrong[:3]]
        examples += [f"flip: {d} then {a}" for d, a in self.flips[:3]]
        examples += [f"understated (missed {r}): {a}" for a, r in self.understated[:3]]
        return "\n  ".join([text, *examples])


def read_log(database_url: str) -> list[changelog.Logged]:
    """Every logged revision, in order, read straight from the database."""
    db = make_engine(database_url)
    try:
        with Session(db) as session:
            logged = changelog.read_after(session, 0)
    finally:
        db.dispose()
    if logged is None:
        raise RuntimeError("the change log does not hold every revision from 1 (pruned?)")
    return logged


def judge(
    logged: Sequence[changelog.Logged],
    model_path: Path,
    answers: Iterable[Answer],
    confirmed: Iterable[Confirmed] = (),
) -> Verdict:
    answers = list(answers)
    verdict = Verdict(judged=len(answers), labelled_stale=sum(a.stale for a in answers))
    verdict.last_revision = logged[-1].revision if logged else 0
    by_revision: dict[int, list[Answer]] = defaultdict(list)
    for answer in answers:
        if answer.revision > verdict.last_revision:
            verdict.wrong.append((answer, None))  # a revision never committed
        else:
            by_revision[answer.revision].append(answer)

    engine = DecisionEngine(model_path)

    def ask_at_revision(revision: int) -> None:
        truths: dict[Question, bool] = {}
        for answer in by_revision.get(revision, ()):
            truth = truths.get(answer.question)
            if truth is None:
                subject, workspace, resource, action = answer.question
                user_id = engine.resolve_subject(subject)
                truth = truths[answer.question] = engine.check(
                    user_id, workspace, resource, action
                ).allowed
            if truth is not answer.allowed:
                verdict.wrong.append((answer, truth))

    ask_at_revision(0)
    for entry in logged:
        if any(at is not None for _, at in entry.expiries):
            raise ValueError(f"revision {entry.revision} has grants with an end time")
        if not engine.apply(entry.changes, entry.revision):
            raise RuntimeError(f"revision {entry.revision} could not be applied")
        ask_at_revision(entry.revision)

    verdict.flips = _flips(answers)
    verdict.understated = _understated(answers, confirmed)
    return verdict


def _flips(answers: Sequence[Answer]) -> list[tuple[Answer, Answer]]:
    """Per replica and question: an allow sent after a denial at a newer revision had
    arrived."""
    groups: dict[tuple[str, Question], list[Answer]] = defaultdict(list)
    for answer in answers:
        groups[(answer.replica, answer.question)].append(answer)
    flips = []
    for group in groups.values():
        denials = sorted((a for a in group if not a.allowed), key=lambda a: a.received)
        if not denials:
            continue
        arrived = [d.received for d in denials]
        # newest[i]: the denial with the highest revision among the first i+1 to arrive
        newest: list[Answer] = []
        for denial in denials:
            if not newest or denial.revision > newest[-1].revision:
                newest.append(denial)
            else:
                newest.append(newest[-1])
        for allow in (a for a in group if a.allowed):
            i = bisect.bisect_left(arrived, allow.sent) - 1
            if i >= 0 and newest[i].revision > allow.revision:
                flips.append((newest[i], allow))
    return flips


def _understated(
    answers: Sequence[Answer], confirmed: Iterable[Confirmed]
) -> list[tuple[Answer, int]]:
    """Answers that miss a revision confirmed before (sent - stated staleness)."""
    commits = sorted(confirmed, key=lambda c: c.at)
    times = [c.at for c in commits]
    highest: list[int] = []
    for commit in commits:
        highest.append(max(commit.revision, highest[-1] if highest else 0))
    found = []
    for answer in answers:
        i = bisect.bisect_left(times, answer.sent - answer.staleness) - 1
        if i >= 0 and answer.revision < highest[i]:
            found.append((answer, highest[i]))
    return found
