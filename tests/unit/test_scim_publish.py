"""The SCIM answer's shortcut (gateway.web.scim.DirectoryScimService.publish): a resource
that refers to no other resource is published without scim2-server's deep copy. Whether
it refers elsewhere is read by attribute; it must say what scim2-models' paths say."""

from __future__ import annotations

from typing import Any

import pytest
from scim2_models import (
    EnterpriseUser,
    Group,
    GroupMember,
    GroupMembership,
    Manager,
    Resource,
    User,
)

from gateway.web.scim import _reference_heads, _refers_elsewhere

DirectoryUser = User[EnterpriseUser]


def user(extension: EnterpriseUser | None = None, **fields: Any) -> Resource[Any]:
    resource = DirectoryUser(user_name="ada@example.com", **fields)
    if extension is not None:
        resource[EnterpriseUser] = extension
    return resource


@pytest.mark.parametrize(
    ("resource", "refers"),
    [
        (user(), False),
        (user(groups=[]), False),
        (user(groups=[GroupMembership(value="g1")]), True),
        (user(EnterpriseUser(employee_number="42")), False),
        (user(EnterpriseUser(manager=Manager(value="u2"))), True),
        (Group(display_name="engineering"), False),
        (Group(display_name="engineering", members=[GroupMember(value="u1")]), True),
    ],
)
def test_a_reference_is_found_as_the_paths_find_it(resource: Resource[Any], refers: bool) -> None:
    by_paths = any(head.get(resource) for head in _reference_heads(type(resource)))
    assert by_paths is refers
    assert _refers_elsewhere(resource) is refers
