"""Propagation benchmark: how long a change committed through replica A's admin API
takes to change the answers of replica B, with both replicas under check load.

    .venv/bin/python bench/propagation.py [--changes 1000] [--load-rate 400]

It starts a private redis-server and two gateway replicas (gunicorn with
deploy/gunicorn.conf.py, the same helper as the integration tests) on a fresh schema
of the PostgreSQL at RINGFENCE_BENCH_DATABASE_URL (default: RINGFENCE_TEST_DATABASE_URL,
else postgresql+psycopg://postgres@127.0.0.1:5432/test), and drops the schema at the
end. Each change deactivates or reactivates one person on A; the delay is from A's
response (the commit is acknowledged) to the first answer from B that shows it, B
being asked in a tight loop. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import Settings
from tests.cluster import RedisServer, Replica, settings_env

OPS = "ops@example.com"
ADMIN = "admin@example.com"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def cli(settings: Settings, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
    env.update(settings_env(settings))
    result = subprocess.run(  # noqa: S603 - our own CLI, with our arguments
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def check_body(subject: str) -> dict[str, str]:
    return {"subject": subject, "workspace": "acme", "resource": "users", "action": "read"}


def load(index: int, url: str, rate: float, stop: Any, counts: Any) -> None:
    """Checks at up to ``rate`` per second (paced, so the load does not starve the CPU)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            client.post("/v1/check", json=check_body(ADMIN))
            counts[index] += 1
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))


def run(changes: int, load_threads: int, load_rate: float, base_url: str) -> str:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin_db = create_engine(base_url)
    with admin_db.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    workdir = Path(tempfile.mkdtemp(prefix="ringfence-bench-"))
    started: list[RedisServer | Replica] = []
    try:
        redis_server = RedisServer(workdir / "redis").start()
        started.append(redis_server)
        settings = Settings(
            instance_dir=workdir / "instance",
            database_url=url.render_as_string(hide_password=False),
            secret_key="bench-" + uuid.uuid4().hex,
            admin_email=ADMIN,
            watcher_url=f"redis://127.0.0.1:{redis_server.port}/0",
            log_level="WARNING",
            decisions_allow_loopback=True,  # the load comes from loopback, without tokens
        )
        password = re.search(r"password: (\S+)", cli(settings, "init"))
        assert password, "ringfence init printed no password"
        cli(settings, "create-admin", "--email", OPS, "--name", "Ops")
        a = Replica("a", settings, workdir / "logs").start(wait=False)
        b = Replica("b", settings, workdir / "logs").start(wait=False)
        started += [a, b]
        a.wait_ready()
        b.wait_ready()
        with a.client() as anonymous:
            token = anonymous.post(
                "/auth/login", json={"email": ADMIN, "password": password.group(1)}
            ).json()["access_token"]
        admin = a.client(token)
        assert admin.post("/workspaces", json={"slug": "acme", "name": "Acme"}).status_code == 201
        ops_id = next(u["id"] for u in admin.get("/users", params={"q": "ops"}).json())
        b_client = b.client()

        # Check load on both replicas, for someone the changes do not concern; in other
        # processes, so that the load does not slow the measuring loop down.
        stop = multiprocessing.Event()
        load_counts = multiprocessing.Array("l", load_threads)
        loaders = [
            multiprocessing.Process(
                target=load,
                args=(i, (a.url, b.url)[i % 2], load_rate / load_threads, stop, load_counts),
                daemon=True,
            )
            for i in range(load_threads)
        ]
        for process in loaders:
            process.start()

        delays: list[float] = []
        write_times: list[float] = []
        active = True
        bench_started = time.monotonic()
        for _ in range(changes):
            active = not active
            sent = time.monotonic()
            response = admin.post(f"/users/{ops_id}/{'reactivate' if active else 'deactivate'}")
            acknowledged = time.monotonic()
            assert response.status_code == 200, response.text
            revision = int(response.headers["X-Ringfence-Revision"])
            write_times.append(acknowledged - sent)
            while True:
                body = b_client.post("/v1/check", json=check_body(OPS)).json()
                if body["allowed"] is active and body["revision"] >= revision:
                    delays.append(time.monotonic() - acknowledged)
                    break
                if time.monotonic() - acknowledged > 30:
                    raise RuntimeError(f"revision {revision} did not reach B in 30 s")
        elapsed = time.monotonic() - bench_started
        stop.set()
        for process in loaders:
            process.join(timeout=10)
        metrics = httpx.get(f"{b.url}/metrics", timeout=5).text
        admin.close()
        b_client.close()
    finally:
        for thing in reversed(started):
            thing.stop()
        with admin_db.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin_db.dispose()

    def gauge(name: str) -> str:
        match = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
        return str(int(float(match.group(1)))) if match else "?"

    ms = [d * 1000 for d in delays]
    rows = [
        ("changes", f"{len(ms)}"),
        ("propagation p50 (ms)", f"{percentile(ms, 50):.1f}"),
        ("propagation p90 (ms)", f"{percentile(ms, 90):.1f}"),
        ("propagation p99 (ms)", f"{percentile(ms, 99):.1f}"),
        ("propagation max (ms)", f"{max(ms):.1f}"),
        ("propagation mean (ms)", f"{statistics.fmean(ms):.1f}"),
        ("admin write on A p50 (ms)", f"{percentile([w * 1000 for w in write_times], 50):.1f}"),
        ("check load (requests/s, both replicas)", f"{sum(load_counts) / elapsed:.0f}"),
        ("B: revisions applied from the log", gauge("ringfence_incremental_applies_total")),
        ("B: full reloads", gauge("ringfence_full_reloads_total")),
    ]
    lines = ["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--load-threads", type=int, default=2, help="load processes")
    parser.add_argument(
        "--load-rate", type=float, default=400, help="checks per second, all replicas together"
    )
    args = parser.parse_args()
    base_url = os.environ.get("RINGFENCE_BENCH_DATABASE_URL") or os.environ.get(
        "RINGFENCE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    print(run(args.changes, args.load_threads, args.load_rate, base_url))


if __name__ == "__main__":
    main()
