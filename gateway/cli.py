"""The ``ringfence`` command: set up, run and look after a gateway."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from gateway.config import Settings, load_settings
from gateway.db import make_engine, make_session_factory, upgrade
from gateway.errors import RingfenceError
from gateway.policy import (
    PolicySet,
    format_results,
    load_policies,
    load_policy_tests,
    run_policy_tests,
)
from gateway.services import Services, load_engine


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


def _fail(message: str) -> None:
    click.secho(message, fg="red", err=True)
    sys.exit(1)


def _load_policy(settings: Settings) -> PolicySet:
    try:
        return load_policies(settings.policies_dir)
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


@policy.command("apply")
@click.option("--reason", help="Why: recorded on the audit event.")
@click.pass_obj
def policy_apply(settings: Settings, reason: str | None) -> None:
    """Write the policy as Casbin rules (only what changed; safe to run again)."""
    _apply_policy(settings, reason)


def _apply_policy(settings: Settings, reason: str | None = None) -> None:
    from dataclasses import replace

    from gateway.policy_version import policy_version

    policy_set = _load_policy(settings)
    version = policy_version(settings.policies_dir)
    with open_services(settings) as services:
        actor = replace(services_actor(), reason=reason)
        plan, revision = services.policies.apply(actor, policy_set, version)
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
    from gateway.replica_check import check_replica
    from gateway.sync import committed_revision

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
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8000).")
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--threads", type=int, default=8, show_default=True)
@click.pass_obj
def serve(
    settings: Settings, host: str | None, port: int | None, workers: int, threads: int
) -> None:
    """Serve the gateway with gunicorn (run `ringfence init` first)."""
    from gunicorn.app.base import BaseApplication

    from gateway.app import create_app

    bind = f"{host or settings.host}:{port or settings.port}"

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")
            # gunicorn >= 25 opens a control socket at one path per user, which a second
            # gateway on the host would share; signals are the interface (as in deploy/).
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            return create_app(settings)

    click.echo(f"Ringfence on http://{bind}  (API docs: http://{bind}/docs)")
    Server().run()


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

    from gateway.audit_chain import read_jsonl, verify_records

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
@click.option("--format", "kind", type=click.Choice(["jsonl", "csv"]), default="jsonl")
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
    """Every matching event, oldest first, as JSON Lines (verifiable) or CSV."""
    from datetime import UTC

    from gateway.services.audit import AuditFilter, csv_lines, jsonl_lines

    where = AuditFilter(
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
        **filters,
    )
    with open_services(settings) as services:
        records = services.audit.export(services_actor(), where)
        lines = jsonl_lines(records) if kind == "jsonl" else csv_lines(records)
        with click.open_file(output or "-", "w", encoding="utf-8") as out:
            for chunk in lines:
                out.write(chunk)


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

    from gateway.models import utcnow

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
