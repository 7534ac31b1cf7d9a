"""The framework guards, each in a real app of its framework calling the real gateway
(through :class:`Flaky`, which can play an outage): an allow runs the view, a deny is a
403, a gateway that cannot answer a 503 with Retry-After (fail closed), and the opt-in
cache answers recent allows, and only those, during an outage.

No ``from __future__ import annotations``: FastAPI reads the views' annotations (a local
dependency among them) at run time."""

import warnings
from typing import Annotated, Any

import django
import pytest
from conftest import JOHN, MARY, Flaky, Gateway, closed_port
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client as DjangoClient
from django.urls import path
from fastapi import Depends, FastAPI, Header
from flask import Flask, g, request
from ringfence_client import AsyncRingfenceClient, Decision, RingfenceClient
from ringfence_client.django import ringfence_required
from ringfence_client.fastapi import FastAPIRingfence
from ringfence_client.flask import FlaskRingfence

with warnings.catch_warnings():
    # Starlette's test client would rather run on its own fork of httpx; this one works.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

DOC = "/w/{}/documents/7"


def test_flask_extension_and_decorator(gateway: Gateway, flaky: tuple[Flaky, str]) -> None:
    front, url = flaky
    app = Flask("service")
    app.config["RINGFENCE_OUTAGE_ALLOW_SECONDS"] = 60
    client = RingfenceClient(
        url, client_id=gateway.client_id, client_secret=gateway.client_secret, backoff=0.001
    )
    ringfence = FlaskRingfence(app, client=client, subject=lambda: request.headers.get("X-User"))

    @app.get("/w/<workspace>/documents/<int:doc>")
    @ringfence.require("documents", "write")
    def write(workspace: str, doc: int) -> Any:
        decision = g.ringfence_decision
        return {"doc": doc, "revision": decision.revision if decision else None}

    # The same service configured from app.config alone, without the outage cache.
    plain = Flask("plain")
    plain.config.update(
        RINGFENCE_URL=url,
        RINGFENCE_CLIENT_ID=gateway.client_id,
        RINGFENCE_CLIENT_SECRET=gateway.client_secret,
    )
    plain_guard = FlaskRingfence(plain, subject=lambda: request.headers.get("X-User"))
    plain.add_url_rule(
        "/w/<workspace>/documents/<int:doc>",
        view_func=plain_guard.require("documents", "write")(lambda workspace, doc: "written"),
    )

    service, other = app.test_client(), plain.test_client()
    allowed = service.get(DOC.format("acme"), headers={"X-User": JOHN})
    assert allowed.status_code == 200 and allowed.json["revision"] > 0
    assert other.get(DOC.format("acme"), headers={"X-User": JOHN}).status_code == 200
    for who, workspace in ((MARY, "acme"), (JOHN, "globex"), (None, "acme")):
        headers = {"X-User": who} if who else {}
        assert service.get(DOC.format(workspace), headers=headers).status_code == 403

    front.down = True  # every decision request: 503, on every retry
    assert service.get(DOC.format("acme"), headers={"X-User": JOHN}).status_code == 200
    for who, workspace in ((MARY, "acme"), (JOHN, "globex")):
        refused = service.get(DOC.format(workspace), headers={"X-User": who})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    closed = other.get(DOC.format("acme"), headers={"X-User": JOHN})
    assert closed.status_code == 503


