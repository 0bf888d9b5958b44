"""The analytics' view of one order version, independent of where it came from.

The platform layer converts a webhook payload (REST JSON) or a bulk-import node (GraphQL JSONL) into an
`OrderVersion`; the analytics only ever see this. Money is shop money (the shop's currency).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OrderLine:
    id: int
    product_id: int | None          # None: custom item, gift card, tip -> kept out of product rules
    variant_id: int | None = None
    product_type: str | None = None
    quantity: int = 1
    refunded_quantity: int = 0
    price: float = 0.0              # unit price
    discount: float = 0.0           # total discount allocated to this line


@dataclass(frozen=True)
class OrderVersion:
    id: int
    processed_at: dt.datetime       # naive UTC; the order time the analytics use
    updated_at: dt.datetime         # naive UTC; Shopify's updated_at = the version (last writer wins)
    customer_id: int | None = None  # None: guest checkout
    name: str | None = None
    cancelled: bool = False
    test: bool = False
    deleted: bool = False           # orders/delete: a tombstone, newer than every version it replaces
    currency: str = "USD"
    subtotal: float = 0.0           # after discounts, before shipping and tax
    total_discounts: float = 0.0
    refunded: float = 0.0           # sum of refunds (shop money)
    financial_status: str | None = None
    lines: tuple[OrderLine, ...] = field(default_factory=tuple)

    @property
    def counted(self) -> bool:
        """Cancelled, test and deleted orders do not count for any metric."""
        return not (self.cancelled or self.test or self.deleted)

    @property
    def net_revenue(self) -> float:
        return round(self.subtotal - self.refunded, 2)
