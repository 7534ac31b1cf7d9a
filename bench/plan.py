"""``ringfence policy plan`` at scale, in a fresh process (``bench/run.py`` starts it):
prints one JSON object with the time and the peak memory of a plan over the benchmark's
data in PostgreSQL.

What is timed is the command's path after the YAML files are read: connecting
(``gateway.cli.main.policy_reader``), reading the applied rules and the live grants
(``PolicyService.current_rules`` and ``live_grants``, as
``gateway.cli.main._policy_sides``), :func:`gateway.policy.plan.compute_plan` (engines
of the rules, and of the few people asked) and rendering the plan as JSON. The
candidate is the applied policy with a change to widely held roles: ``viewer``
(inherited by six of the other roles, so held by nearly everyone) loses a permission
and ``editor`` gains one, so nearly every grant's holder gains or loses something and
is asked about. Peak memory is the process's
``ru_maxrss`` (the interpreter and imports included), as a CI runner would see it.

    python -m bench.plan --url URL --schema ringfence_bench_100k
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

from sqlalchemy import text

from gateway.cli.main import paused_gc, policy_reader
from gateway.config import Settings
from gateway.db.session import make_engine
from gateway.engine.rules import permission_rule
from gateway.policy.plan import compute_plan, render_json

LOSES = ("viewer", "reports:read")  # viewer is inherited by 6 of the 10 shared roles
GAINS = ("editor", "users:delete")


def fill_grants(url: str) -> int:
    """The benchmark's data holds grants as ``g`` rules (what the engine loads); plan
    reads the grants table, as an installation's would be: filled from the rules once
    (outside the measurement). The number of grants."""
    db = make_engine(url)
    try:
        with db.begin() as conn:
            count = conn.execute(text("SELECT count(*) FROM grants")).scalar_one()
            if not count:
                conn.execute(
                    text(
                        "INSERT INTO grants (user_id, workspace_slug, role, granted_at) "
                        "SELECT substr(v0, 6)::int, v2, substr(v1, 6), now() FROM casbin_rule "
                        "WHERE ptype = 'g' AND v0 LIKE 'user:%'"
                    )
                )
                conn.execute(text("ANALYZE grants"))
                count = conn.execute(text("SELECT count(*) FROM grants")).scalar_one()
    finally:
        db.dispose()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    args = parser.parse_args()
    separator = "&" if "?" in args.url else "?"
    url = f"{args.url}{separator}options=-csearch_path%3D{args.schema}"
    grant_count = fill_grants(url)
    with TemporaryDirectory() as tmp, paused_gc():  # as the command
        settings = replace(Settings(), instance_dir=Path(tmp), database_url=url)
        start = time.perf_counter()
        with policy_reader(settings) as policies:
            opened = time.perf_counter()
            baseline = sorted(policies.current_rules())
            grants, people, workspaces = policies.live_grants()
        read = time.perf_counter()
        candidate = [r for r in baseline if r != permission_rule(*LOSES)]
        candidate.append(permission_rule(*GAINS))
        assert len(candidate) == len(baseline), "the bench's viewer must hold reports:read"
        catalogue = {
            f"{r.values[2]}:{r.values[3]}"
            for r in baseline
            if r.ptype == "p" and r.values[2] != "*"
        } | {GAINS[1]}
        plan = compute_plan(
            model_path=settings.model_path,
            baseline_rules=baseline,
            candidate_rules=candidate,
            catalogue=catalogue,
            grants=grants,
            people=people,
            workspaces=workspaces,
            candidate="bench candidate",
            baseline="the applied policy",
            policy_digest="",
        )
        computed = time.perf_counter()
        rendered = render_json(plan)
        done = time.perf_counter()
    print(
        json.dumps(
            {
                "plan_s": done - start,
                "plan_open_s": opened - start,
                "plan_read_s": read - opened,
                "plan_compute_s": computed - read,
                "plan_render_s": done - computed,
                "plan_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "plan_grants": grant_count,
                "plan_people_affected": len(
                    {p.user_id for i in plan.impacts for p in (*i.gained, *i.lost)}
                ),
                "plan_impacts": len(plan.impacts),
                "plan_json_kb": len(rendered) / 1024,
                "plan_roles_changed": len(plan.roles),
            }
        )
    )


if __name__ == "__main__":
    main()
