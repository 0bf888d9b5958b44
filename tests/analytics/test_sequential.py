"""Sequential "buy next" counts: a hand-computed case, a naive reference, and the per-customer delta property."""
from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import numpy as np

from hypothesis import given, settings
from hypothesis import strategies as st

from shopify_app.analytics.sequential import (
    confidences, counts_of_customers, customer_sequential_counts, sequential_delta, sequential_delta_arrays,
    subtract, sum_pair_arrays,
)

A, B, C, D, E = 1, 2, 3, 4, 5


def t(month, day, hour=10):
    return dt.datetime(2024, month, day, hour)


def test_hand_computed():
    cust1 = [(t(1, 30), [A, B]), (t(2, 5), [B, C]), (t(2, 20), [D]), (t(2, 5), [E])]
    items, pairs = customer_sequential_counts(cust1, 14)
    # every order's items count once in the order's month
    assert items == Counter({("2024-01", A): 1, ("2024-01", B): 1, ("2024-02", B): 1, ("2024-02", C): 1,
                             ("2024-02", E): 1, ("2024-02", D): 1})
    # from Jan 30: Feb 5 (6 days, both orders at that instant) is inside, Feb 20 (21 days) is not;
    # B -> B is not a pair; the two Feb 5 orders are simultaneous, not "after" each other; Feb 20 is 15 days
    # after Feb 5 (window is 14)
    assert pairs == Counter({("2024-01", A, B): 1, ("2024-01", A, C): 1, ("2024-01", A, E): 1,
                             ("2024-01", B, C): 1, ("2024-01", B, E): 1})
    cust2 = [(t(3, 1), [A]), (t(3, 15), [B]), (t(3, 10), [B])]       # Mar 15 is exactly 14 days: inside
    i2, p2 = customer_sequential_counts(cust2, 14)
    assert i2 == Counter({("2024-03", A): 1, ("2024-03", B): 2})
    assert p2 == Counter({("2024-03", A, B): 1})                      # B in two later orders: counted once
    items_all, pairs_all = counts_of_customers({1: cust1, 2: cust2}, 14)
    conf = confidences(items_all, pairs_all)
    assert conf[(A, B)] == (2, 1.0) and conf[(A, C)] == (1, 0.5) and conf[(B, E)] == (1, 0.25)   # B in 4 orders
    assert customer_sequential_counts(cust2, 13)[1] == Counter({("2024-03", A, B): 1})   # Mar 10 still inside
    assert customer_sequential_counts(cust2, 8)[1] == Counter()


def naive(orders, days):
    """Reference straight from the definition: all order pairs, no sorting, no bisect."""
    items, pairs = Counter(), Counter()
    for (t0, its) in orders:
        b = f"{t0.year:04d}-{t0.month:02d}"
        later = set()
        for (t1, nxt) in orders:
            if t0 < t1 <= t0 + dt.timedelta(days=days):
                later |= set(nxt)
        for a in set(its):
            items[(b, a)] += 1
            for c in later - {a}:
                pairs[(b, a, c)] += 1
    return items, pairs


order_st = st.tuples(st.integers(0, 90), st.integers(0, 3),
                     st.lists(st.integers(1, 6), min_size=0, max_size=4))


@settings(max_examples=300, deadline=None)
@given(st.lists(order_st, max_size=12), st.integers(1, 30))
def test_matches_naive_definition(raw, days):
    base = dt.datetime(2024, 1, 20)
    orders = [(base + dt.timedelta(days=d, hours=h * 6), items) for d, h, items in raw]
    assert customer_sequential_counts(orders, days) == naive(orders, days)


def test_subtract_keeps_negative_deltas():
    assert subtract(Counter({"a": 1, "b": 2}), Counter({"b": 2, "c": 3})) == {"a": 1, "c": -3}


