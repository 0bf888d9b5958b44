"""Blueprint 'webhooks': verify, record, enqueue, answer 200. No analytics work happens here.

POST /webhooks and /webhooks/{app,orders,customers,bulk,compliance} (the URIs of shopify.app.toml). Any topic
is accepted on any of them (Shopify decides where it sends what); other methods get 405 from Flask.

Rules, in order:
1. Missing/oversized X-Shopify-Topic, -Hmac-Sha256, -Shop-Domain, -Webhook-Id or a malformed shop domain -> 400.
2. HMAC of the raw body under the client secret does not match -> 401; nothing is stored.
3. Every authentic delivery is recorded as a WebhookDelivery row *before* we answer:
   - the same delivery again (Shopify retry: same X-Shopify-Webhook-Id and Event-Id) -> 200 'already_recorded',
     nothing new stored: the unique key (shop_domain, event_id, webhook_id) decides (INSERT .. ON CONFLICT DO
     NOTHING), so two concurrent copies cannot both be stored;
   - body not a JSON object -> status 'invalid' (+ error), not enqueued;
   - shop not installed here -> status 'unknown_shop', body NOT kept (personal data of a shop we have no
     relationship with), not enqueued. Compliance topics are the exception: recorded 'received' and enqueued
     so the worker records the ComplianceRequest and erases whatever we may still hold for that domain;
   - another delivery of the same event (shop_domain, topic, X-Shopify-Event-Id) already recorded -> stored
     as status 'duplicate' without its body (audit trail), not enqueued. Two copies of one event racing each
     other from two processes can both be enqueued; that is harmless because processing is idempotent;
   - an order topic (orders/*, refunds/create) of an installed shop -> status 'pending_analytics' with its
     body: handed straight to the shop's coalescing order job, woken with one Redis SET NX
     (shopify_app.queues.wake_order_job) instead of one RQ job per delivery — the hot path under load. The wake
     is made by the process's waker thread (intake_batch.Waker) *after* the answer, which therefore says
     `"wake": "background"` instead of `"queued"`: the committed row is the record, the wake only liveness;
   - otherwise status 'received', then `workers.ingest.process_delivery(id)` is enqueued on the webhooks
     queue with job_id `delivery-{id}`.
4. Redis unavailable while enqueueing -> still 200 (the row is the record; `"queued": false` for a 'received'
   row, a failed background wake is logged); `sweep_stuck_deliveries` re-enqueues rows left 'received' and wakes
   the order job of shops with old 'pending_analytics' rows.

Throughput: the request thread only verifies and parses; recording is a *group commit* (web/intake_batch.py):
the deliveries of all concurrently waiting request threads of a process are written in one transaction
(web/intake.py: a few statements per batch, whatever its size), and each request still answers only after its
batch committed; the order job wakes are then made in the background, merged per shop. Numbers:
docs/platform.md, "Intake under load".
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from typing import Sequence

from flask import Blueprint, current_app, jsonify, request

from shopify_app.db import get_engine, write_turn
from shopify_app.models import utcnow
from shopify_app.queues import WEBHOOKS, enqueue, wake_order_job
from shopify_app.shopify.webhooks import parse_webhook_headers, verify_webhook_hmac
from shopify_app.web.intake import (  # noqa: F401 - PENDING_ANALYTICS, MAX_INVALID_BODY_CHARS: part of this API
    ALREADY_RECORDED, MAX_INVALID_BODY_CHARS, PENDING_ANALYTICS, Delivery, Outcome, record_batch,
)
from shopify_app.web.intake_batch import GroupCommit, Lanes, Waker

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

KINDS = ("app", "orders", "customers", "bulk", "compliance")
PROCESS_JOB = "workers.ingest.process_delivery"
# The waker's rounds start at least this far apart: under load the batches of a few ms share one Redis call per
# shop; an idle shop's first wake is made at once; a later one waits at most this long, against an order job that
# lingers 50 ms for its next batch and takes 10-100 ms per batch. 2 ms still made 0.28 rounds per delivery under
# wrk (each a Redis round trip in the waker thread plus ~4 thread switches: ~55 us of server CPU per delivery);
# 20 ms makes <= 50 rounds/s per process.
WAKE_INTERVAL_S = 0.020
# Consecutive group-commit batches of one process under one taking of the SQLite write turn (intake_batch.py). More
# than one keeps the page cache valid between them (another process's write drops it), but the other process's
# requests all wait meanwhile and its core idles. Since a leader takes its batch only once it holds the turn (what
# queued while it waited joins it), alternating after every batch is better: 6 alternated pairs of the intake
# bench (stop 16), 1 vs 4: ratio 0.624 vs 0.572 (each pair in favour of 1), p99 12.6-14.2 vs 15.3-18.7 ms, the
# same CPU per request.
TURN_BATCHES = 1


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


def _decode_body(raw: bytes) -> tuple[str, str | None]:
    """(text, error): error set when the body is not a JSON object.

    A UTF-8 body shaped like a JSON object (`{ ... }`, no NUL) is accepted without parsing: the job that consumes
    the row parses it anyway and marks it 'invalid' when it does not parse (workers.order_jobs, workers.ingest),
    and json.loads of a 15-25 KB order was about a tenth of the intake's CPU per request. Anything else gets the
    full check here, so obvious garbage is recorded 'invalid' at once and never enqueued."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", "replace"), f"body is not UTF-8: {exc}"
    # Shopify's bodies start with "{" and end with "}": checked without strip()'s copy of the whole body.
    shape = text if text[:1] == "{" and text[-1:] == "}" else text.strip()
    if shape.startswith("{") and shape.endswith("}") and "\x00" not in text:
        return text, None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return text, f"body is not JSON: {exc}"
    if not isinstance(payload, dict):
        return text, f"body is JSON {type(payload).__name__}, not an object"
    return text, None


