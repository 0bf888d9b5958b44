"""Pure incremental analytics: hand-computed deltas per event kind, and a property test vs a clean pass."""
from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings, strategies as st

from shopify_app.analytics.incremental import State, clean_pass, contribution, diff
from shopify_app.analytics.orders import OrderLine, OrderVersion

T0 = dt.datetime(2024, 3, 31, 23, 0)
T1 = dt.datetime(2024, 4, 2, 10, 0)


def order(oid=1, cust=7, lines=((10, 1, 0), (11, 2, 0), (None, 1, 0)), upd=0, **kw):
    ls = tuple(OrderLine(id=100 + i, product_id=p, quantity=q, refunded_quantity=r, price=10.0,
                         product_type="Hats" if p == 10 else None) for i, (p, q, r) in enumerate(lines))
    kw.setdefault("subtotal", 40.0)
    return OrderVersion(id=oid, processed_at=kw.pop("processed_at", T0), updated_at=T0 + dt.timedelta(hours=upd),
                        customer_id=cust, lines=ls, **kw)


def test_create():
    c = contribution(order(total_discounts=5.0))
    assert c["counted"] and c["bucket"] == "2024-03" and c["items"] == [10, 11]
    assert (c["revenue"], c["discount"], c["pre_discount"], c["discounted"], c["items_count"]) == (40.0, 5.0, 45.0, 1, 4)
    assert c["product_types"] == {"Hats": 1}
    d = diff(None, c)
    assert d.customers == {7: {"orders_count": 1, "gross_revenue": 40.0, "net_revenue": 40.0, "discount_total": 5.0,
                               "pre_discount_total": 45.0, "discounted_orders": 1, "items_count": 4,
                               "product_type_counts": {"Hats": 1}}}
    assert d.items == {("2024-03", 10): 1, ("2024-03", 11): 1}
    assert d.pairs == {("2024-03", 10, 11): 1} and d.baskets == {"2024-03": 1}


def test_update_paid_replay_is_zero():
    c = contribution(order())
    assert diff(c, c).is_zero()
    paid = contribution(order(upd=1, financial_status="paid"))
    assert diff(c, paid).is_zero()          # paid changes nothing the analytics count


def test_update_changes_basket_and_bucket():
    old = contribution(order())
    new = contribution(order(upd=1, lines=((11, 1, 0), (12, 1, 0)), processed_at=T1, subtotal=20.0))
    d = diff(old, new)
    assert d.items == {("2024-03", 10): -1, ("2024-03", 11): -1, ("2024-04", 11): 1, ("2024-04", 12): 1}
    assert d.pairs == {("2024-03", 10, 11): -1, ("2024-04", 11, 12): 1}
    assert d.baskets == {"2024-03": -1, "2024-04": 1}
    assert d.customers[7]["gross_revenue"] == -20.0 and "orders_count" not in d.customers[7]
    assert d.customers[7]["product_type_counts"] == {"Hats": -1}


def test_cancel_test_delete_remove_everything():
    c = contribution(order())
    for v in (order(upd=1, cancelled=True), order(upd=1, test=True), order(upd=1, deleted=True)):
        z = contribution(v)
        assert not z["counted"] and z["items"] == [] and z["revenue"] == 0
        d = diff(c, z)
        assert d.customers[7]["orders_count"] == -1 and d.baskets == {"2024-03": -1}
        assert d.pairs == {("2024-03", 10, 11): -1}


def test_refund_removes_fully_refunded_items():
    old = contribution(order())
    new = contribution(order(upd=1, lines=((10, 1, 1), (11, 2, 1), (None, 1, 0)), refunded=10.0))
    d = diff(old, new)
    assert new["items"] == [11] and new["refunded_order"] == 1 and new["net"] == 30.0
    assert d.items == {("2024-03", 10): -1} and d.pairs == {("2024-03", 10, 11): -1} and d.baskets == {}
    assert d.customers[7] == {"refunded": 10.0, "net_revenue": -10.0, "refunded_orders": 1, "items_count": -2,
                              "product_type_counts": {"Hats": -1}}


