"""Sequential ("buy next") counts: customers who bought B within N days after A (pure).

Exact definition (N = shop setting `sequential_days`, default 14), over each customer's COUNTED orders (not
cancelled / test / deleted; guest orders have no customer and are left out), where an order's items are its
distinct product ids with (quantity - refunded_quantity) > 0, as for the basket counts:

- antecedent occurrences: for every order o of the customer and every item a of o, (o, a) counts once in
  items[(bucket(o), a)], bucket = month of o ('YYYY-MM', UTC);
- sequential pairs: for every such (o, a) and every item b != a that the customer bought in at least one LATER
  order o' with t_o < t_o' <= t_o + N days, (o, a, b) counts once in pairs[(bucket(o), a, b)] (once however
  many later orders in the window hold b; b may also be in o itself). Orders at the same instant are not "after".
- confidence(A => B) over a set of buckets = sum pairs(A, B) / sum items(A).

Everything is a sum over customers of a function of that customer's orders only, so the database keeps the
tables exact by replacing, for each customer touched by a batch, the counts of their orders before the batch by
the counts after it (`customer_sequential_counts(after) - customer_sequential_counts(before)`), computed
only where it can differ (`sequential_delta`): the changed orders' own counts, plus, for each item that appeared
at or vanished from an instant, the earlier orders of the N days before it. A new order costs about the pairs it
adds, independent of the shop's size, of the customer's older history and of the rest of the window.
"""
from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from itertools import chain
from typing import Iterable, Sequence

import numpy as np


