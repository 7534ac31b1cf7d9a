"""Real decisions against a candidate policy: ``ringfence policy replay``.

The decision log (:mod:`gateway.audit.decision_log`) holds one JSON line per decision of
the check endpoints: subject, workspace, resource, action and the answer given.
:func:`replay` asks each logged question again of two engines loaded like
``policy plan``'s (:func:`gateway.policy.plan.policy_engine`: the same live grants,
people and workspaces), one with the baseline rules (the applied policy, or the files at
a git ref) and one with the candidate's, and lists the questions whose answer flips.

Both answers are today's, on today's grants: a flip is then the policy change and
nothing else. The logged answer is compared with the baseline's only to count the lines
answered differently today (grants or people changed since, or an owner-only permission:
the log does not record a resource's owner, so those are asked without one, on both
sides alike). Lines that cannot be judged (not a decision line, a subject that holds no
grant now or a workspace that no longer exists) are counted, never fatal.

It does not evaluate rules itself: every answer is :meth:`DecisionEngine.check`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.engine.engine import UNKNOWN_SUBJECT, UNKNOWN_WORKSPACE, DecisionEngine
from gateway.policy.plan import CHANGES, DANGER, NO_CHANGE

EXAMPLES = 20  # flipped requests shown per direction, by default

MALFORMED = "not a decision line"
NO_SUBJECT = "unknown subject (no such person, or one holding no grant now)"
NO_WORKSPACE = "unknown workspace"


@dataclass
class Flip:
    """One question (subject, workspace, resource, action) whose answer flips, with the
    number of log lines that asked it and when it was first logged."""

    subject: str
    workspace: str
    resource: str
    action: str
    first_logged: str
    lines: int = 1


@dataclass
class Replay:
    log: str
    candidate: str
    baseline: str
    lines: int = 0  # non-blank lines read
    judged: int = 0
    allow_to_deny: int = 0  # lines
    deny_to_allow: int = 0  # lines
    examples_allow_to_deny: list[Flip] = field(default_factory=list)
    examples_deny_to_allow: list[Flip] = field(default_factory=list)
    not_judged: dict[str, int] = field(default_factory=dict)  # reason -> lines
    answered_differently: int = 0  # logged answer != the baseline's today
    examples: int = EXAMPLES

    @property
    def flips(self) -> int:
        return self.allow_to_deny + self.deny_to_allow

    @property
    def exit_code(self) -> int:
        if self.deny_to_allow:
            return DANGER
        return CHANGES if self.allow_to_deny else NO_CHANGE


def _question(text: str) -> tuple[str, str, str, str, str, str] | None:
    """(subject, workspace, resource, action, logged answer, time) of a decision line."""
    try:
        entry = json.loads(text)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    keys = ("subject", "workspace", "resource", "action", "decision")
    fields = [value for k in keys if isinstance(value := entry.get(k), str)]
    if len(fields) != len(keys) or fields[4] not in {"allow", "deny"}:
        return None
    subject, workspace, resource, action, decision = fields
    return subject, workspace, resource, action, decision, str(entry.get("time") or "")


def replay(
    lines: Iterable[str],
    *,
    baseline: DecisionEngine,
    candidate: DecisionEngine,
    log: str,
    candidate_name: str,
    baseline_name: str,
    examples: int = EXAMPLES,
) -> Replay:
    """Replay the decision log ``lines`` (read as they come: a log may be large) on both
    engines, which must hold the same people and workspaces."""
    result = Replay(log, candidate_name, baseline_name, examples=examples)
    # The flipped questions kept as examples, by direction; further ones are counted only.
    kept: dict[bool, dict[tuple[str, str, str, str], Flip]] = {True: {}, False: {}}
    for text in lines:
        if not text.strip():
            continue
        result.lines += 1
        question = _question(text)
        if question is None:
            result.not_judged[MALFORMED] = result.not_judged.get(MALFORMED, 0) + 1
            continue
        subject, workspace, resource, action, logged, logged_at = question
        user_id = baseline.resolve_subject(subject)
        before = baseline.check(user_id, workspace, resource, action)
        if before.reason in (UNKNOWN_SUBJECT, UNKNOWN_WORKSPACE):
            reason = NO_SUBJECT if before.reason == UNKNOWN_SUBJECT else NO_WORKSPACE
            result.not_judged[reason] = result.not_judged.get(reason, 0) + 1
            continue
        result.judged += 1
        if before.allowed != (logged == "allow"):
            result.answered_differently += 1
        after = candidate.check(user_id, workspace, resource, action)
        if after.allowed == before.allowed:
            continue
        if after.allowed:
            result.deny_to_allow += 1
        else:
            result.allow_to_deny += 1
        flips = kept[after.allowed]
        key = (subject, workspace, resource, action)
        if key in flips:
            flips[key].lines += 1
        elif len(flips) < examples:
            flips[key] = Flip(subject, workspace, resource, action, logged_at)
    result.examples_deny_to_allow = list(kept[True].values())
    result.examples_allow_to_deny = list(kept[False].values())
    return result


# --------------------------------------------------------------------------- rendering


def _request(flip: Flip) -> str:
    times = "1 line" if flip.lines == 1 else f"{flip.lines} lines"
    return (
        f"{flip.subject} in '{flip.workspace}': {flip.resource}:{flip.action} "
        f"({times}, first {flip.first_logged or 'at an unknown time'})"
    )


def _summary(result: Replay) -> str:
    if not result.flips:
        return f"No decision flips ({result.judged} judged)."
    parts = [f"{result.flips} of {result.judged} decisions flip"]
    if result.deny_to_allow:
        parts.append(f"{result.deny_to_allow} DENY -> ALLOW")
    if result.allow_to_deny:
        parts.append(f"{result.allow_to_deny} allow -> deny")
    return "; ".join(parts) + "."


def _not_judged(result: Replay) -> list[str]:
    return [f"{count} {reason}" for reason, count in sorted(result.not_judged.items())]


def _differently(result: Replay) -> str:
    return (
        f"{result.answered_differently} logged decisions are answered differently today by "
        f"{result.baseline} (grants or people changed since, or owner-only permissions, "
        "whose owner the log does not record); flips compare today's answers only."
    )


def render_text(result: Replay) -> str:
    lines = [
        f"Policy replay: {result.lines} lines of {result.log}, {result.candidate} "
        f"against {result.baseline} (on today's grants)"
    ]
    if result.deny_to_allow:
        lines += [
            "",
            f"!!! DENY -> ALLOW: {result.deny_to_allow} denied decisions would be ALLOWED !!!",
        ]
        lines += [f"  !!! {_request(f)}" for f in result.examples_deny_to_allow]
    if result.allow_to_deny:
        lines += ["", f"allow -> deny: {result.allow_to_deny} allowed decisions would be denied"]
        lines += [f"  {_request(f)}" for f in result.examples_allow_to_deny]
    if result.not_judged:
        lines += ["", f"Not judged: {', '.join(_not_judged(result))}."]
    if result.answered_differently:
        lines += ["", _differently(result)]
    lines += ["", _summary(result)]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(flips: list[Flip]) -> list[str]:
    rows = ["| subject | workspace | permission | lines | first logged |", "|---|---|---|---|---|"]
    rows += [
        f"| {_cell(f.subject)} | {_cell(f.workspace)} | `{_cell(f.resource)}:{_cell(f.action)}` "
        f"| {f.lines} | {f.first_logged} |"
        for f in flips
    ]
    return rows


def render_markdown(result: Replay) -> str:
    lines = [
        f"## Policy replay: `{result.candidate}` against {result.baseline}",
        "",
        f"{result.lines} lines of `{result.log}`, {result.judged} judged, on today's grants.",
        "",
    ]
    if result.deny_to_allow:
        lines += [
            "> [!CAUTION]",
            f"> **Deny -> allow**: {result.deny_to_allow} denied decisions would be allowed.",
            "",
            *_table(result.examples_deny_to_allow),
            "",
        ]
    if result.allow_to_deny:
        lines += [
            f"### Allow -> deny: {result.allow_to_deny}",
            "",
            *_table(result.examples_allow_to_deny),
            "",
        ]
    if result.not_judged:
        lines += [f"Not judged: {', '.join(_not_judged(result))}.", ""]
    if result.answered_differently:
        lines += [_differently(result), ""]
    lines.append(f"**{_summary(result)}**")
    return "\n".join(lines)


def render_json(result: Replay) -> str:
    data: dict[str, Any] = asdict(result)
    data["flips"] = result.flips
    data["exit_code"] = result.exit_code
    return json.dumps(data, indent=2, sort_keys=True)
