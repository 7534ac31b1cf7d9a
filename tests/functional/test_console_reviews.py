"""Access reviews and reports in the console, through real HTTP with two tenants: an acme
admin starts a campaign, decides their queue (revoke with a reason, bulk keep), follows
the progress and closes it; reports are tables and CSV files. A globex admin sees none of
it: another tenant's campaign and items answer as unknown ones do."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

from gateway.db.models import utcnow
from tests.console_support import Console, sign_in
from tests.functional.test_access_reviews import World, allowed, audit_actions, world  # noqa: F401
from tests.helpers import PASSWORD, LiveServer

CAMPAIGN_LINK = re.compile(r'href="/console/reviews/(\d+)"')


def deadline(hours: int = 2) -> str:
    return (utcnow() + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M")


def item_ids(page: str) -> dict[str, int]:
    """Item id by "person role" from the Keep buttons' accessible names on a queue page."""
    found = re.findall(
        r'action="/console/reviews/items/(\d+)/decision".*?Keep<span class="visually-hidden"> '
        r"(\w+)'s (\w+) in",
        page,
        re.S,
    )
    return {f"{name} {role}": int(item) for item, name, role in found}


def report_rows(console: Console, name: str, **params: str) -> list[dict[str, str]]:
    response = console.get(f"/console/reports/{name}", params={**params, "format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert f'filename="{name}.csv"' in response.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(response.text)))


def test_reports_and_a_review_in_the_console_and_another_tenant_sees_none_of_it(
    server: LiveServer,
    world: World,  # noqa: F811
) -> None:
    alice = sign_in(server, "alice@example.com", PASSWORD)
    gina = sign_in(server, "gina@example.com", PASSWORD)

    # -- reports: tables and CSV files, each admin's own workspaces only --------------
    index = alice.get("/console/reports").text
    for name in ("dormant-accounts", "admins", "grants-changed", "many-workspaces"):
        assert f'href="/console/reports/{name}"' in index

    admins = alice.get("/console/reports/admins").text
    assert "alice@example.com" in admins and "gina@example.com" not in admins
    assert 'href="/console/reports/admins?format=csv"' in admins
    assert {r["email"] for r in report_rows(alice, "admins")} == {"alice@example.com"}
    assert {r["email"] for r in report_rows(gina, "admins")} == {"gina@example.com"}
    # Carol is in both tenants: each admin sees only their own workspace's roles.
    many = report_rows(alice, "many-workspaces", min_workspaces="1")
    shared = next(r for r in many if r["email"] == "carol@example.com")
    assert shared["workspaces"] == "acme"

    # Parameters are the API's, refused next to their field; the CSV keeps them.
    bad = alice.get("/console/reports/dormant-accounts", params={"days": "-3"})
    assert bad.status_code == 422 and 'id="r-days-error"' in bad.text
    form = alice.get("/console/reports/dormant-accounts", params={"days": "0"}).text
    assert 'href="/console/reports/dormant-accounts?format=csv&amp;days=0"' in form
    assert alice.get("/console/reports/nonsense").status_code == 404

    # Somebody without reviews:read anywhere is refused the reports.
    carol = sign_in(server, "carol@example.com", PASSWORD)
    assert 'href="/console/reviews"' not in carol.get("/console/account").text
    assert carol.get("/console/reports").status_code == 403
    assert carol.get("/console/reports/admins").status_code == 403

    # -- a review campaign ---------------------------------------------------------------

    # The start form offers acme only (not globex, not every workspace).
    page = alice.get("/console/reviews").text
    assert 'href="/console/reviews"' in page  # in the navigation
    scopes = re.findall(r'<option value="([^"]*)"', page.split('id="rv-workspace"')[1])
    assert scopes[: scopes.index("flag")] == ["acme"]

    # A deadline in the past is refused next to the field; nothing is started.
    refused = alice.post(
        "/console/reviews", {"name": "Q4", "workspace": "acme", "deadline": "2020-01-01T00:00"}
    )
    assert refused.status_code == 422
    assert 'id="rv-deadline-error"' in refused.text and "No campaigns yet" in refused.text
    # Another tenant's workspace as the scope is refused too.
    other = alice.post(
        "/console/reviews", {"name": "Q4", "workspace": "globex", "deadline": deadline()}
    )
    assert other.status_code == 403

    started = alice.post(
        "/console/reviews", {"name": "Q4 acme", "workspace": "acme", "deadline": deadline()}
    )
    assert started.status_code == 200, started.text
    assert "Started Q4 acme: 3 grants to review" in started.text
    campaign = int(re.findall(r"/console/reviews/(\d+)/close", started.text)[0])
    for reviewer in ("Alice", "Ada Admin"):
        assert f'<td data-label="Reviewer">{reviewer}' in started.text

    # The queue: Bob's and Carol's grants, never Alice's own.
    queue = alice.get("/console/reviews/queue").text
    ids = item_ids(queue)
    assert set(ids) == {"Bob editor", "Carol viewer"}

    # Revoking needs a reason; given one, Carol loses the role at once.
    no_reason = alice.post(
        f"/console/reviews/items/{ids['Carol viewer']}/decision", {"decision": "revoke"}
    )
    assert no_reason.status_code == 422
    assert f'id="reason-{ids["Carol viewer"]}-error"' in no_reason.text
    assert allowed(server, "carol")
    revoked = alice.post(
        f"/console/reviews/items/{ids['Carol viewer']}/decision",
        {"decision": "revoke", "comment": "left the project"},
    )
    assert revoked.status_code == 200, revoked.text
    assert "Revoked Carol&#39;s viewer in acme (the grant is gone)." in revoked.text
    assert not allowed(server, "carol")
    assert allowed(server, "carol", "globex")

    # Bulk keep: nothing ticked is refused; ticked, each is one decision.
    assert alice.post("/console/reviews/queue/keep", {}).status_code == 422
    kept = alice.post(
        "/console/reviews/queue/keep", {"item": [str(ids["Bob editor"])], "comment": "on the team"}
    )
    assert kept.status_code == 200, kept.text
    assert "Kept 1: Bob&#39;s editor in acme." in kept.text
    assert allowed(server, "bob")
    # Deciding again is refused with the reason, and changes nothing.
    again = alice.post("/console/reviews/queue/keep", {"item": [str(ids["Bob editor"])]})
    assert again.status_code == 409 and "decided already" in again.text

    # Progress, then closing: Alice's own grant (decidable only by the super admin) is
    # flagged, as the confirmation said.
    progress = alice.get(f"/console/reviews/{campaign}").text
    assert "2 of 3 decided: 1 kept, 1 revoked" in progress
    assert "“left the project”" in progress
    confirm = alice.get(f"/console/reviews/{campaign}/close").text
    assert "1 undecided grant will be" in confirm and "flagged" in confirm
    closed = alice.post(f"/console/reviews/{campaign}/close")
    assert closed.status_code == 200, closed.text
    assert "Closed Q4 acme; 1 undecided flagged." in closed.text
    assert "Close now" not in closed.text
    assert alice.post(f"/console/reviews/{campaign}/close").status_code == 409
    actions = audit_actions(server)
    assert actions.count("review.decided") == 2 and "review.closed" in actions

    # Another tenant's admin: the campaign and its items are unknown to them.
    assert "Q4 acme" not in gina.get("/console/reviews").text
    assert "acme" not in gina.get("/console/reviews/queue").text
    unknown = gina.get("/console/reviews/999999")
    hidden = gina.get(f"/console/reviews/{campaign}")
    assert hidden.status_code == unknown.status_code == 404
    assert f"No review campaign {campaign}" in hidden.text
    assert hidden.text.replace(f"campaign {campaign}", "campaign N") == unknown.text.replace(
        "campaign 999999", "campaign N"
    )
    assert gina.get(f"/console/reviews/{campaign}/close").status_code == 404
    assert gina.post(f"/console/reviews/{campaign}/close").status_code == 404
    assert (
        gina.post(
            f"/console/reviews/items/{ids['Bob editor']}/decision",
            {"decision": "revoke", "comment": "mine now"},
        ).status_code
        == 404
    )
    assert allowed(server, "bob")
    for console in (alice, gina, carol):
        console.close()
