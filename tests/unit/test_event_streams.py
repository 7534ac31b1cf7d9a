"""Event streams' pure rules: which actions a pattern takes, which destinations are
well formed, which addresses are outside the public internet, and the RFC 5424 frame."""

from __future__ import annotations

import pytest

from gateway.notifier import StreamBatch, address_problem
from gateway.services.streams import PATTERN, destination, matches
from mailer.streams import cloud_event, syslog_line


def test_patterns_take_exact_actions_prefixes_and_everything() -> None:
    assert matches(["user.*"], "user.created") and matches(["user.*"], "user.role.added")
    assert not matches(["user.*"], "users.created") and not matches(["user.*"], "user")
    assert matches(["grant.added"], "grant.added") and not matches(["grant.added"], "grant.removed")
    assert matches(["*"], "anything.at_all")
    assert all(PATTERN.fullmatch(p) for p in ("*", "user.*", "event_stream.paused", "login"))
    assert not any(PATTERN.fullmatch(p) for p in ("user*", "*.created", "User.x", "a..b", ""))


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address refused, not bound
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fd00::1", "private"),
        ("::ffff:192.168.0.1", "private"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("224.0.0.1", "multicast"),
    ],
)
def test_addresses_outside_the_public_internet_are_named(address: str, why: str) -> None:
    problem = address_problem(address)
    assert problem is not None and why in problem, problem


def test_public_addresses_pass() -> None:
    assert address_problem("93.184.216.34") is None
    assert address_problem("2606:2800:220:1:248:1893:25c8:1946") is None


def test_destinations_are_parsed_or_refused_with_the_reason() -> None:
    assert destination("webhook", "https://siem.example.com/x?y=1") == ("siem.example.com", 443)
    assert destination("webhook", "https://siem.example.com:8443/") == ("siem.example.com", 8443)
    assert destination("syslog", "[2001:db8::1]:6514") == ("2001:db8::1", 6514)
    assert destination("file", "audit.jsonl") == ("audit.jsonl", None)
    for kind, target, why in (
        ("webhook", "http://siem.example.com/", "https://"),
        ("webhook", "https://u:p@siem.example.com/", "user name"),
        ("webhook", "https://siem.example.com:99999/", "port"),
        ("syslog", "siem.example.com", "host:port"),
        ("syslog", "siem.example.com:0", "port"),
        ("file", "../audit.jsonl", "plain file name"),
        ("file", ".hidden", "plain file name"),
        ("ftp", "x", "one of"),
    ):
        with pytest.raises(ValueError, match=why):
            destination(kind, target)


def test_a_syslog_frame_is_rfc_5424_with_octet_counting() -> None:
    record = {
        "id": 7,
        "at": "2026-12-06T22:00:00.000000+00:00",
        "action": "user.created",
        "target_type": "user",
        "target_id": "3",
        "hash": "a" * 64,
        "prev_hash": "b" * 64,
        "reason": 'quote " and ] bracket',
    }
    batch = StreamBatch(
        1, "t", "syslog", "h:1", (), (record,), 7, "https://gw.example.com", False, None, 1.0, "."
    )
    frame = syslog_line(batch, record)
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    assert message.startswith(
        b"<110>1 2026-12-06T22:00:00.000000+00:00 gw.example.com ringfence - user.created "
        b'[ringfence@32473 auditId="7" hash="' + b"a" * 64 + b'" prevHash="' + b"b" * 64 + b'"] {'
    )
    event = cloud_event("https://gw.example.com", record)
    assert (event["id"], event["type"], event["subject"]) == (
        "7",
        "com.ringfence.audit.user.created",
        "user/3",
    )
