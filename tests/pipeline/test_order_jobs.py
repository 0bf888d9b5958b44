"""The order analytics job on the test database: event kinds, replays, out-of-order versions, tenant isolation."""
from __future__ import annotations

import copy
import datetime as dt
import json
import random

import pytest
from sqlalchemy import func, select

from shopify_app.analytics.incremental import clean_pass
from shopify_app.config import PROJECT_ROOT
from shopify_app.models import (
    BasketCountDelta, CustomerStats, ItemCountDelta, Order, OrderLine, SegmentChange, Shop, ShopModel,
    WebhookDelivery,
)
from shopify_app.shopify.convert import order_deleted, order_from_rest
from workers.order_jobs import process_shop_orders
from workers.rebuild_jobs import read_bucket_counts

FIXTURES = PROJECT_ROOT / "shopify_app" / "devstore" / "fixtures"
BASE = json.loads((FIXTURES / "orders__create.json").read_text())
REFUND = json.loads((FIXTURES / "refunds__create.json").read_text())
NOW = dt.datetime(2024, 8, 1, 12, 0)
P1, P2, P3 = 1001, 1002, 1003


def payload(oid, cust=5001, items=((P1, 1), (P2, 2)), upd=0, day=1, cancelled=False, test=False, refund_first=False,
            subtotal="50.00", discount="0.00", custom=True):
    p = copy.deepcopy(BASE)
    p["id"], p["name"] = oid, f"#{oid}"
    p["processed_at"] = p["created_at"] = f"2024-07-{day:02d}T10:00:00Z"
    p["updated_at"] = (dt.datetime(2024, 7, 20, 0, 0) + dt.timedelta(hours=upd)).isoformat() + "Z"
    p["cancelled_at"] = "2024-07-21T00:00:00Z" if cancelled else None
    p["test"] = test
    p["customer"] = {"id": cust} if cust else None
    p["subtotal_price_set"]["shop_money"]["amount"] = subtotal
    p["total_discounts_set"]["shop_money"]["amount"] = discount
    tmpl = BASE["line_items"][0]
    lines = []
    for i, (pid, q) in enumerate(items):
        li = copy.deepcopy(tmpl)
        li["id"], li["product_id"], li["quantity"] = oid * 10 + i, pid, q
        lines.append(li)
    if custom:
        li = copy.deepcopy(BASE["line_items"][1])
        li["id"] = oid * 10 + 9
        lines.append(li)
    p["line_items"] = lines
    p["refunds"] = []
    if refund_first:
        r = copy.deepcopy(REFUND)
        r["refund_line_items"] = [dict(r["refund_line_items"][0], line_item_id=oid * 10, quantity=items[0][1])]
        p["refunds"] = [r]
    return p


def make_shop(session, domain):
    shop = Shop(domain=domain, status="active")
    session.add(shop)
    session.flush()
    return shop


def deliver(session, shop, topic, body, n=[0]):
    n[0] += 1
    d = WebhookDelivery(shop_id=shop.id, shop_domain=shop.domain, topic=topic, webhook_id=f"w{n[0]}",
                        status="pending_analytics", body=json.dumps(body))
    session.add(d)
    session.flush()
    return d


def run(session, shop, limit=500):
    res = process_shop_orders(session, shop.id, limit=limit, now=NOW)
    session.commit()
    return res


def dump(session, shop_id):
    orders = sorted((o.id, o.customer_id, o.processed_at, o.shopify_updated_at, o.counted, o.deleted_at, o.subtotal,
                     o.total_refunded, json.dumps(o.contribution, sort_keys=True))
                    for o in session.scalars(select(Order).where(Order.shop_id == shop_id)))
    lines = sorted((ln.order_id, ln.id, ln.product_id, ln.quantity, ln.refunded_quantity, ln.price)
                   for ln in session.scalars(select(OrderLine).where(OrderLine.shop_id == shop_id)))
    cols = ("customer_id", "first_order_at", "last_order_at", "orders_count", "gross_revenue", "refunded",
            "net_revenue", "discounted_orders", "discount_total", "pre_discount_total", "refunded_orders",
            "items_count", "product_type_counts", "recency_days", "r_score", "f_score", "m_score", "segment")
    stats = sorted(tuple(json.dumps(getattr(c, k), sort_keys=True, default=str) for k in cols)
                   for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id)))
    items = sorted((r.segment, r.bucket, r.item_id, r.count) for r in session.scalars(
        select(ItemCountDelta).where(ItemCountDelta.shop_id == shop_id)) if r.count)
    pairs = sorted(("*", bucket, a, b, n) for bucket, (_, _, ps) in read_bucket_counts(session, shop_id).items()
                   for (a, b), n in ps.items())              # snapshots + pair blobs, summed
    baskets = sorted((r.segment, r.bucket, r.baskets) for r in session.scalars(
        select(BasketCountDelta).where(BasketCountDelta.shop_id == shop_id)) if r.baskets)
    return {"orders": orders, "lines": lines, "stats": stats, "items": items, "pairs": pairs, "baskets": baskets}


def stats(session, shop, cid):
    session.expire_all()
    return session.get(CustomerStats, (shop.id, cid))


# --------------------------------------------------------------------------------------------- event kinds
def test_create_update_paid_cancel(session):
    shop = make_shop(session, "a.myshopify.com")
    deliver(session, shop, "orders/create", payload(1))
    res = run(session, shop)
    assert res["applied"] == 1 and res["customers"] == 1
    c = stats(session, shop, 5001)
    assert (c.orders_count, c.gross_revenue, c.items_count, c.first_order_at) == (1, 50.0, 4, dt.datetime(2024, 7, 1, 10))
    assert c.segment is not None and c.r_score is not None
    assert dump(session, shop.id)["pairs"] == [("*", "2024-07", P1, P2, 1)]
    assert session.scalar(select(WebhookDelivery.status)) == "processed"
    assert session.scalar(select(WebhookDelivery.body)) is None

    deliver(session, shop, "orders/paid", payload(1, upd=1))                                      # no change
    deliver(session, shop, "orders/updated", payload(1, upd=2, items=((P1, 1), (P3, 1)), subtotal="30.00"))
    run(session, shop)
    d = dump(session, shop.id)
    assert d["pairs"] == [("*", "2024-07", P1, P3, 1)]
    assert d["items"] == [("*", "2024-07", P1, 1), ("*", "2024-07", P3, 1)]
    assert stats(session, shop, 5001).gross_revenue == 30.0

    deliver(session, shop, "orders/cancelled", payload(1, upd=3, cancelled=True))
    run(session, shop)
    d = dump(session, shop.id)
    assert d["items"] == [] and d["pairs"] == [] and d["baskets"] == [] and d["stats"] == []
    changes = session.scalars(select(SegmentChange).order_by(SegmentChange.id)).all()
    assert changes[-1].to_segment is None


