"""Named customer segments from RFM scores, with a configurable map.

A scheme maps every cell of the 5x5 grid (R, FM) to a segment name, where FM = round-half-up((F + M) / 2), i.e.
``FM = (F + M + 1) // 2`` (F=1, M=2 -> FM 2; F=4, M=5 -> FM 5). Grids are written as one string of 5 segment codes
per R row (R = 5 first) so that a scheme can be read, and changed, at a glance. A custom scheme is a `Scheme`
(or pass `grid`/`names`/`actions` to `Scheme.from_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


def fm_score(f: int, m: int) -> int:
    """Round-half-up mean of F and M: (F + M + 1) // 2."""
    return (int(f) + int(m) + 1) // 2


@dataclass(frozen=True)
class Scheme:
    grid: Mapping[tuple[int, int], str]   # (r, fm) -> segment name; all 25 cells
    actions: Mapping[str, str]            # segment name -> one-line action

    @classmethod
    def from_rows(cls, rows: Mapping[int, str], codes: Mapping[str, str], actions: Mapping[str, str]) -> "Scheme":
        """rows: {r: "ABCDE"} with one code per FM 1..5; codes: code -> segment name."""
        grid = {}
        for r, row in rows.items():
            cells = row.split()
            if len(cells) != 5:
                raise ValueError(f"row R={r} needs 5 cells, got {row!r}")
            for fm, code in enumerate(cells, start=1):
                grid[(int(r), fm)] = codes[code]
        missing = [(r, fm) for r in range(1, 6) for fm in range(1, 6) if (r, fm) not in grid]
        if missing:
            raise ValueError(f"scheme leaves cells unassigned: {missing}")
        unknown = set(grid.values()) - set(actions)
        if unknown:
            raise ValueError(f"segments without an action: {sorted(unknown)}")
        return cls(grid=grid, actions=dict(actions))

    @property
    def segments(self) -> list[str]:
        return list(self.actions)

    def assign(self, r: int, f: int, m: int) -> str:
        for name, v in (("r", r), ("f", f), ("m", m)):
            if not 1 <= int(v) <= 5:
                raise ValueError(f"{name} score must be 1..5, got {v}")
        return self.grid[(int(r), fm_score(f, m))]


# Default: 8 action segments.          FM: 1    2    3    4    5
DEFAULT = Scheme.from_rows(
    rows={
        5: "N  P  P  C  C",
        4: "N  P  P  L  C",
        3: "O  A  A  L  L",
        2: "O  H  A  A  K",
        1: "O  H  A  A  K",
    },
    codes={"C": "Champions", "L": "Loyal", "P": "Potential loyalists", "N": "New", "A": "At risk",
           "K": "Can't lose", "H": "Hibernating", "O": "One-and-done"},
    actions={
        "Champions": "Reward them: early access, no discounts needed, ask for reviews and referrals.",
        "Loyal": "Upsell higher-value products and enrol them in a loyalty programme.",
        "Potential loyalists": "Offer a membership or bundle to turn recent buyers into regulars.",
        "New": "Onboard: welcome series and a second-purchase incentive.",
        "At risk": "Win back with personalised reminders of what they bought before.",
        "Can't lose": "Contact personally with a strong offer before they churn for good.",
        "Hibernating": "Low-cost reactivation: seasonal campaign, best sellers, then stop spending.",
        "One-and-done": "One old purchase: a single recovery offer, then exclude from paid campaigns.",
    },
)

# The widely used 11-segment RFM map on the R x FM grid.   FM: 1    2    3    4    5
RFM11 = Scheme.from_rows(
    rows={
        5: "NC PL PL CH CH",
        4: "PR PL PL LC CH",
        3: "AS AS NA LC LC",
        2: "HI HI AR AR CL",
        1: "LO LO AR AR CL",
    },
    codes={"CH": "Champions", "LC": "Loyal Customers", "PL": "Potential Loyalist", "NC": "New Customers",
           "PR": "Promising", "NA": "Need Attention", "AS": "About To Sleep", "AR": "At Risk",
           "CL": "Can't Lose Them", "HI": "Hibernating", "LO": "Lost"},
    actions={
        "Champions": "Reward them; they can be early adopters and will promote your brand.",
        "Loyal Customers": "Upsell higher-value products; ask for reviews.",
        "Potential Loyalist": "Offer membership or a loyalty programme; recommend other products.",
        "New Customers": "Provide onboarding support; start building the relationship.",
        "Promising": "Create brand awareness; offer free trials.",
        "Need Attention": "Make limited-time offers based on past purchases.",
        "About To Sleep": "Share valuable resources; recommend popular products and renewals at a discount.",
        "At Risk": "Send personalised emails to reconnect; offer renewals.",
        "Can't Lose Them": "Win them back via renewals or newer products; talk to them.",
        "Hibernating": "Offer other relevant products and special discounts.",
        "Lost": "Revive interest with a reach-out campaign, otherwise ignore.",
    },
)

