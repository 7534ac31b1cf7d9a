"""``make bench-http``: decisions over HTTP, driven by wrk, served by granian as deployed
(``ringfence serve``) and by gunicorn as it was deployed before issue 22
(bench/gunicorn.conf.py) in the same run, each beside the floor it gives any Python app.

    python -m bench.http [--rounds 3] [--duration 5] [--connections 8]

Generates the 10k-user data set (bench/data.py) into a PostgreSQL schema migrated like
a real installation (``ringfence_bench_http``, dropped at the end unless ``--keep``),
creates a service client with ``decisions:check`` through the real CLI, and for each
server (one worker, ``RINGFENCE_THREADS`` threads, 8; access log off: it is a write per
request, and deployments behind a load balancer usually log there) measures, with wrk:

* the floor: bench/floor.py, a WSGI app that reads the body and answers a constant
  decision, served with the same settings, sent the /v1/check bodies;
* ``GET /healthz``, through Flask;
* ``POST /v1/check``: single decisions, bodies rotated over real users and workspaces;
* ``POST /access/v1/evaluations``: batches of 100 evaluations (decisions/s = requests/s
  x 100), each item its own subject, resource and action;
* ``/v1/check`` again while another wrk sends batches: what a slow request does to
  single checks (p99).

Then granian with two workers (``WEB_CONCURRENCY=2``): /v1/check and the batches again,
beside one worker's; and the memory of each process of a two-worker replica at 1M users
(``--memory-size``), right after start and after both endpoints ran over users all over
the data: what an extra worker costs when the app is built before the fork.

And, in process without HTTP, what a batch item's Python costs on the old path and the
typed one. Every response must be a 200 (wrk counts the others; a run with any is
refused). The goals (issue 22): single checks at least 70% of the floor on the same
server and 6x gunicorn's in the same run, batches at least 200k decisions per second.
Writes bench/http_results.json and bench/http_results.md. RINGFENCE_BENCH_DATABASE_URL
names the database.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, text

from bench.data import ACTIONS, RESOURCES, Dataset, generate
from bench.run import DEFAULT_URL, HTTP_BATCH, copy_rows, drop_schema, machine
from gateway.db.session import make_engine, upgrade

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = Path(__file__).resolve().parent / "http_results.json"
RESULTS_MD = Path(__file__).resolve().parent / "http_results.md"
BATCH_GOAL = 200_000  # decisions per second
BATCH_SIZE = HTTP_BATCH
BODIES = 256  # distinct request bodies per endpoint, rotated


# -- data ---------------------------------------------------------------------------


def load_data(url: str, schema: str, size: str = "10k") -> Dataset:
    """The data set of ``size`` users in ``schema``, migrated like an installation
    (``ringfence db upgrade``: the seeded rows the app relies on are there), then COPYed
    in."""
    data = generate(size)
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    db = make_engine(app_url(url, schema))
    upgrade(db)
    raw = db.raw_connection()
    try:
        cursor = raw.cursor()
        copy_rows(cursor, data, data.rules())
        # The ids were given explicitly: move the sequences past them for later inserts.
        cursor.execute("SELECT setval('users_id_seq', (SELECT max(id) FROM users))")
        cursor.execute("SELECT setval('workspaces_id_seq', (SELECT max(id) FROM workspaces))")
        cursor.execute("UPDATE policy_state SET revision = 1 WHERE id = 1")
        cursor.execute("ANALYZE users, workspaces, casbin_rule")
        raw.commit()
    finally:
        raw.close()
    db.dispose()
    return data


def app_url(url: str, schema: str) -> str:
    """``url`` with the schema as the connections' search path (libpq ``options``)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def check_bodies(data: Dataset, rng: random.Random) -> list[dict[str, Any]]:
    """Questions about real users in workspaces where they hold grants (and some where
    they do not), on resources and actions of the catalogue: a mix of allows and denies."""
    grants = rng.sample(data.grants, BODIES)
    return [
        {
            "subject": f"user{grant.user_id}@example.com",
            "workspace": grant.workspace if i % 4 else rng.choice(data.workspaces),
            "resource": rng.choice(RESOURCES),
            "action": rng.choice(ACTIONS),
        }
        for i, grant in enumerate(grants)
    ]


