"""Bench (a): pair-rule mining on UCI Online Retail vs mlxtend, same process, same baskets.

    .venv/bin/python bench/bench_pair_rules.py [--supports 0.01,0.005,0.002]

Baskets: distinct StockCodes per non-cancelled invoice with Quantity > 0 (/work/shared/data/online_retail.csv.gz,
20,728 baskets; the bundled 15 % sample when the shared folder is absent). Ours: the sparse basket x item
product of shopify_app.analytics.rules over the frequent items (mine_pair_rules_codes; the rules job's
per-segment path). Reference: mlxtend TransactionEncoder one-hot + fpgrowth(max_len=2) + association_rules,
the 1 -> 1 rules. Both are timed from the same integer-coded baskets; peak memory is measured in a second,
separate run of each under tracemalloc (Python + numpy allocations), so tracing does not distort the timings.
The rule sets must be identical (same pairs, count, and metrics to 1e-9) or the script fails.
Ends with exactly one line `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopify_app.analytics.rules import mine_pair_rules_codes  # noqa: E402

FULL = Path("/work/shared/data/online_retail.csv.gz")
SAMPLE = ROOT / "shopify_app" / "devstore" / "data" / "online_retail_sample.csv.gz"


def load_baskets(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str, "Invoice": str})
    df = df.rename(columns={"Invoice": "InvoiceNo"})
    df = df[~df.InvoiceNo.str.startswith("C") & (df.Quantity > 0)].drop_duplicates(["InvoiceNo", "StockCode"])
    b, basket_idx = np.unique(df.InvoiceNo.to_numpy(), return_inverse=True)
    items, item_idx = np.unique(df.StockCode.to_numpy(), return_inverse=True)
    return basket_idx, item_idx, items


def ours(basket_idx, item_idx, items, min_support) -> pd.DataFrame:
    return mine_pair_rules_codes(basket_idx, item_idx, int(basket_idx.max()) + 1, items, min_support)


def reference(basket_idx, item_idx, items, min_support) -> pd.DataFrame:
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from scipy import sparse

    n = int(basket_idx.max()) + 1
    x = sparse.csr_matrix((np.ones(len(basket_idx), dtype=bool), (basket_idx, item_idx)), shape=(n, len(items)))
    onehot = pd.DataFrame(x.toarray(), columns=items)      # what TransactionEncoder().transform builds
    freq = fpgrowth(onehot, min_support=min_support, use_colnames=True, max_len=2)
    rules = association_rules(freq, num_itemsets=n, metric="support", min_threshold=0.0)
    return rules[(rules.antecedents.map(len) == 1) & (rules.consequents.map(len) == 1)]


def compare(got: pd.DataFrame, ref: pd.DataFrame, n: int) -> int:
    g = {(r.antecedent, r.consequent): r for r in got.itertuples(index=False)}
    e = {(next(iter(r.antecedents)), next(iter(r.consequents))): r for r in ref.itertuples(index=False)}
    assert set(g) == set(e), (len(g), len(e))
    for k, r in e.items():
        mine = g[k]
        assert mine.count == round(r.support * n), k
        for name in ("support", "confidence", "lift", "leverage", "conviction"):
            a, b = getattr(mine, name), getattr(r, name)
            assert (math.isinf(a) and math.isinf(b)) or abs(a - b) <= 1e-9, (k, name, a, b)
    return len(e)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def peak_mb(fn, *args) -> float:
    tracemalloc.start()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--supports", default="0.01,0.005,0.002")
    args = ap.parse_args()
    path = FULL if FULL.exists() else SAMPLE
    basket_idx, item_idx, items = load_baskets(path)
    n = int(basket_idx.max()) + 1
    print(f"{path.name}: {n:,} baskets, {len(items):,} items, {len(basket_idx):,} basket lines", flush=True)
    runs = []
    for sup in [float(x) for x in args.supports.split(",")]:
        got, t_ours = timed(ours, basket_idx, item_idx, items, sup)
        ref, t_ref = timed(reference, basket_idx, item_idx, items, sup)
        n_rules = compare(got, ref, n)
        m_ours = peak_mb(ours, basket_idx, item_idx, items, sup)
        m_ref = peak_mb(reference, basket_idx, item_idx, items, sup)
        run = {"min_support": sup, "rules": n_rules, "ours_s": round(t_ours, 3), "mlxtend_s": round(t_ref, 3),
               "speedup": round(t_ref / t_ours, 1), "ours_peak_mb": round(m_ours, 1),
               "mlxtend_peak_mb": round(m_ref, 1), "identical": True}
        print(json.dumps(run), flush=True)
        runs.append(run)
    print("RESULT " + json.dumps({"data": path.name, "baskets": n, "items": len(items), "runs": runs,
                                  "target_speedup_at_0.002": 50,
                                  "speedup_at_min": runs[-1]["speedup"]}))


if __name__ == "__main__":
    main()
