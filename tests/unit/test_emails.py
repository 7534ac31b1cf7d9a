"""One form per address (gateway.emails, security finding 7): NFKC, trimmed, lower-case;
the form is a fixed point; the throttle and the AuthZEN subject directory use it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.emails import fold_email, normalise_email
from gateway.errors import TooManyRequests
from gateway.identity.throttle import LoginThrottle
from gateway.services.authzen.directories import SubjectDirectory
from tests.helpers import full_width

JOHN = "john@example.com"


@pytest.mark.parametrize(
    "typed",
    [
        JOHN,
        "JOHN@example.com ",
        full_width(JOHN, keep="@."),
        full_width(JOHN),
        full_width("John@Example.COM"),
        "\u3000john@example.com\u3000",  # ideographic spaces around
        "\U0001d423ohn@example.com",  # mathematical bold j
    ],
)
def test_look_alike_spellings_normalise_to_one_address(typed: str) -> None:
    assert normalise_email(typed) == JOHN


def test_other_addresses_stay_apart() -> None:
    assert normalise_email("jöhn@example.com") != JOHN
    assert normalise_email("jo\u0308hn@example.com") == normalise_email("jöhn@example.com")
    assert normalise_email("jane@example.com") != JOHN


def test_fold_trims_nothing() -> None:
    assert fold_email(" John@Example.com") == " john@example.com"
    assert fold_email(full_width(JOHN) + "\u3000") == JOHN + " "


@given(st.text())
def test_the_normal_form_is_a_fixed_point(text: str) -> None:
    once = normalise_email(text)
    assert normalise_email(once) == once
    assert fold_email(once) == once


def test_the_throttle_counts_look_alike_spellings_against_one_address() -> None:
    throttle = LoginThrottle("memory://", "3 per minute", "100 per minute", "2 per hour")
    for typed in (JOHN, full_width(JOHN), " JOHN@example.com"):
        throttle.check(typed, "203.0.113.9")
        throttle.failed(typed, "203.0.113.9")
    with pytest.raises(TooManyRequests):
        throttle.check(full_width(JOHN, keep="@."), "198.51.100.7")
    throttle.succeeded(full_width(JOHN))  # a success clears every spelling's count
    throttle.check(JOHN, "198.51.100.7")

    throttle.reset_requested(JOHN, "203.0.113.9")
    throttle.reset_requested(full_width(JOHN), "198.51.100.7")
    with pytest.raises(TooManyRequests):
        throttle.reset_requested("John@Example.com", "192.0.2.1")


def test_the_subject_directory_stores_addresses_in_their_one_form() -> None:
    directory = SubjectDirectory.from_mapping(
        {"opaque-john": full_width(JOHN), "john-2": {"email": " John@Example.com"}}
    )
    assert directory.email_of("opaque-john") == JOHN
    assert directory.email_of("john-2") == JOHN
    assert directory.public_id(JOHN) == "opaque-john"
    assert directory.public_id(full_width(JOHN, keep="@")) == "opaque-john"
    with pytest.raises(ValueError):
        SubjectDirectory.from_mapping({"x": full_width("no-at-sign")})
