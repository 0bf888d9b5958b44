"""History import end to end against the devstore stand-in over HTTP (bulk query -> JSONL -> Order rows, counts,
customer stats), plus the bulk JSONL conversion itself."""
from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from sqlalchemy import func, select

from shopify_app.models import AssociationRule, CustomerStats, Job, Order, OrderLine, Shop
from shopify_app.shopify.convert_bulk import orders_from_jsonl
from tests.helpers import TEST_API_KEY, install_from_store, standin_store
from workers import context
from workers.import_jobs import start_history_import
from workers.rebuild_jobs import read_bucket_counts

SHOP = "history-import.myshopify.com"
FAST = {"batch_size": 50, "poll_interval": 0.02}


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


def populate(store):
    store.generate_orders(SHOP, 300, customers=40, products=25, seed=3)
    sh = store.shops[SHOP]
    cust = store.create_customer(SHOP, email="extra@example.com")
    prod = store.create_product(SHOP, title="Mug", price="9.50", unit_cost="4.00", product_type="Kitchen")
    var = prod.variants[0].id
    o1 = store.create_order(SHOP, customer_id=cust.id, lines=[{"variant_id": var, "quantity": 2},
                                                              {"title": "POSTAGE", "price": "5.00"}],
                            discount_code={"code": "TEN", "amount": "2.00"})
    store.refund_order(SHOP, o1.id, [(o1.line_items[0].id, 1)])
    o2 = store.create_order(SHOP, customer_id=cust.id, lines=[{"variant_id": var, "quantity": 1}])
    store.cancel_order(SHOP, o2.id)
    store.create_order(SHOP, customer_id=cust.id, lines=[{"variant_id": var, "quantity": 1}], test=True)
    store.create_order(SHOP, lines=[{"title": "Gift wrap", "price": "3.00"}])        # guest, custom line only
    return sh, o1


def expected(sh):
    counted = {o.id: o for o in sh.orders.values()
               if not o.cancelled_at and not o.test and not getattr(o, "deleted", False)}
    per_customer = Counter(o.customer_id for o in counted.values() if o.customer_id is not None)
    return counted, per_customer


def snapshot(session, shop_id):
    session.expire_all()
    orders = {(o.id, o.shopify_updated_at, o.counted, o.customer_id, o.net_revenue)
              for o in session.scalars(select(Order).where(Order.shop_id == shop_id))}
    stats = {(c.customer_id, c.orders_count, round(c.net_revenue, 2), c.items_count, c.segment)
             for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id))}
    counts = read_bucket_counts(session, shop_id)          # snapshots + deltas, per month bucket
    lines = session.scalar(select(func.count()).select_from(OrderLine).where(OrderLine.shop_id == shop_id))
    session.commit()
    return orders, stats, counts, lines


def import_jobs(session, shop_id):
    session.expire_all()
    jobs = list(session.scalars(select(Job).where(Job.shop_id == shop_id, Job.kind == "import").order_by(Job.id)))
    session.commit()
    return jobs


def assert_matches_store(session, shop_id, sh):
    counted, per_customer = expected(sh)
    session.expire_all()
    stored = set(session.scalars(select(Order.id).where(Order.shop_id == shop_id, Order.counted.is_(True))))
    assert stored == set(counted)
    all_ids = set(session.scalars(select(Order.id).where(Order.shop_id == shop_id)))
    assert all_ids == set(sh.orders)
    stats = {c.customer_id: c.orders_count
             for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id))}
    assert stats == dict(per_customer)
    assert all(c.segment for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id)))
    shop = session.get(Shop, shop_id)
    newest = max(o.updated_at for o in sh.orders.values()).replace(tzinfo=None, microsecond=0)  # API: seconds
    assert shop.orders_watermark == newest
    session.commit()


def test_history_import_end_to_end(store, cfg, session, shop_id):
    sh, refunded_order = populate(store)
    result = start_history_import(shop_id, **FAST)
    assert result["status"] == "done" and result["orders"] == len(sh.orders)
    assert_matches_store(session, shop_id, sh)
    jobs = import_jobs(session, shop_id)
    assert len(jobs) == 1
    job = jobs[0]
    assert job.status == "done" and job.error is None and job.total == job.done == len(sh.orders)
    assert job.bulk_operation_id and job.cursor == str(len(sh.orders) - 1)

    session.expire_all()
    row = session.get(Order, (shop_id, refunded_order.id))
    assert row.total_refunded == pytest.approx(8.71) and row.financial_status == "partially_refunded"
    lines = {ln.product_id: ln for ln in session.scalars(
        select(OrderLine).where(OrderLine.shop_id == shop_id, OrderLine.order_id == refunded_order.id))}
    assert set(lines) == {None, store.shops[SHOP].orders[refunded_order.id].line_items[0].product_id}
    assert [ln.refunded_quantity for ln in lines.values() if ln.product_id][0] == 1
    session.commit()

    before = snapshot(session, shop_id)
    second = start_history_import(shop_id, **FAST)          # rerun after completion: nothing changes
    assert second["status"] == "done" and second["applied"] == 0
    assert snapshot(session, shop_id) == before
    assert_matches_store(session, shop_id, sh)


