"""The ``ringfence`` command: set up, run and look after a gateway."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from gateway.cli.live_gateway import GatewayUnreadable, LiveState, read_gateway
from gateway.config import Settings, load_settings
from gateway.db.session import make_engine, make_session_factory, upgrade
from gateway.engine.engine import DecisionEngine
from gateway.engine.rules import ALL_WORKSPACES
from gateway.errors import RingfenceError
from gateway.policy.plan import (
    Plan,
    compute_plan,
    plan_from_json,
    policy_engine,
    render_json,
    render_markdown,
    render_text,
    scope_changes,
)
from gateway.policy.replay import EXAMPLES, replay
from gateway.policy.replay import render_json as render_replay_json
from gateway.policy.replay import render_markdown as render_replay_markdown
from gateway.policy.replay import render_text as render_replay_text
from gateway.policy.testing import format_results, load_policy_tests, run_policy_tests
from gateway.policy.validation import PolicySet, load_policies
from gateway.replication.loading import load_engine
from gateway.services import Services
from gateway.services.base import UnitOfWork
from gateway.services.custom_roles import custom_role_rules
from gateway.services.plan_inputs import rule_domain
from gateway.services.policies import PolicyService, custom_roles_of, find_collisions


class _NoNotifier:
    """The CLI sends no email (it creates no invitations)."""

    def message_queued(self, message_id: int) -> None:  # pragma: no cover - never called
        raise RuntimeError("the CLI does not send email")

    def send_test(self, to_address: str, transport: dict[str, Any]) -> Any:  # pragma: no cover
        raise RuntimeError("the CLI does not send email")


@contextmanager
def open_services(settings: Settings) -> Iterator[Services]:
    db = make_engine(settings.sqlalchemy_url)
    session = make_session_factory(db)()
    try:
        yield Services(session, load_engine(db, session, settings), _NoNotifier(), settings)
    finally:
        session.close()
        db.dispose()


@contextmanager
def policy_reader(settings: Settings) -> Iterator[PolicyService]:
    """The policy service for reading only (the applied rules, the live grants), without
    :func:`open_services`' decision engine: loading it from every grant is seconds and
    hundreds of MB at scale, and reading never asks it (its unit of work, which would,
    gets an empty one)."""
    db = make_engine(settings.sqlalchemy_url)
    session = make_session_factory(db)()
    try:
        yield PolicyService(session, UnitOfWork(session, DecisionEngine(settings.model_path)))
    finally:
        session.close()
        db.dispose()


def _fail(message: str) -> None:
    click.secho(message, fg="red", err=True)
    sys.exit(1)


def _load_policy(settings: Settings, directory: Path | None = None) -> PolicySet:
    try:
        return load_policies(directory or settings.policies_dir)
    except RingfenceError as exc:
        problems = exc.extensions.get("problems", [])
        _fail("\n".join([f"{exc.detail}:", *(f"  {p}" for p in problems)]))
        raise  # unreachable; keeps type checkers informed


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Ringfence: workspaces, invitations, roles and fast authorization decisions."""
    ctx.obj = load_settings().with_secret()


# -- database ---------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (owned by Alembic migrations)."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Migrate the database to the latest schema (safe to run again)."""
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    click.echo(f"Database is up to date: {engine.url.render_as_string(hide_password=True)}")
    engine.dispose()


# -- policies ---------------------------------------------------------------------------


@main.group()
def policy() -> None:
    """Role definitions in policies/: validate, test, apply."""


@policy.command("validate")
@click.pass_obj
def policy_validate(settings: Settings) -> None:
    """Check the policy files; name every problem with its file and entry."""
    policy_set = _load_policy(settings)
    click.echo(
        f"{settings.policies_dir}: {len(policy_set.permissions)} permissions, "
        f"{len(policy_set.roles)} roles, {len(policy_set.rules())} rules - valid"
    )


@policy.command("test")
@click.pass_obj
def policy_test(settings: Settings) -> None:
    """Run policies/tests/*_test.yaml against the policy with Casbin."""
    policy_set = _load_policy(settings)
    try:
        cases = load_policy_tests(settings.policies_dir, policy_set)
    except RingfenceError as exc:
        _fail("\n".join([str(exc.detail), *map(str, exc.extensions.get("problems", []))]))
        return
    results = run_policy_tests(policy_set, cases, settings.model_path)
    click.echo(format_results(results))
    if not all(r.passed for r in results):
        sys.exit(1)


