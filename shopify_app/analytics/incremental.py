"""Incremental analytics: what one order version contributes, and the delta between two versions (pure).

`contribution(order)` is exactly what a version adds to the aggregates (stored on the Order row as JSON).
Applying a new version = applying `diff(stored contribution, new contribution)`; a replay is a zero delta and the
appliers skip versions not newer than the stored one (last writer wins by updated_at; a tombstone wins over every
version and is never replaced). Cost: O(k^2) in the basket size k, independent of the shop's history.

Definitions (the same in `clean_pass`, the from-scratch reference):
- counted orders only (not cancelled / test / deleted); a non-counted version contributes zeros;
- revenue = subtotal (after discounts, before refunds); refunded = refunds' line subtotals;
  pre_discount = subtotal + total_discounts; discounted = 1 if total_discounts > 0; refunded_order = 1 if
  refunded > 0; items_count = sum over lines of (quantity - refunded_quantity), clipped at 0;
- basket items = sorted distinct product ids with (quantity - refunded_quantity) > 0 (custom lines, product
  None, are left out); a counted order with >= 1 item is one basket of its month bucket ('YYYY-MM' of
  processed_at, UTC); pairs = all (a < b) of the basket;
- guest orders (customer_id None) count for items/pairs/baskets, not for customers.

First/last order time and the order count of a customer are not additive (removing the first order needs the
next one): the choice here is to keep them as *facts*, per customer {order_id: time} of counted orders, in the
in-memory `State` (a delta carries "set"/"remove" operations, which are idempotent), while the database job
recomputes them from the customer's counted Order rows (O(customer's orders)).
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from shopify_app.analytics.orders import OrderVersion

# Additive per-customer fields (contribution key -> CustomerStats column).
MONEY_FIELDS = {"revenue": "gross_revenue", "refunded": "refunded", "net": "net_revenue",
                "discount": "discount_total", "pre_discount": "pre_discount_total"}
COUNT_FIELDS = {"discounted": "discounted_orders", "refunded_order": "refunded_orders", "items_count": "items_count"}


def bucket_of(t: dt.datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


def _r(x: float) -> float:
    return round(float(x), 2)


def contribution(order: OrderVersion) -> dict:
    """JSON-serializable: exactly what this version adds."""
    base = {"counted": False, "customer_id": order.customer_id, "bucket": bucket_of(order.processed_at),
            "time": order.processed_at.isoformat(), "revenue": 0.0, "refunded": 0.0, "net": 0.0, "discount": 0.0,
            "pre_discount": 0.0, "discounted": 0, "refunded_order": 0, "items_count": 0, "items": [],
            "product_types": {}}
    if not order.counted:
        return base
    items: set[int] = set()
    types: dict[str, int] = defaultdict(int)
    n_items = 0
    for line in order.lines:
        q = int(line.quantity) - int(line.refunded_quantity)
        if q <= 0:
            continue
        n_items += q
        if line.product_id is not None:
            items.add(int(line.product_id))
        if line.product_type:
            types[line.product_type] += q
    base.update(
        counted=True, revenue=_r(order.subtotal), refunded=_r(order.refunded), net=_r(order.subtotal - order.refunded),
        discount=_r(order.total_discounts), pre_discount=_r(order.subtotal + order.total_discounts),
        discounted=int(order.total_discounts > 0), refunded_order=int(order.refunded > 0), items_count=n_items,
        items=sorted(items), product_types=dict(sorted(types.items())),
    )
    return base




@dataclass
class Delta:
    customers: dict = field(default_factory=dict)      # customer_id -> {field: signed delta, product_types: {}}
    times: list = field(default_factory=list)          # (customer_id, order_id?, time iso | None) set/remove facts
    touched: set = field(default_factory=set)          # customers whose contribution changed
    items: dict = field(default_factory=dict)          # (bucket, item) -> signed count
    pairs: dict = field(default_factory=dict)          # (bucket, a, b) -> signed count, a < b
    baskets: dict = field(default_factory=dict)        # bucket -> signed count
    # diff(..., expand_pairs=False): the basket changes instead of `pairs`, [(bucket, sign, items)], items sorted;
    # analytics.counts.basket_change_pairs turns a batch of them into pair arrays (no Python work per pair).
    basket_changes: list = field(default_factory=list)

    def is_zero(self) -> bool:
        return not (self.customers or self.items or self.pairs or self.baskets or self.touched
                    or self.basket_changes)


def _add(d: dict, key, v) -> None:
    nv = d.get(key, 0) + v
    if nv:
        d[key] = nv
    else:
        d.pop(key, None)


def _sign_customer(delta: Delta, c: dict, sign: int) -> None:
    cid = c.get("customer_id")
    if cid is None or not c.get("counted"):
        return
    acc = delta.customers.setdefault(cid, {})
    _add(acc, "orders_count", sign)
    for k, col in MONEY_FIELDS.items():
        acc[col] = _r(acc.get(col, 0.0) + sign * c[k])
    for k, col in COUNT_FIELDS.items():
        acc[col] = acc.get(col, 0) + sign * int(c[k])
    pt = acc.setdefault("product_type_counts", {})
    for t, q in c["product_types"].items():
        _add(pt, t, sign * int(q))


def _basket(c: dict | None):
    """(bucket, items) of a contribution's basket, None when it is no basket."""
    if c is None or not c.get("counted") or not c["items"]:
        return None
    return c["bucket"], tuple(c["items"])


