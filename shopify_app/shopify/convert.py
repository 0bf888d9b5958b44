"""Shopify REST webhook payloads -> `OrderVersion` (the analytics' view of one order version).

Rules:
- money is shop money: ``<field>_set.shop_money.amount`` when present, else the plain ``<field>``;
- times are converted to naive UTC; the order time is ``processed_at`` (fallback ``created_at``), the version is
  ``updated_at`` (last writer wins);
- ``cancelled_at`` set -> cancelled; ``test`` -> test order; ``customer`` missing/null -> guest (None);
- a line's discount is ``total_discount_set`` shop money, or the sum of its ``discount_allocations`` when
  total_discount is 0; refunded quantity per line is the sum of ``refunds[].refund_line_items[].quantity`` for
  that ``line_item_id``; the order's ``refunded`` is the sum of the refund line items' ``subtotal_set`` shop money
  (shipping refunds and order adjustments are not product revenue and are left out);
- REST line items carry no product type: ``product_type`` is None (filled from Products elsewhere, if ever).

orders/delete sends only ``{"id": ...}``: `order_deleted` builds a *tombstone*. Rule: a tombstone wins over every
version of the order, whatever their updated_at (its updated_at is the processing time, after any version in
practice, and the appliers never replace a stored tombstone by a later-arriving version).

refunds/create delivers a Refund, not an Order. Shopify also sends orders/updated after a refund, carrying the
order's ``refunds`` array, so refunds/create deliveries are applied by doing nothing: the job marks them
processed without changes. The same holds for orders/edited, whose body is an OrderEdit summary
(``{"order_edit": {...}}``) followed by orders/updated: see NOOP_TOPICS.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

from shopify_app.analytics.orders import OrderLine, OrderVersion

try:                                     # optional: ~3x faster parsing of webhook bodies (the order job's hot path)
    import orjson as _orjson
except ImportError:                      # pragma: no cover - the stdlib parser gives the same payloads
    _orjson = None

REFUND_TOPICS = frozenset({"refunds/create"})
# Deliveries whose payload is not an order and whose effect arrives through the orders/updated that Shopify
# sends after them: refunds/create (a Refund) and orders/edited (an OrderEdit summary). Processed as no-ops.
NOOP_TOPICS = REFUND_TOPICS | {"orders/edited"}


def parse_body(body: str | bytes):
    """A webhook body's JSON. orjson when installed (what it refuses falls back to json.loads), else json.loads.
    The two differ only on integer literals outside 64 bits (orjson: a float, json.loads: an int); the converter
    takes every id and quantity through _int, which refuses those either way, so the version (or the error) never
    depends on which parser ran (tests/pipeline/test_convert.py)."""
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(body)


def is_order_topic(topic: str) -> bool:
    return topic.startswith("orders/")


def _num(value) -> float:
    if value is None or value == "":
        return 0.0
    return float(value)


def money(obj: dict | None, key: str) -> float:
    """Shop money of `key`: obj[key + '_set'].shop_money.amount if present, else obj[key]."""
    if not isinstance(obj, dict):
        return 0.0
    return _shop_amount(obj, f"{key}_set", key)


def parse_time(value) -> dt.datetime | None:
    """ISO 8601 (with offset or Z) -> naive UTC. Naive input is taken as UTC."""
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        t = value
    else:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


_INT_RANGE = (-2 ** 63, 2 ** 63)        # BIGINT columns; also where orjson's integers end (see parse_body)


def _int(value) -> int:
    """An id / quantity as an int; outside 64 bits it is an invalid payload (ValueError), whichever JSON parser
    read it, instead of an overflow when the row is written."""
    try:
        n = int(value)
    except OverflowError as exc:         # inf (1e400 parses to it)
        raise ValueError(f"integer out of range: {value!r}") from exc
    if not _INT_RANGE[0] <= n < _INT_RANGE[1]:
        raise ValueError(f"integer out of range: {value!r}")
    return n


def _int_or_none(value) -> int | None:
    if value is None or value == "":
        return None
    return _int(value)


def _shop_amount(obj: dict, key_set: str, key: str) -> float:
    """money(obj, key) for a dict `obj`, with the '_set' key given (precomputed on the hot path: three per line
    item)."""
    s = obj.get(key_set)
    if isinstance(s, dict):
        sm = s.get("shop_money")
        if isinstance(sm, dict):
            amount = sm.get("amount")
            if amount is not None:
                return _num(amount)
    return _num(obj.get(key))


def _line(li: dict, refunded_qty: dict) -> OrderLine:
    """One REST line item. Same rules (and results) as `money` / `_int`; positional construction of the frozen
    OrderLine (keywords cost ~0.7 us more per line, a live order has ~25 lines)."""
    lid = _int(li["id"])                 # first: a line item that is no object fails here (TypeError), as before
    get = li.get
    discount = _shop_amount(li, "total_discount_set", "total_discount")
    if discount == 0:
        allocations = get("discount_allocations")      # usually empty: no generator for nothing
        discount = float(sum(money(a, "amount") for a in allocations)) if allocations else 0.0
    return OrderLine(lid, _int_or_none(get("product_id")), _int_or_none(get("variant_id")),
                     get("product_type") or None, _int(get("quantity") or 0), refunded_qty.get(lid, 0),
                     round(_shop_amount(li, "price_set", "price"), 2), round(discount, 2))


def order_from_rest(payload: dict) -> OrderVersion:
    if not isinstance(payload, dict) or payload.get("id") is None:
        raise ValueError("order payload without id")
    refunded_qty: dict[int, int] = {}
    refunded = 0.0
    for refund in payload.get("refunds") or []:
        for rli in (refund or {}).get("refund_line_items") or []:
            lid = _int_or_none(rli.get("line_item_id"))
            if lid is not None:
                refunded_qty[lid] = refunded_qty.get(lid, 0) + _int(rli.get("quantity") or 0)
            refunded += money(rli, "subtotal")
    lines = [_line(li, refunded_qty) for li in payload.get("line_items") or []]
    processed = parse_time(payload.get("processed_at")) or parse_time(payload.get("created_at"))
    updated = parse_time(payload.get("updated_at")) or processed
    if processed is None:
        raise ValueError("order payload without processed_at/created_at")
    customer = payload.get("customer")
    cid = _int_or_none(customer.get("id")) if isinstance(customer, dict) else None
    return OrderVersion(
        id=_int(payload["id"]), processed_at=processed, updated_at=updated, customer_id=cid,
        name=payload.get("name"), cancelled=bool(payload.get("cancelled_at")), test=bool(payload.get("test")),
        currency=(payload.get("currency") or "USD")[:3], subtotal=round(money(payload, "subtotal_price"), 2),
        total_discounts=round(money(payload, "total_discounts"), 2), refunded=round(refunded, 2),
        financial_status=payload.get("financial_status"), lines=tuple(lines),
    )


def with_product_types(v: OrderVersion, types: dict) -> OrderVersion:
    """`v` with the product type types[product_id] on each line that has none (REST line items carry no product
    type: the order job takes them from the shop's Product rows). The same version as
    ``replace(v, lines=tuple(replace(ln, product_type=...)))``, with the lines built positionally (dataclasses.replace
    costs ~3x a positional construction, ~25 lines per live order); `v` itself when no line changes."""
    lines = v.lines
    if not types or not any(not ln.product_type and ln.product_id in types for ln in lines):
        return v
    return replace(v, lines=tuple(
        OrderLine(ln.id, ln.product_id, ln.variant_id, types[ln.product_id], ln.quantity, ln.refunded_quantity,
                  ln.price, ln.discount) if not ln.product_type and ln.product_id in types else ln
        for ln in lines))


def order_deleted(payload: dict, now: dt.datetime) -> OrderVersion:
    """Tombstone for orders/delete. Its updated_at is `now` (processing time); it wins over every version."""
    if not isinstance(payload, dict) or payload.get("id") is None:
        raise ValueError("orders/delete payload without id")
    now = parse_time(now)
    return OrderVersion(id=_int(payload["id"]), processed_at=now, updated_at=now, deleted=True)
