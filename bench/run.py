"""``make bench``: generate data at each size, COPY it into PostgreSQL (a schema per
size), measure in a fresh process per size (bench/measure.py), and write a markdown
table with the machine's description to stdout and bench/results.md.

    python -m bench.run --sizes 10k,100k,1M

RINGFENCE_BENCH_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
names the database; each size lives in the schema ``ringfence_bench_<size>`` (another
prefix: ``--schema-prefix``), created by the run and dropped at its end.

Measuring start-up again without generating the data again (minutes at 1M):

    python -m bench.run --sizes 1M --keep                   # generate, keep the schema
    python -m bench.run --sizes 1M --reuse --startup-only --repeat 5

``--reuse`` takes a schema a ``--keep`` run left (and generates one that is missing);
``--startup-only`` measures the start-up rows only, prints them and leaves
bench/results.md alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench import peers
from bench.data import SIZES, Dataset, generate
from gateway.db.models import Base
from gateway.engine.rules import Rule

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RESULTS = Path(__file__).resolve().parent / "results.md"
# What `make bench-http` (bench/http.py) wrote last; `make bench` runs it first.
HTTP_RESULTS = Path(__file__).resolve().parent / "http_results.md"
SDK_RESULTS = Path(__file__).resolve().parent / "sdk_results.md"
SCIM_RESULTS = Path(__file__).resolve().parent / "scim_results.md"
STREAMS_RESULTS = Path(__file__).resolve().parent / "streams_results.md"
HTTP_BATCH = 100  # evaluations per request in bench/http.py's batches
# Plain Casbin scans every rule per request: asked at these sizes only, a few times.
CASBIN_REQUESTS = {"10k": 300, "100k": 10}
# The decision log's budget: a logged check may cost this much more at p50 than an
# unlogged one (a check is ~2.5-6 µs, so the log may add half of that at most).
LOG_GOAL_US = 5.0
LOG_GOAL_SHARE = 0.5
# ringfence policy plan over the largest data (issue 20): it runs in CI against
# production-sized grants.
PLAN_GOAL_S = 30.0
PLAN_GOAL_MB = 2048


def copy_rows(cursor: Any, data: Dataset, rules: Sequence[Rule]) -> None:
    """COPY the users, workspaces and rules of ``data`` through a psycopg ``cursor``
    (ids given explicitly; the caller commits)."""
    now = datetime.datetime.now(datetime.UTC)
    with cursor.copy(
        "COPY users (id, email, name, status, session_version, created_at, updated_at) FROM STDIN"
    ) as copy:
        for user_id in range(1, data.users + 1):
            email = f"user{user_id}@example.com"
            copy.write_row((user_id, email, f"User {user_id}", "active", 1, now, now))
    # Every NOT NULL column the models fill in Python (create_all gives no server default).
    with cursor.copy(
        "COPY workspaces (id, slug, name, created_at, mfa_required) FROM STDIN"
    ) as copy:
        for number, slug in enumerate(data.workspaces, 1):
            copy.write_row((number, slug, slug, now, "off"))
    with cursor.copy("COPY casbin_rule (ptype, v0, v1, v2, v3, v4) FROM STDIN") as copy:
        for rule in rules:
            copy.write_row((rule.ptype, *rule.values, *[None] * (5 - len(rule.values))))


def copy_into_postgres(url: str, label: str, schema: str) -> dict[str, Any]:
    """Generate ``label`` and COPY it into ``schema``; timings and row counts."""
    start = time.perf_counter()
    data = generate(label)
    rules = data.rules()
    generated = time.perf_counter() - start
    db = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    with db.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    Base.metadata.create_all(db)
    start = time.perf_counter()
    raw = db.raw_connection()
    try:
        cursor = raw.cursor()
        copy_rows(cursor, data, rules)
        cursor.execute("INSERT INTO policy_state (id, revision) VALUES (1, 1)")
        cursor.execute("ANALYZE users, workspaces, casbin_rule")
        raw.commit()
    finally:
        raw.close()
    db.dispose()
    return {
        "schema": schema,
        "users": data.users,
        "workspaces": len(data.workspaces),
        "rules": len(rules),
        "generate_s": generated,
        "copy_s": time.perf_counter() - start,
    }


def already_loaded(url: str, schema: str) -> dict[str, Any] | None:
    """Row counts of ``schema`` if a finished copy is there (its policy state is written
    last, in the copy's transaction), else None."""
    db = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        with db.connect() as conn:
            exists = conn.execute(
                text(
                    "SELECT 1 FROM information_schema.tables "
                    "WHERE table_schema = :s AND table_name = 'policy_state'"
                ),
                {"s": schema},
            ).first()
            if exists is None:
                return None
            counts = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM policy_state), (SELECT count(*) FROM users), "
                    "(SELECT count(*) FROM workspaces), (SELECT count(*) FROM casbin_rule)"
                )
            ).one()
    finally:
        db.dispose()
    states, users, workspaces, rules = counts
    if not states:
        return None
    return {
        "schema": schema,
        "users": users,
        "workspaces": workspaces,
        "rules": rules,
        "generate_s": None,
        "copy_s": None,
    }


