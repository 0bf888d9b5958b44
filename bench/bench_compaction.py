"""Bench: CPU of a count compaction and of the mining job's count read, on bench (d)'s data, vs the previous code.

    .venv/bin/python bench/bench_compaction.py [--snapshot-orders 6000] [--blob-pairs 2000000] [--repeat 3]

Data: what a shop holds when bench (d) (bench_freshness.py: Online Retail invoices in time order, live, all in the
current month bucket) triggers a compaction: a snapshot of the first --snapshot-orders invoices (written as a
compaction writes it) + the pair blobs of the following invoices in order-job batches of 32 orders until the
blobs hold --blob-pairs pairs (workers.order_jobs COMPACT_PAIRS), with their item deltas. Payloads are built by
the app's own encoders (analytics.counts).

Measured (CPU seconds, time.process_time, best of --repeat), ours vs the reference in this same process:
- compaction = what workers.rebuild_jobs.read_compaction computes for the bucket: decode snapshot + blobs, sum,
  encode the new snapshot payload;
- mining read = what the rules job's read_counts computes: decode + sum pruned at min_count (the shop default 5);
- sequential sum = the sum of the same payloads read as directed pairs: workers.sequential_jobs.sum_directed_pairs
  (expands to product ids, then analytics' sorted_unique and aggregate_keyed) and analytics.counts.sum_indexed_pairs
  (on the stored indices; what the rules job's read of sequential pairs uses).
The reference is the code before this change, kept below (decode to product ids, scipy COO -> CSR sum,
np.isin pruning, re-sorting encode, quicksort sorted_unique). Results must be identical (same items, pairs,
counts, decoded snapshot) or the script fails. Ends with exactly one line `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopify_app.analytics import counts as C  # noqa: E402
from shopify_app.analytics import rules as R  # noqa: E402

FULL = Path("/work/shared/data/online_retail.csv.gz")
SAMPLE = ROOT / "shopify_app" / "devstore" / "data" / "online_retail_sample.csv.gz"
BUCKET = "2026-11"


# --------------------------------------------------------------------------------------------- data
def load_orders(path: Path) -> list[list[int]]:
    """Invoices in time order as baskets of product ids (purchases, positive price and quantity)."""
    df = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str, "Invoice": str})
    df = df.rename(columns={"Invoice": "InvoiceNo", "Price": "UnitPrice"})
    df = df[~df.InvoiceNo.str.startswith("C") & (df.Quantity > 0) & (df.UnitPrice > 0)]
    codes, pid = np.unique(df.StockCode.to_numpy(), return_inverse=True)
    df = df.assign(pid=pid.astype(np.int64) + 1_000_003, t=pd.to_datetime(df.InvoiceDate))
    first = df.groupby("InvoiceNo")["t"].min().sort_values(kind="stable")
    rank = pd.Series(np.arange(len(first)), index=first.index)
    df = df.assign(o=df.InvoiceNo.map(rank).to_numpy()).drop_duplicates(["o", "pid"]).sort_values(["o", "pid"])
    return [g.tolist() for _, g in df.groupby("o")["pid"]]


def build(orders: list, snapshot_orders: int, blob_pairs: int) -> dict:
    snap = orders[:snapshot_orders]
    oid = np.repeat(np.arange(len(snap)), [len(b) for b in snap])
    bc = C.count_baskets(BUCKET, oid, np.concatenate([np.asarray(b, dtype=np.int64) for b in snap]))
    blobs, n, k = [], 0, snapshot_orders
    while n < blob_pairs and k < len(orders):
        batch = orders[k:k + 32]
        k += len(batch)
        for _bucket, (ids, i, j, c) in C.basket_change_pairs([(BUCKET, 1, b) for b in batch], indexed=True).items():
            blobs.append(C.encode_pairs_indexed(ids, i, j, c, compress=True))
            n += len(c)
    delta = np.concatenate([np.asarray(b, dtype=np.int64) for b in orders[snapshot_orders:k]])
    item_ids, item_counts = np.unique(delta, return_counts=True)
    return {"baskets": len(snap), "snap_items": C.encode_items(bc.item_ids, bc.item_counts),
            "snap_pairs": C.encode_pairs(bc.pair_a, bc.pair_b, bc.pair_counts, compress=True),
            "blobs": blobs, "delta_baskets": k - snapshot_orders, "delta_items": (item_ids, item_counts),
            "blob_pairs": n, "snapshot_pairs": len(bc.pair_counts)}


# --------------------------------------------------------------------------------------------- reference
def ref_sorted_unique(a):
    a = np.sort(np.asarray(a).ravel())
    return a if a.size == 0 else a[np.concatenate(([True], a[1:] != a[:-1]))]


def ref_decode_pairs(data: bytes):
    with np.load(io.BytesIO(data)) as z:
        ids = z["ids"].astype(np.int64)
        return ids[z["i"]], ids[z["j"]], z["counts"].astype(np.int64)


def ref_sum(baskets, item_parts, pair_parts, min_item_count=0):
    ids, counts = C._clean_items(np.concatenate([p[0] for p in item_parts]), np.concatenate([p[1] for p in item_parts]))
    a, b, pc = (np.concatenate([p[k] for p in pair_parts]) for k in range(3))
    if min_item_count > 0:
        frequent = ids[counts >= min_item_count]
        keep = np.isin(a, frequent) & np.isin(b, frequent)
        a, b, pc = a[keep], b[keep], pc[keep]
    index = ref_sorted_unique(np.concatenate([ids, a, b]))
    n = len(index)
    m = sparse.coo_matrix((pc, (np.searchsorted(index, a), np.searchsorted(index, b))), shape=(n, n)).tocsr()
    m.sum_duplicates()
    m.eliminate_zeros()
    m = m.tocoo()
    pa, pb, pcount = index[m.row], index[m.col], m.data.astype(np.int64)
    i, j = np.searchsorted(ids, pa), np.searchsorted(ids, pb)
    order = np.lexsort((j, i))
    return R.PairCounts(int(baskets), ids, counts, i[order].astype(np.int64), j[order].astype(np.int64),
                        pcount[order])


def ref_encode_pairs(a, b, counts) -> bytes:
    ids = ref_sorted_unique(np.concatenate([a, b]))
    i = np.searchsorted(ids, a).astype(np.int32)
    j = np.searchsorted(ids, b).astype(np.int32)
    order = np.lexsort((j, i))
    return C._npz(True, ids=ids, i=i[order], j=j[order], counts=counts[order].astype(np.int32))


def ref_sum_directed(parts):
    a, b, n = (np.concatenate([p[k] for p in parts]) for k in range(3))
    ids = ref_sorted_unique(np.concatenate([a, b]))
    m = np.int64(len(ids))
    keys = np.searchsorted(ids, a) * m + np.searchsorted(ids, b)
    i, j, c = C.aggregate_keyed(int(m), keys, n)
    return ids[i], ids[j], c


# --------------------------------------------------------------------------------------------- the two paths
def reference_compaction(d, min_item_count=0, encode=True):
    items = [C.decode_items(d["snap_items"]), d["delta_items"]]
    pairs = [ref_decode_pairs(x) for x in [d["snap_pairs"], *d["blobs"]]]
    total = ref_sum(d["baskets"] + d["delta_baskets"], items, pairs, min_item_count)
    payload = ref_encode_pairs(total.items[total.pair_i], total.items[total.pair_j], total.pair_counts) \
        if encode else None
    return total, payload


def our_compaction(d, min_item_count=0, encode=True):
    parts = C.CountParts(baskets=d["baskets"] + d["delta_baskets"])
    parts.add_items(*C.decode_items(d["snap_items"]))
    parts.add_items(*d["delta_items"])
    for x in [d["snap_pairs"], *d["blobs"]]:
        parts.add_pairs_indexed(*C.decode_pairs_indexed(x))
    total = parts.total(min_item_count)
    payload = C.encode_pairs_indexed(total.items, total.pair_i, total.pair_j, total.pair_counts, compress=True) \
        if encode else None
    return total, payload


def our_sum_directed(d):
    from workers.sequential_jobs import decode_directed_pairs, sum_directed_pairs

    return sum_directed_pairs(decode_directed_pairs(x) for x in [d["snap_pairs"], *d["blobs"]])


def our_sum_directed_indexed(d):
    """What the rules job's _rows_plus_blobs does with the directed payloads (same layout)."""
    return C.sum_indexed_pairs(C.decode_pairs_indexed(x) for x in [d["snap_pairs"], *d["blobs"]])


