"""In-process peers on the engine's decisions: pycasbin ``FastEnforcer``, oso and cedarpy,
each built from the same rules and asked the same requests that bench/measure.py asks
the engine, one peer per process (clean memory figures). Prints one JSON object.

    python -m bench.peers --peer fastenforcer --data peers.json

``--data`` is the file ``bench.measure --peers-out`` writes: the rules as loaded from
PostgreSQL (``[ptype, v0, ...]``), the requests ``[user, workspace, resource, action]``
and the engine's answers. This module imports nothing from the project: oso needs cffi
~=1.15, which the project's cryptography does not allow, so oso runs from a separate
virtualenv (``.venv-peers``, see the Makefile) holding only the peers.

The encodings are the model's (model.conf): domain RBAC where ``*`` in a rule's domain,
resource or action matches anything (Casbin's keyMatch on these values, which never
hold a ``*`` inside a longer pattern here), role inheritance per domain, and the owner
condition (the requests name no owner, as in measure.py, so owner-only rules never hold).
Not a test; run by ``bench.run``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model.conf"
# oso cannot live in the project's virtualenv (cffi); the Makefile's bench target makes
# this one for it. Each peer runs with the first of these Pythons that imports it.
PEERS_VENV = ROOT / ".venv-peers"
USER = "user:"
ROLE = "role:"
# A peer is skipped at larger sizes once its checks typically (p50) take over SLOW_S, or
# one check took over SLOW_ONE_S: one-time work inside a check (FastEnforcer builds a
# workspace's role links on its first check there, ~1 s in the big workspace at 10k,
# 80-120 s at 100k) should not cost the 100k figure, but stops the peer before 1M.
SLOW_S = 1.0
SLOW_ONE_S = 10.0
BUDGET_S = 60.0  # time for the checks of one peer at one size, after a first whole pass
HARD_BUDGET_S = 600  # a check still running then is interrupted (SIGALRM) and timing ends


class OutOfTime(Exception):
    pass


def _out_of_time(signum: int, frame: object) -> None:
    raise OutOfTime


PASSES = 3


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    return _status_mb("VmRSS:")


def peak_mb() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: Linux keeps that across exec, so a
    child started by a bigger process would report its parent's size."""
    return _status_mb("VmHWM:")


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "mean": statistics.fmean(ordered),
    }


class Rules:
    """The rows split the way every peer needs them."""

    def __init__(self, rows: list[list[str]]) -> None:
        # p: (role, domain, resource, action, cond); links: (child, parent, domain);
        # grants: (user id, role, domain). Roles without their "role:" prefix.
        self.permissions: list[tuple[str, str, str, str, str]] = []
        self.links: list[tuple[str, str, str]] = []
        self.grants: list[tuple[int, str, str]] = []
        for row in rows:
            if row[0] == "p":
                sub, dom, obj, act, cond = (*row[1:], "")[:5]
                self.permissions.append((sub.removeprefix(ROLE), dom, obj, act, cond or ""))
            elif row[1].startswith(USER):
                self.grants.append((int(row[1][len(USER) :]), row[2].removeprefix(ROLE), row[3]))
            else:
                self.links.append((row[1].removeprefix(ROLE), row[2].removeprefix(ROLE), row[3]))


# -- pycasbin FastEnforcer ----------------------------------------------------------------------


def build_fastenforcer(rows: list[list[str]]) -> Callable[[int, str, str, str], bool]:
    """``FastEnforcer`` keeps its p rules indexed by the fields ``cache_key_order`` names
    and, per request, looks at the rules whose values *equal* the request's. Keyed on
    the resource (index 2): a rule whose resource is the pattern ``*`` (the super admin's)
    is never looked at, the only rule lost with this model; the differing answers are
    counted. The filter is shared state: single-threaded use only."""
    import casbin
    from casbin.util import key_match

    enforcer = casbin.FastEnforcer(str(MODEL), cache_key_order=[2])
    enforcer.add_named_domain_matching_func("g", key_match)
    # As an adapter's load_policy does: rules appended, role links built once.
    model = enforcer.get_model().model
    policy = model["p"]["p"].policy
    for row in rows:
        if row[0] == "p":
            policy.append([v for v in row[1:] if v is not None])
    model["g"]["g"].policy = [[row[1], row[2], row[3]] for row in rows if row[0] == "g"]
    enforcer.build_role_links()
    enforce = enforcer.enforce

    def check(user: int, workspace: str, obj: str, act: str) -> bool:
        return bool(enforce(f"{USER}{user}", workspace, obj, act, ""))

    return check


