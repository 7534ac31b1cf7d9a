"""Event streams (issue 24) through the live gateway, with real receivers on loopback:
an HTTPS webhook endpoint verifying every request with the ``standardwebhooks`` library,
an RFC 5425 syslog listener over TLS, and a JSON Lines file. Delivery runs as the
embedded default runs it (the worker's task, in a thread of the gateway), woken by the
commits; the receivers' certificate is made at test time and trusted through
``stream_ca_file``; loopback is allowed through ``stream_allow_private_destinations``,
except where the refusal is what is tested."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update

from gateway.audit.chain import compute_hash
from gateway.config import Settings
from gateway.db.models import EventStream
from gateway.db.session import make_engine
from gateway.notifier import StreamBatch
from gateway.services import streams
from gateway.services.streams import StreamDesk, stream_presence
from gateway.web.state import gateway_state
from mailer.stream_tasks import WAKER
from mailer.streams import StreamError, pinned_address
from tests.cluster import wait_until
from tests.helpers import LiveServer, create_workspaces, invite_and_accept
from tests.stream_support import TlsFiles, make_tls_files, syslog_receiver, webhook_receiver

SYSLOG_LINE = re.compile(
    r'^<110>1 (\S+) ringfence\.test ringfence - (\S+) \[ringfence@32473 auditId="(\d+)" '
    r'hash="([0-9a-f]{64})" prevHash="([0-9a-f]{64})"\] (\{.*\})$'
)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("stream-tls"))


@pytest.fixture
def allow_private() -> bool:
    return True


@pytest.fixture
def settings(settings: Settings, tls_files: TlsFiles, allow_private: bool) -> Settings:
    return replace(
        settings,
        stream_allow_private_destinations=allow_private,
        stream_ca_file=tls_files.cert,
        stream_retry_backoff_seconds=0.02,
        stream_retry_backoff_max_seconds=0.05,
        stream_max_failures=4,
    )


def new_stream(
    admin: httpx.Client, kind: str, target: str, *types: str, workspace: str = "*"
) -> dict[str, Any]:
    response = admin.post(
        "/event-streams",
        json={
            "name": f"SIEM {kind}",
            "workspace": workspace,
            "kind": kind,
            "target": target,
            "event_types": list(types),
        },
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def recorded(admin: httpx.Client, url: str, delivered: int) -> dict[str, Any]:
    """The stream once ``delivered`` deliveries are recorded (a receiver has the event
    a moment before the worker records it)."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (s := admin.get(url).json())["delivered"] == delivered and s,
        f"{delivered} deliveries recorded",
    )


def check_event(event: dict[str, Any]) -> None:
    """A CloudEvents 1.0 event carrying a whole audit record whose hash recomputes."""
    data = event["data"]
    assert event["specversion"] == "1.0"
    assert event["id"] == str(data["id"]) and event["auditid"] == data["id"]
    assert event["type"] == f"com.ringfence.audit.{data['action']}"
    assert event["source"] == "http://ringfence.test"
    assert event["time"] == data["at"]
    assert (event["audithash"], event["auditprevhash"]) == (data["hash"], data["prev_hash"])
    assert compute_hash(data, data["prev_hash"]) == data["hash"]


