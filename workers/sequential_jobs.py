"""Sequential ("buy next") count tables in the database: per-customer maintenance, compaction and full rebuild.

Definition: shopify_app.analytics.sequential. Tables: SequentialItemDelta (antecedent occurrences) and
SequentialPairDelta (antecedent occurrence followed by item_b within N days), keyed by the antecedent order's
month bucket, ALL customers (no segment split). Pair counts = SequentialPairDelta rows (a rebuild's output) +
one folded payload per bucket (CountSnapshot kind SNAPSHOT_KIND, segment '*') + SequentialPairBlob payloads (one
per batch and bucket, signed); every reader sums all three (`read_pair_sums`, rules_jobs.read_sequential). Source
of truth: the shop's counted Order rows with a customer
and their OrderLine rows (items = distinct product ids with quantity - refunded_quantity > 0) - the same items
as `Order.contribution["items"]`.

N (`sequential_days`) is part of the tables' meaning, so the N the tables were built with is stored in
ShopModel(kind 'sequential').params {"days": N}. The order job keeps using that N; when the shop setting differs
it asks for `rebuild_sequential` (which adopts the setting).

Per-batch maintenance (used by order_jobs.apply_version / write_counts, so every caller of those steps - order
job, reconciliation, import - keeps the tables exact): the first time a batch touches a customer, their counts
are computed from their stored orders ("before"); after the batch, again ("after"); after - before is written:
item deltas upserted as rows (a few per order), pair deltas as ONE SequentialPairBlob per bucket (a batch of 200
time-compressed Online Retail orders changes ~10^5 directed pairs; upserting them row by row was most of the
batch on PostgreSQL). Compaction (`compact_sequential_job`, run by workers.rebuild_jobs.compact_shop) folds the
blobs into their bucket's snapshot payload: sums them in a read transaction, then in short write transactions
deletes exactly the blobs it read (by id) and rewrites the payload with their sums added (see the compaction
section for why a payload and not rows, and for its lock).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from sqlalchemy import delete, insert, null, select, text
from sqlalchemy.orm import Session

from shopify_app.analytics.counts import aggregate_keyed
from shopify_app.analytics.rules import sorted_unique
from shopify_app.analytics.sequential import (
    counts_of_customers, customer_sequential_counts, sequential_delta, summed_delta_arrays,
)
from shopify_app.db import get_engine
from shopify_app.models import (
    ALL_SEGMENTS, CountSnapshot, Order, OrderLine, SequentialItemDelta, SequentialPairBlob, SequentialPairDelta, Shop,
    ShopModel, utcnow,
)
from shopify_app.settings import shop_settings

from . import context
from .bulk_rows import insert_rows, upsert_add

log = logging.getLogger(__name__)

SEQ_KIND = "sequential"
CHUNK = 500
JOB_TIMEOUT = 60 * 60


# --------------------------------------------------------------------------------------------- reads
def _group(rows) -> dict[int, list]:
    """(customer, order, time, product, quantity, refunded) rows -> {customer: [(time, items)]}."""
    orders: dict[int, dict] = defaultdict(dict)
    for cid, oid, t, pid, qty, refunded in rows:
        entry = orders[int(cid)].setdefault(oid, (t, set()))
        if pid is not None and (qty or 0) - (refunded or 0) > 0:
            entry[1].add(int(pid))
    return {cid: list(by_order.values()) for cid, by_order in orders.items()}


def customer_orders(s, shop_id: int, customer_ids) -> dict[int, list]:
    """{customer: [(time, items)]} of the given customers' counted orders.

    Two index-driven queries (orders by ix_orders_shop_customer, then their lines by primary key) rather than
    one join: with the join, SQLite's planner (no statistics) drives from ix_order_lines_shop_product and
    scans every line of the shop - a hidden O(history) per order found by bench/bench_order_update.py."""
    ids = sorted({int(c) for c in customer_ids if c is not None})
    heads: dict[int, tuple] = {}
    for i in range(0, len(ids), CHUNK):
        for oid, cid, t in s.connection().execute(select(Order.id, Order.customer_id, Order.processed_at).where(
                Order.shop_id == shop_id, Order.customer_id.in_(ids[i:i + CHUNK]), Order.counted.is_(True))):
            heads[oid] = (cid, t)
    return {cid: list(by_order.values()) for cid, by_order in orders_items(s, shop_id, heads).items()}


def orders_items(s, shop_id: int, heads: dict) -> dict[int, dict]:
    """{customer: {order id: (time, items)}} of the orders `heads` = {order id: (customer, time)}, items = the
    distinct product ids with quantity - refunded_quantity > 0 (an order without such lines has none). The lines
    are read by primary key, CHUNK orders per query."""
    out: dict[int, dict] = defaultdict(dict)
    for oid, (cid, t) in heads.items():
        out[int(cid)][oid] = (t, set())
    order_ids = sorted(heads)
    for i in range(0, len(order_ids), CHUNK):
        for oid, pid, qty, refunded in s.connection().execute(
                select(OrderLine.order_id, OrderLine.product_id, OrderLine.quantity, OrderLine.refunded_quantity)
                .where(OrderLine.shop_id == shop_id, OrderLine.order_id.in_(order_ids[i:i + CHUNK]))):
            if pid is not None and (qty or 0) - (refunded or 0) > 0:
                out[int(heads[oid][0])][oid][1].add(int(pid))
    return out


def _all_orders_query(shop_id: int):
    """Whole shop, grouped by customer (rebuild): a full scan is what a rebuild is."""
    return (select(Order.customer_id, Order.id, Order.processed_at, OrderLine.product_id, OrderLine.quantity,
                   OrderLine.refunded_quantity)
            .join(OrderLine, (OrderLine.shop_id == Order.shop_id) & (OrderLine.order_id == Order.id))
            .where(Order.shop_id == shop_id, Order.counted.is_(True), Order.customer_id.is_not(None)))


def days_in_use(s, shop: Shop) -> int:
    """N the shop's tables are built with (the setting when nothing was built yet)."""
    model = s.get(ShopModel, (shop.id, SEQ_KIND))
    if model is not None and isinstance((model.params or {}).get("days"), int):
        return int(model.params["days"])
    return shop_settings(shop).sequential_days


