"""Blueprint 'webhooks': verify, record, enqueue, answer 200. No analytics work happens here.

POST /webhooks and /webhooks/{app,orders,customers,bulk,compliance} (the URIs of shopify.app.toml). Any topic
is accepted on any of them (Shopify decides where it sends what); other methods get 405 from Flask.

Rules, in order:
1. Missing/oversized X-Shopify-Topic, -Hmac-Sha256, -Shop-Domain, -Webhook-Id or a malformed shop domain -> 400.
2. HMAC of the raw body under the client secret does not match -> 401; nothing is stored.
3. Every authentic delivery is recorded as a WebhookDelivery row *before* we answer:
   - the same (shop_domain, webhook_id) again (Shopify retry) -> 200, nothing new stored: the unique
     constraint decides, so two concurrent copies cannot both be stored (the loser's insert fails);
   - body not a JSON object -> status 'invalid' (+ error), not enqueued;
   - shop not installed here -> status 'unknown_shop', body NOT kept (personal data of a shop we have no
     relationship with), not enqueued. Compliance topics are the exception: recorded 'received' and enqueued
     so the worker records the ComplianceRequest and erases whatever we may still hold for that domain;
   - another delivery of the same event (shop_domain, topic, X-Shopify-Event-Id) already recorded -> stored
     as status 'duplicate' without its body (audit trail), not enqueued. Two copies of one event racing each
     other can both be enqueued; that is harmless because processing is idempotent;
   - an order topic (orders/*, refunds/create) of an installed shop -> status 'pending_analytics' with its
     body: handed straight to the shop's coalescing order job, woken with one Redis SET NX
     (shopify_app.queues.wake_order_job) instead of one RQ job per delivery — the hot path under load;
   - otherwise status 'received', then `workers.ingest.process_delivery(id)` is enqueued on the webhooks
     queue with job_id `delivery-{id}`.
4. Redis unavailable while enqueueing -> still 200 (the row is the record); `sweep_stuck_deliveries`
   re-enqueues rows left 'received' and wakes the order job of shops with old 'pending_analytics' rows.
"""
from __future__ import annotations

import json
import logging

from flask import Blueprint, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shopify_app.models import Shop, WebhookDelivery
from shopify_app.queues import WEBHOOKS, enqueue, wake_order_job
from shopify_app.shopify.webhooks import ORDER_TOPICS, parse_webhook_headers, verify_webhook_hmac
from shopify_app.web import app_config, db

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

KINDS = ("app", "orders", "customers", "bulk", "compliance")
PROCESS_JOB = "workers.ingest.process_delivery"
PENDING_ANALYTICS = "pending_analytics"     # the status the order job consumes (workers.order_jobs)
MAX_INVALID_BODY_CHARS = 65_536


def delivery_job_id(delivery_id: int) -> str:
    return f"delivery-{delivery_id}"


def enqueue_delivery(config, delivery_id: int) -> bool:
    """Enqueue the processing job; False (logged) when Redis is unavailable - the sweeper catches up."""
    try:
        enqueue(config, WEBHOOKS, PROCESS_JOB, delivery_id, job_id=delivery_job_id(delivery_id))
        return True
    except Exception as exc:  # redis down, timeout, ...: the row is the record
        log.warning("webhook delivery %s recorded but not enqueued (%s: %s); the sweeper will retry",
                    delivery_id, type(exc).__name__, exc)
        return False


def _decode_body(raw: bytes) -> tuple[str, dict | None, str | None]:
    """(text, payload, error): payload is None and error set when the body is not a JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", "replace"), None, f"body is not UTF-8: {exc}"
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return text, None, f"body is not JSON: {exc}"
    if not isinstance(payload, dict):
        return text, None, f"body is JSON {type(payload).__name__}, not an object"
    return text, payload, None


def _answer(status: str, code: int = 200, **extra):
    resp = jsonify(status=status, **extra)
    resp.status_code = code
    return resp


@bp.post("/webhooks")
@bp.post(f"/webhooks/<any({', '.join(KINDS)}):kind>")
def receive(kind: str | None = None):
    cfg = app_config()
    raw = request.get_data(cache=False)
    headers = parse_webhook_headers(request.headers)

    errors = headers.errors()
    if errors:
        return _answer("bad_request", 400, errors=errors)
    if not verify_webhook_hmac(raw, headers.hmac, cfg.api_secret):
        log.warning("webhook with a bad HMAC rejected (shop %s, topic %s)", headers.shop_domain, headers.topic)
        return _answer("unauthorized", 401)

    session = db()
    shop = session.scalar(select(Shop).where(Shop.domain == headers.shop_domain))
    text, payload, error = _decode_body(raw)

    row = WebhookDelivery(
        shop_id=shop.id if shop else None, shop_domain=headers.shop_domain, topic=headers.topic,
        webhook_id=headers.webhook_id, event_id=headers.event_id, api_version=headers.api_version,
        triggered_at=headers.triggered_at_utc, status="received", body=text, attempts=0,
    )
    if error:
        # Kept for diagnosis, made storable: PostgreSQL text cannot hold NUL; garbage is capped.
        row.status, row.error = "invalid", error
        row.body = text.replace("\x00", "\ufffd")[:MAX_INVALID_BODY_CHARS]
    elif shop is None and not headers.is_compliance:
        row.status, row.error, row.body = "unknown_shop", "shop is not installed", None
    elif headers.event_id and session.scalar(
        select(WebhookDelivery.id).where(
            WebhookDelivery.shop_domain == headers.shop_domain, WebhookDelivery.topic == headers.topic,
            WebhookDelivery.event_id == headers.event_id, WebhookDelivery.webhook_id != headers.webhook_id,
            WebhookDelivery.status != "invalid",
        ).limit(1)
    ) is not None:
        row.status, row.error, row.body = "duplicate", f"event {headers.event_id} already recorded", None
    elif shop is not None and headers.topic in ORDER_TOPICS and shop.status != "uninstalled":
        row.status = PENDING_ANALYTICS

    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        log.info("webhook %s from %s already recorded", headers.webhook_id, headers.shop_domain)
        return _answer("already_recorded")

    if row.status == "received":
        queued = enqueue_delivery(cfg, row.id)
    elif row.status == PENDING_ANALYTICS:
        queued = _wake(cfg, row.shop_id)
    else:
        queued = False
    return _answer(row.status, delivery_id=row.id, queued=queued)


def _wake(cfg, shop_id: int) -> bool:
    try:
        return wake_order_job(cfg, shop_id)
    except Exception as exc:  # redis down: the row is the record; the sweeper wakes the shop's job later
        log.warning("order delivery of shop %s recorded but its job not woken (%s: %s)", shop_id,
                    type(exc).__name__, exc)
        return False
