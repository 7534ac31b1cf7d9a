"""The admin web console at ``/console``: server-rendered pages over the same services
and permission checks as the admin API, enhanced with htmx (vendored in ``static/``).

Pages work without script (plain forms, full pages); with it, htmx swaps only the part
that changed. No inline script or style, so the Content-Security-Policy allows only our
own files.
"""

from __future__ import annotations

from console import (  # noqa: F401  (they register their pages on bp)
    account_pages,
    audit_pages,
    bulk,
    confirmations,
    custom_roles,
    directory,
    forgot_password,
    invite_many,
    mfa,
    passkeys,
    people,
    remembered_devices,
    reviews,
    settings_pages,
    streams,
    workspace_pages,
    workspace_sso,
)
from console.views import bp

__all__ = ["bp"]
