"""Shopify product and customer payloads -> the plain dicts our Product / Customer rows are written from.

Two shapes: GraphQL nodes (the catalogue sync, products_page.graphql) and REST webhook payloads (products/create,
products/update, customers/create|update|delete). Customers: only the id, tags and times are kept — no names,
emails, phones or addresses (the app never needs them, so it never holds protected customer data).
"""
from __future__ import annotations

import datetime as dt

from shopify_app.shopify.convert import _int_or_none, parse_time
from shopify_app.shopify.convert_bulk import _legacy_id


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def product_from_node(node: dict) -> dict:
    variants = ((node.get("variants") or {}).get("nodes")) or []
    cost = None
    if variants:
        unit = ((variants[0] or {}).get("inventoryItem") or {}).get("unitCost") or {}
        cost = _float(unit.get("amount"))
    pid = _legacy_id(node)
    if pid is None:
        raise ValueError("product without an id")
    return {"id": pid, "title": (node.get("title") or "")[:512], "product_type": (node.get("productType") or "")[:255],
            "vendor": (node.get("vendor") or "")[:255], "unit_cost": cost,
            "shopify_updated_at": parse_time(node.get("updatedAt"))}


def product_from_rest(payload: dict) -> dict:
    pid = _int_or_none(payload.get("id"))
    if pid is None:
        raise ValueError("product payload without an id")
    return {"id": pid, "title": (payload.get("title") or "")[:512],
            "product_type": (payload.get("product_type") or "")[:255],
            "vendor": (payload.get("vendor") or "")[:255],
            "shopify_updated_at": parse_time(payload.get("updated_at"))}   # REST has no unit cost: kept as is


def customer_from_rest(payload: dict, deleted_at: dt.datetime | None = None) -> dict:
    cid = _int_or_none(payload.get("id"))
    if cid is None:
        raise ValueError("customer payload without an id")
    tags = payload.get("tags")
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    elif not isinstance(tags, list):
        tags = None                                     # customers/delete carries no tags: keep what we have
    return {"id": cid, "tags": tags, "shopify_updated_at": parse_time(payload.get("updated_at")),
            "created_at": parse_time(payload.get("created_at")), "deleted_at": deleted_at}
