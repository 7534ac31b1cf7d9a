"""Load for fault runs (tests/integration/test_faults.py, ``make chaos``): checks against
replicas and a stream of admin changes over real HTTP, every outcome recorded with its
time, for the revision oracle (:mod:`tests.oracle`) and the tables.

Subjects: people made with ``ringfence create-admin`` whose super admin grant is then
taken away, so that what they may do in ``acme`` is only what the change stream gives
them: each change replaces one person's roles there (none, viewer, editor, in turn), so
their ``documents:read`` and ``documents:write`` answers flip both ways.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import AuditEvent
from gateway.db.session import make_engine
from tests.cluster import Replica
from tests.helpers import run_cli
from tests.oracle import Question, Record, answer_of

ROLE_CYCLE: tuple[list[str], ...] = ([], ["viewer"], ["editor"])


def make_subjects(settings: Settings, admin: httpx.Client, count: int) -> list[tuple[int, str]]:
    """``count`` people with no role anywhere (see the module docstring): (id, email)."""
    subjects = []
    for i in range(count):
        email = f"subject{i}@example.com"
        created = run_cli(settings, "create-admin", "--email", email, "--name", f"Subject {i}")
        assert created.exit_code == 0, created.output
        [user] = [u for u in admin.get("/users", params={"q": email}).json() if u["email"] == email]
        removed = admin.delete(f"/users/{user['id']}/grants/*/superadmin")
        assert removed.status_code == 200, removed.text
        subjects.append((int(user["id"]), email))
    return subjects


def questions_of(subjects: Sequence[tuple[int, str]]) -> list[Question]:
    return [
        (email, "acme", "documents", action)
        for _, email in subjects
        for action in ("read", "write")
    ]


@dataclass(frozen=True)
class Sample:
    """One check as the client saw it (``status`` None: no answer, ``error`` says why)."""

    replica: str
    sent: float
    seconds: float
    status: int | None
    error: str = ""


class CheckLoad:
    """Threads asking every replica the questions in turn, each at most ``rate`` checks a
    second (0: as fast as it can), each check waiting up to ``timeout``."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        questions: Sequence[Question],
        record: Record,
        threads_per_replica: int = 1,
        rate: float = 0.0,
        timeout: float = 5.0,
    ) -> None:
        self.replicas = replicas
        self.questions = questions
        self.record = record
        self.samples: list[Sample] = []
        self.threads_per_replica = threads_per_replica
        self.rate = rate
        self.timeout = timeout
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> CheckLoad:
        for replica in self.replicas:
            for n in range(self.threads_per_replica):
                thread = threading.Thread(target=self._run, args=(replica, n), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def _run(self, replica: Replica, offset: int) -> None:
        interval = 1 / self.rate if self.rate else 0.0
        questions = itertools.cycle(self.questions[offset:] + self.questions[:offset])
        with replica.client(timeout=self.timeout) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                question = next(questions)
                subject, workspace, resource, action = question
                sent = time.monotonic()
                try:
                    response = client.post(
                        "/v1/check",
                        json={
                            "subject": subject,
                            "workspace": workspace,
                            "resource": resource,
                            "action": action,
                        },
                    )
                except httpx.HTTPError as exc:
                    received = time.monotonic()
                    self.samples.append(
                        Sample(replica.name, sent, received - sent, None, type(exc).__name__)
                    )
                else:
                    received = time.monotonic()
                    answer = answer_of(replica.name, question, sent, received, response)
                    if answer is not None:
                        self.record.add_answer(answer)
                    error = "" if answer is not None else response.text[:200]
                    self.samples.append(
                        Sample(replica.name, sent, received - sent, response.status_code, error)
                    )
                if interval:
                    next_at = max(next_at + interval, time.monotonic() - 1)
                    self._stop.wait(max(0.0, next_at - time.monotonic()))


@dataclass
class Write:
    """One admin change as the client saw it; ``request_id`` finds it in the audit trail."""

    request_id: str
    replica: str
    sent: float
    seconds: float = 0.0
    status: int | None = None  # None: no answer (the client gave up, or the link broke)
    problem: str = ""  # the problem type of an error answer
    revision: int | None = None


@dataclass
class WriteOutcomes:
    ok: int = 0
    clean_503: int = 0  # "nothing was changed", and nothing was
    unknown: int = 0  # no answer, or "outcome unknown": told neither made nor failed
    committed_reported_failed: list[Write] = field(default_factory=list)
    other_errors: list[Write] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.ok} ok, {self.clean_503} clean 503, {self.unknown} outcome unknown, "
            f"{len(self.committed_reported_failed)} committed but reported failed, "
            f"{len(self.other_errors)} other errors {[w.status for w in self.other_errors][:5]}"
        )


