"""Two versions of the gateway pushed side by side by SCIM (issue 18), not a test.

    python -m bench.scim_side_by_side BEFORE AFTER [--rounds 8] [--per-round 500]
        [--url postgresql://...]

BEFORE and AFTER are checkouts of this repository (``git worktree add /tmp/before
<commit>``). Each is served by ``ringfence serve --workers 2`` from its own folder, on a
database of its own on the PostgreSQL server of ``--url`` (``ringfence_side_by_side_0``
and ``_1``, dropped first), with a directory connection; then the rounds take turns, 4
lean clients pushing ``--per-round`` users to one version, then to the other (the order
swapped every round), so that whatever else loads the machine falls on both alike.
Prints, per version, the median CPU a created user cost (its gateway processes and its
database's PostgreSQL backends) and the median users/s. On a shared machine the CPU a
user is the steadier figure: ``make bench-scim``'s rates vary by a third from run to run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.http import free_port, http
from bench.scim import Cpu, Directory, _environment, _fresh_database, _init, _settings, person

CLIENTS = 4


@contextlib.contextmanager
def _served(tree: str, env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """``ringfence serve`` of the checkout ``tree`` (its own code first on the path)."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            cwd=tree,
            env={
                **env,
                "PYTHONPATH": tree,
                "WEB_CONCURRENCY": "2",
                "RINGFENCE_HOST": "127.0.0.1",
                "RINGFENCE_PORT": str(port),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                if http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{tree} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        os.killpg(process.pid, 15)
        process.wait(20)


def _push(base: str, token: str, numbers: range) -> None:
    """``numbers``' people created by CLIENTS clients at once."""
    directories = [Directory(f"{base}/scim/v2", token) for _ in range(CLIENTS)]
    threads = [
        threading.Thread(target=d.push, args=((person(n) for n in numbers[c::CLIENTS]),))
        for c, d in enumerate(directories)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for directory in directories:
        directory.close()


def _connect(base: str, password: str) -> str:
    """A workspace and a directory connection: its token."""
    with httpx.Client(base_url=base, timeout=60) as anonymous:
        login = anonymous.post(
            "/auth/login", json={"email": "admin@example.com", "password": password}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as admin:
        admin.post("/workspaces", json={"slug": "acme", "name": "Acme"}).raise_for_status()
        made = admin.post(
            "/directory-connections",
            json={"workspace": "acme", "name": "bench", "group_roles": {"team": "editor"}},
        )
        made.raise_for_status()
        return str(made.json()["token"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=500)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    trees = [str(Path(t).resolve()) for t in (args.before, args.after)]
    with contextlib.ExitStack() as stack:
        versions = []
        for number, tree in enumerate(trees):
            database = _fresh_database(args.url, f"ringfence_side_by_side_{number}")
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            settings = _settings(folder, database)
            password = _init(settings)
            served = _served(tree, _environment(settings), Path(folder) / "serve.log")
            base, pid = stack.enter_context(served)
            token = _connect(base, password)
            _push(base, token, range(10**7, 10**7 + 240))  # warm: SCIM's imports, the pool
            versions.append((tree, base, token, Cpu(pid, database)))
        figures: dict[str, list[tuple[float, float, float]]] = {tree: [] for tree in trees}
        for round_ in range(args.rounds):
            for tree, base, token, cpu in versions if round_ % 2 == 0 else versions[::-1]:
                first = round_ * args.per_round
                gateway, database = cpu.gateway(), cpu.database()
                started = time.perf_counter()
                _push(base, token, range(first, first + args.per_round))
                seconds = time.perf_counter() - started
                figures[tree].append(
                    (
                        1000 * (cpu.gateway() - gateway) / args.per_round,
                        1000 * (cpu.database() - database) / args.per_round,
                        args.per_round / seconds,
                    )
                )
    print(f"load average after: {os.getloadavg()}")
    print("| version | CPU a user: gateway + PostgreSQL | users/s | rounds (ms a user) |")
    print("|---|---|---|---|")
    for tree, rows in figures.items():
        gateway = statistics.median(r[0] for r in rows)
        database = statistics.median(r[1] for r in rows)
        rate = statistics.median(r[2] for r in rows)
        each = ", ".join(f"{r[0] + r[1]:.1f}" for r in rows)
        print(
            f"| {tree} | {gateway:.2f} + {database:.2f} = **{gateway + database:.2f} ms** "
            f"| {rate:.0f} | {each} |"
        )


if __name__ == "__main__":
    main()
