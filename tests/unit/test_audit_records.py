"""The pure parts of the audit trail: the canonical hash, walking records, cursors, CSV
cells, and decision-log lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.audit.chain import GENESIS, HASHED_FIELDS, compute_hash, verify_records
from gateway.audit.decision_log import line
from gateway.engine.engine import Decision
from gateway.errors import InvalidInput
from gateway.services.audit import csv_cell, csv_value, decode_cursor, encode_cursor


def chain(count: int) -> list[dict[str, Any]]:
    records, prev = [], GENESIS
    for n in range(1, count + 1):
        item: dict[str, Any] = dict.fromkeys(HASHED_FIELDS)
        item.update(
            id=n,
            at=f"2026-11-27T00:00:0{n}.000000+00:00",
            actor_name="Ada <ada@example.com>",
            action="workspace.created",
            target_type="workspace",
            after={"name": "Zoë", "roles": {"b": ["x"], "a": ["y"]}},
        )
        item["prev_hash"], item["hash"] = prev, compute_hash(item, prev)
        prev = item["hash"]
        records.append(item)
    return records


def test_the_hash_depends_on_values_not_on_key_order() -> None:
    [first] = chain(1)
    reordered = dict(reversed(list(first.items())))
    reordered["after"] = {"roles": {"a": ["y"], "b": ["x"]}, "name": "Zoë"}
    assert compute_hash(reordered, GENESIS) == first["hash"]
    assert compute_hash({**first, "after": {"name": "Zoe"}}, GENESIS) != first["hash"]
    assert compute_hash(first, "1" * 64) != first["hash"]
    assert len(first["hash"]) == 64 and int(first["hash"], 16) >= 0


def test_walking_records_names_the_first_broken_link() -> None:
    records = chain(5)
    assert verify_records(records).ok and verify_records(records).checked == 5

    changed = [dict(r) for r in records]
    changed[2]["actor_name"] = "Mallory"
    result = verify_records(changed)
    assert result.broken_id == 3 and "does not match its hash" in str(result.problem)

    gap = records[:2] + records[3:]
    result = verify_records(gap)
    assert result.broken_id == 4 and "events 3..3 are missing" in str(result.problem)

    swapped = [records[0], records[2], records[1], *records[3:]]
    assert verify_records(swapped).broken_id == 3

    # An archive continues from the anchor it is given, and only from it.
    assert verify_records(records[2:], start_hash=records[1]["hash"]).ok
    assert not verify_records(records[2:], start_hash=GENESIS).ok


def test_cursors_are_opaque_and_checked() -> None:
    cursor = encode_cursor(1234)
    assert "1234" not in cursor and decode_cursor(cursor) == 1234
    for bad in ("", "abc", encode_cursor(1234)[:-2] + "!!", "YXVkaXQxOi0x"):
        with pytest.raises(InvalidInput):
            decode_cursor(bad)


@pytest.mark.parametrize(
    "value", ["=1+1", "+cmd", "-2", "@SUM(A1)", "'quoted", "\tx", "plain", "", "a=b"]
)
def test_csv_cells_defuse_formulas_reversibly(value: str) -> None:
    cell = csv_cell(value)
    assert not str(cell).startswith(("=", "+", "-", "@", "\t")) or cell == value
    assert csv_value(str(cell)) == value


def test_decision_log_lines_are_json_whatever_the_input() -> None:
    odd = 'quote " backslash \\ newline \n tab \t emoji 🙂 nul \x00'
    text = line((1764201600.5, odd, "acme", "documents", "read", Decision(True, 3, "ok"), None))
    assert text.endswith("\n") and text.count("\n") == 1
    parsed = json.loads(text)
    assert parsed["subject"] == odd and parsed["decision"] == "allow"
    assert parsed["revision"] == 3 and parsed["request_id"] is None and parsed["rule"] is None
    assert parsed["time"] == "2025-11-27T00:00:00.500000+00:00"
