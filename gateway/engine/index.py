"""The decision index: Casbin's answer for ``model.conf`` without scanning the rules.

``model.conf`` says: a request ``(sub, dom, obj, act, owner)`` is allowed when some ``p``
rule ``(psub, pdom, pobj, pact, cond)`` has ``g(sub, psub, dom)`` (``psub`` reachable
from ``sub`` through ``g`` links whose domain pattern key-matches ``dom``, within
Casbin's 10 hierarchy levels), ``keyMatch(dom, pdom)``, ``keyMatch(obj, pobj)``,
``keyMatch(act, pact)``, and ``cond`` is empty or ``owner`` with ``owner == sub``.

The rules fall in two layers:

* the **grants**: ``g`` links whose child is a user (``user:<id>``). There are millions;
  each user holds a few. They live in :class:`Grants` (a dict per user, and the holders
  of each role per domain for "who may" questions), changed in place, O(1) per change.
* the **role layer**: ``p`` rules and every other ``g`` link (role inheritance). There
  are few, and they change rarely (``ringfence policy apply``). They live in an immutable
  :class:`RoleLayer`, rebuilt and swapped whole on a change; the expansions it computes
  (which rules a role reaches in a domain, with the path) are memoised on it, so they
  are never stale.

Domains: a rule's or link's domain pattern is *universal* when key_match matches every
domain with it (``*``, anything starting with ``*``); otherwise *specific* (a workspace
slug, or a prefix pattern such as ``acme*``). What a role reaches in a domain depends
only on which specific patterns of the role layer match the domain (its *signature*),
so the expansions are memoised per (role, signature): one for all the workspaces
without workspace-specific rules, one per workspace that has some.

If a ``g`` link leads *to* a user (a role or user inheriting a user, which Ringfence
never writes), a user's grants become part of other subjects' expansions; the index then
answers by walking the links per request (:meth:`Index.reachable`), still exactly.

Thread safety is the engine's business (a sequence lock around these structures).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from casbin.util import key_match

from gateway.engine.rules import NO_CONDITION, OWNER_CONDITION, USER_PREFIX

# Casbin's default role manager follows at most 10 levels: the subject itself and up
# to 9 links from it.
MAX_LINKS = 9

# What an expansion answers for one (obj, act), memoised on it (see Expansion.answer).
NOT_GRANTED, OWNER_ONLY, GRANTED = 0, 1, 2
# Answers kept per expansion: requests name a handful of resources and actions, but
# clients may send any string, so the memo must stay bounded.
MAX_ANSWERS = 4096

Link = tuple[str, str, str]  # child, parent, domain pattern
PRule = tuple[str, str, str, str, str]  # sub, dom, obj, act, cond

_intern = sys.intern


def is_universal(pattern: str) -> bool:
    """True if ``key_match(anything, pattern)`` holds (the ``*`` is first)."""
    return pattern.find("*") == 0


def user_id_of(subject: str) -> int | None:
    """The id of a canonical ``user:<id>`` subject (Casbin compares strings, so
    ``user:01`` is not user 1), else None."""
    if not subject.startswith(USER_PREFIX):
        return None
    digits = subject[len(USER_PREFIX) :]
    if digits.isascii() and digits.isdecimal() and str(int(digits)) == digits:
        return int(digits)
    return None


# --------------------------------------------------------------------------- role layer


@dataclass(frozen=True)
class Match:
    """A rule that allows a request, with how the subject reached its role: the ``g``
    links from the subject (first) to the rule's subject (last)."""

    rule: PRule
    path: tuple[Link, ...]


