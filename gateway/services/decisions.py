"""The decision question other services ask: may subject X do Y on R in workspace W?
And the questions around it: what may X do in W, where may X do Y, who may do Y in W.

Subjects (and resource owners) are references as callers know them: an email address,
a user id or ``user:<id>``. Unknown or inactive subjects and unknown workspaces are
denied (or get empty answers), never an error.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.audit.activity import ActivityRecorder
from gateway.audit.decision_feed import DecisionFeed
from gateway.audit.decision_log import DecisionLog
from gateway.engine.engine import Decision, DecisionEngine
from gateway.engine.expiry import expire_due


class DecisionService:
    def __init__(
        self,
        engine: DecisionEngine,
        *,
        activity: ActivityRecorder | None = None,
        decision_log: DecisionLog | None = None,
        decision_events: DecisionFeed | None = None,
    ) -> None:
        """``activity`` notes who was asked about where (last seen), ``decision_log``
        keeps a line per decision, ``decision_events`` keeps the sampled decisions event
        streams asked for; each None: not recorded (the decision endpoints pass the app's,
        gateway.web.state)."""
        self.engine = engine
        self.activity = activity
        self.decision_log = decision_log
        self.decision_events = decision_events

    def check(
        self,
        subject: str,
        workspace: str,
        resource: str,
        action: str,
        *,
        owner: str | None = None,
        explain: bool = False,
        seen: bool = True,
    ) -> Decision:
        """The engine's answer from memory. ``owner`` names the resource's owner (resolved
        like ``subject``; unknown: no owner), which owner-only permissions need;
        ``explain`` adds the matched rule and role path (or why nothing matched).
        ``seen`` records the subject as active in the workspace (the activity recorder);
        searches, which ask about people rather than for them, pass False."""
        expire_due(self.engine)  # time-limited grants that ended deny from that moment
        user_id = self.engine.resolve_subject(subject)
        decision = self.engine.check(
            user_id, workspace, resource, action, owner=self._owner(owner), explain=explain
        )
        if seen and (recorder := self.activity) is not None:
            recorder.note(user_id, workspace, decision)
        if (decisions := self.decision_log) is not None:
            decisions.record(subject, workspace, resource, action, decision)
        if (feed := self.decision_events) is not None:
            feed.record(subject, workspace, resource, action, decision)
        return decision

    def asker(self) -> Callable[[str, str, str, str, str | None], Decision]:
        """:meth:`check` (without ``explain``, subject seen) for the questions of one
        request, such as an AuthZEN batch: what does not change between them is done once
        (grants that ended dropped before the first, the engine and the recorders looked
        up), each question is still recorded and logged."""
        engine = self.engine
        expire_due(engine)
        check, resolve = engine.check, engine.resolve_subject
        recorder, decisions, feed = self.activity, self.decision_log, self.decision_events

        def ask(
            subject: str, workspace: str, resource: str, action: str, owner: str | None
        ) -> Decision:
            user_id = resolve(subject)
            if owner is None:
                decision = check(user_id, workspace, resource, action)
            else:
                decision = check(user_id, workspace, resource, action, owner=resolve(owner))
            if recorder is not None:
                recorder.note(user_id, workspace, decision)
            if decisions is not None:
                decisions.record(subject, workspace, resource, action, decision)
            if feed is not None:
                feed.record(subject, workspace, resource, action, decision)
            return decision

        return ask

    def permissions(self, subject: str, workspace: str) -> set[tuple[str, str]]:
        """(resource, action) pairs ``subject`` holds in ``workspace``, patterns as the
        rules write them (``*`` stays ``*``); one held only on the subject's own
        resources has the action ``<action>:own`` (``("todos", "update:own")``)."""
        return self.engine.permissions(self.engine.resolve_subject(subject), workspace)

    def workspaces_where(
        self, subject: str, resource: str, action: str, *, owner: str | None = None
    ) -> set[str]:
        """Workspaces (slugs) where ``subject`` may do ``resource:action``."""
        return self.engine.workspaces_where(
            self.engine.resolve_subject(subject), resource, action, owner=self._owner(owner)
        )

    def subjects_who_may(
        self, workspace: str, resource: str, action: str, *, owner: str | None = None
    ) -> set[int]:
        """Ids of the active users who may do ``resource:action`` in ``workspace`` (on a
        resource owned by ``owner``: then its owner qualifies through owner-only
        permissions too)."""
        return self.engine.subjects_who_may(workspace, resource, action, owner=self._owner(owner))

    def _owner(self, owner: str | None) -> int | None:
        return self.engine.resolve_subject(owner) if owner is not None else None
