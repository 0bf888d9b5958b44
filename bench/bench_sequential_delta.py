"""Bench: the order job's per-customer sequential delta (analytics.sequential.sequential_delta) vs the previous
algorithm (recount every pair of the span from the earliest change minus N days, before and after), same process,
same data, outputs compared.

    .venv/bin/python bench/bench_sequential_delta.py [--max-orders 40] [--replay-max 40] [--days 14] [--repeat 2]
        [--sample] [--scenarios append,change,replay,payload]

Data: UCI Online Retail (/work/shared/data/online_retail.csv.gz; the bundled 15 % sample with --sample or when
the shared folder is absent): purchases (not 'C' invoices, Quantity > 0, with a CustomerID), an order's items =
its distinct StockCodes. Time is compressed as in the freshness bench (bench (d): invoices replayed as new orders
at 200/s in invoice-date order), so every customer's whole replayed history lies inside the N-day window: the
worst case for the recount. Each customer keeps their first --max-orders invoices (the recount is quadratic in
them; the new code is not, the cap only bounds the bench's reference time).

Scenarios, each over every customer:
- append: before = the customer's orders but the last, after = all of them (a new order arrives);
- change: the middle order loses one item (a refund) - before = all, after = all with that order changed;
- replay: every prefix -> prefix + 1 order (the live order job over the customer's whole replayed history,
  customers with at most --replay-max orders);
- payload: the replay in batches of 200 deltas turned into what the order job writes, one (a, b, n) array set
  per bucket: sequential_delta + summing the dicts + building the arrays (what workers/order_jobs.py does now) vs
  sequential_delta_arrays + sum_pair_arrays (new numpy variant). Both new; the reference's
  ratio is the replay's.
Times are CPU seconds (time.process_time: the machine is shared), summed over chunks of 100 deltas, each chunk
the best of --repeat runs, reference and new alternated.
Every output must equal the reference's, or the script fails. Ends with exactly one line `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from shopify_app.analytics.sequential import (  # noqa: E402
    customer_sequential_counts, sequential_delta, sequential_delta_arrays, subtract, sum_pair_arrays,
)

FULL = Path("/work/shared/data/online_retail.csv.gz")
SAMPLE = ROOT / "shopify_app" / "devstore" / "data" / "online_retail_sample.csv.gz"
RATE = 200            # orders per second, as bench (d)


# ----------------------------------------------------------------- the previous algorithm (reference)
# The span recount of stop 11: the definition's full count (customer_sequential_counts, unchanged) of the span
# from the earliest changed order minus N days, before and after, subtracted.
def old_sequential_delta(before, after, days):
    def norm(orders):
        out = [(t, frozenset(int(i) for i in items)) for t, items in orders]
        return [(t, items) for t, items in out if items]

    b, a = norm(before), norm(after)
    changed = Counter(b)
    changed.subtract(Counter(a))
    times = [t for (t, _), n in changed.items() if n]
    if not times:
        return {}, {}
    cut = min(times) - dt.timedelta(days=int(days))
    bi, bp = customer_sequential_counts([o for o in b if o[0] >= cut], days)
    ai, ap = customer_sequential_counts([o for o in a if o[0] >= cut], days)
    return subtract(ai, bi), subtract(ap, bp)


# ----------------------------------------------------------------- data
def histories(path: Path, max_orders: int) -> dict:
    """{customer: [(time, [item codes])]} in invoice order, times compressed to RATE invoices per second."""
    df = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str, "Invoice": str},
                     usecols=lambda c: c in {"InvoiceNo", "Invoice", "StockCode", "Quantity", "InvoiceDate",
                                             "CustomerID", "Customer ID"})
    df = df.rename(columns={"Invoice": "InvoiceNo", "Customer ID": "CustomerID"})
    df = df[~df.InvoiceNo.str.startswith("C") & (df.Quantity > 0) & df.CustomerID.notna()]
    df = df.assign(item=pd.factorize(df.StockCode)[0], when=pd.to_datetime(df.InvoiceDate))
    inv = df.groupby("InvoiceNo", sort=False).agg(when=("when", "min"), cust=("CustomerID", "first"),
                                                 items=("item", lambda s: sorted(set(s.tolist()))))
    inv = inv.sort_values(["when"], kind="stable")
    base = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
    out: dict = {}
    for k, (cust, items) in enumerate(zip(inv.cust.tolist(), inv["items"].tolist())):
        orders = out.setdefault(int(cust), [])
        if len(orders) < max_orders:
            orders.append((base + dt.timedelta(seconds=k / RATE), items))
    return out


def scenarios(hist: dict, replay_max: int) -> dict:
    append, change, replay = [], [], []
    for orders in hist.values():
        if len(orders) >= 2:
            append.append((orders[:-1], orders))
            mid = len(orders) // 2
            t0, items = orders[mid]
            changed = list(orders)
            changed[mid] = (t0, items[:-1])                     # a refund of one line
            change.append((orders, changed))
        if len(orders) <= replay_max:
            replay.extend((orders[:k], orders[:k + 1]) for k in range(len(orders)))
    return {"append": append, "change": change, "replay": replay}


def timed(fn, cases, days):
    t0 = time.process_time()
    out = [fn(b, a, days) for b, a in cases]
    return time.process_time() - t0, out


def compare(name, cases, days, repeat, chunk=100):
    """Reference and new over the same chunks of cases, best of `repeat` per chunk, outputs compared chunk by
    chunk (keeping every output of the replay would take gigabytes). Returns (reference s, new s, pair keys)."""
    ref_total = new_total = 0.0
    keys = 0
    for k in range(0, len(cases), chunk):
        part = cases[k:k + chunk]
        ref_s, new_s = [], []
        for _ in range(repeat):
            r, ref = timed(old_sequential_delta, part, days)
            n, new = timed(sequential_delta, part, days)
            if new != ref:
                bad = next(j for j in range(len(part)) if new[j] != ref[j])
                raise SystemExit(f"{name}: case {k + bad} differs from the reference")
            ref_s.append(r)
            new_s.append(n)
        keys += sum(len(p) for _, p in new)           # pair keys the deltas change: the output size
        ref_total += min(ref_s)
        new_total += min(new_s)
    return ref_total, new_total, keys


def payload_dicts(cases, days):
    """Per batch: {bucket: (a, b, n)} from sequential_delta's dicts, as workers/order_jobs.py builds them."""
    pairs: Counter = Counter()
    for b, a in cases:
        pairs.update(sequential_delta(b, a, days)[1])
    by_bucket: dict = {}
    for (bucket, x, y), n in pairs.items():
        if n:
            by_bucket.setdefault(bucket, []).append((x, y, n))
    return {k: tuple(np.array(v, dtype=np.int64).T) for k, v in by_bucket.items()}