def test_crash_resume_from_cursor(store, cfg, session, shop_id):
    sh, _ = populate(store)
    start_history_import(shop_id, **FAST)
    full = snapshot(session, shop_id)
    job = import_jobs(session, shop_id)[-1]
    op_id = job.bulk_operation_id

    # Simulate a crash half way: the job still 'running' on the same bulk operation, cursor in the middle.
    session.expire_all()
    j = session.get(Job, job.id)
    j.status, j.cursor, j.done, j.finished_at = "running", "149", 150, None
    session.commit()
    result = start_history_import(shop_id, **FAST)
    assert result["job_id"] == job.id and result["orders"] == len(sh.orders)
    assert result["applied"] + result["skipped"] == len(sh.orders) - 150      # only after the cursor
    jobs = import_jobs(session, shop_id)
    assert len(jobs) == 1 and jobs[0].bulk_operation_id == op_id            # resumed, no new bulk operation
    assert jobs[0].status == "done" and jobs[0].done == jobs[0].total == len(sh.orders)
    assert snapshot(session, shop_id) == full
    assert_matches_store(session, shop_id, sh)


def test_crash_resume_into_empty_database_applies_rest(store, cfg, session, shop_id):
    """A crash after the first batches: resuming applies exactly the orders after the cursor."""
    populate(store)
    start_history_import(shop_id, **FAST)
    job = import_jobs(session, shop_id)[-1]
    session.expire_all()
    session.execute(OrderLine.__table__.delete().where(OrderLine.shop_id == shop_id))
    session.execute(Order.__table__.delete().where(Order.shop_id == shop_id))
    j = session.get(Job, job.id)
    j.status, j.cursor, j.done = "running", "99", 100
    session.commit()
    result = start_history_import(shop_id, **FAST)
    session.expire_all()
    n = session.scalar(select(func.count()).select_from(Order).where(Order.shop_id == shop_id))
    session.commit()
    assert result["applied"] == n == len(store.shops[SHOP].orders) - 100


def test_revoked_token_marks_needs_reauth(store, cfg, session, shop_id):
    populate(store)
    store.revoke_shop_tokens(SHOP)
    result = start_history_import(shop_id, **FAST)
    assert result["status"] == "failed"
    session.expire_all()
    assert session.get(Shop, shop_id).status == "needs_reauth"
    job = import_jobs(session, shop_id)[-1]
    assert job.status == "failed" and "access token" in job.error


def test_orders_from_jsonl_assembles_children():
    lines = [
        {"id": "gid://shopify/Order/10", "legacyResourceId": "10", "name": "#1", "createdAt": "2026-01-02T10:00:00Z",
         "processedAt": "2026-01-02T11:00:00+01:00", "updatedAt": "2026-01-03T00:00:00Z", "cancelledAt": None,
         "test": False, "displayFinancialStatus": "PARTIALLY_REFUNDED", "currencyCode": "EUR",
         "subtotalPriceSet": {"shopMoney": {"amount": "22.00", "currencyCode": "GBP"}},
         "totalDiscountsSet": {"shopMoney": {"amount": "2.00"}},
         "totalRefundedSet": {"shopMoney": {"amount": "10.00"}},
         "customer": {"id": "gid://shopify/Customer/7", "legacyResourceId": "7"}},
        {"id": "gid://shopify/LineItem/11", "quantity": 2, "currentQuantity": 1,
         "product": {"id": "gid://shopify/Product/5", "productType": "Kitchen"},
         "variant": {"id": "gid://shopify/ProductVariant/6"}, "originalUnitPriceSet": {"shopMoney": {"amount": "9.50"}},
         "totalDiscountSet": {"shopMoney": {"amount": "1.58"}}, "__parentId": "gid://shopify/Order/10"},
        {"id": "gid://shopify/LineItem/12", "quantity": 1, "currentQuantity": 1, "product": None, "variant": None,
         "originalUnitPriceSet": {"shopMoney": {"amount": "5.00"}},
         "totalDiscountSet": {"shopMoney": {"amount": "0.42"}},
         "__parentId": "gid://shopify/Order/10"},
        {"id": "gid://shopify/Order/20", "legacyResourceId": "20", "createdAt": "2026-01-04T00:00:00Z",
         "processedAt": None, "updatedAt": "2026-01-05T00:00:00Z", "cancelledAt": "2026-01-05T00:00:00Z",
         "test": True, "customer": None},
    ]
    a, b = list(orders_from_jsonl(lines))
    assert (a.id, a.customer_id, a.name, a.currency) == (10, 7, "#1", "GBP")
    assert a.processed_at == dt.datetime(2026, 1, 2, 10, 0) and a.updated_at == dt.datetime(2026, 1, 3)
    assert (a.subtotal, a.total_discounts, a.refunded, a.financial_status) == (22.0, 2.0, 8.71, "partially_refunded")
    l1, l2 = a.lines
    assert (l1.id, l1.product_id, l1.variant_id, l1.product_type, l1.quantity, l1.refunded_quantity, l1.price,
            l1.discount) == (11, 5, 6, "Kitchen", 2, 1, 9.5, 1.58)
    assert (l2.product_id, l2.variant_id, l2.refunded_quantity) == (None, None, 0)
    assert a.counted and not b.counted and b.cancelled and b.test and b.customer_id is None and b.lines == ()
    assert b.processed_at == dt.datetime(2026, 1, 4)


