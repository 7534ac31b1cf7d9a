"""Plain Casbin, the reference every engine answer is compared with: ``model.conf``,
``key_match`` as the domain matching function for ``g``, the rules. Nothing of ours."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import casbin
from casbin.core_enforcer import CoreEnforcer
from casbin.util import key_match
from casbin.util.expression import SimpleEval
from simpleeval import DISALLOW_FUNCTIONS

from gateway.engine.rules import Rule

MODEL = Path(__file__).resolve().parents[1] / "model.conf"
# What simpleeval's EvalWithCompoundTypes adds to the functions of every evaluator.
COMPOUND_TYPES = {"list": list, "tuple": tuple, "dict": dict, "set": set}

# The matcher's evaluator, by its text. Casbin parses the matcher again at every
# ``enforce`` (ast.parse, a third of a differential test's time), and makes a new
# evaluator for it (12 us of a decision's 46: its table of node handlers, a
# warnings.catch_warnings, the check of its functions). Parsing is a pure function of the
# text, the evaluator only reads the tree, and what it reads of its own state is the
# functions and names it is handed at each decision (below, and ``eval(names)``). The
# tests enforce from one thread at a time.
_EVALUATORS: dict[str, SimpleEval] = {}


class ReferenceEnforcer(casbin.Enforcer):
    """``casbin.Enforcer``, whose matcher is parsed once rather than at each decision;
    it evaluates the same tree with the same functions."""

    @staticmethod
    def _get_expression(expr: str, functions: Any = None) -> SimpleEval:
        evaluator = _EVALUATORS.get(expr)
        if evaluator is None:
            evaluator = CoreEnforcer._get_expression(expr, functions)
            _EVALUATORS[expr] = evaluator
            return evaluator
        # This decision's functions (its role managers'), as a new evaluator takes them:
        # with the compound types simpleeval adds, and none it refuses.
        evaluator.functions = {**(functions or {}), **COMPOUND_TYPES}
        assert not any(f in DISALLOW_FUNCTIONS for f in evaluator.functions.values())
        evaluator._max_count = 0  # its count of comprehension steps, as a new one has
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
