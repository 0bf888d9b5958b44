"""Seed a dev shop from the UCI Online Retail data (id 352; also reads the Online Retail II header).

Rules (all deterministic, so the same file always gives the same shop):
- Shop currency GBP, time zone Europe/London. InvoiceDate is UK wall-clock time, read as Europe/London and
  stored in UTC (so 2011-06-01 12:00 becomes 11:00Z; winter dates are unchanged).
- Every non-'C' invoice with at least one usable row (Quantity > 0 and UnitPrice > 0) becomes one order,
  processed_at = created_at = InvoiceDate; rows with Quantity <= 0 or UnitPrice <= 0 outside 'C' invoices are
  stock adjustments / notes ("damaged", "?", bad-debt adjustments) and are skipped.
- CustomerID -> one customer (first_name "Customer", last_name = the CustomerID, email
  <CustomerID>@customers.example.com, country = Country of their first row, created_at = first invoice).
  Rows without CustomerID -> guest orders (customer null, email null).
- StockCode -> one product with one variant (sku = StockCode): title = the code's most frequent Description
  (ties: alphabetical), price = median UnitPrice, unit cost (inventoryItem.unitCost) = 55 % of that median,
  product_type = first matching keyword bucket of the title (PRODUCT_TYPES below, else "Gifts & Other").
- Non-product codes (NON_PRODUCT_CODES: POST, DOT, M, C2, D, S, BANK CHARGES, AMAZONFEE, CRUK, B, gift_*)
  -> custom lines with product null / variant null, title = Description.
- 'C' invoices (returns) are processed in time order after everything before them. For a customer's C invoice,
  each returned (StockCode, quantity) is refunded from that customer's most recent earlier order line with the
  same StockCode that still has refundable quantity (then the next most recent, ...). Refunds are grouped per
  (C invoice, order), created at the C invoice's time. If a C invoice refunds *all* remaining quantity of an
  order, that order is also cancelled (reason "customer") at that time.
  Whatever cannot be matched (guest returns; goods bought before the data starts) becomes an order built from
  the return's lines (positive quantities) that is created and cancelled at the C invoice's time, tagged
  "devstore:unmatched-return" -- so no return is lost and current totals of such orders are 0.
"""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import logging
import statistics
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from .models import money

log = logging.getLogger("shopify_app.devstore.seed")

HERE = Path(__file__).resolve().parent
BUNDLED_SAMPLE = HERE / "data" / "online_retail_sample.csv.gz"
SHARED_FULL = HERE.parents[2] / "shared" / "data" / "online_retail.csv.gz"   # /work/shared/... next to the repo
LONDON = ZoneInfo("Europe/London")
UTC = dt.timezone.utc

