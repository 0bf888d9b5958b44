"""Catalogue and customer records (queue `default`): product titles, types and unit costs; customer tags.

- `sync_products(shop_id)`: pages through the shop's products (products_page.graphql, 100 per page) and upserts
  Product rows. Enqueued after the history import, so bundle suggestions show titles, not ids. Idempotent.
- `apply_product(s, shop_id, row)` / `apply_customer(s, shop_id, row)`: last writer wins by Shopify's updated_at,
  used by the sync and by the webhook intake (products/create|update, customers/create|update|delete), which
  handles those topics itself: they are single-row upserts with no analytics to do.

A 401 marks the shop needs_reauth and stops, like every job that speaks to Shopify.
"""
from __future__ import annotations

import logging

from shopify_app.models import Customer, Product, Shop
from shopify_app.shopify.convert_products import product_from_node
from shopify_app.shopify.graphql import ShopifyAuthError

from . import context

log = logging.getLogger(__name__)
JOB_PATH = "workers.catalog_jobs.sync_products"
PAGE_SIZE = 100
BATCH = 500


def _newer(incoming, stored) -> bool:
    return stored is None or incoming is None or incoming >= stored


def apply_product(s, shop_id: int, row: dict) -> bool:
    """Upsert one product; an older version (by updated_at) than the stored one is ignored. REST payloads carry no
    unit cost (`unit_cost` absent): the stored cost is kept."""
    p = s.get(Product, (shop_id, row["id"]))
    if p is not None and not _newer(row.get("shopify_updated_at"), p.shopify_updated_at):
        return False
    if p is None:
        p = Product(shop_id=shop_id, id=row["id"])
        s.add(p)
    for k in ("title", "product_type", "vendor", "shopify_updated_at"):
        setattr(p, k, row.get(k) if row.get(k) is not None else getattr(p, k))
    if "unit_cost" in row:
        p.unit_cost = row["unit_cost"]
    return True


def apply_customer(s, shop_id: int, row: dict) -> bool:
    """Upsert one customer record (id, tags, times; nothing personal). A delete marks deleted_at."""
    c = s.get(Customer, (shop_id, row["id"]))
    if c is not None and not _newer(row.get("shopify_updated_at"), c.shopify_updated_at) and not row.get("deleted_at"):
        return False
    if c is None:
        c = Customer(shop_id=shop_id, id=row["id"], tags=[])
        s.add(c)
    if row.get("tags") is not None:
        c.tags = row["tags"]
    c.shopify_updated_at = row.get("shopify_updated_at") or c.shopify_updated_at
    c.created_at = c.created_at or row.get("created_at")
    if row.get("deleted_at"):
        c.deleted_at = row["deleted_at"]
    return True


def sync_products(shop_id: int, *, client_kw: dict | None = None) -> dict:
    with context.transaction() as s:
        shop = s.get(Shop, shop_id)
        if shop is None or shop.status in ("uninstalled", "needs_reauth"):
            return {"shop_id": shop_id, "status": "skipped"}
    seen = changed = 0
    pending: list[dict] = []

    def flush() -> None:
        nonlocal changed
        with context.transaction() as s:
            for row in pending:
                changed += apply_product(s, shop_id, row)
        pending.clear()
    try:
        client = context.admin_client(shop_id, **(client_kw or {}))
        for node in client.paginate("products_page", "products", {"first": PAGE_SIZE}):
            try:
                pending.append(product_from_node(node))
            except ValueError as exc:
                log.warning("shop %s: skipped a product: %s", shop_id, exc)
                continue
            seen += 1
            if len(pending) >= BATCH:
                flush()
        flush()
    except ShopifyAuthError:
        context.mark_shop_needs_reauth(shop_id)
        return {"shop_id": shop_id, "status": "needs_reauth", "products": seen, "changed": changed}
    return {"shop_id": shop_id, "status": "done", "products": seen, "changed": changed}


def enqueue_sync_products(config, shop_id: int):
    from shopify_app.queues import DEFAULT, enqueue

    return enqueue(config, DEFAULT, JOB_PATH, shop_id, job_id=f"sync-products-{shop_id}")
