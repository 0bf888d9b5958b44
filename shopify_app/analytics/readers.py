"""Readers for order files used by the offline analyzer (no Shopify needed).

Formats, detected from the header row:
  * "online_retail":    UCI Online Retail   InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
  * "online_retail_ii": UCI Online Retail II Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country
  * "shopify":          Shopify admin Orders > Export (Name,Email,Financial Status,Paid at,...,Created at,
                        Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,...): one row per line item,
                        order-level fields only on an order's first row.
A ".gz" file is decompressed on the fly.

Every reader returns a `ParsedFile` whose `lines` DataFrame has one row per good line item:
    line         the line number in the file (header = 1) where the record starts
    order_id     str
    customer_id  str, or None for a guest
    time         datetime64 (naive; Shopify times converted to UTC)
    item         str (StockCode; Shopify: Lineitem sku, else Lineitem name)
    quantity     float
    amount       float, this line's contribution to the customer's net revenue
    is_order     bool: False for Online Retail 'C' invoices (returns) and cancelled Shopify orders
Bad rows (unparseable number/date, missing field) are listed in `bad` as (line, reason) and skipped.

Online Retail: amount = Quantity * UnitPrice (negative for returns). Shopify: the order's first row carries
amount = Subtotal - Refunded Amount (Subtotal is after discounts; if there is no Subtotal column, the order's
sum of Lineitem quantity * Lineitem price); cancelled orders contribute 0.
"""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

OR_COLUMNS = {
    "online_retail": dict(invoice="InvoiceNo", item="StockCode", qty="Quantity", date="InvoiceDate",
                          price="UnitPrice", customer="CustomerID"),
    "online_retail_ii": dict(invoice="Invoice", item="StockCode", qty="Quantity", date="InvoiceDate",
                             price="Price", customer="Customer ID"),
}
SHOPIFY_REQUIRED = ("Name", "Email", "Created at", "Lineitem quantity", "Lineitem name", "Lineitem price")
LINE_COLUMNS = ["line", "order_id", "customer_id", "time", "item", "quantity", "amount", "is_order"]


@dataclass
class ParsedFile:
    path: str
    format: str
    lines: pd.DataFrame
    n_rows: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)


class BadRow(ValueError):
    pass


def open_text(path: str | Path):
    path = str(path)
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def detect_format(header: list[str]) -> str:
    cols = {h.strip() for h in header}
    for fmt, spec in OR_COLUMNS.items():
        if set(spec.values()) <= cols:
            return fmt
    if set(SHOPIFY_REQUIRED) <= cols:
        return "shopify"
    raise ValueError(f"unknown file format (header: {','.join(header)[:200]})")


_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M %z", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
                 "%d/%m/%Y %H:%M")