# ------------------------------------------------------------------ incremental: per-customer before/after
def replay(versions, days):
    """Apply (order_id, version, customer, time, items | None=deleted) with last-writer-wins, maintaining the
    tables by per-customer before/after differences, as the order job does."""
    store: dict = {}            # order id -> (version, customer, time, items or None)
    items_t: Counter = Counter()
    pairs_t: Counter = Counter()

    def orders_of(cust):
        return [(tm, its) for (_, c, tm, its) in store.values() if c == cust and its is not None]

    for oid, ver, cust, tm, its in versions:
        cur = store.get(oid)
        if cur is not None and (cur[3] is None or (its is not None and ver <= cur[0])):
            continue                                    # tombstone wins; older/equal version is a no-op
        touched = {cust} | ({cur[1]} if cur else set())
        before = {c: customer_sequential_counts(orders_of(c), days) for c in touched}
        store[oid] = (ver, cust, tm, its)
        for c in touched:
            ai, ap = customer_sequential_counts(orders_of(c), days)
            bi, bp = before[c]
            for k, v in subtract(ai, bi).items():
                items_t[k] += v
            for k, v in subtract(ap, bp).items():
                pairs_t[k] += v
    final = {}
    for (_, c, tm, its) in store.values():
        if its is not None:
            final.setdefault(c, []).append((tm, its))
    return ({k: v for k, v in items_t.items() if v}, {k: v for k, v in pairs_t.items() if v}), final


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 20))
def test_any_permutation_with_duplicates_equals_final_orders(seed, days):
    rng = random.Random(seed)
    base = dt.datetime(2024, 1, 25)
    versions = []
    for oid in range(1, rng.randint(2, 9)):
        for ver in range(rng.randint(1, 3)):          # edits may move the order in time, basket and customer
            versions.append((oid, ver, rng.choice([1, 2, 3]), base + dt.timedelta(days=rng.randint(0, 40)),
                             [rng.randint(1, 5) for _ in range(rng.randint(0, 3))]))
        if rng.random() < 0.2:
            versions.append((oid, 99, rng.choice([1, 2]), base, None))     # deleted
    messy = versions + rng.sample(versions, min(4, len(versions)))
    rng.shuffle(messy)
    (items_t, pairs_t), final = replay(messy, days)
    ref_i, ref_p = counts_of_customers(final, days)
    assert items_t == dict(ref_i) and pairs_t == dict(ref_p)
    # and the same as the in-order replay
    assert replay(sorted(versions, key=lambda v: (v[0], v[1])), days)[0] == (items_t, pairs_t)


@settings(max_examples=400, deadline=None)
@given(st.lists(order_st, max_size=14), st.lists(order_st, max_size=4), st.integers(0, 14), st.integers(1, 30),
       st.randoms(use_true_random=False))
def test_delta_over_the_changed_span_equals_the_full_recount(raw, added, removed, days, rnd):
    """sequential_delta counts only from (earliest changed order - N days) on, yet equals after - before of the
    whole history, for any batch of added, removed and changed orders."""
    base = dt.datetime(2024, 1, 20)
    before = [(base + dt.timedelta(days=d, hours=h * 6), items) for d, h, items in raw]
    after = list(before)
    rnd.shuffle(after)
    after = after[min(removed, len(after)):]                                   # removed orders
    if after and rnd.random() < 0.5:                                           # a changed basket
        t0, items = after[0]
        after[0] = (t0, items[:-1] + [rnd.randint(1, 6)])
    after += [(base + dt.timedelta(days=d, hours=h * 6), items) for d, h, items in added]   # new orders
    bi, bp = customer_sequential_counts(before, days)
    ai, ap = customer_sequential_counts(after, days)
    assert sequential_delta(before, after, days) == (subtract(ai, bi), subtract(ap, bp))


def test_a_new_order_after_years_of_orders_adds_only_its_own_counts():
    """A customer with years of orders: the delta of one new order only involves orders of the last N days."""
    years = [(dt.datetime(2020, 1, 1) + dt.timedelta(days=30 * k), [A, B]) for k in range(60)]
    new = (years[-1][0] + dt.timedelta(days=3), [C])
    items, pairs = sequential_delta(years, years + [new], 14)
    b_last = f"{years[-1][0]:%Y-%m}"
    b_new = f"{new[0]:%Y-%m}"
    assert items == {(b_new, C): 1}
    assert pairs == {(b_last, A, C): 1, (b_last, B, C): 1}
    assert sequential_delta(years, list(reversed(years)), 14) == ({}, {})     # same orders: nothing to count


