"""Webhook intake: verify (HMAC, headers), record, dedupe, enqueue; and the ingest worker's topic handlers.

Payloads are Shopify's own samples (shopify_app/devstore/fixtures/), signed like Shopify signs them.
"""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from rq.job import Job as RQJob
from sqlalchemy import func, select, text

from shopify_app.db import session_scope
from shopify_app.models import (
    ALL_SEGMENTS, AssociationRule, BasketCountDelta, Base, ComplianceRequest, CountSnapshot, Customer,
    CustomerPrediction, CustomerStats, ItemCountDelta, Job, Order, OrderLine, PairCountBlob, PairCountDelta, Product,
    SegmentChange, SegmentSnapshot, SequentialItemDelta, SequentialPairBlob, SequentialPairDelta, Shop, ShopModel,
    TagSyncState, WebhookDelivery,
)
from shopify_app.queues import WEBHOOKS, get_queue, redis_connection
from shopify_app.shopify.webhooks import (
    compute_webhook_hmac, parse_triggered_at, parse_webhook_headers, valid_shop_domain, verify_webhook_hmac,
)
from shopify_app.web.webhooks import intake_waker
from tests import helpers
from tests.helpers import TEST_API_SECRET, wait_for

SHOP = "demo-store.myshopify.com"
OTHER = "other-store.myshopify.com"
KINDS = ("app", "orders", "customers", "bulk", "compliance")


def sample(topic: str, shop: str = SHOP, **changes) -> bytes:
    return helpers.sample(topic, shop, **changes)


def post(client, topic: str, body: bytes, *, shop: str = SHOP, **kw):
    """Post, then wait for the app's background waker (an order delivery's job is woken after the answer), so
    the test sees the queue as it is once the wake was made."""
    resp = helpers.post_webhook(client, topic, body, shop=shop, **kw)
    assert intake_waker(client.application).wait_idle(10)
    return resp


def deliveries(db_url, **where) -> list[WebhookDelivery]:
    with session_scope(db_url) as s:
        q = select(WebhookDelivery).order_by(WebhookDelivery.id)
        for k, v in where.items():
            q = q.where(getattr(WebhookDelivery, k) == v)
        rows = list(s.scalars(q))
        s.expunge_all()
        return rows


def queued_job_ids(config) -> list[str]:
    return get_queue(config, WEBHOOKS).job_ids


@pytest.fixture
def shop(db_url):
    return helpers.add_shop(db_url, SHOP)


@pytest.fixture
def worker_ctx(config):
    """Run worker jobs in-process with the test config."""
    from workers import context

    context.set_config(config)
    yield config
    context.set_config(None)


