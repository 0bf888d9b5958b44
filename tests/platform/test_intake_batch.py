"""Group commit (web/intake_batch.py) and the batch writer of the webhook intake (web/intake.py).

The request-level rules are tested through the app in test_webhook_intake.py; here the pieces that make them hold
under concurrency: many threads, one transaction per batch, every item answered once; and a batch holding every
kind of delivery at once (retries and duplicate events inside one batch included), on SQLite and PostgreSQL.
"""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select

from shopify_app.db import get_engine, session_scope, write_turn_path
from shopify_app.models import WebhookDelivery, utcnow
from shopify_app.web.intake import (
    ALREADY_RECORDED, Checkpointer, Delivery, _Dedicated, record_batch,
)
from shopify_app.web.intake_batch import GroupCommit, Waker
from tests import helpers
from tests.helpers import wait_for

SHOP = "batch-store.myshopify.com"
GONE = "gone-store.myshopify.com"
STRANGER = "stranger-store.myshopify.com"


# --------------------------------------------------------------------------------------------- GroupCommit
def _queue_behind_first(gc, threads, writing, gate) -> None:
    """Start threads[0] and wait until its submit is being written (the write blocks on `gate`), start the others
    and wait until all of them are queued behind it, then release the write and join every thread."""
    threads[0].start()
    assert writing.wait(10)
    for t in threads[1:]:
        t.start()
    wait_for(lambda: len(gc._queue) >= len(threads) - 1, timeout=10,
             message=f"{len(threads) - 1} submits queued behind the first batch")
    gate.set()
    for t in threads:
        t.join(10)


def test_concurrent_submits_are_written_in_batches_each_item_once():
    written: list[list[int]] = []
    gate, writing = threading.Event(), threading.Event()

    def write(items):
        writing.set()
        gate.wait(5)                       # the first batch holds the lead until everyone has queued
        written.append(list(items))
        return [i * 10 for i in items]

    gc = GroupCommit(write, lambda items, out: [o + 1 for o in out])
    results: dict[int, int] = {}

    def submit(i):
        results[i] = gc.submit(i)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    _queue_behind_first(gc, threads, writing, gate)          # item 0 is written alone, 39 queue behind it
    assert results == {i: i * 10 + 1 for i in range(40)}
    flat = sorted(i for batch in written for i in batch)
    assert flat == list(range(40))                           # every item written exactly once
    assert len(written) == 2 and gc.batches == 2             # the lone first one, then the 39 that queued
    assert not gc._busy and not gc._queue


def test_a_failing_batch_fails_its_own_items_only():
    fail = {"on": True}

    def write(items):
        if fail["on"]:
            raise RuntimeError("database hiccup")
        return list(items)

    gc = GroupCommit(write)
    with pytest.raises(RuntimeError, match="hiccup"):
        gc.submit("a")
    fail["on"] = False
    assert gc.submit("b") == "b"                             # the lead was released: next submit works


def test_max_batch_splits_a_backlog_and_the_lead_passes_on():
    sizes: list[int] = []
    gate, writing = threading.Event(), threading.Event()

    def write(items):
        writing.set()
        gate.wait(5)
        sizes.append(len(items))
        return list(items)

    gc = GroupCommit(write, max_batch=5)
    out: list = []
    threads = [threading.Thread(target=lambda i=i: out.append(gc.submit(i))) for i in range(23)]
    _queue_behind_first(gc, threads, writing, gate)
    assert sorted(out) == list(range(23))
    assert sizes == [1, 5, 5, 5, 5, 2]


# --------------------------------------------------------------------------------------------- record_batch
def _delivery(topic="orders/create", shop=SHOP, webhook_id="wh", event_id=None, body='{"id": 1}', error=None,
              triggered_at=None):
    return Delivery(shop_domain=shop, topic=topic, webhook_id=webhook_id, event_id=event_id, api_version="2026-10",
                    triggered_at=triggered_at, received_at=utcnow(), body=body, error=error)


def _rows(db_url):
    with session_scope(db_url) as s:
        rows = list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        s.expunge_all()
    return {r.webhook_id: r for r in rows}


