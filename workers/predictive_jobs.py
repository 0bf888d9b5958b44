"""Predictive refits (BG/NBD, Gamma-Gamma, k-means) per shop, and cheap cluster assignment between refits.

`refit_predictions` runs on the MODELS queue (its own worker process, so a long fit never delays webhooks).
It is idempotent and safe to retry:

  1. read the shop's CustomerStats (short transaction, always filtered by shop_id);
  2. fit with `run_predictions` OUTSIDE any transaction (minutes on a big shop: holding a transaction that long
     would block writers, and on SQLite `BEGIN IMMEDIATE` takes the write lock);
  3. in ONE transaction: upsert the shop's CustomerPrediction rows, delete predictions of customers no longer
     present, and upsert the ShopModel rows (bgnbd, gamma_gamma, kmeans) with an incremented version.

Re-running with the same data gives the same predictions (only versions / fit times move on).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Iterable

import pandas as pd
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shopify_app.analytics import clusters as clu
from shopify_app.analytics.predictive import run_predictions
from shopify_app.models import CustomerPrediction, CustomerStats, Shop, ShopModel, utcnow
from shopify_app.queues import MODELS, enqueue_unless_waiting

from . import context

log = logging.getLogger(__name__)

MODEL_KINDS = ("bgnbd", "gamma_gamma", "kmeans")
REFIT_TIMEOUT = 30 * 60          # seconds; RQ's default (180 s) is too short for a big shop's fit
CHUNK = 500                      # ids per IN (...) clause (SQLite's bound-parameter limit)
PREDICTION_FIELDS = ("p_alive", "exp_purchases_30", "exp_purchases_90", "exp_purchases_365",
                     "expected_next_order_at", "predicted_aov", "clv_12m", "churn_band", "value_risk_quadrant",
                     "cluster_id", "cluster_name", "is_outlier")


# ---------------------------------------------------------------------------------------------- inputs
def _ratio(num, den) -> float:
    num, den = float(num or 0), float(den or 0)
    return num / den if den > 0 else 0.0


def customer_input(row) -> dict:
    """One CustomerStats row (ORM object or Row) -> the per-customer dict run_predictions expects."""
    orders = int(row.orders_count or 0)
    return {
        "customer_id": int(row.customer_id),
        "first_order_at": row.first_order_at,
        "last_order_at": row.last_order_at,
        "orders_count": orders,
        "net_revenue": float(row.net_revenue or 0.0),
        "aov": _ratio(row.net_revenue, orders),
        "discount_share": _ratio(row.discounted_orders, orders),
        "avg_discount_depth": _ratio(row.discount_total, row.pre_discount_total),
        "refund_rate": _ratio(row.refunded_orders, orders),
        "product_type_counts": dict(row.product_type_counts or {}),
    }


_STATS_COLUMNS = (CustomerStats.customer_id, CustomerStats.first_order_at, CustomerStats.last_order_at,
                  CustomerStats.orders_count, CustomerStats.net_revenue, CustomerStats.discounted_orders,
                  CustomerStats.discount_total, CustomerStats.pre_discount_total, CustomerStats.refunded_orders,
                  CustomerStats.product_type_counts)


def load_customers(session: Session, shop_id: int) -> list[dict]:
    rows = session.execute(select(*_STATS_COLUMNS).where(CustomerStats.shop_id == shop_id)
                           .order_by(CustomerStats.customer_id))
    return [customer_input(r) for r in rows]


def _prediction_settings(shop: Shop):
    s = shop.settings or {}
    p = s.get("predictive") if isinstance(s, dict) else None
    return p if isinstance(p, dict) else None


def _parse_as_of(as_of: str | dt.datetime | None) -> dt.datetime:
    if as_of is None:
        return utcnow()
    ts = pd.Timestamp(as_of)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


# ---------------------------------------------------------------------------------------------- writes
def _upsert(session: Session, model, rows: list[dict], keys: tuple[str, ...]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        cols = [c for c in rows[0] if c not in keys]
        for i in range(0, len(rows), CHUNK):
            stmt = insert(model)
            stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                              set_={c: getattr(stmt.excluded, c) for c in cols})
            session.execute(stmt, rows[i:i + CHUNK])
    else:  # pragma: no cover - other databases: slower but portable
        for r in rows:
            session.merge(model(**r))


def _delete_predictions(session: Session, shop_id: int, customer_ids: Iterable[int]) -> int:
    ids = sorted(customer_ids)
    for i in range(0, len(ids), CHUNK):
        session.execute(delete(CustomerPrediction).where(CustomerPrediction.shop_id == shop_id,
                                                         CustomerPrediction.customer_id.in_(ids[i:i + CHUNK])))
    return len(ids)


def _model_params(kind: str, result) -> tuple[str, str | None, dict]:
    m = dict(result.metadata["models"].get(kind) or {})
    status, message = m.pop("status", "failed"), m.pop("message", None)
    if kind == "kmeans":
        # The full JSON model: needed by clusters.assign between refits and as the next fit's warm start.
        params = dict(result.cluster_model or {})
    else:
        params = m
    return status or "failed", message, params


# ---------------------------------------------------------------------------------------------- jobs
def refit_predictions(shop_id: int, as_of: str | None = None) -> dict:
    """Refit the shop's predictive models and replace its predictions. Idempotent; returns a summary."""
    as_of_dt = _parse_as_of(as_of)
    with context.read_transaction() as s:      # a long read: no SQLite write lock while it runs
        shop = s.get(Shop, shop_id)
        if shop is None or shop.status == "uninstalled":
            why = "unknown shop" if shop is None else "shop is uninstalled"
            log.info("refit_predictions shop=%s skipped: %s", shop_id, why)
            return {"shop_id": shop_id, "customers": 0, "status": "skipped", "message": why}
        settings = _prediction_settings(shop)
        customers = load_customers(s, shop_id)
        prev = s.get(ShopModel, (shop_id, "kmeans"))
        previous_cluster_model = dict(prev.params) if prev is not None and prev.params else None
    read_ids = {c["customer_id"] for c in customers}

    fitted_at = utcnow()
    result = run_predictions(customers, as_of_dt, settings=settings,
                             previous_cluster_model=previous_cluster_model, fitted_at=fitted_at)
    md = result.metadata
    records = [r for r in result.records() if r.get("churn_band") is not None]   # customers with orders

    with context.transaction() as s:
        shop = s.get(Shop, shop_id)
        if shop is None or shop.status == "uninstalled":       # uninstalled while we were fitting
            return {"shop_id": shop_id, "customers": 0, "status": "skipped",
                    "message": "shop was uninstalled during the refit"}
        versions = {}
        for kind in MODEL_KINDS:
            status, message, params = _model_params(kind, result)
            row = s.get(ShopModel, (shop_id, kind))
            if row is None:
                row = ShopModel(shop_id=shop_id, kind=kind, version=0)
                s.add(row)
            row.version = int(row.version or 0) + 1
            row.status, row.message, row.params = status, message, params
            row.fitted_at, row.customers_at_fit = fitted_at, int(md.get("n_with_orders", len(records)))
            versions[kind] = row.version
        model_version = "%s@%d" % (md["version"], versions["bgnbd"])

        pred_rows = [{"shop_id": shop_id, "customer_id": int(r["customer_id"]),
                      **{f: r.get(f) for f in PREDICTION_FIELDS},
                      "is_outlier": bool(r.get("is_outlier")),
                      "model_version": model_version, "fitted_at": fitted_at} for r in records]
        _upsert(s, CustomerPrediction, pred_rows, ("shop_id", "customer_id"))

        # Keep: customers predicted now, plus customers that appeared after we read (assign_cluster_now may
        # have given them a row meanwhile). Delete everyone else: gone, or without orders any more.
        keep = {r["customer_id"] for r in pred_rows}
        current = set(s.scalars(select(CustomerStats.customer_id).where(CustomerStats.shop_id == shop_id)))
        keep |= current - read_ids
        existing = set(s.scalars(select(CustomerPrediction.customer_id)
                                 .where(CustomerPrediction.shop_id == shop_id)))
        deleted = _delete_predictions(s, shop_id, existing - keep)

    summary = {"shop_id": shop_id, "customers": len(pred_rows), "customers_total": len(customers),
               "deleted": deleted, "status": md["status"], "message": md["message"],
               "model_version": model_version, "versions": versions, "fitted_at": fitted_at.isoformat(),
               "as_of": as_of_dt.isoformat()}
    log.info("refit_predictions shop=%s customers=%s status=%s", shop_id, len(pred_rows), md["status"])
    return summary