def _sign_counts(delta: Delta, c: dict, sign: int, expand_pairs: bool = True) -> None:
    if not c.get("counted") or not c["items"]:
        return
    b = c["bucket"]
    _add(delta.baskets, b, sign)
    for i in c["items"]:
        _add(delta.items, (b, i), sign)
    if not expand_pairs:
        if len(c["items"]) >= 2:
            delta.basket_changes.append((b, sign, tuple(c["items"])))
        return
    for a, bb in combinations(c["items"], 2):   # items are sorted: a < bb
        _add(delta.pairs, (b, a, bb), sign)


def diff(old: dict | None, new: dict, expand_pairs: bool = True) -> Delta:
    """new - old (old None: nothing applied yet). A replay (old == new) gives a zero delta.

    expand_pairs=False: pair deltas are left as `basket_changes` (see Delta) instead of `pairs`; a version that
    keeps its basket (same bucket and items, e.g. paid or a changed price) records none."""
    delta = Delta()
    if old == new:
        return delta
    same_basket = not expand_pairs and _basket(old) == _basket(new)
    if old is not None:
        _sign_customer(delta, old, -1)
        if not same_basket:
            _sign_counts(delta, old, -1, expand_pairs)
    _sign_customer(delta, new, +1)
    if not same_basket:
        _sign_counts(delta, new, +1, expand_pairs)
    # Drop all-zero customer entries (e.g. only the bucket moved), keep them as touched.
    for cid in list(delta.customers):
        acc = delta.customers[cid]
        acc = {k: v for k, v in acc.items() if v}
        if acc:
            delta.customers[cid] = acc
        else:
            del delta.customers[cid]
    for c in (old, new):
        if c is not None and c.get("customer_id") is not None:
            delta.touched.add(c["customer_id"])
    return delta


# --------------------------------------------------------------------------------------------- in-memory state
def _newer(new: OrderVersion, stored: OrderVersion | None) -> bool:
    """Last writer wins by updated_at; a tombstone replaces any version and is never replaced."""
    if stored is None:
        return True
    if stored.deleted:
        return False
    if new.deleted:
        return True
    return new.updated_at > stored.updated_at


