"""``ringfence doctor --url``: is a running replica at the database's policy revision?

Reads the replica's ``/readyz`` (which catches up before it answers), so a replica
reported behind is one that could not catch up: its database is away from it, it reads
another database, or it is stuck. Plain ``urllib``: the CLI needs no HTTP client package.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReplicaReport:
    ok: bool
    message: str


def check_replica(
    url: str, database_revision: int, max_lag: int, timeout: float = 10.0
) -> ReplicaReport:
    """Compare the revision the replica at ``url`` holds with ``database_revision``."""
    probe = url.rstrip("/") + "/readyz"
    try:
        # /readyz answers 503 (with the same body) while catching up: still a report.
        try:
            with urllib.request.urlopen(probe, timeout=timeout) as response:  # noqa: S310
                body: Any = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        revision = int(body["revision"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return ReplicaReport(False, f"replica {probe} unreachable or not a gateway: {exc}")
    lag = database_revision - revision
    where = f"replica {url} at revision {revision}, database at {database_revision}"
    if body.get("stale"):
        where += " (the replica cannot reach its database: answering from memory)"
    if lag < 0:
        return ReplicaReport(False, f"{where}: the replica is ahead (another database?)")
    if lag > max_lag:
        return ReplicaReport(False, f"{where}: behind by {lag} (more than {max_lag})")
    if lag:
        return ReplicaReport(True, f"{where}: behind by {lag} (at most {max_lag} allowed)")
    return ReplicaReport(True, f"{where}: in sync")
