"""The per-shop job lock must not stall the webhook intake (PostgreSQL).

Jobs of one shop serialize on its `shops` row. Every row the intake inserts references that row (foreign key), and
PostgreSQL checks a foreign key with FOR KEY SHARE on the referenced row, which FOR UPDATE blocks: with FOR UPDATE,
an order batch (up to a second of work) held every delivery of its shop at the door (bench (d): ~35 orders/s
accepted). The jobs take FOR NO KEY UPDATE, which still serializes them but lets key-share checks through.
SQLite has one writer for the whole database, so there the intake waits by design: PostgreSQL only."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from shopify_app.db import session_factory
from shopify_app.models import Shop, WebhookDelivery, utcnow
from shopify_app.web.intake import Delivery, record_batch
from tests import helpers
from workers.order_jobs import process_shop_orders

SHOP = "lock-store.myshopify.com"


def test_the_intake_records_deliveries_while_an_order_batch_holds_the_shop_lock(db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has a single writer: the intake waits for any write transaction by design")
    shop_id = helpers.add_shop(db_url, SHOP)
    s = session_factory(db_url)()
    try:
        result = process_shop_orders(s, shop_id)           # takes the shop lock; the transaction stays open
        assert result["deliveries"] == 0
        done = threading.Event()
        outcome: list = []

        def deliver():
            outcome.extend(record_batch(db_url, [Delivery(
                shop_domain=SHOP, topic="orders/create", webhook_id="wh-lock", event_id=None, api_version="2026-10",
                triggered_at=None, received_at=utcnow(), body='{"id": 1}')]))
            done.set()

        t = threading.Thread(target=deliver, daemon=True)
        t.start()
        recorded_while_locked = done.wait(15)
        # Shop lock still held here: the job serializes with other jobs of the shop ...
        other = session_factory(db_url)()
        try:
            other.connection().exec_driver_sql("SET lock_timeout = '200ms'")
            with pytest.raises(Exception, match="lock"):
                other.scalar(select(Shop).where(Shop.id == shop_id).with_for_update(key_share=True))
        finally:
            other.rollback()
            other.close()
    finally:
        s.rollback()
        s.close()
    t.join(15)
    # ... but the delivery was committed before the lock was released
    assert recorded_while_locked and [o.status for o in outcome] == ["pending_analytics"]
    with session_factory(db_url)() as check:
        assert check.scalar(select(WebhookDelivery.webhook_id).where(WebhookDelivery.shop_id == shop_id)) == "wh-lock"