def test_one_batch_with_every_kind_of_delivery(db_url):
    shop_id = helpers.add_shop(db_url, SHOP)
    gone_id = helpers.add_shop(db_url, GONE, status="uninstalled")
    record_batch(db_url, [_delivery(webhook_id="wh-old", event_id="ev-old")])      # recorded before this batch
    triggered = dt.datetime(2026, 11, 23, 12, 0, 0, 123456)
    batch = [
        _delivery(webhook_id="wh-1", event_id="ev-1", triggered_at=triggered),      # 0 pending_analytics
        _delivery(webhook_id="wh-1", event_id="ev-1"),                              # 1 same delivery in-batch
        _delivery(webhook_id="wh-2", event_id="ev-1"),                              # 2 same event, other id
        _delivery(webhook_id="wh-old", event_id="ev-old"),                          # 3 Shopify retry
        _delivery(webhook_id="wh-3", event_id="ev-old"),                            # 4 event already stored
        _delivery(topic="app/uninstalled", webhook_id="wh-4"),                      # 5 received
        _delivery(shop=GONE, webhook_id="wh-5"),                                    # 6 uninstalled: received
        _delivery(shop=STRANGER, webhook_id="wh-6"),                                # 7 unknown shop
        _delivery(shop=STRANGER, topic="shop/redact", webhook_id="wh-7"),           # 8 compliance: received
        _delivery(webhook_id="wh-8", body="a\x00b", error="body is not JSON"),      # 9 invalid
    ]
    out = record_batch(db_url, batch)
    assert [o.status for o in out] == [
        "pending_analytics", ALREADY_RECORDED, "duplicate", ALREADY_RECORDED, "duplicate", "received", "received",
        "unknown_shop", "received", "invalid"]
    assert [o.shop_id for o in out] == [shop_id, None, shop_id, None, shop_id, shop_id, gone_id, None, None, shop_id]
    rows = _rows(db_url)
    assert sorted(rows) == ["wh-1", "wh-2", "wh-3", "wh-4", "wh-5", "wh-6", "wh-7", "wh-8", "wh-old"]
    assert {o.delivery_id for o in out if o.delivery_id} == {r.id for w, r in rows.items() if w != "wh-old"}
    assert rows["wh-1"].body == '{"id": 1}' and rows["wh-1"].triggered_at == triggered
    assert rows["wh-2"].body is None and rows["wh-2"].error == "event ev-1 already recorded"
    assert rows["wh-6"].body is None and rows["wh-6"].shop_id is None
    assert rows["wh-8"].body == "a\ufffdb" and rows["wh-8"].error == "body is not JSON"
    assert all(r.attempts == 0 and r.received_at is not None for r in rows.values())
    assert abs(rows["wh-1"].received_at - batch[0].received_at) < dt.timedelta(microseconds=1)


@pytest.mark.parametrize("resends", [False, True])
def test_each_answer_names_the_row_of_its_own_webhook_id(db_url, resends):
    """On SQLite the ids come from last_insert_rowid() (no RETURNING): every inserted item's delivery_id is the id
    of the row holding its webhook id, whether the whole batch was inserted or some rows were refused in between."""
    helpers.add_shop(db_url, SHOP)
    record_batch(db_url, [_delivery(webhook_id="wh-m1"), _delivery(webhook_id="wh-m3")])
    wids = ["wh-a", "wh-m1", "wh-b", "wh-m3", "wh-c", "wh-a", "wh-d"] if resends else ["wh-a", "wh-b", "wh-c"]
    out = record_batch(db_url, [_delivery(webhook_id=w, body='{"w": "%s"}' % w) for w in wids])
    rows = _rows(db_url)
    for w, o in zip(wids, out):
        if o.status == ALREADY_RECORDED:
            assert o.delivery_id is None
        else:
            assert o.delivery_id == rows[w].id and rows[w].body == '{"w": "%s"}' % w
    assert [o.status for o in out].count(ALREADY_RECORDED) == (3 if resends else 0)


def test_sqlite_datetime_text_is_sqlalchemys_and_reads_back(db_url):
    """On SQLite the batch writes DATETIME text itself (intake._sqlite_datetime): the very text SQLAlchemy's own
    bind processor writes, and the ORM reads the same values back."""
    from sqlalchemy.dialects import sqlite

    from shopify_app.web.intake import _Sql, _sqlite_datetime

    processor = WebhookDelivery.__table__.c.received_at.type._cached_bind_processor(sqlite.dialect())
    values = [dt.datetime(2026, 11, 24, 5, 6, 7, 89), dt.datetime(1, 1, 1), dt.datetime(999, 12, 31, 23, 59, 59),
              dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.datetime(2026, 2, 28, 0, 0, 0, 500000)]
    assert [_sqlite_datetime(v) for v in values] == [processor(v) for v in values]
    assert _Sql(sqlite.dialect()).datetime(values[0]) == processor(values[0])
    received = dt.datetime(2026, 11, 24, 5, 6, 7, 123456)
    d = _delivery(webhook_id="wh-dt", triggered_at=dt.datetime(2026, 11, 23, 12, 0, 0, 1))
    d.received_at = received
    record_batch(db_url, [d])
    row = _rows(db_url)["wh-dt"]
    assert (row.received_at, row.triggered_at) == (received, dt.datetime(2026, 11, 23, 12, 0, 0, 1))


