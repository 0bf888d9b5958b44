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

from shopify_app.analytics.rules import sorted_unique


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
    """{time: {item: number of the orders at that instant holding it}}, empty orders left out. The
    counts of an order depend only on its time, its items and the items of other instants, so orders at the same
    instant can be merged: this is all the definition sees of a customer's orders."""
    out: dict = {}
    for t, items in orders:
        distinct = {int(i) for i in items}
        if distinct:
            c = out.get(t)
            if c is None:
                out[t] = dict.fromkeys(distinct, 1)
            else:
                for i in distinct:
                    c[i] = c.get(i, 0) + 1
    return out


def _after_by_time(mb: dict, before: list, after: list) -> tuple[dict, set]:
    """(_by_time(after), the instants where it may differ from mb = _by_time(before)), from mb and the orders
    that differ: the order job's `after` holds the same (time, items) objects as `before` except the batch's
    orders, so the multiset difference by identity is the few orders of the batch, and only their instants are
    rebuilt (copy on write: mb is not changed; untouched instants share mb's dicts). The same result as
    _by_time(after) whatever the lists hold (equal orders that are different objects are a removal plus an
    addition at the same instant); it saves re-merging and comparing a repeat customer's whole history."""
    nb, na = Counter(map(id, before)), Counter(map(id, after))
    if nb == na:
        return mb, set()
    extra_b, extra_a = nb - na, na - nb         # ids of orders only in before / only in after (with multiplicity)
    if 2 * sum(extra_b.values()) > len(before):  # lists read separately (reconciliation, import): merge afresh
        ma = _by_time(after)
        return ma, mb.keys() | ma.keys()
    ma = dict(mb)
    touched: set = set()
    for orders, extra, sign in ((before, extra_b, -1), (after, extra_a, 1)):
        if not extra:
            continue
        for order in orders:
            k = id(order)
            if not extra.get(k):
                continue
            extra[k] -= 1
            t, items = order
            distinct = {int(i) for i in items}
            if not distinct:
                continue
            touched.add(t)
            c = ma.get(t)
            c = {} if c is None else dict(c) if c is mb.get(t) else c
            for i in distinct:
                n = c.get(i, 0) + sign
                if n:
                    c[i] = n
                else:
                    del c[i]
            if c:
                ma[t] = c
            else:
                ma.pop(t, None)
    return ma, touched


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
    customers (a batch): the same (items, {bucket: (a, b, n)}), but every customer's pair products are summed
    together, by one sparse matrix product for the whole batch (`_sum_products`) instead of a few numpy calls per
    product (a live batch has hundreds of small products) or an expansion of every pair followed by a sort."""
    items_d, products = _batch_terms(changes, days)
    return items_d, _sum_products(products)


def _sum_products(products: list) -> dict:
    """{bucket: (a, c, n)} int64 arrays sorted by (a, c), zero sums and empty buckets dropped, of pair products
    [(bucket, {a: m}, {c: s})], each meaning pairs[(bucket, a, c)] += m * s for a != c (see sequential_delta).

    One sparse product for all buckets: product r is row r of A (entry m at column (bucket, a)) and of C (entry
    s at column c), so (A^T C)[(bucket, a), c] = sum over the bucket's products of m * s. scipy's matrix product
    accumulates each output row in C, so nothing is expanded pair by pair or sorted; its rows come out in
    (bucket, a) order and, once its indices are sorted, each row's columns in c order (column order == id
    order)."""
    if not products:
        return {}
    from scipy import sparse

    names = sorted({b for b, _, _ in products})
    bucket_no = {b: k for k, b in enumerate(names)}
    n_prod = len(products)
    pb = np.fromiter((bucket_no[b] for b, _, _ in products), np.int64, n_prod)
    la = np.fromiter((len(ants) for _, ants, _ in products), np.int64, n_prod)
    lc = np.fromiter((len(cons) for _, _, cons in products), np.int64, n_prod)
    a = np.fromiter(chain.from_iterable(ants.keys() for _, ants, _ in products), np.int64, int(la.sum()))
    m = np.fromiter(chain.from_iterable(ants.values() for _, ants, _ in products), np.int64, int(la.sum()))
    c = np.fromiter(chain.from_iterable(cons.keys() for _, _, cons in products), np.int64, int(lc.sum()))
    s = np.fromiter(chain.from_iterable(cons.values() for _, _, cons in products), np.int64, int(lc.sum()))
    ids = _sorted_unique(np.concatenate([a, c]))
    k = len(ids)
    # CSR straight from the products (a product's keys are distinct: no duplicate to sum, nothing to sort)
    am = sparse.csr_matrix((m, np.repeat(pb, la) * k + np.searchsorted(ids, a), np.r_[0, np.cumsum(la)]),
                           shape=(n_prod, len(names) * k))
    cm = sparse.csr_matrix((s, np.searchsorted(ids, c), np.r_[0, np.cumsum(lc)]), shape=(n_prod, k))
    x = (am.T.tocsr() @ cm).tocsr()
    x.sort_indices()
    row = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    col, n = x.indices.astype(np.int64), x.data.astype(np.int64)
    ai = row % k
    keep = (ai != col) & (n != 0)
    row, ai, col, n = row[keep], ai[keep], col[keep], n[keep]
    bounds = np.searchsorted(row, np.arange(len(names) + 1) * k)
    out = {}
    used = np.zeros(k, dtype=bool)
    for no, b in enumerate(names):
        lo, hi = bounds[no], bounds[no + 1]
        if hi > lo:
            i, j = ai[lo:hi], col[lo:hi]
            used[:] = False
            used[i] = used[j] = True
            rank = np.cumsum(used) - 1                 # batch-wide index -> index among the bucket's items
            out[b] = PairArrays((ids[i], ids[j], n[lo:hi]), index=(ids[used], rank[i], rank[j]))
    return out


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """analytics.rules.sorted_unique with numpy's default sort: the arrays here (item ids of a batch's products,
    (group, instant) keys) are not made of sorted runs."""
    return sorted_unique(a, kind="quicksort")


class PairArrays(tuple):
    """(a, b, n) pair arrays that also carry `pair_index` = (ids, i, j): ids the sorted distinct items of a and b,
    a = ids[i], b = ids[j]. What the pair blob stores (workers.sequential_jobs.encode_directed_pairs), known for
    free where the arrays are made, so the encoder needs no sort and no search; any (a, b, n) tuple reader is
    unaffected."""

    def __new__(cls, arrays, index=None):
        out = super().__new__(cls, arrays)
        out.pair_index = index
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
    return _batch_terms([(before, after)], days)


def _batch_terms(changes, days: int) -> tuple[dict, list]:
    """`_delta_terms` summed over several customers' (before, after): the first terms of all of them are found
    together (`_flip_gains_batch`: a few numpy calls per batch instead of per customer)."""
    window = dt.timedelta(days=int(days))
    empty: dict = {}
    buckets: dict = {}

    def bucket(t):
        b = buckets.get(t)
        if b is None:
            buckets[t] = b = bucket_of(t)
        return b

    items_d: dict = {}
    products: list = []
    cases: list = []
    for before, after in changes:
        mb = _by_time(before)
        ma, touched = _after_by_time(mb, before, after)
        changed = sorted(t for t in touched if mb.get(t) != ma.get(t))
        if not changed:
            continue
        times_b = sorted(mb)
        times_a = sorted(ma)

        # which items' presence flipped at which changed instant
        flips: dict = {}                                   # item -> [changed instants where it flipped]
        for t in changed:
            for c in ma.get(t, empty).keys() ^ mb.get(t, empty).keys():
                flips.setdefault(c, []).append(t)
        # first term (below, for all customers at once): antecedent instants of `before` whose window gained or
        # lost a flipped item
        if flips and times_b:
            cases.append((mb, ma, times_b, times_a, flips, changed))

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
    for (mb, *_), gained in zip(cases, _flip_gains_batch(cases, window)):
        products.extend((bucket(t), mb[t], cs) for t, cs in gained.items())
    return {k: v for k, v in items_d.items() if v}, products


_EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)
_KEY_LIMIT = 2 ** 62                  # (flipped items) x (time span) keys must stay inside int64


def _flip_gains(mb: dict, ma: dict, times_b: list, times_a: list, flips: dict, changed: list, window) -> dict:
    """The first term of sequential_delta for one customer: {before instant t: {flipped item c: s}},
    s = [c in L_after(t)] - [c in L_before(t)] != 0, for the instants t in [t_c - N, t_c) of each instant t_c where
    c flipped (see _flip_gains_batch)."""
    return _flip_gains_batch([(mb, ma, times_b, times_a, flips, changed)], window)[0]


def _flip_gains_batch(cases: list, window) -> list:
    """`_flip_gains` of several customers, cases = [(mb, ma, times_b, times_a, flips, changed)], in numpy: every
    (customer, item c, instant t) candidate of the batch at once (a live order with 25 new items of a repeat
    customer whose whole history is in its window has 25 x history candidates; two bisections each in Python
    were most of the sequential phase, and numpy per customer costs more than it saves on small histories).

    Times are integer microseconds. A key = group x span + time, group = a customer's before instants (for the
    candidate ranges) or a (customer, flipped item) pair (for the occurrences), span larger than every time
    offset plus N: "an instant of c in (t, t + N]" is one searchsorted for all candidates. Exactly
    `_flip_gains_py` (property test); the fallback when the keys would not fit in int64."""
    if not cases:
        return []
    us: dict = {}

    def to_us(t):
        u = us.get(t)
        if u is None:
            us[t] = u = (t - _EPOCH) // _US
        return u

    w = window // _US
    # flip entries (customer, item, t_c): group = (customer, item)
    g_case, g_item, f_group, f_time = [], [], [], []
    for k, (_mb, _ma, _tb, _ta, flips, _ch) in enumerate(cases):
        for c, at in flips.items():
            gid = len(g_item)
            g_case.append(k)
            g_item.append(c)
            for tc in at:
                f_group.append(gid)
                f_time.append(to_us(tc))
    n_b = [len(case[2]) for case in cases]
    if not f_time or not sum(n_b):
        return [{} for _ in cases]                      # no flip, or no earlier instant: no first term
    tb = np.fromiter((to_us(t) for case in cases for t in case[2]), np.int64, sum(n_b))
    ft = np.array(f_time, dtype=np.int64)
    base = min(int(tb.min()), int(ft.min())) - w - 1
    span = max(int(tb.max()), int(ft.max())) + 2 * w + 2 - base
    if max(len(cases), len(g_item)) * span >= _KEY_LIMIT or base < -_KEY_LIMIT:
        return [_flip_gains_py(*case, window) for case in cases]
    b_case = np.repeat(np.arange(len(cases), dtype=np.int64), n_b)
    kb = b_case * span + (tb - base)                   # before instants, sorted (customer, time)
    fg = np.array(f_group, dtype=np.int64)
    gc = np.array(g_case, dtype=np.int64)
    fk = gc[fg] * span + (ft - base)
    lo = np.searchsorted(kb, fk - w, "left")           # t in [t_c - N, t_c) of the same customer
    hi = np.searchsorted(kb, fk, "left")
    width = hi - lo
    total = int(width.sum())
    out: list = [{} for _ in cases]
    if not total:
        return out
    nb = len(tb)
    idx = np.repeat(lo - (np.cumsum(width) - width), width) + np.arange(total)
    key = _sorted_unique(np.repeat(fg, width) * nb + idx)   # each (group, instant) once: the ranges' union
    grp, idx = key // nb, key % nb
    q = grp * span + (tb[idx] - base)                  # candidate (c, t); (t, t + N] = (q, q + w]

    # each side's instants of the flipped items, near the changes ([first change - N, last change + N]), as keys
    items_u = _sorted_unique(np.array(g_item, dtype=np.int64))
    n_u = len(items_u)
    gkey = gc * n_u + np.searchsorted(items_u, np.array(g_item, dtype=np.int64))
    g_order = np.argsort(gkey)
    gkey_sorted = gkey[g_order]

    def hits(side: int) -> np.ndarray:
        held = []                                      # per case: the side's item dicts of its instants in range
        times_in = []
        for case in cases:
            m, times, changed = case[side], case[2 + side], case[5]
            sub = times[bisect.bisect_left(times, changed[0] - window):bisect.bisect_right(times, changed[-1] + window)]
            times_in.append(sub)
            held.append([m[t] for t in sub])
        n_inst = [len(sub) for sub in times_in]
        total_inst = sum(n_inst)
        lens = np.fromiter((len(h) for hs in held for h in hs), np.int64, total_inst)
        inst_time = np.fromiter((to_us(t) for sub in times_in for t in sub), np.int64, total_inst)
        items = np.fromiter(chain.from_iterable(h for hs in held for h in hs), np.int64, int(lens.sum()))
        r = np.searchsorted(items_u, items)
        known = items_u[np.minimum(r, n_u - 1)] == items
        ck = np.repeat(np.repeat(np.arange(len(cases), dtype=np.int64), n_inst), lens) * n_u + r
        pos = np.minimum(np.searchsorted(gkey_sorted, ck), len(gkey_sorted) - 1)
        known &= gkey_sorted[pos] == ck
        occ_t = np.repeat(inst_time, lens)[known]
        occ = np.sort(g_order[pos[known]] * span + (occ_t - base))
        if not occ.size:
            return np.zeros(len(q), dtype=np.int64)
        p = np.searchsorted(occ, q, "right")
        nxt = occ[np.minimum(p, len(occ) - 1)]
        return ((p < len(occ)) & (nxt <= q + w)).astype(np.int64)

    sign = hits(1) - hits(0)                            # [c in L_after(t)] - [c in L_before(t)]
    nz = sign != 0
    if not nz.any():
        return out
    idx, grp, sign = idx[nz], grp[nz], sign[nz]
    order = np.argsort(idx, kind="stable")
    idx, grp, sign = idx[order], grp[order], sign[order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    ends = np.r_[starts[1:], len(idx)].tolist()
    cs, ss = np.asarray(g_item, dtype=object)[grp].tolist(), sign.tolist()
    offsets = np.cumsum([0] + n_b).tolist()
    cases_of = b_case[idx[starts]].tolist()
    for st, en, i, k in zip(starts.tolist(), ends, idx[starts].tolist(), cases_of):
        out[k][cases[k][2][i - offsets[k]]] = dict(zip(cs[st:en], ss[st:en]))
    return out


def _flip_gains_py(mb: dict, ma: dict, times_b: list, times_a: list, flips: dict, changed: list, window) -> dict:
    """`_flip_gains` by bisection, one candidate at a time (the definition's direct reading)."""
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
    return gained


def confidences(items: dict, pairs: dict, min_count: int = 1) -> dict:
    """{(a, b): (count, confidence)} summed over all buckets given (pass only the window's buckets)."""
    ant: Counter = Counter()
    for (_, a), n in items.items():
        ant[a] += n
    tot: Counter = Counter()
    for (_, a, b), n in pairs.items():
        tot[(a, b)] += n
    return {k: (n, n / ant[k[0]]) for k, n in tot.items() if n >= min_count and ant[k[0]] > 0}
