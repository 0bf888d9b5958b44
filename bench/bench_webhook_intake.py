"""Bench: webhook intake under load - the real app vs a bare Flask app, both under gunicorn, same settings.

Both servers run `gunicorn -c python:shopify_app.gunicorn_conf -w 2 --threads 8 --keep-alive 5` (gthread; the config
module is the production one: one BLAS thread, gc.freeze after load) on this machine at the same time; the load
alternates between them in --rounds rounds (bare, app, app, bare, ...), so the noise of a shared machine hits both
alike. What is sent: properly signed orders/create deliveries (Shopify's sample payload from the stand-in's
fixtures as compact JSON, ~10.7 KB, a unique order id, X-Shopify-Webhook-Id and Event-Id each; every 20th request
re-sends an earlier delivery byte for byte, as Shopify's retries do), all built before the clock starts. The bare app answers 200 after
reading the body: it is the ceiling of this machine + gunicorn + the load generator.

Load generator (--load):
  wrk (default when `wrk` is on PATH): `wrk -t 2 -c 16` with bench/wrk_deliveries.lua. The deliveries are written
      as raw HTTP requests into one file per wrk thread (thread i: items[i::2]); each thread sends its slice in
      order, each request once, over keep-alive connections, and stops when all of its slice is answered, so the
      set of webhook ids sent is known exactly. The script counts statuses and 'already_recorded' answers (wrk
      cannot tell which request an answer belongs to, so those are counts, not per-item answers). Every k-th
      request of a thread says `Connection: close` (k = --reconnect-every / connections per thread): each
      connection is replaced about every --reconnect-every requests, as with the Python threads (with one
      connection each for the whole run, gunicorn's accept race can put all of them on one of the two workers).
      Latency is wrk's, from writing a request to reading its answer; requests/s is over the time from the first
      request written to the last answer read. wrk's latency is *closed loop*: a connection sends its next request
      only after the previous answer, so a stalled server is sent less during the stall (coordinated omission);
      it is latency at saturation with 16 requests in flight, not at a given arrival rate. (wrk 4.1 adds synthetic
      samples to its histogram to correct for that; the bench removes them again and reports measured latencies
      only, checked by their count.) wrk runs in C on an event loop: it leaves the servers far more of the 2 cores
      than Python threads do, and adds no GIL wait to each measurement.
  python: --concurrency threads of this process, each posting over a keep-alive http.client connection that it
      replaces every --reconnect-every requests; per-request answers are kept. It burns a large share of the
      2 cores itself and its GIL adds latency to every measurement (the bare endpoint's own p99 shows the floor).
  --rate R (fixed arrival rate, open loop) is always Python-driven: request i is due at start + i / R and its
      latency counts from that moment (a request sent late because every thread was busy is charged for it).

Reported: requests/s of both over all rounds, their ratio (target >= 0.6) and the ratio per round, p50 / p99
latency of the app's intake (target p99 < 20 ms) and of the bare app, and the exactly-once checks, defined as:
  recorded once  - one webhook_deliveries row per distinct X-Shopify-Webhook-Id answered 200, none for a re-send
                   (it answers 200 'already_recorded'), no webhook id twice (wrk: every answer a 200 -> the rows are
                   exactly the webhook ids sent; answered_already_recorded == resends_sent);
  enqueued once  - right after the load (no worker running) every row is 'pending_analytics' and the webhooks
                   queue holds exactly one job, the shop's coalescing order job `process-orders-{shop}` (a row
                   of another status would need exactly one `delivery-{row id}` job);
  handed over    - after draining the queue with an in-process RQ worker (--no-drain skips it), every row is
                   'processed' by the shop's order job (it ran at least once and far fewer times than there are
                   deliveries), and the shop has one Order row per distinct order id sent.
--worker: a real RQ worker process (`flask worker`) drains the queue during the load, so the shop's order job
writes (SQLite: holds the write lock) while deliveries come in; 'enqueued once' is then not observable and
'handed over' waits for the worker to process every row.

Database: a SQLite file in a temporary folder (WAL, as in production config), or --database-url (PostgreSQL; a
fresh scratch shop is used, nothing else is touched; when the server runs on this machine its processes' CPU per
app request is reported too, app_db_cpu_us_per_req). Redis: an embedded redis-server. The order job's wake is
made by each app process's background waker after the answer: 'enqueued once' holds whenever it is looked at.

    .venv/bin/python bench/bench_webhook_intake.py [--requests 3000] [--concurrency 16] [--rounds 3]
        [--load wrk|python] [--wrk-threads 2] [--reconnect-every 50] [--threads 8] [--rate R [--rate-seconds 4]]
        [--worker] [--no-drain] [--database-url URL]

Ends with one line: RESULT {json}.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from shopify_app.config import Config  # noqa: E402
from shopify_app.db import session_scope  # noqa: E402
from shopify_app.models import Order, Shop, WebhookDelivery  # noqa: E402
from shopify_app.shopify.webhooks import compute_webhook_hmac  # noqa: E402

API_KEY = "bench-intake-key"
API_SECRET = "bench-intake-secret-0123456789abcdef01"
THREADS = 8
# The production config module (gthread, one BLAS thread, gc.freeze after load) for both servers: same settings.
# Given as a file, not `python:shopify_app.gunicorn_conf`: importing it would import the `shopify_app` package from
# wherever sys.path finds it first (the editable install), not necessarily from this checkout.
GUNICORN = ["-c", str(ROOT / "shopify_app" / "gunicorn_conf.py"), "-w", "2", "--threads", str(THREADS),
            "--keep-alive", "5", "--log-level", "warning"]
FIXTURE = ROOT / "shopify_app" / "devstore" / "fixtures" / "orders__create.json"
RESEND_EVERY = 20

BARE_APP = '''
from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/orders")
def receive():
    request.get_data()
    return {"status": "ok"}


@app.get("/healthz")
def health():
    return "ok"
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(target: str, env: dict, pythonpath: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", *GUNICORN, "-b", f"127.0.0.1:{port}",
                             "--pythonpath", pythonpath, target], env=env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{target} did not come up")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def deliveries(shop: str, n: int) -> list[tuple[bytes, dict, str, int | None]]:
    """(body, headers, webhook id, order id or None for a re-send) - built before the clock starts."""
    base = json.loads(FIXTURE.read_text().replace("{shop}.myshopify.com", shop))
    base.update(test=False, cancelled_at=None, cancel_reason=None, financial_status="paid")
    out = []
    for i in range(n):
        if i and i % RESEND_EVERY == 0:
            body, headers, wid, _ = out[i - RESEND_EVERY // 2]       # a Shopify retry of an earlier delivery
            out.append((body, headers, wid, None))
            continue
        order_id = 9_000_000_000 + i
        body = json.dumps(dict(base, id=order_id, admin_graphql_api_id=f"gid://shopify/Order/{order_id}"),
                          separators=(",", ":")).encode()
        wid = str(uuid.uuid4())
        headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                   "X-Shopify-Hmac-Sha256": compute_webhook_hmac(body, API_SECRET), "X-Shopify-Shop-Domain": shop,
                   "X-Shopify-API-Version": "2026-10", "X-Shopify-Webhook-Id": wid,
                   "X-Shopify-Event-Id": str(uuid.uuid4()), "X-Shopify-Triggered-At": "2026-11-23T12:00:00Z",
                   "X-Shopify-Name": "orders-ingest"}
        out.append((body, headers, wid, order_id))
    return out


def load(port: int, items: list, concurrency: int, reconnect_every: int = 0, rate: float = 0.0) -> dict:
    """Post every item once; returns wall time, statuses and per-request latencies (seconds). Each thread opens a
    new connection every `reconnect_every` requests (0: never), the time to connect counted in the request.
    rate > 0: open loop, item i is due at start + i / rate and its latency is counted from that moment (a request
    sent late because every thread was busy is charged for the wait: no coordinated omission)."""
    latencies: list[float] = []
    statuses: list[tuple[int, dict | None]] = [None] * len(items)
    by_item: list[float | None] = [None] * len(items)
    lock = threading.Lock()
    next_i = iter(range(len(items)))
    start = time.perf_counter() + 0.05

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        sent = 0
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                break
            body, headers, _, _ = items[i]
            sent += 1
            if reconnect_every and sent % reconnect_every == 0:
                conn.close()
            due = None
            if rate:
                due = start + i / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            for attempt in range(3):
                try:
                    t = due if due is not None else time.perf_counter()
                    conn.request("POST", "/webhooks/orders", body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    mine.append(time.perf_counter() - t)
                    by_item[i] = mine[-1]
                    try:
                        statuses[i] = (resp.status, json.loads(data))
                    except ValueError:
                        statuses[i] = (resp.status, None)
                    if resp.getheader("Connection", "").lower() == "close":
                        conn.close()
                    break
                except (OSError, http.client.HTTPException):   # server closed the keep-alive connection
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    counts: dict[int, int] = {}
    for st in statuses:
        counts[st[0] if st else 0] = counts.get(st[0] if st else 0, 0) + 1     # 0: no answer at all
    already = sum(1 for st in statuses if st and (st[1] or {}).get("status") == "already_recorded")
    return {"wall": wall, "rps": len(items) / wall, "n": len(items), "statuses": statuses, "status_counts": counts,
            "already_recorded": already, "latencies": sorted(latencies), "by_item": by_item}


WRK_SCRIPT = Path(__file__).with_name("wrk_deliveries.lua")


def raw_request(body: bytes, headers: dict, port: int, close: bool) -> bytes:
    """One delivery as the bytes of an HTTP/1.1 request (what http.client sends, plus Connection: close when the
    connection is to be replaced after it)."""
    lines = ["POST /webhooks/orders HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept-Encoding: identity",
             *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def load_wrk(port: int, items: list, concurrency: int, reconnect_every: int = 0, threads: int = 2,
             workdir: Path | None = None) -> dict:
    """Post every item once with wrk (-t threads -c concurrency, keep-alive) and bench/wrk_deliveries.lua: thread i
    sends items[i::threads] in order, each once, then stops when all of them are answered. Returns what load()
    returns, except `statuses`: per-status counts (`status_counts`) and the number of 'already_recorded' answers
    instead of one answer per item (wrk's script cannot tell which request an answer belongs to).

    Reconnects: a thread's every k-th request carries `Connection: close` (k = reconnect_every / connections per
    thread), so each connection is replaced about every `reconnect_every` requests, as with the Python threads.
    Latency: wrk's own, from writing the request to reading the whole answer (the connect is not in it);
    closed loop (coordinated omission: a connection waits for its answer before it sends the next request)."""
    workdir = Path(tempfile.mkdtemp(prefix="wrk-", dir=workdir))
    per_thread = max(1, concurrency // threads)
    every = max(1, reconnect_every // per_thread) if reconnect_every else 0
    for t in range(threads):
        with open(workdir / f"t{t + 1}.req", "wb") as f:
            for n, (body, headers, _, _) in enumerate(items[t::threads], start=1):
                raw = raw_request(body, headers, port, close=bool(every) and n % every == 0)
                f.write(b"%d\n" % len(raw))
                f.write(raw)
    duration = max(60, len(items) // 50)          # a guard only: the threads stop when their slice is answered
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration}s", "-T", "30s",
           "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}/webhooks/orders"]
    env = dict(os.environ, WRK_DELIVERIES_DIR=str(workdir), WRK_DELIVERY_THREADS=str(threads),
               WRK_DELIVERY_CONNECTIONS=str(concurrency))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    result = workdir / "result.txt"
    if out.returncode != 0 or not result.exists():
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    fields: dict[str, int] = {}
    status_counts: dict[int, int] = {}
    histogram: dict[int, int] = {}
    per_thread = []
    for line in result.read_text().splitlines():
        parts = line.split()
        if parts[0] == "latency":
            histogram[int(parts[1])] = int(parts[2])
        elif parts[0] == "status":
            status_counts[int(parts[1])] = status_counts.get(int(parts[1]), 0) + int(parts[2])
        elif parts[0] == "thread":
            per_thread.append(dict(zip(parts[2::2], map(int, parts[3::2]))))
        else:
            fields[parts[0]] = int(parts[1])
    shutil.rmtree(workdir)
    answered = sum(t["answered"] for t in per_thread)
    raw = uncorrected(histogram, fields["duration_us"], fields["requests"], concurrency)
    if sum(raw.values()) != fields["requests"]:
        raise SystemExit(f"wrk's latency histogram holds {sum(raw.values())} samples for {fields['requests']} answers")
    wall = (max(t["last_us"] for t in per_thread) - min(t["first_us"] for t in per_thread)) / 1e6
    if answered < len(items):       # a request lost with its connection: the run ended at the -d guard
        wall = fields["duration_us"] / 1e6
    return {"wall": wall, "rps": len(items) / wall, "n": len(items), "statuses": None,
            "status_counts": {**status_counts, **({0: len(items) - answered} if answered < len(items) else {})},
            "already_recorded": sum(t["already_recorded"] for t in per_thread),
            "wrk_errors": {k[6:]: v for k, v in fields.items() if k.startswith("error_") and v},
            "latencies": sorted(v / 1e6 for v, k in raw.items() for _ in range(k))}


def uncorrected(histogram: dict[int, int], runtime_us: int, complete: int, connections: int) -> dict[int, int]:
    """wrk's measured latencies (us -> count) from the histogram it hands to done(): wrk 4.1 first adds, for every
    sample n >= 2 x interval (interval = runtime / (answers per connection)), synthetic samples at n - interval,
    n - 2 x interval, .. while > interval (its coordinated-omission correction, stats_correct). Synthetic samples
    only go below their source, so walking down from the largest value recovers every measured count exactly.
    The bench reports the measured (closed-loop) latencies; the caller checks their count is the answers'."""
    if complete // connections == 0:
        return dict(histogram)
    interval = runtime_us // (complete // connections)
    added: dict[int, int] = {}
    raw: dict[int, int] = {}
    for n in sorted(histogram, reverse=True):
        count = histogram[n] - added.get(n, 0)
        if count:
            raw[n] = count
        if n >= interval * 2:
            m = n - interval
            while count and m > interval:
                added[m] = added.get(m, 0) + count
                m -= interval
    return raw


