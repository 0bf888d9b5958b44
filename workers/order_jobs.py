"""Order analytics job (queue `webhooks`): consume a shop's 'pending_analytics' order/refund deliveries.

`process_pending_orders(shop_id, limit=500)` drains them in batches. A batch is computed from a read transaction
without the write lock (prepare_batch) and written in ONE short write transaction (write_batch), which re-checks
under the shop lock that what the computation read is unchanged and otherwise computes the batch again there
(see "core" below). What a batch does:

  1. (write phase) lock the shop row (per-shop serialization, see below);
  2. take up to `limit` of the shop's deliveries with status 'pending_analytics' and topic orders/* or
     refunds/create, in id order;
  3. convert each (shopify_app.shopify.convert) and apply it with last-writer-wins: the stored Order row
     (always scoped by shop_id) is replaced only by a strictly newer updated_at; a tombstone (orders/delete)
     replaces any version and is never replaced. A replay or an out-of-order older version is a no-op;
  4. apply `diff(stored contribution, new contribution)` (shopify_app.analytics.incremental): additive
     CustomerStats fields, and item / pair / basket count deltas for segment ALL_SEGMENTS (upserts
     count = count + excluded.count). first/last order time and orders_count are *recomputed* from the
     customer's counted Order rows (O(customer's orders)); a customer left with no counted order loses their
     CustomerStats row. The new Order / OrderLine rows and the contribution are stored. Sequential ("buy next")
     counts are maintained per touched customer: their counts before the batch are replaced by their counts
     after it (analytics.sequential.sequential_delta over the customer's orders before / after the batch);
  5. rescore the touched customers with the stored RFM thresholds (ShopModel kind 'rfm') and record a
     SegmentChange (reason 'order') when the named segment changes. A shop without stored thresholds is fitted
     once and stored (workers.rfm_jobs.refit_rfm_in_session), never refitted per batch: a per-batch fit would
     cost O(shop's customers) per order. The model's `customers_now` follows created / removed customers; when
     it moved by more than the shop's `rfm_refit_change_share` since the fit, a refit job is enqueued;
  6. mark the deliveries 'processed' (body erased), or 'invalid' with the error when the payload cannot be
     converted. refunds/create and orders/edited deliveries are processed without changes: Shopify follows
     them with orders/updated, which carries the order's `refunds` / edited lines.

Concurrency: all writes of a shop's analytics happen under a lock on its `shops` row, taken first
(workers.context.lock_shop: SELECT ... FOR NO KEY UPDATE on PostgreSQL), so two jobs of the same shop serialize
and the read-modify-write of Order.contribution / CustomerStats cannot interleave; different shops run in
parallel. On SQLite no row lock is rendered, but every transaction starts with BEGIN IMMEDIATE (shopify_app.db),
which already serializes all writers. Because a batch's writes are one transaction, a failure rolls everything
back and the deliveries stay pending for the retry: the job is idempotent. lock_shop also bumps the shop's
`analytics_generation`: a batch whose snapshot generation is still the one under the lock was not overtaken by
any other lock holder, which spares its validation most re-reads (_unchanged). On PostgreSQL the job pipelines
its batches (ORDER_PIPELINE, _Pipeline): batch N+1 is prepared over N's writes while N is written.

Contract for other writers of Order rows (bulk import, rebuild): `Order.contribution` must hold what the row
added to the aggregates (None = nothing added).

Ingest hand-off: after setting a delivery to 'pending_analytics', call `enqueue_process_orders(config, shop_id)`
(after the commit); bursts coalesce into one queued job per shop. After its commit the job enqueues (coalesced,
fixed ids) an RFM refit when due, a sequential rebuild when `sequential_days` changed, and rules mining,
debounced to one run per RULES_DEBOUNCE_S (schedule_mine_rules; workers.rules_jobs, when that module exists).

Batches: the job (process_pending_orders) drains the shop's pending deliveries batch after batch, each batch its
own transaction bounded by BATCH_DELIVERIES / BATCH_LINES / BATCH_PAIRS / BATCH_SECONDS; the batch's item / basket
deltas are aggregated in Python and written with one upsert statement per table (bulk_rows.upsert_add), its pair deltas
are expanded from the basket changes with numpy (analytics.counts.basket_change_pairs) and written as one
PairCountBlob per bucket, its OrderLine rows with one executemany. When the shop's blobs pile up
(COMPACT_BLOBS / COMPACT_PAIRS) a coalesced compaction job folds them (workers.rebuild_jobs.compact_shop).

Per-order cost: every statement is a primary-key / index lookup on (shop_id, ...) or on the customer's own
orders (ix_orders_shop_customer); nothing scans the shop's history (bench/bench_order_update.py).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import delete, func, insert, inspect, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from shopify_app.analytics.counts import basket_change_pairs, encode_pairs_indexed
from shopify_app.analytics.incremental import COUNT_FIELDS, MONEY_FIELDS, Delta, _add, contribution, diff
from shopify_app.analytics.orders import OrderVersion
from shopify_app.analytics.segments import SCHEMES
from shopify_app.config import env_choice, env_number
from shopify_app.db import Checkpointer, get_engine, sqlite_write_turn
from shopify_app.models import (
    ALL_SEGMENTS, BasketCountDelta, CustomerStats, ItemCountDelta, Order, OrderLine, PairCountBlob, Product,
    SegmentChange, Shop, ShopModel, WebhookDelivery, utcnow,
)
from shopify_app.settings import shop_settings
from shopify_app.shopify.convert import (NOOP_TOPICS, REFUND_TOPICS, order_deleted, order_from_rest, parse_body,
                                         with_product_types)

from . import context
from .bulk_rows import LINE_COLUMNS, ORDER_COLUMNS, insert_rows, line_rows, order_row, upsert_add
from .rfm_jobs import RFM_KIND, refit_needed, refit_rfm_in_session, score_customer, stored_params
from .sequential_jobs import (ORDER_STATE_COLUMNS, BatchTracker, days_in_use, delta_payloads, rebuild_needed,
                              orders_items, summed_deltas, write_payloads)
from .sequential_jobs import compaction_due as sequential_compaction_due
from .sequential_jobs import _record_days as record_days

log = logging.getLogger(__name__)

PENDING_ANALYTICS = "pending_analytics"
UPSERT_CHUNK = 150               # ids per IN (...) list (SQLite's bound-parameter limit, with margin)


# --------------------------------------------------------------------------------------------- entry points
# Batch size. A batch is prepared without the write lock and written under it (prepare_batch / write_batch), so
# the lock is held for the write only, and that write grows with the batch: ~0.5-1 ms per Online Retail order on
# SQLite (the orders' rows and ~27 lines each, count upserts, customer stats, commit; bench/bench_order_batch.py:
# 25 / 50 / 100 orders -> 29 / 49 / 100 ms of CPU under the lock on a busy 2-core machine). The webhook intake
# waits for that lock (SQLite) at every group commit, and at 400 deliveries/s its wait must stay in the tens of
# ms, so a batch takes at most:
#   BATCH_DELIVERIES deliveries (64: ~32 orders at 2 webhooks per order, ~20-30 ms under the lock); under a
#     steady stream the job drains what arrived during its previous batch, so batches are usually smaller;
#   BATCH_LINES order lines in its versions (a few huge orders - Online Retail's largest has 673 lines - end it
#     early; the deliveries after the cut are not even converted);
#   BATCH_PAIRS pair increments of its basket changes (sum of k(k-1)/2; ~1,200 per order on average): the pair
#     deltas are expanded with numpy into one blob per bucket before the lock, so this bounds memory (~50 bytes
#     per pair while aggregating), not the lock;
#   BATCH_SECONDS of preparing (no lock held; bounds the freshness of the batch's first delivery).
# The rest stays pending for the next batch. Knobs for deployments and bench what-ifs (environment).
BATCH_DELIVERIES = env_number("ORDER_BATCH_DELIVERIES", 64, minimum=1)
BATCH_LINES = env_number("ORDER_BATCH_LINES", 1500, minimum=1)
BATCH_PAIRS = env_number("ORDER_BATCH_PAIRS", 1_000_000, minimum=1)
BATCH_SECONDS = env_number("ORDER_BATCH_SECONDS", 0.25, float, minimum=0.0)

# After a batch, a shop holding this many pair blobs (or blob pairs) gets a compaction job (coalesced): at 200
# orders/s a shop writes ~2 blobs / ~250k pairs per second, too much for the hourly schedule alone.
COMPACT_BLOBS = env_number("COMPACT_BLOBS", 64, minimum=1)           # deployment knobs (and tests)
COMPACT_PAIRS = env_number("COMPACT_PAIRS", 2_000_000, minimum=1)


# One job keeps draining the shop's pending deliveries, batch after batch (each its own short transaction): under a
# steady stream this saves a job start (an RQ work-horse fork) per batch, which is most of the latency at a few
# orders per second. Every DRAIN_SECONDS it looks at its queue (`webhooks`): when a job is waiting there (another
# shop's order job, an ingest job) it hands over to a follow-up job at the queue's end, so a waiting job waits at
# most DRAIN_SECONDS plus one batch; when none is, it keeps draining (a follow-up would be this worker's next job
# anyway: a fork and a cold start lost, 0.2-0.4 s every 5 s at 200 orders/s in bench (d)) and enqueues the
# follow-ups due so far (refit, rebuild, rules mining, count compaction), as a hand-over would. After
# DRAIN_MAX_SECONDS it hands over in any case: a job stays well inside RQ's job timeout (180 s by default; a
# timed-out job is killed mid-batch and retried).
DRAIN_SECONDS = 5.0
# A batch has a fixed cost (bench (d)'s trace: ~14 ms CPU per batch + ~2.2 ms per order): under a stream, a job
# that reads again right after a small batch applies a few orders per batch and spends most of its time on that
# fixed cost (6.3 ms CPU per order in batches of 1-4 orders, 2.6 ms in batches of 20-40). After a batch that read
# deliveries but fewer than BATCH_LINGER_BELOW, the job waits BATCH_LINGER_S before it reads again, so the next
# batch gathers what arrives meanwhile. It never delays a lone order (the wait comes after a batch, and an empty
# read ends the job as before); an order arriving during the wait is applied at most BATCH_LINGER_S later.
BATCH_LINGER_S = env_number("ORDER_BATCH_LINGER_S", 0.05, float, minimum=0.0)
BATCH_LINGER_BELOW = env_number("ORDER_BATCH_LINGER_BELOW", 32, minimum=0)
DRAIN_MAX_SECONDS = 60.0
FOLLOWUP_FLAGS = ("refit_rfm", "rebuild_sequential", "applied", "compact_counts")   # what enqueue_followups reads


def process_pending_orders(shop_id: int, limit: int = 500) -> dict:
    with _Pipeline(shop_id, limit=min(limit, BATCH_DELIVERIES), pipelined=_pipelined()) as batches:
        return _drain(shop_id, limit, batches)


def _drain(shop_id: int, limit: int, batches: "_Pipeline") -> dict:
    started = job_started = time.monotonic()
    total: dict = {}
    due: dict = {}                        # follow-up flags since the last enqueue_followups
    handed_over = False
    job_timings: dict = {}                # the job's own waits and calls between two batches (--trace)
    laps = _Laps(job_timings)
    while True:
        result = batches.next()           # clears the wake key before reading (see _Pipeline.next)
        if result.get("status") == "missing":
            return result
        laps.lap("batch")
        if TRACE_PATH:
            result["job_timings"] = dict(job_timings)
            job_timings.clear()
            _trace(result)
            laps.lap("trace")
        for k, v in result.items():
            if isinstance(v, bool):
                total[k] = total.get(k, False) or v
            elif isinstance(v, int) and k != "shop_id":
                total[k] = total.get(k, 0) + v
            elif k == "lock_s":           # write-lock hold per batch: the longest one and the sum
                total["lock_s_max"] = max(total.get("lock_s_max", 0.0), v)
                total["lock_s"] = round(total.get("lock_s", 0.0) + v, 4)
            elif not isinstance(v, dict):  # per-batch phase timings stay out of the job's result
                total[k] = v
        total["batches"] = total.get("batches", 0) + 1
        for k in FOLLOWUP_FLAGS:
            due[k] = bool(due.get(k) or result.get(k))
        left = bool(result.get("more") or result.get("deliveries", 0) >= min(limit, BATCH_DELIVERIES))
        if not left and not result.get("deliveries"):
            woken = _woken(shop_id)
            laps.lap("redis")
            if woken:                     # a delivery committed after our last read: its wake-up may have found
                continue                  # this job (and a follow-up) running and enqueued nothing - read again
            break
        if (not batches.pipelined and not left and result.get("deliveries", 0) < BATCH_LINGER_BELOW
                and BATCH_LINGER_S > 0):
            time.sleep(BATCH_LINGER_S)    # a stream of small batches: let the next one gather (see BATCH_LINGER_S;
            laps.lap("linger")            # the pipeline waits while the batch is written instead)
        if time.monotonic() - started <= DRAIN_SECONDS:
            continue
        if time.monotonic() - job_started < DRAIN_MAX_SECONDS and not _others_waiting():
            # nobody waits for this worker: keep draining, pass the follow-ups on
            enqueue_followups(context.config(), shop_id, due)
            due, started = {}, time.monotonic()
            laps.lap("followups")
            continue
        # drained long enough and another job waits: hand the rest over to a follow-up job at the queue's end
        try:
            job = enqueue_process_orders(context.config(), shop_id)   # this job is 'started': the other id is used
        except Exception as exc:  # Redis down: the next webhook (or a sweeper) enqueues again
            log.warning("could not enqueue the next order batch of shop %s: %s", shop_id, exc)
            job = True
        if job is None:                   # both ids running (the other waits for the shop lock): nobody would
            continue                      # read what is left after we stop - keep draining here
        handed_over = True
        break
    total["more"] = handed_over           # True: a follow-up job continues with what is left
    if batches.final_check():
        due["compact_counts"] = total["compact_counts"] = True
    enqueue_followups(context.config(), shop_id, due)
    return total


# Pipelining. A batch's write (validation, statements, commit: much of it in SQLite / the database server, outside
# the GIL) and the wait for the write turn overlap the preparation of the next batch, which reads a snapshot that
# does not show the batch being written yet and lays that batch's writes over it (prepare_batch's `after`, see
# _Overlay). The next batch is validated under the lock as any batch (write_batch): a wrong overlay would be a
# fallback (prepared again under the lock), never a wrong count.
# ORDER_PIPELINE: "1" pipelined, "0" one batch after the other, "auto" (default) pipelined on PostgreSQL only.
# Measured (bench_order_batch --drain, same backlogs alternated): on PostgreSQL the write mostly waits for the
# server, and the pipeline gains ~10 % wall per order (5.15 -> 4.65 ms); on SQLite the job is CPU-bound in one
# process (wall = CPU), the two threads share the GIL, and the pipeline lost (2.00 -> 2.27 ms) while doubling the
# write-turn hold (0.86 -> 1.93 ms per order) that the webhook intake waits for.
_PIPELINE_ENV = env_choice("ORDER_PIPELINE", "auto", ("auto", "1", "0"))
PIPELINE: bool | str = "auto" if _PIPELINE_ENV == "auto" else _PIPELINE_ENV != "0"


def _pipelined() -> bool:
    if PIPELINE == "auto":
        return get_engine(context.config().sqlalchemy_url).dialect.name != "sqlite"
    return bool(PIPELINE)


class _Pipeline:
    """The job's batches, one after the other. Pipelined: while batch N is written by a writer thread (its own
    connection and write transaction), batch N+1 is prepared from a read snapshot with N laid over it. N+1 is
    dropped (prepared again afresh) when N fails, falls back, or the job stops after N (nothing of it was
    written: its deliveries stay pending)."""

    def __init__(self, shop_id: int, limit: int, pipelined: bool = True):
        self.shop_id, self.limit, self.pipelined = shop_id, limit, pipelined
        self.items_cache: dict = {}       # order items between this job's batches (ITEMS_CACHE_ORDERS)
        self.ahead: PreparedBatch | None = None
        self.pool = None
        self.unchecked = 0                # blobs written since the last compaction check (check_due)

    def __enter__(self):
        if self.pipelined:
            from concurrent.futures import ThreadPoolExecutor
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="order-batch-writer")
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def _kw(self) -> dict:
        return dict(limit=self.limit, budget_s=BATCH_SECONDS, max_pairs=BATCH_PAIRS, max_lines=BATCH_LINES,
                    items_cache=self.items_cache)

    def check_due(self, prep: PreparedBatch) -> bool:
        """Check the shop's blob counts after this batch? The check (two counts in a read transaction, ~8 ms per
        live batch in bench (d)) runs once per COMPACT_BLOBS // 8 blobs the job wrote, and at its end (final_check):
        a compaction is asked for at most that many blobs late (8 of 64)."""
        self.unchecked += len(prep.payloads) + len(prep.seq_blobs)
        if self.unchecked >= max(1, COMPACT_BLOBS // 8):
            self.unchecked = 0
            return True
        return False

    def final_check(self) -> bool:
        """At the job's end: compact_counts for the blobs written since the last check."""
        if not self.unchecked:
            return False
        self.unchecked = 0
        with context.read_transaction() as r:
            return bool(compaction_due(r, self.shop_id) or sequential_compaction_due(r, self.shop_id))

    def next(self) -> dict:
        if not self.pipelined:
            _clear_wake(self.shop_id)     # before reading: a delivery committed after the read wakes a follow-up
            return run_batch(self.shop_id, **self._kw(), check_compaction=self.check_due)
        prep, self.ahead = self.ahead, None
        if prep is None:
            _clear_wake(self.shop_id)
            with context.read_transaction() as r:
                prep = prepare_batch(r, self.shop_id, **self._kw())
        if prep is None:
            return {"shop_id": self.shop_id, "status": "missing"}
        if not prep.read:
            return _result(prep, None, 0, 0, fallback=0)
        writing = self.pool.submit(_write_prepared, self.shop_id, prep, self.check_due(prep))
        t0 = time.perf_counter()
        try:
            if (not prep.more and len(prep.outcome) < min(self.limit, BATCH_LINGER_BELOW)
                    and BATCH_LINGER_S > 0):
                time.sleep(BATCH_LINGER_S)   # a stream of small batches: the next one gathers (BATCH_LINGER_S)
            _clear_wake(self.shop_id)
            ahead = _prepare_after(self.shop_id, prep, self._kw())
        except Exception as exc:  # noqa: BLE001 - the next batch is prepared again after the write
            log.warning("order batch of shop %s could not be prepared ahead: %s", self.shop_id, exc)
            ahead = None
        overlap = time.perf_counter() - t0
        result = writing.result()         # N's failure fails the job, as in the serial path (retried by RQ)
        result["write_timings"]["overlapped"] = round(overlap, 5)
        result["write_timings"]["write_wait"] = round(time.perf_counter() - t0 - overlap, 5)
        if result.get("status") == "missing":
            return result
        if result.get("fallback"):        # N was prepared again under the lock: N+1's overlay is not what N wrote
            ahead = None
        else:
            _cache_finals(self.items_cache, prep)
        result["pipeline_discarded"] = int(ahead is None)     # the next batch is prepared again (serially)
        self.ahead = ahead
        return result