def _record_days(s, shop_id: int, days: int, now: dt.datetime) -> None:
    model = s.get(ShopModel, (shop_id, SEQ_KIND))
    if model is None:
        model = ShopModel(shop_id=shop_id, kind=SEQ_KIND, version=0, customers_at_fit=0)
        s.add(model)
    if (model.params or {}).get("days") != days or not model.version:
        model.version = int(model.version or 0) + 1
        model.params = {"days": days}
        model.fitted_at = now


def rebuild_needed(s, shop: Shop) -> bool:
    """The shop changed `sequential_days` since the tables were built."""
    model = s.get(ShopModel, (shop.id, SEQ_KIND))
    return model is not None and days_in_use(s, shop) != shop_settings(shop).sequential_days


# --------------------------------------------------------------------------------------------- per-batch
class BatchTracker:
    """Per-customer before/after bookkeeping of one batch of order versions (see the module docstring)."""

    def __init__(self, s, shop_id: int):
        self.shop_id = shop_id
        self.before: dict[int, list] = {}          # customer -> their counted orders [(time, items)] before
        shop = s.get(Shop, shop_id)
        self.days = days_in_use(s, shop)

    def touch(self, s, customer_ids) -> None:
        """Call BEFORE changing any of these customers' orders."""
        new = {int(c) for c in customer_ids if c is not None} - set(self.before)
        if not new:
            return
        s.flush()
        orders = customer_orders(s, self.shop_id, new)
        for cid in new:
            self.before[cid] = orders.get(cid, [])

    def write(self, s) -> dict:
        """After the batch: write after - before of every touched customer (summed_deltas). Returns the summed
        deltas: {"items": {(bucket, item): n}, "pairs": {bucket: (a, b, n) arrays}}."""
        if not self.before:
            return {"items": {}, "pairs": {}}
        s.flush()
        orders = customer_orders(s, self.shop_id, self.before)
        items, pairs = summed_deltas(((before, orders.get(cid, [])) for cid, before in self.before.items()), self.days)
        write_payloads(s, self.shop_id, *delta_payloads(self.shop_id, items, pairs))
        self.before.clear()            # the next write starts from the new state
        _record_days(s, self.shop_id, self.days, utcnow())
        return {"items": items, "pairs": pairs}


def summed_deltas(changes, days: int) -> tuple[dict, dict]:
    """Sum over customers of analytics.sequential.sequential_delta_arrays(before, after, days) (only the span a
    change touches is recounted), `changes` = (before, after) lists of a customer's (time, items) orders. Returns
    ({(bucket, item): n}, {bucket: (a, b, n) arrays}), zero counts and empty buckets dropped."""
    return summed_delta_arrays(changes, days)


