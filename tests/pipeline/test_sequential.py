"""Sequential ("buy next") tables through the order job: hand case, messy replays = final orders, rebuild."""
from __future__ import annotations

import random

from sqlalchemy import func, select, update

from shopify_app.analytics.sequential import counts_of_customers
from shopify_app.models import Order, SequentialItemDelta, Shop, ShopModel
from shopify_app.shopify.convert import order_deleted, order_from_rest
from tests.pipeline.test_order_jobs import NOW, P1, P2, P3, _history, deliver, make_shop, payload, run
from workers.sequential_jobs import read_pair_sums, rebuild_sequential


def tables(session, shop_id):
    session.expire_all()
    items = {(r.bucket, r.item_id): r.count for r in session.scalars(
        select(SequentialItemDelta).where(SequentialItemDelta.shop_id == shop_id)) if r.count}
    return items, read_pair_sums(session, shop_id)      # pairs: rows + blobs


def test_hand_computed_through_the_job(session):
    shop = make_shop(session, "seq.myshopify.com")
    # customer 5001: Jul 1 {P1, P2} -> Jul 10 {P3} (9 days: inside 14) -> Jul 30 {P1} (20 days: outside)
    deliver(session, shop, "orders/create", payload(1, day=1, items=((P1, 1), (P2, 1))))
    deliver(session, shop, "orders/create", payload(2, day=10, items=((P3, 1),)))
    deliver(session, shop, "orders/create", payload(3, day=30, items=((P1, 1),)))
    deliver(session, shop, "orders/create", payload(4, cust=None, day=2, items=((P3, 1),)))   # guest: nothing
    run(session, shop)
    items, pairs = tables(session, shop.id)
    assert items == {("2024-07", P1): 2, ("2024-07", P2): 1, ("2024-07", P3): 1}
    assert pairs == {("2024-07", P1, P3): 1, ("2024-07", P2, P3): 1}
    assert session.get(ShopModel, (shop.id, "sequential")).params == {"days": 14}
    # order 2 is edited to Jul 20 (19 days after Jul 1: outside; 10 days before Jul 30: P3 -> P1 inside)
    deliver(session, shop, "orders/updated", payload(2, day=20, upd=1, items=((P3, 1),)))
    run(session, shop)
    assert tables(session, shop.id)[1] == {("2024-07", P3, P1): 1}
    # and cancelled: only the antecedent counts of orders 1 and 3 remain
    deliver(session, shop, "orders/cancelled", payload(2, day=20, upd=2, items=((P3, 1),), cancelled=True))
    run(session, shop)
    assert tables(session, shop.id) == ({("2024-07", P1): 2, ("2024-07", P2): 1}, {})


def _final_reference(h, days):
    """From the final versions only, with the pure definition."""
    latest = {}
    for topic, body in h:
        v = order_deleted(body, NOW) if topic == "orders/delete" else order_from_rest(body)
        cur = latest.get(v.id)
        if cur is None or (not cur.deleted and (v.deleted or v.updated_at > cur.updated_at)):
            latest[v.id] = v
    by_customer = {}
    for v in latest.values():
        if v.counted and v.customer_id is not None:
            items = {ln.product_id for ln in v.lines if ln.product_id is not None
                     and ln.quantity - ln.refunded_quantity > 0}
            by_customer.setdefault(v.customer_id, []).append((v.processed_at, items))
    i, p = counts_of_customers(by_customer, days)
    return {k: n for k, n in i.items() if n}, {k: n for k, n in p.items() if n}


def _spread_history():
    """_history() plus orders spread over ~7 weeks so the 14-day window matters, and customer moves."""
    h = list(_history())
    for oid, cust, day, items in ((11, 5001, 8, ((P1, 1),)), (12, 5001, 20, ((P3, 1), (P2, 1))),
                                  (13, 5002, 4, ((P2, 1),)), (14, 5002, 15, ((P1, 2),)), (15, 5001, 25, ((P2, 1),))):
        h.append(("orders/create", payload(oid, cust=cust, day=day, items=items)))
    h.append(("orders/updated", payload(12, cust=5002, day=5, upd=3, items=((P3, 1),))))   # moves customer
    h.append(("orders/updated", payload(14, cust=5002, day=16, upd=4, items=((P1, 2),), refund_first=True)))
    return h