@dataclass
class Expansion:
    """Everything a subject reaches in one domain signature: the rules (by exact
    ``(obj, act)``, by exact ``obj`` with an action pattern, and fully patterned) and,
    for each reached subject, the link it was first reached by (for explanations)."""

    # obj -> act -> [unconditional match or None, owner-only match or None]
    exact: dict[str, dict[str, list[PRule | None]]] = field(default_factory=dict)
    # obj -> rules whose act is a pattern
    by_object: dict[str, list[PRule]] = field(default_factory=dict)
    # rules whose obj is a pattern
    patterned: list[PRule] = field(default_factory=list)
    reached_by: dict[str, Link | None] = field(default_factory=dict)
    rules: list[PRule] = field(default_factory=list)
    # (obj, act) -> NOT_GRANTED / OWNER_ONLY / GRANTED: the hot path's answer. An
    # expansion never changes once its role layer is built, so the memo is never stale.
    answers: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, rule: PRule) -> None:
        obj, act, cond = rule[2], rule[3], rule[4]
        self.rules.append(rule)
        if "*" in obj:
            self.patterned.append(rule)
        elif "*" in act:
            self.by_object.setdefault(obj, []).append(rule)
        else:
            slot = self.exact.setdefault(obj, {}).setdefault(act, [None, None])
            index = 0 if cond == NO_CONDITION else 1
            if slot[index] is None:
                slot[index] = rule

    def find(self, obj: str, act: str, owned: bool) -> PRule | None:
        """A rule allowing ``obj``/``act`` (``owned``: the subject owns the resource),
        an unconditional one if there is one."""
        owner_only: PRule | None = None
        actions = self.exact.get(obj)
        if actions is not None:
            slot = actions.get(act)
            if slot is not None:
                if slot[0] is not None:
                    return slot[0]
                owner_only = slot[1]
        for rules in (self.by_object.get(obj), self.patterned):
            if rules:
                for rule in rules:
                    if key_match(obj, rule[2]) and key_match(act, rule[3]):
                        if rule[4] == NO_CONDITION:
                            return rule
                        if owner_only is None:
                            owner_only = rule
        return owner_only if owned else None

    def answer(self, obj: str, act: str) -> int:
        """:meth:`find` reduced to what a check needs, remembered for the next request."""
        found = self.find(obj, act, owned=True)
        if found is None:
            answer = NOT_GRANTED
        else:
            answer = GRANTED if found[4] == NO_CONDITION else OWNER_ONLY
        answers = self.answers
        if len(answers) >= MAX_ANSWERS:
            answers.clear()  # readers may race here: a lost memo costs one find()
        answers[(obj, act)] = answer
        return answer

    def path_to(self, subject: str) -> tuple[Link, ...]:
        path: list[Link] = []
        link = self.reached_by.get(subject)
        while link is not None:
            path.append(link)
            link = self.reached_by.get(link[0])
        return tuple(reversed(path))


_NOTHING = Expansion()


class RoleLayer:
    """The ``p`` rules and the non-grant ``g`` links, immutable once built; expansions
    are memoised on it."""

    def __init__(self, rules: Iterable[PRule], links: Iterable[Link]) -> None:
        self.rules: frozenset[PRule] = frozenset(rules)
        self.links: frozenset[Link] = frozenset(links)
        rules_by_subject: dict[str, list[PRule]] = {}
        for rule in self.rules:
            if rule[4] in (NO_CONDITION, OWNER_CONDITION):  # another condition never holds
                rules_by_subject.setdefault(rule[0], []).append(rule)
        self.rules_by_subject = rules_by_subject
        links_by_child: dict[str, list[Link]] = {}
        for link in self.links:
            links_by_child.setdefault(link[0], []).append(link)
        for value in links_by_child.values():
            value.sort()  # a deterministic first-found path
        self.links_by_child = links_by_child
        patterns = {r[1] for r in self.rules} | {link[2] for link in self.links}
        specific = {p for p in patterns if not is_universal(p)}
        self.exact_patterns = frozenset(p for p in specific if "*" not in p)
        self.prefix_patterns = tuple(sorted(p for p in specific if "*" in p))
        # A rule of a user subject, or a link to a user: grants then matter beyond the
        # first step, and the index walks the links per request.
        self.user_rules = any(user_id_of(subject) is not None for subject in rules_by_subject)
        self.links_to_users = any(user_id_of(link[1]) is not None for link in self.links)
        # Either makes a check look beyond a user's grants (Index.allows then matches).
        self.beyond_grants = self.user_rules or self.links_to_users
        self._signatures: dict[str, tuple[str, ...]] = {}
        self._expansions: dict[tuple[str, tuple[str, ...], int], Expansion] = {}
        # role -> signature -> what a grant of the role gives (the hot path's lookup)
        self._granted: dict[str, dict[tuple[str, ...], Expansion]] = {}

    # -- domains --------------------------------------------------------------------------

    def signature(self, domain: str) -> tuple[str, ...]:
        """The specific patterns that match ``domain`` (sorted)."""
        signature = self._signatures.get(domain)
        if signature is None:
            found = [p for p in self.prefix_patterns if key_match(domain, p)]
            if domain in self.exact_patterns:
                found.append(domain)
            signature = tuple(sorted(found))
            if len(self._signatures) > 100_000:  # domains asked about by permits()
                self._signatures.clear()
            self._signatures[domain] = signature
        return signature

    @staticmethod
    def applies(pattern: str, signature: tuple[str, ...]) -> bool:
        return is_universal(pattern) or pattern in signature

    # -- expansions -----------------------------------------------------------------------

    def expansion(self, subject: str, signature: tuple[str, ...], budget: int) -> Expansion:
        """What ``subject`` reaches in a domain of ``signature`` following at most
        ``budget`` links: its rules and those of every subject reached (Casbin's
        breadth-first levels)."""
        key = (subject, signature, budget)
        found = self._expansions.get(key)
        if found is not None:
            return found
        if budget == 0 and subject not in self.rules_by_subject:
            # Users asked about one by one (walking the links): nothing to keep.
            return _NOTHING
        expansion = Expansion()
        expansion.reached_by[subject] = None
        level = [subject]
        for depth in range(budget + 1):
            following: list[str] = []
            for node in level:
                for rule in self.rules_by_subject.get(node, ()):
                    if self.applies(rule[1], signature):
                        expansion.add(rule)
                if depth == budget:
                    continue
                for link in self.links_by_child.get(node, ()):
                    parent = link[1]
                    if parent not in expansion.reached_by and self.applies(link[2], signature):
                        expansion.reached_by[parent] = link
                        following.append(parent)
            level = following
            if not level:
                break
        self._expansions[key] = expansion
        return expansion

    def granted(self, role: str, signature: tuple[str, ...]) -> Expansion:
        """What a grant of ``role`` gives a user in a domain of ``signature``: the
        role's expansion one level below the user."""
        by_signature = self._granted.get(role)
        if by_signature is None:
            by_signature = self._granted[role] = {}
        found = by_signature.get(signature)
        if found is None:
            found = by_signature[signature] = self.expansion(role, signature, MAX_LINKS - 1)
        return found

    def roles_granted_in(self, workspace: str) -> set[str]:
        """Subjects with rules or inheritance written for ``*`` or ``workspace``."""
        subjects = {r[0] for r in self.rules if r[1] in ("*", workspace)}
        subjects |= {link[0] for link in self.links if link[2] in ("*", workspace)}
        return subjects


