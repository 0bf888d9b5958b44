"""Webhook deliveries: headers, HMAC, payload shapes, duplicates, out-of-order, retries."""
import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from devstore_testlib import API_KEY, API_SECRET, SHOP

from shopify_app.devstore.webhooks import sample


class Receiver:
    """A real HTTP endpoint that records what it gets and answers with scripted status codes."""

    def __init__(self):
        self.received = []
        self.statuses = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                rec.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                code = rec.statuses.pop(0) if rec.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_port}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _valid(headers, body):
    digest = base64.b64encode(hmac.new(API_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(digest, headers["x-shopify-hmac-sha256"])


def test_order_webhooks_headers_hmac_and_shape(store, receiver):
    store.subscribe_webhook(SHOP, "orders/create", receiver.url + "/webhooks/orders", name="orders-create")
    store.subscribe_webhook(SHOP, "ORDERS_CANCELLED", receiver.url + "/webhooks/orders")
    store.subscribe_webhook(SHOP, "refunds/create", receiver.url + "/webhooks/refunds")
    p = store.create_product(SHOP, title="Mug", price="9.50", unit_cost="4.00", product_type="Kitchen")
    c = store.create_customer(SHOP, first_name="Ada", email="ada@example.com")
    o = store.create_order(SHOP, customer_id=c.id, lines=[{"variant_id": p.variants[0].id, "quantity": 2},
                                                         {"title": "POSTAGE", "price": "5.00", "quantity": 1}],
                           discount_code={"code": "TEN", "amount": "2.00"})
    guest = store.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}], test=True)
    store.refund_order(SHOP, o.id, [(o.line_items[0].id, 1)])
    store.cancel_order(SHOP, guest.id)
    topics = [h["x-shopify-topic"] for _, h, _ in receiver.received]
    assert topics == ["orders/create", "orders/create", "refunds/create", "orders/cancelled"]
    for path, h, body in receiver.received:
        assert _valid(h, body)
        assert h["x-shopify-shop-domain"] == SHOP and h["x-shopify-api-version"] == "2026-10"
        assert h["x-shopify-webhook-id"] and h["x-shopify-event-id"] and h["x-shopify-triggered-at"]
    assert receiver.received[0][1]["x-shopify-name"] == "orders-create"
    assert "x-shopify-name" not in receiver.received[2][1]
    created = json.loads(receiver.received[0][2])
    assert set(created) == set(sample("orders__create"))            # same keys as Shopify's sample
    assert set(created["line_items"][0]) == set(sample("orders__create")["line_items"][0])
    assert created["admin_graphql_api_id"] == f"gid://shopify/Order/{o.id}"
    assert created["currency"] == "GBP" and created["customer"]["id"] == c.id
    assert created["total_line_items_price"] == "24.00" and created["total_discounts"] == "2.00"
    assert created["total_price"] == "22.00" and created["total_price_set"]["shop_money"]["amount"] == "22.00"
    assert created["line_items"][1]["product_id"] is None and created["line_items"][1]["variant_id"] is None
    assert created["discount_codes"][0]["code"] == "TEN"
    guest_payload = json.loads(receiver.received[1][2])
    assert guest_payload["customer"] is None and guest_payload["test"] is True
    refund = json.loads(receiver.received[2][2])
    assert refund["order_id"] == o.id and refund["refund_line_items"][0]["quantity"] == 1
    cancelled = json.loads(receiver.received[3][2])
    assert cancelled["cancelled_at"] and cancelled["current_total_price"] == "0.00"


