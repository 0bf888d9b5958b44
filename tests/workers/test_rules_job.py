"""mine_rules through the database: exact vs mlxtend on real data, rolling window, per segment, customers, triples."""
from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from shopify_app.analytics.incremental import Delta
from shopify_app.analytics.orders import OrderLine, OrderVersion
from shopify_app.analytics.rules import mine_pair_rules
from shopify_app.models import AssociationRule, CustomerStats, Shop
from workers import context
from workers.order_jobs import apply_version, update_customers, write_counts
from workers.rebuild_jobs import rebuild_shop_state
from workers.rules_jobs import mine_rules

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "retail_small.csv"


@pytest.fixture
def cfg(config):
    context.set_config(config)
    yield config
    context.set_config(None)


def make_shop(session, settings=None, domain="rules.myshopify.com"):
    shop = Shop(domain=domain, status="active", settings=settings or {})
    session.add(shop)
    session.commit()
    return shop


def store_only(session, shop, versions, now):
    """Order rows only (as the bulk import does); the counts come from a rebuild."""
    for v in versions:
        apply_version(session, shop.id, v, Delta(), now)
    session.commit()


def apply(session, shop, versions, now):
    batch = Delta()
    for v in versions:
        apply_version(session, shop.id, v, batch, now)
    session.flush()
    write_counts(session, shop.id, batch)
    update_customers(session, shop.id, batch, now)
    session.commit()


def retail_versions():
    """retail_small.csv as orders: non-'C' invoices, lines with Quantity > 0; StockCode -> product id."""
    df = pd.read_csv(SAMPLE, dtype={"InvoiceNo": str, "StockCode": str})
    df = df[~df.InvoiceNo.str.startswith("C") & (df.Quantity > 0)]
    codes = {c: k + 1 for k, c in enumerate(sorted(df.StockCode.unique()))}
    out = []
    for k, (inv, g) in enumerate(df.groupby("InvoiceNo", sort=True)):
        t = dt.datetime.fromisoformat(g.InvoiceDate.iloc[0])
        cust = g.CustomerID.iloc[0]
        lines = tuple(OrderLine(id=k * 1000 + i, product_id=codes[r.StockCode], quantity=int(r.Quantity),
                                price=float(r.UnitPrice)) for i, r in enumerate(g.itertuples()))
        out.append(OrderVersion(id=int(inv), processed_at=t, updated_at=t,
                                customer_id=None if pd.isna(cust) else int(cust),
                                subtotal=round(float((g.Quantity * g.UnitPrice).sum()), 2), lines=lines))
    return out, codes


def stored_rules(session, shop_id, kind="pair", segment="*"):
    t = AssociationRule.__table__
    rows = session.execute(select(t).where(t.c.shop_id == shop_id, t.c.kind == kind, t.c.segment == segment)).all()
    session.commit()
    return {(tuple(r.antecedent), tuple(r.consequent)): r for r in rows}


def basket_sets(versions, keep=lambda v: True):
    return [sorted({ln.product_id for ln in v.lines if ln.quantity - ln.refunded_quantity > 0 and ln.product_id})
            for v in versions if v.counted and keep(v)]


def assert_same_rules(stored, ref: pd.DataFrame):
    exp = {((int(r.antecedent),), (int(r.consequent),)): r for r in ref.itertuples(index=False)}
    assert set(stored) == set(exp)
    for k, e in exp.items():
        g = stored[k]
        assert g.count == e.count
        for name in ("support", "confidence", "lift", "leverage"):
            assert abs(getattr(g, name) - getattr(e, name)) <= 1e-9, (k, name)
        assert (g.conviction is None) == math.isinf(e.conviction)
        if g.conviction is not None:
            assert abs(g.conviction - e.conviction) <= 1e-9


