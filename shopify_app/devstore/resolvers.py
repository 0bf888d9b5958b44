"""Field resolvers: (GraphQL type, field) -> function(source, args, ctx).

One default field resolver serves every field (graphql_api.field_resolver). It looks a field up here; plain dict
sources (payloads, MoneyV2, PageInfo, ...) answer by key. Anything else raises
"not implemented by devstore: Type.field" -- a devstore must never answer null for a field it does not model,
or app bugs hide behind it. The same function serves the bulk executor (bulk.py), so a bulk export returns
exactly what a normal query would.
"""
from __future__ import annotations

import base64
import datetime as dt
import heapq
import json
from decimal import ROUND_HALF_UP, Decimal

from graphql import GraphQLError

from . import search
from .models import (
    CENT, ZERO, Customer, Discount, InventoryItemRef, LineItem, Order, Product, Refund, RefundLine, Variant, gid, iso,
    money, parse_gid,
)

FIELDS: dict[str, dict[str, callable]] = {}
MAX_PAGE = 250


class Ctx:
    """Per-request context: which shop, which app, where the server is reachable."""

    def __init__(self, store, shop, api_key: str, scope: str = "", base_url: str = "", version: str = "2026-10"):
        self.store, self.shop, self.api_key, self.scope = store, shop, api_key, scope
        self.base_url, self.version = base_url.rstrip("/"), version
        self.search_warnings: list[dict] = []
        self.bulk = False   # bulk export: connections ignore first/last and return everything

    @property
    def shop_base(self) -> str:
        """Every Shopify path for this shop hangs off this (routing rule in devstore/__init__.py)."""
        return f"{self.base_url}/shops/{self.shop.domain}"


def not_implemented(type_name: str, field_name: str):
    return GraphQLError(f"not implemented by devstore: {type_name}.{field_name}",
                        extensions={"code": "NOT_IMPLEMENTED_BY_DEVSTORE"})


def resolve_field(type_name: str, field_name: str, source, args: dict, ctx):
    fn = FIELDS.get(type_name, {}).get(field_name)
    if fn is not None:
        return fn(source, args, ctx)
    if isinstance(source, dict):
        if field_name in source:
            v = source[field_name]
            return v(args, ctx) if callable(v) else v
    raise not_implemented(type_name, field_name)


def field_resolver(type_name: str, field_name: str):
    """The function resolve_field would call for (type, field), looked up once: the bulk exporter compiles its
    plan from these instead of a FIELDS lookup per value. Same behaviour as resolve_field."""
    fn = FIELDS.get(type_name, {}).get(field_name)
    if fn is not None:
        return fn

    def by_key(source, args, ctx):
        if isinstance(source, dict) and field_name in source:
            v = source[field_name]
            return v(args, ctx) if callable(v) else v
        raise not_implemented(type_name, field_name)
    return by_key


def type_of(value) -> str:
    if isinstance(value, dict):
        return value["__typename"]
    return value.TYPE


def reg(type_name: str, **fns):
    FIELDS.setdefault(type_name, {}).update(fns)


def const(v):
    return lambda s, a, c: v


def attr(name):
    return lambda s, a, c: getattr(s, name)


# ----------------------------------------------------------------------------------------------------- money

def mv2(amount: Decimal, currency: str) -> dict:
    # A Decimal quantizes directly (same value as money(): Decimal(str(d)) == d); the str round trip is for floats.
    q = amount.quantize(CENT, rounding=ROUND_HALF_UP) if type(amount) is Decimal else money(amount)
    return {"__typename": "MoneyV2", "amount": str(q), "currencyCode": currency}


def bag(amount: Decimal, order: Order) -> dict:
    # presentmentMoney is computed only when selected (a callable dict value, see resolve_field): bulk exports
    # ask for shopMoney on a million lines.
    return {"__typename": "MoneyBag", "shopMoney": mv2(amount, order.currency),
            "presentmentMoney": lambda a, c: mv2(order.presentment(amount), order.presentment_currency)}


def count(n: int, limit: int | None = None) -> dict:
    if limit is not None and n > limit:
        return {"count": limit, "precision": "AT_LEAST"}
    return {"count": n, "precision": "EXACT"}


# ----------------------------------------------------------------------------------------------------- paging

def encode_cursor(key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str):
    try:
        pad = "=" * (-len(cursor) % 4)
        return tuple(json.loads(base64.urlsafe_b64decode(cursor + pad)))
    except Exception:  # noqa: BLE001
        raise GraphQLError("Invalid cursor for current pagination sort.", extensions={"code": "BAD_REQUEST"}) from None


def _ts(t: dt.datetime | None) -> float:
    return t.timestamp() if t else 0.0


