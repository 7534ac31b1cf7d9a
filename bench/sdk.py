"""``make bench-sdk``: the SDK's figures (issue 21), not a test.

    python -m bench.sdk [--sizes 100k,1M] [--checks 2000] [--changes 50]

In process, for each size (bench/data.py's data, each measured in a fresh process):

* a local replica check (``ringfence_client.replica.LocalDecider.check``, subjects by
  email, the staleness test and the SDK's ``Decision`` included) beside a dict lookup of
  the same questions and the gateway's engine itself (``DecisionEngine.check`` with user
  ids, and resolving the email first as the decision service does): p50 and p99; and
  the steps of the replica's hot path alone (its memo's lookup, a clock read);
* memory: the replica loaded from a snapshot (the ``GET /v1/snapshot`` document) against
  the gateway's engine loaded from the same rows, each in a process of its own (RSS
  growth after the load, the data set itself excluded).

Over HTTP, a gateway served on loopback (werkzeug's threaded server, as the tests serve
it, on SQLite in a temporary folder):

* ``RingfenceClient.check`` against a raw ``httpx.Client`` posting the same body with the
  same token, alternating, ``--checks`` each: p50 and p99;
* ``check_many`` of 100 against the raw batch request (``POST /access/v1/evaluations``);
* propagation: a workspace created through the admin API, until a ``LocalDecider``
  following the feed (long poll) answers differently for it: p50 and p99 over
  ``--changes`` changes, measured from the admin call's answer.

Writes bench/sdk_results.md. Goals (issue 21): replica p50 within 2x of the dict lookup
at 100k users, its memory at 1M within 1.2x the engine's, propagation p99 <= 100 ms, the
SDK's p50 within 1.2x the raw client's, for one check and for a batch of 100.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.data import ACTIONS, RESOURCES, generate
from bench.measure import percentiles, rss_mb

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model.conf"
OUT = ROOT / "bench" / "sdk_results.md"


# -- in process -------------------------------------------------------------------------


def _state(label: str) -> tuple[dict[str, Any], list[tuple[str, str, str, str]]]:
    """The snapshot document of a data set, and questions about its people."""
    data = generate(label)
    rows = [[rule.ptype, *rule.values] for rule in data.rules()]
    subjects = [
        {"user_id": n, "email": f"user{n}@example.com", "active": True}
        for n in range(1, data.users + 1)
    ]
    state = {
        "revision": 1,
        "rules": rows,
        "subjects": subjects,
        "workspaces": data.workspaces,
        "expiries": [],
    }
    rng = random.Random(11)  # noqa: S311 - benchmark data
    grants = rng.sample(data.grants, min(20_000, len(data.grants)))
    questions = [
        (f"user{g.user_id}@example.com", g.workspace, rng.choice(RESOURCES), rng.choice(ACTIONS))
        for g in grants
        if g.workspace != "*"
    ]
    return state, questions


def _timed(call: Callable[..., Any], questions: Sequence[tuple[Any, ...]], passes: int = 3):
    clock = time.perf_counter_ns
    samples: list[int] = []
    for _ in range(passes):
        for question in questions:
            start = clock()
            call(*question)
            samples.append(clock() - start)
    return {k: v / 1000 for k, v in percentiles(samples).items()}  # µs


def measure_local(label: str, mode: str) -> dict[str, Any]:
    """One size in this process: ``mode`` "replica" (latencies and the replica's memory)
    or "engine" (the gateway engine's memory)."""
    from ringfence_client.replica import LocalDecider

    from gateway.engine.engine import DecisionEngine, SubjectChanged

    state, questions = _state(label)
    out: dict[str, Any] = {"label": label}
    # Both load from the snapshot's body, parsed (new strings, as the gateway's rows read
    # from the database are): the gateway's engine as the gateway loads it (rows and
    # subjects, then the index), the replica as start() loads it.
    body = json.dumps(state)
    del state
    gc.collect()
    before = rss_mb()
    document = json.loads(body)
    if mode == "engine":
        engine = DecisionEngine(MODEL)
        engine.load_rules(
            [tuple(row) for row in document["rules"]],
            [SubjectChanged(s["user_id"], s["email"], s["active"]) for s in document["subjects"]],
            document["workspaces"],
            document["revision"],
        )
        del document
        gc.collect()
        out["engine_mb"] = rss_mb() - before
        return out
    replica = LocalDecider(None, max_staleness=3600)  # type: ignore[arg-type]
    replica._load(document, time.monotonic())
    del document
    gc.collect()
    out["replica_mb"] = rss_mb() - before
    del body

    engine = replica.engine
    allowed = {q for q in questions if engine.check(engine.resolve_subject(q[0]), *q[1:]).allowed}
    out["allowed_share"] = len(allowed) / len(questions)
    ids = [(engine.resolve_subject(q[0]), *q[1:]) for q in questions]

    def dict_lookup(subject: str, workspace: str, obj: str, act: str) -> bool:
        return (subject, workspace, obj, act) in allowed

    def service(subject: str, workspace: str, obj: str, act: str) -> bool:
        return engine.check(engine.resolve_subject(subject), workspace, obj, act).allowed

    for q in questions:  # the memos filled, as repeated questions find them
        replica.check(*q)
    # The replica's hot path, step by step (each a function of the same shape as the
    # dict lookup, so that each adds one step to it): its memo's lookup alone, and a
    # monotonic clock read alone (its staleness test; the wall clock, read only while a
    # time-limited grant is scheduled to end, costs the same).
    memo = replica._memo
    monotonic = time.monotonic

    def memo_lookup(subject: str, workspace: str, obj: str, act: str) -> bool:
        return memo.answers.get((subject, workspace, obj, act)) is not None

    def clock_read(subject: str, workspace: str, obj: str, act: str) -> bool:
        return monotonic() > 0

    out["dict"] = _timed(dict_lookup, questions)
    out["engine"] = _timed(engine.check, ids)
    out["engine_by_email"] = _timed(service, questions)
    out["replica"] = _timed(replica.check, questions)
    out["memo_lookup"] = _timed(memo_lookup, questions)
    out["clock_read"] = _timed(clock_read, questions)
    out["dict_again"] = _timed(dict_lookup, questions)
    return out


def run_local(label: str, mode: str) -> dict[str, Any]:
    result = subprocess.run(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-m", "bench.sdk", "--local", label, "--mode", mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- over HTTP --------------------------------------------------------------------------


@contextlib.contextmanager
def live_gateway() -> Iterator[tuple[str, str, str, str]]:
    """A gateway on loopback: (url, client id, secret, the admin's password)."""
    from click.testing import CliRunner
    from werkzeug.serving import make_server

    from gateway.app import create_app
    from gateway.cli.main import main
    from gateway.config import Settings

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            instance_dir=Path(folder),
            secret_key="bench-" + "x" * 40,
            public_url="http://127.0.0.1",
            admin_email="admin@example.com",
            admin_name="Bench Admin",
            revision_poll_seconds=0.5,
        )
        env = {
            "RINGFENCE_INSTANCE_DIR": folder,
            "RINGFENCE_SECRET_KEY": settings.secret_key,
            "RINGFENCE_ADMIN_EMAIL": settings.admin_email,
            "RINGFENCE_ADMIN_NAME": settings.admin_name,
        }
        runner = CliRunner()
        init = runner.invoke(main, ["init"], env=env)
        password = re.search(r"password: (\S+)", init.output)
        created = runner.invoke(
            main,
            [
                "client",
                "create",
                "--name",
                "bench",
                "--scope",
                "decisions:check",
                "--scope",
                "decisions:replicate",
            ],
            env=env,
        )
        ids = re.search(r"client_id:\s+(\S+)", created.output)
        secret = re.search(r"client_secret:\s+(\S+)", created.output)
        assert password and ids and secret, (init.output, created.output)
        app = create_app(settings)
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.02))
        thread.daemon = True
        thread.start()
        try:
            yield (
                f"http://127.0.0.1:{httpd.server_port}",
                ids.group(1),
                secret.group(1),
                password.group(1),
            )
        finally:
            httpd.shutdown()