def test_bulk_conversion_matches_rest_webhook_conversion(store, server):
    """The same stand-in orders converted from bulk JSONL and from the REST webhook payload agree (product_type
    aside: REST line items carry none)."""
    from shopify_app.devstore.webhooks import order_payload
    from shopify_app.shopify.convert import order_from_rest
    from shopify_app.shopify.graphql import AdminClient, bulk_orders_query

    sh, _ = populate(store)
    client = AdminClient(SHOP, store.install_app(SHOP, TEST_API_KEY), "2026-10", admin_base=f"{server}/shops/{{shop}}")
    op = client.wait_for_bulk_operation(client.run_bulk_query(bulk_orders_query(), group_objects=True), poll_interval=0.02)
    bulk = {v.id: v for v in orders_from_jsonl(client.download_jsonl(op["url"]))}
    assert set(bulk) == set(sh.orders)

    def key(v):
        return (v.id, v.customer_id, v.name, v.cancelled, v.test, v.currency, v.subtotal, v.total_discounts,
                v.refunded, v.financial_status, v.processed_at.replace(microsecond=0),
                v.updated_at.replace(microsecond=0),
                tuple((ln.id, ln.product_id, ln.variant_id, ln.quantity, ln.refunded_quantity, ln.price, ln.discount)
                      for ln in v.lines))

    for oid, o in sh.orders.items():
        rest = order_from_rest(order_payload(sh, o))
        assert key(bulk[oid]) == key(rest), oid


def test_shop_without_orders(store, cfg, session, shop_id):
    result = start_history_import(shop_id, **FAST)
    assert result["status"] == "done" and result["orders"] == 0
    job = import_jobs(session, shop_id)[-1]
    assert job.status == "done" and job.done == job.total == 0
    session.expire_all()
    assert session.get(Shop, shop_id).orders_watermark is None
    session.commit()


def test_failed_bulk_operation_fails_job_and_rerun_starts_a_new_one(store, cfg, session, shop_id):
    from shopify_app.shopify.graphql import ShopifyBulkOperationError

    sh, _ = populate(store)
    store.bulk_fail_next = "INTERNAL_SERVER_ERROR"
    with pytest.raises(ShopifyBulkOperationError):
        start_history_import(shop_id, **FAST)
    job = import_jobs(session, shop_id)[-1]
    assert job.status == "failed" and "INTERNAL_SERVER_ERROR" in job.error
    failed_op = job.bulk_operation_id

    result = start_history_import(shop_id, **FAST)          # the RQ retry / a manual rerun
    jobs = import_jobs(session, shop_id)
    assert result["status"] == "done" and len(jobs) == 1 and jobs[0].status == "done" and jobs[0].error is None
    assert jobs[0].bulk_operation_id != failed_op
    assert_matches_store(session, shop_id, sh)


def test_operation_in_progress_is_adopted(store, cfg, server, session, shop_id):
    """Crash after bulkOperationRunQuery but before the id was stored: the rerun adopts the running export."""
    from shopify_app.shopify.graphql import AdminClient, bulk_orders_query

    sh, _ = populate(store)
    store.bulk_query_limit = 1        # one at a time (pre-2026-01, or Shopify's limit reached): "already in progress"
    store.bulk_start_delay = 0.5
    client = AdminClient(SHOP, store.install_app(SHOP, TEST_API_KEY), "2026-10", admin_base=f"{server}/shops/{{shop}}")
    running = client.run_bulk_query(bulk_orders_query(), group_objects=True)     # as the import starts it
    result = start_history_import(shop_id, **FAST)
    job = import_jobs(session, shop_id)[-1]
    assert result["status"] == "done" and job.bulk_operation_id == running
    assert_matches_store(session, shop_id, sh)
    assert store.deprecation_log == []        # found through bulkOperations, not currentBulkOperation