# ------------------------------------------------------------------ sequential_delta: hand-computed situations
def full_delta(before, after, days=14):
    bi, bp = customer_sequential_counts(before, days)
    ai, ap = customer_sequential_counts(after, days)
    return subtract(ai, bi), subtract(ap, bp)


def as_dicts(items, arrays):
    """sequential_delta_arrays' output as sequential_delta's, checking the arrays' promised shape on the way."""
    pairs = {}
    for b, (a, c, n) in arrays.items():
        assert a.dtype == c.dtype == n.dtype == np.int64 and a.size and (n != 0).all()
        assert (np.lexsort((c, a)) == np.arange(a.size)).all()                  # sorted by (a, b)
        assert len(set(zip(a.tolist(), c.tolist()))) == a.size                  # summed: each pair once
        pairs.update({(b, int(x), int(y)): int(v) for x, y, v in zip(a, c, n)})
    return items, pairs


def check(before, after, expected, days=14):
    """The hand-computed delta, which the full recount and the arrays variant must agree with too."""
    got = sequential_delta(before, after, days)
    assert got == expected
    assert got == full_delta(before, after, days)
    assert as_dicts(*sequential_delta_arrays(before, after, days)) == expected


def test_delta_of_a_new_order():
    before = [(t(1, 1), [A, B]), (t(1, 5), [B, C])]
    # Jan 1's window gains D (B, C were already there); Jan 5's window was empty and now holds C, D
    check(before, before + [(t(1, 10), [C, D])],
          ({("2024-01", C): 1, ("2024-01", D): 1},
           {("2024-01", A, D): 1, ("2024-01", B, D): 2, ("2024-01", B, C): 1, ("2024-01", C, D): 1}))
    # a new order holding only items already in every earlier window adds only its own occurrences
    check(before, before + [(t(1, 6), [C])], ({("2024-01", C): 1}, {("2024-01", B, C): 1}))


def test_delta_of_duplicate_orders():
    before = [(t(1, 1), [A]), (t(1, 2), [B])]
    # the same (time, items) twice: two antecedent occurrences, each with its pairs
    check(before, before + [(t(1, 1), [A])], ({("2024-01", A): 1}, {("2024-01", A, B): 1}))
    check(before + [(t(1, 1), [A])], before, ({("2024-01", A): -1}, {("2024-01", A, B): -1}))
    # a second copy of a consequent: B was already in A's window, only B's own occurrence counts
    check(before, before + [(t(1, 2), [B])], ({("2024-01", B): 1}, {}))
    # items listed twice in one order count once
    check(before, before + [(t(1, 3), [C, C, C])], ({("2024-01", C): 1}, {("2024-01", A, C): 1,
                                                                         ("2024-01", B, C): 1}))


def test_delta_of_an_order_at_the_same_instant():
    before = [(t(1, 1), [C]), (t(1, 5), [A])]
    # B at Jan 5 is not "after" A at Jan 5, but is after C at Jan 1
    check(before, before + [(t(1, 5), [B])], ({("2024-01", B): 1}, {("2024-01", C, B): 1}))
    # A again at Jan 5: C's window already holds A
    check(before, before + [(t(1, 5), [A, B])], ({("2024-01", A): 1, ("2024-01", B): 1}, {("2024-01", C, B): 1}))


def test_delta_of_empty_orders():
    before = [(t(1, 1), [A]), (t(1, 2), [B])]
    check(before, before + [(t(1, 3), [])], ({}, {}))
    check(before, [(t(1, 1), [A]), (t(1, 2), [])], ({("2024-01", B): -1}, {("2024-01", A, B): -1}))   # all refunded


