"""RFM refit, daily aging and daily segment snapshots (per shop).

Thresholds (shopify_app.analytics.rfm): per shop, 4 quintile cut points per dimension at the 20/40/60/80 %
quantiles (numpy linear interpolation) of all the shop's CustomerStats: recency in whole days since the last
order, frequency = orders_count, monetary = net_revenue. Tie rule: a value scores 1 + (number of cut points
strictly below it), so equal values always share a score (no NTILE split) and a shop with fewer than 5 distinct
values simply uses fewer scores (one customer: R 5, F 1, M 1). R = 6 - score(days): fewer days is better.

Stored as ShopModel(kind 'rfm'): params {"edges": {"recency": [...], "frequency": [...], "monetary": [...]},
"scheme": "<segment scheme>", "customers_now": n}, customers_at_fit = number of customers fitted on.
`customers_now` is kept up to date by the order job (+ new customers, - customers left without orders) so the
refit trigger needs no COUNT(*) over the shop per order; every refit resets it to the exact count.

Jobs (all idempotent: rerunning gives the same scores and records no new change):
- `refit_rfm(shop_id)`: fit + store + rescore everyone (SegmentChange reason 'refit'); enqueued daily by
  `refit_all_shops` and by the order job when the customer count moved by more than the shop's
  `rfm_refit_change_share` since the fit (fixed job id: bursts coalesce);
- `age_shop(shop_id)`: rescore everyone with the STORED thresholds and today's recency (reason 'aging'), so a
  customer who stops buying slides from Champions to At risk without a new order; then `snapshot_segments`;
- `snapshot_segments(shop_id, day)`: per segment, customers / net revenue / orders of its members, for the
  day (replaces that day's rows: rerunning the same day is an upsert, not a duplicate).
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, func, insert, select, update

from shopify_app.analytics.rfm import fit_thresholds, score, score_recency
from shopify_app.analytics.segments import SCHEMES, assign_segment
from shopify_app.models import CustomerStats, SegmentChange, SegmentSnapshot, Shop, ShopModel, utcnow
from shopify_app.settings import shop_settings

from . import context

log = logging.getLogger(__name__)

RFM_KIND = "rfm"
JOB_TIMEOUT = 30 * 60
CHUNK = 500                      # ids per IN (...) / rows per executemany slice


# --------------------------------------------------------------------------------------------- scoring
def days_since(now: dt.datetime, t: dt.datetime) -> int:
    """Whole days from t to now (0 for a future time)."""
    return max(0, (now - t) // dt.timedelta(days=1))


def fit_edges(rows, now: dt.datetime) -> dict:
    """rows: (last_order_at, orders_count, net_revenue) per customer -> the three lists of cut points."""
    rows = list(rows)
    return {"recency": fit_thresholds([days_since(now, r[0]) for r in rows if r[0] is not None]),
            "frequency": fit_thresholds([r[1] or 0 for r in rows]),
            "monetary": fit_thresholds([r[2] or 0.0 for r in rows])}


def score_customer(last_order_at, orders_count, net_revenue, edges: dict, scheme: str, now: dt.datetime):
    """(recency_days, r, f, m, segment) of one customer."""
    days = days_since(now, last_order_at)
    r = score_recency(days, edges.get("recency") or [])
    f = score(orders_count or 0, edges.get("frequency") or [])
    m = score(net_revenue or 0.0, edges.get("monetary") or [])
    return days, r, f, m, assign_segment(r, f, m, scheme)


def _scheme(shop: Shop, params: dict | None = None) -> str:
    scheme = (params or {}).get("scheme") or shop_settings(shop).segment_scheme
    return scheme if scheme in SCHEMES else "default"


def stored_params(s, shop: Shop) -> tuple[dict | None, str, ShopModel | None]:
    """(edges or None, scheme, model row). Accepts params {"edges": {...}} or the edges dict itself."""
    model = s.get(ShopModel, (shop.id, RFM_KIND))
    params = dict(model.params or {}) if model is not None else {}
    edges = params.get("edges") if isinstance(params.get("edges"), dict) else (
        params if {"recency", "frequency", "monetary"} <= set(params) else None)
    return edges, _scheme(shop, params), model


_SCORE_COLS = (CustomerStats.customer_id, CustomerStats.last_order_at, CustomerStats.orders_count,
               CustomerStats.net_revenue, CustomerStats.recency_days, CustomerStats.r_score, CustomerStats.f_score,
               CustomerStats.m_score, CustomerStats.segment)


def rescore_all(s, shop_id: int, edges: dict, scheme: str, now: dt.datetime, reason: str) -> dict:
    """Rescore every customer of the shop (bulk UPDATE by primary key of the rows that moved) and record one
    SegmentChange(reason) per changed segment. Returns {"customers", "updated", "changes"}."""
    s.flush()                      # pending ORM changes first: the bulk statements below bypass the session
    rows = s.execute(select(*_SCORE_COLS).where(CustomerStats.shop_id == shop_id)).all()
    updates, changes = [], []
    for r in rows:
        if r.last_order_at is None:
            continue
        days, rs, fs, ms, seg = score_customer(r.last_order_at, r.orders_count, r.net_revenue, edges, scheme, now)
        if (days, rs, fs, ms, seg) == (r.recency_days, r.r_score, r.f_score, r.m_score, r.segment):
            continue
        u = {"shop_id": shop_id, "customer_id": r.customer_id, "recency_days": days, "r_score": rs, "f_score": fs,
             "m_score": ms, "scored_at": now}
        if seg != r.segment:
            u["segment"], u["segment_since"] = seg, now
            changes.append({"shop_id": shop_id, "customer_id": r.customer_id, "from_segment": r.segment,
                            "to_segment": seg, "changed_at": now, "reason": reason})
        updates.append(u)
    # Two shapes of row (with / without a segment change): executemany needs one key set per statement.
    for keys in (True, False):
        part = [u for u in updates if ("segment" in u) is keys]
        for i in range(0, len(part), CHUNK):
            s.execute(update(CustomerStats), part[i:i + CHUNK])
    for i in range(0, len(changes), CHUNK):
        s.execute(insert(SegmentChange), changes[i:i + CHUNK])
    s.expire_all()                 # ORM objects loaded earlier would show the old scores
    return {"customers": len(rows), "updated": len(updates), "changes": len(changes)}


# --------------------------------------------------------------------------------------------- refit
def refit_rfm_in_session(s, shop, now: dt.datetime, reason: str = "refit") -> dict:
    """Fit the shop's RFM thresholds on all its CustomerStats, store them (ShopModel 'rfm', version + 1) and
    rescore every customer, recording SegmentChange(reason) for each changed segment. Runs in the caller's
    transaction (import, rebuild, order job, refit job); does not commit. `shop` is a Shop or its id."""
    if not isinstance(shop, Shop):
        shop = s.get(Shop, int(shop))
    s.flush()
    rows = s.execute(select(CustomerStats.last_order_at, CustomerStats.orders_count, CustomerStats.net_revenue)
                     .where(CustomerStats.shop_id == shop.id)).all()
    edges = fit_edges(rows, now)
    scheme = _scheme(shop)          # a refit adopts the scheme currently chosen in the settings
    model = s.get(ShopModel, (shop.id, RFM_KIND))
    if model is None:
        model = ShopModel(shop_id=shop.id, kind=RFM_KIND, version=0)
        s.add(model)
    model.version = int(model.version or 0) + 1
    model.status, model.message = "ok", None
    model.params = {"edges": edges, "scheme": scheme, "customers_now": len(rows)}
    model.fitted_at, model.customers_at_fit = now, len(rows)
    shop_id = shop.id
    result = rescore_all(s, shop_id, edges, scheme, now, reason)
    return {"shop_id": shop_id, "edges": edges, "scheme": scheme, "version": model.version, **result}


def refit_needed(model: ShopModel | None, share: float) -> bool:
    """True when the customer count moved by more than `share` of the count at the last fit."""
    if model is None:
        return True
    now_n = int((model.params or {}).get("customers_now", model.customers_at_fit or 0))
    at_fit = int(model.customers_at_fit or 0)
    return abs(now_n - at_fit) > share * max(at_fit, 1)


def refit_rfm(shop_id: int, now: str | None = None) -> dict:
    at = dt.datetime.fromisoformat(now) if now else utcnow()
    with context.write_transaction() as s:
        shop = context.lock_shop(s, shop_id)
        if shop is None or shop.status == "uninstalled":
            return {"shop_id": shop_id, "status": "skipped"}
        res = refit_rfm_in_session(s, shop, at, reason="refit")
    res.pop("edges", None)
    log.info("refit_rfm shop=%s %s", shop_id, res)
    return res


def refit_job_id(shop_id: int) -> str:
    return f"refit-rfm-{shop_id}"


def enqueue_refit_rfm(config, shop_id: int):
    """Enqueue `refit_rfm`; a refit of the shop still waiting in the queue is reused (coalescing)."""
    from shopify_app.queues import DEFAULT, enqueue_unless_waiting

    return enqueue_unless_waiting(config, DEFAULT, "workers.rfm_jobs.refit_rfm", shop_id, job_id=refit_job_id(shop_id),
                                  timeout=JOB_TIMEOUT)


# --------------------------------------------------------------------------------------------- aging
def age_shop_in_session(s, shop: Shop, now: dt.datetime) -> dict:
    """Rescore everyone with the stored thresholds and today's recency (reason 'aging'). A shop without stored
    thresholds is refitted instead (reason 'refit')."""
    edges, scheme, _model = stored_params(s, shop)
    if edges is None:
        return refit_rfm_in_session(s, shop, now, reason="refit")
    return {"shop_id": shop.id, **rescore_all(s, shop.id, edges, scheme, now, "aging")}


def snapshot_segments_in_session(s, shop_id: int, day: dt.date) -> dict:
    """Replace the shop's SegmentSnapshot rows of `day` with the current segment sizes (idempotent)."""
    rows = s.execute(select(CustomerStats.segment, func.count(),
                            func.coalesce(func.sum(CustomerStats.net_revenue), 0.0),
                            func.coalesce(func.sum(CustomerStats.orders_count), 0))
                     .where(CustomerStats.shop_id == shop_id, CustomerStats.segment.is_not(None))
                     .group_by(CustomerStats.segment)).all()
    s.execute(delete(SegmentSnapshot).where(SegmentSnapshot.shop_id == shop_id, SegmentSnapshot.day == day))
    out = [{"shop_id": shop_id, "day": day, "segment": seg, "customers": int(n), "revenue": round(float(rev), 2),
            "orders": int(orders)} for seg, n, rev, orders in rows]
    if out:
        s.execute(insert(SegmentSnapshot), out)
    return {"shop_id": shop_id, "day": day.isoformat(), "segments": len(out)}


