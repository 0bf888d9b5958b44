"""Behavioural customer clusters (k-means) with stable identities and a JSON-serializable model.

Features (one row per customer):
  recency_days, orders_count, net_revenue, aov, tenure_days   -> log1p (heavy right tails),
  discount_share (share of orders with a discount), refund_rate, type_share::<T> for the shop's TOP_TYPES most
  ordered product types (share of the customer's items)       -> as is (already in [0, 1]);
then standardized with the shop's mean / std (std 0 -> 1).

Rules (all deterministic):
  * rows are put in a canonical order (by customer id) before fitting, so permuting the input changes nothing;
  * k in 4..8: k-means (k-means++, n_init=10, random_state=0) on a deterministic sample of <= SAMPLE_SIZE
    customers (those with the smallest crc32(customer id)); choose the k with the HIGHEST silhouette score on that
    sample; ties (within 1e-9) -> the smaller k. The final model is k-means with that k on all customers;
  * labels = nearest centroid (exactly what `assign` computes, so stored-model assignment equals the fit);
  * outlier = robust z of the distance to the own centroid > OUTLIER_Z (3.5, Iglewicz & Hoaglin), where
    z = (d - median_c) / (1.4826 MAD_c) per cluster (clusters with < 10 members use all customers' median/MAD;
    MAD floored at 10% of the median); also every member of a tiny cluster (< max(3, 1% of customers)), because
    k-means gives an extreme customer a cluster of its own;
  * with a previous model: keep its k unless another k's silhouette is higher by more than K_HYSTERESIS (0.02),
    and when k is unchanged also run k-means warm-started from the previous centroids, keeping that solution if
    its inertia is within 1% of the best k-means++ run (near-ties must not re-cut the customer base nightly);
  * stable identities: new centroids are matched to the previous model's centroids with the Hungarian algorithm
    (scipy linear_sum_assignment) on Euclidean distance in the NEW standardized space (old centroids mapped back
    to raw log space with the old mean/scale, then scaled with the new ones; shared features only). A match
    within MAX_MATCH_DISTANCE keeps the old id and name; other clusters get fresh ids (> any id used before)
    and fresh unique names.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import zlib

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from .naming import name_clusters

try:   # threadpoolctl ships with scikit-learn (a required dependency of it); degrade gracefully if absent
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

MODEL_VERSION = 1
LOG_FEATURES = ["recency_days", "orders_count", "net_revenue", "aov", "tenure_days"]
SHARE_FEATURES = ["discount_share", "refund_rate"]
TOP_TYPES = 3
K_RANGE = (4, 8)
SAMPLE_SIZE = 2000
RANDOM_STATE = 0
OUTLIER_Z = 3.5
MIN_CLUSTER_FOR_OWN_STATS = 10
TINY_CLUSTER_MIN, TINY_CLUSTER_SHARE = 3, 0.01   # clusters smaller than max(3, 1% of customers) are outliers
MAX_MATCH_DISTANCE = 1.5
K_HYSTERESIS = 0.02          # silhouette margin another k needs to beat the previous model's k
WARM_START_TOLERANCE = 0.01  # warm-started k-means kept if its inertia is within 1% of the best k-means++ run
MIN_CUSTOMERS = 20


# ---------------------------------------------------------------------------------------------- features
def to_naive_utc(values) -> pd.Series:
    """Datetimes / ISO strings (with or without offset) -> naive UTC timestamps."""
    s = pd.Series(values)
    if not pd.api.types.is_datetime64_any_dtype(s):
        s = s.map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
        return pd.to_datetime(s, utc=True, format="ISO8601").dt.tz_localize(None)
    return pd.to_datetime(s, utc=True).dt.tz_localize(None)


def behaviour_features(customers, as_of) -> pd.DataFrame:
    """Feature frame (index = customer_id) from the per-customer dicts used by predictive.run_predictions."""
    df = pd.DataFrame(customers).copy() if not isinstance(customers, pd.DataFrame) else customers.copy()
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_convert("UTC").tz_localize(None) if as_of.tzinfo else as_of
    first, last = to_naive_utc(df["first_order_at"]), to_naive_utc(df["last_order_at"])
    out = pd.DataFrame(index=df["customer_id"].values)
    out.index.name = "customer_id"
    out["recency_days"] = ((as_of - last).dt.total_seconds() / 86400.0).clip(lower=0).fillna(0).values
    out["orders_count"] = pd.to_numeric(df["orders_count"], errors="coerce").fillna(0).values
    out["net_revenue"] = pd.to_numeric(df["net_revenue"], errors="coerce").fillna(0).clip(lower=0).values
    out["aov"] = pd.to_numeric(df.get("aov", 0), errors="coerce").fillna(0).clip(lower=0).values
    out["tenure_days"] = ((as_of - first).dt.total_seconds() / 86400.0).clip(lower=0).fillna(0).values
    for c in SHARE_FEATURES:
        out[c] = pd.to_numeric(df[c], errors="coerce").fillna(0).clip(0, 1).values if c in df else 0.0
    counts = df["product_type_counts"] if "product_type_counts" in df else pd.Series([{}] * len(df))
    ptc = pd.DataFrame([c if isinstance(c, dict) else {} for c in counts]).fillna(0.0)
    if len(ptc.columns):
        tot = ptc.sum(axis=1).replace(0, np.nan)
        shares = ptc.div(tot, axis=0).fillna(0.0)
        for t in sorted(ptc.columns, key=str):
            out["type_share::%s" % (t if str(t) else "(none)")] = shares[t].values
        out.attrs["type_totals"] = {"type_share::%s" % (t if str(t) else "(none)"): float(ptc[t].sum())
                                    for t in ptc.columns}
    return out


def _select_features(feats: pd.DataFrame) -> list[str]:
    totals = feats.attrs.get("type_totals")
    type_cols = [c for c in feats.columns if c.startswith("type_share::")]
    if totals is None:
        totals = {c: float(feats[c].sum()) for c in type_cols}
    top = sorted(type_cols, key=lambda c: (-totals.get(c, 0.0), c))[:TOP_TYPES]
    return LOG_FEATURES + SHARE_FEATURES + sorted(top)


def _raw_matrix(feats: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Transformed but unscaled matrix (log1p on the log features, missing columns -> 0)."""
    cols = []
    for f in features:
        v = pd.to_numeric(feats[f], errors="coerce").fillna(0.0).values if f in feats else np.zeros(len(feats))
        cols.append(np.log1p(np.clip(v, 0, None)) if f in LOG_FEATURES else v.astype(float))
    return np.column_stack(cols) if cols else np.zeros((len(feats), 0))