def test_guest_counts_items_not_customers():
    d = diff(None, contribution(order(cust=None)))
    assert d.customers == {} and d.touched == set() and d.baskets == {"2024-03": 1}


def test_custom_lines_only_is_no_basket():
    c = contribution(order(lines=((None, 3, 0),)))
    d = diff(None, c)
    assert c["items"] == [] and d.baskets == {} and d.customers[7]["items_count"] == 3


def test_customer_change_moves_stats():
    d = diff(contribution(order(cust=7)), contribution(order(cust=8, upd=1)))
    assert d.customers[7]["orders_count"] == -1 and d.customers[8]["orders_count"] == 1
    assert d.items == {} and d.touched == {7, 8}


# --------------------------------------------------------------------------------------------- property
PRODUCTS = st.sampled_from([1, 2, 3, 4, 5, None])
LINE = st.tuples(PRODUCTS, st.integers(1, 3), st.integers(0, 3))


@st.composite
def shop_versions(draw):
    versions = []
    n_orders = draw(st.integers(1, 6))
    for oid in range(1, n_orders + 1):
        cust = draw(st.sampled_from([None, 101, 102, 103]))
        n_versions = draw(st.integers(1, 4))
        hours = draw(st.lists(st.integers(0, 500), min_size=n_versions, max_size=n_versions, unique=True))
        for h in hours:
            raw = draw(st.lists(LINE, min_size=0, max_size=4))
            lines = tuple(OrderLine(id=oid * 10 + i, product_id=p, quantity=q, refunded_quantity=min(r, q),
                                    product_type=draw(st.sampled_from([None, "A", "B"])), price=5.0)
                          for i, (p, q, r) in enumerate(raw))
            versions.append(OrderVersion(
                id=oid, processed_at=dt.datetime(2024, 1, 1) + dt.timedelta(days=draw(st.integers(0, 70))),
                updated_at=dt.datetime(2024, 3, 1) + dt.timedelta(hours=h),
                customer_id=draw(st.sampled_from([cust, cust, None, 104])), cancelled=draw(st.booleans()) and h % 3 == 0,
                test=draw(st.booleans()) and h % 5 == 0, subtotal=float(draw(st.integers(0, 9999))) / 100,
                total_discounts=float(draw(st.integers(0, 3))), refunded=float(draw(st.integers(0, 500))) / 100,
                lines=lines))
        if draw(st.booleans()) and oid == 1:
            versions.append(OrderVersion(id=oid, processed_at=dt.datetime(2024, 5, 1),
                                         updated_at=dt.datetime(2024, 1, 1), deleted=True))  # wins regardless
    dups = draw(st.lists(st.sampled_from(versions), max_size=5))
    return draw(st.permutations(versions + dups))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shop_versions())
def test_any_order_with_duplicates_equals_clean_pass(versions):
    state = State()
    for v in versions:
        state.apply(v)
    assert state.snapshot() == clean_pass(versions)
    # Replaying everything again changes nothing.
    for v in reversed(versions):
        assert not state.apply(v)
    assert state.snapshot() == clean_pass(versions)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shop_versions())
def test_basket_changes_expand_to_the_same_pairs(versions):
    """The order job's path (diff without pair expansion + counts.basket_change_pairs over the whole batch) gives
    the pairs of the default diff, and the same items / baskets / customers."""
    from shopify_app.analytics.counts import basket_change_pairs

    stored: dict = {}
    pairs: dict = {}
    changes: list = []
    for v in versions:
        old, new = stored.get(v.id), contribution(v)
        full, lean = diff(old, new), diff(old, new, expand_pairs=False)
        assert (lean.customers, lean.items, lean.baskets, lean.touched, lean.pairs) == \
            (full.customers, full.items, full.baskets, full.touched, {})
        for k, n in full.pairs.items():
            pairs[k] = pairs.get(k, 0) + n
        changes += lean.basket_changes
        stored[v.id] = new
    got = {(bucket, a, b): n for bucket, (xs, ys, ns) in basket_change_pairs(changes).items()
           for a, b, n in zip(xs.tolist(), ys.tolist(), ns.tolist())}
    assert got == {k: n for k, n in pairs.items() if n}
