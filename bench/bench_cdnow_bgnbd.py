"""CDNOW 1/10th sample: our BG/NBD and Gamma-Gamma against Fader, Hardie & Lee (2005).

Calibration = first 39 weeks (through 1997-09-30), holdout = the next 39 weeks (1997-10-01 .. 1998-06-30).
Reads ../shared/data/cdnow when present, else the bundled copy in tests/data/cdnow. Ends with one `RESULT {json}`.
Run: .venv/bin/python bench/bench_cdnow_bgnbd.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from shopify_app.analytics.clv import BetaGeoModel, GammaGammaModel, summary_from_transactions  # noqa: E402

PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "ll": -9582.4, "p": 6.25, "q": 3.74, "gamma": 15.44}
CAL_END, HOLD_END = pd.Timestamp("1997-09-30"), pd.Timestamp("1998-06-30")


def data_dir() -> Path:
    shared = ROOT.parent / "shared" / "data" / "cdnow"
    return shared if (shared / "CDNOW_sample.txt").exists() else ROOT / "tests" / "data" / "cdnow"


def main():
    d = data_dir()
    print("data:", d)
    tx = pd.read_csv(d / "CDNOW_sample.txt", sep=r"\s+", header=None,
                     names=["master_id", "id", "date", "cds", "usd"], dtype={"date": str})
    tx["date"] = pd.to_datetime(tx["date"], format="%Y%m%d")
    s = summary_from_transactions(tx, "id", "date", "usd", CAL_END, unit_days=7)
    print("customers: %d, repeat buyers in calibration: %d" % (len(s), (s.frequency > 0).sum()))

    # Our summary against the published per-customer summary (x, t_x, T in weeks, zbar).
    ref_file = d / "cdnow_customers_summary_with_transactions.csv"
    check = {}
    if ref_file.exists():
        ref = pd.read_csv(ref_file).set_index("ID")
        ss = s.loc[ref.index]
        check = {"n_ref": int(len(ref)), "x_equal": bool((ss.frequency.values == ref.x.values).all()),
                 "max_abs_diff_t_x": float(np.abs(ss.recency.values - ref.t_x.values).max()),
                 "max_abs_diff_T": float(np.abs(ss["T"].values - ref["T"].values).max()),
                 "max_abs_diff_zbar": float(np.abs(ss.monetary_value.values - ref.zbar.values).max())}
        print("summary vs reference:", check, "(reference rounded to 2 decimals)")

    t0 = time.perf_counter()
    bg = BetaGeoModel().fit(s.frequency, s.recency, s["T"])
    t_bg = time.perf_counter() - t0
    print("\nBG/NBD (fit %.2fs, converged=%s, issues=%s)" % (t_bg, bg.converged_, [i.code for i in bg.issues_]))
    rel = {}
    for k in ("r", "alpha", "a", "b"):
        rel[k] = bg.params_[k] / PUBLISHED[k] - 1
        print("  %-6s ours %8.4f  published %7.3f  rel diff %+.3f%%" % (k, bg.params_[k], PUBLISHED[k], 100 * rel[k]))
    print("  LL     ours %10.2f  published %9.1f" % (bg.log_likelihood_, PUBLISHED["ll"]))

    t0 = time.perf_counter()
    gg = GammaGammaModel().fit(s.frequency, s.monetary_value)
    t_gg = time.perf_counter() - t0
    print("\nGamma-Gamma on %d repeat buyers (fit %.2fs, issues=%s)" % (gg.n_repeat_, t_gg, [i.code for i in gg.issues_]))
    for k in ("p", "q", "gamma"):
        rel[k] = gg.params_[k] / PUBLISHED[k] - 1
        print("  %-6s ours %8.4f  published %7.2f  rel diff %+.3f%%" % (k, gg.params_[k], PUBLISHED[k], 100 * rel[k]))
    print("  LL     ours %10.2f   population mean spend %.2f   corr(x, zbar) %.3f"
          % (gg.log_likelihood_, gg.population_mean_spend(), gg.freq_monetary_corr_))

    # Holdout: repeat transactions (distinct days) in weeks 40-78, expected = E[Y(39) | x, t_x, T].
    hold = tx[(tx.date > CAL_END) & (tx.date <= HOLD_END)]
    actual = hold.groupby("id")["date"].nunique().reindex(s.index).fillna(0)
    t_hold = (HOLD_END - CAL_END).days / 7
    expected = bg.conditional_expected_purchases(t_hold, s.frequency, s.recency, s["T"])
    bucket = np.minimum(s.frequency.values, 7).astype(int)
    tab = (pd.DataFrame({"bucket": bucket, "actual": actual.values, "expected": expected})
           .groupby("bucket").agg(n=("actual", "size"), actual=("actual", "mean"), expected=("expected", "mean")))
    print("\nHoldout (%.0f weeks): mean repeat transactions per customer by calibration frequency" % t_hold)
    print("  x     n   actual  expected")
    for b, row in tab.iterrows():
        print("  %-3s %5d  %7.3f  %8.3f" % ("7+" if b == 7 else b, row.n, row.actual, row.expected))
    print("  total actual %d, expected %.1f" % (actual.sum(), expected.sum()))

    within = all(abs(rel[k]) < 0.01 for k in ("r", "alpha", "a", "b"))
    print("\nBG/NBD within 1%% of published: %s; Gamma-Gamma max rel diff %.2f%%"
          % (within, 100 * max(abs(rel[k]) for k in ("p", "q", "gamma"))))
    result = {**{k: round(bg.params_[k], 5) for k in ("r", "alpha", "a", "b")},
              **{k: round(gg.params_[k], 4) for k in ("p", "q", "gamma")},
              "ll": round(bg.log_likelihood_, 3), "gg_ll": round(gg.log_likelihood_, 3),
              "rel_diff": {k: round(v, 6) for k, v in rel.items()}, "bgnbd_within_1pct": within,
              "summary_check": check, "fit_seconds": {"bgnbd": round(t_bg, 3), "gamma_gamma": round(t_gg, 3)},
              "holdout": {("7+" if b == 7 else str(b)): {"n": int(r.n), "actual": round(float(r.actual), 4),
                                                         "expected": round(float(r.expected), 4)}
                          for b, r in tab.iterrows()},
              "holdout_total": {"actual": int(actual.sum()), "expected": round(float(expected.sum()), 2)}}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
