"""The offline `analyze` command: Online Retail (I, II, gz) and Shopify exports, bad rows, outputs vs references."""
from __future__ import annotations

import gzip
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from shopify_app.analytics.offline import CUSTOMER_COLUMNS, analyze_command
from shopify_app.analytics.readers import detect_format, read_orders
from shopify_app.analytics.rules import RULE_COLUMNS, mine_pair_rules

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "retail_small.csv"
ROOT = Path(__file__).resolve().parents[2]


def run(args):
    res = CliRunner().invoke(analyze_command, [str(a) for a in args], catch_exceptions=False)
    return res


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    res = run([SAMPLE, "--out", out, "--min-support", "0.02"])
    assert res.exit_code == 0, res.output
    return out, res


def test_sample_outputs_match_references(sample_out):
    out, res = sample_out
    cust = pd.read_csv(out / "customers.csv", dtype={"customer_id": str})
    rules = pd.read_csv(out / "rules.csv", dtype={"antecedent": str, "consequent": str})
    assert list(cust.columns) == CUSTOMER_COLUMNS and list(rules.columns) == RULE_COLUMNS
    assert len(cust) == 260
    assert cust[["r", "f", "m"]].isin([1, 2, 3, 4, 5]).all().all()
    assert cust.segment.notna().all()
    # customer 17850 (the file's first customer): hand-checked from the sample with grep
    df = pd.read_csv(SAMPLE, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str},
                     parse_dates=["InvoiceDate"])
    c = df[df.CustomerID == "17850"]
    row = cust.set_index("customer_id").loc["17850"]
    assert row.frequency == c.loc[~c.InvoiceNo.str.startswith("C"), "InvoiceNo"].nunique()
    assert row.monetary == pytest.approx(round((c.Quantity * c.UnitPrice).sum(), 2))
    # rules.csv == mine_pair_rules on pandas-built baskets
    b = df[~df.InvoiceNo.str.startswith("C") & (df.Quantity > 0)]
    ref = mine_pair_rules([set(g) for _, g in b.groupby("InvoiceNo")["StockCode"]], 0.02)
    key = ["antecedent", "consequent"]
    m = rules.merge(ref, on=key, suffixes=("", "_ref"), validate="1:1")
    assert len(m) == len(ref) == len(rules) > 50
    assert (m["count"] == m["count_ref"]).all()
    for col in ["support", "confidence", "lift", "leverage", "conviction"]:
        np.testing.assert_allclose(m[col], m[col + "_ref"], rtol=1e-9, atol=1e-12)
    assert "format online_retail, 8164 rows, 0 bad rows" in res.stdout
    assert "customers 260" in res.stdout and "baskets 382" in res.stdout
    assert "(21 customers with returns/cancellations only left out)" in res.stdout
    assert "small segments (< 10 customers): Can't lose" in res.stdout


def test_as_of_option(tmp_path):
    res = run([SAMPLE, "--out", tmp_path, "--as-of", "2010-12-16T12:13:00", "--min-count", "5"])
    assert res.exit_code == 0, res.output
    cust = pd.read_csv(tmp_path / "customers.csv", dtype={"customer_id": str}).set_index("customer_id")
    # 17850's last order in the sample: 2010-12-02 15:27 -> 13 days 20:46 -> 13 whole days
    assert cust.loc["17850", "recency_days"] == 13
    rules = pd.read_csv(tmp_path / "rules.csv")
    assert rules["count"].min() >= 5


def test_bad_rows_reported_with_file_and_line(tmp_path):
    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[9] = lines[9].replace(",6,2010-12-01", ",six,2010-12-01", 1)         # file line 10
    assert ",six," in lines[9]
    lines[19] = "536367,22745,POPPY'S PLAYHOUSE BEDROOM ,6,2010-13-45 08:34:00,2.1,13047,United Kingdom\n"
    lines.insert(30, "536367,,NO CODE,6,2010-12-01 08:34:00,2.1,13047,United Kingdom\n")   # line 31
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines), encoding="utf-8")
    res = run([bad, "--out", tmp_path / "o"])
    assert res.exit_code == 0
    err = res.stderr.splitlines()
    assert err == [f"{bad}:10: unparseable Quantity 'six'",
                   f"{bad}:20: unparseable date '2010-13-45 08:34:00'",
                   f"{bad}:31: missing StockCode"]
    assert "8165 rows, 3 bad rows skipped" in res.stdout
    assert (tmp_path / "o" / "customers.csv").exists()


def test_gzip_and_online_retail_ii_header(tmp_path, sample_out):
    out, _ = sample_out
    ref = (out / "customers.csv").read_text()
    gz = tmp_path / "s.csv.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(SAMPLE.read_bytes())
    assert run([gz, "--out", tmp_path / "g", "--min-support", "0.02"]).exit_code == 0
    assert (tmp_path / "g" / "customers.csv").read_text() == ref
    assert (tmp_path / "g" / "rules.csv").read_text() == (out / "rules.csv").read_text()
    text = SAMPLE.read_text(encoding="utf-8").split("\n", 1)
    ii = tmp_path / "ii.csv"
    ii.write_text("Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n" + text[1])
    res = run([ii, "--out", tmp_path / "ii", "--min-support", "0.02"])
    assert "format online_retail_ii" in res.stdout
    assert (tmp_path / "ii" / "customers.csv").read_text() == ref


