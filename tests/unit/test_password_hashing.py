"""Stored passwords: production's argon2id cost is pinned here, because the rest of the
suite signs in at the cheapest cost (``password_hash_profile``) to stay fast."""

from __future__ import annotations

import pytest
from argon2 import Type, extract_parameters

from gateway.config import Settings, load_settings
from gateway.identity.security import hash_password, prepare_password_hashing, verify_password


def test_production_hashes_at_rfc_9106_low_memory_cost() -> None:
    profile = load_settings({}).password_hash_profile
    assert profile == Settings().password_hash_profile == "rfc9106-low-memory"
    parameters = extract_parameters(hash_password("correct horse battery", profile))
    assert parameters.type is Type.ID
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (3, 65536, 4)
    assert (parameters.salt_len, parameters.hash_len) == (16, 32)


def test_a_hash_verifies_whatever_the_profile_now() -> None:
    """A hash carries its parameters: a database set up at one cost signs in at another."""
    cheap = hash_password("correct horse battery", "test-only-cheapest")
    assert extract_parameters(cheap).memory_cost == 8
    assert verify_password(cheap, "correct horse battery", "rfc9106-low-memory")
    assert not verify_password(cheap, "wrong horse battery", "rfc9106-low-memory")
    assert not verify_password(None, "correct horse battery", "test-only-cheapest")


def test_an_unknown_profile_stops_start_up() -> None:
    with pytest.raises(ValueError, match="RINGFENCE_PASSWORD_HASH_PROFILE: 'fast'"):
        prepare_password_hashing("fast")
