"""Inviting many people at once in the console, through real HTTP: a pasted list or a CSV
file is previewed row by row with the reason each bad row cannot be sent, nothing is
sent until asked, and then each good row is one invitation, one email and one audit
event, as if invited by hand. Another workspace's slug reads as an unknown one."""

from __future__ import annotations

import re

from console.invite_many import MAX_ROWS
from tests.console_support import Console, sign_in
from tests.functional.test_access_reviews import audit_actions
from tests.helpers import (
    PASSWORD,
    LiveServer,
    create_workspaces,
    invite,
    invite_and_accept,
    outbox_messages,
)

PAGE = "/console/users/invite-many"
LIST = """Name, Email, Roles
Ada Lovelace, ada@example.com, acme:editor
Alan Turing, alan@example.com, acme:viewer; acme:editor
Not An Address, not-an-address, acme:viewer
Owner Wanted, own@example.com, acme:owner
Elsewhere, else@example.com, globex:viewer
Nowhere, nowhere@example.com, nowhere:viewer
Pat Again, pat@example.com, acme:editor
Ada Twice, ADA@example.com, acme:viewer
Alice Herself, alice@example.com, acme:viewer
No Such Role, norole@example.com, acme:astronaut
"""


def outcomes(page: str) -> dict[int, str]:
    """The table's last column by line number, tags removed."""
    cells = re.findall(
        r'<td data-label="Line">(\d+)</td>.*?<td data-label="(?:Check|Outcome)">(.*?)</td>',
        page,
        re.S,
    )
    return {int(line): re.sub(r"<[^>]+>", "", text).strip() for line, text in cells}


def test_a_list_is_previewed_then_only_its_good_rows_are_sent_one_change_each(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme", "globex")
    invite_and_accept(server, root, "alice@example.com", "Alice", [("acme", "admin")])
    invite(root, "pat@example.com", [("acme", "viewer")], "Pat")
    console = sign_in(server, "alice@example.com", PASSWORD)
    assert 'href="/console/users/invite-many"' in console.get("/console/users").text
    form = console.get(PAGE)
    assert form.status_code == 200 and "Acme (acme)" in form.text and "globex" not in form.text
    events, mails = audit_actions(server), len(outbox_messages(server.settings))

    preview = console.post(PAGE, {"action": "preview", "rows": LIST})
    assert preview.status_code == 200, preview.text
    assert "2 of 10 rows ready to send." in preview.text
    assert "Nothing has been sent yet." in preview.text
    found = outcomes(preview.text)
    assert found[2] == found[3] == "Ready"
    assert found[4].startswith("Not sendable: Email:")
    assert "owner" in found[5]
    # globex is there but not Alice's: worded as a workspace that does not exist.
    assert found[6].replace("globex", "X") == found[7].replace("nowhere", "X")
    assert "already has a pending invitation" in found[8]
    assert found[9] == "Not sendable: ADA@example.com is already on line 2"
    assert found[10] == "Not sendable: You cannot change your own roles"
    assert "astronaut" in found[11]
    assert audit_actions(server) == events  # nothing written by a preview
    assert len(outbox_messages(server.settings)) == mails
    assert 'id="many-send"' in preview.text and "Send 2 invitations" in preview.text

    sent = console.post(PAGE, {"action": "send", "rows": LIST})
    assert sent.status_code == 200, sent.text
    assert "Sent 2 invitations; 8 rows not sent" in sent.text
    done = outcomes(sent.text)
    assert done[2] == done[3] == "Invited" and done[6] == found[6].replace("sendable", "sent")
    # Per row as by hand: the invitation made, then its email sent (eager delivery).
    assert audit_actions(server)[len(events) :] == ["invitation.created", "invitation.sent"] * 2
    addressed = [m["To"] for m in outbox_messages(server.settings)[mails:]]
    assert sorted(addressed) == ["Ada Lovelace <ada@example.com>", "Alan Turing <alan@example.com>"]
    pending = {i["email"]: i for i in root.get("/invitations").json()}
    assert sorted(r["role"] for r in pending["alan@example.com"]["roles"]) == ["editor", "viewer"]
    assert "else@example.com" not in pending and "own@example.com" not in pending

    # The same list again: those two are pending now, so nothing is sent twice.
    again = console.post(PAGE, {"action": "send", "rows": LIST})
    assert "Sent 0 invitations; 10 rows not sent" in again.text
    assert len(audit_actions(server)) == len(events) + 4


def upload(console: Console, content: bytes) -> str:
    response = console.client.post(
        PAGE,
        data={"csrf_token": console.token, "action": "preview", "rows": "ignored, x, y"},
        files={"file": ("people.csv", content, "text/csv")},
    )
    return response.text


def test_a_csv_file_is_read_instead_of_the_text_and_bad_input_says_why(
    server: LiveServer,
) -> None:
    root = server.admin()
    create_workspaces(root, "acme")
    console = sign_in(server, server.settings.admin_email, server.admin_password)
    # Excel's "CSV UTF-8" starts with a byte-order mark.
    page = upload(console, "\ufeffname,email,roles\nZoë,zoe@example.com,acme:viewer\n".encode())
    assert "1 of 1 row ready to send." in page and "Zoë" in page
    assert "is not UTF-8 text" in upload(console, "Zoë,zoe@x.com,acme:viewer".encode("latin-1"))

    empty = console.post(PAGE, {"action": "preview", "rows": "\n \n"})
    assert empty.status_code == 422 and "The list is empty" in empty.text
    many = "".join(f"P{n}, p{n}@example.com, acme:viewer\n" for n in range(MAX_ROWS + 1))
    over = console.post(PAGE, {"action": "send", "rows": many})
    assert over.status_code == 422 and f"at most {MAX_ROWS} at a time" in over.text
    assert root.get("/invitations").json() == []
    # Without the form's token, nothing is read.
    forged = console.client.post(
        PAGE, data={"action": "send", "rows": "A, a@example.com, acme:viewer"}
    )
    assert forged.status_code in (400, 403) and root.get("/invitations").json() == []
