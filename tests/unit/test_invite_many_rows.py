"""The bulk invite's list, as people paste it or export it from a spreadsheet
(console.invite_many.parse_rows): each line read on its own."""

from __future__ import annotations

from console.invite_many import parse_roles, parse_rows


def test_roles_are_workspace_role_pairs_whatever_separates_them() -> None:
    assert parse_roles("acme:viewer; globex:editor") == [("acme", "viewer"), ("globex", "editor")]
    assert parse_roles("acme:viewer | acme:viewer,globex:editor acme:admin") == [
        ("acme", "viewer"),
        ("globex", "editor"),
        ("acme", "admin"),
    ]
    assert parse_roles("") == []
    assert parse_roles("acme viewer") is None
    assert parse_roles("acme:") is None and parse_roles(":viewer") is None


def test_a_comma_list_with_a_header_quotes_and_blank_lines() -> None:
    rows = parse_rows(
        "Name,Email,Roles\n"
        '"Lovelace, Ada", ada@example.com, acme:editor\n'
        "\n"
        "Alan Turing, alan@example.com, acme:viewer, globex:viewer\n"
    )
    assert [(r.line, r.name, r.email, r.roles, r.problem) for r in rows] == [
        (2, "Lovelace, Ada", "ada@example.com", [("acme", "editor")], None),
        (4, "Alan Turing", "alan@example.com", [("acme", "viewer"), ("globex", "viewer")], None),
    ]


def test_columns_pasted_from_a_spreadsheet_are_tab_separated() -> None:
    [row] = parse_rows("Grace Hopper\tgrace@example.com\tacme:viewer; acme:editor\n")
    assert (row.name, row.email, row.roles_text) == (
        "Grace Hopper",
        "grace@example.com",
        "acme:viewer; acme:editor",
    )


def test_a_bad_line_gets_its_problem_and_leaves_the_others_alone() -> None:
    rows = parse_rows(
        "Only A Name\n"
        "No Roles, none@example.com,\n"
        "Bad Roles, bad@example.com, acme viewer\n"
        "Fine, fine@example.com, acme:viewer\n"
    )
    assert [(r.line, r.problem) for r in rows] == [
        (1, "Expected name, email and roles"),
        (2, "Pick at least one role"),
        (3, "Roles must be workspace:role, got 'acme viewer'"),
        (4, None),
    ]
    assert rows[0].name == "Only A Name" and rows[0].email == ""
