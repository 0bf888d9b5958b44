"""Counts store (pure): payload round trips, per-bucket counting vs brute force, exact window sums with deltas,
pruned pair mining, customers per pair."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopify_app.analytics import counts as C
from shopify_app.analytics.rules import customers_per_pair, mine_pair_rules, mine_pair_rules_codes

BIG = 2**40   # Shopify ids are 64-bit


def test_payload_round_trips():
    ids, counts = C.decode_items(C.encode_items([BIG + 5, 3, BIG + 5, 7], [2, 1, 3, 0]))
    assert ids.tolist() == [3, BIG + 5] and counts.tolist() == [1, 5]          # summed, zero dropped, sorted
    a, b, n = C.decode_pairs(C.encode_pairs([3, BIG, 3], [BIG, BIG + 1, 9], [4, 1, 0]))
    assert sorted(zip(a.tolist(), b.tolist(), n.tolist())) == [(3, BIG, 4), (BIG, BIG + 1, 1)]
    assert [x.size for x in C.decode_pairs(C.encode_pairs([], [], []))] == [0, 0, 0]
    with pytest.raises(ValueError):
        C.encode_pairs([5], [5], [1])


baskets_st = st.lists(st.lists(st.integers(1, 9), min_size=0, max_size=6), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(baskets_st)
def test_count_baskets_equals_brute_force(baskets):
    rows = [(k, BIG + i) for k, b in enumerate(baskets) for i in b]
    if not rows:
        return
    oid, pid = map(np.array, zip(*rows))
    bc = C.count_baskets("2024-01", oid, pid)
    sets = [set(BIG + i for i in b) for b in baskets if b]
    assert bc.baskets == len(sets)
    assert dict(zip(bc.item_ids.tolist(), bc.item_counts.tolist())) == dict(Counter(i for s in sets for i in s))
    brute = Counter(p for s in sets for p in itertools.combinations(sorted(s), 2))
    assert dict(zip(zip(bc.pair_a.tolist(), bc.pair_b.tolist()), bc.pair_counts.tolist())) == dict(brute)


def test_basket_items_live_product_lines_only():
    lines = pd.DataFrame({"order_id": [1, 1, 1, 1, 2, 2], "product_id": pd.array([5, 5, None, 6, 7, 8], "Int64"),
                          "quantity": [1, 2, 1, 2, 1, 1], "refunded_quantity": [0, 0, 0, 2, 0, 1],
                          "bucket": ["2024-01"] * 4 + ["2024-02"] * 2})
    got = C.basket_items(lines)
    assert sorted(map(tuple, got[["order_id", "product_id"]].to_numpy().tolist())) == [(1, 5), (2, 7)]
    per = {b.bucket: (b.baskets, b.item_ids.tolist()) for b in C.count_buckets(got)}
    assert per == {"2024-01": (1, [5]), "2024-02": (1, [7])}


@settings(max_examples=30, deadline=None)
@given(baskets_st, baskets_st, st.data())
def test_sum_of_snapshots_and_signed_deltas_is_exact(first, second, data):
    """Snapshot of month 1 + snapshot of month 2 + deltas (remove some baskets of month 2, add new ones)."""
    def counts(bs):
        sets = [set(b) for b in bs if b]
        return (len(sets), Counter(i for s in sets for i in s),
                Counter(p for s in sets for p in itertools.combinations(sorted(s), 2)))

    removed = data.draw(st.lists(st.sampled_from(second), max_size=3, unique_by=id)) if second else []
    added = data.draw(baskets_st)
    parts = C.CountParts()
    for bs in (first, second):
        n, it, pr = counts(bs)
        parts.baskets += n
        parts.add_items(list(it), list(it.values()))
        parts.add_pairs([a for a, _ in pr], [b for _, b in pr], list(pr.values()))
    for bs, sign in ((removed, -1), (added, 1)):
        n, it, pr = counts(bs)
        parts.baskets += sign * n
        parts.add_items(list(it), [sign * v for v in it.values()])
        parts.add_pairs([a for a, _ in pr], [b for _, b in pr], [sign * v for v in pr.values()])
    rest = list(first) + [b for b in second if not any(b is r for r in removed)] + list(added)
    n, it, pr = counts(rest)
    total = parts.total()
    items, pairs = total.as_dicts()
    assert total.n_baskets == n
    assert {int(k): v for k, v in items.items()} == dict(it)
    assert {(int(a), int(b)): v for (a, b), v in pairs.items()} == dict(pr)


def test_inconsistent_pairs_are_rejected():
    parts = C.CountParts(baskets=1)
    parts.add_items([1], [1])
    parts.add_pairs([1], [2], [1])          # item 2 has no count
    with pytest.raises(ValueError):
        parts.total()


def test_window_buckets():
    assert C.window_buckets("2024-03", 12) == ("2023-04", "2024-03")
    assert C.window_buckets("2024-03", 1) == ("2024-03", "2024-03")
    assert C.window_buckets("2024-01", 2) == ("2023-12", "2024-01")
    assert C.window_buckets("2024-03", 0) is None
    assert C.bucket_name(C.bucket_index("1999-12") + 1) == "2000-01"


@settings(max_examples=40, deadline=None)
@given(baskets_st, st.sampled_from([0.0, 0.05, 0.2, 0.5]), st.integers(1, 3))
def test_pruned_mining_equals_full_counting(baskets, min_support, min_count):
    rows = [(k, i) for k, b in enumerate(baskets) for i in b]
    full = mine_pair_rules(baskets, min_support, min_count)
    if not rows:
        assert full.empty
        return
    b, i = map(np.array, zip(*rows))
    items, ii = np.unique(i, return_inverse=True)
    got = mine_pair_rules_codes(b, ii, len(baskets), items, min_support, min_count)
    key = ["antecedent", "consequent"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  full.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_customers_per_pair_brute_force():
    # customer k bought items (index) ...
    bought = {0: {0, 1}, 1: {1, 2}, 2: {0, 1, 2}, 3: {2}}
    cust, item = zip(*[(c, i) for c, s in bought.items() for i in s for _ in range(2)])   # duplicates count once
    pairs = [(0, 1), (1, 2), (0, 2), (2, 0)]
    got = customers_per_pair(cust, item, 4, 3, [p[0] for p in pairs], [p[1] for p in pairs]).tolist()
    assert got == [sum(1 for s in bought.values() if a in s and b in s) for a, b in pairs] == [2, 2, 1, 1]


def test_pruned_sum_keeps_every_pair_of_frequent_items():
    baskets = [[1, 2, 3], [1, 2], [1, 4], [2, 3], [1, 2, 4]]
    parts = C.CountParts(baskets=len(baskets))
    for b in baskets:
        parts.add_items(b, [1] * len(b))
        for x, y in itertools.combinations(sorted(b), 2):
            parts.add_pairs([x], [y], [1])
    full = parts.total()
    pruned = parts.total(min_item_count=3)                 # items 1 (4), 2 (4) pass; 3 and 4 (2 each) do not
    assert pruned.as_dicts()[0] == full.as_dicts()[0]      # item counts untouched
    assert pruned.as_dicts()[1] == {(1, 2): 3}
    assert parts.total(min_support=0.5).as_dicts()[1] == {(1, 2): 3}


# --------------------------------------------------------------------------------------------- live pair deltas
_basket = st.lists(st.integers(1, 40).map(lambda i: i * BIG + 7), min_size=0, max_size=12, unique=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["2024-01", "2024-02", "2025-12"]), st.sampled_from([-1, 1, 2]),
                          _basket), max_size=30))
def test_basket_change_pairs_equals_dict_expansion(changes):
    """The numpy expansion of a batch's basket changes == the dict expansion the incremental diff does."""
    expected: dict = {}
    for bucket, sign, items in changes:
        for a, b in itertools.combinations(sorted(items), 2):
            expected[(bucket, a, b)] = expected.get((bucket, a, b), 0) + sign
    expected = {k: v for k, v in expected.items() if v}
    got = C.basket_change_pairs([(b, s, items) for b, s, items in changes])   # items in any order
    flat = {}
    for bucket, (a, b, c) in got.items():
        assert a.dtype == b.dtype == c.dtype == np.int64
        assert np.all(a < b) and np.all(c != 0)
        keys = list(zip(a.tolist(), b.tolist()))
        assert keys == sorted(keys)                  # sorted by (a, b), each pair once
        flat.update({(bucket, x, y): n for (x, y), n in zip(keys, c.tolist())})
    assert flat == expected


