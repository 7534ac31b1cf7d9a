"""The password reset email: both parts carry the link and expiry, names are escaped in
HTML, the payload round-trips through the outbox form, and only http(s) links render."""

from __future__ import annotations

import pytest

from gateway.notifier import PasswordResetNotice, reset_notice_from_payload, reset_payload
from mailer.messages import render_notice, render_password_reset

NOTICE = PasswordResetNotice(
    user_id=7,
    to_address="ann@example.com",
    to_name="Ann <b>Lee</b>",
    reset_url="https://ringfence.example/reset/abc_DEF-123",
    expires_at="2026-11-28T00:30:00+00:00",
)


def test_reset_mail_has_the_link_and_expiry_in_both_parts() -> None:
    message = render_password_reset(NOTICE, "Ringfence <no-reply@example.com>")
    assert message["Subject"] == "Reset your Ringfence password"
    assert message["To"].addresses[0].addr_spec == "ann@example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    for body in (text, html):
        assert NOTICE.reset_url in body
        assert "28 November 2026 at 00:30 UTC" in body
    assert "Ann <b>Lee</b>" in text and "Ann &lt;b&gt;Lee&lt;/b&gt;" in html


def test_reset_payload_round_trips_and_renders_by_kind() -> None:
    payload = reset_payload(NOTICE)
    assert reset_notice_from_payload({**payload, "added_later": 1}) == NOTICE
    message = render_notice("password_reset", NOTICE, "no-reply@example.com")
    assert message["Subject"] == "Reset your Ringfence password"
    with pytest.raises(ValueError, match="unknown message kind"):
        render_notice("invitation", NOTICE, "no-reply@example.com")


def test_reset_mail_refuses_non_http_links() -> None:
    bad = PasswordResetNotice(7, "ann@example.com", "Ann", "javascript:alert(1)", "2026-11-28")
    with pytest.raises(ValueError, match="http"):
        render_password_reset(bad, "no-reply@example.com")