def test_refund_delete_test_guest_custom(session):
    shop = make_shop(session, "b.myshopify.com")
    deliver(session, shop, "orders/create", payload(1, day=3))
    deliver(session, shop, "orders/create", payload(2, day=5, discount="5.00"))
    deliver(session, shop, "orders/create", payload(3, test=True))                 # test order: nothing
    deliver(session, shop, "orders/create", payload(4, cust=None))                 # guest: items only
    deliver(session, shop, "orders/create", payload(5, items=(), cust=5002))        # custom line only
    deliver(session, shop, "refunds/create", REFUND)                                # no-op by rule
    deliver(session, shop, "orders/edited", {"order_edit": {"id": 1, "order_id": 1}})  # no-op by rule
    deliver(session, shop, "orders/updated", payload(1, upd=1, day=3, refund_first=True))
    res = run(session, shop)
    assert res["deliveries"] == 8 and res["applied"] == 6 and res["invalid"] == 0
    c = stats(session, shop, 5001)
    assert (c.orders_count, c.first_order_at, c.last_order_at) == (2, dt.datetime(2024, 7, 3, 10), dt.datetime(2024, 7, 5, 10))
    assert (c.refunded, c.refunded_orders, c.net_revenue) == (89.99, 1, round(100 - 89.99, 2))
    assert (c.discounted_orders, c.discount_total) == (1, 5.0)
    assert stats(session, shop, 5002).items_count == 1
    d = dump(session, shop.id)
    # order 1 lost P1 (refunded); orders 2 and 4 have P1+P2; order 5 has no product
    assert d["baskets"] == [("*", "2024-07", 3)]
    assert d["items"] == [("*", "2024-07", P1, 2), ("*", "2024-07", P2, 3)]
    assert d["pairs"] == [("*", "2024-07", P1, P2, 2)]

    deliver(session, shop, "orders/delete", {"id": 2})
    deliver(session, shop, "orders/updated", payload(2, upd=50, day=5))   # after the delete: ignored
    res = run(session, shop)
    assert res["applied"] == 1 and res["skipped"] == 1
    c = stats(session, shop, 5001)
    assert (c.orders_count, c.last_order_at, c.discounted_orders) == (1, dt.datetime(2024, 7, 3, 10), 0)
    assert dump(session, shop.id)["pairs"] == [("*", "2024-07", P1, P2, 1)]
    o = session.get(Order, (shop.id, 2))
    assert o.deleted_at == NOW and not o.counted


def test_invalid_body_is_marked(session):
    shop = make_shop(session, "c.myshopify.com")
    d = deliver(session, shop, "orders/create", {"no": "id"})
    run(session, shop)
    session.refresh(d)
    assert d.status == "invalid" and "id" in d.error


# --------------------------------------------------------------------------------------------- replay / order
def _history():
    """Several versions per order (distinct updated_at): updates, refunds, cancels, test, guest, custom, delete."""
    h = []
    for oid, cust in ((1, 5001), (2, 5001), (3, 5002), (4, None), (5, 5003)):
        h.append(("orders/create", payload(oid, cust=cust, day=oid)))
        h.append(("orders/updated", payload(oid, cust=cust, day=oid, upd=oid, items=((P2, 1), (P3, 1)),
                                            subtotal="20.00")))
    h.append(("orders/updated", payload(1, upd=9, day=1, refund_first=True, items=((P2, 1), (P3, 1)))))
    h.append(("orders/cancelled", payload(3, cust=5002, upd=9, day=3, cancelled=True)))
    h.append(("orders/updated", payload(5, cust=5003, upd=9, day=5, test=True)))
    h.append(("orders/create", payload(6, cust=5002, day=28, items=(), custom=True, discount="2.00")))
    h.append(("orders/delete", {"id": 2}))
    return h


def _rfm(session, shop):
    session.add(ShopModel(shop_id=shop.id, kind="rfm", params={
        "edges": {"recency": [10, 20, 30, 40], "frequency": [1, 1, 2, 3], "monetary": [10, 30, 60, 100]}}))
    session.flush()


def test_replays_and_out_of_order_equal_one_clean_pass(session):
    h = _history()
    clean = make_shop(session, "clean.myshopify.com")
    messy = make_shop(session, "messy.myshopify.com")
    other = make_shop(session, "other.myshopify.com")
    for s in (clean, messy, other):
        _rfm(session, s)
    # clean: only the latest version of each order, one pass
    latest = {}
    for topic, body in h:
        latest[body["id"]] = (topic, body)
    for topic, body in latest.values():
        deliver(session, clean, topic, body)
    run(session, clean)
    # other shop: same order ids, different data, processed before the messy shop
    for oid in (1, 2, 3):
        deliver(session, other, "orders/create", payload(oid, cust=9000 + oid, items=((P3, 1),)))
    run(session, other)
    other_before = dump(session, other.id)
    # messy: every version, shuffled, with duplicates, in several small batches
    rng = random.Random(7)
    messy_h = h + rng.sample(h, 6)
    rng.shuffle(messy_h)
    for topic, body in messy_h:
        deliver(session, messy, topic, body)
    while run(session, messy, limit=4)["deliveries"]:
        pass
    a, b = dump(session, clean.id), dump(session, messy.id)
    for k in a:
        assert a[k] == b[k], k
    assert dump(session, other.id) == other_before     # tenant isolation
    # and the pure reference agrees on customers and counts
    versions = [order_deleted(body, NOW) if topic == "orders/delete" else order_from_rest(body) for topic, body in h]
    ref = clean_pass(versions)
    assert sorted(("*",) + k + (v,) for k, v in ref["pairs"].items()) == a["pairs"]
    assert sorted(("*",) + k + (v,) for k, v in ref["items"].items()) == a["items"]
    assert {int(json.loads(s[0])): json.loads(s[3]) for s in a["stats"]} == \
        {cid: c["orders_count"] for cid, c in ref["customers"].items()}
    # replaying everything once more changes nothing
    for topic, body in h:
        deliver(session, messy, topic, body)
    assert run(session, messy)["applied"] == 0
    assert dump(session, messy.id) == b


