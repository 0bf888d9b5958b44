"""Webhook payloads (REST-style JSON shaped on Shopify's official samples) and their delivery.

Delivery semantics copied from Shopify: POST JSON to the subscription URI with X-Shopify-Topic, -Hmac-Sha256
(base64 HMAC-SHA256 of the raw body with the app's client secret), -Shop-Domain, -API-Version, -Webhook-Id,
-Event-Id, -Triggered-At and -Name (if the subscription has a name). Any non-2xx (or no answer within
`timeout`) is retried on `retry_schedule` (Shopify: 8 retries over 4 hours). At-least-once: with
`duplicate_probability` a delivery is sent twice (same Webhook-Id and Event-Id, which is what an app must
dedupe on). `shuffle=True` delivers out of order (sync mode: buffered until `flush()`; background mode: each
batch waiting in the queue is shuffled).

Mode `sync=True` (default) delivers inside the call that caused the event -- deterministic for tests, retries
sleep in place, so give tests a short schedule. `sync=False` runs `threads` background delivery threads (default
1); with several, deliveries go out concurrently and finish in any order, as Shopify's do. Every attempt is
recorded in `dispatcher.attempts` and passed to `on_attempt` (if set) as it completes. The default transport keeps
one HTTP keep-alive session per delivering thread, so a stream of deliveries does not open a connection each.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hmac
import http.client
import heapq
import itertools
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

from .models import ZERO, iso, money

log = logging.getLogger("shopify_app.devstore.webhooks")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Shopify: 8 retries over 4 hours after the first attempt (intervals grow).
SHOPIFY_RETRY_SCHEDULE = (10, 30, 60, 300, 900, 1800, 3600, 7500)
SYNC_RETRY_SCHEDULE = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
_SEP = (",", ":")              # webhook bodies: compact JSON


@dataclass
class DeliveryMode:
    sync: bool = True
    duplicate_probability: float = 0.0
    shuffle: bool = False
    # None: Shopify's schedule in background mode; in sync mode 8 quick exponential retries (~2.5 s in all),
    # because sync retries sleep inside the caller.
    retry_schedule: tuple | None = None
    timeout: float = 5.0
    seed: int | None = None
    transport: object = None      # callable(url, headers, body, timeout) -> status; default: keep-alive POST
    threads: int = 1              # background mode: concurrent delivery threads
    on_attempt: object = None     # callable(Attempt), called by the delivering thread after each attempt


@dataclass
class Attempt:
    topic: str
    shop: str
    url: str
    webhook_id: str
    event_id: str
    attempt: int
    status: int | None
    error: str | None
    headers: dict
    body: bytes
    at: float
    duplicate: bool = False
    # The payload's top-level "id" (the order's, the customer's...), so a listener need not parse a 25 KB body
    # to know which record an attempt was about. None when the payload has no id.
    resource_id: int | None = None

    def json(self):
        return json.loads(self.body)


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    topic: str = field(compare=False)
    shop: str = field(compare=False)
    url: str = field(compare=False)
    headers: dict = field(compare=False)
    body: bytes = field(compare=False)
    attempt: int = field(compare=False, default=1)
    duplicate: bool = field(compare=False, default=False)
    resource_id: int | None = field(compare=False, default=None)


class EventPayload:
    """One event's payload, built at most once, and its JSON body and HMAC computed once per field selection and
    app secret. Events about the same state of a record share one (a new paid order's orders/create and
    orders/paid carry the same order JSON), so the stand-in builds and signs ~25 KB once instead of per topic.

    `encode` (optional) writes the full body (no include_fields) straight from the record, byte-identical to
    json.dumps of `build()` but without building the dict (order_body); `resource_id` (optional) is the
    payload's top-level id when known without a build."""

    __slots__ = ("_build", "_encode", "_rid", "_data", "_bodies", "_signatures")

    def __init__(self, build, encode=None, resource_id: int | None = None):
        self._build = build
        self._encode = encode
        self._rid = resource_id
        self._data = None
        self._bodies: dict = {}
        self._signatures: dict = {}

    def data(self):
        if self._data is None:
            self._data = self._build()
        return self._data

    def resource_id(self) -> int | None:
        if self._rid is not None:
            return self._rid
        data = self.data()
        rid = data.get("id") if isinstance(data, dict) else None
        return rid if isinstance(rid, int) else None

    def body(self, include_fields=()) -> bytes:
        key = tuple(include_fields or ())
        body = self._bodies.get(key)
        if body is None:
            if not key and self._encode is not None:
                body = self._bodies[key] = self._encode()
                return body
            data = self.data()
            if key:
                data = {k: v for k, v in data.items() if k in key}
            body = self._bodies[key] = json.dumps(data, separators=_SEP).encode()
        return body

    def signature(self, body: bytes, secret: str) -> str:
        key = (id(body), secret)       # bodies are kept alive by self._bodies, so their ids stay unique
        sig = self._signatures.get(key)
        if sig is None:
            sig = self._signatures[key] = sign(body, secret)
        return sig


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.digest(secret.encode(), body, "sha256")).decode()


