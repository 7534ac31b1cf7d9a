"""An audit event's change in words, for people reading the trail (the console): what
changed from what to what ("roles in acme: editor → viewer", "status active →
deactivated"), never a Python repr, a whole settings record, a secret's value or a
server's file path. The raw record stays available as it is (the console's details and
the export)."""

from __future__ import annotations

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
    return "; ".join(parts) or "—"