def test_scores_fitted_without_stored_model(session):
    shop = make_shop(session, "fit.myshopify.com")
    for oid in range(1, 6):
        deliver(session, shop, "orders/create", payload(oid, cust=6000 + oid, day=oid, subtotal=f"{oid * 10}.00"))
    res = run(session, shop)
    assert res["customers"] == 5 and res["segment_changes"] == 5
    rows = session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop.id)
                           .order_by(CustomerStats.customer_id)).all()
    assert [r.m_score for r in rows] == [1, 2, 3, 4, 5]
    assert all(r.segment for r in rows)


def test_job_entry_point(db_url, session):
    from shopify_app.config import Config
    from workers import context
    from workers.order_jobs import process_pending_orders

    shop = make_shop(session, "entry.myshopify.com")
    deliver(session, shop, "orders/create", payload(1))
    session.commit()
    context.set_config(Config(env="test", database_url=db_url, redis_url="redis://127.0.0.1:1/0"))
    try:
        res = process_pending_orders(shop.id)
    finally:
        context.set_config(None)
    assert res["applied"] == 1
    session.expire_all()
    assert session.get(CustomerStats, (shop.id, 5001)).orders_count == 1


def test_redacted_customer_orders_stay_guest_orders(session):
    from sqlalchemy import update

    shop = make_shop(session, "redact.myshopify.com")
    deliver(session, shop, "orders/create", payload(1))
    run(session, shop)
    # what customers/redact does: stats erased, orders unlinked
    session.execute(CustomerStats.__table__.delete().where(CustomerStats.shop_id == shop.id))
    session.execute(update(Order).where(Order.shop_id == shop.id).values(customer_id=None))
    session.commit()
    deliver(session, shop, "orders/updated", payload(1, upd=1, cust=None, items=((P1, 1),)))
    run(session, shop)
    d = dump(session, shop.id)
    assert d["stats"] == [] and d["pairs"] == [] and d["items"] == [("*", "2024-07", P1, 1)]


def test_enqueue_coalesces_per_shop(config):
    from rq import Queue

    from shopify_app.queues import WEBHOOKS, get_queue
    from workers.order_jobs import enqueue_process_orders

    a = enqueue_process_orders(config, 42)
    b = enqueue_process_orders(config, 42)
    c = enqueue_process_orders(config, 43)
    assert a.id == b.id == "process-orders-42" and c.id == "process-orders-43"
    q: Queue = get_queue(config, WEBHOOKS)
    assert sorted(q.job_ids) == ["process-orders-42", "process-orders-43"]


def test_concurrent_jobs_of_one_shop_serialize(db_url, session):
    import threading

    from shopify_app.db import session_factory

    h = _history()
    clean = make_shop(session, "c1.myshopify.com")
    busy = make_shop(session, "c2.myshopify.com")
    for s in (clean, busy):
        _rfm(session, s)
    for topic, body in h:
        deliver(session, clean, topic, body)
        deliver(session, busy, topic, body)
        deliver(session, busy, topic, body)      # every delivery twice
    session.commit()
    run(session, clean)
    errors = []
    barrier = threading.Barrier(4)

    def worker():
        try:
            barrier.wait(10)
            for _ in range(10):
                with session_factory(db_url)() as s:
                    process_shop_orders(s, busy.id, limit=2, now=NOW)
                    s.commit()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    session.expire_all()
    assert dump(session, clean.id) == dump(session, busy.id)


def test_enqueue_while_running_uses_the_followup_id(config):
    from rq.job import Job as RQJob

    from shopify_app.queues import redis_connection
    from workers.order_jobs import enqueue_process_orders

    a = enqueue_process_orders(config, 44)
    a.set_status("started")
    b = enqueue_process_orders(config, 44)
    assert b.id == "process-orders-44-next"
    assert enqueue_process_orders(config, 44).id == b.id
    b.set_status("started")
    assert enqueue_process_orders(config, 44) is None
    assert RQJob.fetch("process-orders-44", connection=redis_connection(config.redis_url)).id == a.id


# --------------------------------------------------------------------------------------------- RFM model upkeep
def test_first_batch_stores_thresholds_and_later_batches_use_them(session):
    shop = make_shop(session, "store.myshopify.com")
    for oid in range(1, 6):
        deliver(session, shop, "orders/create", payload(oid, cust=6000 + oid, day=oid, subtotal=f"{oid * 10}.00"))
    run(session, shop)
    m = session.get(ShopModel, (shop.id, "rfm"))
    # net 10..50: 4 * q = 0.8, 1.6, 2.4, 3.2 -> 18, 26, 34, 42
    assert m.version == 1 and m.customers_at_fit == 5 and m.params["edges"]["monetary"] == [18.0, 26.0, 34.0, 42.0]
    # a big new customer is scored on the stored edges (M 5 above 42), not on a refit
    deliver(session, shop, "orders/create", payload(9, cust=6009, day=9, subtotal="1000.00"))
    res = run(session, shop)
    session.expire_all()
    m = session.get(ShopModel, (shop.id, "rfm"))
    assert m.version == 1 and m.params["edges"]["monetary"] == [18.0, 26.0, 34.0, 42.0]
    assert m.params["customers_now"] == 6 and res["refit_rfm"] is True      # 6 vs 5 at fit: +20 % > 10 %
    assert stats(session, shop, 6009).m_score == 5
    assert session.scalars(select(SegmentChange.reason).where(SegmentChange.customer_id == 6009)).all() == ["order"]


