"""Bench (d): freshness of live orders - webhook delivered -> customer's segment and pair counts updated.

The real pipeline on one machine: the local Shopify stand-in (shopify_app/devstore, in this process) replays real
Online Retail invoices (the seed's data: the full UCI set from the shared folder, else the bundled sample; purchases,
product lines, in time order; ~27 lines and ~1,200 pairs per order on average, median 15 lines) as new orders at
--rate orders/s for --seconds. Open loop: --senders threads create order i at t0 + i/rate whatever the app does
(sender_lag_p95_s says how late creation ran). Each create fires the app's subscriptions from shopify.app.toml
(orders/create and orders/paid: two deliveries per order), delivered by the stand-in's background delivery threads
(--delivery-threads, keep-alive connections, concurrent and out of order like Shopify) to gunicorn (separate
process; the app records the delivery and wakes the shop's coalesced order job); 2 real RQ worker processes
(`flask --app shopify_app worker -q webhooks -q default`) apply it. Redis: an embedded redis-server; database:
SQLite file (or --database-url).

Delivered = the app answered 200 to the order's orders/create (the stand-in's on_attempt listener).
Updated = the order's row is visible in the app's database. The order job writes the Order row, the customer's
CustomerStats (RFM scores and named segment) and the item / pair / basket counts in ONE transaction, so the row
being visible means the segment and the pair counts are updated too; the bench also checks, at the end, that
every customer of a delivered order has a segment and that the pair counts equal a recount of the delivered orders
(pair by pair). Reported: rate_achieved (orders created per second), delivered_rate (orders/create answered per
second over the run), create_to_delivered_p95_s (time in the stand-in's delivery queue + intake), latency
delivered -> visible p50 / p95 / max (the target), create_to_visible_p95_s, per-job stats, 1-minute load average.

    .venv/bin/python bench/bench_freshness.py [--rate 200] [--seconds 60] [--synthetic] [--without-paid]
        [--database-url URL]
    .venv/bin/python bench/bench_freshness.py --sink [--rate 0 --orders 4000 | --rate 200 --seconds 20]

--sink measures the stand-in alone (no app): the same orders and deliveries to a trivial HTTP sink, with
webhooks/s and CPU per webhook (see sink_main). The full run also reports standin_cpu_ms_per_webhook: the CPU of
this process (stand-in + harness) per delivery attempt while the app was being fed.

Ends with one line: RESULT {json}. Target: p95 <= 1 s at 200 orders/s, every order applied, counts exact.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
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
from shopify_app.models import CustomerStats, Order, Shop, WebhookDelivery  # noqa: E402
from shopify_app.redis_server import EmbeddedRedis  # noqa: E402

SHOP = "fresh.myshopify.com"
API_KEY = "bench-api-key-0123456789"
API_SECRET = "bench-api-secret-0123456789abcdef-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APP_PROCESSES = int(os.environ.get("BENCH_APP_PROCESSES", "2"))   # gunicorn worker processes
LOG = open(os.environ.get("BENCH_WORKER_LOG", os.devnull), "a")   # worker logs (RQ logs every job)


def start_processes(env: dict, port: int, workers: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(APP_PROCESSES), "--threads", "8", "-b",
                               f"127.0.0.1:{port}", "--log-level", "warning", "shopify_app:create_app()"],
                              env=env, cwd=ROOT, start_new_session=True)]
    for _ in range(workers):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "shopify_app", "worker", "-q", "webhooks", "-q", "default"],
            env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=LOG))
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
        self.seen_at: dict[int, float] = {}
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
            took = 0.0
            if ids:
                start = time.monotonic()
                seen = self.visible(ids)
                at = time.monotonic()
                took = at - start
                with self.lock:
                    for oid in seen:
                        self.latency[oid] = at - self.pending.pop(oid)
                        self.seen_at[oid] = at
            # At most ~10% of a core: with a backlog of thousands of pending ids a poll costs milliseconds, and a
            # watcher polling every 10 ms regardless would take CPU from the app it measures just when it lags.
            time.sleep(max(self.interval, 9 * took))


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


def load_invoices(path: Path | None, n: int, synthetic: bool, rng: random.Random) -> list[tuple]:
    """n baskets as (customer key or None, [(stock code, title, product type, price, quantity)]).

    Real data (default): Online Retail invoices (shopify_app.devstore.seed.default_path(): the full UCI set when
    the shared folder has it, else the bundled sample), in time order, purchases only, product lines only (the
    seed's rules: quantity > 0, price > 0, not POSTAGE & co), repeated from the start when the file has fewer.
    --synthetic: 1-4 random products of 300, 3,000 customers (the earlier, much lighter load)."""
    if synthetic:
        products = [(f"S{i}", f"P{i}", "", f"{rng.uniform(3, 40):.2f}") for i in range(300)]
        out = []
        for _ in range(n):
            pop = rng.sample(products, rng.randint(1, 4))
            out.append((f"c{rng.randrange(3000)}", [(*p, rng.randint(1, 3)) for p in pop]))
        return out
    from shopify_app.devstore.seed import default_path, is_non_product, product_type_for, read_rows

    invoices: dict[str, list] = {}
    for inv, code, desc, qty, t, price, cust, _country in read_rows(path or default_path()):
        if inv.startswith("C") or qty <= 0 or price <= 0 or is_non_product(code):
            continue
        invoices.setdefault(inv, []).append((t, cust, code, desc or code, qty, price))
    keys = sorted(invoices, key=lambda k: (invoices[k][0][0], k))
    out = []
    for i in range(n):
        rows = invoices[keys[i % len(keys)]]
        lines: dict[str, tuple] = {}
        for _t, _c, code, desc, qty, price in rows:      # one line per product (an invoice may repeat a code)
            prev = lines.get(code)
            lines[code] = (code, desc, product_type_for(desc), f"{price:.2f}", qty + (prev[4] if prev else 0))
        out.append((rows[0][1], list(lines.values())))
    return out


def cpu_seconds() -> float:
    """CPU time of this process (all its threads), user + system."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_store(baskets, app_url: str, args, on_attempt):
    """The stand-in with the shop, its customers and products (no webhooks for those: set-up, not the load),
    subscribed like shopify.app.toml (minus orders/paid with --without-paid)."""
    store = DevStore(apps=[App(API_KEY, API_SECRET, app_url)],
                     webhook_mode=DeliveryMode(sync=False, threads=args.delivery_threads, on_attempt=on_attempt,
                                               retry_schedule=(0.05, 0.1, 0.2, 0.4), timeout=10))
    store.create_shop(SHOP, currency="GBP", iana_timezone="Europe/London")
    variant: dict[str, object] = {}
    customer: dict[str, int] = {}
    for cust, lines in baskets:
        if cust is not None and cust not in customer:
            customer[cust] = store.create_customer(SHOP, email=f"{cust}@customers.example.com", emit=False).id
        for code, title, ptype, price, _q in lines:
            if code not in variant:
                variant[code] = store.create_product(SHOP, title=title, price=price, product_type=ptype,
                                                     sku=code).variants[0]
    store.subscribe_from_app_toml(SHOP, ROOT / "shopify.app.toml", api_key=API_KEY)
    if args.without_paid:
        subs = store.shop(SHOP).webhook_subscriptions
        for key in [k for k, w in subs.items() if w.topic == "orders/paid"]:
            del subs[key]
    return store, variant, customer


def send_orders(store, baskets, variant, customer, rate: float, seconds: float, senders: int,
                created: dict) -> dict:
    """Create the baskets as orders from `senders` threads. Open loop at `rate` orders/s: order i is due at
    t0 + i/rate whatever the app does, a sender that falls behind stops at t0 + seconds (achieved rate <
    target). rate 0: every order back to back, as fast as the stand-in can (its capacity)."""
    sent: list = []                       # (order id, product ids)
    lag: list[float] = []                 # create_order start - its due time (the sender falling behind)
    failures: list = []
    total = len(baskets)
    t0 = time.monotonic() + 0.5
    end = t0 + seconds if rate else float("inf")

    def sender(k: int) -> None:
        for i in range(k, total, senders):
            due = t0 + i / rate if rate else t0
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = time.monotonic()
            if start > end:
                return
            cust, lines = baskets[i]
            try:
                o = store.create_order(SHOP, customer_id=customer.get(cust) if cust else None,
                                       lines=[{"variant_id": variant[c].id, "quantity": q}
                                              for c, _t, _p, _pr, q in lines])
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(repr(exc))
                continue
            created[o.id] = start
            lag.append(start - due)
            sent.append((o.id, sorted({variant[c].product.id for c, *_ in lines})))

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"sent": sent, "lag": lag, "failures": failures, "t0": t0,
            "send_time": min(time.monotonic(), end) - t0}