def snapshot_segments(shop_id: int, day: str | None = None) -> dict:
    d = dt.date.fromisoformat(day) if day else utcnow().date()
    with context.transaction() as s:
        if context.lock_shop(s, shop_id) is None:
            return {"shop_id": shop_id, "status": "skipped"}
        return snapshot_segments_in_session(s, shop_id, d)


def age_shop(shop_id: int, now: str | None = None) -> dict:
    """Daily: aging rescoring, then the day's segment snapshot (after aging, so the chart shows today's
    segments). Two transactions: a failure of the snapshot keeps the aging; a retry redoes both harmlessly."""
    at = dt.datetime.fromisoformat(now) if now else utcnow()
    with context.transaction() as s:
        shop = context.lock_shop(s, shop_id)
        if shop is None or shop.status == "uninstalled":
            return {"shop_id": shop_id, "status": "skipped"}
        res = age_shop_in_session(s, shop, at)
    res.pop("edges", None)
    res["snapshot"] = snapshot_segments(shop_id, at.date().isoformat())
    log.info("age_shop shop=%s %s", shop_id, res)
    return res


# --------------------------------------------------------------------------------------------- read side
def segment_sizes(s, shop: Shop) -> list[dict]:
    """Every segment of the shop's scheme (in the scheme's order) with its customers, net revenue, plain-words
    definition, action and `too_small` ("too small to act on": 0 < customers < settings.min_segment_size)."""
    from shopify_app.analytics.segments import describe_segment, too_small_flags

    _edges, scheme, _model = stored_params(s, shop)
    rows = dict((seg, (int(n), float(rev or 0.0))) for seg, n, rev in s.execute(
        select(CustomerStats.segment, func.count(), func.sum(CustomerStats.net_revenue))
        .where(CustomerStats.shop_id == shop.id, CustomerStats.segment.is_not(None))
        .group_by(CustomerStats.segment)))
    sch = SCHEMES[scheme]
    flags = too_small_flags({name: rows.get(name, (0, 0.0))[0] for name in sch.segments},
                            shop_settings(shop).min_segment_size)
    return [{"segment": name, "customers": rows.get(name, (0, 0.0))[0],
             "revenue": round(rows.get(name, (0, 0.0))[1], 2), "too_small": flags[name],
             "definition": describe_segment(scheme, name), "action": sch.actions[name]} for name in sch.segments]


# --------------------------------------------------------------------------------------------- fan-out
def _active_shop_ids() -> list[int]:
    with context.transaction() as s:
        return list(s.scalars(select(Shop.id).where(Shop.status == "active").order_by(Shop.id)))


def refit_all_shops() -> dict:
    """Daily schedule: one `refit_rfm` job per active shop."""
    cfg = context.config()
    ids = _active_shop_ids()
    for shop_id in ids:
        enqueue_refit_rfm(cfg, shop_id)
    return {"enqueued": len(ids), "shop_ids": ids}


def age_all_shops() -> dict:
    """Daily schedule: one `age_shop` job per active shop (aging + snapshot)."""
    from shopify_app.queues import DEFAULT, enqueue

    cfg = context.config()
    ids = _active_shop_ids()
    day = utcnow().date().isoformat()
    for shop_id in ids:
        # One id per shop and day; a duplicate enqueue (second scheduler, retried fan-out) only reruns an
        # idempotent job.
        enqueue(cfg, DEFAULT, "workers.rfm_jobs.age_shop", shop_id, job_id=f"age-shop-{shop_id}-{day}",
                timeout=JOB_TIMEOUT)
    return {"enqueued": len(ids), "shop_ids": ids}
