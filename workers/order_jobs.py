"""Order analytics job (queue `webhooks`): consume a shop's 'pending_analytics' order/refund deliveries.

`process_pending_orders(shop_id, limit=500)` runs in ONE transaction:

  1. lock the shop row (per-shop serialization, see below);
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
     after it (workers.sequential_jobs.BatchTracker; O(customer's orders));
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
which already serializes all writers. Because the whole batch is one transaction, a failure rolls everything back and the deliveries stay
pending for the retry: the job is idempotent.

Contract for other writers of Order rows (bulk import, rebuild): `Order.contribution` must hold what the row
added to the aggregates (None = nothing added).

Ingest hand-off: after setting a delivery to 'pending_analytics', call `enqueue_process_orders(config, shop_id)`
(after the commit); bursts coalesce into one queued job per shop. After its commit the job enqueues (coalesced,
fixed ids) an RFM refit when due, a sequential rebuild when `sequential_days` changed, and rules mining,
debounced to one run per RULES_DEBOUNCE_S (schedule_mine_rules; workers.rules_jobs, when that module exists).

Batches: the job (process_pending_orders) drains the shop's pending deliveries batch after batch, each batch its
own transaction bounded by BATCH_SECONDS of applying and BATCH_PAIRS pair increments; the batch's item / basket
deltas are aggregated in Python and written with one upsert statement per table (bulk_rows.upsert_add), its pair deltas
are expanded from the basket changes with numpy (analytics.counts.basket_change_pairs) and written as one
PairCountBlob per bucket, its OrderLine rows with one executemany. When the shop's blobs pile up
(COMPACT_BLOBS / COMPACT_PAIRS) a coalesced compaction job folds them (workers.rebuild_jobs.compact_shop).

Per-order cost: every statement is a primary-key / index lookup on (shop_id, ...) or on the customer's own
orders (ix_orders_shop_customer); nothing scans the shop's history (bench/bench_order_update.py).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import replace

from sqlalchemy import delete, func, insert, or_, select

from shopify_app.analytics.counts import basket_change_pairs, encode_pairs_indexed
from shopify_app.analytics.incremental import Delta, _add, contribution, diff
from shopify_app.analytics.orders import OrderVersion
from shopify_app.analytics.segments import SCHEMES
from shopify_app.db import sqlite_write_turn
from shopify_app.models import (
    ALL_SEGMENTS, BasketCountDelta, CustomerStats, ItemCountDelta, Order, OrderLine, PairCountBlob, Product,
    SegmentChange, Shop, ShopModel, WebhookDelivery, utcnow,
)
from shopify_app.settings import shop_settings
from shopify_app.shopify.convert import NOOP_TOPICS, REFUND_TOPICS, order_deleted, order_from_rest

from . import context
from .bulk_rows import LINE_COLUMNS, insert_rows, line_rows, upsert_add
from .rfm_jobs import RFM_KIND, refit_needed, refit_rfm_in_session, score_customer, stored_params
from .sequential_jobs import BatchTracker, rebuild_needed

log = logging.getLogger(__name__)

PENDING_ANALYTICS = "pending_analytics"
UPSERT_CHUNK = 150               # ids per IN (...) list (SQLite's bound-parameter limit, with margin)


# --------------------------------------------------------------------------------------------- entry points
# A batch stops taking new deliveries after this many seconds: the transaction holds the shop's row lock (and
# on SQLite the database's only write lock, which the webhook intake needs too), so short batches keep both the
# intake and the freshness of the other orders in check. The rest stays pending for the follow-up job.
# The batch's size is bounded too: it stops taking deliveries once its basket changes carry BATCH_PAIRS pair
# increments (sum of k(k-1)/2; Online Retail orders average ~1,200). They are expanded with numpy and written as
# one blob per bucket (PairCountBlob), a few ms per 10^5 pairs, so the bound is about memory (~50 bytes per pair
# while aggregating), no longer about the write (one upserted row per pair was most of a batch's cost).
BATCH_SECONDS = 0.5
BATCH_PAIRS = 1_000_000

# After a batch, a shop holding this many pair blobs (or blob pairs) gets a compaction job (coalesced): at 200
# orders/s a shop writes ~2 blobs / ~250k pairs per second, too much for the hourly schedule alone.
COMPACT_BLOBS = int(os.environ.get("COMPACT_BLOBS", "64"))           # deployment knobs (and tests)
COMPACT_PAIRS = int(os.environ.get("COMPACT_PAIRS", "2000000"))


# One job keeps draining the shop's pending deliveries, batch after batch (each its own short transaction),
# for up to this many seconds: under a steady stream this saves a job start (an RQ work-horse fork) per batch,
# which is most of the latency at a few orders per second. Then it hands over to a follow-up job.
DRAIN_SECONDS = 5.0


def process_pending_orders(shop_id: int, limit: int = 500) -> dict:
    import time

    started = time.monotonic()
    total: dict = {}
    handed_over = False
    while True:
        _clear_wake(shop_id)              # before reading: a delivery committed after the read wakes a follow-up
        # The SQLite write turn (a no-op elsewhere) is shared with the webhook intake: between two batches the
        # intake's waiting process is woken at once (see shopify_app.db.sqlite_write_turn).
        with sqlite_write_turn(context.config().sqlalchemy_url), context.transaction() as s:
            result = process_shop_orders(s, shop_id, limit=limit, budget_s=BATCH_SECONDS, max_pairs=BATCH_PAIRS)
        for k, v in result.items():
            if isinstance(v, bool):
                total[k] = total.get(k, False) or v
            elif isinstance(v, int) and k != "shop_id":
                total[k] = total.get(k, 0) + v
            else:
                total[k] = v
        total["batches"] = total.get("batches", 0) + 1
        left = bool(result.get("more") or result.get("deliveries", 0) >= limit)
        if not left and not result.get("deliveries"):
            if _woken(shop_id):           # a delivery committed after our last read: its wake-up may have found
                continue                  # this job (and a follow-up) running and enqueued nothing - read again
            break
        if time.monotonic() - started <= DRAIN_SECONDS:
            continue
        # drained long enough: hand the rest over to a new job (a fresh RQ job each DRAIN_SECONDS)
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
    enqueue_followups(context.config(), shop_id, total)
    return total


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
RULES_DEBOUNCE_S = int(os.environ.get("RULES_DEBOUNCE_S", "30"))   # deployment knob (and bench what-ifs)


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
def process_shop_orders(s, shop_id: int, limit: int = 500, now: dt.datetime | None = None,
                        budget_s: float | None = None, max_pairs: int | None = None) -> dict:
    """The job's work inside the caller's transaction (tests call it with their own session). With `budget_s`,
    deliveries not started within that many seconds stay pending (result "more": True); with `max_pairs`, so do
    the deliveries after the one that took the batch's pair increments past that many (at least one
    delivery is always handled)."""
    import time

    started = time.monotonic()
    now = now or utcnow()
    shop = context.lock_shop(s, shop_id)
    if shop is None:
        return {"shop_id": shop_id, "status": "missing"}
    rows = list(s.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.shop_id == shop_id, WebhookDelivery.status == PENDING_ANALYTICS,
            or_(WebhookDelivery.topic.like("orders/%"), WebhookDelivery.topic.in_(REFUND_TOPICS)))
        .order_by(WebhookDelivery.id).limit(limit)))
    batch = Delta()
    applied = skipped = invalid = 0
    converted = []
    for d in rows:
        d.attempts = (d.attempts or 0) + 1
        try:
            converted.append((d, _convert(d, now)))
        except (ValueError, TypeError, KeyError) as exc:
            d.status, d.error, d.processed_at, d.body = "invalid", f"{type(exc).__name__}: {exc}"[:2000], now, None
            invalid += 1
    converted = _with_product_types(s, shop_id, converted)
    _prefetch(s, shop_id, [v for _, v in converted if v is not None], batch)
    batch.__dict__["_lines"] = {}        # OrderLine rows written by write_counts in one statement (apply_version)
    handled = invalid
    more = False
    pair_volume = seen = 0               # pair increments of the batch's basket changes so far
    for d, version in converted:
        changes = batch.basket_changes
        pair_volume += sum(len(i) * (len(i) - 1) // 2 for _, _, i in changes[seen:])
        seen = len(changes)
        if ((budget_s is not None and time.monotonic() - started > budget_s) or
                (max_pairs is not None and pair_volume >= max_pairs)):
            more = True                  # left 'pending_analytics' for the follow-up job
            break
        handled += 1
        if version is not None:
            if apply_version(s, shop_id, version, batch, now):
                applied += 1
            else:
                skipped += 1
        d.status, d.error, d.processed_at, d.body = "processed", None, now, None
    s.flush()
    blobs = write_counts(s, shop_id, batch)
    touched = update_customers(s, shop_id, batch, now)
    changes = rescore_customers(s, shop, touched, now)
    settings = shop_settings(shop)
    return {"shop_id": shop_id, "deliveries": handled, "more": more, "applied": applied, "skipped": skipped,
            "invalid": invalid, "customers": len(touched), "segment_changes": changes,
            "refit_rfm": refit_needed(s.get(ShopModel, (shop_id, RFM_KIND)), settings.rfm_refit_change_share),
            "rebuild_sequential": rebuild_needed(s, shop),
            "compact_counts": bool(blobs) and compaction_due(s, shop_id)}


def compaction_due(s, shop_id: int) -> bool:
    """The shop's pair blobs passed COMPACT_BLOBS / COMPACT_PAIRS (one index range count)."""
    n, pairs = s.execute(select(func.count(), func.coalesce(func.sum(PairCountBlob.pairs), 0))
                         .where(PairCountBlob.shop_id == shop_id)).one()
    return n >= COMPACT_BLOBS or int(pairs) >= COMPACT_PAIRS


