"""``make bench-streams``: event streams' figures (issue 24), not a test.

    python -m bench.streams [--events 5000] [--changes 300]

A gateway in process on SQLite in a temporary folder (``ringfence init``, then
``create_app``: the embedded default, so delivery runs in the gateway's own delivery
thread, woken by each commit, as without a broker):

* **delivery**: one webhook stream to an HTTPS receiver on loopback, in a process of its
  own (it verifies every request with the ``standardwebhooks`` library, as a receiver
  should, and answers 204); ``--events`` audit events committed in one transaction, timed
  from that commit until the stream's cursor reaches the last of them: events/s. Goal:
  at least 1,000/s to one receiver.
* **an admin change with 10 streams**: a workspace rename through the services
  (``WorkspaceService.rename``: a revision, its audit event, COMMIT, the engine update),
  ``--changes`` times with no stream, then with 10 active streams (JSON Lines files,
  delivering in the background as the changes come): p50 and p99, and the difference.
  Goal: at most 1 ms added at p50.
* **decision events at rate 1**: ``--checks`` ``POST /v1/check`` through the app's WSGI
  stack (the check lane, a remembered service token) with no stream wanting decisions,
  then with a JSON Lines stream of acme taking every decision (``decision_sample`` 1,
  its writer and delivery running meanwhile): p50 and p99, and the difference. Goal:
  nothing measurable added at p50.

Writes bench/streams_results.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

RESULTS = Path(__file__).with_name("streams_results.md")


def _receiver(folder: str, pipe: Any) -> None:
    from tests.stream_support import make_tls_files, webhook_receiver

    tls = make_tls_files(Path(folder) / "tls")
    with webhook_receiver(tls) as hook:
        pipe.send((hook.url, str(tls.cert)))
        secret = pipe.recv()
        hook.secrets = [secret]
        pipe.recv()  # until told to stop
        pipe.send((len(hook.events), hook.refused))


def _fresh_database(url: str) -> str:
    from bench.scim import _fresh_database as fresh

    return fresh(url, "ringfence_bench_streams")


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument(
        "--url",
        default="",
        help="a PostgreSQL server (its database is only used to create "
        "ringfence_bench_streams, dropped first); default: SQLite in a temporary folder",
    )
    args = parser.parse_args()
    database_url = _fresh_database(args.url) if args.url else ""

    from click.testing import CliRunner

    from gateway.app import create_app
    from gateway.cli.main import main as cli
    from gateway.config import Settings
    from gateway.db.models import AuditChain, EventStream
    from gateway.services import Services
    from gateway.services.base import SYSTEM, AuditTarget
    from gateway.web.state import gateway_state

    with tempfile.TemporaryDirectory() as folder:
        parent, child = multiprocessing.Pipe()
        receiver = multiprocessing.get_context("spawn").Process(
            target=_receiver, args=(folder, child), daemon=True
        )
        receiver.start()
        url, ca_file = parent.recv()
        settings = Settings(
            instance_dir=Path(folder) / "instance",
            secret_key="bench-" + "x" * 40,
            public_url="http://127.0.0.1",
            admin_email="admin@example.com",
            admin_name="Bench Admin",
            revision_poll_seconds=0,
            database_url=database_url,
            stream_allow_private_destinations=True,
            stream_ca_file=Path(ca_file),
        )
        env = {
            "RINGFENCE_INSTANCE_DIR": str(settings.instance_dir),
            "RINGFENCE_SECRET_KEY": settings.secret_key,
            "RINGFENCE_ADMIN_EMAIL": settings.admin_email,
            "RINGFENCE_ADMIN_NAME": settings.admin_name,
            "RINGFENCE_DATABASE_URL": database_url,
        }
        init = CliRunner().invoke(cli, ["init"], env=env)
        assert re.search(r"password: (\S+)", init.output), init.output
        app = create_app(settings)
        state = gateway_state(app)

        def services(session: Any) -> Services:
            return Services(session, state.engine, state.notifier, settings)

        def head() -> int:
            with state.session_factory() as session:
                return int(session.scalar(select(AuditChain.head_id)) or 0)

        def cursor(stream_id: int) -> int:
            with state.session_factory() as session:
                return int(
                    session.scalar(select(EventStream.cursor).where(EventStream.id == stream_id))
                    or 0
                )

        def renames(label: str) -> list[float]:
            samples = []
            for i in range(args.changes):
                with state.session_factory() as session:
                    start = time.perf_counter()
                    services(session).workspaces.rename(SYSTEM, "acme", f"Acme {label} {i}")
                    samples.append((time.perf_counter() - start) * 1000)
            return samples

        with state.session_factory() as session:
            services(session).workspaces.create(SYSTEM, "acme", "Acme")

        # -- an admin change, without and with 10 streams ------------------------------
        renames("warm-up")[:0]
        without = renames("without")
        with state.session_factory() as session:
            for n in range(10):
                services(session).streams.create(
                    SYSTEM, f"file {n}", "*", "file", f"s{n}.jsonl", ["*"]
                )
        with_streams = renames("with")

        # -- /v1/check, without and with a stream of every decision ----------------------
        made_client = CliRunner().invoke(
            cli, ["client", "create", "--name", "bench", "--scope", "decisions:check"], env=env
        )
        found = re.search(r"client_id:\s+(\S+)[\s\S]*client_secret:\s+(\S+)", made_client.output)
        assert found, made_client.output
        web = app.test_client()
        token = web.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(found.group(1), found.group(2)),
        ).get_json()["access_token"]
        question = {
            "subject": "admin@example.com",
            "workspace": "acme",
            "resource": "documents",
            "action": "read",
        }
        headers = {"Authorization": f"Bearer {token}"}

        def checks() -> list[float]:
            samples = []
            for _ in range(args.checks):
                start = time.perf_counter()
                answer = web.post("/v1/check", json=question, headers=headers)
                samples.append((time.perf_counter() - start) * 1000)
                assert answer.status_code == 200, answer.data
            return samples

        checks()[:0]  # warm-up: the token remembered, the lane taken
        feed = state.decision_feed
        assert feed is not None
        checks_without = checks()
        with state.session_factory() as session:
            services(session).streams.create(
                SYSTEM, "decisions", "acme", "file", "decisions.jsonl", ["bench.none"], 1.0
            )
        feed.refresh()
        checks_with = checks()
        feed.flush()
        kept, dropped = feed.written, feed.dropped
        # The decision path's own part, alone: DecisionFeed.record with a stream at
        # rate 1 (a feed without a writer, so only the call is timed).
        from gateway.audit.decision_feed import DecisionFeed

        alone = DecisionFeed(state.session_factory, limit=10**7)
        alone.close()
        alone.wants = ({"acme": 1.0}, 0.0)
        calls = 200_000
        start = time.perf_counter()
        for _ in range(calls):
            alone.record("admin@example.com", "acme", "documents", "read", None)
        record_ns = (time.perf_counter() - start) / calls * 1e9
        alone.wants = ({}, 0.0)
        start = time.perf_counter()
        for _ in range(calls):
            alone.record("admin@example.com", "acme", "documents", "read", None)
        idle_ns = (time.perf_counter() - start) / calls * 1e9

        # -- delivery to one receiver --------------------------------------------------
        with state.session_factory() as session:
            made = services(session).streams.create(
                SYSTEM, "bench", "*", "webhook", url, ["bench.*"]
            )
            for stream in session.scalars(select(EventStream).where(EventStream.kind == "file")):
                session.delete(stream)  # only the webhook delivers from here on
            session.commit()
        parent.send(made.secret)
        with state.session_factory() as session:
            uow = services(session).uow
            with uow.events_only(SYSTEM) as changes:
                for i in range(args.events):
                    changes.audit("bench.event", AuditTarget.SETTINGS, i)
            start = time.perf_counter()
        last = head()
        while cursor(made.stream.id) < last:
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        parent.send("stop")
        received, refused = parent.recv()
        receiver.join(5)

    rate = args.events / elapsed
    p50_without, p50_with = statistics.median(without), statistics.median(with_streams)
    added = p50_with - p50_without
    c50_without, c50_with = statistics.median(checks_without), statistics.median(checks_with)
    check_added = c50_with - c50_without
    rows = [
        "# Event streams (issue 24)",
        "",
        f"`python -m bench.streams` ({'PostgreSQL' if args.url else 'SQLite'}, in process, "
        "the embedded default's delivery thread; the receiver in a process of its own, "
        "verifying each signature). Load average at the end: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "| measure | figure | goal | met |",
        "|---|---|---|---|",
        f"| events delivered to one webhook receiver | {rate:,.0f}/s ({args.events} events in "
        f"{elapsed:.2f} s; received {received}, refused {refused}) | >= 1,000/s | "
        f"{'yes' if rate >= 1000 and refused == 0 else 'no'} |",
        f"| admin change (workspace rename), no stream | p50 {p50_without:.2f} ms, p99 "
        f"{_percentile(without, 0.99):.2f} ms | | |",
        f"| the same with 10 active streams | p50 {p50_with:.2f} ms, p99 "
        f"{_percentile(with_streams, 0.99):.2f} ms | | |",
        f"| added at p50 by 10 streams | {added:+.2f} ms | <= 1 ms | "
        f"{'yes' if added <= 1 else 'no'} |",
        f"| POST /v1/check (check lane), no stream wants decisions | p50 {c50_without:.3f} ms, "
        f"p99 {_percentile(checks_without, 0.99):.3f} ms | | |",
        f"| the same, a stream taking every decision (rate 1) | p50 {c50_with:.3f} ms, p99 "
        f"{_percentile(checks_with, 0.99):.3f} ms ({kept} decision events written, {dropped} "
        "dropped) | | |",
        f"| added at p50 by decision events at rate 1 | {check_added * 1000:+.0f} µs | "
        f"nothing measurable | {'yes' if check_added <= 0.02 else 'no'} |",
        f"| the decision path's own part (DecisionFeed.record) | {record_ns:.0f} ns a "
        f"decision kept, {idle_ns:.0f} ns when no stream wants it | | |",
        "",
    ]
    target = RESULTS.with_name(f"streams_results{'_postgresql' if args.url else ''}.md")
    target.write_text("\n".join(rows))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