def test_concurrent_batches_of_the_same_delivery_store_one_row(db_url):
    helpers.add_shop(db_url, SHOP)
    outcomes: list = []
    barrier = threading.Barrier(6)

    def send():
        barrier.wait(10)
        outcomes.extend(record_batch(db_url, [_delivery(webhook_id="wh-race", event_id="ev-race")]))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(o.status for o in outcomes) == [ALREADY_RECORDED] * 5 + ["pending_analytics"]
    assert list(_rows(db_url)) == ["wh-race"]


def test_batches_reuse_the_dedicated_connection_and_a_failed_one_is_replaced(db_url, monkeypatch):
    helpers.add_shop(db_url, SHOP)
    engine = get_engine(db_url)
    record_batch(db_url, [_delivery(webhook_id="wh-c1")])
    dedicated = _Dedicated.of(db_url, engine)
    first = dedicated.conn
    assert first is not None
    record_batch(db_url, [_delivery(webhook_id="wh-c2")])
    assert dedicated.conn is first                                   # kept between batches
    with pytest.raises(Exception):
        record_batch(db_url, [_delivery(webhook_id="wh-c3", body=object())])    # the driver cannot bind it
    assert dedicated.conn is None                                    # dropped, not reused in an unknown state
    assert record_batch(db_url, [_delivery(webhook_id="wh-c4")])[0].status == "pending_analytics"
    assert dedicated.conn is not None and dedicated.conn is not first
    assert set(_rows(db_url)) == {"wh-c1", "wh-c2", "wh-c4"}         # the failed batch left nothing behind
    # Unused for longer than IDLE_S: handed back to the pool and checked out afresh.
    kept = dedicated.conn
    monkeypatch.setattr(_Dedicated, "IDLE_S", -1.0)
    record_batch(db_url, [_delivery(webhook_id="wh-c5")])
    assert dedicated.conn is not kept and "wh-c5" in _rows(db_url)


