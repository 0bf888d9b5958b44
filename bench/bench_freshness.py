"""Bench (d): freshness of live orders - webhook delivered -> customer's segment and pair counts updated.

The real pipeline on one machine: the local Shopify stand-in (shopify_app/devstore, in this process) creates
orders at --rate orders/s for --seconds; each create fires a signed orders/create webhook to the app's
subscribed URI (shopify.app.toml), served by gunicorn (separate process) - the app records the delivery and
enqueues the shop's order job; 2 real RQ worker processes (`flask --app shopify_app worker -q webhooks -q
default`) apply it. Redis: an embedded redis-server; database: SQLite file (or --database-url).

Delivered = the stand-in's create_order returned (sync delivery mode: the app has answered 200 by then).
Updated = the order's row is visible in the app's database. The order job writes the Order row, the customer's
CustomerStats (RFM scores and named segment) and the item / pair / basket counts in ONE transaction, so the row
being visible means the segment and the pair counts are updated too; the bench also checks, at the end, that
every order's customer has a segment and that the pair counts equal a recount of the delivered orders.

    .venv/bin/python bench/bench_freshness.py [--rate 200] [--seconds 60] [--customers 3000] [--products 300]

Ends with one line: RESULT {json} (latencies p50 / p95 / max, achieved rate). Target: p95 <= 1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import delete, func, select  # noqa: E402

from shopify_app.cli import upgrade_database  # noqa: E402
from shopify_app.db import dispose_all, session_scope  # noqa: E402
from shopify_app.devstore import App, DevStore  # noqa: E402
from shopify_app.devstore.webhooks import DeliveryMode  # noqa: E402
from shopify_app.models import CustomerStats, Order, PairCountDelta, Shop, WebhookDelivery  # noqa: E402
from shopify_app.redis_server import EmbeddedRedis  # noqa: E402

SHOP = "fresh.myshopify.com"
API_KEY = "bench-api-key-0123456789"
API_SECRET = "bench-api-secret-0123456789abcdef-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --preload: the worker parent imports the job modules before forking, so RQ's per-job work horse inherits
# them instead of importing SQLAlchemy / models / numpy again for every job (~0.2-0.5 s per job here). This is
# the change proposed for workers/runtime.py; without it every webhook costs one such fork + imports.
PRELOAD = ("import workers.ingest, workers.order_jobs, workers.rfm_jobs, workers.sequential_jobs\n"
           "try:\n    import workers.rules_jobs\nexcept ImportError:\n    pass\n"
           "from shopify_app.config import Config\nfrom workers.runtime import run_worker\n"
           "run_worker(Config.from_env(), ['webhooks', 'default'])\n")


APP_PROCESSES = int(os.environ.get("BENCH_APP_PROCESSES", "2"))   # gunicorn worker processes
LOG = open(os.environ.get("BENCH_WORKER_LOG", os.devnull), "a")   # worker logs (RQ logs every job)


def handoff_app():
    """--handoff (what-if, bench only): the app as deployed, except that an order / refund delivery of an active
    shop is handed straight to the shop's coalescing order job (status 'pending_analytics' +
    enqueue_process_orders) instead of one `workers.ingest.process_delivery` RQ job per delivery. This is the
    intake change proposed for shopify_app/web/webhooks.py; the bench patches it in to measure the gain."""
    from sqlalchemy import update

    from shopify_app import create_app
    from shopify_app.db import session_scope as scope
    from shopify_app.web import webhooks as intake
    from workers.order_jobs import enqueue_process_orders

    original = intake.enqueue_delivery

    def enqueue_delivery(config, delivery_id: int) -> bool:
        with scope(config.sqlalchemy_url) as s:
            shop_id = s.scalar(select(WebhookDelivery.shop_id).where(WebhookDelivery.id == delivery_id))
            moved = s.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.status == "received",
                WebhookDelivery.shop_id.in_(select(Shop.id).where(Shop.status == "active")),
                (WebhookDelivery.topic.like("orders/%")) | (WebhookDelivery.topic == "refunds/create"))
                .values(status="pending_analytics")).rowcount
        if not moved:
            return original(config, delivery_id)
        enqueue_process_orders(config, shop_id)
        return True

    intake.enqueue_delivery = enqueue_delivery
    return create_app()


def start_processes(env: dict, port: int, workers: int, preload: bool, handoff: bool = False
                    ) -> list[subprocess.Popen]:
    target = "bench_freshness:handoff_app()" if handoff else "shopify_app:create_app()"
    procs = [subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(APP_PROCESSES), "--threads", "8", "-b",
                               f"127.0.0.1:{port}", "--log-level", "warning", "--pythonpath",
                               str(ROOT / "bench"), target], env=env, cwd=ROOT, start_new_session=True)]
    for _ in range(workers):
        cmd = ([sys.executable, "-c", PRELOAD] if preload else
               [sys.executable, "-m", "flask", "--app", "shopify_app", "worker", "-q", "webhooks", "-q", "default"])
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=LOG))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return procs
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop(procs)
    raise SystemExit("the app did not come up")


def stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


class Watcher(threading.Thread):
    """Polls the app's database for the orders still pending (a set as small as the backlog)."""

    def __init__(self, url: str, shop_id: int, interval: float):
        super().__init__(daemon=True)
        self.url, self.shop_id, self.interval = url, shop_id, interval
        self.pending: dict[int, float] = {}       # order id -> delivered at (monotonic)
        self.latency: dict[int, float] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()

    def add(self, order_id: int, delivered: float) -> None:
        with self.lock:
            self.pending[order_id] = delivered

    def visible(self, ids: list[int]) -> set[int]:
        # SQLite: a plain autocommit reader (WAL readers never block the workers); the app's sessions start
        # with BEGIN IMMEDIATE, which would take the write lock every poll.
        if self.url.startswith("sqlite"):
            import sqlite3

            if not hasattr(self, "_conn"):
                self._conn = sqlite3.connect(self.url.split("///", 1)[1], isolation_level=None)
            out = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                q = f"SELECT id FROM orders WHERE shop_id = ? AND id IN ({','.join('?' * len(chunk))})"
                out |= {r[0] for r in self._conn.execute(q, [self.shop_id, *chunk])}
            return out
        with session_scope(self.url) as s:
            return set(s.scalars(select(Order.id).where(Order.shop_id == self.shop_id, Order.id.in_(ids))))

    def run(self) -> None:
        while not self.done.is_set():
            with self.lock:
                ids = list(self.pending)
            if ids:
                seen = self.visible(ids)
                at = time.monotonic()
                with self.lock:
                    for oid in seen:
                        self.latency[oid] = at - self.pending.pop(oid)
            time.sleep(self.interval)