def test_delta_of_changed_items():
    before = [(t(1, 1), [A, B]), (t(1, 2), [C, D])]
    # D refunded from the later order: both antecedents lose their pair to D
    check(before, [(t(1, 1), [A, B]), (t(1, 2), [C])],
          ({("2024-01", D): -1}, {("2024-01", A, D): -1, ("2024-01", B, D): -1}))
    # B refunded from the earlier order: its occurrence and its pairs go
    check(before, [(t(1, 1), [A]), (t(1, 2), [C, D])],
          ({("2024-01", B): -1}, {("2024-01", B, C): -1, ("2024-01", B, D): -1}))
    # one item swapped for another
    check(before, [(t(1, 1), [A, C]), (t(1, 2), [C, D])],
          ({("2024-01", B): -1, ("2024-01", C): 1},
           {("2024-01", B, C): -1, ("2024-01", B, D): -1, ("2024-01", C, D): 1}))


def test_delta_of_a_moved_order():
    before = [(t(1, 20), [A]), (t(1, 30), [B]), (t(2, 20), [C])]
    # Jan 30 -> Feb 10: out of Jan 20's window (21 days), into a new month, and now 10 days before Feb 20's C
    check(before, [(t(1, 20), [A]), (t(2, 10), [B]), (t(2, 20), [C])],
          ({("2024-01", B): -1, ("2024-02", B): 1}, {("2024-01", A, B): -1, ("2024-02", B, C): 1}))
    # moved to the same instant as its antecedent: no longer after it
    check(before, [(t(1, 20), [A]), (t(1, 20), [B]), (t(2, 20), [C])], ({}, {("2024-01", A, B): -1}))


def test_delta_of_a_removed_order():
    before = [(t(1, 1), [A]), (t(1, 3), [B]), (t(1, 5), [B, C])]
    # the middle order goes: Jan 1 still has B (Jan 5) in its window
    check(before, [(t(1, 1), [A]), (t(1, 5), [B, C])], ({("2024-01", B): -1}, {("2024-01", B, C): -1}))
    # the last goes: Jan 1 loses C, keeps B; Jan 3 loses its only later order (B -> B never counted)
    check(before, before[:2], ({("2024-01", B): -1, ("2024-01", C): -1},
                               {("2024-01", A, C): -1, ("2024-01", B, C): -1}))
    check(before, [], full_delta(before, []))
    assert sequential_delta(before, [], 14)[0] == {("2024-01", A): -1, ("2024-01", B): -2, ("2024-01", C): -1}


def test_delta_at_the_window_edge():
    before = [(t(1, 1), [A])]
    edge = t(1, 1) + dt.timedelta(days=14)                          # t_o + N days: inside
    check(before, before + [(edge, [B])], ({("2024-01", B): 1}, {("2024-01", A, B): 1}))
    check(before, before + [(edge + dt.timedelta(seconds=1), [B])], ({("2024-01", B): 1}, {}))
    # an order moved from just inside to just outside the edge
    check(before + [(edge, [B])], before + [(edge + dt.timedelta(seconds=1), [B])], ({}, {("2024-01", A, B): -1}))
    # B also bought after the edge: removing the inside copy still removes the pair
    check(before + [(edge, [B]), (edge + dt.timedelta(hours=1), [B])],
          before + [(edge + dt.timedelta(hours=1), [B])], ({("2024-01", B): -1}, {("2024-01", A, B): -1}))


def test_delta_when_the_item_stays_in_the_window_through_another_order():
    before = [(t(1, 1), [A]), (t(1, 3), [B]), (t(1, 5), [B])]
    # one of two later B orders is removed: A's window still holds B
    check(before, [(t(1, 1), [A]), (t(1, 5), [B])], ({("2024-01", B): -1}, {}))
    # B moves within the window: nothing changes but nothing is lost either
    check(before, [(t(1, 1), [A]), (t(1, 4), [B]), (t(1, 5), [B])], ({}, {}))


# ------------------------------------------------------------------ sequential_delta: property vs full recount
EDGE_DAYS = 7
edge_time_st = st.tuples(st.integers(0, 5), st.sampled_from([0, 0, 0, 1, -1, 3600]))   # whole windows +- 1 s


