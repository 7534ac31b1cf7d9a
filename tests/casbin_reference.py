"""Plain Casbin, the reference every engine answer is compared with: ``model.conf``,
``key_match`` as the domain matching function for ``g``, the rules. Nothing of ours."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import casbin
from casbin.core_enforcer import CoreEnforcer
from casbin.util import key_match
from casbin.util.expression import SimpleEval

from gateway.engine.rules import Rule

MODEL = Path(__file__).resolve().parents[1] / "model.conf"

# The matcher's syntax tree, by its text. Casbin parses the matcher again at every
# ``enforce`` (ast.parse, a third of a differential test's time); parsing is a pure
# function of the text, and the evaluator only reads the tree.
_PARSED: dict[str, ast.expr] = {}


class ReferenceEnforcer(casbin.Enforcer):
    """``casbin.Enforcer``, whose matcher is parsed once rather than at each decision;
    it evaluates the same tree with the same functions."""

    @staticmethod
    def _get_expression(expr: str, functions: Any = None) -> SimpleEval:
        parsed = _PARSED.get(expr)
        if parsed is None:
            evaluator: SimpleEval = CoreEnforcer._get_expression(expr, functions)
            _PARSED[expr] = evaluator.ast_parsed_value
            return evaluator
        evaluator = SimpleEval("", functions)  # "": nothing parsed
        evaluator.expr = expr
        evaluator.ast_parsed_value = parsed
        return evaluator


def reference(rules: Iterable[Rule]) -> casbin.Enforcer:
    enforcer = ReferenceEnforcer(str(MODEL))
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