def reference_sum_directed(d):
    return ref_sum_directed([ref_decode_pairs(x) for x in [d["snap_pairs"], *d["blobs"]]])


def cpu(fn, *args, repeat=3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        out = fn(*args)
        best = min(best, time.process_time() - t)
    return out, best


def same_counts(x: R.PairCounts, y: R.PairCounts) -> bool:
    return (x.n_baskets == y.n_baskets and np.array_equal(x.items, y.items)
            and np.array_equal(x.item_counts, y.item_counts) and np.array_equal(x.pair_i, y.pair_i)
            and np.array_equal(x.pair_j, y.pair_j) and np.array_equal(x.pair_counts, y.pair_counts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapshot-orders", type=int, default=6000)
    ap.add_argument("--blob-pairs", type=int, default=2_000_000)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = FULL if FULL.exists() else SAMPLE
    d = build(load_orders(path), args.snapshot_orders, args.blob_pairs)
    print(f"{path.name}: snapshot of {d['baskets']:,} orders ({d['snapshot_pairs']:,} pairs), {len(d['blobs'])} "
          f"blobs of {d['delta_baskets']:,} orders ({d['blob_pairs']:,} pairs)", flush=True)
    out = {"data": path.name, "snapshot_orders": d["baskets"], "snapshot_pairs": d["snapshot_pairs"],
           "blobs": len(d["blobs"]), "blob_orders": d["delta_baskets"], "blob_pairs": d["blob_pairs"]}
    (ours, payload), t_ours = cpu(our_compaction, d, repeat=args.repeat)
    (ref, ref_payload), t_ref = cpu(reference_compaction, d, repeat=args.repeat)
    assert same_counts(ours, ref), "compaction sums differ"
    assert all(np.array_equal(x, y) for x, y in zip(C.decode_pairs(payload), C.decode_pairs(ref_payload))), \
        "snapshot payloads decode differently"
    out["compaction"] = {"pairs": len(ours.pair_counts), "ours_cpu_s": round(t_ours, 3),
                         "reference_cpu_s": round(t_ref, 3), "speedup": round(t_ref / t_ours, 1),
                         "payload_mb": round(len(payload) / 2**20, 2),
                         "reference_payload_mb": round(len(ref_payload) / 2**20, 2)}
    print(json.dumps({"compaction": out["compaction"]}), flush=True)
    (ours, _), t_ours = cpu(our_compaction, d, args.min_count, False, repeat=args.repeat)
    (ref, _), t_ref = cpu(reference_compaction, d, args.min_count, False, repeat=args.repeat)
    assert same_counts(ours, ref), "pruned sums differ"
    out["mining_read"] = {"min_count": args.min_count, "pairs": len(ours.pair_counts),
                          "ours_cpu_s": round(t_ours, 3), "reference_cpu_s": round(t_ref, 3),
                          "speedup": round(t_ref / t_ours, 1)}
    print(json.dumps({"mining_read": out["mining_read"]}), flush=True)
    ours, t_ours = cpu(our_sum_directed, d, repeat=args.repeat)
    ref, t_ref = cpu(reference_sum_directed, d, repeat=args.repeat)
    assert all(np.array_equal(x, y) for x, y in zip(ours, ref)), "directed sums differ"
    indexed, t_indexed = cpu(our_sum_directed_indexed, d, repeat=args.repeat)
    assert all(np.array_equal(x, y) for x, y in zip(indexed, ref)), "indexed directed sums differ"
    out["sequential_sum"] = {"pairs": len(ours[2]), "sum_directed_pairs_cpu_s": round(t_ours, 3),
                             "indexed_cpu_s": round(t_indexed, 3), "reference_cpu_s": round(t_ref, 3),
                             "speedup": round(t_ref / t_indexed, 1)}
    print(json.dumps({"sequential_sum": out["sequential_sum"]}), flush=True)
    out["identical"] = True
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