def candidate_policy_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--policies PATH`` (the candidate) and ``--against GIT_REF`` (what to compare
    with), shared by ``policy plan`` and ``policy replay``."""
    command = click.option(
        "--against",
        metavar="GIT_REF",
        help="Compare with the policy files at this git ref instead of the applied policy.",
    )(command)
    return click.option(
        "--policies",
        "policies_path",
        type=click.Path(file_okay=False, path_type=Path),
        help="The candidate policy folder (default: the configured policies/).",
    )(command)


@policy.command("plan")
@candidate_policy_options
@click.option(
    "--gateway",
    metavar="URL",
    help="Read the applied policy and the grants from this running gateway's admin API "
    "instead of the database (needs --token).",
)
@click.option(
    "--token",
    envvar="RINGFENCE_GATEWAY_TOKEN",
    help="With --gateway: an access token of someone who may read roles "
    "(role_management:read); the plan covers the workspaces where they may. "
    "Default: $RINGFENCE_GATEWAY_TOKEN.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text")
@click.option("--details", is_flag=True, help="Name the people, not only count them.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the plan (JSON) for 'policy apply --plan-file'.",
)
@click.pass_obj
def policy_plan(
    settings: Settings,
    policies_path: Path | None,
    against: str | None,
    gateway: str | None,
    token: str | None,
    fmt: str,
    details: bool,
    out: Path | None,
) -> None:
    """Show what applying the policy files would change: roles' permissions, the people
    who gain or lose them, orphaned grants and escalation paths. Exit status: 0 no
    change, 2 changes, 3 escalation paths or orphaned grants."""
    if policies_path is not None and against is not None:
        raise click.UsageError("give --policies or --against, not both")
    if out is not None and against is not None:
        raise click.UsageError(
            "a plan against a git ref cannot be applied: --out needs no --against"
        )
    live = None
    if gateway is not None:
        if not token:
            raise click.UsageError("--gateway needs --token (or RINGFENCE_GATEWAY_TOKEN)")
        if out is not None:
            raise click.UsageError(
                "--out needs the database ('policy apply --plan-file' checks the saved plan "
                "against it): plan without --gateway"
            )
        live = _gateway_state(gateway, token)
    plan = _make_plan(settings, policies_path or settings.policies_dir, against, live)
    render = {"text": render_text, "markdown": render_markdown, "json": render_json}[fmt]
    click.echo(render(plan, details=details))
    if out is not None:
        out.write_text(render_json(plan, details=True) + "\n", encoding="utf-8")
        click.echo(
            f"Plan saved to {out}; apply it with: ringfence policy apply --plan-file {out}",
            err=True,
        )
    sys.exit(plan.exit_code)


def _git_policy_files(directory: Path, ref: str, into: Path) -> None:
    """Write the ``*.yaml`` files of ``directory`` as they are at git ``ref`` into ``into``."""
    git = shutil.which("git")
    if git is None:
        _fail("--against needs git on the PATH")
        raise AssertionError  # unreachable

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(  # noqa: S603 - fixed command, arguments are not a shell
            [git, *args], capture_output=True, timeout=30, check=False
        )

    top = run("-C", str(directory), "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        _fail(f"--against: {directory} is not in a git work tree")
    root = Path(top.stdout.decode().strip())
    relative = directory.resolve().relative_to(root.resolve()).as_posix()
    prefix = "" if relative == "." else f"{relative}/"
    listing = run("-C", str(root), "ls-tree", "--name-only", f"{ref}:{prefix}")
    if listing.returncode != 0:
        _fail(
            f"--against: git cannot read {prefix or './'} at {ref!r}: "
            f"{listing.stderr.decode().strip()}"
        )
    for name in listing.stdout.decode().splitlines():
        if name.endswith(".yaml"):
            shown = run("-C", str(root), "show", f"{ref}:{prefix}{name}")
            if shown.returncode != 0:
                _fail(f"--against: git cannot show {prefix}{name} at {ref!r}")
            (into / name).write_bytes(shown.stdout)


@dataclass
class _Sides:
    """What plan and replay compare: the baseline's rules (the applied policy, or the
    files at a git ref) and the candidate's, on the live grants. The workspaces' custom
    roles are on both sides (the files do not change them, and people hold them)."""

    candidate: PolicySet
    baseline_rules: list[Any]
    baseline: str
    catalogue: set[str]
    grants: list[Any]
    people: dict[int, Any]
    workspaces: list[str]
    grants_read: bool = True
    note: str = ""
    custom_rules: list[Any] = field(default_factory=list)
    custom_roles: int = 0
    collisions: list[Any] = field(default_factory=list)
    # The domains the plan covers ("*" and some workspaces) when the grants are those a
    # gateway's token may read; None: everything.
    domains: set[str] | None = None
    # The baseline's installation-wide roles (scope: installation); None: not known.
    installation_roles: frozenset[str] | None = None

    @property
    def candidate_rules(self) -> list[Any]:
        return sorted({*self.candidate.rules(), *self.custom_rules})


def _policy_sides(
    settings: Settings, directory: Path, against: str | None, live: LiveState | None = None
) -> _Sides:
    """The candidate files in ``directory`` and what they are compared with: the applied
    policy (from the database, or from a running gateway: ``live``), or the files at git
    ``against`` (grants from ``live``, or from the database when it answers;
    ``grants_read`` says when it does not)."""
    from sqlalchemy.exc import SQLAlchemyError

    candidate = _load_policy(settings, directory)
    sides = _Sides(candidate, [], "the applied policy", set(candidate.permissions), [], {}, [])
    if against is not None:
        with tempfile.TemporaryDirectory() as tmp:
            _git_policy_files(directory, against, Path(tmp))
            baseline_policy = _load_policy(settings, Path(tmp))
        sides.baseline_rules = baseline_policy.rules()
        sides.installation_roles = baseline_policy.installation_roles()
        sides.catalogue |= set(baseline_policy.permissions)
        sides.baseline = f"git {against}"
        if live is not None:
            _take_gateway_state(sides, live)
            return sides
        try:
            with policy_reader(settings) as policies:
                _read_live(sides, policies)
        except (SQLAlchemyError, OSError) as exc:
            sides.grants_read = False
            sides.note = f"the database did not answer: {type(exc).__name__}"
    elif live is not None:
        sides.baseline_rules = list(live.rules)
        sides.installation_roles = live.installation_roles
        sides.baseline = f"the applied policy at {live.url}"
        _take_gateway_state(sides, live)
    else:
        with policy_reader(settings) as policies:
            sides.baseline_rules = sorted(policies.current_rules())
            sides.installation_roles = policies.applied_installation_roles()
            _read_live(sides, policies)
    return sides


def _read_live(sides: _Sides, policies: PolicyService) -> None:
    sides.grants, sides.people, sides.workspaces = policies.live_grants()
    custom = policies.custom_roles()  # read once: the count, the rules, the collisions
    sides.custom_roles = len(custom)
    sides.custom_rules = sorted(rule for role in custom for rule in custom_role_rules(role))
    sides.baseline_rules = sorted({*sides.baseline_rules, *sides.custom_rules})
    sides.collisions = find_collisions(
        ((role.name, role.workspace_slug) for role in custom), sides.candidate
    )


def _gateway_state(url: str, token: str) -> LiveState:
    try:
        with paused_gc():
            return read_gateway(url, token)
    except GatewayUnreadable as exc:
        _fail(f"--gateway: {exc}")
        raise AssertionError from exc  # unreachable


def _take_gateway_state(sides: _Sides, live: LiveState) -> None:
    """What a gateway's token read, as :func:`_read_live` takes the database's."""
    sides.grants, sides.people, sides.workspaces = live.grants, live.people, live.workspaces
    sides.custom_rules = sorted(live.custom_rules)
    sides.baseline_rules = sorted({*sides.baseline_rules, *sides.custom_rules})
    custom = custom_roles_of(live.custom_rules)
    sides.custom_roles = len(custom)
    sides.collisions = find_collisions(custom, sides.candidate)
    if not live.everything:
        sides.domains = {ALL_WORKSPACES, *live.workspaces}
        count = len(live.workspaces)
        sides.baseline += (
            f" (the grants where the token may read roles in {count} "
            f"workspace{'' if count == 1 else 's'}: only there)"
        )


@contextmanager
def paused_gc() -> Iterator[None]:
    """The garbage collector paused, as the engine's bulk load does: plan and replay make
    millions of objects at scale (grants, people, two engines) and free them all at once
    at the end; a collection every few hundred thousand of them would traverse the whole
    heap again each time (reading 1M users' grants: 41 s with it, 8 s without)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _make_plan(
    settings: Settings, directory: Path, against: str | None, live: LiveState | None = None
) -> Plan:
    """The plan of applying the files in ``directory`` (see :func:`_policy_sides`)."""
    from gateway.policy.version import content_hash

    with paused_gc():
        return _plan_of(settings, directory, against, content_hash(directory), live)