def test_relative_uri_uses_app_url_and_compliance_topics(store):
    sent = []
    store.webhooks.configure(transport=lambda url, headers, body, timeout: sent.append((url, headers, body)) or 200)
    for t in ("customers/data_request", "customers/redact", "shop/redact", "app/uninstalled"):
        store.subscribe_webhook(SHOP, t, "/webhooks/compliance")
    c = store.create_customer(SHOP, email="x@example.com")
    store.create_order(SHOP, customer_id=c.id, lines=[{"title": "Thing", "price": "1.00"}])
    store.trigger_compliance(SHOP, "customers/data_request", customer_id=c.id)
    store.trigger_compliance(SHOP, "customers/redact", customer_id=c.id)
    store.trigger_compliance(SHOP, "shop/redact")
    store.uninstall_app(SHOP, API_KEY)
    assert [u for u, _, _ in sent] == ["http://app.test/webhooks/compliance"] * 4
    req = json.loads(sent[0][2])
    assert req["shop_domain"] == SHOP and req["customer"]["id"] == c.id and len(req["orders_requested"]) == 1
    assert set(json.loads(sent[2][2])) == {"shop_id", "shop_domain"}
    assert json.loads(sent[3][2])["myshopify_domain"] == SHOP


def test_retries_on_non_2xx_then_success(store, receiver):
    store.subscribe_webhook(SHOP, "customers/update", receiver.url + "/wh")
    receiver.statuses = [500, 503, 200]
    c = store.create_customer(SHOP, email="r@example.com", emit=False)
    store.add_customer_tags(SHOP, c.id, ["vip"])
    attempts = store.webhooks.attempts
    assert [a.status for a in attempts] == [500, 503, 200]
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert len({a.webhook_id for a in attempts}) == 1     # a retry is the same delivery
    assert json.loads(receiver.received[-1][2])["id"] == c.id


def test_gives_up_after_schedule(store):
    store.webhooks.configure(retry_schedule=(0, 0), transport=lambda *a: 500)
    store.subscribe_webhook(SHOP, "orders/create", "http://unused/wh")
    store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}])
    assert [a.attempt for a in store.webhooks.attempts] == [1, 2, 3]


def test_duplicates_and_out_of_order(store):
    sent = []
    store.webhooks.configure(duplicate_probability=0.5, shuffle=True, seed=7,
                             transport=lambda url, h, body, t: sent.append((h, json.loads(body))) or 200)
    store.subscribe_webhook(SHOP, "orders/create", "http://app.test/wh")
    orders = [store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}]) for _ in range(30)]
    assert sent == []                      # sync + shuffle: buffered until flush()
    store.webhooks.flush()
    ids = [b["id"] for _, b in sent]
    assert set(ids) == {o.id for o in orders}
    assert len(ids) > 30                   # some delivered twice ...
    dup = [h for h, b in sent if ids.count(b["id"]) > 1]
    by_order = {}
    for h, b in sent:
        by_order.setdefault(b["id"], set()).add(h["X-Shopify-Webhook-Id"])
    assert all(len(v) == 1 for v in by_order.values())   # ... with the same Webhook-Id (dedupe key)
    assert dup
    assert ids != sorted(ids)              # ... and out of order


def test_background_delivery_thread(store, receiver):
    store.webhooks.configure(sync=False, retry_schedule=(0.05,))
    store.subscribe_webhook(SHOP, "orders/create", receiver.url + "/wh")
    receiver.statuses = [500]
    store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}])
    assert store.webhooks.wait_idle(5)
    assert [a.status for a in store.webhooks.attempts] == [500, 200]
    store.webhooks.stop()


def test_webhook_subscription_via_graphql(store, admin, receiver):
    body = admin('''mutation($t: WebhookSubscriptionTopic!, $s: WebhookSubscriptionInput!) {
      webhookSubscriptionCreate(topic: $t, webhookSubscription: $s) {
        webhookSubscription { id topic uri } userErrors { field message } } }''',
                 {"t": "ORDERS_CREATE", "s": {"uri": receiver.url + "/wh", "format": "JSON"}})
    sub = body["data"]["webhookSubscriptionCreate"]["webhookSubscription"]
    assert sub["topic"] == "ORDERS_CREATE"
    listed = admin("{ webhookSubscriptions(first: 10) { nodes { id topic uri } } }")
    assert listed["data"]["webhookSubscriptions"]["nodes"] == [sub]
    store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}])
    assert receiver.received and receiver.received[0][1]["x-shopify-topic"] == "orders/create"


