"""The benchmark's data still loads into the current schema, and ``policy plan``'s
benchmark still runs over it (bench/run.py, bench/plan.py).

Nothing else runs that code between two ``make bench`` runs, and a NOT NULL column added
to the models (``workspaces.mfa_required``) broke the COPY unseen until the next one.
The smallest size (10k people, 100 workspaces) takes about two seconds; the plan runs in
a process of its own, as ``make bench`` runs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from bench.run import copy_into_postgres, drop_schema, measure_plan
from tests.conftest import PG_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("RINGFENCE_TEST_DATABASE_URL is not set")
    name = f"ringfence_bench_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        drop_schema(PG_URL, name)


def test_the_benchmark_data_loads_and_policy_plan_runs_over_it(schema: str) -> None:
    loaded = copy_into_postgres(PG_URL, "10k", schema)
    assert (loaded["users"], loaded["workspaces"]) == (10_000, 100)
    db = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    with db.connect() as conn:
        rules = conn.execute(text("SELECT count(*) FROM casbin_rule")).scalar_one()
    db.dispose()
    assert rules == loaded["rules"] > 10_000

    plan = measure_plan(PG_URL, schema)
    # The candidate takes a permission from viewer, which nearly everyone holds.
    assert plan["plan_s"] > 0 and plan["plan_peak_mb"] > 0, plan
    assert plan["plan_people_affected"] > 5_000, plan
