"""Plain in-memory records for one dev shop.

`__slots__` everywhere: a seeded shop holds 100k+ orders and 500k+ line items, and slotted objects are a third
of the size of dict-backed ones. Money is `Decimal` in the shop currency; presentment amounts are derived with
the order's fixed exchange rate. Datetimes are timezone-aware UTC.
"""
from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
UTC = dt.timezone.utc


def money(x) -> Decimal:
    if type(x) is not Decimal:          # a Decimal is exact already: no round trip through str
        x = Decimal(str(x))
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def iso(t: dt.datetime | None) -> str | None:
    """Shopify GraphQL DateTime: ISO 8601 in UTC with a Z."""
    if t is None:
        return None
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def gid(kind: str, num: int) -> str:
    return f"gid://shopify/{kind}/{num}"


def parse_gid(value: str) -> tuple[str, int] | None:
    if not isinstance(value, str) or not value.startswith("gid://shopify/"):
        return None
    parts = value[len("gid://shopify/"):].split("/")
    if len(parts) != 2 or not parts[1].split("?")[0].isdigit():
        return None
    return parts[0], int(parts[1].split("?")[0])


class Customer:
    __slots__ = ("id", "first_name", "last_name", "email", "phone", "tags", "created_at", "updated_at", "country",
                 "note", "state", "locale", "verified_email", "order_ids", "deleted")
    TYPE = "Customer"

    def __init__(self, id, *, first_name=None, last_name=None, email=None, phone=None, tags=(), created_at,
                 country=None, note=None, locale="en"):
        self.id = id
        self.first_name, self.last_name, self.email, self.phone = first_name, last_name, email, phone
        self.tags = list(tags)
        self.created_at = self.updated_at = created_at
        self.country, self.note, self.locale = country, note, locale
        self.state = "DISABLED"
        self.verified_email = bool(email)
        self.order_ids: list[int] = []
        self.deleted = False

    @property
    def display_name(self) -> str:
        name = " ".join(p for p in (self.first_name, self.last_name) if p)
        return name or self.email or self.phone or f"Customer {self.id}"


class Product:
    __slots__ = ("id", "title", "handle", "product_type", "vendor", "tags", "status", "created_at", "updated_at",
                 "variants", "description")
    TYPE = "Product"

    def __init__(self, id, *, title, handle, product_type="", vendor="", tags=(), status="ACTIVE", created_at,
                 description=""):
        self.id, self.title, self.handle, self.product_type, self.vendor = id, title, handle, product_type, vendor
        self.tags, self.status = list(tags), status
        self.created_at = self.updated_at = created_at
        self.variants: list[Variant] = []
        self.description = description


class Variant:
    __slots__ = ("id", "product", "title", "sku", "price", "unit_cost", "inventory_item_id", "position",
                 "inventory_quantity", "created_at", "updated_at")
    TYPE = "ProductVariant"

    def __init__(self, id, *, product, title="Default Title", sku=None, price, unit_cost=None, inventory_item_id,
                 position=1, inventory_quantity=0, created_at):
        self.id, self.product, self.title, self.sku = id, product, title, sku
        self.price, self.unit_cost = money(price), (None if unit_cost is None else money(unit_cost))
        self.inventory_item_id, self.position, self.inventory_quantity = inventory_item_id, position, inventory_quantity
        self.created_at = self.updated_at = created_at


class InventoryItemRef:
    """GraphQL InventoryItem view of a variant (the devstore keeps cost on the variant)."""
    __slots__ = ("variant",)
    TYPE = "InventoryItem"

    def __init__(self, variant):
        self.variant = variant

    @property
    def id(self):
        return self.variant.inventory_item_id


class LineItem:
    __slots__ = ("id", "order", "product_id", "variant_id", "title", "variant_title", "sku", "quantity", "price",
                 "total_discount", "vendor", "product_type", "taxable", "requires_shipping", "refunded_quantity")
    TYPE = "LineItem"

    def __init__(self, id, *, order, product_id, variant_id, title, quantity, price, variant_title=None, sku=None,
                 total_discount=ZERO, vendor=None, product_type=None, taxable=True, requires_shipping=True):
        self.id, self.order = id, order
        self.product_id, self.variant_id = product_id, variant_id
        self.title, self.variant_title, self.sku = title, variant_title, sku
        self.quantity, self.price, self.total_discount = int(quantity), money(price), money(total_discount)
        self.vendor, self.product_type = vendor, product_type
        self.taxable, self.requires_shipping = taxable, requires_shipping
        self.refunded_quantity = 0

    @property
    def original_total(self) -> Decimal:
        return self.price * self.quantity

    @property
    def current_quantity(self) -> int:
        return 0 if self.order.cancelled_at is not None else self.quantity - self.refunded_quantity


class Refund:
    __slots__ = ("id", "order", "created_at", "note", "lines", "amount")
    TYPE = "Refund"

    def __init__(self, id, *, order, created_at, note=None, lines=(), amount=ZERO):
        self.id, self.order, self.created_at, self.note = id, order, created_at, note
        self.lines = list(lines)   # [RefundLine]
        self.amount = money(amount)


class RefundLine:
    __slots__ = ("id", "line_item", "quantity", "subtotal", "restock_type")
    TYPE = "RefundLineItem"

    def __init__(self, id, line_item, quantity, subtotal, restock_type="NO_RESTOCK"):
        self.id, self.line_item, self.quantity, self.subtotal = id, line_item, quantity, money(subtotal)
        self.restock_type = restock_type


