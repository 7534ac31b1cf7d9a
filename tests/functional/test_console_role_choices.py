"""Role choices in the console and the admin API (issue 23's rough edges): an
installation-wide role (``scope: installation``: superadmin) is offered and granted in
every workspace only, never in one; every choice shows its role's description; a change
that gives admin rights says so in words before the raw permissions; the Roles page is
grouped, searchable (without script, and with htmx) and folds each role's permissions."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.console_support import Console, sign_in
from tests.helpers import (
    ADMIN_EMAIL,
    LiveServer,
    assert_problem,
    create_workspaces,
    onboard,
    post_invitation,
)

VIEWER = "Reads documents, reports and the workspace"


@pytest.fixture
def root(server: LiveServer) -> Iterator[Console]:
    create_workspaces(server.admin(), "acme", "globex")
    console = sign_in(server, ADMIN_EMAIL, server.admin_password)
    yield console
    console.close()


def offered(page: str) -> set[str]:
    """The values of the role checkboxes a form offers (enabled or not)."""
    return set(re.findall(r'<input type="checkbox" name="roles" value="([^"]+)"', page))


# -- superadmin: in every workspace only ----------------------------------------------


def test_superadmin_is_refused_in_one_workspace_and_granted_everywhere(
    server: LiveServer, root: Console
) -> None:
    api = server.admin()
    eve = onboard(server, api, "eve@example.com", "Eve", [("acme", "viewer")])
    why = "'superadmin' is an installation-wide role: granted only in every workspace"

    # Until the mark, the super admin could give it in acme alone (a 200); now a 422 that
    # says why, through every door a role comes in by.
    problem = assert_problem(
        api.put(f"/users/{eve}/workspaces/acme/roles", json={"roles": ["viewer", "superadmin"]}),
        422,
        "invalid-input",
        why,
    )
    assert problem["installation_roles"] == ["superadmin"]
    assert problem["errors"] == {"role": ["'superadmin' is granted only in every workspace (*)"]}
    assert_problem(
        api.post(f"/users/{eve}/grants", json={"workspace": "acme", "role": "superadmin"}),
        422,
        "invalid-input",
        why,
    )
    assert_problem(
        post_invitation(api, "sam@example.com", [("acme", "superadmin")]), 422, "invalid-input", why
    )
    assert api.get(f"/users/{eve}").json()["roles"] == {"acme": ["viewer"]}
    assert api.get("/users", params={"q": "sam"}).json() == []

    # The roles a workspace accepts leave it out; those of "*" list it, marked.
    assert "superadmin" not in {r["name"] for r in api.get("/roles?workspace=acme").json()}
    everywhere = {r["name"]: r for r in api.get("/roles?workspace=*").json()}
    assert everywhere["superadmin"]["scope"] == "installation"
    assert everywhere["viewer"]["scope"] == "workspace"

    # Granted installation-wide, as before, by whoever may.
    granted = api.post(f"/users/{eve}/grants", json={"workspace": "*", "role": "superadmin"})
    assert granted.status_code == 201, granted.text
    assert api.get(f"/users/{eve}").json()["roles"] == {"*": ["superadmin"], "acme": ["viewer"]}

    # The console: the invite form offers it in no workspace; Eve's roles panel offers it
    # for every workspace (where she holds roles now) but not in acme.
    form = root.get("/console/users/invite")
    assert form.status_code == 200
    assert {"acme:viewer", "acme:owner", "globex:admin"} <= offered(form.text)
    assert not {value for value in offered(form.text) if value.endswith(":superadmin")}
    panel = root.get(f"/console/users/{eve}/roles")
    sections = re.split(r"<legend>", panel.text)
    by_legend = {section.split(" ", 1)[0]: offered(section) for section in sections[1:]}
    assert by_legend["acme"] == {"admin", "editor", "owner", "viewer"}
    assert "superadmin" in by_legend["Every"]
    # Refused through the console too, with the service's words.
    refused = root.post(
        f"/console/users/{eve}/roles/acme", {"roles": ["viewer", "superadmin"]}, htmx=True
    )
    assert refused.status_code == 422
    assert "installation-wide role" in refused.text


def test_bulk_offers_no_installation_wide_role_and_explains_a_forged_one(
    server: LiveServer, root: Console
) -> None:
    eve = onboard(server, server.admin(), "eve@example.com", "Eve", [("acme", "viewer")])
    users = root.get("/console/users")
    bulk = re.search(r'<select id="b-role" name="role">(.*?)</select>', users.text, re.S)
    assert bulk is not None
    assert re.findall(r'<option value="([^"]+)"', bulk.group(1)) == [
        "admin",
        "editor",
        "owner",
        "viewer",
    ]
    # The filter still finds those who hold it (everywhere), for the super admin.
    search = re.search(r'<select id="f-role" name="role">(.*?)</select>', users.text, re.S)
    assert search is not None and '<option value="superadmin"' in search.group(1)

    forged = root.get(
        "/console/users/bulk",
        params={"action": "add-role", "workspace": "acme", "role": "superadmin", "user": eve},
    )
    assert forged.status_code == 200
    assert "&#39;superadmin&#39; is an installation-wide role" in forged.text


# -- descriptions beside each choice ---------------------------------------------------


def test_each_role_choice_shows_its_description(server: LiveServer, root: Console) -> None:
    eve = onboard(server, server.admin(), "eve@example.com", "Eve", [("acme", "viewer")])
    form = root.get("/console/users/invite").text
    assert re.search(
        r'value="acme:viewer"[^>]* aria-describedby="invite-hint-acme-viewer"[^>]*> viewer',
        form,
    )
    assert f'<p id="invite-hint-acme-viewer" class="hint">{VIEWER}</p>' in form
    assert (
        '<p id="invite-hint-globex-owner" class="hint">'
        "Admin who also removes people and changes or deletes the workspace</p>"
    ) in form

    panel = root.get(f"/console/users/{eve}/roles").text
    assert re.search(
        r'value="editor"[^>]* aria-describedby="roles-hint-acme-editor"[^>]*> editor', panel
    )
    assert '<p id="roles-hint-acme-editor" class="hint">Viewer who also writes documents</p>' in (
        panel
    )
    # A rejected invitation keeps the description and adds the error to what is read out.
    rejected = root.post("/console/users/invite", {"name": "X", "email": "x@example.com"}, True)
    assert rejected.status_code == 422
    assert 'aria-describedby="invite-hint-acme-viewer invite-roles-error"' in rejected.text


# -- the warning before a powerful role's permissions ----------------------------------


def test_a_powerful_role_is_announced_in_words_first(server: LiveServer, root: Console) -> None:
    eve = onboard(server, server.admin(), "eve@example.com", "Eve", [("globex", "viewer")])

    def preview(*roles: str) -> str:
        response = root.post(
            f"/console/users/{eve}/roles/acme/preview", {"roles": list(roles)}, htmx=True
        )
        assert response.status_code == 200, response.text
        return response.text

    admin = preview("admin")
    warning = re.search(r'<p class="message warning" role="note"><strong>([^<]+)</strong>', admin)
    assert warning is not None, admin
    assert warning.group(1) == (
        "Gives admin rights in acme: they can invite people, change people&#39;s roles, "
        "define the workspace&#39;s own roles, deactivate people, reset people&#39;s two-step "
        "sign-in, connect a company directory, send the audit trail elsewhere, run access "
        "reviews."
    )
    # The raw list comes after, folded, with its count.
    assert admin.index("message warning") < admin.index("<details")
    assert re.search(r'<details class="perm-list gain">\s*<summary>Gains 17 permissions', admin)

    owner = preview("owner")
    assert "Gives admin rights in acme: they can invite people" in owner
    assert "remove people" in owner and "delete the workspace" in owner
    assert "Gains 22 permissions" in owner

    viewer = preview("viewer")
    assert "message warning" not in viewer and "admin rights" not in viewer
    # A short, harmless list stays open.
    assert re.search(
        r'<details class="perm-list gain" open>\s*<summary>Gains 3 permissions', viewer
    )


# -- the Roles page: grouped, searchable, folded ---------------------------------------


def role_names(page: str) -> list[str]:
    return re.findall(r'<h3 id="role-[^"]+-title">([^<]+)</h3>', page)


def test_the_roles_page_groups_folds_and_searches(server: LiveServer, root: Console) -> None:
    whole = root.get("/console/roles")
    assert whole.status_code == 200
    text = whole.text
    assert role_names(text) == ["superadmin", "admin", "editor", "owner", "viewer"]
    assert text.index("Installation-wide (granted in every workspace only)") < text.index(
        "Shared by every workspace"
    )
    assert '<details class="role-group" id="group-installation" open>' in text
    # Each role's permissions folded, with their count.
    assert re.search(r'<details class="perm-list">\s*<summary>3 permissions</summary>', text)
    assert "<summary>25 permissions</summary>" in text  # superadmin: the whole catalogue
    assert '<p class="count" id="roles-count" role="status">5 roles</p>' in text

    # Without script: a GET form; the server filters by name, description or permission.
    by_permission = root.get("/console/roles", params={"q": "users:invite"}).text
    assert role_names(by_permission) == ["superadmin", "admin", "owner"]
    assert 'value="users:invite"' in by_permission  # the box keeps what was searched
    by_description = root.get("/console/roles", params={"q": "WRITES DOCUMENTS"}).text
    assert role_names(by_description) == ["editor"]
    by_name = root.get("/console/roles", params={"q": "super"}).text
    assert role_names(by_name) == ["superadmin"]
    assert "Shared by every workspace" not in by_name
    nothing = root.get("/console/roles", params={"q": "no such thing"}).text
    assert role_names(nothing) == [] and "No role matches “no such thing”." in nothing

    # With htmx: only the results, for the region the box updates.
    partial = root.get(
        "/console/roles",
        params={"q": "owner"},
        headers={"HX-Request": "true", "HX-Target": "roles-results"},
    )
    assert partial.status_code == 200
    assert "<html" not in partial.text and "<h1>" not in partial.text
    # owner by name; admin's description names no owner, superadmin's permissions none.
    assert role_names(partial.text) == ["owner"]
    assert "1 role matching “owner”" in partial.text
