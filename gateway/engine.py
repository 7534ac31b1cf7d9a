"""The decision engine: answers from memory, with Casbin's semantics.

Rules come from ``model.conf`` and the ``casbin_rule`` table; the engine keeps a
``casbin.Enforcer`` in memory and applies every committed change to it incrementally
(no reload). On top of Casbin it knows which subjects are active and which workspaces
exist, so that a deactivated person or an unknown workspace is denied whatever the
rules say.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import casbin
from casbin import persist
from casbin.util import key_match

from gateway.rules import (
    ALL_WORKSPACES,
    NO_CONDITION,
    OWN_SUFFIX,
    OWNER_CONDITION,
    ROLE_PREFIX,
    Rule,
    role_subject,
    user_subject,
)

log = logging.getLogger("ringfence.engine")


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


def new_enforcer(model_path: Path) -> casbin.Enforcer:
    """A Casbin enforcer on ``model.conf`` with ``*`` as a domain pattern for ``g``."""
    enforcer = casbin.Enforcer(str(model_path))
    enforcer.add_named_domain_matching_func("g", key_match)
    enforcer.enable_auto_save(False)
    return enforcer


class DecisionEngine:
    """Thread-safe, in-memory decisions; ``apply`` takes changes after they commit."""

    def __init__(self, model_path: Path) -> None:
        self._lock = threading.RLock()
        self._model_path = model_path
        self._enforcer = new_enforcer(model_path)
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

    @property
    def revision(self) -> int:
        return self._revision

    def load(
        self,
        adapter: persist.Adapter,
        subjects: Iterable[SubjectChanged],
        workspaces: Iterable[str],
        revision: int,
    ) -> None:
        """Replace everything the engine knows: rules through the Casbin ``adapter``
        (start-up and recovery only; changes arrive through :meth:`apply`)."""
        enforcer = new_enforcer(self._model_path)
        enforcer.set_adapter(adapter)
        enforcer.load_policy()
        subjects = list(subjects)
        with self._lock:
            self._enforcer = enforcer
            self._active = {s.user_id for s in subjects if s.active}
            self._ids_by_email = {s.email: s.user_id for s in subjects}
            self._known = set(self._ids_by_email.values())
            self._workspaces = set(workspaces)
            # A change applied here after the snapshot was read would be lost by the
            # swap; asking for another reload makes the next check pick it up.
            self._missed = revision < self._revision
            self._untrusted = False
            self._revision = revision

    def apply(self, changes: Sequence[Change], revision: int) -> bool:
        """Apply committed ``changes`` (all of them, atomically for readers). False if
        one could not be applied: memory is then untrusted and every decision denies
        until :meth:`load` runs again (the caller reloads at once)."""
        with self._lock:
            try:
                rules_removed = False
                for change in changes:
                    self._apply_one(change)
                    rules_removed |= isinstance(change, RuleRemoved) and change.rule.ptype == "g"
                if rules_removed:
                    # pycasbin's incremental link removal is wrong with domain patterns
                    # (removing (u, r, *) also drops an identical (u, r, acme) link from
                    # its cache, and may then raise KeyError), so removed g rules only
                    # leave the model, and the links are rebuilt from the rules: exact.
                    self._enforcer.build_role_links()
            except Exception:
                log.exception("could not apply revision %s; denying until reloaded", revision)
                self._untrusted = True
                self._missed = True
                return False
            if revision > self._revision + 1:
                self._missed = True
            self._revision = max(self._revision, revision)
            return True

    def _apply_one(self, change: Change) -> None:
        match change:
            case RuleAdded(rule) if rule.ptype == "p":
                self._enforcer.add_policy(*rule.values)
            case RuleAdded(rule):
                self._enforcer.add_named_grouping_policy(rule.ptype, *rule.values)
            case RuleRemoved(rule) if rule.ptype == "p":
                self._enforcer.remove_policy(*rule.values)
            case RuleRemoved(rule):
                self._enforcer.get_model().remove_policy("g", rule.ptype, list(rule.values))
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
                self._ids_by_email.pop(email, None)
            case WorkspaceAdded(slug):
                self._workspaces.add(slug)
            case WorkspaceRemoved(slug):
                self._workspaces.discard(slug)

    def is_behind(self, committed_revision: int) -> bool:
        """True if changes up to ``committed_revision`` may be missing from memory."""
        with self._lock:
            return self._missed or committed_revision > self._revision

    def resolve_subject(self, subject: str) -> int | None:
        """A user id from an email address, ``user:<id>`` or a plain id; None if unknown."""
        with self._lock:
            text = subject.strip()
            if "@" in text:
                return self._ids_by_email.get(text.lower())
            digits = text.removeprefix("user:")
            if digits.isdecimal():
                user_id = int(digits)
                return user_id if user_id in self._known else None
            return None

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
        with self._lock:
            revision = self._revision
            denial = self._denial(user_id, workspace)
            if denial is not None:
                return _deny(revision, denial, explain)
            assert user_id is not None
            matched = self._matched_rule(user_id, workspace, resource, action, owner)
            if matched is None:
                return _deny(revision, "no rule allows", explain)
            explanation = None
            if explain:
                explanation = {
                    "rule": list(matched),
                    "path": self._role_path(user_subject(user_id), matched[0], workspace),
                }
            return Decision(True, revision, "allowed by policy", explanation)

    def _denial(self, user_id: int | None, workspace: str) -> str | None:
        if self._untrusted:
            return "the engine is reloading"
        if user_id is None:
            return "unknown subject"
        if user_id not in self._active:
            return "subject is not active"
        if workspace not in self._workspaces:
            return "unknown workspace"
        return None

    def permits(
        self, user_id: int, domain: str, resource: str, action: str, *, owner: int | None = None
    ) -> bool:
        """Like :meth:`check` for the admin API: ``domain`` may be ``*`` (every workspace)
        or a workspace about to be created."""
        with self._lock:
            return (
                not self._untrusted
                and user_id in self._active
                and self._matched_rule(user_id, domain, resource, action, owner) is not None
            )

    def holds(self, user_id: int, domain: str, resource: str, action: str) -> bool:
        """Does ``user_id`` hold a permission as :meth:`role_permissions` names it? An
        owner-only one (action ``<action>:own``) is held when the user may do it at least
        on their own resources."""
        base, sep, suffix = action.rpartition(":")
        if sep and suffix == OWN_SUFFIX:
            return self.permits(user_id, domain, resource, base, owner=user_id)
        return self.permits(user_id, domain, resource, action)

    def _matched_rule(
        self, user_id: int, domain: str, resource: str, action: str, owner: int | None
    ) -> list[str] | None:
        owner_subject = user_subject(owner) if owner is not None else ""
        try:
            allowed, rule = self._enforcer.enforce_ex(
                user_subject(user_id), domain, resource, action, owner_subject
            )
        except Exception:
            return None
        return list(rule) if allowed else None

    def _role_path(self, subject: str, role: str, domain: str) -> list[list[str]]:
        """The ``g`` links (shortest first found) leading from ``subject`` to ``role`` in
        ``domain``."""
        links = [
            rule
            for rule in self._enforcer.get_named_grouping_policy("g")
            if len(rule) == 3 and key_match(domain, rule[2])
        ]
        previous: dict[str, list[str] | None] = {subject: None}
        queue = deque([subject])
        while queue:
            node = queue.popleft()
            if node == role:
                path: list[list[str]] = []
                step = previous[node]
                while step is not None:
                    path.append(list(step))
                    step = previous[step[0]]
                return path[::-1]
            for link in links:
                if link[0] == node and link[1] not in previous:
                    previous[link[1]] = link
                    queue.append(link[1])
        return []

    # -- queries ------------------------------------------------------------------------

    def permissions(self, user_id: int | None, workspace: str) -> set[tuple[str, str]]:
        """(resource, action) pairs ``user_id`` holds in ``workspace``, patterns as written
        (``*`` stays ``*``); one held only on their own resources has the action
        ``<action>:own``, and is left out when the same pair is held on every resource."""
        with self._lock:
            if self._denial(user_id, workspace) is not None:
                return set()
            assert user_id is not None
            subject = user_subject(user_id)
            subjects = {subject, *self._enforcer.get_implicit_roles_for_user(subject, workspace)}
            rules = [
                rule
                for rule in self._enforcer.get_policy()
                if len(rule) == 5 and rule[0] in subjects and key_match(workspace, rule[1])
            ]
        return _permission_pairs(rules)

    def workspaces_where(
        self, user_id: int | None, resource: str, action: str, *, owner: int | None = None
    ) -> set[str]:
        """Known workspaces where ``user_id`` may do ``resource:action``."""
        with self._lock:
            return {
                workspace
                for workspace in self._workspaces
                if self._denial(user_id, workspace) is None
                and user_id is not None
                and self._matched_rule(user_id, workspace, resource, action, owner) is not None
            }

    def subjects_who_may(
        self, workspace: str, resource: str, action: str, *, owner: int | None = None
    ) -> set[int]:
        """Active users who may do ``resource:action`` in ``workspace`` (on a resource
        owned by ``owner``)."""
        with self._lock:
            if self._untrusted or workspace not in self._workspaces:
                return set()
            return {
                user_id
                for user_id in self._active
                if self._matched_rule(user_id, workspace, resource, action, owner) is not None
            }

    def role_permissions(self, role: str, workspace: str) -> set[tuple[str, str]]:
        """(resource, action) pairs that holding ``role`` in ``workspace`` gives, inherited
        ones included (wildcards as written: ``*`` stays ``*``; owner-only ones as in
        :meth:`permissions`)."""
        subject = role_subject(role)
        with self._lock:
            subjects = {subject, *self._enforcer.get_implicit_roles_for_user(subject, workspace)}
            rules = [
                rule
                for rule in self._enforcer.get_policy()
                if len(rule) == 5 and rule[0] in subjects and key_match(workspace, rule[1])
            ]
        return _permission_pairs(rules)

    def roles_in(self, workspace: str) -> set[str]:
        """Roles that may be granted in ``workspace``: shared ones and its own."""
        with self._lock:
            roles = {
                rule[0]
                for rule in self._enforcer.get_policy()
                if rule[1] in (ALL_WORKSPACES, workspace)
            }
            roles |= {
                rule[0]
                for rule in self._enforcer.get_named_grouping_policy("g")
                if rule[0].startswith(ROLE_PREFIX) and rule[2] in (ALL_WORKSPACES, workspace)
            }
        return {r.removeprefix(ROLE_PREFIX) for r in roles if r.startswith(ROLE_PREFIX)}


def _deny(revision: int, reason: str, explain: bool) -> Decision:
    explanation: dict[str, Any] | None = None
    if explain:
        explanation = {"rule": None, "path": [], "reason": reason}
    return Decision(False, revision, reason, explanation)


def _permission_pairs(rules: Sequence[Sequence[str]]) -> set[tuple[str, str]]:
    """(resource, action) of unconditional rules, (resource, "action:own") of owner-only
    ones not also held unconditionally; rules with an unknown condition give nothing."""
    everywhere = {(r[2], r[3]) for r in rules if r[4] == NO_CONDITION}
    own = {
        (r[2], f"{r[3]}:{OWN_SUFFIX}")
        for r in rules
        if r[4] == OWNER_CONDITION and (r[2], r[3]) not in everywhere
    }
    return everywhere | own
