"""Typed answers of the gateway: decisions, explanations, search pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")
Semantic = Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why: for an allow, the matched ``rule`` (its Casbin values) and the role ``path``
    from the subject to the rule's role (each link a ``g`` rule's values); for a deny,
    ``rule`` is None and ``reason`` says why."""

    rule: tuple[str, ...] | None
    path: tuple[tuple[str, ...], ...]
    reason: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Explanation:
        rule = data.get("rule")
        return cls(
            rule=None if rule is None else tuple(str(v) for v in rule),
            path=tuple(tuple(str(v) for v in link) for link in data.get("path") or ()),
            reason=data.get("reason"),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer: ``allowed``, the policy ``revision`` it was made at, and why.

    ``stale`` is true when the replica that answered could not confirm it holds every
    committed change (``X-Ringfence-Stale``); ``staleness`` is how many seconds ago it
    last did (``X-Ringfence-Staleness``), when the gateway said. ``error`` is set on a
    batch item the gateway could not evaluate (its answer is a deny)."""

    allowed: bool
    revision: int
    reason: str
    explanation: Explanation | None = None
    stale: bool = False
    staleness: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Question:
    """One question of :meth:`RingfenceClient.check_many`: may ``subject`` do ``action``
    on ``resource`` in ``workspace``? ``owner`` is the resource's owner (for owner-only
    permissions)."""

    subject: str
    workspace: str
    resource: str
    action: str
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class SubjectRef:
    """A subject found by a search: ``type`` (``user``) and ``id`` (its email)."""

    type: str
    id: str


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A resource found by a search: every resource of ``type`` in ``workspace`` (``id``
    is ``*``), only the ones ``owner`` owns when the permission is owner-only."""

    type: str
    id: str
    workspace: str
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of search results; ``next_token`` is empty on the last page."""

    results: Sequence[T]
    next_token: str = ""
    total: int = 0

    @property
    def last(self) -> bool:
        return not self.next_token


@dataclass(frozen=True, slots=True)
class LoggedRevision:
    """One revision of the change log: its ``entries`` as the gateway logs them
    (``{"type": "rule_added", ...}``; see docs/api.md, "The change feed")."""

    revision: int
    entries: Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """An answer of ``GET /v1/changes``: the revisions after ``since`` in order,
    ``revision`` the one held after applying them, ``head`` the committed one when read
    (more to read while ``revision < head``)."""

    since: int
    revision: int
    head: int
    changes: Sequence[LoggedRevision]