def write_deltas(s, shop_id: int, items: dict, pairs: dict, now: dt.datetime | None = None) -> int:
    """Signed deltas {(bucket, item): n} / {(bucket, a, b): n}: items upserted as rows, pairs as one blob per
    bucket (zeros dropped). Returns the blobs written."""
    by_bucket: dict[str, list] = defaultdict(list)
    for (bucket, a, b), n in pairs.items():
        if n:
            by_bucket[bucket].append((a, b, n))
    arrays = {bucket: tuple(np.array(rows, dtype=np.int64).T) for bucket, rows in by_bucket.items()}
    return write_payloads(s, shop_id, *delta_payloads(shop_id, items, arrays), now=now)


def delta_payloads(shop_id: int, items: dict, pairs: dict) -> tuple[list, list]:
    """What write_payloads writes for signed deltas {(bucket, item): n} and {bucket: (a, b, n) arrays}: the item
    rows (shop_id, bucket, item, n) and one (bucket, pairs, encode_directed_pairs payload) blob per bucket, zeros
    dropped. Pure: the order job builds them before it takes the write lock."""
    rows = [(shop_id, b, i, n) for (b, i), n in sorted(items.items()) if n]
    blobs = [(bucket, int(arrays[0].size),
              encode_directed_pairs(*arrays, index=getattr(arrays, "pair_index", None)))   # PairArrays: no sort
             for bucket, arrays in sorted(pairs.items()) if arrays[0].size]
    return rows, blobs


def write_payloads(s, shop_id: int, rows: list, blobs: list, now: dt.datetime | None = None) -> int:
    """Upsert delta_payloads' item rows and insert its pair blobs. Returns the blobs written."""
    if rows:
        upsert_add(s, SequentialItemDelta, ["shop_id", "bucket", "item_id"], "count",
                   ["shop_id", "bucket", "item_id", "count"], rows)
    if blobs:
        created = now or utcnow()
        s.execute(insert(SequentialPairBlob.__table__), [
            {"shop_id": shop_id, "bucket": b, "pairs": n, "data": data, "created_at": created}
            for b, n, data in blobs])
    return len(blobs)


