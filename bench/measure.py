"""Measurements of one size, in a process of its own (clean memory figures): load the
engine from the PostgreSQL schema the data was copied to, then time decisions, changes
and concurrency. Prints one JSON object. Run by ``bench.run``; not a test."""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from bench.data import ACTIONS, BIG_WORKSPACE, RESOURCES
from gateway.audit import activity, decision_log
from gateway.engine.engine import DecisionEngine, RuleAdded, RuleRemoved, SubjectChanged
from gateway.engine.rules import GrantKey, grant_rule, permission_rule
from gateway.replication.loading import reload_engine
from gateway.services.decisions import DecisionService

MODEL = Path(__file__).resolve().parents[1] / "model.conf"
Request = tuple[int, str, str, str]


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "mean": statistics.fmean(ordered),
    }


def timed(check: Callable[[int, str, str, str], Any], requests: Sequence[Request], passes: int):
    clock = time.perf_counter_ns
    samples: list[int] = []
    for _ in range(passes):
        for user, workspace, obj, act in requests:
            start = clock()
            check(user, workspace, obj, act)
            samples.append(clock() - start)
    return {k: v / 1000 for k, v in percentiles(samples).items()}  # µs


def timed_cold(engine: DecisionEngine, requests: Sequence[Request], passes: int):
    """Like :func:`timed` for ``engine.check``, each question asked for the first time
    since the last change: the engine's memo of recent answers is emptied before each
    pass (outside the clock) and every distinct request is asked once per pass."""
    clock = time.perf_counter_ns
    check = engine.check
    distinct = list(dict.fromkeys(requests))
    samples: list[int] = []
    for _ in range(passes):
        engine._memo.answers.clear()
        for user, workspace, obj, act in distinct:
            start = clock()
            check(user, workspace, obj, act)
            samples.append(clock() - start)
    return {k: v / 1000 for k, v in percentiles(samples).items()}  # µs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--casbin-requests", type=int, default=0)
    parser.add_argument("--concurrent-checks", type=int, default=1_000_000)
    parser.add_argument("--startup-only", action="store_true", help="stop after the start-up")
    parser.add_argument(
        "--peers-out", type=Path, help="write the rules, requests and answers for bench.peers"
    )
    args = parser.parse_args()
    out: dict[str, Any] = {}
    db = create_engine(args.url, connect_args={"options": f"-csearch_path={args.schema}"})
    sessions = sessionmaker(db)

    # -- start-up ----------------------------------------------------------------------
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    engine = DecisionEngine(MODEL)
    with sessions() as session:
        reload_engine(engine, db, session)
    out["ready_s"] = time.perf_counter() - start
    gc.collect()
    out["rss_mb"] = rss_mb()
    out["engine_mb"] = out["rss_mb"] - before
    out["peak_mb"] = peak_mb()
    grants = engine._index.grants
    out["grants"] = len(grants)
    out["policy_rules"] = len(engine._index.layer.rules) + len(engine._index.layer.links)
    if args.startup_only:
        json.dump(out, sys.stdout)
        return

    # The first check in the big workspace, before anything was asked there.
    member = next(
        u for u, links in grants.by_user.items() if any(w == BIG_WORKSPACE for _, w in links)
    )
    start = time.perf_counter_ns()
    engine.check(member, BIG_WORKSPACE, "documents", "read")
    out["first_check_big_us"] = (time.perf_counter_ns() - start) / 1000
    with db.connect() as conn:
        out["big_members"] = conn.execute(
            text("SELECT count(*) FROM casbin_rule WHERE ptype = 'g' AND v2 = :w"),
            {"w": BIG_WORKSPACE},
        ).scalar_one()

    # -- requests with known answers ------------------------------------------------------
    rng = random.Random(11)  # noqa: S311 - benchmark data, not secrets
    with db.connect() as conn:
        workspaces = [row[0] for row in conn.execute(text("SELECT slug FROM workspaces"))]
        sample = conn.execute(
            text(
                "SELECT v0, v2 FROM casbin_rule WHERE ptype = 'g' AND v0 LIKE 'user:%' "
                "ORDER BY random() LIMIT 20000"
            )
        ).all()
    requests: list[Request] = []
    for subject, domain in sample:
        user = int(subject.removeprefix("user:"))
        workspace = domain if domain != "*" and rng.random() < 0.7 else rng.choice(workspaces)
        obj = rng.choice(RESOURCES) if rng.random() < 0.95 else "unknown"
        requests.append((user, workspace, obj, rng.choice(ACTIONS)))
    answers = {r: engine.check(*r).allowed for r in requests}
    allowed = {r for r, ok in answers.items() if ok}
    out["allowed_share"] = len(allowed) / len(answers)
    if args.peers_out:  # the same decisions for the peers (bench/peers.py), asked elsewhere
        with db.connect() as conn:
            rows = conn.execute(
                text("SELECT ptype, v0, v1, v2, v3, v4 FROM casbin_rule ORDER BY id")
            ).all()
        with args.peers_out.open("w", encoding="utf-8") as peers_out:
            json.dump(
                {
                    "rules": [[v for v in row if v is not None] for row in rows],
                    "requests": requests,
                    "answers": [answers[r] for r in requests],
                },
                peers_out,
            )
        del rows

    def dict_lookup(user: int, workspace: str, obj: str, act: str) -> bool:
        return (user, workspace, obj, act) in allowed

    subjects = {r: f"user:{r[0]}" for r in requests}

    def checks_through(service: DecisionService) -> Callable[[int, str, str, str], bool]:
        def service_check(user: int, workspace: str, obj: str, act: str) -> bool:
            return service.check(subjects[(user, workspace, obj, act)], workspace, obj, act).allowed

        return service_check

    service = DecisionService(engine)
    service_check = checks_through(service)

    passes = 3
    out["dict"] = timed(dict_lookup, requests, passes)
    out["engine_cold"] = timed_cold(engine, requests, passes)
    for request in requests:  # the memo filled, as repeated questions find it
        engine.check(*request)
    out["engine"] = timed(engine.check, requests, passes)
    out["service"] = timed(service_check, requests, passes)
    out["dict_again"] = timed(dict_lookup, requests, passes)  # drift check

    # -- the decision log's cost: the same checks with every decision logged ------------------
    # Handed to the service the way the app factory hands it (full sampling); its writer
    # thread runs beside the checks, as in the gateway. /dev/null stands in for stdout,
    # which carries this process's JSON result.
    with tempfile.TemporaryDirectory() as tmp:
        for key, target in (
            ("service_log_file", str(Path(tmp) / "decisions.log")),
            ("service_log_devnull", "/dev/null"),
        ):
            log = decision_log.DecisionLog(target, 1.0)
            logged_check = checks_through(DecisionService(engine, decision_log=log))
            out[key] = timed(logged_check, requests, passes)
            log.flush()
            log.close()
            out[key] |= {"written": log.written, "dropped": log.dropped}
    out["service_again"] = timed(service_check, requests, passes)  # log off again: drift

    # -- last seen per workspace (gateway.audit.activity): the same checks, each one noted -------
    # Handed to the service as the app does; the flush interval is long enough that nothing is
    # written while timing (the write is one batched upsert per interval, off the checks).
    recorder = activity.ActivityRecorder(sessions, 3600)
    noted_check = checks_through(DecisionService(engine, activity=recorder))
    out["service_activity"] = timed(noted_check, requests, passes)
    out["service_activity"] |= {"pairs": len(recorder.pairs), "dropped": recorder.dropped}
    recorder.pairs.clear()  # a benchmark's pairs are not written
    recorder.close()
    out["service_activity_off"] = timed(service_check, requests, passes)  # drift

    # -- pycasbin on the same decisions ------------------------------------------------------
    if args.casbin_requests:
        import casbin
        from casbin.util import key_match

        with db.connect() as conn:
            rows = conn.execute(
                text("SELECT ptype, v0, v1, v2, v3, v4 FROM casbin_rule ORDER BY id")
            ).all()
        start = time.perf_counter()
        enforcer = casbin.Enforcer(str(MODEL))
        enforcer.add_named_domain_matching_func("g", key_match)
        # As an adapter's load_policy does: rules appended, role links built once
        # (add_policies checks each rule against the whole list: quadratic).
        model = enforcer.get_model().model
        model["p"]["p"].policy = [
            [v for v in row[1:] if v is not None] for row in rows if row[0] == "p"
        ]
        model["g"]["g"].policy = [[row[1], row[2], row[3]] for row in rows if row[0] == "g"]
        enforcer.build_role_links()
        out["casbin_load_s"] = time.perf_counter() - start
        del rows
        subset = requests[: args.casbin_requests]
        wrong = 0
        samples: list[int] = []
        budget = time.perf_counter() + 60
        for user, workspace, obj, act in subset:
            begin = time.perf_counter_ns()
            got = enforcer.enforce(f"user:{user}", workspace, obj, act, "")
            samples.append(time.perf_counter_ns() - begin)
            wrong += got != answers[(user, workspace, obj, act)]
            if time.perf_counter() > budget:
                break
        out["casbin"] = {k: v / 1000 for k, v in percentiles(samples).items()}
        out["casbin_checked"] = len(samples)
        out["casbin_wrong"] = wrong
        del enforcer
        gc.collect()

    # -- changes ----------------------------------------------------------------------------
    revision = engine.revision
    adds: list[int] = []
    removes: list[int] = []
    while len(adds) < 2000:
        user, workspace = rng.randint(1, args.users), rng.choice(workspaces)
        if ("role:reviewer", workspace) in grants.by_user.get(user, ()):
            continue  # removing it afterwards would change the answers below
        rule = grant_rule(GrantKey(user, "reviewer", workspace))
        revision += 1
        begin = time.perf_counter_ns()
        engine.apply([RuleAdded(rule)], revision)
        adds.append(time.perf_counter_ns() - begin)
        revision += 1
        begin = time.perf_counter_ns()
        engine.apply([RuleRemoved(rule)], revision)
        removes.append(time.perf_counter_ns() - begin)
    out["grant_add"] = {k: v / 1000 for k, v in percentiles(adds).items()}
    out["grant_remove"] = {k: v / 1000 for k, v in percentiles(removes).items()}
    extra = permission_rule("viewer", "webhooks:approve")
    revision += 1
    begin = time.perf_counter_ns()
    engine.apply([RuleAdded(extra)], revision)
    out["role_change_ms"] = (time.perf_counter_ns() - begin) / 1e6
    revision += 1
    engine.apply([RuleRemoved(extra)], revision)
    wrong_after = sum(engine.check(*r).allowed != ok for r, ok in answers.items())
    out["wrong_after_changes"] = wrong_after

    # -- never-seen user ids ------------------------------------------------------------------
    gc.collect()
    before = rss_mb()
    for user in range(args.users + 1000, args.users + 1_001_000):
        service.check(f"user:{user}", "ws00001", "documents", "read")
    gc.collect()
    out["unknown_ids_growth_mb"] = rss_mb() - before

    # -- concurrency: 8 readers, a writer adding and removing grants -----------------------------
    # 100 new users, whose grants a writer swaps while 8 threads check.
    toggled = list(range(args.users + 1, args.users + 101))
    revision += 1
    engine.apply([SubjectChanged(u, f"new{u}@example.com", True) for u in toggled], revision)
    swaps = [
        (
            grant_rule(GrantKey(u, "viewer", workspaces[u % len(workspaces)])),
            grant_rule(GrantKey(u, "editor", workspaces[u % len(workspaces)])),
        )
        for u in toggled
    ]
    engine.apply([RuleAdded(a) for a, _ in swaps], revision + 1)
    revision += 1
    swap_requests = [(u, workspaces[u % len(workspaces)], "documents", "read") for u in toggled]
    per_thread = args.concurrent_checks // 8
    wrong_answers: list[int] = []
    errors: list[int] = []
    done = threading.Event()
    changes = [0]

    def reader(seed: int) -> None:
        local = random.Random(seed)  # noqa: S311
        wrong = failures = 0
        for i in range(per_thread):
            try:
                if i % 10 == 0:
                    request = swap_requests[local.randrange(len(swap_requests))]
                    wrong += not engine.check(*request).allowed
                else:
                    request = requests[local.randrange(len(requests))]
                    wrong += engine.check(*request).allowed != answers[request]
            except Exception:
                failures += 1
        wrong_answers.append(wrong)
        errors.append(failures)

    def writer() -> None:
        rev = revision
        state = 0
        while not done.is_set():
            for a, b in swaps:
                rev += 1
                old, new = (a, b) if state == 0 else (b, a)
                engine.apply([RuleRemoved(old), RuleAdded(new)], rev)
                changes[0] += 1
            state ^= 1

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
    write_thread = threading.Thread(target=writer)
    start = time.perf_counter()
    write_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    write_thread.join()
    elapsed = time.perf_counter() - start
    out["concurrent"] = {
        "checks": per_thread * 8,
        "wrong": sum(wrong_answers),
        "errors": sum(errors),
        "changes": changes[0],
        "checks_per_s": per_thread * 8 / elapsed,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