class Order:
    __slots__ = ("id", "number", "name", "email", "customer_id", "created_at", "updated_at", "processed_at",
                 "cancelled_at", "cancel_reason", "closed_at", "test", "currency", "presentment_currency", "fx_rate",
                 "line_items", "refunds", "discount_applications", "discount_codes", "tags", "paid", "source_name",
                 "note", "deleted", "shipping")
    TYPE = "Order"

    def __init__(self, id, *, number, email=None, customer_id=None, created_at, processed_at=None, test=False,
                 currency, presentment_currency=None, fx_rate=Decimal(1), tags=(), source_name="web", note=None,
                 paid=True, shipping=ZERO):
        self.id, self.number, self.name = id, number, f"#{number}"
        self.email, self.customer_id = email, customer_id
        self.created_at = self.updated_at = created_at
        self.processed_at = processed_at or created_at
        self.cancelled_at = None
        self.cancel_reason = None
        self.closed_at = None
        self.test = test
        self.currency = currency
        self.presentment_currency = presentment_currency or currency
        self.fx_rate = Decimal(fx_rate)
        self.line_items: list[LineItem] = []
        self.refunds: list[Refund] = []
        self.discount_applications: list[dict] = []   # REST-shaped: type, value, value_type, title/code, ...
        self.discount_codes: list[dict] = []          # [{"code", "amount", "type"}]
        self.tags = list(tags)
        self.paid = paid
        self.source_name, self.note = source_name, note
        self.deleted = False
        self.shipping = money(shipping)

    # Totals: no taxes in the devstore (prices are tax-inclusive GBP in the seeded data, taxes_included=true).
    @property
    def total_line_items_price(self) -> Decimal:
        return sum((li.original_total for li in self.line_items), ZERO)

    @property
    def total_discounts(self) -> Decimal:
        return sum((li.total_discount for li in self.line_items), ZERO)

    @property
    def subtotal_price(self) -> Decimal:
        return self.total_line_items_price - self.total_discounts

    @property
    def total_price(self) -> Decimal:
        return self.subtotal_price + self.shipping

    @property
    def total_refunded(self) -> Decimal:
        return sum((r.amount for r in self.refunds), ZERO)

    def _current_line_total(self, li: LineItem) -> tuple[Decimal, Decimal]:
        q = li.current_quantity
        if li.quantity == 0:
            return ZERO, ZERO
        if not li.total_discount:          # the common case, without the Decimal division and rounding
            return li.price * q, ZERO
        disc = money(li.total_discount * q / li.quantity)
        return li.price * q, disc

    @property
    def current_subtotal_price(self) -> Decimal:
        if self.cancelled_at is not None:
            return ZERO
        tot = ZERO
        for li in self.line_items:
            gross, disc = self._current_line_total(li)
            tot += gross - disc
        return tot

    @property
    def current_total_discounts(self) -> Decimal:
        if self.cancelled_at is not None:
            return ZERO
        return sum((self._current_line_total(li)[1] for li in self.line_items), ZERO)

    @property
    def current_total_price(self) -> Decimal:
        if self.cancelled_at is not None:
            return ZERO
        return self.current_subtotal_price + self.shipping

    @property
    def financial_status(self) -> str:
        """REST financial_status (lower case); GraphQL displayFinancialStatus is the upper-case form."""
        if self.refunds:
            return "refunded" if self.total_refunded >= self.total_price else "partially_refunded"
        if self.cancelled_at is not None and not self.paid:
            return "voided"
        return "paid" if self.paid else "pending"

    def presentment(self, amount: Decimal) -> Decimal:
        return money(amount * self.fx_rate)


class Discount:
    __slots__ = ("id", "kind", "method", "title", "code", "starts_at", "ends_at", "input", "created_at",
                 "updated_at", "tags")
    # kind: "bxgy"; method: "automatic" | "code"

    def __init__(self, id, *, kind, method, title, code=None, starts_at, ends_at=None, input=None, created_at,
                 tags=()):
        self.id, self.kind, self.method, self.title, self.code = id, kind, method, title, code
        self.starts_at, self.ends_at, self.input = starts_at, ends_at, input or {}
        self.created_at = self.updated_at = created_at
        self.tags = list(tags)

    @property
    def TYPE(self):  # noqa: N802 - mirrors the class attribute other records have
        return "DiscountAutomaticNode" if self.method == "automatic" else "DiscountCodeNode"


class Segment:
    __slots__ = ("id", "name", "query", "created_at", "updated_at")
    TYPE = "Segment"

    def __init__(self, id, *, name, query, created_at):
        self.id, self.name, self.query = id, name, query
        self.created_at = self.updated_at = created_at


class WebhookSubscription:
    __slots__ = ("id", "topic", "uri", "api_key", "name", "format", "filter", "include_fields", "created_at",
                 "updated_at", "api_version")
    TYPE = "WebhookSubscription"

    def __init__(self, id, *, topic, uri, api_key, name=None, format="JSON", filter=None, include_fields=(),
                 created_at, api_version="2026-10"):
        self.id, self.topic, self.uri, self.api_key, self.name = id, topic, uri, api_key, name
        self.format, self.filter, self.include_fields = format, filter, list(include_fields or ())
        self.created_at = self.updated_at = created_at
        self.api_version = api_version


class BulkOperation:
    __slots__ = ("id", "type", "status", "query", "created_at", "completed_at", "object_count", "root_object_count",
                 "file_size", "url", "partial_data_url", "error_code", "api_key", "path", "shop_domain", "done",
                 "variables_path")
    TYPE = "BulkOperation"

    def __init__(self, id, *, type, query, created_at, api_key, shop_domain):
        import threading
        self.id, self.type, self.query, self.created_at = id, type, query, created_at
        self.status = "CREATED"
        self.completed_at = None
        self.object_count = self.root_object_count = 0
        self.file_size = None
        self.url = self.partial_data_url = None
        self.error_code = None
        self.api_key, self.shop_domain = api_key, shop_domain
        self.path = None
        self.variables_path = None
        self.done = threading.Event()
