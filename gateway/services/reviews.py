"""Access reviews: a campaign freezes the active grants of one workspace (or all) at its
start; each grant's reviewers keep or revoke it; at the deadline the undecided ones are
flagged or revoked, as the campaign says.

Reviewers of a grant are, at the start, the active people who could revoke it there
(``role_management:write`` and every permission the role gives: the same rule as
granting), never its holder. They alone decide it; a revocation goes through the grant
service in the same unit of work as the decision (audited, revision bump), so decisions
deny at once. Who sees what: items of the workspaces where one holds ``reviews:read``,
and items one is a reviewer of while one could still decide them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    false,
    func,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.orm import Session, selectinload

from gateway.db.models import (
    Grant,
    ReviewCampaign,
    ReviewItem,
    ReviewItemReviewer,
    User,
    UserStatus,
    utcnow,
)
from gateway.engine.engine import DecisionEngine
from gateway.engine.expiry import expire_due
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound
from gateway.services.base import Actor, AuditTarget, Authorizer, ChangeSet, Page, UnitOfWork
from gateway.services.grants import GrantService
from gateway.services.permissions import Permission
from gateway.services.users import UserService
from gateway.services.workspaces import WorkspaceService

KEEP, REVOKE, UNDECIDED = "keep", "revoke", "undecided"
FLAG = "flag"
ON_DEADLINE = (FLAG, REVOKE)
OPEN, CLOSED = "open", "closed"
MAX_CAMPAIGN_DAYS = 366


@dataclass(frozen=True)
class ReviewerProgress:
    user_id: int
    name: str
    assigned: int
    decided: int  # by anyone: the item left this reviewer's queue
    undecided: int
    decided_by_them: int


@dataclass(frozen=True)
class CampaignView:
    """A campaign and its progress over the items the viewer may see."""

    campaign: ReviewCampaign
    total: int
    decided: int
    undecided: int
    kept: int
    revoked: int
    flagged: int
    unassigned: int  # undecided items nobody may decide (e.g. the only super admin's)
    reviewers: list[ReviewerProgress]


@dataclass(frozen=True)
class ItemFilter:
    decision: str | None = None
    campaign_id: int | None = None
    mine: bool = False  # only items the actor is a reviewer of


def _where(workspace: str) -> str | None:
    """The audit workspace of something in ``workspace`` (global events for ``*``)."""
    return None if workspace == ALL_WORKSPACES else workspace


class ReviewService:
    def __init__(
        self,
        session: Session,
        uow: UnitOfWork,
        authorizer: Authorizer,
        engine: DecisionEngine,
        grants: GrantService,
        users: UserService,
        workspaces: WorkspaceService,
    ) -> None:
        self.session = session
        self.uow = uow
        self.authorizer = authorizer
        self.engine = engine
        self.grants = grants
        self.users = users
        self.workspaces = workspaces

    # -- starting ----------------------------------------------------------------------

    def start(
        self,
        actor: Actor,
        name: str,
        workspace: str,
        deadline: datetime,
        on_deadline: str = FLAG,
        periodic: bool = False,
    ) -> CampaignView:
        """Freeze the active grants of ``workspace`` (``*``: every grant) into a new
        campaign with their reviewers; needs ``reviews:write`` there."""
        self.authorizer.require(actor, Permission.REVIEWS_WRITE, workspace)
        if workspace != ALL_WORKSPACES:
            self.workspaces.require_exists(workspace)
        now = utcnow()
        if on_deadline not in ON_DEADLINE:
            raise InvalidInput(
                "on_deadline must be flag or revoke", errors={"on_deadline": ["flag or revoke"]}
            )
        if not now < deadline <= now + timedelta(days=MAX_CAMPAIGN_DAYS):
            raise InvalidInput(
                f"The deadline must be in the future, within {MAX_CAMPAIGN_DAYS} days",
                errors={"deadline": ["must be in the future, within a year"]},
            )
        query = (
            select(Grant)
            .join(User, User.id == Grant.user_id)
            .where(
                User.status != UserStatus.PENDING,
                or_(Grant.expires_at.is_(None), Grant.expires_at > now),
            )
            .options(selectinload(Grant.user))
            .order_by(Grant.workspace_slug, Grant.user_id, Grant.role)
        )
        if workspace != ALL_WORKSPACES:
            query = query.where(Grant.workspace_slug == workspace)
        grants = self.session.scalars(query).all()
        reviewers_of = self._reviewer_finder()
        with self.uow.change(actor) as changes:
            campaign = ReviewCampaign(
                name=name,
                workspace_slug=workspace,
                created_by_id=actor.user_id,
                created_by_name=actor.name,
                starts_at=now,
                deadline=deadline,
                on_deadline=on_deadline,
                status=OPEN,
                periodic=periodic,
            )
            for grant in grants:
                campaign.items.append(
                    ReviewItem(
                        user_id=grant.user_id,
                        user_email=grant.user.email,
                        user_name=grant.user.name,
                        role=grant.role,
                        workspace_slug=grant.workspace_slug,
                        granted_at=grant.granted_at,
                        decision=UNDECIDED,
                        flagged=False,
                        reviewers=[
                            ReviewItemReviewer(user_id=reviewer)
                            for reviewer in reviewers_of(grant.role, grant.workspace_slug)
                            if reviewer != grant.user_id  # nobody reviews their own access
                        ],
                    )
                )
            self.session.add(campaign)
            self.session.flush()
            changes.audit(
                "review.started",
                AuditTarget.REVIEW_CAMPAIGN,
                campaign.id,
                campaign.name,
                _where(workspace),
                after={
                    "scope": workspace,
                    "deadline": deadline.isoformat(),
                    "on_deadline": on_deadline,
                    "items": len(grants),
                    "periodic": periodic,
                },
            )
        return self._view(actor, campaign)

    def start_due(
        self, actor: Actor, every_days: int, deadline_days: int, on_deadline: str
    ) -> CampaignView | None:
        """The periodic campaign over every workspace, if ``every_days`` have passed since
        the last one (0: never); None if none was due."""
        if every_days <= 0:
            return None
        now = utcnow()
        last = self.session.scalar(
            select(func.max(ReviewCampaign.starts_at)).where(ReviewCampaign.periodic.is_(True))
        )
        if last is not None and _aware(last) > now - timedelta(days=every_days):
            return None
        return self.start(
            actor,
            f"Periodic access review {now:%Y-%m-%d}",
            ALL_WORKSPACES,
            now + timedelta(days=max(1, deadline_days)),
            on_deadline,
            periodic=True,
        )

    def _reviewer_finder(self) -> Any:
        """``(role, workspace) -> [user ids]`` of the active people who could revoke it."""
        expire_due(self.engine)
        candidates = self.session.scalars(
            select(User.id)
            .where(User.status == UserStatus.ACTIVE, User.grants.any())
            .order_by(User.id)
        ).all()
        cache: dict[tuple[str, str], list[int]] = {}

        def reviewers_of(role: str, workspace: str) -> list[int]:
            key = (role, workspace)
            if key not in cache:
                cache[key] = [uid for uid in candidates if self._may_revoke(uid, role, workspace)]
            return cache[key]

        return reviewers_of

    def _may_revoke(self, user_id: int, role: str, workspace: str) -> bool:
        write = Permission.ROLE_MANAGEMENT_WRITE
        if not self.engine.permits(user_id, workspace, write.resource, write.action):
            return False
        return all(
            self.engine.permits(user_id, workspace, resource, action)
            for resource, action in self.engine.role_permissions(role, workspace)
        )

    # -- reading -----------------------------------------------------------------------

    def _visible(self, actor: Actor) -> ColumnElement[bool]:
        """Items ``actor`` may see: in a workspace where they hold ``reviews:read``, or
        assigned to them while they may still revoke the grant (:meth:`_assigned`)."""
        readable = self.authorizer.workspaces_where(actor, Permission.REVIEWS_READ)
        if readable is None:
            return true()
        return or_(ReviewItem.workspace_slug.in_(readable), self._assigned(actor))

    def _assigned(self, actor: Actor) -> ColumnElement[bool]:
        """Items ``actor`` is a reviewer of and could still decide. Reviewers are chosen
        at the start; one who has since lost the authority over a grant (its role's
        permissions or ``role_management:write`` there, or their account's activity)
        no longer reads it either: checked on every read, as :meth:`decide` checks it."""
        if actor.user_id is None:
            return false()
        expire_due(self.engine)
        mine = ReviewItem.reviewers.any(ReviewItemReviewer.user_id == actor.user_id)
        kinds = self.session.execute(
            select(ReviewItem.role, ReviewItem.workspace_slug).where(mine).distinct()
        ).all()
        still = [
            (role, workspace)
            for role, workspace in kinds
            if self._may_revoke(actor.user_id, role, workspace)
        ]
        if not still:
            return false()
        return and_(mine, tuple_(ReviewItem.role, ReviewItem.workspace_slug).in_(still))

    def _campaign_visible(self, actor: Actor) -> ColumnElement[bool]:
        readable = self.authorizer.workspaces_where(actor, Permission.REVIEWS_READ)
        if readable is None:
            return true()
        return or_(
            ReviewCampaign.workspace_slug.in_(readable),
            exists().where(ReviewItem.campaign_id == ReviewCampaign.id, self._visible(actor)),
        )

    def list(self, actor: Actor, status: str | None, offset: int, limit: int) -> Page[CampaignView]:
        """Campaigns ``actor`` may see (any visible item, or ``reviews:read`` in the
        scope), newest first, with progress over what they may see."""
        query = select(ReviewCampaign).where(self._campaign_visible(actor))
        if status:
            query = query.where(ReviewCampaign.status == status)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        campaigns = self.session.scalars(
            query.order_by(ReviewCampaign.id.desc()).offset(offset).limit(limit)
        ).all()
        return Page([self._view(actor, c) for c in campaigns], total)

    def get(self, actor: Actor, campaign_id: int) -> CampaignView:
        """One campaign with its progress; NotFound if ``actor`` may see none of it."""
        return self._view(actor, self._campaign(actor, campaign_id))

    def _campaign(self, actor: Actor, campaign_id: int) -> ReviewCampaign:
        campaign = self.session.scalar(
            select(ReviewCampaign).where(
                ReviewCampaign.id == campaign_id, self._campaign_visible(actor)
            )
        )
        if campaign is None:
            raise NotFound(f"No review campaign {campaign_id}")
        return campaign

    def items(self, actor: Actor, where: ItemFilter, offset: int, limit: int) -> Page[ReviewItem]:
        """Items ``actor`` may see, filtered; undecided first, then by workspace and person."""
        if where.campaign_id is not None:
            self._campaign(actor, where.campaign_id)
        query = select(ReviewItem).where(self._visible(actor))
        if where.mine:
            query = query.where(self._assigned(actor))
        if where.campaign_id is not None:
            query = query.where(ReviewItem.campaign_id == where.campaign_id)
        if where.decision:
            query = query.where(ReviewItem.decision == where.decision)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self.session.scalars(
            query.options(selectinload(ReviewItem.reviewers), selectinload(ReviewItem.campaign))
            .order_by(
                (ReviewItem.decision != UNDECIDED),
                ReviewItem.campaign_id.desc(),
                ReviewItem.workspace_slug,
                ReviewItem.user_email,
                ReviewItem.role,
            )
            .offset(offset)
            .limit(limit)
        ).all()
        return Page(rows, total)

    def _view(self, actor: Actor, campaign: ReviewCampaign) -> CampaignView:
        items = self.session.scalars(
            select(ReviewItem)
            .where(ReviewItem.campaign_id == campaign.id, self._visible(actor))
            .options(selectinload(ReviewItem.reviewers))
        ).all()
        assigned: dict[int, list[ReviewItem]] = defaultdict(list)
        for item in items:
            for reviewer in item.reviewers:
                assigned[reviewer.user_id].append(item)
        names = {
            uid: name
            for uid, name in self.session.execute(
                select(User.id, User.name).where(User.id.in_(list(assigned)))
            )
        }
        progress = [
            ReviewerProgress(
                user_id=uid,
                name=names.get(uid, f"removed user {uid}"),
                assigned=len(its),
                decided=sum(i.decision != UNDECIDED for i in its),
                undecided=sum(i.decision == UNDECIDED for i in its),
                decided_by_them=sum(i.decided_by_id == uid for i in its),
            )
            for uid, its in sorted(assigned.items())
        ]
        undecided = [i for i in items if i.decision == UNDECIDED]
        return CampaignView(
            campaign=campaign,
            total=len(items),
            decided=len(items) - len(undecided),
            undecided=len(undecided),
            kept=sum(i.decision == KEEP for i in items),
            revoked=sum(i.decision == REVOKE for i in items),
            flagged=sum(i.flagged for i in items),
            unassigned=sum(not i.reviewers for i in undecided),
            reviewers=progress,
        )

    # -- deciding ----------------------------------------------------------------------

    def decide(
        self, actor: Actor, item_id: int, decision: str, comment: str | None = None
    ) -> ReviewItem:
        """Keep or revoke one grant under review; a revocation takes effect at once.
        Only the item's reviewers may decide, once, while the campaign is open."""
        if decision not in (KEEP, REVOKE):
            raise InvalidInput(
                "decision must be keep or revoke", errors={"decision": ["keep|revoke"]}
            )
        item = self.session.scalar(
            select(ReviewItem).where(ReviewItem.id == item_id, self._visible(actor))
        )
        if item is None:
            raise NotFound(f"No review item {item_id}")
        if actor.user_id is not None and actor.user_id == item.user_id:
            raise Forbidden("You cannot review your own access")
        if actor.user_id is not None and actor.user_id not in {r.user_id for r in item.reviewers}:
            raise Forbidden("You are not a reviewer of this grant")
        campaign = item.campaign
        if campaign.status != OPEN:
            raise Conflict(f"Review campaign {campaign.id} is closed")
        if _aware(campaign.deadline) <= utcnow():
            raise Conflict(f"The deadline of review campaign {campaign.id} has passed")
        if item.decision != UNDECIDED:
            raise Conflict(f"Review item {item.id} was decided already ({item.decision})")
        if actor.user_id is not None:
            expire_due(self.engine)
            if not self._may_revoke(actor.user_id, item.role, item.workspace_slug):
                # Reviewers are chosen at the start; one who has since lost the authority
                # over this grant decides nothing (fail closed).
                raise Forbidden(
                    f"You may no longer change who holds '{item.role}' in '{item.workspace_slug}'"
                )
        grant, holder = self._current_grant(item)
        if decision == REVOKE and grant is not None and holder is not None:
            self.users.protect_last_holder(holder, grant.role, grant.workspace_slug, "revoke")
        with self.uow.change(actor) as changes:
            self._record_decision(changes, item, decision, comment, actor)
            removed = False
            if decision == REVOKE and grant is not None and holder is not None:
                self.grants.revoke_in(
                    changes,
                    holder,
                    grant,
                    "grant.removed",
                    review_campaign_id=campaign.id,
                    review_item_id=item.id,
                )
                removed = True
            changes.audit(
                "review.decided",
                AuditTarget.REVIEW_ITEM,
                item.id,
                f"{item.user_name} <{item.user_email}>: {item.role} in {item.workspace_slug}",
                _where(item.workspace_slug),
                {"decision": UNDECIDED},
                {
                    "decision": decision,
                    "comment": comment,
                    "campaign_id": campaign.id,
                    "user_id": item.user_id,
                    "role": item.role,
                    "grant_removed": removed,
                },
            )
        self.session.refresh(item)
        return item

    def _record_decision(
        self,
        changes: ChangeSet,
        item: ReviewItem,
        decision: str,
        comment: str | None,
        actor: Actor,
        flagged: bool = False,
    ) -> None:
        # Conditional, so that of two reviewers deciding at once only one wins.
        done = self.session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item.id, ReviewItem.decision == UNDECIDED)
            .values(
                decision=decision,
                comment=comment,
                flagged=flagged,
                decided_by_id=actor.user_id,
                decided_by_name=actor.name,
                decided_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"Review item {item.id} was decided already")

    def _current_grant(self, item: ReviewItem) -> tuple[Grant | None, User | None]:
        """The grant the item froze, if it still exists (it may have been revoked since)."""
        holder = self.session.get(User, item.user_id)
        if holder is None or _aware(holder.created_at) > _aware(item.campaign.starts_at):
            # Created after the campaign froze the grant: not its holder but someone who
            # got a removed holder's id (SQLite reused ids before migration 0011).
            return None, None
        grant = next(
            (
                g
                for g in holder.grants
                if g.role == item.role and g.workspace_slug == item.workspace_slug
            ),
            None,
        )
        return grant, holder

    # -- closing -----------------------------------------------------------------------

    def close(self, actor: Actor, campaign_id: int) -> CampaignView:
        """Finish a campaign now, as its deadline would; needs ``reviews:write`` in its scope."""
        campaign = self._campaign(actor, campaign_id)
        self.authorizer.require(actor, Permission.REVIEWS_WRITE, campaign.workspace_slug)
        if campaign.status != OPEN:
            raise Conflict(f"Review campaign {campaign.id} is closed already")
        self._finish(actor, campaign)
        return self._view(actor, campaign)

    def close_due(self, actor: Actor, now: datetime | None = None) -> int:
        """Finish every open campaign whose deadline has passed; how many."""
        now = now or utcnow()
        due = self.session.scalars(
            select(ReviewCampaign)
            .where(ReviewCampaign.status == OPEN, ReviewCampaign.deadline <= now)
            .order_by(ReviewCampaign.id)
        ).all()
        for campaign in due:
            self._finish(actor, campaign)
        return len(due)

    def _finish(self, actor: Actor, campaign: ReviewCampaign) -> None:
        """Close ``campaign`` in one change: its undecided items are flagged, or revoked
        (the grant removed, audited) when the campaign says so."""
        deadline_actor = Actor(actor.user_id, f"{actor.name} (review deadline)", actor.request_id)
        undecided = [i for i in campaign.items if i.decision == UNDECIDED]
        counts = {"flagged": 0, "revoked": 0}
        with self.uow.change(actor) as changes:
            closed = self.session.execute(
                update(ReviewCampaign)
                .where(ReviewCampaign.id == campaign.id, ReviewCampaign.status == OPEN)
                .values(status=CLOSED, closed_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if closed.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(f"Review campaign {campaign.id} is closed already")
            for item in undecided:
                grant, holder = self._current_grant(item)
                revoke = campaign.on_deadline == REVOKE and not (
                    grant is not None and holder is not None and self._last_holder(holder, grant)
                )
                if revoke:
                    self._record_decision(
                        changes, item, REVOKE, "revoked at the deadline", deadline_actor
                    )
                    if grant is not None and holder is not None:
                        self.grants.revoke_in(
                            changes,
                            holder,
                            grant,
                            "grant.removed",
                            review_campaign_id=campaign.id,
                            review_item_id=item.id,
                            reason="undecided at the review deadline",
                        )
                    counts["revoked"] += 1
                else:
                    item.flagged = True
                    changes.audit(
                        "review.flagged",
                        AuditTarget.REVIEW_ITEM,
                        item.id,
                        f"{item.user_name} <{item.user_email}>: {item.role} in "
                        f"{item.workspace_slug}",
                        _where(item.workspace_slug),
                        after={"campaign_id": campaign.id, "user_id": item.user_id},
                    )
                    counts["flagged"] += 1
            changes.audit(
                "review.closed",
                AuditTarget.REVIEW_CAMPAIGN,
                campaign.id,
                campaign.name,
                _where(campaign.workspace_slug),
                {"status": OPEN},
                {"status": CLOSED, "on_deadline": campaign.on_deadline, **counts},
            )
        self.session.refresh(campaign)
        for item in campaign.items:
            self.session.refresh(item)

    def _last_holder(self, user: User, grant: Grant) -> bool:
        try:
            self.users.protect_last_holder(user, grant.role, grant.workspace_slug, "revoke")
        except Conflict:
            return True
        return False


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
