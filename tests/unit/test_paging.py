"""Numbered pages, as the services count them for the console and the admin API."""

from __future__ import annotations

from gateway.services.base import MAX_OFFSET, Page, page_count, page_offset


def test_page_counts_and_offsets() -> None:
    assert [page_count(total, 25) for total in (0, 1, 25, 26, 50, 51)] == [1, 1, 1, 2, 2, 3]
    assert Page([], 26).pages(25) == 2
    assert [page_offset(page, 25) for page in (1, 2, 3)] == [0, 25, 50]
    assert page_offset(0, 25) == 0  # no page before the first
    # An absurd page is an empty page, not an offset the database's integers overflow.
    assert page_offset(2**31, 1000) == MAX_OFFSET == 2**31 - 1
