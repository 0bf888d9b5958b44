"""Bulk-query JSONL (documents/bulk_orders_query.graphql) -> `OrderVersion`, mirroring convert.order_from_rest.

The JSONL has one line per order followed by one line per line item (``__parentId`` = the order's gid), as Shopify
writes it when the query runs with ``groupObjects: true`` (the import asks for it; the default since API 2026-01 is
ungrouped). This reader assembles one order at a time (streaming, O(1) memory); a line item whose ``__parentId`` is
not the order being assembled means the file is not grouped, and raises `UngroupedBulkOutput` rather than silently
losing lines.

Rules (same as the REST conversion):
- money is shop money (``<field>Set.shopMoney.amount``); ids are ``legacyResourceId`` (or the gid's tail) as int;
- times are naive UTC; the order time is ``processedAt`` (fallback ``createdAt``), the version is ``updatedAt``;
- ``cancelledAt`` set -> cancelled; ``test`` -> test; ``customer`` null -> guest;
- a line with ``product`` null is a custom line (product_id None); product_type is the product's productType;
- refunded quantity per line = quantity - currentQuantity (when currentQuantity is present, clipped at 0), and 0
  on every line when the order's ``totalRefundedSet`` is 0 (a cancellation or an edit without refund also lowers
  currentQuantity; REST shows no refund line items then);
- the order's ``refunded`` is the product part of the refunds: sum over lines of refunded_qty x (unit price -
  unit discount), capped by ``totalRefundedSet`` (REST leaves shipping refunds and adjustments out; GraphQL's
  currentQuantity also drops with edits/cancellation that refunded nothing, hence the cap).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Iterator

from shopify_app.analytics.orders import OrderLine, OrderVersion

from .convert import parse_time


def _gid_int(value) -> int | None:
    if value is None or value == "":
        return None
    text = value if type(value) is str else str(value)
    tail = text[text.rfind("/") + 1:]                     # the gid's tail ("gid://shopify/Order/12" -> "12")
    if "?" in tail:
        tail = tail.split("?", 1)[0]
    return int(tail)


def _legacy_id(obj: dict | None) -> int | None:
    if not isinstance(obj, dict):
        return None
    if obj.get("legacyResourceId") not in (None, ""):
        return int(obj["legacyResourceId"])
    return _gid_int(obj.get("id"))


def _shop_money(obj: dict | None, key: str) -> float:
    s = (obj or {}).get(key)
    if isinstance(s, dict):
        m = s.get("shopMoney")
        if isinstance(m, dict):
            amount = m.get("amount")
            if amount is not None and amount != "":
                return float(amount)
    return 0.0


def _is_order(obj: dict) -> bool:
    return "__parentId" not in obj and str(obj.get("id", "")).startswith("gid://shopify/Order/")


class _LineReader:
    """line_from_node with memos for what repeats across a million lines: product / variant gids (a catalogue's
    worth) and unit prices / discounts (amount text -> rounded float). Same results as without them."""

    MAX_MEMO = 100_000           # bound the memos (a catalogue is a few thousand products; prices repeat)

    def __init__(self):
        self.ids: dict = {}
        self.amounts: dict = {}

    def gid(self, value) -> int | None:
        n = self.ids.get(value) if type(value) is str else None
        if n is None:
            n = _gid_int(value)
            if type(value) is str and len(self.ids) < self.MAX_MEMO:
                self.ids[value] = n
        return n

    def money(self, node: dict, key: str) -> float:
        s = node.get(key)
        if isinstance(s, dict):
            m = s.get("shopMoney")
            if isinstance(m, dict):
                amount = m.get("amount")
                if amount is not None and amount != "":
                    r = self.amounts.get(amount) if type(amount) is str else None
                    if r is None:
                        r = round(float(amount), 2)
                        if type(amount) is str and len(self.amounts) < self.MAX_MEMO:
                            self.amounts[amount] = r
                    return r
        return 0.0                                   # round(0.0, 2)

    def __call__(self, node: dict) -> OrderLine:
        ids, amounts = self.ids, self.amounts
        quantity = int(node.get("quantity") or 0)
        current = node.get("currentQuantity")
        refunded_qty = max(0, quantity - int(current)) if current is not None else 0
        product = node.get("product")
        variant = node.get("variant")
        if isinstance(product, dict):
            ref = product.get("id")
            product_id = ids.get(ref) if type(ref) is str else None      # memo hit inline, else self.gid
            if product_id is None:
                product_id = self.gid(ref)
            product_type = product.get("productType") or None
        else:
            product_id = product_type = None
        if isinstance(variant, dict):
            ref = variant.get("id")
            variant_id = ids.get(ref) if type(ref) is str else None
            if variant_id is None:
                variant_id = self.gid(ref)
        else:
            variant_id = None
        price = discount = None
        try:                     # the common shape, memo hits inline; anything else goes through self.money
            price = amounts.get(node["originalUnitPriceSet"]["shopMoney"]["amount"])
            discount = amounts.get(node["totalDiscountSet"]["shopMoney"]["amount"])
        except (KeyError, TypeError):
            pass
        if price is None:
            price = self.money(node, "originalUnitPriceSet")
        if discount is None:
            discount = self.money(node, "totalDiscountSet")
        return OrderLine(_gid_int(node["id"]), product_id, variant_id, product_type, quantity,
                         min(refunded_qty, quantity), price, discount)


def line_from_node(node: dict, reader: _LineReader | None = None) -> OrderLine:
    return (reader or _LineReader())(node)


def order_from_node(node: dict, line_nodes: Iterable[dict] = (), reader: _LineReader | None = None) -> OrderVersion:
    if not isinstance(node, dict) or node.get("id") is None:
        raise ValueError("order node without id")
    read = reader or _LineReader()
    lines = tuple(map(read, line_nodes))
    total_refunded = _shop_money(node, "totalRefundedSet")
    if total_refunded <= 0 and any(ln.refunded_quantity for ln in lines):
        # Nothing was refunded: the quantities went with an edit or a cancellation (REST shows no refund lines).
        lines = tuple(replace(ln, refunded_quantity=0) for ln in lines)
    refunded = 0.0
    for ln in lines:
        if ln.refunded_quantity and ln.quantity:
            refunded += ln.refunded_quantity * (ln.price - ln.discount / ln.quantity)
    refunded = max(0.0, min(refunded, total_refunded))
    return version_from_node(node, lines, refunded)


def version_from_node(node: dict, lines: tuple[OrderLine, ...], refunded: float) -> OrderVersion:
    """The order-level fields of a GraphQL Order node (bulk JSONL or a connection page), with its converted lines
    and the product part of its refunds."""
    processed = parse_time(node.get("processedAt")) or parse_time(node.get("createdAt"))
    if processed is None:
        raise ValueError("order node without processedAt/createdAt")
    updated = parse_time(node.get("updatedAt")) or processed
    currency = (((node.get("subtotalPriceSet") or {}).get("shopMoney") or {}).get("currencyCode")
                or node.get("currencyCode") or "USD")
    return OrderVersion(
        id=_legacy_id(node), processed_at=processed, updated_at=updated,
        customer_id=_legacy_id(node.get("customer")), name=node.get("name"),
        cancelled=bool(node.get("cancelledAt")), test=bool(node.get("test")), currency=str(currency)[:3],
        subtotal=round(_shop_money(node, "subtotalPriceSet"), 2),
        total_discounts=round(_shop_money(node, "totalDiscountsSet"), 2), refunded=round(refunded, 2),
        financial_status=(node.get("displayFinancialStatus") or "").lower() or None, lines=lines,
    )


class UngroupedBulkOutput(ValueError):
    """A child line that does not follow its parent: the bulk query ran without groupObjects: true."""


def orders_from_jsonl(lines: Iterable[dict]) -> Iterator[OrderVersion]:
    """Assemble orders from bulk JSONL objects (parsed lines), in file order (grouped output)."""
    reader = _LineReader()
    current: dict | None = None
    current_id = None
    children: list[dict] = []
    for obj in lines:
        if not isinstance(obj, dict):
            continue
        parent = obj.get("__parentId")
        if parent is None:
            if "__parentId" not in obj and str(obj.get("id", "")).startswith("gid://shopify/Order/"):  # _is_order
                if current is not None:
                    yield order_from_node(current, children, reader)
                current, children = obj, []
                current_id = current.get("id")
        elif str(obj.get("id", "")).startswith("gid://shopify/LineItem/"):
            if current is None or parent != current_id:
                raise UngroupedBulkOutput(
                    f"line item {obj.get('id')} of {parent} does not follow its order: the bulk query must run "
                    "with groupObjects: true")
            children.append(obj)
    if current is not None:
        yield order_from_node(current, children, reader)