def batch_bodies(data: Dataset, rng: random.Random, count: int) -> list[dict[str, Any]]:
    bodies = []
    for _ in range(count):
        evaluations = []
        for number, question in enumerate(check_bodies(data, rng)[:BATCH_SIZE]):
            resource = {
                "type": question["resource"],
                "id": f"{question['resource']}-{number}",
                "properties": {"workspace": question["workspace"]},
            }
            evaluations.append(
                {
                    "subject": {"type": "user", "id": question["subject"]},
                    "action": {"name": question["action"]},
                    "resource": resource,
                }
            )
        bodies.append({"evaluations": evaluations})
    return bodies


# -- the server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, body, headers or {}, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


SERVERS = ("gunicorn", "granian")
SERVER_NAMES = {
    "gunicorn": "gunicorn gthread (the deploy until issue 22: bench/gunicorn.conf.py)",
    "granian": "granian WSGI (ringfence serve, deployed)",
}


def server_command(
    server: str, port: int, target: str | None, threads: int, workers: int = 1
) -> list[str]:
    """The command serving Ringfence (``target`` None) or a WSGI ``target`` (the floor)
    on ``port`` with ``workers`` workers (``WEB_CONCURRENCY`` for Ringfence) of
    ``threads`` threads: gunicorn as it was deployed (bench/gunicorn.conf.py; the floor
    with the same worker settings), or granian as deployed (``ringfence serve``; the
    floor with granian's own command and the same settings: ``threads`` blocking
    threads)."""
    if server == "gunicorn":
        if target is None:
            return [sys.executable, "-m", "gunicorn", "-c", "bench/gunicorn.conf.py"]
        return [
            *(sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1"),
            *("--threads", str(threads), "--keep-alive", "5", "--bind", f"127.0.0.1:{port}"),
            *("--control-socket", str(Path(tempfile.gettempdir()) / f"bench-floor-{port}.ctl")),
            target,
        ]
    if target is None:
        return [sys.executable, "-m", "gateway.cli", "serve"]
    return [
        *(sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1"),
        *("--port", str(port), "--workers", str(workers)),
        *("--blocking-threads", str(threads)),
        *("--no-access-log", "--log-level", "warning", "--no-ws", target),
    ]


@contextlib.contextmanager
def serving(
    command: list[str], env: dict[str, str], port: int, log: Path, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """The server of ``command``, ready (``/healthz`` answers) until the block ends;
    stopped then (TERM to its process group, KILL if it lingers), errors included."""
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            command,
            cwd=ROOT,
            env={**env, "RINGFENCE_HOST": "127.0.0.1", "RINGFENCE_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the workers go with the master
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{command[2]} exited ({process.returncode}):\n{tail}")
            try:
                if http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise SystemExit(
                    f"{command[2]} did not answer /healthz within {timeout:.0f} s:\n{tail}"
                )
            time.sleep(0.2)
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)


def client_token(env: dict[str, str], base: str) -> str:
    """A service token with ``decisions:check``: a client made with ``ringfence client
    create``, then ``POST /oauth/token`` (client credentials), as a service would."""
    done = subprocess.run(  # noqa: S603
        [
            str(Path(sys.executable).parent / "ringfence"),
            "client",
            "create",
            "--name",
            "bench-http",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    fields = dict(line.strip().split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    client_id, secret = fields["client_id"].strip(), fields["client_secret"].strip()
    basic = b64encode(f"{client_id}:{secret}".encode()).decode()
    status, answer = http(
        "POST",
        f"{base}/oauth/token",
        b"grant_type=client_credentials",
        {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    if status != 200:
        raise SystemExit(f"POST /oauth/token answered {status}: {answer}")
    return str(answer["access_token"])


# -- wrk ------------------------------------------------------------------------------

# Rotates over the bodies (one per line of a file; none: a GET) and prints its figures
# as one JSON line at the end; wrk counts non-2xx answers and socket errors itself.
LUA = """
wrk.method = "%(method)s"
%(headers)s
-- Every request formatted once, at the start (wrk.init has set Host by then): wrk,
-- which shares the machine's two cores, then costs the same per request whatever the
-- endpoint, instead of formatting each POST anew.
local requests = {}
local n = 0
init = function(args)
  for line in io.lines("%(bodies)s") do
    requests[#requests + 1] = wrk.format(nil, nil, nil, line)
  end
  if #requests == 0 then requests[1] = wrk.format() end
end
request = function()
  n = n %% #requests + 1
  return requests[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, '
    .. '"p50_us": %%d, "p99_us": %%d, "mean_us": %%.1f}\\n',
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def run_wrk(
    url: str,
    method: str,
    bodies: list[dict[str, Any]],
    token: str | None,
    workdir: Path,
    args: argparse.Namespace,
    duration: int,
) -> dict[str, Any]:
    name = url.rsplit("/", 1)[-1]
    body_file = workdir / f"{name}.bodies"
    body_file.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
    script = workdir / f"{name}.lua"
    headers = {"Content-Type": "application/json"} if bodies else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
    script.write_text(LUA % {"bodies": body_file, "method": method, "headers": lines})
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["non_2xx"] or figures["socket_errors"]:
        raise SystemExit(f"{url}: answers other than 200 or socket errors: {figures}")
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return dict(figures)


def combined(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One endpoint's rounds: requests per second over all of them; the latency
    percentiles are the median round's (wrk reports each run's own)."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["duration_us"] for r in rounds) / 1e6
    cores = {
        key: statistics.mean(r[key] for r in rounds)
        for key in ("server_cores", "wrk_cores")
        if all(key in r for r in rounds)
    }
    return {
        **cores,
        "rps": requests / seconds,
        "requests": requests,
        "p50_us": statistics.median(r["p50_us"] for r in rounds),
        "p99_us": statistics.median(r["p99_us"] for r in rounds),
        "rounds": rounds,
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- what a batch item costs, in process --------------------------------------------


def item_costs(env: dict[str, str], batches: list[dict[str, Any]]) -> dict[str, float]:
    """Microseconds per batch item of the Python around the engine, in this process on
    the same data, without HTTP: the batch path before (the body read with the json
    module, AuthZenService.evaluate_many, the answer written as Flask writes it) and now
    (AuthZenService.evaluate_many_json: JSON in, JSON out). Best of 5 passes over the
    bodies."""
    from gateway.app import create_app
    from gateway.web.http import decision_services_of
    from gateway.web.state import gateway_state

    os.environ.update(env)
    gateway = gateway_state(create_app())
    authzen = decision_services_of(gateway).authzen
    raws = [json.dumps(body).encode() for body in batches]
    items = sum(len(body["evaluations"]) for body in batches)

    def before() -> None:
        for raw in raws:
            answer = authzen.evaluate_many(json.loads(raw))
            json.dumps(answer, sort_keys=True, separators=(",", ":"))

    def after() -> None:
        for raw in raws:
            assert authzen.evaluate_many_json(raw) is not None

    costs = {}
    try:
        for name, path in (("before", before), ("after", after)):
            path()  # warm
            costs[name] = min(_timed(path) for _ in range(5)) / items * 1e6
    finally:
        gateway.close()  # its writers write now, before the schema goes
    return costs


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


# -- every core: a second worker's decisions and memory --------------------------------


def worker_memory(main_pid: int) -> dict[str, Any]:
    """The memory of a served replica, per process, in MiB: the main process (which
    built the app) and each worker forked from it. USS is what a process alone holds
    (what stopping it would give back); PSS shares each shared page among its holders;
    RSS counts every page it maps."""
    import psutil

    def figures(process: Any) -> dict[str, float]:
        info = process.memory_full_info()
        return {
            "uss": info.uss / 2**20,
            "pss": getattr(info, "pss", 0) / 2**20,
            "rss": info.rss / 2**20,
        }

    main = psutil.Process(main_pid)
    workers = sorted(main.children(), key=lambda p: p.create_time())
    return {"main": figures(main), "workers": [figures(w) for w in workers]}


def memory_at_scale(
    url: str, size: str, env: dict[str, str], workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """``ringfence serve`` with two workers over ``size`` users: each process's memory
    after the workers answered /v1/check and batches about users all over the data for
    ``args.duration`` seconds each (what a worker touches after the fork is what it
    copies)."""
    schema = f"{args.schema}_{size.lower()}"
    print(f"[bench-http] memory: loading {size} users into {schema}", file=sys.stderr)
    started = time.monotonic()
    data = load_data(url, schema, size)
    loaded = time.monotonic() - started
    rng = random.Random(13)  # noqa: S311 - benchmark data, not secrets
    checks, batches = check_bodies(data, rng), batch_bodies(data, rng, 32)
    del data
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    scale_env = {**env, "RINGFENCE_DATABASE_URL": app_url(url, schema), "WEB_CONCURRENCY": "2"}
    try:
        with serving(
            server_command("granian", port, None, int(env.get("RINGFENCE_THREADS", "8")), 2),
            scale_env,
            port,
            workdir / "granian-memory.log",
            timeout=600,
        ) as process:
            ready = worker_memory(process.pid)
            token = client_token(scale_env, base)
            run_wrk(f"{base}/v1/check", "POST", checks, token, workdir, args, args.duration)
            run_wrk(
                f"{base}/access/v1/evaluations",
                "POST",
                batches,
                token,
                workdir,
                args,
                args.duration,
            )
            served = worker_memory(process.pid)
    finally:
        if not args.keep:
            drop_schema(url, schema)
    return {"size": size, "load_seconds": loaded, "ready": ready, "served": served}


# -- the report -----------------------------------------------------------------------


def report(result: dict[str, Any]) -> str:
    servers = result["servers"]
    base = servers["gunicorn"]

    def ms(us: float) -> str:
        return f"{us / 1000:.2f}"

    def cell(run: dict[str, Any]) -> str:
        return f"{run['rps']:,.0f} ({ms(run['p50_us'])} / {ms(run['p99_us'])})"

    def row(label: str, value: Any) -> str:
        return f"| {label} | " + " | ".join(value(servers[name]) for name in SERVERS) + " |"

    rows = [
        "| requests/s (p50 / p99 ms) | " + " | ".join(SERVER_NAMES[n] for n in SERVERS) + " |",
        "|---|" + "---:|" * len(SERVERS),
        row("raw WSGI app, constant answer (the floor)", lambda r: cell(r["floor"])),
        row("GET /healthz", lambda r: cell(r["healthz"])),
        row("POST /v1/check", lambda r: cell(r["check"])),
        row(
            "/v1/check: share of the floor",
            lambda r: f"{r['check']['rps'] / r['floor']['rps']:.0%}",
        ),
        row(
            "/v1/check: times gunicorn's",
            lambda r: f"{r['check']['rps'] / base['check']['rps']:.2f}x",
        ),
        row(f"POST /access/v1/evaluations, {BATCH_SIZE} each", lambda r: cell(r["batch"])),
        row(
            "batch decisions/s",
            lambda r: f"{r['batch']['rps'] * BATCH_SIZE:,.0f}",
        ),
        row(
            "/v1/check while batches run (checks/s, p50 / p99 ms)",
            lambda r: cell(r["check_under_batches"]),
        ),
    ]
    best = max(SERVERS, key=lambda n: servers[n]["check"]["rps"])
    chosen = servers[best]
    share = chosen["check"]["rps"] / chosen["floor"]["rps"]
    times = chosen["check"]["rps"] / base["check"]["rps"]
    decisions = max(servers[n]["batch"]["rps"] for n in SERVERS) * BATCH_SIZE
    costs = result["item_costs"]

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    one = servers["granian"]
    two = result["two_workers"]
    check_scale = two["check"]["rps"] / one["check"]["rps"]
    batch_scale = two["batch"]["rps"] / one["batch"]["rps"]
    scaling = [
        "",
        "| granian (ringfence serve) | one worker | two workers | ratio |",
        "|---|---:|---:|---:|",
        f"| POST /v1/check, requests/s (p50 / p99 ms) | {cell(one['check'])} "
        f"| {cell(two['check'])} | {check_scale:.2f}x |",
        f"| batch decisions/s | {one['batch']['rps'] * BATCH_SIZE:,.0f} "
        f"| {two['batch']['rps'] * BATCH_SIZE:,.0f} | {batch_scale:.2f}x |",
    ]
    if all("server_cores" in run[e] for run in (one, two) for e in ("check", "batch")):

        def cores(run: dict[str, Any]) -> str:
            return f"{run['server_cores']:.2f} / {run['wrk_cores']:.2f}"

        scaling += [
            f"| cores busy during /v1/check, server / wrk (of 2) | {cores(one['check'])} "
            f"| {cores(two['check'])} | |",
            f"| cores busy during batches, server / wrk (of 2) | {cores(one['batch'])} "
            f"| {cores(two['batch'])} | |",
        ]
    memory = result.get("memory")
    memory_rows: list[str] = []
    extra_share = None
    if memory:
        served = memory["served"]
        first, *extra = served["workers"]
        extra_share = max(w["uss"] for w in extra) / first["rss"] if extra else None

        def mib(figures: dict[str, float]) -> str:
            return f"{figures['uss']:,.0f} | {figures['pss']:,.0f} | {figures['rss']:,.0f}"

        memory_rows = [
            "",
            f"Memory of `ringfence serve --workers 2` at {memory['size']} users (MiB), after "
            f"{result['duration']} s of /v1/check and {result['duration']} s of batches "
            "about users all over the data, and right after start (in brackets, USS):",
            "",
            "| process | USS | PSS | RSS |",
            "|---|---:|---:|---:|",
            f"| main (built the app, serves nothing) | {mib(served['main'])} |",
            *(
                f"| worker {n} ({memory['ready']['workers'][n - 1]['uss']:,.0f} at start) "
                f"| {mib(w)} |"
                for n, w in enumerate(served["workers"], 1)
            ),
        ]
    goals = [
        "| goal (issue 22) | measured | met |",
        "|---|---|---|",
        f"| /v1/check at least 70% of the floor, same server ({best}) | {share:.0%} "
        f"| {met(share >= 0.70)} |",
        f"| /v1/check at least 6x today's gunicorn, same run ({best}) | {times:.2f}x "
        f"| {met(times >= 6)} |",
        f"| batches at least {BATCH_GOAL:,} decisions/s | {decisions:,.0f} "
        f"| {met(decisions >= BATCH_GOAL)} |",
        f"| two workers at least 1.7x one worker's decisions/s (granian; checks / "
        f"batches) | {check_scale:.2f}x / {batch_scale:.2f}x "
        f"| {met(min(check_scale, batch_scale) >= 1.7)} |",
        *(
            [
                f"| an extra worker's private memory (USS) at most 25% of the first "
                f"worker's (RSS), {memory['size']} users | {extra_share:.1%} "
                f"| {met(extra_share <= 0.25)} |"
            ]
            if memory and extra_share is not None
            else []
        ),
        f"| a batch item's Python, before / now (µs, in process, no HTTP) | "
        f"{costs['before']:.2f} / {costs['after']:.2f} ({costs['before'] / costs['after']:.1f}x) "
        "| n/a |",
    ]
    loads = "; ".join(
        f"{name}: " + ", ".join(r["load_before"].split()[0] for r in runs["check"]["rounds"])
        for name, runs in servers.items()
    )
    header = [
        "# Decisions over HTTP",
        "",
        f"{result['when']} · {result['machine']} · one worker of {result['threads']} threads "
        f"per server, access log off · wrk {result['wrk_threads']} thread(s), "
        f"{result['connections']} connections, {result['rounds']} rounds of "
        f"{result['duration']} s per endpoint, taking turns, after {result['warmup']} s "
        f"of warm-up each; the servers one after the other in the same run · 10k users, "
        f"{result['rules']:,} rules, PostgreSQL · {BODIES} distinct bodies rotated per "
        f"endpoint · 1-minute load average before each /v1/check round (the run itself "
        f"accounts for about 2 of it): {loads}.",
        "",
    ]
    notes = [
        "",
        "The floor is a WSGI app that reads the body and answers a constant decision "
        "(bench/floor.py), served with the same worker settings, and gets the /v1/check "
        "bodies. `/v1/check` with the plain body and the batches, with a remembered "
        "service token, are answered below Flask (gateway.web.check_lane), the batches "
        "by the typed path (AuthZenService.evaluate_many_json: msgspec decodes and "
        "validates, the engine's per-request work is done once, each distinct answer "
        "encoded once); /healthz goes through Flask. The last row runs wrk against "
        "/v1/check and, at the same time, another wrk against the batches: what a slow "
        "request does to single checks. The servers share the machine's two cores with "
        "wrk and with whatever else runs: the load average says how much else.",
    ]
    return "\n".join(header + rows + scaling + memory_rows + ["", *goals] + notes) + "\n"


def cpu_seconds(pid: int | None) -> tuple[float, float]:
    """CPU seconds used so far by the server of ``pid`` (its main process and workers),
    and by this process's finished children (wrk, once each run has ended)."""
    import psutil

    server = 0.0
    if pid is not None:
        main = psutil.Process(pid)
        for process in (main, *main.children(recursive=True)):
            times = process.cpu_times()
            server += times.user + times.system
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return server, children.ru_utime + children.ru_stime


def measure(
    base: str,
    endpoints: tuple[tuple[str, str, str, list[dict[str, Any]], str | None], ...],
    workdir: Path,
    args: argparse.Namespace,
    server_pid: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Each endpoint after its warm-up, then in rounds, the endpoints taking turns: a
    change in the machine's load (other work on it) then falls on all of them. Each
    round also records the cores the server and wrk kept busy (CPU seconds a second)."""
    for _, path, method, bodies, bearer in endpoints:
        run_wrk(f"{base}{path}", method, bodies, bearer, workdir, args, args.warmup)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in endpoints}
    for number in range(args.rounds):
        for name, path, method, bodies, bearer in endpoints:
            load = load_average()
            server_before, wrk_before = cpu_seconds(server_pid)
            figures = run_wrk(f"{base}{path}", method, bodies, bearer, workdir, args, args.duration)
            server_after, wrk_after = cpu_seconds(server_pid)
            seconds = figures["duration_us"] / 1e6
            figures["server_cores"] = (server_after - server_before) / seconds
            figures["wrk_cores"] = (wrk_after - wrk_before) / seconds
            rounds[name].append({**figures, "load_before": load})
            print(f"[bench-http] round {number + 1} {name}: {figures}", file=sys.stderr)
    return {name: combined(measured) for name, measured in rounds.items()}


def checks_under_batches(
    base: str,
    checks: list[dict[str, Any]],
    batches: list[dict[str, Any]],
    token: str,
    workdir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """/v1/check measured while another wrk (same connections) sends batches."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        batch_load = pool.submit(
            run_wrk,
            f"{base}/access/v1/evaluations",
            "POST",
            batches,
            token,
            workdir,
            args,
            args.duration * args.rounds,
        )
        time.sleep(0.5)  # the batches first
        load = load_average()
        checked = run_wrk(
            f"{base}/v1/check",
            "POST",
            checks,
            token,
            workdir,
            args,
            args.duration * args.rounds - 1,
        )
        batch_load.result()
    return combined([{**checked, "load_before": load}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds per endpoint and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, endpoints in turn")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before each")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--schema", default="ringfence_bench_http")
    parser.add_argument("--keep", action="store_true", help="keep the schema (else dropped)")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave bench/http_results.* alone"
    )
    parser.add_argument(
        "--memory-size",
        default="1M",
        choices=["10k", "100k", "1M", "none"],
        help="users of the two-worker memory measurement (none: skip it)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk; make bench-http does)")
    url = os.environ.get("RINGFENCE_BENCH_DATABASE_URL", DEFAULT_URL)
    workdir = Path(tempfile.mkdtemp(prefix="ringfence-bench-http-"))
    threads = int(os.environ.get("RINGFENCE_THREADS", "8"))
    try:
        print(f"[bench-http] loading 10k users into {args.schema}", file=sys.stderr)
        data = load_data(url, args.schema)
        rng = random.Random(11)  # noqa: S311 - benchmark data, not secrets
        checks = check_bodies(data, rng)
        batches = batch_bodies(data, rng, 32)
        env = {
            # Only the settings below (and the threads): a RINGFENCE_* variable of the
            # shell must not change what is measured (e.g. letting loopback calls skip
            # the token check).
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith("RINGFENCE_") or k == "RINGFENCE_THREADS"
            },
            "RINGFENCE_DATABASE_URL": app_url(url, args.schema),
            "RINGFENCE_INSTANCE_DIR": str(workdir / "instance"),
            "RINGFENCE_ACCESS_LOG": "",
            "RINGFENCE_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        token = ""
        allowed = 0
        servers: dict[str, dict[str, Any]] = {}
        for server in SERVERS:
            print(f"[bench-http] {server}: the floor", file=sys.stderr)
            with serving(
                server_command(server, port, "bench.floor:app", threads),
                env,
                port,
                workdir / f"{server}-floor.log",
            ):
                floor = measure(
                    base, (("floor", "/v1/check", "POST", checks, None),), workdir, args
                )
            print(f"[bench-http] {server}: Ringfence", file=sys.stderr)
            with serving(
                server_command(server, port, None, threads), env, port, workdir / f"{server}.log"
            ) as process:
                token = token or client_token(env, base)
                auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                # The answers are real: both kinds among the bodies, no errors in a batch.
                answers = [
                    http("POST", f"{base}/v1/check", json.dumps(b).encode(), auth) for b in checks
                ]
                assert all(status == 200 for status, _ in answers), answers[:3]
                allowed = sum(answer["allowed"] for _, answer in answers)
                status, batch = http(
                    "POST", f"{base}/access/v1/evaluations", json.dumps(batches[0]).encode(), auth
                )
                assert status == 200 and len(batch["evaluations"]) == BATCH_SIZE, batch
                assert not any("error" in e["context"] for e in batch["evaluations"]), batch[
                    "evaluations"
                ][0]
                print(
                    f"[bench-http] {allowed}/{len(answers)} check bodies allowed; measuring",
                    file=sys.stderr,
                )
                runs = measure(
                    base,
                    (
                        ("healthz", "/healthz", "GET", [], None),
                        ("check", "/v1/check", "POST", checks, token),
                        ("batch", "/access/v1/evaluations", "POST", batches, token),
                    ),
                    workdir,
                    args,
                    process.pid,
                )
                runs["check_under_batches"] = checks_under_batches(
                    base, checks, batches, token, workdir, args
                )
            servers[server] = {**floor, **runs}
        print("[bench-http] granian: Ringfence with two workers", file=sys.stderr)
        with serving(
            server_command("granian", port, None, threads, 2),
            {**env, "WEB_CONCURRENCY": "2"},
            port,
            workdir / "granian-2.log",
        ) as process:
            two_workers = measure(
                base,
                (
                    ("check", "/v1/check", "POST", checks, token),
                    ("batch", "/access/v1/evaluations", "POST", batches, token),
                ),
                workdir,
                args,
                process.pid,
            )
        memory = (
            None
            if args.memory_size == "none"
            else memory_at_scale(url, args.memory_size, env, workdir, args)
        )
        print("[bench-http] a batch item's cost in process", file=sys.stderr)
        costs = item_costs(env, batches)
        result = {
            "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "threads": threads,
            "wrk_threads": args.threads,
            "connections": args.connections,
            "duration": args.duration,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "rules": len(data.rules()),
            "check_bodies_allowed": allowed,
            "servers": servers,
            "two_workers": two_workers,
            "memory": memory,
            "item_costs": costs,
        }
        table = report(result)
        print(table)
        if not args.no_write:
            RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            RESULTS_MD.write_text(table, encoding="utf-8")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not args.keep:
            drop_schema(url, args.schema)


if __name__ == "__main__":
    main()
