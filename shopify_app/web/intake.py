"""Recording a batch of webhook deliveries in ONE transaction (the write half of the intake; see webhooks.py).

`record_batch(url, items)` classifies and inserts every item with two statements, whatever the batch size: on
SQLite inside one writer transaction (BEGIN IMMEDIATE, under the write turn), so the decisions are made on the
data they are written against; on PostgreSQL the read, then the INSERT as its own (autocommit) transaction - the
same isolation the READ COMMITTED transaction gave them (see _pg_session):
- shops and events: ONE SELECT: the batch's shop domains -> id and status (an uninstall committed before is seen:
  no cache, the status is read where it decides 'pending_analytics' vs 'received'), and the recorded deliveries
  of the batch's event ids per (shop domain, topic) (the (shop_domain, event_id) prefix of the unique key), plus
  the batch itself: the first copy of an event wins, later ones are 'duplicate';
- rows: one INSERT .. ON CONFLICT DO NOTHING per batch; a row the unique key (shop_domain, event_id, webhook_id)
  refuses is a delivery already recorded (a Shopify retry carries the same event id and webhook id; or a
  concurrent copy in another process); two copies in the same batch: the first is inserted, the second answers
  'already_recorded'. A delivery without X-Shopify-Event-Id is stored with event_id '' (never NULL: NULLs never
  conflict in a unique key, so its retries would be stored again). One random-key index for both checks, not
  one each: ~30 us less per row (migration 0008).

SQLite: the two (or more) gunicorn processes each write batches; a process waiting for SQLite's write lock sleeps
in SQLite's busy handler (1, 2, 5, 10 .. 100 ms steps) however soon the lock is released. The intake (and the
order job, the other frequent writer) first take `shopify_app.db.sqlite_write_turn`, an flock on a file next to
the database: flock wakes the next process as soon as the lock is released. Writers that don't take it (other
workers) are still waited for by SQLite's busy handler, as before.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from shopify_app.db import SQLITE_MMAP_SIZE, Checkpointer, get_engine, sqlite_write_turn
from shopify_app.models import Shop, WebhookDelivery
from shopify_app.shopify.webhooks import COMPLIANCE_TOPICS, ORDER_TOPICS

PENDING_ANALYTICS = "pending_analytics"     # the status the order job consumes (workers.order_jobs)
ALREADY_RECORDED = "already_recorded"       # not a row status: the answer for a delivery stored before

log = logging.getLogger(__name__)
_table = WebhookDelivery.__table__


@dataclass
class Delivery:
    """One authentic delivery, as read from the request (error set: the body is not a JSON object)."""
    shop_domain: str
    topic: str
    webhook_id: str
    event_id: str | None
    api_version: str | None
    triggered_at: dt.datetime | None
    received_at: dt.datetime
    body: str
    error: str | None = None


@dataclass
class Outcome:
    status: str                     # a row status, or ALREADY_RECORDED
    delivery_id: int | None = None
    shop_id: int | None = None


def _classify(d: Delivery, shop: tuple[int, str] | None, seen_events: dict,
              batch_events: set) -> tuple[str, str | None]:
    """(status, error) of a new row; same rules, same order as the single-row intake always had."""
    if d.error:
        return "invalid", d.error
    if shop is None and d.topic not in COMPLIANCE_TOPICS:
        return "unknown_shop", "shop is not installed"
    if d.event_id:
        key = (d.shop_domain, d.topic, d.event_id)
        if any(w != d.webhook_id for w in seen_events.get(key, ())) or key in batch_events:
            return "duplicate", f"event {d.event_id} already recorded"
    if shop is not None and d.topic in ORDER_TOPICS and shop[1] != "uninstalled":
        return PENDING_ANALYTICS, None
    return "received", None


def record_batch(url: str, items: Sequence[Delivery], *, turn_held: bool = False, lane: int = 0) -> list[Outcome]:
    """Insert the batch in one transaction; one Outcome per item, in order. The SQLite write turn is taken here,
    unless the caller already holds it (`turn_held`: the group commit's leader, which may pass it on). `lane`: which
    of the process's dedicated intake connections writes it (intake_batch.Lanes: concurrent batches on
    PostgreSQL, one connection each)."""
    engine = get_engine(url)
    sql = _Sql.of(engine.dialect)
    with contextlib.nullcontext() if turn_held else sqlite_write_turn(url):
        inserted, outcomes, row_of = _write(url, engine, sql, items, lane)
        if engine.dialect.name == "sqlite":
            checkpointer = Checkpointer.of(url)
            checkpointer.wrote(len(inserted))
            if checkpointer.catch_up_due:
                checkpointer.catch_up(engine)

    for i, d in enumerate(items):
        key = (d.shop_domain, d.event_id or "", d.webhook_id)
        row_id = inserted.get(key)
        if row_of[key] != i or row_id is None:
            outcomes[i] = Outcome(ALREADY_RECORDED)
        else:
            outcomes[i].delivery_id = row_id
    return outcomes  # type: ignore[return-value]


def _write(url: str, engine, sql: "_Sql", items: Sequence[Delivery], lane: int = 0):
    """The batch's transaction: (inserted {delivery key: row id}, outcomes so far, row_of {delivery key: index of
    its first copy in the batch}); a delivery's key is the unique key (shop domain, event id or '', webhook id)."""
    with _transaction(url, engine, lane) as run:
        domains = sorted({d.shop_domain for d in items})
        wanted: dict[tuple[str, str], set[str]] = {}
        for d in items:
            if d.event_id and not d.error:
                wanted.setdefault((d.shop_domain, d.topic), set()).add(d.event_id)
        groups = sorted(wanted.items())
        params: list = list(domains)
        for (domain, topic), event_ids in groups:
            params.extend((domain, topic, *sorted(event_ids)))
        # One statement for both reads (one round trip on PostgreSQL): the shops, then the events already recorded.
        shops: dict[str, tuple[int, str]] = {}
        seen_events: dict[tuple[str, str, str], list[str]] = {}
        for kind, shop_id, domain, a, b, c in run(sql.lookups(len(domains), tuple(len(e) for _, e in groups)),
                                                   tuple(params)):
            if kind == 0:
                shops[domain] = (shop_id, a)                                  # a: the shop's status
            else:
                seen_events.setdefault((domain, a, b), []).append(c)          # topic, event id, webhook id

        outcomes: list[Outcome | None] = [None] * len(items)
        rows: list = []
        row_of: dict[tuple[str, str, str], int] = {}
        batch_events: set[tuple[str, str, str]] = set()
        for i, d in enumerate(items):
            key = (d.shop_domain, d.event_id or "", d.webhook_id)
            if key in row_of:
                continue                            # a second copy in this batch: answered like a retry below
            shop = shops.get(d.shop_domain)
            status, error = _classify(d, shop, seen_events, batch_events)
            body = d.body
            if status == "invalid":
                # Kept for diagnosis, made storable: PostgreSQL text cannot hold NUL; garbage is capped.
                body = body.replace("\x00", "\ufffd")[:MAX_INVALID_BODY_CHARS]
            elif status in ("unknown_shop", "duplicate"):
                body = None                         # no relationship with that shop / audit trail only
            if d.event_id and status != "invalid":
                batch_events.add((d.shop_domain, d.topic, d.event_id))
            row_of[key] = i
            shop_id = shop[0] if shop else None
            outcomes[i] = Outcome(status, None, shop_id)
            rows.extend((shop_id, d.shop_domain, d.topic, d.webhook_id, d.event_id or "", d.api_version,
                         sql.datetime(d.triggered_at), sql.datetime(d.received_at), status, error, 0, body))

        if sql.returning:
            if len(row_of) > 1:
                rows = _in_key_order(rows)
            inserted = {(domain, event_id, webhook_id): row_id
                        for row_id, domain, event_id, webhook_id in run(sql.insert(len(row_of)), tuple(rows))}
        else:
            inserted = _inserted_ids(run, sql, rows, len(row_of))
    return inserted, outcomes, row_of


