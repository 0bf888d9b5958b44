"""The WSGI fast path in front of Flask for webhook POSTs (web/intake_wsgi.py): what it answers, what it leaves to
Flask, and that it is what answers in the app as built."""
from __future__ import annotations

from shopify_app.web.intake_wsgi import WebhookEndpoint
from tests import helpers

SHOP = "fast-store.myshopify.com"


def test_webhook_posts_are_answered_by_the_fast_path_with_security_headers(app, client, db_url):
    assert isinstance(app.wsgi_app, WebhookEndpoint)
    helpers.add_shop(db_url, SHOP)
    resp = helpers.post_webhook(client, "orders/create", helpers.sample("orders/create", SHOP), shop=SHOP)
    assert resp.status_code == 200 and resp.get_json()["status"] == "pending_analytics"
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"].startswith("frame-ancestors https://admin.shopify.com")
    assert "Set-Cookie" not in resp.headers
    forged = helpers.post_webhook(client, "orders/create", b"{}", shop=SHOP, secret="not-the-secret")
    assert forged.status_code == 401 and forged.get_json() == {"status": "unauthorized"}
    bad = helpers.post_webhook(client, "orders/create", b"{}", shop=SHOP, drop=("X-Shopify-Topic",))
    assert bad.status_code == 400 and bad.get_json()["errors"] == ["missing header X-Shopify-Topic"]


def test_other_requests_still_go_to_flask(client):
    assert client.get("/webhooks/orders").status_code == 405
    assert client.post("/webhooks/nope", data=b"{}").status_code == 404
    assert client.post("/webhooks/orders/", data=b"{}").status_code == 404       # not one of the URIs


def test_an_unexpected_error_is_a_500_for_shopify_to_retry(app, db_url, monkeypatch):
    from shopify_app.web import intake_wsgi

    def boom(*_args):
        raise RuntimeError("disk full")

    helpers.add_shop(db_url, SHOP)
    endpoint = app.wsgi_app
    monkeypatch.setattr(endpoint, "handle", boom)
    app.testing = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    calls = []
    monkeypatch.setattr(intake_wsgi.log, "exception", lambda *a, **k: calls.append(a))
    resp = helpers.post_webhook(app.test_client(), "orders/create", helpers.sample("orders/create", SHOP), shop=SHOP)
    assert resp.status_code == 500 and resp.get_json() == {"status": "error"}
    assert calls