def _prepare_after(shop_id: int, after: PreparedBatch, kw: dict) -> PreparedBatch | None:
    """The batch after `after` (being written right now), from a snapshot taken now: laid over with `after` when
    the snapshot does not show it yet (its first handled delivery still pending), as read when it does (it
    committed meanwhile). PostgreSQL: one REPEATABLE READ snapshot for all the reads (READ COMMITTED could see
    `after` in some of them only)."""
    if not after.outcome:                # nothing handled (cut by its time budget): no state to lay over
        return None
    url = context.config().sqlalchemy_url
    eng = get_engine(url)
    scope = (context.read_transaction() if eng.dialect.name == "sqlite" else
             _snapshot_scope(eng))
    with scope as r:
        first = min(after.outcome)
        status = r.connection().execute(select(WebhookDelivery.status).where(WebhookDelivery.id == first)).scalar()
        return prepare_batch(r, shop_id, **kw, after=after if status == PENDING_ANALYTICS else None)


@contextlib.contextmanager
def _snapshot_scope(eng):
    with Session(bind=eng.execution_options(isolation_level="REPEATABLE READ"), expire_on_commit=False) as s:
        with s.begin():
            yield s


# Bench what-if: with ORDER_JOB_TRACE=<file>, every batch appends one JSON line (its result with phase timings,
# wall clock "t" and the process's CPU seconds "cpu"): bench/bench_freshness.py --trace summarizes them.
TRACE_PATH = os.environ.get("ORDER_JOB_TRACE")


