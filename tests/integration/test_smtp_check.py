"""The settings page's test email (mailer.smtp_check) against real peers on loopback:
aiosmtpd servers, and TCP services that are not SMTP servers; no mocks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mailer.messages import render_test_message
from mailer.smtp_check import (
    NO_AUTH,
    NO_SMTP_SERVER,
    NO_STARTTLS,
    reply_text,
    send_test_message,
)
from tests.peer_support import (
    FTP_ANSWER,
    FTP_GREETING,
    HTTP_ANSWER,
    SSH_BANNER,
    refused_port,
    tcp_peer,
)
from tests.smtp_support import DATA_REPLY, Logins, Mailbox, free_port, running_smtp

MAIL_FROM = "Ringfence <no-reply@ringfence.test>"
# The fixed time of every outcome before a peer shows it speaks SMTP (5 s by default).
CONNECT_SECONDS = 1.5


def config(port: int, **overrides: Any) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_username": "",
        "smtp_password": "",
        "smtp_timeout": 60.0,  # the test's own timeouts apply, not this
        "smtp_test_connect_seconds": CONNECT_SECONDS,
        "mail_from": MAIL_FROM,
        **overrides,
    }


def send(cfg: dict[str, Any]) -> tuple[bool, str, float]:
    started = time.monotonic()
    outcome = send_test_message(render_test_message("ops@example.org", MAIL_FROM), cfg)
    return outcome.ok, outcome.detail, time.monotonic() - started


@contextmanager
def smtp_with_auth(logins: Logins) -> Iterator[tuple[Mailbox, int]]:
    inbox = Mailbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), authenticator=logins, auth_require_tls=False
    )
    controller.start()
    try:
        yield inbox, int(controller.port)
    finally:
        controller.stop()


def test_what_is_not_an_smtp_server_gets_one_answer_after_one_time() -> None:
    with (
        tcp_peer(SSH_BANNER) as ssh,
        tcp_peer(HTTP_ANSWER) as http,
        tcp_peer(FTP_GREETING, FTP_ANSWER) as ftp,
        tcp_peer() as silent,  # an HTTP server waiting for a request
        running_smtp(Mailbox()) as plain_smtp,
        refused_port() as refused,
    ):
        cases = {
            "ssh": config(ssh.port),
            "http": config(http.port),
            "ftp": config(ftp.port),
            "silent": config(silent.port),
            "refused": config(refused),
            "ssh over tls": config(ssh.port, smtp_security="tls"),
            "plain smtp over tls": config(plain_smtp, smtp_security="tls"),
            "silent with starttls": config(silent.port, smtp_security="starttls"),
        }
        # In parallel: each takes the fixed connect time, which is what is asserted.
        with ThreadPoolExecutor(len(cases)) as pool:
            outcomes = dict(zip(cases, pool.map(send, cases.values()), strict=True))

    for case, (ok, detail, elapsed) in outcomes.items():
        assert (ok, detail) == (False, NO_SMTP_SERVER), case
        assert CONNECT_SECONDS - 0.25 <= elapsed < CONNECT_SECONDS + 3, (case, elapsed)
    assert b"AUTH" not in ftp.received and b"MAIL" not in ftp.received


def test_an_smtp_reply_is_its_code_and_200_printable_characters() -> None:
    assert reply_text(250, b"2.0.0 Ok: queued as X1") == "250 2.0.0 Ok: queued as X1"
    assert reply_text(550, b"5.1.1 a\r\n\x1b[31mb\x00\tc  d") == "550 5.1.1 a [31mb c d"
    assert reply_text(554, "\u202etxt.exe " + "y" * 300) == "554 txt.exe " + "y" * 192
    assert reply_text(421, b"") == "421"


def test_a_refused_login_shows_the_reply() -> None:
    logins = Logins(accept=False)
    with smtp_with_auth(logins) as (inbox, port):
        ok, detail, _ = send(config(port, smtp_username="mailer", smtp_password="pw"))

    assert (ok, detail) == (False, "535 5.7.8 Authentication credentials invalid")
    assert set(logins.seen) == {("mailer", "pw")}  # smtplib tries PLAIN, then LOGIN
    assert inbox.envelopes == []


def test_no_password_goes_to_a_server_that_offers_no_login() -> None:
    # aiosmtpd offers AUTH only over TLS by default; this one has none.
    with running_smtp(Mailbox()) as port:
        ok, detail, _ = send(config(port, smtp_username="mailer", smtp_password="pw"))
        starttls = send(config(port, smtp_security="starttls"))

    assert (ok, detail) == (False, NO_AUTH)
    assert starttls[:2] == (False, NO_STARTTLS)


def test_a_message_accepted_shows_the_data_reply() -> None:
    logins = Logins()
    with smtp_with_auth(logins) as (inbox, port):
        ok, detail, elapsed = send(config(port, smtp_username="mailer", smtp_password="pw"))

    assert (ok, detail) == (True, DATA_REPLY)
    assert elapsed < CONNECT_SECONDS  # an SMTP server's answer is not held back
    assert logins.seen == [("mailer", "pw")]
    [(recipients, message)] = inbox.deliveries()
    assert recipients == ["ops@example.org"]
    assert message["Subject"] == "Ringfence test email"


def test_an_unknown_security_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="smtp_security"):
        send(config(25, smtp_security="ssl"))