# --------------------------------------------------------------------------- grants


class Grants:
    """The grant layer: each user's links ``(role, domain pattern)``, and the holders of
    each role per domain pattern."""

    def __init__(self) -> None:
        self.by_user: dict[int, tuple[tuple[str, str], ...]] = {}
        # domain pattern -> role -> user ids
        self.holders: dict[str, dict[str, set[int]]] = {}
        self.patterned_domains: set[str] = set()  # non-universal patterns with a '*'
        self.universal_domains: set[str] = set()
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}
        # Grants whose "role" is a user (a user-to-user link, never written by Ringfence
        # but legal in Casbin): the index must then walk links per request.
        self.user_parents = 0

    def __len__(self) -> int:
        return sum(len(links) for links in self.by_user.values())

    def add(self, user_id: int, role: str, domain: str) -> None:
        pair = self._pair(role, domain)
        links = self.by_user.get(user_id, ())
        if pair in links:
            return
        holders = self.holders.setdefault(pair[1], {}).setdefault(pair[0], set())
        holders.add(user_id)
        if user_id_of(role) is not None:
            self.user_parents += 1
        if is_universal(domain):
            self.universal_domains.add(pair[1])
        elif "*" in domain:
            self.patterned_domains.add(pair[1])
        # A new tuple, assigned at once: a reader sees the old links or the new ones.
        self.by_user[user_id] = (*links, pair)

    def add_holders(self, role: str, domain: str, user_ids: Iterable[int]) -> None:
        """:meth:`add` of ``role`` in ``domain`` for each of ``user_ids``, without a call
        per grant: start-up reads grants grouped by (role, domain) in bulk."""
        pair = self._pair(role, domain)
        holders = self.holders.setdefault(pair[1], {}).setdefault(pair[0], set())
        by_user = self.by_user
        before = len(holders)
        for user_id in user_ids:
            if user_id in holders:  # holders and by_user always agree
                continue
            holders.add(user_id)
            links = by_user.get(user_id)
            by_user[user_id] = (pair,) if links is None else (*links, pair)
        added = len(holders) - before
        if not holders:
            del self.holders[pair[1]][pair[0]]
            if not self.holders[pair[1]]:
                del self.holders[pair[1]]
            return
        if user_id_of(role) is not None:
            self.user_parents += added
        if is_universal(domain):
            self.universal_domains.add(pair[1])
        elif "*" in domain:
            self.patterned_domains.add(pair[1])

    def remove(self, user_id: int, role: str, domain: str) -> None:
        links = self.by_user.get(user_id, ())
        pair = (role, domain)
        if pair not in links:
            return
        remaining = tuple(p for p in links if p != pair)
        if user_id_of(role) is not None:
            self.user_parents -= 1
        if remaining:
            self.by_user[user_id] = remaining
        else:
            del self.by_user[user_id]
        by_role = self.holders.get(domain)
        if by_role is not None:
            users = by_role.get(role)
            if users is not None:
                users.discard(user_id)
                if not users:
                    del by_role[role]
            if not by_role:
                del self.holders[domain]
                self.universal_domains.discard(domain)
                self.patterned_domains.discard(domain)

    def links(self) -> Iterator[Link]:
        for user_id, pairs in self.by_user.items():
            subject = f"{USER_PREFIX}{user_id}"
            for role, domain in pairs:
                yield (subject, role, domain)

    def _pair(self, role: str, domain: str) -> tuple[str, str]:
        key = (role, domain)
        pair = self._pairs.get(key)
        if pair is None:
            pair = (_intern(role), _intern(domain))
            self._pairs[pair] = pair
        return pair


