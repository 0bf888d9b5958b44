"""Pair association rules (A -> B, one item each side) from basket counts.

For n baskets, item counts c(A), c(B) and pair count c(AB):
    support(A->B)    = c(AB) / n
    confidence(A->B) = c(AB) / c(A)
    lift(A->B)       = confidence / (c(B) / n)
    leverage(A->B)   = support(AB) - support(A) * support(B)
    conviction(A->B) = (1 - support(B)) / (1 - confidence), = inf when confidence == 1 (mlxtend's convention)
A pair is kept when support >= min_support and c(AB) >= min_count; both directions are emitted.

`count_pairs` builds a binary basket x item CSR matrix X and takes the upper triangle of X.T @ X.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import sparse

RULE_COLUMNS = ["antecedent", "consequent", "count", "support", "confidence", "lift", "leverage", "conviction"]


def sorted_unique(a, kind: str = "stable") -> np.ndarray:
    """np.unique without return_inverse, by sorting: numpy 2.4's hash-based np.unique is ~20x slower on ~1M
    int64 values. Stable sort (timsort) by default: the arrays this gets are mostly concatenated sorted runs
    (payload ids, pair endpoints of sorted pairs, basket-major keys), which it merges instead of sorting: 4.6x
    faster than quicksort on the 8.2M pair endpoints of a compaction's Online Retail payloads, 17% slower on random
    values (for those, kind="quicksort": numpy's default sort)."""
    a = np.sort(np.asarray(a).ravel(), kind=kind)
    if a.size == 0:
        return a
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


@dataclass(frozen=True)
class PairCounts:
    n_baskets: int
    items: np.ndarray         # item ids, index = column of X
    item_counts: np.ndarray   # baskets containing each item
    pair_i: np.ndarray        # item index, pair_i < pair_j
    pair_j: np.ndarray
    pair_counts: np.ndarray   # baskets containing both

    def as_dicts(self) -> tuple[dict, dict]:
        items = self.items.tolist()
        ic = dict(zip(items, self.item_counts.tolist()))
        pc = {(items[i], items[j]): int(c)
              for i, j, c in zip(self.pair_i.tolist(), self.pair_j.tolist(), self.pair_counts.tolist())}
        return ic, pc


def count_pairs_codes(basket_idx, item_idx, n_baskets: int, items) -> PairCounts:
    """Pair counts from parallel arrays (basket index, item index); duplicates within a basket count once."""
    basket_idx = np.asarray(basket_idx, dtype=np.int64)
    item_idx = np.asarray(item_idx, dtype=np.int64)
    items = np.asarray(items, dtype=object)
    n_items = len(items)
    x = sparse.csr_matrix((np.ones(len(basket_idx), dtype=np.int32), (basket_idx, item_idx)),
                          shape=(n_baskets, n_items))
    x.sum_duplicates()
    x.data[:] = 1
    item_counts = np.asarray(x.sum(axis=0)).ravel().astype(np.int64)
    xt = x.T.tocsr()
    co = sparse.triu(xt @ x, k=1).tocoo()
    return PairCounts(n_baskets=int(n_baskets), items=items, item_counts=item_counts,
                      pair_i=co.row.astype(np.int64), pair_j=co.col.astype(np.int64),
                      pair_counts=co.data.astype(np.int64))


def count_pairs(baskets: Iterable[Iterable]) -> PairCounts:
    """Pair counts over an iterable of baskets (each an iterable of hashable item ids)."""
    index: dict = {}
    b_idx: list[int] = []
    i_idx: list[int] = []
    n = 0
    for n, basket in enumerate(baskets, start=1):
        for item in basket:
            j = index.get(item)
            if j is None:
                j = index[item] = len(index)
            b_idx.append(n - 1)
            i_idx.append(j)
    items = np.empty(len(index), dtype=object)
    for k, v in index.items():
        items[v] = k
    return count_pairs_codes(b_idx, i_idx, n, items)


def pair_rules(n_baskets: int, item_counts: Mapping, pair_counts: Mapping,
               min_support: float = 0.0, min_count: int = 1) -> pd.DataFrame:
    """Rules from dict counts: item_counts {item: c}, pair_counts {(a, b): c} (each unordered pair once)."""
    pairs = [(a, b, c) for (a, b), c in pair_counts.items()]
    a = np.array([p[0] for p in pairs], dtype=object)
    b = np.array([p[1] for p in pairs], dtype=object)
    c = np.array([p[2] for p in pairs], dtype=np.int64)
    ca = np.array([item_counts[x] for x in a], dtype=np.int64)
    cb = np.array([item_counts[x] for x in b], dtype=np.int64)
    return _rules(n_baskets, a, b, c, ca, cb, min_support, min_count)


def rules_from_counts(pc: PairCounts, min_support: float = 0.0, min_count: int = 1) -> pd.DataFrame:
    if pc.n_baskets <= 0:
        return _rules(0, *([np.array([], dtype=object)] * 5), min_support, min_count)
    keep = (pc.pair_counts / pc.n_baskets >= min_support) & (pc.pair_counts >= min_count)
    i, j = pc.pair_i[keep], pc.pair_j[keep]
    return _rules(pc.n_baskets, pc.items[i], pc.items[j], pc.pair_counts[keep],
                  pc.item_counts[i], pc.item_counts[j], min_support, min_count)


def _rules(n, a, b, c, ca, cb, min_support, min_count) -> pd.DataFrame:
    if n <= 0:
        return pd.DataFrame({col: [] for col in RULE_COLUMNS})
    c = np.asarray(c, dtype=np.int64)
    support = c / n
    keep = (support >= min_support) & (c >= min_count)
    a, b, c, ca, cb, support = a[keep], b[keep], c[keep], ca[keep], cb[keep], support[keep]
    # both directions: A->B then B->A
    ante = np.concatenate([a, b])
    cons = np.concatenate([b, a])
    cnt = np.concatenate([c, c])
    sup = np.concatenate([support, support])
    c_ante = np.concatenate([ca, cb]).astype(float)
    c_cons = np.concatenate([cb, ca]).astype(float)
    s_ante = c_ante / n
    s_cons = c_cons / n
    conf = cnt / c_ante
    lift = conf / s_cons
    leverage = sup - s_ante * s_cons
    conviction = np.full(conf.shape, np.inf)
    lt = conf < 1.0
    conviction[lt] = (1.0 - s_cons[lt]) / (1.0 - conf[lt])
    df = pd.DataFrame({"antecedent": ante, "consequent": cons, "count": cnt, "support": sup,
                       "confidence": conf, "lift": lift, "leverage": leverage, "conviction": conviction})
    return df.sort_values(["count", "lift"], ascending=[False, False], kind="mergesort").reset_index(drop=True)


def mine_pair_rules_codes(basket_idx, item_idx, n_baskets: int, items, min_support: float,
                          min_count: int = 1) -> pd.DataFrame:
    """Rules from parallel (basket index, item index) arrays. Items below the thresholds are dropped before the
    product (a pair is never more frequent than either of its items), so X.T @ X only spans frequent items;
    the result is the same as counting every pair."""
    basket_idx = np.asarray(basket_idx, dtype=np.int64)
    item_idx = np.asarray(item_idx, dtype=np.int64)
    if n_baskets <= 0 or item_idx.size == 0:
        return rules_from_counts(PairCounts(0, np.asarray(items, dtype=object)[:0], *([np.array([], np.int64)] * 4)),
                                 min_support, min_count)
    # distinct (basket, item) first: a basket listing an item twice counts once
    key = sorted_unique(basket_idx * (int(item_idx.max()) + 1) + item_idx)
    b, i = key // (int(item_idx.max()) + 1), key % (int(item_idx.max()) + 1)
    counts = np.bincount(i, minlength=len(items))
    frequent = (counts / n_baskets >= min_support) & (counts >= min_count)
    new_index = np.cumsum(frequent) - 1
    keep = frequent[i]
    return rules_from_counts(count_pairs_codes(b[keep], new_index[i[keep]], n_baskets,
                                               np.asarray(items, dtype=object)[frequent]), min_support, min_count)


def mine_pair_rules(baskets: Iterable[Iterable], min_support: float, min_count: int = 1) -> pd.DataFrame:
    """All directed pair rules with support >= min_support and pair count >= min_count."""
    return rules_from_counts(count_pairs(baskets), min_support, min_count)


# --------------------------------------------------------------------------------------------- customers per rule
def customers_per_pair(customer_idx, item_idx, n_customers: int, n_items: int, pair_i, pair_j) -> np.ndarray:
    """Distinct customers who bought both items of each pair (in any of their baskets, not necessarily the same
    one): the (i, j) entries of Cᵀ C for the binary customer x item matrix C, computed only on the columns the
    pairs use (a few hundred), so the product stays small."""
    pair_i = np.asarray(pair_i, dtype=np.int64)
    pair_j = np.asarray(pair_j, dtype=np.int64)
    if pair_i.size == 0:
        return np.array([], dtype=np.int64)
    cols, inv = np.unique(np.concatenate([pair_i, pair_j]), return_inverse=True)
    c = sparse.csr_matrix((np.ones(len(customer_idx), dtype=np.int32),
                           (np.asarray(customer_idx, dtype=np.int64), np.asarray(item_idx, dtype=np.int64))),
                          shape=(max(n_customers, 1), max(n_items, 1)))
    c.sum_duplicates()
    c.data[:] = 1
    sub = c.tocsc()[:, cols]
    both = (sub.T @ sub).toarray() if len(cols) <= 4000 else None
    a, b = inv[:len(pair_i)], inv[len(pair_i):]
    if both is not None:
        return both[a, b].astype(np.int64)
    subc = sub.tocsc()
    return np.array([subc[:, x].multiply(subc[:, y]).sum() for x, y in zip(a, b)], dtype=np.int64)


# --------------------------------------------------------------------------------------------- triples
TRIPLE_COLUMNS = RULE_COLUMNS


def mine_triple_rules(x, items, min_support: float, min_count: int = 1, limit: int = 200,
                      max_pairs: int = 2000) -> pd.DataFrame:
    """Rules over 3-itemsets ({A, B} -> C and A -> {B, C}): the rules mlxtend fpgrowth(max_len=3) +
    association_rules give on the 3-itemsets, computed with sparse products instead (tests compare with mlxtend).

    x: binary basket x item matrix (scipy sparse, every basket a row, also those without a frequent item: the
    support denominator is the number of baskets); items: ids of the columns. Itemset support >= t = max(min_support,
    min_count / n, support of the `max_pairs`-th most frequent pair): on dense data (wholesale baskets of 25 items)
    thousands of items pass min_support and the 3-itemsets explode; every frequent triple is made of frequent pairs,
    so bounding the frequent pairs (ties at t included) bounds the work, and the itemsets found are exact at t.
    Counting: for the frequent pairs (a < b), P = X[:, a] * X[:, b] (baskets holding both), then P.T @ X counts
    every triple (a, b, c), kept once with c > b and when its support >= t (an itemset's support never exceeds a
    subset's, so no frequent triple is missed). Each triple gives its 6 rules; metrics as mlxtend (support =
    count / n; confidence = sAC * n / (sA * n); lift = confidence / sC; leverage = sAC - sA * sC; conviction =
    (1 - sC) / (1 - confidence), inf at confidence 1). The `limit` rules with the highest lift are kept (ties:
    higher count, then the ids), antecedent / consequent as sorted lists of ids."""
    x = sparse.csr_matrix(x)
    n = x.shape[0]
    empty = pd.DataFrame({col: [] for col in TRIPLE_COLUMNS})
    if n == 0:
        return empty
    x.sum_duplicates()
    x.data[:] = 1
    nf = float(n)
    item_support = np.asarray(x.sum(axis=0)).ravel() / nf
    threshold = max(float(min_support), min_count / n)
    keep = np.flatnonzero(item_support >= threshold)
    if len(keep) < 3:
        return empty
    sub = x[:, keep].tocsc()
    co = sparse.triu(sub.T @ sub, k=1).tocoo()
    pair_support = co.data / nf
    if max_pairs and (pair_support >= threshold).sum() > max_pairs:
        threshold = max(threshold, float(np.sort(pair_support)[::-1][max_pairs - 1]))
    frequent = pair_support >= threshold
    keep = keep[sorted_unique(np.concatenate([co.row[frequent], co.col[frequent]]))]
    if len(keep) < 3:
        return empty
    ids = np.asarray(items, dtype=object)[keep]
    sub = x[:, keep].tocsc().astype(np.int64)
    k = len(keep)
    c1 = np.asarray(sub.sum(axis=0)).ravel()
    co = sparse.triu(sub.T @ sub, k=1).tocoo()
    pair_keys = co.row.astype(np.int64) * k + co.col
    order = np.argsort(pair_keys)
    pair_keys, pair_counts = pair_keys[order], co.data[order].astype(np.int64)
    f = co.data / nf >= threshold
    pa, pb = co.row[f].astype(np.int64), co.col[f].astype(np.int64)
    if pa.size == 0:
        return empty
    both = sub[:, pa].multiply(sub[:, pb]).tocsc()                # baskets x frequent pairs
    t = (both.T @ sub).tocoo()                                     # (pair, item) -> baskets with all three
    sel = (t.col > pb[t.row]) & (t.data / nf >= threshold)
    a, b, c = pa[t.row[sel]], pb[t.row[sel]], t.col[sel].astype(np.int64)
    if a.size == 0:
        return empty
    abc = t.data[sel].astype(np.int64)

    def pair(u, v):
        return pair_counts[np.searchsorted(pair_keys, u * k + v)]

    ab, ac, bc = pair(a, b), pair(a, c), pair(b, c)
    # (antecedent index sets, antecedent count, consequent count) of the 6 rules of each triple
    shapes = [((a, b), (c,), ab, c1[c]), ((a, c), (b,), ac, c1[b]), ((b, c), (a,), bc, c1[a]),
              ((a,), (b, c), c1[a], bc), ((b,), (a, c), c1[b], ac), ((c,), (a, b), c1[c], ab)]
    s_ac = np.tile(abc / nf, 6)
    s_a = np.concatenate([cnt_a for _, _, cnt_a, _ in shapes]) / nf
    s_c = np.concatenate([cnt_c for _, _, _, cnt_c in shapes]) / nf
    conf = (s_ac * nf) / (s_a * nf)
    lift = conf / s_c
    leverage = s_ac - s_a * s_c
    conviction = np.full(conf.shape, np.inf)
    lt = conf < 1.0
    conviction[lt] = (1.0 - s_c[lt]) / (1.0 - conf[lt])
    count = np.rint(s_ac * n).astype(np.int64)
    # Only the rules that can make the top `limit` (lift >= the limit-th highest, ties included) get id lists.
    cut = np.sort(lift)[::-1][min(limit, len(lift)) - 1] if limit else -np.inf
    top = np.flatnonzero(lift >= cut)
    m = len(a)
    ante, cons = [], []
    for r in top.tolist():
        shape, at = divmod(r, m)
        ant_idx, con_idx = shapes[shape][0], shapes[shape][1]
        ante.append(sorted(ids[[int(v[at]) for v in ant_idx]].tolist()))
        cons.append(sorted(ids[[int(v[at]) for v in con_idx]].tolist()))
    out = pd.DataFrame({"antecedent": ante, "consequent": cons, "count": count[top], "support": s_ac[top],
                        "confidence": conf[top], "lift": lift[top], "leverage": leverage[top],
                        "conviction": conviction[top]})
    out["_key"] = [str(x_) + str(y_) for x_, y_ in zip(ante, cons)]
    out = out.sort_values(["lift", "count", "_key"], ascending=[False, False, True], kind="mergesort")
    return out.drop(columns="_key").head(limit).reset_index(drop=True)