@pytest.mark.parametrize("min_support", [0.02, 0.035])
def test_pair_rules_equal_mlxtend_on_retail_sample(session, cfg, min_support):
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    versions, _ = retail_versions()
    shop = make_shop(session, {"min_support": min_support, "min_count": 1, "rules_window_months": 12})
    now = dt.datetime(2011, 1, 15)
    store_only(session, shop, versions[:-12], now)          # stored orders -> snapshots by a rebuild,
    rebuild_shop_state(session, shop.id, now)
    session.commit()
    apply(session, shop, versions[-12:], now)               # the last ones through the incremental path (deltas)
    result = mine_rules(shop.id, now=now)
    baskets = basket_sets(versions)
    assert result["baskets"] == len(baskets) == 382

    te = TransactionEncoder()
    onehot = pd.DataFrame(te.fit(baskets).transform(baskets), columns=te.columns_)
    freq = fpgrowth(onehot, min_support=min_support, use_colnames=True, max_len=2)
    ref = association_rules(freq, num_itemsets=len(baskets), metric="support", min_threshold=0.0)
    ref = ref[(ref.antecedents.map(len) == 1) & (ref.consequents.map(len) == 1)]
    stored = stored_rules(session, shop.id)
    assert len(stored) == len(ref) > 50
    for r in ref.itertuples(index=False):
        g = stored[((next(iter(r.antecedents)),), (next(iter(r.consequents)),))]
        assert g.count == round(r.support * len(baskets))
        for name, e in (("support", r.support), ("confidence", r.confidence), ("lift", r.lift),
                        ("leverage", r.leverage)):
            assert abs(getattr(g, name) - e) <= 1e-9
        assert (g.conviction is None and math.isinf(r.conviction)) or abs(g.conviction - r.conviction) <= 1e-9

    # Triples: mlxtend fpgrowth(max_len=3) on all baskets at the bounded threshold (support of the 2000th most
    # frequent pair when more pairs pass min_support), the 3-itemset rules, top by lift.
    triples = stored_rules(session, shop.id, kind="triple")
    pair_support = sorted(ref.support[ref.antecedents.map(min) < ref.consequents.map(min)], reverse=True)
    t = max(min_support, pair_support[1999]) if len(pair_support) > 2000 else min_support
    freq3 = fpgrowth(onehot, min_support=t, use_colnames=True, max_len=3)
    ref3 = association_rules(freq3, num_itemsets=len(baskets), metric="support", min_threshold=0.0)
    ref3 = ref3[ref3.antecedents.map(len) + ref3.consequents.map(len) == 3]
    exp3 = {(tuple(sorted(r.antecedents)), tuple(sorted(r.consequents))): r.lift for r in ref3.itertuples()}
    assert 0 < len(triples) == min(200, len(exp3))
    for k, r in triples.items():
        assert abs(r.lift - exp3[k]) <= 1e-9
    assert min(r.lift for r in triples.values()) >= sorted(exp3.values(), reverse=True)[len(triples) - 1] - 1e-9

    # Customers per rule: distinct customers who bought both items (any of their orders in the window).
    bought: dict = {}
    for v in versions:
        if v.customer_id is not None:
            for ln in v.lines:
                bought.setdefault(ln.product_id, set()).add(v.customer_id)
    for (a, b), r in stored.items():
        assert r.customers == len(bought[a[0]] & bought[b[0]])


def month_orders(seed=5):
    """Orders over 2024-01 .. 2024-06 on 12 products, customers 1..20 and guests."""
    rnd = random.Random(seed)
    out = []
    for oid in range(1, 301):
        t = dt.datetime(2024, rnd.randint(1, 6), rnd.randint(1, 28), 12)
        items = rnd.sample(range(1, 13), rnd.randint(1, 5))
        lines = tuple(OrderLine(id=oid * 10 + i, product_id=p, quantity=1) for i, p in enumerate(items))
        out.append(OrderVersion(id=oid, processed_at=t, updated_at=t, customer_id=rnd.choice([None] + list(range(1, 21))),
                                subtotal=float(rnd.randint(1, 300)), lines=lines))
    return out


