"""Inviting many people at once in the console: a pasted list or a CSV file of name,
email and roles per workspace (``acme:viewer; globex:editor``), previewed row by row
(every row checked as the single invite form checks it, by the same schema and the
same service rules, nothing sent) and then sent: one invitation, one email and one
audit event per good row, exactly as if each had been invited by hand. Rows with a
problem are named in the preview with the reason and are not sent; fixing them and
previewing again is the way to send them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from flask import Response, request
from marshmallow import ValidationError

from admin_api.schemas import InvitationCreateSchema
from console.views import _field_errors, _render, bp, no_workspaces_yet, viewer
from gateway.errors import InvalidInput, RingfenceError
from gateway.services.permissions import Permission
from gateway.web.http import services

MAX_ROWS = 200  # per send: each is a change, an email and an audit event
MAX_BYTES = 200_000  # of pasted text or of the file
ROLE_SEPARATORS = (";", "|", ",")
EXAMPLE = "Ada Lovelace, ada@example.com, {w}:editor\nAlan Turing, alan@example.com, {w}:viewer"


@dataclass
class Row:
    """One line of the list: what it says, and why it cannot be sent (None: it can)."""

    line: int
    name: str
    email: str
    roles: list[tuple[str, str]] = field(default_factory=list)  # (workspace, role)
    problem: str | None = None
    # The row through the invite schema, once checked (what a send invites).
    loaded: dict[str, Any] | None = None
    sent: bool = False

    @property
    def roles_text(self) -> str:
        return "; ".join(f"{workspace}:{role}" for workspace, role in self.roles)


def parse_roles(text: str) -> list[tuple[str, str]] | None:
    """``acme:viewer; globex:editor`` (or separated by ``|``, ``,`` or spaces) as
    (workspace, role) pairs, in order, once each; None if an entry is not
    ``workspace:role``."""
    for separator in ROLE_SEPARATORS:
        text = text.replace(separator, " ")
    pairs: list[tuple[str, str]] = []
    for entry in text.split():
        workspace, colon, role = entry.partition(":")
        if not colon or not workspace or not role:
            return None
        if (workspace, role) not in pairs:
            pairs.append((workspace, role))
    return pairs


def parse_rows(text: str) -> list[Row]:
    """The rows of a pasted list or CSV file: ``name, email, roles`` per line (tab
    separated as pasted from a spreadsheet, or comma separated; a header line naming an
    ``email`` column is skipped; blank lines are ignored). Each row is read on its own:
    a malformed one gets its problem and the others are unaffected."""
    lines = text.splitlines()
    delimiter = "\t" if any("\t" in line for line in lines[:5]) else ","
    rows: list[Row] = []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True)
    for cells in reader:
        line = reader.line_num
        cells = [cell.strip() for cell in cells]
        if not any(cells):
            continue
        if not rows and line == 1 and any(cell.lower() == "email" for cell in cells):
            continue  # a header
        if len(cells) < 3:
            name, email = [*cells, "", ""][:2]
            rows.append(Row(line, name, email, problem="Expected name, email and roles"))
            continue
        # Roles may run over several cells when the list is comma separated without
        # quotes ("Ada, ada@x, acme:viewer, globex:editor").
        name, email, roles_text = cells[0], cells[1], " ".join(cells[2:])
        roles = parse_roles(roles_text)
        if roles is None:
            rows.append(
                Row(line, name, email, problem=f"Roles must be workspace:role, got {roles_text!r}")
            )
        elif not roles:
            rows.append(Row(line, name, email, problem="Pick at least one role"))
        else:
            rows.append(Row(line, name, email, roles))
    return rows


def _read_input() -> tuple[str, str | None]:
    """The list's text (the uploaded file's, if one was chosen, else the pasted one), and
    a problem with the input as a whole."""
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        raw = upload.stream.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return "", f"The file is over {MAX_BYTES // 1000} kB"
        try:
            return raw.decode("utf-8-sig"), None
        except UnicodeDecodeError:
            return "", "The file is not UTF-8 text (save the spreadsheet as CSV UTF-8)"
    text = request.form.get("rows", "")
    if len(text) > MAX_BYTES:
        return "", f"The list is over {MAX_BYTES // 1000} kB"
    return text, None


def check_rows(rows: list[Row]) -> None:
    """Flag each row :class:`InvitationService.create` would refuse, and repeats of an
    address within the list, with the reason; nothing is written."""
    actor = viewer().actor
    first_line: dict[str, int] = {}
    for row in rows:
        if row.problem is not None:
            continue
        try:
            args = row.loaded = _loaded(row)
            key = args["email"].casefold()
            if key in first_line:
                raise InvalidInput(f"{row.email} is already on line {first_line[key]}")
            first_line[key] = row.line
            services().invitations.check(actor, args["email"], args["roles"])
        except (ValidationError, RingfenceError) as exc:
            row.problem = _problem(exc)
            row.loaded = None


def _loaded(row: Row) -> dict[str, Any]:
    """The row through the API's and the invite form's schema (name, email, roles)."""
    loaded: dict[str, Any] = InvitationCreateSchema().load(
        {
            "name": row.name,
            "email": row.email,
            "roles": [{"workspace": w, "role": r} for w, r in row.roles],
        }
    )
    return loaded


def _problem(exc: ValidationError | RingfenceError) -> str:
    """What the row's cell says wrong, in the words the single invite form uses."""
    if isinstance(exc, RingfenceError):
        return exc.detail or exc.title
    return " ".join(
        f"{name.capitalize()}: {' '.join(problems)}"
        for name, problems in _field_errors(exc).items()
    )


def _page(status: int = 200, **context: Any) -> Response:
    workspaces = viewer().workspaces(Permission.USERS_INVITE)
    context.setdefault("text", "")
    context.setdefault("rows", None)
    return _render(
        "invite_many.html",
        status=status,
        active="users",
        workspaces=workspaces,
        no_workspaces_yet=not workspaces and no_workspaces_yet(),
        # In the viewer's own first workspace: never a slug they cannot see.
        example=EXAMPLE.format(w=workspaces[0][0]) if workspaces else "",
        max_rows=MAX_ROWS,
        **context,
    )


@bp.get("/users/invite-many")
def invite_many_form() -> Response:
    return _page()


@bp.post("/users/invite-many")
def invite_many() -> Response:
    """``action=preview`` checks the list; ``action=send`` checks it again (anything may
    have changed since the preview) and invites every good row."""
    text, problem = _read_input()
    if problem is not None:
        return _page(422, text=text, problem=problem)
    rows = parse_rows(text)
    if not rows:
        return _page(422, text=text, problem="The list is empty: one person per line")
    if len(rows) > MAX_ROWS:
        return _page(422, text=text, problem=f"{len(rows)} rows: at most {MAX_ROWS} at a time")
    check_rows(rows)
    if request.form.get("action") != "send":
        return _page(text=text, rows=rows)
    actor = viewer().actor
    for row in rows:
        if row.problem is not None or (args := row.loaded) is None:
            continue
        try:
            services().invitations.create(actor, args["email"], args["name"], args["roles"])
            row.sent = True
        except RingfenceError as exc:  # changed since the check above
            row.problem = _problem(exc)
    return _page(text="", rows=rows, done=True)
