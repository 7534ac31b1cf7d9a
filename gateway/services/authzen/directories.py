"""What the AuthZEN mapping reads from files once per process: the subject directory
(``RINGFENCE_AUTHZEN_SUBJECTS``: external ids -> emails) and the refinements
(``RINGFENCE_AUTHZEN_REFINEMENTS``: resources or actions with given properties made more
specific). The resource directory is :mod:`gateway.services.authzen.resources`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from gateway.emails import normalise_email
from gateway.services.authzen.wire import Action, Entity

# --------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class SubjectDirectory:
    """External subject ids (e.g. an identity provider's opaque ``sub``) → emails.

    Read from a JSON object whose values are emails, or objects with an ``email``
    member (so a directory export such as the Todo scenario's ``users.json`` works
    as it is). Several aliases may name one person; the first one listed is the id
    searches answer with.
    """

    emails: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)  # email -> first alias

    @classmethod
    def from_mapping(cls, data: Any) -> SubjectDirectory:
        if not isinstance(data, dict):
            raise ValueError("the subject directory must be a JSON object")
        emails: dict[str, str] = {}
        aliases: dict[str, str] = {}
        for alias, value in data.items():
            email = value.get("email") if isinstance(value, dict) else value
            # Stored as accounts are (gateway.emails), so a look-alike spelling in the
            # directory names the account, not nobody.
            email = normalise_email(email) if isinstance(email, str) else None
            if email is None or "@" not in email:
                raise ValueError(f"subject {alias!r}: no email")
            emails[alias] = email
            if normalise_email(alias) != email:
                aliases.setdefault(email, alias)
        return cls(emails, aliases)

    def email_of(self, subject_id: str) -> str:
        """The email an alias stands for, or the id itself."""
        return self.emails.get(subject_id, subject_id)

    def public_id(self, email: str) -> str:
        """How searches name a user: their first alias, else their email."""
        return self.aliases.get(normalise_email(email), email)


@lru_cache(maxsize=8)
def load_subject_directory(path: Path | None) -> SubjectDirectory:
    """The directory in ``path`` (read once per process), or an empty one."""
    if path is None:
        return SubjectDirectory()
    return SubjectDirectory.from_mapping(json.loads(path.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- refinements


_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Refinement:
    """When an entity of ``match`` (type or action name) has all of ``properties``
    (in ``workspace``, or anywhere), Ringfence asks about ``becomes`` instead."""

    match: str
    properties: Mapping[str, Any]
    becomes: str
    workspace: str | None = None

    def applies(self, workspace: str, name: str, properties: Mapping[str, Any]) -> bool:
        return (
            self.match == name
            and self.workspace in (None, workspace)
            and all(
                key in properties
                and properties[key] == value
                and type(properties[key]) is type(value)  # True is not 1
                for key, value in self.properties.items()
            )
        )


@dataclass(frozen=True)
class Refinements:
    """AuthZEN attributes that select a more specific Ringfence resource or action.

    Ringfence decides by resource type and action name; an attribute that changes the
    answer (an archived record, a soft delete) is expressed as its own resource or
    action (``archived_record``, ``soft_delete``) with its own permissions, and this
    mapping, read from a YAML file, says which requests ask about it. First match wins.
    """

    resources: tuple[Refinement, ...] = ()
    actions: tuple[Refinement, ...] = ()

    def resource(self, workspace: str, resource: Entity) -> str:
        name = resource.type.lower()
        for rule in self.resources:
            if rule.applies(workspace, name, resource.properties):
                return rule.becomes
        return name

    def action(self, workspace: str, action: Action) -> str:
        name = action.name.lower()
        for rule in self.actions:
            if rule.applies(workspace, name, action.properties):
                return rule.becomes
        return name

    @classmethod
    def from_mapping(cls, data: Any) -> Refinements:
        """Raises ValueError naming the entry that is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or set(data) - {"resources", "actions"}:
            raise ValueError("expected a mapping with 'resources' and/or 'actions'")
        parsed: dict[str, tuple[Refinement, ...]] = {}
        for section, key in (("resources", "type"), ("actions", "name")):
            entries = data.get(section)
            if entries is None:
                entries = []
            if not isinstance(entries, list):
                raise ValueError(f"{section}: expected a list")
            parsed[section] = tuple(
                _refinement(entry, key, f"{section}[{index}]")
                for index, entry in enumerate(entries)
            )
        return cls(parsed["resources"], parsed["actions"])


def _refinement(entry: Any, key: str, where: str) -> Refinement:
    allowed = {key, "properties", "as", "workspace"}
    if not isinstance(entry, dict) or set(entry) - allowed:
        raise ValueError(f"{where}: expected a mapping of {', '.join(sorted(allowed))}")
    match, becomes, workspace = entry.get(key), entry.get("as"), entry.get("workspace")
    properties = entry.get("properties")
    for label, value in ((key, match), ("as", becomes)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise ValueError(f"{where}: '{label}' must be a lowercase name, got {value!r}")
    if not isinstance(properties, dict) or not properties:
        raise ValueError(f"{where}: 'properties' must be a non-empty mapping")
    if any(not isinstance(v, str | int | float | bool) for v in properties.values()):
        raise ValueError(f"{where}: property values must be strings, numbers or booleans")
    if workspace is not None and not isinstance(workspace, str):
        raise ValueError(f"{where}: 'workspace' must be a workspace slug")
    return Refinement(str(match), properties, str(becomes), workspace)


@lru_cache(maxsize=8)
def load_refinements(path: Path | None) -> Refinements:
    """The refinements in the YAML file ``path`` (read once per process), or none."""
    if path is None:
        return Refinements()
    try:
        return Refinements.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