def test_bulk_operations_finish_webhook(store, admin):
    import time
    sent = []
    store.webhooks.configure(transport=lambda url, h, body, t: sent.append((h, json.loads(body))) or 200)
    store.subscribe_webhook(SHOP, "BULK_OPERATIONS_FINISH", "/webhooks/bulk")
    store.generate_orders(SHOP, 10, customers=2, products=2)
    op = admin('mutation { bulkOperationRunQuery(query: "{ orders { edges { node { id } } } }", groupObjects: false) '
               '{ bulkOperation { id } userErrors { message } } }')["data"]["bulkOperationRunQuery"]["bulkOperation"]
    end = time.time() + 10
    while not sent and time.time() < end:
        time.sleep(0.02)
    h, body = sent[0]
    assert h["X-Shopify-Topic"] == "bulk_operations/finish"
    assert body["admin_graphql_api_id"] == op["id"] and body["status"] == "completed" and body["type"] == "query"


def test_subscriptions_from_app_toml_include_fields_and_deletes(store):
    from pathlib import Path
    sent = []
    store.webhooks.configure(transport=lambda url, h, body, t: sent.append((url, h, json.loads(body))) or 200)
    subs = store.subscribe_from_app_toml(SHOP, Path(__file__).parent / "data" / "shopify.app.toml")
    assert len(subs) == 13
    c = store.create_customer(SHOP, email="t@example.com")
    store.add_customer_tags(SHOP, c.id, ["a", "b"])
    url, h, body = sent[-1]
    assert url == "http://app.test/webhooks/customers" and h["X-Shopify-Topic"] == "customers/update"
    assert body == {"id": c.id, "admin_graphql_api_id": f"gid://shopify/Customer/{c.id}", "tags": "a, b",
                    "updated_at": body["updated_at"]}
    o = store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}])
    assert [x[1]["X-Shopify-Topic"] for x in sent[-2:]] == ["orders/create", "orders/paid"]
    assert sent[-1][1]["X-Shopify-Name"] == "orders-ingest"
    store.delete_customer(SHOP, c.id)
    assert sent[-1][1]["X-Shopify-Topic"] == "customers/delete" and sent[-1][2]["id"] == c.id
    store.delete_order(SHOP, o.id)   # orders/delete is not subscribed in this toml
    assert sent[-1][1]["X-Shopify-Topic"] == "customers/delete"


def test_sync_webhook_handler_may_call_the_admin_api_back(store, admin):
    """A webhook caused by a GraphQL mutation is delivered after the request's store lock is released, so an app
    handler that queries the Admin API from inside the webhook does not deadlock."""
    seen = []

    def handler(url, headers, body, timeout):
        cid = json.loads(body)["id"]
        got = admin("query($id: ID!) { customer(id: $id) { tags } }", {"id": f"gid://shopify/Customer/{cid}"})
        seen.append(got["data"]["customer"]["tags"])
        return 200
    store.webhooks.configure(transport=handler, timeout=2)
    store.subscribe_webhook(SHOP, "customers/update", "http://app.test/wh")
    c = store.create_customer(SHOP, email="cb@example.com", emit=False)
    body = admin('mutation($id: ID!) { tagsAdd(id: $id, tags: ["x"]) { userErrors { message } } }',
                 {"id": f"gid://shopify/Customer/{c.id}"})
    assert body["data"]["tagsAdd"]["userErrors"] == []
    assert seen == [["x"]]


class SlowReceiver(Receiver):
    """Answers after `delay` seconds and records each request's client port (one port = one kept-alive
    connection) and how many requests were being served at once."""

    def __init__(self, delay: float):
        self.delay, self.ports, self.active, self.max_active = delay, [], 0, 0
        self.lock = threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"          # keep-alive

            def do_POST(self):  # noqa: N802
                import time
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with rec.lock:
                    rec.active += 1
                    rec.max_active = max(rec.max_active, rec.active)
                time.sleep(rec.delay)
                with rec.lock:
                    rec.active -= 1
                    rec.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    rec.ports.append(self.client_address[1])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.received, self.statuses = [], []
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_port}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()


