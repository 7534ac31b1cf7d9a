"""The decision engine: answers from memory, with Casbin's semantics.

Rules come from ``model.conf`` and the ``casbin_rule`` table. The engine keeps them in
an index (``gateway.engine.index``) that answers as ``casbin.Enforcer.enforce`` would without
scanning the rules, and applies every committed change to it incrementally: a grant
added or removed is O(1); a change to the role layer (``p`` rules, role inheritance)
rebuilds that small layer. On top of Casbin it knows which subjects are active and
which workspaces exist, so that a deactivated person or an unknown workspace is denied
whatever the rules say.

Concurrency: one writer at a time (a lock); readers take no lock. A sequence number,
odd while a writer is changing anything, tells a reader whether its answer was computed
on a stable state; if not, the reader asks again (and, if writers keep it busy, waits
for the lock). So a reader never sees half a change, and readers never block each
other.

Recent answers: services ask the same questions over and over (the same person opening
the same pages), so the engine remembers up to ``MAX_REMEMBERED`` answers of the common
kind (known active user, known workspace, no owner) between two changes. Every writer
replaces the memo with an empty one before it ends its change, and a reader only
remembers an answer it computed on a stable state, in the memo it fetched on that state:
a remembered answer is never older than the state it is read on. The same :class:`Memo`
serves answers derived from the engine's (the SDK's in-process replica remembers its own
answers, keyed by the question as asked, through :meth:`DecisionEngine.memo` and
:meth:`DecisionEngine.remembered`): every writer forgets them all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import casbin
from casbin import persist
from casbin.util import key_match

from gateway.emails import fold_email
from gateway.engine.index import (
    Grants,
    Index,
    Link,
    Match,
    PRule,
    RoleLayer,
    split_rules,
    user_id_of,
)
from gateway.engine.rules import (
    ALL_WORKSPACES,
    NO_CONDITION,
    OWN_SUFFIX,
    OWNER_CONDITION,
    ROLE_PREFIX,
    USER_PREFIX,
    Rule,
    role_subject,
)

log = logging.getLogger("ringfence.engine")

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

# Bounded: the key holds strings that clients chose (resource, action), so an endless
# variety of them must not grow memory; at the bound the memo starts again.
MAX_REMEMBERED = 65_536


class Memo(Generic[K, V]):
    """Answers remembered for one state of an engine (see "Recent answers" in the module
    docstring). Readers look up :attr:`answers` (always the current state's dict);
    the engine's writers call :meth:`forget`, which puts an empty dict in its place, as
    they start; an answer is stored only through :meth:`remember`, into the dict its
    reader fetched on the stable state it computed on (the engine's ``_decide_once``
    and :meth:`DecisionEngine.remembered`). Bounded by ``MAX_REMEMBERED``."""

    __slots__ = ("answers",)

    def __init__(self) -> None:
        self.answers: dict[K, V] = {}

    def forget(self) -> None:
        self.answers = {}

    @staticmethod
    def remember(answers: dict[K, V], key: K, value: V) -> None:
        """Store into ``answers``, the dict fetched on the state ``value`` was computed on."""
        if len(answers) >= MAX_REMEMBERED:
            answers.clear()
        answers[key] = value


@dataclass(frozen=True)
class RuleAdded:
    rule: Rule


@dataclass(frozen=True)
class RuleRemoved:
    rule: Rule


@dataclass(frozen=True)
class SubjectChanged:
    """A user was created or changed status; ``active`` False means every check denies."""

    user_id: int
    email: str
    active: bool


@dataclass(frozen=True)
class SubjectRemoved:
    user_id: int
    email: str


@dataclass(frozen=True)
class WorkspaceAdded:
    slug: str


@dataclass(frozen=True)
class WorkspaceRemoved:
    slug: str


Change = (
    RuleAdded | RuleRemoved | SubjectChanged | SubjectRemoved | WorkspaceAdded | WorkspaceRemoved
)


@dataclass(frozen=True)
class Decision:
    """An answer. ``explanation`` (only when asked for) says why: for an allow, the
    matched ``rule`` (its Casbin values) and the role ``path`` from the subject to the
    rule's role (each link a ``g`` rule's values); for a deny, ``rule`` None and the
    ``reason``."""

    allowed: bool
    revision: int
    reason: str
    explanation: dict[str, Any] | None = None


ALLOWED = "allowed by policy"
NOT_ALLOWED = "no rule allows"
UNKNOWN_SUBJECT = "unknown subject"
INACTIVE = "subject is not active"
UNKNOWN_WORKSPACE = "unknown workspace"
RELOADING = "the engine is reloading"
INVALID_RULES = "the stored rules are invalid"
FAILED = "the decision failed"


def new_enforcer(model_path: Path) -> casbin.Enforcer:
    """A Casbin enforcer on ``model.conf`` with ``*`` as a domain pattern for ``g``."""
    enforcer = casbin.Enforcer(str(model_path))
    enforcer.add_named_domain_matching_func("g", key_match)
    enforcer.enable_auto_save(False)
    return enforcer


@dataclass
class Snapshot:
    """Everything the engine knows, built aside (no lock, no reader sees it) and then
    swapped in whole by :meth:`DecisionEngine.load_snapshot`."""

    index: Index
    malformed: set[Rule]
    active: set[int]
    ids_by_email: dict[str, int]
    workspaces: set[str]
    revision: int

    @classmethod
    def build(
        cls,
        rows: Iterable[Sequence[str]],
        grants: Grants,
        active: set[int],
        ids_by_email: dict[str, int],
        workspaces: Iterable[str],
        revision: int,
    ) -> Snapshot:
        """From ``(ptype, *values)`` rows, added to ``grants`` (empty, or read in bulk
        by ``gateway.engine.bulk_load``)."""
        p_rules, links, grant_rows, malformed = split_rules(rows)
        for user_id, role, domain in grant_rows:
            grants.add(user_id, role, domain)
        index = Index(RoleLayer(p_rules, links), grants)
        return cls(
            index,
            {Rule(row[0], tuple(row[1:])) for row in malformed},
            active,
            ids_by_email,
            set(workspaces),
            revision,
        )


class _Retry(Exception):
    """A reader's answer was computed while a writer was changing things."""