class Background:
    """A stream of requests in a thread of its own, from :meth:`start` until :meth:`stop`
    (which waits for the request in flight, ``timeout`` at most); subclasses write
    ``_run``, returning once ``_stop`` is set."""

    timeout: float

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)

    def _run(self) -> None:
        raise NotImplementedError


class ChangeStream(Background):
    """One thread making changes through the replicas in turn: each replaces a subject's
    roles in ``acme`` (:data:`ROLE_CYCLE`), with an ``X-Request-ID`` of its own."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        token: str,
        subjects: Sequence[tuple[int, str]],
        record: Record,
        interval: float = 0.05,
        timeout: float = 30.0,
    ) -> None:
        self.replicas = replicas
        self.token = token
        self.subjects = subjects
        self.record = record
        self.interval = interval
        self.timeout = timeout
        self.writes: list[Write] = []
        self.prefix = f"load-{uuid.uuid4().hex[:8]}-"
        super().__init__()

    def _run(self) -> None:
        clients = [replica.client(self.token, timeout=self.timeout) for replica in self.replicas]
        try:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                replica = self.replicas[n % len(self.replicas)]
                user_id, _ = self.subjects[n % len(self.subjects)]
                roles = ROLE_CYCLE[(n // len(self.subjects)) % len(ROLE_CYCLE)]
                write = Write(f"{self.prefix}{n}", replica.name, time.monotonic())
                self.writes.append(write)
                try:
                    response = clients[n % len(clients)].put(
                        f"/users/{user_id}/workspaces/acme/roles",
                        json={"roles": roles},
                        headers={"X-Request-ID": write.request_id},
                    )
                except httpx.HTTPError as exc:
                    write.problem = type(exc).__name__
                else:
                    write.status = response.status_code
                    if response.status_code < 300:
                        revision = response.headers.get("X-Ringfence-Revision")
                        if revision is not None:  # None: the roles were already those
                            write.revision = int(revision)
                            self.record.add_confirmed(write.revision, time.monotonic())
                    else:
                        write.problem = str(response.json().get("type", "")).rsplit(":", 1)[-1]
                write.seconds = time.monotonic() - write.sent
                self._stop.wait(self.interval)
        finally:
            for client in clients:
                client.close()

    def outcomes(self, database_url: str) -> WriteOutcomes:
        """Each write's answer against what the audit trail says was committed."""
        committed = committed_request_ids(database_url, self.prefix)
        outcomes = WriteOutcomes()
        for write in self.writes:
            made = write.request_id in committed
            if write.status is not None and write.status < 300:
                outcomes.ok += 1
            elif write.status is None or write.problem == "commit-outcome-unknown":
                outcomes.unknown += 1
            elif made:
                outcomes.committed_reported_failed.append(write)
            elif write.status == 503:
                outcomes.clean_503 += 1
            else:
                outcomes.other_errors.append(write)
        return outcomes


def committed_request_ids(database_url: str, prefix: str) -> set[str]:
    """The request ids starting with ``prefix`` that the audit trail holds: the changes
    that were committed (an audit event commits with its change)."""
    db = make_engine(database_url)
    try:
        with Session(db) as session:
            return set(
                session.scalars(
                    select(AuditEvent.request_id).where(AuditEvent.request_id.startswith(prefix))
                )
            )
    finally:
        db.dispose()


def latest_revision(database_url: str) -> int:
    """The committed revision, read straight from the database (not through a proxy)."""
    from gateway.replication.sync import committed_revision

    db = make_engine(database_url)
    try:
        with Session(db) as session:
            return committed_revision(session)
    finally:
        db.dispose()


def converged(
    replicas: Sequence[Replica], question: Question, revision: int
) -> dict[str, float] | None:
    """Each replica's answer, if every one answers fresh (not stale) at ``revision`` or
    later; None otherwise."""
    subject, workspace, resource, action = question
    seen = {}
    for replica in replicas:
        try:
            response = httpx.post(
                f"{replica.url}/v1/check",
                json={
                    "subject": subject,
                    "workspace": workspace,
                    "resource": resource,
                    "action": action,
                },
                timeout=2,
            )
        except httpx.HTTPError:
            return None
        if response.status_code != 200 or response.headers.get("X-Ringfence-Stale") != "false":
            return None
        if response.json()["revision"] < revision:
            return None
        seen[replica.name] = float(response.json()["revision"])
    return seen


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]