def test_running_export_is_adopted_not_started_twice(store, cfg, server, session, shop_id):
    """API 2026-01+: five bulk queries may run at once, so a rerun after a crash is not refused; it must still find
    our export among the running ones (beside another app query) instead of exporting every order a second time."""
    from shopify_app.shopify.graphql import AdminClient, bulk_orders_query

    sh, _ = populate(store)
    store.bulk_start_delay = 0.5
    client = AdminClient(SHOP, store.install_app(SHOP, TEST_API_KEY), "2026-10", admin_base=f"{server}/shops/{{shop}}")
    other = client.run_bulk_query("{ customers { edges { node { id } } } }")
    running = client.run_bulk_query(bulk_orders_query(), group_objects=True)     # as the crashed import started it
    result = start_history_import(shop_id, **FAST)
    job = import_jobs(session, shop_id)[-1]
    assert result["status"] == "done" and job.bulk_operation_id == running != other
    queries = [op for op in store.shops[SHOP].bulk_operations.values() if op.type == "QUERY"]
    assert len(queries) == 2                  # nothing started by the rerun
    assert_matches_store(session, shop_id, sh)
    assert store.deprecation_log == []


def test_import_aggregates_equal_clean_pass_and_rules_exist(store, cfg, server, session, shop_id):
    """The bulk path (no per-order deltas, one rebuild at the end) gives exactly the from-scratch aggregates, and
    the rules are mined before the import reports done."""
    from shopify_app.analytics.incremental import clean_pass
    from shopify_app.models import ItemCountDelta
    from shopify_app.shopify.graphql import AdminClient, bulk_orders_query
    from tests.pipeline.test_rebuild import AGG, as_reference

    populate(store)
    session.expire_all()
    session.get(Shop, shop_id).settings = {"min_support": 0.01, "min_count": 2, "rules_window_months": 0}
    session.commit()
    result = start_history_import(shop_id, **FAST)
    assert result["status"] == "done" and result["rules"]["status"] == "done"
    client = AdminClient(SHOP, store.install_app(SHOP, TEST_API_KEY), "2026-10", admin_base=f"{server}/shops/{{shop}}")
    op = client.wait_for_bulk_operation(client.run_bulk_query(bulk_orders_query(), group_objects=True), poll_interval=0.02)
    ref_stats, ref_counts = as_reference(clean_pass(orders_from_jsonl(client.download_jsonl(op["url"]))))

    session.expire_all()
    stats = {c.customer_id: tuple(getattr(c, k) for k in AGG)
             for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id))}
    assert stats == ref_stats
    assert read_bucket_counts(session, shop_id) == ref_counts
    assert session.scalar(select(func.count()).select_from(ItemCountDelta)) == 0
    n_rules = session.scalar(select(func.count()).select_from(AssociationRule)
                             .where(AssociationRule.shop_id == shop_id, AssociationRule.kind == "pair",
                                    AssociationRule.segment == "*"))
    assert n_rules == result["rules"]["pair"] > 0
    assert "triple" not in result["rules"]          # triples and sequential rules: the follow-up rules job
    job = import_jobs(session, shop_id)[-1]
    assert job.message.startswith(f"Imported {len(store.shops[SHOP].orders):,} orders") and "pair rules" in job.message


def test_ungrouped_bulk_output_is_refused_not_silently_truncated(store, server):
    """Since API 2026-01 bulk output is ungrouped unless asked: read as grouped, line items would land on the wrong
    order or be dropped. The reader refuses such a file with a clear error instead."""
    from shopify_app.shopify.convert_bulk import UngroupedBulkOutput, orders_from_jsonl
    from shopify_app.shopify.graphql import AdminClient, bulk_orders_query

    populate(store)
    client = AdminClient(SHOP, store.install_app(SHOP, TEST_API_KEY), "2026-10", admin_base=f"{server}/shops/{{shop}}")
    ungrouped = client.wait_for_bulk_operation(client.run_bulk_query(bulk_orders_query()), poll_interval=0.02)
    with pytest.raises(UngroupedBulkOutput, match="groupObjects"):
        list(orders_from_jsonl(client.download_jsonl(ungrouped["url"])))
    grouped = client.wait_for_bulk_operation(client.run_bulk_query(bulk_orders_query(), group_objects=True),
                                             poll_interval=0.02)
    versions = list(orders_from_jsonl(client.download_jsonl(grouped["url"])))
    assert len(versions) == len(store.shop(SHOP).orders) and sum(len(v.lines) for v in versions) > len(versions)