def paginate(items, sort_key, args: dict, *, bulk: bool = False) -> dict:
    """Relay connection over `items` (iterable of records) ordered by sort_key(record) -> tuple ending in id."""
    first, last = args.get("first"), args.get("last")
    after, before, reverse = args.get("after"), args.get("before"), bool(args.get("reverse"))
    if not bulk:
        if first is None and last is None:
            raise GraphQLError("you must provide one of first or last", extensions={"code": "BAD_REQUEST"})
        for n, v in (("first", first), ("last", last)):
            if v is not None and (v < 0 or v > MAX_PAGE):
                raise GraphQLError(f"The {n} argument must be between 0 and {MAX_PAGE}.",
                                   extensions={"code": "BAD_REQUEST"})
    ak = decode_cursor(after) if after else None
    bk = decode_cursor(before) if before else None

    def in_window(k) -> bool:
        if ak is not None and not ((k > ak) if not reverse else (k < ak)):
            return False
        if bk is not None and not ((k < bk) if not reverse else (k > bk)):
            return False
        return True

    keyed = ((sort_key(r), r) for r in items)
    window = [(k, r) for k, r in keyed if in_window(k)]
    if bulk:
        page = sorted(window, key=lambda kr: kr[0], reverse=reverse)
        has_next = has_prev = False
    elif first is not None:
        pick = heapq.nlargest if reverse else heapq.nsmallest
        page = pick(first + 1, window, key=lambda kr: kr[0])
        has_next = len(page) > first
        page = page[:first]
        has_prev = ak is not None
        if last is not None and len(page) > last:
            page, has_prev = page[-last:], True
    else:
        pick = heapq.nsmallest if reverse else heapq.nlargest
        page = pick(last + 1, window, key=lambda kr: kr[0])
        has_prev = len(page) > last
        page = list(reversed(page[:last]))
        has_next = bk is not None
    # Cursors are computed lazily (a callable field value): bulk exports of 100k+ edges never ask for them.
    edges = [{"__typename": "Edge", "cursor": (lambda a, c, k=k: encode_cursor(list(k))), "node": r} for k, r in page]
    return {
        "edges": edges,
        "nodes": [r for _, r in page],
        "pageInfo": {"hasNextPage": has_next, "hasPreviousPage": has_prev,
                     "startCursor": encode_cursor(list(page[0][0])) if page else None,
                     "endCursor": encode_cursor(list(page[-1][0])) if page else None},
    }


def _list_conn(indexed, args, bulk):
    res = paginate(indexed, lambda ir: (ir[0],), args, bulk=bulk)
    res["nodes"] = [r for _, r in res["nodes"]]
    for e in res["edges"]:
        e["node"] = e["node"][1]
    return res


ORDER_SORT = {
    "ID": lambda o: (o.id,), "CREATED_AT": lambda o: (_ts(o.created_at), o.id),
    "UPDATED_AT": lambda o: (_ts(o.updated_at), o.id), "PROCESSED_AT": lambda o: (_ts(o.processed_at), o.id),
    "ORDER_NUMBER": lambda o: (o.number, o.id), "TOTAL_PRICE": lambda o: (float(o.total_price), o.id),
    "CURRENT_TOTAL_PRICE": lambda o: (float(o.current_total_price), o.id), "RELEVANCE": lambda o: (o.id,),
}
CUSTOMER_SORT = {"ID": lambda c: (c.id,), "CREATED_AT": lambda c: (_ts(c.created_at), c.id),
                 "UPDATED_AT": lambda c: (_ts(c.updated_at), c.id), "NAME": lambda c: (c.display_name.lower(), c.id),
                 "RELEVANCE": lambda c: (c.id,)}
PRODUCT_SORT = {"ID": lambda p: (p.id,), "CREATED_AT": lambda p: (_ts(p.created_at), p.id),
                "UPDATED_AT": lambda p: (_ts(p.updated_at), p.id), "TITLE": lambda p: (p.title.lower(), p.id),
                "PRODUCT_TYPE": lambda p: (p.product_type.lower(), p.id), "RELEVANCE": lambda p: (p.id,)}

ORDER_FILTERS = {
    "id": ("int", lambda o: o.id), "created_at": ("time", lambda o: o.created_at),
    "updated_at": ("time", lambda o: o.updated_at), "processed_at": ("time", lambda o: o.processed_at),
    "tag": ("tags", lambda o: o.tags), "customer_id": ("int", lambda o: o.customer_id),
    "test": ("bool", lambda o: o.test), "financial_status": ("str", lambda o: o.financial_status),
    "email": ("str", lambda o: o.email), "name": ("str", lambda o: o.name),
    "status": ("str", lambda o: "cancelled" if o.cancelled_at else ("closed" if o.closed_at else "open")),
    "default": ("text", lambda o: (o.name, o.email)),
}
CUSTOMER_FILTERS = {
    "id": ("int", lambda c: c.id), "created_at": ("time", lambda c: c.created_at),
    "updated_at": ("time", lambda c: c.updated_at), "tag": ("tags", lambda c: c.tags),
    "email": ("str", lambda c: c.email), "country": ("str", lambda c: c.country),
    "orders_count": ("int", lambda c: len(c.order_ids)),
    "default": ("text", lambda c: (c.first_name, c.last_name, c.email)),
}
PRODUCT_FILTERS = {
    "id": ("int", lambda p: p.id), "created_at": ("time", lambda p: p.created_at),
    "updated_at": ("time", lambda p: p.updated_at), "tag": ("tags", lambda p: p.tags),
    "title": ("str", lambda p: p.title), "product_type": ("str", lambda p: p.product_type),
    "vendor": ("str", lambda p: p.vendor), "status": ("str", lambda p: p.status),
    "handle": ("str", lambda p: p.handle), "default": ("text", lambda p: (p.title, p.product_type)),
}


