"""RFM refit (stored thresholds), aging with time injection, daily segment snapshots, the refit trigger."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from shopify_app.models import CustomerStats, SegmentChange, SegmentSnapshot, Shop, ShopModel
from workers import rfm_jobs
from workers.rfm_jobs import age_shop_in_session, refit_rfm_in_session, snapshot_segments_in_session

NOW = dt.datetime(2024, 8, 1, 0, 0)


def make_shop(session, domain="rfm.myshopify.com", settings=None):
    shop = Shop(domain=domain, status="active", settings=settings or {})
    session.add(shop)
    session.flush()
    return shop


def add_customer(session, shop, cid, days_ago, orders, net):
    session.add(CustomerStats(shop_id=shop.id, customer_id=cid, first_order_at=NOW - dt.timedelta(days=400),
                              last_order_at=NOW - dt.timedelta(days=days_ago), orders_count=orders,
                              net_revenue=net, gross_revenue=net, product_type_counts={}))


def segments(session, shop):
    session.expire_all()
    return {c.customer_id: c.segment for c in session.scalars(
        select(CustomerStats).where(CustomerStats.shop_id == shop.id))}


def changes(session, shop, reason=None):
    q = select(SegmentChange).where(SegmentChange.shop_id == shop.id).order_by(SegmentChange.id)
    if reason:
        q = q.where(SegmentChange.reason == reason)
    return session.scalars(q).all()


# --------------------------------------------------------------------------------------------- refit
def ten_customers(session, shop):
    # customer k: last order k days ago, k orders, 10*k net -> every dimension is 1..10
    for k in range(1, 11):
        add_customer(session, shop, k, k, k, 10.0 * k)
    session.flush()


def test_refit_hand_computed_and_stored(session):
    shop = make_shop(session)
    ten_customers(session, shop)
    res = refit_rfm_in_session(session, shop, NOW)
    session.commit()
    # 1..10 at 20/40/60/80 %: positions 9q = 1.8, 3.6, 5.4, 7.2 -> 2.8, 4.6, 6.4, 8.2 (right-closed bins)
    assert res["edges"]["recency"] == pytest.approx([2.8, 4.6, 6.4, 8.2])
    assert res["edges"]["frequency"] == pytest.approx([2.8, 4.6, 6.4, 8.2])
    assert res["edges"]["monetary"] == pytest.approx([28, 46, 64, 82])
    m = session.get(ShopModel, (shop.id, "rfm"))
    assert m.customers_at_fit == 10 and m.version == 1 and m.params["scheme"] == "default"
    assert m.params["edges"] == res["edges"] and m.params["customers_now"] == 10
    # R = [5,5,4,4,3,3,2,2,1,1], F = M = FM = [1,1,2,2,3,3,4,4,5,5] on the default grid
    want = {1: "New", 2: "New", 3: "Potential loyalists", 4: "Potential loyalists", 5: "At risk", 6: "At risk",
            7: "At risk", 8: "At risk", 9: "Can't lose", 10: "Can't lose"}
    assert segments(session, shop) == want
    c7 = session.get(CustomerStats, (shop.id, 7))
    assert (c7.recency_days, c7.r_score, c7.f_score, c7.m_score) == (7, 2, 4, 4)
    assert len(changes(session, shop, "refit")) == 10
    # a second refit on the same data: same thresholds, no change recorded, version moves on
    res2 = refit_rfm_in_session(session, shop, NOW)
    session.commit()
    assert res2["changes"] == 0 and res2["version"] == 2 and len(changes(session, shop)) == 10


def test_refit_uses_the_scheme_from_settings(session):
    shop = make_shop(session, settings={"segment_scheme": "rfm11"})
    ten_customers(session, shop)
    refit_rfm_in_session(session, shop, NOW)
    session.commit()
    # R5 FM1 -> New Customers, R1 FM5 -> Can't Lose Them on the 11-segment map
    got = segments(session, shop)
    assert (got[1], got[10]) == ("New Customers", "Can't Lose Them")
    assert session.get(ShopModel, (shop.id, "rfm")).params["scheme"] == "rfm11"


@pytest.mark.parametrize("rows, want", [
    ([(3, 1, 20.0)], {1: (5, 1, 1)}),                                    # one customer: all edges equal
    ([(3, 1, 20.0), (30, 2, 50.0)], {1: (5, 1, 1), 2: (1, 5, 5)}),       # two: edges strictly between
    ([(5, 1, 10.0)] * 4, {i: (5, 1, 1) for i in range(1, 5)}),          # all tied: one score each
])
def test_few_customers_still_score(session, rows, want):
    shop = make_shop(session)
    for i, (days, orders, net) in enumerate(rows, start=1):
        add_customer(session, shop, i, days, orders, net)
    session.flush()
    refit_rfm_in_session(session, shop, NOW)
    session.commit()
    session.expire_all()
    got = {c.customer_id: (c.r_score, c.f_score, c.m_score) for c in session.scalars(
        select(CustomerStats).where(CustomerStats.shop_id == shop.id))}
    assert got == want
    assert all(segments(session, shop).values())


def test_empty_shop_refit(session):
    shop = make_shop(session)
    res = refit_rfm_in_session(session, shop, NOW)
    assert res["customers"] == 0 and res["edges"] == {"recency": [], "frequency": [], "monetary": []}


# --------------------------------------------------------------------------------------------- aging
def test_aging_slides_a_customer_without_orders(session):
    shop = make_shop(session)
    session.add(ShopModel(shop_id=shop.id, kind="rfm", customers_at_fit=1, params={
        "edges": {"recency": [10, 20, 30, 40], "frequency": [1, 2, 3, 4], "monetary": [100, 200, 300, 400]}}))
    add_customer(session, shop, 1, 2, 3, 350.0)    # F = 3, M = 4 -> FM 4
    session.flush()
    assert age_shop_in_session(session, shop, NOW)["changes"] == 1
    assert segments(session, shop)[1] == "Champions"                       # 2 days: R 5
    assert age_shop_in_session(session, shop, NOW + dt.timedelta(days=15))["changes"] == 1
    assert segments(session, shop)[1] == "Loyal"                           # 17 days: R 4
    res = age_shop_in_session(session, shop, NOW + dt.timedelta(days=33))  # 35 days: R 2
    session.commit()
    assert res["changes"] == 1 and segments(session, shop)[1] == "At risk"
    aging = changes(session, shop, "aging")
    assert [(c.from_segment, c.to_segment) for c in aging] == [
        (None, "Champions"), ("Champions", "Loyal"), ("Loyal", "At risk")]
    assert aging[-1].changed_at == NOW + dt.timedelta(days=33)
    c = session.get(CustomerStats, (shop.id, 1))
    assert (c.recency_days, c.r_score, c.segment_since) == (35, 2, NOW + dt.timedelta(days=33))
    # the same day again: nothing moves; the thresholds were not refitted
    assert age_shop_in_session(session, shop, NOW + dt.timedelta(days=33))["changes"] == 0
    assert session.get(ShopModel, (shop.id, "rfm")).params["edges"]["recency"] == [10, 20, 30, 40]


def test_aging_without_thresholds_refits(session):
    shop = make_shop(session)
    ten_customers(session, shop)
    res = age_shop_in_session(session, shop, NOW)
    session.commit()
    assert res["changes"] == 10 and session.get(ShopModel, (shop.id, "rfm")) is not None
    assert len(changes(session, shop, "refit")) == 10


# --------------------------------------------------------------------------------------------- snapshots
def snaps(session, shop):
    session.expire_all()
    return sorted((r.day, r.segment, r.customers, r.revenue, r.orders) for r in session.scalars(
        select(SegmentSnapshot).where(SegmentSnapshot.shop_id == shop.id)))


def test_snapshot_upsert_is_idempotent(session):
    shop = make_shop(session)
    other = make_shop(session, "other.myshopify.com")
    ten_customers(session, shop)
    add_customer(session, other, 1, 1, 1, 5.0)
    refit_rfm_in_session(session, shop, NOW)
    refit_rfm_in_session(session, other, NOW)
    day = NOW.date()
    snapshot_segments_in_session(session, shop.id, day)
    session.commit()
    first = snaps(session, shop)
    # New: customers 1,2 (2 orders... 1+2 = 3 orders, 10+20 = 30 net)
    assert (day, "New", 2, 30.0, 3) in first
    assert (day, "At risk", 4, 260.0, 26) in first
    assert sum(r[2] for r in first) == 10
    snapshot_segments_in_session(session, shop.id, day)
    session.commit()
    assert snaps(session, shop) == first                                  # rerun: same rows, no duplicates
    # a customer moves the same day: the day's rows are replaced, not added to
    c = session.get(CustomerStats, (shop.id, 1))
    c.segment = "Champions"
    session.flush()
    snapshot_segments_in_session(session, shop.id, day)
    session.commit()
    again = snaps(session, shop)
    assert (day, "New", 1, 20.0, 2) in again and (day, "Champions", 1, 10.0, 1) in again
    assert sum(r[2] for r in again) == 10
    snapshot_segments_in_session(session, shop.id, day + dt.timedelta(days=1))
    session.commit()
    assert len(snaps(session, shop)) == 2 * len(again)
    assert [r[1:] for r in snaps(session, other)] == []                   # other shop: never snapshotted


# --------------------------------------------------------------------------------------------- jobs
def test_job_entry_points(db_url, session):
    from shopify_app.config import Config
    from workers import context

    shop = make_shop(session)
    ten_customers(session, shop)
    session.commit()
    context.set_config(Config(env="test", database_url=db_url, redis_url="redis://127.0.0.1:1/0"))
    try:
        res = rfm_jobs.refit_rfm(shop.id, now=NOW.isoformat())
        aged = rfm_jobs.age_shop(shop.id, now=(NOW + dt.timedelta(days=1)).isoformat())
    finally:
        context.set_config(None)
    assert res["customers"] == 10 and res["changes"] == 10
    assert aged["snapshot"]["day"] == "2024-08-02" and aged["snapshot"]["segments"] >= 1
    assert sum(r[2] for r in snaps(session, shop)) == 10


def test_refit_enqueue_coalesces(config):
    from shopify_app.queues import DEFAULT, get_queue

    a = rfm_jobs.enqueue_refit_rfm(config, 7)
    b = rfm_jobs.enqueue_refit_rfm(config, 7)
    assert a.id == b.id == "refit-rfm-7"
    assert get_queue(config, DEFAULT).job_ids == ["refit-rfm-7"]


def test_refit_needed_rule():
    m = ShopModel(shop_id=1, kind="rfm", customers_at_fit=100, params={"customers_now": 110})
    assert not rfm_jobs.refit_needed(m, 0.10)                 # exactly 10 %: not more than the share
    m.params = {"customers_now": 111}
    assert rfm_jobs.refit_needed(m, 0.10)
    m.params = {"customers_now": 89}
    assert rfm_jobs.refit_needed(m, 0.10)
    assert rfm_jobs.refit_needed(None, 0.10)


def test_schedule_registers_rfm_jobs_and_skips_missing_modules(config, monkeypatch):
    from workers import schedules

    names = {job.func_name for job in schedules.build_scheduler(config).get_jobs()}
    assert {"workers.rfm_jobs.refit_all_shops", "workers.rfm_jobs.age_all_shops"} <= names
    monkeypatch.setattr(schedules, "SCHEDULE", schedules.SCHEDULE + [
        ("workers.not_there_yet.run_all", "default", "0 * * * *", ()),
        ("workers.rfm_jobs.no_such_function", "default", "0 * * * *", ())])
    table = schedules.schedule_table()
    assert len(table) == len(schedules.SCHEDULE) - 2 - sum(
        schedules._resolve(p) is None for p, *_ in schedules.SCHEDULE[:-2])


def test_fan_out_enqueues_one_job_per_active_shop(config, session):
    from shopify_app.queues import DEFAULT, get_queue
    from workers import context

    a = make_shop(session, "a.myshopify.com")
    make_shop(session, "gone.myshopify.com").status = "uninstalled"
    session.commit()
    context.set_config(config)
    try:
        assert rfm_jobs.refit_all_shops()["shop_ids"] == [a.id]
        assert rfm_jobs.age_all_shops()["shop_ids"] == [a.id]
    finally:
        context.set_config(None)
    ids = get_queue(config, DEFAULT).job_ids
    assert ids[0] == f"refit-rfm-{a.id}" and ids[1].startswith(f"age-shop-{a.id}-") and len(ids) == 2


def test_segment_sizes_flag_too_small(session):
    shop = make_shop(session, settings={"min_segment_size": 3})
    ten_customers(session, shop)
    refit_rfm_in_session(session, shop, NOW)
    session.commit()
    sizes = {r["segment"]: r for r in rfm_jobs.segment_sizes(session, shop)}
    assert list(sizes) == ["Champions", "Loyal", "Potential loyalists", "New", "At risk", "Can't lose",
                           "Hibernating", "One-and-done"]
    # New 2, Potential loyalists 2, At risk 4, Can't lose 2 (see test_refit_hand_computed_and_stored)
    assert {k: (v["customers"], v["too_small"]) for k, v in sizes.items() if v["customers"]} == {
        "New": (2, True), "Potential loyalists": (2, True), "At risk": (4, False), "Can't lose": (2, True)}
    assert sizes["Loyal"]["too_small"] is False and sizes["At risk"]["revenue"] == 260.0
    assert sizes["New"]["definition"].startswith("Bought recently (R 4-5)")
