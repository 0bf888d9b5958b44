"""Association rules job (queue `default`): `mine_rules(shop_id)` replaces the shop's AssociationRule rows.

Window: the ShopSettings.rules_window_months order months ending with the *anchor* month inclusive (0 = all
time). The anchor is the current month, or the latest month holding a basket when that is earlier (a shop whose
history stopped, e.g. the demo's 2009-2011 data, keeps rules over its last N months of sales instead of none).
Months are UTC order months ('YYYY-MM' of processed_at), as the count buckets.

Kinds written (all with computed_at = now; one transaction deletes the shop's previous rules and inserts these):
- 'pair', segment '*': directed pair rules A -> B from the overall counts of the window = sum over its buckets of
  snapshot + deltas (shopify_app.models, "base + deltas"), exact; support = c(AB) / baskets, kept when support >=
  min_support and c(AB) >= min_count (shop settings); metrics as shopify_app.analytics.rules.
- 'pair', segment = a named segment: the same rules over the baskets of the window's orders whose customer is
  *currently* in that segment (CustomerStats.segment; guests belong to no segment), mined from the stored orders
  with one sparse basket x item product per segment. Segment membership moves whenever a customer is rescored;
  running per-segment counts would have to move the customer's whole history on every change, so they are not
  kept. Support is relative to the segment's baskets. At most SEGMENT_LIMIT rules per segment (highest count,
  then lift): a small segment's baskets pass min_count far more easily than min_support of the whole shop.
- 'triple', segment '*': 3-itemset rules ({A, B} -> C, A -> {B, C}) from mlxtend fpgrowth(max_len=3) on the
  window's baskets restricted to frequent items (at most ~150 of the most frequent, see
  analytics.rules.mine_triple_rules), the TRIPLE_LIMIT with the highest lift.
- 'sequential', segment '*': "bought B within N days after A" from SequentialItemDelta and the pair counts
  (SequentialPairDelta rows + folded snapshot payloads + SequentialPairBlob payloads, see `read_sequential`;
  definitions: shopify_app.analytics.sequential), when those tables hold data for the window; the SEQUENTIAL_LIMIT with
  the highest count (then confidence).
AssociationRule.customers (pairs): distinct customers who bought both items in the window (in any of their
orders). conviction is NULL when infinite (confidence = 1).

`enqueue_mine_rules(config, shop_id)` coalesces bursts into one waiting job per shop (fixed RQ job id). That job
is `mine_rules_paced`: under an order stream mining costs ~10 s of CPU per run on a busy shop, and the order job's
debounce (workers.order_jobs.RULES_DEBOUNCE_S) alone would start a run every ~30 s, a third of a core taken from
the order stream. Pacing: a run starts no sooner than PACE_FACTOR x (the previous run's duration) after the previous
run started (wall time, so a run slowed down by a busy machine also spaces the next one out), which bounds mining
to 1 / PACE_FACTOR of a core whatever its cost; a run due earlier re-schedules itself (RQ enqueue_in) for that
time. Direct calls of `mine_rules` (recompute, import) are not paced.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, insert, or_, select, tuple_

from shopify_app.analytics import counts as C
from shopify_app.analytics.incremental import bucket_of
from shopify_app.analytics.rules import (
    customers_per_pair, mine_pair_rules_codes, mine_triple_rules, rules_from_counts, sorted_unique,
)
from shopify_app.config import env_number
from shopify_app.models import (
    ALL_SEGMENTS, AssociationRule, BasketCountDelta, CountSnapshot, CustomerStats, SequentialItemDelta,
    SequentialPairBlob, SequentialPairDelta, Shop, utcnow,
)
from shopify_app.settings import shop_settings

from . import context
from .priority import niced
from .rebuild_jobs import load_lines, load_orders, read_counts
from .sequential_jobs import read_blobs, read_snapshots

log = logging.getLogger(__name__)

JOB_PATH = "workers.rules_jobs.mine_rules_paced"
# Start-to-start spacing of paced runs, in units of the previous run's duration: mining takes at most
# 1 / PACE_FACTOR of a core under a stream (deployment knob, environment).
PACE_FACTOR = env_number("RULES_PACE_FACTOR", 5.0, float, minimum=0.0)
TRIPLE_LIMIT = 200
SEQUENTIAL_LIMIT = 5000       # sequential rules kept (highest count, then confidence)
SEGMENT_LIMIT = 1000           # pair rules kept per named segment (highest count, then lift)
# Overall pair rules stored (highest count, then lift). Small shops with wholesale baskets pass min_count with
# hundreds of thousands of pairs (1,000 Online Retail orders -> 285,896 rules at min_count 5); the pages show the
# top ones and a bundle needs a handful, so storing them all only costs write time. All rules stay available from
# the offline `flask analyze` and from the counts.
PAIR_LIMIT = 20000
INSERT_CHUNK = 2000
# Sequential pairs of the payloads (blobs, folded snapshots) whose row sums read_sequential looks up by key, at most.
HOT_PAIRS = 2000
LOOKUP_CHUNK = 400


# --------------------------------------------------------------------------------------------- entry points
def mine_rules(shop_id: int, now: dt.datetime | str | None = None, triples: bool = True) -> dict:
    """Read (one read-only transaction: on SQLite it holds no write lock, so intake and order jobs go on while the
    counts are read), mine (no transaction open), both at background priority (workers.priority), then replace the
    rules (one short write transaction, at the job's normal priority: never a niced lock holder).
    triples=False skips the fpgrowth step (the history import's first, inline pass; its follow-up job mines all)."""
    if isinstance(now, str):
        now = dt.datetime.fromisoformat(now)
    now = now or utcnow()
    t0 = time.perf_counter()
    data, rules = niced(_read_and_mine, shop_id, now, triples)     # background priority, no write lock held
    if data is None:
        return {"shop_id": shop_id, "status": "missing"}
    t1 = time.perf_counter()
    with context.write_transaction() as s:                         # this thread: normal priority under the lock
        if context.lock_shop(s, shop_id) is None:
            return {"shop_id": shop_id, "status": "missing"}
        written = replace_rules(s, shop_id, rules, now)
    return {"shop_id": shop_id, "status": "done", "window": data["window"], "baskets": data["counts"].n_baskets,
            **written, "read_mine_s": round(t1 - t0, 3), "write_s": round(time.perf_counter() - t1, 3)}


def _read_and_mine(shop_id: int, now: dt.datetime, triples: bool) -> tuple[dict | None, list]:
    with context.read_transaction() as s:
        data = read_window(s, shop_id, now)
    return data, (mine_window(data, triples=triples) if data is not None else [])


def mine_rules_paced(shop_id: int) -> dict:
    """The coalesced mining job: `mine_rules` unless the previous paced run started less than PACE_FACTOR x its
    duration ago; then the job schedules the shop's mining job for that moment and returns (status 'deferred').
    Changes committed meanwhile are read by the scheduled run (it reads the counts when it starts)."""
    from shopify_app.queues import redis_connection

    conn = redis_connection(context.config().redis_url)
    wait = pace_wait(conn, shop_id, time.time())
    if wait > 0 and _defer(shop_id, wait):
        return {"shop_id": shop_id, "status": "deferred", "wait_s": round(wait, 3)}
    started = time.time()
    result = mine_rules(shop_id)
    record_run(conn, shop_id, started, time.time() - started)
    return result


def pace_key(shop_id: int) -> str:
    return f"{context.config().queue_prefix}:rules:pace:{shop_id}"


def record_run(conn, shop_id: int, started: float, took: float) -> None:
    """Remember the run's start and duration for as long as they hold the next one back."""
    hold = max(PACE_FACTOR * took, 0.0)
    conn.set(pace_key(shop_id), f"{started:.3f} {took:.3f}", ex=max(1, math.ceil(hold) + 1))


def pace_wait(conn, shop_id: int, now: float) -> float:
    """Seconds until a paced run may start: previous start + PACE_FACTOR x its duration - now (<= 0: now)."""
    raw = conn.get(pace_key(shop_id))
    if not raw:
        return 0.0
    started, took = (float(x) for x in raw.split())
    return started + PACE_FACTOR * took - now


def _defer(shop_id: int, wait: float) -> bool:
    """Schedule the shop's mining job `wait` seconds from now under the id this job is not running under (a job
    waiting there already covers it). False when that is impossible (both ids running): the caller mines now."""
    from rq import get_current_job

    from shopify_app.queues import DEFAULT, schedule_coalesced

    current = get_current_job()
    job = schedule_coalesced(context.config(), DEFAULT, JOB_PATH, shop_id,
                             job_ids=(job_id(shop_id, False), job_id(shop_id, True)), in_seconds=wait,
                             running_id=current.id if current is not None else None)
    return job is not None


def job_id(shop_id: int, followup: bool = False) -> str:
    return f"mine-rules-{shop_id}" + ("-next" if followup else "")


def enqueue_mine_rules(config, shop_id: int):
    """One waiting job per shop: a queued job is reused (it reads the counts when it starts); while one runs, the
    follow-up id is used, so a change made during a run is mined right after it."""
    from shopify_app.queues import DEFAULT, enqueue_coalesced

    return enqueue_coalesced(config, DEFAULT, JOB_PATH, shop_id,
                             job_ids=(job_id(shop_id, False), job_id(shop_id, True)))


# --------------------------------------------------------------------------------------------- window
def month_start(bucket: str) -> dt.datetime:
    y, m = bucket.split("-")
    return dt.datetime(int(y), int(m), 1)


def anchor_bucket(s, shop_id: int, now: dt.datetime) -> str:
    current = bucket_of(now)
    latest = max([b for b in (
        s.scalar(select(func.max(CountSnapshot.bucket)).where(CountSnapshot.shop_id == shop_id,
                                                              CountSnapshot.segment == ALL_SEGMENTS,
                                                              CountSnapshot.bucket <= current,
                                                              CountSnapshot.baskets > 0)),
        s.scalar(select(func.max(BasketCountDelta.bucket)).where(BasketCountDelta.shop_id == shop_id,
                                                                 BasketCountDelta.segment == ALL_SEGMENTS,
                                                                 BasketCountDelta.bucket <= current,
                                                                 BasketCountDelta.baskets > 0)),
    ) if b], default=None)
    return latest or current


def read_window(s, shop_id: int, now: dt.datetime) -> dict | None:
    shop = s.get(Shop, shop_id)
    if shop is None:
        return None
    settings = shop_settings(shop)
    anchor = anchor_bucket(s, shop_id, now)
    window = C.window_buckets(anchor, settings.rules_window_months)
    first, last = window if window else (None, anchor)
    since = month_start(first) if first else None
    until = month_start(C.bucket_name(C.bucket_index(last) + 1))
    # Pairs of items below min_count / min_support can't make a rule: left out before summing.
    counts = read_counts(s, shop_id, first, last, min_item_count=settings.min_count,
                         min_support=settings.min_support)
    orders = load_orders(s, shop_id, since, until)[["order_id", "customer_id"]]
    lines = load_lines(s, shop_id, orders["order_id"], with_types=False)
    segments = pd.DataFrame.from_records(
        s.execute(select(CustomerStats.customer_id, CustomerStats.segment)
                  .where(CustomerStats.shop_id == shop_id, CustomerStats.segment.is_not(None))).all(),
        columns=["customer_id", "segment"])
    sequential = read_sequential(s, shop_id, first, last, settings.min_count)
    return {"settings": settings, "window": {"first": first, "last": last}, "counts": counts, "orders": orders,
            "lines": lines, "segments": segments, "sequential": sequential}


def _in_window(col, first: str | None, last: str) -> list:
    """Conditions on a bucket column: first <= col <= last (no lower bound when first is None)."""
    return [col <= last] + ([col >= first] if first else [])


def read_sequential(s, shop_id: int, first: str | None, last: str, min_count: int = 1) -> dict | None:
    items = s.execute(select(SequentialItemDelta.item_id, func.sum(SequentialItemDelta.count))
                      .where(SequentialItemDelta.shop_id == shop_id,
                             *_in_window(SequentialItemDelta.bucket, first, last))
                      .group_by(SequentialItemDelta.item_id)).all()
    if not items:
        return None
    return {"items": {int(i): int(n) for i, n in items if n},
            "pairs": _sequential_pairs(s, shop_id, first, last, min_count)}


def _sequential_pairs(s, shop_id: int, first: str | None, last: str, min_count: int) -> dict:
    """{(a, b): count} over the window with count >= min_count (zeros dropped), count = rows + payloads, exact.

    The payloads (blobs of recent batches and the folded snapshot payloads, one per bucket) are summed in numpy:
    blob[k]. The rows (a rebuild's output: millions) are summed in SQL, and only those that can reach min_count
    come back: a pair's total is row[k] + blob[k], so with h = a bound on blob[k], HAVING row >= min_count - h
    misses no pair that passes (rows are counts, >= 0; `OR sum < 0` keeps the argument exact even if one were
    not). One h for every pair would be the largest payload sum, which lowers the bar for every row; so the
    HOT_PAIRS pairs with the largest payload sums get their row sums looked up by key, and h bounds the others. A
    pair left out has row < min_count - h (so total < min_count) or row = 0 (so total = blob[k], filtered here)."""
    for attempt in range(3):
        blobs = read_blobs(s, shop_id, first, last)
        snapshots = read_snapshots(s, shop_id, first, last)
        payloads = [d for _i, _b, d in blobs] + [d for _b, _at, d in snapshots]
        out = _rows_plus_blobs(s, shop_id, payloads, first, last, min_count)
        # PostgreSQL reads in READ COMMITTED: a compaction committed between the blob read and the snapshot / row
        # reads would count its blobs twice, a rebuild committed between the snapshot and row reads would count the
        # payloads twice. All blobs read still there and the payloads unchanged afterwards = neither happened.
        if attempt == 2 or (_present(s, shop_id, [i for i, _b, _d in blobs])
                            and _versions(read_snapshots(s, shop_id, first, last, data=False)) == _versions(snapshots)):
            return out
        log.info("sequential pairs of shop %s re-read: a compaction or rebuild committed meanwhile", shop_id)


def _versions(snapshots: list) -> set:
    return {(bucket, at) for bucket, at, _d in snapshots}


def _present(s, shop_id: int, ids: list) -> bool:
    n = 0
    for i in range(0, len(ids), LOOKUP_CHUNK):
        n += s.scalar(select(func.count()).select_from(SequentialPairBlob).where(
            SequentialPairBlob.shop_id == shop_id, SequentialPairBlob.id.in_(ids[i:i + LOOKUP_CHUNK])))
    return n == len(ids)


def _rows_plus_blobs(s, shop_id: int, payloads: list, first: str | None, last: str, min_count: int) -> dict:
    # Directed payloads share the pair payloads' layout (ids, i, j, counts): summed on their indices.
    ba, bb, bn = C.sum_indexed_pairs(C.decode_pairs_indexed(data) for data in payloads)
    positive = np.sort(bn[bn > 0])[::-1]
    h = int(positive[HOT_PAIRS]) if len(positive) > HOT_PAIRS else 0
    floor = max(int(min_count) - h, 1)
    total = func.sum(SequentialPairDelta.count)
    row_sums = {(int(a), int(b)): int(n) for a, b, n in s.execute(
        select(SequentialPairDelta.item_a, SequentialPairDelta.item_b, total)
        .where(SequentialPairDelta.shop_id == shop_id, *_in_window(SequentialPairDelta.bucket, first, last))
        .group_by(SequentialPairDelta.item_a, SequentialPairDelta.item_b)
        .having(or_(total >= floor, total < 0)))}
    hot = [(int(a), int(b)) for a, b in zip(ba[bn > h], bb[bn > h])]
    if hot:
        # Buckets as an equality list (not a range) so each key is an index seek on (shop, bucket, a, b); every
        # bucket with a pair row has an item row (the antecedent occurrence), and the item table is small.
        buckets = sorted(s.scalars(select(SequentialItemDelta.bucket).distinct().where(
            SequentialItemDelta.shop_id == shop_id, *_in_window(SequentialItemDelta.bucket, first, last))))
        for i in range(0, len(hot), LOOKUP_CHUNK):
            row_sums.update({(int(a), int(b)): int(n) for a, b, n in s.execute(
                select(SequentialPairDelta.item_a, SequentialPairDelta.item_b, total)
                .where(SequentialPairDelta.shop_id == shop_id, SequentialPairDelta.bucket.in_(buckets),
                       tuple_(SequentialPairDelta.item_a, SequentialPairDelta.item_b).in_(hot[i:i + LOOKUP_CHUNK]))
                .group_by(SequentialPairDelta.item_a, SequentialPairDelta.item_b))})
    # rows + payload sums in numpy (millions of payload pairs: a dict entry each cost ~4 s per run on bench (d)),
    # then a dict of the pairs that pass only.
    if row_sums:
        ra, rb, rn = (np.fromiter(x, dtype=np.int64, count=len(row_sums))
                      for x in ((a for a, _b in row_sums), (b for _a, b in row_sums), iter(row_sums.values())))
        ba, bb, bn = C.sum_indexed_pairs([_indexed(ba, bb, bn), _indexed(ra, rb, rn)])
    keep = (bn != 0) & (bn >= min_count)
    return PairArrays(ba[keep], bb[keep], bn[keep])


class PairArrays(Mapping):
    """{(a, b): count} of directed pairs held as numpy arrays (a, b, n sorted by (a, b)); sequential_rules uses
    the arrays, a dict is built only when it is used as a mapping (tests, diagnostics)."""

    def __init__(self, a: np.ndarray, b: np.ndarray, n: np.ndarray):
        self.a, self.b, self.n = a, b, n
        self._dict: dict | None = None

    def _d(self) -> dict:
        if self._dict is None:
            self._dict = dict(zip(zip(self.a.tolist(), self.b.tolist()), self.n.tolist()))
        return self._dict

    def __getitem__(self, key):
        return self._d()[key]

    def __iter__(self):
        return iter(self._d())

    def __len__(self) -> int:
        return len(self.n)


def _indexed(a: np.ndarray, b: np.ndarray, n: np.ndarray) -> tuple:
    ids = sorted_unique(np.concatenate([a, b]))
    return ids, np.searchsorted(ids, a), np.searchsorted(ids, b), n


# --------------------------------------------------------------------------------------------- mining
def mine_window(data: dict, triples: bool = True) -> list[dict]:
    st = data["settings"]
    out: list[dict] = []
    baskets = C.basket_items(data["lines"]).merge(data["orders"], on="order_id")
    customers = baskets[baskets["customer_id"].notna()]

    overall = rules_from_counts(data["counts"], st.min_support, st.min_count)
    if len(overall) > PAIR_LIMIT:
        overall = overall.sort_values(["count", "lift"], ascending=False, kind="mergesort").head(PAIR_LIMIT)
    out += _rows(overall, ALL_SEGMENTS, "pair", _customers(customers, overall))

    if not data["segments"].empty and not customers.empty:
        seg = customers.merge(data["segments"].astype({"customer_id": "Int64"}), on="customer_id")
        for name, g in seg.groupby("segment", sort=True):
            rules = _segment_rules(g, st.min_support, st.min_count).head(SEGMENT_LIMIT)
            out += _rows(rules, name, "pair", _customers(g, rules))

    if triples and not baskets.empty:
        orders, r = np.unique(baskets["order_id"].to_numpy(), return_inverse=True)
        items, c = np.unique(baskets["product_id"].to_numpy(), return_inverse=True)
        from scipy import sparse
        x = sparse.csr_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(len(orders), len(items)))
        out += _rows(mine_triple_rules(x, items, st.min_support, st.min_count, TRIPLE_LIMIT), ALL_SEGMENTS,
                     "triple", None)

    if data["sequential"]:
        out += sequential_rules(data["sequential"], int(customers["order_id"].nunique()), st.min_count,
                                st.min_support)
    return out


def _segment_rules(baskets: pd.DataFrame, min_support: float, min_count: int) -> pd.DataFrame:
    orders, r = np.unique(baskets["order_id"].to_numpy(), return_inverse=True)
    items, c = np.unique(baskets["product_id"].to_numpy(np.int64), return_inverse=True)
    return mine_pair_rules_codes(r, c, len(orders), items, min_support, min_count)


def _customers(baskets: pd.DataFrame, rules: pd.DataFrame) -> np.ndarray | None:
    if rules.empty or baskets.empty:
        return np.zeros(len(rules), dtype=np.int64)
    cust, ci = np.unique(baskets["customer_id"].to_numpy(np.int64), return_inverse=True)
    items, ii = np.unique(baskets["product_id"].to_numpy(np.int64), return_inverse=True)
    a = np.searchsorted(items, rules["antecedent"].to_numpy(np.int64))
    b = np.searchsorted(items, rules["consequent"].to_numpy(np.int64))
    a = np.minimum(a, len(items) - 1)
    b = np.minimum(b, len(items) - 1)
    known = (items[a] == rules["antecedent"].to_numpy(np.int64)) & (items[b] == rules["consequent"].to_numpy(np.int64))
    out = np.zeros(len(rules), dtype=np.int64)
    if known.any():
        out[known] = customers_per_pair(ci, ii, len(cust), len(items), a[known], b[known])
    return out


def _float(x) -> float | None:
    x = float(x)
    return None if math.isinf(x) or math.isnan(x) else x


def _ids(v) -> list[int]:
    return [int(i) for i in v] if isinstance(v, (list, tuple, np.ndarray)) else [int(v)]


def _rows(df: pd.DataFrame, segment: str, kind: str, customers) -> list[dict]:
    rows = []
    for k, r in enumerate(df.itertuples(index=False)):
        rows.append({"segment": segment, "kind": kind, "antecedent": _ids(r.antecedent),
                     "consequent": _ids(r.consequent), "count": int(r.count),
                     "customers": int(customers[k]) if customers is not None else None,
                     "support": float(r.support), "confidence": float(r.confidence), "lift": float(r.lift),
                     "leverage": _float(r.leverage), "conviction": _float(r.conviction)})
    return rows


def sequential_rules(seq: dict, customer_orders: int, min_count: int, min_support: float = 0.0) -> list[dict]:
    """"Bought B within N days after A" over the window (definitions: shopify_app.analytics.sequential):
    count = pairs(A, B); confidence = pairs(A, B) / items(A); support = pairs(A, B) / customer orders in the
    window; lift = confidence / base rate of B, base rate = items(B) / customer orders (the share of customer
    orders holding B)."""
    items = seq["items"]
    if not customer_orders or not items:
        return []
    # The same thresholds as pair rules: support = pairs(A, B) / customer orders >= min_support.
    floor = max(int(min_count), math.ceil(min_support * customer_orders - 1e-9))
    pairs = seq["pairs"]
    if not isinstance(pairs, PairArrays):
        keys = list(pairs)
        pairs = PairArrays(np.array([k[0] for k in keys], dtype=np.int64),
                           np.array([k[1] for k in keys], dtype=np.int64),
                           np.array([pairs[k] for k in keys], dtype=np.int64))
    # analytics.sequential.confidences in numpy: confidence = pairs(A, B) / items(A), pairs below the floor or
    # of an antecedent without item count left out; top SEQUENTIAL_LIMIT by count, confidence, then (A, B).
    ids = np.array(sorted(items), dtype=np.int64)
    counts = np.array([items[i] for i in ids.tolist()], dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids, pairs.a), len(ids) - 1)
    ant = np.where(ids[pos] == pairs.a, counts[pos], 0)
    keep = (pairs.n >= floor) & (ant > 0)
    a, b, n = pairs.a[keep], pairs.b[keep], pairs.n[keep]
    conf = n / ant[keep]
    order = np.lexsort((b, a, -conf, -n))[:SEQUENTIAL_LIMIT]
    rows = []
    for a, b, n, c in zip(a[order].tolist(), b[order].tolist(), n[order].tolist(), conf[order].tolist()):
        base = items.get(b, 0) / customer_orders
        if not base:             # B bought only after the window: no base rate to compare with
            continue
        rows.append({"segment": ALL_SEGMENTS, "kind": "sequential", "antecedent": [a], "consequent": [b],
                     "count": int(n), "customers": None, "support": n / customer_orders, "confidence": c,
                     "lift": c / base, "leverage": None, "conviction": None})
    return rows


# --------------------------------------------------------------------------------------------- writes
def replace_rules(s, shop_id: int, rules: list[dict], now: dt.datetime) -> dict:
    s.execute(delete(AssociationRule).where(AssociationRule.shop_id == shop_id))
    rows = [{**r, "shop_id": shop_id, "computed_at": now} for r in rules]
    for i in range(0, len(rows), INSERT_CHUNK):
        s.execute(insert(AssociationRule.__table__), rows[i:i + INSERT_CHUNK])
    kinds: dict = {}
    for r in rules:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + (r["segment"] == ALL_SEGMENTS)
    kinds["segment_pair"] = sum(1 for r in rules if r["kind"] == "pair" and r["segment"] != ALL_SEGMENTS)
    return kinds