def _in_key_order(rows: list) -> list:
    """The flat rows sorted by (shop domain, event id, webhook id), the unique constraint's key. Why (PostgreSQL): two
    batches written concurrently (Lanes) may hold copies of the same deliveries; an INSERT .. ON CONFLICT that meets
    a key another uncommitted INSERT holds waits for it to end, so two batches inserting shared keys in opposite
    orders would wait for each other until the deadlock detector fails one of them (deadlock_timeout, 1 s, then
    500s). In one order everywhere, the later batch just waits for the earlier one's commit, then skips the key."""
    n = _N_COLUMNS
    keyed = sorted(range(0, len(rows), n), key=lambda k: (rows[k + 1], rows[k + 4], rows[k + 3]))
    out: list = []
    for k in keyed:
        out.extend(rows[k:k + n])
    return out


def _inserted_ids(run, sql: "_Sql", rows: list, n: int) -> dict[tuple[str, str, str], int]:
    """SQLite: the INSERT without RETURNING, then the ids of the rows it inserted. Why: pysqlite releases the GIL
    for every sqlite3_step, and RETURNING is one step per row, each a chance for another request thread to take
    the GIL while this one holds the write turn (and then waits to get it back). Without RETURNING it is one step.

    Exact, because this transaction holds SQLite's write lock: the rows inserted by the statement got consecutive
    rowids ending at last_insert_rowid() (id is the table's INTEGER PRIMARY KEY: each new row gets the largest
    rowid + 1), `changes` of them. All of them inserted (no conflict): they are the batch's rows in order. Some
    refused by the unique constraint (a re-send): the inserted ones are read back by that id range."""
    changes, last_id = run(sql.insert(n), tuple(rows), fetch=False)
    if changes == 0:
        return {}
    if changes == n:
        first = last_id - n + 1
        return {(rows[k * _N_COLUMNS + 1], rows[k * _N_COLUMNS + 4], rows[k * _N_COLUMNS + 3]): first + k
                for k in range(n)}
    return {(domain, event_id, webhook_id): row_id
            for row_id, domain, event_id, webhook_id in run(sql.inserted_between, (last_id - changes + 1, last_id))}