# Webhook-Id / Event-Id: random UUID v4 strings like uuid.uuid4()'s, from a generator seeded by os.urandom (and
# reseeded in a forked child) instead of an os.urandom call and a UUID object each (three ids per order webhook
# pair at 400 webhooks/s). Ids need to be unique, not secret.
_id_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _id_random.seed(os.urandom(32)))
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)          # version 4, RFC 4122 variant


def new_id() -> str:
    h = "%032x" % ((_id_random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@lru_cache(maxsize=1024)
def _delivery_url(app_url: str, uri: str) -> str:
    """A subscription's URI: relative ones are the app's URL + the path (shopify.app.toml's uri = "/webhooks")."""
    return urljoin(app_url.rstrip("/") + "/", uri.lstrip("/")) if uri.startswith("/") else uri


def verify(body: bytes, secret: str, header_value: str) -> bool:
    return hmac.compare_digest(sign(body, secret), header_value or "")


_connections = threading.local()
_RECONNECT = (http.client.RemoteDisconnected, http.client.CannotSendRequest, ConnectionResetError, BrokenPipeError)


def _http_transport(url, headers, body, timeout) -> int:
    """POST on this thread's keep-alive connection to the app (http.client: a fraction of requests' CPU per call,
    which matters when one Python process plays Shopify at 400 deliveries/s). A new TCP connection per delivery
    is what first made the stand-in's sender, not the app, the bottleneck of bench (d). A connection the server
    closed while idle is reopened once and the delivery sent again (deliveries are at-least-once anyway)."""
    parts = urlsplit(url)
    key = (parts.scheme, parts.netloc)
    pool = getattr(_connections, "pool", None)
    if pool is None:
        pool = _connections.pool = {}
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    while True:
        conn = pool.get(key)
        reused = conn is not None
        if conn is None:
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = pool[key] = cls(parts.netloc, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
        except _RECONNECT:
            conn.close()
            pool.pop(key, None)
            if reused:
                continue            # the idle keep-alive connection was closed by the server: once more, fresh
            raise
        except BaseException:
            conn.close()
            pool.pop(key, None)
            raise
        if resp.will_close:
            conn.close()
            pool.pop(key, None)
        return resp.status


class WebhookDispatcher:
    def __init__(self, store, mode: DeliveryMode | None = None):
        self.store = store
        self.mode = mode or DeliveryMode()
        self.rng = random.Random(self.mode.seed)
        self.attempts: list[Attempt] = []
        self._seq = itertools.count()
        self._buffer: list[_Job] = []
        self._heap: list[_Job] = []
        # Delivery threads wait on _cv (new or due work); wait_idle waits on _idle (nothing queued or in flight).
        # Two conditions on one lock: a notify for new work never lands on a wait_idle caller, and a finished
        # delivery does not wake every idle delivery thread (16 of them at 400 deliveries/s is GIL churn).
        lock = threading.RLock()
        self._cv = threading.Condition(lock)
        self._idle = threading.Condition(lock)
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._inflight = 0
        self._local = threading.local()
        self._pump = None                 # HttpPump of the pump thread (_uses_pump)
        self._pump_sleeping = False       # the pump thread is (about to be) in its poll: _submit must wake it

    def _schedule(self) -> tuple:
        if self.mode.retry_schedule is not None:
            return tuple(self.mode.retry_schedule)
        return SYNC_RETRY_SCHEDULE if self.mode.sync else SHOPIFY_RETRY_SCHEDULE

    def configure(self, **changes) -> DeliveryMode:
        for k, v in changes.items():
            setattr(self.mode, k, v)
        if "seed" in changes:
            self.rng = random.Random(changes["seed"])
        return self.mode

    # ------------------------------------------------------------------------------------------------ events
    def subscribers(self, shop: str, topic: str, api_key: str | None = None) -> list:
        sh = self.store.shops.get(shop)
        if sh is None:
            return []
        return [w for w in sh.webhook_subscriptions.values()
                if w.topic == topic and (api_key is None or w.api_key == api_key)]

    @staticmethod
    def payload(build) -> EventPayload:
        """Wrap a payload builder so several emits of the same record state share one build, body and HMAC."""
        return build if isinstance(build, EventPayload) else EventPayload(build)

    def emit(self, shop: str, topic: str, build, api_key: str | None = None, triggered_at: dt.datetime | None = None):
        """One event: builds the payload only if someone subscribed, then one delivery per subscription.
        `build` is a callable returning the payload, or an EventPayload shared with other topics' emits."""
        subs = self.subscribers(shop, topic, api_key)
        if not subs:
            return None
        payload = self.payload(build)
        event_id = new_id()
        trig = iso(triggered_at or dt.datetime.now(dt.timezone.utc))
        for w in subs:
            app = self.store.apps.get(w.api_key)
            if app is None:
                continue
            body = payload.body(w.include_fields)
            url = _delivery_url(app.app_url, w.uri)
            headers = {"Content-Type": "application/json", "X-Shopify-Topic": topic,
                       "X-Shopify-Hmac-Sha256": payload.signature(body, app.api_secret),
                       "X-Shopify-Shop-Domain": shop,
                       "X-Shopify-API-Version": w.api_version, "X-Shopify-Webhook-Id": new_id(),
                       "X-Shopify-Event-Id": event_id, "X-Shopify-Triggered-At": trig,
                       "User-Agent": "Shopify-Captain-Hook"}
            if w.name:
                headers["X-Shopify-Name"] = w.name
            rid = payload.resource_id()
            jobs = [_Job(time.monotonic(), next(self._seq), topic, shop, url, headers, body, resource_id=rid)]
            if self.mode.duplicate_probability and self.rng.random() < self.mode.duplicate_probability:
                jobs.append(_Job(time.monotonic(), next(self._seq), topic, shop, url, dict(headers), body,
                                 duplicate=True, resource_id=rid))
            for job in jobs:
                self._submit(job)
        return event_id

    # ------------------------------------------------------------------------------------------------ delivery
    @contextlib.contextmanager
    def deferred(self):
        """Hold sync deliveries made inside the block until it ends. The GraphQL endpoint runs resolvers under
        the store lock; delivering there would deadlock an app whose webhook handler calls the Admin API back."""
        outer = getattr(self._local, "jobs", None)
        if outer is not None:
            yield
            return
        self._local.jobs = []
        try:
            yield
        finally:
            jobs, self._local.jobs = self._local.jobs, None
            for job in jobs:
                self._submit(job)

    def _submit(self, job: _Job) -> None:
        held = getattr(self._local, "jobs", None)
        if held is not None and self.mode.sync:
            held.append(job)
            return
        if self.mode.sync:
            if self.mode.shuffle:
                self._buffer.append(job)
            else:
                self._deliver_with_retries(job)
            return
        with self._cv:
            self._ensure_thread()
            if self._pump_sleeping and self._start_here(job):
                return
            heapq.heappush(self._heap, job)
            self._cv.notify()
            if self._pump_sleeping:
                self._pump_sleeping = False
                self._pump.wake()

    def _start_here(self, job: _Job) -> bool:
        """Pump mode, with the pump thread in its poll (caller holds the lock): start the request from this
        thread (a non-blocking send) instead of waking the pump thread to do it; the answer wakes it anyway.
        One thread wake-up less per delivery, which on a VM costs more CPU than the delivery's own Python. Not
        for https (a blocking send), in shuffle mode (the heap picks the order), with due jobs waiting (they go
        first) or with every connection busy."""
        pump = self._pump
        if (self.mode.shuffle or not job.url.startswith("http://") or pump.free() <= 0
                or (self._heap and self._heap[0].due <= job.due)):
            return False
        self._inflight += 1
        pump.start(job, job.url, job.headers, job.body, self.mode.timeout)
        if pump.done:                       # failed at once (e.g. refused): the pump thread reports it
            self._pump_sleeping = False
            pump.wake()
        return True

    def flush(self) -> None:
        """Sync + shuffle mode: deliver everything buffered, in random order."""
        jobs, self._buffer = self._buffer, []
        self.rng.shuffle(jobs)
        for job in jobs:
            self._deliver_with_retries(job)

    def _attempt(self, job: _Job) -> bool:
        transport = self.mode.transport or _http_transport
        status, error = None, None
        try:
            status = int(transport(job.url, job.headers, job.body, self.mode.timeout))
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer counts as a failed attempt
            error = f"{type(exc).__name__}: {exc}"
        return self._record(job, status, error)

    def _record(self, job: _Job, status: int | None, error: str | None) -> bool:
        attempt = Attempt(job.topic, job.shop, job.url, job.headers["X-Shopify-Webhook-Id"],
                          job.headers["X-Shopify-Event-Id"], job.attempt, status, error, dict(job.headers), job.body,
                          time.time(), job.duplicate, job.resource_id)
        self.attempts.append(attempt)     # list.append is atomic: delivery threads share the list
        if self.mode.on_attempt is not None:
            self.mode.on_attempt(attempt)
        ok = status is not None and 200 <= status < 300
        if not ok:
            log.info("webhook %s to %s failed (attempt %d): %s", job.topic, job.url, job.attempt, error or status)
        return ok

    def _deliver_with_retries(self, job: _Job) -> None:
        while True:
            if self._attempt(job):
                return
            if job.attempt > len(self._schedule()):
                log.warning("webhook %s to %s dropped after %d attempts", job.topic, job.url, job.attempt)
                return
            time.sleep(self._schedule()[job.attempt - 1])
            job.attempt += 1

    def _uses_pump(self) -> bool:
        """Several concurrent deliveries over the default HTTP transport: one pump thread multiplexing that many
        connections (http_pump.py) instead of that many blocking threads fighting over the GIL. A custom
        transport is a blocking callable: it keeps its threads."""
        return self.mode.transport is None and int(self.mode.threads) > 1

    def _ensure_thread(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        if not self._threads:
            self._stop = False
        if self._uses_pump():
            if not self._threads:
                from .http_pump import HttpPump

                self._pump = HttpPump(int(self.mode.threads), _http_transport)
                t = threading.Thread(target=self._run_pump, args=(self._pump,), name="devstore-webhooks-pump",
                                     daemon=True)
                self._threads.append(t)
                t.start()
            return
        while len(self._threads) < max(1, int(self.mode.threads)):
            t = threading.Thread(target=self._run, name=f"devstore-webhooks-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()

    def _take_due(self, now: float, limit: int) -> list:
        """Up to `limit` due jobs off the heap (caller holds the lock): the oldest first, or any of the due ones
        in shuffle mode."""
        batch = []
        while self._heap and self._heap[0].due <= now and len(batch) < limit:
            if self.mode.shuffle:
                due = [i for i, j in enumerate(self._heap) if j.due <= now]
                k = due[self.rng.randrange(len(due))]
                self._heap[k], self._heap[-1] = self._heap[-1], self._heap[k]
                batch.append(self._heap.pop())
                heapq.heapify(self._heap)
            else:
                batch.append(heapq.heappop(self._heap))
        self._inflight += len(batch)
        return batch

    def _finished(self, job: _Job, ok: bool) -> None:
        """After an attempt: schedule the retry of a failure, wake wait_idle callers when all is done."""
        with self._cv:
            self._inflight -= 1
            if not ok and job.attempt <= len(self._schedule()):
                job.due = time.monotonic() + self._schedule()[job.attempt - 1]
                job.attempt += 1
                heapq.heappush(self._heap, job)
                self._cv.notify()           # a waiting thread re-computes how long to sleep
            if not self._heap and not self._inflight:
                self._idle.notify_all()

    def _run_pump(self, pump) -> None:
        # The pump's state changes only under the lock (here, or in _start_here from an emitting thread); only
        # its select runs without it.
        try:
            while True:
                with self._cv:
                    if self._stop:
                        return
                    blocking = []
                    for job in self._take_due(time.monotonic(), pump.free()):
                        if job.url.startswith("http://"):
                            pump.start(job, job.url, job.headers, job.body, self.mode.timeout)
                        else:
                            blocking.append(job)
                if blocking:                      # https: the blocking fallback, not under the lock
                    for job in blocking:
                        pump.start(job, job.url, job.headers, job.body, self.mode.timeout)
                    continue
                with self._cv:
                    if self._stop:
                        return
                    # Sleep until the next job is due (if a connection is free), an answer, a request deadline, a
                    # wake-up from _submit / stop, or `timeout` at most: requests _start_here sends meanwhile have
                    # later deadlines than that.
                    wait = float(self.mode.timeout)
                    if self._heap and pump.free() > 0:
                        wait = min(wait, max(0.0, self._heap[0].due - time.monotonic()))
                    wait = pump.wait_time(wait)
                    self._pump_sleeping = True
                ready = pump.select(wait)
                with self._cv:
                    self._pump_sleeping = False
                    finished = pump.handle(ready)
                for job, status, error in finished:
                    self._finished(job, self._record(job, status, error))
        finally:
            with self._cv:
                self._pump_sleeping = False
                pump.close()

    def _run(self) -> None:
        # With one thread, everything due is taken at once (and shuffled in shuffle mode); with several, each
        # takes one job at a time so the others get work while it waits for an answer.
        several = max(1, int(self.mode.threads)) > 1
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0].due > time.monotonic()):
                    wait = None if not self._heap else max(0.0, self._heap[0].due - time.monotonic())
                    self._cv.wait(wait)
                if self._stop:
                    return
                if several:                     # one job (any due one in shuffle mode)
                    batch = self._take_due(time.monotonic(), 1)
                else:                           # everything due, shuffled below in shuffle mode
                    batch = []
                    now = time.monotonic()
                    while self._heap and self._heap[0].due <= now:
                        batch.append(heapq.heappop(self._heap))
                    self._inflight += len(batch)
            if self.mode.shuffle:
                self.rng.shuffle(batch)
            for job in batch:
                self._finished(job, self._attempt(job))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Background mode: block until nothing is queued or in flight (retries included)."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._heap or self._inflight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
            if self._pump is not None:
                self._pump.wake()


# ---------------------------------------------------------------------------------------------------- payloads

@lru_cache(maxsize=None)
def _sample(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def sample(name: str):
    return json.loads(_sample(name))


@lru_cache(maxsize=None)
def _part_text(name: str, *path) -> str:
    node = sample(name)
    for key in path:
        node = node[key]
    return json.dumps(node)


def _fresh(name: str, *path):
    """A new copy of a sample (or of a part of it): parsing its cached JSON text is ~10x cheaper than
    copy.deepcopy."""
    return json.loads(_part_text(name, *path))


@lru_cache(maxsize=None)
def _shape(name: str, *path) -> tuple:
    """A sample part split for _shaped: its keys in order with the scalar values (containers as None), and the
    JSON text of each container value."""
    node = sample(name)
    for key in path:
        node = node[key]
    base = {k: (None if isinstance(v, (dict, list)) else v) for k, v in node.items()}
    return base, {k: json.dumps(v) for k, v in node.items() if isinstance(v, (dict, list))}


def _shaped(values: dict, name: str, *path) -> dict:
    """Exactly `_fresh(name, *path)` updated with `values` (the sample's key order, then new keys), but only the
    sample's containers that `values` does not replace are copied (parsed). Order payloads replace nearly every
    key, so parsing the whole sample per order and per line item was most of the stand-in's CPU per order
    webhook (22-line orders at 200/s)."""
    base, containers = _shape(name, *path)
    d = dict(base)
    d.update(values)
    for k, text in containers.items():
        if k not in values:
            d[k] = json.loads(text)
    return d


def _rest_time(t: dt.datetime | None, tz: str) -> str | None:
    """REST payload times: ISO 8601 with the shop's UTC offset, like the samples."""
    if t is None:
        return None
    return _rest_time_text(t, tz)


@lru_cache(maxsize=4096)
def _rest_time_text(t: dt.datetime, tz: str) -> str:
    # Cached: an order payload shows the same instant up to five times (created, processed, updated, customer).
    # Equal aware datetimes are the same instant, so they have the same text in `tz`.
    return t.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")


def _set(amount, o) -> dict:
    return {"shop_money": {"amount": f"{amount:.2f}", "currency_code": o.currency},
            "presentment_money": {"amount": f"{o.presentment(amount):.2f}", "currency_code": o.presentment_currency}}


def _line_payload(li, o) -> dict:
    d = _shaped({
        "id": li.id, "admin_graphql_api_id": f"gid://shopify/LineItem/{li.id}", "attributed_staffs": [],
        "current_quantity": li.current_quantity, "fulfillable_quantity": li.current_quantity,
        "fulfillment_service": "manual", "fulfillment_status": None, "gift_card": False, "grams": 0,
        "name": li.title + (f" - {li.variant_title}" if li.variant_title else ""), "price": f"{li.price:.2f}",
        "price_set": _set(li.price, o), "product_exists": li.product_id is not None, "product_id": li.product_id,
        "properties": [], "quantity": li.quantity, "requires_shipping": li.requires_shipping,
        "sales_line_item_group_id": None, "sku": li.sku, "taxable": li.taxable, "title": li.title,
        "total_discount": f"{li.total_discount:.2f}", "total_discount_set": _set(li.total_discount, o),
        "variant_id": li.variant_id, "variant_inventory_management": None, "variant_title": li.variant_title,
        "vendor": li.vendor, "tax_lines": [], "duties": [],
        "discount_allocations": _discount_allocations(li, o),
    }, "orders__create", "line_items", 0)
    # product_type is not in the REST line item sample but the app needs it without a product lookup; Shopify's
    # payload doesn't carry it, so neither do we (apps must read it from the product).
    return d


def _discount_allocations(li, o) -> list:
    return ([{"amount": f"{li.total_discount:.2f}", "amount_set": _set(li.total_discount, o),
              "discount_application_index": 0}]
            if li.total_discount > 0 and o.discount_applications else [])


# ---------------------------------------------------------------------------------------------------- fast JSON
# Order webhooks are most of the stand-in's CPU in bench (d) (200 orders/s of ~27 lines, ~28 KB each): building
# the payload dicts and json.dumps-ing them cost ~40 us per line item. order_body writes the same bytes
# directly, through %-templates made once from the reference builders' own output (Shopify's key order, the
# constant fields encoded once): the order's varying fields (_order_values, shared with order_payload) per order;
# a line item's product / price / discount fields once per distinct combination (cached), its id and quantities
# per line; money sets from a cache. Byte-identical to json.dumps(order_payload(...), separators=_SEP) (a test
# checks it on real orders with refunds, discounts, exchange rates, custom lines and non-ASCII text).

_json_str = json.encoder.encode_basestring_ascii          # json.dumps' own string encoder (ensure_ascii)


class _Raw(str):
    """Text that is JSON already (a cached money set): _json writes it as it is."""
    __slots__ = ()


def _json(v) -> str:
    """One value's JSON text exactly as json.dumps(v, separators=_SEP) writes it; common scalars without it."""
    t = type(v)
    if t is str:
        return _json_str(v)
    if t is int:
        return int.__repr__(v)
    if t is _Raw:
        return v
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if t is list and not v:
        return "[]"
    return json.dumps(v, separators=_SEP)


_set_texts: dict = {}


def _set_text(amount, o) -> str:
    """JSON text of _set(amount, o), cached: a shop's orders repeat a few hundred prices (two Decimal quantizes
    and three dicts per set otherwise, three sets per line). str(amount) in the key keeps -0.00 apart from 0."""
    key = (str(amount), o.currency, o.presentment_currency, o.fx_rate)
    text = _set_texts.get(key)
    if text is None:
        if len(_set_texts) > 50_000:
            _set_texts.clear()
        text = _set_texts[key] = _Raw(json.dumps(_set(amount, o), separators=_SEP))
    return text


# The line item fields that differ between lines (every other field of _line_payload is a constant): those of
# one line alone (in Shopify's key order), then those every line of the same product at the same price and
# discount shares.
_LINE_OWN = ("id", "admin_graphql_api_id", "current_quantity", "fulfillable_quantity", "quantity")
_LINE_SHARED = ("name", "price", "price_set", "product_exists", "product_id", "requires_shipping", "sku", "taxable",
                "title", "total_discount", "total_discount_set", "variant_id", "variant_title", "vendor",
                "discount_allocations")
_HOLE = "\x00"                     # never in JSON text (json.dumps writes a NUL as \u0000)
_line_template: list = []          # [the %-template], made on first use
_line_parts: dict = {}             # shared-fields key -> the line's JSON around its own fields, in 6 pieces


def _make_line_template(li, o) -> str:
    """_line_payload's JSON with a %(field)s hole per varying field."""
    ref = _line_payload(li, o)
    holes = _LINE_OWN + _LINE_SHARED
    missing = set(holes) - set(ref)
    if missing:
        raise AssertionError(f"_LINE_OWN/_LINE_SHARED name fields _line_payload lacks: {sorted(missing)}")
    if [k for k in ref if k in _LINE_OWN] != list(_LINE_OWN):
        raise AssertionError("_LINE_OWN is not in the payload's key order")
    return "{" + ",".join(_json_str(k) + ":" + (f"%({k})s" if k in holes
                                                 else json.dumps(v, separators=_SEP).replace("%", "%%"))
                          for k, v in ref.items()) + "}"


def _line_part(li, o) -> tuple:
    """The line's JSON with its _LINE_SHARED fields filled in, split around the _LINE_OWN fields."""
    if not _line_template:
        _line_template.append(_make_line_template(li, o))
    disc = li.total_discount
    shared = {
        "name": _json_str(li.title + (f" - {li.variant_title}" if li.variant_title else "")),
        "price": f'"{li.price:.2f}"', "price_set": _set_text(li.price, o),
        "product_exists": "false" if li.product_id is None else "true", "product_id": _json(li.product_id),
        "requires_shipping": _json(li.requires_shipping), "sku": _json(li.sku), "taxable": _json(li.taxable),
        "title": _json(li.title), "total_discount": f'"{disc:.2f}"', "total_discount_set": _set_text(disc, o),
        "variant_id": _json(li.variant_id), "variant_title": _json(li.variant_title), "vendor": _json(li.vendor),
        "discount_allocations": _json(_discount_allocations(li, o)) if disc > 0 else "[]",
    }
    return tuple((_line_template[0] % {**shared, **dict.fromkeys(_LINE_OWN, _HOLE)}).split(_HOLE))


def _line_text(li, o) -> str:
    """JSON text of _line_payload(li, o). A basket repeats products across orders: the fields that follow from
    the product, price and discount are encoded once per distinct combination (the key holds everything they
    are computed from; str() of the Decimals, as 0.00 == -0.00; only real bools, as True == 1)."""
    taxable, shipping = li.taxable, li.requires_shipping
    if type(taxable) is bool and type(shipping) is bool:
        key = (li.title, li.variant_title, li.sku, li.vendor, li.product_id, li.variant_id, taxable, shipping,
               str(li.price), str(li.total_discount), not o.discount_applications, o.currency,
               o.presentment_currency, o.fx_rate)
        part = _line_parts.get(key)
        if part is None:
            if len(_line_parts) > 20_000:
                _line_parts.clear()
            part = _line_parts[key] = _line_part(li, o)
    else:
        part = _line_part(li, o)
    a, b, c, d, e, f = part
    line_id, q = _json(li.id), _json(li.current_quantity)
    return f'{a}{line_id}{b}"gid://shopify/LineItem/{li.id}"{c}{q}{d}{q}{e}{_json(li.quantity)}{f}'


_order_template: list = []         # [(%-template before the line items, after them)], made on first use


def _make_order_template(sh, o) -> tuple:
    """order_payload's JSON with a %(field)s hole per _order_values field (constants encoded once), split at
    the line items (25 KB of a 28 KB body: joined in once rather than %-formatted and copied again)."""
    ref = _order_fields(sh, o, [])
    holes = set(_order_values(sh, o, [], _set, _order_totals(o)))
    text = "{" + ",".join(_json_str(k) + ":" + (f"%({k})s" if k in holes
                                                 else json.dumps(v, separators=_SEP).replace("%", "%%"))
                          for k, v in ref.items()) + "}"
    head, tail = text.split("%(line_items)s")
    return head, tail


def order_body(sh, o) -> bytes:
    """json.dumps(order_payload(sh, o), separators=_SEP).encode(), written without the payload's dicts: the
    order's varying fields (_order_values: money sets as cached JSON, totals in one walk) into the order
    template, the line items as _line_text."""
    if not _order_template:
        _order_template.append(_make_order_template(sh, o))
    head, tail = _order_template[0]
    values = _order_values(sh, o, None, _set_text, _order_totals(o))
    del values["line_items"]
    values = {k: _json(v) for k, v in values.items()}
    lines = ",".join([_line_text(li, o) for li in o.line_items])
    return f"{head % values}[{lines}]{tail % values}".encode()


def order_event(sh, o) -> EventPayload:
    """The payload of an order event: the dict built only if a subscription selects fields (include_fields)."""
    return EventPayload(lambda: order_payload(sh, o), encode=lambda: order_body(sh, o), resource_id=o.id)


def customer_payload(sh, c, template: str = "customers__update") -> dict:
    d = sample(template)
    d.update({"id": c.id, "created_at": _rest_time(c.created_at, sh.iana_timezone),
              "updated_at": _rest_time(c.updated_at, sh.iana_timezone), "first_name": c.first_name,
              "last_name": c.last_name, "state": c.state.lower(), "note": c.note, "verified_email": c.verified_email,
              "multipass_identifier": None, "tax_exempt": False, "email": c.email, "phone": c.phone,
              "currency": sh.currency, "addresses": [], "tax_exemptions": [],
              "admin_graphql_api_id": f"gid://shopify/Customer/{c.id}", "default_address": None})
    # The 2026-07 sample omits `tags`, but webhook payloads are the REST Customer resource, which has
    # `tags` ("a, b"), and apps subscribe with include_fields = [..., "tags"]: keep it, REST-formatted.
    d["tags"] = ", ".join(c.tags)
    return d


def _order_customer(sh, o) -> dict | None:
    c = sh.customers.get(o.customer_id) if o.customer_id is not None else None
    if c is None:
        return None
    return _shaped({"id": c.id, "created_at": _rest_time(c.created_at, sh.iana_timezone),
              "updated_at": _rest_time(c.updated_at, sh.iana_timezone), "first_name": c.first_name,
              "last_name": c.last_name, "state": c.state.lower(), "note": c.note, "verified_email": c.verified_email,
              "email": c.email, "phone": c.phone, "currency": sh.currency, "tax_exemptions": [],
              "admin_graphql_api_id": f"gid://shopify/Customer/{c.id}", "default_address": None},
                   "orders__create", "customer")


def _refund_body(sh, r) -> dict:
    o = r.order
    tmpl = sample("refunds__create")
    d = _fresh("refunds__create")
    has_rli = bool(tmpl.get("refund_line_items"))
    d.update({"id": r.id, "admin_graphql_api_id": f"gid://shopify/Refund/{r.id}",
              "created_at": _rest_time(r.created_at, sh.iana_timezone),
              "processed_at": _rest_time(r.created_at, sh.iana_timezone), "note": r.note, "order_id": o.id,
              "restock": False, "user_id": None, "duties": [], "order_adjustments": [], "transactions": [],
              "refund_shipping_lines": [], "total_duties_set": _set(0, o) if "total_duties_set" in d else None})
    lines = []
    for rl in r.lines:
        x = _fresh("refunds__create", "refund_line_items", 0) if has_rli else {}
        x.update({"id": rl.id, "line_item_id": rl.line_item.id, "location_id": None, "quantity": rl.quantity,
                  "restock_type": "no_restock", "subtotal": float(rl.subtotal), "subtotal_set": _set(rl.subtotal, o),
                  "total_tax": 0.0, "total_tax_set": _set(0, o), "line_item": _line_payload(rl.line_item, o)})
        lines.append(x)
    d["refund_line_items"] = lines
    return {k: v for k, v in d.items() if v is not None or k in tmpl}


def refund_payload(sh, r) -> dict:
    return _refund_body(sh, r)


def order_payload(sh, o) -> dict:
    return _order_fields(sh, o, [_line_payload(li, o) for li in o.line_items])


def _order_totals(o) -> tuple:
    """(current subtotal, current discounts, current total, subtotal, discounts, line items, total): Order's
    properties, each of which walks every line (nine walks in all), in one walk. Same Decimal operations in the
    same order, so the same values (order_body's test compares it with order_payload, which reads the
    properties)."""
    items = disc = cur_sub = cur_disc = ZERO
    cancelled = o.cancelled_at is not None
    for li in o.line_items:
        price, quantity, line_disc = li.price, li.quantity, li.total_discount
        items += price * quantity
        disc += line_disc
        if cancelled or quantity == 0:
            continue
        q = quantity - li.refunded_quantity
        if line_disc:
            part = money(line_disc * q / quantity)
            cur_sub += price * q - part
            cur_disc += part
        else:
            cur_sub += price * q - ZERO
            cur_disc += ZERO
    sub = items - disc
    if cancelled:
        return ZERO, ZERO, ZERO, sub, disc, items, sub + o.shipping
    return cur_sub, cur_disc, cur_sub + o.shipping, sub, disc, items, sub + o.shipping


def _order_constants() -> dict:
    """The order payload fields that are the same for every order (a fresh dict: callers may edit payloads)."""
    return {
        "app_id": None, "browser_ip": None, "buyer_accepts_marketing": False, "cart_token": None,
        "checkout_token": None, "client_details": None, "confirmation_number": None, "confirmed": True,
        "current_total_additional_fees_set": None, "current_total_duties_set": None, "current_total_tax": "0.00",
        "customer_locale": "en", "device_id": None, "duties_included": False, "estimated_taxes": False,
        "fulfillment_status": None, "landing_site": None, "landing_site_ref": None, "location_id": None,
        "merchant_business_entity_id": None, "merchant_of_record_app_id": None, "note_attributes": [],
        "original_total_additional_fees_set": None, "original_total_duties_set": None,
        "payment_gateway_names": ["manual"], "phone": None, "po_number": None, "reference": None,
        "referring_site": None, "source_identifier": None, "source_url": None, "tax_exempt": False, "tax_lines": [],
        "taxes_included": True, "total_tax": "0.00", "total_tip_received": "0.00", "total_weight": 0,
        "user_id": None, "billing_address": None, "fulfillments": [], "payment_terms": None,
        "shipping_address": None, "shipping_lines": [], "returns": [], "line_item_groups": [],
    }


def _order_values(sh, o, line_items, money_set, totals) -> dict:
    """The order payload fields that differ between orders."""
    tz = sh.iana_timezone
    zero = money_set(0, o)
    cur_sub, cur_disc, cur_total, sub, disc, items, total = totals
    return {
        "id": o.id, "admin_graphql_api_id": f"gid://shopify/Order/{o.id}", "cancel_reason": o.cancel_reason,
        "cancelled_at": _rest_time(o.cancelled_at, tz), "closed_at": _rest_time(o.closed_at, tz),
        "contact_email": o.email, "created_at": _rest_time(o.created_at, tz), "currency": o.currency,
        "current_shipping_price_set": money_set(o.shipping, o), "current_subtotal_price": f"{cur_sub:.2f}",
        "current_subtotal_price_set": money_set(cur_sub, o), "current_total_discounts": f"{cur_disc:.2f}",
        "current_total_discounts_set": money_set(cur_disc, o), "current_total_price": f"{cur_total:.2f}",
        "current_total_price_set": money_set(cur_total, o), "current_total_tax_set": zero,
        "discount_codes": list(o.discount_codes), "email": o.email or "", "financial_status": o.financial_status,
        "name": o.name, "note": o.note, "number": o.number - 1000, "order_number": o.number,
        "order_status_url": f"https://{sh.domain}/{sh.id}/orders/{o.id}/authenticate",
        "presentment_currency": o.presentment_currency, "processed_at": _rest_time(o.processed_at, tz),
        "source_name": o.source_name, "subtotal_price": f"{sub:.2f}", "subtotal_price_set": money_set(sub, o),
        "tags": ", ".join(o.tags), "test": o.test, "token": f"{o.id:x}",
        "total_cash_rounding_payment_adjustment_set": zero, "total_cash_rounding_refund_adjustment_set": zero,
        "total_discounts": f"{disc:.2f}", "total_discounts_set": money_set(disc, o),
        "total_line_items_price": f"{items:.2f}", "total_line_items_price_set": money_set(items, o),
        "total_outstanding": "0.00" if o.paid else f"{total:.2f}", "total_price": f"{total:.2f}",
        "total_price_set": money_set(total, o), "total_shipping_price_set": money_set(o.shipping, o),
        "total_tax_set": zero, "updated_at": _rest_time(o.updated_at, tz), "customer": _order_customer(sh, o),
        "discount_applications": [dict(x) for x in o.discount_applications], "line_items": line_items,
        "refunds": [_refund_body(sh, r) for r in o.refunds],
    }


def _order_fields(sh, o, line_items) -> dict:
    # Each total walks every line (Decimal arithmetic): computed once here, not once per field that shows it.
    totals = (o.current_subtotal_price, o.current_total_discounts, o.current_total_price, o.subtotal_price,
              o.total_discounts, o.total_line_items_price, o.total_price)
    return _shaped({**_order_constants(), **_order_values(sh, o, line_items, _set, totals)}, "orders__create")


def shop_payload(sh) -> dict:
    d = sample("app__uninstalled")
    d.update({"id": sh.id, "name": sh.name, "email": sh.email, "domain": sh.domain, "province": None,
              "country": None, "address1": None, "zip": None, "city": None, "phone": None,
              "created_at": _rest_time(sh.created_at, sh.iana_timezone), "updated_at": _rest_time(sh.created_at, sh.iana_timezone),
              "currency": sh.currency, "customer_email": sh.email, "iana_timezone": sh.iana_timezone,
              "plan_display_name": sh.plan, "plan_name": sh.plan.lower().replace(" ", "_"),
              "myshopify_domain": sh.domain, "enabled_presentment_currencies": [sh.currency],
              "money_format": "{{amount}}", "money_with_currency_format": f"{{{{amount}}}} {sh.currency}",
              "shop_owner": f"{sh.name} Owner", "timezone": sh.iana_timezone, "primary_location_id": None,
              "plan_display_name_": None})
    d.pop("plan_display_name_", None)
    return d


def compliance_payload(sh, topic: str, customer_id: int | None) -> dict:
    name = topic.replace("/", "__")
    d = sample(name)
    d["shop_id"], d["shop_domain"] = sh.id, sh.domain
    if "customer" in d:
        c = sh.customers.get(customer_id) if customer_id is not None else None
        d["customer"] = {"id": customer_id, "email": c.email if c else None, "phone": c.phone if c else None}
        ids = list(c.order_ids) if c else []
        if "orders_to_redact" in d:
            d["orders_to_redact"] = ids
        if "orders_requested" in d:
            d["orders_requested"] = ids
        if "data_request" in d:
            d["data_request"] = {"id": int(time.time() * 1000) % 10**9}
    return d


def bulk_finish_payload(op) -> dict:
    d = sample("bulk_operations__finish")
    d.update({"admin_graphql_api_id": f"gid://shopify/BulkOperation/{op.id}",
              "completed_at": iso(op.completed_at), "created_at": iso(op.created_at),
              "error_code": op.error_code.lower() if op.error_code else None, "status": op.status.lower(),
              "type": op.type.lower()})
    return d
