"""A workspace's own single sign-on in the console: its OpenID Connect connection (set
up, edited, turned off, its provider checked, the accounts linked to it, each of which
may be unlinked after a confirmation) and the email domains it proves by DNS (claimed,
verified, checked again, withdrawn), for whoever holds ``sso:manage`` in the
workspace. Thin handlers over ``gateway.services.sso_connections`` and
``gateway.services.sso_domains`` with the admin API's schemas: the same checks, the
same audit events. Every page is whole, so every action works without script."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from marshmallow import ValidationError

from admin_api.workspace_sso import (
    SsoConnectionCreateSchema,
    SsoConnectionUpdateSchema,
    SsoDomainClaimSchema,
)
from console.views import _field_errors, _render, bp, viewer
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound, RingfenceError
from gateway.services.permissions import Permission
from gateway.web.http import services

SLUG = "<slug>"
DOMAIN = "<int(max=2147483647):domain_id>"
USER_ID = "<int(max=2147483647):user_id>"


def _workspaces() -> list[tuple[str, str]]:
    return viewer().workspaces(Permission.SSO_MANAGE)


def _chosen(slug: str | None) -> str | None:
    """``slug`` if the viewer may manage its single sign-on, else the first such."""
    slugs = [s for s, _ in _workspaces()]
    if slug in slugs:
        return slug
    if slug is not None:
        raise NotFound(f"No workspace '{slug}'")
    return slugs[0] if slugs else None


def _page(
    slug: str | None,
    status: int = 200,
    errors: dict[str, list[str]] | None = None,
    form: dict[str, Any] | None = None,
    notice: str | None = None,
    check: Any = None,
    domain_errors: dict[str, list[str]] | None = None,
    confirm_unlink: int | None = None,
) -> Response:
    workspace = _chosen(slug)
    actor = viewer().actor
    connection = None
    domains: list[Any] = []
    links: list[Any] = []
    if workspace is not None:
        found = services().sso_connections.connections(actor, workspace)
        connection = found[0] if found else None
        domains = services().sso_domains.domains(actor, workspace)
        if connection is not None:
            links = services().sso_connections.links(actor, connection.id)
    unlinking = None
    if confirm_unlink is not None:
        unlinking = next((link for link in links if link.user_id == confirm_unlink), None)
        if unlinking is None:
            raise NotFound(
                f"No account {confirm_unlink} is linked to this single sign-on connection"
            )
    if form is None:
        form = {
            "name": connection.name if connection else "",
            "issuer": connection.issuer if connection else "",
            "client_id": connection.client_id if connection else "",
            "enabled": connection.enabled if connection else True,
            "require_sso": connection.require_sso if connection else False,
            "jit_role": (connection.jit_role or "") if connection else "",
        }
    return _render(
        "workspace_sso.html",
        status=status,
        active="sso",
        workspaces=_workspaces(),
        workspace=workspace,
        connection=connection,
        domains=domains,
        links=links,
        unlinking=unlinking,
        errors=errors or {},
        domain_errors=domain_errors or {},
        form=form,
        notice=notice,
        check=check,
    )


@bp.get("/sso")
def workspace_sso() -> Response:
    return _page(request.args.get("workspace", "")[:100] or None)


@bp.post(f"/sso/{SLUG}/connection")
def workspace_sso_save(slug: str) -> Response:
    """Set up the connection, or change it (an empty secret keeps the stored one)."""
    workspace = _chosen(slug)
    assert workspace is not None
    form = {
        "name": request.form.get("name", "")[:300].strip(),
        "issuer": request.form.get("issuer", "")[:400].strip(),
        "client_id": request.form.get("client_id", "")[:400].strip(),
        "enabled": request.form.get("enabled") == "on",
        "require_sso": request.form.get("require_sso") == "on",
        "jit_role": request.form.get("jit_role", "")[:100].strip(),
    }
    fields = {**form, "jit_role": form["jit_role"] or None}
    secret = request.form.get("client_secret", "")[:2000]
    if secret:
        fields["client_secret"] = secret
    actor = viewer().actor
    existing = services().sso_connections.connections(actor, workspace)
    try:
        if existing:
            args = SsoConnectionUpdateSchema().load(fields)
            services().sso_connections.update(actor, existing[0].id, args)
            notice = "Saved."
        else:
            args = SsoConnectionCreateSchema().load({**fields, "workspace": workspace})
            args.pop("workspace")
            services().sso_connections.create(actor, workspace, args)
            notice = "Set up. Register the redirect URI below at the provider."
    except (ValidationError, InvalidInput) as exc:
        return _page(workspace, 422, _field_errors(exc), form)
    except (Forbidden, Conflict) as exc:
        return _page(workspace, exc.status, {"_form": [str(exc.detail)]}, form)
    return _page(workspace, notice=notice)


@bp.post(f"/sso/{SLUG}/connection/check")
def workspace_sso_check(slug: str) -> Response:
    """Fetch the provider's discovery document now; say whether it answers."""
    workspace = _chosen(slug)
    found = services().sso_connections.connections(viewer().actor, workspace)
    if not found:
        raise NotFound("This workspace has no single sign-on connection")
    check = services().sso_connections.check(viewer().actor, found[0].id)
    return _page(workspace, check=check)