def edge_time(p):
    k, sec = p
    return dt.datetime(2024, 1, 25) + dt.timedelta(days=EDGE_DAYS * k, seconds=sec)


op_st = st.one_of(
    st.tuples(st.just("add"), edge_time_st, st.lists(st.integers(1, 5), max_size=4)),
    st.tuples(st.just("remove"), st.integers(0, 30)),
    st.tuples(st.just("change"), st.integers(0, 30), st.lists(st.integers(1, 5), max_size=4)),
    st.tuples(st.just("move"), st.integers(0, 30), edge_time_st),
    st.tuples(st.just("duplicate"), st.integers(0, 30)),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(edge_time_st, st.lists(st.integers(1, 5), max_size=4)), max_size=10),
       st.lists(op_st, min_size=1, max_size=4))
def test_delta_equals_the_full_recount_at_equal_times_and_window_edges(raw, ops):
    """Times on a grid of whole windows (N = 7 days) plus or minus one second, so orders often share an instant
    or sit exactly on a window's edge; random inserts, removals, item changes, moves and duplicates."""
    before = [(edge_time(p), items) for p, items in raw]
    after = list(before)
    for op in ops:
        if op[0] == "add":
            after.append((edge_time(op[1]), op[2]))
        elif not after:
            continue
        elif op[0] == "remove":
            after.pop(op[1] % len(after))
        elif op[0] == "change":
            k = op[1] % len(after)
            after[k] = (after[k][0], op[2])
        elif op[0] == "move":
            k = op[1] % len(after)
            after[k] = (edge_time(op[2]), after[k][1])
        else:
            after.append(after[op[1] % len(after)])
    assert sequential_delta(before, after, EDGE_DAYS) == full_delta(before, after, EDGE_DAYS)
    assert sequential_delta(after, before, EDGE_DAYS) == full_delta(after, before, EDGE_DAYS)
    assert as_dicts(*sequential_delta_arrays(before, after, EDGE_DAYS)) == full_delta(before, after, EDGE_DAYS)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(edge_time_st, st.lists(st.integers(1, 5), max_size=4)), max_size=16),
       st.randoms(use_true_random=False))
def test_deltas_of_successive_batches_sum_to_the_final_counts(raw, rnd):
    """Orders arrive in random batches (as the order job applies them): the running sum of the deltas equals the
    counts of everything received."""
    orders = [(edge_time(p), items) for p, items in raw]
    rnd.shuffle(orders)
    items_t: Counter = Counter()
    pairs_t: Counter = Counter()
    have: list = []
    while orders:
        n = rnd.randint(1, 4)
        batch, orders = orders[:n], orders[n:]
        di, dp = sequential_delta(have, have + batch, EDGE_DAYS)
        items_t.update(di)
        pairs_t.update(dp)
        have = have + batch
    fi, fp = customer_sequential_counts(have, EDGE_DAYS)
    assert +items_t == fi and +pairs_t == fp
    assert all(v >= 0 for v in items_t.values()) and all(v >= 0 for v in pairs_t.values())


def test_arrays_variant_drops_self_pairs_and_sums_across_instants():
    # A bought again 2 days later: A -> A is never a pair, so the bucket has no pairs at all
    items, arrays = sequential_delta_arrays([(t(1, 1), [A])], [(t(1, 1), [A]), (t(1, 3), [A])], 14)
    assert items == {("2024-01", A): 1} and arrays == {}
    # two earlier instants each gain C: one (A, C) entry of 2 in January, B -> C in February
    before = [(t(1, 30), [A]), (t(1, 31), [A, B]), (t(2, 1), [B])]
    items, arrays = sequential_delta_arrays(before, before + [(t(2, 2), [C])], 14)
    assert as_dicts(items, arrays) == full_delta(before, before + [(t(2, 2), [C])])
    assert [x.tolist() for x in arrays["2024-01"]] == [[A, B], [C, C], [2, 1]]
    assert [x.tolist() for x in arrays["2024-02"]] == [[B], [C], [1]]