def _with_product_types(s, shop_id: int, converted: list) -> list:
    """REST webhook line items carry no product type (the bulk import's do): take it from the shop's Product rows
    (catalogue sync, products/* webhooks), so an order's product-type affinity does not depend on whether its
    last version came from a webhook or from the import. One query per batch."""
    missing = {ln.product_id for _, v in converted if v is not None for ln in v.lines
               if ln.product_id is not None and not ln.product_type}
    if not missing:
        return converted
    types: dict[int, str] = {}
    ids = sorted(missing)
    for i in range(0, len(ids), UPSERT_CHUNK * 3):
        for pid, ptype in s.execute(select(Product.id, Product.product_type).where(
                Product.shop_id == shop_id, Product.id.in_(ids[i:i + UPSERT_CHUNK * 3]))):
            if ptype:
                types[pid] = ptype
    if not types:
        return converted
    out = []
    for d, v in converted:
        if v is not None and any(ln.product_id in types and not ln.product_type for ln in v.lines):
            v = replace(v, lines=tuple(replace(ln, product_type=types[ln.product_id])
                                       if ln.product_id in types and not ln.product_type else ln for ln in v.lines))
        out.append((d, v))
    return out


def _prefetch(s, shop_id: int, versions: list[OrderVersion], batch: Delta) -> None:
    """Load the batch's stored Order rows in one query (apply_version then finds them in the session) and take
    the sequential 'before' counts of every customer the batch may touch in one read, instead of one pair of
    queries per order. Purely an optimization: apply_version does both itself when called alone."""
    ids = sorted({v.id for v in versions})
    customers = {v.customer_id for v in versions}
    known: dict = dict.fromkeys(ids)          # id -> stored row, None = not stored (no s.get query per new order)
    for i in range(0, len(ids), UPSERT_CHUNK * 3):
        for row in s.scalars(select(Order).where(Order.shop_id == shop_id, Order.id.in_(ids[i:i + UPSERT_CHUNK * 3]))):
            customers.add(row.customer_id)
            known[row.id] = row
    batch.__dict__["_orders"] = known
    _sequential(s, shop_id, batch).touch(s, customers)


