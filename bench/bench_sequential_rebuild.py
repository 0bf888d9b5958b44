"""Bench: the sequential ("buy next") rebuild after a history import, and how long it blocks other writers.

    .venv/bin/python bench/bench_sequential_rebuild.py [--database-url URL] [--years 1|2] [--max-orders N]

Loads UCI Online Retail (/work/shared/data: the 2010-2011 year, or both years with --years 2) straight into
Order / OrderLine rows of one shop (what the history import stores; cleaning as the import would count them:
no 'C' invoices, quantity > 0, a customer id), then runs, in this process, one after the other on the same data:

- reference: the previous job body, verbatim - count and write inside one write transaction holding the shop row;
- new: `rebuild_sequential_job` - counts computed in a read transaction, rows staged (SQLite: TEMP tables),
  then replaced in a short write transaction.

During each run a probe thread plays the webhook intake / the shop's order job: every 50 ms it opens a write
transaction, locks the shop row, updates one row (a Job row of the shop) and commits, recording how long
each write waited. Reported per run: total seconds, seconds inside the write transaction (`lock_s`, the job's
own timing; the new job also reports `read_s` and `stage_s`), the probe's longest wait (what a webhook would have
waited) and its failed writes (SQLite's busy timeout is 60 s). The written rows of both runs are compared
(identical or the bench fails). Ends with exactly one line `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, func, insert, select, text  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from shopify_app.cli import upgrade_database  # noqa: E402
from shopify_app.config import Config  # noqa: E402
from shopify_app.db import dispose_all, session_scope  # noqa: E402
from shopify_app.models import (  # noqa: E402
    CountSnapshot, Job, Order, OrderLine, SequentialItemDelta, SequentialPairBlob, SequentialPairDelta, Shop,
)
from workers import context  # noqa: E402
from workers import sequential_jobs  # noqa: E402

DATA = Path("/work/shared/data")
YEAR2 = DATA / "online_retail.csv.gz"                 # 2010-12 .. 2011-12
YEAR1 = DATA / "online_retail_II_2009_2010.csv.gz"    # 2009-12 .. 2010-12 (rows before 2010-12-01 used)
CHUNK = 20_000


def read_orders(years: int, max_orders: int | None) -> dict:
    """{invoice: (customer, time, {stock code: quantity})} of counted invoices with a customer."""
    orders: dict = {}
    files = ([(YEAR1, "2010-12-01")] if years == 2 else []) + [(YEAR2, None)]
    for path, before in files:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            r = csv.reader(fh)
            next(r)
            for inv, code, _desc, qty, when, _price, cust, _country in r:
                if before and when >= before:
                    continue
                if inv.startswith("C") or not cust or not inv.isdigit():
                    continue
                q = int(float(qty))
                if q <= 0:
                    continue
                entry = orders.get(inv)
                if entry is None:
                    if max_orders and len(orders) >= max_orders:
                        continue
                    entry = orders[inv] = (int(float(cust)), dt.datetime.fromisoformat(when[:19]), {})
                entry[2][code] = entry[2].get(code, 0) + q
    return orders


def fill(url: str, orders: dict) -> tuple[int, dict]:
    upgrade_database(url)
    codes: dict[str, int] = {}
    now = dt.datetime(2012, 1, 1)
    with session_scope(url) as s:
        shop = Shop(domain="bench-seq.myshopify.com", status="active", settings={})
        s.add(shop)
        s.flush()
        sid = shop.id
        order_rows, line_rows = [], []
        lid = 0
        for inv, (cust, t, lines) in orders.items():
            order_rows.append({"shop_id": sid, "id": int(inv), "name": f"#{inv}", "customer_id": cust,
                               "processed_at": t, "shopify_updated_at": t, "test": False,
                               "financial_status": "paid", "currency": "GBP", "subtotal": 0.0,
                               "total_discounts": 0.0, "total_refunded": 0.0, "net_revenue": 0.0, "counted": True,
                               "contribution": {}, "ingested_at": now})
            for code, q in lines.items():
                lid += 1
                line_rows.append({"shop_id": sid, "order_id": int(inv), "id": lid,
                                  "product_id": codes.setdefault(code, len(codes) + 1), "variant_id": None,
                                  "product_type": None, "quantity": q, "refunded_quantity": 0, "price": 1.0,
                                  "discount": 0.0})
        for model, rows in ((Order, order_rows), (OrderLine, line_rows)):
            for k in range(0, len(rows), CHUNK):
                s.execute(insert(model.__table__), rows[k:k + CHUNK])
        s.add(Job(shop_id=sid, kind="probe", status="done"))
    return sid, {"orders": len(order_rows), "lines": len(line_rows), "products": len(codes)}


class Probe:
    """A writer beside the rebuild (the webhook intake's stand-in): one short write transaction every 50 ms."""

    def __init__(self, url: str, shop_id: int):
        self.url, self.shop_id = url, shop_id
        self.waits: list[float] = []
        self.failed = 0               # writes that gave up ("database is locked" after the busy timeout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                with session_scope(self.url) as s:
                    # the shop row lock too, as an order batch takes it (PostgreSQL: writers of other rows and
                    # shops never wait for the rebuild; this shop's order batches do)
                    s.scalar(select(Shop.id).where(Shop.id == self.shop_id).with_for_update())
                    s.execute(text("UPDATE jobs SET message = :m WHERE shop_id = :s AND kind = 'probe'"),
                              {"m": str(t0), "s": self.shop_id})
            except OperationalError:
                self.failed += 1
            self.waits.append(time.perf_counter() - t0)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def written(url: str, shop_id: int) -> tuple:
    """Item rows in full; pair rows as per-bucket checksums (millions of rows): count, sum of counts, and sums of
    count-weighted item_a, item_b and (item_a * item_b mod a prime); and the number of pair blobs and folded
    payloads left (a rebuild leaves none)."""
    p = SequentialPairDelta
    with session_scope(url) as s:
        items = s.execute(select(SequentialItemDelta.bucket, SequentialItemDelta.item_id, SequentialItemDelta.count)
                          .where(SequentialItemDelta.shop_id == shop_id)).all()
        pairs = s.execute(select(p.bucket, func.count(), func.sum(p.count), func.sum(p.item_a * p.count),
                                 func.sum(p.item_b * p.count), func.sum((p.item_a * p.item_b) % 1000003 * p.count))
                          .where(p.shop_id == shop_id).group_by(p.bucket)).all()
        blobs = s.scalar(select(func.count()).select_from(SequentialPairBlob)
                         .where(SequentialPairBlob.shop_id == shop_id))
        blobs += len(sequential_jobs.read_snapshots(s, shop_id))
    return sorted(items), sorted(tuple(r) for r in pairs), blobs


def reference_job(shop_id: int) -> dict:
    """The previous job body, verbatim (before this change): count and write (SQLAlchemy insert of parameter dicts,
    5,000 a statement) inside one write transaction holding the shop row."""
    from collections import Counter

    from shopify_app.analytics.sequential import counts_of_customers
    from shopify_app.settings import shop_settings

    t0 = time.perf_counter()
    with context.transaction() as s:
        s.scalar(select(Shop).where(Shop.id == shop_id).with_for_update())
        shop = s.get(Shop, shop_id)
        n_days = int(shop_settings(shop).sequential_days)
        s.flush()
        s.execute(delete(SequentialPairDelta).where(SequentialPairDelta.shop_id == shop_id))
        s.execute(delete(SequentialItemDelta).where(SequentialItemDelta.shop_id == shop_id))
        items: Counter = Counter()
        pairs: Counter = Counter()
        cur, cur_rows = None, []
        q = sequential_jobs._all_orders_query(shop_id).order_by(Order.customer_id, Order.processed_at, Order.id)
        for row in s.execute(q.execution_options(yield_per=20_000)):
            if row[0] != cur and cur_rows:
                i, p = counts_of_customers(sequential_jobs._group(cur_rows), n_days)
                items.update(i)
                pairs.update(p)
                cur_rows = []
            cur = row[0]
            cur_rows.append(tuple(row))
        if cur_rows:
            i, p = counts_of_customers(sequential_jobs._group(cur_rows), n_days)
            items.update(i)
            pairs.update(p)
        item_rows = [{"shop_id": shop_id, "bucket": b, "item_id": i, "count": n} for (b, i), n in items.items() if n]
        pair_rows = [{"shop_id": shop_id, "bucket": b, "item_a": a, "item_b": c, "count": n}
                     for (b, a, c), n in pairs.items() if n]
        for table, rows in ((SequentialItemDelta.__table__, item_rows), (SequentialPairDelta.__table__, pair_rows)):
            for k in range(0, len(rows), 5000):
                s.execute(table.insert(), rows[k:k + 5000])
        sequential_jobs._record_days(s, shop_id, n_days, sequential_jobs.utcnow())
    return {"lock_s": round(time.perf_counter() - t0, 2), "items": len(item_rows), "pairs": len(pair_rows)}


def clear(url: str, shop_id: int) -> None:
    """Both runs start as after a history import: the bulk path leaves the sequential tables to the rebuild."""
    with session_scope(url) as s:
        s.execute(delete(SequentialPairDelta).where(SequentialPairDelta.shop_id == shop_id))
        s.execute(delete(SequentialPairBlob).where(SequentialPairBlob.shop_id == shop_id))
        s.execute(delete(CountSnapshot).where(CountSnapshot.shop_id == shop_id,
                                              CountSnapshot.kind == sequential_jobs.SNAPSHOT_KIND))
        s.execute(delete(SequentialItemDelta).where(SequentialItemDelta.shop_id == shop_id))


def run(label: str, fn, url: str, shop_id: int) -> dict:
    clear(url, shop_id)
    with Probe(url, shop_id) as probe:
        time.sleep(0.2)
        t0 = time.perf_counter()
        res = fn(shop_id)
        total = time.perf_counter() - t0
        time.sleep(0.2)
    out = {"total_s": round(total, 2), "read_s": res.get("read_s"), "stage_s": res.get("stage_s"),
           "lock_s": res.get("lock_s"), "probe_max_wait_s": round(max(probe.waits), 2),
           "probe_writes": len(probe.waits), "probe_failed": probe.failed, "pairs": res.get("pairs"),
           "items": res.get("items")}
    print(label, out, file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url")
    ap.add_argument("--years", type=int, default=1, choices=(1, 2))
    ap.add_argument("--max-orders", type=int)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-seq-")
    url = a.database_url or f"sqlite:///{tmp}/bench.db"
    t0 = time.perf_counter()
    orders = read_orders(a.years, a.max_orders)
    shop_id, size = fill(url, orders)
    size["load_s"] = round(time.perf_counter() - t0, 1)
    print("loaded", size, file=sys.stderr, flush=True)
    context.set_config(Config.from_env().replace(database_url=url))
    ref = run("reference (in one write transaction)", reference_job, url, shop_id)
    ref_rows = written(url, shop_id)
    new = run("new (read, then short write)", sequential_jobs.rebuild_sequential_job, url, shop_id)
    assert written(url, shop_id) == ref_rows, "the rebuilt rows differ from the reference run"
    dispose_all()
    print("RESULT " + json.dumps({"bench": "sequential_rebuild", "database": url.split(":")[0], "years": a.years,
                                  **size, "reference": ref, "new": new, "rows_identical": True}))


if __name__ == "__main__":
    main()