def test_sum_pair_arrays():
    i64 = lambda *v: np.array(v, dtype=np.int64)      # noqa: E731
    a, b, n = sum_pair_arrays([(i64(3, 1, 1), i64(1, 2, 5), i64(1, 2, -1)),
                               (i64(1, 3, 9), i64(2, 1, 9), i64(-2, 4, 0))])
    assert (a.tolist(), b.tolist(), n.tolist()) == ([1, 3], [5, 1], [-1, 5])     # (1, 2) sums to 0; (9, 9) is 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(edge_time_st, st.lists(st.integers(1, 6), max_size=5)), max_size=8),
                          st.lists(st.tuples(edge_time_st, st.lists(st.integers(1, 6), max_size=5)), max_size=8)),
                max_size=6))
def test_summed_delta_arrays_of_a_batch_equal_the_sum_of_full_recounts(customers):
    """Several customers' changes expanded together (one batch) = the sum of each customer's full recount delta."""
    from shopify_app.analytics.sequential import summed_delta_arrays

    changes = [([(edge_time(p), i) for p, i in b], [(edge_time(p), i) for p, i in a]) for b, a in customers]
    items: Counter = Counter()
    pairs: Counter = Counter()
    for before, after in changes:
        di, dp = full_delta(before, after, EDGE_DAYS)
        items.update(di)
        pairs.update(dp)
    expected = ({k: v for k, v in items.items() if v}, {k: v for k, v in pairs.items() if v})
    assert as_dicts(*summed_delta_arrays(changes, EDGE_DAYS)) == expected


# ------------------------------------------------------------------ the first term in numpy (_flip_gains)
us_time_st = st.tuples(st.integers(0, 4), st.sampled_from([0, 0, 1, -1, 0.000001, -0.000001, 5000]))


def us_time(p):
    k, sec = p
    return dt.datetime(2024, 1, 25) + dt.timedelta(days=EDGE_DAYS * k, seconds=sec)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(us_time_st, st.lists(st.integers(1, 6), max_size=4)), max_size=10),
       st.lists(st.tuples(us_time_st, st.lists(st.integers(1, 6), max_size=4)), max_size=3),
       st.integers(0, 3))
def test_flip_gains_in_numpy_equal_the_bisection_reading(raw, added, removed):
    """The vectorized first term (integer microseconds, one key array per side) equals the one-candidate-at-a-time
    bisection, with orders one microsecond / one second off a window edge, at shared instants, added and removed."""
    from shopify_app.analytics import sequential as seq

    before = [(us_time(p), items) for p, items in raw]
    after = before[removed:] + [(us_time(p), items) for p, items in added]
    for b, a in ((before, after), (after, before)):
        mb, ma = seq._by_time(b), seq._by_time(a)
        changed = sorted(t for t in mb.keys() | ma.keys() if mb.get(t) != ma.get(t))
        if not changed:
            continue
        flips: dict = {}
        for tc in changed:
            for c in ma.get(tc, {}).keys() ^ mb.get(tc, {}).keys():
                flips.setdefault(c, []).append(tc)
        if not flips:
            continue
        window = dt.timedelta(days=EDGE_DAYS)
        args = (mb, ma, sorted(mb), sorted(ma), flips, changed, window)
        assert seq._flip_gains(*args) == seq._flip_gains_py(*args)
    assert as_dicts(*sequential_delta_arrays(before, after, EDGE_DAYS)) == full_delta(before, after, EDGE_DAYS)