def job_stats(redis_url: str) -> dict:
    """Per job function: count, mean run time (RQ started_at -> ended_at) and mean wait in the queue, from the
    finished-job registries (where the time goes)."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import FinishedJobRegistry

    from shopify_app.queues import redis_connection

    conn = redis_connection(redis_url)
    acc: dict = {}
    for name in ("webhooks", "default"):
        q = Queue(f"fresh:{name}", connection=conn)
        ids = FinishedJobRegistry(queue=q).get_job_ids()
        for job in Job.fetch_many(ids, connection=conn):
            if job is None or not job.started_at or not job.ended_at:
                continue
            a = acc.setdefault(job.func_name.rsplit(".", 1)[-1], {"n": 0, "run": 0.0, "wait": 0.0, "size": 0})
            a["n"] += 1
            a["run"] += (job.ended_at - job.started_at).total_seconds()
            if job.enqueued_at:
                a["wait"] += (job.started_at - job.enqueued_at).total_seconds()
            rv = job.return_value() if hasattr(job, "return_value") else None
            if isinstance(rv, dict) and "deliveries" in rv:
                a["size"] += rv["deliveries"]
    return {k: {"jobs": v["n"], "mean_run_s": round(v["run"] / v["n"], 4), "mean_wait_s": round(v["wait"] / v["n"], 3),
                **({"mean_batch": round(v["size"] / v["n"], 1)} if v["size"] else {})} for k, v in acc.items()}


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--products", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--senders", type=int, default=4, help="threads creating orders (each paced)")
    ap.add_argument("--poll", type=float, default=0.01, help="watcher poll interval, seconds")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--preload", action="store_true", help="workers import the job modules before forking")
    ap.add_argument("--handoff", action="store_true",
                    help="what-if: order deliveries go straight to the per-shop order job (see handoff_app)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_freshness_"))
    redis = EmbeddedRedis(tmp / "redis", appendonly=False)
    redis.start()
    db_url = args.database_url or f"sqlite:///{tmp / 'app.sqlite3'}"
    upgrade_database(db_url)
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, APP_ENV="development", SHOPIFY_API_KEY=API_KEY, SHOPIFY_API_SECRET=API_SECRET,
               DATABASE_URL=db_url, REDIS_URL=redis.url, INSTANCE_PATH=str(tmp / "instance"),
               RQ_QUEUE_PREFIX="fresh", APP_URL=app_url, PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
    with session_scope(db_url) as s:
        # A given --database-url is the bench's scratch database: a previous run's shop (and, by cascade, its
        # rows) goes first.
        s.execute(delete(WebhookDelivery).where(WebhookDelivery.shop_domain == SHOP))
        s.execute(delete(Shop).where(Shop.domain == SHOP))
    with session_scope(db_url) as s:
        shop = Shop(domain=SHOP, status="active", scopes="read_orders", currency="USD")
        s.add(shop)
        s.flush()
        shop_id = shop.id

    store = DevStore(apps=[App(API_KEY, API_SECRET, app_url)],
                     webhook_mode=DeliveryMode(sync=True, retry_schedule=(0.05, 0.1, 0.2, 0.4), timeout=10))
    store.create_shop(SHOP)
    rng = random.Random(5)
    variants = [store.create_product(SHOP, title=f"P{i}", price=f"{rng.uniform(3, 40):.2f}").variants[0]
                for i in range(args.products)]
    customers = [store.create_customer(SHOP, email=f"c{i}@example.com").id for i in range(args.customers)]
    store.subscribe_from_app_toml(SHOP, ROOT / "shopify.app.toml", api_key=API_KEY)

    procs = start_processes(env, port, args.workers, args.preload, args.handoff)
    watcher = Watcher(db_url, shop_id, args.poll)
    watcher.start()
    sent: list = []
    sent_lock = threading.Lock()
    failures = []
    total = int(args.rate * args.seconds)
    t0 = time.monotonic() + 0.5
    end = t0 + args.seconds          # a sender that falls behind stops at the end: achieved rate < target
    halt = threading.Event()

    def sender(k: int) -> None:
        r = random.Random(100 + k)
        for i in range(k, total, args.senders):
            if halt.is_set() or time.monotonic() > end:
                return
            due = t0 + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pop = r.sample(variants, r.randint(1, 4))
            lines = [{"variant_id": v.id, "quantity": r.randint(1, 3)} for v in pop]
            try:
                o = store.create_order(SHOP, customer_id=r.choice(customers), lines=lines)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(repr(exc))
                continue
            delivered = time.monotonic()
            watcher.add(o.id, delivered)
            with sent_lock:
                sent.append((o.id, o.customer_id, sorted({v.product.id for v in pop}), delivered))

    try:
        threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(args.senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        send_time = min(time.monotonic(), end) - t0
        deadline = time.monotonic() + 120
        while watcher.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        watcher.done.set()
        watcher.join(5)
        bad = [a for a in store.webhooks.attempts if a.status != 200]
        # correctness of what was measured: every customer scored, pair counts equal a recount
        pairs = Counter()
        for _, _, prods, _ in sent:
            for a, b in combinations(prods, 2):
                pairs[(a, b)] += 1
        with session_scope(db_url) as s:
            stored_pairs = s.scalar(select(func.coalesce(func.sum(PairCountDelta.count), 0))
                                    .where(PairCountDelta.shop_id == shop_id))
            unscored = s.scalar(select(func.count()).select_from(CustomerStats).where(
                CustomerStats.shop_id == shop_id, CustomerStats.segment.is_(None)))
            n_customers = s.scalar(select(func.count()).select_from(CustomerStats)
                                   .where(CustomerStats.shop_id == shop_id))
        jobs = job_stats(redis.url)
    finally:
        halt.set()
        stop(procs)
        redis.stop()
        dispose_all()
    lat = list(watcher.latency.values())
    if not lat:
        raise SystemExit("no order was applied")
    res = {"bench": "freshness", "db": db_url.split(":")[0], "rate_target": args.rate,
           "rate_achieved": round(len(sent) / send_time, 1), "orders": len(sent), "applied": len(lat),
           "unapplied": len(watcher.pending), "webhook_failures": len(bad) + len(failures),
           "p50_s": round(pct(lat, 0.50), 3), "p95_s": round(pct(lat, 0.95), 3), "max_s": round(max(lat), 3),
           "mean_s": round(statistics.mean(lat), 3), "customers_scored": n_customers,
           "customers_unscored": unscored, "pair_counts_ok": stored_pairs == sum(pairs.values()),
           "workers": args.workers, "preload": args.preload, "handoff": args.handoff,
           "target_p95_s": 1.0}
    res["jobs"] = jobs
    res["ok"] = res["p95_s"] <= 1.0 and res["unapplied"] == 0 and res["pair_counts_ok"]
    print(f"sent {res['orders']} orders at {res['rate_achieved']}/s (target {args.rate}); applied {len(lat)}; "
          f"latency p50 {res['p50_s']} s, p95 {res['p95_s']} s, max {res['max_s']} s")
    for name, v in jobs.items():
        print(f"  job {name}: {v}")
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