def filtered(records, query, filters, ctx):
    pred, warnings = search.compile_filter(query, filters, ctx.shop.iana_timezone)
    if warnings:
        ctx.search_warnings.append({"query": query, "warnings": warnings})
    if pred is None:
        return records
    return (r for r in records if pred(r))


def _sort(table: dict, args: dict, default: str):
    key = args.get("sortKey") or default
    if key not in table:
        raise GraphQLError(f"sortKey {key} is not implemented by devstore", extensions={"code": "NOT_IMPLEMENTED_BY_DEVSTORE"})
    return table[key]


def has_scope(ctx, scope: str) -> bool:
    """write_X implies read_X, as on Shopify."""
    granted = {x.strip() for x in (ctx.scope or "").split(",") if x.strip()}
    return scope in granted or (scope.startswith("read_") and "write_" + scope[5:] in granted)


def visible_orders(ctx, orders):
    """Shopify hides orders created more than 60 days ago unless the app has read_all_orders (no error, they just
    aren't there). store.order_age_limit_days = None turns this off."""
    days = getattr(ctx.store, "order_age_limit_days", None)
    if not days or has_scope(ctx, "read_all_orders"):
        return orders
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
    kept = [o for o in orders if o.created_at >= cutoff]
    hidden = len(orders) - len(kept)
    if hidden and not getattr(ctx, "_age_warned", False):
        ctx._age_warned = True
        import logging
        logging.getLogger("shopify_app.devstore").warning(
            "devstore: %d orders older than %d days hidden from %s on %s: the app lacks the read_all_orders "
            "scope (Shopify does the same)", hidden, days, ctx.api_key, ctx.shop.domain)
    return kept


def orders_conn(orders, args, ctx, bulk=False):
    orders = visible_orders(ctx, orders)
    return paginate(filtered(orders, args.get("query"), ORDER_FILTERS, ctx), _sort(ORDER_SORT, args, "PROCESSED_AT"),
                    args, bulk=bulk)


def customers_conn(customers, args, ctx, bulk=False):
    return paginate(filtered(customers, args.get("query"), CUSTOMER_FILTERS, ctx), _sort(CUSTOMER_SORT, args, "ID"),
                    args, bulk=bulk)


def products_conn(products, args, ctx, bulk=False):
    return paginate(filtered(products, args.get("query"), PRODUCT_FILTERS, ctx), _sort(PRODUCT_SORT, args, "ID"),
                    args, bulk=bulk)


# ----------------------------------------------------------------------------------------------------- nodes

NODE_TABLES = {"Order": "orders", "Customer": "customers", "Product": "products", "ProductVariant": "variants",
               "LineItem": "line_items", "Refund": "refunds", "Segment": "segments",
               "DiscountAutomaticNode": "discounts", "DiscountCodeNode": "discounts",
               "BulkOperation": "bulk_operations", "WebhookSubscription": "webhook_subscriptions"}


def lookup(ctx, gid_str: str):
    parsed = parse_gid(gid_str)
    if parsed is None:
        raise GraphQLError(f"Invalid global id '{gid_str}'", extensions={"code": "argumentLiteralsIncompatible"})
    kind, num = parsed
    sh = ctx.shop
    if kind == "InventoryItem":
        for v in sh.variants.values():
            if v.inventory_item_id == num:
                return InventoryItemRef(v)
        return None
    if kind == "Shop":
        return sh if num == sh.id else None
    table = NODE_TABLES.get(kind)
    if table is None:
        raise not_implemented("QueryRoot", f"node(id: gid://shopify/{kind}/...)")
    rec = getattr(sh, table).get(num)
    if rec is None or type_of(rec) != kind:
        return None
    if kind == "Order" and not visible_orders(ctx, [rec]):
        return None
    return rec


def _typed(kind):
    def fn(s, a, c):
        rec = lookup(c, a["id"])
        return rec if rec is not None and type_of(rec) == kind else None
    return fn


# ----------------------------------------------------------------------------------------------------- QueryRoot