def test_flip_gains_fall_back_to_bisection_when_keys_would_overflow(monkeypatch):
    """Keys = item rank x time span must fit in int64; past the limit the bisection path gives the same counts."""
    from shopify_app.analytics import sequential as seq

    before = [(t(1, 1), [A, B]), (t(1, 5), [B]), (t(1, 9), [C])]
    after = before + [(t(1, 10), [A, D]), (t(1, 3), [E])]
    fast = sequential_delta(before, after, 14)
    calls, bisection = [], seq._flip_gains_py
    monkeypatch.setattr(seq, "_KEY_LIMIT", 1)
    monkeypatch.setattr(seq, "_flip_gains_py", lambda *a: calls.append(1) or bisection(*a))
    assert sequential_delta(before, after, 14) == fast == full_delta(before, after, 14)
    assert calls                       # the fallback ran


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(edge_time_st, st.lists(st.integers(1, 6), max_size=5)), max_size=8),
                          st.lists(st.tuples(edge_time_st, st.lists(st.integers(1, 6), max_size=5)), max_size=8)),
                max_size=6))
def test_summed_pair_arrays_carry_their_blob_index(customers):
    """Each bucket's arrays carry (ids, i, j) with ids = the sorted distinct items of a and b, a = ids[i],
    b = ids[j]: the pair blob encoded from it is byte for byte the one encoded by sorting and searching."""
    from shopify_app.analytics.sequential import summed_delta_arrays
    from workers.sequential_jobs import encode_directed_pairs

    changes = [([(edge_time(p), i) for p, i in b], [(edge_time(p), i) for p, i in a]) for b, a in customers]
    for arrays in summed_delta_arrays(changes, EDGE_DAYS)[1].values():
        a, b, n = arrays
        ids, i, j = arrays.pair_index
        assert ids.tolist() == sorted(set(a.tolist()) | set(b.tolist()))
        assert ids[i].tolist() == a.tolist() and ids[j].tolist() == b.tolist()
        assert encode_directed_pairs(a, b, n, index=arrays.pair_index) == encode_directed_pairs(a, b, n)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(us_time_st, st.lists(st.integers(1, 6), max_size=4)), max_size=8),
                          st.lists(st.tuples(us_time_st, st.lists(st.integers(1, 6), max_size=4)), max_size=8)),
                max_size=6))
def test_summed_deltas_of_customers_at_microsecond_edges_equal_their_full_recounts(customers):
    """The batch's first terms found together (_flip_gains_batch: one key space for all customers) = each
    customer's full recount, at shared instants and one microsecond / second off window edges."""
    from shopify_app.analytics.sequential import summed_delta_arrays

    changes = [([(us_time(p), i) for p, i in b], [(us_time(p), i) for p, i in a]) for b, a in customers]
    items: Counter = Counter()
    pairs: Counter = Counter()
    for before, after in changes:
        di, dp = full_delta(before, after, EDGE_DAYS)
        items.update(di)
        pairs.update(dp)
    expected = ({k: v for k, v in items.items() if v}, {k: v for k, v in pairs.items() if v})
    assert as_dicts(*summed_delta_arrays(changes, EDGE_DAYS)) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(us_time_st, st.lists(st.integers(1, 6), max_size=4)), max_size=12),
       st.lists(st.integers(0, 11), max_size=4), st.lists(st.tuples(us_time_st, st.lists(st.integers(1, 6),
                                                                                       max_size=4)), max_size=3),
       st.booleans())
def test_after_merged_from_before_and_the_orders_that_differ_equals_merging_after(raw, drop, added, copies):
    """_after_by_time: shared order objects (the order job's lists), dropped ones, added ones, duplicates, or
    every order a distinct copy (lists read separately): always _by_time(after), and every instant where it
    differs from _by_time(before) is reported."""
    from shopify_app.analytics import sequential as seq

    before = [(us_time(p), items) for p, items in raw]
    after = [o for k, o in enumerate(before) if k not in drop] + [(us_time(p), i) for p, i in added]
    after += before[:1]                                   # a duplicate of a shared object
    if copies:
        after = [(t, list(items)) for t, items in after]
    mb = seq._by_time(before)
    ma, touched = seq._after_by_time(mb, before, after)
    assert ma == seq._by_time(after)
    assert {t for t in mb.keys() | ma.keys() if mb.get(t) != ma.get(t)} <= set(touched)
    assert mb == seq._by_time(before)                    # copy on write: before's merge is left as it was