def drop_schema(url: str, schema: str) -> None:
    db = create_engine(url)
    try:
        with db.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        db.dispose()


def measure(
    url: str, label: str, loaded: dict[str, Any], concurrent: int, startup_only: bool = False
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.measure",
        "--url",
        url,
        "--schema",
        loaded["schema"],
        "--users",
        str(loaded["users"]),
        "--casbin-requests",
        str(CASBIN_REQUESTS.get(label, 0)),
        "--concurrent-checks",
        str(concurrent),
        *(["--startup-only"] if startup_only else []),
    ]
    with tempfile.TemporaryDirectory() as tmp:  # the peers' decisions: the same requests
        data = Path(tmp) / "peers.json"
        command += [] if startup_only else ["--peers-out", str(data)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
        found = {**loaded, **json.loads(done.stdout)}
        if not startup_only:
            found["peers"] = peers.run_all(data, label)
    if not startup_only:
        found.update(measure_plan(url, loaded["schema"]))
    return found


def measure_plan(url: str, schema: str) -> dict[str, Any]:
    """``policy plan`` of a change to widely held roles, in a fresh process of its own
    (bench/plan.py), so that its peak memory is the plan's alone."""
    command = [sys.executable, "-m", "bench.plan", "--url", url, "--schema", schema]
    done = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) // 1024 // 1024} GB RAM"
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; Python {platform.python_version()} "
        f"({platform.python_implementation()}); {platform.system()} {platform.release()}"
    )


