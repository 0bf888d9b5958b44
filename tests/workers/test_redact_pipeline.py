"""customers/redact after real order processing: nothing of the customer is left anywhere, aggregates stay right.

Orders go through the order job (stats, counts, sequential counts), then the compliance handler runs. A scan of
every shop-keyed table, every column (JSON included, as text), must not find the customer's id; the shop's product
counts are unchanged (their orders stay as guest orders, as Shopify keeps the orders themselves); sequential counts
equal a rebuild; the other customer is untouched.
"""
from __future__ import annotations

import json

from sqlalchemy import select

from shopify_app.models import Base, CustomerStats, SequentialItemDelta, WebhookDelivery
from workers.rebuild_jobs import read_bucket_counts
from tests.pipeline.test_order_jobs import P1, P2, P3, deliver, make_shop, payload, run
from workers.ingest import _customer_redact
from workers.sequential_jobs import read_pair_sums, rebuild_sequential

GONE = 987654321001          # an id no count or amount in this test can collide with
KEPT = 5002
# Tables that legitimately name the customer after the redaction: the merchant's record that the request was
# received and carried out.
RECORD_TABLES = {"compliance_requests"}


def _rows_mentioning(session, shop_id: int, needle: int) -> list[tuple[str, dict]]:
    hits = []
    for table in Base.metadata.sorted_tables:
        if "shop_id" not in table.c or table.name in RECORD_TABLES:
            continue
        for row in session.execute(select(table).where(table.c.shop_id == shop_id)).mappings():
            text = json.dumps({k: v for k, v in row.items()}, default=str)
            if str(needle) in text:
                hits.append((table.name, dict(row)))
    return hits


def _seq(session, shop_id):
    return (sorted((r.bucket, r.item_id, r.count) for r in session.scalars(
                select(SequentialItemDelta).where(SequentialItemDelta.shop_id == shop_id)) if r.count),
            sorted((b, a, c, n) for (b, a, c), n in read_pair_sums(session, shop_id).items()))   # rows + payloads


def test_redact_leaves_nothing_of_the_customer_and_keeps_aggregates(session):
    shop = make_shop(session, "redact-e2e.myshopify.com")
    # GONE buys P1+P2, then P3 five days later (a sequential pair); KEPT buys P1+P3.
    deliver(session, shop, "orders/create", payload(1, cust=GONE, items=((P1, 1), (P2, 1)), day=1))
    deliver(session, shop, "orders/create", payload(2, cust=GONE, items=((P3, 1),), day=6))
    deliver(session, shop, "orders/create", payload(3, cust=KEPT, items=((P1, 1), (P3, 1)), day=2))
    run(session, shop)
    assert _rows_mentioning(session, shop.id, GONE), "the scan must see the customer before the redaction"
    pairs_before = {b: pairs for b, (_, _, pairs) in read_bucket_counts(session, shop.id).items()}
    kept_before = session.get(CustomerStats, (shop.id, KEPT))
    kept_before = (kept_before.orders_count, kept_before.net_revenue, kept_before.segment)
    seq_items_before, seq_pairs_before = _seq(session, shop.id)
    assert seq_items_before, "GONE's first order is an antecedent"
    assert seq_pairs_before, "GONE bought P3 five days after P1 + P2: pairs (in blobs) to subtract"

    d = deliver(session, shop, "customers/redact", {"shop_domain": shop.domain, "customer": {"id": GONE},
                                                    "orders_to_redact": [1, 2]})
    d.status = "received"
    _customer_redact(session, d, shop, json.loads(d.body))
    d.body = None                      # what process_delivery does with every processed body
    session.commit()

    assert _rows_mentioning(session, shop.id, GONE) == []
    pairs_after = {b: pairs for b, (_, _, pairs) in read_bucket_counts(session, shop.id).items()}
    assert pairs_after == pairs_before, "their baskets still count for product rules"
    k = session.get(CustomerStats, (shop.id, KEPT))
    assert (k.orders_count, k.net_revenue, k.segment) == kept_before
    incremental = _seq(session, shop.id)
    rebuild_sequential(session, shop.id)
    session.flush()
    assert _seq(session, shop.id) == incremental
    # Only KEPT's one order is left: its items are antecedent occurrences, and no follow-up means no pair.
    assert incremental == ([("2024-07", P1, 1), ("2024-07", P3, 1)], [])

    # A late order update for the redacted customer's order (now a guest order) changes no customer data.
    deliver(session, shop, "orders/updated", payload(1, cust=None, upd=1, items=((P1, 1), (P2, 1)), day=1))
    run(session, shop)
    assert _rows_mentioning(session, shop.id, GONE) == []
    assert session.scalar(select(WebhookDelivery).where(WebhookDelivery.topic == "customers/redact")).body is None