def _plan_of(
    settings: Settings,
    directory: Path,
    against: str | None,
    digest: str,
    live: LiveState | None = None,
) -> Plan:
    sides = _policy_sides(settings, directory, against, live)
    candidate_rules, baseline_rules = sides.candidate_rules, sides.baseline_rules
    if sides.domains is not None:
        # The token reads some workspaces: the roles of the others are left out on both
        # sides, as the gateway left out their rules (and nobody there was read).
        candidate_rules = [r for r in candidate_rules if rule_domain(r) in sides.domains]
        baseline_rules = [r for r in baseline_rules if rule_domain(r) in sides.domains]
    plan = compute_plan(
        model_path=settings.model_path,
        baseline_rules=baseline_rules,
        candidate_rules=candidate_rules,
        catalogue=sides.catalogue,
        grants=sides.grants,
        people=sides.people,
        workspaces=sides.workspaces,
        candidate=str(directory),
        baseline=sides.baseline,
        policy_digest=digest,
        grants_read=sides.grants_read,
        grants_note=sides.note,
    )
    plan.extra["policies"] = str(directory.resolve())
    if against is not None:
        plan.extra["against"] = against
    if live is not None:
        plan.extra["gateway"] = live.url
    return replace(
        plan,
        adoptions=[str(c) for c in sides.collisions if c.adopts],
        collisions=[str(c) for c in sides.collisions if not c.adopts],
        custom_roles=sides.custom_roles,
        scopes=scope_changes(
            sides.candidate.installation_roles()
            if sides.installation_roles is None
            else sides.installation_roles,
            sides.candidate.installation_roles(),
        ),
    )