def test_a_webhook_gets_signed_cloudevents_in_order_and_rotation_keeps_both_secrets(
    server: LiveServer, tls_files: TlsFiles
) -> None:
    root = server.admin()
    with webhook_receiver(tls_files) as hook:
        made = new_stream(root, "webhook", hook.url, "workspace.*", "event_stream.*")
        secret, stream = made["secret"], made["stream"]
        assert secret.startswith("whsec_") and stream["status"] == "active"
        hook.secrets = [secret]
        create_workspaces(root, "acme", "globex", "initech")
        wait_until(lambda: len(hook.ids()) >= 4, "four events at the webhook")

        ids = hook.ids()
        assert ids == sorted(set(ids))  # in order, each once
        assert [e["type"].rpartition(".audit.")[2] for e in hook.events] == [
            "event_stream.created",
            *["workspace.created"] * 3,
        ]
        exported = {
            record["id"]: record
            for record in map(json.loads, root.get("/audit/export").text.splitlines())
        }
        for event, headers in zip(hook.events, hook.headers, strict=True):
            check_event(event)
            assert event["data"] == exported[event["auditid"]]  # the trail, as exported
            assert headers["webhook-id"] == f"ringfence-{stream['id']}-{event['auditid']}"
            assert headers["Content-Type"] == "application/cloudevents+json"

        # A new secret: requests carry a signature by each of the two, until the next.
        rotated = root.post(f"/event-streams/{stream['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret not in (secret, None)
        hook.secrets = [secret, new_secret]
        create_workspaces(root, "umbrella")
        wait_until(
            lambda: hook.events and hook.events[-1]["data"]["target_id"] == "umbrella",
            "the event after the rotation",
        )
        assert hook.verified_by[-1] == [0, 1]  # the old secret and the new one
        assert hook.refused == 0
        # The receiver answers before the outcome is recorded: wait for the record.
        shown = wait_until(
            lambda: (
                (s := root.get(f"/event-streams/{stream['id']}").json())["delivered"]
                == len(hook.events)
                and s
            ),
            "the deliveries recorded",
        )
        assert shown["failures"] == 0 and shown["last_error"] is None
        assert shown["cursor"] >= hook.ids()[-1]
        assert "secret" not in json.dumps(root.get("/audit").json()).replace("secret_rotated", "")


def test_failures_back_off_then_pause_with_the_reason_then_resume_and_replay(
    server: LiveServer, tls_files: TlsFiles
) -> None:
    root = server.admin()
    with webhook_receiver(tls_files) as hook:
        made = new_stream(root, "webhook", hook.url, "workspace.created")
        hook.secrets = [made["secret"]]
        stream_url = f"/event-streams/{made['stream']['id']}"
        # Down for a while (500, a redirect, 503), then up: retried, then caught up.
        hook.answers = [500, 302, 503]
        create_workspaces(root, "acme")
        wait_until(lambda: hook.ids(), "the event after three failures")
        assert hook.answers == []
        shown = recorded(root, stream_url, 1)
        assert (shown["status"], shown["failures"], shown["last_error"]) == ("active", 0, None)

        # Down for good: paused after stream_max_failures (4) failures in a row.
        hook.answers = [500, 503, 500, 302]
        create_workspaces(root, "globex")
        shown = wait_until(
            lambda: (s := root.get(stream_url).json())["status"] == "paused" and s,
            "the stream paused",
        )
        assert "4 deliveries in a row failed" in shown["paused_reason"]
        assert "redirects are not followed" in shown["paused_reason"]
        [paused] = root.get("/audit", params={"action": "event_stream.paused"}).json()
        assert paused["target_id"] == str(made["stream"]["id"])
        create_workspaces(root, "initech")  # nothing goes out while paused
        assert len(hook.ids()) == 1

        # Resumed: everything since, in order, once.
        resumed = root.post(f"{stream_url}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] == "active"
        wait_until(lambda: len(hook.ids()) == 3, "the events held while paused")
        first = hook.ids()[0]
        assert [e["data"]["target_id"] for e in hook.events] == ["acme", "globex", "initech"]

        # Replayed from the first event: the same three again, in order.
        replayed = root.post(f"{stream_url}/replay", json={"from_audit_id": first})
        assert replayed.status_code == 200, replayed.text
        wait_until(lambda: len(hook.ids()) == 6, "the replay")
        assert hook.ids()[3:] == hook.ids()[:3]
        actions = [
            e["action"] for e in root.get("/audit", params={"target_type": "event_stream"}).json()
        ]
        assert {
            "event_stream.created",
            "event_stream.paused",
            "event_stream.resumed",
            "event_stream.replayed",
        } <= set(actions)


def test_syslog_over_tls_and_a_json_lines_file_carry_the_chain(
    server: LiveServer, tls_files: TlsFiles
) -> None:
    root = server.admin()
    with syslog_receiver(tls_files) as syslog:
        new_stream(root, "syslog", syslog.address, "workspace.created")
        whole = new_stream(root, "file", "audit.jsonl", "*")
        assert whole["secret"] is None
        create_workspaces(root, "acme", "globex")
        wait_until(lambda: len(syslog.received()) == 2, "two syslog messages")
        for message, slug in zip(syslog.received(), ("acme", "globex"), strict=True):
            match = SYSLOG_LINE.match(message)
            assert match, message
            at, action, audit_id, digest, prev, payload = match.groups()
            event = json.loads(payload)
            check_event(event)
            assert (action, int(audit_id), digest, prev) == (
                "workspace.created",
                event["auditid"],
                event["audithash"],
                event["auditprevhash"],
            )
            assert at == event["time"] and event["data"]["target_id"] == slug

    path = Path(server.settings.stream_file_path) / "audit.jsonl"
    lines = wait_until(
        lambda: (
            path.exists()
            and (found := path.read_text().splitlines())
            and json.loads(found[-1])["data"]["target_id"] == "globex"
            and found
        ),
        "the file's lines",
    )
    events = [json.loads(line) for line in lines]
    for event in events:
        check_event(event)
    # Every event from the file stream's creation on: an unbroken stretch of the chain.
    assert events[0]["data"]["action"] == "event_stream.created"
    for before, after in itertools.pairwise(events):
        assert after["auditprevhash"] == before["audithash"]
        assert after["auditid"] == before["auditid"] + 1


def test_a_workspace_admin_streams_only_that_workspace(
    server: LiveServer, tls_files: TlsFiles
) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    _, olive = invite_and_accept(server, root, "olive@example.com", "Olive", [("acme", "admin")])
    with webhook_receiver(tls_files) as hook:
        made = new_stream(olive, "webhook", hook.url, "*", workspace="acme")
        hook.secrets = [made["secret"]]
        assert made["stream"]["workspace"] == "acme"
        refused = olive.post(
            "/event-streams",
            json={
                "name": "x",
                "workspace": "*",
                "kind": "file",
                "target": "x.jsonl",
                "event_types": ["*"],
            },
        )
        assert refused.status_code == 403
        for slug in ("globex", "acme"):
            renamed = root.patch(f"/workspaces/{slug}", json={"name": f"{slug} renamed"})
            assert renamed.status_code == 200, renamed.text
        wait_until(
            lambda: any(e["data"]["action"] == "workspace.renamed" for e in hook.events),
            "acme's rename",
        )
        assert [e["data"]["action"] for e in hook.events] == [
            "event_stream.created",
            "workspace.renamed",
        ]
        assert {e["data"]["workspace"] for e in hook.events} == {"acme"}
    assert [s["id"] for s in olive.get("/event-streams").json()] == [made["stream"]["id"]]
    assert [s["id"] for s in root.get("/event-streams", params={"workspace": "acme"}).json()] == [
        made["stream"]["id"]
    ]
    assert root.get("/event-streams", params={"workspace": "*"}).json() == []


@pytest.mark.parametrize("allow_private", [False])
def test_destinations_outside_the_public_internet_are_refused(server: LiveServer) -> None:
    root = server.admin()
    for kind, target, why in (
        ("webhook", "https://127.0.0.1:8443/hook", "loopback"),
        ("webhook", "https://localhost/hook", "'localhost' resolves to"),
        ("webhook", "https://[::1]/hook", "loopback"),
        ("webhook", "https://[::ffff:10.0.0.1]/hook", "private"),
        ("webhook", "https://169.254.169.254/latest/meta-data", "link-local"),
        ("webhook", "https://10.1.2.3/hook", "private"),
        ("webhook", "https://192.168.1.20/hook", "private"),
        ("webhook", "https://0.0.0.0/hook", "unspecified"),
        ("webhook", "http://siem.example.com/hook", "https://"),
        ("webhook", "https://user:pw@siem.example.com/hook", "user name"),
        ("syslog", "172.16.0.5:6514", "private"),
        ("syslog", "[fe80::1]:6514", "link-local"),
        ("file", "../../etc/passwd", "plain file name"),
    ):
        response = root.post(
            "/event-streams",
            json={
                "name": "x",
                "workspace": "*",
                "kind": kind,
                "target": target,
                "event_types": ["*"],
            },
        )
        assert response.status_code == 422, (target, response.text)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert why in response.json()["errors"]["target"][0], (target, response.text)
    assert root.get("/event-streams").json() == []
    # At delivery the name is resolved again, once, and refused the same way.
    with pytest.raises(StreamError, match=r"resolves to (127\.0\.0\.1|::1) is a loopback address"):
        pinned_address("localhost", 443, allow_private=False)
    assert pinned_address("localhost", 443, allow_private=True) in ("127.0.0.1", "::1")


def test_a_delivery_claimed_while_a_replay_is_made_cannot_undo_the_replay(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay read the stream, a delivery claimed it, the replay committed, and the
    delivery recorded its batch: the replay stands (its cursor, and the stream due again).
    Before, the replay wrote only the columns that differed from what it had read, so
    the claim it never saw survived, and the delivery's record put the cursor back at the
    end: the replay was lost (a CI run waited 30 s for it)."""
    # Delivery only when this test asks for it, so that the claim comes where it must.
    monkeypatch.setattr(WAKER, "wake", lambda: None)
    root = server.admin()
    made = new_stream(root, "file", "replay.jsonl", "workspace.created")
    stream_id = made["stream"]["id"]
    create_workspaces(root, "acme")
    [created] = root.get("/audit", params={"action": "workspace.created"}).json()
    desk = StreamDesk(gateway_state(server.app).session_factory, server.settings)
    claims: list[StreamBatch | None] = []

    def claim_once_the_replay_read_it(stream: EventStream, *_: Any) -> None:
        if stream.id == stream_id and not claims:
            claims.append(None)  # the claim loads the stream too: once is enough
            claims[0] = desk.claim_stream(stream_id)

    event.listen(EventStream, "load", claim_once_the_replay_read_it)
    try:
        replayed = root.post(
            f"/event-streams/{stream_id}/replay", json={"from_audit_id": created["id"]}
        )
    finally:
        event.remove(EventStream, "load", claim_once_the_replay_read_it)
    assert replayed.status_code == 200, replayed.text
    [batch] = claims
    assert batch is not None and [e["id"] for e in batch.events] == [created["id"]]
    desk.record_stream(stream_id, batch.token, batch.through_id, len(batch.events), None)

    assert stream_id in desk.streams_due()
    again = desk.claim_stream(stream_id)
    assert again is not None and again.events[0]["id"] == created["id"]


def test_commits_wake_delivery_only_while_a_stream_may_be_active(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the delivery read that no stream is active, commits do not wake it (an
    installation without streams does not read them after every commit). A stream made
    or changed through this process counts at once; one made active by another process
    (its own engine here) counts from the next reading, PRESENCE_SECONDS at most later
    (an hour here, so that only the test makes a reading old)."""
    wakes: list[int] = []
    monkeypatch.setattr(WAKER, "wake", lambda: wakes.append(1))
    monkeypatch.setattr(streams, "PRESENCE_SECONDS", 3600.0)
    root = server.admin()
    db = gateway_state(server.app).db
    desk = StreamDesk(gateway_state(server.app).session_factory, server.settings)
    presence = stream_presence(db)

    def woken_by_a_change(slug: str) -> bool:
        before = len(wakes)
        create_workspaces(root, slug)  # audited: a commit that wrote audit events
        return len(wakes) > before

    assert woken_by_a_change("unread")  # nothing read yet: wake
    assert desk.streams_due() == []  # the delivery's reading: none active
    assert not woken_by_a_change("acme")
    made = new_stream(root, "file", "presence.jsonl", "workspace.created")
    assert wakes, "the stream's own commit woke delivery"
    assert woken_by_a_change("beta")
    stream_id = made["stream"]["id"]

    other = make_engine(server.settings.sqlalchemy_url)  # another process's
    try:
        with other.begin() as connection:
            connection.execute(
                update(EventStream).where(EventStream.id == stream_id).values(status="paused")
            )
        presence.read_at -= 3600  # the reading is old: the next delivery reads again
        desk.streams_due()
        assert presence.active is False
        assert not woken_by_a_change("gamma")
        with other.begin() as connection:
            connection.execute(
                update(EventStream).where(EventStream.id == stream_id).values(status="active")
            )
        assert not woken_by_a_change("delta")  # not read yet here, as a lost wake-up
        presence.read_at -= 3600
        desk.streams_due()
        assert presence.active is True
        assert woken_by_a_change("epsilon")
    finally:
        other.dispose()
