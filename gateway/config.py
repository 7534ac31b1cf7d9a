"""Settings: read once from ``RINGFENCE_*`` environment variables.

Tests build a :class:`Settings` directly and hand it to ``create_app``; nothing else
in the code base reads the environment.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Everything Ringfence can be told; the defaults are the embedded first run."""

    instance_dir: Path = PROJECT_ROOT / "instance"
    database_url: str = ""  # empty: SQLite file in instance_dir
    secret_key: str = ""  # empty: generated once and kept in instance_dir/secret_key
    policies_dir: Path = PROJECT_ROOT / "policies"
    model_path: Path = PROJECT_ROOT / "model.conf"
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    access_token_ttl: int = 900  # seconds: short-lived; refresh tokens renew it
    refresh_token_ttl_days: int = 30
    invitation_ttl_days: int = 7
    # Company email domains that may be invited, comma-separated; empty allows any.
    # The admin API's email settings override it.
    allowed_email_domains: str = ""
    # Sign-in throttling (limits' notation): failures per address, and per client address.
    login_failures_per_account: str = "5 per 15 minutes"
    login_failures_per_client: str = "30 per 15 minutes"
    rate_limit_storage_url: str = "memory://"  # e.g. redis://127.0.0.1:6379/1 for replicas
    resend_interval_seconds: int = 60  # at most one resend per invitation this often
    reminder_after_days: int = 3  # remind people pending this long once; 0: never
    max_body_bytes: int = 1024 * 1024
    # How often each process checks for changes committed by other processes (the CLI,
    # other workers); 0 turns the check off.
    revision_poll_seconds: float = 2.0
    # Mail: Celery runs tasks eagerly when no broker is set; mail goes to the outbox
    # folder when no SMTP host is set.
    broker_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"  # none | starttls | tls
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_timeout: float = 10.0
    mail_from: str = "Ringfence <no-reply@localhost>"
    outbox_dir: Path | None = None  # None: instance_dir/outbox
    # Mail delivery timing, used by the Celery worker. A failed attempt that may succeed
    # later (server away, 4xx) is retried after a back-off that starts at
    # mail_retry_backoff_seconds and doubles up to mail_retry_backoff_max_seconds
    # (jittered), until mail_max_attempts attempts were made (the first included).
    mail_retry_backoff_seconds: float = 30.0
    mail_retry_backoff_max_seconds: float = 600.0
    mail_max_attempts: int = 6
    # Beat runs the outbox sweep this often; it requeues messages still queued after
    # outbox_sweep_after_seconds (their task was lost, e.g. the broker was down).
    outbox_sweep_interval_seconds: float = 60.0
    outbox_sweep_after_seconds: float = 60.0
    # A message being sent is claimed by its worker for this long; the worker renews the
    # claim while it sends, so only a dead worker's message is taken over (and sent again).
    mail_claim_lease_seconds: float = 60.0
    # A consuming worker stamps its row this often; /readyz and /metrics count workers
    # stamped within three times this as consuming.
    mail_worker_heartbeat_seconds: float = 10.0
    # Audit retention: events older than this many days are archived to a JSON Lines
    # file in audit_archive_dir (default instance_dir/audit-archive) and deleted, by
    # `ringfence audit archive` or the worker's beat; 0 keeps every event in the database.
    audit_retention_days: int = 0
    audit_archive_dir: Path | None = None
    # Decision log of the check endpoints: off, stdout, or a file path (JSON Lines),
    # sampled with this probability (0..1).
    decision_log: str = "off"
    decision_log_sample: float = 1.0
    # Last seen per person and workspace (shown in user details): the check endpoints'
    # answers are noted in memory and written this often, in seconds; 0: not recorded.
    activity_flush_seconds: float = 30.0
    # Access reviews: beat starts a campaign over every workspace this often (0: never),
    # due this many days later; undecided grants are then flagged or revoked.
    review_every_days: int = 0
    review_deadline_days: int = 14
    review_on_deadline: str = "flag"  # flag | revoke
    admin_email: str = "admin@example.com"
    admin_name: str = "Super Admin"
    log_level: str = "INFO"
    log_format: str = "text"  # text | json (one object a line, with the request id)
    # Replicas: change notices on Redis (empty: the revision check alone), how long a
    # decision asking for X-Min-Revision may wait for it, and how many proxies (load
    # balancers) in front of the gateway to trust for the client address (0: none).
    watcher_url: str = ""
    # The watcher pings Redis this often; no answer within 2 s means disconnected, and
    # changes then arrive by the revision check (revision_poll_seconds) until it is back.
    watcher_health_seconds: float = 5.0
    min_revision_wait_ms: int = 200
    trusted_proxies: int = 0
    # OAuth 2.0 for services (gateway/oauth_api.py): client token lifetime in seconds, the
    # "iss" of every token (empty: public_url), and whether calls to the decision endpoints
    # from 127.0.0.1/::1 may come without a token (development only; off by default).
    client_token_ttl: int = 3600
    token_issuer: str = ""
    decisions_allow_loopback: bool = False
    # How long a process takes a service token it accepted for decisions without checking it
    # again (gateway/token_cache.py); whatever ends a token makes every process forget
    # the tokens it remembers as soon as it hears of the change.
    decision_token_cache_seconds: float = 2.0
    # While the database is away, a remembered token works this long after this process
    # last checked it (never past its expiry), then gets 503; it caps the cache time too.
    decision_token_outage_grace_seconds: float = 300.0
    # The longest a request waits on the database where it must not hang (a service
    # token's check, /readyz): past it the database counts as unreachable (a stalled
    # link answers nothing, and psycopg has no read timeout).
    database_call_timeout_seconds: float = 1.0
    # When set, GET /metrics needs "Authorization: Bearer <this token>" (a scraper's
    # bearer_token); empty: /metrics is public, for scrapers inside a private network.
    metrics_token: str = field(default="", repr=False)
    # Password reset by email: link lifetime, and reset requests allowed per address typed
    # and per client address (limits' notation).
    password_reset_ttl_minutes: int = 30
    password_resets_per_account: str = "3 per hour"  # noqa: S105 - not a secret
    password_resets_per_client: str = "20 per hour"  # noqa: S105 - not a secret
    # Optional single sign-on with an OpenID Connect provider (discovery from the issuer's
    # /.well-known/openid-configuration); empty issuer: off.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)
    # Where the browser goes after SSO, with ?code=<one-time code> for POST
    # /auth/sso/exchange; empty: the callback answers that code as JSON.
    oidc_return_url: str = ""
    oidc_timeout: float = 10.0  # seconds, for each request to the provider
    # AuthZEN: a JSON file of external subject ids (e.g. an identity provider's opaque
    # ids) -> emails, read once at start-up; and the most evaluations in one batch.
    authzen_subjects: Path | None = None
    authzen_max_evaluations: int = 1000
    # AuthZEN: a YAML file of refinements (resource or action properties that select a
    # more specific resource or action, e.g. an archived record), read once.
    authzen_refinements: Path | None = None
    # AuthZEN: a JSON file of resource instances and their properties (the resources a
    # resource search lists, and facts about them that decide), read once.
    authzen_resources: Path | None = None

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.instance_dir / 'ringfence.db'}"

    @property
    def outbox_path(self) -> Path:
        return self.outbox_dir or self.instance_dir / "outbox"

    @property
    def audit_archive_path(self) -> Path:
        return self.audit_archive_dir or self.instance_dir / "audit-archive"

    @property
    def issuer(self) -> str:
        """The ``iss`` of the access tokens this installation signs."""
        return self.token_issuer or self.public_url.rstrip("/")

    def with_secret(self) -> Settings:
        """This settings object with a secret key, generating and keeping one if unset."""
        if self.secret_key:
            return self
        key_file = self.instance_dir / "secret_key"
        if not key_file.exists():
            self.instance_dir.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        return replace(self, secret_key=key_file.read_text().strip())


def _convert(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, Path) or default is None:
        return Path(raw)
    return raw


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from ``RINGFENCE_<FIELD>`` variables; unset ones keep their default."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = environ.get(f"RINGFENCE_{f.name.upper()}")
        if raw is None or raw == "":
            continue
        default = Settings.__dataclass_fields__[f.name].default
        try:
            values[f.name] = _convert(raw, default)
        except ValueError as exc:
            raise SystemExit(f"RINGFENCE_{f.name.upper()}: {exc}") from exc
    return Settings(**values)
