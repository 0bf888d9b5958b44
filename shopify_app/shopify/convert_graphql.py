"""Paginated Admin GraphQL orders (documents/reconcile_orders_page.graphql) -> `OrderVersion`.

Same rules as the REST webhook conversion (convert.order_from_rest), read from GraphQL fields:
- money is shop money (``<field>Set.shopMoney.amount``); ids are ``legacyResourceId`` or the gid's tail, as int;
- times are naive UTC; the order time is ``processedAt`` (fallback ``createdAt``), the version is ``updatedAt``;
- ``cancelledAt`` set -> cancelled; ``test`` -> test; ``customer`` null -> guest; ``product`` null -> custom line;
- refunded quantity per line = sum of the refund line items' ``quantity`` for that line; the order's ``refunded``
  = sum of the refund line items' ``subtotalSet`` (shipping refunds and adjustments are not product revenue),
  exactly what REST's ``refunds[].refund_line_items[]`` give -- unlike the bulk export, which has no refund lines
  and infers them from ``currentQuantity`` (convert_bulk);
- product_type is the product's ``productType`` (REST line items carry none).

`fetch_complete_order` follows the nested connections the page cut short (more line items, refunds or refund
lines than the page sizes), so a converted order is never silently truncated.
"""
from __future__ import annotations

from typing import Iterable

from shopify_app.analytics.orders import OrderLine, OrderVersion

from .convert_bulk import _gid_int, _shop_money, version_from_node


def _nodes(conn: dict | None) -> list[dict]:
    return list((conn or {}).get("nodes") or [])


def _has_more(conn: dict | None) -> bool:
    return bool(((conn or {}).get("pageInfo") or {}).get("hasNextPage"))


def order_from_graphql(node: dict, line_nodes: Iterable[dict] | None = None,
                       refund_line_nodes: Iterable[dict] | None = None) -> OrderVersion:
    """Convert one order node. Without explicit `line_nodes` / `refund_line_nodes` the ones nested in the node
    are used (lineItems.nodes, refunds[].refundLineItems.nodes)."""
    if not isinstance(node, dict) or node.get("id") is None:
        raise ValueError("order node without id")
    if line_nodes is None:
        line_nodes = _nodes(node.get("lineItems"))
    if refund_line_nodes is None:
        refund_line_nodes = [rl for r in node.get("refunds") or [] for rl in _nodes((r or {}).get("refundLineItems"))]
    refunded_qty: dict[int, int] = {}
    refunded = 0.0
    for rl in refund_line_nodes:
        lid = _gid_int(((rl or {}).get("lineItem") or {}).get("id"))
        if lid is not None:
            refunded_qty[lid] = refunded_qty.get(lid, 0) + int(rl.get("quantity") or 0)
        refunded += _shop_money(rl, "subtotalSet")
    lines = []
    for li in line_nodes:
        lid = _gid_int(li["id"])
        product = li.get("product") if isinstance(li.get("product"), dict) else None
        variant = li.get("variant") if isinstance(li.get("variant"), dict) else None
        lines.append(OrderLine(
            id=lid, product_id=_gid_int(product.get("id")) if product else None,
            variant_id=_gid_int(variant.get("id")) if variant else None,
            product_type=(product.get("productType") or None) if product else None,
            quantity=int(li.get("quantity") or 0), refunded_quantity=refunded_qty.get(lid, 0),
            price=round(_shop_money(li, "originalUnitPriceSet"), 2),
            discount=round(_shop_money(li, "totalDiscountSet"), 2),
        ))
    return version_from_node(node, tuple(lines), refunded)


def fetch_complete_order(client, node: dict, *, refunds_first: int) -> OrderVersion | None:
    """Convert a node of reconcile_orders_page, first fetching whatever its nested pages left out.

    `refunds_first` is the $refundsFirst the page was queried with: a node with that many refunds may have more.
    `client` is a graphql.AdminClient (only `execute` / `paginate` are used). Returns None when the order was
    deleted between the page and a follow-up request (its orders/delete webhook handles it)."""
    try:
        lines_conn = node.get("lineItems")
        lines = _nodes(lines_conn)
        if _has_more(lines_conn):
            end = (lines_conn.get("pageInfo") or {}).get("endCursor")
            lines += list(client.paginate("reconcile_order_line_items", "order.lineItems",
                                          {"id": node["id"], "after": end}))
        refunds = list(node.get("refunds") or [])
        if len(refunds) >= refunds_first:
            order = client.execute("reconcile_order_refunds", {"id": node["id"]}).get("order")
            if order is None:
                return None
            known = {r.get("id"): r for r in refunds}
            refunds = [known.get(r["id"], {"id": r["id"]}) for r in order.get("refunds") or []]
        refund_lines: list[dict] = []
        for r in refunds:
            conn = r.get("refundLineItems")
            if conn is not None and not _has_more(conn):
                refund_lines += _nodes(conn)
            else:   # not fetched with the page, or cut short: read the refund's lines from the start
                refund_lines += list(client.paginate("reconcile_refund_line_items", "node.refundLineItems",
                                                     {"id": r["id"]}))
    except KeyError:        # `order` / `node` came back null: deleted meanwhile
        return None
    return order_from_graphql(node, lines, refund_lines)
