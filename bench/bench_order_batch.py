"""Order job batch cost on real invoices: `process_shop_orders` over batches of real Online Retail invoices.

Builds a fresh database (SQLite file, or --database-url), one shop, and --rounds batches of --orders REST order
deliveries made from Online Retail invoices in time order (the freshness bench's basket loader; customers mapped
to 5,000 ids, orders one second apart, so repeat customers' orders fall inside each other's sequential window as
in bench (d)), then applies each batch with one `process_shop_orders` call + commit, as the order job does.
Reports seconds and ms per order for every round, with the batch's pair increments. --profile prints a cProfile
of the last round (where the time goes).

    .venv/bin/python bench/bench_order_batch.py [--orders 200] [--rounds 3] [--database-url URL] [--profile]

Ends with one line: RESULT {json}. No target of its own: it is the microscope for bench (d).
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_freshness import load_invoices  # noqa: E402
from bench_order_update import rest_payload  # noqa: E402

from shopify_app.cli import upgrade_database  # noqa: E402
from shopify_app.db import session_factory  # noqa: E402
from shopify_app.models import Shop, WebhookDelivery  # noqa: E402
from workers.order_jobs import process_shop_orders  # noqa: E402

NOW = dt.datetime(2026, 11, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=200, help="orders per batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--database-url", default=None, help="an empty scratch database (default: a SQLite file)")
    ap.add_argument("--profile", action="store_true", help="cProfile the last round")
    args = ap.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='bench_batch_')}/b.sqlite3"
    upgrade_database(url)
    factory = session_factory(url)
    with factory() as s:
        shop = Shop(domain="batch.myshopify.com", status="active", settings={})
        s.add(shop)
        s.commit()
        shop_id = shop.id
    n = args.orders
    invoices = load_invoices(None, n * args.rounds, False, random.Random(1))
    products: dict[str, int] = {}
    oid = 1000
    rounds = []
    profiler = None
    for r in range(args.rounds):
        batch = invoices[r * n:(r + 1) * n]
        with factory() as s:
            for cust, lines in batch:
                oid += 1
                rows = [(oid * 1000 + i, products.setdefault(code, len(products) + 1), q, float(price))
                        for i, (code, _title, _type, price, q) in enumerate(lines)]
                customer = zlib.crc32(str(cust).encode()) % 5000 + 1 if cust else None   # stable across runs
                t = NOW + dt.timedelta(seconds=oid)
                payload = rest_payload(oid, customer, t, t, rows)
                if customer is None:
                    payload["customer"] = None
                s.add(WebhookDelivery(shop_id=shop_id, shop_domain="batch.myshopify.com", topic="orders/create",
                                      webhook_id=f"w{oid}", status="pending_analytics", body=json.dumps(payload)))
            s.commit()
        pairs = sum(len(ls) * (len(ls) - 1) // 2 for _, ls in batch)
        if args.profile and r == args.rounds - 1:
            profiler = cProfile.Profile()
        with factory() as s:
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            res = process_shop_orders(s, shop_id, limit=n, now=NOW + dt.timedelta(days=1))
            s.commit()
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - t0
        rounds.append({"orders": res["applied"], "pair_increments": pairs, "seconds": round(elapsed, 3),
                       "ms_per_order": round(elapsed / n * 1000, 2)})
        print(f"round {r}: {res['applied']} orders, {pairs} pair increments, {elapsed:.2f} s, "
              f"{elapsed / n * 1000:.1f} ms/order", flush=True)
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    print("RESULT " + json.dumps({"bench": "order_batch", "db": url.split(":", 1)[0], "rounds": rounds}))


if __name__ == "__main__":
    main()