def _trace(result: dict) -> None:
    import json

    with open(TRACE_PATH, "a") as f:
        f.write(json.dumps({"t": time.time(), "cpu": time.process_time(), "pid": os.getpid(), **result},
                           default=str) + "\n")


def _others_waiting() -> bool:
    """A job is waiting in the order job's queue (`webhooks`). Redis down: True (hand over, as before)."""
    from shopify_app.queues import WEBHOOKS, get_queue

    try:
        return get_queue(context.config(), WEBHOOKS).count > 0
    except Exception as exc:  # noqa: BLE001
        log.warning("could not read the length of the %s queue: %s", WEBHOOKS, exc)
        return True


def _woken(shop_id: int) -> bool:
    """The shop's wake key is set: a delivery was committed after this job last cleared it (before its read)."""
    from shopify_app.queues import order_wake_key, redis_connection

    try:
        config = context.config()
        return bool(redis_connection(config.redis_url).exists(order_wake_key(config, shop_id)))
    except Exception as exc:  # noqa: BLE001 - Redis down: as if not woken; the sweeper covers lost wake-ups
        log.warning("could not read the order wake key of shop %s: %s", shop_id, exc)
        return False


def _clear_wake(shop_id: int) -> None:
    from shopify_app.queues import clear_order_wake

    try:
        clear_order_wake(context.config(), shop_id)
    except Exception as exc:  # noqa: BLE001 - Redis down: the key expires; the sweeper covers lost wake-ups
        log.warning("could not clear the order wake key of shop %s: %s", shop_id, exc)


def enqueue_followups(config, shop_id: int, result: dict) -> None:
    """After the batch committed: refit / rebuild when due, rules mining when orders changed. Each is
    best-effort (Redis down: the daily schedules catch up) and coalesces under a fixed job id."""
    steps = []
    if result.get("refit_rfm"):
        from .rfm_jobs import enqueue_refit_rfm
        steps.append(("rfm refit", enqueue_refit_rfm))
    if result.get("rebuild_sequential"):
        from .sequential_jobs import enqueue_rebuild_sequential
        steps.append(("sequential rebuild", enqueue_rebuild_sequential))
    if result.get("applied"):
        steps.append(("rules mining", schedule_mine_rules))
    if result.get("compact_counts"):
        from .rebuild_jobs import enqueue_compact_shop
        steps.append(("count compaction", enqueue_compact_shop))
    for what, fn in steps:
        try:
            fn(config, shop_id)
        except Exception as exc:  # noqa: BLE001 - never fail a committed batch over a follow-up
            log.warning("could not enqueue the %s of shop %s: %s", what, shop_id, exc)


# Rules mining after live orders is debounced: the first batch that changes the counts schedules one mining
# run RULES_DEBOUNCE_S later, and batches in between add nothing. Under a stream, a run per batch (coalesced, but
# back to back) re-read the shop's pair counts and orders every few seconds, and on SQLite that read holds the
# database's write lock, which the intake and this job wait for (bench (d)). Rules are at most this much later.
RULES_DEBOUNCE_S = env_number("RULES_DEBOUNCE_S", 30, minimum=0)   # deployment knob (and bench what-ifs)


def rules_debounce_key(config, shop_id: int) -> str:
    return f"{config.queue_prefix}:debounce:mine-rules:{shop_id}"


def schedule_mine_rules(config, shop_id: int):
    """Mine the shop's rules RULES_DEBOUNCE_S from now unless a run is already scheduled. The key lives as long as
    the wait: a batch committed before the scheduled run starts is read by it (it enqueues the coalesced mining
    job then), a batch after the key expired schedules the next run, so no change goes unmined."""
    from datetime import timedelta

    from shopify_app.queues import DEFAULT, get_queue, redis_connection

    import importlib.util

    if importlib.util.find_spec("workers.rules_jobs") is None:    # rules mining not deployed in this build
        return None
    conn = redis_connection(config.redis_url)
    if not conn.set(rules_debounce_key(config, shop_id), 1, nx=True, ex=RULES_DEBOUNCE_S):
        return None
    return get_queue(config, DEFAULT).enqueue_in(timedelta(seconds=RULES_DEBOUNCE_S),
                                                 "workers.order_jobs.mine_rules_now", shop_id)


def mine_rules_now(shop_id: int):
    """The debounced trigger's job: enqueue the shop's coalesced mining job (workers.rules_jobs)."""
    from .rules_jobs import enqueue_mine_rules

    job = enqueue_mine_rules(context.config(), shop_id)
    return job.id if job is not None else None


def enqueue_process_orders(config, shop_id: int, followup: bool = False):
    """Enqueue the shop's order job, coalesced (shopify_app.queues.enqueue_order_job)."""
    from shopify_app.queues import enqueue_order_job

    return enqueue_order_job(config, shop_id, followup)


# --------------------------------------------------------------------------------------------- core
# A batch runs in two phases so that the database's write lock (SQLite: the only one, which the webhook intake
# needs too) is held only to write:
#   prepare_batch - no lock, a read transaction: the pending deliveries, their conversion, the stored Order rows
#                   they replace, the touched customers' counted orders; from that snapshot the whole batch is
#                   computed (diffs, pair blobs, OrderLine rows, sequential deltas);
#   write_batch   - under the shop lock (and SQLite's write turn): re-reads cheaply what the computation depended
#                   on (the deliveries, the batch's Order rows, the touched customers' order states) and, when
#                   all is as read, writes the prepared result; otherwise (another writer came in between) it
#                   prepares again under the lock - today's path - and counts a fallback.
@dataclass
class _Stored:
    """An Order row as the batch saw it: what _supersedes and the diff read, and what the write phase compares."""
    customer_id: int | None
    counted: bool
    processed_at: dt.datetime
    shopify_updated_at: dt.datetime
    deleted_at: dt.datetime | None
    ingested_at: dt.datetime | None
    financial_status: str | None
    contribution: dict | None

    @classmethod
    def of_version(cls, v: OrderVersion, new: dict, now: dt.datetime) -> "_Stored":
        return cls(v.customer_id, v.counted, v.processed_at, v.updated_at, now if v.deleted else None, now,
                   v.financial_status, new)


