"""Webhook processing jobs (queue `webhooks`): one job per recorded WebhookDelivery.

`process_delivery(delivery_id)` locks the row, and only acts on status 'received': running it twice (RQ retry,
sweeper, duplicate enqueue) is a no-op. Dispatch by topic:

- app/uninstalled     -> shop 'uninstalled', uninstalled_at, tokens wiped (ignored if the shop reinstalled after
                         the event was triggered);
- app/scopes_update   -> shop.scopes = the granted scopes;
- customers/data_request, customers/redact, shop/redact -> a ComplianceRequest row plus the erasure itself;
- orders/*, refunds/create -> status 'pending_analytics' with the body kept: the order job consumes rows in
  that status and erases the body when done. Nothing is computed here;
- products/create|update, customers/create|update|delete -> one-row upserts (workers.catalog_jobs; customers keep
  id, tags and times only, and a redacted customer is never brought back); bulk_operations/finish -> processed
  (the import polls its operation);
- anything else, or any non-compliance topic for an uninstalled shop -> 'ignored'.

Processed rows get status 'processed' and processed_at; bodies of app and compliance topics are erased then
(minimal personal data). A failing handler rolls back, records the error and attempt, and re-raises so RQ
retries; after MAX_ATTEMPTS the row is 'failed' and the sweeper leaves it alone.
"""
from __future__ import annotations

import datetime as dt
import json
import logging

from sqlalchemy import delete, func, select

from shopify_app.models import (
    CUSTOMER_KEYED, ComplianceRequest, Order, Shop, WebhookDelivery, utcnow,
)
from shopify_app.shopify.webhooks import COMPLIANCE_TOPICS, ORDER_TOPICS
from workers.context import config, lock_shop, transaction

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
PENDING_ANALYTICS = "pending_analytics"
# Consumed by the analytics / import jobs, which own what they do with the payload.
ANALYTICS_TOPICS = ORDER_TOPICS
PRODUCT_TOPICS = frozenset({"products/create", "products/update"})
CUSTOMER_TOPICS = frozenset({"customers/create", "customers/update", "customers/delete"})


class Outcome:
    def __init__(self, status: str, keep_body: bool = False, error: str | None = None, **result):
        self.status, self.keep_body, self.error, self.result = status, keep_body, error, result


# --------------------------------------------------------------------------------------------- entry points
def process_delivery(delivery_id: int) -> dict:
    try:
        with transaction() as s:
            d = s.scalar(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update())
            if d is None:      # deleted since (shop/redact) - nothing to do
                return {"delivery_id": delivery_id, "status": "missing"}
            if d.status != "received":
                return {"delivery_id": delivery_id, "status": d.status, "noop": True}
            # Tenant scope: the shop is the delivery's own shop_id *and* domain, never looked up by payload.
            shop = None
            if d.shop_id is not None:
                shop = s.scalar(select(Shop).where(Shop.id == d.shop_id, Shop.domain == d.shop_domain))
            elif d.topic in COMPLIANCE_TOPICS:
                # Recorded before the shop was known (the delivery is authenticated for this domain).
                shop = s.scalar(select(Shop).where(Shop.domain == d.shop_domain))
            d.attempts = (d.attempts or 0) + 1
            outcome = _dispatch(s, d, shop)
            if outcome.status == "deleted":          # shop/redact removed the row itself
                return {"delivery_id": delivery_id, "status": "processed", **outcome.result}
            d.status = outcome.status
            d.error = outcome.error
            d.processed_at = utcnow()
            if not outcome.keep_body:
                d.body = None
            result = {"delivery_id": delivery_id, "status": d.status, **outcome.result}
            shop_id = d.shop_id
    except Exception as exc:
        _record_failure(delivery_id, exc)
        raise
    if result["status"] == PENDING_ANALYTICS and shop_id is not None:
        # After commit, so the order job sees the row. Jobs per shop coalesce; if Redis is down the
        # sweeper hands the shop's pending rows over later.
        _hand_to_order_job(shop_id)
    return result


def _hand_to_order_job(shop_id: int) -> None:
    from workers.order_jobs import enqueue_process_orders

    try:
        enqueue_process_orders(config(), shop_id)
    except Exception as exc:  # noqa: BLE001 - Redis down: the delivery row is kept, the sweeper retries
        log.warning("could not enqueue order processing for shop %s: %s", shop_id, exc)