NON_PRODUCT_CODES = {"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "B"}
PRODUCT_TYPES = [
    ("Christmas", ("CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "SNOWFLAKE")),
    ("Candles & Lights", ("CANDLE", "T-LIGHT", "TLIGHT", "TEA LIGHT", "LANTERN", "LIGHTS", "LAMP")),
    ("Bags", ("BAG", "TOTE")),
    ("Kitchen & Dining", ("MUG", "CUP", "PLATE", "BOWL", "CAKE", "TEA", "SPOON", "JAR", "BOTTLE", "TIN",
                          "LUNCH", "NAPKIN", "APRON", "BAKING", "COOKIE", "CUTLERY", "TRAY", "TEAPOT")),
    ("Stationery & Wrap", ("CARD", "PAPER", "NOTEBOOK", "PEN", "PENCIL", "WRAP", "STICKER", "ENVELOPE",
                           "NOTE", "CALENDAR")),
    ("Home Decor", ("HEART", "SIGN", "FRAME", "CLOCK", "CUSHION", "DOORMAT", "MIRROR", "HOOK", "HANGER", "VASE",
                    "ORNAMENT", "DECORATION", "WALL", "DRAWER", "BOX")),
    ("Toys & Games", ("TOY", "GAME", "DOLL", "JIGSAW", "PUZZLE", "SPACEBOY", "DOMINOES", "SKIPPING", "PLAYHOUSE")),
    ("Garden", ("GARDEN", "PLANT", "FLOWER", "BIRD", "WATERING")),
    ("Accessories", ("NECKLACE", "BRACELET", "EARRINGS", "RING", "HAIR", "PURSE", "UMBRELLA", "BAG CHARM")),
    ("Party", ("PARTY", "BUNTING", "BALLOON", "CANDLES SET")),
]


def default_path() -> Path:
    """The full data set if the team's shared folder is there, else the sample bundled with the package."""
    return SHARED_FULL if SHARED_FULL.exists() else BUNDLED_SAMPLE


def is_non_product(code: str) -> bool:
    return code.upper() in NON_PRODUCT_CODES or code.lower().startswith("gift_")


def product_type_for(title: str) -> str:
    t = title.upper()
    for name, words in PRODUCT_TYPES:
        if any(w in t for w in words):
            return name
    return "Gifts & Other"


def _open(path: Path):
    raw = gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def read_rows(path: Path):
    """Rows as dicts with normalised keys: invoice, code, desc, qty, date (UTC), price, customer, country."""
    with _open(path) as fh:
        reader = csv.reader(fh)
        header = next(reader)
        idx = {h.strip(): i for i, h in enumerate(header)}
        inv = idx.get("InvoiceNo", idx.get("Invoice"))
        price = idx.get("UnitPrice", idx.get("Price"))
        cust = idx.get("CustomerID", idx.get("Customer ID"))
        if None in (inv, price, cust):
            raise ValueError(f"unrecognised Online Retail header: {header}")
        code, desc, qty, date, country = (idx["StockCode"], idx["Description"], idx["Quantity"], idx["InvoiceDate"],
                                          idx["Country"])
        cache: dict[str, dt.datetime] = {}
        for r in reader:
            if not r:
                continue
            ds = r[date]
            t = cache.get(ds)
            if t is None:
                local = dt.datetime.fromisoformat(ds).replace(tzinfo=LONDON)
                t = cache[ds] = local.astimezone(UTC)
            c = r[cust].strip()
            if c.endswith(".0"):
                c = c[:-2]
            yield (r[inv].strip(), r[code].strip(), (r[desc] or "").strip(), int(float(r[qty])), t,
                   Decimal(r[price]), c or None, r[country].strip())


def seed_online_retail(store, shop_domain: str, path: str | Path | None = None, limit_orders: int | None = None,
                       since: dt.datetime | None = None, *, replay_last_days: float | None = None,
                       replay_rate: float | None = None, end_at: dt.datetime | None = None) -> dict:
    """Load the data set into `shop_domain` (created if missing). Returns counts.

    end_at: move the whole data set in time by a whole number of days so that its last invoice falls within the
    day before end_at, never after it. The demo passes now: the 2010-2011 history then reads like a live shop,
    and recency, "last 30 days" and churn risk mean something. None keeps the original dates (tests that compare against the file).

    replay_last_days: orders of the last N days of the data are created *live* (webhooks fire: orders/create,
    orders/paid, refunds/create, ...), in time order, at `replay_rate` orders per second (None = no pause).
    """
    path = Path(path) if path else default_path()
    if shop_domain not in store.shops:
        store.create_shop(shop_domain, name="Online Retail (UCI)", currency="GBP", iana_timezone="Europe/London")
    rows = list(read_rows(path))
    if end_at is not None and rows:
        end_at = end_at if end_at.tzinfo else end_at.replace(tzinfo=UTC)
        shift = dt.timedelta(days=(end_at - max(r[4] for r in rows)).days)
        rows = [(*r[:4], r[4] + shift, *r[5:]) for r in rows]
    if since is not None:
        rows = [r for r in rows if r[4] >= since]

    # --- products: title / median price per code (over usable rows, C rows included for codes only returned)
    descs: dict[str, Counter] = defaultdict(Counter)
    prices: dict[str, list] = defaultdict(list)
    for inv, code, desc, qty, t, price, cust, country in rows:
        if price > 0 and not is_non_product(code):
            if desc:
                descs[code][desc] += 1
            if qty > 0 or inv.startswith("C"):
                prices[code].append(price)
    products: dict[str, int] = {}   # code -> variant id

    def variant_for(code: str) -> int:
        vid = products.get(code)
        if vid is None:
            cnt = descs.get(code)
            title = sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if cnt else code
            med = money(statistics.median(prices[code]))
            p = store.create_product(shop_domain, title=title, price=med, unit_cost=money(med * Decimal("0.55")),
                                     product_type=product_type_for(title), vendor="Online Retail", sku=code,
                                     handle=f"{title}-{code}".lower().replace(" ", "-"),
                                     created_at=dt.datetime(2009, 12, 1, tzinfo=UTC))
            vid = products[code] = p.variants[0].id
        return vid

    # --- invoices in time order (C invoices after same-time purchases)
    invoices: dict[str, list] = {}
    for r in rows:
        invoices.setdefault(r[0], []).append(r)
    order_keys = sorted(invoices, key=lambda k: (invoices[k][0][4], k.startswith("C"), k))
    last_time = max((r[4] for r in rows), default=None)
    live_from = last_time - dt.timedelta(days=replay_last_days) if (replay_last_days and last_time) else None

    customers: dict[str, int] = {}
    stats = Counter()
    # per customer: list of (order, {code: [line items]}) most recent last, for return matching
    history: dict[str, list] = defaultdict(list)
    sh = store.shop(shop_domain)
    started = time.monotonic()

    def customer_for(cid: str, t, country) -> int:
        if cid not in customers:
            c = store.create_customer(shop_domain, first_name="Customer", last_name=cid,
                                      email=f"{cid}@customers.example.com", created_at=t, country=country, emit=False)
            customers[cid] = c.id
        return customers[cid]

    def line_spec(code, desc, qty, price):
        if is_non_product(code):
            stats["custom_lines"] += 1
            return {"title": desc or code, "sku": code, "quantity": qty, "price": price}
        return {"variant_id": variant_for(code), "quantity": qty, "price": price}

    for key in order_keys:
        if limit_orders is not None and stats["orders"] >= limit_orders:
            break
        lines = invoices[key]
        t, cid, country = lines[0][4], lines[0][6], lines[0][7]
        live = live_from is not None and t > live_from
        if live and replay_rate:
            time.sleep(1.0 / replay_rate)
        if not key.startswith("C"):
            usable = [r for r in lines if r[3] > 0 and r[5] > 0]
            stats["skipped_rows"] += len(lines) - len(usable)
            if not usable:
                continue
            cust_id = customer_for(cid, t, country) if cid else None
            o = store.create_order(shop_domain, customer_id=cust_id, processed_at=t, created_at=t,
                                   lines=[line_spec(r[1], r[2], r[3], r[5]) for r in usable], emit=live)
            o.closed_at = None
            stats["orders"] += 1
            stats["guest_orders"] += cust_id is None
            if cid:
                by_code = defaultdict(list)
                for li, r in zip(o.line_items, usable):
                    by_code[r[1]].append(li)
                history[cid].append((o, by_code))
            continue
        # ---- a return ('C' invoice)
        returned = [r for r in lines if r[3] < 0 and r[5] > 0]
        stats["skipped_rows"] += len(lines) - len(returned)
        if not returned:
            continue
        per_order: dict[int, list] = defaultdict(list)
        unmatched = []
        for r in returned:
            want = -r[3]
            for o, by_code in reversed(history.get(cid, []) if cid else []):
                if want <= 0:
                    break
                for li in by_code.get(r[1], ()):
                    already = sum(q for (lid, q) in per_order[o.id] if lid == li.id)
                    free = li.quantity - li.refunded_quantity - already
                    if free > 0 and want > 0:
                        take = min(free, want)
                        per_order[o.id].append((li.id, take))
                        want -= take
            if want > 0:
                unmatched.append((r[1], r[2], want, r[5]))
        for oid, pairs in per_order.items():
            store.refund_order(shop_domain, oid, pairs, note=f"Return {key}", at=t, emit=live)
            stats["refunds"] += 1
            o = sh.orders[oid]
            if all(li.refunded_quantity >= li.quantity for li in o.line_items):
                store.cancel_order(shop_domain, oid, reason="customer", at=t, emit=live)
                stats["cancelled_after_full_return"] += 1
        if unmatched:
            cust_id = customer_for(cid, t, country) if cid else None
            o = store.create_order(shop_domain, customer_id=cust_id, processed_at=t, created_at=t,
                                   lines=[line_spec(c, d, q, p) for c, d, q, p in unmatched],
                                   tags=["devstore:unmatched-return"], note=f"Return {key} (no matching order)",
                                   emit=live)
            store.cancel_order(shop_domain, o.id, reason="customer", at=t, emit=live)
            stats["unmatched_return_orders"] += 1
    stats.update({"customers": len(customers), "products": len(products), "rows": len(rows)})
    log.info("seeded %s from %s in %.1fs: %s", shop_domain, path.name, time.monotonic() - started, dict(stats))
    return dict(stats)


def make_sample(src: Path, dst: Path, percent: int = 15) -> dict:
    """The bundled sample: every row of a deterministic ~percent% of customers (sha1 of CustomerID) plus the same
    share of guest invoices (sha1 of InvoiceNo without the 'C')."""
    def keep(key: str) -> bool:
        return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 100 < percent
    kept = 0
    with _open(src) as fh, gzip.open(dst, "wt", encoding="utf-8", newline="", compresslevel=9) as out:
        reader, writer = csv.reader(fh), csv.writer(out, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        ci = header.index("CustomerID") if "CustomerID" in header else header.index("Customer ID")
        ii = 0
        for r in reader:
            c = r[ci].strip()
            if keep(("cust:" + c) if c else ("inv:" + r[ii].lstrip("C"))):
                writer.writerow(r)
                kept += 1
    return {"rows": kept}
