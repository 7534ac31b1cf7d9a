"""The port between the mail tasks and whoever records deliveries (the gateway).

Tasks know messages only by id. The ledger, plugged in by the process that runs them
(the app factory, or ``ringfence worker``), hands out what to send and records what
happened, so that ``mailer`` never touches the database or its models.

A process may hold more than one app (tests do, and a CLI command that builds one
beside a running one): the ledgers form a stack, the newest serves, and an app that
closes takes its own ledger out, so that nothing (the event streams' poll above all)
goes on using the database of an app that is gone, while the others keep theirs.
"""

from __future__ import annotations

from gateway.notifier import DeliveryLedger, Outgoing

__all__ = ["DeliveryLedger", "Outgoing", "current_ledger", "install_ledger", "uninstall_ledger"]


# No lock: appending, deleting an item and reading the last are each one step under the
# interpreter's lock, and apps are made and closed one at a time. (A lock here would be
# read by the event streams' thread, and a server worker forked while that thread held
# it would inherit it held for ever.)
_ledgers: list[DeliveryLedger] = []


def install_ledger(ledger: DeliveryLedger) -> None:
    """Serve the tasks of this process from ``ledger`` (until it is uninstalled, or a
    newer one is installed)."""
    _ledgers.append(ledger)


def uninstall_ledger(ledger: DeliveryLedger) -> None:
    """Take ``ledger`` out (its app closed); the one installed before it serves again.
    A ledger not installed is ignored: closing twice is harmless."""
    for index in range(len(_ledgers) - 1, -1, -1):
        if _ledgers[index] is ledger:
            del _ledgers[index]
            return


def current_ledger() -> DeliveryLedger:
    try:
        return _ledgers[-1]
    except IndexError:
        raise RuntimeError(
            "no delivery ledger installed (gateway.app or ringfence worker does it)"
        ) from None
