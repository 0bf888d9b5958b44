"""Bench: the order job's per-customer sequential delta (analytics.sequential.sequential_delta) vs the previous
algorithm (recount every pair of the span from the earliest change minus N days, before and after), same process,
same data, outputs compared.

    .venv/bin/python bench/bench_sequential_delta.py [--max-orders 40] [--replay-max 40] [--days 14] [--repeat 2]
        [--sample]

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
  customers with at most --replay-max orders).
Times are CPU seconds (time.process_time: the machine is shared), summed over chunks of 100 deltas, each chunk
the best of --repeat runs, reference and new alternated.
Every output must equal the reference's, or the script fails. Ends with exactly one line `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopify_app.analytics.sequential import bucket_of, sequential_delta  # noqa: E402

FULL = Path("/work/shared/data/online_retail.csv.gz")
SAMPLE = ROOT / "shopify_app" / "devstore" / "data" / "online_retail_sample.csv.gz"
RATE = 200            # orders per second, as bench (d)


# ----------------------------------------------------------------- the previous algorithm (private reference copy)
def _old_counts(orders, days):
    seq = sorted((t, frozenset(int(i) for i in items)) for t, items in orders)
    seq = [(t, items) for t, items in seq if items]
    times = [t for t, _ in seq]
    window = dt.timedelta(days=int(days))
    items_c: Counter = Counter()
    pairs_c: Counter = Counter()
    for k, (t, items) in enumerate(seq):
        b = bucket_of(t)
        for a in items:
            items_c[(b, a)] += 1
        lo = bisect.bisect_right(times, t, lo=k)
        hi = bisect.bisect_right(times, t + window, lo=lo)
        if lo >= hi:
            continue
        later: set[int] = set()
        for _, nxt in seq[lo:hi]:
            later |= nxt
        for a in items:
            for c in later:
                if c != a:
                    pairs_c[(b, a, c)] += 1
    return items_c, pairs_c


def _subtract(after, before):
    out = dict(after)
    for k, v in before.items():
        out[k] = out.get(k, 0) - v
    return {k: v for k, v in out.items() if v}


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
    bi, bp = _old_counts([o for o in b if o[0] >= cut], days)
    ai, ap = _old_counts([o for o in a if o[0] >= cut], days)
    return _subtract(ai, bi), _subtract(ap, bp)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-orders", type=int, default=40)
    ap.add_argument("--replay-max", type=int, default=40)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sample", action="store_true")
    args = ap.parse_args()
    path = SAMPLE if args.sample or not FULL.exists() else FULL
    hist = histories(path, args.max_orders)
    n_orders = sum(len(o) for o in hist.values())
    print(f"data {path.name}: {len(hist)} customers, {n_orders} orders (<= {args.max_orders} each), "
          f"mean {sum(len(i) for o in hist.values() for _, i in o) / n_orders:.1f} items per order", flush=True)
    result = {"data": path.name, "customers": len(hist), "orders": n_orders, "days": args.days,
              "max_orders": args.max_orders}
    for name, cases in scenarios(hist, args.replay_max).items():
        r, n, keys = compare(name, cases, args.days, args.repeat)
        print(f"{name}: {len(cases)} deltas ({keys} pair keys changed), reference {r:.3f} s, new {n:.3f} s, "
              f"speed-up {r / n:.1f}x, per delta {1e3 * r / len(cases):.2f} -> {1e3 * n / len(cases):.3f} ms",
              flush=True)
        result[name] = {"deltas": len(cases), "pair_keys_changed": keys, "reference_cpu_s": round(r, 4),
                        "new_cpu_s": round(n, 4), "speedup": round(r / n, 1), "equal": True}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