# --------------------------------------------------------------------------------------------- pair blobs
def encode_directed_pairs(a, b, counts, index=None) -> bytes:
    """Directed pairs a -> b (product ids, any order) as numpy .npz: ``ids`` (sorted distinct items), ``i`` /
    ``j`` (int32: a = ids[i], b = ids[j]; analytics.counts' pair payloads require a < b, these keep direction),
    ``counts`` (int32, int64 when needed). Deflate level 1 (as analytics.counts' live blobs): a few ms per 10^5
    pairs, ~4x smaller than raw. `index`: (ids, i, j) of these pairs when the caller has them
    (analytics.sequential.PairArrays.pair_index): the same payload without the sort and the searches."""
    counts = np.asarray(counts, dtype=np.int64)
    if index is None:
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        ids = sorted_unique(np.concatenate([a, b]))
        i, j = np.searchsorted(ids, a), np.searchsorted(ids, b)
    else:
        ids, i, j = index
    wide = counts.size and (counts.min() < -2**31 or counts.max() >= 2**31)
    arrays = {"ids": np.asarray(ids, dtype=np.int64), "i": np.asarray(i).astype(np.int32),
              "j": np.asarray(j).astype(np.int32), "counts": counts.astype(np.int64 if wide else np.int32)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    return buf.getvalue()


def decode_directed_pairs(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, counts) int64 arrays of an `encode_directed_pairs` payload."""
    with np.load(io.BytesIO(data)) as z:
        ids = z["ids"].astype(np.int64)
        return ids[z["i"]], ids[z["j"]], z["counts"].astype(np.int64)


def sum_directed_pairs(parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum of (a, b, counts) arrays by directed pair: sorted by (a, b), zero sums dropped."""
    parts = list(parts)
    if not parts:
        empty = np.array([], dtype=np.int64)
        return empty, empty, empty
    a, b, n = (np.concatenate([np.asarray(p[k], dtype=np.int64) for p in parts]) for k in range(3))
    ids = sorted_unique(np.concatenate([a, b]))
    m = np.int64(len(ids))
    i, j, c = aggregate_keyed(int(m), np.searchsorted(ids, a) * m + np.searchsorted(ids, b), n)
    return ids[i], ids[j], c


def read_blobs(s, shop_id: int, first: str | None = None, last: str | None = None) -> list[tuple]:
    """[(id, bucket, payload)] of the shop's pair blobs with first <= bucket <= last (None: open end)."""
    q = select(SequentialPairBlob.id, SequentialPairBlob.bucket, SequentialPairBlob.data).where(
        SequentialPairBlob.shop_id == shop_id)
    if first is not None:
        q = q.where(SequentialPairBlob.bucket >= first)
    if last is not None:
        q = q.where(SequentialPairBlob.bucket <= last)
    return [tuple(r) for r in s.execute(q.order_by(SequentialPairBlob.id))]


SNAPSHOT_KIND = "seq_pairs"      # CountSnapshot.kind of the folded sequential pair payloads (segment '*')


def _snapshot_where(shop_id: int) -> list:
    return [CountSnapshot.shop_id == shop_id, CountSnapshot.kind == SNAPSHOT_KIND,
            CountSnapshot.segment == ALL_SEGMENTS]


def read_snapshots(s, shop_id: int, first: str | None = None, last: str | None = None,
                   data: bool = True) -> list[tuple]:
    """[(bucket, built_at, payload)] of the shop's folded sequential pair payloads with first <= bucket <= last
    (None: open end). built_at changes with every fold, so (bucket, built_at) identifies a payload's version
    (data=False: payload None, to compare versions without reading the bytes)."""
    q = select(CountSnapshot.bucket, CountSnapshot.built_at,
               CountSnapshot.data if data else null()).where(*_snapshot_where(shop_id))
    if first is not None:
        q = q.where(CountSnapshot.bucket >= first)
    if last is not None:
        q = q.where(CountSnapshot.bucket <= last)
    return [tuple(r) for r in s.execute(q.order_by(CountSnapshot.bucket))]


def read_pair_sums(s, shop_id: int) -> dict:
    """{(bucket, a, b): count} = rows + snapshot payloads + blobs, zeros dropped (tests, diagnostics: the whole
    shop at once)."""
    out: Counter = Counter()
    for bucket, a, b, n in s.execute(select(SequentialPairDelta.bucket, SequentialPairDelta.item_a,
                                            SequentialPairDelta.item_b, SequentialPairDelta.count)
                                     .where(SequentialPairDelta.shop_id == shop_id)):
        out[(bucket, int(a), int(b))] += int(n)
    payloads = [(bucket, data) for _id, bucket, data in read_blobs(s, shop_id)]
    payloads += [(bucket, data) for bucket, _at, data in read_snapshots(s, shop_id)]
    for bucket, data in payloads:
        for a, b, n in zip(*(x.tolist() for x in decode_directed_pairs(data))):
            out[(bucket, a, b)] += n
    return {k: n for k, n in out.items() if n}


def compaction_due(s, shop_id: int) -> bool:
    """The shop's sequential pair blobs passed COMPACT_BLOBS / COMPACT_PAIRS (order_jobs' knobs; one index range
    count), so the order job should enqueue workers.rebuild_jobs.compact_shop."""
    from .order_jobs import blobs_past_thresholds      # lazily: order_jobs imports this module

    return blobs_past_thresholds(s, SequentialPairBlob, shop_id)


# --------------------------------------------------------------------------------------------- compaction
# A fold adds the summed blobs of a bucket to that bucket's ONE snapshot payload (CountSnapshot, kind
# SNAPSHOT_KIND): read the payload, add in numpy, write it back. Folding into rows cost one upserted row per
# distinct pair, ~10-25 us a row on PostgreSQL (12 time-compressed bench (d) batches = 690k distinct pairs: 14-19 s
# of database time), more than the live pipeline could spare; a payload costs its size in decode/encode (numbers:
# docs/live-updates.md). Order batches only INSERT blobs and never read payloads or delete blobs, so the fold does
# not need the shop row lock: it serializes only with the other writers of payloads / pair rows - compaction and
# the rebuild's replace - through `lock_sequential`. FOLD_PAIRS bounds the blob pairs one fold sums in memory.
FOLD_PAIRS = 2_000_000
SEQ_LOCK_SPACE = 0x53455121      # pg_advisory_xact_lock(space, shop id): the shop's sequential pair rows


def lock_sequential(s, shop_id: int) -> None:
    """Until the transaction ends, be the only writer of the shop's sequential pair rows, snapshot payloads and
    blobs' deletion (PostgreSQL advisory lock; SQLite: the write transaction already is)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:space, :shop)"), {"space": SEQ_LOCK_SPACE, "shop": shop_id})


@dataclass
class SequentialFold:
    """One fold a compaction read: some blobs of one bucket (by id) and their summed pairs. With `merged`, the
    bucket's snapshot payload after the fold was computed from the payload `base` (None: no payload) outside the
    write lock; the fold writes it as is when the payload under the lock is still `base`."""
    bucket: str
    blob_ids: list = field(default_factory=list)
    sums: tuple = ()                               # (a, b, counts), zero sums dropped
    base: bytes | None = None
    merged: bytes | None = None                    # None: not premerged; b"": the sum is empty, delete the payload


def read_sequential_compaction(s, shop_id: int, fold_pairs: int | None = None) -> list[SequentialFold]:
    """The shop's blobs, by bucket, in groups of at most `fold_pairs` (FOLD_PAIRS) blob pairs (one blob at
    least), each summed: reads only (fit for a read transaction)."""
    limit = fold_pairs or FOLD_PAIRS
    groups: list[tuple[str, list]] = []
    size = 0
    for blob_id, bucket, pairs, data in s.execute(
            select(SequentialPairBlob.id, SequentialPairBlob.bucket, SequentialPairBlob.pairs, SequentialPairBlob.data)
            .where(SequentialPairBlob.shop_id == shop_id).order_by(SequentialPairBlob.bucket, SequentialPairBlob.id)):
        if not groups or groups[-1][0] != bucket or size + pairs > limit:
            groups.append((bucket, []))
            size = 0
        groups[-1][1].append((blob_id, data))
        size += pairs
    return [SequentialFold(bucket, [i for i, _ in blobs], sum_directed_pairs(decode_directed_pairs(d)
                                                                             for _, d in blobs))
            for bucket, blobs in groups]


def premerge_sequential_folds(s, shop_id: int, folds: list[SequentialFold]) -> list[SequentialFold]:
    """Compute each fold's new snapshot payload from the payloads as read in `s` (a read transaction), so that the
    write lock covers only the blob deletes, one payload comparison and one payload write. Decoding the bucket's
    payload, adding and encoding it again costs its size, not the fold's: under time-compressed load (bench (d))
    one month's payload holds millions of pairs, and the fold held the lock 0.3-1.5 s, which the webhook intake and
    the order job waited for. Folds of one bucket chain: the next one's base is the previous one's result."""
    if not folds:
        return folds
    buckets = sorted({f.bucket for f in folds})
    current: dict = {bucket: None for bucket in buckets}
    for bucket, data in s.execute(select(CountSnapshot.bucket, CountSnapshot.data)
                                  .where(*_snapshot_where(shop_id), CountSnapshot.bucket.in_(buckets))):
        current[bucket] = data
    for fold in folds:
        fold.base = None if current[fold.bucket] is None else bytes(current[fold.bucket])
        fold.merged = _merged_payload(fold.sums, fold.base)
        current[fold.bucket] = fold.merged or None
    return folds


def _merged_payload(sums: tuple, old) -> bytes:
    """The snapshot payload `old` (None: none) plus a fold's summed pairs; b"" when they cancel out."""
    a, b, n = sum_directed_pairs([sums] + ([decode_directed_pairs(old)] if old is not None else []))
    return encode_directed_pairs(a, b, n) if len(n) else b""