def _convert(d: WebhookDelivery, now: dt.datetime) -> OrderVersion | None:
    payload = json.loads(d.body) if d.body else None
    if not isinstance(payload, dict):
        raise ValueError("body is not a JSON object")
    if d.topic in NOOP_TOPICS:
        return None                      # applied through the orders/updated that follows a refund / an edit
    if d.topic == "orders/delete":
        return order_deleted(payload, now)
    return order_from_rest(payload)


def _supersedes(v: OrderVersion, row: Order | None, tie_wins: bool = False) -> bool:
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


def apply_version(s, shop_id: int, v: OrderVersion, batch: Delta, now: dt.datetime, tie_wins: bool = False) -> bool:
    """Apply `v` if it supersedes the stored row (last writer wins by updated_at; a tombstone is final).
    `tie_wins`: the version is the order's current state read from the Admin API, so it also wins an updated_at
    tie when it differs from the stored row (see _supersedes)."""
    known = batch.__dict__.get("_orders")    # the batch's prefetched rows (see _prefetch)
    row = known[v.id] if known is not None and v.id in known else s.get(Order, (shop_id, v.id))
    if not _supersedes(v, row, tie_wins):
        return False
    # Sequential counts depend on the customer's other orders: snapshot them before the first change.
    _sequential(s, shop_id, batch).touch(s, {v.customer_id, row.customer_id if row is not None else None})
    old = row.contribution if row is not None else None
    if old is not None and row.customer_id != old.get("customer_id"):
        old = {**old, "customer_id": row.customer_id}   # unlinked by customers/redact: stats already erased
    new = contribution(v)
    _merge(batch, diff(old, new, expand_pairs=False))   # pairs: basket changes, expanded per batch (write_counts)
    stored = row is not None
    if row is None:
        row = Order(shop_id=shop_id, id=v.id)
        s.add(row)
        if known is not None:
            known[v.id] = row
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
    pending = batch.__dict__.get("_lines")
    if pending is None:
        s.flush()                        # alone (reconcile, tests): the row is visible to the next s.get
    if stored:                           # a new order has no lines to replace: no DELETE per new order
        s.execute(delete(OrderLine).where(OrderLine.shop_id == shop_id, OrderLine.order_id == v.id))
    lines = line_rows(shop_id, v)
    if pending is not None:              # the order job's batch: one bulk insert for all orders (write_counts);
        pending[v.id] = lines            # a later version of the order in the batch replaces them
    else:
        insert_rows(s, OrderLine.__table__, LINE_COLUMNS, lines)
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
    """The batch's OrderLine rows (when apply_version deferred them), count deltas and sequential counts.
    Items / baskets: one upsert per table; pairs: one PairCountBlob per bucket. Returns the blobs written."""
    pending = batch.__dict__.get("_lines")
    rows = [r for lines in pending.values() for r in lines] if pending else []
    if rows:
        s.flush()                        # Order rows before their lines
        insert_rows(s, OrderLine.__table__, LINE_COLUMNS, rows)
    if pending:
        pending.clear()
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
             for b, (n, data) in sorted(pair_payloads(batch).items())]
    if blobs:
        s.execute(insert(PairCountBlob.__table__), blobs)
    tracker = batch.__dict__.get("_sequential")
    if tracker is not None:
        tracker.write(s)
    return len(blobs)


