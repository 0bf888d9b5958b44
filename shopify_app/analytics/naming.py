"""Readable, deterministic names for behavioural clusters.

A cluster is described by how its centroid differs from the shop's median customer, feature by feature, in
standardized units (z = (centroid - shop median) / shop scale). Features whose |z| >= MIN_EFFECT are
candidates, strongest first (ties broken by the fixed feature order below, so names are deterministic). The
name joins the top 3 descriptors ("Frequent, full-price, high-AOV"); the one-line description adds the actual
numbers. The chosen descriptors are shown in a fixed feature order (recency, frequency, spend, AOV, tenure, discount,
refunds, product types). Names are made unique within the shop by adding the next descriptor, then a numeric
suffix.
"""
from __future__ import annotations

import numpy as np

MIN_EFFECT = 0.35      # standardized units; smaller differences are "typical"
NAME_TERMS = 3
MAX_NAME_LEN = 80      # the app stores names in a VARCHAR(80)

# feature -> (descriptor when above the median, descriptor when below, unit used in the description).
# recency is "days since last order": above median = lapsed.
DESCRIPTORS = {
    "recency_days": ("lapsed", "recent", "days since last order"),
    "orders_count": ("frequent", "infrequent", "orders"),
    "net_revenue": ("high-spend", "low-spend", "total spend"),
    "aov": ("high-AOV", "low-AOV", "average order"),
    "tenure_days": ("long-standing", "new", "days since first order"),
    "discount_share": ("discount-driven", "full-price", "share of orders with a discount"),
    "refund_rate": ("refund-prone", "rarely refunding", "refund rate"),
}


def _descriptor(feature: str, z: float) -> str | None:
    if feature in DESCRIPTORS:
        hi, lo, _ = DESCRIPTORS[feature]
        return hi if z > 0 else lo
    if feature.startswith("type_share::"):
        # "less of product type X than usual" is not a useful name; only say what they buy more of.
        return "%s fans" % feature.split("::", 1)[1][:24] if z > 0 else None
    return None


def _fmt(feature: str, value: float) -> str:
    if feature in ("discount_share", "refund_rate") or feature.startswith("type_share::"):
        return "%.0f%%" % (100 * value)
    if feature in ("net_revenue", "aov"):
        return "%.2f" % value
    return "%.0f" % value


def _ranked_terms(z: np.ndarray, features: list[str], min_effect: float = MIN_EFFECT) -> list[tuple[str, str]]:
    order = sorted(range(len(features)), key=lambda j: (-abs(z[j]), j))
    out = []
    for j in order:
        if abs(z[j]) < min_effect or z[j] == 0:
            break
        d = _descriptor(features[j], z[j])
        if d:
            out.append((features[j], d))
    return out


def name_clusters(z_diffs: np.ndarray, features: list[str], centroids_raw: np.ndarray, shop_median_raw: np.ndarray,
                  sizes, taken: set[str] | None = None) -> tuple[list[str], list[str]]:
    """Names and one-line descriptions for each cluster (rows of z_diffs).

    z_diffs: (k, f) centroid minus shop median in standardized units; centroids_raw / shop_median_raw: the same
    points in original units (for the description); taken: names already used (kept from a previous fit)."""
    taken = set(taken or ())
    names, descs = [], []
    for i in range(z_diffs.shape[0]):
        terms = _ranked_terms(z_diffs[i], features)
        k = min(NAME_TERMS, len(terms))
        name = _join(terms[:k], features) if k else "Typical customers"
        if name in taken:
            # Collision: allow weaker traits (any |z| > 0) to tell this cluster apart before a numeric suffix.
            terms = _ranked_terms(z_diffs[i], features, min_effect=0.0)
        while name in taken and k < len(terms):
            k += 1
            name = _join(terms[:k], features)
        base, n = name, 2
        while name in taken:
            name = "%s (%d)" % (base, n)
            n += 1
        taken.add(name)
        names.append(name[:MAX_NAME_LEN])
        details = []
        for feat, d in terms[:NAME_TERMS]:
            j = features.index(feat)
            unit = DESCRIPTORS[feat][2] if feat in DESCRIPTORS else "share of items"
            details.append("%s (%s %s vs shop median %s)" % (d, _fmt(feat, centroids_raw[i, j]), unit,
                                                             _fmt(feat, shop_median_raw[j])))
        descs.append("%d customers: %s." % (int(sizes[i]), "; ".join(details) if details
                                            else "close to the shop's median customer on every measure"))
    return names, descs


def _join(terms: list[tuple[str, str]], features: list[str]) -> str:
    # Terms are CHOSEN by strength but SHOWN in the fixed feature order, so two clusters with the same traits
    # get the same string (and are then told apart by one more trait) instead of "A, B" vs "B, A".
    s = ", ".join(d for _, d in sorted(terms, key=lambda t: features.index(t[0])))
    return s[:1].upper() + s[1:]