def test_sync_delivery_reuses_one_keep_alive_connection(store):
    rec = SlowReceiver(0)
    try:
        store.subscribe_webhook(SHOP, "orders/create", rec.url + "/webhooks/orders")
        p = store.create_product(SHOP, title="Mug", price="9.50")
        for _ in range(5):
            store.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}])
        assert len(rec.received) == 5
        assert len(set(rec.ports)) == 1          # one connection for all five deliveries
    finally:
        rec.close()


def test_background_delivery_threads_deliver_concurrently_and_report_each_attempt(store):
    rec = SlowReceiver(0.2)
    seen = []
    try:
        store.webhooks.configure(sync=False, threads=4, retry_schedule=(0.05,), on_attempt=seen.append)
        store.subscribe_webhook(SHOP, "orders/create", rec.url + "/webhooks/orders")
        p = store.create_product(SHOP, title="Mug", price="9.50")
        ids = [store.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}]).id
               for _ in range(8)]
        assert store.webhooks.wait_idle(10)
        assert rec.max_active >= 2                # more than one delivery in flight at a time
        assert sorted(json.loads(b)["id"] for _, _, b in rec.received) == sorted(ids)
        assert sorted(a.json()["id"] for a in seen) == sorted(ids)
        assert all(a.status == 200 for a in seen)
    finally:
        store.webhooks.stop()
        rec.close()


def test_background_threads_retry_failures(store):
    rec = SlowReceiver(0)
    rec.statuses = []
    calls = []

    def flaky(url, headers, body, timeout):
        calls.append(body)
        return 500 if len(calls) == 1 else 200

    store.webhooks.configure(sync=False, threads=3, retry_schedule=(0.05,), transport=flaky)
    try:
        store.subscribe_webhook(SHOP, "orders/create", rec.url + "/webhooks/orders")
        p = store.create_product(SHOP, title="Mug", price="9.50")
        store.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}])
        assert store.webhooks.wait_idle(5)
        assert [a.status for a in store.webhooks.attempts] == [500, 200]
        assert [a.attempt for a in store.webhooks.attempts] == [1, 2]
    finally:
        store.webhooks.stop()
        rec.close()


def test_one_build_body_and_signature_per_order_state_shared_by_topics_and_apps(store, monkeypatch):
    """orders/create and orders/paid of a new paid order carry the same JSON: the stand-in builds, serializes and
    signs it once, yet every delivery keeps its own Webhook-Id / Event-Id / Topic, a valid HMAC for its app's
    secret, and include_fields subscriptions get their own (smaller) body."""
    from shopify_app.devstore import App
    from shopify_app.devstore import webhooks as wh

    builds, writes = [], []
    real, real_body = wh.order_payload, wh.order_body
    monkeypatch.setattr(wh, "order_payload", lambda sh, o: builds.append(o.id) or real(sh, o))
    monkeypatch.setattr(wh, "order_body", lambda sh, o: writes.append(o.id) or real_body(sh, o))
    other = store.register_app(App("other-key", "other-secret-0123456789", "http://other.test"))
    sent = []
    store.webhooks.configure(transport=lambda url, h, body, t: sent.append((url, h, body)) or 200)
    store.subscribe_webhook(SHOP, "orders/create", "http://app.test/wh", api_key=API_KEY)
    store.subscribe_webhook(SHOP, "orders/paid", "http://app.test/wh", api_key=API_KEY)
    store.subscribe_webhook(SHOP, "orders/paid", "/wh", api_key=other.api_key, include_fields=["id", "tags"])
    o = store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}], tags=["a"])
    assert writes == [o.id]                                    # one full body for create + paid
    assert builds == [o.id]                                    # one dict, for the include_fields selection
    assert [h["X-Shopify-Topic"] for _, h, _ in sent] == ["orders/create", "orders/paid", "orders/paid"]
    (_, h1, b1), (_, h2, b2), (url3, h3, b3) = sent
    assert b1 == b2 and json.loads(b1)["id"] == o.id and len(json.loads(b1)) > 50
    assert json.loads(b3) == {"id": o.id, "tags": "a"} and url3 == "http://other.test/wh"
    lower = [{k.lower(): v for k, v in h.items()} for h in (h1, h2)]
    assert all(_valid(h, b) for h, b in zip(lower, (b1, b2)))
    other_sig = base64.b64encode(hmac.new(b"other-secret-0123456789", b3, hashlib.sha256).digest()).decode()
    assert h3["X-Shopify-Hmac-Sha256"] == other_sig
    assert len({h["X-Shopify-Webhook-Id"] for _, h, _ in sent}) == 3
    assert h1["X-Shopify-Event-Id"] != h2["X-Shopify-Event-Id"] == h3["X-Shopify-Event-Id"]   # paid: one event
    assert [a.resource_id for a in store.webhooks.attempts] == [o.id] * 3   # no body parse needed by listeners
    store.mark_paid(SHOP, o.id)
    assert writes == [o.id, o.id] and builds == [o.id, o.id]   # a new state, a new build


