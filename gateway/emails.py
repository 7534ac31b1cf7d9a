"""Email addresses as Ringfence compares them: one spelling per address.

Every address that enters (an invitation, a sign-in, a reset request, an identity
provider's claim, the first admin, the AuthZEN subject directory) or is looked up goes
through :func:`normalise_email` first, and the database stores only that form
(migration 0014 normalised the rows from before). Without NFKC, john@example.com typed in
full-width letters (U+FF4A ...), which people read as john@example.com, would be a second
person: a look-alike account, a second invitation, a sign-in throttle of its own.
"""

from __future__ import annotations

import unicodedata


def fold_email(text: str) -> str:
    """``text`` NFKC-normalised and lower-cased, not trimmed. ASCII text skips NFKC (it
    is its own normal form), so the common case costs one ``lower()``."""
    if text.isascii():
        return text.lower()
    # NFKC again after lower(): Unicode does not promise that lower-casing keeps a string
    # in NFKC, and the stored form must be a fixed point (normalising it changes nothing).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())


def normalise_email(text: str) -> str:
    """The one form of an address that Ringfence stores and compares: NFKC (full-width
    and other compatibility characters become their plain forms, the full-width at
    sign U+FF20 included),
    without surrounding whitespace, lower-case."""
    return fold_email(text).strip()
