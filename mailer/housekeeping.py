"""Periodic upkeep run by beat: time-limited grants that ended, review campaigns past
their deadline, the periodic access review, verified domains looked up again, remembered
browsers of two-step sign-in that ended.

Like the delivery ledger, the gateway side is a port (:class:`gateway.notifier.
Housekeeping`) installed by the process that runs the tasks (``ringfence worker``, the
app factory), or found through the ``ringfence.housekeeping`` entry point for
``celery -A mailer.worker``; the tasks take and return plain values only.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from gateway.config import load_settings
from gateway.notifier import Housekeeping
from mailer.celery_app import celery_app

logger = logging.getLogger("ringfence.housekeeping")

ENTRY_POINT_GROUP = "ringfence.housekeeping"
_housekeeping: Housekeeping | None = None


def install_housekeeping(housekeeping: Housekeeping) -> None:
    global _housekeeping
    _housekeeping = housekeeping


def current_housekeeping() -> Housekeeping:
    global _housekeeping
    if _housekeeping is None:
        found = list(entry_points(group=ENTRY_POINT_GROUP))
        if len(found) != 1:
            raise RuntimeError(
                "no housekeeping installed (gateway.app or ringfence worker does it), and "
                f"not exactly one {ENTRY_POINT_GROUP!r} entry point"
            )
        _housekeeping = found[0].load()(load_settings())
    assert _housekeeping is not None
    return _housekeeping


@celery_app.task(name="ringfence.expire_grants")
def expire_grants() -> int:
    """Remove the grants whose end time has passed; how many."""
    count = current_housekeeping().expire_grants()
    if count:
        logger.info("Expired %d time-limited grant(s)", count)
    return count


@celery_app.task(name="ringfence.close_due_reviews")
def close_due_reviews() -> int:
    """Finish the review campaigns past their deadline; how many."""
    count = current_housekeeping().close_due_reviews()
    if count:
        logger.info("Closed %d review campaign(s) at their deadline", count)
    return count


@celery_app.task(name="ringfence.start_due_review")
def start_due_review() -> int | None:
    """Start the periodic access review when it is due; its campaign id."""
    campaign_id = current_housekeeping().start_due_review()
    if campaign_id is not None:
        logger.info("Started periodic access review campaign %d", campaign_id)
    return campaign_id


@celery_app.task(name="ringfence.recheck_domains")
def recheck_domains() -> int:
    """Look up again the verified email domains due a check; how many lost verification."""
    count = current_housekeeping().recheck_domains()
    if count:
        logger.warning("%d email domain(s) lost their verification (TXT record gone)", count)
    return count


@celery_app.task(name="ringfence.forget_ended_devices")
def forget_ended_devices() -> int:
    """Delete the remembered browsers of two-step sign-in that ended; how many."""
    count = current_housekeeping().forget_ended_devices()
    if count:
        logger.info("Deleted %d remembered browser(s) that ended", count)
    return count
