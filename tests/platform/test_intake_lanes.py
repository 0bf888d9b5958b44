"""Concurrent group-commit batches in one process (web/intake_batch.Lanes; INTAKE_PG_BATCHES on PostgreSQL).

Lanes: every item answered exactly once, a failing batch fails its own items only, lone requests go to lane 0 and
a second batch starts only when `spill` requests wait behind the first. record_batch on two lanes at once (both databases): copies of the same deliveries racing in opposite
orders are recorded once, each answered once, and (PostgreSQL) never deadlock: rows are inserted in key order.
"""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from shopify_app.config import Config, ConfigError
from shopify_app.db import get_engine, session_scope
from shopify_app.models import WebhookDelivery, utcnow
from shopify_app.web import webhooks
from shopify_app.web.intake import ALREADY_RECORDED, PENDING_ANALYTICS, Delivery, _Dedicated, record_batch
from shopify_app.web.intake_batch import GroupCommit, Lanes
from tests import helpers
from tests.helpers import wait_for

SHOP = "lanes-store.myshopify.com"


# --------------------------------------------------------------------------------------------- Lanes
def _slow_lanes(n: int, fail=lambda items: False):
    """Lanes whose writes take 20 ms; records which lane wrote what and the most writes at once."""
    state = {"now": 0, "max": 0}
    guard = threading.Lock()
    written: list[tuple[int, int]] = []          # (lane, item)

    def make(k: int) -> GroupCommit:
        def write(items):
            with guard:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            try:
                time.sleep(0.02)
                if fail(items):
                    raise RuntimeError(f"lane {k} failed")
                with guard:
                    written.extend((k, i) for i in items)
                return [i * 10 for i in items]
            finally:
                with guard:
                    state["now"] -= 1
        return GroupCommit(write)

    return Lanes(make, n), state, written


def _submit_all(lanes, n_items: int, n_threads: int = 12):
    results: dict[int, list] = {}
    guard = threading.Lock()

    def run(t: int):
        for i in range(t, n_items, n_threads):
            try:
                r = lanes.submit(i)
            except RuntimeError as exc:
                r = exc
            with guard:
                results.setdefault(i, []).append(r)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_item_is_answered_once_with_up_to_n_batches_at_once(n):
    lanes, state, written = _slow_lanes(n)
    results = _submit_all(lanes, 240)
    assert {i: r for i, r in results.items()} == {i: [i * 10] for i in range(240)}
    assert sorted(i for _, i in written) == list(range(240))            # each written once, by one lane
    assert lanes.items == 240 and lanes.batches < 240                      # batched
    assert state["max"] <= n
    if n > 1:
        assert state["max"] > 1 and len({k for k, _ in written}) > 1     # lanes really wrote concurrently


def test_a_failing_batch_fails_its_own_items_only():
    lanes, _, written = _slow_lanes(3, fail=lambda items: any(i % 37 == 5 for i in items))
    results = _submit_all(lanes, 200)
    assert sorted(results) == list(range(200)) and all(len(r) == 1 for r in results.values())
    failed = {i for i, (r,) in results.items() if isinstance(r, RuntimeError)}
    ok = {i for i, (r,) in results.items() if r == i * 10}
    assert failed | ok == set(range(200))
    assert {i for _, i in written} == ok                                 # a failed batch wrote nothing
    assert {5, 42} <= failed and len(ok) > 100                           # only the batches holding 'bad' items


def test_lone_requests_go_to_lane_0():
    lanes, _, written = _slow_lanes(3)
    for i in range(5):
        assert lanes.submit(i) == i * 10
    assert written == [(0, i) for i in range(5)]


def test_a_second_batch_starts_only_when_spill_requests_wait_behind_the_first():
    gate = threading.Event()
    writing = threading.Event()
    written: list[tuple[int, int]] = []

    def make(k: int) -> GroupCommit:
        def write(items):
            if k == 0 and 0 in items:
                writing.set()
                assert gate.wait(10)
            written.extend((k, i) for i in items)
            return list(items)
        return GroupCommit(write)

    lanes = Lanes(make, 2)
    threads = [threading.Thread(target=lanes.submit, args=(i,)) for i in range(Lanes.spill + 1)]
    threads[0].start()
    assert writing.wait(10)
    for n, t in enumerate(threads[1:], 1):           # queued behind lane 0's blocked batch, one by one
        t.start()
        wait_for(lambda: len(lanes.lanes[0]._queue) == n, timeout=10, message=f"{n} queued on lane 0")
    assert written == []
    assert lanes.submit(99) == 99                    # lane 0 has `spill` waiting: a batch of its own on lane 1
    assert written == [(1, 99)]
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(written) == [(0, i) for i in range(Lanes.spill + 1)] + [(1, 99)]


