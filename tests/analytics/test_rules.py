"""Pair rules: metrics by hand on 5 baskets, sparse pair counting, exactness vs mlxtend on the retail sample."""
from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopify_app.analytics.rules import RULE_COLUMNS, count_pairs, mine_pair_rules, pair_rules

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "retail_small.csv"

# n = 5; c(A) = 4, c(B) = 4, c(C) = 2; c(AB) = 3, c(AC) = 2, c(BC) = 1
BASKETS = [["A", "B"], ["A", "B", "C"], ["A", "C"], ["B"], ["A", "B", "A"]]   # duplicate A counts once

HAND = {  # (ante, cons): count, support, confidence, lift, leverage, conviction
    ("A", "B"): (3, 0.6, 0.75, 0.9375, 0.6 - 0.64, 0.2 / 0.25),
    ("B", "A"): (3, 0.6, 0.75, 0.9375, 0.6 - 0.64, 0.2 / 0.25),
    ("A", "C"): (2, 0.4, 0.5, 1.25, 0.4 - 0.32, 0.6 / 0.5),
    ("C", "A"): (2, 0.4, 1.0, 1.25, 0.4 - 0.32, math.inf),
    ("B", "C"): (1, 0.2, 0.25, 0.625, 0.2 - 0.32, 0.6 / 0.75),
    ("C", "B"): (1, 0.2, 0.5, 0.625, 0.2 - 0.32, 0.2 / 0.5),
}


def as_dict(df: pd.DataFrame) -> dict:
    return {(r.antecedent, r.consequent): (r.count, r.support, r.confidence, r.lift, r.leverage, r.conviction)
            for r in df.itertuples(index=False)}


def check(df, expected):
    assert list(df.columns) == RULE_COLUMNS
    got = as_dict(df)
    assert set(got) == set(expected)
    for k, exp in expected.items():
        assert got[k][0] == exp[0], k
        assert got[k][1:] == pytest.approx(exp[1:], abs=1e-12), k


def test_five_baskets_by_hand():
    check(mine_pair_rules(BASKETS, min_support=0.0), HAND)
    assert as_dict(mine_pair_rules(BASKETS, 0.0))[("C", "A")][5] == math.inf   # mlxtend: conf == 1 -> inf


def test_thresholds_min_support_and_min_count():
    check(mine_pair_rules(BASKETS, min_support=0.3), {k: v for k, v in HAND.items() if v[0] >= 2})
    check(mine_pair_rules(BASKETS, min_support=0.4), {k: v for k, v in HAND.items() if v[0] >= 2})  # >=, not >
    check(mine_pair_rules(BASKETS, min_support=0.0, min_count=3), {k: v for k, v in HAND.items() if v[0] == 3})
    assert mine_pair_rules(BASKETS, min_support=0.7).empty
    assert mine_pair_rules([], 0.1).empty


def test_count_pairs_and_dict_api_agree():
    pc = count_pairs(BASKETS)
    items, pairs = pc.as_dicts()
    assert pc.n_baskets == 5 and items == {"A": 4, "B": 4, "C": 2}
    assert {frozenset(k): v for k, v in pairs.items()} == {
        frozenset("AB"): 3, frozenset("AC"): 2, frozenset("BC"): 1}
    check(pair_rules(5, {"A": 4, "B": 4, "C": 2}, {("A", "B"): 3, ("C", "A"): 2, ("B", "C"): 1}), HAND)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), max_size=6), min_size=1, max_size=25))
def test_count_pairs_equals_brute_force(baskets):
    pc = count_pairs(baskets)
    items, pairs = pc.as_dicts()
    sets = [set(b) for b in baskets]
    assert items == dict(Counter(i for s in sets for i in s))
    brute = Counter(frozenset(p) for s in sets for p in itertools.combinations(sorted(s), 2))
    assert {frozenset(k): v for k, v in pairs.items()} == dict(brute)


def sample_baskets() -> list[list[str]]:
    df = pd.read_csv(SAMPLE, dtype={"InvoiceNo": str, "StockCode": str})
    df = df[~df.InvoiceNo.str.startswith("C") & (df.Quantity > 0)]
    return [sorted(set(g)) for _, g in df.groupby("InvoiceNo", sort=True)["StockCode"]]