def _as_written(v: OrderVersion, new: dict | None, now: dt.datetime) -> "_Stored":
    """The _Stored that _read_stored returns for the row write_batch writes for (v, new) (bulk_rows.order_row):
    the contribution as the JSON column gives it back (a JSON round trip: string keys, lists for tuples); the
    times are naive UTC with microseconds, which both databases keep."""
    return _Stored.of_version(v, json.loads(json.dumps(new)) if new is not None else None, now)


def _state(row: "_Stored") -> tuple:
    """The ORDER_STATE_COLUMNS tuple (without the id) of a _Stored, as _customer_states reads it."""
    return (row.customer_id, row.counted, row.processed_at, row.shopify_updated_at, row.deleted_at, row.ingested_at)


class _Overlay:
    """A batch being written (`after`), laid over a read snapshot that does not show it yet: what the snapshot
    would read once the batch commits. The batch writes its handled deliveries (no longer pending), the attempts
    of the ones it read but left (+1), and the Order rows of its applied orders (replaced by their final versions,
    lines included); everything else it writes (counts, customer stats, models) is not read by prepare_batch."""

    def __init__(self, after: "PreparedBatch"):
        self.after = after
        self.rows = {oid: _as_written(v, new, after.now) for oid, (v, new) in after.finals.items()}

    def delivery(self, did, topic, status, attempts, body) -> tuple:
        if did in self.after.read:       # read but left by the batch: its attempt counted (_write_outcomes)
            attempts = (attempts or 0) + 1
        return did, topic, status, attempts, body

    def stored(self, stored: dict) -> None:
        for oid in stored:
            if oid in self.rows:
                stored[oid] = self.rows[oid]

    def customer_orders(self, states: dict, customers) -> dict:
        """Lays the batch's orders over `states` (the customers' order states, in place); returns {order id:
        items} of the laid-over counted ones."""
        items = {}
        for oid, row in self.rows.items():
            states.pop(oid, None)
            if row.customer_id is not None and int(row.customer_id) in customers:
                states[oid] = _state(row)
                if row.counted:
                    items[oid] = self.after.final_items[oid]
        return items


def _cache_finals(cache: dict, prep: "PreparedBatch") -> None:
    """After the batch committed as prepared: its orders' items under the states they now have, so the next
    batches read neither their lines nor older items (see ITEMS_CACHE_ORDERS)."""
    for oid, (v, new) in prep.finals.items():
        items = prep.final_items.get(oid)
        if items is not None:
            cache[oid] = (_state(_as_written(v, new, prep.now)), items)


@dataclass
class PreparedBatch:
    """A batch computed outside the write lock (prepare_batch), with what it was computed from."""
    shop_id: int
    now: dt.datetime
    limit: int
    budget_s: float | None
    max_pairs: int | None
    max_lines: int | None
    days: int                                   # sequential N the deltas were counted with
    read: dict = field(default_factory=dict)    # delivery id -> (status, attempts, body) as read
    outcome: dict = field(default_factory=dict)  # delivery id -> (status, error) of the handled ones
    more: bool = False
    applied: int = 0
    skipped: int = 0
    invalid: int = 0
    stored: dict = field(default_factory=dict)  # order id of the batch -> _Stored as read (None: not stored)
    customer_orders: dict = field(default_factory=dict)  # order id -> state of the touched customers' orders
    customers: set = field(default_factory=set)  # customers whose sequential counts the batch may change
    typed: set = field(default_factory=set)     # products whose type the batch looked up in the catalogue
    types: dict = field(default_factory=dict)   # ... and the types it found
    finals: dict = field(default_factory=dict)  # order id -> (last applied version, its contribution)
    delta: Delta = field(default_factory=Delta)
    lines: list = field(default_factory=list)   # OrderLine rows of the applied orders (LINE_COLUMNS)
    payloads: dict = field(default_factory=dict)  # pair blobs: {bucket: (pairs, payload)}
    seq_rows: list = field(default_factory=list)   # sequential item delta rows (upserted)
    seq_blobs: list = field(default_factory=list)  # sequential pair blobs: (bucket, pairs, payload)
    final_items: dict = field(default_factory=dict)  # order id -> items of its final version (counted, customer)
    overlaid: bool = False                      # prepared against a batch still being written (the pipeline)
    generation: int | None = None               # the shop's analytics_generation its reads correspond to
    timings: dict = field(default_factory=dict)  # phase -> seconds


class _Laps:
    """Seconds per phase, for the job result and bench/bench_order_batch.py."""

    def __init__(self, into: dict):
        self.into, self.t = into, time.perf_counter()

    def lap(self, name: str) -> None:
        t = time.perf_counter()
        self.into[name] = round(self.into.get(name, 0.0) + t - self.t, 5)
        self.t = t


def process_shop_orders(s, shop_id: int, limit: int = 500, now: dt.datetime | None = None,
                        budget_s: float | None = None, max_pairs: int | None = None,
                        max_lines: int | None = None) -> dict:
    """One batch, both phases in the caller's transaction, under the shop lock taken first (tests and callers with
    their own session; nothing can change in between, so the write phase does not re-validate). With `budget_s`,
    deliveries not started within that many seconds stay pending (result "more": True); with `max_pairs` /
    `max_lines`, so do the deliveries after the one that took the batch's pair increments / its versions' order
    lines to that many (at least one delivery is always handled)."""
    if context.lock_shop(s, shop_id) is None:
        return {"shop_id": shop_id, "status": "missing"}
    prep = prepare_batch(s, shop_id, limit=limit, now=now, budget_s=budget_s, max_pairs=max_pairs,
                         max_lines=max_lines)
    return write_batch(s, shop_id, prep, validate=False)


def run_batch(shop_id: int, limit: int = 500, budget_s: float | None = None, max_pairs: int | None = None,
              max_lines: int | None = None, now: dt.datetime | None = None, items_cache: dict | None = None,
              check_compaction: bool | Callable[["PreparedBatch"], bool] = True) -> dict:
    """One batch of the job: prepared in a read transaction (no write lock), written in a short write transaction
    under the SQLite write turn (a no-op elsewhere), which the webhook intake shares: between two batches the
    intake's waiting process is woken at once (see shopify_app.db.sqlite_write_turn). Result "lock_s": the write
    transaction's time, commit included (what the intake may wait); write_timings "turn_wait": the wait for the
    write turn before it. `check_compaction`: whether to check the blob counts after the commit, or a function of
    the prepared batch that decides it (the draining job's cadence, _Pipeline.check_due)."""
    with context.read_transaction() as r:
        prep = prepare_batch(r, shop_id, limit=limit, now=now, budget_s=budget_s, max_pairs=max_pairs,
                             max_lines=max_lines, items_cache=items_cache)
    if prep is None:
        return {"shop_id": shop_id, "status": "missing"}
    if not prep.read:                    # nothing pending: no write transaction at all
        return _result(prep, None, 0, 0, fallback=0)
    if callable(check_compaction):
        check_compaction = check_compaction(prep)
    result = _write_prepared(shop_id, prep, check_compaction)
    if items_cache is not None and not result.get("fallback"):
        _cache_finals(items_cache, prep)
    return result


def _write_prepared(shop_id: int, prep: PreparedBatch, check_compaction: bool = True) -> dict:
    """write_batch in its own write transaction (validated), then the compaction check outside it (unless told
    not to: see _Pipeline.check_due). Runs in the job's thread (serial) or in the pipeline's writer thread (its
    own connection)."""
    url = context.config().sqlalchemy_url
    with _write_connection(url) as conn:
        tw = time.perf_counter()
        with sqlite_write_turn(url):
            t0 = time.perf_counter()
            with Session(bind=conn, expire_on_commit=False) as s, s.begin():   # BEGIN IMMEDIATE on SQLite (db.py)
                result = write_batch(s, shop_id, prep, compaction_check=False)
                t1 = time.perf_counter()
            t2 = time.perf_counter()
        if result.get("status") == "missing":
            return result
        result["write_timings"]["turn_wait"] = round(t0 - tw, 5)
        result["write_timings"]["commit"] = round(t2 - t1, 5)
        result["lock_s"] = round(t2 - t0, 4)
        if conn.dialect.name == "sqlite":              # after the write turn, not under it (_write_connection)
            Checkpointer.of(url).poke()
    if check_compaction and (result.get("blobs") or result.get("sequential_blobs")):
        t3 = time.perf_counter()
        with context.read_transaction() as r:     # two indexed counts, not under the lock
            _compaction_check(r, result)
        result["write_timings"]["compaction_check"] = round(time.perf_counter() - t3, 5)
    return result


