"""Online Retail (UCI 352) backtest: fit on all but the last 90 days, predict the last 90.

Cleaning: no 'C' (cancellation) invoices, Quantity > 0, UnitPrice > 0, CustomerID present. A transaction = one
customer-day (the papers' convention); value = sum(Quantity * UnitPrice). Customers = those with a purchase on or
before the cut-off day. Label = "buys again in the holdout" (>= 1 purchase day in the 90 days after the cut-off).

Scores compared (AUC, sklearn roc_auc_score): BG/NBD P(alive), BG/NBD E[purchases in 90 days], the app's
predictions (run_predictions: BG/NBD, or the empirical fallback when the fit degenerates), and the RFM recency
score alone (quintile 1-5 of days since last purchase, 5 = most recent). MAE of predicted vs actual purchase-day
counts against a naive baseline (each customer's historical repeat rate x / T times 90 days).

On this data BG/NBD degenerates (no dropout), so the app uses its nbd+recency fallback, where expected purchases
and CLV are P(alive) x (NBD rate while active) x t. Printed as well: the rebuy rate per P(alive) bin (a calibrated
P(alive) would have rebuy rate <= P(alive) in every bin) and the MAE split into one-time and repeat buyers, against
the rate-only NBD expectation (the fallback before it was conditioned on P(alive); = BG/NBD with a -> 0).
Reads ../shared/data/online_retail.csv.gz (or bench/data/online_retail.csv.gz). Ends with one `RESULT {json}`.
Run: .venv/bin/python bench/bench_online_retail_backtest.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from shopify_app.analytics.clv import BetaGeoModel, summary_from_transactions  # noqa: E402
from shopify_app.analytics.predictive import run_predictions  # noqa: E402

HOLDOUT_DAYS = 90


def data_file() -> Path:
    for p in (ROOT.parent / "shared" / "data" / "online_retail.csv.gz", ROOT / "bench" / "data" / "online_retail.csv.gz"):
        if p.exists():
            return p
    raise SystemExit("online_retail.csv.gz not found (../shared/data or bench/data)")


def recency_quintile(recency_days: pd.Series) -> pd.Series:
    # rank first so ties do not break qcut; smallest recency (most recent) -> 5
    return 6 - (pd.qcut(recency_days.rank(method="first"), 5, labels=False) + 1)


def main():
    t0 = time.perf_counter()
    df = pd.read_csv(data_file(), dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str})
    n_raw = len(df)
    df = df[~df["InvoiceNo"].str.startswith("C") & (df["Quantity"] > 0) & (df["UnitPrice"] > 0)
            & df["CustomerID"].notna()].copy()
    df["InvoiceDate"] = pd.to_datetime(df["InvoiceDate"])
    df["value"] = df["Quantity"] * df["UnitPrice"]
    print("rows %d -> %d after cleaning, %d customers (expected 397,884 / 4,338)"
          % (n_raw, len(df), df["CustomerID"].nunique()))
    last_day = df["InvoiceDate"].max().normalize()
    cutoff = last_day - pd.Timedelta(days=HOLDOUT_DAYS)
    cal, hold = df[df["InvoiceDate"] < cutoff + pd.Timedelta(days=1)], df[df["InvoiceDate"] >= cutoff + pd.Timedelta(days=1)]
    print("calibration through %s, holdout %s .. %s" % (cutoff.date(), (cutoff + pd.Timedelta(days=1)).date(),
                                                       last_day.date()))
    s = summary_from_transactions(cal, "CustomerID", "InvoiceDate", "value", cutoff, unit_days=1)
    actual = (hold.assign(day=hold["InvoiceDate"].dt.normalize()).groupby("CustomerID")["day"].nunique()
              .reindex(s.index).fillna(0))
    y = (actual > 0).astype(int)
    print("customers in calibration %d, repeat buyers %d, bought again in holdout %d (%.1f%%)"
          % (len(s), (s.frequency > 0).sum(), y.sum(), 100 * y.mean()))

    # Raw BG/NBD fit, whatever its diagnostics say.
    t1 = time.perf_counter()
    bg = BetaGeoModel().fit(s.frequency, s.recency, s["T"])
    t_fit = time.perf_counter() - t1
    print("\nBG/NBD fit %.2fs: %s  LL %.1f  converged=%s" % (t_fit, {k: round(v, 5) for k, v in bg.params_.items()},
                                                          bg.log_likelihood_, bg.converged_))
    print("  mean dropout probability per purchase a/(a+b) = %.5f" % (bg.params_["a"] / (bg.params_["a"] + bg.params_["b"])))
    print("  degenerate=%s issues=%s" % (bg.degenerate_, [i.code for i in bg.issues_]))
    for i in bg.issues_:
        print("  merchant message: " + i.message)
    p_alive_bg = bg.conditional_probability_alive(s.frequency, s.recency, s["T"])
    e90_bg = bg.conditional_expected_purchases(HOLDOUT_DAYS, s.frequency, s.recency, s["T"])

    # The app path: per-customer dicts -> run_predictions (falls back by itself when the fit degenerates).
    g = cal.assign(day=cal["InvoiceDate"].dt.normalize()).groupby("CustomerID")
    agg = g.agg(first=("InvoiceDate", "min"), last=("InvoiceDate", "max"), orders=("InvoiceNo", "nunique"),
                days=("day", "nunique"), revenue=("value", "sum"))
    customers = [dict(customer_id=cid, first_order_at=r["first"].to_pydatetime(), last_order_at=r["last"].to_pydatetime(),
                      orders_count=int(r.orders), order_days=int(r.days), net_revenue=float(r.revenue),
                      aov=float(r.revenue / r.orders), discount_share=0.0, avg_discount_depth=0.0, refund_rate=0.0,
                      product_type_counts={}) for cid, r in agg.iterrows()]
    t1 = time.perf_counter()
    # as_of = end of the cut-off day, like the summary above
    res = run_predictions(customers, cutoff + pd.Timedelta(days=1) - pd.Timedelta(seconds=1))
    t_app = time.perf_counter() - t1
    rows = res.rows.set_index("customer_id").loc[s.index]
    print("\nrun_predictions %.2fs: status=%s version=%s" % (t_app, res.metadata["status"], res.metadata["version"]))
    print("  message: " + res.metadata["message"])
    p_alive_app, e90_app = rows["p_alive"].astype(float).values, rows["exp_purchases_90"].astype(float).values

    rfm_r = recency_quintile(s["T"] - s["recency"])
    naive = s.frequency / s["T"].clip(lower=1) * HOLDOUT_DAYS
    auc = {"bgnbd_p_alive": roc_auc_score(y, p_alive_bg), "bgnbd_exp_purchases_90": roc_auc_score(y, e90_bg),
           "app_p_alive": roc_auc_score(y, p_alive_app), "app_exp_purchases_90": roc_auc_score(y, e90_app),
           "rfm_recency_score": roc_auc_score(y, rfm_r), "naive_rate": roc_auc_score(y, naive)}
    mae = {"bgnbd": float(np.abs(e90_bg - actual).mean()), "app": float(np.abs(e90_app - actual).mean()),
           "naive_rate_x90": float(np.abs(naive - actual).mean())}
    print("\nAUC for 'buys again in the next %d days':" % HOLDOUT_DAYS)
    for k, v in auc.items():
        print("  %-26s %.4f" % (k, v))
    print("MAE of predicted vs actual purchase days in the holdout (mean actual %.3f):" % actual.mean())
    for k, v in mae.items():
        print("  %-26s %.4f" % (k, v))
    print("sum predicted vs actual: bgnbd %.0f, app %.0f, naive %.0f, actual %.0f"
          % (e90_bg.sum(), np.nansum(e90_app), naive.sum(), actual.sum()))
    # Calibration of the fallback's P(alive): share of customers buying again in the holdout, per P(alive) bin.
    bins = pd.cut(p_alive_app, [0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0], include_lowest=True)
    calib = pd.Series(y.values).groupby(bins, observed=True).agg(["size", "mean"])
    print("rebuy rate by app P(alive) bin:",
          {str(b): "%d customers, %.1f%%" % (r["size"], 100 * r["mean"]) for b, r in calib.iterrows()})
    one = (s.frequency == 0).values
    mae_split = {k: {"one_time": float(np.abs(e - actual)[one].mean()), "repeat": float(np.abs(e - actual)[~one].mean())}
                 for k, e in (("app", e90_app), ("rate_only_nbd", e90_bg))}
    print("MAE one-time / repeat buyers: app %.4f / %.4f, rate-only NBD %.4f / %.4f"
          % (mae_split["app"]["one_time"], mae_split["app"]["repeat"], mae_split["rate_only_nbd"]["one_time"],
             mae_split["rate_only_nbd"]["repeat"]))
    print("churn bands:", rows["churn_band"].value_counts().to_dict(), " quadrants:",
          rows["value_risk_quadrant"].value_counts().to_dict())
    band_rebuy = pd.Series(y.values, index=s.index).groupby(rows["churn_band"].values).agg(["size", "mean"])
    print("share buying again in the holdout by churn band:",
          {b: "%d customers, %.1f%%" % (r["size"], 100 * r["mean"]) for b, r in band_rebuy.iterrows()})
    print("clusters:", rows["cluster_name"].value_counts().to_dict())
    result = {"n_customers": int(len(s)), "n_repeat": int((s.frequency > 0).sum()), "holdout_buyers": int(y.sum()),
              "bgnbd_params": {k: round(v, 6) for k, v in bg.params_.items()}, "bgnbd_ll": round(bg.log_likelihood_, 2),
              "bgnbd_degenerate": bool(bg.degenerate_), "bgnbd_issues": [i.code for i in bg.issues_],
              "app_status": res.metadata["status"], "app_version": res.metadata["version"],
              "app_message": res.metadata["message"],
              "auc": {k: round(float(v), 4) for k, v in auc.items()},
              "rebuy_rate_by_churn_band": {b: round(float(r["mean"]), 4) for b, r in band_rebuy.iterrows()}, "mae": {k: round(v, 4) for k, v in mae.items()},
              "mae_split": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in mae_split.items()},
              "sum_expected_90": {"app": round(float(np.nansum(e90_app)), 1), "rate_only_nbd": round(float(e90_bg.sum()), 1),
                                  "actual": int(actual.sum())},
              "p_alive_calibration": {str(b): {"n": int(r["size"]), "rebuy_rate": round(float(r["mean"]), 4)}
                                      for b, r in calib.iterrows()},
              "seconds": {"total": round(time.perf_counter() - t0, 2), "bgnbd_fit": round(t_fit, 2),
                          "run_predictions": round(t_app, 2)}}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