def test_refit_trigger_on_customer_count_change(config, session):
    from shopify_app.queues import DEFAULT, get_queue
    from workers import context
    from workers.order_jobs import process_pending_orders
    from workers.rfm_jobs import refit_rfm

    shop = make_shop(session, "trigger.myshopify.com")
    for oid in range(1, 11):
        deliver(session, shop, "orders/create", payload(oid, cust=7000 + oid, day=oid))
    session.commit()
    context.set_config(config)
    try:
        assert process_pending_orders(shop.id)["refit_rfm"] is False      # fitted on these 10, stored
        deliver(session, shop, "orders/create", payload(11, cust=7011, day=11))
        session.commit()
        assert process_pending_orders(shop.id)["refit_rfm"] is False      # 11 vs 10: exactly 10 %, not more
        refits = lambda: [j for j in get_queue(config, DEFAULT).job_ids if j.startswith("refit-rfm")]  # noqa: E731
        assert refits() == []
        deliver(session, shop, "orders/create", payload(12, cust=7012, day=12))
        deliver(session, shop, "orders/create", payload(13, cust=7001, day=13))    # existing customer: no change
        session.commit()
        assert process_pending_orders(shop.id)["refit_rfm"] is True       # 12 vs 10
        deliver(session, shop, "orders/create", payload(14, cust=7014, day=14))
        session.commit()
        assert process_pending_orders(shop.id)["refit_rfm"] is True
        assert refits() == ["refit-rfm-%d" % shop.id]                      # coalesced: one job
        res = refit_rfm(shop.id, now=NOW.isoformat())
        assert res["customers"] == 13
        session.expire_all()
        m = session.get(ShopModel, (shop.id, "rfm"))
        assert (m.customers_at_fit, m.params["customers_now"], m.version) == (13, 13, 2)
        # a customer leaving (their only order cancelled) counts down
        deliver(session, shop, "orders/cancelled", payload(14, cust=7014, day=14, upd=1, cancelled=True))
        session.commit()
        process_pending_orders(shop.id)
        session.expire_all()
        assert session.get(ShopModel, (shop.id, "rfm")).params["customers_now"] == 12
    finally:
        context.set_config(None)


def test_time_budget_leaves_the_rest_pending(session):
    shop = make_shop(session, "budget.myshopify.com")
    for oid in range(1, 6):
        deliver(session, shop, "orders/create", payload(oid, cust=8000 + oid, day=oid))
    # Budget spent before the first delivery: that one is still applied (a batch always makes progress), the rest
    # is left for the next batch.
    res = process_shop_orders(session, shop.id, now=NOW, budget_s=0.0)
    session.commit()
    assert res["more"] is True and res["deliveries"] == 1 and res["applied"] == 1
    statuses = session.scalars(select(WebhookDelivery.status).where(WebhookDelivery.shop_id == shop.id)
                               .order_by(WebhookDelivery.id)).all()
    assert statuses == ["processed"] + ["pending_analytics"] * 4
    res = process_shop_orders(session, shop.id, now=NOW, budget_s=60.0)
    session.commit()
    assert res["more"] is False and res["applied"] == 4


def test_webhook_lines_take_the_product_type_from_the_catalogue(session):
    """REST line items carry no product type; the stored Product supplies it, like the bulk import's productType."""
    from shopify_app.models import Product

    shop = make_shop(session, "types.myshopify.com")
    session.add_all([Product(shop_id=shop.id, id=P1, title="Mug", product_type="Kitchen"),
                     Product(shop_id=shop.id, id=P2, title="Spade", product_type="Garden")])
    session.commit()
    deliver(session, shop, "orders/create", payload(1, items=((P1, 2), (P2, 1), (P3, 4))))
    run(session, shop)
    stats = session.get(CustomerStats, (shop.id, 5001))
    # P3 has no catalogue row: its quantity counts in items_count but has no type to count
    assert stats.product_type_counts == {"Garden": 1, "Kitchen": 2}
    lines = {ln.product_id: ln.product_type for ln in session.scalars(
        select(OrderLine).where(OrderLine.shop_id == shop.id, OrderLine.order_id == 1))}
    assert lines[P1] == "Kitchen" and lines[P2] == "Garden" and lines[P3] in (None, "")


def test_pair_budget_ends_the_batch_after_the_order_that_reaches_it(session):
    """max_pairs bounds the commit: deliveries after the one that took the batch to max_pairs pair increments
    stay pending; the counts of what was applied are exact and the rest follows in the next batch."""
    shop = make_shop(session, "pairs.myshopify.com")
    products = [P1, P2, P3, P1 + 1000, P1 + 2000]
    for oid in range(1, 5):           # 5 products -> 10 pairs per order, the same pairs every time
        deliver(session, shop, "orders/create", payload(oid, cust=8100 + oid, day=oid,
                                                        items=tuple((p, 1) for p in products)))
    res = process_shop_orders(session, shop.id, now=NOW, max_pairs=10)
    session.commit()
    assert res["more"] is True and res["applied"] == 1
    assert pair_total(session, shop.id) == 10
    res = process_shop_orders(session, shop.id, now=NOW, max_pairs=25)   # reached by the last order only
    session.commit()
    assert res["more"] is False and res["applied"] == 3
    assert pair_total(session, shop.id) == 40


def test_line_budget_ends_the_batch_after_the_order_that_reaches_it(session):
    """max_lines bounds what the write phase inserts under the lock: deliveries after the one whose version's lines
    took the batch to max_lines stay pending, unread (their attempts are not counted)."""
    shop = make_shop(session, "lines.myshopify.com")
    for oid in range(1, 5):           # 2 product lines + 1 custom line = 3 lines per order
        deliver(session, shop, "orders/create", payload(oid, cust=8200 + oid, day=oid))
    res = process_shop_orders(session, shop.id, now=NOW, max_lines=5)
    session.commit()
    assert res["more"] is True and res["applied"] == 2 and res["deliveries"] == 2
    assert sorted(session.scalars(select(WebhookDelivery.attempts).where(WebhookDelivery.shop_id == shop.id))) == \
        [0, 0, 1, 1]
    res = process_shop_orders(session, shop.id, now=NOW, max_lines=6)
    session.commit()
    assert res["more"] is False and res["applied"] == 2
    assert session.scalar(select(func.count()).select_from(OrderLine).where(OrderLine.shop_id == shop.id)) == 12


def pair_total(session, shop_id):
    return sum(n for _, _, ps in read_bucket_counts(session, shop_id).values() for n in ps.values())