reg("QueryRoot",
    shop=lambda s, a, c: c.shop,
    orders=lambda s, a, c: orders_conn(list(c.shop.orders.values()), a, c, c.bulk),
    customers=lambda s, a, c: customers_conn(list(c.shop.customers.values()), a, c, c.bulk),
    products=lambda s, a, c: products_conn(list(c.shop.products.values()), a, c, c.bulk),
    ordersCount=lambda s, a, c: count(sum(1 for _ in filtered(visible_orders(c, list(c.shop.orders.values())), a.get("query"), ORDER_FILTERS, c)), a.get("limit")),
    customersCount=lambda s, a, c: count(sum(1 for _ in filtered(c.shop.customers.values(), a.get("query"), CUSTOMER_FILTERS, c)), a.get("limit")),
    productsCount=lambda s, a, c: count(sum(1 for _ in filtered(c.shop.products.values(), a.get("query"), PRODUCT_FILTERS, c)), a.get("limit")),
    order=_typed("Order"), customer=_typed("Customer"), product=_typed("Product"),
    productVariant=_typed("ProductVariant"), segment=_typed("Segment"),
    webhookSubscription=_typed("WebhookSubscription"),
    node=lambda s, a, c: lookup(c, a["id"]),
    nodes=lambda s, a, c: [lookup(c, i) for i in a["ids"]],
    segments=lambda s, a, c: paginate(list(c.shop.segments.values()), lambda x: (_ts(x.created_at), x.id), a),
    bulkOperation=lambda s, a, c: _typed("BulkOperation")(s, a, c),
    currentBulkOperation=lambda s, a, c: _current_bulk(c, a.get("type") or "QUERY"),
    bulkOperations=lambda s, a, c: bulk_operations_conn(c, a),
    webhookSubscriptions=lambda s, a, c: paginate(
        [w for w in c.shop.webhook_subscriptions.values() if w.api_key == c.api_key
         and (not a.get("topics") or _gql_topic(w.topic) in a["topics"])
         and (not a.get("uri") or w.uri == a["uri"])], lambda w: (w.id,), a),
    )


# bulkOperations(query:) fields and values as documented for the 2026-10 QueryRoot.bulkOperations argument.
BULK_OPERATION_FILTERS = {
    "id": ("int", lambda op: op.id), "created_at": ("time", lambda op: op.created_at),
    "operation_type": ("str", lambda op: op.type), "status": ("str", lambda op: op.status),
}
BULK_OPERATION_VALUES = {"operation_type": ("query", "mutation"),
                         "status": ("canceled", "canceling", "completed", "created", "failed", "running")}
# "Defaults to sorting by created_at, with newest operations first": the natural order is descending, and
# reverse: true gives oldest first. Operations not completed yet sort after every completed one on COMPLETED_AT.
BULK_OPERATION_SORT = {
    "CREATED_AT": lambda op: (-_ts(op.created_at), -op.id),
    "COMPLETED_AT": lambda op: (op.completed_at is None, -_ts(op.completed_at), -op.id),
}


def bulk_operations_conn(ctx, args):
    """The app's own bulk operations (both types), filtered by the documented search fields. Syntax the stand-in
    cannot evaluate as Shopify would is an error rather than a silently different answer."""
    problem = search.unsupported(args.get("query"), BULK_OPERATION_FILTERS, BULK_OPERATION_VALUES)
    if problem:
        raise GraphQLError(f"bulkOperations(query:) with {problem} is not implemented by devstore",
                           extensions={"code": "NOT_IMPLEMENTED_BY_DEVSTORE"})
    ops = [op for op in ctx.shop.bulk_operations.values() if op.api_key == ctx.api_key]
    return paginate(filtered(ops, args.get("query"), BULK_OPERATION_FILTERS, ctx),
                    _sort(BULK_OPERATION_SORT, args, "CREATED_AT"), args)


def _current_bulk(ctx, type_):
    ops = [op for op in ctx.shop.bulk_operations.values() if op.type == type_ and op.api_key == ctx.api_key]
    return ops[-1] if ops else None


def _gql_topic(rest_topic):
    from .store import graphql_topic
    return graphql_topic(rest_topic)


# ----------------------------------------------------------------------------------------------------- Shop