def test_order_payloads_share_no_mutable_part_with_the_sample_or_each_other(store):
    """Payload builders copy only the sample parts they do not replace; a caller that edits a payload (tests
    do) must not change the next one."""
    from shopify_app.devstore.webhooks import order_payload

    p = store.create_product(SHOP, title="Mug", price="9.50")
    c = store.create_customer(SHOP, email="m@example.com", emit=False)
    o = store.create_order(SHOP, customer_id=c.id, lines=[{"variant_id": p.variants[0].id, "quantity": 2}],
                           emit=False)
    sh = store.shop(SHOP)
    first = order_payload(sh, o)
    before = json.dumps(first)
    assert list(first) == list(sample("orders__create"))       # Shopify's key order
    assert list(first["line_items"][0]) == list(sample("orders__create")["line_items"][0])

    def scribble(node):
        if isinstance(node, dict):
            for v in list(node.values()):
                scribble(v)
            node["scribbled"] = True
        elif isinstance(node, list):
            for v in node:
                scribble(v)
            node.append("scribbled")

    scribble(first)
    assert json.dumps(order_payload(sh, o)) == before
    assert "scribbled" not in json.dumps(sample("orders__create"))


def test_wait_idle_and_new_work_do_not_steal_each_others_wakeups(store):
    """Deliveries submitted while another thread sits in wait_idle still go out promptly (a notify for new
    work must reach a delivery thread, not the wait_idle caller), and wait_idle returns once all are done."""
    import time

    gate = threading.Event()
    sent = []

    def slow(url, h, body, t):
        gate.wait(5)
        sent.append(json.loads(body)["id"])
        return 200

    store.webhooks.configure(sync=False, threads=2, retry_schedule=(0.05,), transport=slow)
    try:
        store.subscribe_webhook(SHOP, "orders/create", "http://app.test/wh")
        first = store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}])
        idle = []
        waiter = threading.Thread(target=lambda: idle.append(store.webhooks.wait_idle(10)))
        waiter.start()
        time.sleep(0.05)                                       # the waiter is parked in wait_idle
        more = [store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}]) for _ in range(5)]
        gate.set()
        waiter.join(10)
        assert idle == [True]
        assert sorted(sent) == sorted([first.id] + [o.id for o in more])
    finally:
        store.webhooks.stop()


