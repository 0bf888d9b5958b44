"""Bench: devstore bulk export of N synthetic orders (orders + line items JSONL), and paging with first: 250.

    .venv/bin/python bench/bench_devstore_bulk.py [N]
"""
from __future__ import annotations

import sys
import time

from shopify_app.devstore import App, DevStore
from shopify_app.devstore.graphql_api import run_graphql
from shopify_app.devstore.resolvers import Ctx

SHOP = "bench.myshopify.com"
BULK = ("{ orders { edges { node { id createdAt customer { id } currentTotalPriceSet { shopMoney { amount } } "
        "lineItems { edges { node { id quantity variant { id } } } } } } } }")
PAGE = ("query($after: String) { orders(first: 250, after: $after, sortKey: UPDATED_AT) { pageInfo { hasNextPage "
        "endCursor } nodes { id updatedAt } } }")


def main(n: int = 100_000) -> None:
    store = DevStore(apps=[App("k", "s" * 32)], bucket_size=1e9, restore_rate=1e9)
    store.create_shop(SHOP)
    t = time.perf_counter()
    store.generate_orders(SHOP, n, customers=max(1, n // 50), products=300, lines_per_order=3)
    print(f"generate {n} orders: {time.perf_counter() - t:.1f}s")
    ctx = Ctx(store, store.shop(SHOP), "k", store.apps["k"].scopes, "http://bench")
    t = time.perf_counter()
    run_graphql(ctx, {"query": "mutation($q: String!) { bulkOperationRunQuery(query: $q, groupObjects: true) "
                               "{ bulkOperation { id } } }", "variables": {"q": BULK}})
    op = next(iter(store.shop(SHOP).bulk_operations.values()))
    op.done.wait()
    dt_ = time.perf_counter() - t
    print(f"bulk export: {op.object_count} lines, {op.file_size / 1e6:.1f} MB in {dt_:.1f}s "
          f"({op.object_count / dt_:,.0f} lines/s)")
    t, after, pages = time.perf_counter(), None, 0
    while pages < 20:
        body = run_graphql(Ctx(store, store.shop(SHOP), "k", store.apps["k"].scopes, "http://bench"),
                           {"query": PAGE, "variables": {"after": after}})
        pages += 1
        info = body["data"]["orders"]["pageInfo"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    print(f"paging: {pages} pages of 250 in {time.perf_counter() - t:.2f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
