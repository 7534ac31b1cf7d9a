"""Access reviews and reports in the console: start a campaign, follow its progress,
decide one's queue (keep or revoke with a reason, or keep many at once), close it; the
access reports as tables with a CSV download. Thin handlers over
``gateway.services.reviews`` and ``reports`` with the API's schemas, as the admin API's
``/reviews`` and ``/reports``: the same checks, the same audit events.

Every page is whole (htmx swaps ``#main``), so every action also works without script.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, request, url_for
from marshmallow import ValidationError

from admin_api.reports import ReportQuerySchema, csv_response
from admin_api.reviews import CampaignCreateSchema, CampaignQuerySchema, DecisionSchema
from console.views import (
    PAGE_SIZE,
    _field_errors,
    _page_number,
    _render,
    bp,
    viewer,
)
from gateway.db.models import utcnow
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import Forbidden, InvalidInput, RingfenceError
from gateway.services.base import page_offset
from gateway.services.permissions import Permission
from gateway.services.reports import ReportParams
from gateway.services.reviews import OPEN, UNDECIDED, ItemFilter
from gateway.web.http import MAX_REASON, services

CAMPAIGN_ID = "<int(max=2147483647):campaign_id>"
ITEM_ID = "<int(max=2147483647):item_id>"
DECISION_FILTERS = ("undecided", "keep", "revoke")
MAX_BULK = 100
# Which of the API's report parameters each report reads (admin_api.reports documents
# the same); the form offers only those.
REPORT_PARAMS = {
    "dormant-accounts": ("days",),
    "pending-invitations": ("days",),
    "many-workspaces": ("min_workspaces",),
    "grants-changed": ("since", "until"),
}


def _scopes() -> list[tuple[str, str]]:
    """Where this admin may start a campaign: ``*`` first if they may everywhere."""
    v = viewer()
    choices = list(v.workspaces(Permission.REVIEWS_WRITE))
    if v.can(Permission.REVIEWS_WRITE, ALL_WORKSPACES):
        choices.insert(0, (ALL_WORKSPACES, "Every workspace"))
    return choices


def _queue_count() -> int:
    v = viewer()
    return services().reviews.items(v.actor, ItemFilter(decision=UNDECIDED, mine=True), 0, 1).total


# -- campaigns -----------------------------------------------------------------------


def _reviews_page(
    status: int = 200,
    errors: dict[str, list[str]] | None = None,
    form: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    v = viewer()
    try:
        query = CampaignQuerySchema().load(
            {"status": request.args["status"]} if request.args.get("status") else {}
        )
    except ValidationError:
        query = {}
    page = _page_number()
    result = services().reviews.list(
        v.actor, query.get("status"), page_offset(page, PAGE_SIZE), PAGE_SIZE
    )
    default_deadline = (utcnow() + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M")
    return _render(
        "reviews.html",
        status=status,
        active="reviews",
        campaigns=result.items,
        total=result.total,
        page=page,
        pages=result.pages(PAGE_SIZE),
        status_filter=query.get("status", ""),
        scopes=_scopes(),
        queue=_queue_count(),
        errors=errors or {},
        form=form
        or {"name": "", "workspace": "", "deadline": default_deadline, "on_deadline": "flag"},
        notice=notice,
    )


@bp.get("/reviews")
def reviews() -> Response:
    return _reviews_page()


@bp.post("/reviews")
def review_start() -> Response:
    form = {
        k: request.form.get(k, "")[:400].strip()
        for k in ("name", "workspace", "deadline", "on_deadline")
    }
    try:
        args = CampaignCreateSchema().load({k: value for k, value in form.items() if value})
        view = services().reviews.start(
            viewer().actor, args["name"], args["workspace"], args["deadline"], args["on_deadline"]
        )
    except (ValidationError, InvalidInput) as exc:
        return _reviews_page(422, _field_errors(exc), form)
    campaign = view.campaign
    return _campaign_page(
        campaign.id,
        notice=f"Started {campaign.name}: {view.total} "
        f"{'grant' if view.total == 1 else 'grants'} to review by {_fmt(campaign.deadline)}.",
    )


def _fmt(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _campaign_page(
    campaign_id: int, status: int = 200, notice: str | None = None, confirm: bool = False
) -> Response:
    v = viewer()
    view = services().reviews.get(v.actor, campaign_id)
    decision = request.args.get("decision", "")
    if decision not in DECISION_FILTERS:
        decision = ""
    page = _page_number()
    result = services().reviews.items(
        v.actor,
        ItemFilter(decision=decision or None, campaign_id=campaign_id),
        page_offset(page, PAGE_SIZE),
        PAGE_SIZE,
    )
    args: dict[str, Any] = {"decision": decision} if decision else {}
    return _render(
        "review.html",
        status=status,
        active="reviews",
        view=view,
        c=view.campaign,
        items=result.items,
        total=result.total,
        page=page,
        pages=result.pages(PAGE_SIZE),
        page_url=lambda n: url_for("console.review", campaign_id=campaign_id, **args, page=n),
        decision=decision,
        can_close=view.campaign.status == OPEN
        and v.can(Permission.REVIEWS_WRITE, view.campaign.workspace_slug),
        confirm=confirm,
        notice=notice,
    )


@bp.get(f"/reviews/{CAMPAIGN_ID}")
def review(campaign_id: int) -> Response:
    return _campaign_page(campaign_id)


@bp.get(f"/reviews/{CAMPAIGN_ID}/close")
def review_close_confirm(campaign_id: int) -> Response:
    """What closing now would do, before it is done."""
    return _campaign_page(campaign_id, confirm=True)


@bp.post(f"/reviews/{CAMPAIGN_ID}/close")
def review_close(campaign_id: int) -> Response:
    view = services().reviews.close(viewer().actor, campaign_id)
    what = "revoked" if view.campaign.on_deadline == "revoke" else "flagged"
    count = view.revoked if what == "revoked" else view.flagged
    return _campaign_page(
        campaign_id, notice=f"Closed {view.campaign.name}; {count} undecided {what}."
    )


# -- the reviewer's queue ------------------------------------------------------------


def _queue_page(
    status: int = 200,
    notice: str | None = None,
    errors: dict[str, list[str]] | None = None,
    reasons: dict[str, str] | None = None,
) -> Response:
    v = viewer()
    decision = request.args.get("decision", UNDECIDED)
    if decision not in DECISION_FILTERS:
        decision = UNDECIDED
    page = _page_number()
    result = services().reviews.items(
        v.actor, ItemFilter(decision=decision, mine=True), page_offset(page, PAGE_SIZE), PAGE_SIZE
    )
    return _render(
        "review_queue.html",
        status=status,
        active="reviews",
        items=result.items,
        total=result.total,
        page=page,
        pages=result.pages(PAGE_SIZE),
        page_url=lambda n: url_for("console.review_queue", decision=decision, page=n),
        decision=decision,
        errors=errors or {},
        reasons=reasons or {},
        notice=notice,
        now=utcnow(),
    )


@bp.get("/reviews/queue")
def review_queue() -> Response:
    return _queue_page()


@bp.post(f"/reviews/items/{ITEM_ID}/decision")
def review_decide(item_id: int) -> Response:
    raw = {
        "decision": request.form.get("decision", "")[:20],
        "comment": request.form.get("comment", "")[:4000].strip() or None,
    }
    key = str(item_id)
    try:
        args = DecisionSchema().load(raw)
        if args["decision"] == "revoke" and not args["comment"]:
            # The API takes a revocation without one; the console asks the reviewer to
            # say why, as the audit trail then shows it.
            raise InvalidInput(
                "Say why the access goes", errors={"comment": ["Give a reason to revoke"]}
            )
        item = services().reviews.decide(viewer().actor, item_id, args["decision"], args["comment"])
    except (ValidationError, InvalidInput) as exc:
        problems = [m for ms in _field_errors(exc).values() for m in ms]
        return _queue_page(422, errors={key: problems}, reasons={key: raw["comment"] or ""})
    verb = "Kept" if item.decision == "keep" else "Revoked"
    return _queue_page(
        notice=f"{verb} {item.user_name}'s {item.role} in {item.workspace_slug}"
        + (" (the grant is gone)." if item.decision == "revoke" else ".")
    )


@bp.post("/reviews/queue/keep")
def review_keep_many() -> Response:
    """Keep every ticked grant: one decision (and audit event) each, as if one by one;
    what could not be kept is said, with why."""
    ids: list[int] = []
    for value in request.form.getlist("item")[: MAX_BULK + 1]:
        if not value.isdigit() or int(value) > 2**31 - 1:
            raise InvalidInput("Those are not review items", errors={"item": ["not an id"]})
        ids.append(int(value))
    if not ids:
        return _queue_page(422, errors={"bulk": ["Tick at least one grant to keep"]})
    if len(ids) > MAX_BULK:
        return _queue_page(422, errors={"bulk": [f"At most {MAX_BULK} at once"]})
    comment = request.form.get("comment", "").strip() or None
    if comment is not None and (len(comment) > MAX_REASON or not comment.isprintable()):
        return _queue_page(422, errors={"bulk": ["The reason is too long or not text"]})
    kept, refused, statuses = [], [], set()
    for item_id in dict.fromkeys(ids):
        try:
            item = services().reviews.decide(viewer().actor, item_id, "keep", comment)
            kept.append(f"{item.user_name}'s {item.role} in {item.workspace_slug}")
        except RingfenceError as exc:
            refused.append(f"item {item_id}: {exc.detail or exc.title}")
            statuses.add(exc.status)
    if not kept:
        # The refusals' own status when they agree (an unknown item: 404, as one by one).
        status = statuses.pop() if len(statuses) == 1 else 409
        return _queue_page(status, errors={"bulk": ["Nothing was kept: " + "; ".join(refused)]})
    message = f"Kept {len(kept)}: {', '.join(kept)}."
    errors = {"bulk": ["Not kept: " + "; ".join(refused)]} if refused else {}
    return _queue_page(notice=message, errors=errors)


# -- reports -------------------------------------------------------------------------


@bp.get("/reports")
def reports() -> Response:
    if not viewer().anywhere(Permission.REVIEWS_READ):  # as the service refuses a report
        raise Forbidden(
            f"You need the permission '{Permission.REVIEWS_READ}' in some workspace",
            permission=str(Permission.REVIEWS_READ),
        )
    return _render("reports.html", active="reviews", catalogue=services().reports.catalogue())


@bp.get("/reports/<name>")
def report(name: str) -> Response:
    raw = {
        k: request.args[k]
        for k in ("days", "min_workspaces", "since", "until", "format")
        if request.args.get(k)
    }
    errors: dict[str, list[str]] = {}
    try:
        query = ReportQuerySchema().load(raw)
    except ValidationError as exc:
        errors, query = _field_errors(exc), {"format": "html"}
    params = ReportParams(
        days=query.get("days"),
        min_workspaces=query.get("min_workspaces"),
        since=query.get("since"),
        until=query.get("until"),
    )
    try:
        result = services().reports.run(viewer().actor, name, params)
    except InvalidInput as exc:
        errors.update(_field_errors(exc))
        result = services().reports.run(viewer().actor, name, ReportParams())
    if query.get("format") == "csv" and not errors:
        return csv_response(result)
    shown = {k: request.args.get(k, "") for k in ("days", "min_workspaces", "since", "until")}
    csv_args: dict[str, Any] = {k: v for k, v in shown.items() if v}
    return _render(
        "report.html",
        status=422 if errors else 200,
        active="reviews",
        report=result,
        fields=REPORT_PARAMS.get(name, ()),
        filters=shown,
        errors=errors,
        csv_url=url_for("console.report", name=name, format="csv", **csv_args),
    )