@policy.command("replay")
@click.option(
    "--decision-log",
    "decision_log",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A decision log (JSON Lines, as RINGFENCE_DECISION_LOG writes it).",
)
@candidate_policy_options
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text")
@click.option(
    "--examples",
    type=click.IntRange(min=0),
    default=EXAMPLES,
    show_default=True,
    help="Flipped requests shown per direction.",
)
@click.pass_obj
def policy_replay(
    settings: Settings,
    decision_log: Path,
    policies_path: Path | None,
    against: str | None,
    fmt: str,
    examples: int,
) -> None:
    """Ask the logged real decisions again of the candidate policy, on the live grants,
    and list those whose answer would flip. Exit status: 0 none flips, 2 some flip,
    3 some denied decision would be allowed."""
    if policies_path is not None and against is not None:
        raise click.UsageError("give --policies or --against, not both")
    directory = policies_path or settings.policies_dir
    with paused_gc():
        sides = _policy_sides(settings, directory, against)
    if not sides.grants_read:
        _fail(f"replay needs the live grants, and {sides.note}")
    people = sides.people.values()

    def engine(rules: list[Any]) -> Any:
        return policy_engine(settings.model_path, rules, sides.grants, people, sides.workspaces)

    with paused_gc(), decision_log.open(encoding="utf-8", errors="replace") as lines:
        result = replay(
            lines,
            baseline=engine(sides.baseline_rules),
            candidate=engine(sides.candidate_rules),
            log=str(decision_log),
            candidate_name=str(directory),
            baseline_name=sides.baseline,
            examples=examples,
        )
    render = {"text": render_replay_text, "markdown": render_replay_markdown}.get(
        fmt, render_replay_json
    )
    click.echo(render(result))
    sys.exit(result.exit_code)


@policy.command("export")
@click.option(
    "--workspace", help="Only this workspace's custom roles (default: every workspace's)."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the file here (e.g. policies/acme.yaml) instead of standard output.",
)
@click.pass_obj
def policy_export(settings: Settings, workspace: str | None, out: Path | None) -> None:
    """Write the workspaces' custom roles as a policy file, to move them into version
    control: applied from policies/, each adopts the custom role it came from."""
    from datetime import UTC, datetime

    from gateway.policy.export import ExportedRole, NamesCollide, export_yaml

    with policy_reader(settings) as policies:
        roles = [
            ExportedRole(r.name, r.workspace_slug, r.description, list(r.permissions))
            for r in policies.custom_roles()
            if workspace is None or r.workspace_slug == workspace
        ]
    if not roles:
        where = f"in '{workspace}'" if workspace else "in any workspace"
        _fail(f"No custom roles {where}: nothing to export.")
    try:
        text = export_yaml(roles, f"Exported on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.")
    except NamesCollide as exc:
        _fail(f"Not exported: {exc}")
        raise AssertionError from exc  # unreachable
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    click.echo(f"{len(roles)} custom roles written to {out}.", err=True)


@policy.command("apply")
@click.option("--reason", help="Why: recorded on the audit event.")
@click.option("--yes", "-y", is_flag=True, help="Apply without showing the plan for confirmation.")
@click.option(
    "--plan-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Apply exactly a plan saved by 'policy plan --out' (refused if anything changed since).",
)
@click.pass_obj
def policy_apply(settings: Settings, reason: str | None, yes: bool, plan_file: Path | None) -> None:
    """Write the policy as Casbin rules (only what changed; safe to run again). Shows the
    plan and asks for confirmation unless --yes or --plan-file."""
    if plan_file is not None:
        _apply_plan_file(settings, reason, plan_file)
        return
    if not yes:
        plan = _make_plan(settings, settings.policies_dir, None)
        if plan.changed:
            click.echo(render_text(plan))
            if not _interactive():
                _fail(
                    "Not applied: confirmation needs a terminal. Pass --yes to apply without "
                    "asking, or save a plan with 'policy plan --out FILE' and apply it with "
                    "--plan-file FILE."
                )
            if not click.confirm("Apply this plan?", default=False):
                _fail("Not applied.")
    _apply_policy(settings, reason)


def _interactive() -> bool:
    """Whether someone can answer a question: standard input is a terminal."""
    return sys.stdin.isatty()


