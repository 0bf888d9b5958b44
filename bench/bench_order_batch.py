"""Order job batch cost on real invoices, and how long it holds the write lock.

Builds a fresh database (SQLite file, or --database-url) with two shops and --rounds batches of --orders REST
order deliveries made from Online Retail invoices in time order (the freshness bench's basket loader; customers
mapped to 5,000 ids, orders one second apart, so repeat customers' orders fall inside each other's sequential
window as in bench (d)). Every round gives both shops the same batch and applies it two ways, in alternating order
(same process, same data, same history):

- locked: `process_shop_orders` in one write transaction + commit (the whole batch under the write lock, as the
  job did before the split);
- split: `prepare_batch` in a read transaction (no lock), then `write_batch` + commit in a write transaction
  (what `run_batch` does); the lock is held only for the second part.

Reports, per round and mode, the seconds in total and under the write lock (commit included), wall clock and this
thread's CPU time (on a busy machine the CPU time is the steadier number; on SQLite the database work runs in this
thread, on PostgreSQL it does not), and the per-phase seconds of the split batch (prepare: read_deliveries, convert,
product_types, prefetch, apply_diff, pair_payloads, sequential_delta; write: validate, orders, counts,
sequential_write, deliveries, update_customers, rescore; commit). --profile prints a cProfile of the last round's
split write phase.

    .venv/bin/python bench/bench_order_batch.py [--orders 200] [--rounds 3] [--database-url URL] [--profile]
    .venv/bin/python bench/bench_order_batch.py --live [--history 4000] [--orders 32] [--rounds 40]

--live reproduces the live job of bench (d) instead: one shop whose history first grows by --history orders
(applied by the job itself, unmeasured: Order / line rows, customer stats, count and sequential blobs, processed
deliveries), then --rounds batches of --orders orders, each order delivered twice (orders/create + orders/paid,
identical bodies, as the stand-in sends them), each batch run by `run_batch` (the job's own prepare + write +
compaction check, with the order items kept between batches as the draining job keeps them; a due compaction runs
in between, unmeasured, as its job would). Reports the job's CPU per
order (this thread: on SQLite the database work runs here) and the per-phase seconds per 1,000 orders.

--drain compares the job's serial and pipelined loops (workers.order_jobs ORDER_PIPELINE): two shops grow the same
history (--history orders, applied by the job, unmeasured), then every round gives both the same backlog of
--backlog orders (orders/create + orders/paid each) and drains it with `process_pending_orders` (its batch limits,
its items cache), serial for one shop and pipelined for the other, in alternating order. Redis is not used (the
wake key, hand-over check and follow-ups are stubbed out: no Redis round trips are measured). Reports wall and
process CPU (all threads) per order per mode, the write-lock hold per order (lock_s) and the fallbacks; the wall
per order is the job's capacity under a backlog (bench (d) needs well under 5 ms at 200 orders/s).

    .venv/bin/python bench/bench_order_batch.py --drain [--history 4000] [--backlog 400] [--rounds 4]

Ends with one line: RESULT {json}. No target of its own: it is the microscope for bench (d).
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import random
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_freshness import load_invoices  # noqa: E402
from bench_order_update import rest_payload  # noqa: E402

from shopify_app.cli import upgrade_database  # noqa: E402
from shopify_app.db import reader_session_factory, session_factory  # noqa: E402
from shopify_app.models import Shop, WebhookDelivery  # noqa: E402
from workers.order_jobs import _compaction_check, prepare_batch, process_shop_orders, write_batch  # noqa: E402

NOW = dt.datetime(2026, 11, 1)


def add_deliveries(factory, shop_id: int, domain: str, batch, first_oid: int, products: dict,
                   topics=("orders/create",)) -> None:
    """One delivery per order and topic (identical bodies, as the stand-in sends orders/create + orders/paid)."""
    with factory() as s:
        oid = first_oid
        for cust, lines in batch:
            oid += 1
            rows = [(oid * 1000 + i, products.setdefault(code, len(products) + 1), q, float(price))
                    for i, (code, _title, _type, price, q) in enumerate(lines)]
            customer = zlib.crc32(str(cust).encode()) % 5000 + 1 if cust else None   # stable across runs
            t = NOW + dt.timedelta(seconds=oid)
            payload = rest_payload(oid, customer, t, t, rows)
            if customer is None:
                payload["customer"] = None
            body = json.dumps(payload)
            for topic in topics:
                s.add(WebhookDelivery(shop_id=shop_id, shop_domain=domain, topic=topic,
                                      webhook_id=f"w{shop_id}-{oid}-{topic}", status="pending_analytics", body=body))
        s.commit()


def run_locked(factory, shop_id: int, n: int, now) -> dict:
    with factory() as s:
        t0, c0 = time.perf_counter(), time.thread_time()
        res = process_shop_orders(s, shop_id, limit=n, now=now)
        s.commit()
        total, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return {"applied": res["applied"], "total_s": total, "lock_s": total, "total_cpu_s": cpu, "lock_cpu_s": cpu}


def run_split(factory, reader, shop_id: int, n: int, now, profiler=None) -> dict:
    t0, c0 = time.perf_counter(), time.thread_time()
    with reader() as r:
        prep = prepare_batch(r, shop_id, limit=n, now=now)
        r.commit()
    t1, c1 = time.perf_counter(), time.thread_time()
    with factory() as s:
        if profiler:
            profiler.enable()
        res = write_batch(s, shop_id, prep, compaction_check=False)    # as run_batch: checked after the commit
        tc = time.perf_counter()
        s.commit()
        t2, c2 = time.perf_counter(), time.thread_time()
        if profiler:
            profiler.disable()
    with reader() as r:
        _compaction_check(r, res)
        r.commit()
    phases = {**{f"prepare.{k}": v for k, v in prep.timings.items()},
              **{f"write.{k}": v for k, v in res["write_timings"].items()}, "write.commit": t2 - tc}
    return {"applied": res["applied"], "fallback": res["fallback"], "total_s": t2 - t0, "lock_s": t2 - t1,
            "total_cpu_s": c2 - c0, "lock_cpu_s": c2 - c1, "prepare_s": t1 - t0, "phases": phases}


def live_main(args, url: str) -> None:
    """--live: the job's cost per order with a grown history and live-shaped batches (see the docstring)."""
    from shopify_app.config import Config
    from workers import context
    from workers.order_jobs import run_batch
    from workers.rebuild_jobs import compact_shop

    context.set_config(Config(env="test", database_url=url))
    factory = session_factory(url)
    with factory() as s:
        shop = Shop(domain="live.myshopify.com", status="active", settings={})
        s.add(shop)
        s.commit()
        shop_id, domain = shop.id, shop.domain
    n, hist = args.orders, args.history
    invoices = load_invoices(None, hist + n * args.rounds, False, random.Random(1))
    products: dict[str, int] = {}
    topics = ("orders/create", "orders/paid")

    profiler = cProfile.Profile() if args.profile else None
    items_cache: dict = {}           # as process_pending_orders keeps it between its batches

    def one_batch(k: int, first: int, measure: bool) -> dict | None:
        batch = invoices[first:first + n]
        add_deliveries(factory, shop_id, domain, batch, 1000 + first, products, topics)
        if measure and profiler:
            profiler.enable()
        t0, c0 = time.perf_counter(), time.thread_time()
        res = run_batch(shop_id, limit=2 * n, now=NOW + dt.timedelta(seconds=1000 + first + n + 1),
                        items_cache=items_cache)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        if measure and profiler:
            profiler.disable()
        assert res["applied"] == len(batch) and not res["more"], res
        if res.get("compact_counts"):
            compact_shop(shop_id)                     # the coalesced job would run soon after (not measured)
        if not measure:
            return None
        return {"orders": res["applied"], "wall_s": wall, "cpu_s": cpu, "lock_s": res["lock_s"],
                "phases": {**{f"prepare.{k}": v for k, v in res["prepare_timings"].items()},
                           **{f"write.{k}": v for k, v in res["write_timings"].items()}}}

    t0 = time.perf_counter()
    for first in range(0, hist, n):
        one_batch(0, first, False)
    print(f"history: {hist} orders in {time.perf_counter() - t0:.1f} s", flush=True)
    rounds = [one_batch(r, hist + r * n, True) for r in range(args.rounds)]
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
    orders = sum(r["orders"] for r in rounds)
    locks = [r["lock_s"] for r in rounds]
    per_k = 1000 / orders
    phases: dict = {}
    for r in rounds:
        for k, v in r["phases"].items():
            phases[k] = phases.get(k, 0.0) + v
    out = {"cpu_ms_per_order": round(sum(r["cpu_s"] for r in rounds) * 1000 / orders, 3),
           "wall_ms_per_order": round(sum(r["wall_s"] for r in rounds) * 1000 / orders, 3),
           "lock_ms_per_order": round(sum(r["lock_s"] for r in rounds) * 1000 / orders, 3),
           "median_batch_cpu_ms": round(statistics.median(r["cpu_s"] for r in rounds) * 1000, 2),
           "batch_lock_ms_p50_p90_max": [round(x * 1000, 1) for x in (
               statistics.median(locks), sorted(locks)[int(0.9 * len(locks))], max(locks))]}
    print(f"{orders} orders in {len(rounds)} batches: " + ", ".join(f"{k} {v}" for k, v in out.items()), flush=True)
    print("   per 1,000 orders (s): " + ", ".join(f"{k} {v * per_k:.3f}" for k, v in phases.items()), flush=True)
    print("RESULT " + json.dumps({"bench": "order_batch_live", "db": url.split(":", 1)[0], "orders_per_batch": n,
                                  "history": hist, "batches": len(rounds), **out,
                                  "phases_s_per_1000_orders": {k: round(v * per_k, 4) for k, v in phases.items()}}))