# --------------------------------------------------------------------------------------------- pure helpers
def test_hmac_matches_shopify_definition_and_rejects_anything_else():
    body = sample("orders/create")
    good = compute_webhook_hmac(body, TEST_API_SECRET)
    assert verify_webhook_hmac(body, good, TEST_API_SECRET)
    assert not verify_webhook_hmac(body + b" ", good, TEST_API_SECRET)
    assert not verify_webhook_hmac(body, good, "another-secret")
    assert not verify_webhook_hmac(body, "", TEST_API_SECRET)
    assert not verify_webhook_hmac(body, good.lower(), TEST_API_SECRET)
    assert not verify_webhook_hmac(body, "ünïcode", TEST_API_SECRET)
    # Independent computation of the definition: base64(HMAC-SHA256(secret, raw body)).
    import base64, hashlib, hmac as hmac_mod
    assert good == base64.b64encode(hmac_mod.new(TEST_API_SECRET.encode(), body, hashlib.sha256).digest()).decode()


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 15_000, 100_003])
def test_hmac_of_bodies_hashed_in_slices_is_the_definition(size):
    """Bodies above 2047 bytes are hashed in slices (no GIL release); the value is the one-shot HMAC's, and a
    change in any slice (first byte, last byte, a slice boundary) is rejected."""
    import base64, hashlib, hmac as hmac_mod
    body = bytes((i * 7 + 3) % 256 for i in range(size))
    expected = base64.b64encode(hmac_mod.new(TEST_API_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    assert compute_webhook_hmac(body, TEST_API_SECRET) == expected
    assert verify_webhook_hmac(body, expected, TEST_API_SECRET)
    for at in {0, size // 2, 2047, size - 1} & set(range(size)):
        changed = body[:at] + bytes([body[at] ^ 1]) + body[at + 1:]
        assert not verify_webhook_hmac(changed, expected, TEST_API_SECRET)


def test_header_parsing_is_case_insensitive_and_validates_domain():
    h = parse_webhook_headers({"x-shopify-topic": "Orders/Create", "X-SHOPIFY-HMAC-SHA256": "abc",
                               "x-Shopify-Shop-Domain": "Demo.myshopify.com", "x-shopify-webhook-id": "w1",
                               "x-shopify-event-id": "e1", "x-shopify-triggered-at": "2026-01-02T03:04:05Z",
                               "x-shopify-name": "orders-ingest"})
    assert (h.topic, h.hmac, h.shop_domain, h.webhook_id, h.event_id, h.name) == (
        "orders/create", "abc", "demo.myshopify.com", "w1", "e1", "orders-ingest")
    assert h.triggered_at_utc == dt.datetime(2026, 1, 2, 3, 4, 5)
    assert h.errors() == []
    assert parse_webhook_headers({}).missing == ("X-Shopify-Topic", "X-Shopify-Hmac-Sha256",
                                                 "X-Shopify-Shop-Domain", "X-Shopify-Webhook-Id")
    assert parse_triggered_at("2023-03-29T18:00:27.877041743Z") == dt.datetime(2023, 3, 29, 18, 0, 27, 877041)
    assert parse_triggered_at("yesterday") is None
    for bad in ("evil.com", "a.myshopify.com.evil.com", "-x.myshopify.com", "x.myshopify.com/", ""):
        assert valid_shop_domain(bad) is None


# --------------------------------------------------------------------------------------------- intake
def test_forged_hmac_is_401_and_nothing_is_stored(client, shop, config, db_url):
    body = sample("orders/create")
    resp = post(client, "orders/create", body, secret="not-the-client-secret")
    assert resp.status_code == 401
    # Signed body, then tampered with.
    headers_ok = post(client, "orders/create", body).status_code
    assert headers_ok == 200
    tampered = client.post("/webhooks/orders", data=body.replace(b"USD", b"EUR"), headers={
        "X-Shopify-Topic": "orders/create", "X-Shopify-Hmac-Sha256": compute_webhook_hmac(body, TEST_API_SECRET),
        "X-Shopify-Shop-Domain": SHOP, "X-Shopify-Webhook-Id": "tampered-1"})
    assert tampered.status_code == 401
    assert len(deliveries(db_url)) == 1            # only the authentic one
    assert deliveries(db_url, webhook_id="tampered-1") == []
    assert len(queued_job_ids(config)) == 1


@pytest.mark.parametrize("header", ["X-Shopify-Topic", "X-Shopify-Hmac-Sha256", "X-Shopify-Shop-Domain",
                                    "X-Shopify-Webhook-Id"])
def test_missing_required_header_is_400(client, shop, db_url, header):
    resp = post(client, "orders/create", sample("orders/create"), drop=(header,))
    assert resp.status_code == 400
    assert header in " ".join(resp.get_json()["errors"])
    assert deliveries(db_url) == []


def test_oversized_header_is_400_not_500(client, shop, db_url):
    resp = post(client, "orders/create", sample("orders/create"), webhook_id="w" * 65)
    assert resp.status_code == 400
    assert deliveries(db_url) == []


def test_bad_shop_domain_is_400(client, db_url):
    resp = post(client, "orders/create", sample("orders/create"), shop="evil.example.com")
    assert resp.status_code == 400
    assert deliveries(db_url) == []


@pytest.mark.parametrize("path", ["/webhooks"] + [f"/webhooks/{k}" for k in KINDS])
def test_only_post_is_allowed(client, path):
    for method in ("get", "put", "delete"):
        resp = getattr(client, method)(path)
        assert resp.status_code == 405, (method, path)
    assert "POST" in client.get(path).headers["Allow"]


def test_every_configured_uri_accepts_deliveries(client, shop, db_url):
    for path in ["/webhooks"] + [f"/webhooks/{k}" for k in KINDS]:
        assert post(client, "orders/create", sample("orders/create"), path=path).status_code == 200
    assert len(deliveries(db_url, status="pending_analytics")) == len(KINDS) + 1


def test_same_delivery_three_times_is_one_row_and_one_job(client, shop, config, db_url):
    body = sample("orders/create")
    for _ in range(3):
        resp = post(client, "orders/create", body, webhook_id="wh-1", event_id="ev-1")
        assert resp.status_code == 200
    rows = deliveries(db_url)
    assert len(rows) == 1
    d = rows[0]
    # An order topic of an installed shop goes straight to the shop's order job (no per-delivery job).
    assert (d.shop_id, d.shop_domain, d.topic, d.status) == (shop, SHOP, "orders/create", "pending_analytics")
    assert (d.webhook_id, d.event_id, d.api_version) == ("wh-1", "ev-1", "2026-10")
    assert d.triggered_at == dt.datetime(2026, 11, 23, 12, 0, 0, 123456)
    assert d.body == body.decode()
    assert queued_job_ids(config) == [f"process-orders-{shop}"]
    job = RQJob.fetch(f"process-orders-{shop}", connection=redis_connection(config.redis_url))
    assert job.func_name == "workers.order_jobs.process_pending_orders" and job.args == (shop,)


def test_non_order_topic_gets_its_own_processing_job(client, shop, config, db_url):
    post(client, "app/uninstalled", sample("app/uninstalled"), webhook_id="wh-app")
    (d,) = deliveries(db_url)
    assert d.status == "received"
    assert queued_job_ids(config) == [f"delivery-{d.id}"]


def test_a_burst_of_order_deliveries_wakes_one_job(client, shop, config, db_url):
    from shopify_app.queues import clear_order_wake, order_wake_key

    for i in range(5):
        post(client, "orders/create", sample("orders/create", id=1000 + i), webhook_id=f"burst-{i}")
    assert queued_job_ids(config) == [f"process-orders-{shop}"]
    conn = redis_connection(config.redis_url)
    assert 0 < conn.ttl(order_wake_key(config, shop)) <= 30
    clear_order_wake(config, shop)              # what the job does before each read of pending rows
    post(client, "orders/create", sample("orders/create", id=2000), webhook_id="burst-late")
    assert queued_job_ids(config) == [f"process-orders-{shop}"]   # the waiting job will read it: not doubled
    assert len(deliveries(db_url, status="pending_analytics")) == 6


def test_the_order_job_is_woken_in_the_background_after_the_answer(client, shop, config, db_url, monkeypatch):
    """The request answers once its row is committed; the shop's job is woken afterwards by the process's waker
    thread, which covers every delivery committed before it asked (here: three, while the wake was held up)."""
    import shopify_app.web.webhooks as webhooks
    from shopify_app.queues import wake_order_job

    gate, calls = threading.Event(), []

    def held_wake(cfg, shop_id):
        calls.append(shop_id)
        assert gate.wait(10)
        return wake_order_job(cfg, shop_id)

    monkeypatch.setattr(webhooks, "wake_order_job", held_wake)
    answers = [helpers.post_webhook(client, "orders/create", sample("orders/create", id=3000 + i), shop=SHOP,
                                    webhook_id=f"bg-{i}") for i in range(3)]
    assert [(r.status_code, r.get_json()["status"], r.get_json()["wake"]) for r in answers] == \
        [(200, "pending_analytics", "background")] * 3                  # answered while the wake is held up
    assert queued_job_ids(config) == []                                 # ... so no job yet
    assert len(deliveries(db_url, status="pending_analytics")) == 3     # but every row is committed
    gate.set()
    waker = intake_waker(client.application)
    assert waker.wait_idle(10)
    assert queued_job_ids(config) == [f"process-orders-{shop}"]
    assert set(calls) == {shop} and len(calls) <= 2     # the first call, then at most one covering the rest
    assert waker.failures == 0


def test_second_delivery_of_one_event_is_recorded_duplicate_not_enqueued(client, shop, config, db_url):
    body = sample("orders/create")
    assert post(client, "orders/create", body, webhook_id="wh-a", event_id="ev-9").status_code == 200
    assert post(client, "orders/create", body, webhook_id="wh-b", event_id="ev-9").status_code == 200
    first, second = deliveries(db_url)
    assert (first.status, second.status) == ("pending_analytics", "duplicate")
    assert second.body is None
    assert queued_job_ids(config) == [f"process-orders-{shop}"]


def test_garbage_body_with_valid_hmac_is_recorded_invalid(client, shop, config, db_url):
    for i, body in enumerate([b"{not json", b"\xff\xfe\x00garbage", b"[1, 2]", b""]):
        resp = post(client, "orders/create", body, webhook_id=f"g-{i}")
        assert resp.status_code == 200, body
    rows = deliveries(db_url)
    assert [r.status for r in rows] == ["invalid"] * 4
    assert all(r.error for r in rows)
    assert rows[0].body == "{not json"
    assert "\x00" not in rows[1].body              # storable on PostgreSQL too (text cannot hold NUL)
    assert queued_job_ids(config) == []


def test_body_shape_check_without_parsing(client, shop, config, db_url):
    """The intake checks an order body's shape only ({...} once surrounding whitespace is ignored, UTF-8, no NUL);
    the body is stored byte for byte as sent."""
    padded = b"  \n" + sample("orders/create") + b"\r\n "
    with_nul = sample("orders/create").replace(b'"note":', b'"note\x00":', 1)
    assert with_nul != sample("orders/create")
    for i, body in enumerate([padded, with_nul, b"{}", b"{", b" } { "]):
        assert post(client, "orders/create", body, webhook_id=f"shape-{i}").status_code == 200
    rows = deliveries(db_url)
    assert [r.status for r in rows] == ["pending_analytics", "invalid", "pending_analytics", "invalid", "invalid"]
    assert rows[0].body == padded.decode()
    assert queued_job_ids(config) == [f"process-orders-{shop}"]


def test_unknown_shop_is_recorded_without_body_and_not_enqueued(client, config, db_url):
    resp = post(client, "orders/create", sample("orders/create"), shop=OTHER)
    assert resp.status_code == 200
    (d,) = deliveries(db_url)
    assert (d.status, d.shop_id, d.shop_domain, d.body) == ("unknown_shop", None, OTHER, None)
    assert queued_job_ids(config) == []


def test_compliance_for_unknown_shop_is_still_recorded_and_processed(client, config, db_url, worker_ctx):
    from workers.ingest import process_delivery

    resp = post(client, "customers/redact", sample("customers/redact", shop=OTHER), shop=OTHER)
    assert resp.status_code == 200
    (d,) = deliveries(db_url)
    assert (d.status, d.shop_id) == ("received", None)
    assert queued_job_ids(config) == [f"delivery-{d.id}"]
    assert process_delivery(d.id)["status"] == "processed"
    with session_scope(db_url) as s:
        (req,) = s.scalars(select(ComplianceRequest)).all()
        assert (req.topic, req.shop_domain, req.customer_id, req.shop_id) == ("customers/redact", OTHER, 191167, None)
        assert req.completed_at is not None


def test_redis_down_still_answers_200_and_the_sweeper_catches_up(config, shop, db_url, worker_ctx):
    from shopify_app import create_app
    from workers.ingest import sweep_stuck_deliveries

    dead = create_app(config, redis_url="redis://127.0.0.1:1/0")
    dead.testing = True
    order_resp = post(dead.test_client(), "orders/create", sample("orders/create"), webhook_id="wh-down")
    # The order's answer does not wait for Redis: its job is woken in the background, which fails here.
    assert (order_resp.status_code, order_resp.get_json()["wake"]) == (200, "background")
    waker = intake_waker(dead)
    assert (waker.calls, waker.failures) == (1, 1)
    app_resp = post(dead.test_client(), "app/uninstalled", sample("app/uninstalled"), webhook_id="wh-down-app")
    assert (app_resp.status_code, app_resp.get_json()["queued"]) == (200, False)   # enqueued before the answer
    order, app_row = deliveries(db_url)
    assert (order.status, app_row.status) == ("pending_analytics", "received")
    assert queued_job_ids(config) == []

    out = sweep_stuck_deliveries(older_than_seconds=3600)                      # too recent
    assert (out["enqueued"], out["order_shops"]) == (0, 0)
    out = sweep_stuck_deliveries(older_than_seconds=0)
    assert (out["enqueued"], out["order_shops"]) == (1, 1)
    expected = sorted([f"delivery-{app_row.id}", f"process-orders-{shop}"])
    assert sorted(queued_job_ids(config)) == expected
    sweep_stuck_deliveries(older_than_seconds=0)                               # already waiting: not doubled
    assert sorted(queued_job_ids(config)) == expected


# --------------------------------------------------------------------------------------------- processing
def _get_shop(db_url, shop_id):
    with session_scope(db_url) as s:
        row = s.get(Shop, shop_id)
        if row is not None:
            s.expunge(row)
        return row


def test_app_uninstalled_marks_shop_and_wipes_tokens_idempotently(client, shop, db_url, worker_ctx):
    from workers.ingest import process_delivery

    assert post(client, "app/uninstalled", sample("app/uninstalled")).status_code == 200
    (d,) = deliveries(db_url)
    first = process_delivery(d.id)
    assert first["status"] == "processed"
    row = _get_shop(db_url, shop)
    assert row.status == "uninstalled"
    assert row.uninstalled_at == dt.datetime(2026, 11, 23, 12, 0, 0, 123456)
    assert (row.access_token_enc, row.refresh_token_enc, row.token_expires_at) == (None, None, None)
    (d,) = deliveries(db_url)
    assert (d.status, d.body, d.attempts) == ("processed", None, 1)
    assert d.processed_at is not None

    assert process_delivery(d.id)["noop"] is True                       # idempotent
    assert deliveries(db_url)[0].attempts == 1
    assert process_delivery(999_999)["status"] == "missing"


def test_uninstall_older_than_the_current_install_is_ignored(client, shop, db_url, worker_ctx):
    from workers.ingest import process_delivery

    post(client, "app/uninstalled", sample("app/uninstalled"),
         extra={"X-Shopify-Triggered-At": "2025-06-01T00:00:00Z"})   # before installed_at 2026-01-01
    (d,) = deliveries(db_url)
    assert process_delivery(d.id)["status"] == "ignored"
    row = _get_shop(db_url, shop)
    assert (row.status, row.access_token_enc) == ("active", "enc-access")


def test_order_topics_are_handed_to_analytics_with_body(client, shop, db_url, worker_ctx):
    from workers.ingest import process_delivery

    body = sample("orders/create")
    post(client, "orders/create", body)
    (d,) = deliveries(db_url)
    assert process_delivery(d.id)["status"] == "pending_analytics"
    (d,) = deliveries(db_url)
    assert d.body == body.decode()
    with session_scope(db_url) as s:                # the handler did no analytics work
        assert s.scalar(select(func.count()).select_from(Order)) == 0


def _seed_shop_data(s, shop_id: int, domain: str = SHOP, customer_ids=(191167, 555)) -> set[str]:
    now = dt.datetime(2026, 11, 1)
    for cid in customer_ids:
        s.add_all([
            Customer(shop_id=shop_id, id=cid, display_name=f"Customer {cid}", tags=["vip"]),
            CustomerStats(shop_id=shop_id, customer_id=cid, orders_count=1, segment="champions"),
            CustomerPrediction(shop_id=shop_id, customer_id=cid, p_alive=0.9),
            TagSyncState(shop_id=shop_id, customer_id=cid, desired_tags=["sb:champions"]),
            SegmentChange(shop_id=shop_id, customer_id=cid, from_segment=None, to_segment="champions"),
            Order(shop_id=shop_id, id=cid * 10, customer_id=cid, processed_at=now, shopify_updated_at=now),
            OrderLine(shop_id=shop_id, order_id=cid * 10, id=cid * 100, product_id=1, quantity=1, price=5.0),
        ])
    s.add_all([
        Product(shop_id=shop_id, id=1, title="Mug"),
        Job(shop_id=shop_id, kind="import"),
        ShopModel(shop_id=shop_id, kind="rfm", params={}),
        SegmentSnapshot(shop_id=shop_id, day=now.date(), segment="champions", customers=2),
        CountSnapshot(shop_id=shop_id, kind="items", segment=ALL_SEGMENTS, bucket="2026-11", data=b"x"),
        BasketCountDelta(shop_id=shop_id, segment=ALL_SEGMENTS, bucket="2026-11", baskets=1),
        ItemCountDelta(shop_id=shop_id, segment=ALL_SEGMENTS, bucket="2026-11", item_id=1, count=1),
        PairCountDelta(shop_id=shop_id, segment=ALL_SEGMENTS, bucket="2026-11", item_a=1, item_b=2, count=1),
        PairCountBlob(shop_id=shop_id, segment=ALL_SEGMENTS, bucket="2026-11", pairs=1, data=b"x"),
        SequentialPairDelta(shop_id=shop_id, bucket="2026-11", item_a=1, item_b=2, count=1),
        SequentialPairBlob(shop_id=shop_id, bucket="2026-11", pairs=1, data=b"x"),
        SequentialItemDelta(shop_id=shop_id, bucket="2026-11", item_id=1, count=1),
        AssociationRule(shop_id=shop_id, antecedent=[1], consequent=[2], count=1, support=0.1,
                        confidence=0.5, lift=2.0),
        ComplianceRequest(shop_id=shop_id, shop_domain=domain, topic="customers/redact",
                          customer_id=42),
    ])
    s.flush()
    return {t.name for t in Base.metadata.sorted_tables if "shop_id" in t.c}


def _counts_by_shop(db_url, shop_id) -> dict[str, int]:
    with session_scope(db_url) as s:
        return {t.name: s.scalar(select(func.count()).select_from(t).where(t.c.shop_id == shop_id))
                for t in Base.metadata.sorted_tables if "shop_id" in t.c}


def test_shop_redact_removes_every_row_of_the_shop_and_nothing_else(client, shop, db_url, worker_ctx):
    from workers.ingest import process_delivery

    with session_scope(db_url) as s:
        other = Shop(domain=OTHER, status="active")
        s.add(other)
        s.flush()
        other_id = other.id
        _seed_shop_data(s, shop)
        _seed_shop_data(s, other_id, OTHER)
    # A delivery that arrived for the domain before it was known (no shop_id) must go too.
    with session_scope(db_url) as s:
        s.add(WebhookDelivery(shop_id=None, shop_domain=SHOP, topic="orders/create", webhook_id="pre-install",
                              status="unknown_shop"))
    post(client, "orders/create", sample("orders/create"))
    post(client, "orders/create", sample("orders/create"), shop=OTHER)

    before = _counts_by_shop(db_url, shop)
    assert all(n > 0 for name, n in before.items()), before    # the test covers every shop-keyed table
    other_before = _counts_by_shop(db_url, other_id)

    post(client, "shop/redact", sample("shop/redact"))
    (d,) = deliveries(db_url, topic="shop/redact")
    assert process_delivery(d.id)["status"] == "processed"

    assert _counts_by_shop(db_url, shop) == {name: 0 for name in before}
    assert _get_shop(db_url, shop) is None
    assert deliveries(db_url, shop_domain=SHOP) == []
    assert _counts_by_shop(db_url, other_id) == other_before   # the other tenant is untouched
    with session_scope(db_url) as s:
        mine = s.scalars(select(ComplianceRequest).where(ComplianceRequest.shop_domain == SHOP)).all()
        assert [(r.topic, r.shop_id, r.customer_id) for r in mine] == [("shop/redact", None, None)]
    assert process_delivery(d.id)["status"] == "missing"        # replay: nothing left to do


def test_customers_redact_removes_that_customer_only(client, shop, db_url, worker_ctx):
    from shopify_app.models import CUSTOMER_KEYED
    from workers.ingest import process_delivery

    with session_scope(db_url) as s:
        _seed_shop_data(s, shop)
    # A not-yet-analysed customers/update for the redacted customer must not resurrect them.
    post(client, "customers/update", sample("customers/update", id=191167))
    body = sample("customers/redact")
    post(client, "customers/redact", body)
    (d,) = deliveries(db_url, topic="customers/redact")
    assert process_delivery(d.id)["status"] == "processed"

    with session_scope(db_url) as s:
        for model in CUSTOMER_KEYED:
            t = model.__table__
            col = t.c.customer_id if "customer_id" in t.c else t.c.id
            gone = s.scalar(select(func.count()).select_from(t).where(t.c.shop_id == shop, col == 191167))
            kept = s.scalar(select(func.count()).select_from(t).where(t.c.shop_id == shop, col == 555))
            assert (t.name, gone, kept) == (t.name, 0, 1)
        orders = {o.id: o.customer_id for o in s.scalars(select(Order).where(Order.shop_id == shop))}
        assert orders == {1911670: None, 5550: 555}
        assert s.scalar(select(func.count()).select_from(OrderLine)) == 2   # order lines stay (no customer)
        (req,) = s.scalars(select(ComplianceRequest).where(ComplianceRequest.topic == "customers/redact",
                                                           ComplianceRequest.customer_id == 191167)).all()
        assert req.shop_id == shop and req.result["deleted"]["customers"] == 1
    (d,) = deliveries(db_url, topic="customers/redact")
    assert (d.status, d.body) == ("processed", None)                    # personal data not kept
    (upd,) = deliveries(db_url, topic="customers/update")
    assert (upd.status, upd.body) == ("ignored", None)


def test_customers_data_request_is_recorded(client, shop, db_url, worker_ctx):
    from workers.ingest import process_delivery

    with session_scope(db_url) as s:
        _seed_shop_data(s, shop)
    post(client, "customers/data_request", sample("customers/data_request"))
    (d,) = deliveries(db_url, topic="customers/data_request")
    assert process_delivery(d.id)["status"] == "processed"
    with session_scope(db_url) as s:
        (req,) = s.scalars(select(ComplianceRequest).where(ComplianceRequest.topic == "customers/data_request"))
        assert req.customer_id == 191167 and req.result["data_request_id"] == 9999
        assert req.result["rows_held"]["customers"] == 1 and req.result["rows_held"]["orders"] == 1
    assert deliveries(db_url, topic="customers/data_request")[0].body is None


def test_sqlite_foreign_keys_are_enforced(db_url):
    with session_scope(db_url) as s:
        if s.bind.dialect.name == "sqlite":
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1


# --------------------------------------------------------------------------------------------- end to end
def test_real_worker_processes_an_uninstall_posted_through_the_app(client, shop, db_url, worker_process):
    resp = post(client, "app/uninstalled", sample("app/uninstalled"))
    assert resp.status_code == 200 and resp.get_json()["queued"] is True
    worker_process(WEBHOOKS)

    def uninstalled():
        row = _get_shop(db_url, shop)
        return row.status == "uninstalled" and row

    row = wait_for(uninstalled, timeout=30, message="the worker to process app/uninstalled")
    assert row.access_token_enc is None and row.refresh_token_enc is None
    d = wait_for(lambda: (deliveries(db_url) or [None])[0].status == "processed" and deliveries(db_url)[0],
                 timeout=10, message="the delivery to be marked processed")
    assert d.body is None and d.processed_at is not None


def test_concurrent_copies_of_one_delivery_store_one_row(app, shop, config, db_url):
    import threading

    body = sample("orders/create")
    codes: list[int] = []

    def send():
        codes.append(post(app.test_client(), "orders/create", body, webhook_id="wh-race", event_id="ev-race")
                     .status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [200] * 8
    assert len(deliveries(db_url)) == 1
    assert len(queued_job_ids(config)) == 1


def test_failing_handler_keeps_the_delivery_for_retry(client, shop, db_url, worker_ctx, monkeypatch):
    import workers.ingest as ingest

    def boom(*_args):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(ingest, "_app_uninstalled", boom)
    post(client, "app/uninstalled", sample("app/uninstalled"))
    (d,) = deliveries(db_url)
    with pytest.raises(RuntimeError):
        ingest.process_delivery(d.id)
    (d,) = deliveries(db_url)
    assert (d.status, d.attempts) == ("received", 1) and "database hiccup" in d.error
    assert _get_shop(db_url, shop).status == "active"             # rolled back
    monkeypatch.setattr(ingest, "MAX_ATTEMPTS", 2)
    with pytest.raises(RuntimeError):
        ingest.process_delivery(d.id)
    assert deliveries(db_url)[0].status == "failed"


def test_devstore_deliveries_with_duplicates_end_to_end(client, shop, config, db_url, worker_ctx):
    """The devstore signs and sends like Shopify (at least once, duplicated here); the app records each
    webhook id once, and the worker applies the uninstall and the redact."""
    from urllib.parse import urlparse

    from shopify_app.config import PROJECT_ROOT
    from shopify_app.devstore import App, DevStore
    from shopify_app.devstore.webhooks import DeliveryMode
    from tests.conftest import TEST_API_KEY
    from workers.ingest import process_delivery

    def transport(url, headers, body, timeout):
        return client.post(urlparse(url).path, data=body, headers=headers).status_code

    store = DevStore(apps=[App(TEST_API_KEY, TEST_API_SECRET, "https://app.test")],
                     webhook_mode=DeliveryMode(sync=True, duplicate_probability=1.0, seed=7, transport=transport))
    store.create_shop(SHOP)
    store.install_app(SHOP, TEST_API_KEY)
    store.subscribe_from_app_toml(SHOP, PROJECT_ROOT / "shopify.app.toml", api_key=TEST_API_KEY)
    c = store.create_customer(SHOP, email="a@example.com")
    store.create_order(SHOP, customer_id=c.id, lines=[{"title": "Thing", "price": "3.00"}])
    store.trigger_compliance(SHOP, "customers/redact", customer_id=c.id)
    store.uninstall_app(SHOP, TEST_API_KEY)

    attempts = store.webhooks.attempts
    assert attempts and all(a.status == 200 for a in attempts), [(a.topic, a.status) for a in attempts]
    rows = deliveries(db_url)
    assert len(rows) == len({a.webhook_id for a in attempts}) < len(attempts)
    topics = {r.topic for r in rows}
    assert {"orders/create", "customers/redact", "app/uninstalled"} <= topics
    for r in rows:
        if r.status == "received":
            process_delivery(r.id)
    assert _get_shop(db_url, shop).status == "uninstalled"
    by_topic = {r.topic: r.status for r in deliveries(db_url) if r.status != "duplicate"}
    assert by_topic["orders/create"] == "pending_analytics"
    assert by_topic["customers/redact"] == "processed"


def test_object_shaped_garbage_is_recorded_then_marked_invalid_by_the_order_job(client, shop, db_url, worker_ctx):
    """The intake only checks the shape of a body (`{...}`); the order job parses it. A body that looks like an
    object but is not JSON is still recorded, answered 200, and ends 'invalid' with its error - never lost, never
    applied, and the valid delivery next to it is applied."""
    from workers.order_jobs import process_pending_orders

    assert post(client, "orders/create", b"{not: json}", webhook_id="shape-1").status_code == 200
    assert post(client, "orders/create", sample("orders/create"), webhook_id="shape-2").status_code == 200
    assert [r.status for r in deliveries(db_url)] == ["pending_analytics", "pending_analytics"]
    process_pending_orders(shop)                  # the fixture is the Shop row id
    rows = {r.webhook_id: r for r in deliveries(db_url)}
    assert rows["shape-1"].status == "invalid" and "JSON" in rows["shape-1"].error
    assert rows["shape-2"].status == "processed"