reg("Shop",
    id=lambda s, a, c: gid("Shop", s.id), name=attr("name"), myshopifyDomain=attr("domain"),
    currencyCode=attr("currency"), ianaTimezone=attr("iana_timezone"), email=attr("email"),
    contactEmail=attr("email"), createdAt=lambda s, a, c: iso(s.created_at), updatedAt=lambda s, a, c: iso(s.created_at),
    url=lambda s, a, c: f"https://{s.domain}",
    primaryDomain=lambda s, a, c: {"__typename": "Domain", "id": gid("Domain", s.id), "host": s.domain,
                                   "url": f"https://{s.domain}", "sslEnabled": True},
    plan=lambda s, a, c: {"__typename": "ShopPlan", "displayName": s.plan, "publicDisplayName": s.plan,
                          "partnerDevelopment": s.plan == "Developer Preview",
                          "shopifyPlus": s.plan in ("Shopify Plus", "Enterprise")},
    enabledPresentmentCurrencies=lambda s, a, c: [s.currency],
    timezoneOffsetMinutes=lambda s, a, c: _tz_offset(s) // 60,
    timezoneOffset=lambda s, a, c: _fmt_offset(_tz_offset(s)),
    timezoneAbbreviation=lambda s, a, c: dt.datetime.now(_zone(s)).tzname() or "UTC",
    taxesIncluded=const(True), weightUnit=const("KILOGRAMS"), setupRequired=const(False),
    checkoutApiSupported=const(True), transactionalSmsDisabled=const(False),
    marketingSmsConsentEnabledAtCheckout=const(False), shopOwnerName=lambda s, a, c: f"{s.name} Owner",
    description=const(None), orderNumberFormatPrefix=const("#"), orderNumberFormatSuffix=const(""),
    )


def _zone(s):
    from zoneinfo import ZoneInfo
    return ZoneInfo(s.iana_timezone)


def _tz_offset(s) -> int:
    return int(dt.datetime.now(_zone(s)).utcoffset().total_seconds())


def _fmt_offset(sec: int) -> str:
    sign = "+" if sec >= 0 else "-"
    sec = abs(sec)
    return f"{sign}{sec // 3600:02d}{(sec % 3600) // 60:02d}"


# ----------------------------------------------------------------------------------------------------- Order

def _customer_of(o, c):
    return c.shop.customers.get(o.customer_id) if o.customer_id is not None else None


reg("Order",
    id=lambda s, a, c: gid("Order", s.id), legacyResourceId=lambda s, a, c: str(s.id), name=attr("name"),
    number=attr("number"), email=attr("email"), phone=const(None), note=attr("note"), test=attr("test"),
    createdAt=lambda s, a, c: iso(s.created_at), updatedAt=lambda s, a, c: iso(s.updated_at),
    processedAt=lambda s, a, c: iso(s.processed_at), cancelledAt=lambda s, a, c: iso(s.cancelled_at),
    closedAt=lambda s, a, c: iso(s.closed_at), closed=lambda s, a, c: s.closed_at is not None,
    cancelReason=lambda s, a, c: s.cancel_reason.upper() if s.cancel_reason else None,
    confirmed=const(True), currencyCode=attr("currency"), presentmentCurrencyCode=attr("presentment_currency"),
    customer=lambda s, a, c: _customer_of(s, c), tags=attr("tags"), sourceName=attr("source_name"),
    sourceIdentifier=const(None), customerAcceptsMarketing=const(False), taxesIncluded=const(True),
    taxExempt=const(False), dutiesIncluded=const(False), estimatedTaxes=const(False), edited=const(False),
    fullyPaid=lambda s, a, c: s.paid, unpaid=lambda s, a, c: not s.paid, customerLocale=const("en"),
    displayFinancialStatus=lambda s, a, c: s.financial_status.upper(),
    displayFulfillmentStatus=const("FULFILLED"),
    discountCodes=lambda s, a, c: [d["code"] for d in s.discount_codes],
    discountCode=lambda s, a, c: s.discount_codes[0]["code"] if s.discount_codes else None,
    subtotalLineItemsQuantity=lambda s, a, c: sum(li.quantity for li in s.line_items),
    currentSubtotalLineItemsQuantity=lambda s, a, c: sum(li.current_quantity for li in s.line_items),
    lineItems=lambda s, a, c: _list_conn(list(enumerate(s.line_items)), a, getattr(c, "bulk", False)),
    refunds=lambda s, a, c: s.refunds[: a["first"]] if a.get("first") else list(s.refunds),
    totalPriceSet=lambda s, a, c: bag(s.total_price, s),
    subtotalPriceSet=lambda s, a, c: bag(s.subtotal_price, s),
    totalDiscountsSet=lambda s, a, c: bag(s.total_discounts, s),
    totalLineItemsPriceSet=lambda s, a, c: bag(s.total_line_items_price, s),
    originalTotalPriceSet=lambda s, a, c: bag(s.total_price, s),
    currentTotalPriceSet=lambda s, a, c: bag(s.current_total_price, s),
    currentSubtotalPriceSet=lambda s, a, c: bag(s.current_subtotal_price, s),
    currentTotalDiscountsSet=lambda s, a, c: bag(s.current_total_discounts, s),
    currentCartDiscountAmountSet=lambda s, a, c: bag(ZERO, s),
    cartDiscountAmountSet=lambda s, a, c: bag(ZERO, s),
    totalRefundedSet=lambda s, a, c: bag(s.total_refunded, s),
    totalRefundedShippingSet=lambda s, a, c: bag(ZERO, s),
    totalReceivedSet=lambda s, a, c: bag(s.total_price if s.paid else ZERO, s),
    netPaymentSet=lambda s, a, c: bag((s.total_price if s.paid else ZERO) - s.total_refunded, s),
    totalOutstandingSet=lambda s, a, c: bag(ZERO if s.paid else s.total_price, s),
    totalShippingPriceSet=lambda s, a, c: bag(s.shipping, s),
    currentShippingPriceSet=lambda s, a, c: bag(s.shipping, s),
    totalTaxSet=lambda s, a, c: bag(ZERO, s), currentTotalTaxSet=lambda s, a, c: bag(ZERO, s),
    totalTipReceivedSet=lambda s, a, c: bag(ZERO, s), totalCapturableSet=lambda s, a, c: bag(ZERO, s),
    discountApplications=lambda s, a, c: _list_conn(list(enumerate(
        [_discount_application(d, i, s) for i, d in enumerate(s.discount_applications)])), a, getattr(c, "bulk", False)),
    paymentGatewayNames=const(["manual"]), customAttributes=const([]), taxLines=const([]),
    currentTaxLines=const([]), billingAddress=const(None), shippingAddress=const(None), displayAddress=const(None),
    )


