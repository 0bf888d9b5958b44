"""Full rebuild of a shop's aggregates from its stored Order / OrderLine rows, count compaction, "Recompute now".

`rebuild_shop_state(s, shop_id, now)` (inside the caller's transaction, under the shop row lock) recomputes, with
pandas / numpy / scipy.sparse over the whole shop at once:
  - every CustomerStats aggregate column, with the definitions of shopify_app.analytics.incremental (counted
    orders only; money summed in integer cents, so the result is bit-identical to the incremental path). Rows of
    customers who still have a counted order keep their scores / segment; rows of customers without one are
    deleted (SegmentChange reason 'rebuild' when they had a segment); new customers get a row without scores;
  - the overall (segment "*") item / pair / basket counts per month bucket, written as CountSnapshot rows
    (kinds 'items' and 'pairs', `baskets` on both), replacing the shop's snapshots and deleting its deltas
    (*CountDelta rows and PairCountBlob rows of segment "*").
Writes are bulk statements (executemany / delete by shop), never ORM objects one by one.

Compaction folds deltas into the snapshots (snapshot + deltas -> new snapshot), exact, so reads stay one snapshot
+ few deltas per bucket. `compact_shop(shop_id)` (RQ job, enqueued by the order job when a shop's pair blobs pile
up, and by the hourly `compact_all_shops`) keeps SQLite's write lock short: it reads and sums in a read
transaction (`read_compaction`), then in a short write transaction under the shop row lock (`apply_compaction`)
replaces each bucket's snapshot, deletes exactly the blobs it read (by id) and subtracts the item / basket /
legacy pair delta values it read: deltas written in between stay, and stay counted. A bucket whose snapshot or
read deltas changed in between (a rebuild, another compaction) is left for the next run.
`compact_counts(s, shop_id)` does both steps in the caller's transaction. The same job then folds the shop's
sequential pair blobs into one 'seq_pairs' CountSnapshot payload per bucket (workers.sequential_jobs.
compact_sequential_job: read + sum in a read transaction, then a short write per bucket deleting exactly the blobs
read, by id; not under the shop row lock, which order batches need: see that module).

`read_counts(s, shop_id, first, last)` = sum over the buckets in [first, last] of snapshot + deltas.

RQ entry points: `rebuild_shop(shop_id)`, `compact_shop(shop_id)`, `compact_all_shops()`,
`recompute_shop(shop_id)` (the admin's "Recompute now": rebuild + rescore every customer + mine the rules).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, insert, select, text, update

from shopify_app.analytics import counts as C
from shopify_app.analytics.rules import PairCounts
from shopify_app.models import (
    ALL_SEGMENTS, BasketCountDelta, CountSnapshot, CustomerStats, ItemCountDelta, Job, Order, OrderLine,
    PairCountBlob, PairCountDelta, SegmentChange, SequentialPairBlob, utcnow,
)

from . import context
from .bulk_rows import upsert_add
from .priority import niced
from .sequential_jobs import compact_sequential_job

log = logging.getLogger(__name__)

KINDS = ("items", "pairs")
WRITE_CHUNK = 2000
MONEY = {"gross_revenue": "rev", "refunded": "ref", "net_revenue": "net", "discount_total": "disc",
         "pre_discount_total": "pre"}


# --------------------------------------------------------------------------------------------- entry points
def rebuild_shop(shop_id: int) -> dict:
    with context.transaction() as s:
        return rebuild_shop_state(s, shop_id, utcnow())


DELTA_MODELS = (BasketCountDelta, ItemCountDelta, PairCountDelta, PairCountBlob)


def compact_all_shops() -> dict:
    with context.read_transaction() as s:
        shop_ids = set()
        for model in DELTA_MODELS + (SequentialPairBlob,):
            shop_ids |= set(s.scalars(select(model.shop_id).distinct()))
    done = [compact_shop(shop_id) for shop_id in sorted(shop_ids)]
    return {"shops": len(done), "buckets": sum(d["buckets"] for d in done),
            "sequential_folds": sum(d["sequential_folds"] for d in done)}


def compact_shop(shop_id: int) -> dict:
    """Fold the shop's deltas into its snapshots and its sequential pair blobs into their 'seq_pairs' snapshots:
    read + sum without the write lock and at background priority (workers.priority: the calling thread keeps its
    priority for the writes, so a lock holder is never niced), then short writes. Result: the phases' seconds
    (write_s: the count write transaction; sequential_longest_write_s: the longest sequential one)."""
    t0 = time.perf_counter()
    plan = niced(_read_plan, shop_id)
    t1 = time.perf_counter()
    with context.write_transaction() as s:
        done = apply_compaction(s, shop_id, plan)
    t2 = time.perf_counter()
    sequential = _compact_sequential(shop_id)          # its own transactions, without the shop row lock
    return {"shop_id": shop_id, "buckets": done, "skipped": len(plan.buckets) - done,
            "sequential_folds": sequential["folds"], "sequential_skipped": sequential["skipped"],
            "read_s": round(t1 - t0, 3), "write_s": round(t2 - t1, 3),
            "sequential_read_s": sequential["read_s"], "sequential_longest_write_s": sequential["longest_write_s"]}


def _read_plan(shop_id: int) -> "CompactionPlan":
    with context.read_transaction() as s:
        return read_compaction(s, shop_id)


def _compact_sequential(shop_id: int) -> dict:
    """workers.sequential_jobs.compact_sequential_job with its read + sum niced: one read transaction, then one
    short write transaction per fold at normal priority."""
    return compact_sequential_job(shop_id, run_read=niced)


def compact_job_id(shop_id: int, followup: bool = False) -> str:
    return f"compact-counts-{shop_id}" + ("-next" if followup else "")


def enqueue_compact_shop(config, shop_id: int):
    """One waiting compaction per shop (a queued one reads the blobs when it starts); while one runs, the follow-up
    id is used (shopify_app.queues.enqueue_coalesced)."""
    from shopify_app.queues import DEFAULT, enqueue_coalesced

    return enqueue_coalesced(config, DEFAULT, "workers.rebuild_jobs.compact_shop", shop_id,
                             job_ids=(compact_job_id(shop_id), compact_job_id(shop_id, True)))


def recompute_shop(shop_id: int, now: dt.datetime | None = None) -> dict:
    """Rebuild + rescore everything (stored RFM thresholds refitted when helper code exists) + mine the rules."""
    from .rules_jobs import mine_rules

    now = now or utcnow()
    with context.transaction() as s:
        job = Job(shop_id=shop_id, kind="rebuild", status="running", done=0, details={}, started_at=now,
                  message="Recomputing customer stats and counts")
        s.add(job)
        s.flush()
        job_id = job.id
    try:
        with context.transaction() as s:
            result = rebuild_shop_state(s, shop_id, now)
            if result.get("status") == "missing":
                s.get(Job, job_id).status = "failed"
                return result
            result["segment_changes"] = rescore_all(s, shop_id, now)
            job = s.get(Job, job_id)
            job.message = "Mining product rules"
        result["rules"] = mine_rules(shop_id, now=now)
        _finish_job(job_id, "done", f"Recomputed {result['customers']:,} customers and "
                                    f"{result['rules'].get('pair', 0):,} pair rules")
        return result
    except Exception as exc:
        _finish_job(job_id, "failed", None, f"{type(exc).__name__}: {exc}")
        raise


def _finish_job(job_id: int, status: str, message: str | None, error: str | None = None) -> None:
    with context.transaction() as s:
        job = s.get(Job, job_id)
        job.status, job.finished_at, job.error = status, utcnow(), (error or None) and error[:2000]
        if message:
            job.message = message


def rescore_all(s, shop_id: int, now: dt.datetime) -> int:
    """Rescore every customer; refit and store the RFM thresholds when workers.rfm_jobs provides it."""
    shop = context.lock_shop(s, shop_id)
    try:
        from .rfm_jobs import refit_rfm_in_session
    except ImportError:
        refit_rfm_in_session = None
    if refit_rfm_in_session is not None:
        return int(refit_rfm_in_session(s, shop, now, reason="refit").get("changes", 0))
    from .order_jobs import rescore_customers

    rows = list(s.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id)))   # one query, then s.get hits
    return rescore_customers(s, shop, [r.customer_id for r in rows], now)


# --------------------------------------------------------------------------------------------- loading
def _frame(s, q, names: list[str]) -> pd.DataFrame:
    """Rows of `q` straight from the DBAPI cursor into a DataFrame (no per-row Row objects: ~1M lines in a few
    seconds). Only integer / boolean parameters are used, rendered as literals."""
    conn = s.connection()
    sql = str(q.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cur = conn.connection.cursor()
    try:
        cur.execute(sql)
        rows = cur.fetchall()
    finally:
        cur.close()
    return pd.DataFrame.from_records(rows, columns=names)


def load_orders(s, shop_id: int, since: dt.datetime | None = None, until: dt.datetime | None = None) -> pd.DataFrame:
    """Counted orders: order_id, customer_id (Int64, NA = guest), processed_at, subtotal, discounts, refunded."""
    q = select(Order.id, Order.customer_id, Order.processed_at, Order.subtotal, Order.total_discounts,
               Order.total_refunded).where(Order.shop_id == shop_id, Order.counted.is_(True))
    df = _frame(s, q, ["order_id", "customer_id", "processed_at", "subtotal", "total_discounts", "total_refunded"])
    df["order_id"] = df["order_id"].astype(np.int64)
    df["customer_id"] = pd.to_numeric(df["customer_id"], errors="coerce").astype("Int64")
    df["processed_at"] = pd.to_datetime(df["processed_at"], format="ISO8601")
    for col in ("subtotal", "total_discounts", "total_refunded"):
        df[col] = df[col].astype(float)
    if since is not None:
        df = df[df["processed_at"] >= pd.Timestamp(since)]
    if until is not None:
        df = df[df["processed_at"] < pd.Timestamp(until)]
    return df.reset_index(drop=True)


def load_lines(s, shop_id: int, order_ids=None, with_types: bool = True) -> pd.DataFrame:
    """Lines of the given orders (the counted ones from `load_orders`): order_id, product_id (Int64, NA = custom),
    quantity, refunded_quantity[, product_type]. One scan of the shop's lines, filtered in pandas (cheaper than
    joining every line to its order)."""
    cols = [OrderLine.order_id, OrderLine.product_id, OrderLine.quantity, OrderLine.refunded_quantity]
    if with_types:
        cols.append(OrderLine.product_type)
    names = ["order_id", "product_id", "quantity", "refunded_quantity"] + (["product_type"] if with_types else [])
    df = _frame(s, select(*cols).where(OrderLine.shop_id == shop_id), names)
    df["order_id"] = df["order_id"].astype(np.int64)
    if order_ids is not None:
        df = df[df["order_id"].isin(np.asarray(order_ids, dtype=np.int64))].reset_index(drop=True)
    df["product_id"] = pd.to_numeric(df["product_id"], errors="coerce").astype("Int64")
    df["quantity"] = df["quantity"].fillna(0).astype(np.int64)
    df["refunded_quantity"] = df["refunded_quantity"].fillna(0).astype(np.int64)
    return df


def buckets_of(times: pd.Series) -> pd.Series:
    t = pd.to_datetime(times)
    return t.dt.year.astype(str).str.zfill(4) + "-" + t.dt.month.astype(str).str.zfill(2)


# --------------------------------------------------------------------------------------------- rebuild
def rebuild_shop_state(s, shop_id: int, now: dt.datetime) -> dict:
    shop = context.lock_shop(s, shop_id)
    if shop is None:
        return {"shop_id": shop_id, "status": "missing"}
    orders = load_orders(s, shop_id)
    lines = load_lines(s, shop_id, orders["order_id"])
    stats = customer_aggregates(orders, lines)
    written = write_customer_stats(s, shop_id, stats, now)
    buckets = rebuild_counts(s, shop_id, orders, lines, now)
    return {"shop_id": shop_id, "status": "done", "orders": len(orders), "lines": len(lines), **written,
            "buckets": buckets}


def customer_aggregates(orders: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """One row per customer with >= 1 counted order: every CustomerStats aggregate (money in cents)."""
    o = orders[orders["customer_id"].notna()].copy()
    if o.empty:
        return pd.DataFrame(columns=["customer_id"])
    cents = lambda x: np.rint(x.to_numpy(dtype=float) * 100).astype(np.int64)   # noqa: E731
    o["rev"] = cents(o["subtotal"])
    o["ref"] = cents(o["total_refunded"])
    o["net"] = o["rev"] - o["ref"]
    o["disc"] = cents(o["total_discounts"])
    o["pre"] = o["rev"] + o["disc"]
    o["discounted"] = (o["total_discounts"] > 0).astype(np.int64)
    o["refunded_order"] = (o["total_refunded"] > 0).astype(np.int64)
    live = lines.assign(q=(lines["quantity"] - lines["refunded_quantity"]).clip(lower=0))
    per_order_items = live.groupby("order_id")["q"].sum()
    o["items"] = o["order_id"].map(per_order_items).fillna(0).astype(np.int64)
    g = o.groupby("customer_id")
    agg = g.agg(first=("processed_at", "min"), last=("processed_at", "max"), n=("order_id", "size"),
                rev=("rev", "sum"), ref=("ref", "sum"), net=("net", "sum"), disc=("disc", "sum"),
                pre=("pre", "sum"), discounted=("discounted", "sum"), refunded_order=("refunded_order", "sum"),
                items=("items", "sum"))
    # product types: quantity of live lines per (customer, type)
    typed = live[(live["q"] > 0) & live["product_type"].notna() & (live["product_type"] != "")]
    typed = typed.merge(o[["order_id", "customer_id"]], on="order_id")
    types = typed.groupby(["customer_id", "product_type"])["q"].sum()
    pt: dict = {}
    for (cid, t), q in types.items():
        if q:
            pt.setdefault(int(cid), {})[t] = int(q)
    agg["product_type_counts"] = [dict(sorted(pt.get(int(c), {}).items())) for c in agg.index]
    return agg.reset_index()


def _stats_row(shop_id: int, r, now: dt.datetime) -> dict:
    row = {"shop_id": shop_id, "customer_id": int(r.customer_id),
           "first_order_at": r.first.to_pydatetime(), "last_order_at": r.last.to_pydatetime(),
           "orders_count": int(r.n), "discounted_orders": int(r.discounted),
           "refunded_orders": int(r.refunded_order), "items_count": int(r.items),
           "product_type_counts": r.product_type_counts, "updated_at": now}
    for col, key in MONEY.items():
        row[col] = int(getattr(r, key)) / 100
    return row


def write_customer_stats(s, shop_id: int, stats: pd.DataFrame, now: dt.datetime) -> dict:
    existing = dict(s.execute(select(CustomerStats.customer_id, CustomerStats.segment)
                              .where(CustomerStats.shop_id == shop_id)).all())
    rows = [_stats_row(shop_id, r, now) for r in stats.itertuples(index=False)]
    new_ids = {r["customer_id"] for r in rows}
    gone = sorted(set(existing) - new_ids)
    for i in range(0, len(gone), WRITE_CHUNK):
        s.execute(delete(CustomerStats).where(CustomerStats.shop_id == shop_id,
                                              CustomerStats.customer_id.in_(gone[i:i + WRITE_CHUNK])))
    changes = [{"shop_id": shop_id, "customer_id": cid, "from_segment": existing[cid], "to_segment": None,
                "changed_at": now, "reason": "rebuild"} for cid in gone if existing[cid] is not None]
    if changes:
        s.execute(insert(SegmentChange), changes)
    updates = [r for r in rows if r["customer_id"] in existing]
    inserts = [r for r in rows if r["customer_id"] not in existing]
    for i in range(0, len(updates), WRITE_CHUNK):
        s.execute(update(CustomerStats), updates[i:i + WRITE_CHUNK])      # ORM bulk UPDATE by primary key
    for i in range(0, len(inserts), WRITE_CHUNK):
        s.execute(insert(CustomerStats), inserts[i:i + WRITE_CHUNK])
    s.expire_all()     # loaded CustomerStats objects (if any) must not hide the bulk-written values
    return {"customers": len(rows), "customers_inserted": len(inserts), "customers_deleted": len(gone)}


def rebuild_counts(s, shop_id: int, orders: pd.DataFrame, lines: pd.DataFrame, now: dt.datetime) -> int:
    buckets = orders[["order_id"]].assign(bucket=buckets_of(orders["processed_at"]))
    items = C.basket_items(lines[["order_id", "product_id", "quantity", "refunded_quantity"]])
    items = items.merge(buckets, on="order_id")
    per_bucket = C.count_buckets(items)
    s.execute(delete(CountSnapshot).where(CountSnapshot.shop_id == shop_id, CountSnapshot.segment == ALL_SEGMENTS,
                                          CountSnapshot.kind.in_(KINDS)))
    delete_deltas(s, shop_id)
    for bc in per_bucket:
        write_snapshot(s, shop_id, bc.bucket, bc.baskets, (bc.item_ids, bc.item_counts),
                       C.encode_pairs_indexed(bc.item_ids, bc.pair_i, bc.pair_j, bc.pair_counts), now)
    return len(per_bucket)


def delete_deltas(s, shop_id: int, bucket: str | None = None) -> None:
    for model in DELTA_MODELS:
        q = delete(model).where(model.shop_id == shop_id, model.segment == ALL_SEGMENTS)
        if bucket is not None:
            q = q.where(model.bucket == bucket)
        s.execute(q)


def write_snapshot(s, shop_id: int, bucket: str, baskets: int, items, pairs, now: dt.datetime) -> None:
    """items: (ids, counts); pairs: (a, b, counts) of ids; either may be an already encoded payload."""
    base = {"shop_id": shop_id, "segment": ALL_SEGMENTS, "bucket": bucket, "baskets": int(baskets), "built_at": now}
    data = pairs if isinstance(pairs, bytes) else C.encode_pairs(*pairs)
    items = items if isinstance(items, bytes) else C.encode_items(*items)
    s.execute(insert(CountSnapshot.__table__), [{**base, "kind": "items", "data": items},
                                                {**base, "kind": "pairs", "data": data}])


# --------------------------------------------------------------------------------------------- compaction
@dataclass
class DeltaRows:
    """The delta rows of some buckets, as read: what `_parts` adds to the snapshots, and what a compaction folds."""
    baskets: list = field(default_factory=list)   # BasketCountDelta values (one per bucket with a row)
    items: list = field(default_factory=list)     # [(item_id, count)] ItemCountDelta rows
    pairs: list = field(default_factory=list)     # [(item_a, item_b, count)] legacy PairCountDelta rows
    blobs: list = field(default_factory=list)     # [(id, payload)] PairCountBlob rows

    def add_to(self, parts: C.CountParts) -> None:
        parts.baskets += sum(int(b or 0) for b in self.baskets)
        if self.items:
            arr = np.array(self.items, dtype=np.int64)
            parts.add_items(arr[:, 0], arr[:, 1])
        if self.pairs:                             # legacy rows (before revision 0005), until compacted
            arr = np.array(self.pairs, dtype=np.int64)
            parts.add_pairs(arr[:, 0], arr[:, 1], arr[:, 2])
        for _id, data in self.blobs:
            parts.add_pairs_indexed(*C.decode_pairs_indexed(data))


def read_delta_rows(s, shop_id: int, within) -> DeltaRows:
    """The shop's overall (segment "*") delta rows of the buckets selected by `within(bucket column)` -> conditions."""
    def rows(*cols):
        model = cols[0].class_
        return [tuple(r) for r in s.execute(select(*cols).where(model.shop_id == shop_id,
                                                                model.segment == ALL_SEGMENTS,
                                                                *within(model.bucket)))]

    return DeltaRows(baskets=[b for (b,) in rows(BasketCountDelta.baskets)],
                     items=rows(ItemCountDelta.item_id, ItemCountDelta.count),
                     pairs=rows(PairCountDelta.item_a, PairCountDelta.item_b, PairCountDelta.count),
                     blobs=rows(PairCountBlob.id, PairCountBlob.data))


