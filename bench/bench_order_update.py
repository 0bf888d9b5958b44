"""Bench (b): per-order incremental update time with a small vs a large order history in the database.

Two SQLite databases (migrated like production) are filled with bulk inserts: the same shop shape (customers
with ~5 orders each over 3 years, 1-4 products per order out of 2,000) with --small (5k) and --large (500k)
orders of history, with their OrderLine, CustomerStats (scored), item / basket count rows, pair count blobs (one per bucket, the
live layout), sequential rows, and
a stored RFM model. Then the same stream of new orders (80 % new orders of existing customers, 20 % updates of
a history order of that customer, i.e. a replacement of its stored contribution) is applied, one webhook
delivery per `process_shop_orders` call + commit, alternating between the two databases so that machine noise
hits both alike. Per-order time = that call + commit. Ratio = large / small (median); target <= 1.5.

    .venv/bin/python bench/bench_order_update.py [--small 5000] [--large 500000] [--orders 400] [--dir DIR]

Ends with one line: RESULT {json}.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from shopify_app.analytics.counts import encode_pairs  # noqa: E402
from shopify_app.analytics.sequential import customer_sequential_counts  # noqa: E402
from shopify_app.cli import upgrade_database  # noqa: E402
from shopify_app.db import dispose_all, session_factory  # noqa: E402
from shopify_app.models import (  # noqa: E402
    ALL_SEGMENTS, BasketCountDelta, CustomerStats, ItemCountDelta, Order, OrderLine, PairCountBlob,
    SequentialItemDelta, SequentialPairDelta, Shop, ShopModel, WebhookDelivery,
)
from workers.order_jobs import process_shop_orders  # noqa: E402
from workers.rfm_jobs import fit_edges, score_customer  # noqa: E402

NOW = dt.datetime(2026, 6, 1, 12, 0)
PRODUCTS = 2000
ORDERS_PER_CUSTOMER = 5
FIXTURE = json.loads((ROOT / "shopify_app/devstore/fixtures/orders__create.json").read_text())
CHUNK = 20_000


def bucket(t: dt.datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


# --------------------------------------------------------------------------------------------- history
def make_history(n_orders: int, seed: int):
    """Orders: list of (id, customer, time, [(line id, product, qty, price)])."""
    rng = random.Random(seed)
    n_customers = max(1, n_orders // ORDERS_PER_CUSTOMER)
    orders = []
    for oid in range(1, n_orders + 1):
        cust = rng.randint(1, n_customers)
        t = NOW - dt.timedelta(days=rng.uniform(1, 3 * 365))
        t = t.replace(microsecond=0)
        prods = rng.sample(range(1, PRODUCTS + 1), rng.randint(1, 4))
        lines = [(oid * 10 + i, p, rng.randint(1, 3), round(rng.uniform(5, 60), 2)) for i, p in enumerate(prods)]
        orders.append((oid, cust, t, lines))
    return orders, n_customers


def fill(url: str, n_orders: int, seed: int) -> dict:
    t0 = time.perf_counter()
    upgrade_database(url)
    orders, n_customers = make_history(n_orders, seed)
    s = session_factory(url)()
    shop = Shop(domain="bench.myshopify.com", status="active", settings={})
    s.add(shop)
    s.flush()
    sid = shop.id
    order_rows, line_rows = [], []
    stats: dict = {}
    items, pairs, baskets = Counter(), Counter(), Counter()
    by_customer = defaultdict(list)
    for oid, cust, t, lines in orders:
        subtotal = round(sum(q * p for _, _, q, p in lines), 2)
        prods = sorted({p for _, p, _, _ in lines})
        b = bucket(t)
        contribution = {"counted": True, "customer_id": cust, "bucket": b, "time": t.isoformat(),
                        "revenue": subtotal, "refunded": 0.0, "net": subtotal, "discount": 0.0,
                        "pre_discount": subtotal, "discounted": 0, "refunded_order": 0,
                        "items_count": sum(q for _, _, q, _ in lines), "items": prods, "product_types": {}}
        order_rows.append({"shop_id": sid, "id": oid, "name": f"#{oid}", "customer_id": cust, "processed_at": t,
                           "shopify_updated_at": t, "test": False, "financial_status": "paid", "currency": "USD",
                           "subtotal": subtotal, "total_discounts": 0.0, "total_refunded": 0.0,
                           "net_revenue": subtotal, "counted": True, "contribution": contribution,
                           "ingested_at": NOW})
        for lid, p, q, price in lines:
            line_rows.append({"shop_id": sid, "order_id": oid, "id": lid, "product_id": p, "variant_id": None,
                              "product_type": None, "quantity": q, "refunded_quantity": 0, "price": price,
                              "discount": 0.0})
        st = stats.setdefault(cust, {"first": t, "last": t, "n": 0, "rev": 0.0, "items": 0})
        st["first"], st["last"] = min(st["first"], t), max(st["last"], t)
        st["n"] += 1
        st["rev"] = round(st["rev"] + subtotal, 2)
        st["items"] += contribution["items_count"]
        baskets[b] += 1
        for p in prods:
            items[(b, p)] += 1
        for a, c in combinations(prods, 2):
            pairs[(b, a, c)] += 1
        by_customer[cust].append((t, prods))
    edges = fit_edges([(st["last"], st["n"], st["rev"]) for st in stats.values()], NOW)
    stat_rows = []
    for cust, st in stats.items():
        days, r, f, m, seg = score_customer(st["last"], st["n"], st["rev"], edges, "default", NOW)
        stat_rows.append({"shop_id": sid, "customer_id": cust, "first_order_at": st["first"],
                          "last_order_at": st["last"], "orders_count": st["n"], "gross_revenue": st["rev"],
                          "refunded": 0.0, "net_revenue": st["rev"], "discounted_orders": 0, "discount_total": 0.0,
                          "pre_discount_total": st["rev"], "refunded_orders": 0, "items_count": st["items"],
                          "product_type_counts": {}, "recency_days": days, "r_score": r, "f_score": f,
                          "m_score": m, "segment": seg, "segment_since": NOW, "scored_at": NOW})
    seq_items, seq_pairs = Counter(), Counter()
    for olist in by_customer.values():
        i, p = customer_sequential_counts(olist, 14)
        seq_items.update(i)
        seq_pairs.update(p)
    s.add(ShopModel(shop_id=sid, kind="rfm", params={"edges": edges, "scheme": "default",
                                                     "customers_now": len(stats)},
                    customers_at_fit=len(stats), fitted_at=NOW))
    s.add(ShopModel(shop_id=sid, kind="sequential", params={"days": 14}, fitted_at=NOW))
    base = {"shop_id": sid, "segment": ALL_SEGMENTS}
    tables = [
        (Order, order_rows), (OrderLine, line_rows), (CustomerStats, stat_rows),
        (BasketCountDelta, [{**base, "bucket": b, "baskets": n} for b, n in baskets.items()]),
        (ItemCountDelta, [{**base, "bucket": b, "item_id": i, "count": n} for (b, i), n in items.items()]),
        (PairCountBlob, pair_blobs(base, pairs)),
        (SequentialItemDelta, [{"shop_id": sid, "bucket": b, "item_id": i, "count": n}
                               for (b, i), n in seq_items.items()]),
        (SequentialPairDelta, [{"shop_id": sid, "bucket": b, "item_a": a, "item_b": c, "count": n}
                               for (b, a, c), n in seq_pairs.items()]),
    ]
    for model, rows in tables:
        for k in range(0, len(rows), CHUNK):
            s.execute(insert(model.__table__), rows[k:k + CHUNK])
    s.commit()
    s.close()
    return {"shop_id": sid, "orders": n_orders, "customers": len(stats), "lines": len(line_rows),
            "pair_rows": len(pairs), "seq_pair_rows": len(seq_pairs), "build_s": round(time.perf_counter() - t0, 1),
            "history": orders, "n_customers": n_customers}


def pair_blobs(base: dict, pairs: dict) -> list[dict]:
    by_bucket: dict = defaultdict(list)
    for (b, a, c), n in pairs.items():
        by_bucket[b].append((a, c, n))
    return [{**base, "bucket": b, "pairs": len(rows), "created_at": NOW,
             "data": encode_pairs(*zip(*rows), compress=True)} for b, rows in sorted(by_bucket.items())]


# --------------------------------------------------------------------------------------------- new orders
def rest_payload(oid: int, cust: int, t: dt.datetime, upd: dt.datetime, lines) -> dict:
    p = copy.deepcopy(FIXTURE)
    p["id"], p["name"] = oid, f"#{oid}"
    p["processed_at"] = p["created_at"] = t.isoformat() + "Z"
    p["updated_at"] = upd.isoformat() + "Z"
    p["cancelled_at"], p["test"], p["customer"], p["refunds"] = None, False, {"id": cust}, []
    subtotal = round(sum(q * price for _, _, q, price in lines), 2)
    for key in ("subtotal_price_set", "total_discounts_set"):
        p[key]["shop_money"]["amount"] = f"{subtotal:.2f}" if key == "subtotal_price_set" else "0.00"
    tmpl = FIXTURE["line_items"][0]
    p["line_items"] = []
    for lid, prod, q, price in lines:
        li = copy.deepcopy(tmpl)
        li["id"], li["product_id"], li["quantity"], li["price"] = lid, prod, q, f"{price:.2f}"
        p["line_items"].append(li)
    return p


def stream(info: dict, n: int, seed: int) -> list[tuple[str, dict]]:
    """n deliveries: 80 % new orders of existing customers, 20 % updates of one of their history orders."""
    rng = random.Random(seed)
    history = info["history"]
    out = []
    next_id = len(history) + 1
    for k in range(n):
        if rng.random() < 0.8:
            cust = rng.randint(1, info["n_customers"])
            t = NOW + dt.timedelta(minutes=k)
            prods = rng.sample(range(1, PRODUCTS + 1), rng.randint(1, 4))
            lines = [(next_id * 10 + i, p, rng.randint(1, 3), 20.0) for i, p in enumerate(prods)]
            out.append(("orders/create", rest_payload(next_id, cust, t, t, lines)))
            next_id += 1
        else:
            oid, cust, t, lines = history[rng.randrange(len(history))]
            lines = lines[:-1] or lines
            out.append(("orders/updated", rest_payload(oid, cust, t, NOW + dt.timedelta(minutes=k), lines)))
    return out


def apply_one(factory, shop_id: int, topic: str, body: dict, n: int) -> float:
    s = factory()
    s.add(WebhookDelivery(shop_id=shop_id, shop_domain="bench.myshopify.com", topic=topic, webhook_id=f"b{n}",
                          status="pending_analytics", body=json.dumps(body)))
    s.commit()
    t = time.perf_counter()
    res = process_shop_orders(s, shop_id, limit=10, now=NOW + dt.timedelta(hours=1))
    s.commit()
    elapsed = time.perf_counter() - t
    s.close()
    assert res["applied"] == 1, res
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--large", type=int, default=500_000)
    ap.add_argument("--orders", type=int, default=400)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench_order_update_"))
    folder.mkdir(parents=True, exist_ok=True)
    infos = {}
    for name, n, seed in (("small", args.small, 1), ("large", args.large, 2)):
        path = folder / f"{name}.sqlite3"
        if path.exists():
            path.unlink()
        url = f"sqlite:///{path}"
        info = fill(url, n, seed)
        info["url"] = url
        infos[name] = info
        print(f"{name}: {n} orders, {info['customers']} customers, {info['lines']} lines, "
              f"{info['pair_rows']} pair rows, {info['seq_pair_rows']} sequential pair rows; built in "
              f"{info['build_s']} s", flush=True)
    streams = {name: stream(info, args.orders, 99) for name, info in infos.items()}
    times = {name: [] for name in infos}
    factories = {name: session_factory(info["url"]) for name, info in infos.items()}
    warm = 20
    for k in range(args.orders):
        for name in (("small", "large") if k % 2 == 0 else ("large", "small")):
            topic, body = streams[name][k]
            times[name].append(apply_one(factories[name], infos[name]["shop_id"], topic, body, k))
    res = {}
    for name, ts in times.items():
        ts = ts[warm:]
        res[name] = {"orders_history": infos[name]["orders"], "median_ms": round(statistics.median(ts) * 1e3, 2),
                     "mean_ms": round(statistics.mean(ts) * 1e3, 2),
                     "p95_ms": round(sorted(ts)[int(0.95 * (len(ts) - 1))] * 1e3, 2)}
        print(f"{name}: per order median {res[name]['median_ms']} ms, mean {res[name]['mean_ms']} ms, "
              f"p95 {res[name]['p95_ms']} ms")
    ratio = res["large"]["median_ms"] / res["small"]["median_ms"]
    ratio_mean = res["large"]["mean_ms"] / res["small"]["mean_ms"]
    print(f"ratio large/small: median {ratio:.2f}, mean {ratio_mean:.2f} (target <= 1.5)")
    dispose_all()
    print("RESULT " + json.dumps({"bench": "order_update", "db": "sqlite", "orders_applied": args.orders,
                                  "small": res["small"], "large": res["large"], "ratio_median": round(ratio, 3),
                                  "ratio_mean": round(ratio_mean, 3), "target": 1.5, "ok": ratio <= 1.5}))


if __name__ == "__main__":
    main()