def _discount_application(d: dict, index: int, o: Order) -> dict:
    value = ({"__typename": "MoneyV2", "amount": d["value"], "currencyCode": o.currency}
             if d["value_type"] == "fixed_amount" else {"__typename": "PricingPercentageValue",
                                                        "percentage": float(d["value"])})
    return {"__typename": "DiscountCodeApplication" if d["type"] == "discount_code" else "AutomaticDiscountApplication",
            "index": index, "code": d.get("code"), "title": d.get("title") or d.get("code"),
            "allocationMethod": d["allocation_method"].upper(), "targetSelection": d["target_selection"].upper(),
            "targetType": d["target_type"].upper(), "value": value}


reg("LineItem",
    id=lambda s, a, c: gid("LineItem", s.id), name=lambda s, a, c: s.title + (f" - {s.variant_title}" if s.variant_title else ""),
    title=attr("title"), quantity=attr("quantity"), currentQuantity=lambda s, a, c: s.current_quantity,
    refundableQuantity=lambda s, a, c: s.current_quantity, unfulfilledQuantity=const(0),
    nonFulfillableQuantity=const(0), sku=attr("sku"), variantTitle=attr("variant_title"), vendor=attr("vendor"),
    requiresShipping=attr("requires_shipping"), taxable=attr("taxable"), isGiftCard=const(False),
    merchantEditable=const(False), restockable=const(True), customAttributes=const([]), taxLines=const([]),
    duties=const([]), discountAllocations=lambda s, a, c: ([{
        "__typename": "DiscountAllocation", "allocatedAmountSet": bag(s.total_discount, s.order),
        "discountApplication": _discount_application(s.order.discount_applications[0], 0, s.order)}]
        if s.total_discount > 0 and s.order.discount_applications else []),
    product=lambda s, a, c: c.shop.products.get(s.product_id) if s.product_id else None,
    variant=lambda s, a, c: c.shop.variants.get(s.variant_id) if s.variant_id else None,
    originalUnitPriceSet=lambda s, a, c: bag(s.price, s.order),
    discountedUnitPriceSet=lambda s, a, c: bag(s.price, s.order),
    discountedUnitPriceAfterAllDiscountsSet=lambda s, a, c: bag(
        (s.original_total - s.total_discount) / s.quantity if s.quantity else ZERO, s.order),
    originalTotalSet=lambda s, a, c: bag(s.original_total, s.order),
    discountedTotalSet=lambda s, a, c: bag(s.original_total - s.total_discount, s.order),
    totalDiscountSet=lambda s, a, c: bag(s.total_discount, s.order),
    priceAfterAllDiscountsBeforeTaxesSet=lambda s, a, c: bag(s.original_total - s.total_discount, s.order),
    unfulfilledDiscountedTotalSet=lambda s, a, c: bag(ZERO, s.order),
    unfulfilledOriginalTotalSet=lambda s, a, c: bag(ZERO, s.order),
    )

reg("Refund",
    id=lambda s, a, c: gid("Refund", s.id), legacyResourceId=lambda s, a, c: str(s.id), note=attr("note"),
    createdAt=lambda s, a, c: iso(s.created_at), processedAt=lambda s, a, c: iso(s.created_at),
    updatedAt=lambda s, a, c: iso(s.created_at), order=attr("order"),
    totalRefundedSet=lambda s, a, c: bag(s.amount, s.order),
    refundLineItems=lambda s, a, c: _list_conn(list(enumerate(s.lines)), a, getattr(c, "bulk", False)),
    )