def _apply_plan_file(settings: Settings, reason: str | None, path: Path) -> None:
    try:
        saved = plan_from_json(path.read_text(encoding="utf-8"))
        directory = Path(saved.extra["policies"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(f"{path}: not a plan saved by 'ringfence policy plan --out' ({exc})")
        raise AssertionError from exc  # unreachable
    if "against" in saved.extra:
        _fail(f"{path} compares with git {saved.extra['against']}, not the applied policy")
    if not directory.is_dir():
        _fail(f"{path}: the policy folder it was made from, {directory}, is gone")
    current = _make_plan(settings, directory, None)
    then, now = saved.digests, current.digests
    stale = [
        what
        for what, before, after in (
            ("the policy files", then.policy_files, now.policy_files),
            ("the applied policy", then.applied_rules, now.applied_rules),
            ("the grants", then.grants, now.grants),
        )
        if before != after
    ]
    if stale:
        _fail(
            f"Not applied: {path} is stale: {' and '.join(stale)} changed since it was made. "
            "Run 'ringfence policy plan --out' again and review the new plan."
        )
    _apply_policy(settings, reason, directory)


def _apply_policy(
    settings: Settings, reason: str | None = None, directory: Path | None = None
) -> None:
    from gateway.policy.version import policy_version

    directory = directory or settings.policies_dir
    policy_set = _load_policy(settings, directory)
    version = policy_version(directory)
    with open_services(settings) as services:
        actor = replace(services_actor(), reason=reason)
        try:
            plan, revision = services.policies.apply(actor, policy_set, version)
        except RingfenceError as exc:
            _fail(f"Not applied: {exc}")
            raise AssertionError from exc  # unreachable
    if revision is None:
        click.echo("Policy is already applied; nothing changed.")
    else:
        click.echo(
            f"Policy applied at revision {revision}: "
            f"{len(plan.added)} rules added, {len(plan.removed)} removed."
        )
    for orphan in plan.orphaned_grants:
        click.secho(f"warning: {orphan} - that role is no longer defined", fg="yellow", err=True)


def services_actor() -> Any:
    from gateway.services.base import SYSTEM

    return SYSTEM


# -- set-up -----------------------------------------------------------------------------


@main.command()
@click.option("--admin-email", help="Email of the first super admin (default from settings).")
@click.option("--admin-name", help="Name of the first super admin.")
@click.pass_obj
def init(settings: Settings, admin_email: str | None, admin_name: str | None) -> None:
    """Migrate, apply policies/ and create the first super admin. Safe to run again."""
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    engine.dispose()
    click.echo("Database is up to date.")
    _apply_policy(settings)
    with open_services(settings) as services:
        if services.setup.superadmin_count():
            click.echo("A super admin exists already.")
            return
        created = services.setup.create_superadmin(
            admin_email or settings.admin_email, admin_name or settings.admin_name
        )
    _print_credentials(created.user.email, created.password)


@main.command("create-admin")
@click.option("--email", required=True, help="Email address of the new super admin.")
@click.option("--name", required=True, help="Display name.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input instead of generating one.",
)
@click.pass_obj
def create_admin(settings: Settings, email: str, name: str, password_stdin: bool) -> None:
    """Create a super admin (a role in every workspace)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with open_services(settings) as services:
        try:
            created = services.setup.create_superadmin(email, name, password)
        except RingfenceError as exc:
            _fail(str(exc.detail))
            return
    _print_credentials(created.user.email, None if password_stdin else created.password)


def _print_credentials(email: str, password: str | None) -> None:
    click.secho("Super admin created.", fg="green", bold=True)
    click.echo(f"  email:    {email}")
    if password:
        click.echo(f"  password: {password}")
        click.secho(
            "  This password is shown once and stored only as a hash: keep it now.", fg="yellow"
        )


@main.command()
@click.option("--url", "urls", multiple=True, help="A running replica to compare (repeatable).")
@click.option(
    "--max-lag", type=int, default=0, show_default=True, help="Revisions a replica may lag."
)
@click.pass_obj
def doctor(settings: Settings, urls: tuple[str, ...], max_lag: int) -> None:
    """Check that every grant has its Casbin rule and every rule its grant, and that each
    replica given with --url holds the database's policy revision."""
    from gateway.cli.replica_check import check_replica
    from gateway.replication.sync import committed_revision

    with open_services(settings) as services:
        problems = services.setup.doctor()
        database_revision = committed_revision(services.session)
    for url in urls:
        report = check_replica(url, database_revision, max_lag)
        if report.ok:
            click.echo(f"OK: {report.message}")
        else:
            problems.append(report.message)
    if problems:
        click.secho(f"{len(problems)} problem(s):", fg="red", err=True)
        for problem in problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)
    click.secho("OK: grants and Casbin rules agree.", fg="green")


# -- running ----------------------------------------------------------------------------


@main.command()
@click.option("--host", help="Address to listen on (default: the host setting, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: the port setting, 8000).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    envvar="WEB_CONCURRENCY",
    help="Worker processes, forked from one built app (env WEB_CONCURRENCY).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    envvar="RINGFENCE_THREADS",
    help="Threads running requests in each worker (env RINGFENCE_THREADS).",
)
@click.option(
    "--graceful-timeout",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    envvar="RINGFENCE_GRACEFUL_TIMEOUT",
    help="Seconds a stopping worker gets to finish its requests (env RINGFENCE_GRACEFUL_TIMEOUT).",
)
@click.pass_obj
def serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    workers: int,
    threads: int,
    graceful_timeout: int,
) -> None:
    """Serve the gateway with granian (run `ringfence init` first).

    The app is built once, then forked into the workers; `kill -HUP` reloads the
    workers gracefully, TERM stops them after their requests. The access log goes to
    stdout unless RINGFENCE_ACCESS_LOG is set to an empty value."""
    import os

    from gateway.app import create_app
    from gateway.cli.server import ServerOptions
    from gateway.cli.server import serve as serve_app

    options = ServerOptions(
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        threads=threads,
        access_log=bool(os.environ.get("RINGFENCE_ACCESS_LOG", "-")),
        log_level=settings.log_level,
        graceful_timeout=graceful_timeout,
    )
    bind = f"{options.host}:{options.port}"
    click.echo(f"Ringfence on http://{bind}  (API docs: http://{bind}/docs)")
    serve_app(lambda: create_app(settings), options)


