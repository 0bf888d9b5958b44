"""Full rebuild == incremental state (customer stats and counts), snapshot + deltas reads, compaction."""
from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import func, select

from shopify_app.analytics.incremental import Delta, clean_pass
from shopify_app.analytics.orders import OrderLine, OrderVersion
from shopify_app.models import (
    BasketCountDelta, CountSnapshot, CustomerStats, ItemCountDelta, PairCountBlob, PairCountDelta, SegmentChange, Shop,
)
from workers.order_jobs import apply_version, rescore_customers, update_customers, write_counts
from workers.rebuild_jobs import compact_counts, read_bucket_counts, read_counts, rebuild_shop_state

NOW = dt.datetime(2024, 9, 1, 12, 0)
AGG = ("first_order_at", "last_order_at", "orders_count", "gross_revenue", "refunded", "net_revenue",
       "discounted_orders", "discount_total", "pre_discount_total", "refunded_orders", "items_count",
       "product_type_counts")


def random_versions(seed: int, n_orders: int = 120) -> list[OrderVersion]:
    """Several versions per order: updates (basket / month / customer changes), refunds, cancels, test orders,
    tombstones, guests, custom lines; plus exact duplicates; shuffled."""
    rnd = random.Random(seed)
    versions = []
    for oid in range(1, n_orders + 1):
        cust = rnd.choice([None, None] + list(range(500, 530)))
        for k in range(rnd.randint(1, 4)):
            lines = []
            for i in range(rnd.randint(0, 6)):
                q = rnd.randint(1, 4)
                lines.append(OrderLine(id=oid * 100 + i, product_id=rnd.choice([None] + list(range(1, 16))),
                                       quantity=q, refunded_quantity=rnd.choice([0, 0, 0, 1, q]),
                                       product_type=rnd.choice([None, "Hats", "Mugs", ""]), price=3.5))
            versions.append(OrderVersion(
                id=oid, processed_at=dt.datetime(2024, rnd.randint(1, 8), rnd.randint(1, 28), rnd.randint(0, 23)),
                updated_at=dt.datetime(2024, 8, 1) + dt.timedelta(hours=rnd.randint(0, 900)),
                customer_id=cust if rnd.random() < 0.85 else rnd.choice([None, 531]),
                cancelled=rnd.random() < 0.1, test=rnd.random() < 0.05,
                subtotal=rnd.randint(0, 20000) / 100, total_discounts=rnd.choice([0.0, 0.0, 1.25, 5.0]),
                refunded=rnd.choice([0.0, 0.0, 0.0, 3.5, 7.01]), lines=tuple(lines)))
        if rnd.random() < 0.08:
            versions.append(OrderVersion(id=oid, processed_at=dt.datetime(2024, 8, 30),
                                         updated_at=dt.datetime(2024, 8, 2), deleted=True))
    versions += rnd.sample(versions, 30)
    rnd.shuffle(versions)
    return versions


def make_shop(session, domain="rebuild.myshopify.com"):
    shop = Shop(domain=domain, status="active")
    session.add(shop)
    session.commit()
    return shop


def apply_incrementally(session, shop, versions, batch_size=25):
    """The per-order path of the order job, in batches (one transaction each)."""
    for i in range(0, len(versions), batch_size):
        batch = Delta()
        for v in versions[i:i + batch_size]:
            apply_version(session, shop.id, v, batch, NOW)
        session.flush()
        write_counts(session, shop.id, batch)
        touched = update_customers(session, shop.id, batch, NOW)
        rescore_customers(session, shop, touched, NOW)
        session.commit()


def state(session, shop_id):
    session.expire_all()
    stats = {c.customer_id: tuple(getattr(c, k) for k in AGG)
             for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id))}
    counts = read_bucket_counts(session, shop_id)
    session.commit()
    return stats, counts


def segments(session, shop_id):
    out = dict(session.execute(select(CustomerStats.customer_id, CustomerStats.segment)
                               .where(CustomerStats.shop_id == shop_id)).all())
    session.commit()
    return out


def as_reference(clean):
    """clean_pass (in-memory reference) in the same shape as `state`."""
    stats = {}
    for cid, c in clean["customers"].items():
        stats[cid] = tuple(
            dt.datetime.fromisoformat(c[k]) if k.endswith("_at") else c.get(k, {} if k == "product_type_counts" else 0)
            for k in AGG)
    counts = {}
    for b, n in clean["baskets"].items():
        counts[b] = (n, {i: v for (bb, i), v in clean["items"].items() if bb == b},
                     {(x, y): v for (bb, x, y), v in clean["pairs"].items() if bb == b})
    return stats, counts