reg("RefundLineItem",
    id=lambda s, a, c: gid("RefundLineItem", s.id), lineItem=attr("line_item"), quantity=attr("quantity"),
    restockType=attr("restock_type"), restocked=const(False),
    priceSet=lambda s, a, c: bag(s.line_item.price, s.line_item.order),
    subtotalSet=lambda s, a, c: bag(s.subtotal, s.line_item.order),
    totalTaxSet=lambda s, a, c: bag(ZERO, s.line_item.order),
    )


# ----------------------------------------------------------------------------------------------------- Customer

def _amount_spent(cust, c):
    tot = ZERO
    for oid in cust.order_ids:
        o = c.shop.orders.get(oid)
        if o is not None and o.cancelled_at is None:
            tot += o.current_total_price
    return tot


reg("Customer",
    id=lambda s, a, c: gid("Customer", s.id), legacyResourceId=lambda s, a, c: str(s.id),
    firstName=attr("first_name"), lastName=attr("last_name"), displayName=lambda s, a, c: s.display_name,
    email=attr("email"), phone=attr("phone"), note=attr("note"), tags=attr("tags"), locale=attr("locale"),
    state=attr("state"), verifiedEmail=attr("verified_email"), taxExempt=const(False), taxExemptions=const([]),
    createdAt=lambda s, a, c: iso(s.created_at), updatedAt=lambda s, a, c: iso(s.updated_at),
    defaultEmailAddress=lambda s, a, c: ({"__typename": "CustomerEmailAddress", "emailAddress": s.email,
                                          "marketingState": "NOT_SUBSCRIBED", "validFormat": True}
                                         if s.email else None),
    defaultPhoneNumber=const(None), canDelete=lambda s, a, c: not s.order_ids, dataSaleOptOut=const(False),
    defaultAddress=lambda s, a, c: ({"__typename": "MailingAddress", "id": gid("MailingAddress", s.id),
                                     "country": s.country, "countryCodeV2": None, "countryCode": None,
                                     "city": None, "zip": None, "province": None, "provinceCode": None,
                                     "address1": None, "address2": None, "firstName": s.first_name,
                                     "lastName": s.last_name, "name": s.display_name, "company": None,
                                     "phone": None} if s.country else None),
    numberOfOrders=lambda s, a, c: str(len(s.order_ids)),
    amountSpent=lambda s, a, c: mv2(_amount_spent(s, c), c.shop.currency),
    lastOrder=lambda s, a, c: (next(iter(visible_orders(c, [c.shop.orders[s.order_ids[-1]]])), None)
                               if s.order_ids and s.order_ids[-1] in c.shop.orders else None),
    orders=lambda s, a, c: orders_conn([c.shop.orders[i] for i in s.order_ids if i in c.shop.orders], a, c,
                                       bulk=getattr(c, "bulk", False)),
    lifetimeDuration=lambda s, a, c: _lifetime(s),
    )


def _lifetime(cust) -> str:
    days = (dt.datetime.now(dt.timezone.utc) - cust.created_at).days
    return f"about {days // 365} years" if days >= 365 else f"{days} days"


# ----------------------------------------------------------------------------------------------------- Product

reg("Product",
    id=lambda s, a, c: gid("Product", s.id), legacyResourceId=lambda s, a, c: str(s.id), title=attr("title"),
    handle=attr("handle"), productType=attr("product_type"), vendor=attr("vendor"), tags=attr("tags"),
    status=attr("status"), description=lambda s, a, c: s.description, descriptionHtml=lambda s, a, c: s.description,
    createdAt=lambda s, a, c: iso(s.created_at), updatedAt=lambda s, a, c: iso(s.updated_at),
    publishedAt=lambda s, a, c: iso(s.created_at), isGiftCard=const(False), tracksInventory=const(False),
    totalInventory=lambda s, a, c: sum(v.inventory_quantity for v in s.variants),
    hasOnlyDefaultVariant=lambda s, a, c: len(s.variants) == 1 and s.variants[0].title == "Default Title",
    hasOutOfStockVariants=const(False), requiresSellingPlan=const(False), templateSuffix=const(None),
    onlineStoreUrl=const(None), featuredMedia=const(None),
    variantsCount=lambda s, a, c: count(len(s.variants)),
    variants=lambda s, a, c: _list_conn(list(enumerate(s.variants)), a, getattr(c, "bulk", False)),
    priceRangeV2=lambda s, a, c: {"__typename": "ProductPriceRangeV2",
                                  "minVariantPrice": mv2(min(v.price for v in s.variants), c.shop.currency),
                                  "maxVariantPrice": mv2(max(v.price for v in s.variants), c.shop.currency)},
    )