def bucket_of(t: dt.datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


def customer_sequential_counts(orders: Iterable[tuple[dt.datetime, Sequence[int]]], days: int
                               ) -> tuple[Counter, Counter]:
    """orders: (time, items) of ONE customer's counted orders, any order. Returns (items, pairs) Counters keyed
    (bucket, a) and (bucket, a, b). An order without items counts nothing (but can't be a consequent either)."""
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
        # later orders: strictly after t (skip equal times), up to and including t + N days
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


def counts_of_customers(orders_by_customer: dict, days: int) -> tuple[Counter, Counter]:
    """Sum of `customer_sequential_counts` over customers: {customer: [(time, items)]}."""
    items_c: Counter = Counter()
    pairs_c: Counter = Counter()
    for orders in orders_by_customer.values():
        i, p = customer_sequential_counts(orders, days)
        items_c.update(i)
        pairs_c.update(p)
    return items_c, pairs_c


def subtract(after: Counter, before: Counter) -> dict:
    """after - before as a dict of non-zero signed deltas (Counter subtraction would drop negatives)."""
    out = dict(after)
    for k, v in before.items():
        out[k] = out.get(k, 0) - v
    return {k: v for k, v in out.items() if v}


def _by_time(orders) -> dict:
    """{time: Counter(item -> number of the orders at that instant holding it)}, empty orders left out. The
    counts of an order depend only on its time, its items and the items of other instants, so orders at the same
    instant can be merged: this is all the definition sees of a customer's orders."""
    out: dict = {}
    for t, items in orders:
        distinct = {int(i) for i in items}
        if distinct:
            c = out.get(t)
            if c is None:
                out[t] = c = Counter()
            c.update(distinct)
    return out


def _in_window(occ: list, t, window) -> bool:
    """Some time of the sorted list `occ` lies in (t, t + window]."""
    i = bisect.bisect_right(occ, t)
    return i < len(occ) and occ[i] <= t + window


def _occurrences(m: dict, times: list, lo, hi, wanted) -> dict:
    """{item in wanted: sorted instants in [lo, hi] (of the sorted `times`) at which m holds it}."""
    out: dict = {}
    for t in times[bisect.bisect_left(times, lo):bisect.bisect_right(times, hi)]:
        for c in m[t]:
            if c in wanted:
                out.setdefault(c, []).append(t)
    return out


def sequential_delta(before, after, days: int) -> tuple[dict, dict]:
    """`customer_sequential_counts(after) - customer_sequential_counts(before)` for ONE customer (signed, zeros
    dropped), counting only what can differ.

    Merge each side's orders by instant: M(t) = Counter of items over the orders at t, L(t) = items of the
    instants in (t, t + N days]. An instant contributes items M(t) and pairs m_a * [c in L(t), c != a]. With
    dM(t) = M_after(t) - M_before(t), its pair delta is
        sum_a M_before(t)[a] * ([c in L_after(t)] - [c in L_before(t)])  +  sum_a dM(t)[a] * [c in L_after(t)].
    The second term (and the items delta) is non-zero only at CHANGED instants (an order new, removed, moved or
    with other items). The first only for items c whose presence at some changed instant t_c flipped, and only at
    instants t in [t_c - N days, t_c): those (t, c) are found by bisecting c's sorted instants on both sides.
    So a new order costs about (its new items x the instants of the N days before it x their basket), the pairs
    it really adds, instead of recounting every pair of the span twice; an order whose items changed costs one
    order's count plus the flips. Exactly equal to the full recount (property test: tests/analytics/
    test_sequential.py)."""
    items_d, products = _delta_terms(before, after, days)
    pairs_d: dict = {}
    for b, ants, cons in products:
        for a, m in ants.items():
            for c, s in cons.items():
                if c != a:
                    k = (b, a, c)
                    pairs_d[k] = pairs_d.get(k, 0) + s * m
    return items_d, {k: v for k, v in pairs_d.items() if v}


def sequential_delta_arrays(before, after, days: int) -> tuple[dict, dict]:
    """`sequential_delta` with the pairs as numpy arrays per bucket: (items {(bucket, a): n},
    {bucket: (a, b, n)}), int64 arrays sorted by (a, b), zeros (and empty buckets) dropped. For callers that
    encode the pairs as arrays anyway: the pair products are built by numpy instead of one dict update per pair,
    and a batch's customers are summed with `sum_pair_arrays` (bench/bench_sequential_delta.py "payload")."""
    return summed_delta_arrays([(before, after)], days)


def summed_delta_arrays(changes, days: int) -> tuple[dict, dict]:
    """Sum of `sequential_delta_arrays(before, after, days)` over `changes` = (before, after) pairs of several
    customers (a batch): the same (items, {bucket: (a, b, n)}), but every customer's pair products are expanded
    together, a few numpy calls per bucket for the whole batch instead of a few per product (a live batch has
    hundreds of small products: their per-call overhead was most of the order job's sequential phase)."""
    items_d: dict = {}
    products: list = []
    for before, after in changes:
        di, prods = _delta_terms(before, after, days)
        for k, v in di.items():
            items_d[k] = items_d.get(k, 0) + v
        products.extend(prods)
    out = {b: sum_pair_arrays([arrays]) for b, arrays in sorted(_expand_products(products).items())}
    return {k: v for k, v in items_d.items() if v}, {b: arrays for b, arrays in out.items() if arrays[0].size}


def _expand_products(products: list) -> dict:
    """{bucket: (a, c, n) int64 arrays, unsorted, not summed} of pair products [(bucket, {a: m}, {c: s})]: one
    entry per a != c with n = m * s (see sequential_delta), all products of a bucket expanded at once."""
    by_bucket: dict = {}
    for b, ants, cons in products:
        by_bucket.setdefault(b, []).append((ants, cons))
    out: dict = {}
    for b, prods in by_bucket.items():
        la = np.fromiter((len(ants) for ants, _ in prods), np.int64, len(prods))
        lc = np.fromiter((len(cons) for _, cons in prods), np.int64, len(prods))
        a = np.fromiter(chain.from_iterable(ants.keys() for ants, _ in prods), np.int64, int(la.sum()))
        m = np.fromiter(chain.from_iterable(ants.values() for ants, _ in prods), np.int64, int(la.sum()))
        c = np.fromiter(chain.from_iterable(cons.keys() for _, cons in prods), np.int64, int(lc.sum()))
        s = np.fromiter(chain.from_iterable(cons.values() for _, cons in prods), np.int64, int(lc.sum()))
        width = np.repeat(lc, la)                       # per antecedent entry: its product's consequents
        first_c = np.repeat(np.cumsum(lc) - lc, la)     # ... and where they start in c
        row_start = np.cumsum(width) - width            # where each antecedent entry's pairs start in the output
        ci = np.repeat(first_c - row_start, width) + np.arange(int(width.sum()))   # index into c per output pair
        aa, cc = np.repeat(a, width), c[ci]
        nn = np.repeat(m, width) * s[ci]
        keep = aa != cc
        out[b] = (aa[keep], cc[keep], nn[keep])
    return out


def sum_pair_arrays(parts: list) -> tuple:
    """A list of (a, b, n) int64 arrays summed by (a, b): sorted by (a, b), zero sums dropped (e.g. the
    sequential_delta_arrays of a batch's customers, one bucket)."""
    a, b, n = (np.concatenate([p[k] for p in parts]) for k in range(3))
    if a.size and min(a.min(), b.min()) >= 0 and max(a.max(), b.max()) < 2 ** 31:
        order = np.argsort((a << 32) | b)          # one int64 key: several times faster than lexsort
    else:
        order = np.lexsort((b, a))
    a, b, n = a[order], b[order], n[order]
    if a.size:
        start = np.flatnonzero(np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])])
        a, b, n = a[start], b[start], np.add.reduceat(n, start)
    keep = n != 0
    return a[keep], b[keep], n[keep]