class _Folded(Exception):
    """Some blob the compaction read is gone: another compaction or a rebuild folded it in between."""


def apply_sequential_compaction(s, shop_id: int, folds: list[SequentialFold]) -> int:
    """In the caller's transaction, under `lock_sequential`: per fold (a savepoint each), delete exactly the blobs
    read and add their sums to the bucket's snapshot payload (read under the lock, so the latest; an all-zero sum
    deletes it). Blobs written after the read stay. Payloads are only written here and by the rebuild (which
    deletes every blob and payload), so a fold whose blobs are all still there adds to a payload that does not
    contain them yet; one whose blobs are gone is skipped. Returns the folds applied."""
    if not folds:
        return 0
    lock_sequential(s, shop_id)
    done = 0
    for fold in folds:
        try:
            with s.begin_nested():
                _fold(s, shop_id, fold)
            done += 1
        except _Folded:
            log.info("sequential compaction of shop %s bucket %s skipped: blobs already folded", shop_id,
                     fold.bucket)
    return done


def _fold(s, shop_id: int, fold: SequentialFold) -> None:
    for i in range(0, len(fold.blob_ids), CHUNK):
        ids = fold.blob_ids[i:i + CHUNK]
        if s.execute(delete(SequentialPairBlob).where(SequentialPairBlob.shop_id == shop_id,
                                                      SequentialPairBlob.id.in_(ids))
                     .execution_options(synchronize_session=False)).rowcount != len(ids):
            raise _Folded()
    if not len(fold.sums[2]):
        return
    where = [*_snapshot_where(shop_id), CountSnapshot.bucket == fold.bucket]
    old = s.scalar(select(CountSnapshot.data).where(*where))
    if fold.merged is not None and (None if old is None else bytes(old)) == fold.base:
        data = fold.merged                         # computed outside the lock from this very payload
    else:                                          # not premerged, or the payload changed since: merge here
        data = _merged_payload(fold.sums, old)
    if old is None:
        if data:
            s.execute(insert(CountSnapshot.__table__), [{"shop_id": shop_id, "kind": SNAPSHOT_KIND,
                                                          "segment": ALL_SEGMENTS, "bucket": fold.bucket,
                                                          "baskets": 0, "data": data, "built_at": utcnow()}])
    elif data:
        s.execute(CountSnapshot.__table__.update().where(*where).values(data=data, built_at=utcnow()))
    else:                                          # the blobs cancelled the payload out
        s.execute(delete(CountSnapshot).where(*where).execution_options(synchronize_session=False))


