"""AdminClient against the real devstore stand-in over HTTP (no faked server): throttling, retries, auth errors,
user errors, pagination and bulk operations. Sleeps are recorded (and only really taken where the server's
leaky bucket must actually refill) so the suite stays fast."""
from __future__ import annotations

import random
import time

import pytest
import requests

from shopify_app.devstore import App, DevStore
from shopify_app.devstore.webhooks import DeliveryMode
from shopify_app.shopify.graphql import (AdminClient, ShopifyAuthError, ShopifyGraphQLError, ShopifyTransientError,
                                         ShopifyUserError, bulk_orders_query, load_document, raise_for_user_errors,
                                         resolve_document)

API_KEY = "platform-test-key"
API_SECRET = "platform-test-secret-0123456789abcdef"
SHOP = "client.myshopify.com"
VERSION = "2026-10"


class Sleeps:
    """Injected sleep: records every wait; really sleeps only when `real` (throttle tests need the bucket to refill)."""

    def __init__(self, real: bool = False):
        self.real = real
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)


@pytest.fixture
def store():
    s = DevStore(apps=[App(API_KEY, API_SECRET, "http://app.test")], webhook_mode=DeliveryMode(sync=True))
    s.create_shop(SHOP, currency="GBP", iana_timezone="Europe/London")
    return s


@pytest.fixture
def token(store):
    return store.install_app(SHOP, API_KEY)


@pytest.fixture
def make_client(server, token):
    def make(**kw):
        kw.setdefault("sleep", Sleeps())
        kw.setdefault("rng", random.Random(7))
        return AdminClient(SHOP, kw.pop("token", token), VERSION, admin_base=server + "/shops/{shop}", **kw)
    return make


def test_endpoint_from_admin_base_and_default():
    c = AdminClient("x.myshopify.com", "tok", VERSION, admin_base="http://127.0.0.1:9000/shops/{shop}")
    assert c.endpoint == "http://127.0.0.1:9000/shops/x.myshopify.com/admin/api/2026-10/graphql.json"
    assert AdminClient("x.myshopify.com", "tok", VERSION).endpoint == \
        "https://x.myshopify.com/admin/api/2026-10/graphql.json"
    assert "tok" not in repr(c)


def test_named_documents_are_loaded_and_cached():
    assert resolve_document("shop_info") is load_document("shop_info")
    assert "query ShopInfo" in load_document("shop_info")
    assert resolve_document("{ shop { name } }") == "{ shop { name } }"
    with pytest.raises(FileNotFoundError):
        load_document("no_such_document")
    assert "query: \"updated_at:>='2026-01-01'\"" in bulk_orders_query("updated_at:>='2026-01-01'")


def test_query_returns_shop_data_and_tracks_cost(make_client, store):
    client = make_client()
    shop = client.execute("shop_info")["shop"]
    assert shop["myshopifyDomain"] == SHOP and shop["currencyCode"] == "GBP"
    assert client.last_cost["throttleStatus"]["maximumAvailable"] == 2000.0
    assert client.estimated_available() is not None
    assert client.attempts == 1 and client.sleep.waits == []
    assert store.deprecation_log == []


