"""A workspace's custom roles in the console: define one from the permissions you hold
there, change or delete one you could grant. Thin handlers over
``gateway.services.custom_roles`` with the admin API's schemas (``/workspaces/<slug>/
custom-roles``): the same checks, the same audit events. Every page is whole (htmx swaps
``#main``), so every action also works without script."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from marshmallow import ValidationError

from admin_api.schemas import CustomRoleCreateSchema, CustomRoleUpdateSchema
from console.views import _field_errors, _render, bp, viewer
from gateway.errors import Conflict, Forbidden, InvalidInput
from gateway.services.custom_roles import CustomRoleDraft
from gateway.services.permissions import Permission
from gateway.web.http import services


def _form() -> dict[str, Any]:
    return {
        "name": request.form.get("name", "")[:100].strip(),
        "description": request.form.get("description", "")[:1000].strip(),
        "permissions": request.form.getlist("permissions")[:200],
    }


def _page(
    slug: str,
    status: int = 200,
    errors: dict[str, list[str]] | None = None,
    form: dict[str, Any] | None = None,
    notice: str | None = None,
) -> Response:
    v = viewer()
    custom = services().custom_roles
    roles = custom.in_workspace(v.actor, slug)  # 404 for a workspace one may not see
    offered = [(name, text) for name, text, held in custom.definable(v.actor, slug) if held]
    may_delete = v.can(Permission.ROLE_MANAGEMENT_DEFINE, slug)
    may_define = custom.enabled and may_delete
    # Changing or deleting a role needs the right to grant it as it is (no stripping).
    deletable = {
        role.name: may_delete and services().authorizer.can_grant(v.actor, role.name, slug)
        for role in roles
    }
    return _render(
        "custom_roles.html",
        status=status,
        active="roles",
        slug=slug,
        roles=roles,
        offered=offered,
        enabled=custom.enabled,
        may_define=may_define,
        deletable=deletable,
        errors=errors or {},
        form=form or {"name": "", "description": "", "permissions": []},
        notice=notice,
    )


@bp.get("/workspaces/<slug>/roles")
def custom_roles(slug: str) -> Response:
    return _page(slug)


@bp.post("/workspaces/<slug>/roles")
def custom_role_create(slug: str) -> Response:
    form = _form()
    try:
        args = CustomRoleCreateSchema().load(form)
        draft = CustomRoleDraft(args["name"], args["description"], args["permissions"])
        role, _ = services().custom_roles.create(viewer().actor, slug, draft)
    except (ValidationError, InvalidInput) as exc:
        return _page(slug, 422, _field_errors(exc), form)
    except (Forbidden, Conflict) as exc:
        return _page(slug, exc.status, {"_form": [str(exc.detail)]}, form)
    return _page(slug, notice=f"Defined the role {role.name}: it can be granted in {slug} now.")


@bp.post("/workspaces/<slug>/roles/<name>")
def custom_role_update(slug: str, name: str) -> Response:
    form = _form()
    try:
        args = CustomRoleUpdateSchema().load(
            {"description": form["description"], "permissions": form["permissions"]}
        )
        services().custom_roles.update(
            viewer().actor, slug, name, args["description"], args["permissions"]
        )
    except (ValidationError, InvalidInput) as exc:
        return _page(slug, 422, {f"role-{name}": _flatten_errors(exc)})
    except (Forbidden, Conflict) as exc:
        return _page(slug, exc.status, {f"role-{name}": [str(exc.detail)]})
    return _page(slug, notice=f"Changed the role {name}: its holders have its new permissions now.")


@bp.post("/workspaces/<slug>/roles/<name>/delete")
def custom_role_delete(slug: str, name: str) -> Response:
    try:
        services().custom_roles.delete(viewer().actor, slug, name)
    except (Forbidden, Conflict) as exc:
        return _page(slug, exc.status, {f"role-{name}": [str(exc.detail)]})
    return _page(slug, notice=f"Deleted the role {name}.")


def _flatten_errors(exc: ValidationError | InvalidInput) -> list[str]:
    return [message for messages in _field_errors(exc).values() for message in messages]