PATHS = ("/webhooks", *(f"/webhooks/{kind}" for kind in KINDS))


def handle_delivery(flask_app, raw: bytes, header_map) -> tuple[int, dict]:
    """The intake rules (module docstring) for one request: (HTTP status, JSON answer). No Flask request needed:
    called by the WSGI fast path (intake_wsgi.py) and by the Flask view below."""
    cfg = flask_app.config["APP_CONFIG"]
    headers = parse_webhook_headers(header_map)
    errors = headers.errors()
    if errors:
        return 400, {"status": "bad_request", "errors": errors}
    if not verify_webhook_hmac(raw, headers.hmac, cfg.api_secret):
        log.warning("webhook with a bad HMAC rejected (shop %s, topic %s)", headers.shop_domain, headers.topic)
        return 401, {"status": "unauthorized"}

    text, error = _decode_body(raw)
    delivery = Delivery(
        shop_domain=headers.shop_domain, topic=headers.topic, webhook_id=headers.webhook_id,
        event_id=headers.event_id, api_version=headers.api_version, triggered_at=headers.triggered_at_utc,
        received_at=utcnow(), body=text, error=error,
    )
    result, queued = _writer(flask_app).submit(delivery)
    if result.status == ALREADY_RECORDED:
        log.debug("webhook %s from %s already recorded", headers.webhook_id, headers.shop_domain)
        return 200, {"status": ALREADY_RECORDED}
    if queued is None:       # the shop's order job is woken in the background: not known yet, so not claimed
        return 200, {"status": result.status, "delivery_id": result.delivery_id, "wake": "background"}
    return 200, {"status": result.status, "delivery_id": result.delivery_id, "queued": queued}


@bp.post("/webhooks")
@bp.post(f"/webhooks/<any({', '.join(KINDS)}):kind>")
def receive(kind: str | None = None):
    """Reached only when the WSGI fast path is not in front of the app (it answers these POSTs itself)."""
    code, answer = handle_delivery(current_app, request.get_data(cache=False), request.headers)
    resp = jsonify(answer)
    resp.status_code = code
    return resp


