"""When time-limited grants end, in memory: decisions deny from that moment on.

The cleanup task (``ringfence grants expire``, and beat) removes an ended grant for good
with a revision bump, but it runs every minute or so; between its runs the decision path
must not keep allowing. Each engine therefore has an :class:`ExpirySchedule`: the end
times of its time-limited grants, earliest first. It is loaded with the engine, kept in
step by the unit of work after each commit, and consulted on every decision by
:func:`expire_due` — one float comparison while nothing is due. When the earliest end
has passed, the ended grants' rules leave the in-memory engine through its ordinary
``apply`` (at its current revision: nothing was committed, so no revision is claimed).
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime

from gateway.engine.engine import Change, DecisionEngine, RuleAdded, RuleRemoved
from gateway.engine.rules import Rule

_NEVER = float("inf")


class ExpirySchedule:
    """Sorted (end time, rule) entries; at most one entry per rule."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[float, Rule]] = []
        self._when: dict[Rule, float] = {}
        # The earliest end time (a POSIX timestamp), or infinity: read without the lock
        # on the hot path (a float is replaced atomically), written only by _reset_next.
        self.earliest = _NEVER

    def load(self, entries: Iterable[tuple[datetime, Rule]]) -> None:
        """Replace every entry (with the engine's own load)."""
        when = {rule: at.timestamp() for at, rule in entries}
        with self._lock:
            self._when = when
            self._entries = sorted((at, rule) for rule, at in when.items())
            self._reset_next()

    def committed(
        self, changes: Sequence[Change], expiries: Sequence[tuple[Rule, datetime | None]]
    ) -> None:
        """After a commit: a rule added or removed loses its old end time (a grant removed
        and given again must not inherit it); ``expiries`` gives rules their new one."""
        with self._lock:
            for change in changes:
                if isinstance(change, RuleAdded | RuleRemoved):
                    self._discard(change.rule)
            for rule, at in expiries:
                self._discard(rule)
                if at is not None:
                    self._when[rule] = at.timestamp()
                    bisect.insort(self._entries, (at.timestamp(), rule))
            self._reset_next()

    def due(self, now: float | None = None) -> list[Rule]:
        """Take out the entries whose time has come."""
        now = time.time() if now is None else now
        with self._lock:
            cut = bisect.bisect_right(self._entries, (now, _MAX_RULE))
            taken = [rule for _, rule in self._entries[:cut]]
            del self._entries[:cut]
            for rule in taken:
                self._when.pop(rule, None)
            self._reset_next()
        return taken

    def next_at(self) -> float:
        """The earliest end time (a POSIX timestamp), or infinity."""
        return self.earliest

    def __len__(self) -> int:
        return len(self._entries)

    def _discard(self, rule: Rule) -> None:
        at = self._when.pop(rule, None)
        if at is not None:
            index = bisect.bisect_left(self._entries, (at, rule))
            if index < len(self._entries) and self._entries[index] == (at, rule):
                del self._entries[index]

    def _reset_next(self) -> None:
        self.earliest = self._entries[0][0] if self._entries else _NEVER


# Sorts after every real rule, so (t, _MAX_RULE) bounds all entries at time t.
_MAX_RULE: Rule = Rule("\U0010ffff", ())

# One schedule per engine, without touching the engine's class.
_schedules: weakref.WeakKeyDictionary[DecisionEngine, ExpirySchedule] = weakref.WeakKeyDictionary()
_schedules_lock = threading.Lock()


def schedule_for(engine: DecisionEngine) -> ExpirySchedule:
    schedule = _schedules.get(engine)
    if schedule is None:
        with _schedules_lock:
            schedule = _schedules.setdefault(engine, ExpirySchedule())
    return schedule


def expire_due(engine: DecisionEngine, now: float | None = None) -> None:
    """Before a decision: drop the rules of grants that ended from ``engine``'s memory.
    Fails closed: if they cannot be applied the engine marks itself untrusted (deny)."""
    schedule = _schedules.get(engine)
    if schedule is None or (time.time() if now is None else now) < schedule.next_at():
        return
    rules = schedule.due(now)
    if rules:
        engine.apply([RuleRemoved(rule) for rule in rules], engine.revision)