def startup_table(results: list[dict[str, Any]], postgres: str) -> str:
    """The start-up rows of ``--startup-only`` runs: each size measured ``--repeat``
    times, each time in a fresh process; the range and every run."""
    lines = [
        "# Ringfence start-up benchmark",
        "",
        f"Machine: {machine()}; {postgres}.",
        f"Run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; each run in a "
        "fresh process.",
        "",
        "| size | rules | runs | engine ready from PostgreSQL (s) | RSS after load (MB) "
        "| peak RSS (MB) | each run: ready s / peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        runs = r["runs"]
        ready = [run["ready_s"] for run in runs]
        rss = [run["rss_mb"] for run in runs]
        peak = [run["peak_mb"] for run in runs]
        each = ", ".join(f"{run['ready_s']:.1f} / {run['peak_mb']:,.0f}" for run in runs)
        lines.append(
            f"| {r['label']} | {r['rules']:,} | {len(runs)} "
            f"| {min(ready):.1f}-{max(ready):.1f} | {min(rss):,.0f}-{max(rss):,.0f} "
            f"| {min(peak):,.0f}-{max(peak):,.0f} | {each} |"
        )
    return "\n".join(lines) + "\n"


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def table(results: list[dict[str, Any]], postgres: str) -> str:
    lines = [
        "# Ringfence decision benchmark",
        "",
        f"Machine: {machine()}; {postgres}.",
        f"Run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
        "Latencies per call in µs (p50 / p99), each measured around one call with "
        "`time.perf_counter_ns` on the same 20,000 requests (3 passes).",
        "",
    ]
    header = ["", *(r["label"] for r in results)]
    rows: list[list[str]] = []

    def row(name: str, key: Any) -> None:
        rows.append([name, *(key(r) for r in results)])

    def lat(name: str) -> Any:
        return lambda r: (
            f"{fmt(r[name]['p50'], digits=2)} / {fmt(r[name]['p99'], digits=2)}"
            if name in r
            else "not run"
        )

    row("users / workspaces", lambda r: f"{r['users']:,} / {r['workspaces']:,}")
    row("rules (p + role links + grants)", lambda r: f"{r['rules']:,}")
    row("COPY into PostgreSQL (s)", lambda r: fmt(r["copy_s"]))
    row("engine ready from PostgreSQL (s)", lambda r: fmt(r["ready_s"]))
    row("RSS after load / peak (MB)", lambda r: f"{r['rss_mb']:,.0f} / {r['peak_mb']:,.0f}")
    rows += [[name, *cells] for name, cells in peers.startup_rows(results)]
    row("dict/set lookup of the answer", lat("dict"))
    row("engine.check, question asked before (remembered)", lat("engine"))
    row("engine p50 / dict p50", lambda r: fmt(r["engine"]["p50"] / r["dict"]["p50"], "x", 2))
    row("engine p99 / dict p99", lambda r: fmt(r["engine"]["p99"] / r["dict"]["p99"], "x", 2))
    row("engine.check, first time asked (memo emptied)", lat("engine_cold"))
    row(
        "first time asked: p50 / dict p50",
        lambda r: (
            fmt(r["engine_cold"]["p50"] / r["dict"]["p50"], "x", 2) if "engine_cold" in r else "-"
        ),
    )
    row('DecisionService.check ("user:<id>")', lat("service"))
    row("DecisionService.check, decision log to a file", lat("service_log_file"))
    row("DecisionService.check, decision log to /dev/null", lat("service_log_devnull"))
    row("DecisionService.check, log off again (drift)", lat("service_again"))
    row("DecisionService.check, last seen recorded", lat("service_activity"))
    row("DecisionService.check, last seen off again (drift)", lat("service_activity_off"))
    row(
        "last seen: distinct (user, workspace) pairs / dropped",
        lambda r: (
            f"{r['service_activity']['pairs']:,} / {r['service_activity']['dropped']:,}"
            if "service_activity" in r
            else "not run"
        ),
    )
    row(
        "decision log: lines written / dropped",
        lambda r: (
            f"{r['service_log_file']['written']:,} / {r['service_log_file']['dropped']:,}"
            if "service_log_file" in r
            else "not run"
        ),
    )
    row("pycasbin Enforcer.enforce", lat("casbin"))
    row(
        "Enforcer p50 / engine p50",
        lambda r: fmt(r["casbin"]["p50"] / r["engine"]["p50"], "x", 0) if "casbin" in r else "-",
    )
    row("Enforcer load from rows in memory (s)", lambda r: fmt(r.get("casbin_load_s")))
    row(
        "Enforcer answers differing from the engine",
        lambda r: f"{r['casbin_wrong']} of {r['casbin_checked']}" if "casbin" in r else "-",
    )
    rows += [[name, *cells] for name, cells in peers.table_rows(results)]
    row(
        "first check in the big workspace (µs)",
        lambda r: f"{fmt(r['first_check_big_us'])} ({r['big_members']:,} members)",
    )
    row(
        "grant added / removed, p50 (µs)",
        lambda r: f"{fmt(r['grant_add']['p50'])} / {fmt(r['grant_remove']['p50'])}",
    )
    row(
        "grant added / removed, p99 (µs)",
        lambda r: f"{fmt(r['grant_add']['p99'])} / {fmt(r['grant_remove']['p99'])}",
    )
    row("role definition changed (ms)", lambda r: fmt(r["role_change_ms"], digits=2))
    row("1M checks by never-seen ids: RSS growth (MB)", lambda r: fmt(r["unknown_ids_growth_mb"]))
    row(
        "policy plan, widely held roles changed: s / peak MB",
        lambda r: f"{r['plan_s']:.1f} / {r['plan_peak_mb']:,.0f}" if "plan_s" in r else "not run",
    )
    row(
        "policy plan: open + read / compute / render (s)",
        lambda r: (
            f"{r['plan_open_s'] + r['plan_read_s']:.1f} / {r['plan_compute_s']:.1f} "
            f"/ {r['plan_render_s']:.1f}"
            if "plan_s" in r
            else "not run"
        ),
    )
    row(
        "policy plan: grants / people who gain or lose",
        lambda r: (
            f"{r['plan_grants']:,} / {r['plan_people_affected']:,}" if "plan_s" in r else "not run"
        ),
    )

    def concurrent(r: dict[str, Any]) -> str:
        c = r["concurrent"]
        return f"{c['wrong']} / {c['errors']} of {c['checks']:,} ({c['changes']:,} changes)"

    row("8 threads + a writer: wrong answers / errors", concurrent)
    row("8 threads: checks per second", lambda r: fmt(r["concurrent"]["checks_per_s"], digits=0))
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join([*lines, "", *goals(results), "", NOTES + peers.NOTES]) + "\n"


NOTES = """## Notes

- The dict/set baseline is the cheapest possible: a function doing one set membership
  test of the 4-tuple (~0.2-0.3 µs here). `engine.check` answers a question asked
  before from its memo of recent answers (a dict of the current state's answers, emptied
  as every change starts; see _forget_answers in gateway/engine/engine.py): one dict lookup,
  the "remembered" row. A question asked the first time since the
  last change (the "first time asked" row; the memo emptied before each call, outside
  the clock) does the whole decision: the subject active, the workspace known, the
  user's 1-3 grants matched to the workspace, each granted role's memoised answer for
  `(resource, action)`. Both rows are real answers from the same engine; services
  repeat questions far more often than the grants change.
- Latency is flat for questions asked before (one dict lookup whatever the size). For
  questions asked the first time it grows from 10k to 1M users although the work per
  check is the same (nothing is scanned): memory locality, as the per-user dictionaries
  and grant tuples (~550 MB at 1M) miss the CPU caches on every random user, while the
  baseline set holds only the 20,000 sampled answers. The first-time rows miss the 2x
  goal by 8-16x: a whole decision is some twenty CPython operations (attribute and dict
  reads, a tuple, a call), each 30-90 ns here, against the one hash lookup of the
  baseline; only the memo answers at dictionary speed.
- Start-up reads PostgreSQL in bulk (gateway/engine/bulk_load.py): grants grouped by (role,
  workspace) with the user ids joined in the database, people as driver rows, the
  garbage collector paused. Before, row by row through SQLAlchemy, 1M took 34 s and
  1,039 MB peak. `python -m bench.run --sizes 1M --reuse --keep --startup-only --repeat 3`
  measures it again without the rest.
- Percentiles are of single calls timed with `perf_counter_ns` on a shared 2-core
  machine; means are higher than p50 because of other processes and the garbage
  collector. `DecisionService.check` adds resolving `"user:<id>"`.
- pycasbin `Enforcer` is loaded the way an adapter loads (rules appended, role links
  built once) and asked a few of the same requests (60 s budget); at 1M it is skipped
  (one check takes seconds; its first check at 100k took 342 s). Its load time at 10k
  was measured with `add_policies`, which is quadratic; the 100k figure with the
  adapter-style load.
- The 10k COPY time includes an ANALYZE of the whole shared database (since limited to
  the benchmark's tables). HTTP throughput: `make bench-http`, in its own section below.
- "first check in the big workspace" is the first decision after start-up, in the
  workspace whose members are 10% of the users: it includes expanding the role for the
  workspace's signature.
- The decision log rows: the same checks with every decision logged (sampling 1.0),
  installed as the app installs it, to a file in a temporary directory and to /dev/null
  (standing in for stdout, which carries the measuring process's result), then with the
  log off again to show drift. A logged check only appends to a buffer; the writer
  thread formats and writes beside the checks and shares the GIL with them, which shows
  more in the mean and p99 than at p50.
- The last seen rows (gateway.audit.activity): the same checks with the recorder installed as
  the app installs it (each check adds its (user, workspace) pair to an in-memory set;
  the batched write to the database runs once per flush interval, not during the timing),
  then with recording off again to show drift.
- The policy plan rows (bench/plan.py, a fresh process after the measurements): `ringfence
  policy plan`'s path once the YAML files are read (connecting; the applied rules and
  the live grants read; the plan computed (gateway/policy/plan.py); the plan rendered as
  JSON) for a change to the widest held roles: `viewer`,
  which six of the ten shared roles inherit, loses `reports:read` and `editor` gains
  `users:delete`. The grants table is filled from the data's grant rules first (not
  timed). Peak memory is the process's maximum RSS, interpreter and imports included.
- The concurrency run: 8 threads check known answers (and, one check in ten, users
  whose grants a writer swaps between two roles that both allow the request) while the
  writer applies changes continuously; a wrong answer or an exception is counted.
"""


def goals(results: list[dict[str, Any]]) -> list[str]:
    """The issue's goals, each with what was measured and whether it was met."""
    by = {r["label"]: r for r in results}
    largest = results[-1]
    out = ["## Goals", "", "| goal | measured | met |", "|---|---|---|"]

    def goal(text: str, measured: str, met: bool | None) -> None:
        verdict = "n/a" if met is None else ("yes" if met else "**no**")
        out.append(f"| {text} | {measured} | {verdict} |")

    for r in results:
        ratio50 = r["engine"]["p50"] / r["dict"]["p50"]
        ratio99 = r["engine"]["p99"] / r["dict"]["p99"]
        goal(
            f"{r['label']}: engine p50 and p99 within 2x of a dict/set lookup",
            f"{ratio50:.1f}x / {ratio99:.1f}x ({r['engine']['p50']:.2f} µs vs "
            f"{r['dict']['p50']:.2f} µs at p50)",
            ratio50 <= 2 and ratio99 <= 2,
        )
    for r in results:
        if "engine_cold" not in r:
            continue
        cold50 = r["engine_cold"]["p50"] / r["dict"]["p50"]
        cold99 = r["engine_cold"]["p99"] / r["dict"]["p99"]
        goal(
            f"{r['label']}: the same, for questions asked the first time since a change",
            f"{cold50:.1f}x / {cold99:.1f}x ({r['engine_cold']['p50']:.2f} µs vs "
            f"{r['dict']['p50']:.2f} µs at p50)",
            cold50 <= 2 and cold99 <= 2,
        )
    for r in results:
        if "service_log_file" not in r:
            continue
        off = r["service"]["p50"]  # the log-off run just before (its drift row: after)
        on = r["service_log_file"]["p50"]
        added = on - off
        goal(
            f"{r['label']}: decision log (to a file, every decision) adds at most "
            f"{LOG_GOAL_US:g} µs and {LOG_GOAL_SHARE:.0%} at p50",
            f"+{added:.2f} µs (+{added / off:.0%}): {on:.2f} µs vs {off:.2f} µs; p99 "
            f"{r['service_log_file']['p99']:.2f} µs vs {r['service']['p99']:.2f} µs",
            added <= LOG_GOAL_US and added / off <= LOG_GOAL_SHARE,
        )
    p50s = [r["engine"]["p50"] for r in results]
    goal(
        "engine latency flat from the smallest to the largest size",
        " → ".join(f"{v:.2f} µs" for v in p50s),
        max(p50s) <= 1.5 * min(p50s),
    )
    if "100k" in by and "casbin" in by["100k"]:
        r = by["100k"]
        speedup = r["casbin"]["p50"] / r["engine"]["p50"]
        goal(
            "100k: at least 1,000x faster than pycasbin Enforcer",
            f"{speedup:,.0f}x",
            speedup >= 1000,
        )
    for text_, measured, met in peers.goals(results):
        goal(text_, measured, met)
    for r in results:
        c = r["concurrent"]
        goal(
            f"{r['label']}: zero wrong answers, 8 threads, grants changing",
            f"{c['wrong']} wrong, {c['errors']} errors in {c['checks']:,} checks",
            c["wrong"] == 0 and c["errors"] == 0,
        )
    goal(
        f"{largest['label']}: ready in at most 15 s",
        f"{largest['ready_s']:.1f} s",
        largest["ready_s"] <= 15 if largest["label"] == "1M" else None,
    )
    goal(
        f"{largest['label']}: at most 1.5 GB peak memory",
        f"{largest['peak_mb']:,.0f} MB",
        largest["peak_mb"] <= 1536 if largest["label"] == "1M" else None,
    )
    goal(
        f"{largest['label']}: first check in a workspace of 100k members within 1 ms",
        f"{largest['first_check_big_us']:.0f} µs ({largest['big_members']:,} members)",
        largest["first_check_big_us"] <= 1000,
    )
    for r in results:
        goal(
            f"{r['label']}: 1M checks by never-seen ids grow memory by at most 10 MB",
            f"{r['unknown_ids_growth_mb']:.1f} MB",
            r["unknown_ids_growth_mb"] <= 10,
        )
    goal(
        f"{largest['label']}: one grant change applied within 1 ms",
        f"p99 {max(largest['grant_add']['p99'], largest['grant_remove']['p99']):.0f} µs",
        max(largest["grant_add"]["p99"], largest["grant_remove"]["p99"]) <= 1000,
    )
    if "plan_s" in largest:
        goal(
            f"{largest['label']}: policy plan over 1M users / 10k workspaces in at most "
            f"{PLAN_GOAL_S:g} s and {PLAN_GOAL_MB / 1024:g} GB",
            f"{largest['plan_s']:.1f} s, {largest['plan_peak_mb']:,.0f} MB peak "
            f"({largest['plan_people_affected']:,} people gain or lose)",
            largest["plan_s"] <= PLAN_GOAL_S and largest["plan_peak_mb"] <= PLAN_GOAL_MB
            if largest["label"] == "1M"
            else None,
        )
    http = HTTP_RESULTS.with_suffix(".json")
    if http.exists():
        measured = json.loads(http.read_text(encoding="utf-8"))
        servers = measured["servers"]
        best = max(servers, key=lambda name: servers[name]["check"]["rps"])
        runs, today = servers[best], servers["gunicorn"]
        share = runs["check"]["rps"] / runs["floor"]["rps"]
        goal(
            f"HTTP ({best}): single checks at least 70% of the raw-WSGI floor, same server",
            f"{share:.0%} ({runs['check']['rps']:,.0f} vs {runs['floor']['rps']:,.0f} req/s)",
            share >= 0.70,
        )
        times = runs["check"]["rps"] / today["check"]["rps"]
        goal(
            f"HTTP ({best}): single checks at least 6x gunicorn's, same run",
            f"{times:.2f}x",
            times >= 6,
        )
        per_second = runs["batch"]["rps"] * HTTP_BATCH
        goal(
            f"HTTP ({best}): batches of {HTTP_BATCH} evaluations at least 200,000 decisions/s",
            f"{per_second:,.0f} decisions/s ({per_second / 200_000:.0%} of the goal)",
            per_second >= 200_000,
        )
        two, one = measured.get("two_workers"), servers.get("granian")
        if two and one:
            scale = min(two[e]["rps"] / one[e]["rps"] for e in ("check", "batch"))
            goal(
                "HTTP (granian): two workers at least 1.7x one worker's decisions/s",
                f"{scale:.2f}x (the lower of single checks and batches)",
                scale >= 1.7,
            )
        memory = measured.get("memory")
        if memory and len(memory["served"]["workers"]) > 1:
            first, *extra = memory["served"]["workers"]
            share = max(w["uss"] for w in extra) / first["rss"]
            goal(
                f"HTTP (granian): an extra worker's private memory at most 25% of the "
                f"first one's, {memory['size']} users",
                f"{share:.1%} (USS {max(w['uss'] for w in extra):,.0f} MiB against "
                f"{first['rss']:,.0f} MiB)",
                share <= 0.25,
            )
    else:
        goal("HTTP: single checks and batches (make bench-http)", "not measured", None)
    return out


def postgres_version(url: str) -> str:
    db = create_engine(url)
    with db.connect() as conn:
        version = str(conn.execute(text("SHOW server_version")).scalar_one())
    db.dispose()
    return version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10k,100k,1M")
    parser.add_argument("--concurrent-checks", type=int, default=1_000_000)
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a schema a --keep run left (no generation)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the schemas this run created (else dropped)"
    )
    parser.add_argument(
        "--startup-only",
        action="store_true",
        help="measure the start-up rows only (printed; bench/results.md is left alone)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="start-up measurements per size (--startup-only)"
    )
    parser.add_argument("--schema-prefix", default="ringfence_bench_")
    parser.add_argument(
        "--from-log", type=Path, help="rebuild the report from a run's stderr (JSON lines)"
    )
    args = parser.parse_args()
    url = os.environ.get("RINGFENCE_BENCH_DATABASE_URL", DEFAULT_URL)
    if args.from_log:
        logged = [
            json.loads(line)
            for line in args.from_log.read_text(encoding="utf-8").splitlines()
            if line.startswith("{")
        ]
        report = (
            table(logged, f"PostgreSQL {postgres_version(url)}") + over_http() + other_benchmarks()
        )
        print(report)
        RESULTS.write_text(report, encoding="utf-8")
        return
    labels = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in labels if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")
    if args.repeat < 1 or (args.repeat > 1 and not args.startup_only):
        parser.error("--repeat takes a positive count, and needs --startup-only")
    results = []
    created: list[str] = []
    try:
        for label in labels:
            schema = f"{args.schema_prefix}{label.lower()}"
            loaded = already_loaded(url, schema) if args.reuse else None
            if loaded is None:
                print(f"[bench] {label}: generating and copying into {schema}", file=sys.stderr)
                created.append(schema)
                loaded = copy_into_postgres(url, label, schema)
            else:
                print(f"[bench] {label}: reusing {schema}", file=sys.stderr)
            print(f"[bench] {label}: measuring ({loaded['rules']:,} rules)", file=sys.stderr)
            if args.startup_only:
                runs = []
                for _ in range(args.repeat):
                    runs.append(measure(url, label, loaded, 0, startup_only=True))
                    print(json.dumps({"label": label, **runs[-1]}), file=sys.stderr)
                results.append({"label": label, **loaded, "runs": runs})
                continue
            results.append({"label": label, **measure(url, label, loaded, args.concurrent_checks)})
            print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        if not args.keep:
            for schema in created:
                print(f"[bench] dropping {schema} (--keep keeps it)", file=sys.stderr)
                drop_schema(url, schema)
    postgres = f"PostgreSQL {postgres_version(url)}"
    if args.startup_only:
        print(startup_table(results, postgres))
        return
    report = table(results, postgres) + over_http() + other_benchmarks()
    print(report)
    RESULTS.write_text(report, encoding="utf-8")


def over_http() -> str:
    """bench/http_results.md as a section of the report (empty if it was never run)."""
    if not HTTP_RESULTS.exists():
        return ""
    _title, _, body = HTTP_RESULTS.read_text(encoding="utf-8").partition("\n")
    return "\n## Over HTTP (`make bench-http`: bench/http_results.md)\n" + body


def other_benchmarks() -> str:
    """The figures of the other benchmarks ``make bench`` runs first, each a section of
    the report (empty if it was never run): the SDK (issue 21), SCIM provisioning (18)
    and event streams (24)."""
    sections = [
        (SDK_RESULTS, "The SDK (`make bench-sdk`: bench/sdk_results.md)"),
        (SCIM_RESULTS, "SCIM provisioning (`make bench-scim`: bench/scim_results.md)"),
        (STREAMS_RESULTS, "Event streams (`make bench-streams`: bench/streams_results.md)"),
    ]
    report = ""
    for path, title in sections:
        if path.exists():
            _title, _, body = path.read_text(encoding="utf-8").partition("\n")
            report += f"\n## {title}\n" + body.replace("\n## ", "\n### ")
    return report


if __name__ == "__main__":
    main()