@contextlib.contextmanager
def _write_connection(url: str):
    """The batch's write connection. On SQLite its automatic WAL checkpoint is off while the job holds it, and the
    job has the WAL checkpointed (PASSIVE: waits for nobody, blocks nobody) after leaving the write turn, by the
    process's background checkpointer (shopify_app.db.Checkpointer, the intake's too) while it prepares its next
    batch: the copy and the file sync (~13 ms per live batch, mostly waiting for the disk) overlap that batch
    instead of delaying it. SQLite's own checkpoint runs in the commit that takes the WAL past 1,000 pages, i.e. inside the write turn, where the webhook
    intake waits for it: a live batch writes ~2 MB (with secure_delete, as this SQLite is built, the erased delivery
    bodies are zeroed, i.e. written), so nearly every batch's commit checkpointed, copying ~4 MB back and syncing
    the file (bench_order_batch --live: commit ~18 ms of a 32-order batch's ~37 ms under the lock, ~4 ms without).
    The setting is restored before the connection goes back to the pool."""
    eng = get_engine(url)
    with eng.connect() as conn:
        raw = conn.connection.dbapi_connection if eng.dialect.name == "sqlite" else None
        if raw is not None:
            raw.execute("PRAGMA wal_autocheckpoint=0")
        try:
            yield conn
        finally:
            if raw is not None:
                raw.execute("PRAGMA wal_autocheckpoint=1000")      # SQLite's default (db.py sets none)