# -- oso ------------------------------------------------------------------------------------------

POLAR = """
allow(user, act, target: Target) if
    ws = target.workspace and
    grant in Dir.grants(user) and
    domain_matches(ws, grant.domain) and
    has_role(grant.role, role, ws) and
    perm in Dir.permissions(role, target.obj) and
    domain_matches(ws, perm.domain) and
    key_matches(act, perm.act) and
    condition_holds(perm.cond, user, target.owner);

domain_matches(_ws, "*");
domain_matches(ws, domain) if domain = ws;

key_matches(_value, "*");
key_matches(value, pattern) if pattern = value;

condition_holds("", _user, _owner);
condition_holds("owner", user, owner) if owner = user;

has_role(role, ancestor, _ws) if ancestor = role;
has_role(role, ancestor, ws) if
    link in Dir.parents(role) and
    domain_matches(ws, link.domain) and
    has_role(link.parent, ancestor, ws);
"""


class Target:
    """What a request is about: a resource type in a workspace, and its owner (a user id,
    None when nobody is known)."""

    __slots__ = ("obj", "owner", "workspace")

    def __init__(self, workspace: str, obj: str, owner: int | None = None) -> None:
        self.workspace = workspace
        self.obj = obj
        self.owner = owner


class Grant:
    __slots__ = ("domain", "role")

    def __init__(self, role: str, domain: str) -> None:
        self.role = role
        self.domain = domain


class Link:
    __slots__ = ("domain", "parent")

    def __init__(self, parent: str, domain: str) -> None:
        self.parent = parent
        self.domain = domain


class Permission:
    __slots__ = ("act", "cond", "domain", "obj")

    def __init__(self, domain: str, obj: str, act: str, cond: str) -> None:
        self.domain = domain
        self.obj = obj
        self.act = act
        self.cond = cond


class Directory:
    """The application data Polar reads, held in Python dicts keyed the way the rules
    ask (a user's grants, a role's parents, a role's permissions), as oso's guides
    recommend for data that lives in the application; a role's permissions are found by
    (role, resource), so Polar only matches the domain, action and condition."""

    def __init__(self, rules: Rules) -> None:
        self._grants: dict[int, list[Grant]] = defaultdict(list)
        self._parents: dict[str, list[Link]] = defaultdict(list)
        self._permissions: dict[tuple[str, str], list[Permission]] = defaultdict(list)
        for user, role, domain in rules.grants:
            self._grants[user].append(Grant(role, domain))
        for child, parent, domain in rules.links:
            self._parents[child].append(Link(parent, domain))
        for role, domain, obj, act, cond in rules.permissions:
            self._permissions[role, obj].append(Permission(domain, obj, act, cond))

    def grants(self, user: int) -> list[Grant]:
        return self._grants.get(user, [])

    def parents(self, role: str) -> list[Link]:
        return self._parents.get(role, [])

    def permissions(self, role: str, obj: str) -> list[Permission]:
        """The role's permissions on ``obj`` and on every resource (``*``)."""
        return self._permissions.get((role, obj), []) + self._permissions.get((role, "*"), [])


def build_oso(rows: list[list[str]]) -> Callable[[int, str, str, str], bool]:
    from oso import Oso

    directory = Directory(Rules(rows))
    oso = Oso()
    for cls in (Target, Grant, Link, Permission, Directory):
        oso.register_class(cls)
    oso.register_constant(directory, "Dir")
    oso.load_str(POLAR)
    is_allowed = oso.is_allowed

    def check(user: int, workspace: str, obj: str, act: str) -> bool:
        return bool(is_allowed(user, act, Target(workspace, obj)))

    return check


# -- cedarpy --------------------------------------------------------------------------------------


def cedar_policy(role: str, obj: str, act: str, cond: str) -> str:
    scope = [f'principal in Role::"{role}"']
    scope.append("action" if act == "*" else f'action == Action::"{act}"')
    scope.append("resource" if obj == "*" else f'resource == Resource::"{obj}"')
    text = f"permit({', '.join(scope)})"
    if cond == "owner":  # the resource's owner, when the request names one, in its context
        text += " when { context has owner && context.owner == principal }"
    return text + ";"