SHOPIFY = """\
Name,Email,Financial Status,Paid at,Fulfillment Status,Currency,Subtotal,Shipping,Total,Discount Amount,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,Notes,Cancelled at,Refunded Amount,Id
#1001,Ann@example.com,paid,2024-03-01 10:00:00 +0100,fulfilled,EUR,50.00,5.00,55.00,0.00,2024-03-01 10:00:00 +0100,2,Mug,10.00,MUG-1,,,0.00,1
#1001,,,,,,,,,,,1,Tea,30.00,TEA-1,,,,
#1002,bob@example.com,paid,2024-03-05 09:00:00 +0000,fulfilled,EUR,30.00,5.00,35.00,0.00,2024-03-05 09:00:00 +0000,1,Tea,30.00,TEA-1,"a note
over two lines",,0.00,2
#1003,ann@example.com,partially_refunded,2024-03-09 23:30:00 -0200,fulfilled,EUR,40.00,0,40.00,5.00,2024-03-09 23:30:00 -0200,1,Mug,10.00,MUG-1,,,12.50,3
#1003,,,,,,,,,,,1,Tea,30.00,TEA-1,,,,
#1003,,,,,,,,,,,1,Card,5.00,,,,,
#1004,bob@example.com,voided,,,EUR,10.00,0,10.00,0,2024-03-10 08:00:00 +0000,1,Mug,10.00,MUG-1,,2024-03-10 09:00:00 +0000,0.00,4
#1005,,paid,2024-03-10 10:00:00 +0000,,EUR,10.00,0,10.00,0,2024-03-10 10:00:00 +0000,x,Mug,10.00,MUG-1,,,0.00,5
#1006,,paid,2024-03-10 11:00:00 +0000,,EUR,40.00,0,40.00,0,2024-03-10 11:00:00 +0000,1,Mug,10.00,MUG-1,,,0.00,6
#1006,,,,,,,,,,,1,Tea,30.00,TEA-1,,,,
"""


def test_shopify_export(tmp_path):
    f = tmp_path / "orders_export.csv"
    f.write_text(SHOPIFY, encoding="utf-8")
    assert detect_format(SHOPIFY.split("\n", 1)[0].split(",")) == "shopify"
    res = run([f, "--out", tmp_path / "o", "--min-support", "0.01", "--as-of", "2024-03-11T00:00:00Z"])
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines() == [f"{f}:10: unparseable Lineitem quantity 'x'"]   # #1002 spans lines 4-5
    cust = pd.read_csv(tmp_path / "o" / "customers.csv").set_index("customer_id")
    # ann (emails lower-cased): #1001 (2024-03-01 09:00 UTC, 50) and #1003 (03-10 01:30 UTC, 40 - 12.50 refunded)
    assert cust.loc["ann@example.com", ["recency_days", "frequency", "monetary"]].tolist() == [0, 2, 77.5]
    # bob: #1002 (30); #1004 cancelled: not an order, no revenue
    assert cust.loc["bob@example.com", ["recency_days", "frequency", "monetary"]].tolist() == [5, 1, 30.0]
    rules = pd.read_csv(tmp_path / "o" / "rules.csv")
    # baskets: #1001 {MUG-1, TEA-1}, #1002 {TEA-1}, #1003 {MUG-1, TEA-1, Card}, #1006 (guest) {MUG-1, TEA-1}
    r = rules.set_index(["antecedent", "consequent"])
    assert r.loc[("MUG-1", "TEA-1"), "count"] == 3 and r.loc[("MUG-1", "TEA-1"), "confidence"] == 1.0
    assert r.loc[("TEA-1", "MUG-1"), "confidence"] == pytest.approx(0.75)
    assert math.isinf(r.loc[("MUG-1", "TEA-1"), "conviction"])
    assert r.loc[("Card", "MUG-1"), "support"] == pytest.approx(0.25)
    assert len(rules) == 6


def test_unknown_format_is_a_clean_error(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a,b\n1,2\n")
    res = run([f, "--out", tmp_path / "o"])
    assert res.exit_code != 0 and "unknown file format" in res.output


def test_flask_cli_subprocess(tmp_path):
    flask = Path(sys.executable).with_name("flask")
    env = dict(os.environ)
    proc = subprocess.run([str(flask), "--app", "shopify_app", "analyze", str(SAMPLE), "--out", str(tmp_path),
                           "--min-support", "0.05"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "customers 260" in proc.stdout
    assert (tmp_path / "customers.csv").exists() and (tmp_path / "rules.csv").exists()