def compact_sequential(s, shop_id: int) -> int:
    """Fold all the shop's sequential blobs into their payloads in the caller's transaction; returns the folds
    applied."""
    return apply_sequential_compaction(s, shop_id, read_sequential_compaction(s, shop_id))


def compact_sequential_job(shop_id: int, run_read=None) -> dict:
    """Read + sum in a read transaction, then one short write transaction per fold (see FOLD_PAIRS). `run_read`
    runs the read phase (a callable taking it; workers.rebuild_jobs passes workers.priority.niced so that only the
    lock-free read runs at background priority); default: in this thread."""
    def read():
        with context.read_transaction() as s:
            return premerge_sequential_folds(s, shop_id, read_sequential_compaction(s, shop_id))

    t0 = time.perf_counter()
    folds = run_read(read) if run_read is not None else read()
    t1 = time.perf_counter()
    done, longest = 0, 0.0
    for fold in folds:
        tw = time.perf_counter()
        with context.write_transaction() as s:
            done += apply_sequential_compaction(s, shop_id, [fold])
        longest = max(longest, time.perf_counter() - tw)
    return {"folds": done, "skipped": len(folds) - done, "blobs": sum(len(f.blob_ids) for f in folds),
            "read_s": round(t1 - t0, 2), "write_s": round(time.perf_counter() - t1, 2),
            "longest_write_s": round(longest, 2)}


def forget_customer(s, shop_id: int, customer_id: int) -> dict:
    """customers/redact: subtract the customer's sequential counts. Call BEFORE unlinking their orders
    (Order.customer_id = None): afterwards their orders are guest orders, which count for nothing here, and a
    rebuild would agree."""
    shop = s.get(Shop, shop_id)
    days = days_in_use(s, shop)
    items, pairs = customer_sequential_counts(customer_orders(s, shop_id, [customer_id]).get(int(customer_id), []),
                                              days)
    write_deltas(s, shop_id, {k: -v for k, v in items.items()}, {k: -v for k, v in pairs.items()})
    return {"items": sum(items.values()), "pairs": sum(pairs.values())}


# --------------------------------------------------------------------------------------------- rebuild
# The job computes the counts in a read transaction (no write lock: on SQLite a write transaction blocks every
# other writer, the webhook intake included, and counting ~10M sequential pairs takes a minute), then replaces the
# rows in one short write transaction. Orders written in between are caught by comparing each order's state with
# the one read (customer: a redaction changes only that; counted, processed_at, Shopify's updated_at - newer in
# every version that replaces a stored one -, deleted_at for tombstones, ingested_at set by every write); the
# customers of changed orders are recounted under the lock, as the order job's BatchTracker does (the tables are
# a sum over customers). More than this many changed customers: recount all
# under the lock (the previous behaviour), which is rare (an import running at the same time).
MAX_RECOUNTED_CUSTOMERS = 2_000


def rebuild_sequential(s, shop_id: int, days: int | None = None, now: dt.datetime | None = None) -> dict:
    """Recompute both tables of the shop from its Order / OrderLine rows with N = the shop's `sequential_days`
    setting (or `days`), all in the caller's transaction, which should hold the shop row lock (context.lock_shop,
    as the order job does) so no order batch interleaves. The job (`rebuild_sequential_job`) keeps the
    lock only for the write. Memory: the counters only."""
    shop = s.get(Shop, shop_id)
    n_days = int(days or shop_settings(shop).sequential_days)
    s.flush()
    items, pairs, customers, _ = _count_all(s, shop_id, n_days, keep_orders=False)
    return _replace(s, shop_id, n_days, _rows(shop_id, items, pairs), customers, now)


