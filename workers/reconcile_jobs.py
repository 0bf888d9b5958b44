"""Reconciliation (queue `default`): repair what lost webhooks left out, from the Admin API.

`reconcile_shop(shop_id)`:
  1. skip a shop that is not 'active' (uninstalled / needs_reauth / installing), or whose history import has not
     finished yet (its watermark is still moving; the import applies those orders itself);
  2. record a Job row (kind 'reconcile'); details = {since, pulled, applied, skipped, pages};
  3. get a fresh token (install.ensure_fresh_token); a ShopifyAuthError (401/403, refused refresh) marks the shop
     needs_reauth, fails the Job and stops -- not raised, so RQ does not retry a token that cannot work;
  4. page through `orders(query: "updated_at:>='<since>'", sortKey: UPDATED_AT)` (documents/
     reconcile_orders_page.graphql) with since = Shop.orders_watermark - OVERLAP (updated_at is not strictly
     monotonic across Shopify's writers, and an order sharing the watermark's second may sort after the last one
     seen), or every order when the shop has no watermark yet (an import that found no orders);
  5. convert each order with its refund line items (convert_graphql, same rules as the REST webhooks) and apply
     them batch by batch through the webhook path: under the shop row lock, order_jobs.apply_version
     (last writer wins by updated_at, tombstones never replaced; being the current state, a pulled version also
     wins an updated_at tie when it differs from the stored row) + write_counts + update_customers +
     rescore_customers; the watermark moves to the newest updated_at applied-or-seen, never backwards;
  6. mark the Job done with the counts.

Idempotent: a second run pulls the overlap again and every version is skipped (same updated_at), so nothing
changes. Known gap: an order *deleted* while its orders/delete webhook was lost no longer appears in `orders`,
so reconciliation cannot see it (Shopify has no deleted-orders query); the counted aggregates keep it until a
rebuild.

`reconcile_all_shops()` (hourly, workers.schedules) enqueues one job per active shop, job id `reconcile-{id}`, so
an hour in which a shop's previous run is still queued does not pile up another.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select

from shopify_app.analytics.incremental import Delta
from shopify_app.models import Job, Shop, utcnow
from shopify_app.shopify.convert_graphql import fetch_complete_order
from shopify_app.shopify.graphql import ShopifyAuthError

from . import context
from .order_jobs import apply_version, rescore_customers, update_customers, write_counts

log = logging.getLogger(__name__)

KIND = "reconcile"
JOB_PATH = "workers.reconcile_jobs.reconcile_shop"
OVERLAP = dt.timedelta(minutes=5)
# Page sizes of reconcile_orders_page.graphql: requested cost ~ 2 + 103 per order with the document's nested
# defaults (10 line items, 2 refunds x 5 refund lines), so 9 orders stay under Shopify's 1000-point query limit.
PAGE_SIZE = 9
REFUNDS_FIRST = 2
BATCH_SIZE = 100
IMPORT_UNFINISHED = ("queued", "running")
WAITING_OR_RUNNING = {"queued", "started", "deferred", "scheduled"}


def reconcile_all_shops() -> dict:
    """Fan out: one reconcile job per active shop (skips uninstalled / needs_reauth / installing)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob

    from shopify_app.queues import DEFAULT, enqueue, redis_connection

    config = context.config()
    conn = redis_connection(config.redis_url)
    with context.transaction() as s:
        shop_ids = list(s.scalars(select(Shop.id).where(Shop.status == "active").order_by(Shop.id)))
    enqueued = 0
    for shop_id in shop_ids:
        job_id = f"reconcile-{shop_id}"
        try:
            if RQJob.fetch(job_id, connection=conn).get_status(refresh=False) in WAITING_OR_RUNNING:
                continue        # last hour's run still waiting or running: one is enough
        except NoSuchJobError:
            pass
        enqueue(config, DEFAULT, JOB_PATH, shop_id, job_id=job_id, timeout=3600)
        enqueued += 1
    return {"shops": len(shop_ids), "enqueued": enqueued}