def parse_time(s: str) -> dt.datetime:
    """ISO 8601 (with or without offset), 'YYYY-MM-DD HH:MM:SS -0500' (Shopify) or 'M/D/YYYY H:MM' (UCI xlsx).
    Aware times are converted to naive UTC."""
    s = s.strip()
    if not s:
        raise BadRow("missing date")
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                t = dt.datetime.strptime(s, fmt)
                break
            except ValueError:
                continue
        else:
            raise BadRow(f"unparseable date {s!r}") from None
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def parse_float(s: str, what: str) -> float:
    s = s.strip()
    if not s:
        raise BadRow(f"missing {what}")
    try:
        v = float(s)
    except ValueError:
        raise BadRow(f"unparseable {what} {s!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise BadRow(f"unparseable {what} {s!r}")
    return v


def _customer_id(s: str) -> str | None:
    s = s.strip()
    if not s:
        return None
    if s.endswith(".0") and s[:-2].isdigit():   # 17850.0 from a float column
        s = s[:-2]
    return s


def _rows(reader: csv.reader):
    """(start line, row) for each record; the header is line 1."""
    prev = reader.line_num
    for row in reader:
        yield prev + 1, row
        prev = reader.line_num


def read_orders(path: str | Path) -> ParsedFile:
    with open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        header = [h.strip() for h in header]
        fmt = detect_format(header)
        if fmt == "shopify":
            return _read_shopify(str(path), header, reader)
        return _read_online_retail(str(path), fmt, header, reader)


def _read_online_retail(path: str, fmt: str, header: list[str], reader) -> ParsedFile:
    spec = OR_COLUMNS[fmt]
    ix = {k: header.index(v) for k, v in spec.items()}
    width = max(ix.values()) + 1
    out = {c: [] for c in LINE_COLUMNS}
    bad: list[tuple[int, str]] = []
    n = 0
    for line, row in _rows(reader):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        n += 1
        try:
            if len(row) < width:
                raise BadRow(f"expected {len(header)} fields, got {len(row)}")
            invoice = row[ix["invoice"]].strip()
            item = row[ix["item"]].strip()
            if not invoice:
                raise BadRow(f"missing {spec['invoice']}")
            if not item:
                raise BadRow(f"missing {spec['item']}")
            qty = parse_float(row[ix["qty"]], spec["qty"])
            price = parse_float(row[ix["price"]], spec["price"])
            t = parse_time(row[ix["date"]])
        except BadRow as e:
            bad.append((line, str(e)))
            continue
        out["line"].append(line)
        out["order_id"].append(invoice)
        out["customer_id"].append(_customer_id(row[ix["customer"]]))
        out["time"].append(t)
        out["item"].append(item)
        out["quantity"].append(qty)
        out["amount"].append(qty * price)
        out["is_order"].append(not invoice.upper().startswith("C"))
    return ParsedFile(path, fmt, _frame(out), n, bad)


def _read_shopify(path: str, header: list[str], reader) -> ParsedFile:
    col = {h: i for i, h in enumerate(header)}

    def get(row, name):
        i = col.get(name)
        return row[i].strip() if i is not None and i < len(row) else ""

    out = {c: [] for c in LINE_COLUMNS}
    bad: list[tuple[int, str]] = []
    orders: dict[str, dict] = {}       # Name -> order-level fields from its first row
    broken: set[str] = set()           # orders whose first row was bad
    line_sums: dict[str, float] = {}   # fallback amount when there is no Subtotal column
    first_index: dict[str, int] = {}   # index in `out` of the order's first good line
    n = 0
    for line, row in _rows(reader):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        n += 1
        try:
            name = get(row, "Name")
            if not name:
                raise BadRow("missing Name")
            if name in broken:
                raise BadRow(f"order {name}: its first row was bad")
            if name not in orders:
                try:
                    t = parse_time(get(row, "Created at"))
                    subtotal = parse_float(get(row, "Subtotal"), "Subtotal") if "Subtotal" in col else None
                    refunded = get(row, "Refunded Amount")
                    refunded = parse_float(refunded, "Refunded Amount") if refunded else 0.0
                except BadRow:
                    broken.add(name)
                    raise
                orders[name] = dict(time=t, customer=(get(row, "Email").lower() or None),
                                    cancelled=bool(get(row, "Cancelled at")), subtotal=subtotal, refunded=refunded)
            o = orders[name]
            qty = parse_float(get(row, "Lineitem quantity"), "Lineitem quantity")
            price = parse_float(get(row, "Lineitem price"), "Lineitem price")
            item = get(row, "Lineitem sku") or get(row, "Lineitem name")
            if not item:
                raise BadRow("missing Lineitem name")
        except BadRow as e:
            bad.append((line, str(e)))
            continue
        first = name not in first_index
        if first:
            first_index[name] = len(out["line"])
        amount = 0.0
        if not o["cancelled"]:
            if o["subtotal"] is None:
                line_sums[name] = line_sums.get(name, 0.0) + qty * price
            elif first:
                amount = o["subtotal"] - o["refunded"]
        out["line"].append(line)
        out["order_id"].append(name)
        out["customer_id"].append(o["customer"])
        out["time"].append(o["time"])
        out["item"].append(item)
        out["quantity"].append(qty)
        out["amount"].append(amount)
        out["is_order"].append(not o["cancelled"])
    for name, total in line_sums.items():
        out["amount"][first_index[name]] = total - orders[name]["refunded"]
    return ParsedFile(path, "shopify", _frame(out), n, bad)


def _frame(out: dict) -> pd.DataFrame:
    df = pd.DataFrame(out, columns=LINE_COLUMNS)
    df["time"] = pd.to_datetime(df["time"])
    df["quantity"] = df["quantity"].astype(float)
    df["amount"] = df["amount"].astype(float)
    df["is_order"] = df["is_order"].astype(bool)
    return df
