"""Seeding the bundled UCI Online Retail sample: counts computed independently from the CSV."""
import csv
import gzip
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

import pytest

from shopify_app.devstore import App, DevStore
from shopify_app.devstore.seed import BUNDLED_SAMPLE, seed_online_retail

SHOP = "retail.myshopify.com"
NON_PRODUCT = {"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "B"}


def _non_product(code):
    return code.upper() in NON_PRODUCT or code.lower().startswith("gift_")


@pytest.fixture(scope="module")
def seeded():
    store = DevStore(apps=[App("k", "s-0123456789abcdef0123456789abcdef")])
    stats = seed_online_retail(store, SHOP, BUNDLED_SAMPLE)
    return store, stats


@pytest.fixture(scope="module")
def expected():
    with gzip.open(BUNDLED_SAMPLE, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    usable = [r for r in rows if not r["InvoiceNo"].startswith("C") and int(r["Quantity"]) > 0
              and Decimal(r["UnitPrice"]) > 0]
    returns = [r for r in rows if r["InvoiceNo"].startswith("C") and int(r["Quantity"]) < 0
               and Decimal(r["UnitPrice"]) > 0]
    invoices = defaultdict(list)
    for r in usable:
        invoices[r["InvoiceNo"]].append(r)
    return {
        "orders": len(invoices),
        "guest_orders": sum(1 for lines in invoices.values() if not lines[0]["CustomerID"]),
        "customers": len({r["CustomerID"] for r in usable + returns if r["CustomerID"]}),
        "products": len({r["StockCode"] for r in usable + returns if not _non_product(r["StockCode"])}),
        "quantity": sum(int(r["Quantity"]) for r in usable),
        "returned_quantity": sum(-int(r["Quantity"]) for r in returns),
        "revenue": sum(int(r["Quantity"]) * Decimal(r["UnitPrice"]) for r in usable),
        "custom_lines": sum(1 for r in usable if _non_product(r["StockCode"])),
    }


def test_counts_match_the_csv(seeded, expected):
    store, stats = seeded
    sh = store.shop(SHOP)
    regular = [o for o in sh.orders.values() if "devstore:unmatched-return" not in o.tags]
    unmatched = [o for o in sh.orders.values() if "devstore:unmatched-return" in o.tags]
    assert len(regular) == expected["orders"] == stats["orders"]
    assert sum(o.customer_id is None for o in regular) == expected["guest_orders"]
    assert len(sh.customers) == expected["customers"]
    assert len(sh.products) == expected["products"]
    assert sum(li.quantity for o in regular for li in o.line_items) == expected["quantity"]
    assert sum(o.total_line_items_price for o in regular) == expected["revenue"]
    assert sum(li.product_id is None for o in regular for li in o.line_items) == expected["custom_lines"]
    refunded = sum(li.refunded_quantity for o in regular for li in o.line_items)
    in_unmatched = sum(li.quantity for o in unmatched for li in o.line_items)
    assert refunded + in_unmatched == expected["returned_quantity"]   # every return is accounted for
    assert all(o.cancelled_at is not None and o.current_total_price == 0 for o in unmatched)
    assert sh.currency == "GBP" and sh.iana_timezone == "Europe/London"


def test_dates_are_london_time_stored_utc(seeded, expected):
    store, _ = seeded
    sh = store.shop(SHOP)
    with gzip.open(BUNDLED_SAMPLE, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    winter = next(r for r in rows if r["InvoiceDate"].startswith("2010-12") and not r["InvoiceNo"].startswith("C")
                  and int(r["Quantity"]) > 0 and Decimal(r["UnitPrice"]) > 0)
    summer = next(r for r in rows if r["InvoiceDate"].startswith("2011-07") and not r["InvoiceNo"].startswith("C")
                  and int(r["Quantity"]) > 0 and Decimal(r["UnitPrice"]) > 0)
    times = {o.processed_at.strftime("%Y-%m-%d %H:%M") for o in sh.orders.values()}
    assert winter["InvoiceDate"][:16] in times                       # GMT = UTC
    hh = int(summer["InvoiceDate"][11:13]) - 1                        # BST = UTC+1
    assert f"{summer['InvoiceDate'][:11]}{hh:02d}{summer['InvoiceDate'][13:16]}" in times


def test_seeded_shop_over_graphql(seeded):
    from shopify_app.devstore.graphql_api import run_graphql
    from shopify_app.devstore.resolvers import Ctx
    store, stats = seeded
    ctx = Ctx(store, store.shop(SHOP), "k", store.apps["k"].scopes, "http://x")
    body = run_graphql(ctx, {"query": '''{ shop { currencyCode ianaTimezone }
        ordersCount(query: "tag_not:x", limit: null) { count precision }
        products(first: 1, sortKey: TITLE) { nodes { title productType variants(first: 1) { nodes {
          sku price inventoryItem { unitCost { amount currencyCode } } } } } } }'''})
    assert "errors" not in body, body
    assert body["data"]["shop"] == {"currencyCode": "GBP", "ianaTimezone": "Europe/London"}
    v = body["data"]["products"]["nodes"][0]["variants"]["nodes"][0]
    assert Decimal(v["inventoryItem"]["unitCost"]["amount"]) == (Decimal(v["price"]) * Decimal("0.55")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert v["inventoryItem"]["unitCost"]["currencyCode"] == "GBP"


def test_replay_last_days_as_live_webhooks():
    import datetime as dt
    sent = []
    store = DevStore(apps=[App("k", "s-0123456789abcdef0123456789abcdef")])
    store.create_shop(SHOP, currency="GBP", iana_timezone="Europe/London")
    store.webhooks.configure(transport=lambda url, h, body, t: sent.append((h["X-Shopify-Topic"], body)) or 200)
    store.subscribe_webhook(SHOP, "orders/create", "http://app.test/webhooks/orders")
    seed_online_retail(store, SHOP, BUNDLED_SAMPLE, since=dt.datetime(2011, 11, 1, tzinfo=dt.timezone.utc),
                       replay_last_days=2, replay_rate=None)
    import json
    created = [json.loads(b) for t, b in sent if t == "orders/create"]
    assert created, "the last two days must be replayed as orders/create deliveries"
    times = [c["processed_at"] for c in created]
    assert times == sorted(times) and min(times) >= "2011-12-07"
    n_live = sum(1 for o in store.shop(SHOP).orders.values()
                 if o.processed_at >= dt.datetime(2011, 12, 7, 12, 50, tzinfo=dt.timezone.utc))
    assert len(created) >= n_live > 0


def test_end_at_shifts_the_whole_history_by_whole_days():
    import datetime as dt
    utc = dt.timezone.utc
    plain = DevStore(apps=[App("k", "s-0123456789abcdef0123456789abcdef")])
    seed_online_retail(plain, SHOP, BUNDLED_SAMPLE, limit_orders=200)
    end_at = dt.datetime(2026, 11, 23, 9, 30, tzinfo=utc)
    moved = DevStore(apps=[App("k", "s-0123456789abcdef0123456789abcdef")])
    seed_online_retail(moved, SHOP, BUNDLED_SAMPLE, limit_orders=200, end_at=end_at)
    a = sorted(o.processed_at for o in plain.shop(SHOP).orders.values())
    b = sorted(o.processed_at for o in moved.shop(SHOP).orders.values())
    assert len(a) == len(b) >= 200
    shifts = {y - x for x, y in zip(a, b)}
    assert len(shifts) == 1, "every order moves by the same amount"
    shift = shifts.pop()
    assert shift.seconds == 0 and shift.microseconds == 0 and shift.days > 5000   # whole days, kept time of day
    # the file's last invoice (2011-12-09 12:50 London) lands in the day before end_at, never after it
    last = dt.datetime(2011, 12, 9, 12, 50, tzinfo=utc) + shift
    assert end_at - dt.timedelta(days=1) < last <= end_at