def _to_original(raw: np.ndarray, features: list[str]) -> np.ndarray:
    out = raw.copy()
    for j, f in enumerate(features):
        if f in LOG_FEATURES:
            out[..., j] = np.expm1(raw[..., j])
    return out


def _nearest(Z: np.ndarray, centroids: np.ndarray):
    d2 = ((Z[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    idx = np.argmin(d2, axis=1)   # ties -> lowest index: deterministic
    return idx, np.sqrt(d2[np.arange(len(Z)), idx])


def _outlier_stats(dist, idx, k):
    gmed = float(np.median(dist)) if len(dist) else 0.0
    gmad = float(np.median(np.abs(dist - gmed))) if len(dist) else 0.0
    med, mad = [], []
    for c in range(k):
        d = dist[idx == c]
        if len(d) >= MIN_CLUSTER_FOR_OWN_STATS:
            m = float(np.median(d))
            med.append(m)
            mad.append(float(np.median(np.abs(d - m))))
        else:
            med.append(gmed)
            mad.append(gmad)
    return med, mad


def _is_outlier(dist, idx, med, mad, tiny=None):
    med, mad = np.asarray(med)[idx], np.asarray(mad)[idx]
    # MAD floor: in a tight cluster MAD can be ~0 and every tiny deviation would look extreme.
    denom = 1.4826 * np.maximum(mad, np.maximum(0.1 * med, 1e-6))
    out = (dist - med) / denom > OUTLIER_Z
    if tiny is not None:
        # k-means happily gives an extreme customer a cluster of its own (distance 0): members of tiny clusters
        # are outliers by construction.
        out |= np.asarray(tiny, bool)[idx]
    return out


def _stable_hash(v) -> int:
    return zlib.crc32(str(v).encode())


def choose_k(Z: np.ndarray, k_range=K_RANGE, random_state=RANDOM_STATE):
    """Returns (best_k, {k: silhouette}). Highest silhouette wins; ties -> smaller k."""
    with _thread_limit(len(Z)):
        return _choose_k(Z, k_range, random_state)


def _choose_k(Z, k_range, random_state):
    n_distinct = len(np.unique(Z, axis=0))
    scores = {}
    for k in range(k_range[0], k_range[1] + 1):
        if k >= n_distinct or k >= len(Z):
            break
        km = KMeans(n_clusters=k, n_init=10, random_state=random_state).fit(Z)
        if len(set(km.labels_)) < 2:
            continue
        scores[k] = float(silhouette_score(Z, km.labels_))
    best = None
    for k in sorted(scores):
        if best is None or scores[k] > scores[best] + 1e-9:
            best = k
    return best, scores


# ---------------------------------------------------------------------------------------------- fit
SINGLE_THREAD_MAX_ROWS = 50_000


def _thread_limit(n: int):
    # k-means' OpenMP threads busy-wait; on a shared 2-core worker that made small fits ~7x slower (measured:
    # 18 s vs 2.5 s for the cluster tests). Below SINGLE_THREAD_MAX_ROWS one thread is as fast and predictable.
    if threadpool_limits is None or n > SINGLE_THREAD_MAX_ROWS:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def fit_clusters(feats: pd.DataFrame, previous_model: dict | None = None, fitted_at=None,
                 k_range=K_RANGE, random_state=RANDOM_STATE) -> dict:
    """Fit the cluster model on a feature frame (index = customer ids). Returns
    {"model": <JSON-able dict>, "assignments": DataFrame(cluster_id, cluster_name, distance, is_outlier)}."""
    with _thread_limit(len(feats)):
        return _fit_clusters(feats, previous_model, fitted_at, k_range, random_state)


def _fit_clusters(feats, previous_model, fitted_at, k_range, random_state) -> dict:
    fitted_at = (fitted_at or dt.datetime.now(dt.timezone.utc)).isoformat()
    ids = list(feats.index)
    order = sorted(range(len(ids)), key=lambda i: (str(ids[i]), i))
    F = feats.iloc[order]
    features = _select_features(feats)
    X = _raw_matrix(F, features)
    mean = X.mean(axis=0) if len(X) else np.zeros(len(features))
    scale = X.std(axis=0) if len(X) else np.ones(len(features))
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = (X - mean) / scale
    n = len(Z)
    n_distinct = len(np.unique(Z, axis=0)) if n else 0
    status, message, scores, k = "ok", None, {}, None
    if n < MIN_CUSTOMERS:
        message = ("Only %d customers with orders (need at least %d) - everyone is in one group until the shop "
                   "grows." % (n, MIN_CUSTOMERS))
    elif n_distinct <= k_range[0]:
        message = ("Customers behave too alike (%d distinct profiles) to split into %d+ groups - everyone is in "
                   "one group." % (n_distinct, k_range[0]))
    else:
        sample_idx = np.arange(n)
        if n > SAMPLE_SIZE:
            h = np.array([_stable_hash(F.index[i]) for i in range(n)])
            sample_idx = np.sort(np.lexsort((np.arange(n), h))[:SAMPLE_SIZE])
        k, scores = choose_k(Z[sample_idx], k_range, random_state)
        if k is None:
            message = "No usable grouping found (the sample is too uniform) - everyone is in one group."
    if k is None:
        # Too few customers / too little variety for 4+ meaningful groups: one cluster, said plainly.
        status = "fallback"
        centroids = Z.mean(axis=0, keepdims=True) if n else np.zeros((1, len(features)))
        k = 1
    else:
        prev_z = _previous_centroids_in(features, mean, scale, previous_model)
        if prev_z is not None and len(prev_z) in scores and scores[k] <= scores[len(prev_z)] + K_HYSTERESIS:
            # Hysteresis: keep the previous k unless another k is clearly better; near-ties in silhouette would
            # otherwise re-cut the whole customer base on every nightly refit.
            k = len(prev_z)
        km = KMeans(n_clusters=k, n_init=10, random_state=random_state).fit(Z)
        if prev_z is not None and len(prev_z) == k:
            # Warm start from the previous centroids; keep that solution unless it is clearly worse (stability).
            warm = KMeans(n_clusters=k, init=prev_z, n_init=1, random_state=random_state).fit(Z)
            if warm.inertia_ <= km.inertia_ * (1 + WARM_START_TOLERANCE):
                km = warm
        centroids = km.cluster_centers_
    idx, dist = _nearest(Z, centroids)
    sizes = np.bincount(idx, minlength=len(centroids))
    # Canonical cluster order: biggest first, then by centroid coordinates.
    perm = sorted(range(len(centroids)), key=lambda c: (-sizes[c], tuple(np.round(centroids[c], 9))))
    centroids, sizes = centroids[perm], sizes[perm]
    idx = np.argsort(perm)[idx]
    med, mad = _outlier_stats(dist, idx, len(centroids))
    cids, names_kept = _match_previous(centroids, features, mean, scale, previous_model)
    shop_median_z = np.median(Z, axis=0) if n else np.zeros(len(features))
    z_diffs = centroids - shop_median_z
    raw_c = _to_original(centroids * scale + mean, features)
    raw_med = _to_original(shop_median_z * scale + mean, features)
    taken = {nm for nm in names_kept if nm}
    gen_names, descs = name_clusters(z_diffs, features, raw_c, raw_med, sizes, taken)
    names = [names_kept[i] or gen_names[i] for i in range(len(centroids))]
    if status == "fallback":
        names = ["All customers"]
    prev_next = int(previous_model.get("next_id", 1)) if previous_model else 1
    model = {
        "kind": "kmeans", "version": MODEL_VERSION, "fitted_at": fitted_at, "status": status, "message": message,
        "features": features, "log1p_features": [f for f in features if f in LOG_FEATURES],
        "mean": mean.tolist(), "scale": scale.tolist(), "centroids": centroids.tolist(),
        "ids": [int(c) for c in cids], "names": names, "descriptions": descs, "sizes": sizes.tolist(),
        "k": int(len(centroids)), "silhouette_by_k": {str(k_): v for k_, v in scores.items()},
        "random_state": random_state,
        "outlier": {"rule": "robust_z_gt_or_tiny_cluster", "z": OUTLIER_Z, "median": med, "mad": mad,
                    "tiny_cluster": [bool(status == "ok" and sz < max(TINY_CLUSTER_MIN, TINY_CLUSTER_SHARE * n))
                                     for sz in sizes]},
        "next_id": max([prev_next] + [int(c) + 1 for c in cids]),
        "n_customers": int(n),
    }
    assign_df = _assignment_frame(F.index, idx, dist, model)
    return {"model": model, "assignments": assign_df.loc[feats.index]}


def _previous_centroids_in(features, mean, scale, prev):
    """Previous centroids expressed in the new standardized space (features missing before -> 0 = new mean)."""
    if not prev or not prev.get("centroids") or prev.get("status") == "fallback":
        return None
    out = np.zeros((len(prev["centroids"]), len(features)))
    pc, pm, ps = (np.asarray(prev[k], dtype=float) for k in ("centroids", "mean", "scale"))
    for j, f in enumerate(features):
        if f in prev["features"]:
            jo = prev["features"].index(f)
            out[:, j] = (pc[:, jo] * ps[jo] + pm[jo] - mean[j]) / scale[j]
    return out


def _match_previous(centroids, features, mean, scale, prev):
    k = len(centroids)
    if not prev or not prev.get("centroids"):
        return list(range(1, k + 1)), [None] * k
    common = [f for f in features if f in prev["features"]]
    jn = [features.index(f) for f in common]
    jo = [prev["features"].index(f) for f in common]
    old_raw = np.asarray(prev["centroids"])[:, jo] * np.asarray(prev["scale"])[jo] + np.asarray(prev["mean"])[jo]
    old_z = (old_raw - mean[jn]) / scale[jn]
    new_z = centroids[:, jn]
    cost = np.sqrt(((new_z[:, None, :] - old_z[None, :, :]) ** 2).sum(axis=2))
    rows, cols = linear_sum_assignment(cost)
    ids, names = [None] * k, [None] * k
    for r, c in zip(rows, cols):
        if cost[r, c] <= MAX_MATCH_DISTANCE and prev["names"][c] != "All customers":
            ids[r], names[r] = int(prev["ids"][c]), prev["names"][c]
    nxt = int(prev.get("next_id", max(prev["ids"]) + 1))
    for i in range(k):
        if ids[i] is None:
            ids[i] = nxt
            nxt += 1
    return ids, names


def _assignment_frame(index, idx, dist, model):
    out = pd.DataFrame(index=index)
    out["cluster_id"] = [model["ids"][i] for i in idx]
    out["cluster_name"] = [model["names"][i] for i in idx]
    out["distance"] = dist
    out["is_outlier"] = (_is_outlier(dist, idx, model["outlier"]["median"], model["outlier"]["mad"],
                                     model["outlier"].get("tiny_cluster"))
                         if len(idx) else np.zeros(0, bool))
    return out


# ---------------------------------------------------------------------------------------------- assign
def assign(model_json: dict, features: pd.DataFrame) -> pd.DataFrame:
    """Assign customers (feature frame from `behaviour_features`) to the stored model's clusters, no refit."""
    m = model_json
    feats = list(m["features"])
    X = _raw_matrix(features, feats)
    Z = (X - np.asarray(m["mean"])) / np.asarray(m["scale"])
    idx, dist = _nearest(Z, np.asarray(m["centroids"], dtype=float))
    return _assignment_frame(features.index, idx, dist, m)
