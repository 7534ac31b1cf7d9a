"""Helpers for the console's tests: a browser-like HTTP client (cookies, the CSRF token
from the page) signed in to ``/console``."""

from __future__ import annotations

import html
import re

import httpx

from tests.helpers import LiveServer

_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')
_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(page: str) -> str:
    """The CSRF token a console page carries (its meta tag, or a form's hidden field)."""
    match = _META.search(page) or _FIELD.search(page)
    assert match and match.group(1), page[:500]
    return html.unescape(match.group(1))


class Console:
    """A signed-in console session: ``post`` sends the page's CSRF token as a form field."""

    def __init__(self, client: httpx.Client, token: str) -> None:
        self.client = client
        self.token = token

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        response = self.client.get(path, **kwargs)  # type: ignore[arg-type]
        if response.headers.get("content-type", "").startswith("text/html") and (
            'name="csrf-token"' in response.text
        ):
            self.token = csrf_of(response.text)
        return response

    def post(
        self, path: str, data: dict[str, object] | None = None, htmx: bool = False
    ) -> httpx.Response:
        headers = {"HX-Request": "true"} if htmx else {}
        return self.client.post(
            path, data={"csrf_token": self.token, **(data or {})}, headers=headers
        )

    def close(self) -> None:
        self.client.close()


def sign_in(server: LiveServer, email: str, password: str) -> Console:
    """Sign in through the console's form, as a browser does; the session."""
    client = httpx.Client(base_url=server.url, timeout=30)
    page = client.get("/console/sign-in")
    assert page.status_code == 200, page.text
    response = client.post(
        "/console/sign-in",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
    )
    assert response.status_code == 303, response.text
    landing = client.get(response.headers["Location"])
    assert landing.status_code in (200, 303), landing.text
    if landing.status_code == 303:
        landing = client.get(landing.headers["Location"])
    return Console(client, csrf_of(landing.text))