def domain_applies(domain: str, pattern: str) -> bool:
    """Casbin's domain matching for ``g`` links: key_match(request domain, pattern)."""
    return (
        pattern == domain
        or is_universal(pattern)
        or ("*" in pattern and key_match(domain, pattern))
    )


# --------------------------------------------------------------------------- the index


class Index:
    """Grants and role layer together: the answers of ``model.conf``."""

    def __init__(self, layer: RoleLayer | None = None, grants: Grants | None = None) -> None:
        self.layer = layer if layer is not None else RoleLayer((), ())
        self.grants = grants if grants is not None else Grants()

    @property
    def walks(self) -> bool:
        """True when grants matter beyond a user's first step (see the module doc): a
        link to a user, in the role layer or as a user's grant."""
        return self.layer.links_to_users or self.grants.user_parents > 0

    def match(
        self, user_id: int, domain: str, obj: str, act: str, owner: int | None
    ) -> Match | None:
        """A rule allowing the request (with its path), or None."""
        owned = owner is not None and owner == user_id
        layer = self.layer
        if self.walks:
            return self._walk_match(user_id, domain, obj, act, owned)
        signature = layer.signature(domain)
        subject = f"{USER_PREFIX}{user_id}"
        best: Match | None = None
        if layer.user_rules:
            found = layer.expansion(subject, signature, 0).find(obj, act, owned)
            if found is not None:
                best = Match(found, ())
                if found[4] == NO_CONDITION:
                    return best
        for role, pattern in self.grants.by_user.get(user_id, ()):
            if not domain_applies(domain, pattern):
                continue
            expansion = layer.granted(role, signature)
            found = expansion.find(obj, act, owned)
            if found is not None and (best is None or found[4] == NO_CONDITION):
                best = Match(found, ((subject, role, pattern), *expansion.path_to(found[0])))
                if found[4] == NO_CONDITION:
                    return best
        return best

    def allows(self, user_id: int, domain: str, obj: str, act: str, owner: int | None) -> bool:
        """:meth:`match` without the path, on the hot path of a check: each granted
        role's memoised answer for ``(obj, act)``."""
        layer = self.layer
        if layer.beyond_grants or self.grants.user_parents:
            return self.match(user_id, domain, obj, act, owner) is not None
        links = self.grants.by_user.get(user_id)
        if not links:
            return False
        signature = layer._signatures.get(domain)
        if signature is None:
            signature = layer.signature(domain)
        key = (obj, act)
        for role, pattern in links:
            if (
                pattern != domain
                and pattern[:1] != "*"  # universal
                and ("*" not in pattern or not key_match(domain, pattern))
            ):
                continue
            expansion = layer.granted(role, signature)
            answer = expansion.answers.get(key)
            if answer is None:
                answer = expansion.answer(obj, act)
            if answer == GRANTED or (
                answer == OWNER_ONLY and owner is not None and owner == user_id
            ):
                return True
        return False

    # -- walking every link (links to users exist) --------------------------------------

    def reachable(self, subject: str, domain: str) -> dict[str, Link | None]:
        """Subjects ``subject`` reaches in ``domain`` (Casbin's levels), each with the
        link it was first reached by."""
        reached: dict[str, Link | None] = {subject: None}
        level = [subject]
        for _ in range(MAX_LINKS):
            following: list[str] = []
            for node in level:
                for link in self._links_of(node):
                    if link[1] not in reached and domain_applies(domain, link[2]):
                        reached[link[1]] = link
                        following.append(link[1])
            level = following
            if not level:
                break
        return reached

    def _links_of(self, node: str) -> list[Link]:
        links = list(self.layer.links_by_child.get(node, ()))
        user_id = user_id_of(node)
        if user_id is not None:
            links += [
                (node, role, pattern) for role, pattern in self.grants.by_user.get(user_id, ())
            ]
        return links

    def _walk_match(
        self, user_id: int, domain: str, obj: str, act: str, owned: bool
    ) -> Match | None:
        layer = self.layer
        signature = layer.signature(domain)
        reached = self.reachable(f"{USER_PREFIX}{user_id}", domain)
        best: Match | None = None
        for node in reached:
            found = layer.expansion(node, signature, 0).find(obj, act, owned)
            if found is not None and (best is None or found[4] == NO_CONDITION):
                best = Match(found, _path(reached, node))
                if found[4] == NO_CONDITION:
                    return best
        return best

    # -- queries --------------------------------------------------------------------------

    def rules_of(self, user_id: int, domain: str) -> list[PRule]:
        """Every rule ``user_id`` reaches in ``domain`` (its domain matching)."""
        layer = self.layer
        signature = layer.signature(domain)
        subject = f"{USER_PREFIX}{user_id}"
        if self.walks:
            reached = self.reachable(subject, domain)
            return [r for node in reached for r in layer.expansion(node, signature, 0).rules]
        rules = list(layer.expansion(subject, signature, 0).rules) if layer.user_rules else []
        for role, pattern in self.grants.by_user.get(user_id, ()):
            if domain_applies(domain, pattern):
                rules += layer.granted(role, signature).rules
        return rules

    def rules_of_subject(self, subject: str, domain: str) -> list[PRule]:
        """Every rule ``subject`` (a role) reaches in ``domain``, itself included."""
        layer = self.layer
        if self.walks:
            reached = self.reachable(subject, domain)
            signature = layer.signature(domain)
            return [r for node in reached for r in layer.expansion(node, signature, 0).rules]
        return layer.expansion(subject, layer.signature(domain), MAX_LINKS).rules

    def holders_who_may(self, domain: str, obj: str, act: str) -> set[int]:
        """Users whose grants allow ``obj``/``act`` in ``domain`` unconditionally, from
        the holders of each role (not by asking about every user)."""
        layer = self.layer
        signature = layer.signature(domain)
        grants = self.grants
        patterns = [domain, *grants.universal_domains]
        patterns += [p for p in grants.patterned_domains if key_match(domain, p)]
        found: set[int] = set()
        for pattern in patterns:
            by_role = grants.holders.get(pattern)
            if not by_role:
                continue
            for role, users in by_role.items():
                expansion = layer.granted(role, signature)
                rule = expansion.find(obj, act, False)
                if rule is not None:
                    found |= users
        return found


