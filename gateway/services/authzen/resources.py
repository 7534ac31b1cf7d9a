"""The AuthZEN resource directory: the resource instances a decision point knows.

Ringfence grants per resource type; a role never names one record. Some questions are
about instances, though: "which records may alice read?" (a resource search lists ids),
and "may bob change record-2?" where what decides (record-2 is archived, owned by
carol, belongs to Legal) is a fact about record-2 that the caller may not send. The
directory holds those facts, read once from a JSON file
(``RINGFENCE_AUTHZEN_RESOURCES``)::

    [
      {"type": "record", "id": "record-1", "properties": {"status": "active"}},
      {"type": "record", "id": "101", "workspace": "search",
       "properties": {"ownerID": "alice", "department": "Legal"}}
    ]

A resource with a ``workspace`` exists in that workspace only; without one, in every
workspace. What the directory says about a resource overrides what a caller says about
it (a caller cannot make a record its own by sending ``ownerID``); the properties then
meet the usual machinery: ``ownerID`` for owner-only permissions, refinements for the
rest (an archived record, a Legal record).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

_ALLOWED_KEYS = {"type", "id", "workspace", "properties"}


@dataclass(frozen=True)
class Resource:
    type: str
    id: str
    properties: Mapping[str, Any]
    workspace: str | None = None


@dataclass(frozen=True)
class ResourceDirectory:
    """Resources by (workspace, type, id); ``None`` as workspace: every workspace."""

    _by_id: Mapping[tuple[str | None, str, str], Resource] = field(default_factory=dict)
    _by_type: Mapping[tuple[str | None, str], Sequence[Resource]] = field(default_factory=dict)

    @classmethod
    def from_list(cls, data: Any) -> ResourceDirectory:
        """Raises ValueError naming the entry that is wrong."""
        if not isinstance(data, list):
            raise ValueError("the resource directory must be a JSON array of resources")
        by_id: dict[tuple[str | None, str, str], Resource] = {}
        by_type: dict[tuple[str | None, str], list[Resource]] = {}
        for index, entry in enumerate(data):
            resource = _resource(entry, f"[{index}]")
            key = (resource.workspace, resource.type, resource.id)
            if key in by_id:
                raise ValueError(f"[{index}]: {resource.type} {resource.id!r} is listed twice")
            by_id[key] = resource
            by_type.setdefault((resource.workspace, resource.type), []).append(resource)
        return cls(by_id, by_type)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, workspace: str, type_: str, resource_id: str) -> Resource | None:
        """The resource as the directory knows it in ``workspace``, or None."""
        type_ = type_.lower()
        found = self._by_id.get((workspace, type_, resource_id))
        return found if found is not None else self._by_id.get((None, type_, resource_id))

    def of_type(self, workspace: str, type_: str) -> list[Resource]:
        """Every resource of ``type_`` in ``workspace`` (its own, then the ones of every
        workspace), in the file's order; empty if the directory knows none."""
        type_ = type_.lower()
        return [*self._by_type.get((workspace, type_), ()), *self._by_type.get((None, type_), ())]

    def workspaces_with(self, type_: str) -> set[str]:
        """The workspaces that hold resources of ``type_`` of their own."""
        type_ = type_.lower()
        return {ws for ws, t in self._by_type if ws is not None and t == type_}


def _resource(entry: Any, where: str) -> Resource:
    if not isinstance(entry, dict) or set(entry) - _ALLOWED_KEYS:
        keys = ", ".join(sorted(_ALLOWED_KEYS))
        raise ValueError(f"{where}: expected an object with {keys}")
    type_, resource_id = entry.get("type"), entry.get("id")
    workspace, properties = entry.get("workspace"), entry.get("properties", {})
    if not isinstance(type_, str) or not type_:
        raise ValueError(f"{where}: 'type' must be a non-empty string")
    if isinstance(resource_id, bool) or not isinstance(resource_id, str | int) or resource_id == "":
        raise ValueError(f"{where}: 'id' must be a non-empty string (or an integer)")
    if workspace is not None and (not isinstance(workspace, str) or not workspace):
        raise ValueError(f"{where}: 'workspace' must be a workspace slug")
    if not isinstance(properties, dict):
        raise ValueError(f"{where}: 'properties' must be an object")
    # AuthZEN ids are strings; a directory exported with numeric ids means the same.
    return Resource(type_.lower(), str(resource_id), properties, workspace)


@lru_cache(maxsize=8)
def load_resource_directory(path: Path | None) -> ResourceDirectory:
    """The directory in the JSON file ``path`` (read once per process), or an empty one."""
    if path is None:
        return ResourceDirectory()
    try:
        return ResourceDirectory.from_list(json.loads(path.read_text(encoding="utf-8")))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: {exc}") from exc