class DecisionEngine:
    """Thread-safe, in-memory decisions; ``apply`` takes changes after they commit."""

    def __init__(self, model_path: Path) -> None:
        self._model_path = model_path
        self._write_lock = threading.Lock()
        # Odd while a writer is changing anything (see the module docstring).
        self._seq = 0
        self._index = Index()
        # The role layer's rules, by kind; the layer itself is rebuilt from them.
        self._p_rules: set[PRule] = set()
        self._links: set[Link] = set()
        self._malformed: set[Rule] = set()
        self._active: set[int] = set()
        self._ids_by_email: dict[str, int] = {}
        self._known: set[int] = set()
        self._workspaces: set[str] = set()
        self._revision = 0
        # Set when a revision was skipped (another process committed it): the periodic
        # revision check then reloads, since this process never saw that change.
        self._missed = False
        # Set when a committed change could not be applied: decisions deny until reload.
        self._untrusted = False
        self._refuse: str | None = None  # why every decision denies, if it does
        self._decisions: dict[tuple[bool, str], Decision] = {}
        # (user id, workspace, resource, action) -> Decision, for the current state only
        # (see "Recent answers" in the module docstring); every memo of this engine's
        # answers (its own first) is forgotten by every writer.
        self._memo: Memo[tuple[int | None, str, str, str], Decision] = Memo()
        self._memos: list[Memo[Any, Any]] = [self._memo]
        self._set_revision(0)

    @property
    def revision(self) -> int:
        return self._revision

    # -- reading safely -------------------------------------------------------------------

    def _read(self, read: Callable[[], T], failed: Callable[[], T]) -> T:
        """``read()`` on a stable state: again if a writer changed anything meanwhile;
        under the writer lock if writers keep interfering; ``failed()`` if it raises on
        a stable state (fail closed)."""
        for attempt in range(16):
            seq = self._seq
            if not seq & 1:
                try:
                    result = read()
                except Exception:
                    if self._seq == seq:
                        log.exception("decision failed; denying")
                        return failed()
                    continue
                if self._seq == seq:
                    return result
            time.sleep(0 if attempt < 8 else 0.0005)
        with self._write_lock:
            try:
                return read()
            except Exception:
                log.exception("decision failed; denying")
                return failed()

    # -- loading and changes --------------------------------------------------------------

    def load(
        self,
        adapter: persist.Adapter,
        subjects: Iterable[SubjectChanged],
        workspaces: Iterable[str],
        revision: int,
    ) -> None:
        """Replace everything the engine knows: rules through a Casbin ``adapter``
        (start-up and recovery only; changes arrive through :meth:`apply`)."""
        collector = _RuleCollector()
        adapter.load_policy(collector)
        self.load_rules(collector.rows(), subjects, workspaces, revision)

    def load_rules(
        self,
        rows: Iterable[Sequence[str]],
        subjects: Iterable[SubjectChanged],
        workspaces: Iterable[str],
        revision: int,
    ) -> None:
        """Replace everything the engine knows; ``rows`` are ``(ptype, *values)``. The
        index is built aside, then swapped in at once."""
        active: set[int] = set()
        ids_by_email: dict[str, int] = {}
        for subject in subjects:
            ids_by_email[subject.email] = subject.user_id
            if subject.active:
                active.add(subject.user_id)
        self.load_snapshot(
            Snapshot.build(rows, Grants(), active, ids_by_email, workspaces, revision)
        )

    def load_snapshot(self, snapshot: Snapshot) -> None:
        """Replace everything the engine knows with ``snapshot``, at once for readers."""
        with self._write_lock:
            self._seq += 1
            self._forget_answers()
            try:
                self._index = snapshot.index
                self._p_rules = set(snapshot.index.layer.rules)
                self._links = set(snapshot.index.layer.links)
                self._malformed = set(snapshot.malformed)
                self._active = snapshot.active
                self._ids_by_email = snapshot.ids_by_email
                self._known = set(snapshot.ids_by_email.values())
                self._workspaces = set(snapshot.workspaces)
                # A change applied here after the snapshot was read would be lost by the
                # swap; asking for another reload makes the next check pick it up.
                self._missed = snapshot.revision < self._revision
                self._untrusted = False
                self._set_revision(snapshot.revision)
            finally:
                self._seq += 1

    def apply(self, changes: Sequence[Change], revision: int) -> bool:
        """Apply committed ``changes`` (all of them, atomically for readers). False if
        one could not be applied: memory is then untrusted and every decision denies
        until :meth:`load` runs again (the caller reloads at once)."""
        with self._write_lock:
            self._seq += 1
            self._forget_answers()
            try:
                try:
                    layer_changed = False
                    for change in changes:
                        layer_changed |= self._apply_one(change)
                    if layer_changed:
                        self._index.layer = RoleLayer(self._p_rules, self._links)
                except Exception:
                    log.exception("could not apply revision %s; denying until reloaded", revision)
                    self._untrusted = True
                    self._missed = True
                    self._set_revision(self._revision)
                    return False
                if revision > self._revision + 1:
                    self._missed = True
                self._set_revision(max(self._revision, revision))
                return True
            finally:
                self._seq += 1

    def _forget_answers(self) -> None:
        """Called by every writer as it starts (the sequence just made odd), before it
        changes anything: the answers remembered so far may be wrong after it.

        Why :meth:`check` may trust any answer it finds in the memo: an answer is stored
        only into the memo that was current when its reader read an even sequence, and
        only if the sequence is still that after deciding. The memo put in place here
        receives nothing while the writer works (its readers read an odd sequence, or an
        even one that has changed by the time they would store), and after the writer
        ends only answers decided on the new state. A reader that still finds the old
        memo fetched it before the writer started: its answer is the state it asked."""
        for memo in self._memos:
            memo.forget()

    def memo(self) -> Memo[Any, Any]:
        """A new memo of answers derived from this engine's, forgotten by every writer
        as the engine's own is; fill it through :meth:`remembered` only."""
        memo: Memo[Any, Any] = Memo()
        with self._write_lock:
            self._memos = [*self._memos, memo]
        return memo

    def remembered(
        self, memo: Memo[K, V], key: K, compute: Callable[[], V], keep: Callable[[V], bool]
    ) -> V:
        """``compute()`` (reading this engine), its value remembered in ``memo`` under
        ``key`` if ``keep(value)`` and no writer ran from before it started to after it
        ended (so it was computed on one stable state, the state whose memo was fetched;
        see :meth:`_forget_answers`)."""
        seq = self._seq
        answers = memo.answers  # the memo of the state at ``seq``, if it is even
        value = compute()
        if not seq & 1 and self._seq == seq and keep(value):
            memo.remember(answers, key, value)
        return value

    def _apply_one(self, change: Change) -> bool:
        """Apply one change; True if the role layer changed."""
        match change:
            case RuleAdded(rule) | RuleRemoved(rule) if not _well_formed(rule):
                if isinstance(change, RuleAdded):
                    self._malformed.add(rule)
                else:
                    self._malformed.discard(rule)
            case RuleAdded(rule) if rule.ptype == "p":
                self._p_rules.add(_p_rule(rule))
                return True
            case RuleRemoved(rule) if rule.ptype == "p":
                self._p_rules.discard(_p_rule(rule))
                return True
            case RuleAdded(rule) | RuleRemoved(rule) if rule.ptype == "g":
                child, parent, domain = rule.values
                user_id = user_id_of(child)
                added = isinstance(change, RuleAdded)
                if user_id is not None:
                    if added:
                        self._index.grants.add(user_id, parent, domain)
                    else:
                        self._index.grants.remove(user_id, parent, domain)
                    return False
                if added:
                    self._links.add((child, parent, domain))
                else:
                    self._links.discard((child, parent, domain))
                return True
            case RuleAdded() | RuleRemoved():
                pass  # a policy type model.conf does not have: Casbin ignores it too
            case SubjectChanged(user_id, email, active):
                self._ids_by_email[email] = user_id
                self._known.add(user_id)
                if active:
                    self._active.add(user_id)
                else:
                    self._active.discard(user_id)
            case SubjectRemoved(user_id, email):
                self._active.discard(user_id)
                self._known.discard(user_id)
                # Only this person's: the address may belong to someone else by now (an
                # invitation's placeholder and the account share it).
                if self._ids_by_email.get(email) == user_id:
                    del self._ids_by_email[email]
            case WorkspaceAdded(slug):
                self._workspaces.add(slug)
            case WorkspaceRemoved(slug):
                self._workspaces.discard(slug)
        return False

    def _set_revision(self, revision: int) -> None:
        """Record ``revision`` and what every decision at it looks like (decisions are
        immutable, so the common ones are made once per revision, not per check)."""
        self._revision = revision
        if self._untrusted:
            self._refuse = RELOADING
        elif self._malformed:
            self._refuse = INVALID_RULES
        else:
            self._refuse = None
        self._decisions = {
            (allowed, reason): Decision(allowed, revision, reason)
            for allowed, reason in (
                (True, ALLOWED),
                (False, NOT_ALLOWED),
                (False, UNKNOWN_SUBJECT),
                (False, INACTIVE),
                (False, UNKNOWN_WORKSPACE),
                (False, RELOADING),
                (False, INVALID_RULES),
            )
        }
        self._yes = self._decisions[(True, ALLOWED)]
        self._no = self._decisions[(False, NOT_ALLOWED)]

    def is_behind(self, committed_revision: int) -> bool:
        """True if changes up to ``committed_revision`` may be missing from memory."""
        return self._read(lambda: self._missed or committed_revision > self._revision, lambda: True)

    def resolve_subject(self, subject: str) -> int | None:
        """A user id from an email address (any case, and any NFKC-equivalent spelling,
        as everywhere in Ringfence: gateway.emails), ``user:<id>`` or a plain id; None if
        unknown. Otherwise only the canonical spellings: an id is ASCII digits without a
        leading zero, and nothing is trimmed, so ``user:01``, ``user:1`` between spaces
        or with a full-width digit is an unknown subject (denied), never user 1 by
        another name (Casbin, comparing strings, would not take them for user 1 either)."""
        # isascii() is constant time: the usual ASCII subject pays no NFKC.
        if not subject.isascii():
            # Only an address may be spelled in other characters (ids are ASCII digits).
            email = fold_email(subject)
            return self._ids_by_email.get(email) if "@" in email else None
        if "@" in subject:
            # One dict read: atomic, no stable state needed.
            return self._ids_by_email.get(subject.lower())
        digits = subject.removeprefix(USER_PREFIX)
        # isascii() above makes isdigit() mean 0-9 only.
        if digits.isdigit() and digits[0] != "0":
            user_id = int(digits)
            return user_id if user_id in self._known else None
        return None

    # -- decisions ------------------------------------------------------------------------

    def check(
        self,
        user_id: int | None,
        workspace: str,
        resource: str,
        action: str,
        *,
        owner: int | None = None,
        explain: bool = False,
    ) -> Decision:
        """May ``user_id`` do ``resource:action`` in ``workspace`` (on a resource owned by
        ``owner``, None: nobody known)? Fails closed."""
        # The hot path: a question asked before, answered from the current memo (see
        # _forget_answers for why any answer found there may be trusted). The memo holds
        # answers without an owner or explanation: looked up first, as nearly every
        # question is of that kind.
        decision = self._memo.answers.get((user_id, workspace, resource, action))
        if decision is not None and owner is None and not explain:
            return decision
        if explain:
            return self._read(
                lambda: self._explained(user_id, workspace, resource, action, owner),
                lambda: _explained_denial(self._revision, FAILED),
            )
        return self._decide_once(user_id, workspace, resource, action, owner)

    def _decide_once(
        self, user_id: int | None, workspace: str, resource: str, action: str, owner: int | None
    ) -> Decision:
        """:meth:`_read` of :meth:`_decide` inlined for the usual case, remembering the
        usual kind of answer (active user, known workspace, no owner)."""
        seq = self._seq
        if not seq & 1:
            remembered = self._memo.answers  # the memo of the state at ``seq``
            try:
                if (
                    self._refuse is None
                    and user_id in self._active
                    and workspace in self._workspaces
                ):
                    allowed = self._index.allows(user_id, workspace, resource, action, owner)
                    decision = self._yes if allowed else self._no
                    if owner is None and self._seq == seq:
                        # Computed on the stable state the memo belongs to. A writer
                        # starting after this test swaps in a new memo before it ends,
                        # so the answer goes with the old one.
                        Memo.remember(remembered, (user_id, workspace, resource, action), decision)
                else:
                    decision = self._decide(user_id, workspace, resource, action, owner)
            except Exception:
                decision = None
            if decision is not None and self._seq == seq:
                return decision
        return self._read(
            lambda: self._decide(user_id, workspace, resource, action, owner),
            lambda: Decision(False, self._revision, FAILED),
        )

    def _decide(
        self, user_id: int | None, workspace: str, resource: str, action: str, owner: int | None
    ) -> Decision:
        decisions = self._decisions
        reason = self._denial(user_id, workspace)
        if reason is not None:
            return decisions[(False, reason)]
        assert user_id is not None
        if self._index.allows(user_id, workspace, resource, action, owner):
            return decisions[(True, ALLOWED)]
        return decisions[(False, NOT_ALLOWED)]

    def _denial(self, user_id: int | None, workspace: str) -> str | None:
        if self._refuse is not None:
            return self._refuse
        if user_id is None:
            return UNKNOWN_SUBJECT
        if user_id not in self._active:
            return INACTIVE
        if workspace not in self._workspaces:
            return UNKNOWN_WORKSPACE
        return None

    def _explained(
        self, user_id: int | None, workspace: str, resource: str, action: str, owner: int | None
    ) -> Decision:
        revision = self._revision
        reason = self._denial(user_id, workspace)
        if reason is not None:
            return _explained_denial(revision, reason)
        assert user_id is not None
        match = self._index.match(user_id, workspace, resource, action, owner)
        if match is None:
            return _explained_denial(revision, NOT_ALLOWED)
        return Decision(True, revision, ALLOWED, _explanation(match))

    def permits(
        self, user_id: int, domain: str, resource: str, action: str, *, owner: int | None = None
    ) -> bool:
        """Like :meth:`check` for the admin API: ``domain`` may be ``*`` (every workspace)
        or a workspace about to be created."""

        def read() -> bool:
            return (
                self._refuse is None
                and user_id in self._active
                and self._index.allows(user_id, domain, resource, action, owner)
            )

        return self._read(read, lambda: False)

    def holds(self, user_id: int, domain: str, resource: str, action: str) -> bool:
        """Does ``user_id`` hold a permission as :meth:`role_permissions` names it? An
        owner-only one (action ``<action>:own``) is held when the user may do it at least
        on their own resources."""
        base, sep, suffix = action.rpartition(":")
        if sep and suffix == OWN_SUFFIX:
            return self.permits(user_id, domain, resource, base, owner=user_id)
        return self.permits(user_id, domain, resource, action)

    # -- queries --------------------------------------------------------------------------

    def permissions(self, user_id: int | None, workspace: str) -> set[tuple[str, str]]:
        """(resource, action) pairs ``user_id`` holds in ``workspace``, patterns as written
        (``*`` stays ``*``); one held only on their own resources has the action
        ``<action>:own``, and is left out when the same pair is held on every resource."""

        def read() -> set[tuple[str, str]]:
            if self._denial(user_id, workspace) is not None:
                return set()
            assert user_id is not None
            return _permission_pairs(self._index.rules_of(user_id, workspace))

        return self._read(read, set)

    def workspaces_where(
        self, user_id: int | None, resource: str, action: str, *, owner: int | None = None
    ) -> set[str]:
        """Known workspaces where ``user_id`` may do ``resource:action``: from the user's
        grants (a grant in ``*`` covers every workspace without rules of its own at once)."""
        return self._read(lambda: self._workspaces_where(user_id, resource, action, owner), set)

    def _workspaces_where(
        self, user_id: int | None, resource: str, action: str, owner: int | None
    ) -> set[str]:
        if self._refuse is not None or user_id is None or user_id not in self._active:
            return set()
        index = self._index
        layer = index.layer
        workspaces = self._workspaces
        if index.walks or layer.user_rules:
            # Rare shapes of rules (see gateway.engine.index): ask about each workspace.
            return {w for w in workspaces if index.allows(user_id, w, resource, action, owner)}
        owned = owner is not None and owner == user_id
        if layer.prefix_patterns:
            special = {w for w in workspaces if layer.signature(w)}
        else:
            special = {w for w in layer.exact_patterns if w in workspaces}
        found: set[str] = set()
        for role, pattern in index.grants.by_user.get(user_id, ()):
            if "*" not in pattern:
                candidates: Iterable[str] = (pattern,) if pattern in workspaces else ()
            elif pattern.find("*") == 0:
                if layer.expansion(role, (), 8).find(resource, action, owned):
                    found |= workspaces - special
                candidates = special
            else:
                candidates = [w for w in workspaces if key_match(w, pattern)]
            for workspace in candidates:
                if workspace in found:
                    continue
                expansion = layer.expansion(role, layer.signature(workspace), 8)
                if expansion.find(resource, action, owned):
                    found.add(workspace)
        return found

    def subjects_who_may(
        self, workspace: str, resource: str, action: str, *, owner: int | None = None
    ) -> set[int]:
        """Active users who may do ``resource:action`` in ``workspace`` (on a resource
        owned by ``owner``): the holders of the roles that allow it, from the index."""

        def read() -> set[int]:
            if self._refuse is not None or workspace not in self._workspaces:
                return set()
            index = self._index
            active = self._active
            if index.walks or index.layer.user_rules:
                # Rare shapes of rules (see gateway.engine.index): ask about each user.
                return {u for u in active if index.allows(u, workspace, resource, action, owner)}
            found = {u for u in index.holders_who_may(workspace, resource, action) if u in active}
            if (
                owner is not None
                and owner in active
                and index.allows(owner, workspace, resource, action, owner)
            ):
                found.add(owner)
            return found

        return self._read(read, set)

    def role_permissions(self, role: str, workspace: str) -> set[tuple[str, str]]:
        """(resource, action) pairs that holding ``role`` in ``workspace`` gives, inherited
        ones included (wildcards as written: ``*`` stays ``*``; owner-only ones as in
        :meth:`permissions`)."""
        return self._read(
            lambda: _permission_pairs(self._index.rules_of_subject(role_subject(role), workspace)),
            set,
        )

    def roles_in(self, workspace: str) -> set[str]:
        """Roles that may be granted in ``workspace``: shared ones and its own."""
        empty: Callable[[], set[str]] = set
        subjects = self._read(lambda: self._index.layer.roles_granted_in(workspace), empty)
        return {s.removeprefix(ROLE_PREFIX) for s in subjects if s.startswith(ROLE_PREFIX)}


