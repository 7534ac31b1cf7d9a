"""Password policy: long enough and not a commonly used password.

The list of common passwords is zxcvbn's (30,000 most frequent in leaked sets), shipped
inside that package: nothing is downloaded.
"""

from __future__ import annotations

from functools import cache

from zxcvbn.frequency_lists import FREQUENCY_LISTS

from gateway.errors import InvalidInput

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


@cache
def _common() -> frozenset[str]:
    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str) -> str | None:
    """Why ``password`` is not acceptable, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"The password must have at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"The password must have at most {MAX_PASSWORD_LENGTH} characters"
    if password.lower() in _common() or len(set(password)) < 4:
        return "This password is too common or too easy to guess; choose another"
    return None


def require_acceptable_password(password: str) -> None:
    if problem := password_problem(password):
        raise InvalidInput(problem, errors={"password": [problem]})
