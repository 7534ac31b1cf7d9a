"""Shared fixtures: a real database (SQLite, and PostgreSQL when
``RINGFENCE_TEST_DATABASE_URL`` is set), a gateway set up by the real ``ringfence init``,
and a live HTTP server on loopback."""

from __future__ import annotations

import os
import re
import shutil
import uuid
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import CodeType
from typing import Any

import httpx
import httpx._transports.default
import hypothesis
import jinja2
import jinja2.bccache
import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper
from sqlalchemy.util import LRUCache
from werkzeug.routing.rules import Rule

from gateway.app import create_app
from gateway.audit import activity
from gateway.config import Settings
from tests.helpers import ADMIN_EMAIL, LiveServer, close_app, run_cli, serving

PG_URL = os.environ.get("RINGFENCE_TEST_DATABASE_URL", "")

# How hard the property tests search: `make test` uses "ci"; `make test-thorough` ten times
# the examples. The cases they found once are pinned as plain tests beside them.
hypothesis.settings.register_profile("ci", max_examples=60, deadline=None)
hypothesis.settings.register_profile("thorough", max_examples=600, deadline=None)
hypothesis.settings.load_profile(os.environ.get("RINGFENCE_HYPOTHESIS_PROFILE", "ci"))


# Every httpx client makes a new SSL context with the system's CA bundle loaded into it
# (tens of milliseconds of CPU each, even for http://): py-spy found a quarter of the
# suite's CPU there, in the thousands of clients the tests open. The tests' clients share
# one such context instead (httpx takes a context as ``verify`` as it is); a client given
# its own trust (a context, a CA file, ``verify=False``) or a certificate keeps making its
# own. If httpx moves the function, this fails loudly rather than going slow quietly.
_SHARED_SSL_CONTEXT = httpx.create_ssl_context()
_make_ssl_context = httpx._transports.default.create_ssl_context


def _shared_default_ssl_context(
    verify: object = True, cert: object = None, trust_env: bool = True
) -> object:
    if verify is True and cert is None:
        return _SHARED_SSL_CONTEXT
    return _make_ssl_context(verify=verify, cert=cert, trust_env=trust_env)  # type: ignore[arg-type]


httpx._transports.default.create_ssl_context = _shared_default_ssl_context  # type: ignore[assignment]


# Werkzeug compiles two URL builders (generated Python, compile()) for each of the
# app's ~190 routes, again for every app: 0.18 s of the 0.2 s create_app takes, once per
# test (a quarter of the suite's CPU). A builder is a function of the rule's shape alone
# (its parts, defaults and converters; the rule itself is its ``self`` argument), so the
# tests' apps share one per shape. If werkzeug renames the method, this fails loudly.
_compile_builder = Rule._compile_builder
_BUILDERS: dict[tuple[object, ...], Callable[..., tuple[str, str]]] = {}


