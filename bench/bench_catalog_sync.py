"""Bench: product catalogue sync of the full Online Retail catalogue, paged GraphQL (before) vs bulk query (after).

    .venv/bin/python bench/bench_catalog_sync.py [--database-url URL] [--data PATH] [--skip-paged]

The stand-in (shopify_app.devstore, default cost-based throttle) is seeded with UCI Online Retail
(/work/shared/data/online_retail.csv.gz: ~4,000 products, each with one variant and a unit cost) by
shopify_app.devstore.seed.seed_online_retail and served over HTTP in this process; the app is installed into a
fresh database (a temporary SQLite file, or --database-url, e.g. PostgreSQL).

- paged (before): the removed path, run from git history: documents/products_page.graphql as of commit
  BEFORE_COMMIT, 100 products per page through AdminClient.paginate (which waits for the leaky bucket), one
  apply_product per row, 500 rows per transaction -- exactly what workers.catalog_jobs.sync_products did;
- bulk (after): workers.catalog_jobs.sync_products (bulk query, JSONL, batched upsert).

The Product table is emptied before each run; both runs must leave identical rows (checked, reported as
`identical`). Times are wall-clock seconds of the whole sync (seeding is timed separately). Ends with exactly one
line `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data/online_retail.csv.gz")
SHOP = "online-retail.myshopify.com"
KEY, SECRET = "bench-api-key-0123456789", "bench-api-secret-0123456789abcdef-0123"
BEFORE_COMMIT = "c834c26"          # last commit with the paged sync (documents/products_page.graphql)
PAGE_SIZE, PAGED_BATCH = 100, 500


def old_products_page() -> str:
    return subprocess.run(["git", "show", f"{BEFORE_COMMIT}:shopify_app/shopify/documents/products_page.graphql"],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout


def paged_sync(shop_id: int) -> dict:
    """The pre-bulk sync_products loop, verbatim but for the document source."""
    from shopify_app.shopify.convert_products import product_from_node
    from workers import context
    from workers.catalog_jobs import apply_product

    source = old_products_page()
    seen = changed = 0
    pending: list[dict] = []

    def flush() -> None:
        nonlocal changed
        with context.transaction() as s:
            for row in pending:
                changed += apply_product(s, shop_id, row)
        pending.clear()
    client = context.admin_client(shop_id)
    for node in client.paginate(source, "products", {"first": PAGE_SIZE}):
        pending.append(product_from_node(node))
        seen += 1
        if len(pending) >= PAGED_BATCH:
            flush()
    flush()
    return {"products": seen, "changed": changed}


def snapshot(shop_id: int) -> list[tuple]:
    from sqlalchemy import select

    from shopify_app.models import Product
    from workers import context

    with context.transaction() as s:
        return [tuple(r) for r in s.execute(
            select(Product.id, Product.title, Product.product_type, Product.vendor, Product.unit_cost,
                   Product.shopify_updated_at).where(Product.shop_id == shop_id).order_by(Product.id))]


def clear_products(shop_id: int) -> None:
    from sqlalchemy import delete

    from shopify_app.models import Product
    from workers import context

    with context.transaction() as s:
        s.execute(delete(Product).where(Product.shop_id == shop_id))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--skip-paged", action="store_true", help="only the bulk path (the paged one takes minutes)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from shopify_app.cli import drop_everything, upgrade_database
    from shopify_app.config import Config
    from shopify_app.db import session_scope
    from shopify_app.devstore import App, DevStore, start_devstore_server
    from shopify_app.devstore.seed import seed_online_retail
    from shopify_app.shopify.install import install_with_access_token
    from shopify_app.shopify.oauth import AccessToken
    from workers import context
    from workers.catalog_jobs import sync_products

    tmp = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    drop_everything(url)
    upgrade_database(url)

    store = DevStore(apps=[App(KEY, SECRET, "https://app.test")])
    t0 = time.perf_counter()
    seeded = seed_online_retail(store, SHOP, args.data)
    seed_s = time.perf_counter() - t0
    base, stop = start_devstore_server(store)
    cfg = Config(env="test", api_key=KEY, api_secret=SECRET, database_url=url, redis_url="",
                 instance_path=str(tmp / "instance"), app_url="https://app.test",
                 shopify_admin_base=f"{base}/shops/{{shop}}")
    context.set_config(cfg)
    token = store.install_app(SHOP, KEY)
    with session_scope(cfg.sqlalchemy_url) as s:
        shop_id = install_with_access_token(s, cfg, SHOP, AccessToken(access_token=token,
                                                                      scope=store.apps[KEY].scopes)).id
    n_products = len(store.shop(SHOP).products)

    result: dict = {"dialect": url.split(":", 1)[0], "products_in_store": n_products,
                    "orders_in_store": seeded.get("orders"), "seed_s": round(seed_s, 1)}
    try:
        paged_rows = None
        if not args.skip_paged:
            clear_products(shop_id)
            t0 = time.perf_counter()
            paged = paged_sync(shop_id)
            result["paged_s"] = round(time.perf_counter() - t0, 2)
            result["paged_products"] = paged["products"]
            paged_rows = snapshot(shop_id)
        clear_products(shop_id)
        t0 = time.perf_counter()
        bulk = sync_products(shop_id, poll_interval=0.2)
        result["bulk_s"] = round(time.perf_counter() - t0, 2)
        result["bulk_products"] = bulk.get("products")
        assert bulk["status"] == "done", bulk
        bulk_rows = snapshot(shop_id)
        t0 = time.perf_counter()
        rerun = sync_products(shop_id, poll_interval=0.2)          # nothing changed: reads, writes nothing
        result["bulk_rerun_s"] = round(time.perf_counter() - t0, 2)
        result["bulk_rerun_changed"] = rerun.get("changed")
        result["rows"] = len(bulk_rows)
        if paged_rows is not None:
            result["identical"] = paged_rows == bulk_rows
            result["speedup"] = round(result["paged_s"] / result["bulk_s"], 1) if result["bulk_s"] else None
    finally:
        stop()
        context.set_config(None)
    print("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