def _count_all(s, shop_id: int, n_days: int, keep_orders: bool) -> tuple[Counter, Counter, int, dict]:
    """Counts over every customer of the shop (one streamed, customer-ordered scan); with keep_orders, also
    {customer: [(time, items)]}, to recount a customer later."""
    items: Counter = Counter()
    pairs: Counter = Counter()
    kept: dict[int, list] = {}
    cur, cur_rows, customers = None, [], 0

    def flush_customer():
        grouped = _group(cur_rows)
        i, p = counts_of_customers(grouped, n_days)
        items.update(i)
        pairs.update(p)
        if keep_orders:
            kept.update(grouped)

    q = _all_orders_query(shop_id).order_by(Order.customer_id, Order.processed_at, Order.id)
    for row in s.execute(q.execution_options(yield_per=20_000)):   # streamed (server-side cursor on PG)
        if row[0] != cur and cur_rows:
            flush_customer()
            cur_rows, customers = [], customers + 1
        cur = row[0]
        cur_rows.append(tuple(row))
    if cur_rows:
        flush_customer()
        customers += 1
    return items, pairs, customers, kept


def _rows(shop_id: int, items: Counter, pairs: Counter) -> tuple[list, list]:
    """Table rows as plain tuples in key order (inserting in index order is faster)."""
    return (sorted((shop_id, b, i, n) for (b, i), n in items.items() if n),
            sorted((shop_id, b, a, c, n) for (b, a, c), n in pairs.items() if n))


def _corrected(shop_id: int, rows: list, delta: Counter) -> list:
    """Sorted rows (shop_id, *key, count) plus signed deltas {key: n}: zero counts dropped, new keys added."""
    delta = {k: n for k, n in delta.items() if n}
    if not delta:
        return rows
    out = []
    for row in rows:
        d = delta.pop(row[1:-1], 0)
        if row[-1] + d:
            out.append(row if not d else (*row[:-1], row[-1] + d))
    if delta:
        out.extend((shop_id, *k, n) for k, n in delta.items() if n)
        out.sort()
    return out


ITEM_COLUMNS = ("shop_id", "bucket", "item_id", "count")
PAIR_COLUMNS = ("shop_id", "bucket", "item_a", "item_b", "count")
STAGE = (("seq_stage_items", SequentialItemDelta.__table__, ITEM_COLUMNS),
         ("seq_stage_pairs", SequentialPairDelta.__table__, PAIR_COLUMNS))