@main.command()
@click.option("--concurrency", type=int, default=2, show_default=True)
@click.option(
    "--beat/--no-beat",
    default=True,
    show_default=True,
    help="Also run the periodic scheduler (outbox sweep, reminders); in one worker only.",
)
@click.pass_obj
def worker(settings: Settings, concurrency: int, beat: bool) -> None:
    """Run a Celery worker that sends email (needs RINGFENCE_BROKER_URL)."""
    from gateway.services.delivery import WorkerLedger
    from gateway.services.housekeeping import WorkerHousekeeping
    from mailer.housekeeping import install_housekeeping
    from mailer.worker import run_worker

    if not settings.broker_url:
        _fail("Set RINGFENCE_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run a worker.")
    install_housekeeping(WorkerHousekeeping(settings))
    run_worker(settings, WorkerLedger(settings), concurrency=concurrency, beat=beat)


# -- audit --------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The audit trail: verify its hash chain, export it, archive old events."""


@audit.command("verify")
@click.argument("archives", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--files-only", is_flag=True, help="Check only the archive files, not the database.")
@click.pass_obj
def audit_verify(settings: Settings, archives: tuple[str, ...], files_only: bool) -> None:
    """Walk the audit chain and name its first broken link (exit 1 if any).

    ARCHIVES are files written by `audit archive` (or `audit export --format jsonl` of
    the whole trail), oldest first: each must continue the one before, and the last one
    must end where the database's chain starts (its anchor)."""
    from pathlib import Path

    from gateway.audit.chain import read_jsonl, verify_records

    previous: str | None = None
    for name in archives:
        try:
            result = verify_records(read_jsonl(Path(name)), previous, where=f"{name}: ")
        except ValueError as exc:
            _fail(f"BROKEN: {exc}")
            return
        if not result.ok:
            _fail(f"BROKEN: {result.problem}")
        click.echo(
            f"{name}: {result.checked} events ({result.first_id}..{result.last_id}) "
            f"chain intact; ends at {result.end_hash}"
        )
        previous = result.end_hash
    if files_only:
        return
    with open_services(settings) as services:
        result = services.audit.verify()
    if not result.ok:
        _fail(f"BROKEN: {result.problem}")
    if previous is not None and previous != result.start_hash:
        _fail(
            f"BROKEN: the archives end at {previous}, but the database's chain starts "
            f"from {result.start_hash}"
        )
    click.secho(
        f"OK: {result.checked} events verified"
        + (f" ({result.first_id}..{result.last_id})" if result.checked else "")
        + f"; anchor {result.start_hash}, head {result.end_hash}",
        fg="green",
    )


@audit.command("export")
@click.option(
    "--format",
    "kind",
    type=click.Choice(["jsonl", "csv", "bundle"]),
    default="jsonl",
    help="bundle: JSON Lines with the signed checkpoints and the keys (verify-export).",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default stdout).")
@click.option("--actor", help="Part of the actor's recorded name or email.")
@click.option("--action", help="An action or its prefix (user, user.removed, ...).")
@click.option("--workspace")
@click.option("--target-type")
@click.option("--target-id")
@click.option("--since", type=click.DateTime(), help="UTC, e.g. 2026-01-31T00:00:00")
@click.option("--until", type=click.DateTime(), help="UTC, exclusive")
@click.pass_obj
def audit_export(
    settings: Settings,
    kind: str,
    output: str | None,
    since: Any,
    until: Any,
    **filters: Any,
) -> None:
    """Every matching event, oldest first, as JSON Lines (verifiable), CSV, or a bundle
    with the signed checkpoints and the public keys that verify it offline."""
    from datetime import UTC

    from gateway.services.audit import AuditFilter, csv_lines, jsonl_lines

    where = AuditFilter(
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
        **filters,
    )
    with open_services(settings) as services:
        records = services.audit.export(services_actor(), where)
        if kind == "bundle":
            lines = services.checkpoints.bundle(services_actor(), records, vars(where))
        else:
            lines = jsonl_lines(records) if kind == "jsonl" else csv_lines(records)
        with click.open_file(output or "-", "w", encoding="utf-8") as out:
            for chunk in lines:
                out.write(chunk)


@audit.command("checkpoint")
@click.pass_obj
def audit_checkpoint(settings: Settings) -> None:
    """Sign the audit chain's head now (a checkpoint, JWS with the signing key)."""
    with open_services(settings) as services:
        checkpoint = services.checkpoints.create(services_actor())
        click.echo(
            f"Checkpoint {checkpoint.id}: event {checkpoint.head_id}, hash "
            f"{checkpoint.head_hash}, signed by key {checkpoint.kid}"
        )


@audit.command("verify-export")
@click.argument("export", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A saved JWK Set to verify the checkpoints with, instead of the export's own.",
)
def audit_verify_export(export: str, jwks_file: str | None) -> None:
    """Check an exported trail offline: every event's hash and link, and every signed
    checkpoint (its signature, and that it names the recomputed hash of its event).
    Needs no database; exits 1 on any failure, naming the first bad event."""
    import json
    from pathlib import Path

    from gateway.audit.chain import read_jsonl
    from gateway.audit.checkpoints import keyset_ok, verify_export

    jwks = None
    if jwks_file:
        try:
            jwks = json.loads(Path(jwks_file).read_text(encoding="utf-8"))
        except (ValueError, UnicodeError) as exc:
            _fail(f"{jwks_file}: not JSON ({exc})")
        if not isinstance(jwks, dict) or not keyset_ok(jwks):
            _fail(f"{jwks_file}: not a JWK Set")
    try:
        result = verify_export(read_jsonl(Path(export)), jwks)
    except ValueError as exc:
        _fail(f"BROKEN: {exc}")
        return
    span = f" ({result.first_id}..{result.last_id})" if result.events else ""
    click.echo(f"{export}: {result.events} events{span}")
    if result.gaps:
        click.echo(f"  a filtered export: {result.gaps} gaps between ids (links not checked there)")
    for claims in result.checkpoints:
        click.echo(
            f"  checkpoint at event {claims['head_id']} ({claims['count']} events, issuer "
            f"{claims.get('iss')}): signature and hash verified"
        )
    if not result.ok:
        first = f" (first bad event: {result.bad_event})" if result.bad_event is not None else ""
        for problem in result.problems:
            click.secho(f"  {problem}", fg="red", err=True)
        _fail(f"BROKEN: {len(result.problems)} problems{first}")
    covered = result.covered_to
    if covered is None:
        click.secho(
            "OK, but no signed checkpoint covers these events: their hashes and links are "
            "consistent, nothing more",
            fg="yellow",
        )
        return
    after = f"; events after {covered} are not signed yet" if covered != result.last_id else ""
    click.secho(f"OK: chain intact and signed up to event {covered}{after}", fg="green")


@audit.command("archive")
@click.option(
    "--days",
    type=int,
    help="Archive events older than this (default RINGFENCE_AUDIT_RETENTION_DAYS).",
)
@click.pass_obj
def audit_archive(settings: Settings, days: int | None) -> None:
    """Move events older than the retention period to a JSON Lines file in
    RINGFENCE_AUDIT_ARCHIVE_DIR and delete them; the chain stays verifiable."""
    retention = settings.audit_retention_days if days is None else days
    if retention <= 0:
        _fail("Retention is off: set RINGFENCE_AUDIT_RETENTION_DAYS or pass --days.")
    with open_services(settings) as services:
        archived = services.audit.archive(retention, settings.audit_archive_path)
    if archived is None:
        click.echo(f"No events older than {retention} days.")
        return
    click.echo(
        f"Archived {archived.count} events ({archived.first_id}..{archived.last_id}) to "
        f"{archived.path}; the chain now starts after {archived.anchor_hash}"
    )


# -- access reviews and time-limited grants (what beat runs, for cron or dev mode) ------


@main.group()
def review() -> None:
    """Access review campaigns: start one, close those past their deadline."""


@review.command("start")
@click.option("--workspace", default="*", show_default=True, help="A slug, or * for all.")
@click.option("--name", help="Campaign name (default: Access review <date>).")
@click.option("--deadline-days", type=click.IntRange(1, 366), help="Default from settings.")
@click.option("--on-deadline", type=click.Choice(["flag", "revoke"]), help="Default: settings.")
@click.option(
    "--if-due",
    is_flag=True,
    help="The periodic campaign, only if RINGFENCE_REVIEW_EVERY_DAYS have passed (as beat).",
)
@click.pass_obj
def review_start(
    settings: Settings,
    workspace: str,
    name: str | None,
    deadline_days: int | None,
    on_deadline: str | None,
    if_due: bool,
) -> None:
    """Freeze the active grants into a new campaign and assign their reviewers."""
    from datetime import timedelta

    from gateway.db.models import utcnow

    days = deadline_days or settings.review_deadline_days
    when = on_deadline or settings.review_on_deadline
    with open_services(settings) as services:
        try:
            if if_due:
                view = services.reviews.start_due(
                    services_actor(), settings.review_every_days, days, when
                )
                if view is None:
                    click.echo("No periodic review is due.")
                    return
            else:
                now = utcnow()
                view = services.reviews.start(
                    services_actor(),
                    name or f"Access review {now:%Y-%m-%d}",
                    workspace,
                    now + timedelta(days=days),
                    when,
                )
        except RingfenceError as exc:
            _fail(str(exc.detail))
            return
    click.echo(
        f"Review campaign {view.campaign.id} started: {view.total} grant(s), "
        f"deadline {view.campaign.deadline:%Y-%m-%d %H:%M} UTC, then {view.campaign.on_deadline}."
    )


@review.command("close-due")
@click.pass_obj
def review_close_due(settings: Settings) -> None:
    """Finish the campaigns past their deadline (flag or revoke what is undecided)."""
    with open_services(settings) as services:
        count = services.reviews.close_due(services_actor())
    click.echo(f"Closed {count} review campaign(s).")


@main.group()
def grants() -> None:
    """Grants: remove the time-limited ones that ended."""


@grants.command("expire")
@click.pass_obj
def grants_expire(settings: Settings) -> None:
    """Remove ended grants for good (decisions denied already), audited grant.expired."""
    with open_services(settings) as services:
        count = services.grants.expire_ended(services_actor())
    click.echo(f"Expired {count} grant(s).")


# -- OAuth clients of services and token signing keys ---------------------------------


@main.group()
def client() -> None:
    """OAuth 2.0 clients of services (client credentials for POST /oauth/token)."""


@client.command("create")
@click.option("--name", required=True, help="What the service is, e.g. 'billing-api'.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    default=["decisions:check"],
    show_default=True,
    help="A scope to give (repeat for more): decisions:check, tokens:introspect.",
)
@click.pass_obj
def client_create(settings: Settings, name: str, scopes: tuple[str, ...]) -> None:
    """Create a client; its secret is printed once."""
    with open_services(settings) as services:
        try:
            created = services.clients.create(services_actor(), name, list(scopes))
        except RingfenceError as exc:
            _fail(str(exc.detail))
            return
        click.secho("Client created.", fg="green", bold=True)
        click.echo(f"  client_id:     {created.client.client_id}")
        click.echo(f"  client_secret: {created.client_secret}")
        click.echo(f"  scopes:        {created.client.scopes}")
    click.secho("  The secret is shown once and stored only as a hash: keep it now.", fg="yellow")


@client.command("list")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted clients.")
@click.pass_obj
def client_list(settings: Settings, include_deleted: bool) -> None:
    """List the clients."""
    with open_services(settings) as services:
        for c in services.clients.list(services_actor(), include_deleted):
            state = f"deleted {c.revoked_at:%Y-%m-%d}" if c.revoked_at else "active"
            click.echo(f"{c.client_id}  {c.name}  [{c.scopes}]  {state}")


@client.command("delete")
@click.argument("client_id")
@click.pass_obj
def client_delete(settings: Settings, client_id: str) -> None:
    """Delete a client: no more tokens, and its tokens stop working at once."""
    with open_services(settings) as services:
        try:
            services.clients.delete(services_actor(), client_id)
        except RingfenceError as exc:
            _fail(str(exc.detail))
            return
    click.echo(f"Client {client_id} deleted.")


@client.command("rotate-secret")
@click.argument("client_id")
@click.pass_obj
def client_rotate_secret(settings: Settings, client_id: str) -> None:
    """A new secret for a client (printed once); the old one stops working."""
    with open_services(settings) as services:
        try:
            rotated = services.clients.rotate_secret(services_actor(), client_id)
        except RingfenceError as exc:
            _fail(str(exc.detail))
            return
        click.echo(f"  client_id:     {rotated.client.client_id}")
        click.echo(f"  client_secret: {rotated.client_secret}")


@main.group()
def keys() -> None:
    """The keys that sign access tokens (published at /.well-known/jwks.json)."""


@keys.command("rotate")
@click.pass_obj
def keys_rotate(settings: Settings) -> None:
    """Sign with a new key from now on; old keys verify until their tokens expire."""
    with open_services(settings) as services:
        key, retired = services.keys.rotate(services_actor())
        click.echo(f"New signing key: {key.kid}")
    for kid in retired:
        click.echo(f"Retired (all its tokens have expired): {kid}")


# A kid is a base64url thumbprint and may start with "-": read as the argument, not as
# an unknown option (``--`` before it works too).
@keys.command("retire", context_settings={"ignore_unknown_options": True})
@click.argument("kid")
@click.pass_obj
def keys_retire(settings: Settings, kid: str) -> None:
    """Stop a previous key verifying at once (e.g. it leaked); its tokens stop working."""
    with open_services(settings) as services:
        try:
            services.keys.retire(kid, services_actor())
        except RingfenceError as exc:
            _fail(str(exc.detail))
            return
    click.echo(f"Retired: {kid}")


@keys.command("list")
@click.pass_obj
def keys_list(settings: Settings) -> None:
    """Every key and its state: signing, verifying or retired."""
    with open_services(settings) as services:
        for key, state in services.keys.list():
            click.echo(
                f"{key.kid}  {key.algorithm}  {state}  created {key.created_at:%Y-%m-%d %H:%M}"
            )


if __name__ == "__main__":
    main()