def test_rules_mining_after_orders_is_debounced_not_per_batch(config, session):
    """Three batches in a row schedule ONE mining trigger RULES_DEBOUNCE_S later (RQ's scheduled registry), not a
    mining job each; the trigger, when it runs, enqueues the shop's coalesced mining job."""
    from rq.registry import ScheduledJobRegistry

    from shopify_app.queues import DEFAULT, get_queue, redis_connection
    from workers import context
    from workers.order_jobs import RULES_DEBOUNCE_S, mine_rules_now, process_pending_orders, rules_debounce_key

    shop = make_shop(session, "debounce.myshopify.com")
    context.set_config(config)
    try:
        for oid in range(1, 4):
            deliver(session, shop, "orders/create", payload(oid, cust=7100 + oid, day=oid))
            session.commit()
            assert process_pending_orders(shop.id)["applied"] == 1
        q = get_queue(config, DEFAULT)
        scheduled = ScheduledJobRegistry(queue=q).get_job_ids()
        assert len(scheduled) == 1
        assert not [j for j in q.job_ids if j.startswith("mine-rules")]          # nothing mined per batch
        ttl = redis_connection(config.redis_url).ttl(rules_debounce_key(config, shop.id))
        assert 0 < ttl <= RULES_DEBOUNCE_S
        assert mine_rules_now(shop.id) == f"mine-rules-{shop.id}"
        assert f"mine-rules-{shop.id}" in q.job_ids
    finally:
        context.set_config(None)


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_delivery_committed_after_the_jobs_last_read_is_read_by_the_same_job(config, session, monkeypatch,
                                                                               pipelined):
    """The intake commits a delivery, then sets the wake key (SET NX) and enqueues - but when the shop's job and its
    follow-up are both running, that enqueue is a no-op. The job therefore checks the key before it stops: set
    means a delivery came after its last read, so it reads again instead of leaving it pending."""
    import workers.order_jobs as jobs
    from shopify_app.queues import order_wake_key, redis_connection
    from workers import context

    shop = make_shop(session, "late.myshopify.com")
    deliver(session, shop, "orders/create", payload(1, cust=7201, day=1))
    session.commit()
    monkeypatch.setattr(jobs, "PIPELINE", pipelined)
    real, real_woken = jobs._Pipeline.next, jobs._woken
    calls = []

    def counted(self):
        res = real(self)
        calls.append(res["deliveries"])
        return res

    def with_a_late_delivery(shop_id):
        if len(calls) == 2:           # after the read that found nothing: a delivery arrives, the intake wakes
            deliver(session, shop, "orders/create", payload(2, cust=7202, day=2))
            session.commit()
            redis_connection(config.redis_url).set(order_wake_key(config, shop_id), 1, nx=True)
        return real_woken(shop_id)

    monkeypatch.setattr(jobs._Pipeline, "next", counted)
    monkeypatch.setattr(jobs, "_woken", with_a_late_delivery)
    context.set_config(config)
    try:
        res = jobs.process_pending_orders(shop.id)
    finally:
        context.set_config(None)
    assert calls == [1, 0, 1, 0] and res["applied"] == 2 and res["more"] is False
    assert not redis_connection(config.redis_url).exists(order_wake_key(config, shop.id))


def test_write_counts_refuses_expanded_pairs_rather_than_dropping_them(session):
    """Pair deltas are written from basket changes (diff(expand_pairs=False), as apply_version builds them); a
    Delta with expanded `pairs` would otherwise lose its pair counts silently."""
    import pytest

    from shopify_app.analytics.incremental import contribution, diff
    from workers.order_jobs import write_counts

    shop = make_shop(session, "expanded.myshopify.com")
    batch = diff(None, contribution(order_from_rest(payload(1))))
    assert batch.pairs
    with pytest.raises(ValueError, match="expand_pairs=False"):
        write_counts(session, shop.id, batch)


# --------------------------------------------------------------------------------------------- prepare / write
# The job prepares a batch without the write lock (prepare_batch, a read transaction) and writes it under the lock
# (write_batch). A change landing in between must be noticed and the batch prepared again under the lock.
def prepare(db_url, shop_id, limit=500):
    from shopify_app.db import reader_scope
    from workers.order_jobs import prepare_batch

    with reader_scope(db_url) as r:
        return prepare_batch(r, shop_id, limit=limit, now=NOW)


def write(db_url, shop_id, prep):
    from shopify_app.db import session_scope
    from workers.order_jobs import write_batch

    with session_scope(db_url) as s:
        return write_batch(s, shop_id, prep)


def state(session, shop_id):
    """dump() plus the sequential tables (item rows; pair rows + blobs summed). Ends the session's transaction."""
    from shopify_app.models import SequentialItemDelta
    from workers.sequential_jobs import read_pair_sums

    session.expire_all()
    out = dump(session, shop_id)
    out["seq_items"] = sorted((r.bucket, r.item_id, r.count) for r in session.scalars(
        select(SequentialItemDelta).where(SequentialItemDelta.shop_id == shop_id)) if r.count)
    out["seq_pairs"] = sorted((k, n) for k, n in read_pair_sums(session, shop_id).items() if n)
    session.commit()
    return out


def assert_sequential_is_a_rebuild(session, shop_id):
    from workers.sequential_jobs import rebuild_sequential

    live = state(session, shop_id)
    rebuild_sequential(session, shop_id)
    session.flush()
    rebuilt = state(session, shop_id)
    assert (live["seq_items"], live["seq_pairs"]) == (rebuilt["seq_items"], rebuilt["seq_pairs"])


def reconcile_write(db_url, shop_id, body):
    """What reconciliation writes for an order (workers.reconcile_jobs._apply_batch): its current state."""
    from shopify_app.analytics.incremental import Delta
    from shopify_app.db import session_scope
    from workers.context import lock_shop
    from workers.order_jobs import apply_version, rescore_customers, update_customers, write_counts

    with session_scope(db_url) as s:
        shop = lock_shop(s, shop_id)
        batch = Delta()
        assert apply_version(s, shop_id, order_from_rest(body), batch, NOW, tie_wins=True)
        write_counts(s, shop_id, batch)
        rescore_customers(s, shop, update_customers(s, shop_id, batch, NOW), NOW)