def _replace(s, shop_id: int, n_days: int, rows: tuple[list, list], customers: int,
             now: dt.datetime | None, staged: bool = False) -> dict:
    """Replace the shop's rows: one executemany per table (COPY on PostgreSQL) of plain tuples; SQLAlchemy's
    per-row parameter dicts cost more than the insert itself at millions of rows. `staged`: the same rows are
    in this SQLite connection's TEMP tables (see `_writer`), copied with one INSERT ... SELECT each."""
    s.flush()
    lock_sequential(s, shop_id)                    # a compaction folding blobs finishes first
    s.execute(delete(SequentialPairDelta).where(SequentialPairDelta.shop_id == shop_id))
    s.execute(delete(SequentialPairBlob).where(SequentialPairBlob.shop_id == shop_id))
    s.execute(delete(CountSnapshot).where(*_snapshot_where(shop_id)).execution_options(synchronize_session=False))
    s.execute(delete(SequentialItemDelta).where(SequentialItemDelta.shop_id == shop_id))
    for (stage, table, columns), table_rows in zip(STAGE, rows):
        if staged:
            cols = ", ".join(columns)
            s.execute(text(f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM temp.{stage} ORDER BY rowid"))
        else:
            insert_rows(s, table, columns, table_rows)
    item_rows, pair_rows = rows
    _record_days(s, shop_id, n_days, now or utcnow())
    return {"shop_id": shop_id, "days": n_days, "customers": customers, "items": len(item_rows),
            "pairs": len(pair_rows)}


# An Order row's state: every write of a row sets ingested_at (a new version also a newer shopify_updated_at, a
# redaction customer_id = None), so an unchanged state means an unchanged row. Compared by the sequential rebuild
# (below) and by the order job's write phase with what its prepare phase read.
ORDER_STATE_COLUMNS = (Order.id, Order.customer_id, Order.counted, Order.processed_at, Order.shopify_updated_at,
                       Order.deleted_at, Order.ingested_at)


def _order_states(s, shop_id: int) -> dict[int, tuple]:
    """{order id: (customer, counted, processed_at, updated_at, deleted_at, ingested_at)} of every order of the
    shop: what changes whenever an order's contribution to the sequential tables can change."""
    return {row[0]: tuple(row[1:]) for row in s.execute(
        select(*ORDER_STATE_COLUMNS).where(Order.shop_id == shop_id))}


def _changed_customers(before: dict, after: dict) -> set[int]:
    changed: set[int] = set()
    for oid in before.keys() | after.keys():
        b, a = before.get(oid), after.get(oid)
        if b != a:
            changed.update(int(c) for c in (b and b[0], a and a[0]) if c is not None)
    return changed


@contextlib.contextmanager
def _writer(rows: tuple[list, list]) -> Iterator[tuple]:
    """(write session, staged). On SQLite, before the write transaction begins, the rows are copied into TEMP
    tables of the connection the write session then uses: TEMP tables live in the connection's own temp database,
    so filling them takes no lock on the shop's database, and under the lock one INSERT ... SELECT per table runs
    in SQLite's C code - measured 2.2x faster than executemany from Python. Elsewhere a plain transaction
    (PostgreSQL's COPY is fast, and its writers do not wait on this one except for the shop row)."""
    eng = get_engine(context.config().sqlalchemy_url)
    if eng.dialect.name != "sqlite":
        with context.transaction() as s:
            yield s, False
        return
    with eng.connect() as conn:
        raw = conn.connection.dbapi_connection         # autocommit mode (db.py drives BEGIN itself)
        try:
            for (stage, _table, columns), table_rows in zip(STAGE, rows):
                raw.execute(f"DROP TABLE IF EXISTS temp.{stage}")
                raw.execute(f"CREATE TEMP TABLE {stage} ({', '.join(columns)})")
                raw.execute("BEGIN")
                raw.executemany(f"INSERT INTO temp.{stage} VALUES ({', '.join('?' * len(columns))})", table_rows)
                raw.execute("COMMIT")
            with Session(bind=conn, expire_on_commit=False) as s:
                with s.begin():                         # BEGIN IMMEDIATE (db.py's begin hook)
                    yield s, True
        finally:
            for stage, _table, _columns in STAGE:
                raw.execute(f"DROP TABLE IF EXISTS temp.{stage}")


def rebuild_sequential_job(shop_id: int) -> dict:
    t0 = time.perf_counter()
    with context.read_transaction() as s:
        shop = s.get(Shop, shop_id)
        if shop is None:
            return {"shop_id": shop_id, "status": "missing"}
        n_days = shop_settings(shop).sequential_days
        # States before counts: without a snapshot (PostgreSQL's READ COMMITTED) an order committed between the
        # two reads is counted and also differs from its read state, so it is recounted - from what was counted.
        read_states = _order_states(s, shop_id)
        items, pairs, customers, orders = _count_all(s, shop_id, n_days, keep_orders=True)
    rows = _rows(shop_id, items, pairs)            # built before the lock (sorting millions of keys takes seconds)
    del items, pairs                               # the rows hold the counts; halves the peak while writing
    t1 = time.perf_counter()
    with _writer(rows) as (s, staged):
        t_lock = time.perf_counter()                 # SQLite: the staging into TEMP tables is done
        shop = context.lock_shop(s, shop_id)   # serialize with order jobs
        if shop is None:
            return {"shop_id": shop_id, "status": "missing"}
        changed = _changed_customers(read_states, _order_states(s, shop_id))
        if shop_settings(shop).sequential_days != n_days or len(changed) > MAX_RECOUNTED_CUSTOMERS:
            res = rebuild_sequential(s, shop_id)                    # everything under the lock
            res["recounted_under_lock"] = "all"
        else:
            if changed:
                now_orders = customer_orders(s, shop_id, changed)
                items_d: Counter = Counter()
                pairs_d: Counter = Counter()
                for cid in changed:
                    di, dp = sequential_delta(orders.get(cid, []), now_orders.get(cid, []), n_days)
                    items_d.update(di)
                    pairs_d.update(dp)
                customers = len((orders.keys() - changed) | now_orders.keys())
                rows = (_corrected(shop_id, rows[0], items_d), _corrected(shop_id, rows[1], pairs_d))
                staged = False                       # the staged rows are the uncorrected ones
            res = _replace(s, shop_id, n_days, rows, customers, None, staged)
            res["recounted_under_lock"] = len(changed)
    t2 = time.perf_counter()
    # lock_s: the write transaction, commit included (what other writers may wait); stage_s: SQLite's TEMP copy
    res.update(read_s=round(t1 - t0, 2), stage_s=round(t_lock - t1, 2), lock_s=round(t2 - t_lock, 2))
    log.info("rebuild_sequential shop=%s %s", shop_id, res)
    return res


def enqueue_rebuild_sequential(config, shop_id: int):
    from shopify_app.queues import DEFAULT, enqueue_unless_waiting

    return enqueue_unless_waiting(config, DEFAULT, "workers.sequential_jobs.rebuild_sequential_job", shop_id,
                                  job_id=f"rebuild-sequential-{shop_id}", timeout=JOB_TIMEOUT)