MAX_INVALID_BODY_CHARS = 65_536
_COLUMNS = ("shop_id", "shop_domain", "topic", "webhook_id", "event_id", "api_version", "triggered_at",
            "received_at", "status", "error", "attempts", "body")
_N_COLUMNS = len(_COLUMNS)            # rows are flat: shop_domain at +1, webhook_id at +3, event_id at +4


@contextlib.contextmanager
def _transaction(url: str, engine, lane: int = 0):
    """A writer transaction on a driver connection, yielding run(sql, params) -> rows. The driver, not the ORM or
    even SQLAlchemy Core: this is the hot path of the intake and each layer costs tens of microseconds per
    statement. SQLite: the connection is in autocommit mode (db.py), so the transaction is begun here, IMMEDIATE
    like every writer of this app.

    The connection is the process's dedicated intake connection when it is free (it nearly always is: one group
    commit leader writes at a time), else a pooled one. The dedicated one skips the pool's checkout and return
    (and, on PostgreSQL, the pre-ping round trip of every checkout); a transaction that fails drops it, so the
    next batch starts on a fresh connection (a restarted database server costs one failed batch, as before)."""
    dedicated = _Dedicated.of(url, engine, lane)
    if dedicated.lock.acquire(blocking=False):
        try:
            raw = dedicated.connection()
            try:
                with _begin(engine, raw) as run:
                    yield run
            except BaseException:
                dedicated.drop()
                raise
        finally:
            dedicated.lock.release()
        return
    raw = engine.raw_connection()
    try:
        with _begin(engine, raw) as run:
            yield run
    finally:
        _sqlite_session(raw, False)
        raw.close()              # back to the pool, with the settings it came with


class _Dedicated:
    """The intake's own driver connection in this process for one engine (checked out of the engine's pool once
    and kept: the connect-time PRAGMAs of db.py apply). Keyed by process (never used across a fork), URL and lane
    (one connection per concurrent batch, intake_batch.Lanes); an engine replaced meanwhile (db.dispose_all)
    replaces it."""
    _by_key: dict[tuple[int, str, int], "_Dedicated"] = {}
    _guard = threading.Lock()

    IDLE_S = 10.0

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.conn = None
        self.used = 0.0

    @classmethod
    def of(cls, url: str, engine, lane: int = 0) -> "_Dedicated":
        key = (os.getpid(), url, lane)
        d = cls._by_key.get(key)
        if d is None or d.engine is not engine:
            with cls._guard:
                d = cls._by_key.get(key)
                if d is None or d.engine is not engine:
                    if d is not None:
                        d.drop()         # its engine was disposed: let its connection go with it
                    d = cls._by_key[key] = cls(engine)
        return d

    def connection(self):
        """The kept connection; after IDLE_S without use it goes back to the pool and a fresh checkout (pinged on
        PostgreSQL) replaces it, so a connection the server dropped while the intake was quiet is not used."""
        now = time.monotonic()
        if self.conn is not None and now - self.used > self.IDLE_S:
            conn, self.conn = self.conn, None
            _pg_session(conn, False)
            _sqlite_session(conn, False)
            conn.close()                 # back to the pool, which checks it on the next checkout
        if self.conn is None:
            conn = self.engine.raw_connection()
            try:
                _pg_session(conn, True)
            except BaseException:
                conn.invalidate()
                raise
            self.conn = conn
        self.used = now
        return self.conn

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.invalidate()        # closed, not returned to the pool in an unknown state
            except Exception:            # noqa: BLE001 - already broken: nothing more to release
                pass