def test_window_drops_old_months_exactly(session, cfg):
    versions = month_orders()
    shop = make_shop(session, {"min_support": 0.01, "min_count": 2, "rules_window_months": 2})
    apply(session, shop, versions[:150], dt.datetime(2024, 7, 1))
    rebuild_shop_state(session, shop.id, dt.datetime(2024, 7, 1))
    session.commit()
    apply(session, shop, versions[150:], dt.datetime(2024, 7, 1))
    for now, months in ((dt.datetime(2024, 6, 20), (5, 6)), (dt.datetime(2024, 5, 3), (4, 5)),
                        (dt.datetime(2024, 2, 1), (1, 2))):
        result = mine_rules(shop.id, now=now)
        in_window = [v for v in versions if v.processed_at.month in months]
        assert result["window"] == {"first": f"2024-{months[0]:02d}", "last": f"2024-{months[1]:02d}"}
        ref = mine_pair_rules(basket_sets(in_window), 0.01, 2)
        assert_same_rules(stored_rules(session, shop.id), ref)
    # A window past the last sale is anchored on the last month with baskets (history-only shops keep rules).
    result = mine_rules(shop.id, now=dt.datetime(2026, 1, 1))
    assert result["window"] == {"first": "2024-05", "last": "2024-06"}
    # 0 = all time
    session.get(Shop, shop.id).settings = {"min_support": 0.01, "min_count": 2, "rules_window_months": 0}
    session.commit()
    result = mine_rules(shop.id, now=dt.datetime(2024, 6, 20))
    assert_same_rules(stored_rules(session, shop.id), mine_pair_rules(basket_sets(versions), 0.01, 2))


def test_per_segment_rules_equal_pandas_filter(session, cfg):
    versions = month_orders(seed=9)
    shop = make_shop(session, {"min_support": 0.02, "min_count": 2, "rules_window_months": 0})
    apply(session, shop, versions, dt.datetime(2024, 7, 1))
    # Segments assigned by hand (the job uses whatever segment each customer has now).
    seg_of = {cid: ("Champions" if cid % 3 == 0 else "At Risk" if cid % 3 == 1 else "New") for cid in range(1, 21)}
    for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop.id)):
        c.segment = seg_of[c.customer_id]
    session.commit()
    mine_rules(shop.id, now=dt.datetime(2024, 7, 1))

    lines = pd.DataFrame([(v.id, v.customer_id, ln.product_id) for v in versions for ln in v.lines],
                         columns=["order", "customer", "item"])
    lines["segment"] = lines["customer"].map(seg_of)
    checked = 0
    for name in ("Champions", "At Risk", "New"):
        sub = lines[lines["segment"] == name]
        ref = mine_pair_rules([sorted(set(g)) for _, g in sub.groupby("order")["item"]], 0.02, 2)
        stored = stored_rules(session, shop.id, segment=name)
        assert_same_rules(stored, ref)
        for (a, b), r in stored.items():
            both = sub.groupby("customer")["item"].agg(set)
            assert r.customers == int(both.map(lambda s: a[0] in s and b[0] in s).sum())
        checked += len(stored)
    assert checked > 20
    # A moved customer moves their whole history to the new segment at the next mining.
    for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop.id)):
        c.segment = "Champions"
    session.commit()
    mine_rules(shop.id, now=dt.datetime(2024, 7, 1))
    assert stored_rules(session, shop.id, segment="New") == {}
    cust = [v for v in versions if v.customer_id is not None]
    assert_same_rules(stored_rules(session, shop.id, segment="Champions"), mine_pair_rules(basket_sets(cust), 0.02, 2))


def test_rerun_replaces_rules_and_other_shops_untouched(session, cfg):
    versions = month_orders(seed=11)
    a = make_shop(session, {"min_support": 0.01, "min_count": 1, "rules_window_months": 0}, "a.myshopify.com")
    b = make_shop(session, {"min_support": 0.01, "min_count": 1, "rules_window_months": 0}, "b.myshopify.com")
    apply(session, a, versions, dt.datetime(2024, 7, 1))
    apply(session, b, versions[:50], dt.datetime(2024, 7, 1))
    mine_rules(a.id, now=dt.datetime(2024, 7, 1))
    mine_rules(b.id, now=dt.datetime(2024, 7, 1))
    first = {k: (r.count, r.lift) for k, r in stored_rules(session, a.id).items()}
    n_b = len(stored_rules(session, b.id))
    mine_rules(a.id, now=dt.datetime(2024, 7, 1))                  # idempotent
    assert {k: (r.count, r.lift) for k, r in stored_rules(session, a.id).items()} == first
    assert len(stored_rules(session, b.id)) == n_b > 0
    assert mine_rules(99999)["status"] == "missing"


