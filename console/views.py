"""The console's pages: thin handlers over ``gateway.services`` (the same calls, schemas
and permission checks as ``admin_api``), rendering Jinja templates.

A request from htmx (``HX-Request``) gets the fragment that changed; any other request
gets the whole page, so every action also works as a plain form post.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as sso_session
from marshmallow import ValidationError

from admin_api.schemas import (
    AuditQuerySchema,
    EmailSettingsUpdateSchema,
    EmailTestSchema,
    GrantSchema,
    InvitationCreateSchema,
    LoginSchema,
    RolesSchema,
    UserQuerySchema,
    WorkspaceCreateSchema,
    WorkspaceRenameSchema,
)
from console import session as console_session
from gateway.db.models import InvitationStatus, UserStatus, utcnow
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import (
    InvalidInput,
    MfaRequired,
    NotFound,
    RingfenceError,
    SsoRequired,
    Unauthorized,
)
from gateway.logs import request_id
from gateway.services import Actor
from gateway.services.audit import AuditFilter
from gateway.services.audit_words import audit_lines
from gateway.services.base import AuditTarget, page_offset
from gateway.services.grants import require_future_end
from gateway.services.invitations import effective_status
from gateway.services.permissions import Permission
from gateway.services.settings import parse_domains
from gateway.services.users import UserFilter, UserView
from gateway.web.http import MAX_REASON, change_reason, problem_response, services
from gateway.web.sso import ERROR_KEY as SSO_ERROR_KEY
from gateway.web.sso import exchange_code

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

PAGE_SIZE = 25
MAX_PAGE = 100_000
# Only our own files: no inline script or style anywhere in the console.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
PUBLIC_ENDPOINTS = {"console.sign_in", "console.static", "console.sso_start", "console.sso_done"}
PUBLIC_ENDPOINTS |= {"console.sign_in_code"}  # the second step (console/mfa.py)
# Passkeys' sign-in ceremonies, passwordless and as the second step (console/passkeys.py).
PUBLIC_ENDPOINTS |= {"console.passkey_sign_in_options", "console.passkey_sign_in"}
PUBLIC_ENDPOINTS |= {"console.passkey_second_options", "console.passkey_second"}


# -- the signed-in admin ---------------------------------------------------------------


@dataclass
class Viewer:
    """The signed-in admin and what they may do, asked of the same authorizer the
    services use (the services check again on every change)."""

    actor: Actor
    user_id: int
    name: str
    email: str
    session_id: str

    def can(self, permission: Permission, workspace: str) -> bool:
        return services().authorizer.can(self.actor, permission, workspace)

    def can_all(self, permission: Permission, workspaces: Iterable[str]) -> bool:
        return services().authorizer.can_all(self.actor, permission, workspaces)

    def where(self, permission: Permission) -> set[str] | None:
        key = f"where:{permission}"
        cache = g.setdefault("console_where", {})
        if key not in cache:
            cache[key] = services().authorizer.workspaces_where(self.actor, permission)
        return cache[key]

    def anywhere(self, permission: Permission) -> bool:
        return self.where(permission) != set()

    def workspaces(self, permission: Permission) -> list[tuple[str, str]]:
        """(slug, name) of the workspaces where the admin holds ``permission``."""
        cache = g.setdefault("console_workspaces", {})
        if permission not in cache:
            where = self.where(permission)
            page = services().workspaces.list(self.actor, 0, 1000)
            cache[permission] = [
                (w.slug, w.name) for w in page.items if where is None or w.slug in where
            ]
        return list(cache[permission])


def viewer() -> Viewer:
    return g.console_viewer


@bp.before_request
def _sign_in_and_csrf() -> Response | None:
    if request.endpoint == "console.static":
        return None
    session_id = console_session.session_id_from_cookie()
    if request.endpoint not in PUBLIC_ENDPOINTS:
        user = None
        if session_id:
            try:
                user = services().auth.session_user(session_id)
            except Unauthorized:
                user = None
        if user is None:
            return _to_sign_in()
        assert session_id is not None
        g.console_viewer = Viewer(
            # As the API's current_actor builds it: audit events of console changes say
            # where they came from, which request made them and the reason given.
            Actor(
                user.id,
                f"{user.name} <{user.email}>",
                request_id(),
                source_address=request.remote_addr,
                reason=_change_reason(),
            ),
            user.id,
            user.name,
            user.email,
            session_id,
        )
    if request.method not in {"GET", "HEAD", "OPTIONS"}:
        console_session.require_csrf(g.console_viewer.session_id if "console_viewer" in g else None)
    return None


def _change_reason() -> str | None:
    """The reason typed in a form's optional ``reason`` field, else the
    ``X-Ringfence-Reason`` header (as the API takes it); InvalidInput if unprintable or
    longer than the API allows."""
    typed = request.form.get("reason", "").strip() if request.method == "POST" else ""
    if not typed:
        return change_reason()
    if len(typed) > MAX_REASON or not typed.isprintable():
        raise InvalidInput(
            f"The reason must be printable text of at most {MAX_REASON} characters",
            errors={"reason": ["invalid"]},
        )
    return typed


def _to_sign_in() -> Response:
    target = url_for("console.sign_in")
    if request.method == "GET" and request.endpoint and request.endpoint != "console.index":
        target += "?" + urlencode({"next": request.full_path.rstrip("?")})
    if _htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, 303)  # type: ignore[return-value]


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = "HX-Request, Cookie"
    return response


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    def csrf() -> str:
        if "console_viewer" in g:
            return console_session.csrf_token(g.console_viewer.session_id)
        return str(g.get("console_pre_token", ""))

    return {
        "csrf": csrf,
        "P": Permission,
        "ALL": ALL_WORKSPACES,
        "fmt_time": _fmt_time,
        "fmt_roles": _fmt_roles,
        "sso_enabled": False,
    }


def _fmt_time(value: datetime | None) -> str:
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _fmt_roles(roles: Any) -> str:
    """An audit snapshot's roles: a list, or workspace → list."""
    if isinstance(roles, dict):
        return "; ".join(f"{ws}: {_fmt_roles(r)}" for ws, r in roles.items()) or "none"
    if isinstance(roles, list):
        return ", ".join(map(str, roles)) or "none"
    return str(roles)