def _delta_terms(before, after, days: int) -> tuple[dict, list]:
    """The items delta and the pair delta as products [(bucket, {a: m}, {c: s})], each meaning
    pairs[(bucket, a, c)] += m * s for a != c (see sequential_delta)."""
    mb, ma = _by_time(before), _by_time(after)
    changed = sorted(t for t in mb.keys() | ma.keys() if mb.get(t) != ma.get(t))
    if not changed:
        return {}, []
    window = dt.timedelta(days=int(days))
    empty: Counter = Counter()
    buckets: dict = {}

    def bucket(t):
        b = buckets.get(t)
        if b is None:
            buckets[t] = b = bucket_of(t)
        return b

    items_d: dict = {}
    products: list = []
    times_b = sorted(mb)
    times_a = sorted(ma)

    # which items' presence flipped at which changed instant
    flips: dict = {}                                   # item -> [changed instants where it flipped]
    for t in changed:
        for c in ma.get(t, empty).keys() ^ mb.get(t, empty).keys():
            flips.setdefault(c, []).append(t)

    # first term: antecedent instants of `before` whose window gained or lost a flipped item
    if flips:
        # each flipped item's sorted instants on both sides, near the changes: a window check at t in
        # [t_c - N, t_c) only looks at (t, t + N], inside [first change - N, last change + N]
        lo_t, hi_t = changed[0] - window, changed[-1] + window
        occ_b = _occurrences(mb, times_b, lo_t, hi_t, flips)
        occ_a = _occurrences(ma, times_a, lo_t, hi_t, flips)
        gained: dict = {}                              # before instant -> {item c: +1 / -1}
        for c, at in flips.items():
            ob, oa = occ_b.get(c, ()), occ_a.get(c, ())
            done = 0                                   # `at` ascends: the ranges' union, each instant once
            for tc in at:                              # instants t with t < tc <= t + N
                lo = max(done, bisect.bisect_left(times_b, tc - window))
                done = max(done, bisect.bisect_left(times_b, tc))
                for t in times_b[lo:done]:
                    s = _in_window(oa, t, window) - _in_window(ob, t, window)
                    if s:
                        gained.setdefault(t, {})[c] = s
        products.extend((bucket(t), mb[t], cs) for t, cs in gained.items())

    # second term and items: changed instants, their item difference against the whole later window of `after`
    for t in changed:
        dm = Counter(ma.get(t, empty))
        dm.subtract(mb.get(t, empty))
        dm = {a: d for a, d in dm.items() if d}
        if not dm:
            continue
        b = bucket(t)
        for a, d in dm.items():
            k = (b, a)
            items_d[k] = items_d.get(k, 0) + d
        later: set = set()
        lo = bisect.bisect_right(times_a, t)
        hi = bisect.bisect_right(times_a, t + window, lo=lo)
        for t2 in times_a[lo:hi]:
            later.update(ma[t2])
        if later:
            products.append((b, dm, dict.fromkeys(later, 1)))
    return {k: v for k, v in items_d.items() if v}, products


def confidences(items: dict, pairs: dict, min_count: int = 1) -> dict:
    """{(a, b): (count, confidence)} summed over all buckets given (pass only the window's buckets)."""
    ant: Counter = Counter()
    for (_, a), n in items.items():
        ant[a] += n
    tot: Counter = Counter()
    for (_, a, b), n in pairs.items():
        tot[(a, b)] += n
    return {k: (n, n / ant[k[0]]) for k, n in tot.items() if n >= min_count and ant[k[0]] > 0}
