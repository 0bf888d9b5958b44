"""History import (queue `default`): `start_history_import(shop_id)`, enqueued by install.after_install.

Steps, each recorded on a Job row (kind 'import') so a crash resumes where it stopped:

  1. reuse the shop's latest import Job unless it is 'done' (a rerun after completion starts a new Job; applying
     the same versions again is a no-op thanks to the order version check), else create one;
  2. get a fresh token (install.ensure_fresh_token); a ShopifyAuthError marks the shop needs_reauth and the Job
     failed, and stops;
  3. start the bulk query (graphql.bulk_orders_query) and store its id on the Job, or resume the stored
     bulk_operation_id (a crash after it started); a stored operation that FAILED / EXPIRED / vanished is replaced
     by a new one (progress reset); OPERATION_IN_PROGRESS for this same export (crash before its id was stored)
     adopts the running operation;
  4. wait for it (polling), stream the JSONL, assemble orders (convert_bulk.orders_from_jsonl) and store them in
     batches of BATCH_SIZE, one transaction per batch, in bulk: the batch's existing rows are read in one query
     (id, updated_at, deleted_at); versions not newer are skipped (last writer wins; a tombstone is never
     replaced), newer ones replace the Order row and its lines; each Order gets `contribution(v)` (the contract
     of workers.order_jobs). No per-order count deltas: the aggregates are rebuilt once at the end. The batch also
     moves Job.done / Job.cursor (index of the last stored order in the file) and Shop.orders_watermark (max
     updatedAt seen). A resumed run skips orders up to Job.cursor;
  5. "Computing segments": in one transaction under the shop lock, rebuild every aggregate from the stored
     orders (workers.rebuild_jobs.rebuild_shop_state: customer stats, item / pair / basket snapshots; this also
     makes them consistent with whatever webhooks applied meanwhile), refit + store the RFM thresholds and rescore
     every customer, and mark the Job done (done == total == number of orders in the file);
  6. mine the pair rules inline (overall and per segment: there when the import reports its rule count), then
     enqueue the sequential ("buy next") counts rebuild and, after it, a full rules job that adds the triples
     and the sequential rules.

Per-shop serialization with the order job: every batch locks the shop row first (see order_jobs). Webhook
versions applied meanwhile win or lose by updated_at as usual; the watermark never moves backwards. Between
the first batch and step 5 the aggregates lag the stored orders (the import takes well under a minute on the
two-year Online Retail data, see docs/analytics-rules.md).

Failures: the Job is marked 'failed' with a readable error and the exception re-raised (RQ retries); the retry
reuses that Job, its bulk operation and its cursor. A ShopifyAuthError is not raised: the shop is marked
needs_reauth and the Job failed.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator

from sqlalchemy import delete, select

from shopify_app.analytics.incremental import contribution, latest_versions
from shopify_app.models import Job, Order, OrderLine, Shop, utcnow
from shopify_app.shopify.convert_bulk import orders_from_jsonl
from shopify_app.shopify.graphql import AdminClient, ShopifyAuthError, ShopifyBulkOperationError, bulk_orders_query

from . import context
from .bulk_rows import LINE_COLUMNS, ORDER_COLUMNS, insert_rows, line_rows, order_row
from .job_rows import current_job, update_job
from .rebuild_jobs import rebuild_shop_state, rescore_all

log = logging.getLogger(__name__)

KIND = "import"
BATCH_SIZE = 2000
ID_CHUNK = 900                 # ids per IN (...) (SQLite's bound-parameter limit, old builds)
POLL_INTERVAL = 1.0
POLL_MAX_INTERVAL = 2.0        # an export finishes up to this late; a poll costs 1 query point
RESUMABLE_BULK_STATUSES = {"CREATED", "RUNNING", "COMPLETED"}


def start_history_import(shop_id: int, *, batch_size: int = BATCH_SIZE, poll_interval: float = POLL_INTERVAL,
                         client_kw: dict | None = None) -> dict:
    with context.transaction() as s:
        shop = s.get(Shop, shop_id)
        if shop is None:
            return {"shop_id": shop_id, "status": "missing"}
        if shop.status == "uninstalled":
            return {"shop_id": shop_id, "status": "uninstalled"}
        job = current_job(s, shop_id, KIND)
        job_id = job.id
        job.status, job.error = "running", None
        job.started_at = job.started_at or utcnow()
        job.finished_at = None
    try:
        client = context.admin_client(shop_id, **(client_kw or {}))
        t0 = time.perf_counter()
        op = _completed_operation(client, job_id, poll_interval)
        t1 = time.perf_counter()
        result = _apply_file(client, shop_id, job_id, op, batch_size)
        timings = {"export": round(t1 - t0, 2), "store": round(time.perf_counter() - t1, 2)}
        result.update(_finish(shop_id, job_id, timings))
        log.info("history import of shop %s done: %s", shop_id, result)
        return {"shop_id": shop_id, "job_id": job_id, "status": "done", **result}
    except ShopifyAuthError as exc:
        context.mark_shop_needs_reauth(shop_id)
        _fail(job_id, f"Shopify refused the access token ({exc}); the merchant must open the app again")
        return {"shop_id": shop_id, "job_id": job_id, "status": "failed", "error": "needs_reauth"}
    except Exception as exc:
        _fail(job_id, f"{type(exc).__name__}: {exc}")
        raise


# --------------------------------------------------------------------------------------------- job row
def _fail(job_id: int, message: str) -> None:
    log.warning("history import job %s failed: %s", job_id, message)
    update_job(job_id, status="failed", error=message[:2000], finished_at=utcnow())


def _finish(shop_id: int, job_id: int, timings: dict | None = None) -> dict:
    """Aggregates, segments and Job done in one transaction; then sequential counts and rules. Phase times go to
    Job.details["timings"] (seconds): export (waiting for Shopify's bulk export, polls included), store
    (download + conversion + storing), rebuild, rescore, rules."""
    update_job(job_id, message="Computing segments")
    now = utcnow()
    t0 = time.perf_counter()
    with context.transaction() as s:
        rebuilt = rebuild_shop_state(s, shop_id, now)        # locks the shop row first
        t1 = time.perf_counter()
        changes = rescore_all(s, shop_id, now)
        t2 = time.perf_counter()
        job = s.get(Job, job_id)
        job.status, job.error, job.finished_at = "done", None, now
        job.message = (f"Imported {job.done:,} orders: {rebuilt.get('customers', 0):,} customers in segments; "
                       "finding products bought together")
        timings = {**(timings or {}), "rebuild": round(t1 - t0, 2), "rescore": round(t2 - t1, 2)}
        job.details = {**(job.details or {}), "customers": rebuilt.get("customers", 0), "segment_changes": changes,
                       "timings": timings}
    timings["commit"] = round(time.perf_counter() - t2, 2)      # written with the rules below
    rules = _sequential_and_rules(shop_id, timings)
    with context.transaction() as s:
        job = s.get(Job, job_id)
        pairs = rules.get("pair")
        job.message = (f"Imported {job.done:,} orders: {rebuilt.get('customers', 0):,} customers in segments"
                       + (f", {pairs:,} product pair rules" if pairs is not None else ""))
        job.details = {**(job.details or {}), "rules": rules, "timings": timings}
    log.info("import of shop %s finished: %s", shop_id, timings)
    return {"customers": rebuilt.get("customers", 0), "segment_changes": changes, "rules": rules}


def _sequential_and_rules(shop_id: int, timings: dict) -> dict:
    """Pair rules inline (overall and per segment: what the merchant sees right after the import), then the
    sequential counts rebuild (workers.sequential_jobs, pure Python per customer) as a job, followed by a full
    rules job that adds the triples (mlxtend fpgrowth, the slow part) and the sequential rules."""
    t0 = time.perf_counter()
    try:
        from .rules_jobs import mine_rules
        result = mine_rules(shop_id, triples=False)      # triples come with the follow-up rules job
        timings["rules"] = round(time.perf_counter() - t0, 2)
    except Exception as exc:      # the import itself is done; the rules job retries on its own
        log.exception("rules after the import of shop %s failed: %s", shop_id, exc)
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
    try:
        _enqueue_sequential_then_rules(context.config(), shop_id, retry_rules=result.get("status") == "failed")
    except Exception as exc:      # Redis down: the order job / schedules ask for them again
        log.warning("could not enqueue the sequential rebuild of shop %s: %s", shop_id, exc)
    try:                          # CLV, churn risk and clusters now, not at the nightly refit
        from .predictive_jobs import enqueue_refit
        enqueue_refit(context.config(), shop_id)
    except Exception as exc:      # noqa: BLE001 - Redis down: the nightly refit covers it
        log.warning("could not enqueue the predictions refit of shop %s: %s", shop_id, exc)
    return result


def _enqueue_sequential_then_rules(config, shop_id: int, retry_rules: bool) -> None:
    from shopify_app.queues import DEFAULT, DEFAULT_RETRY, get_queue

    from .rules_jobs import enqueue_mine_rules

    try:
        from . import sequential_jobs  # noqa: F401
    except ImportError:
        if retry_rules:
            enqueue_mine_rules(config, shop_id)
        return
    q = get_queue(config, DEFAULT)
    seq = q.enqueue("workers.sequential_jobs.rebuild_sequential_job", args=(shop_id,), retry=DEFAULT_RETRY,
                    job_timeout=3600)
    q.enqueue("workers.rules_jobs.mine_rules", args=(shop_id,), depends_on=seq, retry=DEFAULT_RETRY)


# --------------------------------------------------------------------------------------------- bulk operation
def _completed_operation(client: AdminClient, job_id: int, poll_interval: float) -> dict:
    with context.transaction() as s:
        op_id = s.get(Job, job_id).bulk_operation_id
    if op_id:
        try:
            op = client.poll_bulk_operation(op_id)
        except ShopifyBulkOperationError:
            op = None
        if op is not None and op.get("status") in RESUMABLE_BULK_STATUSES:
            try:
                return client.wait_for_bulk_operation(op_id, poll_interval=poll_interval,
                                                      max_interval=POLL_MAX_INTERVAL)
            except ShopifyBulkOperationError as exc:
                log.warning("resumed bulk operation %s ended: %s; starting a new one", op_id, exc)
        log.info("bulk operation %s of job %s cannot be resumed: starting a new one", op_id, job_id)
    # Grouped output: orders_from_jsonl assembles each order from the lines that follow it, so the import streams in
    # batches and resumes from an order index; ungrouped (the default since 2026-01) it could only assemble orders
    # after reading the whole file. Refused because other bulk queries run: the job fails, its retry starts over.
    op_id = client.start_or_adopt_bulk_query(bulk_orders_query(), group_objects=True)
    update_job(job_id, bulk_operation_id=op_id, cursor=None, done=0, total=None,
                message="Waiting for Shopify's export of your orders")
    return client.wait_for_bulk_operation(op_id, poll_interval=poll_interval, max_interval=POLL_MAX_INTERVAL)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------- apply
def _apply_file(client: AdminClient, shop_id: int, job_id: int, op: dict, batch_size: int) -> dict:
    with context.transaction() as s:
        job = s.get(Job, job_id)
        last_done = _int(job.cursor)
        last_done = -1 if last_done is None else last_done
        total = _int(op.get("rootObjectCount"))
        if total is not None:
            job.total = total
        job.message = _progress(job.done or 0, job.total)
    applied = skipped = 0
    count = 0
    # Parsing runs in this thread between the batches: a reader thread was measured slower on SQLite (the GIL is
    # released and re-taken for every row sqlite3 steps, so a busy parser makes each row wait for the GIL).
    for item in _batches(client.download_jsonl(op.get("url")), last_done, batch_size):
        if isinstance(item, int):                        # the last item: how many orders the file holds
            count = item
            continue
        a, k = _store_batch(shop_id, job_id, item)
        applied, skipped = applied + a, skipped + k
    with context.transaction() as s:
        job = s.get(Job, job_id)
        job.total = job.done = count          # the file is the truth (rootObjectCount was the estimate)
        job.cursor = str(count - 1) if count else job.cursor
    return {"orders": count, "applied": applied, "skipped": skipped}


def _batches(objects: Iterable[dict], last_done: int, batch_size: int) -> Iterator:
    """Lists of (index in the file, OrderVersion) after the cursor `last_done`, batch_size at a time; then the
    number of orders in the file (an int)."""
    pending: list = []
    count = 0
    for index, version in enumerate(orders_from_jsonl(objects)):
        count = index + 1
        if index <= last_done:
            continue
        pending.append((index, version))
        if len(pending) >= batch_size:
            yield pending
            pending = []
    if pending:
        yield pending
    yield count


def _progress(done: int, total: int | None) -> str:
    return f"Importing orders: {done:,} of {total:,}" if total else f"Importing orders: {done:,}"


def _supersedes(v, stored) -> bool:
    """Last writer wins by updated_at; a tombstone replaces every version and is never replaced."""
    if stored is None:
        return True
    _, updated_at, deleted_at = stored
    if deleted_at is not None:
        return False
    return bool(v.deleted) or v.updated_at > updated_at


def _store_batch(shop_id: int, job_id: int, pending: list) -> tuple[int, int]:
    now = utcnow()
    with context.transaction() as s:
        shop = context.lock_shop(s, shop_id)
        versions = latest_versions(v for _, v in pending)          # the file holds each order once; be safe
        ids = sorted(versions)
        stored = {}
        for i in range(0, len(ids), ID_CHUNK):
            for row in s.execute(select(Order.id, Order.shopify_updated_at, Order.deleted_at)
                                 .where(Order.shop_id == shop_id, Order.id.in_(ids[i:i + ID_CHUNK]))):
                stored[row[0]] = tuple(row)
        winners = [versions[i] for i in ids if _supersedes(versions[i], stored.get(i))]
        replaced = sorted(v.id for v in winners if v.id in stored)
        for i in range(0, len(replaced), ID_CHUNK):
            chunk = replaced[i:i + ID_CHUNK]
            s.execute(delete(OrderLine).where(OrderLine.shop_id == shop_id, OrderLine.order_id.in_(chunk)))
            s.execute(delete(Order).where(Order.shop_id == shop_id, Order.id.in_(chunk)))
        if winners:
            insert_rows(s, Order.__table__, ORDER_COLUMNS,
                        [order_row(shop_id, v, contribution(v), now) for v in winners])
            insert_rows(s, OrderLine.__table__, LINE_COLUMNS, [r for v in winners for r in line_rows(shop_id, v)])
        watermark = shop.orders_watermark
        newest = max(v.updated_at for _, v in pending)
        if watermark is None or newest > watermark:
            shop.orders_watermark = newest
        job = s.get(Job, job_id)
        last_index = pending[-1][0]
        job.cursor = str(last_index)
        job.done = last_index + 1
        job.message = _progress(job.done, job.total)
    return len(winners), len(pending) - len(winners)
