"""An audit event's change in words, for people reading the trail (the console): what
changed from what to what ("roles in acme: editor → viewer", "status active →
deactivated"), never a Python repr, a whole settings record, a secret's value or a
server's file path. The raw record stays available as it is (the console's details and
the export). Events that are one change told per workspace read as one line
(:func:`audit_lines`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.db.models import AuditEvent

MAX_VALUE = 120
SECRET_WORDS = ("password", "secret", "token", "key_hash", "hash")


def _value(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_value(v)}" for k, v in value.items())
    text = str(value)
    if text.startswith("/") and "/" in text[1:]:
        return "a file on the server"
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _roles(roles: Any, workspace: str | None) -> tuple[str, str]:
    """(where, the roles as words) of a snapshot's roles: a list, or workspace → list;
    only the event's workspace when it has one."""
    if isinstance(roles, dict):
        if workspace:
            return f" in {workspace}", _value(sorted(roles.get(workspace, [])))
        return "", "; ".join(f"{ws}: {_value(sorted(r))}" for ws, r in sorted(roles.items())) or (
            "none"
        )
    return (f" in {workspace}" if workspace else ""), _value(sorted(roles or []))


def _secret(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def describe(event: AuditEvent) -> str:
    """What ``event`` changed, in words; "—" when it records no change of values."""
    return "; ".join(changes(event)) or "—"


def changes(event: AuditEvent) -> list[str]:
    """What ``event`` changed, each value's change in words."""
    before, after = event.before or {}, event.after or {}
    parts: list[str] = []
    if "roles" in before or "roles" in after:
        where, old = _roles(before.get("roles"), event.workspace)
        _, new = _roles(after.get("roles"), event.workspace)
        if not before:
            parts.append(f"roles{where}: {new}")
        elif old != new:
            parts.append(f"roles{where}: {old} → {new}")
    for key in sorted((set(before) | set(after)) - {"roles"}):
        was, now = before.get(key), after.get(key)
        if key in before and key in after and was == now:
            continue
        label = key.replace("_", " ")
        if _secret(key):
            parts.append(f"{label} changed")
        elif key not in before:
            parts.append(f"{label}: {_value(now)}")
        elif key not in after:
            parts.append(f"{label} was {_value(was)}")
        else:
            parts.append(f"{label}: {_value(was)} → {_value(now)}")
    return parts


@dataclass(frozen=True)
class AuditLine:
    """One change as people read the trail: the events one change wrote about one target,
    in order. An invitation to two workspaces writes one event per workspace (so each
    workspace's admins see their part), and reads as one line naming both."""

    events: tuple[AuditEvent, ...]

    @property
    def first(self) -> AuditEvent:
        return self.events[0]

    @property
    def written(self) -> list[AuditEvent]:
        """The events in the order they were written (the trail lists the newest first)."""
        return sorted(self.events, key=lambda e: e.id or 0)

    @property
    def workspaces(self) -> list[str]:
        return list(dict.fromkeys(e.workspace for e in self.written if e.workspace))

    @property
    def change(self) -> str:
        """The events' changes in words, each once (the invitee's name, told to each
        workspace, once; each workspace's roles), "—" when none records one."""
        parts = dict.fromkeys(part for e in self.written for part in changes(e))
        return "; ".join(parts) or "—"


def _one_change(a: AuditEvent, b: AuditEvent) -> bool:
    """Whether ``a`` and ``b`` are the same change told per workspace: the same revision
    (or, for changes that make none, the same request), actor, action and target."""
    change_a, change_b = a.revision or a.request_id, b.revision or b.request_id
    return (
        change_a is not None
        and change_a == change_b
        and (a.actor_id, a.action, a.target_type, a.target_id)
        == (b.actor_id, b.action, b.target_type, b.target_id)
    )


def audit_lines(events: Iterable[AuditEvent]) -> list[AuditLine]:
    """``events`` (in the trail's order) as lines: neighbours that are one change join."""
    lines: list[AuditLine] = []
    for event in events:
        if lines and _one_change(lines[-1].events[-1], event):
            lines[-1] = AuditLine((*lines[-1].events, event))
        else:
            lines.append(AuditLine((event,)))
    return lines
