"""``make bench-scim``: SCIM provisioning's figures (issue 18), not a test.

    python -m bench.scim [--users 1000] [--groups 20] [--deactivate 100] [--clients 4]
        [--rounds 3] [--workers 2] [--url postgresql://...]

A gateway on SQLite in a temporary folder, or on PostgreSQL (``--url``: a database
``ringfence_bench_scim`` is created there, dropped first), set up as an installation is
(``ringfence init``), with a directory connection whose groups map to ``editor``, served
over real HTTP on loopback in two ways, one after the other, each on a fresh database:

1. **in process**: ``create_app`` in this process, served by werkzeug (threaded): the
   clients below share its interpreter (and its lock) with the gateway;
2. **as deployed** (``--workers`` N, 2; 0 skips it): ``ringfence serve --workers N``, the
   deploy's server in processes of their own (the app built once, forked into N workers),
   the clients in this process.

Both log at WARNING (no line per request; deployments behind a load balancer usually log
there), are warmed up (each client connection asks for ``/ServiceProviderConfig``: a
process imports the SCIM code at its first SCIM request) and measure, as a directory
would push:

* **provisioning**: ``--users`` POST /Users one after the other: users/s. Goal: at least
  200 users/s on PostgreSQL. Then as many other people pushed by ``--clients`` clients at
  once (4; directories such as Okta push on several connections), ``--rounds`` times (3;
  the median round is reported, each listed): users/s. The pushing
  clients are lean, one kept-alive ``http.client`` connection each (a real directory
  does not run on the gateway's machine; httpx cost 1.4 ms of CPU a request here, a
  tenth of a create, on the same two cores). With each rate, the CPU a created user
  cost: the gateway's processes, the PostgreSQL backends of the bench's database (with
  ``--url``) and the clients' threads.

and in process only (one process: no change notice between workers is measured here,
``make bench-propagation`` does that):

* **groups**: ``--groups`` POST /Groups, each with its share of the users as members in
  the one request (every member gets ``editor``): the time per group.
* **deactivation**: ``--deactivate`` people deactivated as Okta does (PATCH, no path,
  ``{"active": false}``); after each answer, ``POST /v1/check`` for them until it denies:
  the time from the SCIM answer to the first deny (p50, max). Goal: the last one within
  1 s of its answer. (This process applies its own commit before answering.)

Writes bench/scim_results.md, with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from werkzeug.serving import make_server

RESULTS = Path(__file__).with_name("scim_results.md")
ROOT = Path(__file__).resolve().parent.parent
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _fresh_database(url: str, name: str = "ringfence_bench_scim") -> str:
    """Database ``name`` on the server of ``url``, dropped first: its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = create_engine(url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    server.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def person(n: int) -> dict[str, Any]:
    """The n-th person a directory pushes (Okta's shape)."""
    return {
        "schemas": [USER],
        "userName": f"person{n}@example.com",
        "name": {"givenName": "Person", "familyName": str(n)},
        "emails": [{"value": f"person{n}@example.com", "type": "work", "primary": True}],
        "active": True,
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--deactivate", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4, help="clients pushing at once")
    parser.add_argument(
        "--workers", type=int, default=2, help="workers of `ringfence serve` (0: skip that run)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="pushes by --clients at once (the median counts)"
    )
    parser.add_argument("--url", default="", help="a PostgreSQL server; default: SQLite")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs = {"in process": _in_process(args)}
    if args.workers > 0:
        runs[f"ringfence serve, {args.workers} workers"] = _deployed(args)
    backend = "PostgreSQL" if args.url else "SQLite"
    _report(runs, backend, args, load_before, os.getloadavg())


def _settings(folder: str, database_url: str) -> Any:
    from gateway.config import Settings

    return Settings(
        instance_dir=Path(folder) / "instance",
        secret_key="bench-" + "x" * 40,
        public_url="http://127.0.0.1",
        admin_email="admin@example.com",
        admin_name="Bench Admin",
        revision_poll_seconds=0,
        database_url=database_url,
        log_level="WARNING",
    )


def _environment(settings: Any) -> dict[str, str]:
    """The settings above as a process reads them: only these RINGFENCE_ variables (one
    of the shell's, say one letting loopback calls skip a check, must not count)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")},
        "RINGFENCE_INSTANCE_DIR": str(settings.instance_dir),
        "RINGFENCE_SECRET_KEY": settings.secret_key,
        "RINGFENCE_PUBLIC_URL": settings.public_url,
        "RINGFENCE_ADMIN_EMAIL": settings.admin_email,
        "RINGFENCE_ADMIN_NAME": settings.admin_name,
        "RINGFENCE_REVISION_POLL_SECONDS": "0",
        "RINGFENCE_DATABASE_URL": settings.database_url,
        "RINGFENCE_LOG_LEVEL": settings.log_level,
        "RINGFENCE_ACCESS_LOG": "",
    }


def _init(settings: Any) -> str:
    """``ringfence init`` on the settings' database: the admin's password."""
    from click.testing import CliRunner

    from gateway.cli.main import main as cli

    init = CliRunner().invoke(cli, ["init"], env=_environment(settings))
    password = re.search(r"password: (\S+)", init.output)
    assert password, init.output
    return password.group(1)


def _in_process(args: Any) -> dict[str, Any]:
    from gateway.app import create_app
    from gateway.web.state import gateway_state

    database_url = _fresh_database(args.url) if args.url else ""
    with tempfile.TemporaryDirectory() as folder:
        settings = _settings(folder, database_url)
        password = _init(settings)
        app = create_app(settings)
        # As the settings say, whatever configured logging first (the CLI's init): no
        # line per request from the clients (httpx) or the server (werkzeug, which sets
        # its own logger to INFO unless it has a level).
        for name in ("", "werkzeug"):
            logging.getLogger(name).setLevel(settings.log_level)
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            # The gateway is this process: its CPU includes the clients'.
            cpu = Cpu(os.getpid(), database_url, clients_inside=True)
            return _run(f"http://127.0.0.1:{httpd.server_port}", settings, password, args, cpu)
        finally:
            httpd.shutdown()
            gateway_state(app).close()


def _deployed(args: Any) -> dict[str, Any]:
    database_url = _fresh_database(args.url) if args.url else ""
    with tempfile.TemporaryDirectory() as folder:
        settings = _settings(folder, database_url)
        password = _init(settings)
        with _serving(_environment(settings), args.workers, Path(folder) / "serve.log") as (
            base,
            pid,
        ):
            cpu = Cpu(pid, database_url)
            return _run(base, settings, password, args, cpu, provisioning_only=True)


@contextlib.contextmanager
def _serving(env: dict[str, str], workers: int, log: Path) -> Iterator[tuple[str, int]]:
    """``ringfence serve --workers N`` on a free port until the block ends: its URL and
    its main process's id."""
    from bench.http import free_port, server_command, serving

    port = free_port()
    command = server_command("granian", port, None, threads=8, workers=workers)
    with serving(command, {**env, "WEB_CONCURRENCY": str(workers)}, port, log) as process:
        yield f"http://127.0.0.1:{port}", process.pid


def _all_at_once(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Cpu:
    """CPU seconds used so far by the gateway (a process and its children) and by the
    PostgreSQL backends of its database (``database_url``; none for SQLite)."""

    def __init__(self, pid: int, database_url: str, clients_inside: bool = False) -> None:
        self.pid = pid
        self.database_url = database_url
        self.clients_inside = clients_inside  # the gateway's process runs the clients too

    def gateway(self) -> float:
        import psutil

        main = psutil.Process(self.pid)
        processes = [main] if self.clients_inside else [main, *main.children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    def database(self) -> float:
        if not self.database_url:
            return 0.0
        import psutil
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        monitor = create_engine(url)
        try:
            with monitor.connect() as connection:
                pids = connection.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = :name "
                        "AND pid <> pg_backend_pid()"
                    ),
                    {"name": url.database},
                ).scalars()
                total = 0.0
                for pid in pids:
                    with contextlib.suppress(psutil.Error):
                        total += sum(psutil.Process(pid).cpu_times()[:2])
                return total
        finally:
            monitor.dispose()


class Directory:
    """One connection of a directory pushing users: a kept-alive ``http.client``
    connection, as lean a client as there is, and the CPU its thread used pushing."""

    def __init__(self, base: str, token: str) -> None:
        url = urlsplit(base)
        self.prefix = url.path.rstrip("/")
        self.connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        self.cpu = 0.0

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.connection.request(
            "POST", f"{self.prefix}/Users", json.dumps(resource).encode(), self.headers
        )
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 201:
            raise RuntimeError(f"POST /Users answered {response.status}: {body[:500]!r}")
        created: dict[str, Any] = json.loads(body)
        return created

    def push(self, resources: Iterator[dict[str, Any]]) -> list[str]:
        """Create each user; their ids. The thread's CPU for it is added to ``cpu``."""
        started = time.thread_time()
        try:
            return [self.create(resource)["id"] for resource in resources]
        finally:
            self.cpu += time.thread_time() - started

    def close(self) -> None:
        self.connection.close()


def _run(
    base: str,
    settings: Any,
    password: str,
    args: Any,
    cpu: Cpu,
    provisioning_only: bool = False,
) -> dict[str, Any]:
    from tests.helpers import create_client

    with httpx.Client(base_url=base, timeout=60) as anonymous:
        login = anonymous.post(
            "/auth/login", json={"email": "admin@example.com", "password": password}
        )
        admin = httpx.Client(
            base_url=base,
            timeout=60,
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
        admin.post("/workspaces", json={"slug": "acme", "name": "Acme"}).raise_for_status()
        mapping = {f"team-{n}": "editor" for n in range(args.groups)}
        made = admin.post(
            "/directory-connections",
            json={"workspace": "acme", "name": "bench", "group_roles": mapping},
        )
        made.raise_for_status()
        token = made.json()["token"]
        client_id, secret = create_client(settings, "decisions:check", name="bench")
        issued = anonymous.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "decisions:check"},
            auth=(client_id, secret),
        )
        issued.raise_for_status()
        checks = httpx.Client(
            base_url=base,
            timeout=60,
            headers={"Authorization": f"Bearer {issued.json()['access_token']}"},
        )
    scim = httpx.Client(
        base_url=f"{base}/scim/v2",
        timeout=60,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
    )

    # Not timed: a process imports the SCIM code at its first SCIM request (every
    # worker's, as far as the connections below reach them).
    def warm() -> None:
        with httpx.Client(base_url=str(scim.base_url), headers=scim.headers, timeout=60) as own:
            for _ in range(5):
                own.get("/ServiceProviderConfig").raise_for_status()

    warmers = [threading.Thread(target=warm) for _ in range(args.clients)]
    for thread in warmers:
        thread.start()
    for thread in warmers:
        thread.join()
    scim.get("/ServiceProviderConfig").raise_for_status()

    def measured(directories: list[Directory], work: Any) -> tuple[float, dict[str, float]]:
        """Seconds ``work`` took, and the CPU each user it created cost (ms)."""
        gateway, database = cpu.gateway(), cpu.database()
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
        gateway, database = cpu.gateway() - gateway, cpu.database() - database
        clients = sum(d.cpu for d in directories)
        if cpu.clients_inside:
            gateway -= clients
        return seconds, {
            "gateway": 1000 * gateway / args.users,
            "database": 1000 * database / args.users,
            "clients": 1000 * clients / args.users,
        }

    one = Directory(f"{base}/scim/v2", token)
    ids: list[str] = []
    provisioning, cpu_one = measured(
        [one], lambda: ids.extend(one.push(person(n) for n in range(args.users)))
    )
    one.close()

    # As directories that push on several connections at once (Okta does): --clients
    # clients, each its own connection, the same number of other people between them;
    # --rounds times (other people each time), the median round reported: a shared
    # machine's speed moves from one minute to the next.
    rounds: list[tuple[float, dict[str, float]]] = []
    for round_ in range(args.rounds):
        first = args.users * (10 + round_)
        slices = [range(first + c, first + args.users, args.clients) for c in range(args.clients)]
        directories = [Directory(f"{base}/scim/v2", token) for _ in slices]
        threads = [
            threading.Thread(target=d.push, args=((person(n) for n in numbers),))
            for d, numbers in zip(directories, slices, strict=True)
        ]
        rounds.append(measured(directories, partial(_all_at_once, threads)))
        for directory in directories:
            directory.close()
    concurrent = statistics.median(seconds for seconds, _ in rounds)
    figures: dict[str, Any] = {
        "users": len(ids),
        "provisioning_s": provisioning,
        "users_per_s": len(ids) / provisioning,
        "cpu_one": cpu_one,
        "clients": args.clients,
        "concurrent_users": args.users,
        "concurrent_s": concurrent,
        "concurrent_users_per_s": args.users / concurrent,
        "concurrent_rounds": [args.users / seconds for seconds, _ in rounds],
        "cpu_many": {
            part: statistics.median(cpu[part] for _, cpu in rounds) for part in rounds[0][1]
        },
    }
    if provisioning_only:
        for client in (scim, checks, admin):
            client.close()
        return figures

    share = max(1, len(ids) // max(1, args.groups))
    group_times = []
    for g in range(args.groups):
        members = [{"value": i} for i in ids[g * share : (g + 1) * share]]
        t = time.perf_counter()
        response = scim.post(
            "/Groups", json={"schemas": [GROUP], "displayName": f"team-{g}", "members": members}
        )
        response.raise_for_status()
        group_times.append(time.perf_counter() - t)

    def allowed(n: int) -> bool:
        answer = checks.post(
            "/v1/check",
            json={
                "subject": f"person{n}@example.com",
                "workspace": "acme",
                "resource": "documents",
                "action": "write",
            },
        )
        return bool(answer.json()["allowed"])

    gaps = []
    deactivated = 0
    for n in range(min(args.deactivate, share * args.groups)):
        assert allowed(n), f"person{n} should be an editor before"
        response = scim.patch(
            f"/Users/{ids[n]}",
            json={
                "schemas": [PATCH],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            },
        )
        answered = time.perf_counter()
        response.raise_for_status()
        while allowed(n):
            if time.perf_counter() - answered > 10:
                raise AssertionError(f"person{n} still allowed 10 s after deactivation")
        gaps.append(time.perf_counter() - answered)
        deactivated += 1
    for client in (scim, checks, admin):
        client.close()
    return {
        **figures,
        "groups": args.groups,
        "members_per_group": share,
        "group_p50_ms": statistics.median(group_times) * 1000,
        "group_max_ms": max(group_times) * 1000,
        "deactivated": deactivated,
        "deny_p50_ms": statistics.median(gaps) * 1000,
        "deny_p99_ms": _percentile(gaps, 0.99) * 1000,
        "deny_max_ms": max(gaps) * 1000,
    }


def _report(
    runs: dict[str, dict[str, Any]],
    backend: str,
    args: Any,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    names = list(runs)
    first = runs[names[0]]
    best = max(max(f["users_per_s"], f["concurrent_users_per_s"]) for f in runs.values())
    met_rate = "met" if best >= 200 else "not met"
    met_deny = "met" if first["deny_max_ms"] <= 1000 else "not met"
    served = {
        "in process": "werkzeug (threaded), the clients in the same process (the gateway's "
        "CPU is the process's less the clients' threads')",
        **{
            name: f"`ringfence serve --workers {args.workers}`, processes of their own"
            for name in names[1:]
        },
    }

    def row(measure: str, goal: str, cell: Any) -> str:
        return f"| {measure} | " + " | ".join(cell(runs[n]) for n in names) + f" | {goal} |"

    def rate(count: str, seconds: str, per_s: str) -> Any:
        return lambda f: f"{f[count]} in {f[seconds]:.1f} s: **{f[per_s]:.0f} users/s**"

    def cost(key: str) -> Any:
        def cell(f: dict[str, Any]) -> str:
            c = f[key]
            total = c["gateway"] + c["database"] + c["clients"]
            parts = f"{c['gateway']:.1f} + {c['database']:.1f} + {c['clients']:.1f}"
            return f"{parts} = **{total:.1f} ms**"

        return cell

    lines = [
        f"# SCIM provisioning ({backend})",
        "",
        f"`python -m bench.scim --users {args.users} --groups {args.groups} --deactivate "
        f"{args.deactivate} --clients {args.clients} --rounds {args.rounds} --workers "
        f"{args.workers}`: one directory connection, over HTTP on loopback, users pushed by "
        "lean clients (one kept-alive `http.client` connection each). Served "
        + "; ".join(f"{name}: {served[name]}" for name in names)
        + ". Logging at WARNING. Load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in load_after)
        + f" ({os.cpu_count()} cores).",
        "",
        "| measure | " + " | ".join(names) + " | goal |",
        "|---|" + "---|" * len(names) + "---|",
        row(
            "users created, one request at a time",
            f"≥ 200/s on PostgreSQL ({met_rate} here, best of the rows)",
            rate("users", "provisioning_s", "users_per_s"),
        ),
        row(
            "CPU a user created, one at a time: gateway + PostgreSQL + client",
            "(2 cores at 200/s: 10 ms)",
            cost("cpu_one"),
        ),
        row(
            f"users created by {args.clients} clients at once, median of {args.rounds} rounds",
            "(the same goal, for a directory pushing on several connections)",
            lambda f: (
                rate("concurrent_users", "concurrent_s", "concurrent_users_per_s")(f)
                + " (rounds: "
                + ", ".join(f"{r:.0f}" for r in f["concurrent_rounds"])
                + ")"
            ),
        ),
        row(
            f"CPU a user created by {args.clients} clients, median: gateway + PostgreSQL + clients",
            "(2 cores at 200/s: 10 ms)",
            cost("cpu_many"),
        ),
        row(
            f"groups of {first['members_per_group']} members, one POST each",
            "—",
            lambda f: (
                f"p50 {f['group_p50_ms']:.0f} ms, max {f['group_max_ms']:.0f} ms"
                if "group_p50_ms" in f
                else "—"
            ),
        ),
        row(
            f"deactivation → first deny on /v1/check ({first['deactivated']} people)",
            f"last ≤ 1 s ({met_deny})",
            lambda f: (
                f"p50 {f['deny_p50_ms']:.1f} ms, p99 {f['deny_p99_ms']:.1f} ms, max "
                f"**{f['deny_max_ms']:.1f} ms**"
                if "deny_p50_ms" in f
                else "—"
            ),
        ),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
