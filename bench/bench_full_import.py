"""Bench (c): full history import of both years of Online Retail through the real pipeline.

    .venv/bin/python bench/bench_full_import.py [--database-url URL] [--limit-orders N] [--one-year]

The stand-in (shopify_app.devstore) is seeded with UCI Online Retail II 2009-2010 (rows before 2010-12-01) +
UCI Online Retail 2010-2011 (~1.07M rows, ~50k orders; /work/shared/data, see its README), served over HTTP;
the app is installed into a fresh database (SQLite file, or --database-url, e.g. PostgreSQL), which enqueues
`workers.import_jobs.start_history_import`; one real RQ worker process (`flask --app shopify_app worker`) runs
it. Measured: from the job's start (Job.started_at) to Job 'done' with the rules present (AssociationRule rows),
and the split of the job's phases (Job.details["timings"]: export = waiting for the bulk export, polls included;
store = download + conversion + storing; rebuild; rescore; rules) plus the stand-in's own export time; the peak
RSS of the worker and its work horse (polled every 0.1 s) during the import. Seeding the stand-in is timed
separately (it is not part of the import). Then, as a separate number (not in the 60 s target), the seconds until
the follow-up jobs the import enqueued on `default` (sequential counts rebuild, then the full rules job) are done.
Ends with exactly one line `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopify_app.config import Config  # noqa: E402

DATA = Path("/work/shared/data")
FILES = (DATA / "online_retail_II_2009_2010.csv.gz", DATA / "online_retail.csv.gz")
SHOP = "online-retail.myshopify.com"
KEY, SECRET = "bench-api-key-0123456789", "bench-api-secret-0123456789abcdef-0123"
HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
OVERLAP_START = "2010-12-01"     # Online Retail starts here; Online Retail II's last days are the same invoices


def combined_csv(out: Path, one_year: bool) -> int:
    """Both years as one file in the Online Retail header (II rows before 2010-12-01, then all of Online Retail)."""
    n = 0
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER)
        for k, path in enumerate(FILES):
            if one_year and k == 0:
                continue
            with gzip.open(path, "rt", newline="", encoding="utf-8") as src:
                r = csv.reader(src)
                next(r)
                for row in r:
                    if k == 0 and row[4][:10] >= OVERLAP_START:
                        continue
                    w.writerow(row)
                    n += 1
    return n


def reset_database(url: str) -> None:
    from shopify_app.cli import drop_everything, upgrade_database

    drop_everything(url)
    upgrade_database(url)


def worker_env(cfg: Config) -> dict:
    env = dict(os.environ)
    env.update({"APP_ENV": cfg.env, "SHOPIFY_API_KEY": cfg.api_key, "SHOPIFY_API_SECRET": cfg.api_secret,
                "DATABASE_URL": cfg.database_url, "REDIS_URL": cfg.redis_url, "INSTANCE_PATH": cfg.instance_path,
                "RQ_QUEUE_PREFIX": cfg.queue_prefix, "APP_URL": cfg.app_url, "SECRET_KEY": cfg.secret_key,
                "SHOPIFY_ADMIN_BASE": cfg.shopify_admin_base, "PYTHONPATH": str(ROOT)})
    return env


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(largest single process RSS, total RSS) of the worker and its children."""
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    rss = []
    for p in procs:
        try:
            rss.append(p.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return (max(rss) if rss else 0), sum(rss)


def followup(cfg: Config, Session, shop_id: int, since: float, timeout: float) -> tuple[float | None, dict]:
    """Seconds from the import's end until the worker (queue `default`) has run what the import enqueued there:
    the sequential ("buy next") counts rebuild, then the full rules job (triples + sequential rules). Not part of
    the 60 s target. None when it did not finish within `timeout`."""
    from rq.registry import DeferredJobRegistry, ScheduledJobRegistry, StartedJobRegistry
    from sqlalchemy import func, select

    from shopify_app.models import AssociationRule
    from shopify_app.queues import DEFAULT, get_queue

    q = get_queue(cfg, DEFAULT)
    registries = [StartedJobRegistry(queue=q), DeferredJobRegistry(queue=q), ScheduledJobRegistry(queue=q)]
    done_at = None
    while time.perf_counter() - since < timeout:
        if q.count == 0 and all(r.count == 0 for r in registries):
            done_at = time.perf_counter()
            break
        time.sleep(0.2)
    with Session() as s:
        kinds = dict(s.execute(select(AssociationRule.kind, func.count()).where(AssociationRule.shop_id == shop_id)
                               .group_by(AssociationRule.kind)).all())
        s.commit()
    return (round(done_at - since, 1) if done_at is not None else None), kinds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--limit-orders", type=int, default=None)
    ap.add_argument("--one-year", action="store_true", help="only Online Retail 2010-2011")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--followup-timeout", type=float, default=600,
                    help="seconds to wait for the follow-up sequential rebuild + full rules jobs (0: skip)")
    args = ap.parse_args()

    from sqlalchemy import func, select

    from shopify_app.db import session_factory
    from shopify_app.devstore import App, DevStore, start_devstore_server
    from shopify_app.devstore.seed import seed_online_retail
    from shopify_app.models import AssociationRule, CustomerStats, Job, Order, OrderLine, Shop
    from shopify_app.redis_server import EmbeddedRedis
    from shopify_app.shopify.install import install_with_access_token
    from shopify_app.shopify.oauth import AccessToken

    tmp = Path(tempfile.mkdtemp(prefix="bench_import_"))
    t0 = time.perf_counter()
    rows = combined_csv(tmp / "online_retail_2y.csv", args.one_year)
    store = DevStore(apps=[App(KEY, SECRET, "https://app.test")], bucket_size=1e9, restore_rate=1e9)
    seeded = seed_online_retail(store, SHOP, tmp / "online_retail_2y.csv", limit_orders=args.limit_orders)
    seed_s = time.perf_counter() - t0
    print(f"seeded the stand-in: {rows:,} rows -> {seeded.get('orders', 0):,} orders in {seed_s:.1f}s", flush=True)
    base, stop_store = start_devstore_server(store)

    url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    reset_database(url)
    redis = EmbeddedRedis(tmp / "redis", appendonly=False)
    redis.start()
    cfg = Config(env="test", api_key=KEY, api_secret=SECRET, database_url=url, redis_url=redis.url,
                 instance_path=str(tmp / "instance"), queue_prefix="bench", app_url="https://app.test",
                 shopify_admin_base=f"{base}/shops/{{shop}}")
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "shopify_app", "worker", "-q", "default"],
                              env=worker_env(cfg), cwd=ROOT)
    wproc = psutil.Process(worker.pid)
    Session = session_factory(url)
    try:
        time.sleep(1.0)                       # the worker is listening before the job is enqueued
        with Session() as s:
            token = store.install_app(SHOP, KEY)
            shop = install_with_access_token(s, cfg, SHOP, AccessToken(access_token=token,
                                                                       scope=store.apps[KEY].scopes))
            shop_id = shop.id
            s.commit()
        enqueued = time.perf_counter()
        peak_single = peak_total = 0
        started_wall = done_wall = None
        last_msg = None
        while time.perf_counter() - enqueued < args.timeout:
            single, total = tree_rss(wproc)
            peak_single, peak_total = max(peak_single, single), max(peak_total, total)
            with Session() as s:
                job = s.scalar(select(Job).where(Job.shop_id == shop_id, Job.kind == "import").order_by(Job.id.desc()))
                status = job.status if job else None
                msg = job.message if job else None
                if job is not None and started_wall is None and job.started_at is not None:
                    started_wall = time.perf_counter()
                rules = s.scalar(select(func.count()).select_from(AssociationRule)
                                 .where(AssociationRule.shop_id == shop_id))
                s.commit()
            if msg != last_msg:
                print(f"  {time.perf_counter() - enqueued:6.1f}s {status}: {msg}", flush=True)
                last_msg = msg
            if status == "failed":
                raise SystemExit(f"import failed: {job.error}")
            if status == "done" and rules and "pair rules" in (msg or ""):
                done_wall = time.perf_counter()
                break
            if worker.poll() is not None:
                raise SystemExit("worker died")
            time.sleep(0.1)
        if done_wall is None:
            raise SystemExit("timed out")
        with Session() as s:
            job = s.scalar(select(Job).where(Job.shop_id == shop_id, Job.kind == "import").order_by(Job.id.desc()))
            n_orders = s.scalar(select(func.count()).select_from(Order).where(Order.shop_id == shop_id))
            n_lines = s.scalar(select(func.count()).select_from(OrderLine).where(OrderLine.shop_id == shop_id))
            n_customers = s.scalar(select(func.count()).select_from(CustomerStats)
                                   .where(CustomerStats.shop_id == shop_id, CustomerStats.segment.is_not(None)))
            kinds = dict(s.execute(select(AssociationRule.kind, func.count()).where(AssociationRule.shop_id == shop_id)
                                   .group_by(AssociationRule.kind)).all())
            job_s = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
            details = job.details
            bulk_op_id = job.bulk_operation_id
            shop = s.get(Shop, shop_id)
            watermark = shop.orders_watermark
            s.commit()
        wall = done_wall - (started_wall or enqueued)
        timings = dict((details or {}).get("timings") or {})
        op = store.shop(SHOP).bulk_operations.get(int(str(bulk_op_id).rsplit("/", 1)[-1])) if bulk_op_id else None
        standin_export_s = (round((op.completed_at - op.created_at).total_seconds(), 1)
                            if op is not None and op.completed_at else None)      # the import's own export
        print(f"phases (s): stand-in export {standin_export_s}, " + ", ".join(f"{k} {v}" for k, v in timings.items())
              + f"; job start to pair rules {wall:.1f}", flush=True)
        followup_s, final_kinds = followup(cfg, Session, shop_id, done_wall, args.followup_timeout)
        result = {"database": url.split(":")[0], "rows": rows, "orders": n_orders, "lines": n_lines,
                  "customers_in_segments": n_customers, "rules": kinds, "seed_s": round(seed_s, 1),
                  "import_wall_s": round(wall, 1), "enqueue_to_rules_s": round(done_wall - enqueued, 1),
                  "job_started_to_done_s": job_s, "orders_per_s": round(n_orders / wall),
                  "lines_per_s": round(n_lines / wall), "peak_rss_mb_largest_process": round(peak_single / 2**20),
                  "peak_rss_mb_worker_tree": round(peak_total / 2**20), "target_s": 60, "target_rss_mb": 2048,
                  "watermark": str(watermark), "rules_result": (details or {}).get("rules", {}).get("status"),
                  "standin_export_s": standin_export_s, "phases_s": timings,
                  "followup_sequential_and_full_rules_s": followup_s, "rules_after_followup": final_kinds,
                  "load_avg": [round(x, 2) for x in os.getloadavg()]}
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
        redis.stop()
        stop_store()
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