def pair_payloads(batch: Delta) -> dict:
    """{bucket: (pairs, compressed payload)} of the batch's pair deltas, straight from the numpy expansion of its
    basket changes (analytics.counts payload). Every applier builds its Delta through apply_version, i.e. with
    diff(expand_pairs=False); a Delta carrying expanded `pairs` would be a caller's mistake, refused."""
    if batch.pairs:
        raise ValueError("write_counts takes basket changes (diff(..., expand_pairs=False)), not expanded pairs")
    return {b: (len(c), encode_pairs_indexed(ids, i, j, c, compress=True))
            for b, (ids, i, j, c) in basket_change_pairs(batch.basket_changes, indexed=True).items()}


def update_customers(s, shop_id: int, batch: Delta, now: dt.datetime) -> list[int]:
    """Additive deltas + recomputed first/last/orders_count; returns the customers left with stats."""
    kept = []
    net_new = 0                      # customers created - customers removed, for the refit trigger
    touched = sorted(batch.touched)
    s.flush()
    spans: dict = {}                 # customer -> (first, last, n): one grouped query per chunk, not per customer
    stats: dict = {}                 # customer -> CustomerStats row
    for i in range(0, len(touched), UPSERT_CHUNK * 3):
        ids = touched[i:i + UPSERT_CHUNK * 3]
        for cid, first, last, n in s.execute(
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
        kept.append(cid)
    s.flush()
    if net_new:
        model = s.get(ShopModel, (shop_id, RFM_KIND))
        if model is not None:
            params = dict(model.params or {})
            params["customers_now"] = int(params.get("customers_now", model.customers_at_fit or 0)) + net_new
            model.params = params     # a new dict: JSON columns do not track in-place changes
    return kept


# --------------------------------------------------------------------------------------------- scoring
def rfm_params(s, shop: Shop, now: dt.datetime) -> tuple[dict, str]:
    """(edges, scheme) stored for the shop; fitted and stored first when the shop has none (see rfm_jobs)."""
    edges, scheme, _model = stored_params(s, shop)
    if edges is None:
        res = refit_rfm_in_session(s, shop, now, reason="order")
        edges, scheme = res["edges"], res["scheme"]
    return edges, scheme


def rescore_customers(s, shop: Shop, customers: list[int], now: dt.datetime, reason: str = "order") -> int:
    """Rescore these customers with the stored thresholds; SegmentChange(reason) per changed segment.
    A shop without stored thresholds is fitted (and everyone scored) once, here."""
    if not customers:
        return 0
    edges, scheme, _model = stored_params(s, shop)
    if edges is None:
        return refit_rfm_in_session(s, shop, now, reason=reason)["changes"]
    if scheme not in SCHEMES:
        scheme = "default"
    changes = 0
    rows: dict = {}                  # one query per chunk: the session does not keep unmodified rows (weak refs)
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
    return changes
