"""Pure SVG charts and the CLV histogram bins."""
from __future__ import annotations

import datetime as dt

from shopify_app.web import charts
from shopify_app.web.readmodels import _nice_edges, segment_definition, slugify, segment_from_slug
from tests.web.htmltools import parse


def test_area_chart_is_accessible_and_scaled():
    pts = [(dt.date(2026, 1, 1), 10), (dt.date(2026, 1, 11), 40), (dt.date(2026, 1, 21), 25)]
    svg = parse(str(charts.area_chart(pts, title="Champions <size>", y_label="Customers"))).find("svg")
    assert svg.attrs["role"] == "img"
    t, d = svg.find("title"), svg.find("desc")
    assert t.text == "Champions <size>"                              # escaped in markup, intact as text
    assert svg.attrs["aria-labelledby"] == f'{t.attrs["id"]} {d.attrs["id"]}'
    assert "from 2026-01-01 to 2026-01-21" in d.text and "highest 40 on 2026-01-11" in d.text
    line = svg.find("polyline").attrs["points"].split()
    xs = [float(p.split(",")[0]) for p in line]
    ys = [float(p.split(",")[1]) for p in line]
    assert xs[0] < xs[1] < xs[2] and xs[1] - xs[0] == xs[2] - xs[1]   # evenly spaced days
    assert ys[1] < ys[2] < ys[0]                                       # higher value = higher on screen
    ticks = [e.text for e in svg.find_all("text", **{"class": "tick"})]
    assert "0" in ticks and "40" in ticks


def test_empty_and_single_point_charts():
    assert "No data yet" in str(charts.area_chart([], title="t", y_label="y"))
    one = parse(str(charts.area_chart([(dt.date(2026, 1, 1), 5)], title="t", y_label="y")))
    assert one.find("circle") is not None


def test_histogram_bars_match_counts():
    svg = parse(str(charts.histogram([0, 10, 25, 50], [3, 0, 7], title="CLV", x_label="CLV"))).find("svg")
    bars = svg.find_all("rect")
    assert len(bars) == 3
    heights = [float(b.attrs["height"]) for b in bars]
    assert heights[1] == 0 and heights[2] > heights[0] > 0
    assert abs(heights[2] / heights[0] - 7 / 3) < 0.01
    assert "0 to 10: 3" in svg.find("desc").text and "25 to 50: 7" in svg.find("desc").text


def test_nice_edges_and_ticks():
    assert _nice_edges(7) == [0, 1, 2.5, 5, 10]
    assert _nice_edges(1000) == [0, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000]
    assert charts.nice_ticks(0, 7) == [0, 2, 4, 6, 8]
    assert charts.fmt_number(1234567) == "1.2M" and charts.fmt_number(25000) == "25k"


def test_segment_slugs_and_definitions():
    assert slugify("Can't lose") == "can-t-lose" and segment_from_slug("can-t-lose", "default") == "Can't lose"
    assert segment_from_slug("lost", "default") == "Lost"             # the rfm11 map's segment
    assert segment_from_slug("x", "default") is None
    text = segment_definition("default", "Champions")
    assert text and "5" in text