def test_empty_shop_has_no_rules(session, cfg):
    shop = make_shop(session)
    result = mine_rules(shop.id, now=dt.datetime(2024, 7, 1))
    assert result["status"] == "done" and result["baskets"] == 0
    assert stored_rules(session, shop.id) == {}
    assert np.isscalar(result["pair"] if "pair" in result else 0)


def test_sequential_rules_obey_min_support_as_well_as_min_count():
    from workers.rules_jobs import sequential_rules

    seq = {"items": {1: 50, 2: 40, 3: 30}, "pairs": {(1, 2): 12, (1, 3): 6, (2, 3): 3}}
    # 200 customer orders: min_support 0.05 -> at least 10 antecedent occurrences followed by B
    kept = sequential_rules(seq, 200, min_count=2, min_support=0.05)
    assert [(r["antecedent"], r["consequent"], r["count"]) for r in kept] == [([1], [2], 12)]
    assert kept[0]["support"] == 12 / 200 and kept[0]["confidence"] == 12 / 50
    assert kept[0]["lift"] == (12 / 50) / (40 / 200)
    loose = sequential_rules(seq, 200, min_count=2, min_support=0.0)
    assert {tuple(r["antecedent"] + r["consequent"]) for r in loose} == {(1, 2), (1, 3), (2, 3)}


def test_mining_reads_without_the_sqlite_write_lock(session, cfg, monkeypatch):
    """On SQLite a mining run's read phase (seconds on a big shop) must not hold the database's single write lock:
    webhooks and order jobs commit while it reads. A writer commits from inside the read phase here."""
    import sqlite3
    import threading

    from shopify_app.db import get_engine
    from workers import rules_jobs

    if get_engine(cfg.sqlalchemy_url).dialect.name != "sqlite":
        pytest.skip("SQLite's single writer; on PostgreSQL readers and writers never block each other")
    shop = make_shop(session, {"min_support": 0.01, "min_count": 2, "rules_window_months": 0})
    now = dt.datetime(2011, 12, 10)
    versions, _ = retail_versions()
    apply(session, shop, versions[:200], now)
    real_read = rules_jobs.read_window
    outcome = {}

    def read_then_let_a_writer_in(s, shop_id, when):
        data = real_read(s, shop_id, when)         # the mining transaction is open and has read

        def write():                   # a plain connection with a short busy timeout: fails fast if locked
            w = sqlite3.connect(get_engine(cfg.sqlalchemy_url).url.database, timeout=2, isolation_level=None)
            try:
                w.execute("BEGIN IMMEDIATE")
                w.execute("UPDATE shops SET settings = settings WHERE id = ?", (shop_id,))
                w.execute("COMMIT")
                outcome["ok"] = True
            except sqlite3.OperationalError as exc:      # 'database is locked' is the failure we look for
                outcome["error"] = exc
            finally:
                w.close()
        t = threading.Thread(target=write)
        t.start()
        t.join(30)
        return data

    monkeypatch.setattr(rules_jobs, "read_window", read_then_let_a_writer_in)
    result = mine_rules(shop.id, now=now)
    assert result["status"] == "done" and result["pair"] > 0
    assert outcome.get("ok"), outcome


