"""Start-up in bulk from PostgreSQL (``gateway.engine.bulk_load``) gives the engine exactly the
state the row-by-row read gives: the same grants, role layer, malformed rules, people
and workspaces, and so the same answers, on rules of every shape the table can hold."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import CasbinRule, User, UserStatus, Workspace
from gateway.db.session import make_engine, upgrade
from gateway.engine.bulk_load import read_snapshot
from gateway.engine.engine import DecisionEngine, Snapshot
from gateway.replication.loading import read_snapshot_by_rows

postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

USERS = [  # id, email, status
    (1, "ann@example.com", "active"),
    (2, "bob@example.com", "active"),
    (3, "cy@example.com", "pending"),
    (4, "dee@example.com", "deactivated"),
    (5, "eve@example.com", "active"),
]
WORKSPACES = ["acme", "acme-labs", "globex"]
RULES = [  # ptype, v0..v5 (None: NULL)
    ("p", "role:viewer", "*", "documents", "read", "", None),
    ("p", "role:editor", "*", "documents", "write", "", None),
    ("p", "role:owner", "*", "documents", "delete", "owner", None),
    ("p", "role:auditor", "acme", "audit", "*", "", None),
    ("p", "role:admin", "*", "*", "*", "", None),
    ("g", "role:editor", "role:viewer", "*", None, None, None),
    # grants in the common form: read in bulk
    ("g", "user:1", "role:editor", "acme", None, None, None),
    ("g", "user:1", "role:editor", "acme", None, None, None),  # a duplicate row
    ("g", "user:1", "role:auditor", "acme", None, None, None),
    ("g", "user:2", "role:viewer", "*", None, None, None),
    ("g", "user:2", "role:owner", "globex", None, None, None),
    ("g", "user:3", "role:admin", "acme", None, None, None),
    ("g", "user:4", "role:editor", "globex", None, None, None),
    ("g", "user:5", "role:viewer", "acme*", None, None, None),
    ("g", "user:0", "role:viewer", "acme", None, None, None),
    # odd shapes: read row by row, as the generic load reads them
    ("g", "user:01", "role:admin", "acme", None, None, None),  # not user 1 for Casbin
    ("g", "user:5", "", "globex", None, None, None),  # an empty role
]


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def fill(db: Engine, rules: list[tuple[str | None, ...]]) -> None:
    with Session(db) as session, session.begin():
        session.add_all(
            User(id=user_id, email=email, name=email, status=UserStatus(status))
            for user_id, email, status in USERS
        )
        session.add_all(Workspace(slug=slug, name=slug) for slug in WORKSPACES)
        session.add_all(
            CasbinRule(**dict(zip(("ptype", "v0", "v1", "v2", "v3", "v4", "v5"), row, strict=True)))
            for row in rules
        )


def snapshots(db: Engine) -> tuple[Snapshot, Snapshot]:
    with Session(db) as session:
        bulk = read_snapshot(session.connection(), 7)
        by_rows = read_snapshot_by_rows(session, 7)
    return bulk, by_rows


def state(snapshot: Snapshot) -> dict[str, object]:
    grants = snapshot.index.grants
    return {
        "by_user": {user: set(pairs) for user, pairs in grants.by_user.items()},
        "holders": grants.holders,
        "universal": grants.universal_domains,
        "patterned": grants.patterned_domains,
        "user_parents": grants.user_parents,
        "rules": snapshot.index.layer.rules,
        "links": snapshot.index.layer.links,
        "malformed": snapshot.malformed,
        "active": snapshot.active,
        "emails": snapshot.ids_by_email,
        "workspaces": snapshot.workspaces,
        "revision": snapshot.revision,
    }


def answers(snapshot: Snapshot) -> list[bool]:
    engine = DecisionEngine(Settings().model_path)
    engine.load_snapshot(snapshot)
    return [
        engine.check(user, workspace, resource, action, owner=owner).allowed
        for user, workspace, resource, action, owner in itertools.product(
            range(6),
            [*WORKSPACES, "nowhere"],
            ["documents", "audit", "billing"],
            ["read", "write", "delete", "export"],
            [None, 2],
        )
    ]


@postgres_only
def test_bulk_start_up_reads_the_same_state_as_row_by_row(db: Engine) -> None:
    fill(db, RULES)
    bulk, by_rows = snapshots(db)
    assert state(bulk) == state(by_rows)
    assert bulk.index.grants.by_user[1]  # the bulk path did read grants
    assert answers(bulk) == answers(by_rows)
    assert any(answers(bulk))


@postgres_only
def test_bulk_start_up_keeps_malformed_rules_and_links_to_users(db: Engine) -> None:
    # A link to a user (the index then walks links per request) and a g rule of four
    # values (Casbin refuses to decide: every decision denies).
    fill(db, [*RULES, ("g", "user:5", "user:1", "acme", None, None, None)])
    bulk, by_rows = snapshots(db)
    assert state(bulk) == state(by_rows)
    assert bulk.index.grants.user_parents == 1
    assert answers(bulk) == answers(by_rows)
    with Session(db) as session, session.begin():
        session.add(CasbinRule(ptype="g", v0="user:9", v1="role:viewer", v2="acme", v3="extra"))
    bulk, by_rows = snapshots(db)
    assert bulk.malformed and state(bulk) == state(by_rows)
    assert not any(answers(bulk))
