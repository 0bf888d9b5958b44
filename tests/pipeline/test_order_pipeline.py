"""The order job's pipeline (workers.order_jobs._Pipeline): batch N+1 is prepared from a snapshot that does not show
batch N yet, with N laid over it (_Overlay), while N is written by a writer thread. These tests force that
interleaving (the writer of N waits until N+1 is prepared) and check that the overlay is exactly what the database
holds after N commits (no fallback in a normal stream), that the result equals the serial job's, and that a failed
write loses and doubles nothing."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import pytest
from sqlalchemy import select

from shopify_app.config import PROJECT_ROOT
from shopify_app.db import reader_scope, session_scope
from shopify_app.models import WebhookDelivery
from tests.pipeline.test_order_jobs import (
    P1, P2, P3, _history, _rfm, assert_sequential_is_a_rebuild, deliver, make_shop, payload, reconcile_write, state,
)


def _stream():
    """A live stream: create + paid pairs with identical bodies (as the stand-in sends them), repeat customers,
    updates, a refund, a cancel, a delete, a replay, in an order that splits pairs across batches of 3."""
    h = list(_history())
    for k in range(12):
        oid, cust = 100 + k, 8100 + k % 4                 # 4 customers with 3 orders each
        body = payload(oid, cust=cust, day=1 + k, items=((P1 + k % 3, 1), (P2, 1 + k % 2), (P3, 1)))
        h += [("orders/create", body), ("orders/paid", body)]
    h += [("orders/updated", payload(101, cust=8101, day=2, upd=3, refund_first=True, items=((P2, 2), (P3, 1)))),
          ("orders/cancelled", payload(102, cust=8102, day=3, upd=4, cancelled=True)),
          ("orders/delete", {"id": 103}),
          ("orders/updated", payload(104, cust=8102, day=5, upd=5, items=((P1, 4),))),   # moved to another customer
          ("orders/create", payload(105, cust=8101, day=6, items=((P1 + 2, 1), (P2, 2), (P3, 1))))]   # a replay
    return h



def _shops_with(session, domains, history) -> list:
    """A shop per domain, each with stored RFM thresholds and the same deliveries (`history`), committed."""
    shops = [make_shop(session, d) for d in domains]
    for shop in shops:
        _rfm(session, shop)
        for topic, body in history:
            deliver(session, shop, topic, body)
    session.commit()
    return shops


def _comparable(st: dict) -> dict:
    """state() of a job-run shop: tombstones are stamped with the job's clock (times and contribution), scores
    with its 'now'."""
    out = dict(st)
    out["orders"] = [(o[0], "tombstone") if o[5] is not None else o for o in st["orders"]]
    out["stats"] = [s[:13] for s in st["stats"]]
    return out


def _job(config, shop_id, monkeypatch, pipelined: bool, results: list):
    import workers.order_jobs as jobs
    from workers import context

    monkeypatch.setattr(jobs, "PIPELINE", pipelined)
    real_next = jobs._Pipeline.next

    def spy(self):
        res = real_next(self)
        results.append(res)
        return res

    monkeypatch.setattr(jobs._Pipeline, "next", spy)
    context.set_config(config)
    try:
        return jobs.process_pending_orders(shop_id)
    finally:
        context.set_config(None)
        monkeypatch.setattr(jobs._Pipeline, "next", real_next)


@pytest.fixture
def small_batches(monkeypatch):
    import workers.order_jobs as jobs

    monkeypatch.setattr(jobs, "BATCH_DELIVERIES", 3)
    # Batches are cut by count only: the 0.25 s time budget of preparing cut one to a single delivery on a slow
    # moment of a CI run (PostgreSQL), and the tests compare batch boundaries.
    monkeypatch.setattr(jobs, "BATCH_SECONDS", 60.0)
    monkeypatch.setattr(jobs, "BATCH_LINGER_S", 0.0)
    monkeypatch.setattr(jobs, "enqueue_followups", lambda *a: None)
    return jobs


def _interleave(jobs, monkeypatch, overlaid: list, written_first: bool = False):
    """Force the pipeline's interleaving: the writer of batch N writes only after batch N+1 was prepared (its
    snapshot cannot show N: the overlay is used), or with `written_first` N+1 is prepared only after N committed
    (the snapshot shows N: no overlay). `overlaid` receives each ahead batch's PreparedBatch.overlaid."""
    prepared, written = threading.Event(), threading.Event()
    real_write, real_after = jobs._write_prepared, jobs._prepare_after

    def write(shop_id, prep, *args):
        if threading.current_thread().name.startswith("order-batch-writer") is False:
            return real_write(shop_id, prep, *args)     # the serial path writes in the job's thread
        if not written_first:
            assert prepared.wait(20)
            prepared.clear()
        try:
            return real_write(shop_id, prep, *args)
        finally:
            written.set()

    def after(shop_id, prep, kw):
        if written_first:
            assert written.wait(20)
            written.clear()
        try:
            res = real_after(shop_id, prep, kw)
            overlaid.append(None if res is None else res.overlaid)
            return res
        finally:
            prepared.set()

    monkeypatch.setattr(jobs, "_write_prepared", write)
    monkeypatch.setattr(jobs, "_prepare_after", after)