def _connection_id(workspace: str | None) -> int:
    found = services().sso_connections.connections(viewer().actor, workspace)
    if not found:
        raise NotFound("This workspace has no single sign-on connection")
    return int(found[0].id)


@bp.get(f"/sso/{SLUG}/links/{USER_ID}/unlink")
def workspace_sso_unlink_confirm(slug: str, user_id: int) -> Response:
    """The page with a confirmation card naming the person and what happens."""
    workspace = _chosen(slug)
    _connection_id(workspace)
    return _page(workspace, confirm_unlink=user_id)


@bp.post(f"/sso/{SLUG}/links/{USER_ID}/unlink")
def workspace_sso_unlink(slug: str, user_id: int) -> Response:
    """The same service call, checks and audit event (``sso.unlinked``) as the API's
    ``DELETE /sso-connections/{id}/links/{user_id}``."""
    workspace = _chosen(slug)
    done = services().sso_connections.unlink(viewer().actor, _connection_id(workspace), user_id)
    who = f"{done.link.name} <{done.link.email}>"
    ended = f"{done.sessions_ended} session{'' if done.sessions_ended == 1 else 's'}"
    if done.other_ways_in:
        words = (
            f"Unlinked {who}; {ended} started through the connection ended. They can still "
            f"sign in with: {', '.join(done.other_ways_in)}."
        )
    else:
        words = (
            f"Unlinked {who}; {ended} started through the connection ended. They have no "
            "other way in (no password, no passkey): only this connection, which links "
            "them again if the provider still signs them in. Deactivate them to keep them "
            "out."
        )
    return _page(workspace, notice=words)


@bp.post(f"/sso/{SLUG}/domains")
def workspace_sso_claim(slug: str) -> Response:
    workspace = _chosen(slug)
    assert workspace is not None
    typed = request.form.get("domain", "")[:300]
    try:
        args = SsoDomainClaimSchema().load({"workspace": workspace, "domain": typed})
        claim = services().sso_domains.claim(viewer().actor, workspace, args["domain"])
    except (ValidationError, InvalidInput) as exc:
        return _page(workspace, 422, domain_errors=_field_errors(exc))
    except (Forbidden, Conflict) as exc:
        return _page(workspace, exc.status, domain_errors={"domain": [str(exc.detail)]})
    return _page(
        workspace,
        201,
        notice=f"Claimed {claim.domain.domain}: publish its TXT record, then verify it.",
    )


@bp.post(f"/sso/domains/{DOMAIN}/verify")
def workspace_sso_verify(domain_id: int) -> Response:
    """Look the TXT record up now: verify, or check again."""
    claim = services().sso_domains.get(viewer().actor, domain_id)
    workspace = claim.domain.workspace_slug
    try:
        checked = services().sso_domains.verify(viewer().actor, domain_id)
    except RingfenceError as exc:
        if isinstance(exc, NotFound | Forbidden):
            raise
        return _page(workspace, exc.status, domain_errors={"_form": [str(exc.detail)]})
    words = (
        f"{checked.domain.domain} is verified."
        if checked.verified
        else f"{checked.domain.domain} is no longer verified: {checked.domain.last_check}."
    )
    return _page(workspace, notice=words)


@bp.post(f"/sso/domains/{DOMAIN}/delete")
def workspace_sso_release(domain_id: int) -> Response:
    claim = services().sso_domains.get(viewer().actor, domain_id)
    services().sso_domains.release(viewer().actor, domain_id)
    notice = f"Withdrew the claim to {claim.domain.domain}."
    return _page(claim.domain.workspace_slug, notice=notice)