def drain_main(args, url: str) -> None:
    """--drain: the job's serial loop against its pipelined loop on the same backlogs (see the docstring)."""
    import workers.order_jobs as jobs
    from shopify_app.config import Config
    from workers import context

    context.set_config(Config(env="test", database_url=url))
    jobs._clear_wake = lambda shop_id: None            # no Redis here (see the docstring)
    jobs._woken = lambda shop_id: False
    jobs._others_waiting = lambda: False               # nobody waits: the job drains the backlog to its end
    jobs.enqueue_followups = lambda *a: None
    factory = session_factory(url)
    shops = {}
    with factory() as s:
        for mode in ("serial", "pipelined"):
            shop = Shop(domain=f"drain-{mode}.myshopify.com", status="active", settings={})
            s.add(shop)
            s.flush()
            shops[mode] = (shop.id, shop.domain)
        s.commit()
    hist, m = args.history, args.backlog
    invoices = load_invoices(None, hist + m * args.rounds, False, random.Random(1))
    products: dict[str, int] = {}
    topics = ("orders/create", "orders/paid")

    def drain(mode: str) -> dict:
        from workers.rebuild_jobs import compact_shop

        jobs.PIPELINE = mode == "pipelined"
        t0, c0 = time.perf_counter(), time.process_time()
        res = jobs.process_pending_orders(shops[mode][0])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        compact_shop(shops[mode][0])                 # the coalesced job would run meanwhile (not measured)
        return {"orders": res.get("applied", 0), "wall_s": wall, "cpu_s": cpu, "lock_s": res.get("lock_s", 0.0),
                "fallback": res.get("fallback", 0), "batches": res.get("batches", 0)}

    t0 = time.perf_counter()
    for first in range(0, hist, 500):
        for mode, (shop_id, domain) in shops.items():
            add_deliveries(factory, shop_id, domain, invoices[first:min(hist, first + 500)], 1000 + first, products,
                           topics)
            drain(mode)
    print(f"history: {hist} orders per shop in {time.perf_counter() - t0:.1f} s", flush=True)
    totals = {mode: [] for mode in shops}
    for r in range(args.rounds):
        batch = invoices[hist + r * m:hist + (r + 1) * m]
        for mode, (shop_id, domain) in shops.items():
            add_deliveries(factory, shop_id, domain, batch, 1000 + hist + r * m, products, topics)
        for mode in (("serial", "pipelined") if r % 2 == 0 else ("pipelined", "serial")):
            res = drain(mode)
            totals[mode].append(res)
            print(f"round {r} {mode}: {res['orders']} orders in {res['batches']} batches, "
                  f"{res['wall_s'] * 1000 / max(1, res['orders']):.2f} ms wall / "
                  f"{res['cpu_s'] * 1000 / max(1, res['orders']):.2f} ms CPU per order, lock "
                  f"{res['lock_s'] * 1000 / max(1, res['orders']):.2f} ms per order, fallbacks {res['fallback']}",
                  flush=True)
    out = {}
    for mode, rows in totals.items():
        n = max(1, sum(r["orders"] for r in rows))
        out[mode] = {"wall_ms_per_order": round(sum(r["wall_s"] for r in rows) * 1000 / n, 3),
                     "cpu_ms_per_order": round(sum(r["cpu_s"] for r in rows) * 1000 / n, 3),
                     "lock_ms_per_order": round(sum(r["lock_s"] for r in rows) * 1000 / n, 3),
                     "fallbacks": sum(r["fallback"] for r in rows),
                     "wall_ms_per_order_by_round": [round(r["wall_s"] * 1000 / max(1, r["orders"]), 3) for r in rows]}
    print("RESULT " + json.dumps({"bench": "order_drain", "db": url.split(":", 1)[0], "history": hist,
                                  "backlog": m, "rounds": args.rounds, **out}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=200, help="orders per batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--database-url", default=None, help="an empty scratch database (default: a SQLite file)")
    ap.add_argument("--profile", action="store_true", help="cProfile the last round's split write phase (--live: the measured batches)")
    ap.add_argument("--live", action="store_true", help="live-shaped batches on a grown history (see above)")
    ap.add_argument("--history", type=int, default=4000, help="--live / --drain: orders applied before measuring")
    ap.add_argument("--drain", action="store_true", help="the job's serial vs pipelined loop on backlogs (see above)")
    ap.add_argument("--backlog", type=int, default=400, help="--drain: orders per backlog")
    args = ap.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='bench_batch_')}/b.sqlite3"
    upgrade_database(url)
    if args.live:
        return live_main(args, url)
    if args.drain:
        return drain_main(args, url)
    factory, reader = session_factory(url), reader_session_factory(url)
    shops = {}
    with factory() as s:
        for mode in ("locked", "split"):
            shop = Shop(domain=f"batch-{mode}.myshopify.com", status="active", settings={})
            s.add(shop)
            s.flush()
            shops[mode] = (shop.id, shop.domain)
        s.commit()
    n = args.orders
    invoices = load_invoices(None, n * args.rounds, False, random.Random(1))
    products: dict[str, int] = {}
    rounds = []
    profiler = None
    for r in range(args.rounds):
        batch = invoices[r * n:(r + 1) * n]
        for shop_id, domain in shops.values():
            add_deliveries(factory, shop_id, domain, batch, 1000 + r * n, products)
        pairs = sum(len(ls) * (len(ls) - 1) // 2 for _, ls in batch)
        if args.profile and r == args.rounds - 1:
            profiler = cProfile.Profile()
        now = NOW + dt.timedelta(days=1)
        order = ("locked", "split") if r % 2 == 0 else ("split", "locked")
        out = {}
        for mode in order:
            shop_id = shops[mode][0]
            out[mode] = (run_locked(factory, shop_id, n, now) if mode == "locked"
                         else run_split(factory, reader, shop_id, n, now, profiler))
        row = {"orders": out["split"]["applied"], "pair_increments": pairs,
               **{f"{m}_{k}": round(out[m][k], 4) for m in ("locked", "split")
                  for k in ("total_s", "lock_s", "total_cpu_s", "lock_cpu_s")},
               "split_fallback": out["split"]["fallback"],
               "phases": {k: round(v, 4) for k, v in out["split"]["phases"].items()}}
        rounds.append(row)
        print(f"round {r}: {row['orders']} orders, {pairs} pair increments | locked {row['locked_total_s']:.3f} s "
              f"(cpu {row['locked_total_cpu_s']:.3f}) | split {row['split_total_s']:.3f} s, lock held "
              f"{row['split_lock_s']:.3f} s (cpu {row['split_lock_cpu_s']:.3f})", flush=True)
        print("   " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in row["phases"].items()) + " (ms)", flush=True)
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    med = {k: round(statistics.median(r[k] for r in rounds), 4)
           for k in ("locked_total_s", "locked_lock_s", "locked_lock_cpu_s", "split_total_s", "split_lock_s",
                     "split_total_cpu_s", "split_lock_cpu_s")}
    print("RESULT " + json.dumps({"bench": "order_batch", "db": url.split(":", 1)[0], "orders_per_batch": n,
                                  "median": med, "rounds": rounds}))


if __name__ == "__main__":
    main()
