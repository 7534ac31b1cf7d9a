"""``LocalDecider``: the gateway's decisions answered in the service's own process.

It loads the gateway's snapshot (``GET /v1/snapshot``) into the gateway's own decision
engine (``gateway.engine``: the same index and the same semantics, imported, not
copied, so the Ringfence package must be importable: install the repository beside the
SDK), then follows the change feed (``GET /v1/changes``, long poll) on a thread of its
own, applying each revision as the gateway's replicas do. ``check`` answers from memory
in well under a microsecond of engine time, with the gateway's reasons and revision.

Freshness: ``staleness`` is the seconds since the replica last confirmed that it held
the gateway's head revision. Past ``max_staleness`` it does not answer from memory:
``fallback="remote"`` (the default) asks the gateway instead (through the client),
``"deny"`` answers a deny (reason ``replica is stale``), ``"raise"`` raises
:class:`ReplicaStale`. The client needs a token with ``decisions:replicate`` (and
``decisions:check`` for the remote fallback): ``scope=None`` asks for all of its
client's scopes.

Repeated questions: the replica remembers its answers (the SDK's ``Decision``) keyed by
the question as asked, in a memo of the engine's (:meth:`DecisionEngine.memo`, the same
code as the engine's own memo): every change applied, every reload and every
time-limited grant that ends forgets them all at once, and an answer is remembered only
if it was computed on one state. A question asked again costs one dict lookup, the
staleness test (one monotonic clock read) and, only while a time-limited grant is
scheduled to end, one wall clock read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.engine.engine import FAILED, DecisionEngine, Memo, SubjectChanged
from gateway.engine.expiry import expire_due, schedule_for
from gateway.replication.changelog import decode, decode_expiries
from ringfence_client.client import RingfenceClient
from ringfence_client.errors import GatewayUnavailable, ProblemError, RingfenceError
from ringfence_client.models import Decision, Explanation, LoggedRevision

log = logging.getLogger("ringfence_client.replica")

Fallback = Literal["remote", "deny", "raise"]
STALE = "replica is stale"
NOT_HELD = "workspace not replicated here"


_monotonic = time.monotonic
_time = time.time
_NEVER = float("inf")

Question = tuple[str, str, str, str]


def _worth_keeping(answer: Decision) -> bool:
    """A failed decision (the engine's fail-closed deny) is never remembered."""
    return answer.reason != FAILED


class ReplicaStale(GatewayUnavailable):
    """The local replica cannot answer (more stale than its bound, or not holding the
    workspace asked about), and its fallback is ``raise``."""


@dataclass
class _Applied:
    revision: int
    confirmed_at: float


class LocalDecider:
    """A replica of the gateway's decisions in this process (see the module docstring).

    ``start()`` loads the snapshot and starts following; ``sync()`` does one round by
    hand (read every revision committed so far, apply it), for callers that drive it
    themselves; ``close()`` stops the thread."""

    def __init__(
        self,
        client: RingfenceClient,
        *,
        max_staleness: float = 5.0,
        fallback: Fallback = "remote",
        poll_timeout: float = 25.0,
        retry_every: float = 1.0,
        workspaces: Iterable[str] | None = None,
    ) -> None:
        self.client = client
        # Only these workspaces' rules are held (None: all): a question about another
        # is answered by the fallback.
        self.workspaces = None if workspaces is None else frozenset(workspaces)
        self._max_staleness = max_staleness
        self.fallback = fallback
        self.poll_timeout = poll_timeout
        self.retry_every = retry_every
        # model.conf is read by neither the engine's index nor its checks.
        self.engine = DecisionEngine(Path("model.conf"))
        self._applied = _Applied(0, float("-inf"))
        self._loaded = False
        # monotonic time until which answers come from memory: confirmed + max_staleness
        # (-inf until loaded), one comparison on the hot path.
        self._fresh_until = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._answers: dict[int, tuple[Any, Decision]] = {}
        self._schedule = schedule_for(self.engine)
        # (subject as asked, workspace, resource, action) -> the SDK's answer, for the
        # engine's current state only: forgotten by every writer of the engine.
        self._memo: Memo[Question, Decision] = self.engine.memo()

    # -- state ------------------------------------------------------------------------

    @property
    def max_staleness(self) -> float:
        """Seconds of staleness past which the replica does not answer from memory."""
        return self._max_staleness

    @max_staleness.setter
    def max_staleness(self, seconds: float) -> None:
        self._max_staleness = seconds
        self._confirmed(self._applied)

    def _confirmed(self, applied: _Applied) -> None:
        self._applied = applied
        self._fresh_until = (
            applied.confirmed_at + self._max_staleness if self._loaded else float("-inf")
        )

    @property
    def revision(self) -> int:
        """The gateway's revision this replica holds."""
        return self.engine.revision

    @property
    def staleness(self) -> float:
        """Seconds since the replica last confirmed it held the gateway's head."""
        return max(0.0, time.monotonic() - self._applied.confirmed_at)

    @property
    def stale(self) -> bool:
        return not self._loaded or self.staleness > self.max_staleness

    # -- following --------------------------------------------------------------------

    def load(self) -> int:
        """Replace everything with the gateway's snapshot; its revision."""
        started = time.monotonic()
        state = self.client.snapshot(workspaces=self.workspaces)
        with self._lock:
            self._load(state, started)
        return self.revision

    def _load(self, state: dict[str, Any], started: float) -> None:
        subjects = [
            SubjectChanged(int(s["user_id"]), str(s["email"]), bool(s["active"]))
            for s in state["subjects"]
        ]
        rows = [tuple(str(v) for v in rule) for rule in state["rules"]]
        self.engine.load_rules(rows, subjects, state["workspaces"], int(state["revision"]))
        schedule_for(self.engine).load(
            (at, rule) for rule, at in decode_expiries(state["expiries"]) if at is not None
        )
        self._loaded = True
        self._confirmed(_Applied(int(state["revision"]), started))

    def sync(self, timeout: float = 0.0) -> int:
        """Apply every revision committed after the one held (waiting up to ``timeout``
        seconds for one if there is none); the revision held after."""
        if not self._loaded:
            self.load()
        while True:
            started = time.monotonic()
            try:
                batch = self.client.changes(
                    self.revision, timeout=timeout, workspaces=self.workspaces
                )
            except ProblemError as error:
                if error.status == 410:  # pruned from the log: start again
                    log.warning("the change log no longer holds revision %s", self.revision + 1)
                    self.load()
                    continue
                raise
            with self._lock:
                if not all(self._apply(logged) for logged in batch.changes):
                    log.warning("a revision could not be applied; loading the snapshot")
                    self._loaded = False
                    self._confirmed(self._applied)
                    self.load()
                    continue
                if batch.revision >= batch.head:
                    self._confirmed(_Applied(self.revision, started))
            if batch.revision >= batch.head:
                return self.revision
            timeout = 0.0  # more to read at once

    def _apply(self, logged: LoggedRevision) -> bool:
        if logged.revision <= self.revision:
            return True  # already held (a snapshot taken after it)
        entries = [dict(entry) for entry in logged.entries]
        changes = decode(entries)
        if not self.engine.apply(changes, logged.revision):
            return False
        schedule_for(self.engine).committed(changes, decode_expiries(entries))
        return True

    def start(self) -> LocalDecider:
        """Load the snapshot and follow the feed on a daemon thread."""
        self.load()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow, name="ringfence-local-replica", daemon=True
        )
        self._thread.start()
        return self

    def poll_wait(self) -> float:
        """How long one long poll of the feed waits: ``poll_timeout``, but at most a
        third of ``max_staleness``. An answer confirms the head only as of when its poll
        began, so a poll longer than the bound left a replica on a quiet gateway stale
        until it returned (every check to the fallback); with a third, the staleness
        stays under two polls and the round trips."""
        return min(self.poll_timeout, self.max_staleness / 3)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync(timeout=self.poll_wait())
            except RingfenceError as error:
                log.warning("could not follow the change feed: %s", error)
                self._stop.wait(self.retry_every)
            except Exception:
                log.exception("the local replica stopped following; retrying")
                self._stop.wait(self.retry_every)

    def close(self) -> None:
        """Stop following (a long poll in flight ends with its timeout)."""
        self._stop.set()

    def __enter__(self) -> LocalDecider:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- deciding ---------------------------------------------------------------------

    def check(
        self,
        subject: str,
        workspace: str,
        resource: str,
        action: str,
        *,
        owner: str | None = None,
        explain: bool = False,
    ) -> Decision:
        """The gateway's answer, from memory (with the gateway's semantics: subjects by
        email, id or ``user:<id>``, inactive people, unknown workspaces, owner-only
        permissions, time-limited grants that ended); past ``max_staleness``, the
        fallback's. A local answer's ``staleness`` is None: read :attr:`staleness`."""
        # The hot path: a question asked before on the current state (the memo holds
        # local answers only, so its workspace is held), while fresh and before the next
        # end of a time-limited grant (the wall clock is read only if one is scheduled).
        answer = self._memo.answers.get((subject, workspace, resource, action))
        if (
            answer is not None
            and owner is None
            and not explain
            and _monotonic() <= self._fresh_until
            and ((ends := self._schedule.earliest) == _NEVER or _time() < ends)
        ):
            return answer
        return self._check(subject, workspace, resource, action, owner, explain)

    def _check(
        self,
        subject: str,
        workspace: str,
        resource: str,
        action: str,
        owner: str | None,
        explain: bool,
    ) -> Decision:
        if _monotonic() > self._fresh_until:  # past max_staleness, or never loaded
            return self._fallback(subject, workspace, resource, action, owner, explain, STALE)
        if self.workspaces is not None and workspace not in self.workspaces:
            return self._fallback(subject, workspace, resource, action, owner, explain, NOT_HELD)
        engine = self.engine
        now = _time()
        if now >= self._schedule.earliest:
            expire_due(engine, now)  # time-limited grants that ended deny from that moment
        if owner is None and not explain:  # nearly every question: remembered
            return engine.remembered(
                self._memo,
                (subject, workspace, resource, action),
                lambda: self._answer(
                    engine.check(engine.resolve_subject(subject), workspace, resource, action)
                ),
                _worth_keeping,
            )
        decided = engine.check(
            engine.resolve_subject(subject),
            workspace,
            resource,
            action,
            owner=None if owner is None else engine.resolve_subject(owner),
            explain=explain,
        )
        return self._answer(decided)

    def _answer(self, decided: Any) -> Decision:
        # The engine answers with a few shared, immutable decisions per revision: each is
        # turned into the SDK's once (keyed by identity, the object kept to be sure).
        known = self._answers.get(id(decided))
        if known is not None and known[0] is decided:
            return known[1]
        explanation = decided.explanation
        answer = Decision(
            decided.allowed,
            decided.revision,
            decided.reason,
            None if explanation is None else Explanation.from_json(explanation),
        )
        if explanation is None:
            if len(self._answers) >= 64:
                self._answers.clear()
            self._answers[id(decided)] = (decided, answer)
        return answer

    def _fallback(
        self,
        subject: str,
        workspace: str,
        resource: str,
        action: str,
        owner: str | None,
        explain: bool,
        why: str,
    ) -> Decision:
        if self.fallback == "remote":
            return self.client.check(
                subject, workspace, resource, action, owner=owner, explain=explain
            )
        if self.fallback == "raise":
            raise ReplicaStale(
                f"The local replica does not hold workspace {workspace!r}"
                if why == NOT_HELD
                else f"The local replica is {self.staleness:.1f} s stale "
                f"(at most {self.max_staleness:g} s)"
            )
        return Decision(False, self.revision, why, stale=why == STALE, staleness=self.staleness)
