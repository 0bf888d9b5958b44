"""Server-side render time of every admin page for a big shop (100,000 customers, 1,000,000 orders).

Builds the shop directly in a database with Core bulk inserts (no import, no workers): Products, Customers,
Orders (+ OrderLines for a subset), CustomerStats with RFM scores and segments assigned by the real scheme,
CustomerPrediction, 90 days of SegmentSnapshot, SegmentChange rows, AssociationRule rows, TagSyncState, a done
import Job and ShopModel rows. Then renders each page through the Flask test client with a valid session token,
N requests each after warm-up, and reports p50/p95 per page next to a same-process reference: a bare Flask route
rendering a trivial template (so the ratio is comparable across machines).

    .venv/bin/python bench/bench_render.py [--database-url postgresql+psycopg://...] [--customers 100000]
        [--orders 1000000] [--requests 50] [--line-orders 100000]

Target: p95 < 150 ms for every page. The last line is `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select, text  # noqa: E402

from shopify_app.analytics.segments import SCHEMES  # noqa: E402
from shopify_app.config import Config  # noqa: E402
from shopify_app.db import get_engine  # noqa: E402
from shopify_app.models import (  # noqa: E402
    AssociationRule, Customer, CustomerPrediction, CustomerStats, Job, Order, OrderLine, Product, SegmentChange,
    SegmentSnapshot, Shop, ShopModel, TagSyncState,
)

API_KEY = "bench-api-key-0123456789"
API_SECRET = "bench-api-secret-0123456789abcdef-0123"
SHOP = "bench-big.myshopify.com"
TARGET_P95_MS = 150.0
CHUNK = 20_000
NOW = dt.datetime(2026, 11, 1, 12, 0, 0)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def chunks(rows: list[dict], size: int = CHUNK):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def bulk(conn, model, rows: list[dict]) -> None:
    for part in chunks(rows):
        conn.execute(insert(model.__table__), part)


def quintiles(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Scores 1..5 by rank (ties broken by position), like the app's quintile scoring."""
    ranks = np.argsort(np.argsort(values if higher_is_better else -values, kind="stable"), kind="stable")
    return (ranks * 5 // len(values) + 1).astype(int)


# ------------------------------------------------------------------------------------------------ data
def build_shop(url: str, customers: int, orders: int, line_orders: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    eng = get_engine(url)
    t0 = time.perf_counter()
    with eng.begin() as conn:
        shop_id = conn.execute(insert(Shop.__table__).values(
            domain=SHOP, access_token_enc="bench-not-a-real-token", scopes="read_orders,read_customers",
            status="active", installed_at=NOW - dt.timedelta(days=120), name="Bench Big Shop", currency="USD",
            timezone="UTC", settings={}, created_at=NOW, updated_at=NOW).returning(Shop.__table__.c.id)).scalar_one()

    n_products = 3000
    product_types = ["Kitchen", "Garden", "Toys", "Lighting", "Stationery", "Bags", "Candles", "Decor"]
    products = [{"shop_id": shop_id, "id": 7_000_000 + i, "title": f"Product {i:04d} {product_types[i % 8]}",
                 "product_type": product_types[i % 8], "vendor": "Bench", "unit_cost": 2.0 + (i % 40)}
                for i in range(n_products)]
    cust_ids = np.arange(1, customers + 1, dtype=np.int64) + 5_000_000_000
    first_names = ["Ada", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jun"]
    cust_rows = [{"shop_id": shop_id, "id": int(c), "display_name": f"{first_names[i % 10]} Customer{i}",
                  "tags": [], "created_at": NOW - dt.timedelta(days=800)} for i, c in enumerate(cust_ids)]

    # Orders: a skewed number per customer (most buy once or twice, a few buy dozens), over two years.
    weights = rng.pareto(1.3, customers) + 1.0
    owner = rng.choice(customers, size=orders, p=weights / weights.sum())
    days_ago = rng.integers(0, 730, size=orders)
    seconds = rng.integers(0, 86_400, size=orders)
    net = np.round(rng.lognormal(3.3, 0.7, size=orders), 2)
    guest = rng.random(orders) < 0.03
    processed = [NOW - dt.timedelta(days=int(d), seconds=int(s)) for d, s in zip(days_ago, seconds)]
    log(f"generated {orders:,} orders in memory ({time.perf_counter() - t0:.1f}s)")
    with eng.begin() as conn:
        bulk(conn, Product, products)
        bulk(conn, Customer, cust_rows)
    order_ids = np.arange(1, orders + 1, dtype=np.int64) + 9_000_000_000
    t1 = time.perf_counter()
    with eng.begin() as conn:
        for start in range(0, orders, CHUNK):
            end = min(start + CHUNK, orders)
            conn.execute(insert(Order.__table__), [{
                "shop_id": shop_id, "id": int(order_ids[i]), "name": f"#{1000 + i}",
                "customer_id": None if guest[i] else int(cust_ids[owner[i]]), "processed_at": processed[i],
                "shopify_updated_at": processed[i], "test": False, "financial_status": "paid", "currency": "USD",
                "subtotal": float(net[i]), "total_discounts": 0.0, "total_refunded": 0.0, "net_revenue": float(net[i]),
                "counted": True, "ingested_at": NOW} for i in range(start, end)])
    log(f"inserted {orders:,} orders ({time.perf_counter() - t1:.1f}s)")
    t1 = time.perf_counter()
    line_rows = []
    with eng.begin() as conn:
        for i in range(min(line_orders, orders)):
            k = 1 + int(rng.integers(0, 4))
            for j, p in enumerate(rng.choice(n_products, size=k, replace=False)):
                line_rows.append({"shop_id": shop_id, "order_id": int(order_ids[i]), "id": int(order_ids[i]) * 10 + j,
                                  "product_id": 7_000_000 + int(p), "variant_id": 8_000_000 + int(p),
                                  "product_type": product_types[int(p) % 8], "quantity": 1 + j, "refunded_quantity": 0,
                                  "price": 5.0 + int(p) % 30, "discount": 0.0})
            if len(line_rows) >= CHUNK:
                conn.execute(insert(OrderLine.__table__), line_rows)
                line_rows = []
        if line_rows:
            conn.execute(insert(OrderLine.__table__), line_rows)
    log(f"inserted order lines for {min(line_orders, orders):,} orders ({time.perf_counter() - t1:.1f}s)")

    # CustomerStats from the generated orders (numpy aggregates), RFM quintiles, the default scheme's segments.
    t1 = time.perf_counter()
    has = ~guest
    counts = np.bincount(owner[has], minlength=customers)
    revenue = np.bincount(owner[has], weights=net[has], minlength=customers)
    last_ago = np.full(customers, 10**6)
    np.minimum.at(last_ago, owner[has], days_ago[has])
    first_ago = np.zeros(customers, dtype=np.int64)
    np.maximum.at(first_ago, owner[has], days_ago[has])
    active = np.nonzero(counts > 0)[0]
    r = quintiles(-last_ago[active].astype(float))
    f = quintiles(counts[active].astype(float))
    m = quintiles(revenue[active])
    scheme = SCHEMES["default"]
    seg = [scheme.assign(int(a), int(b), int(c)) for a, b, c in zip(r, f, m)]
    stats, preds, tags = [], [], []
    clv = np.round(revenue[active] * rng.uniform(0.1, 1.2, len(active)), 2)
    p_alive = np.round(rng.beta(2, 2, len(active)), 4)
    median = float(np.median(clv))
    for k, ci in enumerate(active):
        cid = int(cust_ids[ci])
        band = "high" if p_alive[k] < 0.3 else ("medium" if p_alive[k] < 0.6 else "low")
        stats.append({"shop_id": shop_id, "customer_id": cid, "first_order_at": NOW - dt.timedelta(days=int(first_ago[ci])),
                      "last_order_at": NOW - dt.timedelta(days=int(last_ago[ci])), "orders_count": int(counts[ci]),
                      "gross_revenue": float(revenue[ci]), "refunded": 0.0, "net_revenue": float(round(revenue[ci], 2)),
                      "discounted_orders": 0, "discount_total": 0.0, "pre_discount_total": float(revenue[ci]),
                      "refunded_orders": 0, "items_count": int(counts[ci]) * 2, "product_type_counts": {},
                      "recency_days": int(last_ago[ci]), "r_score": int(r[k]), "f_score": int(f[k]),
                      "m_score": int(m[k]), "segment": seg[k], "segment_since": NOW - dt.timedelta(days=int(k % 90)),
                      "scored_at": NOW, "updated_at": NOW})
        preds.append({"shop_id": shop_id, "customer_id": cid, "p_alive": float(p_alive[k]),
                      "exp_purchases_30": 0.1, "exp_purchases_90": 0.3, "exp_purchases_365": 1.1,
                      "predicted_aov": float(revenue[ci] / counts[ci]), "clv_12m": float(clv[k]), "churn_band": band,
                      "value_risk_quadrant": ("win_back" if band != "low" else "protect") if clv[k] > median
                      else ("low_priority" if band != "low" else "grow"),
                      "cluster_id": k % 5, "cluster_name": f"Cluster {k % 5}", "is_outlier": False,
                      "model_version": "bench", "fitted_at": NOW})
        if k % 3 == 0:
            tags.append({"shop_id": shop_id, "customer_id": cid, "desired_tags": [f"sb:{seg[k]}"],
                         "applied_tags": [f"sb:{seg[k]}"], "status": "synced", "synced_at": NOW})
    with eng.begin() as conn:
        bulk(conn, CustomerStats, stats)
        bulk(conn, CustomerPrediction, preds)
        bulk(conn, TagSyncState, tags)
    log(f"inserted {len(stats):,} customer stats + predictions ({time.perf_counter() - t1:.1f}s)")

    # 90 days of snapshots, segment changes, rules, models, the finished import Job.
    sizes = {name: seg.count(name) for name in scheme.segments}
    snaps, changes, rules = [], [], []
    for d in range(90):
        day = (NOW - dt.timedelta(days=d)).date()
        for name, n in sizes.items():
            drift = 1.0 + 0.002 * d * (1 if hash(name) % 2 else -1)
            snaps.append({"shop_id": shop_id, "day": day, "segment": name, "customers": int(n * drift),
                          "revenue": float(n * 90.0 * drift), "orders": int(n * 2.1 * drift)})
    names = scheme.segments
    for k in range(200_000):
        a, b = names[k % len(names)], names[(k * 7 + 3) % len(names)]
        changes.append({"shop_id": shop_id, "customer_id": int(cust_ids[active[k % len(active)]]),
                        "from_segment": None if k % 11 == 0 else a, "to_segment": b,
                        "changed_at": NOW - dt.timedelta(minutes=int(k * 0.65)), "reason": "order"})
    for segname in ["*"] + names:
        for kind, n in (("pair", 300), ("triple", 100), ("sequential", 100)):
            for k in range(n):
                size = 2 if kind == "triple" else 1
                ante = [7_000_000 + int(x) for x in rng.choice(n_products, size=size, replace=False)]
                rules.append({"shop_id": shop_id, "segment": segname, "kind": kind, "antecedent": ante,
                              "consequent": [7_000_000 + int(rng.integers(0, n_products))],
                              "count": int(rng.integers(20, 900)), "customers": int(rng.integers(10, 700)),
                              "support": float(rng.uniform(0.001, 0.05)), "confidence": float(rng.uniform(0.05, 0.9)),
                              "lift": float(rng.uniform(1.0, 30.0)), "leverage": 0.001, "conviction": 1.2,
                              "computed_at": NOW})
    with eng.begin() as conn:
        bulk(conn, SegmentSnapshot, snaps)
        bulk(conn, SegmentChange, changes)
        bulk(conn, AssociationRule, rules)
        conn.execute(insert(Job.__table__).values(
            shop_id=shop_id, kind="import", status="done", total=orders, done=orders, message="Import finished",
            details={}, created_at=NOW, started_at=NOW, updated_at=NOW, finished_at=NOW))
        for kind in ("rfm", "bgnbd", "gamma_gamma", "kmeans"):
            conn.execute(insert(ShopModel.__table__).values(
                shop_id=shop_id, kind=kind, version=1, status="ok", params={}, fitted_at=NOW,
                customers_at_fit=len(active)))
    if eng.dialect.name != "postgresql":      # PostgreSQL: VACUUM ANALYZE in main(), after a build or --reuse
        with eng.begin() as conn:
            conn.execute(text("ANALYZE"))
    log(f"shop built in {time.perf_counter() - t0:.1f}s")
    return {"shop_id": shop_id, "sizes": sizes, "customers": len(active)}


def existing_shop(url: str) -> dict:
    with get_engine(url).connect() as conn:
        shop_id = conn.execute(select(Shop.id).where(Shop.domain == SHOP)).scalar_one()
        sizes = dict(conn.execute(select(CustomerStats.segment, func.count()).where(
            CustomerStats.shop_id == shop_id).group_by(CustomerStats.segment)).all())
    return {"shop_id": shop_id, "sizes": sizes, "customers": sum(sizes.values())}


def profile_queries(engine, pages: dict) -> None:
    """One request per page, recording its statements; each is then re-run alone on a raw connection and timed
    with its fetch (SQLite does the work while fetching, so timing execute() alone would hide it)."""
    from sqlalchemy import event

    seen: list = []

    def after(conn, cursor, statement, params, context, executemany):
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")):
            seen.append((statement, params))

    event.listen(engine, "after_cursor_execute", after)
    try:
        for name, fn in pages.items():
            fn()
            seen.clear()
            t = time.perf_counter()
            fn()
            total = (time.perf_counter() - t) * 1000.0
            statements = list(seen)
            timed_sql = []
            raw = engine.raw_connection()
            try:
                for statement, params in statements:
                    cur = raw.cursor()
                    t = time.perf_counter()
                    cur.execute(statement, params)
                    cur.fetchall()
                    timed_sql.append(((time.perf_counter() - t) * 1000.0, " ".join(statement.split())))
                    cur.close()
                raw.rollback()
            finally:
                raw.close()
            log(f"--- {name}: {total:.1f} ms total, {len(statements)} statements, "
                f"{sum(ms for ms, _ in timed_sql):.1f} ms in SQL (execute + fetch)")
            for ms, sql in sorted(timed_sql, reverse=True)[:4]:
                log(f"  {ms:8.1f} ms  {sql[:300]}")
    finally:
        event.remove(engine, "after_cursor_execute", after)


# ------------------------------------------------------------------------------------------------ timing
CPU_TIMES: dict[int, list[float]] = {}


def timed(fn, n: int, warmup: int = 3) -> list[float]:
    """Wall ms per request. The process CPU ms of the same requests go to CPU_TIMES[id(result)]: on a shared,
    loaded machine they show the work a page costs this process (app + SQLite; not a PostgreSQL server's)."""
    for _ in range(warmup):
        fn()
    out, cpu = [], []
    for _ in range(n):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
        cpu.append((time.process_time() - c) * 1000.0)
    CPU_TIMES[id(out)] = cpu
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--line-orders", type=int, default=100_000, help="orders that get OrderLine rows")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--reuse", action="store_true",
                    help="use the shop already built in --database-url (a previous run) instead of rebuilding")
    ap.add_argument("--profile-queries", action="store_true",
                    help="print each page's SQL statements with their time (one request per page)")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench_render_")
    url = args.database_url or f"sqlite:///{tmp}/bench.sqlite3"
    from shopify_app.cli import drop_everything, upgrade_database

    eng = get_engine(url)
    if args.reuse:
        upgrade_database(url)       # a later migration (e.g. new indexes) applies to the kept database too
        info = existing_shop(url)
    else:
        drop_everything(url)
        upgrade_database(url)
        info = build_shop(url, args.customers, args.orders, args.line_orders)
        log(f"database: {url} (rerun with --reuse to skip the build)")
    if eng.dialect.name == "postgresql":
        # What autovacuum does to a live database: statistics and the visibility map (index-only scans). Right
        # after a bulk build without it the planner and the heap lookups make pages look slower than they are.
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        log("VACUUM ANALYZE done")

    from flask import Flask, render_template_string

    from shopify_app import create_app
    from shopify_app.devstore.oauth import mint_session_token
    from shopify_app.web.readmodels import slugify

    cfg = Config(env="test", api_key=API_KEY, api_secret=API_SECRET, database_url=url,
                 redis_url="redis://127.0.0.1:1/0", instance_path=os.path.join(tmp, "instance"),
                 app_url="https://bench.test", log_level="WARNING")
    app = create_app(cfg)
    client = app.test_client()
    sizes = info["sizes"]
    biggest = max(sizes, key=sizes.get)
    smallest = min((k for k in sizes if sizes[k]), key=sizes.get)
    big_slug, small_slug = slugify(biggest), slugify(smallest)
    deep_page = max(1, sizes[biggest] // 50 // 2)
    nav = {"shop": SHOP, "host": "YmVuY2g", "embedded": "1"}

    def token():
        return mint_session_token(SHOP, API_KEY, API_SECRET)

    def get(path, **params):
        def run():
            resp = client.get(path, query_string={**nav, **params, "id_token": token()})
            assert resp.status_code == 200, (path, resp.status_code, resp.get_data(as_text=True)[:300])
            return resp
        return run

    def post(path, data, bearer=False, json_body=None):
        def run():
            if bearer:
                resp = client.post(path, json=json_body, headers={"Authorization": f"Bearer {token()}"})
            else:
                resp = client.post(path, query_string=nav, data={**data, "id_token": token()})
            assert resp.status_code == 200, (path, resp.status_code, resp.get_data(as_text=True)[:300])
            return resp
        return run

    def api_get(path):
        def run():
            resp = client.get(path, headers={"Authorization": f"Bearer {token()}"})
            assert resp.status_code == 200, (path, resp.status_code)
            return resp
        return run

    pages = {
        "home": get("/"),
        f"segment:{big_slug}": get(f"/segments/{big_slug}"),
        f"segment:{big_slug}:sort=orders:page={deep_page}": get(f"/segments/{big_slug}", sort="-orders",
                                                                page=str(deep_page)),
        f"segment:{small_slug}": get(f"/segments/{small_slug}"),
        f"segment:{big_slug}:search": post(f"/segments/{big_slug}", {"q": "customer12"}),
        "bundles": get("/bundles"),
        f"bundles:{big_slug}": get("/bundles", segment=big_slug),
        "predictions": get("/predictions"),
        "settings": get("/settings"),
        "api:summary": api_get("/api/summary"),
        f"api:members:{big_slug}": post(f"/api/segments/{big_slug}/members", {}, bearer=True,
                                        json_body={"page": 2, "sort": "-clv"}),
    }

    ref_app = Flask("reference")

    @ref_app.get("/")
    def trivial():
        return render_template_string("<!doctype html><title>{{ t }}</title><h1>{{ t }}</h1>", t="ok")

    ref_client = ref_app.test_client()

    def reference():
        token()       # same token cost as the pages
        assert ref_client.get("/").status_code == 200

    if args.profile_queries:
        profile_queries(get_engine(url), pages)

    results = {}
    ref = timed(reference, args.requests)
    ref_p95 = pct(ref, 95)
    ref_cpu = CPU_TIMES[id(ref)]
    log(f"{'page':50s} {'p50 ms':>8s} {'p95 ms':>8s} {'x ref':>7s} {'cpu p50':>8s} {'cpu p95':>8s}")
    log(f"{'reference (trivial template)':50s} {pct(ref, 50):8.2f} {ref_p95:8.2f} {'':7s} "
        f"{pct(ref_cpu, 50):8.2f} {pct(ref_cpu, 95):8.2f}")
    for name, fn in pages.items():
        ms = timed(fn, args.requests)
        cpu = CPU_TIMES[id(ms)]
        results[name] = {"p50_ms": round(pct(ms, 50), 2), "p95_ms": round(pct(ms, 95), 2),
                         "ratio_p95": round(pct(ms, 95) / ref_p95, 1),
                         "cpu_p50_ms": round(pct(cpu, 50), 2), "cpu_p95_ms": round(pct(cpu, 95), 2)}
        flag = "" if results[name]["p95_ms"] < TARGET_P95_MS else "  <-- over target"
        log(f"{name:50s} {pct(ms, 50):8.2f} {pct(ms, 95):8.2f} {results[name]['ratio_p95']:7.1f} "
            f"{pct(cpu, 50):8.2f} {pct(cpu, 95):8.2f}{flag}")

    # The CSV export of the biggest segment is a download, not a page: reported, not held to the page target.
    t = time.perf_counter()
    resp = client.get(f"/segments/{big_slug}/members.csv", query_string={**nav, "id_token": token()})
    body = resp.get_data()
    csv_ms = (time.perf_counter() - t) * 1000.0
    csv_rows = body.count(b"\n") - 1
    assert resp.status_code == 200 and csv_rows == sizes[biggest], (csv_rows, sizes[biggest])
    log(f"CSV export of {biggest} ({csv_rows:,} rows): {csv_ms:.0f} ms")

    engine = get_engine(url)
    with engine.connect() as conn:
        orders = conn.execute(select(func.count()).select_from(Order)).scalar_one()
        customers = conn.execute(select(func.count()).select_from(CustomerStats)).scalar_one()
    worst = max(results, key=lambda k: results[k]["p95_ms"])
    summary = {
        "bench": "render", "database": engine.dialect.name, "orders": orders, "customers": customers,
        "requests": args.requests, "reference_p50_ms": round(pct(ref, 50), 2), "reference_p95_ms": round(ref_p95, 2),
        "reference_cpu_p95_ms": round(pct(ref_cpu, 95), 2), "load_average_1m": round(os.getloadavg()[0], 1),
        "pages": results, "csv_export": {"segment": biggest, "rows": csv_rows, "ms": round(csv_ms, 1)},
        "worst_page": worst, "worst_p95_ms": results[worst]["p95_ms"], "target_p95_ms": TARGET_P95_MS,
        "all_under_target": all(r["p95_ms"] < TARGET_P95_MS for r in results.values()),
    }
    print("RESULT " + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