def test_basket_change_pairs_cancel_and_aggregate():
    got = C.basket_change_pairs([("2024-01", 1, (3, 1, 2)), ("2024-01", -1, (1, 2, 3)), ("2024-02", 1, (5,))])
    assert got == {}                                                # cancelled; a 1-item basket has no pair
    a, b, c = C.aggregate_pairs([1, 1, 2, 1], [2, 3, 3, 2], [1, 1, 1, -1])
    assert (a.tolist(), b.tolist(), c.tolist()) == ([1, 2], [3, 3], [1, 1])


def test_indexed_expansion_and_compressed_payloads_round_trip():
    changes = [("2024-01", 1, (BIG + 3, 5, BIG)), ("2024-01", -1, (5, 9)), ("2024-01", 1, (5, 9, 11))]
    plain = C.basket_change_pairs(changes)["2024-01"]
    ids, i, j, c = C.basket_change_pairs(changes, indexed=True)["2024-01"]
    assert [x.tolist() for x in plain] == [ids[i].tolist(), ids[j].tolist(), c.tolist()]
    for data in (C.encode_pairs_indexed(ids, i, j, c, compress=True), C.encode_pairs(*plain, compress=True)):
        assert [x.tolist() for x in C.decode_pairs(data)] == [x.tolist() for x in plain]


