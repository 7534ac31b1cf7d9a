"""Event streams in the console: send a workspace's audit events (or every event, for a
super admin) to a SIEM: create one (a webhook's signing secret is shown once), see how
far delivery got and why it paused, edit it (name, destination, audit actions, the
share of decisions sent), resume it, replay from an audit id, rotate the secret, delete
it. Thin handlers over ``gateway.services.streams`` with the admin API's
schemas (``/event-streams``): the same checks, the same audit events. Every page is
whole, so every action works without script."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from marshmallow import ValidationError

from admin_api.streams import ReplaySchema, StreamCreateSchema, StreamUpdateSchema
from console.views import _field_errors, _render, bp, viewer
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound
from gateway.notifier import STREAM_KINDS
from gateway.services.permissions import Permission
from gateway.web.http import services

STREAM_ID = "<int(max=2147483647):stream_id>"


def _scopes() -> list[tuple[str, str]]:
    """Where this admin may create a stream: ``*`` first if they may everywhere."""
    v = viewer()
    choices = list(v.workspaces(Permission.EVENT_STREAMS_WRITE))
    if v.can(Permission.EVENT_STREAMS_WRITE, ALL_WORKSPACES):
        choices.insert(0, (ALL_WORKSPACES, "Every workspace (every event)"))
    return choices


def _list_page(
    status: int = 200, errors: dict[str, list[str]] | None = None, form: Any = None
) -> Response:
    return _render(
        "event_streams.html",
        status=status,
        active="event_streams",
        streams=services().streams.list(viewer().actor),
        scopes=_scopes(),
        kinds=STREAM_KINDS,
        errors=errors or {},
        form=form or dict(EMPTY_FORM),
    )


EMPTY_FORM = {
    "workspace": "",
    "name": "",
    "kind": "webhook",
    "target": "",
    "types": "",
    "decision_sample": "0",
}


def _rate(text: str) -> str:
    """The decision rate as the form shows it: ``0.25``, ``1``, ``0``."""
    return f"{float(text):g}"


def _stream_page(
    stream_id: int,
    status: int = 200,
    secret: str | None = None,
    errors: dict[str, list[str]] | None = None,
    notice: str | None = None,
    edit: dict[str, str] | None = None,
) -> Response:
    stream = services().streams.get(viewer().actor, stream_id)
    return _render(
        "event_stream.html",
        status=status,
        active="event_streams",
        stream=stream,
        secret=secret,
        errors=errors or {},
        notice=notice,
        edit=edit
        or {
            "name": stream.name,
            "target": stream.target,
            "types": " ".join(stream.event_types),
            "decision_sample": _rate(str(stream.decision_sample)),
        },
    )


def _form_rate(text: str) -> Any:
    """The decision rate typed in the form, for the schema (which refuses a non-number)."""
    text = text.strip()
    return text if text else "0"


@bp.get("/event-streams")
def event_streams() -> Response:
    return _list_page()


@bp.post("/event-streams")
def event_stream_create() -> Response:
    form = {
        "workspace": request.form.get("workspace", "")[:100],
        "name": request.form.get("name", "")[:300].strip(),
        "kind": request.form.get("kind", "")[:20],
        "target": request.form.get("target", "")[:2100].strip(),
        "types": request.form.get("event_types", "")[:4000],
        "decision_sample": request.form.get("decision_sample", "")[:30].strip(),
    }
    try:
        args = StreamCreateSchema().load(
            {
                "workspace": form["workspace"],
                "name": form["name"],
                "kind": form["kind"],
                "target": form["target"],
                "event_types": form["types"].replace(",", " ").split(),
                "decision_sample": _form_rate(form["decision_sample"]),
            }
        )
        made = services().streams.create(
            viewer().actor,
            args["name"],
            args["workspace"],
            args["kind"],
            args["target"],
            args["event_types"],
            args["decision_sample"],
        )
    except (ValidationError, InvalidInput) as exc:
        return _list_page(422, _field_errors(exc), form)
    except (Forbidden, Conflict, NotFound) as exc:
        return _list_page(exc.status, {"_form": [str(exc.detail)]}, form)
    return _stream_page(made.stream.id, 201, secret=made.secret)


@bp.get(f"/event-streams/{STREAM_ID}")
def event_stream(stream_id: int) -> Response:
    return _stream_page(stream_id)


@bp.post(f"/event-streams/{STREAM_ID}/edit")
def event_stream_edit(stream_id: int) -> Response:
    services().streams.get(viewer().actor, stream_id)  # someone else's: a 404 first
    edit = {
        "name": request.form.get("name", "")[:300].strip(),
        "target": request.form.get("target", "")[:2100].strip(),
        "types": request.form.get("event_types", "")[:4000],
        "decision_sample": request.form.get("decision_sample", "")[:30].strip(),
    }
    try:
        args = StreamUpdateSchema().load(
            {
                "name": edit["name"],
                "target": edit["target"],
                "event_types": edit["types"].replace(",", " ").split(),
                "decision_sample": _form_rate(edit["decision_sample"]),
            }
        )
        services().streams.update(viewer().actor, stream_id, **args)
    except (ValidationError, InvalidInput) as exc:
        return _stream_page(stream_id, 422, errors=_field_errors(exc), edit=edit)
    return _stream_page(stream_id, notice="Saved.")


@bp.post(f"/event-streams/{STREAM_ID}/resume")
def event_stream_resume(stream_id: int) -> Response:
    services().streams.resume(viewer().actor, stream_id)
    return _stream_page(stream_id, notice="Resumed: delivery goes on from where it stopped.")


@bp.post(f"/event-streams/{STREAM_ID}/replay")
def event_stream_replay(stream_id: int) -> Response:
    try:
        args = ReplaySchema().load({"from_audit_id": request.form.get("from_audit_id", "")[:20]})
    except ValidationError as exc:
        services().streams.get(viewer().actor, stream_id)  # someone else's: a 404 first
        return _stream_page(stream_id, 422, errors=_field_errors(exc))
    services().streams.replay(viewer().actor, stream_id, args["from_audit_id"])
    return _stream_page(
        stream_id, notice=f"Replaying every matching event from audit id {args['from_audit_id']}."
    )


@bp.post(f"/event-streams/{STREAM_ID}/rotate-secret")
def event_stream_rotate(stream_id: int) -> Response:
    try:
        made = services().streams.rotate_secret(viewer().actor, stream_id)
    except Conflict as exc:
        return _stream_page(stream_id, exc.status, errors={"_form": [str(exc.detail)]})
    return _stream_page(stream_id, secret=made.secret)


@bp.post(f"/event-streams/{STREAM_ID}/delete")
def event_stream_delete(stream_id: int) -> Response:
    stream = services().streams.get(viewer().actor, stream_id)
    name = stream.name
    services().streams.delete(viewer().actor, stream_id)
    return _render(
        "event_streams.html",
        active="event_streams",
        streams=services().streams.list(viewer().actor),
        scopes=_scopes(),
        kinds=STREAM_KINDS,
        errors={},
        notice=f"Deleted {name}: nothing more is sent.",
        form=dict(EMPTY_FORM),
    )
