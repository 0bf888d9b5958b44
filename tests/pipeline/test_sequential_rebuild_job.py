"""The sequential rebuild job: counts computed in a read transaction, rows replaced in a short write transaction;
orders committed in between are recounted under the lock, so the rows always equal a rebuild done entirely
under the lock (= the pure definition over the final orders)."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, update

from shopify_app.db import session_factory
from shopify_app.models import SequentialItemDelta, SequentialPairBlob, SequentialPairDelta, Shop, ShopModel
from tests.pipeline.test_order_jobs import P1, P3, deliver, make_shop, payload, run
from tests.pipeline.test_sequential import _final_reference, _spread_history, tables
from workers import context, sequential_jobs

# committed while the job counts: a new order of 5001, order 12 moved to a new customer, order 3 cancelled
LATE = [("orders/create", payload(21, cust=5001, day=26, items=((P3, 1),))),
        ("orders/updated", payload(12, cust=5009, day=6, upd=9, items=((P3, 1), (P1, 1)))),
        ("orders/cancelled", payload(3, cust=5002, day=3, upd=9, cancelled=True))]


@pytest.fixture
def shop(session, config):
    context.set_config(config)
    shop = make_shop(session, "seq-job.myshopify.com")
    for topic, body in _spread_history():
        deliver(session, shop, topic, body)
    run(session, shop)
    # as after a history import: the bulk path leaves the tables to the rebuild
    session.execute(delete(SequentialPairDelta).where(SequentialPairDelta.shop_id == shop.id))
    session.execute(delete(SequentialPairBlob).where(SequentialPairBlob.shop_id == shop.id))
    session.execute(delete(SequentialItemDelta).where(SequentialItemDelta.shop_id == shop.id))
    session.commit()
    yield shop
    context.set_config(None)


def _commit_during_count(monkeypatch, db_url, shop_id, changes=LATE, settings=None):
    """Wrap the job's count so that, once the rows are read (read transaction still open), another connection
    commits order changes - a webhook batch arriving while the counts are computed."""
    original = sequential_jobs._count_all
    calls = []

    def counting_then_writer_commits(s, *a, **kw):
        out = original(s, *a, **kw)
        if not calls:
            calls.append(1)
            other = session_factory(db_url)()
            sh = other.get(Shop, shop_id)
            for topic, body in changes:
                deliver(other, sh, topic, body)
            run(other, sh)
            if settings is not None:
                other.execute(update(Shop).where(Shop.id == shop_id).values(settings=settings))
                other.commit()
            other.close()
        return out

    monkeypatch.setattr(sequential_jobs, "_count_all", counting_then_writer_commits)
    return calls


def test_job_equals_the_definition_and_records_days(session, shop):
    res = sequential_jobs.rebuild_sequential_job(shop.id)
    assert tables(session, shop.id) == _final_reference(_spread_history(), 14)
    assert res["recounted_under_lock"] == 0 and res["days"] == 14 and res["pairs"] > 0
    assert session.get(ShopModel, (shop.id, "sequential")).params == {"days": 14}
    session.commit()


def test_orders_committed_while_counting_are_recounted_under_the_lock(session, shop, db_url, monkeypatch):
    calls = _commit_during_count(monkeypatch, db_url, shop.id)
    res = sequential_jobs.rebuild_sequential_job(shop.id)
    assert calls == [1]                                  # the writer committed during the read phase
    assert tables(session, shop.id) == _final_reference(_spread_history() + LATE, 14)
    assert res["recounted_under_lock"] == 3              # 5001 (new order), 5002 (lost 12, 3 cancelled), 5009
    session.commit()


def test_too_many_changes_recount_everything_under_the_lock(session, shop, db_url, monkeypatch):
    _commit_during_count(monkeypatch, db_url, shop.id)
    monkeypatch.setattr(sequential_jobs, "MAX_RECOUNTED_CUSTOMERS", 1)
    res = sequential_jobs.rebuild_sequential_job(shop.id)
    assert res["recounted_under_lock"] == "all"
    assert tables(session, shop.id) == _final_reference(_spread_history() + LATE, 14)
    session.commit()


def test_days_setting_changed_while_counting_adopts_the_new_setting(session, shop, db_url, monkeypatch):
    _commit_during_count(monkeypatch, db_url, shop.id, changes=[], settings={"sequential_days": 3})
    res = sequential_jobs.rebuild_sequential_job(shop.id)
    assert res["recounted_under_lock"] == "all" and res["days"] == 3
    assert tables(session, shop.id) == _final_reference(_spread_history(), 3)
    assert session.get(ShopModel, (shop.id, "sequential")).params == {"days": 3}
    session.commit()


def test_missing_shop(session, config):
    context.set_config(config)
    try:
        assert sequential_jobs.rebuild_sequential_job(987654)["status"] == "missing"
    finally:
        context.set_config(None)
