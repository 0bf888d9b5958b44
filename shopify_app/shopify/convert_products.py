"""Shopify product and customer payloads -> the plain dicts our Product / Customer rows are written from.

Three shapes: the catalogue sync's bulk JSONL (documents/bulk_products_query.graphql, `products_from_jsonl`), a
GraphQL Product node with `variants { nodes }` inline (`product_from_node`), and REST webhook payloads
(products/create, products/update, customers/create|update|delete). Customers: only the id, tags and times are
kept — no names, emails, phones or addresses (the app never needs them, so it never holds protected customer data).
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable, Iterator

from shopify_app.shopify.convert import _int_or_none, parse_time
from shopify_app.shopify.convert_bulk import _legacy_id


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def product_from_node(node: dict) -> dict:
    variants = ((node.get("variants") or {}).get("nodes")) or []
    cost = _unit_cost(variants[0]) if variants else None
    pid = _legacy_id(node)
    if pid is None:
        raise ValueError("product without an id")
    return {"id": pid, "title": (node.get("title") or "")[:512], "product_type": (node.get("productType") or "")[:255],
            "vendor": (node.get("vendor") or "")[:255], "unit_cost": cost,
            "shopify_updated_at": parse_time(node.get("updatedAt"))}


def _unit_cost(variant: dict) -> float | None:
    return _float((((variant or {}).get("inventoryItem") or {}).get("unitCost") or {}).get("amount"))


def products_from_jsonl(lines: Iterable[dict]) -> Iterator[dict]:
    """Product rows (as product_from_node) from the bulk JSONL objects of bulk_products_query.graphql.

    A product's unit cost is its first variant's (lowest `position`; file order breaks ties), like the paged
    query's `variants(first: 1)`. Since API 2026-01 bulk output is not grouped by default (groupObjects: false):
    a variant line may come anywhere in the file, so nothing is yielded before the whole file has been read.
    Memory is one small row per product plus its best variant (a 100k-product catalogue is a few tens of MB).
    Root lines are products (the query's only root connection); a product line without a usable id and child
    lines that are not variants are skipped."""
    products: dict[str, dict] = {}                          # product gid -> row (unit cost filled in at the end)
    best: dict[str, tuple[int, float | None]] = {}          # product gid -> (position, unit cost)
    for obj in lines:
        if not isinstance(obj, dict):
            continue
        parent = obj.get("__parentId")
        if parent is None:
            try:
                products[str(obj.get("id"))] = product_from_node(obj)
            except (TypeError, ValueError):
                pass
            continue
        if not str(obj.get("id", "")).startswith("gid://shopify/ProductVariant/"):
            continue
        try:
            pos = int(obj["position"])
        except (KeyError, TypeError, ValueError):
            pos = 1 << 30                                   # no position: after every positioned variant
        if parent not in best or pos < best[parent][0]:
            best[parent] = (pos, _unit_cost(obj))
    for gid, row in products.items():
        row["unit_cost"] = best[gid][1] if gid in best else None
        yield row


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
