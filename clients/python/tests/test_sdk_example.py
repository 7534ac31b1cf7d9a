"""The example service (examples/flask_service), authorised by the real gateway: what
the README's three lines give a newcomer."""

from __future__ import annotations

from conftest import JOHN, MARY, Gateway

from examples.flask_service.app import create_app


def test_the_example_service(gateway: Gateway) -> None:
    service = create_app(
        {
            "RINGFENCE_URL": gateway.url,
            "RINGFENCE_CLIENT_ID": gateway.client_id,
            "RINGFENCE_CLIENT_SECRET": gateway.client_secret,
        }
    ).test_client()
    john, mary = {"X-User": JOHN}, {"X-User": MARY}
    doc = "/w/acme/documents/1"
    assert service.put(doc, data="hello", headers=john).json == {"doc": 1, "written": True}
    assert service.get(doc, headers=mary).json == {"doc": 1, "text": "hello"}
    assert service.put(doc, data="mine now", headers=mary).status_code == 403
    assert service.delete(doc, headers=john).status_code == 403  # editors do not delete
    assert service.get("/w/globex/documents/1", headers=john).status_code == 403
    assert service.get(doc).status_code == 403  # nobody signed in