def build_cedarpy(rows: list[list[str]]) -> Callable[[int, str, str, str], bool]:
    """One policy set and one entity set per workspace: the permissions of the roles
    defined everywhere (``*``) and in that workspace; the roles (parents: the roles they
    inherit in that workspace) and the users holding a role there or everywhere
    (parents: those roles). Workspaces whose policies are the same text share one parsed
    ``PolicySet``."""
    import cedarpy

    rules = Rules(rows)
    shared_permissions: list[str] = []
    local_permissions: dict[str, list[str]] = defaultdict(list)
    for role, domain, obj, act, cond in rules.permissions:
        text = cedar_policy(role, obj, act, cond)
        (shared_permissions if domain == "*" else local_permissions[domain]).append(text)
    shared_links: dict[str, list[str]] = defaultdict(list)
    local_links: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for child, parent, domain in rules.links:
        (shared_links if domain == "*" else local_links[domain])[child].append(parent)
    everywhere: dict[int, list[str]] = defaultdict(list)
    members: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for user, role, domain in rules.grants:
        (everywhere if domain == "*" else members[domain])[user].append(role)
    workspaces = set(members) | set(local_permissions) | set(local_links)

    def role_uid(name: str) -> dict[str, str]:
        return {"type": "Role", "id": name}

    parsed: dict[str, Any] = {}
    per_workspace: dict[str, tuple[Any, Any]] = {}
    # "*": any workspace without members or rules of its own (its super admins still hold)
    for workspace in [*workspaces, "*"]:
        text = "\n".join([*shared_permissions, *local_permissions.get(workspace, [])])
        if text not in parsed:
            parsed[text] = cedarpy.PolicySet.from_str(text)
        # Roles that inherit there; a role that inherits nothing needs no entity (a
        # parent that is not in the set has no parents itself).
        links = local_links.get(workspace, {})
        entities: list[dict[str, Any]] = [
            {
                "uid": role_uid(role),
                "attrs": {},
                "parents": [
                    role_uid(p) for p in (*shared_links.get(role, ()), *links.get(role, ()))
                ],
            }
            for role in {*shared_links, *links}
        ]
        held = defaultdict(list, {u: list(r) for u, r in members.get(workspace, {}).items()})
        for user, granted in everywhere.items():
            held[user] += granted
        entities += [
            {
                "uid": {"type": "User", "id": str(user)},
                "attrs": {},
                "parents": [role_uid(r) for r in dict.fromkeys(granted)],
            }
            for user, granted in held.items()
        ]
        per_workspace[workspace] = (
            parsed[text],
            cedarpy.Entities.from_json_str(json.dumps(entities)),
        )
    is_authorized = cedarpy.is_authorized

    def check(user: int, workspace: str, obj: str, act: str) -> bool:
        policies, entities = per_workspace.get(workspace) or per_workspace["*"]
        request = {
            "principal": {"type": "User", "id": str(user)},
            "action": {"type": "Action", "id": act},
            "resource": {"type": "Resource", "id": obj},
        }
        return is_authorized(request, policies, entities).allowed

    return check


PEERS: dict[str, Callable[[list[list[str]]], Callable[[int, str, str, str], bool]]] = {
    "fastenforcer": build_fastenforcer,
    "oso": build_oso,
    "cedarpy": build_cedarpy,
}
VERSIONS = {"fastenforcer": "pycasbin", "oso": "oso", "cedarpy": "cedarpy"}
MODULES = {"fastenforcer": "casbin", "oso": "oso", "cedarpy": "cedarpy"}
NAMES = {
    "fastenforcer": "pycasbin FastEnforcer.enforce",
    "oso": "oso Oso.is_allowed",
    "cedarpy": "cedarpy.is_authorized",
}
SHORT = {"fastenforcer": "FastEnforcer", "oso": "oso", "cedarpy": "cedarpy"}
NOTES = f"""- The peers (bench/peers.py) are built from the same rules and asked the same requests
  as the engine, each in a process of its own, single-threaded: every request once, then
  more passes while within {BUDGET_S:g} s (at most {PASSES} passes). Their load is from the
  rules already in memory (the engine's start-up reads PostgreSQL); their RSS and peak
  include the rules and requests read from a JSON file ("rows", in MB). pycasbin `FastEnforcer`
  keys its p rules on the resource (`cache_key_order=[2]`) and looks only at rules whose
  resource equals the request's: the super admin's `*` rule is never seen, hence the
  differing answers. Its slowest check is the first in the big workspace: pycasbin builds
  a workspace's role links on its first check there, matching every new link against
  every role (quadratic in the workspace's members). oso: Polar rules over grants, role
  parents and per-(role, resource) permissions held in Python dicts. cedarpy: one policy
  set and one entity set per workspace (users, parents: their roles there; roles,
  parents: the roles they inherit there); workspaces with the same policies share one
  parsed `PolicySet`. A peer is not run at larger sizes once its checks take over
  {SLOW_S:g} s at p50 or one check took over {SLOW_ONE_S:g} s (a check still running after
  {HARD_BUDGET_S} s is interrupted).
"""
TIMEOUT_S = 1800