@pytest.mark.parametrize("min_support", [0.02, 0.035])
def test_equals_mlxtend_fpgrowth_on_retail_sample(min_support):
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    baskets = sample_baskets()
    assert len(baskets) == 382
    te = TransactionEncoder()
    onehot = pd.DataFrame(te.fit(baskets).transform(baskets), columns=te.columns_)
    freq = fpgrowth(onehot, min_support=min_support, use_colnames=True, max_len=2)
    ref = association_rules(freq, num_itemsets=len(baskets), metric="support", min_threshold=0.0)
    ref = ref[(ref.antecedents.map(len) == 1) & (ref.consequents.map(len) == 1)]
    exp = {(next(iter(r.antecedents)), next(iter(r.consequents))):
           (r.support, r.confidence, r.lift, r.leverage, r.conviction) for r in ref.itertuples(index=False)}
    got = mine_pair_rules(baskets, min_support)
    assert len(got) == len(exp) > 50
    got = as_dict(got)
    assert set(got) == set(exp)
    for k, e in exp.items():
        g = got[k]
        assert g[0] == round(e[0] * len(baskets))
        for a, b in zip(g[1:], e):
            if math.isinf(b):
                assert math.isinf(a)
            else:
                assert abs(a - b) <= 1e-9, (k, g, e)


# --------------------------------------------------------------------------------------------- triples
def _mlxtend_triples(baskets, items, threshold):
    """Every 3-itemset rule of mlxtend fpgrowth(max_len=3) + association_rules at support >= threshold."""
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    if threshold > 1:                    # mlxtend refuses it; nothing is that frequent
        return {}
    onehot = pd.DataFrame([[i in b for i in items] for b in baskets], columns=list(items))
    freq = fpgrowth(onehot, min_support=threshold, use_colnames=True, max_len=3)
    if freq.empty or not (freq["itemsets"].map(len) == 3).any():
        return {}
    rules = association_rules(freq, num_itemsets=len(baskets), metric="support", min_threshold=0.0)
    rules = rules[rules.antecedents.map(len) + rules.consequents.map(len) == 3]
    return {(tuple(sorted(r.antecedents)), tuple(sorted(r.consequents))): r for r in rules.itertuples()}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 9), max_size=7), min_size=1, max_size=60),
       st.sampled_from([0.05, 0.1, 0.2]), st.integers(1, 3), st.sampled_from([0, 3, 2000]))
def test_triple_rules_equal_mlxtend(baskets, min_support, min_count, max_pairs):
    """The sparse triple counting gives mlxtend's 3-itemset rules: same itemsets at the bounded threshold, same
    metrics; the `limit` kept are the highest lift (ties: count, then ids)."""
    from scipy import sparse

    from shopify_app.analytics.rules import mine_triple_rules

    items = np.array([10 * i + 3 for i in range(10)])
    rows = [(r, i) for r, b in enumerate(baskets) for i in b]
    r, c = (np.array(v, dtype=np.int64) for v in zip(*rows)) if rows else (np.array([], np.int64),) * 2
    x = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(baskets), len(items)))
    got = mine_triple_rules(x, items, min_support, min_count, limit=10**6, max_pairs=max_pairs)
    n = len(baskets)
    sets = [set(b) for b in baskets]
    t = max(min_support, min_count / n)
    pair_support = sorted((sum(1 for s in sets if {p, q} <= s) / n for p, q in itertools.combinations(range(10), 2)
                           if all(sum(1 for s in sets if i in s) / n >= t for i in (p, q))), reverse=True)
    pair_support = [v for v in pair_support if v > 0]
    if max_pairs and sum(v >= t for v in pair_support) > max_pairs:
        t = max(t, pair_support[max_pairs - 1])
    ref = _mlxtend_triples([[10 * i + 3 for i in b] for b in sets], items.tolist(), t)
    mine = {(tuple(a), tuple(b)): row for a, b, row in zip(got.antecedent, got.consequent, got.itertuples())}
    assert set(mine) == set(ref)
    for key, e in ref.items():
        g = mine[key]
        assert g.count == round(e.support * n)
        for name in ("support", "confidence", "lift", "leverage"):
            assert abs(getattr(g, name) - getattr(e, name)) <= 1e-9, (key, name)
        assert (math.isinf(g.conviction) and math.isinf(e.conviction)) or abs(g.conviction - e.conviction) <= 1e-9
    top = mine_triple_rules(x, items, min_support, min_count, limit=5, max_pairs=max_pairs)
    assert top.to_dict("list") == got.head(5).to_dict("list")
    assert list(got.lift) == sorted(got.lift, reverse=True)
