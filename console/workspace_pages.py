"""A workspace's pages in the console beyond create and rename (console/views.py): its
members with what may be done to each (manage roles, deactivate or reactivate, take them
out of this workspace after a confirmation), and deleting it, confirmed by typing its
slug. Thin handlers over ``gateway.services``: the same checks and audit events as the
API's ``DELETE /workspaces/{slug}``, ``PUT /users/{id}/workspaces/{slug}/roles`` and
``POST /users/{id}/deactivate``."""

from __future__ import annotations

from flask import Response, request

from console.views import (
    PAGE_SIZE,
    _page_number,
    _render,
    _row,
    _workspaces_page,
    bp,
    viewer,
)
from gateway.errors import Conflict, InvalidInput
from gateway.services.base import page_offset
from gateway.services.permissions import Permission
from gateway.services.users import UserFilter
from gateway.web.http import services

USER_ID = "<int(max=2147483647):user_id>"
# The workspace's two-step sign-in policy (PUT /workspaces/{slug}/mfa-policy), as offered.
MFA_CHOICES = (
    ("off", "Off: the installation's policy only"),
    ("admins", "Admins: whoever holds a permission here other than reading"),
    ("everyone", "Everyone with a role here"),
)


def _mfa_label(required: str) -> str:
    """The short name of a policy ("Admins"), as the page and its notices say it."""
    return dict(MFA_CHOICES)[required].partition(":")[0]


def _members_page(
    slug: str,
    status: int = 200,
    notice: str | None = None,
    confirm_out: int | None = None,
    errors: dict[str, list[str]] | None = None,
    confirm_deactivate: int | None = None,
) -> Response:
    v = viewer()
    workspace = services().workspaces.get(v.actor, slug)
    page = _page_number()
    result = services().users.list(
        v.actor, UserFilter(workspace=slug), page_offset(page, PAGE_SIZE), PAGE_SIZE
    )
    rows = {m.user.id: _row(m) for m in result.items}
    leaving = None
    if confirm_out is not None:
        leaving = rows.get(confirm_out) or _row(services().users.get(v.actor, confirm_out))
    # Deactivating asks first (console/confirmations.py), as the Users row does.
    deactivating = None
    if confirm_deactivate is not None:
        deactivating = rows.get(confirm_deactivate) or _row(
            services().users.get(v.actor, confirm_deactivate)
        )
        if "deactivate" not in deactivating.actions:
            raise Conflict(f"{deactivating.view.user.name} is not someone you may deactivate now")
    return _render(
        "workspace.html",
        status=status,
        active="workspaces",
        workspace=workspace,
        members=result.items,
        rows=rows,
        # Taking someone out is changing their roles here to none.
        can_take_out=v.can(Permission.ROLE_MANAGEMENT_WRITE, slug),
        can_delete=v.can(Permission.WORKSPACES_DELETE, slug),
        can_invite=v.can(Permission.USERS_INVITE, slug),
        total=result.total,
        page=page,
        pages=result.pages(PAGE_SIZE),
        leaving=leaving,
        deactivating=deactivating,
        notice=notice,
        mfa=services().mfa.workspace_policy(v.actor, slug),
        can_set_mfa=v.can(Permission.SETTINGS_WRITE, slug),
        mfa_choices=MFA_CHOICES,
        mfa_label=_mfa_label,
        errors=errors or {},
    )


@bp.get("/workspaces/<slug>")
def workspace_members(slug: str) -> Response:
    return _members_page(slug)


@bp.post(f"/workspaces/<slug>/members/{USER_ID}/deactivate")
def member_deactivate(slug: str, user_id: int) -> Response:
    view = services().users.deactivate(viewer().actor, user_id)
    return _members_page(
        slug, notice=f"Deactivated {view.user.name}: every check denies and their sessions ended."
    )


@bp.post(f"/workspaces/<slug>/members/{USER_ID}/reactivate")
def member_reactivate(slug: str, user_id: int) -> Response:
    view = services().users.reactivate(viewer().actor, user_id)
    return _members_page(slug, notice=f"Reactivated {view.user.name} with the roles they had.")


@bp.get(f"/workspaces/<slug>/members/{USER_ID}/take-out")
def member_take_out_confirm(slug: str, user_id: int) -> Response:
    return _members_page(slug, confirm_out=user_id)


@bp.post(f"/workspaces/<slug>/members/{USER_ID}/take-out")
def member_take_out(slug: str, user_id: int) -> Response:
    v = viewer()
    before = services().users.get(v.actor, user_id)
    services().grants.replace(v.actor, user_id, slug, [])
    held = ", ".join(before.roles.get(slug, [])) or "no roles"
    return _members_page(
        slug,
        notice=f"Took {before.user.name} out of {slug} (they held {held} there); "
        "their other workspaces are unchanged.",
    )


@bp.post("/workspaces/<slug>/mfa-policy")
def workspace_mfa_policy(slug: str) -> Response:
    """The same service call, checks and audit event (workspace.mfa_policy_changed) as
    the API's PUT: settings:write in the workspace."""
    try:
        policy = services().mfa.set_workspace_policy(
            viewer().actor, slug, request.form.get("required", "")[:20]
        )
    except InvalidInput as exc:
        return _members_page(slug, exc.status, errors={"required": [exc.detail or exc.title]})
    return _members_page(
        slug,
        notice=f"Two-step sign-in in {slug}: {_mfa_label(policy.required)}. It applies from "
        "each member's next sign-in; whoever it asks who has no second factor is walked "
        "through setting one up.",
    )


@bp.get("/workspaces/<slug>/delete")
def workspace_delete_confirm(slug: str) -> Response:
    return _delete_page(slug)


def _delete_page(slug: str, status: int = 200, errors: list[str] | None = None) -> Response:
    v = viewer()
    workspace = services().workspaces.get(v.actor, slug)
    services().authorizer.require(v.actor, Permission.WORKSPACES_DELETE, slug)  # as the API
    members = services().users.count_by_workspace(v.actor, [slug]).get(slug)
    return _render(
        "workspace_delete.html",
        status=status,
        active="workspaces",
        workspace=workspace,
        members=members,
        errors=errors or [],
        typed=request.form.get("confirm", "")[:100],
    )


@bp.post("/workspaces/<slug>/delete")
def workspace_delete(slug: str) -> Response:
    typed = request.form.get("confirm", "")[:100].strip()
    if typed != slug:
        return _delete_page(
            slug,
            422,
            [f"Type {slug} exactly to delete it" if typed else f"Type {slug} to confirm"],
        )
    workspace = services().workspaces.get(viewer().actor, slug)
    name = workspace.name
    try:
        services().workspaces.delete(viewer().actor, slug)
    except InvalidInput as exc:
        return _delete_page(slug, exc.status, [exc.detail or exc.title])
    return _workspaces_page(
        notice=f"Deleted workspace {name} ({slug}): its roles, invitations into it and "
        "custom roles are gone; the audit history is kept."
    )