def _alternating(
    a: Callable[[], Any], b: Callable[[], Any], n: int
) -> tuple[list[float], list[float]]:
    clock = time.perf_counter_ns
    first: list[float] = []
    second: list[float] = []
    for _ in range(n):
        for call, samples in ((a, first), (b, second)):
            start = clock()
            call()
            samples.append((clock() - start) / 1000)
    return first, second


def measure_http(checks: int, changes: int) -> dict[str, Any]:
    from ringfence_client import Question, RingfenceClient
    from ringfence_client.replica import LocalDecider

    out: dict[str, Any] = {}
    with live_gateway() as (url, client_id, secret, password):
        sdk = RingfenceClient(url, client_id=client_id, client_secret=secret, scope=None)
        token = sdk._token()
        raw = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        admin_token = httpx.post(
            f"{url}/auth/login", json={"email": "admin@example.com", "password": password}
        ).json()["access_token"]
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"})
        assert admin.post("/workspaces", json={"slug": "acme", "name": "Acme"}).status_code == 201

        body = {
            "subject": "admin@example.com",
            "workspace": "acme",
            "resource": "documents",
            "action": "read",
        }

        def raw_check() -> None:
            response = raw.post("/v1/check", json=body)
            assert response.json()["allowed"] is True

        def sdk_check() -> None:
            assert sdk.check("admin@example.com", "acme", "documents", "read").allowed

        for _ in range(200):  # warm both
            raw_check()
            sdk_check()
        raw_samples, sdk_samples = _alternating(raw_check, sdk_check, checks)
        out["raw_check"], out["sdk_check"] = percentiles(raw_samples), percentiles(sdk_samples)

        questions = [
            Question(
                "admin@example.com",
                "acme",
                RESOURCES[i % len(RESOURCES)],
                ACTIONS[i % len(ACTIONS)],
            )
            for i in range(100)
        ]
        batch = {
            "evaluations": [
                {
                    "subject": {"type": "user", "id": q.subject},
                    "action": {"name": q.action},
                    "resource": {
                        "type": q.resource,
                        "id": "*",
                        "properties": {"workspace": q.workspace},
                    },
                }
                for q in questions
            ]
        }

        def raw_batch() -> None:
            assert len(raw.post("/access/v1/evaluations", json=batch).json()["evaluations"]) == 100

        def sdk_batch() -> None:
            assert len(sdk.check_many(questions)) == 100

        for _ in range(20):
            raw_batch()
            sdk_batch()
        raw_samples, sdk_samples = _alternating(raw_batch, sdk_batch, max(100, checks // 10))
        out["raw_batch"], out["sdk_batch"] = percentiles(raw_samples), percentiles(sdk_samples)

        # Propagation: an admin change until the replica's answer changes.
        replica = LocalDecider(sdk, max_staleness=3600, poll_timeout=10).start()
        delays: list[float] = []
        for n in range(changes):
            slug = f"space{n}"
            assert not replica.check("admin@example.com", slug, "documents", "read").allowed
            response = admin.post("/workspaces", json={"slug": slug, "name": slug})
            assert response.status_code == 201, response.text
            answered = time.perf_counter()
            while not replica.check("admin@example.com", slug, "documents", "read").allowed:
                time.sleep(0.0002)
            delays.append((time.perf_counter() - answered) * 1000)
        replica.close()
        out["propagation_ms"] = percentiles(delays)
        sdk.close()
        raw.close()
        admin.close()
    return out


# -- the table ----------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def render(local: list[dict[str, Any]], http: dict[str, Any]) -> str:
    lines = [
        "# SDK benchmark (issue 21)",
        "",
        "`make bench-sdk` (`python -m bench.sdk`), one run on this machine. Latencies in µs",
        "(in process) or as stated; memory is RSS growth after the load, in MB.",
        "",
        "## The local replica, in process",
        "",
        "| size | dict lookup p50 | engine (ids) p50 | engine by email p50 | **replica** p50 "
        "| replica p99 | replica / dict | replica MB | engine MB | replica / engine |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    goals: list[str] = []
    for row in local:
        ratio = row["replica"]["p50"] / row["dict"]["p50"]
        memory = row["replica_mb"] / row["engine_mb"] if row["engine_mb"] else float("nan")
        lines.append(
            f"| {row['label']} | {row['dict']['p50']:.2f} | {row['engine']['p50']:.2f} | "
            f"{row['engine_by_email']['p50']:.2f} | {row['replica']['p50']:.2f} | "
            f"{row['replica']['p99']:.2f} | {ratio:.1f}x | {row['replica_mb']:.0f} | "
            f"{row['engine_mb']:.0f} | {memory:.2f}x |"
        )
        if row["label"] == "100k":
            goals.append(
                f"- replica p50 within 2x of a dict lookup at 100k: {ratio:.1f}x, "
                f"{verdict(ratio <= 2)}"
            )
        if row["label"] == "1M":
            goals.append(
                f"- replica memory at 1M within 1.2x the engine's: {memory:.2f}x, "
                f"{verdict(memory <= 1.2)}"
            )
    c_ratio = http["sdk_check"]["p50"] / http["raw_check"]["p50"]
    b_ratio = http["sdk_batch"]["p50"] / http["raw_batch"]["p50"]
    p99 = http["propagation_ms"]["p99"]
    goals += [
        f"- SDK check p50 within 1.2x the raw client's: {c_ratio:.2f}x, {verdict(c_ratio <= 1.2)}",
        f"- SDK check_many(100) p50 within 1.2x the raw batch: {b_ratio:.2f}x, "
        f"{verdict(b_ratio <= 1.2)}",
        f"- propagation p99 <= 100 ms: {p99:.1f} ms, {verdict(p99 <= 100)}",
    ]
    lines += [
        "",
        "The replica's hot path, step by step (p50, µs, the same run; each measured as a "
        "function of the dict lookup's shape, so each includes the call and the timer):",
        "",
        "| size | dict lookup | replica memo lookup alone | a monotonic clock read alone "
        "| replica check | dict lookup, measured again |",
        "|---|---|---|---|---|---|",
        *(
            f"| {row['label']} | {row['dict']['p50']:.3f} | {row['memo_lookup']['p50']:.3f} | "
            f"{row['clock_read']['p50']:.3f} | {row['replica']['p50']:.3f} | "
            f"{row['dict_again']['p50']:.3f} |"
            for row in local
        ),
        "",
        "Notes: the machine is shared and was loaded by other work during the run (2 cores), "
        "so every figure is inflated and varies between runs; compare ratios within one run, "
        "not figures across runs. A repeated question is answered from the replica's memo "
        "(keyed by the question as asked, forgotten by every change applied), after its "
        "staleness test (one monotonic clock read: a flag flipped by a thread would save it "
        "but could be late, or never flipped in a forked child); while a time-limited grant "
        "is scheduled to end, one wall clock read more (none in this data set).",
    ]
    lines += [
        "",
        "## Over HTTP (loopback, werkzeug's threaded server, SQLite)",
        "",
        "| what | raw httpx p50 | raw p99 | SDK p50 | SDK p99 | SDK / raw (p50) |",
        "|---|---|---|---|---|---|",
        f"| one check (µs) | {http['raw_check']['p50']:.0f} | {http['raw_check']['p99']:.0f} | "
        f"{http['sdk_check']['p50']:.0f} | {http['sdk_check']['p99']:.0f} | {c_ratio:.2f}x |",
        f"| check_many of 100 (µs) | {http['raw_batch']['p50']:.0f} | "
        f"{http['raw_batch']['p99']:.0f} | "
        f"{http['sdk_batch']['p50']:.0f} | {http['sdk_batch']['p99']:.0f} | {b_ratio:.2f}x |",
        "",
        f"Propagation, admin change answered -> the replica's answer changed: p50 "
        f"{http['propagation_ms']['p50']:.1f} ms, p99 {p99:.1f} ms.",
        "",
        "## Goals",
        "",
        *goals,
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100k,1M")
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--local", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.local:
        print(json.dumps(measure_local(args.local, args.mode)))
        return
    local = []
    for label in args.sizes.split(","):
        row = run_local(label, "replica")
        row["engine_mb"] = run_local(label, "engine")["engine_mb"]
        local.append(row)
        print(f"{label}: done", file=sys.stderr)
    http = measure_http(args.checks, args.changes)
    text = render(local, http)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
