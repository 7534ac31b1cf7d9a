"""AuthZEN search paging: the ``page`` request part and opaque, signed page tokens bound
to the query they page through."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest
from gateway.services.authzen.wire import _invalid, _object

DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000


# --------------------------------------------------------------------------- paging


class PageTokens:
    """Opaque page tokens: the offset, bound to the query it pages through, signed.

    A token cannot be forged (HMAC with the installation's secret) nor replayed
    against another query (the query's hash is inside); either is a 400.
    """

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(f"authzen-page:{secret}".encode()).digest()

    @staticmethod
    def query_hash(kind: str, query: Mapping[str, Any]) -> str:
        canonical = json.dumps([kind, query], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest()[:18])

    def issue(self, query_hash: str, offset: int) -> str:
        payload = json.dumps({"q": query_hash, "o": offset}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._sign(payload)}"

    def offset(self, token: str, query_hash: str) -> int:
        """The offset a token stands for; BadRequest unless issued for this query."""
        payload_part, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4))
            valid = hmac.compare_digest(self._sign(payload), signature)
            data = json.loads(payload) if valid else None
        except ValueError:
            data = None
        if (
            not isinstance(data, dict)
            or data.get("q") != query_hash
            or not isinstance(data.get("o"), int)
            or data["o"] < 0
        ):
            raise BadRequest(
                "page.token is not valid for this search; start again without a token",
                errors={"page": {"token": ["Not a valid page token."]}},
            )
        return int(data["o"])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class PageRequest:
    token: str | None
    limit: int


def parse_page(value: Any) -> PageRequest:
    body = _object(value, ("page",), required=False)
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        raise _invalid(("page", "token"), "Not a valid string.")
    limit = body.get("limit", DEFAULT_PAGE_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise _invalid(("page", "limit"), f"Must be an integer from 1 to {MAX_PAGE_LIMIT}.")
    return PageRequest(token or None, limit)