def redact(db_url, shop_id, customer_id, orders):
    """customers/redact as the webhook handler runs it (stats erased, orders unlinked, pending bodies scrubbed)."""
    from shopify_app.db import session_scope
    from workers.ingest import _customer_redact

    with session_scope(db_url) as s:
        shop = s.get(Shop, shop_id)
        body = {"shop_domain": shop.domain, "customer": {"id": customer_id}, "orders_to_redact": orders}
        d = deliver(s, shop, "customers/redact", body)
        d.status = "received"
        _customer_redact(s, d, shop, body)
        d.body = None


def test_split_batches_equal_locked_batches_without_fallbacks(db_url, session):
    """Nothing written in between: every prepared batch is written as prepared, with the same result as batches
    computed under the lock (process_shop_orders), sequential tables included."""
    h = _history()
    locked = make_shop(session, "locked.myshopify.com")
    split = make_shop(session, "split.myshopify.com")
    rng = random.Random(3)
    messy = h + rng.sample(h, 6)
    rng.shuffle(messy)
    for shop in (locked, split):
        _rfm(session, shop)
        for topic, body in messy:
            deliver(session, shop, topic, body)
    session.commit()
    while run(session, locked, limit=3)["deliveries"]:
        pass
    results = []
    while True:
        prep = prepare(db_url, split.id, limit=3)
        if not prep.read:
            break
        results.append(write(db_url, split.id, prep))
    assert len(results) == -(-len(messy) // 3) and all(r["fallback"] == 0 for r in results)
    assert state(session, split.id) == state(session, locked.id)
    assert_sequential_is_a_rebuild(session, split.id)


def test_an_order_version_written_between_prepare_and_write_is_applied_exactly(db_url, session):
    """A newer version of an order in the batch is written by reconciliation after the batch was prepared from
    the older stored row: without the re-check the batch would put the stale version back and count its diff."""
    shop = make_shop(session, "between.myshopify.com")
    clean = make_shop(session, "between-clean.myshopify.com")
    v0 = payload(1, day=1, items=((P1, 1), (P2, 1)))
    v1 = payload(1, day=1, upd=1, items=((P1, 1), (P3, 1)))
    v2 = payload(1, day=1, upd=2, items=((P2, 2), (P3, 1)), subtotal="70.00")
    other = payload(2, day=5, items=((P1, 1),))        # the same customer's next order: sequential pairs
    for sh in (shop, clean):
        _rfm(session, sh)
        deliver(session, sh, "orders/create", v0)
        deliver(session, sh, "orders/create", other)
        run(session, sh)
        deliver(session, sh, "orders/updated", v1)
    session.commit()
    prep = prepare(db_url, shop.id)
    assert prep.applied == 1
    reconcile_write(db_url, shop.id, v2)
    res = write(db_url, shop.id, prep)
    assert res["fallback"] == 1 and (res["applied"], res["skipped"], res["deliveries"]) == (0, 1, 1)
    reconcile_write(db_url, clean.id, v2)              # the same events, in the order they were applied
    run(session, clean)
    got = state(session, shop.id)
    assert got == state(session, clean.id)
    assert session.get(Order, (shop.id, 1)).subtotal == 70.0
    assert_sequential_is_a_rebuild(session, shop.id)


def test_a_redaction_between_prepare_and_write_is_applied_exactly(db_url, session):
    """customers/redact unlinks the customer's stored orders and scrubs their pending deliveries after the batch
    was prepared: the batch must not bring the customer back (stats, sequential counts)."""
    gone, kept = 987654321002, 5002
    shop = make_shop(session, "redact-between.myshopify.com")
    clean = make_shop(session, "redact-clean.myshopify.com")
    for sh in (shop, clean):
        _rfm(session, sh)
        deliver(session, sh, "orders/create", payload(1, cust=gone, day=1, items=((P1, 1), (P2, 1))))
        run(session, sh)
        deliver(session, sh, "orders/create", payload(2, cust=gone, day=4, items=((P3, 1),)))
        deliver(session, sh, "orders/create", payload(3, cust=kept, day=2, items=((P1, 1), (P3, 1))))
    session.commit()
    prep = prepare(db_url, shop.id)
    assert prep.applied == 2 and gone in prep.customers
    redact(db_url, shop.id, gone, [1, 2])
    res = write(db_url, shop.id, prep)
    assert res["fallback"] == 1 and res["applied"] == 2
    redact(db_url, clean.id, gone, [1, 2])
    run(session, clean)
    got = state(session, shop.id)
    assert got == state(session, clean.id)
    assert str(gone) not in json.dumps(got, default=str)
    assert_sequential_is_a_rebuild(session, shop.id)


def test_deliveries_written_by_another_job_in_between_are_not_applied_twice(db_url, session):
    """Two jobs prepared the same deliveries; the second to write finds them processed and applies nothing."""
    h = _history()
    shop = make_shop(session, "twice.myshopify.com")
    clean = make_shop(session, "twice-clean.myshopify.com")
    for sh in (shop, clean):
        _rfm(session, sh)
        for topic, body in h:
            deliver(session, sh, topic, body)
    session.commit()
    first, second = prepare(db_url, shop.id), prepare(db_url, shop.id)
    assert write(db_url, shop.id, first)["fallback"] == 0
    res = write(db_url, shop.id, second)
    assert res["fallback"] == 1 and res["deliveries"] == 0 and res["applied"] == 0
    run(session, clean)
    assert state(session, shop.id) == state(session, clean.id)


def test_a_catalogue_change_between_prepare_and_write_is_used(db_url, session):
    """The batch looked up product types that were not there yet; the catalogue sync stores them before the
    write: the order is applied with them (as under the lock)."""
    from shopify_app.models import Product

    shop = make_shop(session, "catalogue-between.myshopify.com")
    deliver(session, shop, "orders/create", payload(1, items=((P1, 2), (P2, 1))))
    session.commit()
    prep = prepare(db_url, shop.id)
    session.add(Product(shop_id=shop.id, id=P1, title="Mug", product_type="Kitchen"))
    session.commit()
    res = write(db_url, shop.id, prep)
    assert res["fallback"] == 1 and res["applied"] == 1
    assert stats(session, shop, 5001).product_type_counts == {"Kitchen": 2}


def test_jobs_running_batches_concurrently_end_exact(db_url, session):
    """Four threads run the job's batches (run_batch: prepare without the lock, write under it) on one shop whose
    every delivery came twice: whatever interleaving and fallbacks, the result is one clean pass."""
    import threading

    from shopify_app.config import Config
    from workers import context
    from workers.order_jobs import run_batch

    h = _history()
    clean = make_shop(session, "race-clean.myshopify.com")
    busy = make_shop(session, "race.myshopify.com")
    for sh in (clean, busy):
        _rfm(session, sh)
    for topic, body in h:
        deliver(session, clean, topic, body)
        deliver(session, busy, topic, body)
        deliver(session, busy, topic, body)
    session.commit()
    run(session, clean)
    errors, results = [], []
    barrier = threading.Barrier(4)

    def worker():
        try:
            barrier.wait(10)
            for _ in range(10):
                results.append(run_batch(busy.id, limit=2, now=NOW))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    context.set_config(Config(env="test", database_url=db_url, redis_url="redis://127.0.0.1:1/0"))
    try:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        context.set_config(None)
    assert not errors
    assert sum(r["deliveries"] for r in results) == 2 * len(h)
    assert state(session, busy.id) == state(session, clean.id)
    assert_sequential_is_a_rebuild(session, busy.id)


def test_a_callers_session_sees_what_the_batch_wrote(session):
    """The batch writes Order rows and delivery statuses with bulk statements; a caller's own session that holds
    those rows (process_shop_orders(s, ...)) must not keep the stale objects (sessions here do not expire on
    commit)."""
    shop = make_shop(session, "stale.myshopify.com")
    first = deliver(session, shop, "orders/create", payload(1, subtotal="50.00"))
    run(session, shop)
    order = session.get(Order, (shop.id, 1))
    assert first.status == "processed" and first.body is None and order.subtotal == 50.0
    second = deliver(session, shop, "orders/updated", payload(1, upd=1, subtotal="30.00"))
    run(session, shop)
    assert second.status == "processed" and order.subtotal == 30.0


def test_identical_bodies_in_a_batch_are_converted_once_and_applied_once(session, monkeypatch):
    """orders/create + orders/paid of an order paid at checkout (and a re-delivery) carry the same JSON: the batch
    converts it once; the copy is skipped as not newer, exactly as when it was converted again."""
    import workers.order_jobs as oj

    calls = []
    real = oj.order_from_rest
    monkeypatch.setattr(oj, "order_from_rest", lambda p: calls.append(p["id"]) or real(p))
    shop = make_shop(session, "same-body.myshopify.com")
    body = payload(7)
    for topic in ("orders/create", "orders/paid", "orders/create"):
        deliver(session, shop, topic, body)
    deliver(session, shop, "orders/updated", payload(7, upd=1, items=((P1, 2),)))   # a different body: converted
    res = run(session, shop)
    assert calls == [7, 7]
    assert (res["applied"], res["skipped"], res["deliveries"]) == (2, 2, 4)
    assert dump(session, shop.id)["items"] == [("*", "2024-07", P1, 1)]
    assert set(session.scalars(select(WebhookDelivery.status).where(WebhookDelivery.shop_id == shop.id))) == \
        {"processed"}


@pytest.mark.parametrize("pipelined", [True, False])
def test_the_job_hands_over_only_when_another_job_waits_in_its_queue(config, session, monkeypatch, pipelined):
    """Past DRAIN_SECONDS the job keeps draining while the `webhooks` queue is empty (passing the follow-ups due so
    far on) and hands over to a follow-up job as soon as a job waits there; past DRAIN_MAX_SECONDS in any case."""
    import workers.order_jobs as jobs
    from shopify_app.queues import WEBHOOKS, get_queue, order_job_id
    from workers import context

    shop = make_shop(session, "drain.myshopify.com")
    for k in range(6):
        deliver(session, shop, "orders/create", payload(k + 1, cust=7300 + k, day=1 + k))
    session.commit()
    monkeypatch.setattr(jobs, "BATCH_DELIVERIES", 1)          # one delivery per batch: 6 batches
    monkeypatch.setattr(jobs, "DRAIN_SECONDS", 0.0)           # every batch is past the drain time
    followups = []
    monkeypatch.setattr(jobs, "enqueue_followups", lambda cfg, shop_id, due: followups.append(dict(due)))
    monkeypatch.setattr(jobs, "PIPELINE", pipelined)
    real_next = jobs._Pipeline.next
    batches = []

    def run_and_maybe_queue(self):
        res = real_next(self)
        batches.append(res["applied"])
        if len(batches) == 3:                                 # another shop's job arrives during the third batch
            get_queue(config, WEBHOOKS).enqueue("workers.order_jobs.process_pending_orders", 999_999)
        return res

    monkeypatch.setattr(jobs._Pipeline, "next", run_and_maybe_queue)
    context.set_config(config)
    try:
        res = jobs.process_pending_orders(shop.id)
        assert batches == [1, 1, 1] and res["applied"] == 3 and res["more"] is True
        # batches 1 and 2: the queue was empty, the job went on and passed their follow-ups on; batch 3: handed over
        assert [f["applied"] for f in followups] == [True, True, True]
        assert order_job_id(shop.id) in get_queue(config, WEBHOOKS).job_ids or \
            order_job_id(shop.id, True) in get_queue(config, WEBHOOKS).job_ids
        get_queue(config, WEBHOOKS).empty()
        monkeypatch.setattr(jobs, "DRAIN_MAX_SECONDS", 0.0)   # the job's own time limit hands over regardless
        batches.clear()
        res = jobs.process_pending_orders(shop.id)
        assert batches == [1] and res["more"] is True
    finally:
        context.set_config(None)


@pytest.mark.parametrize("pipelined", [True, False])
def test_the_job_lingers_after_a_small_batch_so_the_next_gathers(config, session, monkeypatch, pipelined):
    """After a batch that read deliveries but fewer than BATCH_LINGER_BELOW, the job waits BATCH_LINGER_S before
    reading again (what arrives meanwhile forms one batch); after an empty read it ends without waiting; a batch of
    at least BATCH_LINGER_BELOW deliveries is followed by the next read at once."""
    import time as _time

    import workers.order_jobs as jobs
    from workers import context

    shop = make_shop(session, "linger.myshopify.com")
    for k in range(3):
        deliver(session, shop, "orders/create", payload(k + 1, cust=7600 + k, day=1 + k))
    session.commit()
    monkeypatch.setattr(jobs, "enqueue_followups", lambda *a: None)
    monkeypatch.setattr(jobs, "BATCH_LINGER_S", 0.01)
    real_sleep, waits, arrivals = _time.sleep, [], [[4, 5], []]

    def sleep(seconds):
        if seconds == jobs.BATCH_LINGER_S:                  # the linger: two more orders arrive during the first one
            waits.append(seconds)
            for oid in arrivals[len(waits) - 1] if len(waits) <= len(arrivals) else []:
                deliver(session, shop, "orders/create", payload(oid, cust=7600 + oid, day=1 + oid))
            session.commit()
        real_sleep(seconds)

    monkeypatch.setattr(jobs, "PIPELINE", pipelined)     # pipelined: the wait overlaps the batch's write
    real_next, batches = jobs._Pipeline.next, []

    def spy(self):
        res = real_next(self)
        batches.append(res.get("deliveries", 0))
        return res

    monkeypatch.setattr(jobs._Pipeline, "next", spy)
    monkeypatch.setattr(_time, "sleep", sleep)
    context.set_config(config)
    try:
        res = jobs.process_pending_orders(shop.id)
        assert res["applied"] == 5
        assert batches == [3, 2, 0] and len(waits) == 2    # a wait after each small batch, none after the empty read
        for k in range(6, 9):
            deliver(session, shop, "orders/create", payload(k, cust=7600 + k, day=k))
        session.commit()
        monkeypatch.setattr(jobs, "BATCH_LINGER_BELOW", 3)     # 3 deliveries: not a small batch any more
        batches.clear()
        waits.clear()
        res = jobs.process_pending_orders(shop.id)
        assert res["applied"] == 3 and batches == [3, 0] and waits == []
    finally:
        context.set_config(None)


def test_run_batch_checkpoints_after_the_write_turn_and_restores_the_connection(db_url, session):
    """SQLite: the batch's commit does not checkpoint (wal_autocheckpoint 0 while the job holds the connection);
    the job's background checkpointer runs after it left the write turn; the pooled connections keep SQLite's
    default."""
    import time

    import pytest

    from shopify_app.config import Config
    from shopify_app.db import get_engine
    from workers import context
    from shopify_app.db import Checkpointer
    from workers.order_jobs import run_batch

    eng = get_engine(db_url)
    if eng.dialect.name != "sqlite":
        pytest.skip("WAL checkpoints are SQLite's")
    shop = make_shop(session, "wal.myshopify.com")
    deliver(session, shop, "orders/create", payload(1, cust=7401, day=1))
    session.commit()
    checkpointer = Checkpointer.of(db_url)
    done = checkpointer.checkpoints
    context.set_config(Config(env="test", database_url=db_url, redis_url="redis://127.0.0.1:1/0"))
    try:
        res = run_batch(shop.id, limit=10, now=NOW)
    finally:
        context.set_config(None)
    assert res["applied"] == 1
    for _ in range(200):                                            # the background checkpoint ran
        if checkpointer.checkpoints > done:
            break
        time.sleep(0.05)
    assert checkpointer.checkpoints > done
    conns = [eng.connect() for _ in range(eng.pool.size())]        # every pooled connection (and maybe new ones)
    try:
        got = [c.connection.dbapi_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] for c in conns]
        assert got == [1000] * len(conns)
    finally:
        for c in conns:
            c.close()


