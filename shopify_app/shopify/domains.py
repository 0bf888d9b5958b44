"""Shop domains: the one place that knows what a valid `NAME.myshopify.com` is."""
from __future__ import annotations

import re

SHOP_DOMAIN_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]*\.myshopify\.com$")


def valid_shop_domain(shop: str | None) -> str | None:
    """The lower-cased shop domain when it is NAME.myshopify.com, else None."""
    if shop and SHOP_DOMAIN_RE.fullmatch(shop):
        return shop.lower()
    return None