def server_cpu(proc: subprocess.Popen, system_only: bool = False) -> float:
    """CPU seconds (user + system, or system only) used so far by the server's worker processes (gunicorn's
    children). The system share is the kernel's work for them: sockets, and the database file writes of the app."""
    total = 0.0
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += ((0 if system_only else int(fields[11])) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def postgres_server_pid(db_url: str) -> int | None:
    """The postmaster's pid when the database is a PostgreSQL server on this machine (the parent of our backend),
    else None: its processes' CPU is then the database's share of each request."""
    if not db_url.startswith("postgresql"):
        return None
    from shopify_app.db import get_engine

    with get_engine(db_url).connect() as c:
        backend = c.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    try:
        ppid = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None                              # a remote server
    return ppid


def tree_cpu(root: int | None) -> float:
    """CPU seconds (user + system) used so far by `root` and its child processes."""
    if root is None:
        return 0.0
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == root or int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measured(proc: subprocess.Popen, port: int, items: list, concurrency: int, reconnect_every: int,
             rate: float = 0.0, db_server: int | None = None, loader=None) -> dict:
    """load() plus the server's CPU per request (its worker processes' CPU time over the load / requests): what
    a request costs the server, much less sensitive to other work on a shared machine than requests/s.
    db_server: a local PostgreSQL's postmaster pid; its processes' CPU over the load is reported apart."""
    before, sys_before, db_before = server_cpu(proc), server_cpu(proc, True), tree_cpu(db_server)
    run = loader(port, items, concurrency, reconnect_every) if loader else load(port, items, concurrency,
                                                                                  reconnect_every, rate)
    run["cpu_s"] = server_cpu(proc) - before
    run["sys_cpu_s"] = server_cpu(proc, True) - sys_before
    run["db_cpu_s"] = tree_cpu(db_server) - db_before
    return run


def merge(runs: list[dict]) -> dict:
    """Several loads as one: requests/s over their summed wall time, latencies pooled."""
    wall = sum(r["wall"] for r in runs)
    n = sum(r["n"] for r in runs)
    counts: dict[int, int] = {}
    for r in runs:
        for code, k in r["status_counts"].items():
            counts[code] = counts.get(code, 0) + k
    return {"wall": wall, "rps": n / wall, "n": n, "status_counts": counts,
            "statuses": None if any(r["statuses"] is None for r in runs) else [s for r in runs for s in r["statuses"]],
            "already_recorded": sum(r["already_recorded"] for r in runs),
            "latencies": sorted(x for r in runs for x in r["latencies"]),
            "cpu_us_per_req": sum(r.get("cpu_s", 0.0) for r in runs) / n * 1e6,
            "sys_cpu_us_per_req": sum(r.get("sys_cpu_s", 0.0) for r in runs) / n * 1e6,
            "db_cpu_us_per_req": sum(r.get("db_cpu_s", 0.0) for r in runs) / n * 1e6}


def wait_processed(db_url: str, shop_id: int, order_ids: set[int], timeout: float = 120) -> dict:
    """--worker: wait until the worker process has processed every row; check the orders arrived."""
    t = time.perf_counter()
    while True:
        with session_scope(db_url) as s:
            by_status = dict(s.execute(select(WebhookDelivery.status, func.count())
                                       .where(WebhookDelivery.shop_id == shop_id)
                                       .group_by(WebhookDelivery.status)).all())
        if set(by_status) == {"processed"} or time.perf_counter() - t > timeout:
            break
        time.sleep(0.5)
    with session_scope(db_url) as s:
        orders = set(s.scalars(select(Order.id).where(Order.shop_id == shop_id)))
    return {"drain_seconds": round(time.perf_counter() - t, 1), "rows_by_status": by_status,
            "handed_over": set(by_status) == {"processed"} and orders == order_ids}


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def check_recorded(db_url: str, shop_id: int, items: list, runs: list[dict]) -> dict:
    """`runs`: the loads that sent `items`, in order. With per-item answers (Python loads) the webhook ids answered
    200 must be exactly the rows; with wrk (counts only) every id sent must be a row when every answer was a 200,
    else the rows must be sent ids, none twice, at most one missing per non-200 answer."""
    n_200 = sum(r["status_counts"].get(200, 0) for r in runs)
    already = sum(r["already_recorded"] for r in runs)
    with session_scope(db_url) as s:
        rows = s.execute(select(WebhookDelivery.id, WebhookDelivery.webhook_id, WebhookDelivery.status)
                         .where(WebhookDelivery.shop_id == shop_id)).all()
    ids = [r.webhook_id for r in rows]
    sent_ids = {it[2] for it in items}
    if all(r["statuses"] is not None for r in runs):
        statuses = [st for r in runs for st in r["statuses"]]
        distinct = {it[2] for it, st in zip(items, statuses) if st and st[0] == 200}
        once = set(ids) == distinct
    else:
        distinct = sent_ids if n_200 == len(items) else None
        once = set(ids) == sent_ids if distinct is not None else (
            set(ids) <= sent_ids and len(sent_ids - set(ids)) <= len(items) - n_200)
    return {"sent": len(items), "answered_200": n_200, "non_200": len(items) - n_200,
            "distinct_webhook_ids": len(distinct) if distinct is not None else None, "rows": len(rows),
            "resends_sent": sum(1 for it in items if it[3] is None), "answered_already_recorded": already,
            "recorded_once": once and len(set(ids)) == len(ids),
            "row_ids": [r.id for r in rows], "statuses": sorted({r.status for r in rows})}


def check_enqueued(config: Config, row_ids: list[int], statuses: list[str], shop_id: int) -> dict:
    """Order deliveries of an installed shop are handed to the shop's coalescing order job (status
    'pending_analytics', one waiting job per shop); any other row gets its own `delivery-{id}` job. Either way
    every row must be covered exactly once, with no duplicate job in the queue."""
    from shopify_app.queues import WEBHOOKS, get_queue, order_job_id

    q = get_queue(config, WEBHOOKS)
    queued = q.get_job_ids()                      # the queue's list, duplicates included
    if statuses == ["pending_analytics"]:
        expected = {order_job_id(shop_id)}
    else:
        expected = {f"delivery-{i}" for i in row_ids}
    return {"queued_jobs": len(queued), "enqueued_once": len(queued) == len(set(queued)) == len(expected)
            and set(queued) == expected}


def drain(config: Config, db_url: str, shop_id: int, order_ids: set[int]) -> dict:
    """Run the queued jobs in this process (RQ SimpleWorker, burst) and check the hand-over to the order job."""
    from rq import SimpleWorker

    from shopify_app.queues import WEBHOOKS, get_queue
    from workers import context

    context.set_config(config)
    q = get_queue(config, WEBHOOKS)
    runs = {"process_delivery": 0, "process_pending_orders": 0}

    class Counting(SimpleWorker):
        def perform_job(self, job, *args, **kwargs):
            name = job.func_name.rsplit(".", 1)[-1]
            runs[name] = runs.get(name, 0) + 1
            return super().perform_job(job, *args, **kwargs)

    t = time.perf_counter()
    Counting([q], connection=q.connection).work(burst=True, logging_level="WARNING")
    seconds = time.perf_counter() - t
    with session_scope(db_url) as s:
        by_status = dict(s.execute(select(WebhookDelivery.status, func.count())
                                   .where(WebhookDelivery.shop_id == shop_id).group_by(WebhookDelivery.status)).all())
        orders = set(s.scalars(select(Order.id).where(Order.shop_id == shop_id)))
    return {"drain_seconds": round(seconds, 1), "job_runs": runs, "rows_by_status": by_status,
            "handed_over": set(by_status) == {"processed"} and 1 <= runs.get("process_pending_orders", 0)
            < sum(by_status.values()) and orders == order_ids}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--reconnect-every", type=int, default=50,
                    help="each load thread opens a new connection every N requests (0: one keep-alive connection "
                         "per thread for the whole run)")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="gunicorn --threads of BOTH servers (gthread workers; the comparison stays like with like)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="also run both servers at this fixed request rate (open loop, --rate-seconds long) and "
                         "report their p50/p99 there: latency below saturation, not queueing at it")
    ap.add_argument("--rate-seconds", type=float, default=4.0)
    ap.add_argument("--load", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python",
                    help="load generator of the saturation rounds: wrk (default when on PATH; C, event loop, "
                         "--wrk-threads threads) or this process's Python threads (the fallback); --rate is "
                         "always Python-driven")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--no-drain", action="store_true")
    ap.add_argument("--rounds", type=int, default=3,
                    help="bare and app loads alternate in this many rounds (the machine's noise hits both alike)")
    ap.add_argument("--worker", action="store_true",
                    help="scenario: an RQ worker process drains the queue (the shop's order job writes) during "
                         "the app's load, as in production; without it nothing else writes during the load")
    args = ap.parse_args()
    # A TERM (e.g. `timeout`) unwinds like an exception, so the servers started below are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    GUNICORN[GUNICORN.index("--threads") + 1] = str(args.threads)

    from shopify_app.cli import upgrade_database
    from shopify_app.redis_server import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    db_url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    upgrade_database(db_url)
    redis = EmbeddedRedis(tmp / "redis", appendonly=False)
    redis_url = redis.start()
    prefix = f"bench{os.getpid()}"
    config = Config(env="development", api_key=API_KEY, api_secret=API_SECRET, database_url=db_url,
                    redis_url=redis_url, queue_prefix=prefix, instance_path=str(tmp / "instance"))
    env = dict(os.environ, APP_ENV="development", SHOPIFY_API_KEY=API_KEY, SHOPIFY_API_SECRET=API_SECRET,
               DATABASE_URL=db_url, REDIS_URL=redis_url, RQ_QUEUE_PREFIX=prefix, INSTANCE_PATH=str(tmp / "instance"),
               PYTHONPATH=str(ROOT), SECRET_KEY="bench-secret-key-0123456789abcdef")
    shop = f"bench-intake-{uuid.uuid4().hex[:8]}.myshopify.com"
    with session_scope(db_url) as s:
        row = Shop(domain=shop, status="active", access_token_enc="x", settings={})
        s.add(row)
        s.flush()
        shop_id = row.id
    (tmp / "bare_app.py").write_text(BARE_APP)
    warm = deliveries(shop, 100)
    bare_warm = deliveries(shop, 100)
    items = deliveries(shop, args.requests)
    # Different ids for the bare run (it stores nothing, but keep the bodies the same size and shape).
    bare_items = deliveries(shop, args.requests)
    n_rate = int(args.rate * args.rate_seconds)
    rate_items, bare_rate_items = deliveries(shop, n_rate), deliveries(shop, n_rate)

    procs = []
    try:
        bare_proc, bare_port = start_gunicorn("bare_app:app", env, str(tmp))
        procs.append(bare_proc)
        app_proc, app_port = start_gunicorn("shopify_app:create_app()", env, str(ROOT))
        procs.append(app_proc)
        if args.worker:
            procs.append(subprocess.Popen([sys.executable, "-m", "flask", "--app", "shopify_app", "worker"], env=env,
                                          cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        db_server = postgres_server_pid(db_url)
        if args.load == "wrk":
            def loader(port, part, concurrency, reconnect_every):
                return load_wrk(port, part, concurrency, reconnect_every, args.wrk_threads, tmp)
        else:
            loader = load
        loader(bare_port, bare_warm, args.concurrency, args.reconnect_every)                 # warm-up
        warm_run = loader(app_port, warm, args.concurrency, args.reconnect_every)           # warm-up, counted below
        bare_runs, app_runs = [], []
        per = -(-args.requests // args.rounds)
        for r in range(args.rounds):
            chunk = slice(r * per, (r + 1) * per)
            order = [("bare", bare_port, bare_items[chunk], bare_runs), ("app", app_port, items[chunk], app_runs)]
            for _, port, part, runs in (order if r % 2 == 0 else order[::-1]):   # alternate who goes first
                proc = bare_proc if port == bare_port else app_proc
                runs.append(measured(proc, port, part, args.concurrency, args.reconnect_every,
                                     db_server=db_server if port == app_port else None, loader=loader))
        bare, app = merge(bare_runs), merge(app_runs)
        fixed = {}
        if n_rate:
            fixed["bare"] = load(bare_port, bare_rate_items, args.concurrency, args.reconnect_every, args.rate)
            fixed["app"] = load(app_port, rate_items, args.concurrency, args.reconnect_every, args.rate)
        rec = check_recorded(db_url, shop_id, warm + items + rate_items,
                             [warm_run, *app_runs, *([fixed["app"]] if n_rate else [])])
        row_ids = rec.pop("row_ids")
        sent_orders = {it[3] for it in warm + items + rate_items if it[3] is not None}
        if args.worker:
            enq = {"enqueued_once": None}
            handed = {} if args.no_drain else wait_processed(db_url, shop_id, sent_orders)
        else:
            enq = check_enqueued(config, row_ids, rec["statuses"], shop_id)
            handed = {} if args.no_drain else drain(config, db_url, shop_id, sent_orders)
    finally:
        for proc in procs:
            stop(proc)
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)       # the scratch SQLite file + WAL: ~100 MB per run
    lat = app["latencies"]
    res = {
        "database": "postgresql" if db_url.startswith("postgresql") else "sqlite",
        "requests": args.requests, "concurrency": args.concurrency, "reconnect_every": args.reconnect_every,
        "load": args.load + (f" -t {args.wrk_threads}" if args.load == "wrk" else ""),
        "rounds": args.rounds, "worker_during_load": args.worker,
        "round_ratios": [round(a["rps"] / b["rps"], 3) for a, b in zip(app_runs, bare_runs)],
        "round_rps": [[round(b["rps"]), round(a["rps"])] for a, b in zip(app_runs, bare_runs)],
        "gunicorn": " ".join(GUNICORN),
        "bare_rps": round(bare["rps"], 1), "app_rps": round(app["rps"], 1),
        "ratio": round(app["rps"] / bare["rps"], 3), "ratio_target": 0.6,
        "app_p50_ms": round(pct(lat, 50) * 1000, 2), "app_p99_ms": round(pct(lat, 99) * 1000, 2),
        "app_max_ms": round(lat[-1] * 1000, 2) if lat else None, "p99_target_ms": 20,
        "bare_p50_ms": round(pct(bare["latencies"], 50) * 1000, 2),
        "bare_p99_ms": round(pct(bare["latencies"], 99) * 1000, 2),
        "app_cpu_us_per_req": round(app["cpu_us_per_req"]), "bare_cpu_us_per_req": round(bare["cpu_us_per_req"]),
        "cpu_ratio": round(bare["cpu_us_per_req"] / app["cpu_us_per_req"], 3) if app["cpu_us_per_req"] else None,
        "app_sys_cpu_us_per_req": round(app["sys_cpu_us_per_req"]),
        "bare_sys_cpu_us_per_req": round(bare["sys_cpu_us_per_req"]),
        **({"app_db_cpu_us_per_req": round(app["db_cpu_us_per_req"])} if db_server else {}),
        **({"fixed_rate": args.rate,
            **{f"{k}_at_rate_{m}_ms": round(pct(v["latencies"], p) * 1000, 2)
               for k, v in fixed.items() for m, p in (("p50", 50), ("p99", 99))},
            **{f"{k}_at_rate_non_200": v["n"] - v["status_counts"].get(200, 0)
               for k, v in fixed.items()}} if fixed else {}),
        "bare_non_200": bare["n"] - bare["status_counts"].get(200, 0),
        **rec, **enq, **handed,
    }
    print(f"bare Flask: {res['bare_rps']} req/s (p50 {res['bare_p50_ms']} ms, p99 {res['bare_p99_ms']} ms)")
    print(f"app intake: {res['app_rps']} req/s (p50 {res['app_p50_ms']} ms, p99 {res['app_p99_ms']} ms); "
          f"ratio {res['ratio']}")
    print(f"server CPU per request: app {res['app_cpu_us_per_req']} us, bare {res['bare_cpu_us_per_req']} us "
          f"(bare/app {res['cpu_ratio']}; of which system: app {res['app_sys_cpu_us_per_req']} us, "
          f"bare {res['bare_sys_cpu_us_per_req']} us)"
          + (f"; PostgreSQL server {res['app_db_cpu_us_per_req']} us" if db_server else ""))
    if fixed:
        print(f"at a fixed {args.rate:g} req/s: app p50/p99 {res['app_at_rate_p50_ms']}/{res['app_at_rate_p99_ms']} "
              f"ms, bare {res['bare_at_rate_p50_ms']}/{res['bare_at_rate_p99_ms']} ms")
    print(f"recorded once: {res['recorded_once']} ({res['rows']} rows for {res['distinct_webhook_ids']} webhook "
          f"ids, {res['answered_already_recorded']} answers already_recorded for {res['resends_sent']} re-sends); "
          f"enqueued once: {res['enqueued_once']}"
          + (f"; handed over: {res['handed_over']} ({res.get('job_runs', 'worker process')}, "
             f"{res['drain_seconds']} s)" if handed else ""))
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