def refit_job_id(shop_id: int) -> str:
    return f"refit-predictions-{shop_id}"


def enqueue_refit(config, shop_id: int):
    """Enqueue a refit on the MODELS queue; a refit still waiting for the shop is reused. While one runs, the
    follow-up is queued behind it (shopify_app.queues.enqueue_unless_waiting): the running refit may have read the
    shop's data before the change that asked for this one (e.g. an import that just finished)."""
    return enqueue_unless_waiting(config, MODELS, "workers.predictive_jobs.refit_predictions", shop_id,
                                  job_id=refit_job_id(shop_id), timeout=REFIT_TIMEOUT)


def refit_all_shops() -> dict:
    """Daily schedule: one refit job per active shop."""
    cfg = context.config()
    with context.transaction() as s:
        shop_ids = list(s.scalars(select(Shop.id).where(Shop.status == "active").order_by(Shop.id)))
    for shop_id in shop_ids:
        enqueue_refit(cfg, shop_id)
    return {"enqueued": len(shop_ids), "shop_ids": shop_ids}


def assign_cluster_now(session: Session, shop_id: int, customer_id: int,
                       as_of: dt.datetime | None = None) -> dict | None:
    """Put one customer in a cluster of the stored k-means model (no refit) and update its prediction row.

    Runs in the caller's session/transaction (order processing); does not commit. Returns the cluster fields,
    or None when there is no usable model or no stats for the customer.
    """
    model = session.get(ShopModel, (shop_id, "kmeans"))
    params = model.params if model is not None else None
    if not params or not params.get("centroids") or not params.get("features"):
        return None
    stats = session.execute(select(*_STATS_COLUMNS).where(CustomerStats.shop_id == shop_id,
                                                          CustomerStats.customer_id == customer_id)).first()
    if stats is None or not stats.orders_count or stats.first_order_at is None or stats.last_order_at is None:
        return None
    feats = clu.behaviour_features([customer_input(stats)], as_of or utcnow())
    a = clu.assign(params, feats).iloc[0]
    fields = {"cluster_id": int(a["cluster_id"]), "cluster_name": str(a["cluster_name"]),
              "is_outlier": bool(a["is_outlier"])}
    pred = session.get(CustomerPrediction, (shop_id, customer_id))
    if pred is None:
        # New customer since the last refit: cluster now, the purchase-model numbers come with the next refit.
        pred = CustomerPrediction(shop_id=shop_id, customer_id=customer_id,
                                  model_version="kmeans-assign@%d" % model.version, fitted_at=model.fitted_at)
        session.add(pred)
    for k, v in fields.items():
        setattr(pred, k, v)
    return fields