def _shared_builder(self: Rule, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
    converters = sorted((n, type(c).__qualname__, c.regex) for n, c in self._converters.items())
    key = (
        self.rule,
        append_unknown,
        tuple(self._trace),
        repr(sorted((self.defaults or {}).items())),
        tuple(converters),
    )
    if key not in _BUILDERS:
        _BUILDERS[key] = _compile_builder(self, append_unknown)
    return _BUILDERS[key]


Rule._compile_builder = _shared_builder  # type: ignore[method-assign]


# Parsing the rules themselves (Rule.compile: their parts, the order of their static and
# variable pieces, one converter object per variable) was 9 ms of create_app's 30, again
# for every app. Those are a function of the rule's text, its host and subdomain and
# the map's converters and options: the tests' apps share them (the parts are read,
# never changed, by the map's matcher; converters keep no state of their map). The
# builders are bound to the rule as werkzeug binds them. If werkzeug's compile comes to
# set anything else, a rule served from here lacks it and fails loudly.
_compile_rule = Rule.compile
_COMPILED: dict[tuple[object, ...], tuple[list[object], list[object], dict[str, object]]] = {}


def _shared_compile(self: Rule) -> None:
    rule_map = self.map
    key = (
        self.rule,
        self.host,
        self.subdomain,
        self.merge_slashes,
        rule_map.host_matching,
        tuple(sorted((name, id(kind)) for name, kind in rule_map.converters.items())),
    )
    if key not in _COMPILED:
        _compile_rule(self)
        _COMPILED[key] = (self._parts, self._trace, self._converters)
        return
    self._parts, self._trace, self._converters = _COMPILED[key]
    self.arguments.update(self._converters)
    self._build = self._compile_builder(False).__get__(self, None)
    self._build_unknown = self._compile_builder(True).__get__(self, None)


Rule.compile = _shared_compile  # type: ignore[method-assign]


# SQLAlchemy compiles each statement once per engine (its cache is keyed by the engine's
# dialect object, and the mappers' caches of INSERTs and UPDATEs too), and every test
# makes its own engine: compiling was a tenth of the functional tests' CPU, the same
# statements again in every test. The tests' engines share one cache instead, keyed by
# what a dialect is rather than which object it is: its class and settings (server
# version, paramstyle, the flags read at its first connection), so that SQLite and
# PostgreSQL never share a statement, nor two servers or configurations that differ.
# If SQLAlchemy changes its cache's keys or its engine's attribute, this fails loudly.
_CANONICAL_DIALECTS: dict[tuple[object, ...], Dialect] = {}
_CANONICAL_OF: weakref.WeakKeyDictionary[Dialect, Dialect] = weakref.WeakKeyDictionary()


def _dialect_settings(dialect: Dialect) -> tuple[object, ...]:
    plain = (str, int, float, bool, type(None), tuple)
    settings = sorted((k, v) for k, v in vars(dialect).items() if isinstance(v, plain))
    serializers = (
        getattr(dialect, "_json_serializer", None),
        getattr(dialect, "_json_deserializer", None),
    )
    return (type(dialect), tuple(settings), serializers)


class _SharedCompiledCache:
    """A compiled cache (``get`` and item assignment, as SQLAlchemy uses one) shared by
    the tests' engines: a key's dialect is replaced by the first one seen with the same
    class and settings."""

    def __init__(self, capacity: int) -> None:
        self._entries: LRUCache[tuple[object, ...], Any] = LRUCache(capacity)

    def _key(self, key: tuple[object, ...]) -> tuple[object, ...]:
        dialect = key[0]
        canonical = _CANONICAL_OF.get(dialect)  # type: ignore[arg-type]
        if canonical is None:
            # At a statement's execution: the dialect has read its server's settings.
            assert isinstance(dialect, Dialect), key  # SQLAlchemy's key: (dialect, ...)
            canonical = _CANONICAL_DIALECTS.setdefault(_dialect_settings(dialect), dialect)
            _CANONICAL_OF[dialect] = canonical
        return (canonical, *key[1:])

    def get(self, key: tuple[object, ...], default: Any = None) -> Any:
        return self._entries.get(self._key(key), default)

    def __setitem__(self, key: tuple[object, ...], value: Any) -> None:
        self._entries[self._key(key)] = value


_SHARED_COMPILED = _SharedCompiledCache(10_000)
_engine_init = Engine.__init__


def _engine_with_shared_cache(self: Engine, *args: Any, **kwargs: Any) -> None:
    _engine_init(self, *args, **kwargs)
    if self._compiled_cache is not None:  # an engine made without a cache keeps none
        self._compiled_cache = _SHARED_COMPILED  # type: ignore[assignment]


Engine.__init__ = _engine_with_shared_cache  # type: ignore[method-assign]
# The mappers' own caches (their flushes' INSERT, UPDATE and DELETE statements).
Mapper._compiled_cache = _SHARED_COMPILED  # type: ignore[assignment,method-assign]


# Jinja compiles each template once per environment, and each test's app has its own:
# 7% of a console test's CPU. The tests' apps (all made by create_app, with the same
# Jinja settings) share the compiled code of a template, by its name and the checksum
# of its source (an edited template compiles again).
class _SharedTemplateCode(jinja2.BytecodeCache):
    def __init__(self) -> None:
        self._code: dict[tuple[str, str], CodeType] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        bucket.code = self._code.get((bucket.key, bucket.checksum))

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if bucket.code is not None:
            self._code[bucket.key, bucket.checksum] = bucket.code


_SHARED_TEMPLATE_CODE = _SharedTemplateCode()
_create_jinja_environment = Flask.create_jinja_environment


def _jinja_with_shared_code(self: Flask) -> Any:
    environment = _create_jinja_environment(self)
    environment.bytecode_cache = _SHARED_TEMPLATE_CODE
    return environment


Flask.create_jinja_environment = _jinja_with_shared_code  # type: ignore[method-assign]


# One secret per test session: the database templates seal their signing key with it.
SESSION_SECRET = "test-secret-" + uuid.uuid4().hex
# Sign-ins at argon2's cheapest cost (tests/unit/test_passwords_cost.py pins production's).
TEST_HASH_PROFILE = "test-only-cheapest"


# The tests that take tens of seconds each, longest kind first. Collected in file order,
# they fell in one or two workers' first blocks (pytest-xdist's worksteal hands each
# worker a contiguous block), which ran them one after another while the others ran out
# of work: a minute or more of the suite's wall time with one core idle.
HEAVY_TESTS = (
    "tests/functional/test_schemathesis.py",
    "tests/unit/test_differential.py",
    "tests/browser/",
    "tests/integration/",
    "tests/conformance/",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist, order the tests so that each worker's first block (worksteal's initial
    split: the collection cut in order, each worker the rest divided by the workers
    left) starts with its share of the heavy tests, longest kind first, and the light
    tests fill the rest: the heavy ones run early and side by side, and what is left at
    the end is light, which idle workers steal. Every worker computes the same order."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return

    def weight(item: pytest.Item) -> int:
        kinds = [i for i, prefix in enumerate(HEAVY_TESTS) if item.nodeid.startswith(prefix)]
        return kinds[0] if kinds else len(HEAVY_TESTS)

    heavy = sorted((item for item in items if weight(item) < len(HEAVY_TESTS)), key=weight)
    light = [item for item in items if weight(item) == len(HEAVY_TESTS)]
    sizes, remaining = [], len(items)
    for worker in range(workers):
        sizes.append(remaining // (workers - worker))
        remaining -= sizes[-1]
    shares = [heavy[worker::workers] for worker in range(workers)]
    # Where a share is larger than its block (a run of mostly heavy tests, such as one
    # file of them), the rest fills the other blocks first, then the light tests do.
    fill = [item for share, size in zip(shares, sizes, strict=True) for item in share[size:]]
    fill += light
    ordered: list[pytest.Item] = []
    for share, size in zip(shares, sizes, strict=True):
        block = share[:size]
        ordered += block + fill[: size - len(block)]
        del fill[: size - len(block)]
    assert len(ordered) == len(items)
    items[:] = ordered


_POSTGRES_ADMIN: list[Engine] = []  # one pool per process, made at first use
# CREATE and DROP DATABASE take a checkpoint's time (fsync): a thread of their own runs
# them while the tests go on (see TemplateCopies), instead of each test waiting.
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-databases")


def _on_postgres(*statements: str) -> None:
    """Run ``statements`` on the server of RINGFENCE_TEST_DATABASE_URL, outside any
    transaction (CREATE and DROP DATABASE need that)."""
    if not _POSTGRES_ADMIN:
        _POSTGRES_ADMIN.append(create_engine(PG_URL, isolation_level="AUTOCOMMIT"))
    with _POSTGRES_ADMIN[0].connect() as connection:
        for statement in statements:
            connection.execute(text(statement))


class TemplateCopies:
    """Copies of one template database, each made while the test before runs: a test
    renames the one ready to its own name (instant), which starts the next copy. With
    ``CREATE DATABASE`` (and the ``DROP`` after each test) in the test's path, the
    PostgreSQL tests spent a third of their time waiting on them."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.next = _BACKGROUND.submit(self._copy)

    def _copy(self) -> str:
        name = f"test_copy_{uuid.uuid4().hex[:12]}"
        # A template must have no session while it is copied, and the apps that set it
        # up may have left one: the event streams' thread (one per process, outliving
        # apps) reads through the last app's ledger, and a stray read opens a pooled
        # connection that nobody closes ("source database is being accessed by other
        # users", once in a run). Nothing uses a template: such sessions are ended.
        sessions = f"datname = '{self.template}' AND pid <> pg_backend_pid()"  # our own name
        _on_postgres(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {sessions}",  # noqa: S608
            # FILE_COPY copies the template's files and takes a checkpoint: a third of
            # the time of the default WAL_LOG, which writes every page of it to the WAL.
            f'CREATE DATABASE "{name}" TEMPLATE "{self.template}" STRATEGY FILE_COPY',
            no_commit_flush(name),
        )
        return name

    def take(self, target: str) -> None:
        """The next copy, named ``target`` (an empty database of that name goes first)."""
        ready = self.next.result()
        self.next = _BACKGROUND.submit(self._copy)
        _on_postgres(
            f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)',
            f'ALTER DATABASE "{ready}" RENAME TO "{target}"',
        )

    def close(self) -> None:
        _on_postgres(f'DROP DATABASE IF EXISTS "{self.next.result()}"')


def no_commit_flush(database: str) -> str:
    """The statement that lets ``database``'s commits return before their WAL reaches
    the disk (``synchronous_commit = off``), for the sessions opened on it from then on:
    a commit otherwise waits for an fsync, 2-3 ms here, and the PostgreSQL half of the
    suite commits tens of thousands of times. What a commit makes visible, and when, is
    unchanged; only a crash of the server could lose the last commits, and a test's
    database does not outlive its test. (Not copied by ``CREATE DATABASE ... TEMPLATE``:
    set on each database.)"""
    return f'ALTER DATABASE "{database}" SET synchronous_commit = off'


def _database_of(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ringfence.db'}"
        # Whatever app the test made: its last-seen recorder writes and stops (one
        # writer thread per app, not one per test left running).
        activity.close_all()
        return
    if not PG_URL:
        pytest.skip("RINGFENCE_TEST_DATABASE_URL is not set")
    name = f"test_{uuid.uuid4().hex[:12]}"
    # A test set up as ``init`` sets up gets its database copied from a template by
    # ``admin_password`` or another user of ``init_templates`` (InitTemplates.set_up);
    # only the others need an empty one.
    if not {"admin_password", "init_templates"} & set(request.fixturenames):
        _on_postgres(f'CREATE DATABASE "{name}" TEMPLATE template0', no_commit_flush(name))
    try:
        yield _database_of(PG_URL, name)
    finally:
        # Whatever app the test made: its last-seen recorder writes what it holds now,
        # while the database exists (at interpreter exit it would be gone), and stops.
        activity.close_all()
        _BACKGROUND.submit(_on_postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """The test's settings; ``@pytest.mark.policies_dir(path)`` gives a test (or a
    module, with ``pytestmark``) other role files than the product's ``policies/``."""
    marker = request.node.get_closest_marker("policies_dir")
    extra = {"policies_dir": marker.args[0]} if marker else {}
    return Settings(
        instance_dir=tmp_path / "instance",
        database_url=database_url,
        secret_key=SESSION_SECRET,
        public_url="http://ringfence.test",
        admin_email=ADMIN_EMAIL,
        admin_name="Ada Admin",
        password_hash_profile=TEST_HASH_PROFILE,
        # A decision's database call may take 5 s, not 1: with the suite's workers on two
        # cores a plain token check took over a second now and then (and got its 503).
        # The tests of the bound set their own (test_database_stall, test_faults).
        database_call_timeout_seconds=5.0,
        **extra,
    )


def _init_inputs(settings: Settings) -> tuple[object, ...]:
    """What ``ringfence init`` and the first start (its signing key) write depends on."""
    return (
        settings.policies_dir,
        settings.model_path,
        settings.admin_email,
        settings.admin_name,
        settings.allowed_email_domains,
        settings.secret_key,
        settings.password_hash_profile,
    )


class InitTemplates:
    """A database set up by the real ``ringfence init`` (and the first start's signing
    key), made once per test session, kind of database and set of init inputs (the
    product's policies, the AuthZEN conformance policies...) and copied for each test: a
    file copy for SQLite, ``CREATE DATABASE ... TEMPLATE`` for PostgreSQL. Migrating 15
    revisions, applying policies/ and making an RSA key per test cost most of a second."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # (kind, init inputs) -> (url, admin password)
        self.templates: dict[tuple[str, tuple[object, ...]], tuple[str, str]] = {}
        self.postgres_names: list[str] = []
        self.copies: dict[str, TemplateCopies] = {}  # PostgreSQL template url -> its copies

    def set_up(self, settings: Settings) -> str:
        """Set ``settings``' empty database up as ``init`` does; the admin's password."""
        kind = "postgresql" if settings.database_url.startswith("postgresql") else "sqlite"
        key = (kind, _init_inputs(settings))
        if key not in self.templates:
            self.templates[key] = self._build(kind, settings, len(self.templates))
        template_url, password = self.templates[key]
        target = make_url(settings.database_url).database
        assert target
        if kind == "sqlite":
            shutil.copyfile(make_url(template_url).database or "", target)
        else:
            self.copies[template_url].take(target)
        return password

    def _build(self, kind: str, settings: Settings, number: int) -> tuple[str, str]:
        if kind == "sqlite":
            url = f"sqlite:///{self.folder / f'template-{number}.db'}"
        else:
            name = f"test_template_{uuid.uuid4().hex[:12]}"
            _on_postgres(f'CREATE DATABASE "{name}" TEMPLATE template0', no_commit_flush(name))
            self.postgres_names.append(name)
            url = _database_of(PG_URL, name)
        template = replace(
            settings,
            database_url=url,
            instance_dir=self.folder / f"{kind}-{number}",
            revision_poll_seconds=0,
        )
        password = run_init(template)
        close_app(create_app(template))  # the signing key
        if kind == "postgresql":
            self.copies[url] = TemplateCopies(make_url(url).database or "")
        return url, password

    def drop(self) -> None:
        for copies in self.copies.values():
            copies.close()
        _BACKGROUND.shutdown(wait=True)  # the tests' databases dropped, then the templates
        if self.postgres_names:
            _on_postgres(
                *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.postgres_names)
            )


# The session's templates, whichever conftest's fixture made them first: the SDK's tests
# (clients/python/tests) import these fixtures, and would otherwise build their own.
_SESSION_TEMPLATES: list[InitTemplates] = []


@pytest.fixture(scope="session")
def init_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InitTemplates]:
    if _SESSION_TEMPLATES:
        yield _SESSION_TEMPLATES[0]
        return
    templates = InitTemplates(tmp_path_factory.mktemp("init-templates"))
    _SESSION_TEMPLATES.append(templates)
    yield templates
    templates.drop()


def run_init(settings: Settings) -> str:
    """``ringfence init`` on ``settings``' database; the printed one-time password."""
    result = run_cli(settings, "init")
    assert result.exit_code == 0, result.output
    match = re.search(r"password: (\S+)", result.output)
    assert match, result.output
    return match.group(1)


@pytest.fixture
def admin_password(settings: Settings, init_templates: InitTemplates) -> str:
    """The database set up exactly as a newcomer's ``ringfence init`` sets it up (a copy
    of one it set up); the printed one-time super admin password."""
    return init_templates.set_up(settings)


@pytest.fixture
def app(settings: Settings, admin_password: str) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    close_app(app)


@pytest.fixture
def server(app: Flask, settings: Settings, admin_password: str) -> Iterator[LiveServer]:
    """The gateway on a real HTTP socket on loopback."""
    with serving(app) as httpd:
        yield LiveServer(f"http://127.0.0.1:{httpd.server_port}", app, settings, admin_password)


@pytest.fixture
def celery_conf() -> Iterator[None]:
    """Put celery_app's configuration back as it was: it is process-wide state."""
    from mailer.celery_app import celery_app, reset_connections

    keys = (
        "broker_url",
        "task_always_eager",
        "task_eager_propagates",
        "broker_connection_timeout",
        "task_publish_retry_policy",
    )
    saved = {key: celery_app.conf.get(key) for key in keys}
    yield
    celery_app.conf.update(saved)
    reset_connections()


# -- CI guard: PostgreSQL tests must run, not skip ------------------------------------

_skipped_postgres: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "postgres" in report.keywords:
        _skipped_postgres.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("RINGFENCE_REQUIRE_POSTGRES") == "1" and _skipped_postgres:
        print(f"\n{len(_skipped_postgres)} PostgreSQL test(s) were skipped; failing the run.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- CI guard: Redis tests must run, not skip -----------------------------------------


class _RedisGuard:
    """Fails the run when ``RINGFENCE_REQUIRE_REDIS=1`` and a ``redis`` test was skipped
    (e.g. no ``redis-server`` on the machine), so that CI cannot pass without them."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and "redis" in report.keywords:
            self.skipped.append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if os.environ.get("RINGFENCE_REQUIRE_REDIS") == "1" and self.skipped:
            print(f"\n{len(self.skipped)} Redis test(s) were skipped; failing the run.")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_RedisGuard(), "ringfence-redis-guard")
    config.pluginmanager.register(_BrowserGuard(), "ringfence-browser-guard")


# -- CI guard: browser tests must run, not skip ---------------------------------------


class _BrowserGuard:
    """Fails the run when ``RINGFENCE_REQUIRE_BROWSER=1`` and a ``browser`` test was
    skipped (no system Chromium, or Playwright missing), so CI cannot pass without them."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and "browser" in report.keywords:
            self.skipped.append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if os.environ.get("RINGFENCE_REQUIRE_BROWSER") == "1" and self.skipped:
            print(f"\n{len(self.skipped)} browser test(s) were skipped; failing the run.")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