def test_any_order_with_duplicates_equals_final_orders(session):
    h = _spread_history()
    ref = _final_reference(h, 14)
    assert ref[1], "the history must produce sequential pairs"
    for seed in range(4):
        shop = make_shop(session, f"seq{seed}.myshopify.com")
        rng = random.Random(seed)
        messy = h + rng.sample(h, 8)
        rng.shuffle(messy)
        for topic, body in messy:
            deliver(session, shop, topic, body)
        while run(session, shop, limit=rng.choice([1, 3, 7]))["deliveries"]:
            pass
        assert tables(session, shop.id) == ref, seed
    # a full rebuild from the Order / OrderLine rows gives the same tables
    res = rebuild_sequential(session, shop.id)
    session.commit()
    assert tables(session, shop.id) == ref and res["days"] == 14


def test_days_setting_change_asks_for_a_rebuild(session):
    shop = make_shop(session, "days.myshopify.com")
    other = make_shop(session, "days-other.myshopify.com")
    h = _spread_history()
    for topic, body in h:
        deliver(session, shop, topic, body)
        deliver(session, other, topic, body)
    assert run(session, shop)["rebuild_sequential"] is False
    run(session, other)
    other_before = tables(session, other.id)
    session.execute(update(Shop).where(Shop.id == shop.id).values(settings={"sequential_days": 3}))
    session.commit()
    deliver(session, shop, "orders/create", payload(99, cust=5003, day=9, items=((P1, 1),)))
    res = run(session, shop)
    assert res["rebuild_sequential"] is True
    # the job kept the tables consistent with the N they were built with (14) ...
    assert tables(session, shop.id) == _final_reference(h + [("orders/create", payload(99, cust=5003, day=9,
                                                                                           items=((P1, 1),)))], 14)
    # ... and the rebuild adopts the new N
    rebuild_sequential(session, shop.id)
    session.commit()
    assert tables(session, shop.id) == _final_reference(
        h + [("orders/create", payload(99, cust=5003, day=9, items=((P1, 1),)))], 3)
    assert session.get(ShopModel, (shop.id, "sequential")).params == {"days": 3}
    deliver(session, shop, "orders/create", payload(100, cust=5003, day=10, items=((P2, 1),)))
    assert run(session, shop)["rebuild_sequential"] is False
    assert tables(session, other.id) == other_before            # tenant isolation


def test_forget_customer_before_redact_matches_a_rebuild(session):
    from workers.sequential_jobs import forget_customer

    shop = make_shop(session, "forget.myshopify.com")
    for topic, body in _spread_history():
        deliver(session, shop, topic, body)
    run(session, shop)
    before = tables(session, shop.id)
    assert any(k for k in before[1])
    forget_customer(session, shop.id, 5001)
    # what customers/redact does next: the orders become guest orders
    session.execute(update(Order).where(Order.shop_id == shop.id, Order.customer_id == 5001).values(customer_id=None))
    session.commit()
    after = tables(session, shop.id)
    assert after != before
    rebuild_sequential(session, shop.id)
    session.commit()
    assert tables(session, shop.id) == after


