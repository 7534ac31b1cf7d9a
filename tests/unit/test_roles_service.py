"""The pure part of the roles service: which catalogue permissions (resource, action)
pairs cover, wildcards included, as Casbin's keyMatch reads them in the model."""

from __future__ import annotations

from gateway.services.roles import expand

CATALOGUE = ["documents:read", "documents:write", "reports:read", "users:invite"]


def test_exact_pairs_cover_only_themselves() -> None:
    assert expand({("documents", "read")}, CATALOGUE) == {"documents:read"}


def test_a_resource_wildcard_covers_every_action_on_it() -> None:
    assert expand({("documents", "*")}, CATALOGUE) == {"documents:read", "documents:write"}


def test_the_full_wildcard_covers_the_whole_catalogue() -> None:
    assert expand({("*", "*")}, CATALOGUE) == set(CATALOGUE)


def test_pairs_outside_the_catalogue_cover_nothing() -> None:
    assert expand({("billing", "read"), ("documents", "delete")}, CATALOGUE) == set()