def test_fastapi_dependency(gateway: Gateway, flaky: tuple[Flaky, str]) -> None:
    front, url = flaky

    def current_user(x_user: Annotated[str | None, Header()] = None) -> str | None:
        return x_user

    client = AsyncRingfenceClient(
        url, client_id=gateway.client_id, client_secret=gateway.client_secret, backoff=0.001
    )
    ringfence = FastAPIRingfence(client, subject=current_user, outage_allow_seconds=60)
    strict = FastAPIRingfence(client, subject=current_user)
    app = FastAPI()
    writing = Depends(ringfence.require("documents", "write"))

    @app.get("/w/{workspace}/documents/{doc}")
    async def write(
        workspace: str, doc: int, decision: Annotated[Decision | None, writing]
    ) -> dict[str, Any]:
        return {"doc": doc, "revision": decision.revision if decision else None}

    @app.get(
        "/strict/{space}/documents",
        dependencies=[
            Depends(strict.require("documents", "read", workspace=lambda r: r.path_params["space"]))
        ],
    )
    async def read(space: str) -> str:
        return space

    with TestClient(app) as service:
        allowed = service.get(DOC.format("acme"), headers={"X-User": JOHN})
        assert allowed.status_code == 200 and allowed.json()["revision"] > 0
        assert service.get("/strict/acme/documents", headers={"X-User": MARY}).status_code == 200
        for who, workspace in ((MARY, "acme"), (JOHN, "globex"), (None, "acme")):
            headers = {"X-User": who} if who else {}
            denied = service.get(DOC.format(workspace), headers=headers)
            assert denied.status_code == 403 and denied.json()["detail"].startswith("Not allowed")

        front.down = True
        cached = service.get(DOC.format("acme"), headers={"X-User": JOHN})
        assert cached.status_code == 200 and cached.json()["revision"] is None
        refused = service.get(DOC.format("acme"), headers={"X-User": MARY})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert service.get("/strict/acme/documents", headers={"X-User": MARY}).status_code == 503


# -- Django: a real project's settings, URLs and middleware in this process -------------


@ringfence_required("documents", "write")
def django_write(request: HttpRequest, workspace: str) -> HttpResponse:
    decision = request.ringfence_decision  # None: answered from the outage cache
    return JsonResponse({"revision": decision.revision if decision else None})


def django_read(request: HttpRequest, workspace: str) -> HttpResponse:
    verdict = request.ringfence.require(workspace, "documents", "read")
    return HttpResponse(verdict.detail)


urlpatterns = [
    path("w/<str:workspace>/documents/7", django_write),
    path("r/<str:workspace>/documents", django_read),
]


class HeaderUser:
    """The test project's authentication: the user named by ``X-User``."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        email = request.headers.get("X-User")
        request.user = type(  # type: ignore[attr-defined]
            "User", (), {"is_authenticated": bool(email), "email": email}
        )()
        return self.get_response(request)  # type: ignore[no-any-return]


@pytest.fixture
def django_project() -> None:
    if not django_settings.configured:
        django_settings.configure(
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["testserver"],
            MIDDLEWARE=[f"{__name__}.HeaderUser", "ringfence_client.django.RingfenceMiddleware"],
            INSTALLED_APPS=[],
            SECRET_KEY="test",
        )
        django.setup()


def test_django_decorator_and_middleware(
    gateway: Gateway, flaky: tuple[Flaky, str], django_project: None
) -> None:
    front, url = flaky
    django_settings.RINGFENCE = {
        "URL": url,
        "CLIENT_ID": gateway.client_id,
        "CLIENT_SECRET": gateway.client_secret,
        "OUTAGE_ALLOW_SECONDS": 60,
    }
    service = DjangoClient()
    allowed = service.get(DOC.format("acme"), headers={"X-User": JOHN})
    assert allowed.status_code == 200 and allowed.json()["revision"] > 0
    assert service.get("/r/acme/documents", headers={"X-User": MARY}).status_code == 200
    for who, workspace in ((MARY, "acme"), (JOHN, "globex"), (None, "acme")):
        headers = {"X-User": who} if who else {}
        assert service.get(DOC.format(workspace), headers=headers).status_code == 403
    assert service.get("/r/globex/documents", headers={"X-User": JOHN}).status_code == 403

    front.down = True
    assert service.get(DOC.format("acme"), headers={"X-User": JOHN}).status_code == 200
    refused = service.get("/r/globex/documents", headers={"X-User": MARY})
    assert refused.status_code == 503 and refused["Retry-After"] == "5"

    # A gateway that cannot be reached at all: fail closed, with the status configured.
    django_settings.RINGFENCE = {
        "URL": f"http://127.0.0.1:{closed_port()}",
        "CLIENT_ID": gateway.client_id,
        "CLIENT_SECRET": gateway.client_secret,
        "UNAVAILABLE_STATUS": 502,
    }
    assert service.get(DOC.format("acme"), headers={"X-User": JOHN}).status_code == 502
