"""The bridge between flask-smorest's pagination parameters and the services' pages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from gateway.services.base import MAX_OFFSET, Page

T = TypeVar("T")

# flask-smorest bounds page_size but not page; an absurd page must give an empty page,
# not an offset that overflows the database's integer (a 500): hence MAX_OFFSET.


def window(pagination_parameters: Any) -> tuple[int, int]:
    """(offset, limit) of the requested page."""
    return min(pagination_parameters.first_item, MAX_OFFSET), pagination_parameters.page_size


def items(pagination_parameters: Any, page: Page[T]) -> Sequence[T]:
    """The page's items; the total goes into the ``X-Pagination`` header."""
    pagination_parameters.item_count = page.total
    return page.items
