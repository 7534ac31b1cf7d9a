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


def doc(text: str) -> dict[str, str]:
    """A setting's description, kept in its field's metadata: the generated settings table
    of docs/configuration.md shows it (``python -m gateway.config_doc``)."""
    return {"doc": text}


MFA_POLICIES = ("off", "admins", "everyone")
# The longest RINGFENCE_MFA_REMEMBER_DAYS: a browser skips the second step for at most
# this long (then the factor is asked again).
MAX_MFA_REMEMBER_DAYS = 90


@dataclass(frozen=True)
class Settings:
    """Everything Ringfence can be told; the defaults are the embedded first run.

    Each field is ``RINGFENCE_<FIELD>`` in the environment; its ``doc`` is the row of the
    settings table in docs/configuration.md (``python -m gateway.config_doc --write``).
    """

    instance_dir: Path = field(
        default=PROJECT_ROOT / "instance",
        metadata=doc("folder of the SQLite file, the secret key and the outbox"),
    )
    database_url: str = field(
        default="",
        metadata=doc(
            "SQLAlchemy URL of the database, e.g. `postgresql+psycopg://user@host/db`; "
            "empty: a SQLite file in the instance folder"
        ),
    )
    secret_key: str = field(
        default="",
        repr=False,
        metadata=doc(
            "seals the token signing keys and other stored secrets (changing it makes them "
            "unreadable); empty: generated once into `<instance>/secret_key`"
        ),
    )
    policies_dir: Path = field(
        default=PROJECT_ROOT / "policies", metadata=doc("role definitions (YAML)")
    )
    model_path: Path = field(default=PROJECT_ROOT / "model.conf", metadata=doc("the Casbin model"))
    public_url: str = field(
        default="http://127.0.0.1:8000",
        metadata=doc(
            "base of the links in emails and of the single sign-on callback; its host is "
            "the passkeys' relying party id and its origin the only one their sign-ins are "
            "accepted from (passkeys made under another host do not work)"
        ),
    )
    host: str = field(default="127.0.0.1", metadata=doc("where `ringfence serve` listens"))
    port: int = field(default=8000, metadata=doc("the port `ringfence serve` listens on"))
    access_token_ttl: int = field(
        default=900,
        metadata=doc("people's access token lifetime, seconds (refresh tokens renew it)"),
    )
    refresh_token_ttl_days: int = field(
        default=30, metadata=doc("refresh token lifetime, days (from its last use)")
    )
    session_max_days: int = field(
        default=30,
        metadata=doc(
            "a person's session ends this many days after they signed in, however often "
            "its refresh tokens are used (an absolute lifetime, at least 1): then they sign "
            "in again, with their password, second factor or single sign-on"
        ),
    )
    invitation_ttl_days: int = field(default=7, metadata=doc("invitation link lifetime, days"))
    allowed_email_domains: str = field(
        default="",
        metadata=doc(
            "company domains that may be invited, comma-separated; empty: any (the email "
            "settings of the admin API override it)"
        ),
    )
    password_hash_profile: str = field(
        default="rfc9106-low-memory",
        metadata=doc(
            "argon2id cost of stored passwords: `rfc9106-low-memory` (t=3, 64 MiB, p=4); "
            "`test-only-cheapest` makes sign-ins free for test suites and is never for use"
        ),
    )
    login_failures_per_account: str = field(
        default="5 per 15 minutes",
        metadata=doc("failed sign-ins per address typed before a temporary lock (429)"),
    )
    login_failures_per_client: str = field(
        default="30 per 15 minutes",
        metadata=doc("failed sign-ins per client address before a temporary lock (429)"),
    )
    scim_requests_per_connection: str = field(
        default="15000 per minute",
        metadata=doc(
            "requests a company directory's connection may send to `/scim/v2` (429 with "
            "`Retry-After` beyond); counted where `RINGFENCE_RATE_LIMIT_STORAGE_URL` says. "
            "The default, 250 a second sustained, is above what a replica creates, so a "
            "directory's first push is never slowed by it, while a runaway one is"
        ),
    )
    rate_limit_storage_url: str = field(
        default="memory://",
        metadata=doc(
            "where throttling counters live; a Redis URL (e.g. `redis://127.0.0.1:6379/2`) "
            "shares them between replicas"
        ),
    )
    resend_interval_seconds: int = field(
        default=60, metadata=doc("at most one resend per invitation this often (429 otherwise)")
    )
    reminder_after_days: int = field(
        default=3,
        metadata=doc(
            "the worker's beat reminds people still pending this long, once, with a new "
            "link; `0`: never"
        ),
    )
    max_body_bytes: int = field(default=1024 * 1024, metadata=doc("larger request bodies get 413"))
    revision_poll_seconds: float = field(
        default=2.0,
        metadata=doc(
            "how often a running gateway looks for changes committed by other processes "
            "(the CLI, other workers); `0` turns the check off"
        ),
    )
    # Mail: Celery runs tasks eagerly when no broker is set; mail goes to the outbox
    # folder when no SMTP host is set.
    broker_url: str = field(
        default="",
        metadata=doc(
            "Celery broker for email, e.g. `redis://127.0.0.1:6379/0`; empty: tasks run "
            "at once in the web process"
        ),
    )
    smtp_host: str = field(
        default="", metadata=doc("SMTP server; empty: mail goes to the outbox folder")
    )
    smtp_port: int = field(default=587, metadata=doc("SMTP port"))
    smtp_security: str = field(default="starttls", metadata=doc("`none`, `starttls` or `tls`"))
    smtp_username: str = field(default="", metadata=doc("SMTP user name"))
    smtp_password: str = field(default="", repr=False, metadata=doc("SMTP password"))
    smtp_timeout: float = field(default=10.0, metadata=doc("SMTP timeout, seconds"))
    smtp_test_connect_seconds: float = field(
        default=5.0,
        metadata=doc(
            "the settings' test email: the time every outcome takes until the peer has "
            "shown it speaks SMTP (a closed port answers no sooner than a silent one)"
        ),
    )
    mail_from: str = field(
        default="Ringfence <no-reply@localhost>", metadata=doc("sender; must be one address")
    )
    outbox_dir: Path | None = field(
        default=None, metadata=doc("where mail goes without SMTP; unset: `<instance>/outbox`")
    )
    # A failed attempt that may succeed later (server away, 4xx) is retried after a
    # back-off that starts at mail_retry_backoff_seconds and doubles up to
    # mail_retry_backoff_max_seconds (jittered), until mail_max_attempts were made.
    mail_retry_backoff_seconds: float = field(
        default=30.0,
        metadata=doc(
            "the worker retries a delivery that may succeed later (server away, 4xx) after "
            "about this long, doubling each time (jittered)"
        ),
    )
    mail_retry_backoff_max_seconds: float = field(
        default=600.0,
        metadata=doc(
            "the longest wait between two attempts (the sweep takes a retry as lost only "
            "after twice this, or 15 minutes)"
        ),
    )
    mail_max_attempts: int = field(
        default=6,
        metadata=doc("attempts per email, the first included; then it is marked failed"),
    )
    outbox_sweep_interval_seconds: float = field(
        default=60.0,
        metadata=doc(
            "how often the worker's beat (`ringfence worker --beat`) sweeps the outbox for "
            "email whose task was lost"
        ),
    )
    outbox_sweep_after_seconds: float = field(
        default=60.0,
        metadata=doc(
            "how long an email stays queued before the sweep queues it again (e.g. the "
            "broker was down when it was queued)"
        ),
    )
    # The claim is renewed while the worker sends, so only a dead worker's message is
    # taken over (and sent again).
    mail_claim_lease_seconds: float = field(
        default=60.0,
        metadata=doc(
            "how long a worker's claim on an email it is sending lasts; the worker renews "
            "it every third of that while it talks to the SMTP server, so only a dead "
            "worker's email is taken over and sent again"
        ),
    )
    mail_worker_heartbeat_seconds: float = field(
        default=10.0,
        metadata=doc(
            "a worker whose consumer is connected to the broker stamps its row this often; "
            "`/readyz` and `ringfence_mail_workers_consuming` count those stamped within "
            "three times this"
        ),
    )
    audit_retention_days: int = field(
        default=0,
        metadata=doc(
            "archive (then delete) audit events older than this many days, by `ringfence "
            "audit archive` and the worker's hourly beat; `0`: keep every event"
        ),
    )
    audit_archive_dir: Path | None = field(
        default=None,
        metadata=doc(
            "where archives go (`audit-<first id>-<last id>.jsonl`); unset: "
            "`<instance>/audit-archive`"
        ),
    )
    audit_checkpoint_every: int = field(
        default=1000,
        metadata=doc(
            "sign a checkpoint of the audit chain's head (a JWS with the token signing "
            "key) in the transaction whose events cross each multiple of this many "
            "events; `0`: only on demand (`POST /audit/checkpoints`, `ringfence audit "
            "checkpoint`)"
        ),
    )
    decision_log: str = field(
        default="off",
        metadata=doc(
            "`off`, `stdout`, or a file path: one JSON line per decision of `/v1/check` and "
            "the AuthZEN evaluations"
        ),
    )
    decision_log_sample: float = field(default=1.0, metadata=doc("share of decisions logged, 0..1"))
    activity_flush_seconds: float = field(
        default=30.0,
        metadata=doc(
            "how often each process writes last seen per person and workspace (noted in "
            "memory by the decision endpoints); `0`: not recorded"
        ),
    )
    review_every_days: int = field(
        default=0,
        metadata=doc(
            "the worker's beat starts an access review of every workspace this often (e.g. "
            "`91` for quarterly); `0`: never"
        ),
    )
    review_deadline_days: int = field(
        default=14, metadata=doc("days reviewers get in periodic (and CLI-started) campaigns")
    )
    review_on_deadline: str = field(
        default="flag",
        metadata=doc(
            "what happens to grants still undecided at the deadline: `flag` (kept, marked) "
            "or `revoke`"
        ),
    )
    admin_email: str = field(
        default="admin@example.com", metadata=doc("the first super admin made by `init`")
    )
    admin_name: str = field(default="Super Admin", metadata=doc("the first super admin's name"))
    log_level: str = field(default="INFO", metadata=doc("the logging level"))
    log_format: str = field(
        default="text",
        metadata=doc(
            "`text`, or `json`: one JSON object a line (`time`, `level`, `logger`, "
            "`message`, `request_id`, `exception`) from the gateway and the worker"
        ),
    )
    watcher_url: str = field(
        default="",
        metadata=doc(
            "Redis URL for change notices between replicas, e.g. "
            "`redis://127.0.0.1:6379/1`; empty: the revision check alone"
        ),
    )
    watcher_health_seconds: float = field(
        default=5.0,
        metadata=doc(
            "how often the watcher pings Redis; no answer within 2 s counts as "
            "disconnected, and changes then arrive by the revision check"
        ),
    )
    min_revision_wait_ms: int = field(
        default=200,
        metadata=doc(
            "how long a decision sent with `X-Min-Revision` may wait for this replica to "
            "reach it before 409/503"
        ),
    )
    trusted_proxies: int = field(
        default=0,
        metadata=doc(
            "how many proxies (load balancers) in front of the gateway to trust for "
            "`X-Forwarded-For`/`-Proto`, so throttling and the audit see the real client "
            "address; `0`: none"
        ),
    )
    client_token_ttl: int = field(
        default=3600, metadata=doc("lifetime of services' access tokens, seconds")
    )
    token_issuer: str = field(
        default="", metadata=doc("the `iss` of every access token; empty: the public URL")
    )
    custom_roles: bool = field(
        default=True,
        metadata=doc(
            "workspace admins with `role_management:define` may define roles for their "
            "workspace over the API and the console (`false`: roles only from `policies/`, "
            "in version control; existing custom roles stay readable, deletable and in force)"
        ),
    )
    decisions_allow_loopback: bool = field(
        default=False,
        metadata=doc(
            "development only: decision calls from 127.0.0.1/::1 may come without a token "
            "(a token that is sent is still checked). Never in production, nor behind a "
            "proxy on the same machine (every call would come from loopback)"
        ),
    )
    decision_token_cache_seconds: float = field(
        default=2.0,
        metadata=doc(
            "how long a process takes a service token it accepted for decisions without "
            "checking it again (`0`: every call); whatever ends a token makes every "
            "process forget it as soon as it hears of the change"
        ),
    )
    decision_token_outage_grace_seconds: float = field(
        default=300.0,
        metadata=doc(
            "while the database cannot be reached, a remembered service token works this "
            "long after its last check (never past its expiry), then gets 503"
        ),
    )
    # A stalled link answers nothing, and psycopg has no read timeout.
    database_call_timeout_seconds: float = field(
        default=1.0,
        metadata=doc(
            "the longest a decision (a service token's first check) or `/readyz` waits on "
            "the database; past it the database counts as unreachable"
        ),
    )
    database_request_wait_seconds: float = field(
        default=15.0,
        metadata=doc(
            "the longest an admin or console request waits for any one answer of the "
            "database (past PostgreSQL's 10 s lock timeout); past it the request gets a "
            "clean 503 (a stalled COMMIT: `commit-outcome-unknown`)"
        ),
    )
    metrics_token: str = field(
        default="",
        repr=False,
        metadata=doc(
            "when set, `GET /metrics` needs `Authorization: Bearer <this token>`; empty: "
            "`/metrics` is public (only where its port is reachable from a private network)"
        ),
    )
    password_reset_ttl_minutes: int = field(
        default=30, metadata=doc("password reset link lifetime, minutes")
    )
    password_resets_per_account: str = field(
        default="3 per hour",
        metadata=doc("reset requests per address typed before 429"),
    )
    password_resets_per_client: str = field(
        default="20 per hour",
        metadata=doc("reset requests per client address before 429"),
    )
    oidc_issuer: str = field(
        default="",
        metadata=doc(
            "the OpenID Connect provider's issuer URL (discovery from "
            "`<issuer>/.well-known/openid-configuration`); empty: single sign-on off"
        ),
    )
    oidc_client_id: str = field(default="", metadata=doc("this gateway's client at the provider"))
    oidc_client_secret: str = field(
        default="", repr=False, metadata=doc("the secret of that client")
    )
    oidc_return_url: str = field(
        default="",
        metadata=doc(
            "where the browser goes after single sign-on, with `?code=<one-time code>`; "
            "empty: the callback answers the code as JSON"
        ),
    )
    oidc_timeout: float = field(default=10.0, metadata=doc("seconds per request to the provider"))
    sso_allow_private_issuers: bool = field(
        default=False,
        metadata=doc(
            "workspaces' own single sign-on connections may name an issuer over plain "
            "`http` or at a loopback, link-local or private address; off, such an issuer is "
            "refused when it is saved and again before each sign-in, after its name resolves"
        ),
    )
    dns_nameservers: str = field(
        default="",
        metadata=doc(
            "the DNS servers that look up the TXT records proving workspaces' email domains, "
            "comma-separated `address` or `address:port` (IPv6 in brackets); empty: the "
            "system's (`/etc/resolv.conf`)"
        ),
    )
    dns_timeout: float = field(
        default=5.0, metadata=doc("seconds one email domain's TXT lookup may take in all")
    )
    sso_domain_recheck_hours: float = field(
        default=24.0,
        metadata=doc(
            "how often the scheduled upkeep looks up each verified email domain's TXT record "
            "again: a domain whose record is gone is no longer verified (its people are no "
            "longer routed to single sign-on or held to it); 0: only when an admin asks"
        ),
    )
    authzen_subjects: Path | None = field(
        default=None,
        metadata=doc(
            "AuthZEN subject directory: a JSON file of external subject ids -> emails (or "
            "objects with an `email`), read once at start-up"
        ),
    )
    authzen_max_evaluations: int = field(
        default=1000, metadata=doc("most items in one AuthZEN evaluations batch (413 past it)")
    )
    authzen_refinements: Path | None = field(
        default=None,
        metadata=doc(
            "AuthZEN refinements: a YAML file of resource or action properties that select "
            "a more specific resource or action, read once at start-up"
        ),
    )
    authzen_resources: Path | None = field(
        default=None,
        metadata=doc(
            "AuthZEN resource directory: a JSON array of resources (`type`, `id`, optional "
            "`workspace` and `properties`) that resource searches list and whose "
            "properties decide, read once at start-up"
        ),
    )

    stream_allow_private_destinations: bool = field(
        default=False,
        metadata=doc(
            "event streams may deliver to loopback, link-local and private addresses "
            "(webhooks, syslog); off, such a destination is refused when it is saved and "
            "again at each delivery, after its name resolves"
        ),
    )
    stream_ca_file: Path | None = field(
        default=None,
        metadata=doc(
            "a PEM file of certificate authorities trusted for event stream webhooks and "
            "syslog over TLS, besides the system's"
        ),
    )
    stream_file_dir: Path | None = field(
        default=None,
        metadata=doc(
            "the folder where `file` event streams write their JSON Lines; unset: "
            "`<instance>/streams`"
        ),
    )
    stream_timeout_seconds: float = field(
        default=10.0,
        metadata=doc("seconds an event stream delivery may take to connect, and per answer"),
    )
    stream_retry_backoff_seconds: float = field(
        default=5.0,
        metadata=doc(
            "an event stream whose delivery failed is tried again after this long, doubling "
            "with each failure in a row"
        ),
    )
    stream_retry_backoff_max_seconds: float = field(
        default=600.0, metadata=doc("the longest wait between two event stream deliveries")
    )
    stream_max_failures: int = field(
        default=10,
        metadata=doc(
            "failed deliveries in a row after which an event stream is paused (the reason "
            "shown; resuming or replaying starts it again)"
        ),
    )
    mfa_required: str = field(
        default="off",
        metadata=doc(
            "who must sign in with a second factor: `off`, `admins` (holders of any of the "
            "gateway's own permissions other than `:read` ones, in any workspace) or "
            "`everyone`; a person without one who signs in with a password gets a session "
            "good only for enrolling (the console walks them through it)"
        ),
    )
    mfa_remember_days: int = field(
        default=0,
        metadata=doc(
            "remembered browsers: after the console's second step a person may tick "
            '"Remember this browser", and that browser skips the second step (never the '
            "password) for this many days, 1 to 90; 0: off (the checkbox is not offered, "
            "and browsers remembered before are ignored at once). Lowering it shortens "
            "those remembered before"
        ),
    )

    def __post_init__(self) -> None:
        if self.mfa_required not in MFA_POLICIES:
            raise ValueError(
                f"RINGFENCE_MFA_REQUIRED: {self.mfa_required!r} is not one of "
                + ", ".join(MFA_POLICIES)
            )
        if not 0 <= self.mfa_remember_days <= MAX_MFA_REMEMBER_DAYS:
            raise ValueError(
                f"RINGFENCE_MFA_REMEMBER_DAYS: 0 (off) to {MAX_MFA_REMEMBER_DAYS} days"
            )
        if self.session_max_days < 1:
            raise ValueError("RINGFENCE_SESSION_MAX_DAYS: at least 1 day")
        if self.audit_checkpoint_every < 0:
            raise ValueError("RINGFENCE_AUDIT_CHECKPOINT_EVERY: must be 0 (off) or more")

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.instance_dir / 'ringfence.db'}"

    @property
    def outbox_path(self) -> Path:
        return self.outbox_dir or self.instance_dir / "outbox"

    @property
    def stream_file_path(self) -> Path:
        return self.stream_file_dir or self.instance_dir / "streams"

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
