"""RFM scores 1-5 from per-shop quintile thresholds.

Tie rule (chosen: thresholds at quantiles, NOT rank-based NTILE):
    `fit_thresholds(values)` returns the 4 cut points ("edges") at the 20/40/60/80 % quantiles of the shop's values,
    computed with numpy's default linear interpolation (``np.quantile(values, [.2, .4, .6, .8])``).
    A value's score is ``1 + (number of edges strictly below the value)``, i.e. the bins are right-closed:
        value <= e1 -> 1,  e1 < value <= e2 -> 2,  ...,  value > e4 -> 5.
    Equal values therefore ALWAYS get the same score (unlike SQL NTILE, which may split a tie), and the bins may be
    uneven when many customers share a value (e.g. most customers have frequency 1: all get F = 1).
    Because the score only depends on the stored edges, one customer can be rescored incrementally between refits
    with `score(value, edges)`.

Recency: fewer days since the last order is better, so R = 6 - score(recency_days, edges_recency)
(days <= e1 -> R 5, days > e4 -> R 1). F and M: higher is better, F = score(frequency), M = score(monetary).
"""
from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

QUANTILES = (0.2, 0.4, 0.6, 0.8)


def fit_thresholds(values) -> list[float]:
    """The 4 quintile cut points of `values` (NaNs ignored) as a JSON-serializable list of floats.

    An empty input gives [] (every value then scores 1 with `score`, 5 with `score_recency`).
    """
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return []
    return [float(x) for x in np.quantile(arr, QUANTILES)]


def score(value: float, edges) -> int:
    """1 + number of edges strictly below `value` (higher value = higher score). NaN scores 1."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 1
    return 1 + bisect_left(list(edges), float(value))


def score_recency(days: float, edges) -> int:
    """R score: fewer days = higher score (6 - score(days))."""
    if days is None or (isinstance(days, float) and math.isnan(days)):
        return 1
    return 6 - score(days, edges)


def score_array(values, edges, reverse: bool = False) -> np.ndarray:
    """Vectorized `score` (reverse=True: vectorized `score_recency`)."""
    arr = np.asarray(values, dtype=float)
    s = 1 + np.searchsorted(np.asarray(edges, dtype=float), arr, side="left")
    s = s.astype(np.int8)
    if reverse:
        s = (6 - s).astype(np.int8)
    s[np.isnan(arr)] = 1
    return s


@dataclass(frozen=True)
class RFMScores:
    r: np.ndarray
    f: np.ndarray
    m: np.ndarray
    edges: dict  # {"recency": [...], "frequency": [...], "monetary": [...]}: JSON-serializable


def score_all(recency_days, frequency, monetary) -> RFMScores:
    """Fit the shop's thresholds on the three arrays and score every customer."""
    edges = {
        "recency": fit_thresholds(recency_days),
        "frequency": fit_thresholds(frequency),
        "monetary": fit_thresholds(monetary),
    }
    return RFMScores(
        r=score_array(recency_days, edges["recency"], reverse=True),
        f=score_array(frequency, edges["frequency"]),
        m=score_array(monetary, edges["monetary"]),
        edges=edges,
    )