def _path(reached: dict[str, Link | None], node: str) -> tuple[Link, ...]:
    path: list[Link] = []
    link = reached.get(node)
    while link is not None:
        path.append(link)
        link = reached.get(link[0])
    return tuple(reversed(path))


def split_rules(
    rows: Iterable[Sequence[str]],
) -> tuple[list[PRule], list[Link], list[tuple[int, str, str]], list[tuple[str, ...]]]:
    """``(ptype, *values)`` rows into p rules, role-layer links, grants ``(user id, role,
    domain)`` and the malformed rows (a ``p`` rule without five values or a ``g`` link
    without three: Casbin refuses to decide with them). Other types are left out, as
    Casbin leaves out a type its model does not define."""
    p_rules: list[PRule] = []
    links: list[Link] = []
    grants: list[tuple[int, str, str]] = []
    malformed: list[tuple[str, ...]] = []
    for row in rows:
        ptype = row[0]
        if ptype == "p":
            if len(row) == 6:
                p_rules.append((row[1], row[2], row[3], row[4], row[5]))
            else:
                malformed.append(tuple(row))
        elif ptype == "g":
            if len(row) != 4:
                malformed.append(tuple(row))
                continue
            user_id = user_id_of(row[1])
            if user_id is not None:
                grants.append((user_id, row[2], row[3]))
            else:
                links.append((row[1], row[2], row[3]))
    return p_rules, links, grants, malformed
