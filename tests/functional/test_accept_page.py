"""The page behind the emailed accept link, driven as a browser would: GET the link,
POST the form."""

from __future__ import annotations

from urllib.parse import unquote

from tests.helpers import LiveServer, accept_token, outbox_messages


def invite(server: LiveServer) -> str:
    admin = server.admin()
    assert admin.post("/workspaces", json={"slug": "acme", "name": "Acme"}).status_code == 201
    response = admin.post(
        "/invitations",
        json={
            "email": "ann@example.com",
            "name": "Ann",
            "roles": [{"workspace": "acme", "role": "viewer"}],
        },
    )
    assert response.status_code == 201, response.text
    return unquote(accept_token(outbox_messages(server.settings)[-1]))


def test_accept_link_shows_a_form_and_activates_the_account(server: LiveServer) -> None:
    token = invite(server)
    with server.client() as browser:
        page = browser.get("/accept", params={"token": token})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert 'name="password"' in page.text and token in page.text

        too_short = browser.post("/accept", data={"token": token, "password": "short"})
        assert too_short.status_code == 422
        assert "at least 12 characters" in too_short.text

        done = browser.post(
            "/accept",
            data={"token": token, "password": "a long enough password", "name": "Ann Lee"},
        )
        assert done.status_code == 200, done.text
        assert "ann@example.com is active" in done.text

        reused = browser.post(
            "/accept", data={"token": token, "password": "a long enough password"}
        )
        assert reused.status_code == 410
        assert "not valid" in reused.text  # the token was consumed
    assert server.login("ann@example.com", "a long enough password")


def test_accept_page_escapes_and_rejects_unknown_tokens(server: LiveServer) -> None:
    with server.client() as browser:
        page = browser.get("/accept", params={"token": '"><script>alert(1)</script>'})
        assert "<script>alert(1)" not in page.text
        unknown = browser.post(
            "/accept", data={"token": "nope", "password": "a long enough password"}
        )
        assert unknown.status_code == 410
        assert "not valid" in unknown.text
        assert browser.get("/accept").status_code == 400
