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
@click.pass_obj
def policy_apply(settings: Settings) -> None:
    """Write the policy as Casbin rules (only what changed; safe to run again)."""
    _apply_policy(settings)


def _apply_policy(settings: Settings) -> None:
    policy_set = _load_policy(settings)
    with open_services(settings) as services:
        plan, revision = services.policies.apply(services_actor(), policy_set)
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
@click.pass_obj
def doctor(settings: Settings) -> None:
    """Check that every grant has its Casbin rule and every rule its grant."""
    with open_services(settings) as services:
        problems = services.setup.doctor()
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
    from mailer.worker import run_worker

    if not settings.broker_url:
        _fail("Set RINGFENCE_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run a worker.")
    run_worker(settings, WorkerLedger(settings), concurrency=concurrency, beat=beat)


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


@keys.command("retire")
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