def test_pg_batches_setting_is_checked_at_startup():
    assert Config.from_env({}).intake_pg_batches == 2
    assert Config.from_env({"INTAKE_PG_BATCHES": " 3 "}).intake_pg_batches == 3
    assert Config.from_env({"INTAKE_PG_BATCHES": "1"}).intake_pg_batches == 1
    for bad in ("0", "9", "two", "1.5"):
        with pytest.raises(ConfigError, match="INTAKE_PG_BATCHES"):
            Config.from_env({"INTAKE_PG_BATCHES": bad})
    with pytest.raises(ConfigError, match="INTAKE_PG_BATCHES"):
        Config(intake_pg_batches=0).validate()


def test_the_app_writes_with_lanes_on_postgresql_and_one_group_commit_on_sqlite(app, db_url):
    writer = webhooks._writer(app)
    if get_engine(db_url).dialect.name == "sqlite":
        assert isinstance(writer, GroupCommit)
    else:
        n = app.config["APP_CONFIG"].intake_pg_batches
        assert isinstance(writer, Lanes) and len(writer.lanes) == n if n > 1 else isinstance(writer, GroupCommit)


# --------------------------------------------------------------------------------------------- record_batch
def _delivery(webhook_id: str) -> Delivery:
    return Delivery(shop_domain=SHOP, topic="orders/create", webhook_id=webhook_id, event_id=None,
                    api_version="2026-10", triggered_at=None, received_at=utcnow(), body='{"id": 1}')


def _webhook_ids(db_url) -> list[str]:
    with session_scope(db_url) as s:
        return list(s.scalars(text("SELECT webhook_id FROM webhook_deliveries")))


def test_two_lanes_racing_on_the_same_deliveries_in_opposite_orders_record_each_once(db_url):
    helpers.add_shop(db_url, SHOP)
    rounds, size = 15, 12
    errors: list[BaseException] = []
    answers: dict[str, list] = {}
    guard = threading.Lock()
    barrier = threading.Barrier(2)

    def lane(k: int):
        for r in range(rounds):
            ids = [f"wh-{r}-{j}" for j in range(size)]
            batch = [_delivery(w) for w in (ids if k == 0 else ids[::-1])]
            try:
                barrier.wait(30)
                out = record_batch(db_url, batch, lane=k)
            except BaseException as exc:     # noqa: BLE001 - asserted below
                errors.append(exc)
                return
            with guard:
                for d, o in zip(batch, out):
                    answers.setdefault(d.webhook_id, []).append(o)

    threads = [threading.Thread(target=lane, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(answers) == rounds * size
    for wid, outs in answers.items():
        # Each delivery: one answer names its new row, the other copy's answer is 'already recorded'.
        assert sorted(o.status for o in outs) == [ALREADY_RECORDED, PENDING_ANALYTICS], wid
        assert sum(o.delivery_id is not None for o in outs) == 1
    assert sorted(_webhook_ids(db_url)) == sorted(answers)
    engine = get_engine(db_url)
    a, b = _Dedicated.of(db_url, engine, 0), _Dedicated.of(db_url, engine, 1)
    assert a is not b and a.conn is not None and b.conn is not None and a.conn is not b.conn


def test_postgresql_a_batch_waiting_on_an_uncommitted_copy_does_not_deadlock(db_url):
    """Another transaction has inserted copy k1 (uncommitted); a batch [k2, k1] waits for it. That transaction then
    inserts k2 too: the batch, inserting in key order (k1 first), holds nothing on k2, so there is no lock cycle;
    both copies answer 'already recorded' once the other transaction commits."""
    engine = get_engine(db_url)
    if engine.dialect.name == "sqlite":
        pytest.skip("PostgreSQL row-lock waits; SQLite serializes writers on its write lock")
    helpers.add_shop(db_url, SHOP)
    side = engine.connect()
    table = WebhookDelivery.__table__

    def insert(wid: str):
        side.execute(table.insert().values(shop_domain=SHOP, topic="orders/create", webhook_id=wid,
                                           received_at=utcnow(), status="received", attempts=0))

    out: list = []
    errors: list = []
    try:
        side.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
        insert("wh-k1")

        def batch():
            try:
                out.extend(record_batch(db_url, [_delivery("wh-k2"), _delivery("wh-k1")], lane=1))
            except BaseException as exc:     # noqa: BLE001 - asserted below
                errors.append(exc)

        t = threading.Thread(target=batch)
        t.start()
        with engine.connect() as probe:
            wait_for(lambda: probe.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'INSERT INTO webhook_deliveries%'")).scalar() >= 1, timeout=10,
                message="the batch waits for the uncommitted copy")
        insert("wh-k2")                  # would close a lock cycle if the batch had inserted k2 first
        side.commit()
    finally:
        side.close()
    t.join(30)
    assert errors == []
    assert [o.status for o in out] == [ALREADY_RECORDED, ALREADY_RECORDED]
    assert sorted(_webhook_ids(db_url)) == ["wh-k1", "wh-k2"]