# --------------------------------------------------------------------------------------------- pair blobs
def retail_history(stretch: int = 20, seed: int = 3):
    """retail_small.csv (real Online Retail invoices) as order versions, times stretched x`stretch` from the first
    invoice so the 4 days cover three month buckets, then later versions of some orders: cancelled, moved to
    another customer, first line refunded, moved in time (every kind of subtraction)."""
    import dataclasses
    import datetime as dt

    from tests.workers.test_rules_job import retail_versions

    versions, _ = retail_versions()
    t0 = min(v.processed_at for v in versions)
    versions = [dataclasses.replace(v, processed_at=t0 + (v.processed_at - t0) * stretch,
                                    updated_at=t0 + (v.processed_at - t0) * stretch) for v in versions]
    rng = random.Random(seed)
    customers = sorted({v.customer_id for v in versions if v.customer_id})
    edits = []
    for v in rng.sample([v for v in versions if v.customer_id], 40):
        later = v.updated_at + dt.timedelta(days=200)
        kind = rng.choice(["cancel", "move", "refund", "time"])
        if kind == "cancel":
            edits.append(dataclasses.replace(v, updated_at=later, cancelled=True))
        elif kind == "move":
            edits.append(dataclasses.replace(v, updated_at=later, customer_id=rng.choice(customers)))
        elif kind == "refund":
            first = dataclasses.replace(v.lines[0], refunded_quantity=v.lines[0].quantity)
            edits.append(dataclasses.replace(v, updated_at=later, lines=(first,) + v.lines[1:]))
        else:
            edits.append(dataclasses.replace(v, updated_at=later,
                                             processed_at=v.processed_at + dt.timedelta(days=rng.randint(-9, 9))))
    return versions, edits


def definition(versions, days=14):
    """Sequential counts of the final versions, by the pure definition (analytics.sequential)."""
    latest = {}
    for v in versions:
        if v.id not in latest or v.updated_at > latest[v.id].updated_at:
            latest[v.id] = v
    by_customer = {}
    for v in latest.values():
        if v.counted and v.customer_id is not None:
            items = {ln.product_id for ln in v.lines if ln.product_id and ln.quantity - ln.refunded_quantity > 0}
            by_customer.setdefault(v.customer_id, []).append((v.processed_at, items))
    i, p = counts_of_customers(by_customer, days)
    return {k: n for k, n in i.items() if n}, {k: n for k, n in p.items() if n}


def apply_batches(session, shop, versions, size=40):
    """The order job's per-batch path (apply_version ... write_counts), one transaction per batch."""
    from shopify_app.analytics.incremental import Delta
    from workers.order_jobs import apply_version, write_counts

    for k in range(0, len(versions), size):
        batch = Delta()
        for v in versions[k:k + size]:
            apply_version(session, shop.id, v, batch, NOW)
        session.flush()
        write_counts(session, shop.id, batch)
        session.commit()


def stored(session, model, shop_id):
    n = session.scalar(select(func.count()).select_from(model).where(model.shop_id == shop_id))
    session.commit()
    return n


def test_real_orders_blobs_equal_rebuild_and_definition(session):
    """Real invoices through the batch path: pair deltas land as blobs only (one per batch and bucket, directed
    pairs kept), and rows + blobs = the definition = a rebuild; compaction folds them into rows, still equal."""
    from shopify_app.models import SequentialPairBlob, SequentialPairDelta
    from workers.sequential_jobs import compact_sequential, decode_directed_pairs, read_snapshots

    versions, edits = retail_history()
    ref = definition(versions + edits)
    assert len({b for b, _a, _c in ref[1]}) >= 2 and len(ref[1]) > 1000
    assert any((b, c, a) not in ref[1] for b, a, c in ref[1]), "direction matters in this data"
    shop = make_shop(session, "seq-real.myshopify.com")
    apply_batches(session, shop, versions)
    assert tables(session, shop.id) == definition(versions)
    apply_batches(session, shop, edits, size=7)
    assert stored(session, SequentialPairDelta, shop.id) == 0
    blobs = session.scalars(select(SequentialPairBlob).where(SequentialPairBlob.shop_id == shop.id)).all()
    assert any((decode_directed_pairs(b.data)[2] < 0).any() for b in blobs), "edits subtract"
    assert all(b.pairs == len(decode_directed_pairs(b.data)[0]) > 0 for b in blobs)
    assert len({(b.bucket, b.created_at, b.id) for b in blobs}) == len(blobs)
    session.commit()
    assert tables(session, shop.id) == ref

    assert compact_sequential(session, shop.id) >= 2
    session.commit()
    assert stored(session, SequentialPairBlob, shop.id) == 0
    assert stored(session, SequentialPairDelta, shop.id) == 0, "the fold writes no pair rows"
    payloads = {}                                  # one folded payload per bucket, holding exactly its counts
    for bucket, _at, data in read_snapshots(session, shop.id):
        a, b, n = decode_directed_pairs(data)
        assert (n > 0).all(), "no zero or negative counts are left"
        payloads.update({(bucket, x, y): c for x, y, c in zip(a.tolist(), b.tolist(), n.tolist())})
    session.commit()
    assert payloads == ref[1]
    assert tables(session, shop.id) == ref

    rebuild_sequential(session, shop.id)
    session.commit()
    assert read_snapshots(session, shop.id) == []
    assert stored(session, SequentialPairDelta, shop.id) == len(ref[1])
    session.commit()
    assert tables(session, shop.id) == ref


