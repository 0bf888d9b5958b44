"""Webhook -> queue -> real worker processes -> analytics state, on a real redis-server.

Orders posted through the app's webhook endpoint end up in the shop's customer aggregates and item counts;
a later cancellation removes them again, and a replay of the older version changes nothing."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

from sqlalchemy import func, select

from shopify_app.db import session_scope
from shopify_app.models import CustomerStats, ItemCountDelta, Order, Shop, WebhookDelivery
from shopify_app.queues import WEBHOOKS
from shopify_app.shopify.webhooks import compute_webhook_hmac
from tests.conftest import TEST_API_SECRET, wait_for

FIXTURE = Path(__file__).resolve().parents[2] / "shopify_app" / "devstore" / "fixtures" / "orders__create.json"
SHOP = "pipeline-store.myshopify.com"


def _post(client, topic: str, payload: dict, webhook_id: str | None = None):
    body = json.dumps(payload).encode()
    return client.post("/webhooks/orders", data=body, headers={
        "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": compute_webhook_hmac(body, TEST_API_SECRET),
        "X-Shopify-Shop-Domain": SHOP, "X-Shopify-API-Version": "2026-10",
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()), "X-Shopify-Event-Id": str(uuid.uuid4()),
        "Content-Type": "application/json"})


def _state(db_url, shop_id):
    with session_scope(db_url) as s:
        stats = s.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id)).all()
        items = s.scalar(select(func.coalesce(func.sum(ItemCountDelta.count), 0))
                         .where(ItemCountDelta.shop_id == shop_id))
        pending = s.scalar(select(func.count()).select_from(WebhookDelivery).where(
            WebhookDelivery.shop_id == shop_id, WebhookDelivery.status.in_(("received", "pending_analytics"))))
        order = s.scalar(select(Order).where(Order.shop_id == shop_id))
        return ([(c.customer_id, c.orders_count, round(c.net_revenue, 2)) for c in stats], items, pending,
                order and order.counted)


def test_orders_flow_from_webhook_to_customer_state_through_real_workers(client, db_url, worker_process):
    with session_scope(db_url) as s:
        shop = Shop(domain=SHOP, status="active", installed_at=dt.datetime(2020, 1, 1), currency="USD")
        s.add(shop)
        s.flush()
        shop_id = shop.id
    order = json.loads(FIXTURE.read_text())
    # Shopify's sample is a cancelled test order: make it a live one.
    order.update(test=False, cancelled_at=None, cancel_reason=None, financial_status="paid")
    customer_id = order["customer"]["id"]
    worker_process(WEBHOOKS)
    worker_process(WEBHOOKS)        # two workers: the per-shop lock keeps them from losing updates

    first_id = str(uuid.uuid4())
    assert _post(client, "orders/create", order, webhook_id=first_id).status_code == 200
    assert _post(client, "orders/create", order, webhook_id=first_id).status_code == 200   # duplicate
    state = wait_for(lambda: (st := _state(db_url, shop_id))[0] and st[2] == 0 and st, timeout=60,
                     message="the order in the customer's aggregates")
    stats, items, _, counted = state
    assert [row[:2] for row in stats] == [(customer_id, 1)] and counted is True
    assert items == 1          # one distinct product in the basket; custom lines are kept out

    cancelled = dict(order, cancelled_at="2022-01-02T10:00:00-05:00", updated_at="2022-01-02T10:00:00-05:00")
    assert _post(client, "orders/cancelled", cancelled).status_code == 200
    assert _post(client, "orders/updated", order).status_code == 200      # an older version, arriving late
    final = wait_for(lambda: (st := _state(db_url, shop_id))[2] == 0 and st[3] is False and st, timeout=60,
                     message="the cancellation to be applied")
    assert final[0] == [] and final[1] == 0
