"""Bulk work on people in the console: tick several people on the Users page, pick what
to do (deactivate, reactivate, remove, give or take a role in a workspace), then one
confirmation lists everyone affected and, for anyone it cannot be done to, why (a role
given may have an end, ``until``, shown in the confirmation). Carried
out only if it can be done to everyone ticked (checked again when confirmed), one
service call, and so one audit event, per person: the same checks and events as doing
each by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Response, request
from marshmallow import ValidationError

from admin_api.schemas import GrantSchema
from console.views import _fmt_time, _render, _users_context, bp, viewer
from gateway.db.models import UserStatus, utcnow
from gateway.errors import Conflict, InvalidInput, NotFound, RingfenceError
from gateway.services.grants import require_future_end
from gateway.services.permissions import Permission
from gateway.services.users import UserView
from gateway.web.http import services

ACTIONS = {
    "deactivate": "Deactivate",
    "reactivate": "Reactivate",
    "remove": "Remove",
    "add-role": "Give a role",
    "remove-role": "Take a role",
}
ROLE_ACTIONS = ("add-role", "remove-role")
MAX_PEOPLE = 100


@dataclass
class Entry:
    user_id: int
    view: UserView | None
    refusal: str | None  # why it cannot be done to them; None: it can


def _until(workspace: str, role: str) -> datetime | None:
    """The optional end of a role given (``until``, UTC when no zone is written), parsed
    as the API parses ``expires_at`` and held to the grant service's rule (in the future)
    before anyone is changed; None: no end."""
    text = request.values.get("until", "")[:64].strip()
    if not text:
        return None
    try:
        at: datetime = GrantSchema().load(
            {"workspace": workspace, "role": role, "expires_at": text}
        )["expires_at"]
    except ValidationError as exc:
        raise InvalidInput(
            "Until: not a date and time. Write it as YYYY-MM-DD HH:MM, in UTC.",
            errors={"until": ["not a date and time"]},
        ) from exc
    try:
        require_future_end(at)
    except InvalidInput as exc:
        raise InvalidInput(
            f"Until: the end must be in the future (it is {_fmt_time(utcnow())} now).",
            errors={"until": ["must be in the future"]},
        ) from exc
    return at


def _request() -> tuple[str, list[int], str, str]:
    source = request.form if request.method == "POST" else request.args
    action = source.get("action", "")
    if action not in ACTIONS:
        raise InvalidInput("Pick what to do", errors={"action": ["unknown action"]})
    ids: list[int] = []
    for value in source.getlist("user")[: MAX_PEOPLE + 1]:
        if not value.isdigit() or int(value) > 2**31 - 1:
            raise InvalidInput("Those are not people", errors={"user": ["not an id"]})
        ids.append(int(value))
    if not ids:
        raise InvalidInput("Tick at least one person", errors={"user": ["none ticked"]})
    if len(ids) > MAX_PEOPLE:
        raise InvalidInput(f"At most {MAX_PEOPLE} people at once", errors={"user": ["too many"]})
    workspace = source.get("workspace", "")[:63] if action in ROLE_ACTIONS else ""
    role = source.get("role", "")[:63] if action in ROLE_ACTIONS else ""
    if action in ROLE_ACTIONS and not (workspace and role):
        raise InvalidInput(
            "Pick the workspace and the role", errors={"role": ["workspace and role"]}
        )
    return action, list(dict.fromkeys(ids)), workspace, role


def _refusal(action: str, view: UserView, workspace: str, role: str) -> str | None:
    """Why ``action`` cannot be done to the person of ``view`` by this admin, if so: the
    services' own answers (allowed_actions, grantable, the last holder's protection)."""
    v = viewer()
    user = view.user
    if user.id == v.user_id:
        return "not to yourself"
    if action not in ROLE_ACTIONS:
        if action in services().users.allowed_actions(v.actor, view):
            return None
        return {
            "deactivate": "not active" if user.status != UserStatus.ACTIVE else None,
            "reactivate": "not deactivated" if user.status != UserStatus.DEACTIVATED else None,
        }.get(action) or "not yours to change (their roles, or a last owner)"
    if user.status == UserStatus.PENDING:
        return "invited, not yet an account"
    if not v.can(Permission.ROLE_MANAGEMENT_WRITE, workspace):
        return f"you may not change roles in {workspace}"
    if action == "add-role":
        try:  # an installation-wide role is given in every workspace only: the service says
            services().grants.require_grantable_here(workspace, [role])
        except InvalidInput as exc:
            return exc.detail or exc.title
    if dict(services().roles.grantable(v.actor, workspace)).get(role) is not True:
        return f"you may not give or take {role} in {workspace}"
    held = role in view.roles.get(workspace, [])
    if action == "add-role" and held:
        return f"holds {role} in {workspace} already"
    if action == "remove-role":
        if not held:
            return f"does not hold {role} in {workspace}"
        try:
            services().users.protect_last_holder(user, role, workspace, "remove")
        except Conflict as exc:
            return exc.detail or exc.title
    return None


def _entries(action: str, ids: list[int], workspace: str, role: str) -> list[Entry]:
    entries = []
    for user_id in ids:
        try:
            view = services().users.get(viewer().actor, user_id)
        except NotFound as exc:  # worded as for an unknown id, whoever it is
            entries.append(Entry(user_id, None, exc.detail or exc.title))
            continue
        entries.append(Entry(user_id, view, _refusal(action, view, workspace, role)))
    return entries


def _page(status: int, **context: Any) -> Response:
    return _render("bulk.html", status=status, active="users", actions=ACTIONS, **context)


@bp.get("/users/bulk")
def bulk_confirm() -> Response:
    action, ids, workspace, role = _request()
    until = _until(workspace, role) if action == "add-role" else None
    entries = _entries(action, ids, workspace, role)
    return _page(
        200, action=action, entries=entries, workspace=workspace, role=role, until=until, done=False
    )


@bp.post("/users/bulk")
def bulk_apply() -> Response:
    action, ids, workspace, role = _request()
    until = _until(workspace, role) if action == "add-role" else None
    entries = _entries(action, ids, workspace, role)
    if any(e.refusal for e in entries):
        # Nothing half-done: everyone, or no one. Someone unknown (to this admin) is a 404.
        status = 404 if any(e.view is None for e in entries) else 409
        return _page(
            status,
            action=action,
            entries=entries,
            workspace=workspace,
            role=role,
            until=until,
            done=False,
        )
    actor = viewer().actor
    done: list[str] = []
    for entry in entries:
        assert entry.view is not None
        name = entry.view.user.name
        try:
            if action == "deactivate":
                services().users.deactivate(actor, entry.user_id)
            elif action == "reactivate":
                services().users.reactivate(actor, entry.user_id)
            elif action == "remove":
                services().users.remove(actor, entry.user_id)
            elif action == "add-role":
                services().grants.add(actor, entry.user_id, workspace, role, until)
            else:
                services().grants.remove(actor, entry.user_id, workspace, role)
        except RingfenceError as exc:  # changed by someone else since the check
            message = (
                f"{ACTIONS[action]}: done for {len(done)} ({', '.join(done) or 'nobody'}); "
                f"stopped at {name}: {exc.detail or exc.title}"
            )
            raise Conflict(message) from exc
        done.append(name)
    what = {
        "deactivate": "Deactivated",
        "reactivate": "Reactivated",
        "remove": "Removed",
        "add-role": f"Gave {role} in {workspace}"
        + (f" until {_fmt_time(until)}" if until else "")
        + " to",
        "remove-role": f"Took {role} in {workspace} from",
    }[action]
    message = f"{what} {len(done)}: {', '.join(done)}."
    return _render("users.html", active="users", notice=message, **_users_context())