def test_fold_adds_to_rows_and_payload_and_drops_a_cancelled_payload(session):
    """A fold adds blob sums to the bucket's payload (created by the first fold, rewritten by the next) and leaves
    pair rows (a rebuild's or older) alone: rows + payload + blobs stay the sum of every delta written. Blobs that
    cancel the payload out delete it; a bucket with only a zero sum writes none."""
    from shopify_app.models import SequentialPairDelta
    from workers.sequential_jobs import compact_sequential, read_snapshots, write_deltas

    shop = make_shop(session, "seq-fold-unit.myshopify.com")
    session.add(SequentialPairDelta(shop_id=shop.id, bucket="2026-10", item_a=1, item_b=2, count=4))
    write_deltas(session, shop.id, {}, {("2026-10", 1, 2): 3, ("2026-10", 2, 1): 1, ("2026-11", 5, 6): 2})
    write_deltas(session, shop.id, {}, {("2026-10", 1, 2): 2, ("2026-12", 7, 8): 1})
    write_deltas(session, shop.id, {}, {("2026-12", 7, 8): -1})
    session.commit()
    assert compact_sequential(session, shop.id) == 3
    session.commit()
    assert [b for b, _at, _d in read_snapshots(session, shop.id)] == ["2026-10", "2026-11"]   # 2026-12 summed to 0
    assert read_pair_sums(session, shop.id) == {("2026-10", 1, 2): 9, ("2026-10", 2, 1): 1, ("2026-11", 5, 6): 2}
    session.commit()

    write_deltas(session, shop.id, {}, {("2026-10", 1, 2): 1, ("2026-11", 5, 6): -2, ("2026-11", 9, 5): 3})
    session.commit()
    before = {b: at for b, at, _d in read_snapshots(session, shop.id)}
    session.commit()
    assert compact_sequential(session, shop.id) == 2
    session.commit()
    after = {b: at for b, at, _d in read_snapshots(session, shop.id)}
    assert after.keys() == {"2026-10", "2026-11"} and all(after[b] != before[b] for b in after)
    assert read_pair_sums(session, shop.id) == {("2026-10", 1, 2): 10, ("2026-10", 2, 1): 1, ("2026-11", 9, 5): 3}
    assert session.scalar(select(SequentialPairDelta.count).where(SequentialPairDelta.shop_id == shop.id)) == 4
    session.commit()

    write_deltas(session, shop.id, {}, {("2026-11", 9, 5): -3})
    session.commit()
    assert compact_sequential(session, shop.id) == 1
    session.commit()
    assert [b for b, _at, _d in read_snapshots(session, shop.id)] == ["2026-10"]
    assert read_pair_sums(session, shop.id) == {("2026-10", 1, 2): 10, ("2026-10", 2, 1): 1}
    assert compact_sequential(session, shop.id) == 0                         # nothing left: nothing twice
    session.commit()
