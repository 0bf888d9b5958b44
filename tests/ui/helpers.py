"""Browser test helpers: what App Bridge would do (add a fresh session token), number parsing, DB truths."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import func, select

from shopify_app.models import CustomerStats


def with_token(env, href: str, shop: str | None = None) -> str:
    """`href` (an internal link of the page: shop/host/embedded only) with a fresh id_token added, as App Bridge
    does when the bounce page reloads it."""
    parts = urlsplit(href)
    q = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "id_token"]
    q.append(("id_token", env.token(shop)))
    base = env.base_url if not parts.netloc else f"{parts.scheme}://{parts.netloc}"
    return urlunsplit((urlsplit(base).scheme, urlsplit(base).netloc, parts.path, urlencode(q), ""))


def follow(env, page, locator, shop: str | None = None):
    """Navigate to an internal link's target with a fresh token (a click without App Bridge would bounce)."""
    href = locator.get_attribute("href")
    assert href, "link without href"
    return page.goto(with_token(env, page.evaluate("h => new URL(h, location.href).href", href), shop))


def to_int(text: str) -> int:
    digits = re.sub(r"[^\d\-]", "", text.replace("\u2212", "-"))
    return int(digits)


def to_float(text: str) -> float:
    cleaned = re.sub(r"[^\d.\-]", "", text.replace("\u2212", "-").replace(",", ""))
    return float(cleaned)


def segment_counts(env, shop_id: int | None = None) -> dict[str, int]:
    """Customers per named segment, straight from the database (customers with at least one counted order)."""
    with env.db() as s:
        rows = s.execute(select(CustomerStats.segment, func.count()).where(
            CustomerStats.shop_id == (shop_id or env.shop_id), CustomerStats.orders_count > 0,
            CustomerStats.segment.is_not(None)).group_by(CustomerStats.segment)).all()
    return {seg: int(n) for seg, n in rows}


def segment_members(env, segment: str, shop_id: int | None = None) -> set[int]:
    with env.db() as s:
        return set(s.scalars(select(CustomerStats.customer_id).where(
            CustomerStats.shop_id == (shop_id or env.shop_id), CustomerStats.segment == segment)))


def slugify(name: str) -> str:
    """Same rule as the app's (lowercase, non-alphanumerics to '-'); asserted against the page's data-segment."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