def sweep_stuck_deliveries(older_than_seconds: int = 120, limit: int = 1000) -> dict:
    """Re-enqueue deliveries still 'received' after `older_than_seconds` (lost job, Redis restarted or down
    when the webhook came in). Jobs already waiting in the queue are not duplicated."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from shopify_app.queues import redis_connection
    from shopify_app.web.webhooks import delivery_job_id, enqueue_delivery

    cfg = config()
    cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
    with transaction() as s:
        ids = list(s.scalars(
            select(WebhookDelivery.id).where(WebhookDelivery.status == "received",
                                             WebhookDelivery.received_at < cutoff)
            .order_by(WebhookDelivery.id).limit(limit)
        ))
    conn = redis_connection(cfg.redis_url)
    enqueued = skipped = 0
    for delivery_id in ids:
        try:
            job = Job.fetch(delivery_job_id(delivery_id), connection=conn)
            if job.get_status(refresh=False) in ("queued", "started", "scheduled", "deferred"):
                skipped += 1
                continue
        except NoSuchJobError:
            pass
        if enqueue_delivery(cfg, delivery_id):
            enqueued += 1
    # Order deliveries handed to analytics whose job was lost: one coalesced job per shop.
    with transaction() as s:
        pending_shops = list(s.scalars(
            # Rows the intake handed over directly have no processed_at: their age is from received_at.
            select(WebhookDelivery.shop_id).where(WebhookDelivery.status == PENDING_ANALYTICS,
                                                  func.coalesce(WebhookDelivery.processed_at,
                                                                WebhookDelivery.received_at) < cutoff,
                                                  WebhookDelivery.shop_id.is_not(None)).distinct()
        ))
    for shop_id in pending_shops:
        _hand_to_order_job(shop_id)
    return {"candidates": len(ids), "enqueued": enqueued, "skipped": skipped, "order_shops": len(pending_shops)}


# --------------------------------------------------------------------------------------------- dispatch
def _dispatch(s, d: WebhookDelivery, shop: Shop | None) -> Outcome:
    try:
        payload = json.loads(d.body) if d.body else {}
    except ValueError as exc:
        return Outcome("invalid", error=f"body is not JSON: {exc}")
    if not isinstance(payload, dict):
        return Outcome("invalid", error="body is not a JSON object")

    if d.topic in COMPLIANCE_TOPICS:
        return COMPLIANCE_HANDLERS[d.topic](s, d, shop, payload)
    if shop is None:
        return Outcome("unknown_shop", error="shop is not installed")
    if d.topic == "app/uninstalled":
        return _app_uninstalled(s, d, shop, payload)
    if shop.status == "uninstalled":
        return Outcome("ignored", error="shop is uninstalled")
    if d.topic == "app/scopes_update":
        return _app_scopes_update(s, d, shop, payload)
    if d.topic in PRODUCT_TOPICS:
        return _product(s, d, shop, payload)
    if d.topic in CUSTOMER_TOPICS:
        return _customer(s, d, shop, payload)
    if d.topic == "bulk_operations/finish":
        # The import polls its operation; this notification only saves it a poll.
        return Outcome("processed")
    if d.topic in ANALYTICS_TOPICS:
        # Hand-off: the analytics job consumes rows in this status (and erases the body when done).
        return Outcome(PENDING_ANALYTICS, keep_body=True)
    return Outcome("ignored", error=f"topic {d.topic} is not handled")


def _product(s, d, shop: Shop, payload) -> Outcome:
    from shopify_app.shopify.convert_products import product_from_rest
    from workers.catalog_jobs import apply_product

    try:
        row = product_from_rest(payload)
    except ValueError as exc:
        return Outcome("invalid", error=str(exc))
    return Outcome("processed", changed=apply_product(s, shop.id, row))


def _customer(s, d, shop: Shop, payload) -> Outcome:
    from shopify_app.shopify.convert_products import customer_from_rest
    from workers.catalog_jobs import apply_customer

    try:
        row = customer_from_rest(payload, deleted_at=(d.triggered_at or utcnow()) if d.topic.endswith("delete")
                                 else None)
    except ValueError as exc:
        return Outcome("invalid", error=str(exc))
    redacted = s.scalar(select(ComplianceRequest.id).where(
        ComplianceRequest.shop_id == shop.id, ComplianceRequest.topic == "customers/redact",
        ComplianceRequest.customer_id == row["id"]).limit(1))
    if redacted is not None:          # a late update must not bring a redacted customer back
        return Outcome("ignored", error="customer redacted")
    return Outcome("processed", changed=apply_customer(s, shop.id, row))


def _stale(d: WebhookDelivery, shop: Shop) -> bool:
    """True when the shop (re)installed after the event was triggered: the event predates this install."""
    return bool(shop.installed_at and d.triggered_at and d.triggered_at < shop.installed_at)


def _app_uninstalled(s, d, shop: Shop, payload) -> Outcome:
    if _stale(d, shop):
        return Outcome("ignored", error="the shop reinstalled after this uninstall")
    shop.status = "uninstalled"
    shop.uninstalled_at = d.triggered_at or utcnow()
    shop.access_token_enc = None
    shop.refresh_token_enc = None
    shop.token_expires_at = None
    shop.refresh_token_expires_at = None
    return Outcome("processed", shop_status="uninstalled")


def _app_scopes_update(s, d, shop: Shop, payload) -> Outcome:
    current = payload.get("current")
    if not isinstance(current, list) or not all(isinstance(x, str) for x in current):
        return Outcome("invalid", error="app/scopes_update without a list of current scopes")
    shop.scopes = ",".join(current)
    return Outcome("processed", scopes=shop.scopes)


# --------------------------------------------------------------------------------------------- compliance
def _customer_id(payload: dict) -> int | None:
    customer = payload.get("customer")
    cid = customer.get("id") if isinstance(customer, dict) else None
    try:
        return int(cid) if cid is not None else None
    except (TypeError, ValueError):
        return None


def _int_list(values) -> list[int]:
    out = []
    for v in values or []:
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            continue
    return out


def _customer_column(model):
    return model.__table__.c.customer_id if "customer_id" in model.__table__.c else model.__table__.c.id


def _customer_rows(s, shop_id: int, customer_id: int) -> dict[str, int]:
    from sqlalchemy import func

    counts = {}
    for model in CUSTOMER_KEYED:
        t = model.__table__
        counts[t.name] = s.scalar(select(func.count()).select_from(t).where(
            t.c.shop_id == shop_id, _customer_column(model) == customer_id)) or 0
    counts["orders"] = s.scalar(select(func.count()).select_from(Order).where(
        Order.shop_id == shop_id, Order.customer_id == customer_id)) or 0
    return counts


def _record(s, d, shop: Shop | None, customer_id: int | None, result: dict) -> ComplianceRequest:
    req = ComplianceRequest(shop_id=shop.id if shop else None, shop_domain=d.shop_domain, topic=d.topic,
                            customer_id=customer_id, received_at=d.received_at, completed_at=utcnow(),
                            result=result)
    s.add(req)
    return req


def _data_request(s, d, shop: Shop | None, payload) -> Outcome:
    cid = _customer_id(payload)
    data_request = payload.get("data_request") if isinstance(payload.get("data_request"), dict) else {}
    result = {"shop_known": shop is not None, "data_request_id": data_request.get("id"),
              "orders_requested": len(payload.get("orders_requested") or [])}
    if shop is not None and cid is not None:
        # What we hold on this customer, per table (ids and numbers only; no contact details are stored).
        result["rows_held"] = _customer_rows(s, shop.id, cid)
    _record(s, d, shop, cid, result)
    return Outcome("processed", compliance=d.topic)


def _customer_redact(s, d, shop: Shop | None, payload) -> Outcome:
    cid = _customer_id(payload)
    if cid is None:
        return Outcome("invalid", error="customers/redact without customer.id")
    result: dict = {"shop_known": shop is not None, "deleted": {}}
    if shop is not None:
        # Same per-shop lock as the order job: the customer's stats and counts must not be rewritten under us.
        lock_shop(s, shop.id)
        from workers.sequential_jobs import forget_customer   # before unlinking: their orders still name them
        result["sequential_removed"] = forget_customer(s, shop.id, cid)
        for model in CUSTOMER_KEYED:
            t = model.__table__
            res = s.execute(delete(t).where(t.c.shop_id == shop.id, _customer_column(model) == cid))
            result["deleted"][t.name] = res.rowcount or 0
        order_ids = _int_list(payload.get("orders_to_redact"))
        cond = Order.customer_id == cid
        if order_ids:
            cond = cond | Order.id.in_(order_ids)
        unlinked = 0
        for order in s.scalars(select(Order).where(Order.shop_id == shop.id, cond)):
            # The stored contribution names the customer too; the order stays as a guest order (its basket still
            # counts for product rules, as Shopify keeps the order itself).
            order.customer_id = None
            if order.contribution and order.contribution.get("customer_id") is not None:
                order.contribution = {**order.contribution, "customer_id": None}
            unlinked += 1
        result["orders_unlinked"] = unlinked
        result["pending_deliveries_scrubbed"] = _scrub_pending_deliveries(s, shop.id, cid, d.id)
    _record(s, d, shop, cid, result)
    return Outcome("processed", compliance=d.topic, **result)


def _scrub_pending_deliveries(s, shop_id: int, customer_id: int, own_id: int) -> int:
    """Deliveries not yet consumed by the analytics job must not bring the customer back: customer topics for
    them are dropped; order payloads lose their `customer` (the order stays, as a guest order)."""
    scrubbed = 0
    rows = s.scalars(select(WebhookDelivery).where(
        WebhookDelivery.shop_id == shop_id, WebhookDelivery.id != own_id,
        WebhookDelivery.status.in_(("received", PENDING_ANALYTICS)), WebhookDelivery.body.is_not(None),
        WebhookDelivery.body.contains(str(customer_id)),
    ))
    for row in rows:
        try:
            payload = json.loads(row.body)
        except ValueError:
            continue
        if not isinstance(payload, dict):
            continue
        if row.topic.startswith("customers/") and str(payload.get("id")) == str(customer_id):
            row.status, row.body, row.error = "ignored", None, "customer redacted"
            row.processed_at = utcnow()
            scrubbed += 1
        elif _customer_id(payload) == customer_id:
            payload["customer"] = None
            row.body = json.dumps(payload)
            scrubbed += 1
    return scrubbed


def _shop_redact(s, d, shop: Shop | None, payload) -> Outcome:
    if shop is not None and _stale(d, shop):
        return Outcome("ignored", error="the shop reinstalled after this redact was triggered")
    domain = d.shop_domain
    result: dict = {"shop_known": shop is not None}
    s.flush()                  # the delivery's attempt counter, before its row goes
    s.expunge(d)
    if shop is not None:
        s.delete(shop)         # ON DELETE CASCADE removes every shop-keyed row (incl. its deliveries)
        s.flush()
    # Rows not keyed by the shop id: deliveries recorded before install / as unknown_shop, and earlier
    # compliance requests (they name customers). One audit line of this redact is kept, without shop_id.
    result["deliveries_deleted"] = s.execute(
        delete(WebhookDelivery.__table__).where(WebhookDelivery.__table__.c.shop_domain == domain)).rowcount or 0
    result["compliance_requests_deleted"] = s.execute(
        delete(ComplianceRequest.__table__).where(ComplianceRequest.__table__.c.shop_domain == domain)
    ).rowcount or 0
    s.add(ComplianceRequest(shop_id=None, shop_domain=domain, topic="shop/redact", customer_id=None,
                            received_at=d.received_at, completed_at=utcnow(), result=result))
    return Outcome("deleted", compliance="shop/redact", **result)


COMPLIANCE_HANDLERS = {
    "customers/data_request": _data_request,
    "customers/redact": _customer_redact,
    "shop/redact": _shop_redact,
}


# --------------------------------------------------------------------------------------------- failures
def _record_failure(delivery_id: int, exc: Exception) -> None:
    try:
        with transaction() as s:
            d = s.get(WebhookDelivery, delivery_id)
            if d is None or d.status != "received":
                return
            d.attempts = (d.attempts or 0) + 1
            d.error = f"{type(exc).__name__}: {exc}"[:2000]
            if d.attempts >= MAX_ATTEMPTS:
                d.status = "failed"
    except Exception:  # never hide the original error
        log.exception("could not record the failure of delivery %s", delivery_id)