def test_the_jobs_items_cache_follows_changed_orders(config, session, monkeypatch):
    """One job, one delivery per batch: its batches reuse the customer's order items read by earlier batches
    (items_cache) and must re-read an order whose row changed in between (new version, other items, deletion), by
    this job or by another writer (reconciliation): the sequential tables equal a rebuild, the rest a clean pass."""
    import workers.order_jobs as jobs
    from workers import context

    shop = make_shop(session, "cache.myshopify.com")
    clean = make_shop(session, "cache-clean.myshopify.com")
    for sh in (shop, clean):
        _rfm(session, sh)
    h = [("orders/create", payload(1, cust=7501, day=1)), ("orders/create", payload(2, cust=7501, day=3)),
         ("orders/updated", payload(1, cust=7501, day=1, upd=1, items=((P3, 1),))),       # order 1: other items
         ("orders/create", payload(3, cust=7501, day=5, items=((P1, 1), (P3, 2)))),
         ("orders/updated", payload(2, cust=7501, day=3, upd=2, refund_first=True)),    # order 2: refunded lines
         ("orders/delete", {"id": 1}),
         ("orders/create", payload(4, cust=7501, day=6, items=((P2, 1),)))]
    for topic, body in h:
        deliver(session, shop, topic, body)
        deliver(session, clean, topic, body)
    session.commit()
    monkeypatch.setattr(jobs, "BATCH_DELIVERIES", 1)
    monkeypatch.setattr(jobs, "PIPELINE", False)     # spies run_batch (the pipeline: tests/pipeline/test_order_pipeline.py)
    caches = []
    real_run = jobs.run_batch

    def spy(shop_id, **kw):
        caches.append(kw.get("items_cache"))
        if len(caches) == 4:       # another writer changes order 2 between two batches of the job
            reconcile_write(config.database_url, shop.id, payload(2, cust=7501, day=3, upd=1, items=((P1, 3),)))
        return real_run(shop_id, **kw)

    monkeypatch.setattr(jobs, "run_batch", spy)
    monkeypatch.setattr(jobs, "enqueue_followups", lambda *a: None)
    context.set_config(config)
    try:
        res = jobs.process_pending_orders(shop.id)
    finally:
        context.set_config(None)
    assert res["deliveries"] == len(h) and caches[0] is not None and all(c is caches[0] for c in caches)
    assert caches[0]                                      # the batches did reuse items
    run(session, clean)                                   # the reconciled version is superseded by upd=2 anyway
    a, b = state(session, shop.id), state(session, clean.id)
    same = ("lines", "items", "pairs", "baskets", "seq_items", "seq_pairs")     # orders / stats: stamped 'now'
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert [s[:13] for s in a["stats"]] == [s[:13] for s in b["stats"]]          # up to the scores (recency)
    assert_sequential_is_a_rebuild(session, shop.id)