def test_postgresql_dedicated_session_autocommit_lz4_and_back_to_normal_in_the_pool(db_url, monkeypatch):
    """PostgreSQL: the intake's kept connection runs its batch's single INSERT in autocommit (committed before the
    batch answers) with lz4 TOAST compression; the body reads back byte for byte through an ordinary session; the
    connection goes back to the pool with the settings it came with."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL session settings")
    helpers.add_shop(db_url, SHOP)
    body = '{"id": 1, "note": "%s"}' % ("order line " * 2000)          # ~20 KB: TOASTed, compressed
    record_batch(db_url, [_delivery(webhook_id="wh-pg1", body=body)])
    dedicated = _Dedicated.of(db_url, get_engine(db_url))
    driver = dedicated.conn.driver_connection
    assert driver.autocommit is True
    assert driver.execute("SHOW default_toast_compression").fetchone()[0] == "lz4"
    assert driver.info.transaction_status.name == "IDLE"             # nothing left open: the INSERT committed
    with get_engine(db_url).connect() as other:                     # another session sees it at once
        stored, method = other.exec_driver_sql(
            "SELECT body, pg_column_compression(body) FROM webhook_deliveries WHERE webhook_id = 'wh-pg1'").one()
    assert stored == body and method == "lz4"
    kept = dedicated.conn
    monkeypatch.setattr(_Dedicated, "IDLE_S", -1.0)
    record_batch(db_url, [_delivery(webhook_id="wh-pg2")])           # the kept one goes back to the pool
    assert dedicated.conn is not kept
    assert driver.autocommit is False
    assert driver.execute("SHOW default_toast_compression").fetchone()[0] == "pglz"
    driver.rollback()


# --------------------------------------------------------------------------------------------- SQLite only
def _sqlite_only(db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite write lock / checkpoints")


def _pragmas(driver) -> tuple[int, int]:
    cur = driver.cursor()
    try:
        return (cur.execute("PRAGMA wal_autocheckpoint").fetchone()[0], cur.execute("PRAGMA mmap_size").fetchone()[0])
    finally:
        cur.close()


def test_sqlite_intake_connection_runs_without_mmap_or_autocheckpoint_and_goes_back_as_it_came(db_url, monkeypatch):
    """The intake's kept SQLite connection reads without the memory map and never checkpoints in a commit
    (intake._sqlite_session); a connection leaving the intake (idle, or the pooled one used when the kept one
    was busy) goes back to the pool with the settings every other connection has."""
    from shopify_app.db import SQLITE_MMAP_SIZE

    _sqlite_only(db_url)
    helpers.add_shop(db_url, SHOP)
    engine = get_engine(db_url)
    with engine.connect() as c:                                      # what the pool hands out
        assert _pragmas(c.connection.driver_connection) == (1000, SQLITE_MMAP_SIZE)
    record_batch(db_url, [_delivery(webhook_id="wh-s1")])
    dedicated = _Dedicated.of(db_url, engine)
    assert _pragmas(dedicated.conn.driver_connection) == (0, 0)
    dedicated.lock.acquire()                                         # busy: the next batch takes a pooled one
    try:
        record_batch(db_url, [_delivery(webhook_id="wh-s2")])
    finally:
        dedicated.lock.release()
    kept = dedicated.conn.driver_connection
    monkeypatch.setattr(_Dedicated, "IDLE_S", -1.0)
    record_batch(db_url, [_delivery(webhook_id="wh-s3")])            # the kept one goes back to the pool
    assert dedicated.conn.driver_connection is not kept
    assert set(_rows(db_url)) == {"wh-s1", "wh-s2", "wh-s3"}
    assert _pragmas(kept) == (1000, SQLITE_MMAP_SIZE)
    with engine.connect() as c1, engine.connect() as c2:             # every pooled connection as it came
        assert _pragmas(c1.connection.driver_connection) == _pragmas(c2.connection.driver_connection) \
            == (1000, SQLITE_MMAP_SIZE)


def test_the_sqlite_write_turn_is_a_cross_process_flock(db_url):
    _sqlite_only(db_url)
    helpers.add_shop(db_url, SHOP)
    record_batch(db_url, [_delivery(webhook_id="wh-lock")])          # creates the lock file
    path = write_turn_path(db_url)
    # Another process holds the intake lock -> this process cannot take it.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({path!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.readline()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        probe = subprocess.run([sys.executable, "-c", (
            "import fcntl, os\n"
            f"fd = os.open({path!r}, os.O_RDWR)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
            "except BlockingIOError:\n    print('busy')\n")], capture_output=True, text=True, timeout=30)
        assert probe.stdout.strip() == "busy"
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_checkpoints_run_in_the_background_after_enough_rows(db_url):
    _sqlite_only(db_url)
    helpers.add_shop(db_url, SHOP)
    cp = Checkpointer.of(db_url)
    before = cp.checkpoints
    for i in range(cp.rows_per_checkpoint // 20 + 1):
        record_batch(db_url, [_delivery(webhook_id=f"wh-{i}-{j}") for j in range(20)])
    wait_for(lambda: cp.checkpoints > before, timeout=20, message="a WAL checkpoint")


def _wal_frames(db_url) -> int:
    """Frames in the WAL now (what a checkpoint reports as the log's size; it copies them, harmless here)."""
    raw = get_engine(db_url).raw_connection()
    try:
        return raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        raw.close()


def _turn_is_held(db_url) -> str:
    """'busy' when some process holds the SQLite write turn (probed from another process), else 'free'."""
    path = write_turn_path(db_url)
    return subprocess.run([sys.executable, "-c", (
        "import fcntl, os\n"
        f"fd = os.open({path!r}, os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
        "except BlockingIOError:\n    print('busy')\n")], capture_output=True, text=True, timeout=30).stdout.strip()


def test_a_checkpoint_with_no_writer_meanwhile_lets_the_wal_start_over_without_holding_writers(db_url):
    _sqlite_only(db_url)
    helpers.add_shop(db_url, SHOP)
    cp = Checkpointer(db_url, restart_frames=1)       # private instance: its thread never runs (nothing due)
    for i in range(5):
        record_batch(db_url, [_delivery(webhook_id=f"wh-r{i}-{j}") for j in range(5)])
    raw = get_engine(db_url).raw_connection()
    try:
        cp._checkpoint(raw.cursor())
    finally:
        raw.close()
    assert (cp.checkpoints, cp.caught_up, cp.catch_up_due) == (1, 1, False)   # second pass: nothing appended
    grown = _wal_frames(db_url)
    record_batch(db_url, [_delivery(webhook_id="wh-r-next")])
    assert 0 < _wal_frames(db_url) < grown                                     # the WAL started over


def test_a_due_catch_up_is_made_by_the_next_batch_under_its_write_turn(db_url, monkeypatch):
    _sqlite_only(db_url)
    helpers.add_shop(db_url, SHOP)
    cp = Checkpointer.of(db_url)
    for i in range(5):
        record_batch(db_url, [_delivery(webhook_id=f"wh-c{i}-{j}") for j in range(5)])
    grown = _wal_frames(db_url)
    # What the background passes ask for when writers keep appending while they copy and the WAL is large.
    cp.catch_up_due, before = True, cp.catch_ups
    turns = []
    real_catch_up = Checkpointer.catch_up

    def watched(self, engine):
        turns.append(_turn_is_held(db_url))
        return real_catch_up(self, engine)

    monkeypatch.setattr(Checkpointer, "catch_up", watched)
    record_batch(db_url, [_delivery(webhook_id="wh-c-due")])
    assert (cp.catch_ups, cp.catch_up_due, turns) == (before + 1, False, ["busy"])   # made under the turn
    record_batch(db_url, [_delivery(webhook_id="wh-c-after")])
    assert 0 < _wal_frames(db_url) < grown                                           # the WAL started over
    assert len(_rows(db_url)) == 27


# --------------------------------------------------------------------------------------------- Waker
def test_waker_calls_after_the_request_and_merges_requests_made_meanwhile():
    """A key asked for while its call runs gets a new call that starts after the ask; asks made meanwhile are
    merged into that one call; the requesting thread never waits."""
    asked: list[str] = []
    started: list[tuple[str, int]] = []       # (key, how many asks had been made when the call started)
    gate, in_call = threading.Event(), threading.Event()

    def fn(key):
        started.append((key, len(asked)))
        in_call.set()
        assert gate.wait(10)
        return True

    waker = Waker(fn)

    def ask(key):
        asked.append(key)
        waker.request(key)

    ask("shop-1")
    assert in_call.wait(10)                   # call 1 in flight, held by the gate
    for key in ("shop-1", "shop-2", "shop-1", "shop-2", "shop-1"):
        ask(key)                              # returns at once
    assert not waker.wait_idle(0.05)
    gate.set()
    assert waker.wait_idle(10)
    assert started == [("shop-1", 1), ("shop-1", 6), ("shop-2", 6)]
    assert (waker.rounds, waker.calls, waker.failures) == (2, 3, 0)


def test_waker_rounds_are_min_interval_apart_and_merge_what_came_meanwhile():
    starts: list[float] = []

    def fn(key):
        starts.append(time.monotonic())
        return True

    waker = Waker(fn, min_interval=0.2)
    waker.request("shop-1")
    assert waker.wait_idle(10) and len(starts) == 1           # the first round at once
    for _ in range(5):
        waker.request("shop-1")                             # all within the interval: one more round
        time.sleep(0.01)
    assert waker.wait_idle(10)
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.2
    assert waker.rounds == 2


def test_waker_failure_drops_the_rest_of_the_round_and_goes_on():
    calls: list[int] = []
    fail = {"on": True}
    gate = threading.Event()

    def fn(key):
        calls.append(key)
        if key == 0:
            assert gate.wait(10)
            return True
        if fail["on"]:
            raise ConnectionError("redis down")
        return True

    waker = Waker(fn)
    waker.request(0)                          # holds the thread so that 1, 2, 3 form one round
    wait_for(lambda: calls == [0], timeout=10, message="the first call")
    for key in (1, 2, 3):
        waker.request(key)
    gate.set()
    assert waker.wait_idle(10)
    assert calls == [0, 1] and (waker.failures, waker.dropped) == (1, 2)   # 2 and 3 left to the sweeper
    fail["on"] = False
    waker.request(2)
    assert waker.wait_idle(10)
    assert calls == [0, 1, 2] and waker.failures == 1                        # the thread is still there