reg("ProductVariant",
    id=lambda s, a, c: gid("ProductVariant", s.id), legacyResourceId=lambda s, a, c: str(s.id),
    title=attr("title"), sku=attr("sku"), price=lambda s, a, c: str(s.price), compareAtPrice=const(None),
    displayName=lambda s, a, c: f"{s.product.title} - {s.title}", position=attr("position"),
    product=attr("product"), inventoryItem=lambda s, a, c: InventoryItemRef(s),
    inventoryQuantity=attr("inventory_quantity"), availableForSale=const(True), taxable=const(True),
    barcode=const(None), createdAt=lambda s, a, c: iso(s.created_at), updatedAt=lambda s, a, c: iso(s.updated_at),
    selectedOptions=lambda s, a, c: [{"__typename": "SelectedOption", "name": "Title", "value": s.title}],
    )

reg("InventoryItem",
    id=lambda s, a, c: gid("InventoryItem", s.variant.inventory_item_id),
    legacyResourceId=lambda s, a, c: str(s.variant.inventory_item_id), sku=lambda s, a, c: s.variant.sku,
    tracked=const(False), requiresShipping=const(True),
    unitCost=lambda s, a, c: mv2(s.variant.unit_cost, c.shop.currency) if s.variant.unit_cost is not None else None,
    createdAt=lambda s, a, c: iso(s.variant.created_at), updatedAt=lambda s, a, c: iso(s.variant.updated_at),
    variant=lambda s, a, c: s.variant,
    )

# ----------------------------------------------------------------------------------------------------- misc types

reg("Segment",
    id=lambda s, a, c: gid("Segment", s.id), name=attr("name"), query=attr("query"),
    creationDate=lambda s, a, c: iso(s.created_at), lastEditDate=lambda s, a, c: iso(s.updated_at))

reg("WebhookSubscription",
    id=lambda s, a, c: gid("WebhookSubscription", s.id), legacyResourceId=lambda s, a, c: str(s.id),
    topic=lambda s, a, c: _gql_topic(s.topic), uri=attr("uri"), name=attr("name"), format=attr("format"),
    filter=attr("filter"), includeFields=attr("include_fields"), metafieldNamespaces=const([]),
    metafields=const([]), apiVersion=lambda s, a, c: {"__typename": "ApiVersion", "handle": s.api_version,
                                                      "displayName": s.api_version, "supported": True},
    createdAt=lambda s, a, c: iso(s.created_at), updatedAt=lambda s, a, c: iso(s.updated_at))

reg("BulkOperation",
    id=lambda s, a, c: gid("BulkOperation", s.id), type=attr("type"), status=attr("status"), query=attr("query"),
    createdAt=lambda s, a, c: iso(s.created_at), completedAt=lambda s, a, c: iso(s.completed_at),
    objectCount=lambda s, a, c: str(s.object_count), rootObjectCount=lambda s, a, c: str(s.root_object_count),
    fileSize=lambda s, a, c: None if s.file_size is None else str(s.file_size), url=attr("url"),
    partialDataUrl=attr("partial_data_url"), errorCode=attr("error_code"))


def _discount_status(d: Discount) -> str:
    n = dt.datetime.now(dt.timezone.utc)
    if d.ends_at is not None and d.ends_at <= n:
        return "EXPIRED"
    return "SCHEDULED" if d.starts_at > n else "ACTIVE"


def discount_view(d: Discount) -> dict:
    common = {"title": d.title, "status": _discount_status(d), "startsAt": iso(d.starts_at), "endsAt": iso(d.ends_at),
              "createdAt": iso(d.created_at), "updatedAt": iso(d.updated_at), "tags": d.tags,
              "summary": f"Buy {((d.input.get('customerBuys') or {}).get('value') or {}).get('quantity', '?')}, "
                         f"get {(((d.input.get('customerGets') or {}).get('value') or {}).get('discountOnQuantity') or {}).get('quantity', '?')}",
              "asyncUsageCount": 0, "discountClasses": ["PRODUCT"], "usesPerOrderLimit": d.input.get("usesPerOrderLimit")}
    if d.method == "automatic":
        return {"__typename": "DiscountAutomaticBxgy", **common}
    return {"__typename": "DiscountCodeBxgy", **common, "appliesOncePerCustomer": bool(d.input.get("appliesOncePerCustomer")),
            "usageLimit": d.input.get("usageLimit"), "codesCount": count(1),
            "codes": lambda a, c: _list_conn(list(enumerate([{"__typename": "DiscountRedeemCode", "code": d.code,
                                                              "id": gid("DiscountRedeemCode", d.id), "asyncUsageCount": 0}])), a, False)}


reg("DiscountAutomaticNode", id=lambda s, a, c: gid("DiscountAutomaticNode", s.id),
    automaticDiscount=lambda s, a, c: discount_view(s))
reg("DiscountCodeNode", id=lambda s, a, c: gid("DiscountCodeNode", s.id),
    codeDiscount=lambda s, a, c: discount_view(s))

# Connection / edge / pageInfo objects are plain dicts; their fields resolve by key (see resolve_field).
_ = (Customer, Product, Variant, LineItem, Refund, RefundLine)
