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
from shopify_app.models import WebhookDelivery, utcnow
from shopify_app.web.intake import Delivery, record_batch
from tests import helpers
from workers.context import lock_shop
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
                lock_shop(other, shop_id)                  # the lock every job of the shop takes
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


def test_order_batches_take_the_sqlite_write_turn_the_intake_waits_on(db_url, session):
    """SQLite: an order batch begins only once it holds the write turn (the flock the intake takes), so a process
    waiting for the turn is woken between two batches instead of polling SQLite's busy handler for a gap."""
    import fcntl
    import os

    from shopify_app.config import Config
    from shopify_app.db import write_turn_path
    from tests.pipeline.test_order_jobs import deliver, make_shop, payload
    from workers import context
    from workers.order_jobs import process_pending_orders

    path = write_turn_path(db_url)
    if path is None:
        pytest.skip("the write turn exists on SQLite files only")
    shop = make_shop(session, "turn.myshopify.com")
    deliver(session, shop, "orders/create", payload(1))
    session.commit()
    shop_id = shop.id
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)     # another open file: flock treats it as another holder
    fcntl.flock(fd, fcntl.LOCK_EX)
    result: list = []
    context.set_config(Config(env="test", database_url=db_url, redis_url="redis://127.0.0.1:1/0"))
    try:
        t = threading.Thread(target=lambda: result.append(process_pending_orders(shop_id)), daemon=True)
        t.start()
        t.join(1.0)
        assert t.is_alive() and not result                # waiting for the turn, nothing applied
        with session_factory(db_url)() as check:
            assert check.scalar(select(WebhookDelivery.status).where(WebhookDelivery.shop_id == shop_id)) == \
                "pending_analytics"
        fcntl.flock(fd, fcntl.LOCK_UN)
        t.join(30)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        context.set_config(None)
    assert result and result[0]["applied"] == 1


def test_an_order_batch_is_prepared_without_the_write_lock(db_url, session, monkeypatch):
    """The batch is computed (prepare_batch) before its write transaction: meanwhile the intake records deliveries
    at once. On SQLite the write turn and the database's write lock are taken only for the write phase (before,
    the whole batch held them and every intake commit waited for it)."""
    from shopify_app.config import Config
    from tests.pipeline.test_order_jobs import deliver, make_shop, payload
    from workers import context
    import workers.order_jobs as jobs

    shop = make_shop(session, "prepare.myshopify.com")
    deliver(session, shop, "orders/create", payload(1))
    session.commit()
    shop_id, domain = shop.id, shop.domain
    real = jobs._sequential_deltas           # runs in the prepare phase, after every read
    recorded: list = []

    def intake_meanwhile(*args, **kw):
        def record():
            recorded.extend(record_batch(db_url, [Delivery(
                shop_domain=domain, topic="orders/create", webhook_id="wh-during-prepare", event_id=None,
                api_version="2026-10", triggered_at=None, received_at=utcnow(), body='{"id": 2}')]))

        t = threading.Thread(target=record, daemon=True)
        t.start()
        t.join(10)                           # a held write lock / turn would keep it waiting until the batch ends
        recorded.append("done" if not t.is_alive() else "waiting")
        return real(*args, **kw)

    monkeypatch.setattr(jobs, "_sequential_deltas", intake_meanwhile)
    context.set_config(Config(env="test", database_url=db_url, redis_url="redis://127.0.0.1:1/0"))
    try:
        result = jobs.run_batch(shop_id)
    finally:
        context.set_config(None)
    assert recorded[-1] == "done" and [o.status for o in recorded[:-1]] == ["pending_analytics"]
    assert result["applied"] == 1 and result["fallback"] == 0     # the new delivery is not part of this batch
