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
the counts after it (`customer_sequential_counts(after) - customer_sequential_counts(before)`), counted only
from the earliest changed order minus N days on (`sequential_delta`). Cost: O(orders in that span x window orders
x basket^2), independent of the shop's size and of the customer's older history.
"""
from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from typing import Iterable, Sequence


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


def sequential_delta(before, after, days: int) -> tuple[dict, dict]:
    """`customer_sequential_counts(after) - customer_sequential_counts(before)` for ONE customer (signed, zeros
    dropped), computed only over the orders that can contribute to it.

    Let t_min be the earliest time of an order present in one list and not the other (a new, removed or changed
    order). An antecedent order o is affected only if its window (t_o, t_o + N days] reaches t_min, i.e.
    t_o >= t_min - N days; every earlier order, and every order after it, is the same in both lists, so it adds the
    same counts to both sides. Counting from t_min - N days on costs O(orders in that span) instead of
    O(the customer's whole history): a long-time customer's new order no longer recounts years of orders."""
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


def confidences(items: dict, pairs: dict, min_count: int = 1) -> dict:
    """{(a, b): (count, confidence)} summed over all buckets given (pass only the window's buckets)."""
    ant: Counter = Counter()
    for (_, a), n in items.items():
        ant[a] += n
    tot: Counter = Counter()
    for (_, a, b), n in pairs.items():
        tot[(a, b)] += n
    return {k: (n, n / ant[k[0]]) for k, n in tot.items() if n >= min_count and ant[k[0]] > 0}
