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
  4. wait for it (polling), stream the JSONL, assemble orders (convert_bulk.orders_from_jsonl) and apply them in
     batches of BATCH_SIZE, one transaction per batch: orders, item/pair/basket counts and customer stats as in
     workers.order_jobs, plus Job.done / Job.cursor (index of the last applied order in the file) and
     Shop.orders_watermark (max updatedAt seen). A resumed run skips orders up to Job.cursor;
  5. rescore every customer of the shop (RFM, stored thresholds or fitted on the shop) and mark the Job done
     (done == total == number of orders in the file).

Per-shop serialization with the order job: every batch locks the shop row first (see order_jobs). Webhook
versions applied meanwhile win or lose by updated_at as usual; the watermark never moves backwards.

Failures: the Job is marked 'failed' with a readable error and the exception re-raised (RQ retries); the retry
reuses that Job, its bulk operation and its cursor. A ShopifyAuthError is not raised: the shop is marked
needs_reauth and the Job failed.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select

from shopify_app.analytics.incremental import Delta
from shopify_app.models import CustomerStats, Job, Shop, utcnow
from shopify_app.shopify.convert_bulk import orders_from_jsonl
from shopify_app.shopify.graphql import (AdminClient, ShopifyAuthError, ShopifyBulkOperationError, ShopifyUserError,
                                         bulk_orders_query)
from shopify_app.shopify.install import ensure_fresh_token, mark_needs_reauth

from . import context
from .order_jobs import apply_version, rescore_customers, update_customers, write_counts

log = logging.getLogger(__name__)

KIND = "import"
BATCH_SIZE = 500
POLL_INTERVAL = 1.0
POLL_MAX_INTERVAL = 15.0
RESUMABLE_BULK_STATUSES = {"CREATED", "RUNNING", "COMPLETED"}


def start_history_import(shop_id: int, *, batch_size: int = BATCH_SIZE, poll_interval: float = POLL_INTERVAL,
                         client_kw: dict | None = None) -> dict:
    config = context.config()
    with context.transaction() as s:
        shop = s.get(Shop, shop_id)
        if shop is None:
            return {"shop_id": shop_id, "status": "missing"}
        if shop.status == "uninstalled":
            return {"shop_id": shop_id, "status": "uninstalled"}
        job = _job_for(s, shop_id)
        job_id = job.id
        job.status, job.error = "running", None
        job.started_at = job.started_at or utcnow()
        job.finished_at = None
    try:
        with context.transaction() as s:
            shop = s.get(Shop, shop_id)
            token = ensure_fresh_token(s, config, shop)
            domain = shop.domain
        client = AdminClient.for_shop(config, domain, token, **(client_kw or {}))
        op = _completed_operation(client, job_id, poll_interval)
        result = _apply_file(client, shop_id, job_id, op, batch_size)
        _finish(shop_id, job_id)
        log.info("history import of shop %s done: %s", shop_id, result)
        return {"shop_id": shop_id, "job_id": job_id, "status": "done", **result}
    except ShopifyAuthError as exc:
        with context.transaction() as s:
            shop = s.get(Shop, shop_id)
            if shop is not None and shop.status not in ("needs_reauth", "uninstalled"):
                mark_needs_reauth(s, shop)
        _fail(job_id, f"Shopify refused the access token ({exc}); the merchant must open the app again")
        return {"shop_id": shop_id, "job_id": job_id, "status": "failed", "error": "needs_reauth"}
    except Exception as exc:
        _fail(job_id, f"{type(exc).__name__}: {exc}")
        raise


# --------------------------------------------------------------------------------------------- job row
def _job_for(s, shop_id: int) -> Job:
    job = s.scalar(select(Job).where(Job.shop_id == shop_id, Job.kind == KIND).order_by(Job.id.desc()).limit(1))
    if job is None or job.status in ("done", "cancelled"):
        job = Job(shop_id=shop_id, kind=KIND, status="queued", done=0, details={})
        s.add(job)
        s.flush()
    return job


def _update_job(job_id: int, **fields) -> None:
    with context.transaction() as s:
        job = s.get(Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)


def _fail(job_id: int, message: str) -> None:
    log.warning("history import job %s failed: %s", job_id, message)
    _update_job(job_id, status="failed", error=message[:2000], finished_at=utcnow())


def _finish(shop_id: int, job_id: int) -> None:
    now = utcnow()
    with context.transaction() as s:
        shop = s.scalar(select(Shop).where(Shop.id == shop_id).with_for_update())
        customers = list(s.scalars(select(CustomerStats.customer_id).where(CustomerStats.shop_id == shop_id)))
        changes = rescore_customers(s, shop, customers, now)
        job = s.get(Job, job_id)
        job.status, job.error, job.finished_at = "done", None, now
        job.message = f"imported {job.done} orders; {changes} segment changes"


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
    op_id = _start_or_adopt(client, bulk_orders_query())
    _update_job(job_id, bulk_operation_id=op_id, cursor=None, done=0, total=None,
                message="waiting for Shopify's bulk export")
    return client.wait_for_bulk_operation(op_id, poll_interval=poll_interval, max_interval=POLL_MAX_INTERVAL)


CURRENT_BULK_QUERY = "{ currentBulkOperation(type: QUERY) { id status query } }"


def _start_or_adopt(client: AdminClient, query: str) -> str:
    """Start the bulk query; when Shopify says one is already in progress (we crashed after starting it but before
    storing its id) and it is this same export, adopt it. Another export in progress (not ours) is an error: the
    job fails and its retry starts over once that one is finished."""
    try:
        return client.run_bulk_query(query)
    except ShopifyUserError as exc:
        if "OPERATION_IN_PROGRESS" not in exc.codes:
            raise
        current = client.execute(CURRENT_BULK_QUERY).get("currentBulkOperation") or {}
        if current.get("id") and (current.get("query") or "").strip() == query.strip():
            log.info("adopting bulk operation %s already in progress", current["id"])
            return current["id"]
        raise


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
        job.message = "importing orders"
    applied = skipped = 0
    count = 0
    pending: list = []
    for index, version in enumerate(orders_from_jsonl(client.download_jsonl(op.get("url")))):
        count = index + 1
        if index <= last_done:
            continue
        pending.append((index, version))
        if len(pending) >= batch_size:
            a, k = _apply_batch(shop_id, job_id, pending)
            applied, skipped, pending = applied + a, skipped + k, []
    if pending:
        a, k = _apply_batch(shop_id, job_id, pending)
        applied, skipped = applied + a, skipped + k
    with context.transaction() as s:
        job = s.get(Job, job_id)
        job.total = job.done = count          # the file is the truth (rootObjectCount was the estimate)
        job.cursor = str(count - 1) if count else job.cursor
    return {"orders": count, "applied": applied, "skipped": skipped}


def _apply_batch(shop_id: int, job_id: int, pending: list) -> tuple[int, int]:
    now = utcnow()
    applied = skipped = 0
    with context.transaction() as s:
        shop = s.scalar(select(Shop).where(Shop.id == shop_id).with_for_update())
        batch = Delta()
        watermark: dt.datetime | None = shop.orders_watermark
        for _, v in pending:
            if apply_version(s, shop_id, v, batch, now):
                applied += 1
            else:
                skipped += 1
            if watermark is None or v.updated_at > watermark:
                watermark = v.updated_at
        s.flush()
        write_counts(s, shop_id, batch)
        update_customers(s, shop_id, batch, now)
        shop.orders_watermark = watermark
        job = s.get(Job, job_id)
        last_index = pending[-1][0]
        job.cursor = str(last_index)
        job.done = last_index + 1
    return applied, skipped

