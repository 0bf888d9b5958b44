"""RFM thresholds, tie rule, incremental scoring, segments; RFM values vs an independent pandas groupby."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopify_app.analytics.rfm import fit_thresholds, score, score_all, score_array, score_recency
from shopify_app.analytics.segments import (
    DEFAULT, RFM11, SCHEMES, Scheme, assign_segment, assign_segments, fm_score, flag_small_segments,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "retail_small.csv"


# ---------------------------------------------------------------- thresholds (hand-computed)
def test_thresholds_linear_quantiles_by_hand():
    # 1..10: positions 9*q = 1.8, 3.6, 5.4, 7.2 -> 2.8, 4.6, 6.4, 8.2
    assert fit_thresholds(range(1, 11)) == pytest.approx([2.8, 4.6, 6.4, 8.2], abs=1e-12)


def test_bins_are_right_closed():
    edges = [2.8, 4.6, 6.4, 8.2]
    assert [score(v, edges) for v in [0, 2.8, 2.81, 4.6, 5, 6.4, 8.2, 8.21, 100]] == [1, 1, 2, 2, 3, 3, 4, 5, 5]
    assert [score(v, edges) for v in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_ties_get_equal_scores_unlike_ntile():
    values = [1, 1, 1, 1, 1, 1, 2, 3, 4, 5]
    # positions 1.8 -> 1, 3.6 -> 1, 5.4 -> 1 + 0.4*(2-1) = 1.4, 7.2 -> 3 + 0.2*(4-3) = 3.2
    edges = fit_thresholds(values)
    assert edges == pytest.approx([1.0, 1.0, 1.4, 3.2])
    assert [score(v, edges) for v in values] == [1, 1, 1, 1, 1, 1, 4, 4, 5, 5]
    # NTILE(5) would have split the six 1s over scores 1, 2 and 3: here they all share one score


def test_recency_lower_days_higher_score():
    days = list(range(10))                          # edges 1.8, 3.6, 5.4, 7.2
    edges = fit_thresholds(days)
    assert [score_recency(d, edges) for d in days] == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert score_array(days, edges, reverse=True).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


def test_score_all_and_json_edges_allow_incremental_rescoring():
    rec = [0, 3, 10, 40, 90, 200, 365]
    freq = [9, 1, 1, 2, 4, 1, 1]
    mon = [500.0, 20.0, 35.5, 60.0, 250.0, 10.0, 0.0]
    s = score_all(rec, freq, mon)
    edges = json.loads(json.dumps(s.edges))        # stored as JSON between refits
    assert s.r.tolist() == [score_recency(d, edges["recency"]) for d in rec]
    assert s.f.tolist() == [score(v, edges["frequency"]) for v in freq]
    assert s.m.tolist() == [score(v, edges["monetary"]) for v in mon]
    assert s.f.tolist() == [5, 1, 1, 4, 5, 1, 1]   # freq edges [1, 1, 1.6, 3.2]
    # a new customer between refits is scored on the stored edges, without a refit
    assert score_recency(1, edges["recency"]) == 5 and score(10_000, edges["monetary"]) == 5


def test_empty_and_nan():
    assert fit_thresholds([]) == []
    assert fit_thresholds([np.nan, 3.0]) == [3.0] * 4
    assert score(5, []) == 1 and score(float("nan"), [1, 2, 3, 4]) == 1
    assert score_array([np.nan, 5.0], [1, 2, 3, 4]).tolist() == [1, 5]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_vectorized_equals_scalar_and_monotone(values):
    edges = fit_thresholds(values)
    vec = score_array(values, edges)
    assert vec.tolist() == [score(v, edges) for v in values]
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(vec[order]) >= 0)          # monotone in the value
    assert set(vec.tolist()) <= {1, 2, 3, 4, 5}


# ---------------------------------------------------------------- segments
def test_fm_rounds_half_up():
    assert [fm_score(1, 2), fm_score(2, 2), fm_score(4, 5), fm_score(1, 1), fm_score(5, 4)] == [2, 2, 5, 1, 5]


def test_default_scheme_cells():
    assert assign_segment(5, 5, 5) == "Champions"
    assert assign_segment(5, 4, 3) == "Champions"          # FM 4
    assert assign_segment(4, 4, 4) == "Loyal"
    assert assign_segment(5, 1, 1) == "New"
    assert assign_segment(4, 2, 3) == "Potential loyalists"
    assert assign_segment(1, 5, 5) == "Can't lose"
    assert assign_segment(2, 3, 4) == "At risk"            # FM 4
    assert assign_segment(2, 2, 1) == "Hibernating"        # FM 2
    assert assign_segment(1, 1, 1) == "One-and-done"
    assert len(set(DEFAULT.grid.values())) == 8 == len(DEFAULT.actions)
    assert all(DEFAULT.actions[s] for s in DEFAULT.segments)


def test_rfm11_scheme_cells():
    got = {(r, fm): RFM11.grid[(r, fm)] for r in range(1, 6) for fm in range(1, 6)}
    assert len(got) == 25 and len(set(got.values())) == 11
    assert assign_segment(5, 5, 5, "rfm11") == "Champions"
    assert assign_segment(5, 1, 1, "rfm11") == "New Customers"
    assert assign_segment(4, 1, 1, "rfm11") == "Promising"
    assert assign_segment(3, 3, 3, "rfm11") == "Need Attention"
    assert assign_segment(3, 1, 2, "rfm11") == "About To Sleep"
    assert assign_segment(3, 4, 4, "rfm11") == "Loyal Customers"
    assert assign_segment(2, 3, 3, "rfm11") == "At Risk"
    assert assign_segment(1, 5, 4, "rfm11") == "Can't Lose Them"
    assert assign_segment(2, 1, 1, "rfm11") == "Hibernating"
    assert assign_segment(1, 1, 2, "rfm11") == "Lost"
    assert set(SCHEMES) >= {"default", "rfm11"}


def test_custom_scheme_and_validation():
    rows = {r: "X X Y Y Y" for r in range(1, 6)}
    sch = Scheme.from_rows(rows, {"X": "Low", "Y": "High"}, {"Low": "nurture", "High": "reward"})
    assert assign_segments([1, 5], [1, 5], [2, 5], sch) == ["Low", "High"]
    with pytest.raises(ValueError):
        Scheme.from_rows({5: "X X X X X"}, {"X": "Low"}, {"Low": "a"})       # unassigned cells
    with pytest.raises(ValueError):
        assign_segment(0, 1, 1)


def test_flag_small_segments():
    assert flag_small_segments({"Champions": 3, "Loyal": 50, "New": 0, "Lost": 9}, 10) == ["Champions", "Lost"]
    assert flag_small_segments({}, 10) == []


# ---------------------------------------------------------------- RFM values vs a pandas groupby reference
def test_customer_rfm_equals_pandas_groupby_on_sample():
    from shopify_app.analytics.offline import customer_rfm
    from shopify_app.analytics.readers import read_orders

    got, as_of = customer_rfm(read_orders(SAMPLE).lines)

    df = pd.read_csv(SAMPLE, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "Int64"},
                     parse_dates=["InvoiceDate"])
    df = df[df.CustomerID.notna()]
    ret = df.InvoiceNo.str.startswith("C")
    all_rows = pd.read_csv(SAMPLE, dtype={"InvoiceNo": str}, parse_dates=["InvoiceDate"])
    ref_asof = all_rows.loc[~all_rows.InvoiceNo.str.startswith("C"), "InvoiceDate"].max() + pd.Timedelta(days=1)
    assert pd.Timestamp(as_of) == ref_asof == pd.Timestamp("2010-12-06 12:13:00")
    orders = df[~ret]
    ref = pd.DataFrame({
        "last": orders.groupby("CustomerID").InvoiceDate.max(),
        "frequency": orders.groupby("CustomerID").InvoiceNo.nunique(),
    })
    ref["monetary"] = (df.Quantity * df.UnitPrice).groupby(df.CustomerID).sum().reindex(ref.index)
    ref["recency_days"] = (ref_asof - ref["last"]).dt.days
    ref.index = ref.index.astype(str)
    got = got.set_index("customer_id")
    assert list(got.index) == sorted(ref.index)
    ref = ref.loc[got.index]
    assert got.recency_days.tolist() == ref.recency_days.tolist()
    assert got.frequency.tolist() == ref.frequency.tolist()
    np.testing.assert_allclose(got.monetary.to_numpy(), ref.monetary.to_numpy(), atol=0.005)
    assert len(got) == 260 and got.frequency.max() >= 2
    # a customer with returns: net revenue is lower than gross
    gross = orders.assign(v=orders.Quantity * orders.UnitPrice).groupby("CustomerID").v.sum()
    gross.index = gross.index.astype(str)
    assert (got.monetary < gross.loc[got.index] - 0.001).sum() > 0


# ---------------------------------------------------------------- plain-words definitions, size flags
def test_describe_segment_from_the_grid():
    from shopify_app.analytics.segments import describe_segment

    # default Champions: R5 x FM4-5 and R4 x FM5 (read off the grid in segments.py)
    assert describe_segment("default", "Champions") == (
        "Bought recently (R 5) and often / for a lot (FM 4-5); or recently (R 4) and often / for a lot (FM 5)")
    assert describe_segment("default", "New") == "Bought recently (R 4-5) and rarely / for little (FM 1)"
    assert describe_segment("rfm11", "Lost") == "Bought long ago (R 1) and rarely / for little (FM 1-2)"
    with pytest.raises(KeyError):
        describe_segment("default", "Lost")
    with pytest.raises(KeyError):
        describe_segment("nope", "Champions")


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_describe_segment_names_exactly_the_cells(scheme):
    """Parse every description back into (R, FM) cells: together they must be the scheme's grid."""
    import re

    from shopify_app.analytics.segments import describe_segment

    sch = SCHEMES[scheme]
    for name in sch.segments:
        cells = set()
        for clause in describe_segment(scheme, name).split("; or "):
            r = re.search(r"\(R (\d)(?:-(\d))?\)", clause)
            r_lo, r_hi = int(r.group(1)), int(r.group(2) or r.group(1))
            for m in re.finditer(r"\(FM (\d)(?:-(\d))?\)", clause):
                f_lo, f_hi = int(m.group(1)), int(m.group(2) or m.group(1))
                cells |= {(a, b) for a in range(r_lo, r_hi + 1) for b in range(f_lo, f_hi + 1)}
        assert cells == {cell for cell, seg in sch.grid.items() if seg == name}, name


def test_too_small_flags():
    from shopify_app.analytics.segments import too_small_flags

    assert too_small_flags({"Champions": 3, "Loyal": 50, "New": 0, "Lost": 49}, 50) == {
        "Champions": True, "Loyal": False, "New": False, "Lost": True}