def stored_rows(rows: Iterable[Sequence[str | None]]) -> Iterator[tuple[str, ...]]:
    """``casbin_rule`` rows ``(ptype, v0, ..., v5)`` as ``(ptype, *values)`` without the
    empty columns, as the adapter reads them (``CasbinRule.to_rule``)."""
    for ptype, v0, v1, v2, v3, v4, v5 in rows:
        if v3 is None and v4 is None and v5 is None and v0 and v1 and v2 is not None:
            yield ptype or "", v0, v1, v2  # three values (a g rule): most rows, kept fast
        else:
            yield tuple(v for v in (ptype, v0, v1, v2, v3, v4, v5) if v is not None)


class _RuleCollector:
    """Stands in for a Casbin model when an adapter loads rules: collects them."""

    class _Assertion:
        def __init__(self) -> None:
            self.policy: list[list[str]] = []

    def __init__(self) -> None:
        self.model = {"p": {"p": self._Assertion()}, "g": {"g": self._Assertion()}}

    def rows(self) -> list[tuple[str, ...]]:
        return [
            (ptype, *values)
            for sec in self.model.values()
            for ptype, assertion in sec.items()
            for values in assertion.policy
        ]


def _well_formed(rule: Rule) -> bool:
    if rule.ptype == "p":
        return len(rule.values) == 5
    if rule.ptype == "g":
        return len(rule.values) == 3
    return True


