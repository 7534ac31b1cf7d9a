"""ringfence-client: the Python client of the Ringfence authorization gateway.

    from ringfence_client import RingfenceClient

    ringfence = RingfenceClient("https://ringfence.example", client_id=..., client_secret=...)
    if ringfence.check("john@example.com", "acme", "documents", "write").allowed:
        ...

See docs/sdk.md in the Ringfence repository.
"""

from ringfence_client.aio import AsyncRingfenceClient
from ringfence_client.client import RingfenceClient
from ringfence_client.errors import (
    AuthenticationError,
    BadRequest,
    GatewayUnavailable,
    InsufficientScope,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    RateLimited,
    RevisionNotReached,
    RingfenceError,
    ServiceUnavailable,
)
from ringfence_client.models import (
    Decision,
    Explanation,
    Page,
    Question,
    ResourceRef,
    SubjectRef,
)

__all__ = [
    "AsyncRingfenceClient",
    "AuthenticationError",
    "BadRequest",
    "Decision",
    "Explanation",
    "GatewayUnavailable",
    "InsufficientScope",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "ProblemError",
    "Question",
    "RateLimited",
    "ResourceRef",
    "RevisionNotReached",
    "RingfenceClient",
    "RingfenceError",
    "ServiceUnavailable",
    "SubjectRef",
]