def prepare_batch(s, shop_id: int, limit: int = 500, now: dt.datetime | None = None, budget_s: float | None = None,
                  max_pairs: int | None = None, max_lines: int | None = None,
                  items_cache: dict | None = None, after: PreparedBatch | None = None) -> PreparedBatch | None:
    """Read the shop's pending deliveries and everything their application depends on, and compute the batch
    (pure Python / numpy from here on). Only reads: `s` may be a read transaction. None: no such shop.
    `items_cache`: the job's order items kept between its batches (_read_customer_orders).
    `after`: a batch being written that `s`'s snapshot does not show yet (the pipeline, see _Pipeline): this batch
    is computed against the snapshot with `after`'s writes laid over it (_Overlay), i.e. the state once `after`
    commits, and write_batch validates it against the database as any batch."""
    started = time.monotonic()
    timings: dict = {}
    laps = _Laps(timings)
    shop = s.get(Shop, shop_id)
    if shop is None:
        return None
    prep = PreparedBatch(shop_id=shop_id, now=now or utcnow(), limit=limit, budget_s=budget_s, max_pairs=max_pairs,
                         max_lines=max_lines, days=days_in_use(s, shop), timings=timings, overlaid=after is not None)
    now = prep.now
    overlay = _Overlay(after) if after is not None else None
    # Read first (PostgreSQL's READ COMMITTED: whatever a later lock holder commits after it moves it on). `after`
    # is not in the snapshot, and its own lock_shop adds exactly one.
    prep.generation = int(shop.analytics_generation or 0) + (overlay is not None)
    query = (select(WebhookDelivery.id, WebhookDelivery.topic, WebhookDelivery.status, WebhookDelivery.attempts,
                    WebhookDelivery.body).where(
        WebhookDelivery.shop_id == shop_id, WebhookDelivery.status == PENDING_ANALYTICS,
        or_(WebhookDelivery.topic.like("orders/%"), WebhookDelivery.topic.in_(REFUND_TOPICS))))
    if overlay is not None:              # what `after` handles is not pending once it commits
        query = query.where(WebhookDelivery.id.notin_(sorted(after.outcome)))
    rows = s.connection().execute(query.order_by(WebhookDelivery.id).limit(limit)).all()
    if overlay is not None:
        rows = [overlay.delivery(*row) for row in rows]
    laps.lap("read_deliveries")
    converted = []
    line_volume = 0                      # lines of the versions taken so far (at most what the write inserts)
    # orders/create and orders/paid of an order paid at checkout carry the same JSON (Shopify builds one order
    # payload per change), and a re-delivered webhook is byte for byte the same: a body already converted in this
    # batch is the same version, applied once and then skipped as not newer, so it is not parsed again (JSON
    # parsing and conversion are most of a live batch's CPU).
    converted_bodies: dict[str, OrderVersion] = {}
    for did, topic, status, attempts, body in rows:
        if max_lines is not None and line_volume >= max_lines:
            prep.more = True             # not converted, not read: left 'pending_analytics' for the next batch
            break
        prep.read[did] = (status, attempts, body)
        same = converted_bodies.get(body) if body and _plain_version(topic) else None
        if same is not None:
            converted.append((did, same))
            continue
        try:
            v = _convert(topic, body, now)
        except (ValueError, TypeError, KeyError) as exc:
            prep.outcome[did] = ("invalid", f"{type(exc).__name__}: {exc}"[:2000])
            prep.invalid += 1
            continue
        converted.append((did, v))
        line_volume += len(v.lines) if v is not None else 0
        if v is not None and _plain_version(topic):
            converted_bodies[body] = v
    laps.lap("convert")
    converted = _with_product_types(s, shop_id, converted, prep)
    laps.lap("product_types")
    versions = [v for _, v in converted if v is not None]
    prep.stored = _read_stored(s, shop_id, {v.id for v in versions})
    if overlay is not None:
        overlay.stored(prep.stored)
    prep.customers = {int(c) for c in ({v.customer_id for v in versions} |
                                       {r.customer_id for r in prep.stored.values() if r is not None})
                      if c is not None}
    prep.customer_orders, before = _read_customer_orders(s, shop_id, prep.customers, items_cache, overlay)
    laps.lap("prefetch")
    current = dict(prep.stored)          # the batch's view of each order as its versions are applied
    pair_volume = seen = 0               # pair increments of the batch's basket changes so far
    delta = prep.delta
    for k, (did, v) in enumerate(converted):
        changes = delta.basket_changes
        pair_volume += sum(len(i) * (len(i) - 1) // 2 for _, _, i in changes[seen:])
        seen = len(changes)
        # The first delivery is always applied: a budget spent on reading alone must not make an empty batch
        # (a job whose every batch stopped there would make no progress).
        if k and ((budget_s is not None and time.monotonic() - started > budget_s) or
                  (max_pairs is not None and pair_volume >= max_pairs)):
            prep.more = True             # left 'pending_analytics' for the follow-up batch
            break
        if v is not None:
            row = current.get(v.id)
            if _supersedes(v, row):
                new = contribution(v)
                _merge(delta, diff(_old_contribution(row), new, expand_pairs=False))
                current[v.id] = _Stored.of_version(v, new, now)
                prep.finals[v.id] = (v, new)
                prep.applied += 1
            else:
                prep.skipped += 1
        prep.outcome[did] = ("processed", None)
    laps.lap("apply_diff")
    by_order = {oid: line_rows(shop_id, v) for oid, (v, _) in prep.finals.items()}
    prep.lines = [r for rows_ in by_order.values() for r in rows_]
    prep.payloads = pair_payloads(delta)
    laps.lap("pair_payloads")
    prep.seq_rows, prep.seq_blobs = delta_payloads(shop_id, *_sequential_deltas(prep, before, by_order))
    laps.lap("sequential_delta")
    return prep


def write_batch(s, shop_id: int, prep: PreparedBatch, validate: bool = True, compaction_check: bool = True) -> dict:
    """Write a prepared batch in `s` (a write transaction). Takes the shop lock; with `validate`, first checks
    that nothing the batch was computed from changed since prepare_batch read it, and prepares the batch again
    under the lock when something did (result "fallback": 1). Without `compaction_check` the caller decides
    "compact_counts" after the commit (_compaction_check), outside the lock."""
    timings: dict = {}
    laps = _Laps(timings)
    shop = context.lock_shop(s, shop_id)
    if shop is None:
        return {"shop_id": shop_id, "status": "missing"}
    fallback = 0
    if validate and not _unchanged(s, shop, prep, timings):
        log.info("order batch of shop %s changed under it: prepared again under the lock", shop_id)
        fallback = 1
        prep = prepare_batch(s, shop_id, limit=prep.limit, now=prep.now, budget_s=prep.budget_s,
                             max_pairs=prep.max_pairs, max_lines=prep.max_lines)
    laps.lap("validate")
    now = prep.now
    _write_orders(s, shop_id, prep)
    laps.lap("orders")
    blobs = _write_aggregates(s, shop_id, prep.delta, prep.payloads)
    laps.lap("counts")
    seq_blobs = write_payloads(s, shop_id, prep.seq_rows, prep.seq_blobs)
    if prep.customers:
        record_days(s, shop_id, prep.days, now)
    laps.lap("sequential_write")
    _write_outcomes(s, prep)
    laps.lap("deliveries")
    touched, stats = _update_customers(s, shop_id, prep.delta, now)
    laps.lap("update_customers")
    changes = rescore_customers(s, shop, touched, now, rows=stats)
    laps.lap("rescore")
    result = _result(prep, s, len(touched), changes, fallback, shop=shop, blobs=blobs, seq_blobs=seq_blobs,
                     write_timings=timings)
    return _compaction_check(s, result) if compaction_check else result


def _result(prep: PreparedBatch, s, customers: int, changes: int, fallback: int, shop: Shop | None = None,
            blobs: int = 0, seq_blobs: int = 0, write_timings: dict | None = None) -> dict:
    out = {"shop_id": prep.shop_id, "deliveries": len(prep.outcome), "more": prep.more, "applied": prep.applied,
           "skipped": prep.skipped, "invalid": prep.invalid, "customers": customers, "segment_changes": changes,
           "fallback": fallback, "refit_rfm": False, "rebuild_sequential": False, "compact_counts": False,
           "prepare_timings": prep.timings, "write_timings": write_timings or {}}
    out.update(blobs=blobs, sequential_blobs=seq_blobs)
    if s is not None and shop is not None:
        settings = shop_settings(shop)
        out.update(refit_rfm=refit_needed(s.get(ShopModel, (prep.shop_id, RFM_KIND)), settings.rfm_refit_change_share),
                   rebuild_sequential=rebuild_needed(s, shop))
    return out


def _compaction_check(s, result: dict) -> dict:
    """compact_counts: the batch wrote blobs and the shop's pair / sequential blobs are past the thresholds."""
    shop_id = result["shop_id"]
    result["compact_counts"] = bool(
        (result.get("blobs") and compaction_due(s, shop_id)) or
        (result.get("sequential_blobs") and sequential_compaction_due(s, shop_id)))
    return result


def _read_stored(s, shop_id: int, ids) -> dict:
    """{order id: _Stored | None} of the batch's orders (one query per chunk): their states (ORDER_STATE_COLUMNS,
    what the write phase compares) and what _supersedes and the diff read."""
    ids = sorted(ids)
    stored: dict = dict.fromkeys(ids)
    for i in range(0, len(ids), UPSERT_CHUNK * 3):
        for row in s.connection().execute(select(*ORDER_STATE_COLUMNS, Order.financial_status, Order.contribution)
                             .where(Order.shop_id == shop_id, Order.id.in_(ids[i:i + UPSERT_CHUNK * 3]))):
            stored[row[0]] = _Stored(*row[1:])
    return stored


def _write_orders(s, shop_id: int, prep: PreparedBatch) -> None:
    """The applied orders' rows and lines in bulk: the replaced ones deleted (lines too), then one insert per
    table (bulk_rows.insert_rows; the history import writes its batches the same way). Every column comes from the
    version, as apply_version sets them (bulk_rows.order_row)."""
    replaced = sorted(oid for oid in prep.finals if prep.stored.get(oid) is not None)
    for i in range(0, len(replaced), UPSERT_CHUNK * 3):
        chunk = replaced[i:i + UPSERT_CHUNK * 3]
        s.execute(delete(OrderLine).where(OrderLine.shop_id == shop_id, OrderLine.order_id.in_(chunk)))
        # Not synchronized: a session holding one of these rows keeps the object (it is re-inserted below and
        # expired by _expire), as an ORM update would.
        s.execute(delete(Order).where(Order.shop_id == shop_id, Order.id.in_(chunk))
                  .execution_options(synchronize_session=False))
    now = prep.now
    insert_rows(s, Order.__table__, ORDER_COLUMNS, [order_row(shop_id, v, new, now) for v, new in prep.finals.values()])
    insert_rows(s, OrderLine.__table__, LINE_COLUMNS, prep.lines)
    _expire(s, Order, {(shop_id, oid) for oid in prep.finals})


def _expire(s, model, keys: set) -> None:
    """Rows written with bulk statements are stale in a session that holds them (a caller's own session, see
    process_shop_orders): expire them so the next access reads the database."""
    for obj in list(s.identity_map.values()):
        if isinstance(obj, model):
            ident = inspect(obj).identity
            if (ident[0] if len(ident) == 1 else ident) in keys:
                s.expire(obj)


def _customer_states(s, shop_id: int, customers) -> dict:
    """{order id: (customer, counted, processed_at, updated_at, deleted_at, ingested_at)} of the customers' orders."""
    ids = sorted(customers)
    out: dict = {}
    for i in range(0, len(ids), UPSERT_CHUNK * 3):
        for row in s.connection().execute(select(*ORDER_STATE_COLUMNS).where(
                Order.shop_id == shop_id, Order.customer_id.in_(ids[i:i + UPSERT_CHUNK * 3]))):
            out[row[0]] = tuple(row[1:])
    return out


def _read_customer_orders(s, shop_id: int, customers, cache: dict | None = None,
                          overlay: "_Overlay | None" = None) -> tuple[dict, dict]:
    """(states of the customers' orders, {customer: {order id: (time, items)}} of their counted orders), the
    sequential 'before' of the batch. States first: an order written between the two reads then differs from
    its read state, which the write phase notices (PostgreSQL's READ COMMITTED has no snapshot across reads).
    `cache` ({order id: (state, items)}, see ITEMS_CACHE_ORDERS): the job's items of orders read before, used
    when the order's state is the one read now, and filled with what is read. `overlay`: the states and items of
    the orders a batch being written replaces (see prepare_batch's `after`) are taken from it."""
    states = _customer_states(s, shop_id, customers)
    items_of: dict = {}
    if overlay is not None:
        items_of = overlay.customer_orders(states, customers)
    before: dict = {c: {} for c in customers}
    heads = {oid: (st[0], st[2]) for oid, st in states.items() if st[1]}     # counted: (customer, processed_at)
    for oid in heads if cache is not None else ():
        if oid in items_of:
            continue
        hit = cache.get(oid)
        if hit is not None and hit[0] == states[oid]:
            items_of[oid] = hit[1]
    missing = {oid: head for oid, head in heads.items() if oid not in items_of}
    for orders in orders_items(s, shop_id, missing).values():
        for oid, (_t, items) in orders.items():
            items_of[oid] = frozenset(items)
            if cache is not None:
                cache[oid] = (states[oid], items_of[oid])
    for oid, (cid, t) in heads.items():
        before.setdefault(int(cid), {})[oid] = (t, items_of[oid])
    if cache is not None and len(cache) > ITEMS_CACHE_ORDERS:
        cache.clear()                    # bounded memory; refilled by the next batches' reads
    return states, before


# A job drains batch after batch, and a repeat customer's orders are read again by every batch that touches the
# customer (their sequential 'before'): with bench (d)'s compressed time that is their whole history, read and
# converted again and again. process_pending_orders keeps their items between its batches, per order, with the
# order's state as read (ORDER_STATE_COLUMNS): every write of an Order row sets ingested_at (the writer's clock),
# and its lines are only written with it, so within one job an equal state means equal lines. At most this many
# orders; one job's cache only (a database emptied and refilled - tests - never meets an old cache).
ITEMS_CACHE_ORDERS = 200_000


def _sequential_deltas(prep: PreparedBatch, before: dict, lines: dict) -> tuple[dict, dict]:
    """The batch's sequential deltas: for every touched customer, counts after - counts before, 'after' being
    'before' with the batch's orders replaced by their final versions (items = distinct products with quantity -
    refunded > 0, as the stored lines give). Returns ({(bucket, item): n}, {bucket: (a, b, n) arrays}), the pairs
    as numpy arrays (sequential_jobs.summed_deltas)."""
    after = {cid: dict(orders) for cid, orders in before.items()}
    for oid, (v, _) in prep.finals.items():
        row = prep.stored.get(oid)
        if row is not None and row.customer_id is not None:
            after.get(int(row.customer_id), {}).pop(oid, None)
        if v.counted and v.customer_id is not None:
            items = frozenset(int(r[3]) for r in lines[oid] if r[3] is not None and (r[6] or 0) - (r[7] or 0) > 0)
            prep.final_items[oid] = items
            after.setdefault(int(v.customer_id), {})[oid] = (v.processed_at, items)
    return summed_deltas(((list(before.get(cid, {}).values()), list(orders.values())) for cid, orders in after.items()),
                         prep.days)


def _unchanged(s, shop: Shop, prep: PreparedBatch, timings: dict | None = None) -> bool:
    """Under the lock: is everything the prepared batch depends on still as read? The deliveries (still pending,
    same attempts and body), the catalogue's product types, the batch's Order rows, the touched customers'
    orders, the sequential N. The bodies (~15 KB per delivery), the Order rows and the customers' order states are
    re-read only when another lock holder committed since the batch's snapshot (the shop's analytics_generation
    moved, see context.lock_shop): they change only under that lock (a body by customers/redact's rewrite), and
    for a pipelined batch (its overlay is compared with the database). Statuses and attempts, the catalogue's
    types and N are always compared."""
    if days_in_use(s, shop) != prep.days or _product_types(s, shop.id, prep.typed) != prep.types:
        return False
    bodies = prep.generation is None or context.locked_generation(shop) != prep.generation
    if timings is not None:
        timings["body_check"] = timings.get("body_check", 0) + int(bodies)
    ids = sorted(prep.read)
    now_read: dict = {}
    cols = (WebhookDelivery.id, WebhookDelivery.status, WebhookDelivery.attempts) + ((WebhookDelivery.body,)
                                                                                   if bodies else ())
    for i in range(0, len(ids), UPSERT_CHUNK * 3):
        for row in s.connection().execute(select(*cols).where(WebhookDelivery.id.in_(ids[i:i + UPSERT_CHUNK * 3]))):
            now_read[row[0]] = tuple(row[1:])
    if now_read != (prep.read if bodies else {did: r[:2] for did, r in prep.read.items()}):
        return False
    if not bodies and not prep.overlaid:
        # No lock holder committed since the snapshot, and every writer of Order rows holds the lock (see
        # context.lock_shop): the batch's Order rows and the customers' orders are as read. A batch laid over
        # its predecessor (the pipeline) is compared anyway: the overlay is what is checked there.
        return True
    if timings is not None:
        timings["rows_check"] = timings.get("rows_check", 0) + 1
    if _read_stored(s, shop.id, prep.stored) != prep.stored:
        return False
    return _customer_states(s, shop.id, prep.customers) == prep.customer_orders


def _write_outcomes(s, prep: PreparedBatch) -> None:
    """Delivery statuses: handled ones 'processed' / 'invalid' (body erased), every delivery read gets its attempt
    counted (as before: a delivery left for the next batch was read once more)."""
    done, left = [], []
    for did, (status, attempts, _body) in prep.read.items():
        out = prep.outcome.get(did)
        if out is None:
            left.append({"id": did, "attempts": (attempts or 0) + 1})
        else:
            done.append({"id": did, "attempts": (attempts or 0) + 1, "status": out[0], "error": out[1],
                         "processed_at": prep.now, "body": None})
    for params in (done, left):
        if params:
            s.execute(update(WebhookDelivery), params)
    _expire(s, WebhookDelivery, set(prep.read))


def compaction_due(s, shop_id: int) -> bool:
    """The shop's pair blobs passed COMPACT_BLOBS / COMPACT_PAIRS (one index range count)."""
    return blobs_past_thresholds(s, PairCountBlob, shop_id)


def blobs_past_thresholds(s, model, shop_id: int) -> bool:
    """The shop's rows of a blob table (PairCountBlob, SequentialPairBlob: `shop_id`, `pairs`) number at least
    COMPACT_BLOBS or hold at least COMPACT_PAIRS pairs."""
    n, pairs = s.connection().execute(select(func.count(), func.coalesce(func.sum(model.pairs), 0))
                         .where(model.shop_id == shop_id)).one()
    return n >= COMPACT_BLOBS or int(pairs) >= COMPACT_PAIRS


def _with_product_types(s, shop_id: int, converted: list, prep: PreparedBatch | None = None) -> list:
    """REST webhook line items carry no product type (the bulk import's do): take it from the shop's Product rows
    (catalogue sync, products/* webhooks), so an order's product-type affinity does not depend on whether its
    last version came from a webhook or from the import. One query per batch. With `prep`, the products looked
    up and the types found are kept there (a catalogue sync committing in between is a change to the batch)."""
    missing = {ln.product_id for _, v in converted if v is not None for ln in v.lines
               if ln.product_id is not None and not ln.product_type}
    types = _product_types(s, shop_id, missing)
    if prep is not None:
        prep.typed, prep.types = missing, types
    if not types:
        return converted
    return [(d, with_product_types(v, types) if v is not None else None) for d, v in converted]


def _product_types(s, shop_id: int, ids) -> dict[int, str]:
    types: dict[int, str] = {}
    ids = sorted(ids)
    for i in range(0, len(ids), UPSERT_CHUNK * 3):
        for pid, ptype in s.connection().execute(select(Product.id, Product.product_type).where(
                Product.shop_id == shop_id, Product.id.in_(ids[i:i + UPSERT_CHUNK * 3]))):
            if ptype:
                types[pid] = ptype
    return types


def _plain_version(topic: str) -> bool:
    """The delivery's version is its body's conversion alone (not a no-op topic, not a deletion stamped now)."""
    return topic not in NOOP_TOPICS and topic != "orders/delete"


def _convert(topic: str, body: str | None, now: dt.datetime) -> OrderVersion | None:
    payload = parse_body(body) if body else None
    if not isinstance(payload, dict):
        raise ValueError("body is not a JSON object")
    if topic in NOOP_TOPICS:
        return None                      # applied through the orders/updated that follows a refund / an edit
    if topic == "orders/delete":
        return order_deleted(payload, now)
    return order_from_rest(payload)


def _supersedes(v: OrderVersion, row, tie_wins: bool = False) -> bool:
    """`row`: the stored Order (or its _Stored snapshot); None when the order is not stored."""
    if row is None:
        return True
    if row.deleted_at is not None:      # a tombstone is never replaced
        return False
    if v.deleted:                        # ... and replaces every version
        return True
    if v.updated_at > row.shopify_updated_at:
        return True
    # Shopify's updated_at has one-second resolution: two changes in the same second give two versions with the
    # same updated_at, and the later one is skipped as "not newer" when its webhook arrives second. A caller that
    # read the order's *current* state (reconciliation) wins such a tie when it holds something else.
    return (tie_wins and v.updated_at == row.shopify_updated_at
            and (contribution(v) != row.contribution or v.financial_status != row.financial_status))


def _old_contribution(row) -> dict | None:
    """What the stored row added to the aggregates, as the diff's 'old' side."""
    old = row.contribution if row is not None else None
    if old is not None and row.customer_id != old.get("customer_id"):
        old = {**old, "customer_id": row.customer_id}   # unlinked by customers/redact: stats already erased
    return old


def _set_row(row: Order, v: OrderVersion, new: dict, now: dt.datetime) -> None:
    # Every column comes from the version (a tombstone has zeros and its deletion time), so the row does not
    # depend on which earlier versions happened to be seen.
    row.processed_at, row.name, row.customer_id = v.processed_at, v.name, v.customer_id
    row.deleted_at = now if v.deleted else None
    row.cancelled_at = v.updated_at if v.cancelled else None   # OrderVersion keeps the flag, not the time
    row.test, row.financial_status, row.currency = v.test, v.financial_status, v.currency
    row.subtotal, row.total_discounts = v.subtotal, v.total_discounts
    row.total_refunded, row.net_revenue = v.refunded, v.net_revenue
    row.shopify_updated_at = v.updated_at
    row.counted = v.counted
    row.contribution = new
    row.ingested_at = now


def apply_version(s, shop_id: int, v: OrderVersion, batch: Delta, now: dt.datetime, tie_wins: bool = False) -> bool:
    """Apply `v` if it supersedes the stored row (last writer wins by updated_at; a tombstone is final), in the
    caller's transaction, one order at a time (reconciliation, tests; the order job computes its batch outside the
    lock instead, see prepare_batch). `tie_wins`: the version is the order's current state read from the Admin
    API, so it also wins an updated_at tie when it differs from the stored row (see _supersedes)."""
    row = s.get(Order, (shop_id, v.id))
    if not _supersedes(v, row, tie_wins):
        return False
    # Sequential counts depend on the customer's other orders: snapshot them before the first change.
    _sequential(s, shop_id, batch).touch(s, {v.customer_id, row.customer_id if row is not None else None})
    new = contribution(v)
    _merge(batch, diff(_old_contribution(row), new, expand_pairs=False))   # pairs: basket changes (write_counts)
    stored = row is not None
    if row is None:
        row = Order(shop_id=shop_id, id=v.id)
        s.add(row)
    _set_row(row, v, new, now)
    s.flush()                            # the row is visible to the next s.get
    if stored:                           # a new order has no lines to replace: no DELETE per new order
        s.execute(delete(OrderLine).where(OrderLine.shop_id == shop_id, OrderLine.order_id == v.id))
    insert_rows(s, OrderLine.__table__, LINE_COLUMNS, line_rows(shop_id, v))
    return True


def _sequential(s, shop_id: int, batch: Delta) -> BatchTracker:
    """The batch's sequential bookkeeping. Kept on the Delta object (one per batch in every caller) so the
    shared steps apply_version / write_counts maintain the tables for the order job, reconciliation and import
    alike without a new argument."""
    tracker = batch.__dict__.get("_sequential")
    if tracker is None:
        tracker = batch.__dict__["_sequential"] = BatchTracker(s, shop_id)
    return tracker


def _merge(batch: Delta, d: Delta) -> None:
    for cid, acc in d.customers.items():
        dst = batch.customers.setdefault(cid, {})
        for k, v in acc.items():
            if k == "product_type_counts":
                pt = dst.setdefault(k, {})
                for t, q in v.items():
                    _add(pt, t, q)
            elif isinstance(v, float):
                dst[k] = round(dst.get(k, 0.0) + v, 2)
            else:
                dst[k] = dst.get(k, 0) + v
    batch.touched |= d.touched
    batch.basket_changes += d.basket_changes
    for src, dst in ((d.items, batch.items), (d.pairs, batch.pairs), (d.baskets, batch.baskets)):
        get = dst.get                    # inlined _add: ~10^5 pairs per batch of live orders
        for k, v in src.items():
            nv = get(k, 0) + v
            if nv:
                dst[k] = nv
            else:
                dst.pop(k, None)


# --------------------------------------------------------------------------------------------- writes
def write_counts(s, shop_id: int, batch: Delta, now: dt.datetime | None = None) -> int:
    """The count deltas and sequential counts of a batch built with apply_version (reconciliation, tests).
    Items / baskets: one upsert per table; pairs: one PairCountBlob per bucket. Returns the blobs written."""
    blobs = _write_aggregates(s, shop_id, batch, pair_payloads(batch), now)
    tracker = batch.__dict__.get("_sequential")
    if tracker is not None:
        tracker.write(s)
    return blobs


def _write_aggregates(s, shop_id: int, batch: Delta, payloads: dict, now: dt.datetime | None = None) -> int:
    """Item / basket upserts and the pair blobs ({bucket: (pairs, payload)}, see pair_payloads)."""
    seg = ALL_SEGMENTS
    if batch.items:
        upsert_add(s, ItemCountDelta, ["shop_id", "segment", "bucket", "item_id"], "count",
                   ["shop_id", "segment", "bucket", "item_id", "count"],
                   [(shop_id, seg, b, i, n) for (b, i), n in sorted(batch.items.items())])
    if batch.baskets:
        upsert_add(s, BasketCountDelta, ["shop_id", "segment", "bucket"], "baskets",
                   ["shop_id", "segment", "bucket", "baskets"],
                   [(shop_id, seg, b, n) for b, n in sorted(batch.baskets.items())])
    blobs = [{"shop_id": shop_id, "segment": seg, "bucket": b, "pairs": n, "data": data, "created_at": now or utcnow()}
             for b, (n, data) in sorted(payloads.items())]
    if blobs:
        s.execute(insert(PairCountBlob.__table__), blobs)
    return len(blobs)


def pair_payloads(batch: Delta) -> dict:
    """{bucket: (pairs, compressed payload)} of the batch's pair deltas, straight from the numpy expansion of its
    basket changes (analytics.counts payload). Every applier builds its Delta through apply_version, i.e. with
    diff(expand_pairs=False); a Delta carrying expanded `pairs` would be a caller's mistake, refused."""
    if batch.pairs:
        raise ValueError("write_counts takes basket changes (diff(..., expand_pairs=False)), not expanded pairs")
    return {b: (len(c), encode_pairs_indexed(ids, i, j, c, compress=True))
            for b, (ids, i, j, c) in basket_change_pairs(batch.basket_changes, indexed=True).items()}


# The columns update_customers / rescore_customers write. Every updated row names all of them in its UPDATE, so the
# ORM sends one executemany per flush instead of one statement per distinct set of changed columns (~one per
# customer: ~10 ms of a 30-order batch under the write lock).
STATS_COLUMNS = (*MONEY_FIELDS.values(), *COUNT_FIELDS.values(), "product_type_counts", "first_order_at",
                 "last_order_at", "orders_count")
SCORE_COLUMNS = ("recency_days", "r_score", "f_score", "m_score", "segment", "segment_since", "scored_at")


def _same_columns(row, columns) -> None:
    if inspect(row).persistent:          # a new row is an INSERT of every column anyway
        for col in columns:
            flag_modified(row, col)


def update_customers(s, shop_id: int, batch: Delta, now: dt.datetime) -> list[int]:
    """Additive deltas + recomputed first/last/orders_count; returns the customers left with stats."""
    return _update_customers(s, shop_id, batch, now)[0]


def _update_customers(s, shop_id: int, batch: Delta, now: dt.datetime) -> tuple[list[int], dict]:
    """update_customers, also returning the kept customers' CustomerStats rows ({customer: row}), which the
    order job hands to rescore_customers instead of reading them again."""
    kept = []
    net_new = 0                      # customers created - customers removed, for the refit trigger
    touched = sorted(batch.touched)
    s.flush()
    spans: dict = {}                 # customer -> (first, last, n): one grouped query per chunk, not per customer
    stats: dict = {}                 # customer -> CustomerStats row
    for i in range(0, len(touched), UPSERT_CHUNK * 3):
        ids = touched[i:i + UPSERT_CHUNK * 3]
        for cid, first, last, n in s.connection().execute(
                select(Order.customer_id, func.min(Order.processed_at), func.max(Order.processed_at), func.count())
                .where(Order.shop_id == shop_id, Order.customer_id.in_(ids), Order.counted.is_(True))
                .group_by(Order.customer_id)):
            spans[cid] = (first, last, n)
        for row in s.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id,
                                                         CustomerStats.customer_id.in_(ids))):
            stats[row.customer_id] = row
    for cid in touched:
        first, last, n = spans.get(cid, (None, None, 0))
        row = stats.get(cid)
        if not n:
            if row is not None:
                if row.segment is not None:
                    s.add(SegmentChange(shop_id=shop_id, customer_id=cid, from_segment=row.segment,
                                        to_segment=None, changed_at=now, reason="order"))
                s.delete(row)
                net_new -= 1
            continue
        if row is None:
            row = CustomerStats(shop_id=shop_id, customer_id=cid, orders_count=0, gross_revenue=0.0, refunded=0.0,
                                net_revenue=0.0, discounted_orders=0, discount_total=0.0, pre_discount_total=0.0,
                                refunded_orders=0, items_count=0, product_type_counts={})
            s.add(row)
            stats[cid] = row
            net_new += 1
        for k, v in batch.customers.get(cid, {}).items():
            if k == "orders_count":
                continue
            if k == "product_type_counts":
                pt = dict(row.product_type_counts or {})
                for t, q in v.items():
                    _add(pt, t, q)
                row.product_type_counts = dict(sorted(pt.items()))
            elif isinstance(v, float):
                setattr(row, k, round((getattr(row, k) or 0.0) + v, 2))
            else:
                setattr(row, k, (getattr(row, k) or 0) + v)
        row.first_order_at, row.last_order_at, row.orders_count = first, last, int(n)
        _same_columns(row, STATS_COLUMNS)
        kept.append(cid)
    s.flush()
    if net_new:
        model = s.get(ShopModel, (shop_id, RFM_KIND))
        if model is not None:
            params = dict(model.params or {})
            params["customers_now"] = int(params.get("customers_now", model.customers_at_fit or 0)) + net_new
            model.params = params     # a new dict: JSON columns do not track in-place changes
    return kept, {cid: stats[cid] for cid in kept}