@pytest.mark.parametrize("written_first", [False, True])
def test_pipelined_job_equals_the_serial_job_without_fallbacks(config, session, small_batches, monkeypatch,
                                                                written_first):
    jobs = small_batches
    h = _stream()
    piped, serial = _shops_with(session, ("piped.myshopify.com", "serial.myshopify.com"), h)
    overlaid: list = []
    _interleave(jobs, monkeypatch, overlaid, written_first)
    a, b = [], []
    res_a = _job(config, piped.id, monkeypatch, True, a)
    res_b = _job(config, serial.id, monkeypatch, False, b)
    batches = -(-len(h) // 3)
    assert [r["deliveries"] for r in a] == [r["deliveries"] for r in b] == [3] * (batches - 1) + [len(h) % 3 or 3, 0]
    assert res_a["applied"] == res_b["applied"] and res_a["deliveries"] == len(h)
    assert sum(r["fallback"] for r in a) == 0 and sum(r.get("pipeline_discarded", 0) for r in a) == 0
    # nobody else took the shop lock: the generation matched, no delivery body was re-read under the lock
    assert sum(r["write_timings"].get("body_check", 0) for r in a + b) == 0
    # ... nor the Order rows / order states of a batch read from the database; an overlaid one compares them
    rows_checked = [sum(r["write_timings"].get("rows_check", 0) for r in rs) for rs in (a, b)]
    assert rows_checked == [0 if written_first else batches - 1, 0]
    # every batch after the first was prepared ahead: laid over its predecessor, or (written first) not
    assert len(overlaid) == batches and set(overlaid) == {not written_first}
    st_a, st_b = _comparable(state(session, piped.id)), _comparable(state(session, serial.id))
    assert st_a == st_b
    assert_sequential_is_a_rebuild(session, piped.id)


def test_the_overlay_is_what_the_database_holds_after_the_commit(db_url, session):
    """_Overlay(N) on a snapshot taken before N's commit == the same reads after the commit: the batch's Order rows
    (contribution through the JSON column, naive microsecond times), the customers' order states, the deliveries
    left pending with their attempts; the items are those of the written lines."""
    import workers.order_jobs as jobs
    from workers.sequential_jobs import orders_items

    shop = make_shop(session, "overlay.myshopify.com")
    _rfm(session, shop)
    h = _stream()
    for topic, body in h[:20]:
        deliver(session, shop, topic, body)
    session.commit()
    with reader_scope(db_url) as r:                   # a first batch committed: some orders are replaced below
        first = jobs.prepare_batch(r, shop.id, limit=8)
    with session_scope(db_url) as s:
        jobs.write_batch(s, shop.id, first)
    with reader_scope(db_url) as r:
        prep = jobs.prepare_batch(r, shop.id, limit=8, max_pairs=2)
    assert prep.finals and set(prep.read) - set(prep.outcome)       # a batch that also leaves deliveries pending
    customers = {8100, 8101, 8102, 8103, *(c for c in prep.customers)}
    orders = sorted(prep.finals)

    def reads(s, overlay=None):
        stored = jobs._read_stored(s, shop.id, orders)
        if overlay is not None:
            overlay.stored(stored)
        states, items = jobs._read_customer_orders(s, shop.id, customers, None, overlay)
        rows = s.connection().execute(
            select(WebhookDelivery.id, WebhookDelivery.topic, WebhookDelivery.status, WebhookDelivery.attempts,
                   WebhookDelivery.body).where(WebhookDelivery.shop_id == shop.id,
                                               WebhookDelivery.status == "pending_analytics",
                                               WebhookDelivery.id.notin_(sorted(prep.outcome)))
            .order_by(WebhookDelivery.id)).all()
        rows = [overlay.delivery(*row) if overlay is not None else tuple(row) for row in rows]
        return stored, states, items, rows

    with reader_scope(db_url) as r:                   # a snapshot before the write, with the batch laid over it
        before_commit = reads(r, jobs._Overlay(prep))
    with session_scope(db_url) as s:
        jobs.write_batch(s, shop.id, prep)
    with reader_scope(db_url) as r:
        after_commit = reads(r)
        heads = {oid: (st[0], st[2]) for oid, st in after_commit[1].items() if st[1]}
        lines_items = {oid: frozenset(it) for per in orders_items(r, shop.id, heads).values()
                       for oid, (_t, it) in per.items()}
    assert before_commit[0] == after_commit[0] and before_commit[1] == after_commit[1]
    assert before_commit[3] == after_commit[3]
    assert {oid: items for per in before_commit[2].values() for oid, (_t, items) in per.items()} == lines_items


def test_a_write_failure_mid_pipeline_loses_and_doubles_nothing(config, session, small_batches, monkeypatch):
    """Batch 3's write fails (its transaction rolls back): the job fails, batch 4 (prepared ahead over batch 3) is
    dropped unwritten, every delivery from batch 3 on stays pending; the retried job ends where an undisturbed one
    does."""
    jobs = small_batches
    h = _stream()
    shop, clean = _shops_with(session, ("failing.myshopify.com", "clean.myshopify.com"), h)
    overlaid: list = []
    _interleave(jobs, monkeypatch, overlaid)
    real_write, calls = jobs.write_batch, []

    def failing(s, shop_id, prep, **kw):
        calls.append(sorted(prep.read))
        res = real_write(s, shop_id, prep, **kw)
        if len(calls) == 3:
            s.flush()                              # its rows are written, then the transaction fails
            raise RuntimeError("disk full")
        return res

    _job(config, clean.id, monkeypatch, True, [])       # the same events, undisturbed
    monkeypatch.setattr(jobs, "write_batch", failing)
    with pytest.raises(RuntimeError):
        _job(config, shop.id, monkeypatch, True, [])
    session.expire_all()
    pending = sorted(session.scalars(select(WebhookDelivery.id).where(
        WebhookDelivery.shop_id == shop.id, WebhookDelivery.status == "pending_analytics")))
    assert pending[:3] == calls[2] and len(pending) == len(h) - 6
    session.commit()
    monkeypatch.setattr(jobs, "write_batch", real_write)
    res = _job(config, shop.id, monkeypatch, True, [])
    assert res["deliveries"] == len(h) - 6 and res["fallback"] == 0
    assert _comparable(state(session, shop.id)) == _comparable(state(session, clean.id))
    assert_sequential_is_a_rebuild(session, shop.id)


def test_another_writer_between_the_snapshot_and_the_write_is_a_fallback_not_a_wrong_count(
        config, db_url, session, small_batches, monkeypatch):
    """Reconciliation rewrites an order while batch N is written and N+1 (which replaces that order again) was
    prepared over N: N+1's validation sees the change and prepares it again under the lock; the end state equals a
    serial job's on the same events."""
    jobs = small_batches
    h = list(_history())
    rng = random.Random(7)
    rng.shuffle(h)
    shop, ref = _shops_with(session, ("busy.myshopify.com", "ref.myshopify.com"), h)
    overlaid: list = []
    _interleave(jobs, monkeypatch, overlaid)
    real_after = jobs._prepare_after
    done = []

    def after_then_reconcile(shop_id, prep, kw):
        res = real_after(shop_id, prep, kw)
        if not done and res is not None and res.stored:
            done.append(min(res.stored))
            for sid in (shop.id, ref.id):          # the same external write for both shops
                reconcile_write(db_url, sid, payload(min(res.stored), cust=9999, day=9, upd=100))
        return res

    monkeypatch.setattr(jobs, "_prepare_after", after_then_reconcile)
    a: list = []
    _job(config, shop.id, monkeypatch, True, a)
    assert done and sum(r["fallback"] for r in a) >= 1
    assert sum(r["write_timings"].get("body_check", 0) for r in a) >= 1    # the generation moved: bodies compared
    _job(config, ref.id, monkeypatch, False, [])
    st_a, st_b = _comparable(state(session, shop.id)), _comparable(state(session, ref.id))
    for k in ("lines", "items", "pairs", "baskets", "seq_items", "seq_pairs"):
        assert st_a[k] == st_b[k], k


def test_order_pipeline_setting_selects_the_path(monkeypatch):
    """ORDER_PIPELINE=0: serial, 1: pipelined, unset / auto: pipelined on PostgreSQL only (see PIPELINE)."""
    import workers.order_jobs as jobs
    from shopify_app.config import Config
    from workers import context

    code = "import workers.order_jobs as j; print(j.PIPELINE)"
    env = {k: v for k, v in os.environ.items() if k != "ORDER_PIPELINE"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    out = [subprocess.run([sys.executable, "-c", code], env={**env, **({"ORDER_PIPELINE": v} if v else {})},
                          capture_output=True, text=True, check=True).stdout.strip() for v in ("0", "1", "auto", "")]
    assert out == ["False", "True", "auto", "auto"]
    monkeypatch.setattr(jobs, "PIPELINE", "auto")
    for url, pipelined in (("sqlite:////tmp/x.sqlite3", False), ("postgresql+psycopg://u@h/db", True)):
        context.set_config(Config(env="test", database_url=url))
        try:
            assert jobs._pipelined() is pipelined
        finally:
            context.set_config(None)


def test_lock_shop_bumps_the_generation_without_stamping_the_shop(db_url, session):
    from workers.context import lock_shop, locked_generation

    shop = make_shop(session, "gen.myshopify.com")
    session.commit()
    stamped = shop.updated_at
    for k in range(2):
        with session_scope(db_url) as s:
            locked = lock_shop(s, shop.id)
            assert (locked_generation(locked), locked.analytics_generation) == (k, k + 1)
    session.expire_all()
    assert (shop.analytics_generation, shop.updated_at) == (2, stamped)


def test_a_body_rewritten_by_a_lock_holder_is_caught_a_body_check_skipped_otherwise(db_url, session):
    """Validation re-reads the bodies only when the generation moved: a customers/redact rewrite (under the lock)
    between prepare and write is seen (fallback, the scrubbed body applied); the same batch without it writes
    as prepared without re-reading a body."""
    import workers.order_jobs as jobs
    from tests.pipeline.test_order_jobs import redact

    shop = make_shop(session, "scrub.myshopify.com")
    _rfm(session, shop)
    deliver(session, shop, "orders/create", payload(1, cust=7001, day=1))
    deliver(session, shop, "orders/create", payload(2, cust=7002, day=2))
    session.commit()
    with reader_scope(db_url) as r:
        prep = jobs.prepare_batch(r, shop.id, limit=1)
    with session_scope(db_url) as s:
        res = jobs.write_batch(s, shop.id, prep)
    assert res["fallback"] == 0 and res["write_timings"]["body_check"] == 0
    with reader_scope(db_url) as r:
        prep = jobs.prepare_batch(r, shop.id, limit=1)
    redact(db_url, shop.id, 7002, [])                    # rewrites the pending body of order 2 (guest order now)
    with session_scope(db_url) as s:
        res = jobs.write_batch(s, shop.id, prep)
    assert res["fallback"] == 1 and res["write_timings"]["body_check"] == 1
    session.expire_all()
    from shopify_app.models import Order
    assert session.get(Order, (shop.id, 2)).customer_id is None


@pytest.mark.parametrize("pipelined", [True, False])
def test_the_job_checks_blob_counts_once_per_few_blobs_and_at_its_end(config, session, small_batches, monkeypatch,
                                                                       pipelined):
    """The compaction check (two counts) runs once per COMPACT_BLOBS // 8 blobs written, and once more when the
    job ends with unchecked blobs: a job writing fewer blobs still asks for the compaction that is due."""
    jobs = small_batches
    monkeypatch.setattr(jobs, "COMPACT_BLOBS", 64)            # a check per 8 blobs
    monkeypatch.setattr(jobs, "COMPACT_PAIRS", 1)             # ... and any pair blob makes a compaction due
    due = []
    monkeypatch.setattr(jobs, "enqueue_followups", lambda cfg, shop_id, d: due.append(dict(d)))
    real_check, checks = jobs._compaction_check, []
    monkeypatch.setattr(jobs, "_compaction_check", lambda s, r: checks.append(1) or real_check(s, r))
    shop = make_shop(session, "blobs.myshopify.com")
    _rfm(session, shop)
    for k in range(4):
        deliver(session, shop, "orders/create", payload(200 + k, cust=8300 + k, day=1 + k))
    session.commit()
    results: list = []
    res = _job(config, shop.id, monkeypatch, pipelined, results)
    blobs = sum(r.get("blobs", 0) + r.get("sequential_blobs", 0) for r in results)
    assert 0 < blobs < 8 and checks == []                    # no check per batch below the cadence ...
    assert res["compact_counts"] is True and due[-1]["compact_counts"] is True     # ... one at the end
    monkeypatch.setattr(jobs, "COMPACT_BLOBS", 8)             # a check per blob: after every batch that wrote one
    for k in range(4):
        deliver(session, shop, "orders/create", payload(300 + k, cust=8300 + k, day=10 + k))
    session.commit()
    results.clear()
    _job(config, shop.id, monkeypatch, pipelined, results)
    assert len(checks) == sum(1 for r in results if r.get("blobs") or r.get("sequential_blobs")) > 0