def test_rebuild_equals_incremental_state(session):
    shop = make_shop(session)
    versions = random_versions(1)
    apply_incrementally(session, shop, versions)
    incremental = state(session, shop.id)
    assert incremental == as_reference(clean_pass(versions))        # the incremental path itself is right
    assert session.scalar(select(func.count()).select_from(PairCountBlob)) > 0
    seg_before = segments(session, shop.id)

    result = rebuild_shop_state(session, shop.id, NOW)
    session.commit()
    assert result["status"] == "done" and result["customers_inserted"] == result["customers_deleted"] == 0
    assert state(session, shop.id) == incremental
    assert segments(session, shop.id) == seg_before                  # scores / segments are kept
    for model in (ItemCountDelta, PairCountBlob, BasketCountDelta):  # deltas folded into snapshots
        assert session.scalar(select(func.count()).select_from(model).where(model.shop_id == shop.id)) == 0
    n_buckets = len(incremental[1])
    assert session.scalar(select(func.count()).select_from(CountSnapshot)) == 2 * n_buckets

    # Rebuilding again changes nothing.
    rebuild_shop_state(session, shop.id, NOW)
    session.commit()
    assert state(session, shop.id) == incremental


def test_incremental_orders_on_top_of_a_rebuild(session):
    """Reads = snapshot + deltas stay exact after more orders (updates of rebuilt orders included)."""
    shop = make_shop(session)
    versions = random_versions(2)
    first, later = versions[:250], versions[250:]
    apply_incrementally(session, shop, first)
    rebuild_shop_state(session, shop.id, NOW)
    session.commit()
    apply_incrementally(session, shop, later)
    assert session.scalar(select(func.count()).select_from(ItemCountDelta)) > 0
    mixed = state(session, shop.id)
    assert mixed == as_reference(clean_pass(versions))

    # Whole-range read equals the sum of the buckets.
    total = read_counts(session, shop.id)
    items, pairs = total.as_dicts()
    assert total.n_baskets == sum(n for n, _, _ in mixed[1].values())
    exp_items: dict = {}
    for _, it, _ in mixed[1].values():
        for k, v in it.items():
            exp_items[k] = exp_items.get(k, 0) + v
    assert {int(k): v for k, v in items.items()} == exp_items

    # Compaction folds the deltas, exactly.
    assert compact_counts(session, shop.id) > 0
    session.commit()
    for model in (ItemCountDelta, PairCountBlob, BasketCountDelta):
        assert session.scalar(select(func.count()).select_from(model)) == 0
    assert state(session, shop.id) == mixed

    # A full rebuild agrees too.
    rebuild_shop_state(session, shop.id, NOW)
    session.commit()
    assert state(session, shop.id) == mixed


def test_rebuild_repairs_drift_and_deletes_orphan_stats(session):
    """A rebuild is the repair: wrong aggregates are recomputed, stats of customers without orders disappear."""
    shop = make_shop(session)
    versions = random_versions(3, n_orders=40)
    apply_incrementally(session, shop, versions)
    good = state(session, shop.id)
    some = next(iter(good[0]))
    row = session.get(CustomerStats, (shop.id, some))
    row.gross_revenue, row.items_count = 1e6, -3
    session.add(CustomerStats(shop_id=shop.id, customer_id=999999, orders_count=4, segment="Champions"))
    session.add(ItemCountDelta(shop_id=shop.id, segment="*", bucket="2024-02", item_id=77, count=5))
    session.commit()
    assert state(session, shop.id) != good
    result = rebuild_shop_state(session, shop.id, NOW)
    session.commit()
    assert result["customers_deleted"] == 1
    assert state(session, shop.id) == good
    change = session.scalars(select(SegmentChange).where(SegmentChange.customer_id == 999999)).one()
    assert (change.from_segment, change.to_segment, change.reason) == ("Champions", None, "rebuild")


def test_rebuild_of_empty_and_other_shops(session):
    a = make_shop(session, "a.myshopify.com")
    b = make_shop(session, "b.myshopify.com")
    apply_incrementally(session, a, random_versions(4, n_orders=30))
    before = state(session, a.id)
    result = rebuild_shop_state(session, b.id, NOW)
    session.commit()
    assert result["customers"] == 0 and result["buckets"] == 0
    assert state(session, b.id) == ({}, {})
    assert state(session, a.id) == before                            # tenant isolation


def test_recompute_shop_entry_points(session, config):
    """'Recompute now' (RQ job): rebuild + RFM refit stored + rules, with a Job row; compaction of all shops."""
    from shopify_app.models import AssociationRule, Job, ShopModel
    from workers import context
    from workers.rebuild_jobs import compact_all_shops, rebuild_shop, recompute_shop

    context.set_config(config)
    try:
        shop = make_shop(session)
        shop_id = shop.id
        shop.settings = {"min_support": 0.01, "min_count": 2, "rules_window_months": 0}
        session.commit()
        apply_incrementally(session, shop, random_versions(6, n_orders=60))
        before = state(session, shop_id)
        assert compact_all_shops()["shops"] == 1
        assert state(session, shop_id) == before
        assert rebuild_shop(shop_id)["status"] == "done"
        result = recompute_shop(shop_id, now=NOW)
        assert result["status"] == "done" and result["rules"]["status"] == "done"
        assert state(session, shop_id) == before
        job = session.scalars(select(Job).where(Job.shop_id == shop_id, Job.kind == "rebuild")).one()
        assert job.status == "done" and "pair rules" in job.message
        assert session.get(ShopModel, (shop_id, "rfm")) is not None
        assert session.scalar(select(func.count()).select_from(AssociationRule)) == sum(
            v for k, v in result["rules"].items() if k in ("pair", "triple", "sequential", "segment_pair"))
        session.commit()
    finally:
        context.set_config(None)