@dataclass
class State:
    """In-memory aggregates maintained by deltas (the reference for the database job's logic)."""
    orders: dict = field(default_factory=dict)          # order id -> latest OrderVersion applied
    contributions: dict = field(default_factory=dict)   # order id -> contribution
    customers: dict = field(default_factory=dict)       # customer id -> {field: value}
    order_times: dict = field(default_factory=dict)     # customer id -> {order id: time iso}
    items: dict = field(default_factory=dict)
    pairs: dict = field(default_factory=dict)
    baskets: dict = field(default_factory=dict)

    def apply(self, v: OrderVersion) -> bool:
        stored = self.orders.get(v.id)
        if not _newer(v, stored):
            return False
        old = self.contributions.get(v.id)
        new = contribution(v)
        self.apply_delta(diff(old, new))
        # Order-time facts (set/remove), idempotent.
        if old is not None and old["counted"] and old["customer_id"] is not None:
            self.order_times.get(old["customer_id"], {}).pop(v.id, None)
        if new["counted"] and new["customer_id"] is not None:
            self.order_times.setdefault(new["customer_id"], {})[v.id] = new["time"]
        self.orders[v.id], self.contributions[v.id] = v, new
        return True

    def apply_delta(self, d: Delta) -> None:
        for cid, acc in d.customers.items():
            row = self.customers.setdefault(cid, {})
            for k, v in acc.items():
                if k == "product_type_counts":
                    pt = row.setdefault(k, {})
                    for t, q in v.items():
                        _add(pt, t, q)
                elif isinstance(v, float):
                    row[k] = _r(row.get(k, 0.0) + v)
                else:
                    row[k] = row.get(k, 0) + v
        for src, dst in ((d.items, self.items), (d.pairs, self.pairs), (d.baskets, self.baskets)):
            for k, v in src.items():
                _add(dst, k, v)

    def snapshot(self) -> dict:
        """Normalized comparable view: customers with >= 1 counted order, non-zero counts, first/last times."""
        customers = {}
        for cid, row in self.customers.items():
            if not row.get("orders_count"):
                continue
            out = {k: v for k, v in row.items() if v and k != "product_type_counts"}
            out["product_type_counts"] = {t: q for t, q in sorted(row.get("product_type_counts", {}).items()) if q}
            times = sorted(self.order_times.get(cid, {}).values())
            out["first_order_at"], out["last_order_at"] = (times[0], times[-1]) if times else (None, None)
            out["orders_count"] = len(times)
            customers[cid] = out
        return {"customers": customers, "items": {k: v for k, v in self.items.items() if v},
                "pairs": {k: v for k, v in self.pairs.items() if v},
                "baskets": {k: v for k, v in self.baskets.items() if v}}


def latest_versions(versions) -> dict[int, OrderVersion]:
    """The winning version per order id (tombstone first, else the greatest updated_at)."""
    out: dict[int, OrderVersion] = {}
    for v in versions:
        if _newer(v, out.get(v.id)):
            out[v.id] = v
    return out


def clean_pass(orders) -> dict:
    """From scratch, without deltas: the snapshot (as `State.snapshot`) of the latest versions of `orders`."""
    customers: dict = {}
    times: dict = defaultdict(list)
    items: dict = defaultdict(int)
    pairs: dict = defaultdict(int)
    baskets: dict = defaultdict(int)
    for o in latest_versions(orders).values():
        if not o.counted:
            continue
        live = [(ln, ln.quantity - ln.refunded_quantity) for ln in o.lines]
        live = [(ln, q) for ln, q in live if q > 0]
        basket = sorted({int(ln.product_id) for ln, _ in live if ln.product_id is not None})
        b = bucket_of(o.processed_at)
        if basket:
            baskets[b] += 1
            for i in basket:
                items[(b, i)] += 1
            for x, y in combinations(basket, 2):
                pairs[(b, x, y)] += 1
        if o.customer_id is None:
            continue
        c = customers.setdefault(o.customer_id, {"product_type_counts": {}})
        times[o.customer_id].append(o.processed_at.isoformat())
        vals = {"gross_revenue": _r(o.subtotal), "refunded": _r(o.refunded), "net_revenue": _r(o.subtotal - o.refunded),
                "discount_total": _r(o.total_discounts), "pre_discount_total": _r(o.subtotal + o.total_discounts)}
        for k, v in vals.items():
            c[k] = _r(c.get(k, 0.0) + v)
        c["discounted_orders"] = c.get("discounted_orders", 0) + int(o.total_discounts > 0)
        c["refunded_orders"] = c.get("refunded_orders", 0) + int(o.refunded > 0)
        c["items_count"] = c.get("items_count", 0) + sum(q for _, q in live)
        for ln, q in live:
            if ln.product_type:
                c["product_type_counts"][ln.product_type] = c["product_type_counts"].get(ln.product_type, 0) + q
    out = {}
    for cid, c in customers.items():
        row = {k: v for k, v in c.items() if v and k != "product_type_counts"}
        row["product_type_counts"] = dict(sorted(c["product_type_counts"].items()))
        ts = sorted(times[cid])
        row["first_order_at"], row["last_order_at"], row["orders_count"] = ts[0], ts[-1], len(ts)
        out[cid] = row
    return {"customers": out, "items": {k: v for k, v in items.items() if v},
            "pairs": {k: v for k, v in pairs.items() if v}, "baskets": {k: v for k, v in baskets.items() if v}}