def test_throttled_is_waited_out_and_succeeds(make_client, store, server, token):
    store.throttle.configure(bucket_size=60, restore_rate=50)
    store.generate_orders(SHOP, 120, customers=10, products=5)
    query = "query($n: Int!) { orders(first: $n) { nodes { id name } } }"      # 2 + n points
    # Another process drains the bucket; this client knows nothing about it yet -> THROTTLED, then waits.
    raw = requests.post(server + f"/shops/{SHOP}/admin/api/{VERSION}/graphql.json",
                        json={"query": query, "variables": {"n": 50}},
                        headers={"X-Shopify-Access-Token": token}, timeout=10).json()
    assert raw["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] < 52
    client = make_client(sleep=Sleeps(real=True))
    data = client.execute(query, {"n": 50})
    assert len(data["orders"]["nodes"]) == 50
    assert client.attempts >= 2 and client.sleep.waits
    assert 0 < client.sleep.waits[0] <= 52 / 50 + 0.2       # (requested - available) / restoreRate, jittered

    # With a known cost the client now waits *before* sending instead of being throttled.
    fired_before = len(client.sleep.waits)
    for _ in range(3):
        assert len(client.execute(query, {"n": 50})["orders"]["nodes"]) == 50
        assert client.attempts == 1                          # never THROTTLED: the pre-send wait sufficed
    assert len(client.sleep.waits) > fired_before


def test_429_honours_retry_after(make_client, store):
    store.faults.add("http_429", count=2, retry_after=3)
    client = make_client()
    assert client.execute("shop_info")["shop"]["name"]
    assert client.attempts == 3
    assert len(client.sleep.waits) == 2 and all(3.0 <= w <= 3.1 for w in client.sleep.waits)


@pytest.mark.parametrize("kind", ["http_503", "http_500", "drop"])
def test_5xx_and_dropped_connection_are_retried_with_backoff(make_client, store, kind):
    store.faults.add(kind, count=3)
    client = make_client()
    assert client.execute("shop_info")["shop"]["myshopifyDomain"] == SHOP
    assert client.attempts == 4
    assert [k for k, _ in store.faults.fired] == [kind] * 3
    w = client.sleep.waits
    assert len(w) == 3
    # jittered exponential: attempt n waits in [0.5, 1] x 0.5 * 2^n
    for n, wait in enumerate(w):
        assert 0.25 * 2 ** n <= wait <= 0.5 * 2 ** n


def test_retries_are_bounded(make_client, store):
    store.faults.add("http_503", count=10)
    client = make_client(max_retries=2)
    with pytest.raises(ShopifyTransientError) as ei:
        client.execute("shop_info")
    assert ei.value.attempts == 3 and ei.value.status == 503
    assert len(store.faults.fired) == 3 and len(client.sleep.waits) == 2


def test_revoked_token_raises_auth_error_without_retry(make_client, store):
    client = make_client()
    client.execute("shop_info")
    store.revoke_shop_tokens(SHOP)
    with pytest.raises(ShopifyAuthError) as ei:
        client.execute("shop_info")
    assert ei.value.status == 401
    assert client.attempts == 1 and client.sleep.waits == []
    with pytest.raises(ShopifyAuthError):
        make_client(token="shpat_not_a_real_token").execute("shop_info")


def test_graphql_errors_carry_messages_and_codes(make_client):
    client = make_client()
    with pytest.raises(ShopifyGraphQLError) as ei:
        client.execute("{ shop { noSuchField } }")
    assert ei.value.messages and "noSuchField" in ei.value.messages[0]
    assert ei.value.codes[0]
    with pytest.raises(ShopifyGraphQLError) as ei:
        client.execute("{ orders(first: 250) { nodes { lineItems(first: 10) { nodes { id } } } } }")
    assert ei.value.codes == ["MAX_COST_EXCEEDED"]
    assert client.attempts == 1


def test_user_errors_surface_with_field_path(make_client, store):
    client = make_client()
    cust = store.create_customer(SHOP, email="a@example.com")
    ok = client.mutate("tags_add", {"id": f"gid://shopify/Customer/{cust.id}", "tags": ["vip"]}, "tagsAdd")
    assert ok["node"]["id"] == f"gid://shopify/Customer/{cust.id}"
    assert store.shop(SHOP).customers[cust.id].tags == ["vip"]
    client.mutate("tags_remove", {"id": f"gid://shopify/Customer/{cust.id}", "tags": ["vip"]}, "tagsRemove")
    assert store.shop(SHOP).customers[cust.id].tags == []

    data = client.execute("tags_add", {"id": "gid://shopify/Customer/999999", "tags": ["vip"]})
    with pytest.raises(ShopifyUserError) as ei:
        raise_for_user_errors(data, "tagsAdd")
    assert ei.value.path == "tagsAdd" and ei.value.fields == ["id"]
    assert str(ei.value) == "tagsAdd: id: Customer does not exist"


def test_raise_for_user_errors_unit():
    payload = {"webhookSubscriptionCreate": {"webhookSubscription": None, "userErrors": [
        {"field": ["webhookSubscription", "callbackUrl"], "message": "Address for this topic has already been taken"}]}}
    with pytest.raises(ShopifyUserError) as ei:
        raise_for_user_errors(payload, "webhookSubscriptionCreate")
    assert ei.value.fields == ["webhookSubscription.callbackUrl"]
    assert "webhookSubscription.callbackUrl: Address for this topic" in str(ei.value)
    ok = {"a": {"b": {"x": 1, "userErrors": []}}}
    assert raise_for_user_errors(ok, "a.b") == {"x": 1, "userErrors": []}


def test_webhook_subscription_create(make_client, store):
    client = make_client()
    topic_vars = {"topic": "ORDERS_CREATE", "webhookSubscription": {"uri": "https://app.test/webhooks/orders",
                                                                    "format": "JSON"}}
    sub = client.mutate("webhook_subscription_create", topic_vars, "webhookSubscriptionCreate")
    assert sub["webhookSubscription"]["topic"] == "ORDERS_CREATE"
    with pytest.raises(ShopifyUserError):
        client.mutate("webhook_subscription_create", topic_vars, "webhookSubscriptionCreate")
    assert store.deprecation_log == []


def test_paginate_returns_all_orders(make_client, store):
    store.generate_orders(SHOP, 600, customers=50, products=20)
    store.throttle.configure(bucket_size=20000, restore_rate=5000)   # pagination, not throttling, under test
    client = make_client(sleep=Sleeps(real=True))
    seen = list(client.paginate("orders_page", "orders", {"first": 10, "lineItemsFirst": 10}))
    assert len(seen) == 600 == len({o["id"] for o in seen})
    assert all(o["lineItems"]["nodes"] for o in seen)
    assert seen[0]["subtotalPriceSet"]["shopMoney"]["currencyCode"] == "GBP"
    updated = [o["updatedAt"] for o in seen]
    assert updated == sorted(updated)
    assert store.deprecation_log == []
    # The default 100 line items per order only fits one order per page under the 1000-point query limit.
    with pytest.raises(ShopifyGraphQLError) as ei:
        client.execute("orders_page", {"first": 10})
    assert ei.value.codes == ["MAX_COST_EXCEEDED"]


def test_bulk_query_completes_and_downloads_jsonl(make_client, store):
    n = 300
    store.generate_orders(SHOP, n, customers=40, products=10, lines_per_order=2)
    client = make_client()
    op_id = client.run_bulk_query(bulk_orders_query(), group_objects=True)
    op = client.wait_for_bulk_operation(op_id, poll_interval=0.05, sleep=time.sleep)
    assert op["status"] == "COMPLETED" and int(op["rootObjectCount"]) == n
    lines = list(client.download_jsonl(op["url"]))
    assert len(lines) == int(op["objectCount"]) == n * 3
    orders = [x for x in lines if "__parentId" not in x]
    assert len(orders) == n and all(x["id"].startswith("gid://shopify/Order/") for x in orders)
    items = [x for x in lines if "__parentId" in x]
    assert len(items) == 2 * n and all(x["__parentId"].startswith("gid://shopify/Order/") for x in items)

    # A filtered bulk query (incremental backfill): only orders created after the cut-off.
    cutoff = sorted(o["createdAt"] for o in orders)[n // 2]
    filtered = client.run_bulk_query(bulk_orders_query(f"created_at:>='{cutoff}'"), group_objects=True)
    op = client.wait_for_bulk_operation(filtered, poll_interval=0.05, sleep=time.sleep)
    expected = sum(1 for o in orders if o["createdAt"] >= cutoff)
    assert int(op["rootObjectCount"]) == expected and 0 < expected < n
    assert sum(1 for x in client.download_jsonl(op["url"]) if "__parentId" not in x) == expected
    assert store.deprecation_log == []


def test_bulk_tags_add_mutation_via_staged_upload(make_client, store):
    customers = [store.create_customer(SHOP, email=f"c{i}@example.com") for i in range(5)]
    client = make_client()
    lines = [{"id": f"gid://shopify/Customer/{c.id}", "tags": ["rfm:champions"]} for c in customers]
    op_id = client.run_bulk_mutation("tags_add", lines)
    op = client.wait_for_bulk_operation(op_id, poll_interval=0.05, sleep=time.sleep)
    results = list(client.download_jsonl(op["url"]))
    assert len(results) == 5
    assert all(r["data"]["tagsAdd"]["userErrors"] == [] for r in results)
    assert all(store.shop(SHOP).customers[c.id].tags == ["rfm:champions"] for c in customers)


# ------------------------------------------------------------------ token exchange (shopify_app/shopify/oauth.py)

def test_token_exchange_offline_token_works_with_the_client(server, store):
    from shopify_app.shopify.oauth import exchange_session_token
    jwt_ = store.mint_session_token(SHOP, API_KEY, sub="42")
    store.faults.add("http_503")                       # retried
    sleeps = Sleeps()
    tok = exchange_session_token(SHOP, jwt_, API_KEY, API_SECRET, admin_base=server + "/shops/{shop}",
                                 sleep=sleeps, rng=random.Random(1))
    assert len(sleeps.waits) == 1 and tok.expires_at is None and not tok.online
    assert tok.scopes and tok.access_token not in repr(tok)
    client = AdminClient(SHOP, tok.access_token, VERSION, admin_base=server + "/shops/{shop}")
    assert client.execute("shop_info")["shop"]["myshopifyDomain"] == SHOP


def test_token_exchange_online_expiring_refresh_and_bad_token(server, store):
    from shopify_app.shopify.oauth import (InvalidSubjectToken, TokenExchangeError, exchange_session_token,
                                           refresh_access_token)
    base = server + "/shops/{shop}"
    online = exchange_session_token(SHOP, store.mint_session_token(SHOP, API_KEY, sub="7"), API_KEY, API_SECRET,
                                    online=True, admin_base=base)
    assert online.online and online.associated_user["id"] == 7 and online.expires_at is not None
    exp = exchange_session_token(SHOP, store.mint_session_token(SHOP, API_KEY), API_KEY, API_SECRET,
                                 expiring=True, admin_base=base)
    assert exp.refresh_token and not exp.expired()
    new = refresh_access_token(SHOP, exp.refresh_token, API_KEY, API_SECRET, admin_base=base)
    assert new.access_token != exp.access_token
    with pytest.raises(ShopifyAuthError):                # rotated: the old token is revoked
        AdminClient(SHOP, exp.access_token, VERSION, admin_base=base).execute("shop_info")
    assert AdminClient(SHOP, new.access_token, VERSION, admin_base=base).execute("shop_info")["shop"]
    expired = store.mint_session_token(SHOP, API_KEY, now=time.time() - 3600)
    with pytest.raises(InvalidSubjectToken) as ei:
        exchange_session_token(SHOP, expired, API_KEY, API_SECRET, admin_base=base)
    assert ei.value.status == 400 and ei.value.error == "invalid_subject_token"
    with pytest.raises(TokenExchangeError) as ei:
        exchange_session_token(SHOP, store.mint_session_token(SHOP, API_KEY), API_KEY, "wrong-secret",
                               admin_base=base)
    assert ei.value.error == "invalid_client" and not isinstance(ei.value, InvalidSubjectToken)


def test_read_timeout_is_retried(make_client, store):
    store.faults.add("slow", delay=0.6)
    client = make_client(timeout=(2.0, 0.2))
    assert client.execute("shop_info")["shop"]["myshopifyDomain"] == SHOP
    assert client.attempts == 2 and len(client.sleep.waits) == 1


def test_failed_bulk_operation_raises_with_partial_data(make_client, store):
    from shopify_app.shopify.graphql import ShopifyBulkOperationError
    store.generate_orders(SHOP, 40, customers=5, products=5)
    store.bulk_fail_next = "INTERNAL_SERVER_ERROR"
    client = make_client()
    op_id = client.run_bulk_query("{ orders { edges { node { id } } } }")
    with pytest.raises(ShopifyBulkOperationError) as ei:
        client.wait_for_bulk_operation(op_id, poll_interval=0.05, sleep=time.sleep)
    assert ei.value.error_code == "INTERNAL_SERVER_ERROR" and ei.value.partial_data_url
    assert 0 < len(list(client.download_jsonl(ei.value.partial_data_url))) < 40
