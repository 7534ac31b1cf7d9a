"""The port between the mail tasks and whoever records deliveries (the gateway).

Tasks know messages only by id. The ledger, plugged in by the process that runs them
(the app factory, or ``ringfence worker``), hands out what to send and records what
happened, so that ``mailer`` never touches the database or its models.
"""

from __future__ import annotations

from gateway.notifier import DeliveryLedger, Outgoing

__all__ = ["DeliveryLedger", "Outgoing", "current_ledger", "install_ledger"]


_ledger: DeliveryLedger | None = None


def install_ledger(ledger: DeliveryLedger) -> None:
    global _ledger
    _ledger = ledger


def current_ledger() -> DeliveryLedger:
    if _ledger is None:
        raise RuntimeError("no delivery ledger installed (gateway.app or ringfence worker does it)")
    return _ledger