@dataclass
class BucketFold:
    """What a compaction read of one bucket: the new snapshot (encoded while reading: the write phase only
    writes) and exactly the deltas it folds."""
    snapshot_built_at: dt.datetime | None      # the replaced snapshot (None: none); must be unchanged at write
    deltas: DeltaRows
    encoded: tuple | None = None               # (baskets, items payload, pairs payload); None: bucket now empty


@dataclass
class CompactionPlan:
    buckets: dict = field(default_factory=dict)   # bucket -> BucketFold


def _consistent_read(s) -> None:
    """PostgreSQL: one snapshot for the whole read (REPEATABLE READ), so the blobs and the item deltas read belong
    to the same committed batches (SQLite's deferred read transaction is one WAL snapshot already)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


def delta_buckets(s, shop_id: int) -> set[str]:
    buckets: set[str] = set()
    for model in DELTA_MODELS:
        buckets |= set(s.scalars(select(model.bucket).where(model.shop_id == shop_id,
                                                           model.segment == ALL_SEGMENTS).distinct()))
    return buckets


def read_compaction(s, shop_id: int) -> CompactionPlan:
    """Read and sum every bucket with deltas (no writes: fit for a read transaction, see context.read_transaction)."""
    if not s.in_transaction():
        _consistent_read(s)
    plan = CompactionPlan()
    for bucket in sorted(delta_buckets(s, shop_id)):
        parts = C.CountParts()
        fold = BucketFold(snapshot_built_at=_read_snapshot(s, shop_id, bucket, parts),
                          deltas=read_delta_rows(s, shop_id, lambda col: [col == bucket]))
        fold.deltas.add_to(parts)
        total = parts.total()
        if total.n_baskets or len(total.items):
            # compressed (deflate level 1, off the write lock): ~4x fewer bytes for SQLite to write under it.
            # Indexed on every counted item (the sum's (i, j) are sorted already: no re-sort of the pairs).
            fold.encoded = (total.n_baskets, C.encode_items(total.items, total.item_counts),
                            C.encode_pairs_indexed(total.items, total.pair_i, total.pair_j, total.pair_counts,
                                                   compress=True))
        plan.buckets[bucket] = fold
    return plan


def _key(model, shop_id: int, bucket: str) -> tuple:
    return model.shop_id == shop_id, model.segment == ALL_SEGMENTS, model.bucket == bucket


def _read_snapshot(s, shop_id: int, bucket: str, parts: C.CountParts) -> dt.datetime | None:
    built_at = None
    for kind, baskets, data, built in s.execute(
            select(CountSnapshot.kind, CountSnapshot.baskets, CountSnapshot.data, CountSnapshot.built_at)
            .where(*_key(CountSnapshot, shop_id, bucket), CountSnapshot.kind.in_(KINDS))):
        built_at = built
        _add_snapshot(parts, kind, baskets, data)
    return built_at


def _add_snapshot(parts: C.CountParts, kind: str, baskets, data: bytes) -> None:
    if kind == "items":
        parts.baskets += int(baskets or 0)
        parts.add_items(*C.decode_items(data))
    else:
        parts.add_pairs_indexed(*C.decode_pairs_indexed(data))


class _Changed(Exception):
    """A bucket's snapshot or deltas changed between the compaction's read and its write."""


def apply_compaction(s, shop_id: int, plan: CompactionPlan, now: dt.datetime | None = None) -> int:
    """Write what `read_compaction` summed, under the shop row lock; returns the buckets rewritten. Each bucket in
    a savepoint: one that changed in between is rolled back and left for the next compaction."""
    shop = context.lock_shop(s, shop_id)
    if shop is None:
        return 0
    now = now or utcnow()
    done = 0
    for bucket, fold in sorted(plan.buckets.items()):
        try:
            with s.begin_nested():
                _fold_bucket(s, shop_id, bucket, fold, now)
            done += 1
        except _Changed as exc:
            log.info("compaction of shop %s bucket %s skipped: %s", shop_id, bucket, exc)
    return done


def _fold_bucket(s, shop_id: int, bucket: str, fold: BucketFold, now: dt.datetime) -> None:
    built = s.scalars(select(CountSnapshot.built_at).where(*_key(CountSnapshot, shop_id, bucket),
                                                           CountSnapshot.kind.in_(KINDS))).all()
    if (max(built) if built else None) != fold.snapshot_built_at:
        raise _Changed("snapshot replaced")
    blob_ids = [int(i) for i, _ in fold.deltas.blobs]
    for i in range(0, len(blob_ids), WRITE_CHUNK):
        ids = blob_ids[i:i + WRITE_CHUNK]
        if s.execute(delete(PairCountBlob).where(PairCountBlob.shop_id == shop_id, PairCountBlob.id.in_(ids))
                     .execution_options(synchronize_session=False)).rowcount != len(ids):
            raise _Changed("blobs already folded")
    # Subtract the delta values read (rows are only ever deleted under the shop lock by a rebuild / compaction:
    # a row read and now missing means one of those ran in between), then drop the rows left at zero.
    subtract = (
        (BasketCountDelta, ["shop_id", "segment", "bucket"], "baskets",
         [(shop_id, ALL_SEGMENTS, bucket, -int(b)) for b in fold.deltas.baskets]),
        (ItemCountDelta, ["shop_id", "segment", "bucket", "item_id"], "count",
         [(shop_id, ALL_SEGMENTS, bucket, int(i), -int(n)) for i, n in fold.deltas.items]),
        (PairCountDelta, ["shop_id", "segment", "bucket", "item_a", "item_b"], "count",
         [(shop_id, ALL_SEGMENTS, bucket, int(a), int(b), -int(n)) for a, b, n in fold.deltas.pairs]),
    )
    for model, keys, col, rows in subtract:
        if not rows:
            continue
        present = s.scalar(select(func.count()).select_from(model).where(*_key(model, shop_id, bucket)))
        if present < len(rows):
            raise _Changed(f"{model.__tablename__} rows deleted")
        upsert_add(s, model, keys, col, keys + [col], rows)
        if s.scalar(select(func.count()).select_from(model).where(*_key(model, shop_id, bucket))) != present:
            raise _Changed(f"{model.__tablename__} rows deleted")      # a subtracted row was inserted
        s.execute(delete(model).where(*_key(model, shop_id, bucket), getattr(model, col) == 0))
    s.execute(delete(CountSnapshot).where(*_key(CountSnapshot, shop_id, bucket), CountSnapshot.kind.in_(KINDS)))
    if fold.encoded is not None:
        write_snapshot(s, shop_id, bucket, *fold.encoded, now)


def compact_counts(s, shop_id: int) -> int:
    """Fold the shop's deltas into its snapshots in the caller's transaction; returns the buckets rewritten."""
    if context.lock_shop(s, shop_id) is None:
        return 0
    return apply_compaction(s, shop_id, read_compaction(s, shop_id))


# --------------------------------------------------------------------------------------------- reading
def _parts(s, shop_id: int, first: str | None, last: str | None) -> C.CountParts:
    def within(col):
        conds = []
        if first is not None:
            conds.append(col >= first)
        if last is not None:
            conds.append(col <= last)
        return conds

    parts = C.CountParts()
    for kind, baskets, data in s.execute(
            select(CountSnapshot.kind, CountSnapshot.baskets, CountSnapshot.data)
            .where(CountSnapshot.shop_id == shop_id, CountSnapshot.segment == ALL_SEGMENTS,
                   CountSnapshot.kind.in_(KINDS), *within(CountSnapshot.bucket))):
        _add_snapshot(parts, kind, baskets, data)
    read_delta_rows(s, shop_id, within).add_to(parts)
    return parts


def read_counts(s, shop_id: int, first: str | None = None, last: str | None = None,
                min_item_count: int = 0, min_support: float = 0.0) -> PairCounts:
    """Overall counts of the buckets first..last inclusive (None: open end) = snapshots + deltas, exact
    (min_item_count: see analytics.counts.sum_counts)."""
    return _parts(s, shop_id, first, last).total(min_item_count, min_support)


def read_bucket_counts(s, shop_id: int) -> dict:
    """{bucket: (baskets, {item: count}, {(a, b): count})} for every bucket with data (tests, diagnostics)."""
    buckets = set(s.scalars(select(CountSnapshot.bucket).where(CountSnapshot.shop_id == shop_id,
                                                               CountSnapshot.segment == ALL_SEGMENTS)))
    buckets |= delta_buckets(s, shop_id)
    out = {}
    for b in sorted(buckets):
        pc = read_counts(s, shop_id, b, b)
        items, pairs = pc.as_dicts()
        if pc.n_baskets or items or pairs:
            out[b] = (pc.n_baskets, {int(k): v for k, v in items.items()},
                      {(int(a), int(c)): v for (a, c), v in pairs.items()})
    return out