def payload_arrays(cases, days):
    """Per batch: {bucket: (a, b, n)} from sequential_delta_arrays, summed with numpy."""
    parts: dict = {}
    for b, a in cases:
        for bucket, arrays in sequential_delta_arrays(b, a, days)[1].items():
            parts.setdefault(bucket, []).append(arrays)
    out = {bucket: sum_pair_arrays(ps) for bucket, ps in parts.items()}
    return {bucket: arrays for bucket, arrays in out.items() if arrays[0].size}


def same_payload(p, q) -> bool:
    def as_dict(payload):
        return {(k, int(x), int(y)): int(v) for k, (a, b, n) in payload.items() for x, y, v in zip(a, b, n)}
    return as_dict(p) == as_dict(q)


def compare_payloads(cases, days, repeat, batch=200):
    dict_total = arrays_total = 0.0
    for k in range(0, len(cases), batch):
        part = cases[k:k + batch]
        d_s, a_s = [], []
        for _ in range(repeat):
            t0 = time.process_time()
            d = payload_dicts(part, days)
            t1 = time.process_time()
            a = payload_arrays(part, days)
            t2 = time.process_time()
            if not same_payload(d, a):
                raise SystemExit(f"payload: batch at {k} differs")
            d_s.append(t1 - t0)
            a_s.append(t2 - t1)
        dict_total += min(d_s)
        arrays_total += min(a_s)
    return dict_total, arrays_total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-orders", type=int, default=40)
    ap.add_argument("--replay-max", type=int, default=40)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--scenarios", default="append,change,replay,payload", help="comma-separated subset")
    args = ap.parse_args()
    path = SAMPLE if args.sample or not FULL.exists() else FULL
    hist = histories(path, args.max_orders)
    n_orders = sum(len(o) for o in hist.values())
    print(f"data {path.name}: {len(hist)} customers, {n_orders} orders (<= {args.max_orders} each), "
          f"mean {sum(len(i) for o in hist.values() for _, i in o) / n_orders:.1f} items per order", flush=True)
    result = {"data": path.name, "customers": len(hist), "orders": n_orders, "days": args.days,
              "max_orders": args.max_orders}
    wanted = set(args.scenarios.split(","))
    for name, cases in scenarios(hist, args.replay_max).items():
        if name not in wanted:
            continue
        r, n, keys = compare(name, cases, args.days, args.repeat)
        print(f"{name}: {len(cases)} deltas ({keys} pair keys changed), reference {r:.3f} s, new {n:.3f} s, "
              f"speed-up {r / n:.1f}x, per delta {1e3 * r / len(cases):.2f} -> {1e3 * n / len(cases):.3f} ms",
              flush=True)
        result[name] = {"deltas": len(cases), "pair_keys_changed": keys, "reference_cpu_s": round(r, 4),
                        "new_cpu_s": round(n, 4), "speedup": round(r / n, 1), "equal": True}
    if "payload" in wanted:
        d, a = compare_payloads(scenarios(hist, args.replay_max)["replay"], args.days, args.repeat)
        print(f"payload: replay in batches of 200, dicts {d:.3f} s, arrays {a:.3f} s, speed-up {d / a:.1f}x",
              flush=True)
        result["payload"] = {"dicts_cpu_s": round(d, 4), "arrays_cpu_s": round(a, 4), "speedup": round(d / a, 1),
                             "equal": True}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