@bp.record_once
def _install_fast_path(state) -> None:
    from shopify_app.web.intake_wsgi import install

    install(state.app, PATHS, handle_delivery)


# --------------------------------------------------------------------------------------------- group commit
_writers_guard = threading.Lock()


def _writer(flask_app) -> GroupCommit | Lanes:
    return _intake(flask_app)[1]


def intake_waker(flask_app) -> Waker:
    """The process's background waker of order jobs (tests wait for it with `.wait_idle()`)."""
    return _intake(flask_app)[2]


def _intake(flask_app) -> tuple[int, GroupCommit | Lanes, Waker]:
    """(pid, group-commit writer, waker) of the app in this process (created after a fork, never shared across
    one: a thread does not survive it)."""
    ext = flask_app.extensions
    intake = ext.get("webhook_intake")
    if intake is None or intake[0] != os.getpid():
        with _writers_guard:
            intake = ext.get("webhook_intake")
            if intake is None or intake[0] != os.getpid():
                cfg = flask_app.config["APP_CONFIG"]
                waker = Waker(lambda shop_id: _wake(cfg, shop_id), min_interval=WAKE_INTERVAL_S)
                # A clean exit (gunicorn's graceful stop) gives the wakes asked for last a moment to be made; a
                # kill leaves them to the sweeper.
                atexit.register(waker.wait_idle, 2.0)
                url = cfg.sqlalchemy_url
                turn = write_turn(url)          # SQLite's write turn (None elsewhere), taken per batch

                def lane(k: int) -> GroupCommit:
                    return GroupCommit(lambda items: record_batch(url, items, turn_held=turn is not None, lane=k),
                                       lambda items, outcomes: _hand_over(cfg, waker, outcomes),
                                       turn=turn, turn_batches=TURN_BATCHES)

                # INTAKE_PG_BATCHES (Config.intake_pg_batches, checked at startup): batches one process may write
                # at once on PostgreSQL, each on its own connection (intake_batch.Lanes). A PostgreSQL batch mostly
                # waits for its commit's WAL flush; with one in flight a process's intake is bounded by that latency.
                # A second batch starts only when Lanes.spill requests are queued behind the first. SQLite: always
                # one, its writes serialize on the database's write lock. Numbers: docs/platform.md, stop 14.
                n = 1 if get_engine(url).dialect.name == "sqlite" else cfg.intake_pg_batches
                writer = lane(0) if n == 1 else Lanes(lane, n)
                intake = ext["webhook_intake"] = (os.getpid(), writer, waker)
    return intake


def _hand_over(cfg, waker: Waker, outcomes: Sequence[Outcome]) -> list[tuple[Outcome, bool | None]]:
    """After the batch committed: each shop with pending order rows is handed to the waker (None: woken in the
    background, after the answer); one RQ job per 'received' row, enqueued here (True/False: known before the
    answer). After the first Redis failure the rest of the batch is not tried (each try may wait for the connect
    timeout); the sweeper catches up."""
    redis_ok = True
    asked: set[int] = set()
    out: list[tuple[Outcome, bool | None]] = []
    for o in outcomes:
        queued: bool | None = False
        if o.status == PENDING_ANALYTICS:
            if o.shop_id not in asked:
                asked.add(o.shop_id)
                waker.request(o.shop_id)
            queued = None
        elif redis_ok and o.status == "received":
            queued = redis_ok = enqueue_delivery(cfg, o.delivery_id)
        out.append((o, queued))
    return out


def _wake(cfg, shop_id: int) -> bool:
    try:
        return wake_order_job(cfg, shop_id)
    except Exception as exc:  # redis down: the row is the record; the sweeper wakes the shop's job later
        log.warning("order delivery of shop %s recorded but its job not woken (%s: %s)", shop_id,
                    type(exc).__name__, exc)
        return False
