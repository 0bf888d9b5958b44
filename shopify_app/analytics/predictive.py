"""From per-customer summaries to stored predictions: one pure function, `run_predictions`.

Input per customer (dict or DataFrame row): customer_id, first_order_at, last_order_at, orders_count,
order_days (distinct order dates, optional), net_revenue, aov, discount_share, avg_discount_depth, refund_rate,
product_type_counts (dict type -> count). Times are UTC (naive = UTC). The time unit of the models is the DAY.

Summary used by the models:
  frequency x = order_days - 1 (repeat transaction days, as in the papers); when order_days is missing,
                orders_count - 1; customers whose first and last order are the same instant get x = 0
                (same-day orders are one transaction);
  t_x = last_order_at - first_order_at, T = as_of - first_order_at (days);
  spend per transaction = net_revenue / (x + 1): the mean over ALL transaction days, first one included --
                the summary has no per-order values, so the papers' "mean of repeat purchases" is approximated.

Outputs (per customer): p_alive, exp_purchases_30/90/365, expected_next_order_at, predicted_aov, clv_12m,
churn_band, value_risk_quadrant, cluster_id, cluster_name, is_outlier, (+ is_one_time_buyer).

Rules:
  * purchase model: BG/NBD when the shop has >= min_customers customers with orders and >= min_repeat_customers
    repeat buyers and the fit is not degenerate. If only the dropout part degenerates ("nobody ever stops
    buying", typical for wholesale), clv.NBDRecencyModel (NBD purchase rates + recency-based P(alive)); otherwise
    clv.EmpiricalRepeatModel. Both fallbacks set status "fallback" and say why;
  * one coherent model per shop: every model gives E[purchases in t] = P(alive) * E[purchases in t | alive]
    <= P(alive) * purchase_rate_if_alive * t (BG/NBD by eq. 10, the fallbacks by construction), and clv_12m,
    churn_band and value_risk_quadrant are computed from that same P(alive) and those same expectations -- so a
    customer who is "likely lapsed" can never carry a high expected purchase count or CLV;
  * spend model: Gamma-Gamma on repeat buyers when >= min_repeat_for_spend and q > 1 etc.; else the customer's
    mean shrunk to the shop mean, (x m + mbar)/(x + 1);
  * clv_12m: clv.customer_lifetime_value, 12 monthly steps of 30.4375 days, discount rate monthly_discount_rate;
  * churn_band: "high" if p_alive < 0.3 or E[purchases next 365 d] < 0.2; else "medium" if p_alive < 0.7 or
    E[365 d] < 0.5; else "low". The expected-purchases arm matters for one-time buyers, whose BG/NBD P(alive) is
    1 by construction (dropout only after a repeat purchase);
  * value_risk_quadrant: high value = clv_12m > the shop median clv_12m (strictly above; ties -> low value);
    at risk = churn_band in {medium, high}. protect / win_back / grow / low_priority (see QUADRANTS);
  * expected_next_order_at = as_of + median wait to the next order GIVEN the customer is active; None when the
    churn band is "high" or the median wait is over 365 days (a date would be misleading then).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from . import clusters as clu
from .clv import (DAYS_PER_MONTH, BetaGeoModel, EmpiricalRepeatModel, GammaGammaModel, NBDRecencyModel,
                  customer_lifetime_value, shrunk_average_spend)

VERSION = "predictive-v1"
# A "next order date" more than a year out is not a forecast a merchant can act on (typical for one-time buyers,
# whose median wait under BG/NBD can be years): report None instead.
NEXT_ORDER_HORIZON_DAYS = 365.0

QUADRANTS = {
    "protect": ("High value, low risk", "Protect: VIP perks and early access; no discounts needed."),
    "win_back": ("High value, at risk", "Win back now: personal outreach or a targeted offer."),
    "grow": ("Low value, low risk", "Grow: cross-sell bundles and raise order value."),
    "low_priority": ("Low value, at risk", "Low priority: automated reminders only; don't discount."),
}


@dataclass
class PredictionSettings:
    monthly_discount_rate: float = 0.01
    clv_months: int = 12
    min_customers: int = 100
    min_repeat_customers: int = 20
    min_repeat_for_spend: int = 20
    default_gap_days: float = 90.0
    high_risk_p_alive: float = 0.3
    medium_risk_p_alive: float = 0.7
    high_risk_exp_365: float = 0.2
    medium_risk_exp_365: float = 0.5

    @classmethod
    def coerce(cls, s) -> "PredictionSettings":
        if s is None:
            return cls()
        if isinstance(s, cls):
            return s
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(s).items() if k in names})


@dataclass
class PredictionResult:
    rows: pd.DataFrame                       # one row per input customer, columns = ROW_COLUMNS
    metadata: dict                           # JSON-able: version, fitted_at, status, message, params, models
    cluster_model: dict = field(default_factory=dict)   # JSON-able, for clusters.assign between refits

    def records(self) -> list[dict]:
        """Rows as plain Python dicts (float/int/bool/str/datetime/None) ready for a DB insert."""
        out = self.rows.astype(object).where(self.rows.notna(), None).to_dict("records")
        for r in out:
            for k, v in r.items():
                if isinstance(v, pd.Timestamp):
                    r[k] = v.to_pydatetime()
                elif isinstance(v, np.generic):
                    r[k] = v.item()
        return out


ROW_COLUMNS = ["customer_id", "p_alive", "exp_purchases_30", "exp_purchases_90", "exp_purchases_365",
               "expected_next_order_at", "predicted_aov", "clv_12m", "churn_band", "value_risk_quadrant",
               "cluster_id", "cluster_name", "is_outlier", "is_one_time_buyer"]


def _naive_utc(ts) -> pd.Series:
    return clu.to_naive_utc(ts).set_axis(ts.index)


def summarize(df: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    first, last = _naive_utc(df["first_order_at"]), _naive_utc(df["last_order_at"])
    T = ((as_of - first).dt.total_seconds() / 86400.0).clip(lower=0)
    tx = ((last - first).dt.total_seconds() / 86400.0).clip(lower=0)
    tx = np.minimum(tx, T)
    orders = pd.to_numeric(df["orders_count"], errors="coerce").fillna(0)
    days = pd.to_numeric(df["order_days"], errors="coerce") if "order_days" in df else pd.Series(np.nan, df.index)
    x = (days.where(days.notna(), orders) - 1).clip(lower=0)
    x = x.where(tx > 0, 0.0)
    spend = pd.to_numeric(df["net_revenue"], errors="coerce").fillna(0).clip(lower=0) / (x + 1)
    return pd.DataFrame({"frequency": x.values, "recency": tx.values, "T": T.values, "spend": spend.values},
                        index=df.index)


def churn_bands(p_alive, exp365, s: PredictionSettings) -> np.ndarray:
    p, e = np.asarray(p_alive, float), np.asarray(exp365, float)
    high = (p < s.high_risk_p_alive) | (e < s.high_risk_exp_365)
    med = (p < s.medium_risk_p_alive) | (e < s.medium_risk_exp_365)
    return np.where(high, "high", np.where(med, "medium", "low"))


def value_risk_quadrants(clv, bands) -> tuple[np.ndarray, float]:
    clv = np.asarray(clv, float)
    median = float(np.median(clv)) if clv.size else 0.0
    hi = clv > median
    risk = np.isin(np.asarray(bands), ["medium", "high"])
    q = np.where(hi, np.where(risk, "win_back", "protect"), np.where(risk, "low_priority", "grow"))
    return q, median


def run_predictions(customers, as_of, settings=None, previous_cluster_model: dict | None = None,
                    fitted_at: dt.datetime | None = None) -> PredictionResult:
    s = PredictionSettings.coerce(settings)
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_convert("UTC").tz_localize(None) if as_of.tzinfo else as_of
    fitted_at = fitted_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    df = pd.DataFrame(customers).copy() if not isinstance(customers, pd.DataFrame) else customers.copy()
    df = df.reset_index(drop=True)
    rows = pd.DataFrame({c: pd.Series([None] * len(df), dtype=object) for c in ROW_COLUMNS})
    if len(df):
        rows["customer_id"] = df["customer_id"].values
    rows["is_outlier"] = False
    messages, models = [], {}

    has_orders = (pd.to_numeric(df.get("orders_count", pd.Series(dtype=float)), errors="coerce").fillna(0) > 0)
    if len(df):
        has_orders &= df["first_order_at"].notna() & df["last_order_at"].notna()
    d = df[has_orders]
    summ = summarize(d, as_of) if len(d) else pd.DataFrame(columns=["frequency", "recency", "T", "spend"])
    x, tx, T, spend = (summ[c].to_numpy(float) for c in ("frequency", "recency", "T", "spend"))
    n, n_rep = len(summ), int((x > 0).sum())

    # ---- purchase model
    pm, pm_status, pm_msg = None, "ok", None
    if n < s.min_customers or n_rep < s.min_repeat_customers:
        pm_status = "fallback"
        pm_msg = ("Not enough history for the predictive purchase model yet: %d customers with orders (need %d) "
                  "and %d repeat buyers (need %d). Predictions use a simple recency-based estimate."
                  % (n, s.min_customers, n_rep, s.min_repeat_customers))
    else:
        try:
            bg = BetaGeoModel().fit(x, tx, T)
            if bg.degenerate_:
                pm_status = "fallback"
                models["bgnbd_rejected"] = bg.to_dict()
                codes = {i.code for i in bg.issues_}
                if codes <= {"no_dropout", "at_bounds"} and set(bg.params_at_bounds_) <= {"a", "b"}:
                    # Only the dropout part (a, b) collapsed while r, alpha are interior: keep the (valid)
                    # purchase-rate part, see NBDRecencyModel.
                    pm = NBDRecencyModel(bg, EmpiricalRepeatModel(default_gap=s.default_gap_days).fit(x, tx, T))
                    why = [i.message for i in bg.issues_ if i.code == "no_dropout"] or [
                        "The data cannot tell when customers stop buying (the dropout part of the model ran to "
                        "the edge of its range)."]
                    pm_msg = why[0] + " The chance a customer is still active is estimated from the time since " \
                        "their last order; expected purchases and lifetime value are each customer's buying rate " \
                        "times that chance."
                else:
                    pm_msg = " ".join(i.message for i in bg.issues_) + \
                        " Predictions use a simple recency-based estimate instead."
            else:
                pm = bg
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
            pm_status, pm_msg = "fallback", "The purchase model could not be fitted (%s); using a simple " \
                "recency-based estimate." % e
    if pm is None and n:
        pm = EmpiricalRepeatModel(default_gap=s.default_gap_days).fit(x, tx, T)
        if n_rep == 0:
            pm_msg = (pm_msg or "") + " No customer has ordered twice yet, so a default gap of %g days between " \
                "orders is assumed." % s.default_gap_days
    if pm_msg:
        messages.append(pm_msg.strip())
    models["bgnbd"] = {"status": pm_status if n else "failed", "message": pm_msg,
                       **(pm.to_dict() if pm is not None else {"model": None, "params": {}})}

    # ---- spend model
    sm_status, sm_msg, gg = "ok", None, None
    if n_rep < s.min_repeat_for_spend:
        sm_status = "fallback"
        sm_msg = ("Only %d repeat buyers (need %d) for the spend model: expected order value is each customer's "
                  "average blended with the shop average." % (n_rep, s.min_repeat_for_spend))
    else:
        gg = GammaGammaModel().fit(x, spend)
        if gg.degenerate_:
            sm_status = "fallback"
            sm_msg = " ".join(i.message for i in gg.issues_) + \
                " Expected order value is each customer's average blended with the shop average."
    if sm_status == "ok":
        pred_spend = gg.conditional_expected_average_profit(x, spend)
    else:
        pred_spend = shrunk_average_spend(x, spend) if n else np.zeros(0)
    if sm_msg:
        messages.append(sm_msg)
    models["gamma_gamma"] = {"status": sm_status, "message": sm_msg,
                             **(gg.to_dict() if gg is not None else {"model": "shrunk_mean", "params": {}})}
    if gg is not None and abs(gg.freq_monetary_corr_) > 0.3:
        models["gamma_gamma"]["warning"] = ("Order value is correlated with order frequency (r = %.2f); the "
                                            "spend model assumes they are independent." % gg.freq_monetary_corr_)

    # ---- per-customer numbers
    idx = np.flatnonzero(has_orders.to_numpy())
    if n:
        p_alive = pm.conditional_probability_alive(x, tx, T)
        e30, e90, e365 = (pm.conditional_expected_purchases(t, x, tx, T) for t in (30.0, 90.0, 365.0))
        clv = customer_lifetime_value(pm, x, tx, T, pred_spend, months=s.clv_months,
                                      monthly_discount_rate=s.monthly_discount_rate, period_length=DAYS_PER_MONTH)
        bands = churn_bands(p_alive, e365, s)
        quad, clv_median = value_risk_quadrants(clv, bands)
        wait = pm.median_time_to_next_purchase(x, tx, T)
        nxt = [None if (b == "high" or not np.isfinite(w) or w > NEXT_ORDER_HORIZON_DAYS)
               else (as_of + pd.Timedelta(days=float(w))).round("min").to_pydatetime()
               for b, w in zip(bands, wait)]
        for col, vals in (("p_alive", p_alive), ("exp_purchases_30", e30), ("exp_purchases_90", e90),
                          ("exp_purchases_365", e365), ("predicted_aov", pred_spend), ("clv_12m", clv)):
            rows.loc[idx, col] = np.round(np.asarray(vals, float), 6)
        rows.loc[idx, "churn_band"] = bands
        rows.loc[idx, "value_risk_quadrant"] = quad
        rows.loc[idx, "expected_next_order_at"] = pd.Series(nxt, index=idx, dtype=object)
        rows.loc[idx, "is_one_time_buyer"] = x == 0
    else:
        clv_median = None

    # ---- clusters
    km_model, km_msg = {}, None
    if n:
        # index = customer ids (not row positions): the cluster fit orders rows by id, so shuffling the input
        # must not change anything. Assignments come back in the order of `feats` = the order of `d`.
        feats = clu.behaviour_features(d, as_of)
        res = clu.fit_clusters(feats, previous_model=previous_cluster_model, fitted_at=fitted_at)
        km_model = res["model"]
        a = res["assignments"]
        rows.loc[idx, "cluster_id"] = a["cluster_id"].to_numpy()
        rows.loc[idx, "cluster_name"] = a["cluster_name"].to_numpy()
        rows.loc[idx, "is_outlier"] = a["is_outlier"].to_numpy()
        km_msg = km_model.get("message")
        if km_msg:
            messages.append(km_msg)
    models["kmeans"] = {"status": km_model.get("status", "failed"), "message": km_msg,
                        "params": {k: km_model.get(k) for k in ("k", "ids", "names", "descriptions", "sizes",
                                                                "silhouette_by_k")} if km_model else {}}
    if len(df) > n:
        messages.append("%d customers without orders get no predictions." % (len(df) - n))

    statuses = [models["bgnbd"]["status"], models["gamma_gamma"]["status"], models["kmeans"]["status"]]
    status = "failed" if n == 0 else ("ok" if all(st == "ok" for st in statuses) else "fallback")
    if n == 0:
        messages.insert(0, "No customers with orders yet: nothing to predict.")
    metadata = {
        "version": "%s/%s" % (VERSION, {BetaGeoModel: "bgnbd", NBDRecencyModel: "nbd+recency"}.get(type(pm),
                                                                                                 "empirical")),
        "fitted_at": fitted_at.isoformat(), "as_of": as_of.isoformat(), "status": status,
        "message": " ".join(messages) if messages else "All models fitted normally.",
        "n_customers": int(len(df)), "n_with_orders": int(n), "n_repeat_buyers": n_rep,
        "time_unit": "day", "settings": asdict(s), "clv_median": clv_median,
        "quadrants": {k: {"label": v[0], "action": v[1]} for k, v in QUADRANTS.items()},
        "params": {"bgnbd": models["bgnbd"].get("params"), "gamma_gamma": models["gamma_gamma"].get("params")},
        "models": models,
        "definitions": {
            "frequency": "distinct order days - 1 (orders_count - 1 when order days are unknown)",
            "exp_purchases": "E[purchases in the next t days] = p_alive * E[purchases | still active]; never more "
                             "than p_alive * (the customer's buying rate while active) * t",
            "clv_12m": "sum_{k=1..12} (E[N(k*30.4375d)] - E[N((k-1)*30.4375d)]) * E[spend] / (1+d)^k",
            "high_value": "clv_12m > shop median clv_12m",
            "churn_band": "high: p_alive<%.2f or E[365d]<%.2f; medium: p_alive<%.2f or E[365d]<%.2f; else low"
                          % (s.high_risk_p_alive, s.high_risk_exp_365, s.medium_risk_p_alive, s.medium_risk_exp_365),
            "expected_next_order_at": "as_of + median wait to next order given the customer is active; "
                                      "None for high churn risk or a median wait > 365 days",
        },
    }
    return PredictionResult(rows=rows, metadata=_jsonable(metadata), cluster_model=_jsonable(km_model))


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating,)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o
