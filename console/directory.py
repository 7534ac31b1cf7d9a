"""Company directories in the console: connect one to a workspace (its SCIM token is
shown once), see the people and groups it provisioned with their roles and where each
came from, change the roles it gives, rotate its token, revoke it. Thin handlers over
``gateway.services.directory`` with the admin API's schemas (``/directory-connections``):
the same checks, the same audit events. Every page is whole, so every action works
without script."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from marshmallow import ValidationError
from sqlalchemy import select

from admin_api.directory import ConnectionCreateSchema, ConnectionRolesSchema, scim_base_url
from console.views import _field_errors, _render, bp, viewer
from gateway.db.models import Workspace
from gateway.errors import Conflict, Forbidden, InvalidInput
from gateway.services.permissions import Permission
from gateway.web.http import services


def _manageable() -> list[str]:
    """The workspaces where the viewer may connect a directory."""
    where = services().authorizer.workspaces_where(viewer().actor, Permission.DIRECTORY_MANAGE)
    slugs = services().session.scalars(select(Workspace.slug).order_by(Workspace.slug))
    return [slug for slug in slugs if where is None or slug in where]


def _group_roles(text: str) -> dict[str, str]:
    """``group = role`` lines (blank lines ignored) as the API's mapping."""
    mapping: dict[str, str] = {}
    for line in text.splitlines()[:500]:
        if line.strip():
            group, _, role = line.partition("=")
            mapping[group.strip()] = role.strip()
    return mapping


def _list_page(
    status: int = 200, errors: dict[str, list[str]] | None = None, form: Any = None
) -> Response:
    v = viewer()
    return _render(
        "directory.html",
        status=status,
        active="directory",
        connections=services().directory.connections(v.actor),
        workspaces=_manageable(),
        errors=errors or {},
        form=form or {"workspace": "", "name": "", "default_role": ""},
    )


def _connection_page(
    connection_id: int,
    status: int = 200,
    token: str | None = None,
    errors: dict[str, list[str]] | None = None,
    notice: str | None = None,
) -> Response:
    overview = services().directory.overview(viewer().actor, connection_id)
    mapping = "\n".join(
        f"{group} = {role}" for group, role in overview.connection.group_roles.items()
    )
    return _render(
        "directory_connection.html",
        status=status,
        active="directory",
        overview=overview,
        connection=overview.connection,
        scim_url=scim_base_url(),
        token=token,
        mapping=mapping,
        errors=errors or {},
        notice=notice,
    )


@bp.get("/directory")
def directory() -> Response:
    return _list_page()


@bp.post("/directory")
def directory_create() -> Response:
    form = {
        "workspace": request.form.get("workspace", "")[:100],
        "name": request.form.get("name", "")[:300].strip(),
        "default_role": request.form.get("default_role", "")[:100].strip() or None,
        "group_roles": _group_roles(request.form.get("group_roles", "")[:20000]),
    }
    try:
        args = ConnectionCreateSchema().load(form)
        made = services().directory.create(
            viewer().actor,
            args["workspace"],
            args["name"],
            args["default_role"],
            args["group_roles"],
        )
    except (ValidationError, InvalidInput) as exc:
        return _list_page(422, _field_errors(exc), form)
    except (Forbidden, Conflict) as exc:
        return _list_page(exc.status, {"_form": [str(exc.detail)]}, form)
    return _connection_page(made.connection.id, 201, token=made.token)


@bp.get("/directory/<int(max=2147483647):connection_id>")
def directory_connection(connection_id: int) -> Response:
    return _connection_page(connection_id)


@bp.post("/directory/<int(max=2147483647):connection_id>/rotate-token")
def directory_rotate(connection_id: int) -> Response:
    made = services().directory.rotate_token(viewer().actor, connection_id)
    return _connection_page(connection_id, token=made.token)


@bp.post("/directory/<int(max=2147483647):connection_id>/revoke")
def directory_revoke(connection_id: int) -> Response:
    services().directory.revoke(viewer().actor, connection_id)
    return _connection_page(connection_id, notice="Revoked: its token no longer works.")


@bp.post("/directory/<int(max=2147483647):connection_id>/roles")
def directory_roles(connection_id: int) -> Response:
    form = {
        "default_role": request.form.get("default_role", "")[:100].strip() or None,
        "group_roles": _group_roles(request.form.get("group_roles", "")[:20000]),
    }
    try:
        args = ConnectionRolesSchema().load(form)
        services().directory.set_roles(
            viewer().actor, connection_id, args["default_role"], args["group_roles"]
        )
    except (ValidationError, InvalidInput) as exc:
        return _connection_page(connection_id, 422, errors=_field_errors(exc))
    except (Forbidden, Conflict) as exc:
        return _connection_page(connection_id, exc.status, errors={"_form": [str(exc.detail)]})
    return _connection_page(connection_id, notice="Saved: everyone's roles follow already.")