SINK = r"""
import asyncio, sys
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    n = int(line[15:])
            await reader.readexactly(n)
            writer.write(OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main(port):
    srv = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main(int(sys.argv[1])))
"""


def sink_main(args, baskets) -> None:
    """--sink: the stand-in alone. The same orders, subscriptions and delivery threads, but delivered to a
    trivial keep-alive HTTP sink (a separate asyncio process answering 200 at once) instead of the app, so what
    is measured is the stand-in + harness: orders/s and webhooks/s it sustains and its CPU per webhook. A
    reference pass in the same process delivers the same load to a no-op transport from one delivery thread (no
    HTTP, no concurrency): what remains is the cost of creating orders and building, serializing and signing
    their payloads; the difference is the cost of the concurrent HTTP delivery itself."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdout=subprocess.PIPE)
    try:
        sink.stdout.readline()
        passes = {}
        for name in ("no_http", "http_sink"):
            delivered: dict[int, float] = {}

            def on_attempt(a, delivered=delivered) -> None:
                if a.topic == "orders/create" and a.status == 200 and not a.duplicate:
                    delivered.setdefault(a.resource_id, time.monotonic())

            store, variant, customer = build_store(baskets, f"http://127.0.0.1:{port}", args, on_attempt)
            if name == "no_http":             # one thread: the cost of orders, payloads and dispatch alone
                store.webhooks.configure(transport=lambda url, headers, body, timeout: 200, threads=1)
            created: dict[int, float] = {}
            cpu0 = cpu_seconds()
            run = send_orders(store, baskets, variant, customer, args.rate, args.seconds, args.senders, created)
            store.webhooks.wait_idle(120)
            cpu, wall = cpu_seconds() - cpu0, time.monotonic() - run["t0"]
            store.webhooks.stop()
            attempts = store.webhooks.attempts
            in_flight = [delivered[o] - created[o] for o in delivered if o in created]
            passes[name] = {
                "orders": len(run["sent"]), "webhooks": len(attempts),
                "webhook_failures": sum(a.status != 200 for a in attempts) + len(run["failures"]),
                "orders_per_s": round(len(run["sent"]) / wall, 1), "webhooks_per_s": round(len(attempts) / wall, 1),
                "cpu_ms_per_webhook": round(cpu / max(1, len(attempts)) * 1000, 3),
                "cpu_cores": round(cpu / wall, 2),
                "create_to_delivered_p95_s": round(pct(in_flight, 0.95), 3) if in_flight else None,
                "body_kb_mean": round(sum(len(a.body) for a in attempts) / max(1, len(attempts)) / 1024, 1)}
    finally:
        sink.kill()
        sink.wait()
    res = {"bench": "freshness_standin_sink", "data": "synthetic" if args.synthetic else "online_retail",
           "rate_target": args.rate or "max", "senders": args.senders, "delivery_threads": args.delivery_threads,
           "orders_paid_delivered": not args.without_paid, **passes,
           "http_share_of_cpu": round(1 - passes["no_http"]["cpu_ms_per_webhook"]
                                      / passes["http_sink"]["cpu_ms_per_webhook"], 2),
           "load_avg_1m": round(os.getloadavg()[0], 2)}
    res["ok"] = all(p["webhook_failures"] == 0 for p in passes.values())
    for name, p in passes.items():
        print(f"{name}: {p['orders']} orders, {p['webhooks_per_s']} webhooks/s, {p['cpu_ms_per_webhook']} ms CPU "
              f"per webhook ({p['cpu_cores']} cores)")
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--senders", type=int, default=2, help="threads creating orders, each on its own schedule")
    ap.add_argument("--delivery-threads", type=int, default=16, help="the stand-in's concurrent webhook deliveries")
    ap.add_argument("--poll", type=float, default=0.01, help="watcher poll interval, seconds")
    ap.add_argument("--data", type=Path, default=None, help="Online Retail CSV (default: the seed's default)")
    ap.add_argument("--synthetic", action="store_true", help="1-4 random products per order instead of real baskets")
    ap.add_argument("--without-paid", action="store_true",
                    help="what-if: the shop does not send orders/paid (one delivery per order instead of two)")
    ap.add_argument("--rules-debounce", type=int, default=None,
                    help="what-if: seconds between rules mining runs (RULES_DEBOUNCE_S; default: the app's 30)")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--sink", action="store_true",
                    help="the stand-in alone: deliver to a trivial HTTP sink, report its webhooks/s and CPU per "
                         "webhook (--rate 0: as fast as it can, --orders of them)")
    ap.add_argument("--orders", type=int, default=None, help="with --sink --rate 0: how many orders")
    ap.add_argument("--trace", action="store_true",
                    help="the order job traces every batch (ORDER_JOB_TRACE); report its CPU per order and phases")
    args = ap.parse_args()
    # SIGTERM (a timeout, a CI cancel) runs the finally blocks: the app, workers, redis and sink go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    total = int(args.rate * args.seconds) if args.rate else (args.orders or 4000)
    baskets = load_invoices(args.data, total, args.synthetic, random.Random(5))
    if args.sink:
        sink_main(args, baskets)
        return
    if not args.rate:
        raise SystemExit("--rate 0 is for --sink")
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
    if args.rules_debounce is not None:
        env["RULES_DEBOUNCE_S"] = str(args.rules_debounce)
    trace_path = tmp / "order_job_trace.jsonl"
    if args.trace:
        env["ORDER_JOB_TRACE"] = str(trace_path)
    with session_scope(db_url) as s:
        # A given --database-url is the bench's scratch database: a previous run's shop (and, by cascade, its
        # rows) goes first.
        s.execute(delete(WebhookDelivery).where(WebhookDelivery.shop_domain == SHOP))
        s.execute(delete(Shop).where(Shop.domain == SHOP))
    with session_scope(db_url) as s:
        shop = Shop(domain=SHOP, status="active", scopes="read_orders", currency="GBP")
        s.add(shop)
        s.flush()
        shop_id = shop.id

    watcher = Watcher(db_url, shop_id, args.poll)
    created: dict[int, float] = {}        # order id -> create_order called (monotonic)
    delivered: dict[int, float] = {}      # order id -> the app answered 200 to its orders/create

    def on_attempt(a) -> None:
        if a.topic == "orders/create" and a.status == 200 and not a.duplicate:
            at = time.monotonic()
            oid = a.resource_id           # the order's id, without parsing its ~25 KB body
            if oid not in delivered:
                delivered[oid] = at
                watcher.add(oid, at)

    store, variant, customer = build_store(baskets, app_url, args, on_attempt)

    procs = start_processes(env, port, args.workers)
    watcher.start()
    try:
        cpu0 = cpu_seconds()
        run = send_orders(store, baskets, variant, customer, args.rate, args.seconds, args.senders, created)
        sent, lag, failures, t0 = run["sent"], run["lag"], run["failures"], run["t0"]
        send_time = run["send_time"]
        store.webhooks.wait_idle(120)
        standin_cpu = cpu_seconds() - cpu0
        standin_wall = time.monotonic() - t0
        deliver_time = max(delivered.values(), default=t0) - t0
        deadline = time.monotonic() + 120
        while watcher.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        watcher.done.set()
        watcher.join(5)
        store.webhooks.stop()
        bad = [a for a in store.webhooks.attempts if a.status != 200]
        # correctness of what was measured: every customer scored, pair counts equal a recount
        pairs = Counter()
        for _, prods in sent:
            for a, b in combinations(prods, 2):
                pairs[(a, b)] += 1
        from workers.rebuild_jobs import read_bucket_counts

        with session_scope(db_url) as s:
            # The app's own reader (snapshots + every form of delta), whatever the storage of pair deltas.
            stored_pairs = Counter()
            for _baskets, _items, bucket_pairs in read_bucket_counts(s, shop_id).values():
                stored_pairs.update(bucket_pairs)
            stored_pairs = +stored_pairs
            unscored = s.scalar(select(func.count()).select_from(CustomerStats).where(
                CustomerStats.shop_id == shop_id, CustomerStats.segment.is_(None)))
            n_customers = s.scalar(select(func.count()).select_from(CustomerStats)
                                   .where(CustomerStats.shop_id == shop_id))
        jobs = job_stats(redis.url)
    finally:
        stop(procs)
        redis.stop()
        dispose_all()
    lat = list(watcher.latency.values())
    if not lat:
        raise SystemExit("no order was applied")
    from_create = [watcher.seen_at[o] - created[o] for o in watcher.seen_at if o in created]
    in_flight = [delivered[o] - created[o] for o in delivered if o in created]
    expected_customers = len({c for c, _ in baskets[:len(sent)] if c})
    res = {"bench": "freshness", "db": db_url.split(":")[0], "data": "synthetic" if args.synthetic else "online_retail",
           "rate_target": args.rate, "rate_achieved": round(len(sent) / send_time, 1),
           "delivered_rate": round(len(delivered) / deliver_time, 1) if deliver_time > 0 else None,
           "orders": len(sent), "lines_per_order": round(sum(len(b[1]) for b in baskets[:len(sent)]) / max(1, len(sent)), 1),
           "pairs_per_order": round(sum(pairs.values()) / max(1, len(sent)), 1),
           "sender_lag_p95_s": round(pct(lag, 0.95), 3) if lag else None,
           "create_to_delivered_p95_s": round(pct(in_flight, 0.95), 3) if in_flight else None,
           "applied": len(lat), "unapplied": len(watcher.pending), "webhook_failures": len(bad) + len(failures),
           # failed attempts by answer (status code, or the error's type: TimeoutError = no answer in 10 s)
           "webhook_failure_kinds": dict(Counter(str(a.status) if a.status else (a.error or "?").split(":")[0]
                                                 for a in bad)),
           "p50_s": round(pct(lat, 0.50), 3), "p95_s": round(pct(lat, 0.95), 3), "max_s": round(max(lat), 3),
           "mean_s": round(statistics.mean(lat), 3),
           "create_to_visible_p95_s": round(pct(from_create, 0.95), 3) if from_create else None,
           "customers_scored": n_customers, "customers_expected": expected_customers,
           "customers_unscored": unscored, "pair_counts_ok": stored_pairs == +pairs,
           "workers": args.workers, "delivery_threads": args.delivery_threads, "target_p95_s": 1.0,
           "orders_paid_delivered": not args.without_paid, "rules_debounce_s": args.rules_debounce or 30,
           "load_avg_1m": round(os.getloadavg()[0], 2),
           # this process (the stand-in: order creation, payloads, delivery threads; the harness: senders,
           # on_attempt, watcher) from the first order to the last delivery; the app is other processes
           "standin_cpu_ms_per_webhook": round(standin_cpu / max(1, len(store.webhooks.attempts)) * 1000, 3),
           "standin_cpu_cores": round(standin_cpu / standin_wall, 2)}
    # where the tail sits: p95 of delivered -> visible per 10 s of delivery (a stall shows as one window)
    t_first = min(delivered.values()) if delivered else 0.0
    windows: dict[int, list] = {}
    for o, v in watcher.latency.items():
        if o in delivered:
            windows.setdefault(int((delivered[o] - t_first) // 10), []).append(v)
    res["p95_by_10s"] = [round(pct(windows[w], 0.95), 2) for w in sorted(windows)]
    res["jobs"] = jobs
    if args.trace:
        res["order_job"] = order_job_trace(trace_path)
    res["ok"] = (res["p95_s"] <= 1.0 and res["unapplied"] == 0 and res["pair_counts_ok"] and not unscored
                 and n_customers == expected_customers and res["rate_achieved"] >= 0.95 * args.rate)
    print(f"sent {res['orders']} orders ({res['lines_per_order']} lines, {res['pairs_per_order']} pairs each) at "
          f"{res['rate_achieved']}/s (target {args.rate}); applied {len(lat)}; delivered -> visible "
          f"p50 {res['p50_s']} s, p95 {res['p95_s']} s, max {res['max_s']} s")
    print(f"  p95 per 10 s of delivery: {res['p95_by_10s']}")
    for name, v in jobs.items():
        print(f"  job {name}: {v}")
    if args.trace:
        print(f"  order job: {res['order_job']}")
    print("RESULT " + json.dumps(res))


def order_job_trace(path: Path) -> dict:
    """The order job's batches (ORDER_JOB_TRACE lines): its CPU per applied order (process CPU between two
    consecutive batches of the same process, i.e. everything the job did for the later one), the write-lock hold,
    and the phase seconds per 1,000 orders (p.: prepare, w.: write incl. w.turn_wait = waiting for the SQLite write
    turn before the write transaction, w.overlapped / w.write_wait: pipelined, the time the next batch was prepared
    while this one was written / then waited for the write; j.: the job loop between batches). The first batch of
    each process is left out (no CPU reference). Wall per order also per third of the run's batches (by time):
    the last third is the job's capacity under a backlog (a job with no backlog waits for work, which counts)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    prev: dict = {}
    cpu = wall = 0.0
    applied = counted = 0
    phases: Counter = Counter()
    counts: Counter = Counter()
    spans = []                            # (t, wall, cpu, orders) per counted batch
    for r in rows:
        p = prev.get(r["pid"])
        prev[r["pid"]] = r
        if p is None:
            continue
        cpu += r["cpu"] - p["cpu"]
        wall += r["t"] - p["t"]
        counted += r.get("applied", 0)
        spans.append((r["t"], r["t"] - p["t"], r["cpu"] - p["cpu"], r.get("applied", 0)))
        for part in ("prepare_timings", "write_timings", "job_timings"):
            for k, v in (r.get(part) or {}).items():
                (counts if k in TRACE_COUNTS else phases)[f"{part[0]}.{k}"] += v
        phases["lock"] += r.get("lock_s", 0.0)
    applied = sum(r.get("applied", 0) for r in rows)
    per_k = 1000 / max(1, counted)
    thirds = []
    if spans:
        t0, t1 = min(s[0] for s in spans), max(s[0] for s in spans)
        for k in range(3):
            part = [s for s in spans if min(2, int(3 * (s[0] - t0) / max(1e-9, t1 - t0))) == k]
            n = max(1, sum(s[3] for s in part))
            thirds.append({"wall_ms": round(sum(s[1] for s in part) * 1000 / n, 3),
                           "cpu_ms": round(sum(s[2] for s in part) * 1000 / n, 3),
                           "orders_per_batch": round(n / max(1, len(part)), 1)})
    return {"batches": len(rows), "applied": applied, "fallbacks": sum(r.get("fallback", 0) for r in rows),
            "pipeline_discarded": sum(r.get("pipeline_discarded", 0) for r in rows),
            "cpu_ms_per_order": round(cpu * 1000 / max(1, counted), 3),
            "wall_ms_per_order": round(wall * 1000 / max(1, counted), 3),
            "per_order_by_third": thirds,
            "phases_s_per_1000_orders": {k: round(v * per_k, 3) for k, v in sorted(phases.items())},
            "checks_per_1000_orders": {k: round(v * per_k, 1) for k, v in sorted(counts.items())}}

# Entries of the order job's trace timings that count events (batches whose validation re-read the bodies / the
# stored rows, workers.order_jobs._unchanged) instead of measuring seconds.
TRACE_COUNTS = ("body_check", "rows_check")


if __name__ == "__main__":
    main()
