"""Refusals of callers who are not signed in: counted every time, audited by sample.

A garbage bearer token, a made-up sign-on code or a forged sign-on answer costs the
caller nothing. If each one wrote an audit event (with the token's claims and the
request id, the caller's own words), anyone could grow the audit trail with text of
their choosing and queue every writer behind the audit chain's lock. So every refusal
only increments ``ringfence_auth_refusals_total{kind, reason}``, and
:class:`RefusalSampler` lets through at most one audit event per source and kind per
window (:data:`WINDOW_SECONDS`): the first refusal of a window, carrying the number of
refusals since that source's previous event, by reason. The event holds nothing the
caller chose: the kind, reason categories from fixed sets in the code, the counts and
the source address (an IPv6 address by its /64: one machine usually holds a whole /64).

Memory is bounded: at most ``max_sources`` sources are tracked. When the table is full,
sources whose window has passed are forgotten (what they held back moves to the shared
``other`` entry of their kind), and refusals of further sources are counted in that
entry (``ringfence_auth_refusals_untracked_total``), itself sampled like a source.

The decision endpoints and ``/metrics`` only :func:`count`: no lock, no event, nothing
on the database on the decision path.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import metrics
from gateway.errors import InsufficientScope

WINDOW_SECONDS = 60.0
MAX_SOURCES = 1000  # tracked (kind, source) pairs; beyond it, one shared entry per kind
OTHER_SOURCES = "other"

# Kinds that are audited by sample: (audit action, target type). The names are those of
# the per-refusal events they replace, so existing audit filters find them.
AUDITED = {
    "access_token": ("auth.token_rejected", "access_token"),
    "sso_code": ("auth.sso_code_refused", "login"),
    "sso_callback": ("auth.sso_failed", "login"),
    # Logout tokens posted to a connection's back channel that its provider did not sign
    # (or to one that does not exist); those it signed are audited each (sso_logout).
    "sso_logout": ("sso.backchannel_logout_refused", "sso_connection"),
}
# Kinds that are only counted: the decision path, scrapers of /metrics, the change feed.
COUNTED = frozenset({"decision_token", "metrics_token", "replication_token"})

_CATEGORY = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


def category(reason: str | None) -> str:
    """``reason`` if it is a short lowercase category, else ``other``: a metric label and
    an audit field, so never free text."""
    return reason if reason and _CATEGORY.fullmatch(reason) else "other"


def reason_of(error: Exception) -> str:
    """The category of a refusal: the one the code gave it (``refusal_reason``, or an
    invalid token's ``reason``), else one by its class."""
    given = getattr(error, "refusal_reason", None) or getattr(error, "reason", None)
    if isinstance(given, str) and given:
        return category(given)
    return "insufficient-scope" if isinstance(error, InsufficientScope) else "invalid"


def with_reason(error: Exception, reason: str) -> Exception:
    """``error``, marked with the refusal category to count it by (not shown to the
    caller: a code's refusal must not say whether it exists)."""
    error.refusal_reason = reason  # type: ignore[attr-defined]
    return error


def count(kind: str, reason: str) -> None:
    """Count one refusal of ``kind`` in the metric, and nothing else."""
    metrics.AUTH_REFUSALS.labels(kind, category(reason)).inc()


def source_key(address: str | None) -> str:
    """The source a refusal is sampled by: the IP address, an IPv6 one by its /64."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class RefusalSummary:
    """What one sampled audit event says: ``refusals`` of ``kind`` from ``source`` since
    its previous event (this one included), by reason."""

    kind: str
    source: str
    refusals: int
    reasons: dict[str, int]
    window_seconds: float

    @property
    def action(self) -> str:
        return AUDITED[self.kind][0]

    @property
    def target_type(self) -> str:
        return AUDITED[self.kind][1]


@dataclass
class _Entry:
    last_event: float  # clock time of the source's last event
    held: Counter[str] = field(default_factory=Counter)  # reasons since that event


class RefusalSampler:
    """Per process, like the metrics; thread-safe."""

    def __init__(
        self,
        window: float = WINDOW_SECONDS,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_sources = max_sources
        self.clock = clock
        self._lock = threading.Lock()
        # (kind, source) -> entry, oldest event first: an entry moves to the end when it
        # lets an event through, so those whose window passed are at the front.
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._other: dict[str, _Entry] = {}

    def refused(self, kind: str, address: str | None, reason: str) -> RefusalSummary | None:
        """Count one refusal; the summary to audit if this source's window has passed
        since its previous event (or it has none), else None."""
        if kind not in AUDITED:
            raise ValueError(f"refusals of kind {kind!r} are not audited")
        reason = category(reason)
        count(kind, reason)
        source = source_key(address)
        with self._lock:
            now = self.clock()
            entry = self._entry(kind, source, now)
            if entry is None:
                metrics.AUTH_REFUSALS_UNTRACKED.labels(kind).inc()
                source = OTHER_SOURCES
                entry = self._other.setdefault(kind, _Entry(now - self.window))
            entry.held[reason] += 1
            if now - entry.last_event < self.window:
                return None
            held, entry.held, entry.last_event = entry.held, Counter(), now
            if source != OTHER_SOURCES:
                self._entries.move_to_end((kind, source))
        return RefusalSummary(
            kind, source, sum(held.values()), dict(sorted(held.items())), self.window
        )

    def _entry(self, kind: str, source: str, now: float) -> _Entry | None:
        """The source's entry, made if there is room; None if the table is full."""
        key = (kind, source)
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        if len(self._entries) >= self.max_sources:
            self._forget_past(now)
            if len(self._entries) >= self.max_sources:
                return None
        # As if its last event were a window ago: its first refusal is audited.
        entry = self._entries[key] = _Entry(now - self.window)
        return entry

    def _forget_past(self, now: float) -> None:
        """Drop the entries whose window has passed; what they held back goes to the
        ``other`` entry of their kind, to be audited with it."""
        while self._entries:
            (kind, _), oldest = next(iter(self._entries.items()))
            if now - oldest.last_event < self.window:
                return
            self._entries.popitem(last=False)
            if oldest.held:
                other = self._other.setdefault(kind, _Entry(now - self.window))
                other.held.update(oldest.held)
