"""Plain Casbin, the reference every engine answer is compared with: ``model.conf``,
``key_match`` as the domain matching function for ``g``, the rules. Nothing of ours."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import casbin
from casbin.util import key_match

from gateway.engine.rules import Rule

MODEL = Path(__file__).resolve().parents[1] / "model.conf"


def reference(rules: Iterable[Rule]) -> casbin.Enforcer:
    enforcer = casbin.Enforcer(str(MODEL))
    enforcer.add_named_domain_matching_func("g", key_match)
    for rule in rules:
        if rule.ptype == "p":
            enforcer.add_policy(*rule.values)
        else:
            enforcer.add_named_grouping_policy(rule.ptype, *rule.values)
    return enforcer


def owner_value(owner: int | None) -> str:
    """The request's ``owner`` value (``model.conf``): ``user:<id>``, or empty for none."""
    return f"user:{owner}" if owner is not None else ""
