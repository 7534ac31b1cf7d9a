"""The decision question other services ask: may subject X do Y on R in workspace W?"""

from __future__ import annotations

from gateway.decision_log import logged
from gateway.engine import Decision, DecisionEngine
from gateway.expiry import expire_due


class DecisionService:
    def __init__(self, engine: DecisionEngine) -> None:
        self.engine = engine

    def check(self, subject: str, workspace: str, resource: str, action: str) -> Decision:
        """The engine's answer from memory; unknown or inactive subjects and unknown
        workspaces are denied."""
        expire_due(self.engine)  # time-limited grants that ended deny from that moment
        return logged(
            self.engine.check(self.engine.resolve_subject(subject), workspace, resource, action),
            subject,
            workspace,
            resource,
            action,
        )