@pytest.mark.parametrize("hot", [0, 5, 1_000_000])
def test_sequential_pairs_of_rows_plus_blobs_pass_min_count_exactly(session, hot, monkeypatch):
    """read_sequential over rows (a rebuild) + folded snapshot payloads (compacted batches) + blobs (later
    batches, with subtractions): the pairs returned are exactly those whose SUM over all three reaches min_count,
    whatever HOT_PAIRS (0: the row query's bar is lowered by the largest payload sum; 5: the 5 largest are looked
    up by key; huge: all are)."""
    from shopify_app.models import CountSnapshot, SequentialPairBlob, SequentialPairDelta
    from tests.pipeline.test_sequential import apply_batches, definition, retail_history
    from workers import rules_jobs
    from workers.sequential_jobs import compact_sequential, rebuild_sequential

    monkeypatch.setattr(rules_jobs, "HOT_PAIRS", hot)
    versions, edits = retail_history()
    shop = make_shop(session)
    cut1, cut2 = len(versions) // 3, len(versions) * 2 // 3
    apply_batches(session, shop, versions[:cut1])
    rebuild_sequential(session, shop.id)
    session.commit()
    apply_batches(session, shop, versions[cut1:cut2])
    assert compact_sequential(session, shop.id) > 0
    session.commit()
    apply_batches(session, shop, versions[cut2:] + edits, size=30)
    for model in (SequentialPairDelta, SequentialPairBlob, CountSnapshot):      # all three parts hold pairs
        assert session.scalar(select(func.count()).select_from(model).where(model.shop_id == shop.id)) > 0
    session.commit()
    _, ref = definition(versions + edits)
    buckets = sorted({b for b, _a, _c in ref})
    checked = 0
    for first in (None, buckets[1]):
        window = {}
        for (b, x, y), n in ref.items():
            if first is None or b >= first:
                window[(x, y)] = window.get((x, y), 0) + n
        for min_count in (1, 2, 3, 5, 8):
            got = rules_jobs.read_sequential(session, shop.id, first, buckets[-1], min_count)["pairs"]
            assert got == {k: n for k, n in window.items() if n >= min_count}, (first, min_count)
            checked += len(got)
        session.commit()
    assert checked > 1000


# --------------------------------------------------------------------------------------------- pacing
def test_paced_job_mines_exactly_then_defers_the_next_run(session, cfg):
    """mine_rules_paced mines (rules exact) and records its duration; a run asked for right after is deferred to
    previous start + PACE_FACTOR x duration, as the shop's coalesced job in RQ's scheduled registry (which a new
    enqueue reuses); once that time has passed it mines again, exactly, with the orders added meanwhile."""
    import time

    from rq.registry import ScheduledJobRegistry

    from shopify_app.queues import DEFAULT, get_queue, redis_connection
    from workers import rules_jobs

    versions = month_orders(seed=11)
    shop = make_shop(session, {"min_support": 0.01, "min_count": 2, "rules_window_months": 0})
    apply(session, shop, versions[:200], dt.datetime(2024, 7, 1))
    conn = redis_connection(cfg.redis_url)
    before = time.time()
    assert rules_jobs.mine_rules_paced(shop.id)["status"] == "done"
    assert_same_rules(stored_rules(session, shop.id), mine_pair_rules(basket_sets(versions[:200]), 0.01, 2))
    started, took = (float(x) for x in conn.get(rules_jobs.pace_key(shop.id)).split())
    assert before - 0.001 <= started and took > 0             # stored to the millisecond (record_run)

    apply(session, shop, versions[200:], dt.datetime(2024, 7, 1))
    # The hold is PACE_FACTOR x the run's duration from its start; on a loaded machine applying the orders above
    # can outlast it (then the next run mines at once, as it should). Pin a hold that outlasts the rest of the test.
    started, took = time.time(), max(took, 2.0)
    rules_jobs.record_run(conn, shop.id, started, took)
    computed = {r.computed_at for r in stored_rules(session, shop.id).values()}
    deferred = rules_jobs.mine_rules_paced(shop.id)
    assert deferred["status"] == "deferred"
    assert 0 < deferred["wait_s"] <= rules_jobs.PACE_FACTOR * took
    assert {r.computed_at for r in stored_rules(session, shop.id).values()} == computed      # nothing mined
    registry = ScheduledJobRegistry(queue=get_queue(cfg, DEFAULT))
    assert registry.get_job_ids() == [rules_jobs.job_id(shop.id)]
    at = registry.get_scheduled_time(rules_jobs.job_id(shop.id)).timestamp()
    assert abs(at - (started + rules_jobs.PACE_FACTOR * took)) < 1.5           # RQ keeps whole seconds
    assert rules_jobs.enqueue_mine_rules(cfg, shop.id).id == rules_jobs.job_id(shop.id)   # reused, not queued
    assert registry.get_job_ids() == [rules_jobs.job_id(shop.id)] and not get_queue(cfg, DEFAULT).job_ids

    rules_jobs.record_run(conn, shop.id, time.time() - 100, 1.0)          # the hold is over
    assert rules_jobs.mine_rules_paced(shop.id)["status"] == "done"
    assert_same_rules(stored_rules(session, shop.id), mine_pair_rules(basket_sets(versions), 0.01, 2))


