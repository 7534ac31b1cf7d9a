"""Access reviews: campaigns, their progress, reviewers' items and decisions."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from admin_api.pagination import items, window
from admin_api.schemas import NAME, SLUG_OR_ALL, LenientQuery, StrictSchema
from gateway.services.reviews import ItemFilter
from gateway.web.http import current_actor, services
from gateway.web.json_input import Blueprint

blp = Blueprint("reviews", __name__, url_prefix="/reviews", description="Access review campaigns")
# 32-bit ids, as elsewhere: a larger one is a 404 from routing, not a driver overflow.
CAMPAIGN_ID = "<int(max=2147483647):campaign_id>"
ITEM_ID = "<int(max=2147483647):item_id>"
DECISIONS = ["keep", "revoke", "undecided"]


class CampaignCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME, metadata={"example": "Q4 access review"})
    workspace = fields.String(
        required=True,
        validate=SLUG_OR_ALL,
        metadata={"description": "The workspace to review, or * for every workspace"},
    )
    deadline = fields.AwareDateTime(
        required=True, default_timezone=UTC, metadata={"description": "In the future"}
    )
    on_deadline = fields.String(
        load_default="flag",
        validate=validate.OneOf(["flag", "revoke"]),
        metadata={"description": "What happens to undecided grants at the deadline"},
    )


class CampaignQuerySchema(LenientQuery):
    status = fields.String(validate=validate.OneOf(["open", "closed"]))


class ReviewerProgressSchema(Schema):
    user_id = fields.Integer()
    name = fields.String()
    assigned = fields.Integer()
    decided = fields.Integer()
    undecided = fields.Integer()
    decided_by_them = fields.Integer()


class CampaignSchema(Schema):
    """Serialises a ``gateway.services.reviews.CampaignView``."""

    id = fields.Function(lambda v: v.campaign.id)
    name = fields.Function(lambda v: v.campaign.name)
    workspace = fields.Function(lambda v: v.campaign.workspace_slug)
    created_by = fields.Function(
        lambda v: {"id": v.campaign.created_by_id, "name": v.campaign.created_by_name}
    )
    starts_at = fields.Function(lambda v: v.campaign.starts_at.isoformat())
    deadline = fields.Function(lambda v: v.campaign.deadline.isoformat())
    on_deadline = fields.Function(lambda v: v.campaign.on_deadline)
    status = fields.Function(lambda v: v.campaign.status)
    closed_at = fields.Function(
        lambda v: v.campaign.closed_at.isoformat() if v.campaign.closed_at else None
    )
    periodic = fields.Function(lambda v: v.campaign.periodic)
    progress = fields.Function(
        lambda v: {
            "total": v.total,
            "decided": v.decided,
            "undecided": v.undecided,
            "kept": v.kept,
            "revoked": v.revoked,
            "flagged": v.flagged,
            "unassigned": v.unassigned,
        },
        metadata={"description": "Over the items you may see"},
    )
    reviewers = fields.Function(lambda v: ReviewerProgressSchema(many=True).dump(v.reviewers))


class ItemSchema(Schema):
    id = fields.Integer()
    campaign_id = fields.Integer()
    campaign_status = fields.Function(lambda i: i.campaign.status)
    deadline = fields.Function(lambda i: i.campaign.deadline.isoformat())
    user = fields.Function(lambda i: {"id": i.user_id, "email": i.user_email, "name": i.user_name})
    workspace = fields.String(attribute="workspace_slug")
    role = fields.String()
    granted_at = fields.DateTime(allow_none=True)
    decision = fields.String()
    flagged = fields.Boolean()
    comment = fields.String(allow_none=True)
    decided_by = fields.Function(
        lambda i: {"id": i.decided_by_id, "name": i.decided_by_name} if i.decided_at else None
    )
    decided_at = fields.DateTime(allow_none=True)
    reviewer_ids = fields.Function(lambda i: [r.user_id for r in i.reviewers])


class ItemQuerySchema(LenientQuery):
    decision = fields.String(validate=validate.OneOf(DECISIONS))
    campaign_id = fields.Integer(validate=validate.Range(min=1, max=2**31 - 1))


class DecisionSchema(StrictSchema):
    decision = fields.String(required=True, validate=validate.OneOf(["keep", "revoke"]))
    comment = fields.String(load_default=None, validate=validate.Length(max=2000))


@blp.route("/campaigns")
class Campaigns(MethodView):
    @blp.arguments(CampaignQuerySchema, location="query")
    @blp.response(200, CampaignSchema(many=True))
    @blp.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        """Campaigns you may see, newest first, with their progress."""
        page = services().reviews.list(
            current_actor(), query.get("status"), *window(pagination_parameters)
        )
        return items(pagination_parameters, page)

    @blp.arguments(CampaignCreateSchema)
    @blp.response(201, CampaignSchema)
    def post(self, args: dict[str, Any]) -> Any:
        """Start a campaign: freeze the workspace's active grants and assign reviewers."""
        return services().reviews.start(
            current_actor(), args["name"], args["workspace"], args["deadline"], args["on_deadline"]
        )


@blp.route(f"/campaigns/{CAMPAIGN_ID}")
class CampaignById(MethodView):
    @blp.response(200, CampaignSchema)
    def get(self, campaign_id: int) -> Any:
        """One campaign with its progress (counts per reviewer)."""
        return services().reviews.get(current_actor(), campaign_id)


@blp.route(f"/campaigns/{CAMPAIGN_ID}/items")
class CampaignItems(MethodView):
    @blp.arguments(ItemQuerySchema, location="query")
    @blp.response(200, ItemSchema(many=True))
    @blp.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any, campaign_id: int) -> Any:
        """The campaign's grants you may see, undecided first."""
        where = ItemFilter(decision=query.get("decision"), campaign_id=campaign_id)
        page = services().reviews.items(current_actor(), where, *window(pagination_parameters))
        return items(pagination_parameters, page)


@blp.route(f"/campaigns/{CAMPAIGN_ID}/close")
class CloseCampaign(MethodView):
    @blp.response(200, CampaignSchema)
    def post(self, campaign_id: int) -> Any:
        """Finish the campaign now, as its deadline would (flag or revoke the undecided)."""
        return services().reviews.close(current_actor(), campaign_id)


@blp.route("/items")
class MyItems(MethodView):
    @blp.arguments(ItemQuerySchema, location="query")
    @blp.response(200, ItemSchema(many=True))
    @blp.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        """The grants you are a reviewer of, undecided first."""
        where = ItemFilter(
            decision=query.get("decision"), campaign_id=query.get("campaign_id"), mine=True
        )
        page = services().reviews.items(current_actor(), where, *window(pagination_parameters))
        return items(pagination_parameters, page)


@blp.route(f"/items/{ITEM_ID}/decision")
class Decide(MethodView):
    @blp.arguments(DecisionSchema)
    @blp.response(200, ItemSchema)
    def post(self, args: dict[str, Any], item_id: int) -> Any:
        """Keep or revoke the grant (a revocation takes effect at once); final."""
        return services().reviews.decide(
            current_actor(), item_id, args["decision"], args["comment"]
        )