def _p_rule(rule: Rule) -> PRule:
    sub, dom, obj, act, cond = rule.values
    return (sub, dom, obj, act, cond)


def _explanation(match: Match) -> dict[str, Any]:
    return {"rule": list(match.rule), "path": [list(link) for link in match.path]}


def _explained_denial(revision: int, reason: str) -> Decision:
    return Decision(False, revision, reason, {"rule": None, "path": [], "reason": reason})


def _permission_pairs(rules: Iterable[Sequence[str]]) -> set[tuple[str, str]]:
    """(resource, action) of unconditional rules, (resource, "action:own") of owner-only
    ones not also held unconditionally; rules with an unknown condition give nothing."""
    rules = list(rules)
    everywhere = {(r[2], r[3]) for r in rules if r[4] == NO_CONDITION}
    own = {
        (r[2], f"{r[3]}:{OWN_SUFFIX}")
        for r in rules
        if r[4] == OWNER_CONDITION and (r[2], r[3]) not in everywhere
    }
    return everywhere | own


__all__ = [
    "ALL_WORKSPACES",
    "Change",
    "Decision",
    "DecisionEngine",
    "RuleAdded",
    "RuleRemoved",
    "SubjectChanged",
    "SubjectRemoved",
    "WorkspaceAdded",
    "WorkspaceRemoved",
    "new_enforcer",
]