def test_paced_run_waits_in_a_real_worker(session, cfg, worker_process):
    """Through a real RQ worker (with its scheduler): a mining job asked for while the previous run holds the
    next one back is deferred, and the deferred run starts no sooner than the pace allows, then mines exactly."""
    import time

    from shopify_app.queues import redis_connection
    from tests.conftest import wait_for
    from workers import rules_jobs

    versions = month_orders(seed=12)
    shop = make_shop(session, {"min_support": 0.01, "min_count": 2, "rules_window_months": 0})
    apply(session, shop, versions, dt.datetime(2024, 7, 1))
    started, took = time.time(), 0.6                          # a run that took 0.6 s has just started
    rules_jobs.record_run(redis_connection(cfg.redis_url), shop.id, started, took)
    rules_jobs.enqueue_mine_rules(cfg, shop.id)
    worker_process("default")
    wait_for(lambda: stored_rules(session, shop.id), timeout=40, message="rules mined")
    computed = {r.computed_at for r in stored_rules(session, shop.id).values()}
    assert len(computed) == 1
    ran_at = computed.pop().replace(tzinfo=dt.timezone.utc).timestamp()
    assert ran_at >= started + rules_jobs.PACE_FACTOR * took - 0.05
    assert_same_rules(stored_rules(session, shop.id), mine_pair_rules(basket_sets(versions), 0.01, 2))


def test_sequential_rules_equal_the_confidences_definition():
    """The numpy selection equals analytics.sequential.confidences + sort by (count, confidence, pair) desc / asc,
    top SEQUENTIAL_LIMIT, rules without a base rate dropped; dict and PairArrays inputs agree."""
    from shopify_app.analytics import sequential as S
    from workers import rules_jobs

    rnd = random.Random(3)
    items = {i: rnd.randint(1, 40) for i in range(1, 60) if rnd.random() < 0.8}
    pairs = {(a, b): rnd.randint(1, 30) for a in range(1, 60) for b in range(1, 60) if a != b and rnd.random() < 0.3}
    for limit in (50, 100000):
        conf = S.confidences({("*", a): n for a, n in items.items()},
                             {("*", a, b): n for (a, b), n in pairs.items()}, min_count=4)
        top = sorted(conf.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:limit]
        expected = [(a, b, n, c, c / (items[b] / 500)) for (a, b), (n, c) in top if items.get(b)]
        old = rules_jobs.SEQUENTIAL_LIMIT
        rules_jobs.SEQUENTIAL_LIMIT = limit
        try:
            keys = sorted(pairs)
            arrays = rules_jobs.PairArrays(*(np.array(v, dtype=np.int64) for v in (
                [k[0] for k in keys], [k[1] for k in keys], [pairs[k] for k in keys])))
            assert arrays == pairs
            for given in (pairs, arrays):
                got = rules_jobs.sequential_rules({"items": items, "pairs": given}, 500, min_count=4)
                assert [(r["antecedent"][0], r["consequent"][0], r["count"], r["confidence"], r["lift"])
                        for r in got] == expected
        finally:
            rules_jobs.SEQUENTIAL_LIMIT = old
