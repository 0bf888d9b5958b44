"""Reconciliation against the stand-in over HTTP: orders created / refunded / cancelled / edited while no webhook
reached the app are pulled by updated_at and applied, so the app's state equals a clean pass of the stand-in's
orders; a second run changes nothing; a revoked token stops the shop."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from shopify_app.devstore.webhooks import order_payload
from shopify_app.models import Job, Order, OrderLine, SegmentChange, Shop
from shopify_app.shopify.convert import order_from_rest
from shopify_app.shopify.convert_graphql import fetch_complete_order
from shopify_app.shopify.graphql import AdminClient
from tests.helpers import (TEST_API_KEY, analytics_snapshot, install_from_store, reference_snapshot,
                           standin_store)
from workers import context
from workers.import_jobs import start_history_import
from workers.reconcile_jobs import reconcile_all_shops, reconcile_shop

SHOP = "reconcile.myshopify.com"
FAST = {"batch_size": 40, "poll_interval": 0.02}


@pytest.fixture
def store():
    return standin_store(SHOP, currency="USD")


@pytest.fixture
def cfg(config, server):
    c = config.replace(shopify_admin_base=f"{server}/shops/{{shop}}")
    context.set_config(c)
    yield c
    context.set_config(None)


@pytest.fixture
def shop_id(store, cfg, session):
    return install_from_store(store, session, cfg, SHOP)


def jobs(session, shop_id, kind="reconcile"):
    session.expire_all()
    rows = list(session.scalars(select(Job).where(Job.shop_id == shop_id, Job.kind == kind).order_by(Job.id)))
    session.commit()
    return rows


def orders_table(session, shop_id):
    session.expire_all()
    rows = {(o.id, o.shopify_updated_at, o.counted, o.customer_id, o.net_revenue, o.total_refunded)
            for o in session.scalars(select(Order).where(Order.shop_id == shop_id))}
    lines = {(ln.order_id, ln.id, ln.product_id, ln.quantity, ln.refunded_quantity, ln.price, ln.discount)
             for ln in session.scalars(select(OrderLine).where(OrderLine.shop_id == shop_id))}
    session.commit()
    return rows, lines


def lost_webhook_changes(store):
    """Changes the app never hears about: new orders (with many lines, guest, test, discount), refunds (partial,
    several, with many lines), a cancellation and a tag edit of imported orders."""
    sh = store.shops[SHOP]
    old = sorted(sh.orders)[:6]
    cust = store.create_customer(SHOP, email="late@example.com")
    prods = [store.create_product(SHOP, title=f"Late {i}", price=f"{3 + i}.25", product_type="Late")
             for i in range(14)]
    big = store.create_order(SHOP, customer_id=cust.id, lines=[{"variant_id": p.variants[0].id, "quantity": 2}
                                                              for p in prods],
                             discount_code={"code": "BIG", "amount": "7.00"})
    # three refunds (more than the page asks for), the first with more lines than a page's refund lines
    store.refund_order(SHOP, big.id, [(li.id, 1) for li in big.line_items[:7]])
    store.refund_order(SHOP, big.id, [(big.line_items[8].id, 2)])
    store.refund_order(SHOP, big.id, [(big.line_items[9].id, 1)])
    store.create_order(SHOP, lines=[{"variant_id": prods[0].variants[0].id, "quantity": 1},
                                    {"title": "Gift wrap", "price": "2.00"}])                      # guest
    store.create_order(SHOP, customer_id=cust.id, lines=[{"variant_id": prods[1].variants[0].id, "quantity": 1}],
                       test=True)
    o0 = sh.orders[old[0]]
    store.refund_order(SHOP, o0.id, [(o0.line_items[0].id, 1)])
    store.cancel_order(SHOP, old[1])
    store.update_order(SHOP, old[2], tags=["edited"])
    o3 = sh.orders[old[3]]
    store.refund_order(SHOP, o3.id)                                                  # everything
    return big


def test_lost_webhooks_are_repaired_to_a_clean_pass_and_a_rerun_changes_nothing(store, cfg, session, shop_id):
    store.generate_orders(SHOP, 120, customers=25, products=15, seed=5)
    assert start_history_import(shop_id, **FAST)["status"] == "done"
    imported = analytics_snapshot(session, shop_id)
    time.sleep(1.05)      # Shopify's updated_at has one-second resolution: changes land in a later second
    big = lost_webhook_changes(store)
    assert analytics_snapshot(session, shop_id) == imported          # the app heard nothing
    reference = reference_snapshot(store, SHOP)
    assert imported != reference

    result = reconcile_shop(shop_id, batch_size=4)
    assert result["status"] == "done"
    assert result["applied"] == 7          # 3 new orders + 4 changed imported orders (final state each)
    assert analytics_snapshot(session, shop_id) == reference
    [job] = jobs(session, shop_id)
    assert job.status == "done" and job.error is None
    assert job.details["pulled"] == result["pulled"] == job.done == job.total
    assert job.details["applied"] == 7 and job.details["skipped"] == result["skipped"]
    session.expire_all()
    shop = session.get(Shop, shop_id)
    newest = max(o.updated_at for o in store.shops[SHOP].orders.values()).replace(tzinfo=None, microsecond=0)
    assert shop.orders_watermark == newest
    row = session.get(Order, (shop_id, big.id))
    expected_big = order_from_rest(order_payload(store.shops[SHOP], store.shops[SHOP].orders[big.id]))
    assert row.total_refunded == pytest.approx(expected_big.refunded) and len(big.line_items) == 14
    session.commit()
    table = orders_table(session, shop_id)
    changes = session.scalar(select(func.count()).select_from(SegmentChange).where(SegmentChange.shop_id == shop_id))
    session.commit()

    again = reconcile_shop(shop_id, batch_size=4)
    assert again["status"] == "done" and again["applied"] == 0 and again["pulled"] >= 1   # the overlap again
    assert analytics_snapshot(session, shop_id) == reference
    assert orders_table(session, shop_id) == table
    assert session.scalar(select(func.count()).select_from(SegmentChange)
                          .where(SegmentChange.shop_id == shop_id)) == changes
    session.commit()
    session.expire_all()
    assert session.get(Shop, shop_id).orders_watermark == newest
    session.commit()
    assert [j.status for j in jobs(session, shop_id)] == ["done", "done"]


def test_a_change_in_the_same_second_as_the_stored_version_is_repaired(store, cfg, session, shop_id):
    """Shopify's updated_at has one-second resolution: a second change in the same second carries the updated_at of
    the version the app stored, so its webhook is skipped as "not newer". Reconciliation reads the current state
    and wins that tie when it differs; when it does not, a rerun still changes nothing."""
    store.generate_orders(SHOP, 30, customers=8, products=6, seed=11)
    assert start_history_import(shop_id, **FAST)["status"] == "done"
    sh = store.shops[SHOP]
    oid = max(sh.orders, key=lambda i: sh.orders[i].updated_at)    # within the pull's overlap of the watermark
    stored_at = sh.orders[oid].updated_at
    store.refund_order(SHOP, oid)                       # refunded in full ...
    sh.orders[oid].updated_at = stored_at               # ... within the second of the version the app stored
    reference = reference_snapshot(store, SHOP)
    assert analytics_snapshot(session, shop_id) != reference

    result = reconcile_shop(shop_id, batch_size=10)
    assert result["status"] == "done" and result["applied"] == 1
    assert analytics_snapshot(session, shop_id) == reference
    session.expire_all()
    assert session.get(Order, (shop_id, oid)).total_refunded > 0
    session.commit()
    again = reconcile_shop(shop_id, batch_size=10)
    assert again["applied"] == 0 and analytics_snapshot(session, shop_id) == reference


def test_pull_starts_at_the_watermark_minus_the_overlap(store, cfg, session, shop_id):
    store.generate_orders(SHOP, 30, customers=5, products=5, seed=2)
    start_history_import(shop_id, **FAST)
    session.expire_all()
    watermark = session.get(Shop, shop_id).orders_watermark
    session.commit()
    # generate_orders spaces orders one minute apart: the 5-minute overlap re-reads the last 6 orders only
    result = reconcile_shop(shop_id)
    assert (result["pulled"], result["applied"], result["skipped"]) == (6, 0, 6)
    assert jobs(session, shop_id)[-1].details["since"] == (watermark - dt.timedelta(minutes=5)).isoformat()


def test_graphql_conversion_equals_the_rest_webhook_conversion(store, server):
    """Every order of the stand-in read through reconcile_orders_page (+ its follow-up pages) converts to the
    same OrderVersion as its REST webhook payload (product_type aside: REST line items carry none)."""
    store.generate_orders(SHOP, 20, customers=5, products=5, seed=4)
    lost_webhook_changes(store)
    client = AdminClient(SHOP, store.install_app(SHOP, TEST_API_KEY), "2026-10", admin_base=f"{server}/shops/{{shop}}")
    got = {}
    for node in client.paginate("reconcile_orders_page", "orders", {"first": 9, "refundsFirst": 2}):
        v = fetch_complete_order(client, node, refunds_first=2)
        got[v.id] = replace(v, lines=tuple(replace(ln, product_type=None) for ln in v.lines))
    sh = store.shops[SHOP]
    assert set(got) == set(sh.orders)
    for oid, o in sh.orders.items():
        assert got[oid] == order_from_rest(order_payload(sh, o)), oid
    assert store.deprecation_log == []


def test_revoked_token_marks_needs_reauth_and_stops(store, cfg, session, shop_id):
    store.generate_orders(SHOP, 10, customers=3, products=3)
    start_history_import(shop_id, **FAST)
    store.revoke_shop_tokens(SHOP)
    result = reconcile_shop(shop_id)
    assert result["status"] == "failed" and result["error"] == "needs_reauth"
    session.expire_all()
    assert session.get(Shop, shop_id).status == "needs_reauth"
    session.commit()
    [job] = jobs(session, shop_id)
    assert job.status == "failed" and "access token" in job.error
    # the shop is left alone from now on: no job, no request
    assert reconcile_shop(shop_id) == {"shop_id": shop_id, "status": "skipped", "reason": "needs_reauth"}
    assert start_history_import(shop_id, **FAST)["status"] == "failed"
    assert len(jobs(session, shop_id)) == 1


def test_skipped_until_the_history_import_is_done(store, cfg, session, shop_id):
    store.generate_orders(SHOP, 5, customers=2, products=2)
    assert reconcile_shop(shop_id)["reason"] == "history import not done"
    assert jobs(session, shop_id) == []
    start_history_import(shop_id, **FAST)
    assert reconcile_shop(shop_id)["status"] == "done"


def test_shop_whose_import_found_no_orders_reconciles_everything(store, cfg, session, shop_id):
    start_history_import(shop_id, **FAST)         # empty shop: no watermark
    store.generate_orders(SHOP, 12, customers=4, products=4)
    result = reconcile_shop(shop_id)
    assert result["pulled"] == result["applied"] == 12
    assert analytics_snapshot(session, shop_id) == reference_snapshot(store, SHOP)


def test_reconcile_all_shops_enqueues_active_shops_only(cfg, session, shop_id, db_url):
    from shopify_app.queues import DEFAULT, get_queue
    from tests.helpers import add_shop

    gone = add_shop(db_url, "gone.myshopify.com", status="uninstalled")
    reauth = add_shop(db_url, "reauth.myshopify.com", status="needs_reauth")
    assert reconcile_all_shops() == {"shops": 1, "enqueued": 1}
    assert reconcile_all_shops() == {"shops": 1, "enqueued": 0}   # last hour's job still waiting
    ids = get_queue(cfg, DEFAULT).job_ids
    assert ids.count(f"reconcile-{shop_id}") == 1
    assert f"reconcile-{gone}" not in ids and f"reconcile-{reauth}" not in ids


def test_throttling_429_503_and_dropped_connections_are_ridden_out(store, cfg, server, session, shop_id):
    import requests

    store.generate_orders(SHOP, 40, customers=8, products=8, seed=6)
    start_history_import(shop_id, **FAST)
    time.sleep(1.05)
    lost_webhook_changes(store)
    store.throttle.configure(bucket_size=1000, restore_rate=1000)
    # Another process of ours just spent most of the bucket: the first page is THROTTLED and waited out.
    token = store.install_app(SHOP, TEST_API_KEY)
    requests.post(f"{server}/shops/{SHOP}/admin/api/2026-10/graphql.json", timeout=10,
                  headers={"X-Shopify-Access-Token": token},
                  json={"query": "{ orders(first: 240) { nodes { id lineItems(first: 1) { nodes { id } } } } }"})
    store.faults.add("http_429", count=1, retry_after=0.2)
    store.faults.add("http_503", count=1)
    store.faults.add("drop", count=1)
    slept: list[float] = []

    def sleep(seconds):
        slept.append(seconds)
        time.sleep(min(seconds, 2.0))

    result = reconcile_shop(shop_id, client_kw={"sleep": sleep})
    assert result["status"] == "done"
    assert [k for k, _ in store.faults.fired] == ["http_429", "http_503", "drop"]
    assert len(slept) >= 4                         # one wait per fault, and at least one for the bucket
    assert analytics_snapshot(session, shop_id) == reference_snapshot(store, SHOP)


def test_token_revoked_mid_run_stops_without_losing_what_was_applied(store, cfg, session, shop_id):
    import requests

    store.generate_orders(SHOP, 30, customers=6, products=6, seed=8)
    start_history_import(shop_id, **FAST)
    session.expire_all()
    before = session.get(Shop, shop_id).orders_watermark
    session.commit()
    time.sleep(1.05)
    for oid in sorted(store.shops[SHOP].orders)[:20]:          # 20 changed orders: three pages of 9
        store.update_order(SHOP, oid, tags=["changed"])

    class RevokedAfterTwoPages(requests.Session):
        posts = 0

        def post(self, *a, **kw):
            RevokedAfterTwoPages.posts += 1
            if RevokedAfterTwoPages.posts == 3:
                store.revoke_shop_tokens(SHOP)       # the merchant uninstalls while we page
            return super().post(*a, **kw)

    result = reconcile_shop(shop_id, batch_size=9, client_kw={"session": RevokedAfterTwoPages()})
    assert result["status"] == "failed" and result["error"] == "needs_reauth"
    # the two pages read before the 401: the 5-minute overlap (6 imported orders, unchanged) + 12 changed ones
    assert (result["pulled"], result["applied"], result["skipped"]) == (18, 12, 6)
    [job] = jobs(session, shop_id)
    assert job.status == "failed" and job.details["applied"] == 12
    session.expire_all()
    shop = session.get(Shop, shop_id)
    assert shop.status == "needs_reauth" and shop.orders_watermark > before   # kept what was applied
    session.commit()


def test_order_deleted_between_page_and_follow_up_is_left_to_its_webhook(store, server):
    """An order with more line items than the page holds, deleted before its follow-up page is read."""
    prods = [store.create_product(SHOP, title=f"P{i}", price="2.00") for i in range(12)]
    order = store.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1} for p in prods])
    client = AdminClient(SHOP, store.install_app(SHOP, TEST_API_KEY), "2026-10", admin_base=f"{server}/shops/{{shop}}")
    [node] = client.execute("reconcile_orders_page", {"first": 9, "refundsFirst": 2})["orders"]["nodes"]
    assert node["lineItems"]["pageInfo"]["hasNextPage"]
    complete = fetch_complete_order(client, node, refunds_first=2)
    assert complete.id == order.id and len(complete.lines) == 12
    store.delete_order(SHOP, order.id)
    assert fetch_complete_order(client, node, refunds_first=2) is None
