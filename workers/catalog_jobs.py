"""Catalogue and customer records (queue `default`): product titles, types and unit costs; customer tags.

- `sync_products(shop_id)`: the whole catalogue by one bulk query (documents/bulk_products_query.graphql; bulk
  operations are not subject to the API rate limits), upserted into Product rows in batches. Enqueued after the
  history import, so bundle suggestions show titles, not ids. Progress and outcome are on a Job row (kind
  'catalog'). Steps:
    1. reuse the shop's latest catalog Job unless it is 'done' / 'cancelled', else create one;
    2. resume the Job's stored bulk operation when it is still CREATED / RUNNING / COMPLETED (a crash or a retry
       after it started), else start a new one and store its id. OPERATION_IN_PROGRESS for this same query (we
       crashed before storing its id) adopts the running one;
    3. another bulk query of the app in progress (OPERATION_IN_PROGRESS; LIMIT_REACHED once Shopify's five
       concurrent operations are in use), typically the history import's order export: the job does not fail
       and does not hold the worker. It records the wait on the Job (status 'queued', details.waits /
       next_try_at) and schedules itself again (RQ enqueue_in, RETRY_DELAYS, up to MAX_WAITS times, then the Job
       fails with a readable message);
    4. stream the JSONL (convert_products.products_from_jsonl) and upsert BATCH rows per transaction
       (`apply_products`: one read of the batch's stored updated_at, then INSERT .. ON CONFLICT DO UPDATE
       guarded by the same last-writer-wins rule). Job.done / total count products; Job 'done' at the end.
  Idempotent: a rerun or a crash half way re-applies the same versions, which changes nothing (versions not
  newer than the stored one are skipped), so nothing is ever doubled.
- `apply_product(s, shop_id, row)` / `apply_customer(s, shop_id, row)`: last writer wins by Shopify's updated_at,
  used by the webhook intake (products/create|update, customers/create|update|delete), which handles those
  topics itself: they are single-row upserts with no analytics to do.

A 401 marks the shop needs_reauth and fails the Job, like every job that speaks to Shopify.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, or_, select

from shopify_app.models import Customer, Job, Product, Shop, utcnow
from shopify_app.shopify.convert_products import products_from_jsonl
from shopify_app.shopify.graphql import (BULK_BUSY_CODES, AdminClient, ShopifyAuthError, ShopifyBulkOperationError,
                                         ShopifyHTTPError, ShopifyUserError, load_document)

from . import context
from .job_rows import current_job, update_job

log = logging.getLogger(__name__)
JOB_PATH = "workers.catalog_jobs.sync_products"
KIND = "catalog"
BATCH = 1000
ID_CHUNK = 900                 # ids per IN (...) (SQLite's bound-parameter limit, old builds)
POLL_INTERVAL = 1.0
POLL_MAX_INTERVAL = 15.0
RESUMABLE_BULK_STATUSES = {"CREATED", "RUNNING", "COMPLETED"}
RETRY_DELAYS = (15, 30, 60, 120, 300)    # seconds before each new try while another bulk query runs (last repeats)
MAX_WAITS = 60                           # ~4.5 hours of waiting, then the Job fails


def _newer(incoming, stored) -> bool:
    return stored is None or incoming is None or incoming >= stored


def apply_product(s, shop_id: int, row: dict) -> bool:
    """Upsert one product; an older version (by updated_at) than the stored one is ignored. REST payloads carry no
    unit cost (`unit_cost` absent): the stored cost is kept."""
    p = s.get(Product, (shop_id, row["id"]))
    if p is not None and not _newer(row.get("shopify_updated_at"), p.shopify_updated_at):
        return False
    if p is None:
        p = Product(shop_id=shop_id, id=row["id"])
        s.add(p)
    for k in ("title", "product_type", "vendor", "shopify_updated_at"):
        setattr(p, k, row.get(k) if row.get(k) is not None else getattr(p, k))
    if "unit_cost" in row:
        p.unit_cost = row["unit_cost"]
    return True


def apply_products(s, shop_id: int, rows: list[dict]) -> int:
    """apply_product for a batch of full rows (title, type, vendor, unit_cost, updated_at: the sync's rows), with
    the same last-writer-wins rule: one read of the batch's stored rows decides which rows to write (not older by
    updated_at, and not identical: an equal updated_at is still written, since a unit cost change does not touch
    the product's updatedAt), then one INSERT .. ON CONFLICT DO UPDATE writes them. The statement repeats the rule
    in its WHERE, so a webhook that stored a newer version between the read and the write (PostgreSQL; SQLite
    writers are serialized) still wins. Returns the number of rows written (new or changed)."""
    latest: dict[int, dict] = {}
    for row in rows:
        prev = latest.get(row["id"])
        if prev is None or _newer(row.get("shopify_updated_at"), prev.get("shopify_updated_at")):
            latest[row["id"]] = row
    ids = sorted(latest)
    stored: dict[int, tuple] = {}
    for i in range(0, len(ids), ID_CHUNK):
        for pid, *values in s.execute(
                select(Product.id, *(getattr(Product, c) for c in _PRODUCT_FIELDS))
                .where(Product.shop_id == shop_id, Product.id.in_(ids[i:i + ID_CHUNK]))):
            stored[pid] = tuple(values)
    winners = []
    for pid in ids:
        row = {"shop_id": shop_id, "id": pid, **_full_row(latest[pid])}
        old = stored.get(pid)
        if old is None or (_newer(row["shopify_updated_at"], old[-1])
                           and tuple(row[c] for c in _PRODUCT_FIELDS) != old):
            winners.append(row)
    if not winners:
        return 0
    dialect = s.connection().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        for row in winners:
            apply_product(s, shop_id, row)      # same rule, one row at a time
        return len(winners)
    s.execute(_product_upsert(dialect), winners)
    return len(winners)


_PRODUCT_FIELDS = ("title", "product_type", "vendor", "unit_cost", "shopify_updated_at")   # updated_at last


def _full_row(row: dict) -> dict:
    return {"title": row.get("title") or "", "product_type": row.get("product_type") or "",
            "vendor": row.get("vendor") or "", "unit_cost": row.get("unit_cost"),
            "shopify_updated_at": row.get("shopify_updated_at")}


def _product_upsert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    t = Product.__table__
    stmt = insert(t)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[t.c.shop_id, t.c.id],
        set_={"title": new.title, "product_type": new.product_type, "vendor": new.vendor, "unit_cost": new.unit_cost,
              "shopify_updated_at": func.coalesce(new.shopify_updated_at, t.c.shopify_updated_at)},
        where=or_(new.shopify_updated_at.is_(None), t.c.shopify_updated_at.is_(None),
                  new.shopify_updated_at >= t.c.shopify_updated_at))


def apply_customer(s, shop_id: int, row: dict) -> bool:
    """Upsert one customer record (id, tags, times; nothing personal). A delete marks deleted_at."""
    c = s.get(Customer, (shop_id, row["id"]))
    if c is not None and not _newer(row.get("shopify_updated_at"), c.shopify_updated_at) and not row.get("deleted_at"):
        return False
    if c is None:
        c = Customer(shop_id=shop_id, id=row["id"], tags=[])
        s.add(c)
    if row.get("tags") is not None:
        c.tags = row["tags"]
    c.shopify_updated_at = row.get("shopify_updated_at") or c.shopify_updated_at
    c.created_at = c.created_at or row.get("created_at")
    if row.get("deleted_at"):
        c.deleted_at = row["deleted_at"]
    return True


class OtherBulkQueryRunning(Exception):
    """Shopify refused to start our bulk query: another one of this app is in progress (or the limit reached)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def sync_products(shop_id: int, *, client_kw: dict | None = None, poll_interval: float = POLL_INTERVAL,
                  retry_delays: tuple = RETRY_DELAYS, max_waits: int = MAX_WAITS, for_job: int | None = None) -> dict:
    """`for_job`: set on the runs this job schedules for itself (see _wait_and_retry): when that Job was finished
    meanwhile by another run (a sync enqueued again, e.g. by a reinstall), there is nothing left to do."""
    with context.transaction() as s:
        shop = s.get(Shop, shop_id)
        if shop is None or shop.status in ("uninstalled", "needs_reauth"):
            return {"shop_id": shop_id, "status": "skipped"}
        if for_job is not None:
            waited_for = s.get(Job, for_job)
            if waited_for is not None and waited_for.status in ("done", "cancelled"):
                return {"shop_id": shop_id, "job_id": for_job, "status": "already_" + waited_for.status}
        job = current_job(s, shop_id, KIND)
        job_id = job.id
        job.status, job.error, job.finished_at = "running", None, None
        job.started_at = job.started_at or utcnow()
        job.message = "Asking Shopify for your product catalogue"
    base = {"shop_id": shop_id, "job_id": job_id}
    try:
        client = context.admin_client(shop_id, **(client_kw or {}))
        op = _completed_operation(client, job_id, poll_interval)
        result = _apply_file(client, shop_id, job_id, op)
    except ShopifyAuthError as exc:
        context.mark_shop_needs_reauth(shop_id)
        _fail(job_id, f"Shopify refused the access token ({exc}); the merchant must open the app again")
        return {**base, "status": "needs_reauth"}
    except OtherBulkQueryRunning as exc:
        again = dict(client_kw=client_kw, poll_interval=poll_interval, retry_delays=tuple(retry_delays),
                     max_waits=max_waits, for_job=job_id)
        return {**base, **_wait_and_retry(shop_id, job_id, exc, again)}
    except Exception as exc:
        # An expired / vanished result file cannot be resumed: the retry starts a new export.
        _fail(job_id, f"{type(exc).__name__}: {exc}", forget_operation=isinstance(exc, ShopifyHTTPError))
        raise
    log.info("product sync of shop %s done: %s", shop_id, result)
    return {**base, "status": "done", **result}


# --------------------------------------------------------------------------------------------- job row
def _fail(job_id: int, message: str, forget_operation: bool = False) -> None:
    log.warning("product sync job %s failed: %s", job_id, message)
    fields = {"status": "failed", "error": message[:2000], "finished_at": utcnow()}
    if forget_operation:
        fields["bulk_operation_id"] = None
    update_job(job_id, **fields)


def _wait_and_retry(shop_id: int, job_id: int, busy: OtherBulkQueryRunning, kwargs: dict) -> dict:
    """Another bulk query holds the slot: schedule this job again after a delay instead of failing (and instead
    of sleeping in the worker, which would delay the `default` queue). The RQ job id carries the wait number, so
    two runs waiting at the same step schedule one follow-up, not two."""
    from shopify_app.queues import DEFAULT, DEFAULT_RETRY, get_queue

    with context.transaction() as s:
        job = s.get(Job, job_id)
        waits = int((job.details or {}).get("waits", 0)) + 1
        if waits > kwargs["max_waits"]:
            job.status, job.finished_at = "failed", utcnow()
            job.error = (f"Shopify kept refusing a new bulk query ({busy.code}) after {waits - 1} tries: "
                         f"{busy}")[:2000]
            job.message = "Could not load the product catalogue: another Shopify export never finished"
            return {"status": "failed", "waits": waits - 1}
        delays = kwargs["retry_delays"] or RETRY_DELAYS
        delay = float(delays[min(waits, len(delays)) - 1])
        next_try = utcnow() + dt.timedelta(seconds=delay)
        job.status = "queued"
        job.message = (f"Waiting for another Shopify export to finish before loading the product catalogue "
                       f"(try {waits + 1} at {next_try:%H:%M:%S} UTC)")
        job.details = {**(job.details or {}), "waits": waits, "busy": busy.code,
                       "next_try_at": next_try.isoformat(timespec="seconds")}
    log.info("shop %s: %s; product sync retries in %.0fs (wait %d)", shop_id, busy.code, delay, waits)
    try:
        get_queue(context.config(), DEFAULT).enqueue_in(
            dt.timedelta(seconds=delay), JOB_PATH, args=(shop_id,), kwargs=kwargs,
            job_id=f"sync-products-{shop_id}-wait-{waits}", retry=DEFAULT_RETRY, job_timeout=3600)
    except Exception as exc:      # Redis unreachable: say so on the Job; RQ's own retry runs the job again
        _fail(job_id, f"could not schedule the next try: {type(exc).__name__}: {exc}")
        raise
    return {"status": "rescheduled", "waits": waits, "retry_in": delay, "busy": busy.code}


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
    op_id = _start_or_adopt(client, load_document("bulk_products_query"))
    update_job(job_id, bulk_operation_id=op_id, done=0, total=None,
                message="Waiting for Shopify's export of your product catalogue")
    return client.wait_for_bulk_operation(op_id, poll_interval=poll_interval, max_interval=POLL_MAX_INTERVAL)


def _start_or_adopt(client: AdminClient, query: str) -> str:
    """AdminClient.start_or_adopt_bulk_query; Shopify refusing because other bulk queries run raises
    OtherBulkQueryRunning: the job reschedules itself."""
    try:
        return client.start_or_adopt_bulk_query(query)
    except ShopifyUserError as exc:
        code = next((c for c in exc.codes if c in BULK_BUSY_CODES), None)
        if code is None:
            raise
        raise OtherBulkQueryRunning(code, str(exc)) from exc


# --------------------------------------------------------------------------------------------- apply
def _apply_file(client: AdminClient, shop_id: int, job_id: int, op: dict) -> dict:
    total = _int(op.get("rootObjectCount"))
    update_job(job_id, total=total, done=0, message="Loading your product catalogue")
    seen = changed = 0
    pending: list[dict] = []
    for row in products_from_jsonl(client.download_jsonl(op.get("url"))):
        pending.append(row)
        if len(pending) >= BATCH:
            changed += _store_batch(shop_id, job_id, pending, seen + len(pending))
            seen += len(pending)
            pending = []
    if pending:
        changed += _store_batch(shop_id, job_id, pending, seen + len(pending))
        seen += len(pending)
    with context.transaction() as s:
        job = s.get(Job, job_id)
        job.status, job.error, job.finished_at = "done", None, utcnow()
        job.done = job.total = seen                 # the file is the truth (rootObjectCount was the estimate)
        job.message = f"Product catalogue loaded: {seen:,} products ({changed:,} new or changed)"
        job.details = {**(job.details or {}), "products": seen, "changed": changed}
    return {"products": seen, "changed": changed}


def _store_batch(shop_id: int, job_id: int, rows: list[dict], done: int) -> int:
    with context.transaction() as s:
        changed = apply_products(s, shop_id, rows)
        job = s.get(Job, job_id)
        job.done = done
        job.message = f"Loading your product catalogue: {done:,}" + (f" of {job.total:,}" if job.total else "")
    return changed


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def enqueue_sync_products(config, shop_id: int):
    from shopify_app.queues import DEFAULT, enqueue

    return enqueue(config, DEFAULT, JOB_PATH, shop_id, job_id=f"sync-products-{shop_id}", timeout=3600)
