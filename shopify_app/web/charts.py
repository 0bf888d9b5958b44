"""Server-rendered inline SVG charts: line/area over time, bars, histogram.

Pure (no Flask, no database): numbers in, escaped SVG markup out. Every chart is `role="img"` with a <title> and
a <desc> (the text alternative names the data range and extremes); the pages also print the numbers as a table.
Sizes are in viewBox units, so the charts scale with the window.
"""
from __future__ import annotations

import datetime as dt
import itertools
import math
from html import escape
from typing import Sequence

from markupsafe import Markup

WIDTH, HEIGHT = 640, 240
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 48
_ids = itertools.count(1)


def fmt_number(v: float) -> str:
    """Short axis labels: 950, 1.2k, 3.4M."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M".replace(".0M", "M")
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a >= 1e3:
        return f"{v / 1e3:.1f}k".replace(".0k", "k")
    if a >= 10 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.2g}"


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About `n` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = (lo // step) * step
    ticks, t = [], start
    while t < hi + step * 0.999:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _open(title: str, desc: str, label_id: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" role="img" '
            f'aria-labelledby="{label_id}-t {label_id}-d" preserveAspectRatio="xMidYMid meet">',
            f'<title id="{label_id}-t">{escape(title)}</title>', f'<desc id="{label_id}-d">{escape(desc)}</desc>']


def _y_axis(parts: list[str], ticks: list[float], y_of, y_label: str) -> None:
    for t in ticks:
        y = y_of(t)
        parts.append(f'<line class="grid" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_number(t)}</text>')
    parts.append(f'<text class="axis-label" x="14" y="{PAD_T + (HEIGHT - PAD_T - PAD_B) / 2:.1f}" '
                 f'text-anchor="middle" transform="rotate(-90 14 {PAD_T + (HEIGHT - PAD_T - PAD_B) / 2:.1f})">'
                 f'{escape(y_label)}</text>')


def empty_chart(title: str, message: str) -> Markup:
    lid = f"chart{next(_ids)}"
    parts = _open(title, message, lid)
    parts.append(f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">{escape(message)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def area_chart(points: Sequence[tuple[dt.date, float]], *, title: str, y_label: str, unit: str = "") -> Markup:
    """Line with a filled area under it, x = dates (evenly spaced by day), y from 0."""
    points = sorted(points)
    if not points:
        return empty_chart(title, "No data yet: snapshots are taken daily.")
    lid = f"chart{next(_ids)}"
    d0, d1 = points[0][0], points[-1][0]
    span = max((d1 - d0).days, 1)
    hi = max(v for _, v in points)
    ticks = nice_ticks(0.0, hi if hi > 0 else 1.0)
    top = ticks[-1] or 1.0
    x_of = lambda d: PAD_L + (WIDTH - PAD_L - PAD_R) * ((d - d0).days / span)   # noqa: E731
    y_of = lambda v: HEIGHT - PAD_B - (HEIGHT - PAD_T - PAD_B) * (v / top)      # noqa: E731
    lo_pt = min(points, key=lambda p: p[1])
    hi_pt = max(points, key=lambda p: p[1])
    desc = (f"{y_label} from {d0.isoformat()} to {d1.isoformat()} ({len(points)} daily snapshots): "
            f"first {fmt_number(points[0][1])}{unit}, last {fmt_number(points[-1][1])}{unit}, "
            f"lowest {fmt_number(lo_pt[1])}{unit} on {lo_pt[0].isoformat()}, "
            f"highest {fmt_number(hi_pt[1])}{unit} on {hi_pt[0].isoformat()}.")
    parts = _open(title, desc, lid)
    _y_axis(parts, ticks, y_of, y_label)
    line = " ".join(f"{x_of(d):.1f},{y_of(v):.1f}" for d, v in points)
    base = HEIGHT - PAD_B
    if len(points) == 1:
        x, y = x_of(points[0][0]), y_of(points[0][1])
        parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4"/>')
    else:
        parts.append(f'<polygon class="area" points="{x_of(d0):.1f},{base} {line} {x_of(d1):.1f},{base}"/>')
        parts.append(f'<polyline class="line" points="{line}"/>')
    parts.append(f'<text class="tick" x="{PAD_L}" y="{HEIGHT - PAD_B + 18}" text-anchor="start">'
                 f'{d0.isoformat()}</text>')
    parts.append(f'<text class="tick" x="{WIDTH - PAD_R}" y="{HEIGHT - PAD_B + 18}" text-anchor="end">'
                 f'{d1.isoformat()}</text>')
    parts.append(f'<text class="axis-label" x="{PAD_L + (WIDTH - PAD_L - PAD_R) / 2:.1f}" y="{HEIGHT - 8}" '
                 f'text-anchor="middle">Day</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, y_label: str, x_label: str = "",
              desc: str | None = None) -> Markup:
    """Vertical bars, one per label, y from 0."""
    if not labels:
        return empty_chart(title, "No data yet.")
    lid = f"chart{next(_ids)}"
    hi = max(values) if values else 0
    ticks = nice_ticks(0.0, hi if hi > 0 else 1.0)
    top = ticks[-1] or 1.0
    y_of = lambda v: HEIGHT - PAD_B - (HEIGHT - PAD_T - PAD_B) * (v / top)      # noqa: E731
    if desc is None:
        desc = f"{y_label} by {x_label or 'category'}: " + "; ".join(
            f"{lab}: {fmt_number(v)}" for lab, v in zip(labels, values)) + "."
    parts = _open(title, desc, lid)
    _y_axis(parts, ticks, y_of, y_label)
    slot = (WIDTH - PAD_L - PAD_R) / len(labels)
    bar_w = max(slot * 0.8, 1.0)
    show_every = max(1, -(-len(labels) // 12))      # at most ~12 x labels
    for i, (lab, v) in enumerate(zip(labels, values)):
        x = PAD_L + i * slot + (slot - bar_w) / 2
        y = y_of(v)
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                     f'height="{HEIGHT - PAD_B - y:.1f}"><title>{escape(lab)}: {fmt_number(v)}</title></rect>')
        if i % show_every == 0:
            parts.append(f'<text class="tick" x="{x + bar_w / 2:.1f}" y="{HEIGHT - PAD_B + 16}" '
                         f'text-anchor="middle">{escape(lab)}</text>')
    if x_label:
        parts.append(f'<text class="axis-label" x="{PAD_L + (WIDTH - PAD_L - PAD_R) / 2:.1f}" y="{HEIGHT - 8}" '
                     f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram(edges: Sequence[float], counts: Sequence[int], *, title: str, x_label: str,
              y_label: str = "Customers") -> Markup:
    """Bars for bins [edges[i], edges[i+1]); labels name each bin's lower edge."""
    if not counts or len(edges) != len(counts) + 1:
        return empty_chart(title, "No data yet.")
    labels = [fmt_number(lo) for lo in edges[:-1]]
    desc = (f"Histogram of {x_label} ({sum(counts)} customers): " + "; ".join(
        f"{fmt_number(lo)} to {fmt_number(hi)}: {n}" for lo, hi, n in zip(edges, edges[1:], counts)) + ".")
    return bar_chart(labels, counts, title=title, y_label=y_label, x_label=x_label + " (bin from)", desc=desc)