def _htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _render(template: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("viewer", g.get("console_viewer"))
    context.setdefault("nav", _nav() if "console_viewer" in g else [])
    return make_response(render_template(f"console/{template}", **context), status)


def _nav() -> list[tuple[str, str, str]]:
    v = viewer()
    items = []
    if v.anywhere(Permission.USERS_READ):
        items.append(("console.users", "Users", "users"))
    if v.anywhere(Permission.WORKSPACES_READ):
        items.append(("console.workspaces", "Workspaces", "workspaces"))
    if v.anywhere(Permission.ROLE_MANAGEMENT_READ):
        items.append(("console.roles", "Roles", "roles"))
    if v.anywhere(Permission.REVIEWS_READ) or v.anywhere(Permission.ROLE_MANAGEMENT_WRITE):
        items.append(("console.reviews", "Reviews", "reviews"))
    if v.anywhere(Permission.AUDIT_READ):
        items.append(("console.audit", "Audit", "audit"))
    if v.anywhere(Permission.DIRECTORY_MANAGE):
        items.append(("console.directory", "Directory", "directory"))
    if v.anywhere(Permission.SSO_MANAGE):
        items.append(("console.workspace_sso", "SSO", "sso"))
    if v.anywhere(Permission.EVENT_STREAMS_WRITE):
        items.append(("console.event_streams", "Log streams", "event_streams"))
    if v.can(Permission.SETTINGS_WRITE, ALL_WORKSPACES):
        items.append(("console.settings", "Settings", "settings"))
    return items


@bp.errorhandler(RingfenceError)
def _error(error: RingfenceError) -> Response:
    """Refusals become a message on the page (htmx shows it in the message area); a
    script's JSON request (passkeys' ceremonies) gets them as problem+json."""
    if request.is_json:
        retry = error.extensions.get("retry_after")
        return problem_response(error.to_problem(), {"Retry-After": str(retry)} if retry else None)
    if isinstance(error, Unauthorized):
        return _to_sign_in()
    message = error.detail or error.title
    if _htmx():
        response = _render("_message.html", status=error.status, kind="error", message=message)
        response.headers["HX-Retarget"] = "#messages"
        response.headers["HX-Reswap"] = "innerHTML"
        response.headers["HX-Reselect"] = ".message"  # whatever hx-select the form had
        return response
    return _render("error.html", status=error.status, title=error.title, message=message)


def _field_errors(error: ValidationError | InvalidInput) -> dict[str, list[str]]:
    """Field → messages, from a marshmallow error or a service's ``errors`` extension."""
    raw: Any = (
        error.messages if isinstance(error, ValidationError) else error.extensions.get("errors", {})
    )
    errors: dict[str, list[str]] = {}
    for field, messages in (raw or {}).items() if isinstance(raw, dict) else []:
        errors[str(field)] = _flatten(messages)
    if isinstance(error, InvalidInput) and not errors:
        errors["_form"] = [error.detail or error.title]
    return errors


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [m for value in messages.values() for m in _flatten(value)]
    if isinstance(messages, list):
        return [m for value in messages for m in _flatten(value)]
    return [str(messages)]


# -- signing in and out --------------------------------------------------------------


def _safe_next(target: str | None, otherwise: str = "console.index") -> str:
    """``target`` if it is a console page, else the page of endpoint ``otherwise``: for a
    sign-in, the first page the person may use (``index``: not Users for someone who
    may not read people)."""
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return url_for(otherwise)


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Response:
    if request.method == "GET" and console_session.session_id_from_cookie():
        try:
            services().auth.session_user(console_session.session_id_from_cookie() or "")
            return redirect(_safe_next(request.args.get("next")), 303)  # type: ignore[return-value]
        except Unauthorized:
            pass
    errors: dict[str, list[str]] = {}
    email = ""
    status = 200
    route = None
    if request.method == "POST":
        email = request.form.get("email", "")[:320]
        # A verified domain's person (gateway.services.sso_domains) who typed no password
        # goes to their workspace's single sign-on; a password is refused where it is
        # required (the service says so, by the domain alone).
        route = services().sso_domains.route_for(email) if "@" in email else None
        if route is not None and not request.form.get("password"):
            target = url_for(
                "console.sso_start", connection=route.connection_id, login_hint=email.strip()
            )
            return redirect(target, 303)  # type: ignore[return-value]
        try:
            args = LoginSchema().load(
                {"email": email, "password": request.form.get("password", "")}
            )
            issued = services().auth.login(
                args["email"], args["password"], request.remote_addr or "", request_id()
            )
            _, session_id = services().auth.authenticate(issued.access_token)
            assert session_id is not None
            response = redirect(_safe_next(request.form.get("next")), 303)
            console_session.start_session(response, session_id)  # type: ignore[arg-type]
            return response  # type: ignore[return-value]
        except MfaRequired as exc:  # a right password: on to the code (console/mfa.py)
            ticket = str(exc.extensions["mfa_token"])
            # ... unless this browser is one the person asked to remember.
            skip = services().remembered_devices.skip_second_step(
                ticket,
                console_session.remembered_token(),
                request.remote_addr or "",
                request_id(),
            )
            if skip.issued is not None:
                _, session_id = services().auth.authenticate(skip.issued.access_token)
                assert session_id is not None
                response = redirect(_safe_next(request.form.get("next")), 303)
                console_session.start_session(response, session_id)  # type: ignore[arg-type]
                return response  # type: ignore[return-value]
            target = url_for("console.sign_in_code", next=request.form.get("next") or None)
            response = redirect(target, 303)
            console_session.set_mfa_ticket(response, ticket)  # type: ignore[arg-type]
            if skip.forget_cookie:
                console_session.forget_remembered(response)  # type: ignore[arg-type]
            return response  # type: ignore[return-value]
        except ValidationError as exc:
            errors = _field_errors(exc)
            status = 422
        except RingfenceError as exc:
            # One message whatever went wrong, as the API's: nothing about who exists.
            errors = {"_form": [exc.detail or exc.title]}
            status = exc.status
            if isinstance(exc, SsoRequired) and route is not None:
                return _sign_in_page(errors, status, email, route.connection_id)
    return _sign_in_page(errors, status, email)


def _sign_in_page(
    errors: dict[str, list[str]],
    status: int = 200,
    email: str = "",
    sso_connection: int | None = None,
) -> Response:
    token, new_cookie = console_session.pre_session_token()
    g.console_pre_token = token
    response = _render(
        "sign_in.html",
        status=status,
        errors=errors,
        email=email,
        next=request.values.get("next", ""),
        sso_enabled=bool(getattr(console_session.settings(), "oidc_issuer", "")),
        sso_connection=sso_connection,
    )
    if new_cookie:
        console_session.set_pre_session(response, new_cookie)
    return response


@bp.get("/sso/start")
def sso_start() -> Response:
    """Single sign-on into the console: bind this browser to the sign-in (a random,
    HttpOnly cookie; its digest travels the round trip) and go to the provider."""
    connection = request.args.get("connection", type=int)  # a workspace's own
    if connection is None and not console_session.settings().oidc_issuer:
        return _sign_in_page({"_form": ["Single sign-on is not configured here"]}, 404)
    value, binding = console_session.start_sso()
    target = "/auth/sso/login?" + urlencode({"next": "console", "binding": binding})
    if connection is not None:
        hint = request.args.get("login_hint", "")[:320]
        query = {"next": "console", "binding": binding, **({"login_hint": hint} if hint else {})}
        target = f"/auth/sso/connections/{connection}/login?" + urlencode(query)
    response = redirect(target, 303)
    console_session.set_sso_binding(response, value)  # type: ignore[arg-type]
    return response  # type: ignore[return-value]


@bp.get("/sso/done")
def sso_done() -> Response:
    """The end of the round trip: the one-time code becomes a console session, exactly
    as a password sign-in's tokens do, only in the browser that started it."""
    refusal = sso_session.pop(SSO_ERROR_KEY, None)
    bound = console_session.sso_binding_matches(request.args.get("binding", "")[:128])
    code = request.args.get("code", "")[:200]
    message, session_id = None, ""
    if refusal:
        message, status = str(refusal), 403
    elif not bound:
        message, status = (
            "This sign-in was not started in this browser, or took too long; start again",
            400,
        )
    elif not code:
        message, status = "The sign-in did not finish; start again", 400
    else:
        try:
            issued = exchange_code(code)
            _, started = services().auth.authenticate(issued.access_token)
            assert started is not None
            session_id = started
        except RingfenceError as exc:
            message, status = exc.detail or exc.title, exc.status
    if message is not None:
        response = _sign_in_page({"_form": [message]}, status)
    else:
        response = redirect(url_for("console.index"), 303)  # type: ignore[assignment]
        console_session.start_session(response, session_id)
    console_session.end_sso(response)  # the binding is spent either way
    return response


@bp.post("/sign-out")
def sign_out() -> Response:
    services().auth.logout(viewer().session_id, request_id())
    response = redirect(url_for("console.sign_in"), 303)
    console_session.end_session(response)  # type: ignore[arg-type]
    if _htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = url_for("console.sign_in")
        console_session.end_session(response)
    return response  # type: ignore[return-value]


@bp.get("/")
def index() -> Response:
    nav = _nav()
    return redirect(url_for(nav[0][0]) if nav else url_for("console.account"), 303)  # type: ignore[return-value]


def no_workspaces_yet() -> bool:
    """Whether there is no workspace to invite anyone into and this admin could create
    one (an invite form then says so, and links to it, rather than read as a refusal)."""
    v = viewer()
    return (
        v.anywhere(Permission.WORKSPACES_CREATE)
        and services().workspaces.list(v.actor, 0, 1).total == 0
    )


# -- users ---------------------------------------------------------------------------


@dataclass
class Row:
    """One person as the Users table shows them, with the actions this admin may take."""

    view: UserView
    invitation_status: str | None
    actions: set[str]


def _row(view: UserView) -> Row:
    v = viewer()
    user = view.user
    invitation = view.invitation
    status = str(effective_status(invitation)) if invitation else None
    actions: set[str] = set()
    if user.id != v.user_id:
        # A pending person's row carries their invitation's buttons: those the
        # invitation service would carry out.
        if user.status == UserStatus.PENDING and invitation is not None:
            actions |= services().invitations.allowed_actions(v.actor, invitation)
        if user.status != UserStatus.PENDING and any(
            v.can(Permission.ROLE_MANAGEMENT_WRITE, ws) for ws in _manageable_workspaces(view)
        ):
            actions.add("roles")
        # Deactivate, reactivate and remove: exactly what the user service would carry
        # out (the permissions, every role granted being one this admin could grant,
        # and a workspace's last owner or the last super admin kept).
        actions |= services().users.allowed_actions(v.actor, view)
    return Row(view, status, actions)


def _manageable_workspaces(view: UserView) -> list[str]:
    """Workspaces where this admin may change the person's roles: their own ones where
    they hold role_management:write, and ``*`` if the person has roles everywhere."""
    v = viewer()
    slugs = [slug for slug, _ in v.workspaces(Permission.ROLE_MANAGEMENT_WRITE)]
    if ALL_WORKSPACES in view.roles and v.can(Permission.ROLE_MANAGEMENT_WRITE, ALL_WORKSPACES):
        slugs.insert(0, ALL_WORKSPACES)
    return slugs


def _user_query() -> tuple[dict[str, Any], dict[str, list[str]]]:
    raw = {k: request.args[k] for k in ("status", "workspace", "role", "q") if request.args.get(k)}
    try:
        return UserQuerySchema().load(raw), {}
    except ValidationError as exc:
        return {}, _field_errors(exc)


def _page_number() -> int:
    """The ``page`` asked for, from 1 to MAX_PAGE (1 if it is not a number)."""
    try:
        return min(max(int(request.args.get("page", "1")), 1), MAX_PAGE)
    except ValueError:
        return 1


def _users_context() -> dict[str, Any]:
    query, errors = _user_query()
    page = _page_number()
    where = UserFilter(
        status=query.get("status"),
        workspace=query.get("workspace"),
        role=query.get("role"),
        search=query.get("q"),
    )
    result = services().users.list(viewer().actor, where, page_offset(page, PAGE_SIZE), PAGE_SIZE)
    args: dict[str, Any] = {k: v for k, v in request.args.items() if k != "page" and v}
    workspaces = viewer().workspaces(Permission.USERS_READ)
    # Roles given or taken per workspace (bulk); the filter also finds installation-wide
    # ones (held in every workspace) for those who see everyone.
    roles = sorted({r for slug, _ in workspaces for r in services().roles.roles_in(slug)})
    everywhere = viewer().can(Permission.USERS_READ, ALL_WORKSPACES)
    filter_roles = sorted(
        {*roles, *(services().roles.roles_in(ALL_WORKSPACES) if everywhere else [])}
    )
    return {
        "rows": [_row(view) for view in result.items],
        "total": result.total,
        "page": page,
        "pages": result.pages(PAGE_SIZE),
        "page_url": lambda n: url_for("console.users", **args, page=n),
        "filters": {k: request.args.get(k, "") for k in ("status", "workspace", "role", "q")},
        "filter_errors": errors,
        "workspace_choices": workspaces,
        "role_choices": filter_roles,
        "bulk_role_choices": roles,
        "statuses": [s.value for s in UserStatus],
        "can_invite": viewer().anywhere(Permission.USERS_INVITE),
    }


@bp.get("/users")
def users() -> Response:
    context = _users_context()
    if _htmx() and request.headers.get("HX-Target") == "users-results":
        return _render("_users_results.html", **context)
    return _render("users.html", active="users", **context)


def _panel(template: str, status: int = 200, **context: Any) -> Response:
    """A panel (form, confirmation) above the table; a whole page without htmx."""
    if _htmx():
        return _render(template, status=status, **context)
    return _render("panel_page.html", status=status, panel=template, active="users", **context)


def _after_change(
    message: str,
    user_id: int | None = None,
    removed: int | None = None,
    refresh: bool = False,
    kind: str = "ok",
) -> Response:
    """What a change answers: with htmx the changed row, an emptied panel and a message
    (out-of-band swaps); without, the Users page with the message. ``kind`` "error"
    announces what went wrong with a change that was made (an invitation whose email
    failed), as an alert, not a success."""
    if not _htmx():
        return _render(
            "users.html", active="users", notice=message, notice_kind=kind, **_users_context()
        )
    row = None
    if user_id is not None:
        try:
            row = _row(services().users.get(viewer().actor, user_id))
        except NotFound:
            removed = user_id
    response = _render(
        "_changed.html", message=message, kind=kind, row=None if refresh else row, removed=removed
    )
    # A new row, or one fewer: the table (and its count of people) reloads itself with
    # the filters in use; the count went stale after a removal.
    if refresh or removed is not None:
        response.headers["HX-Trigger"] = "users-changed"
    return response


# invite


def _invite_form_context(
    form: dict[str, Any] | None = None, errors: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    v = viewer()
    choices = []
    for slug, name in v.workspaces(Permission.USERS_INVITE):
        choices.append((slug, name, services().roles.choices(v.actor, slug)))
    return {
        "form": form or {"name": "", "email": "", "roles": []},
        "errors": errors or {},
        "choices": choices,
        "allowed_domains": services().settings.email().allowed_domains,
        "no_workspaces_yet": not choices and no_workspaces_yet(),
    }


@bp.get("/users/invite")
def invite_form() -> Response:
    return _panel("_invite.html", **_invite_form_context())


@bp.post("/users/invite")
def invite() -> Response:
    picked = request.form.getlist("roles")[:100]
    form: dict[str, Any] = {
        "name": request.form.get("name", "")[:400],
        "email": request.form.get("email", "")[:400],
        "roles": picked,
    }
    roles = []
    for value in picked:
        workspace, _, role = value.partition(":")
        roles.append({"workspace": workspace, "role": role})
    try:
        args = InvitationCreateSchema().load(
            {"name": form["name"].strip(), "email": form["email"].strip(), "roles": roles}
        )
        invitation = services().invitations.create(
            viewer().actor, args["email"], args["name"], args["roles"]
        )
    except (ValidationError, InvalidInput) as exc:
        errors = _field_errors(exc)
        if "role" in errors:  # the service names the role; the form calls them roles
            errors.setdefault("roles", []).extend(errors.pop("role"))
        return _panel("_invite.html", status=422, **_invite_form_context(form, errors))
    if effective_status(invitation) == InvitationStatus.FAILED:
        return _after_change(
            f"Invited {invitation.name} <{invitation.email}>, but the invitation email could "
            "not be sent; their row says why. Resend it once email works.",
            invitation.user_id,
            refresh=True,
            kind="error",
        )
    return _after_change(
        f"Invited {invitation.name} <{invitation.email}>; "
        f"invitation {effective_status(invitation)}.",
        invitation.user_id,
        refresh=True,
    )


# invitations


@bp.post("/invitations/<int(max=2147483647):invitation_id>/resend")
def resend(invitation_id: int) -> Response:
    invitation = services().invitations.resend(viewer().actor, invitation_id)
    return _after_change(
        f"Sent a new invitation link to {invitation.email}; the old link no longer works.",
        invitation.user_id,
    )


@bp.post("/invitations/<int(max=2147483647):invitation_id>/revoke")
def revoke(invitation_id: int) -> Response:
    invitation = services().invitations.revoke(viewer().actor, invitation_id)
    return _after_change(
        f"Revoked the invitation of {invitation.email}; its link no longer works.",
        invitation.user_id,
    )


# status and removal


@bp.post("/users/<int(max=2147483647):user_id>/deactivate")
def deactivate(user_id: int) -> Response:
    view = services().users.deactivate(viewer().actor, user_id)
    return _after_change(
        f"Deactivated {view.user.name}: every check denies and their sessions ended.", user_id
    )


@bp.post("/users/<int(max=2147483647):user_id>/reactivate")
def reactivate(user_id: int) -> Response:
    view = services().users.reactivate(viewer().actor, user_id)
    return _after_change(f"Reactivated {view.user.name} with the roles they had.", user_id)


@bp.get("/users/<int(max=2147483647):user_id>/remove")
def remove_confirm(user_id: int) -> Response:
    return _panel("_remove.html", row=_row(services().users.get(viewer().actor, user_id)))


@bp.post("/users/<int(max=2147483647):user_id>/remove")
def remove(user_id: int) -> Response:
    view = services().users.get(viewer().actor, user_id)
    services().users.remove(viewer().actor, user_id)
    return _after_change(
        f"Removed {view.user.name} <{view.user.email}>; the audit history is kept.",
        removed=user_id,
    )


# roles


def _until_field(value: datetime | None) -> str:
    """A role's end as its ``Until`` field shows it (``datetime-local``, UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if value else ""


def _where(workspace: str) -> str:
    return "every workspace" if workspace == ALL_WORKSPACES else workspace


@dataclass
class Ends:
    """The ``Until`` fields of one workspace's roles form, read: the ends to set (role →
    end, None: no end; a held role whose field is as shown keeps its end), the fields as
    typed (to show again) and the problems, beside each role's field."""

    ends: dict[str, datetime | None]
    typed: dict[str, str]
    errors: dict[str, list[str]]


def _picked_ends(view: UserView, workspace: str, wanted: list[str]) -> Ends:
    held = view.ends_in(workspace)
    current = view.roles.get(workspace, [])
    read = Ends({}, {}, {})
    for role in wanted:
        text = request.form.get(f"until-{role}", "")[:64].strip()
        read.typed[role] = text
        if role in current and text == _until_field(held.get(role)):
            continue  # untouched: the end it has (to the second) stays
        if not text:
            read.ends[role] = None
            continue
        try:  # parsed as the API parses expires_at (no zone: UTC)
            args = GrantSchema().load({"workspace": workspace, "role": role, "expires_at": text})
        except ValidationError:
            read.errors[role] = ["Not a date and time: write it as YYYY-MM-DD HH:MM, in UTC."]
            continue
        read.ends[role] = args["expires_at"]
    return read


def _end_problem(error: InvalidInput) -> str:
    """The grant service's refusal of an end, in the words the field shows."""
    if "future" in str(_flatten(error.extensions.get("errors", {}))):
        return f"The end must be in the future (it is {_fmt_time(utcnow())} now)."
    return error.detail or error.title


def _timing(view: UserView, workspace: str, read: Ends) -> list[str]:
    """The ends a save would set, in words: "editor in acme until 2027-01-31 17:00 UTC"."""
    held = view.ends_in(workspace)
    current = view.roles.get(workspace, [])
    lines = []
    for role, at in sorted(read.ends.items()):
        where = _where(workspace)
        was = ""
        if role in current:
            if at == held.get(role):
                continue
            was = f" (was until {_fmt_time(held[role])})" if role in held else " (was: no end)"
        if at is not None:
            lines.append(f"{role} in {where} until {_fmt_time(at)}{was}")
        elif role in current:
            lines.append(f"{role} in {where}: no end any more{was}")
    return lines


def _roles_panel_context(
    user_id: int,
    previews: dict[str, Any] | None = None,
    picked: dict[str, list[str]] | None = None,
    errors: dict[str, list[str]] | None = None,
    read: dict[str, Ends] | None = None,
) -> dict[str, Any]:
    view = services().users.get(viewer().actor, user_id)
    sections = []
    for slug in _manageable_workspaces(view):
        current = view.roles.get(slug, [])
        held = view.ends_in(slug)
        typed = read[slug] if read and slug in read else None
        sections.append(
            {
                "slug": slug,
                "current": current,
                # Role → its end, in the "now:" line and pre-filled in its Until field.
                "ends": held,
                "until": {
                    **{role: _until_field(at) for role, at in held.items()},
                    **(typed.typed if typed else {}),
                },
                "until_errors": typed.errors if typed else {},
                "timing": _timing(view, slug, typed) if typed else [],
                "picked": (picked or {}).get(slug, current),
                # Each role with its description and whether this admin may grant (or
                # take) it there.
                "roles": services().roles.choices(viewer().actor, slug),
                "preview": (previews or {}).get(slug),
            }
        )
    return {"row": _row(view), "sections": sections, "errors": errors or {}}


def _picked_roles(user_id: int, workspace: str) -> tuple[UserView, list[str], list[str]]:
    """(the person, current roles, roles ticked in the form), validated as the API's
    RolesSchema."""
    view = services().users.get(viewer().actor, user_id)
    try:
        args = RolesSchema().load({"roles": request.form.getlist("roles")[:60]})
    except ValidationError as exc:
        raise InvalidInput("Those are not role names", errors=exc.messages) from exc
    return view, view.roles.get(workspace, []), sorted(set(args["roles"]))


@bp.get("/users/<int(max=2147483647):user_id>/roles")
def roles_panel(user_id: int) -> Response:
    return _panel("_roles.html", **_roles_panel_context(user_id))


@bp.post("/users/<int(max=2147483647):user_id>/roles/<workspace>/preview")
def roles_preview(user_id: int, workspace: str) -> Response:
    view, current, wanted = _picked_roles(user_id, workspace)
    preview = services().roles.preview(viewer().actor, workspace, current, wanted)
    read = _picked_ends(view, workspace, wanted)
    for role, at in read.ends.items():
        try:  # the grant service's rule for an end, asked before anything is saved
            require_future_end(at, role)
        except InvalidInput as exc:
            read.errors[role] = [_end_problem(exc)]
    if _htmx():
        return _render(
            "_preview.html",
            preview=preview,
            slug=workspace,
            timing=_timing(view, workspace, read),
            until_errors=read.errors,
        )
    return _panel(
        "_roles.html",
        status=422 if read.errors else 200,
        **_roles_panel_context(
            user_id, {workspace: preview}, {workspace: wanted}, read={workspace: read}
        ),
    )


@bp.post("/users/<int(max=2147483647):user_id>/roles/<workspace>")
def roles_save(user_id: int, workspace: str) -> Response:
    view, current, wanted = _picked_roles(user_id, workspace)
    read = _picked_ends(view, workspace, wanted)
    ends_before = view.ends_in(workspace)  # read now: the person's grants change below
    if not read.errors:
        try:
            services().grants.replace(viewer().actor, user_id, workspace, wanted, read.ends)
        except InvalidInput as exc:
            role = exc.extensions.get("role")
            if role not in wanted or "expires_at" not in exc.extensions.get("errors", {}):
                raise
            read.errors[role] = [_end_problem(exc)]
    if read.errors:  # nothing saved: the form again, each problem beside its field
        return _panel(
            "_roles.html",
            status=422,
            **_roles_panel_context(user_id, None, {workspace: wanted}, read={workspace: read}),
        )
    after = services().users.get(viewer().actor, user_id)
    ends = after.ends_in(workspace)

    def said(roles: list[str], held: dict[str, datetime]) -> str:
        return ", ".join(f"{r} (until {_fmt_time(held[r])})" if r in held else r for r in roles)

    message = (
        f"{after.user.name} now has {said(wanted, ends) or 'no roles'} in {_where(workspace)} "
        f"(before: {said(current, ends_before) or 'none'})."
    )
    return _after_change(message, user_id)


# -- workspaces ----------------------------------------------------------------------


def _workspaces_page(
    status: int = 200,
    errors: dict[str, list[str]] | None = None,
    form: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    v = viewer()
    page = services().workspaces.list(v.actor, 0, 1000)
    rows = [
        (w, v.can(Permission.WORKSPACES_UPDATE, w.slug), v.can(Permission.USERS_READ, w.slug))
        for w in page.items
    ]
    return _render(
        "workspaces.html",
        status=status,
        active="workspaces",
        rows=rows,
        can_create=v.can(Permission.WORKSPACES_CREATE, ALL_WORKSPACES),
        # Members where they may read people; delete (console/workspace_pages.py) where allowed.
        counts=services().users.count_by_workspace(v.actor, [w.slug for w in page.items]),
        deletable={w.slug for w in page.items if v.can(Permission.WORKSPACES_DELETE, w.slug)},
        errors=errors or {},
        form=form or {"slug": "", "name": ""},
        notice=notice,
    )


@bp.get("/workspaces")
def workspaces() -> Response:
    return _workspaces_page()


@bp.post("/workspaces")
def workspace_create() -> Response:
    form = {"slug": request.form.get("slug", "")[:100], "name": request.form.get("name", "")[:400]}
    try:
        args = WorkspaceCreateSchema().load({k: v.strip() for k, v in form.items()})
        workspace = services().workspaces.create(viewer().actor, args["slug"], args["name"])
    except (ValidationError, InvalidInput) as exc:
        return _workspaces_page(422, _field_errors(exc), form)
    return _workspaces_page(notice=f"Created workspace {workspace.name} ({workspace.slug}).")


@bp.post("/workspaces/<slug>/rename")
def workspace_rename(slug: str) -> Response:
    name = request.form.get("name", "")[:400]
    try:
        args = WorkspaceRenameSchema().load({"name": name.strip()})
        workspace = services().workspaces.rename(viewer().actor, slug, args["name"])
    except (ValidationError, InvalidInput) as exc:
        errors = {f"rename-{slug}": _flatten(_field_errors(exc))}
        return _workspaces_page(422, errors)
    return _workspaces_page(notice=f"Renamed {workspace.slug} to {workspace.name}.")


# -- roles ---------------------------------------------------------------------------


@bp.get("/roles")
def roles() -> Response:
    v = viewer()
    search = request.args.get("q", "")[:200]
    context: dict[str, Any] = {
        # Grouped and filtered by the service (name, description or permission).
        "groups": services().roles.browse(v.actor, search),
        "catalogue": services().roles.catalogue(v.actor),
        "search": search,
    }
    if _htmx() and request.headers.get("HX-Target") == "roles-results":
        return _render("_roles_results.html", **context)
    return _render(
        "roles.html",
        active="roles",
        custom_in=v.workspaces(Permission.ROLE_MANAGEMENT_READ),
        **context,
    )


# -- audit ---------------------------------------------------------------------------

AUDIT_FIELDS = ("actor_id", "target_type", "target_id", "workspace", "action", "since", "until")


@bp.get("/audit")
def audit() -> Response:
    v = viewer()
    raw = {k: request.args[k] for k in AUDIT_FIELDS if request.args.get(k)}
    errors: dict[str, list[str]] = {}
    try:
        query = AuditQuerySchema().load(raw)
    except ValidationError as exc:
        errors, query = _field_errors(exc), {}
    page = _page_number()
    result = services().audit.list(
        v.actor, AuditFilter(**query), page_offset(page, PAGE_SIZE), PAGE_SIZE
    )
    people = services().users.list(v.actor, UserFilter(), 0, 500).items
    args: dict[str, Any] = {k: value for k, value in request.args.items() if k != "page" and value}
    context: dict[str, Any] = {
        # One line per change: an invitation to two workspaces is one line naming both.
        "lines": audit_lines(result.items),
        "total": result.total,
        "page": page,
        "pages": result.pages(PAGE_SIZE),
        "page_url": lambda n: url_for("console.audit", **args, page=n),
        "filters": {k: request.args.get(k, "") for k in AUDIT_FIELDS},
        "errors": errors,
        "people": people,
        "workspace_choices": v.workspaces(Permission.AUDIT_READ),
        # Every kind of target the services write (their registry), none forgotten.
        "target_types": [t.value for t in AuditTarget],
    }
    if _htmx() and request.headers.get("HX-Target") == "audit-results":
        return _render("_audit_results.html", **context)
    return _render("audit.html", active="audit", **context)


# -- settings ------------------------------------------------------------------------


def _settings_page(status: int = 200, **context: Any) -> Response:
    email = services().settings.read_email(viewer().actor)
    context.setdefault("errors", {})
    context.setdefault("form", None)
    return _render("settings.html", status=status, active="settings", email=email, **context)


@bp.get("/settings")
def settings() -> Response:
    return _settings_page()


def email_form() -> tuple[dict[str, str], dict[str, Any]]:
    """The email settings form as sent (to show again) and as the API's changes."""
    form = {
        k: request.form.get(k, "")[:1100]
        for k in (
            "smtp_host",
            "smtp_port",
            "smtp_security",
            "smtp_username",
            "smtp_password",
            "smtp_timeout",
            "mail_from",
            "allowed_domains",
        )
    }
    changes: dict[str, Any] = {k: v.strip() for k, v in form.items() if k != "allowed_domains"}
    # The password is write-only: an empty field keeps it, the checkbox clears it.
    if not changes["smtp_password"]:
        changes.pop("smtp_password")
    if request.form.get("clear_password"):
        changes["smtp_password"] = ""
    for number in ("smtp_port", "smtp_timeout"):
        if not changes[number]:
            changes.pop(number)
    changes["allowed_domains"] = parse_domains(form["allowed_domains"])
    return form, changes


@bp.post("/settings/email")
def settings_save() -> Response:
    form, changes = email_form()
    try:
        args = EmailSettingsUpdateSchema().load(changes)
        services().settings.update_email(viewer().actor, args)
    except (ValidationError, InvalidInput) as exc:
        return _settings_page(422, errors=_field_errors(exc), form=form)
    return _settings_page(notice="Email settings saved.")


@bp.post("/settings/email/test")
def settings_test() -> Response:
    to = request.form.get("to", "")[:400].strip()
    try:
        args = EmailTestSchema().load({"to": to})
    except ValidationError as exc:
        errors = {"to": _flatten(_field_errors(exc))}
        if _htmx():
            return _render("_test_outcome.html", status=422, errors=errors, to=to, outcome=None)
        return _settings_page(422, errors=errors, to=to)
    outcome = services().settings.send_test_email(viewer().actor, args["to"])
    if _htmx():
        return _render("_test_outcome.html", outcome=outcome, to=to, errors={})
    return _settings_page(outcome=outcome, to=to)