def python_for(peer: str) -> str | None:
    """The first Python (this one, then .venv-peers') that can import the peer."""
    for python in (sys.executable, str(PEERS_VENV / "bin" / "python")):
        if not os.path.exists(python):
            continue
        probe = subprocess.run(  # noqa: S603 - our own interpreters, fixed arguments
            [python, "-c", f"import {MODULES[peer]}"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return python
    return None


# Peers found too slow (see SLOW_S), and at which size: not run at larger ones.
SLOW: dict[str, str] = {}


def run_all(data: Path, label: str, slow: dict[str, str] = SLOW) -> dict[str, dict[str, Any]]:
    """Each peer in a process of its own on ``data`` (bench.measure --peers-out). A peer
    found too slow at a smaller size (``slow``: peer -> that size and why, updated here;
    sizes run from small to large) is not run again."""
    rows: dict[str, dict[str, Any]] = {}
    for peer in PEERS:
        if peer in slow:
            rows[peer] = {"skipped": f"not run: too slow at {slow[peer]}"}
            continue
        python = python_for(peer)
        if python is None:
            rows[peer] = {
                "skipped": f"not run: {MODULES[peer]} not installed (make .venv-peers/.installed)"
            }
            continue
        print(f"[bench] {label}: peer {peer}", file=sys.stderr)
        try:
            done = subprocess.run(  # noqa: S603 - our own module, fixed arguments
                [python, "-m", "bench.peers", "--peer", peer, "--data", str(data)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            rows[peer] = {"skipped": f"not run: no result in {TIMEOUT_S} s"}
            continue
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            rows[peer] = {"skipped": f"failed: {last[:120]}"}
            continue
        rows[peer] = json.loads(done.stdout)
        if rows[peer]["slow"]:
            got = rows[peer]
            why = (
                f"one check interrupted after {HARD_BUDGET_S} s"
                if got.get("interrupted")
                else f"p50 {got['p50'] / 1e6:,.1f} s"
                if got["p50"] / 1e6 > SLOW_S
                else f"one check took {got['slowest_s']:,.0f} s"
            )
            slow[peer] = f"{label} ({why})"
    return rows


def _ms(seconds: float) -> str:
    return f"{seconds:,.2f}" if seconds < 10 else f"{seconds:,.0f}"


Cell = Callable[[dict[str, Any], dict[str, Any]], str]


def _per_size(results: list[dict[str, Any]], peer: str, cell: Cell) -> list[str]:
    cells = []
    for r in results:
        got = r.get("peers", {}).get(peer)
        cells.append("-" if got is None else got.get("skipped") or cell(got, r))
    return cells


def startup_rows(results: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """bench.run's table rows beside the engine's start-up: each peer's load time from
    the rules in memory, RSS after it and peak (with the rows read, in MB)."""
    return [
        (
            f"{SHORT[peer]}: load from rows in memory (s) / RSS after / peak (MB)",
            _per_size(
                results,
                peer,
                lambda g, r: (
                    f"{_ms(g['load_s'])} / {g['rss_mb']:,.0f} / {g['peak_mb']:,.0f} "
                    f"(rows {g['data_mb']:,.0f})"
                ),
            ),
        )
        for peer in PEERS
    ]


def table_rows(results: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """bench.run's table rows for the peers' checks: latency, the ratio to the engine,
    the slowest single check and the answers differing from the engine."""
    out: list[tuple[str, list[str]]] = []
    for peer, name in NAMES.items():
        short = SHORT[peer]
        out += [
            (name, _per_size(results, peer, lambda g, r: f"{g['p50']:,.2f} / {g['p99']:,.2f}")),
            (
                f"{short} p50 / engine p50",
                _per_size(results, peer, lambda g, r: f"{g['p50'] / r['engine']['p50']:,.0f}x"),
            ),
            (
                f"{short}: slowest single check (s) / checks timed",
                _per_size(
                    results,
                    peer,
                    lambda g, r: (
                        f"{_ms(g['slowest_s'])}{' (interrupted)' if g.get('interrupted') else ''}"
                        f" / {g['checks_timed']:,}"
                    ),
                ),
            ),
            (
                f"{short}: answers differing from the engine",
                _per_size(results, peer, lambda g, r: f"{g['wrong']:,} of {g['checked']:,}"),
            ),
        ]
    return out


def goals(results: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """bench.run's goal rows for the peers: FastEnforcer at 100k, and the peers' answers."""
    out: list[tuple[str, str, bool | None]] = []
    by = {r["label"]: r for r in results}
    fast = by.get("100k", {}).get("peers", {}).get("fastenforcer")
    if fast is None or "skipped" in fast:
        why = "not measured" if fast is None else fast["skipped"]
        out.append(("100k: at least 50x faster than pycasbin FastEnforcer", why, None))
    else:
        speedup = fast["p50"] / by["100k"]["engine"]["p50"]
        out.append(
            (
                "100k: at least 50x faster than pycasbin FastEnforcer",
                f"{speedup:,.0f}x ({fast['p50']:,.1f} µs vs {by['100k']['engine']['p50']:.2f} µs "
                f"at p50; {fast['wrong']} of {fast['checked']:,} answers differ)",
                speedup >= 50,
            )
        )
    measured = []
    for r in results:
        for peer in ("oso", "cedarpy"):
            got = r.get("peers", {}).get(peer)
            if got is None:
                continue
            if "skipped" in got:
                measured.append(f"{peer} {r['label']}: {got['skipped']}")
            else:
                measured.append(
                    f"{peer} {r['label']}: {got['p50'] / r['engine']['p50']:,.0f}x slower at "
                    f"p50, {got['wrong']} of {got['checked']:,} answers differ"
                )
    out.append(
        (
            "peers oso / cedarpy on the same decisions",
            "; ".join(measured) or "not measured",
            None,
        )
    )
    return out


def version(peer: str) -> str:
    from importlib.metadata import version as installed

    try:
        return installed(VERSIONS[peer])
    except Exception:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer", choices=sorted(PEERS), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=BUDGET_S)
    args = parser.parse_args()
    start_rss = rss_mb()
    data = json.loads(args.data.read_text(encoding="utf-8"))
    rows: list[list[str]] = data["rules"]
    requests = [tuple(r) for r in data["requests"]]
    answers: list[bool] = data["answers"]
    del data
    out: dict[str, Any] = {"peer": args.peer, "version": version(args.peer)}
    before = rss_mb()
    out["data_mb"] = before - start_rss  # the rows and requests read, part of the figures
    start = time.perf_counter()
    check = PEERS[args.peer](rows)
    out["load_s"] = time.perf_counter() - start
    del rows
    out["rss_mb"] = rss_mb()
    out["build_mb"] = out["rss_mb"] - before
    out["peak_mb"] = peak_mb()

    clock = time.perf_counter_ns
    samples: list[int] = []
    wrong = 0
    checked = 0
    deadline = time.perf_counter() + args.budget
    slowest = 0
    interrupted = False
    # The pure-Python peers can be interrupted inside a check (cedarpy's Rust code only
    # between calls): a check still running after HARD_BUDGET_S ends the timing.
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(HARD_BUDGET_S)
    try:
        for number in range(PASSES):
            for (user, workspace, obj, act), expected in zip(requests, answers, strict=True):
                begin = clock()
                try:
                    got = check(user, workspace, obj, act)
                except OutOfTime:
                    slowest = max(slowest, clock() - begin)
                    interrupted = True
                    break
                elapsed = clock() - begin
                samples.append(elapsed)
                slowest = max(slowest, elapsed)
                if number == 0:
                    checked += 1
                    wrong += got != expected
                if number > 0 and time.perf_counter() > deadline:
                    break
            else:
                continue
            break
    except OutOfTime:  # between two checks
        interrupted = True
    finally:
        signal.alarm(0)
    out["interrupted"] = interrupted
    if not samples:
        out |= {"skipped": f"not run: its first check took over {HARD_BUDGET_S} s"}
        out |= {"slow": True, "peak_mb": peak_mb()}
        json.dump(out, sys.stdout)
        return
    out |= {k: v / 1000 for k, v in percentiles(samples).items()}  # µs
    out["checks_timed"] = len(samples)
    out["checked"] = checked
    out["wrong"] = wrong
    out["slowest_s"] = slowest / 1e9
    out["slow"] = out["p50"] / 1e6 > SLOW_S or out["slowest_s"] > SLOW_ONE_S or interrupted
    out["peak_mb"] = peak_mb()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
