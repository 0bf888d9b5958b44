"""Cost-based throttling (leaky bucket) and injected faults."""
import time

import pytest
import requests

from shopify_app.devstore.throttle import Throttle

Q10 = "{ orders(first: 8) { nodes { id } } }"     # 2 + 8 = 10 points


def test_cost_extension_on_every_response(store, admin):
    body = admin(Q10)
    cost = body["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 10
    assert cost["actualQueryCost"] == 2        # no orders returned: connection overhead only
    assert cost["throttleStatus"] == {"maximumAvailable": 2000.0, "currentlyAvailable": 1998, "restoreRate": 100.0}
    body = admin("mutation { tagsAdd(id: \"gid://shopify/Customer/1\", tags: [\"x\"]) { userErrors { message } } }")
    assert body["extensions"]["cost"]["requestedQueryCost"] == 10


def test_throttled_when_bucket_drained_then_restores(store, admin):
    store.throttle.configure(bucket_size=30, restore_rate=20)
    store.generate_orders("demo.myshopify.com", 20, customers=5, products=5)
    ok = [admin(Q10) for _ in range(3)]         # 3 x 10 points (all 8 nodes returned -> actual 10)
    assert all("data" in b for b in ok)
    body = admin(Q10)
    assert body["errors"] == [{"message": "Throttled", "extensions": {
        "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}]
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] < 10
    time.sleep(0.6)                              # 20 points/s * 0.6 s = 12 points back
    assert "data" in admin(Q10)


def test_max_cost_exceeded(admin):
    body = admin("{ orders(first: 250) { nodes { lineItems(first: 10) { nodes { id } } } } }")
    assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"


def test_leaky_bucket_math():
    t = [0.0]
    th = Throttle(bucket_size=100, restore_rate=10, clock=lambda: t[0])
    assert th.try_acquire("k", 80) == (True, 20)
    assert th.try_acquire("k", 30)[0] is False
    t[0] = 1.0
    assert th.try_acquire("k", 30) == (True, 0)
    t[0] = 100.0
    assert th.available("k") == 100


def test_faults_429_500_503_slow(store, admin):
    store.faults.add("http_429", count=2, retry_after=3)
    r = admin.post("{ shop { name } }")
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert admin.post("{ shop { name } }").status_code == 429
    assert admin.post("{ shop { name } }").status_code == 200
    store.faults.add("http_500")
    store.faults.add("http_503")
    assert admin.post("{ shop { name } }").status_code == 500
    assert admin.post("{ shop { name } }").status_code == 503
    store.faults.add("slow", delay=0.3)
    t0 = time.monotonic()
    assert admin.post("{ shop { name } }").status_code == 200
    assert time.monotonic() - t0 >= 0.3


def test_fault_drop_connection(store, admin):
    store.faults.add("drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        admin.post("{ shop { name } }")
    assert admin.post("{ shop { name } }").status_code == 200


def test_faults_over_http_and_revoked_token(server, store, admin):
    requests.post(f"{server}/devstore/faults", json={"kind": "http_503", "count": 1})
    assert admin.post("{ shop { name } }").status_code == 503
    requests.post(f"{server}/devstore/faults", json={"kind": "revoke", "shop": "demo.myshopify.com"})
    r = admin.post("{ shop { name } }")
    assert r.status_code == 401
    assert r.json() == {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