INTAKE_SESSION = "intake_session"      # raw.info key: the dedicated PostgreSQL session settings are applied
INTAKE_SQLITE = "intake_sqlite"        # raw.info key: the intake's SQLite connection settings are applied


def _sqlite_session(raw, on: bool) -> None:
    """A SQLite connection while it writes intake batches (on), and back as the pool hands it out (off). Elsewhere
    (PostgreSQL) a no-op.

    - wal_autocheckpoint = 0: checkpoints are run by the Checkpointer thread, not by the commit of an intake
      batch (SQLite's automatic one fsyncs inside the commit, with the write turn held).
    - mmap_size = 0: no memory-mapped reads. The two gunicorn processes write in turns, and SQLite drops a
      connection's page cache whenever another connection wrote since its last transaction: each batch after
      the other process's then re-reads the pages it touches. Through the map that costs more than pread:
      page faults on pages the map drops and remaps as the file grows. Measured (stop 15, 1-row batches
      alternating with another writer): 163 -> 117 us of CPU per batch; the same without the other writer;
      in the intake bench ~10 us less CPU per recorded row. Readers keep the map (db.SQLITE_MMAP_SIZE)."""
    if getattr(raw, "driver_connection", raw).__class__.__module__ != "sqlite3":
        return
    if on and not raw.info.get(INTAKE_SQLITE):
        cur = raw.cursor()
        cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.execute("PRAGMA mmap_size=0")
        cur.close()
        raw.info[INTAKE_SQLITE] = True
    elif not on and raw.info.pop(INTAKE_SQLITE, None):
        cur = raw.cursor()
        cur.execute("PRAGMA wal_autocheckpoint=1000")        # SQLite's default
        cur.execute(f"PRAGMA mmap_size={SQLITE_MMAP_SIZE}")
        cur.close()


def _pg_session(raw, on: bool) -> None:
    """The dedicated connection's PostgreSQL session while the intake keeps it (on), and back as the pool hands
    it out (off). Elsewhere a no-op.

    - autocommit: the batch has ONE write statement (the INSERT), which then is its own transaction, committed
      (synchronous_commit on: flushed) before the statement returns, i.e. before any request of the batch answers.
      The reads before it (shops, event ids) see the latest committed data, as they would inside a READ COMMITTED
      transaction, which is all the isolation they had. What it saves: the BEGIN and COMMIT round trips, 2 of
      the batch's 5 (each one a wait, a GIL hand-off and ~40-70 us of client + server CPU).
    - default_toast_compression = lz4 (PostgreSQL >= 14 built with lz4; silently kept at the server's default
      otherwise): the ~15 KB order body is compressed by the server at insert; pglz cost ~100 us of server CPU
      per row, lz4 ~10 us (measured on the bench's body). A session setting, not a schema change: every reader
      decompresses either kind transparently (the method is stored with each value)."""
    driver = getattr(raw, "driver_connection", None)
    if driver is None or not hasattr(driver, "autocommit") or not hasattr(driver, "pgconn"):
        return                                        # not psycopg (PostgreSQL)
    if on and not raw.info.get(INTAKE_SESSION):
        driver.autocommit = True
        try:
            driver.execute("SET default_toast_compression = 'lz4'")
        except Exception as exc:                     # noqa: BLE001 - no lz4 (or PostgreSQL < 14): keep pglz
            log.info("intake: lz4 TOAST compression unavailable (%s); the server default is used", exc)
        raw.info[INTAKE_SESSION] = True
    elif not on and raw.info.pop(INTAKE_SESSION, None):
        driver.execute("RESET default_toast_compression")
        driver.autocommit = False