# --------------------------------------------------------------------------------------------- scoring
def rfm_params(s, shop: Shop, now: dt.datetime) -> tuple[dict, str]:
    """(edges, scheme) stored for the shop; fitted and stored first when the shop has none (see rfm_jobs)."""
    edges, scheme, _model = stored_params(s, shop)
    if edges is None:
        res = refit_rfm_in_session(s, shop, now, reason="order")
        edges, scheme = res["edges"], res["scheme"]
    return edges, scheme


def rescore_customers(s, shop: Shop, customers: list[int], now: dt.datetime, reason: str = "order",
                      rows: dict | None = None) -> int:
    """Rescore these customers with the stored thresholds; SegmentChange(reason) per changed segment.
    A shop without stored thresholds is fitted (and everyone scored) once, here. `rows`: their CustomerStats rows
    already loaded in `s` ({customer: row}, as _update_customers returns them), else they are read."""
    if not customers:
        return 0
    edges, scheme, _model = stored_params(s, shop)
    if edges is None:
        return refit_rfm_in_session(s, shop, now, reason=reason)["changes"]
    if scheme not in SCHEMES:
        scheme = "default"
    changes = 0
    if rows is None:
        rows = {}                    # one query per chunk: the session does not keep unmodified rows (weak refs)
        for i in range(0, len(customers), UPSERT_CHUNK * 3):
            ids = customers[i:i + UPSERT_CHUNK * 3]
            rows.update((r.customer_id, r) for r in s.scalars(
                select(CustomerStats).where(CustomerStats.shop_id == shop.id, CustomerStats.customer_id.in_(ids))))
    for cid in customers:
        row = rows.get(cid)
        if row is None or row.last_order_at is None:
            continue
        row.recency_days, row.r_score, row.f_score, row.m_score, seg = score_customer(
            row.last_order_at, row.orders_count, row.net_revenue, edges, scheme, now)
        if seg != row.segment:
            s.add(SegmentChange(shop_id=shop.id, customer_id=cid, from_segment=row.segment, to_segment=seg,
                                changed_at=now, reason=reason))
            row.segment, row.segment_since = seg, now
            changes += 1
        row.scored_at = now
        _same_columns(row, SCORE_COLUMNS)
    return changes