def reconcile_shop(shop_id: int, *, page_size: int = PAGE_SIZE, batch_size: int = BATCH_SIZE,
                   client_kw: dict | None = None) -> dict:
    with context.transaction() as s:
        shop = s.get(Shop, shop_id)
        if shop is None:
            return {"shop_id": shop_id, "status": "missing"}
        if shop.status != "active":
            return {"shop_id": shop_id, "status": "skipped", "reason": shop.status}
        last_import = s.scalar(select(Job).where(Job.shop_id == shop_id, Job.kind == "import")
                               .order_by(Job.id.desc()).limit(1))
        if last_import is not None and last_import.status in IMPORT_UNFINISHED:
            return {"shop_id": shop_id, "status": "skipped", "reason": "history import running"}
        if shop.orders_watermark is None and (last_import is None or last_import.status != "done"):
            return {"shop_id": shop_id, "status": "skipped", "reason": "history import not done"}
        since = shop.orders_watermark - OVERLAP if shop.orders_watermark is not None else None
        job = Job(shop_id=shop_id, kind=KIND, status="running", done=0, started_at=utcnow(),
                  details={"since": since.isoformat() if since else None}, message="pulling changed orders")
        s.add(job)
        s.flush()
        job_id = job.id
    counts = {"pulled": 0, "applied": 0, "skipped": 0}
    try:
        client = context.admin_client(shop_id, **(client_kw or {}))
        variables = {"first": page_size, "refundsFirst": REFUNDS_FIRST}
        if since is not None:
            variables["query"] = f"updated_at:>='{since.replace(microsecond=0).isoformat()}Z'"
        pending = []
        for node in client.paginate("reconcile_orders_page", "orders", variables):
            version = fetch_complete_order(client, node, refunds_first=REFUNDS_FIRST)
            if version is None:          # deleted while we paged: its orders/delete webhook tombstones it
                continue
            pending.append(version)
            if len(pending) >= batch_size:
                _apply_batch(shop_id, job_id, pending, counts)
                pending = []
        if pending:
            _apply_batch(shop_id, job_id, pending, counts)
    except ShopifyAuthError as exc:
        context.mark_shop_needs_reauth(shop_id)
        _finish(job_id, counts, "failed",
                error=f"Shopify refused the access token ({exc}); the merchant must open the app again")
        return {"shop_id": shop_id, "job_id": job_id, "status": "failed", "error": "needs_reauth", **counts}
    except Exception as exc:
        _finish(job_id, counts, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    _finish(job_id, counts, "done")
    log.info("reconciled shop %s: %s", shop_id, counts)
    return {"shop_id": shop_id, "job_id": job_id, "status": "done", **counts}


def _apply_batch(shop_id: int, job_id: int, versions: list, counts: dict) -> None:
    """One transaction: the same steps as the webhook order job, then the watermark and the Job's progress."""
    now = utcnow()
    with context.transaction() as s:
        shop = context.lock_shop(s, shop_id)
        batch = Delta()
        watermark = shop.orders_watermark
        for v in versions:
            if apply_version(s, shop_id, v, batch, now, tie_wins=True):   # the current state: wins ties
                counts["applied"] += 1
            else:
                counts["skipped"] += 1
            if watermark is None or v.updated_at > watermark:
                watermark = v.updated_at
        counts["pulled"] += len(versions)
        s.flush()
        write_counts(s, shop_id, batch)
        touched = update_customers(s, shop_id, batch, now)
        rescore_customers(s, shop, touched, now)
        shop.orders_watermark = watermark
        job = s.get(Job, job_id)
        job.done = counts["pulled"]
        job.details = {**(job.details or {}), **counts}


def _finish(job_id: int, counts: dict, status: str, error: str | None = None) -> None:
    with context.transaction() as s:
        job = s.get(Job, job_id)
        job.status, job.error, job.finished_at = status, (error or None) and error[:2000], utcnow()
        job.total = job.done = counts["pulled"]
        job.details = {**(job.details or {}), **counts}
        job.message = (f"pulled {counts['pulled']} changed orders: {counts['applied']} applied, "
                       f"{counts['skipped']} already up to date")
    if error:
        log.warning("reconcile job %s failed: %s", job_id, error)
