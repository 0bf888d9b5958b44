"""Offline analyzer: `flask --app shopify_app analyze FILE --out DIR [--min-support S] [--min-count N] [--as-of ISO]`.

Reads an orders file (Shopify Orders export or UCI Online Retail / Online Retail II, see readers.py; .gz ok) and
writes
    DIR/customers.csv  customer_id, recency_days, frequency, monetary, r, f, m, segment
    DIR/rules.csv      antecedent, consequent, count, support, confidence, lift, leverage, conviction
plus a short summary on stdout. Bad rows go to stderr as "FILE:LINE: reason" and never stop the run.

Definitions (customers with a customer id and at least one counted order):
    recency_days = floor of whole days from the customer's last order to as-of
                   (default as-of: the file's last order time + 1 day)
    frequency    = distinct orders (Online Retail 'C' invoices and cancelled Shopify orders are not orders)
    monetary     = net revenue: sum of the customer's line amounts, returns negative
Baskets: the distinct items of each order with quantity > 0, guests included.
"""
from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd

from shopify_app.analytics.readers import ParsedFile, parse_time, read_orders
from shopify_app.analytics.rfm import score_all
from shopify_app.analytics.rules import RULE_COLUMNS, count_pairs_codes, rules_from_counts
from shopify_app.analytics.segments import SCHEMES, assign_segments, flag_small_segments

CUSTOMER_COLUMNS = ["customer_id", "recency_days", "frequency", "monetary", "r", "f", "m", "segment"]


def customer_rfm(lines: pd.DataFrame, as_of: dt.datetime | None = None) -> tuple[pd.DataFrame, dt.datetime]:
    """Per-customer recency/frequency/monetary (no scores), and the as-of time used."""
    orders = lines[lines["is_order"]]
    if as_of is None:
        as_of = (orders["time"].max() + pd.Timedelta(days=1)) if len(orders) else pd.Timestamp("1970-01-01")
    as_of = pd.Timestamp(as_of)
    known = orders[orders["customer_id"].notna()]
    g = known.groupby("customer_id", sort=True)
    last = g["time"].max()
    freq = g["order_id"].nunique()
    money = lines[lines["customer_id"].notna()].groupby("customer_id")["amount"].sum()
    out = pd.DataFrame({"customer_id": last.index.astype(str)})
    out["recency_days"] = ((as_of - pd.DatetimeIndex(last.to_numpy())) // pd.Timedelta(days=1)).to_numpy(np.int64)
    out["frequency"] = freq.reindex(last.index).to_numpy(dtype=np.int64)
    out["monetary"] = money.reindex(last.index).fillna(0.0).round(2).to_numpy()
    return out.reset_index(drop=True), as_of.to_pydatetime()


def customer_table(lines: pd.DataFrame, as_of=None, scheme: str = "default") -> tuple[pd.DataFrame, dict, dt.datetime]:
    cust, as_of = customer_rfm(lines, as_of)
    s = score_all(cust["recency_days"], cust["frequency"], cust["monetary"])
    cust["r"], cust["f"], cust["m"] = s.r, s.f, s.m
    cust["segment"] = assign_segments(s.r, s.f, s.m, scheme)
    return cust[CUSTOMER_COLUMNS], s.edges, as_of


def basket_counts(lines: pd.DataFrame):
    b = lines[lines["is_order"] & (lines["quantity"] > 0)]
    basket_idx, baskets = pd.factorize(b["order_id"])
    item_idx, items = pd.factorize(b["item"])
    return count_pairs_codes(basket_idx, item_idx, len(baskets), np.asarray(items, dtype=object))


@dataclass
class Result:
    parsed: ParsedFile
    customers: pd.DataFrame
    rules: pd.DataFrame
    edges: dict
    as_of: dt.datetime
    n_baskets: int
    n_items: int


def analyze(path, out_dir, min_support: float = 0.01, min_count: int = 1, as_of=None,
            scheme: str = "default") -> Result:
    parsed = read_orders(path)
    customers, edges, as_of = customer_table(parsed.lines, as_of, scheme)
    pc = basket_counts(parsed.lines)
    rules = rules_from_counts(pc, min_support, min_count)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    customers.to_csv(out / "customers.csv", index=False)
    rules[RULE_COLUMNS].to_csv(out / "rules.csv", index=False)   # full precision (round-trips exactly)
    return Result(parsed, customers, rules, edges, as_of, pc.n_baskets, len(pc.items))


@click.command("analyze")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--min-support", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.01, show_default=True,
              help="Minimum pair support (fraction of baskets).")
@click.option("--min-count", type=click.IntRange(1), default=1, show_default=True,
              help="Minimum number of baskets containing the pair.")
@click.option("--as-of", default=None, help="ISO time for recency (default: last order time + 1 day).")
@click.option("--scheme", type=click.Choice(sorted(SCHEMES)), default="default", show_default=True,
              help="Segment map.")
@click.option("--min-segment-size", type=click.IntRange(1), default=10, show_default=True,
              help="Flag segments with fewer customers than this.")
def analyze_command(file: str, out_dir: str, min_support: float, min_count: int, as_of: str | None,
                    scheme: str, min_segment_size: int) -> None:
    """RFM segments and pair rules from an orders FILE (Shopify Orders export or UCI Online Retail CSV, .gz ok)."""
    as_of_t = None
    if as_of:
        try:
            as_of_t = parse_time(as_of)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--as-of")
    try:
        res = analyze(file, out_dir, min_support, min_count, as_of_t, scheme)
    except ValueError as e:
        raise click.ClickException(str(e))
    for line, reason in res.parsed.bad:
        click.echo(f"{file}:{line}: {reason}", err=True)
    p = res.parsed
    counts = res.customers["segment"].value_counts()
    orders = p.lines.loc[p.lines["is_order"], "order_id"].nunique()
    click.echo(f"{file}: format {p.format}, {p.n_rows} rows, {len(p.bad)} bad rows skipped")
    known = p.lines.loc[p.lines["customer_id"].notna(), "customer_id"].nunique()
    click.echo(f"orders {orders}, customers {len(res.customers)}, as-of {res.as_of:%Y-%m-%d %H:%M:%S}"
               + (f" ({known - len(res.customers)} customers with returns/cancellations only left out)"
                  if known > len(res.customers) else ""))
    click.echo(f"baskets {res.n_baskets}, items {res.n_items}, pair rules {len(res.rules)} "
               f"(min support {min_support}, min count {min_count})")
    for name in SCHEMES[scheme].segments:
        click.echo(f"  {name:<22} {int(counts.get(name, 0)):>7}")
    small = flag_small_segments(counts.to_dict(), min_segment_size)
    if small:
        click.echo(f"small segments (< {min_segment_size} customers): {', '.join(small)}")
    click.echo(f"wrote {Path(out_dir) / 'customers.csv'} and {Path(out_dir) / 'rules.csv'}")


if __name__ == "__main__":  # pragma: no cover
    analyze_command(sys.argv[1:])