def test_order_body_is_exactly_the_json_of_order_payload_on_real_orders(store):
    """order_body (the fast path every order webhook's body takes) writes byte for byte what json.dumps of the
    reference dict builder, order_payload, writes: real Online Retail baskets, plus what real baskets lack
    (non-ASCII, quotes, backslashes and % in titles, missing SKUs, custom lines, discount codes with their
    allocations, line discounts, an exchange rate, unpaid, notes, tags, customers, refunds, cancellations)."""
    import datetime as dt
    import itertools
    import random

    from shopify_app.devstore import webhooks as wh
    from shopify_app.devstore.seed import BUNDLED_SAMPLE, read_rows

    rng = random.Random(7)
    t0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    customers = [store.create_customer(SHOP, email=f"c{i}@example.com", first_name=rng.choice([None, "Zoë", 'A "q"']),
                                       last_name=rng.choice([None, "Ünal"]), tags=rng.choice([[], ["vip", "x"]]),
                                       created_at=t0, emit=False) for i in range(20)]
    invoices: dict = {}
    for inv, code, desc, qty, _t, price, _c, _country in itertools.islice(read_rows(BUNDLED_SAMPLE), 8000):
        if qty > 0 and price > 0:
            invoices.setdefault(inv, []).append((code, desc, qty, price))
    variants: dict = {}
    orders = []
    for k, lines in enumerate(itertools.islice(invoices.values(), 150)):
        specs = []
        for code, desc, qty, price in lines:
            if code not in variants:
                variants[code] = store.create_product(
                    SHOP, title=(desc or code) + rng.choice(["", " ü ✓", ' "x" \\ %s 100%']), price=f"{price:.2f}",
                    sku=rng.choice([code, None]), vendor=rng.choice(["", "V"])).variants[0]
            specs.append({"variant_id": variants[code].id, "quantity": qty,
                          **({"discount": "0.50"} if rng.random() < 0.05 else {})})
        if rng.random() < 0.2:
            specs.append({"title": "POSTAGE ✓", "price": "5.00", "quantity": 1})
        kw: dict = {}
        if rng.random() < 0.3:
            kw["discount_code"] = {"code": "TEN", "amount": "2.00"}
        if rng.random() < 0.15:
            kw.update(presentment_currency="EUR", fx_rate="1.1713")
        if rng.random() < 0.1:
            kw.update(paid=False, note='note é "x"', tags=["a", "b c"])
        o = store.create_order(SHOP, lines=specs, customer_id=rng.choice([None] + [c.id for c in customers]),
                               created_at=t0 + dt.timedelta(minutes=k), emit=False, **kw)
        r = rng.random()
        if r < 0.15:
            store.refund_order(SHOP, o.id, [(o.line_items[0].id, 1)], note="r", at=t0 + dt.timedelta(days=1),
                               emit=False)
        elif r < 0.25:
            store.cancel_order(SHOP, o.id, at=t0 + dt.timedelta(days=2), emit=False)
        orders.append(o)
    sh = store.shop(SHOP)
    assert len(orders) == 150 and sum(len(o.line_items) for o in orders) > 1500, len(orders)
    assert any(o.refunds for o in orders) and any(o.cancelled_at for o in orders)
    assert any(o.discount_codes for o in orders) and any(o.presentment_currency == "EUR" for o in orders)
    for o in orders:
        assert wh.order_body(sh, o) == json.dumps(wh.order_payload(sh, o), separators=(",", ":")).encode(), o.id
    assert json.loads(wh.order_body(sh, orders[0])) == wh.order_payload(sh, orders[0])


def test_webhook_and_event_ids_are_unique_uuid4_strings(store):
    """new_id (Webhook-Id, Event-Id) writes what str(uuid.uuid4()) writes: version 4, RFC 4122 variant."""
    import uuid

    from shopify_app.devstore.webhooks import new_id

    ids = [new_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:2000]:
        u = uuid.UUID(value)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, value)
    sent = []
    store.webhooks.configure(transport=lambda url, h, body, t: sent.append(h) or 200)
    store.subscribe_webhook(SHOP, "orders/create", "http://app.test/wh")
    store.subscribe_webhook(SHOP, "orders/paid", "http://app.test/wh")
    store.create_order(SHOP, lines=[{"title": "x", "price": "1.00"}])
    assert len({h["X-Shopify-Webhook-Id"] for h in sent} | {h["X-Shopify-Event-Id"] for h in sent}) == 4
    assert all(uuid.UUID(h["X-Shopify-Webhook-Id"]).version == 4 for h in sent)
