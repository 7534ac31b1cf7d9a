"""``make bench-scim``: SCIM provisioning's figures (issue 18), not a test.

    python -m bench.scim [--users 1000] [--groups 20] [--deactivate 100] [--clients 4]
        [--url postgresql://...]

A gateway in process (``ringfence init``, then ``create_app``) on SQLite in a temporary
folder, or on PostgreSQL (``--url``: a database ``ringfence_bench_scim`` is created there,
dropped first), served over real HTTP on loopback (werkzeug, threaded); a directory
connection whose groups map to ``editor``; one SCIM client, as a directory is:

* **provisioning**: ``--users`` POST /Users one after the other: users/s. Goal: at least
  200 users/s on PostgreSQL. Then as many other people pushed by ``--clients`` clients at
  once (4; directories such as Okta push on several connections): users/s.
* **groups**: ``--groups`` POST /Groups, each with its share of the users as members in
  the one request (every member gets ``editor``): the time per group.
* **deactivation**: ``--deactivate`` people deactivated as Okta does (PATCH, no path,
  ``{"active": false}``); after each answer, ``POST /v1/check`` for them until it denies:
  the time from the SCIM answer to the first deny (p50, max). Goal: the last one within
  1 s of its answer. (This process applies its own commit before answering; other
  replicas follow at the revision's notice: ``make bench-propagation``.)

Writes bench/scim_results.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from werkzeug.serving import make_server

RESULTS = Path(__file__).with_name("scim_results.md")
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _fresh_database(url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "ringfence_bench_scim"
    server = create_engine(url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    server.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--deactivate", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4, help="clients pushing at once")
    parser.add_argument("--url", default="", help="a PostgreSQL server; default: SQLite")
    args = parser.parse_args()
    database_url = _fresh_database(args.url) if args.url else ""

    from click.testing import CliRunner

    from gateway.app import create_app
    from gateway.cli.main import main as cli
    from gateway.config import Settings
    from gateway.web.state import gateway_state
    from tests.helpers import create_client

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            instance_dir=Path(folder) / "instance",
            secret_key="bench-" + "x" * 40,
            public_url="http://127.0.0.1",
            admin_email="admin@example.com",
            admin_name="Bench Admin",
            revision_poll_seconds=0,
            database_url=database_url,
        )
        env = {
            "RINGFENCE_INSTANCE_DIR": str(settings.instance_dir),
            "RINGFENCE_SECRET_KEY": settings.secret_key,
            "RINGFENCE_ADMIN_EMAIL": settings.admin_email,
            "RINGFENCE_ADMIN_NAME": settings.admin_name,
            "RINGFENCE_DATABASE_URL": database_url,
        }
        init = CliRunner().invoke(cli, ["init"], env=env)
        password = re.search(r"password: (\S+)", init.output)
        assert password, init.output
        app = create_app(settings)
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{httpd.server_port}"
        try:
            figures = _run(base, settings, password.group(1), args, create_client)
        finally:
            httpd.shutdown()
            gateway_state(app).close()
    backend = "PostgreSQL" if database_url else "SQLite"
    _report(figures, backend, args)


def _run(base: str, settings: Any, password: str, args: Any, create_client: Any) -> dict[str, Any]:
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

    def person(n: int) -> dict[str, Any]:
        return {
            "schemas": [USER],
            "userName": f"person{n}@example.com",
            "name": {"givenName": "Person", "familyName": str(n)},
            "emails": [{"value": f"person{n}@example.com", "type": "work", "primary": True}],
            "active": True,
        }

    ids: list[str] = []
    started = time.perf_counter()
    for n in range(args.users):
        response = scim.post("/Users", json=person(n))
        response.raise_for_status()
        ids.append(response.json()["id"])
    provisioning = time.perf_counter() - started

    # As directories that push on several connections at once (Okta does): --clients
    # clients, each its own connection, the same number of other people between them.
    def push(numbers: range) -> None:
        with httpx.Client(base_url=str(scim.base_url), headers=scim.headers, timeout=60) as own:
            for n in numbers:
                own.post("/Users", json=person(n)).raise_for_status()

    first = args.users * 10
    slices = [range(first + c, first + args.users, args.clients) for c in range(args.clients)]
    threads = [threading.Thread(target=push, args=(numbers,)) for numbers in slices]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    concurrent = time.perf_counter() - started

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
    scim.close()
    checks.close()
    admin.close()
    return {
        "users": len(ids),
        "provisioning_s": provisioning,
        "users_per_s": len(ids) / provisioning,
        "clients": args.clients,
        "concurrent_users": args.users,
        "concurrent_s": concurrent,
        "concurrent_users_per_s": args.users / concurrent,
        "groups": args.groups,
        "members_per_group": share,
        "group_p50_ms": statistics.median(group_times) * 1000,
        "group_max_ms": max(group_times) * 1000,
        "deactivated": deactivated,
        "deny_p50_ms": statistics.median(gaps) * 1000,
        "deny_p99_ms": _percentile(gaps, 0.99) * 1000,
        "deny_max_ms": max(gaps) * 1000,
    }


def _report(f: dict[str, Any], backend: str, args: Any) -> None:
    met_rate = "met" if f["users_per_s"] >= 200 else "not met"
    met_deny = "met" if f["deny_max_ms"] <= 1000 else "not met"
    lines = [
        f"# SCIM provisioning ({backend})",
        "",
        f"`python -m bench.scim --users {args.users} --groups {args.groups} "
        f"--deactivate {args.deactivate}`: one directory, one connection, over HTTP on "
        "loopback (werkzeug, threaded), one request at a time; then as many other people "
        f"pushed by {args.clients} clients at once.",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| users created | {f['users']} in {f['provisioning_s']:.1f} s: "
        f"**{f['users_per_s']:.0f} users/s** | ≥ 200/s on PostgreSQL ({met_rate} here) |",
        f"| users created by {f['clients']} clients at once | {f['concurrent_users']} in "
        f"{f['concurrent_s']:.1f} s: **{f['concurrent_users_per_s']:.0f} users/s** | (the same "
        "goal, for a directory pushing on several connections) |",
        f"| groups of {f['members_per_group']} members, one POST each | p50 "
        f"{f['group_p50_ms']:.0f} ms, max {f['group_max_ms']:.0f} ms | — |",
        f"| deactivation → first deny on /v1/check ({f['deactivated']} people) | p50 "
        f"{f['deny_p50_ms']:.1f} ms, p99 {f['deny_p99_ms']:.1f} ms, max "
        f"**{f['deny_max_ms']:.1f} ms** | last ≤ 1 s ({met_deny}) |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
