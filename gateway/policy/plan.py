"""What a policy change would do, on the real grants: ``ringfence policy plan``.

:func:`compute_plan` is pure: it takes the applied (or older) rules, the candidate rules,
the permission catalogue and the live grants, and answers

- per role, the permissions added and removed (effective: inheritance and wildcards
  resolved);
- per workspace, the people who gain or lose each permission;
- the grants left pointing at roles that no longer exist (orphans);
- escalation paths: a role that becomes able to grant a role it could not grant before.

It does not evaluate rules itself: both sides are loaded into a
:class:`~gateway.engine.engine.DecisionEngine` (the one that answers every check), and the
questions are the engine's (``role_permissions``, ``holds``, ``roles_in``). Granting
follows ``Authorizer.require_can_grant``: holding ``role_management:write`` in a
workspace and every permission the role gives there.

The renderers (:func:`render_text`, :func:`render_markdown`, :func:`render_json`) only
format a :class:`Plan`; :func:`plan_from_json` reads a saved one back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.engine.engine import DecisionEngine, SubjectChanged
from gateway.engine.rules import (
    ALL_WORKSPACES,
    OWN_SUFFIX,
    ROLE_PREFIX,
    GrantKey,
    Rule,
    grant_rule,
)

# The permission that lets a role's holders grant roles at all (the admin API's
# Permission.ROLE_MANAGEMENT_WRITE, which lives in the services, above this layer).
GRANT_PERMISSION = "role_management:write"

NO_CHANGE, CHANGES, DANGER = 0, 2, 3  # the exit codes a CI job reads
PLAN_FORMAT = 1  # version of the saved plan file


@dataclass(frozen=True)
class Person:
    user_id: int
    email: str
    name: str
    active: bool = True  # a deactivated person holds nothing, before or after


@dataclass(frozen=True)
class RoleChange:
    role: str
    workspace: str  # "*" for a shared role
    status: str  # "added", "removed" or "changed"
    added: list[str]
    removed: list[str]


@dataclass(frozen=True)
class ScopeChange:
    """``role`` becomes installation-wide only (granted in every workspace, ``*``, never
    in one: ``scope: installation``), or stops being so."""

    role: str
    before: str  # "installation" or "workspace"
    after: str

    def __str__(self) -> str:
        if self.after == "installation":
            return (
                f"{self.role} becomes installation-wide only: granted in every workspace "
                "(*), no longer in one (grants of it in one workspace stay until removed)"
            )
        return f"{self.role} may be granted in one workspace again (no longer installation-wide)"


def scope_changes(before: Iterable[str], after: Iterable[str]) -> list[ScopeChange]:
    """The flips between two sets of installation-wide roles (of roles on both sides or
    new ones marked so)."""
    old, new = set(before), set(after)
    return [
        ScopeChange(
            role,
            "installation" if role in old else "workspace",
            "installation" if role in new else "workspace",
        )
        for role in sorted(old ^ new)
    ]


@dataclass(frozen=True)
class PermissionImpact:
    """In ``workspace`` (``*``: the grants in every workspace), the people who gain and
    lose ``permission``."""

    workspace: str
    permission: str
    gained: list[Person]
    lost: list[Person]


@dataclass(frozen=True)
class OrphanedGrant:
    user_id: int
    email: str
    role: str
    workspace: str


@dataclass(frozen=True)
class Escalation:
    """Holders of ``role`` could not grant ``can_now_grant`` in ``workspace`` before."""

    role: str
    can_now_grant: str
    workspace: str
    holders: int  # grants of ``role`` that reach there (0 when the grants were not read)


@dataclass(frozen=True)
class Digests:
    """What a saved plan was computed on; ``apply --plan-file`` refuses when one moved."""

    policy_files: str  # content hash of the candidate files (gateway.policy.version)
    applied_rules: str  # the rules the plan compares with
    grants: str  # the grants it was computed on ("" when not read)


@dataclass(frozen=True)
class Plan:
    candidate: str  # what is proposed: a folder
    baseline: str  # what it is compared with: "the applied policy" or "git REF"
    rules_added: list[str]
    rules_removed: list[str]
    roles: list[RoleChange]
    impacts: list[PermissionImpact]
    orphaned_grants: list[OrphanedGrant]
    escalations: list[Escalation]
    digests: Digests
    grants_read: bool = True
    grants_note: str = ""  # why the grants were not read
    grant_count: int = 0
    format: int = PLAN_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    # Custom roles of workspaces the files would adopt (same name, same workspace) and
    # roles of the files colliding with one elsewhere (apply refuses those), as sentences.
    adoptions: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)
    custom_roles: int = 0  # custom roles in force (on both sides of the comparison)
    # Roles whose scope flips (installation-wide only, or granted per workspace again).
    scopes: list[ScopeChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.rules_added or self.rules_removed or self.adoptions or self.scopes)

    @property
    def exit_code(self) -> int:
        if self.escalations or self.orphaned_grants or self.collisions:
            return DANGER
        return CHANGES if self.changed else NO_CHANGE


# --------------------------------------------------------------------------- digests


def rules_digest(rules: Iterable[Rule]) -> str:
    digest = hashlib.sha256()
    for rule in sorted(set(rules)):
        digest.update(str(rule).encode() + b"\n")
    return digest.hexdigest()


def grants_digest(grants: Iterable[GrantKey]) -> str:
    """SHA-256 of the distinct grants as ``user_id|role|workspace`` lines, sorted as
    (user id, role, workspace) tuples."""
    # Sorted per person: the ids are sorted as ints and each person's few grants on their
    # own. Sorting the tuples themselves compared tuples, a few tens of millions of times
    # at 1M users (9.5 s of CPU; this way under half of it). One update of the whole text:
    # the same digest as a line at a time, at a fraction of the calls.
    of: dict[int, list[tuple[str, str]]] = {}
    for grant in grants:
        of.setdefault(grant.user_id, []).append((grant.role, grant.workspace))
    lines: list[str] = []
    for user_id in sorted(of):
        pairs = of[user_id]
        if len(pairs) > 1:
            pairs = sorted(set(pairs))
        lines += [f"{user_id}|{role}|{workspace}\n" for role, workspace in pairs]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------- computing


def policy_engine(
    model_path: Path,
    rules: Iterable[Rule],
    grants: Iterable[GrantKey],
    people: Iterable[Person],
    workspaces: Iterable[str],
) -> DecisionEngine:
    """The decision engine of ``rules`` (policy rules) on ``grants`` of ``people`` in
    ``workspaces``: what plan and replay ask, each side in an engine of its own."""
    engine = DecisionEngine(model_path)
    rows = [(r.ptype, *r.values) for r in rules]
    rows += [(r.ptype, *r.values) for r in map(grant_rule, grants)]
    subjects = [SubjectChanged(p.user_id, p.email, p.active) for p in people]
    engine.load_rules(rows, subjects, workspaces, 0)
    return engine


def _expand(pairs: Iterable[tuple[str, str]], catalogue: Iterable[str]) -> frozenset[str]:
    """The engine's (resource, action) patterns as catalogue permission names: ``*``
    and ``resource:*`` expanded, owner-only ones named ``…:own`` unless held outright."""
    catalogue = sorted(catalogue)
    suffix = f":{OWN_SUFFIX}"
    everywhere: set[str] = set()
    own: set[str] = set()
    for resource, action in pairs:
        target, base = (
            (own, action.removesuffix(suffix))
            if action.endswith(suffix)
            else (
                everywhere,
                action,
            )
        )
        if resource == "*":
            target.update(catalogue)
        elif base == "*":
            target.update(p for p in catalogue if p.partition(":")[0] == resource)
        else:
            target.add(f"{resource}:{base}")
    return frozenset(everywhere | {f"{p}{suffix}" for p in own - everywhere})


def _covers(held: frozenset[str], wanted: frozenset[str]) -> bool:
    """Whether a holder of ``held`` may grant a role giving ``wanted``: every permission,
    an owner-only one also by holding it outright (``Authorizer.require_can_grant``)."""
    suffix = f":{OWN_SUFFIX}"
    return all(p in held or (p.endswith(suffix) and p.removesuffix(suffix) in held) for p in wanted)


def _reaches(grant: GrantKey, context: str) -> bool:
    """Whether ``grant`` counts in ``context``: in the shared context (``*``) every grant
    does; in a workspace, its own grants and those in every workspace."""
    return ALL_WORKSPACES in (context, grant.workspace) or grant.workspace == context


def _role_domains(rules: Iterable[Rule]) -> dict[str, str]:
    """Role -> the domain of its rules (``*`` for a shared role)."""
    domains: dict[str, str] = {}
    for rule in rules:
        subject = rule.values[0] if rule.values else ""
        if subject.startswith(ROLE_PREFIX):
            domain = rule.values[1] if rule.ptype == "p" else rule.values[2]
            role = subject.removeprefix(ROLE_PREFIX)
            if domains.get(role, ALL_WORKSPACES) == ALL_WORKSPACES:
                domains[role] = domain
    return domains


def _impacts(
    model_path: Path,
    baseline_rules: Sequence[Rule],
    candidate_rules: Sequence[Rule],
    roles: Sequence[RoleChange],
    live: Sequence[GrantKey],
    people: Mapping[int, Person],
    workspaces: Sequence[str],
) -> list[PermissionImpact]:
    """Per workspace, who gains or loses what: asked of both sides about the people who
    hold a changed role there (nobody else can gain or lose anything).

    People whose grants reaching a workspace are the same get the same answers there
    (rules name roles, never people; an owner-only permission is asked of each on their
    own resources alike), so each such set of grants is asked once, of one of them (the
    first by id): at 1M users a few thousand questions instead of millions. Only the
    people asked are loaded into the two engines, with all their grants: an engine
    answers about a person from the rules and that person's grants alone, so these
    answers are those of engines holding every grant, without building two engines
    from every grant (at 1M users most of the plan's time and of its peak memory)."""
    changed = {change.role for change in roles}
    moved = {p for change in roles for p in (*change.added, *change.removed)}
    everywhere = (ALL_WORKSPACES, *workspaces)
    grants_of: dict[int, list[tuple[str, str]]] = {}
    holders: dict[str, set[int]] = {}
    for grant in live:
        grants_of.setdefault(grant.user_id, []).append((grant.role, grant.workspace))
        if grant.role in changed:
            scopes = everywhere if grant.workspace == ALL_WORKSPACES else (grant.workspace,)
            for scope in scopes:
                holders.setdefault(scope, set()).add(grant.user_id)

    # Each holder's class in each workspace: the grants reaching there (in "*" every
    # grant, so the set is exactly the person's) and whether the person is active.
    asked: list[tuple[int, str]] = []  # per class: the person asked, and where
    classes: list[tuple[str, list[tuple[int, list[int]]]]] = []  # per scope: its classes
    whole: dict[int, frozenset[tuple[str, str]]] = {}  # every grant of a person, made once
    for scope in sorted(holders):
        members: dict[tuple[bool, frozenset[tuple[str, str]]], tuple[int, list[int]]] = {}
        for user_id in sorted(holders[scope]):
            mine = grants_of[user_id]
            if len(mine) == 1 or scope == ALL_WORKSPACES:
                # One grant (it reaches here: that is why the person is asked) or "*":
                # every grant of the person, the same set in each workspace.
                reaching = whole.get(user_id) or whole.setdefault(user_id, frozenset(mine))
            else:
                reaching = frozenset(
                    (role, where) for role, where in mine if where in (scope, ALL_WORKSPACES)
                )
            key = (people[user_id].active, reaching)
            found = members.get(key)
            if found is None:
                found = members[key] = (len(asked), [])
                asked.append((user_id, scope))
            found[1].append(user_id)
        classes.append((scope, list(members.values())))

    ids = sorted({user_id for user_id, _ in asked})
    their_grants = [GrantKey(u, role, where) for u in ids for role, where in grants_of[u]]
    their_people = [people[u] for u in ids]
    old = policy_engine(model_path, baseline_rules, their_grants, their_people, workspaces)
    new = policy_engine(model_path, candidate_rules, their_grants, their_people, workspaces)
    questions = [(p, *p.partition(":")[::2]) for p in sorted(moved)]
    answers: list[list[tuple[str, bool]]] = []
    for user_id, scope in asked:
        changes = []
        for permission, resource, action in questions:
            had = old.holds(user_id, scope, resource, action)
            has = new.holds(user_id, scope, resource, action)
            if had != has:
                changes.append((permission, has))
        answers.append(changes)

    impacts: list[PermissionImpact] = []
    for scope, groups in classes:
        gained: dict[str, list[int]] = {}
        lost: dict[str, list[int]] = {}
        for number, user_ids in groups:
            for permission, has in answers[number]:
                (gained if has else lost).setdefault(permission, []).extend(user_ids)
        for permission in sorted(set(gained) | set(lost)):
            impacts.append(
                PermissionImpact(
                    scope,
                    permission,
                    [people[u] for u in sorted(gained.get(permission, ()))],
                    [people[u] for u in sorted(lost.get(permission, ()))],
                )
            )
    return impacts


def compute_plan(
    *,
    model_path: Path,
    baseline_rules: Sequence[Rule],
    candidate_rules: Sequence[Rule],
    catalogue: Iterable[str],
    grants: Sequence[GrantKey],
    people: Mapping[int, Person],
    workspaces: Sequence[str],
    candidate: str,
    baseline: str,
    policy_digest: str,
    grants_read: bool = True,
    grants_note: str = "",
) -> Plan:
    """The plan of replacing ``baseline_rules`` by ``candidate_rules`` (policy rules only:
    permissions and role inheritance), on ``grants`` of ``people`` (every holder)."""
    catalogue = frozenset(catalogue)
    live = [g for g in grants if g.user_id in people]
    # What roles give, which roles exist and who may grant what are the rules' alone
    # (grants are not in the role layer): asked of two engines without any grant.
    old = policy_engine(model_path, baseline_rules, (), (), workspaces)
    new = policy_engine(model_path, candidate_rules, (), (), workspaces)
    old_domains, new_domains = _role_domains(baseline_rules), _role_domains(candidate_rules)

    def perms(engine: DecisionEngine, role: str, domain: str) -> frozenset[str]:
        return _expand(engine.role_permissions(role, domain), catalogue)

    # Per role: effective permissions before and after.
    roles: list[RoleChange] = []
    for role in sorted(set(old_domains) | set(new_domains)):
        if role in old_domains and role in new_domains and old_domains[role] != new_domains[role]:
            # Moved to another workspace: gone from one, new in the other.
            gone = perms(old, role, old_domains[role])
            roles.append(RoleChange(role, old_domains[role], "removed", [], sorted(gone)))
            came = perms(new, role, new_domains[role])
            roles.append(RoleChange(role, new_domains[role], "added", sorted(came), []))
            continue
        domain = new_domains.get(role, old_domains.get(role, ALL_WORKSPACES))
        before = perms(old, role, domain) if role in old_domains else frozenset()
        after = perms(new, role, domain) if role in new_domains else frozenset()
        if role not in new_domains:
            status = "removed"
        elif role not in old_domains:
            status = "added"
        elif before != after:
            status = "changed"
        else:
            continue
        roles.append(
            RoleChange(role, domain, status, sorted(after - before), sorted(before - after))
        )

    impacts = _impacts(model_path, baseline_rules, candidate_rules, roles, live, people, workspaces)

    # Grants of roles the candidate does not define (or not in that workspace). The
    # shared roles are granted anywhere, and a workspace without rules written for it
    # accepts them alone: the engine is asked only about the others (asking about each
    # of 10k workspaces went through every rule each time).
    shared = new.roles_in(ALL_WORKSPACES)
    written = {value for rule in candidate_rules for value in rule.values[1:3]}
    grantable: dict[str, set[str]] = {}
    orphaned: list[GrantKey] = []
    for grant in live:
        if grant.role in shared:
            continue
        accepted = grantable.get(grant.workspace)
        if accepted is None:
            written_for = grant.workspace in written
            accepted = grantable[grant.workspace] = (
                new.roles_in(grant.workspace) if written_for else shared
            )
        if grant.role not in accepted:
            orphaned.append(grant)
    orphans = [
        OrphanedGrant(g.user_id, people[g.user_id].email, g.role, g.workspace)
        for g in sorted(orphaned)
    ]

    # Escalation paths: in each context (every workspace for shared roles, and each
    # workspace that has roles of its own), role R can grant role Q when R gives the
    # grant permission and every permission Q gives; new such pairs are flagged. A role
    # that did not exist before cannot be escalated to, so only existing Qs count.
    escalations: list[Escalation] = []
    holders: dict[tuple[str, str], int] = {}
    contexts = {ALL_WORKSPACES} | {
        d for d in (*old_domains.values(), *new_domains.values()) if d != ALL_WORKSPACES
    }
    for context in sorted(contexts):
        old_roles, new_roles = old.roles_in(context), new.roles_in(context)
        held_before = {r: perms(old, r, context) for r in old_roles}
        held_after = {r: perms(new, r, context) for r in new_roles}
        for role in sorted(new_roles):
            if GRANT_PERMISSION not in held_after[role]:
                continue
            for target in sorted(new_roles & old_roles):
                if context != ALL_WORKSPACES and ALL_WORKSPACES == new_domains.get(
                    role
                ) == new_domains.get(target):
                    continue  # two shared roles: reported in the shared context
                if not _covers(held_after[role], held_after[target]):
                    continue
                could = (
                    role in held_before
                    and GRANT_PERMISSION in held_before[role]
                    and _covers(held_before[role], held_before[target])
                )
                if not could:
                    if (role, context) not in holders:  # one walk of the grants per role
                        holders[role, context] = len(
                            {g.user_id for g in live if g.role == role and _reaches(g, context)}
                        )
                    escalations.append(Escalation(role, target, context, holders[role, context]))

    candidate_set, baseline_set = set(candidate_rules), set(baseline_rules)
    return Plan(
        candidate=candidate,
        baseline=baseline,
        rules_added=[str(r) for r in sorted(candidate_set - baseline_set)],
        rules_removed=[str(r) for r in sorted(baseline_set - candidate_set)],
        roles=roles,
        impacts=impacts,
        orphaned_grants=orphans,
        escalations=escalations,
        digests=Digests(
            policy_digest,
            rules_digest(baseline_rules),
            grants_digest(grants) if grants_read else "",
        ),
        grants_read=grants_read,
        grants_note=grants_note,
        grant_count=len(grants),
    )


# --------------------------------------------------------------------------- rendering


def _where(workspace: str) -> str:
    return "every workspace" if workspace == ALL_WORKSPACES else f"'{workspace}'"


def _people(people: Sequence[Person]) -> str:
    return ", ".join(f"{p.name} <{p.email}>" if p.name else p.email for p in people)


def _summary(plan: Plan) -> str:
    if plan.exit_code == NO_CHANGE:
        return "No changes."
    parts = [f"{len(plan.rules_added)} rules to add, {len(plan.rules_removed)} to remove"]
    if plan.orphaned_grants:
        parts.append(f"{len(plan.orphaned_grants)} orphaned grants")
    if plan.escalations:
        parts.append(f"{len(plan.escalations)} ESCALATION PATHS")
    if plan.adoptions:
        parts.append(f"{len(plan.adoptions)} custom roles adopted")
    if plan.scopes:
        parts.append(f"{len(plan.scopes)} roles change scope")
    if plan.collisions:
        parts.append(f"{len(plan.collisions)} COLLISIONS with custom roles (apply refuses)")
    return "; ".join(parts) + "."


def render_text(plan: Plan, *, details: bool = False) -> str:
    lines = [f"Policy plan: {plan.candidate} against {plan.baseline}"]
    if not plan.grants_read:
        lines.append(f"Grants not read ({plan.grants_note}): role changes only, no people.")
    if plan.custom_roles:
        lines.append(
            f"{plan.custom_roles} custom roles of workspaces count on both sides "
            "(the files do not change them)."
        )
    if plan.escalations:
        lines += ["", "!!! ESCALATION: roles that can now grant roles they could not grant !!!"]
        for e in plan.escalations:
            lines.append(
                f"  !!! {e.role} can now grant {e.can_now_grant} in {_where(e.workspace)}"
                f" ({e.holders} holders of {e.role})"
            )
    if plan.collisions:
        lines += ["", "!!! COLLISION: roles of the files named like custom roles !!!"]
        lines += [f"  !!! {c}" for c in plan.collisions]
    if plan.adoptions:
        lines += ["", "Custom roles the files take over:"]
        lines += [f"  {a}" for a in plan.adoptions]
    if plan.scopes:
        lines += ["", "Where roles may be granted:"]
        lines += [f"  {change}" for change in plan.scopes]
    if plan.roles:
        lines += ["", "Roles (effective permissions):"]
        for change in plan.roles:
            mark = {"added": "+", "removed": "-", "changed": "~"}[change.status]
            lines.append(f"  {mark} {change.role} ({_where(change.workspace)}, {change.status})")
            lines += [f"      + {p}" for p in change.added]
            lines += [f"      - {p}" for p in change.removed]
    if plan.impacts:
        lines += ["", f"People (on {plan.grant_count} grants):"]
        for i in plan.impacts:
            counts = []
            if i.gained:
                counts.append(f"{len(i.gained)} gain")
            if i.lost:
                counts.append(f"{len(i.lost)} lose")
            lines.append(f"  {_where(i.workspace)}: {i.permission}: {', '.join(counts)}")
            if details:
                if i.gained:
                    lines.append(f"      gain: {_people(i.gained)}")
                if i.lost:
                    lines.append(f"      lose: {_people(i.lost)}")
    if plan.orphaned_grants:
        lines += ["", "Orphaned grants (their role would no longer exist):"]
        for o in plan.orphaned_grants:
            who = o.email if details and o.email else f"user {o.user_id}"
            lines.append(f"  {who}: role '{o.role}' in {_where(o.workspace)}")
    lines += ["", _summary(plan)]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(plan: Plan, *, details: bool = False) -> str:
    lines = [f"## Policy plan: `{plan.candidate}` against {plan.baseline}", ""]
    if not plan.grants_read:
        lines += [f"> Grants not read ({_cell(plan.grants_note)}): role changes only.", ""]
    if plan.escalations:
        lines += [
            "> [!CAUTION]",
            "> **Escalation paths**: roles that can now grant roles they could not grant.",
            "",
            "| role | can now grant | in | holders |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{e.role}` | `{e.can_now_grant}` | {_where(e.workspace)} | {e.holders} |"
            for e in plan.escalations
        ]
        lines.append("")
    if plan.collisions:
        lines += ["> [!CAUTION]", "> **Collisions with custom roles** (apply refuses):"]
        lines += [f"> - {_cell(c)}" for c in plan.collisions]
        lines.append("")
    if plan.adoptions:
        lines += ["### Custom roles adopted", ""]
        lines += [f"- {_cell(a)}" for a in plan.adoptions]
        lines.append("")
    if plan.scopes:
        lines += ["### Where roles may be granted", ""]
        lines += [f"- `{c.role}`: {_cell(str(c).removeprefix(c.role + ' '))}" for c in plan.scopes]
        lines.append("")
    if plan.roles:
        lines += [
            "### Roles",
            "",
            "| role | in | change | added | removed |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| `{c.role}` | {_where(c.workspace)} | {c.status} | "
            f"{', '.join(f'`{p}`' for p in c.added)} | {', '.join(f'`{p}`' for p in c.removed)} |"
            for c in plan.roles
        ]
        lines.append("")
    if plan.impacts:
        header = "| workspace | permission | gain | lose |"
        lines += [f"### People ({plan.grant_count} grants)", "", header, "|---|---|---|---|"]
        for i in plan.impacts:
            gain, lose = str(len(i.gained)), str(len(i.lost))
            if details:
                gain += f" ({_cell(_people(i.gained))})" if i.gained else ""
                lose += f" ({_cell(_people(i.lost))})" if i.lost else ""
            lines.append(f"| {_where(i.workspace)} | `{i.permission}` | {gain} | {lose} |")
        lines.append("")
    if plan.orphaned_grants:
        lines += ["### Orphaned grants", "", "| person | role | in |", "|---|---|---|"]
        for o in plan.orphaned_grants:
            who = o.email if details and o.email else f"user {o.user_id}"
            lines.append(f"| {_cell(who)} | `{o.role}` | {_where(o.workspace)} |")
        lines.append("")
    lines.append(f"**{_summary(plan)}**")
    return "\n".join(lines)


def plan_to_dict(plan: Plan, *, details: bool = True) -> dict[str, Any]:
    if details:
        data = asdict(plan)
    else:
        # Counts only: the people are not copied first (asdict copies each of them,
        # hundreds of thousands at scale) only to be counted.
        data = asdict(replace(plan, impacts=[]))
        data["impacts"] = [
            {
                "workspace": i.workspace,
                "permission": i.permission,
                "gained": len(i.gained),
                "lost": len(i.lost),
            }
            for i in plan.impacts
        ]
        for orphan in data["orphaned_grants"]:
            orphan.pop("email")
    data["changed"] = plan.changed
    data["exit_code"] = plan.exit_code
    return data


def render_json(plan: Plan, *, details: bool = False) -> str:
    return json.dumps(plan_to_dict(plan, details=details), indent=2, sort_keys=True)


def plan_from_json(text: str) -> Plan:
    """A plan saved by ``policy plan --out`` (always with details)."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise ValueError("not a plan file written by 'ringfence policy plan --out'")

    def people(rows: list[dict[str, Any]]) -> list[Person]:
        return [Person(**row) for row in rows]

    return Plan(
        candidate=data["candidate"],
        baseline=data["baseline"],
        rules_added=list(data["rules_added"]),
        rules_removed=list(data["rules_removed"]),
        roles=[RoleChange(**row) for row in data["roles"]],
        impacts=[
            PermissionImpact(
                row["workspace"], row["permission"], people(row["gained"]), people(row["lost"])
            )
            for row in data["impacts"]
        ],
        orphaned_grants=[OrphanedGrant(**row) for row in data["orphaned_grants"]],
        escalations=[Escalation(**row) for row in data["escalations"]],
        digests=Digests(**data["digests"]),
        grants_read=bool(data["grants_read"]),
        grants_note=str(data["grants_note"]),
        grant_count=int(data["grant_count"]),
        extra=dict(data.get("extra", {})),
        adoptions=list(data.get("adoptions", [])),
        collisions=list(data.get("collisions", [])),
        custom_roles=int(data.get("custom_roles", 0)),
        scopes=[ScopeChange(**row) for row in data.get("scopes", [])],
    )