@contextlib.contextmanager
def _begin(engine, raw):
    """One transaction on `raw`: commit when the body succeeds, roll back when it raises. The dedicated
    PostgreSQL connection is in autocommit (_pg_session): its batch's one write statement commits itself."""
    cur = raw.cursor()

    def run(statement: str, params: tuple, fetch: bool = True):
        cur.execute(statement, params)
        if fetch:
            return cur.fetchall()
        return cur.rowcount, cur.lastrowid

    try:
        if raw.info.get(INTAKE_SESSION):
            yield run
            return
        if engine.dialect.name == "sqlite":
            _sqlite_session(raw, True)
            cur.execute("BEGIN IMMEDIATE")
        try:
            yield run
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
    finally:
        cur.close()


def _sqlite_datetime(value: dt.datetime) -> str:
    """SQLAlchemy's SQLite DATETIME storage format ("%Y-%m-%d %H:%M:%S.%f", zero-padded year)."""
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond:06d}")


def _same_text(processor, candidate) -> bool:
    """True when `candidate` writes exactly what SQLAlchemy's bind processor writes for a few telling values (a
    different SQLAlchemy storage format keeps the processor)."""
    probes = (dt.datetime(2026, 11, 24, 5, 6, 7, 89), dt.datetime(999, 1, 2, 3, 4, 5), dt.datetime(2026, 12, 31))
    return all(processor(v) == candidate(v) for v in probes)


class _Sql:
    """The batch's statements as driver SQL (no ORM, no statement compilation per request): built once per
    dialect and batch size. Works on SQLite >= 3.24 (INSERT .. ON CONFLICT DO NOTHING, ids by last_insert_rowid) and
    PostgreSQL (.. RETURNING)."""
    _by_dialect: dict[str, "_Sql"] = {}

    def __init__(self, dialect):
        if dialect.paramstyle not in ("qmark", "format", "pyformat"):
            raise NotImplementedError(f"webhook intake: driver paramstyle {dialect.paramstyle}")
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        # The column type's own conversion (SQLite stores DateTime as text in SQLAlchemy's format), or on SQLite
        # the same text written directly (_sqlite_datetime: a tenth of the processor's cost, two per row).
        self._dt = _table.c.received_at.type._cached_bind_processor(dialect)
        if self._dt is not None and dialect.name == "sqlite" and _same_text(self._dt, _sqlite_datetime):
            self._dt = _sqlite_datetime
        self._cache: dict[tuple[str, int], str] = {}
        # SQLite: ids of the inserted rows from last_insert_rowid() (see _inserted_ids); elsewhere RETURNING.
        self.returning = dialect.name != "sqlite"
        self.inserted_between = (f"SELECT id, shop_domain, event_id, webhook_id FROM {_table.name} "
                                 f"WHERE id BETWEEN {self.mark} AND {self.mark}")

    @classmethod
    def of(cls, dialect) -> "_Sql":
        sql = cls._by_dialect.get(dialect.name)
        if sql is None:
            sql = cls._by_dialect[dialect.name] = cls(dialect)
        return sql

    def datetime(self, value):
        return self._dt(value) if self._dt and value is not None else value

    def _marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    def lookups(self, n_domains: int, event_groups: tuple[int, ...]) -> str:
        """Rows (0, shop id, domain, status, NULL, NULL) of the batch's shops, then (1, NULL, domain, topic, event
        id, webhook id) of the recorded deliveries of its event ids, one (domain, topic, event ids) group each."""
        key = ("lookups", n_domains, event_groups)
        if key not in self._cache:
            if len(self._cache) > 512:           # many shops: group shapes vary; the statement is cheap to rebuild
                self._cache.clear()
            q = (f"SELECT 0, id, domain, status, NULL, NULL FROM {Shop.__tablename__} "
                 f"WHERE domain IN ({self._marks(n_domains)})")
            for n in event_groups:   # a branch per group: each a lookup on the unique key's (domain, event) prefix
                q += (f" UNION ALL SELECT 1, NULL, shop_domain, topic, event_id, webhook_id FROM {_table.name} "
                      f"WHERE shop_domain = {self.mark} AND topic = {self.mark} AND event_id IN ({self._marks(n)}) "
                      f"AND status <> 'invalid'")
            self._cache[key] = q
        return self._cache[key]

    def insert(self, n: int) -> str:
        key = ("insert", n)
        if key not in self._cache:
            row = f"({self._marks(len(_COLUMNS))})"
            self._cache[key] = (
                f"INSERT INTO {_table.name} ({', '.join(_COLUMNS)}) VALUES {', '.join([row] * n)} "
                f"ON CONFLICT DO NOTHING"
                + (" RETURNING id, shop_domain, event_id, webhook_id" if self.returning else ""))
        return self._cache[key]