# --------------------------------------------------------------------------------------------- indexed sums
_signed_baskets = st.lists(st.tuples(st.sampled_from([-1, 1, 2]), _basket), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(_signed_baskets, min_size=1, max_size=5), st.integers(0, 3), st.booleans())
def test_indexed_parts_sum_like_a_dict(batches, min_item_count, through_payload):
    """Parts added as stored payloads (ids, i, j, counts: each its own id array, extra ids included, any order of
    pairs) sum exactly like expanding every pair into a dict; pruning drops exactly the pairs of rare items."""
    parts = C.CountParts()
    items: Counter = Counter()
    pairs: Counter = Counter()
    for k, batch in enumerate(batches):
        baskets = [(s, b) for s, b in batch if b]
        for s, b in baskets:
            parts.baskets += s
            items.update({i: s for i in b})
            pairs.update({p: s for p in itertools.combinations(sorted(b), 2)})
        if baskets:
            its = Counter()
            for s, b in baskets:
                its.update({i: s for i in b})
            parts.add_items(list(its), list(its.values()))
        got = C.basket_change_pairs([("2024-01", s, b) for s, b in baskets], indexed=True).get("2024-01")
        if got is None:
            continue
        ids, i, j, c = got
        if k % 2:                                   # extra, unused ids and a reversed pair order
            extra = np.array([5, 3 * BIG + 1], dtype=np.int64)
            new_ids = np.union1d(ids, extra)
            i, j = np.searchsorted(new_ids, ids[i])[::-1], np.searchsorted(new_ids, ids[j])[::-1]
            ids, c = new_ids, c[::-1]
        if through_payload:
            ids, i, j, c = C.decode_pairs_indexed(C.encode_pairs_indexed(ids, i, j, c, compress=bool(k % 2)))
        parts.add_pairs_indexed(ids, i, j, c)
    items = {i: n for i, n in items.items() if n}
    pairs = {p: n for p, n in pairs.items() if n}
    if any(a not in items or b not in items for a, b in pairs):     # signed input whose sums are inconsistent
        with pytest.raises(ValueError):
            parts.total()
        return
    total = parts.total(min_item_count=min_item_count)
    got_items, got_pairs = total.as_dicts()
    assert got_items == dict(items)
    frequent = {i for i, n in items.items() if n >= min_item_count or not min_item_count}   # 0: no pruning
    assert got_pairs == {p: n for p, n in pairs.items() if p[0] in frequent and p[1] in frequent}
    keys = list(zip(total.pair_i.tolist(), total.pair_j.tolist()))
    assert keys == sorted(keys) and all(a < b for a, b in keys)


def test_indexed_payload_keeps_wide_counts():
    ids, i, j, c = C.decode_pairs_indexed(C.encode_pairs_indexed([1, 2], [0], [1], [2**40]))
    assert (ids.tolist(), i.tolist(), j.tolist(), c.tolist()) == ([1, 2], [0], [1], [2**40])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(-3, 3)), max_size=20),
                max_size=5))
def test_sum_indexed_pairs_sums_directed_parts_like_a_dict(parts_rows):
    """Any direction (a > b allowed), each part with its own id array; (a, b, counts) sorted, zeros dropped."""
    expected: Counter = Counter()
    parts = []
    for rows in parts_rows:
        a = np.array([BIG * x for x, _, _ in rows], dtype=np.int64)
        b = np.array([BIG * y + 1 for _, y, _ in rows], dtype=np.int64)
        c = np.array([n for _, _, n in rows], dtype=np.int64)
        for x, y, n in zip(a.tolist(), b.tolist(), c.tolist()):
            expected[(x, y)] += n
        ids = np.union1d(a, b)
        parts.append((ids, np.searchsorted(ids, a).astype(np.int32), np.searchsorted(ids, b).astype(np.int32), c))
    a, b, c = C.sum_indexed_pairs(parts)
    got = list(zip(a.tolist(), b.tolist(), c.tolist()))
    assert got == sorted((x, y, n) for (x, y), n in expected.items() if n)