SCHEMES: dict[str, Scheme] = {"default": DEFAULT, "rfm11": RFM11}


def assign_segment(r: int, f: int, m: int, scheme: str | Scheme = "default") -> str:
    sch = SCHEMES[scheme] if isinstance(scheme, str) else scheme
    return sch.assign(r, f, m)


def assign_segments(r, f, m, scheme: str | Scheme = "default") -> list[str]:
    """Vectorized-ish: one name per customer."""
    sch = SCHEMES[scheme] if isinstance(scheme, str) else scheme
    return [sch.assign(a, b, c) for a, b, c in zip(r, f, m)]


def flag_small_segments(counts: Mapping[str, int], min_size: int) -> list[str]:
    """Segments with 0 < count < min_size (too small to target reliably), sorted by name."""
    return sorted(name for name, n in counts.items() if 0 < int(n) < min_size)


def too_small_flags(counts: Mapping[str, int], min_size: int) -> dict[str, bool]:
    """Per segment: True = "too small to act on" (0 < customers < min_size; the shop setting min_segment_size).
    An empty segment is not flagged: there is nobody to act on, not a sample too small to trust."""
    return {name: 0 < int(n) < int(min_size) for name, n in counts.items()}


# Plain words for score levels (5 = best). Recency: 5 = bought most recently; FM: mean of frequency and spend.
_R_WORDS = {5: "recently", 4: "recently", 3: "a while ago", 2: "long ago", 1: "long ago"}
_FM_WORDS = {5: "often / for a lot", 4: "often / for a lot", 3: "moderately", 2: "rarely / for little",
             1: "rarely / for little"}


def _spans(values) -> list[tuple[int, int]]:
    """Sorted ints -> contiguous (lo, hi) runs."""
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _label(prefix: str, lo: int, hi: int, words: Mapping[int, str]) -> str:
    said = list(dict.fromkeys(words[v] for v in range(hi, lo - 1, -1)))   # best level first, no repeats
    rng = f"{lo}" if lo == hi else f"{lo}-{hi}"
    return f"{' or '.join(said)} ({prefix} {rng})"


def describe_segment(scheme: str | Scheme, name: str) -> str:
    """The segment's cells of the (R, FM) grid in plain words, e.g. for the default "Loyal":
    "Bought recently (R 4) and often / for a lot (FM 4); or a while ago (R 3) and often / for a lot (FM 4-5)".
    R rows with the same FM cells are merged into one clause. Raises KeyError for an unknown scheme/segment."""
    sch = SCHEMES[scheme] if isinstance(scheme, str) else scheme
    by_r: dict[int, tuple[int, ...]] = {}
    for (r, fm), seg in sch.grid.items():
        if seg == name:
            by_r[r] = tuple(sorted(by_r.get(r, ()) + (fm,)))
    if not by_r:
        raise KeyError(f"no segment {name!r} in the scheme")
    # Group R rows sharing the same FM cells, then split each group into contiguous R runs (best R first).
    groups: dict[tuple[int, ...], list[int]] = {}
    for r, fms in by_r.items():
        groups.setdefault(fms, []).append(r)
    parts = []
    for fms, rs in groups.items():
        for r_lo, r_hi in _spans(rs):
            fm_text = " or ".join(_label("FM", lo, hi, _FM_WORDS) for lo, hi in reversed(_spans(fms)))
            parts.append((r_hi, f"{_label('R', r_lo, r_hi, _R_WORDS)} and {fm_text}"))
    clauses = [text for _, text in sorted(parts, key=lambda p: -p[0])]
    return "Bought " + "; or ".join(clauses)
