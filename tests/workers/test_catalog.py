"""Product catalogue sync (bulk query) against the stand-in, and product / customer webhooks handled by the
intake job."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from shopify_app.models import ComplianceRequest, Customer, Job, Product, Shop, WebhookDelivery
from shopify_app.shopify.convert_products import products_from_jsonl
from shopify_app.shopify.graphql import load_document
from tests.helpers import config_env, install_from_store, standin_store, wait_for
from workers import context
from workers.catalog_jobs import _product_upsert, apply_products, sync_products
from workers.ingest import process_delivery

SHOP = "catalog.myshopify.com"


@pytest.fixture
def store():
    return standin_store(SHOP, currency="GBP")


@pytest.fixture
def cfg(config, server):
    return config.replace(shopify_admin_base=f"{server}/shops/{{shop}}")


@pytest.fixture
def shop_id(store, cfg, session):
    context.set_config(cfg)
    yield install_from_store(store, session, cfg, SHOP)
    context.set_config(None)


def test_bulk_sync_loads_every_product_with_its_first_variants_unit_cost(store, shop_id, session):
    made = {}
    for i in range(230):
        p = store.create_product(SHOP, title=f"Mug {i}", price="9.50", unit_cost=f"{4 + i / 100:.2f}",
                                 product_type="Kitchen" if i % 2 else "Garden", vendor=f"Maker {i % 7}")
        made[int(p.id)] = p
    multi = store.create_product(SHOP, title="Tea set", price="30", variants=[
        {"title": "Blue", "price": "30", "unit_cost": "11.25"}, {"title": "Red", "price": "31", "unit_cost": "12.75"}])
    no_cost = store.create_product(SHOP, title="Gift card", price="10")
    result = sync_products(shop_id)
    assert result["status"] == "done" and result["products"] == 232 and result["changed"] == 232
    rows = {p.id: p for p in session.scalars(select(Product).where(Product.shop_id == shop_id))}
    assert set(rows) == set(made) | {int(multi.id), int(no_cost.id)}
    for pid, p in made.items():
        got = rows[pid]
        assert (got.title, got.product_type, got.vendor) == (p.title, p.product_type, p.vendor)
        assert got.unit_cost == pytest.approx(float(p.variants[0].unit_cost))
        assert got.shopify_updated_at is not None
    assert rows[int(multi.id)].unit_cost == pytest.approx(11.25)          # position 1, as variants(first: 1)
    assert rows[int(no_cost.id)].unit_cost is None
    job = _job_state(session, shop_id)
    assert (job["status"], job["done"], job["total"]) == ("done", 232, 232) and job["bulk_operation_id"]

    again = sync_products(shop_id)                                          # a rerun is harmless: no duplicates
    assert (again["status"], again["products"], again["changed"]) == ("done", 232, 0)
    assert len(session.scalars(select(Product.id).where(Product.shop_id == shop_id)).all()) == 232
    assert len(session.scalars(select(Job.id).where(Job.shop_id == shop_id, Job.kind == "catalog")).all()) == 2


def test_an_older_bulk_line_never_overwrites_a_newer_webhook_version(store, shop_id, session):
    kept = store.create_product(SHOP, title="Mug", price="9.50", unit_cost="4.00", product_type="Kitchen")
    stale = store.create_product(SHOP, title="Jug", price="12", unit_cost="5.50", product_type="Kitchen")
    newer = {"id": int(kept.id), "title": "Mug (renamed after the export)", "product_type": "Gifts",
             "vendor": "Acme", "updated_at": "2099-01-01T00:00:00Z"}
    older = {"id": int(stale.id), "title": "Jug (old)", "product_type": "Old", "vendor": "Acme",
             "updated_at": "2001-01-01T00:00:00Z"}
    for payload in (newer, older):
        assert process_delivery(_deliver(session, shop_id, "products/update", payload))["status"] == "processed"
    result = sync_products(shop_id)
    assert (result["products"], result["changed"]) == (2, 1)
    session.expire_all()
    got = session.get(Product, (shop_id, int(kept.id)))
    assert (got.title, got.product_type, got.shopify_updated_at) == (newer["title"], "Gifts", dt.datetime(2099, 1, 1))
    assert got.unit_cost is None                      # REST carries no cost; the older bulk line was skipped whole
    refreshed = session.get(Product, (shop_id, int(stale.id)))
    assert (refreshed.title, refreshed.product_type, refreshed.unit_cost) == ("Jug", "Kitchen", pytest.approx(5.5))


def test_the_guarded_upsert_keeps_a_newer_row_written_after_the_batch_was_read(shop_id, session):
    """apply_products' statement repeats the last-writer-wins rule, for a webhook that lands between its read and
    its write (simulated: the stored row is made newer after the read decided to write)."""
    old, new = dt.datetime(2026, 1, 1), dt.datetime(2026, 6, 1)
    with context.transaction() as s:
        assert apply_products(s, shop_id, [{"id": 5, "title": "A", "product_type": "", "vendor": "", "unit_cost": 1.0,
                                            "shopify_updated_at": new}]) == 1
    with context.transaction() as s:
        stmt = _product_upsert(s.connection().dialect.name)
        s.execute(stmt, [{"shop_id": shop_id, "id": 5, "title": "B", "product_type": "", "vendor": "",
                          "unit_cost": 2.0, "shopify_updated_at": old}])
    session.expire_all()
    got = session.get(Product, (shop_id, 5))
    assert (got.title, got.unit_cost, got.shopify_updated_at) == ("A", 1.0, new)


def test_revoked_token_marks_the_shop_and_fails_the_job(store, shop_id, session):
    store.revoke_shop_tokens(SHOP)
    assert sync_products(shop_id)["status"] == "needs_reauth"
    session.expire_all()
    assert session.get(Shop, shop_id).status == "needs_reauth"
    job = _job_state(session, shop_id)
    assert job["status"] == "failed" and "access token" in job["error"]
    assert sync_products(shop_id)["status"] == "skipped"


def test_another_bulk_query_in_progress_reschedules_then_a_real_worker_finishes(store, shop_id, session, cfg):
    from rq.job import Job as RQJob
    from rq.registry import ScheduledJobRegistry

    from shopify_app.queues import DEFAULT, get_queue
    from shopify_app.shopify.graphql import bulk_orders_query

    for i in range(40):
        store.create_product(SHOP, title=f"Plate {i}", price="3", unit_cost=f"{1 + i / 10:.2f}")
    store.bulk_query_limit = 1     # one bulk query at a time: the stand-in answers OPERATION_IN_PROGRESS
    store.bulk_start_delay = 2.0                      # the unrelated export stays CREATED for a while
    other = context.admin_client(shop_id).run_bulk_query(bulk_orders_query())
    first = sync_products(shop_id, retry_delays=(1, 1), poll_interval=0.2)
    assert first["status"] == "rescheduled" and first["busy"] == "OPERATION_IN_PROGRESS" and first["waits"] == 1
    job = _job_state(session, shop_id)
    assert job["status"] == "queued" and job["details"]["waits"] == 1
    assert "Waiting for another Shopify export" in job["message"] and job["bulk_operation_id"] is None
    assert f"sync-products-{shop_id}-wait-1" in ScheduledJobRegistry(queue=get_queue(cfg, DEFAULT)).get_job_ids()

    queue = get_queue(cfg, DEFAULT)
    queue.empty()          # the install's own jobs (history import, first sync): this test is about the retry
    worker = _worker(cfg)
    try:
        def finished():
            state = _job_state(session, shop_id)
            return state if state["status"] in ("done", "failed") else None
        done = wait_for(finished, timeout=60, interval=0.2, message="the rescheduled product sync")
        last = RQJob.fetch(f"sync-products-{shop_id}-wait-{done['details']['waits']}", connection=queue.connection)
        wait_for(lambda: last.get_status(refresh=True) == "finished", timeout=10, message="the RQ job's end")
    finally:
        _stop(worker)
    assert done["id"] == job["id"] and done["status"] == "done" and done["done"] == 40
    assert done["details"]["waits"] >= 1 and done["bulk_operation_id"] != other
    assert last.kwargs["for_job"] == job["id"] and last.return_value()["status"] == "done"
    assert len(session.scalars(select(Product.id).where(Product.shop_id == shop_id)).all()) == 40


def test_a_scheduled_retry_does_nothing_when_its_job_was_finished_meanwhile(store, shop_id, session):
    store.create_product(SHOP, title="Saucer", price="2", unit_cost="0.50")
    done = sync_products(shop_id, poll_interval=0.2)
    assert done["status"] == "done"
    late = sync_products(shop_id, poll_interval=0.2, for_job=done["job_id"])
    assert late == {"shop_id": shop_id, "job_id": done["job_id"], "status": "already_done"}
    assert len(session.scalars(select(Job.id).where(Job.kind == "catalog")).all()) == 1


def test_waiting_gives_up_after_max_waits_with_a_readable_message(store, shop_id, session):
    store.bulk_query_limit = 1     # one bulk query at a time: the stand-in answers OPERATION_IN_PROGRESS
    store.bulk_start_delay = 5.0
    context.admin_client(shop_id).run_bulk_query(bulk_orders_query_text())
    assert sync_products(shop_id, retry_delays=(60,), max_waits=1)["status"] == "rescheduled"
    assert sync_products(shop_id, retry_delays=(60,), max_waits=1)["status"] == "failed"
    job = _job_state(session, shop_id)
    assert job["status"] == "failed" and "OPERATION_IN_PROGRESS" in job["error"]


def test_a_crash_after_starting_the_export_adopts_or_resumes_it(store, shop_id, session):
    for i in range(12):
        store.create_product(SHOP, title=f"Bowl {i}", price="3", unit_cost="1.50")
    store.bulk_query_limit = 1     # one bulk query at a time: the stand-in answers OPERATION_IN_PROGRESS
    store.bulk_start_delay = 1.0
    # Crash before the id was stored: our own query is in progress -> adopted, not waited for.
    started = context.admin_client(shop_id).run_bulk_query(load_document("bulk_products_query"))
    result = sync_products(shop_id, poll_interval=0.2)
    assert result["status"] == "done" and result["products"] == 12
    job = _job_state(session, shop_id)
    assert job["id"] == result["job_id"] and job["bulk_operation_id"] == started
    # Crash after it was stored (the Job left 'running' / 'failed'): the retry resumes the same operation.
    with context.transaction() as s:
        s.get(Job, job["id"]).status = "failed"
    again = sync_products(shop_id, poll_interval=0.2)
    assert again["job_id"] == job["id"] and again["products"] == 12 and again["changed"] == 0
    assert _job_state(session, shop_id)["bulk_operation_id"] == started
    assert store.deprecation_log == []                # no currentBulkOperation (deprecated) to find the running one


def test_a_crash_after_starting_the_export_adopts_it_at_the_2026_limit_too(store, shop_id, session):
    """API 2026-01+: five bulk queries run at once, so a rerun is not refused; it must still find its own export
    beside another running query instead of exporting the catalogue twice."""
    for i in range(7):
        store.create_product(SHOP, title=f"Jug {i}", price="5", unit_cost="2.00")
    store.bulk_start_delay = 1.0
    client = context.admin_client(shop_id)
    other = client.run_bulk_query("{ customers { edges { node { id } } } }")
    started = client.run_bulk_query(load_document("bulk_products_query"))
    result = sync_products(shop_id, poll_interval=0.2)
    assert result["status"] == "done" and result["products"] == 7
    assert _job_state(session, shop_id)["bulk_operation_id"] == started != other
    assert len([op for op in store.shops[SHOP].bulk_operations.values() if op.type == "QUERY"]) == 2
    assert store.deprecation_log == []


def test_products_from_jsonl_does_not_need_grouped_output():
    """API 2026-01+: groupObjects defaults to false, a variant line may come before its product's line."""
    lines = [
        {"id": "gid://shopify/ProductVariant/12", "position": 2, "inventoryItem": {"unitCost": {"amount": "9.00"}},
         "__parentId": "gid://shopify/Product/1"},
        {"id": "gid://shopify/ProductVariant/20", "position": 1, "inventoryItem": {"unitCost": None},
         "__parentId": "gid://shopify/Product/2"},
        {"id": "gid://shopify/Product/2", "legacyResourceId": "2", "title": "B", "productType": "", "vendor": "V",
         "updatedAt": "2026-01-02T00:00:00Z"},
        {"id": "gid://shopify/Product/1", "legacyResourceId": "1", "title": "A", "productType": "T", "vendor": "V",
         "updatedAt": "2026-01-01T00:00:00Z"},
        {"id": "gid://shopify/ProductVariant/11", "position": 1, "inventoryItem": {"unitCost": {"amount": "4.50"}},
         "__parentId": "gid://shopify/Product/1"},
        {"id": "gid://shopify/Product/3", "title": "no legacy id but a gid", "updatedAt": None},
        {"title": "no id at all"},
    ]
    rows = {r["id"]: r for r in products_from_jsonl(lines)}
    assert set(rows) == {1, 2, 3}
    assert rows[1]["unit_cost"] == 4.5 and rows[1]["product_type"] == "T"
    assert rows[1]["shopify_updated_at"] == dt.datetime(2026, 1, 1)
    assert rows[2]["unit_cost"] is None and rows[3]["unit_cost"] is None


def _job_state(session, shop_id: int) -> dict:
    """The shop's latest catalog Job as a plain dict; the read transaction is ended at once (on SQLite every
    transaction takes the write lock: a test session left open would block the job under test)."""
    session.expire_all()
    job = session.scalars(select(Job).where(Job.shop_id == shop_id, Job.kind == "catalog")
                          .order_by(Job.id.desc()).limit(1)).one()
    state = {c: getattr(job, c) for c in ("id", "status", "done", "total", "message", "error", "bulk_operation_id",
                                          "details")}
    session.rollback()
    return state


def bulk_orders_query_text() -> str:
    from shopify_app.shopify.graphql import bulk_orders_query

    return bulk_orders_query()


def _worker(cfg):
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "shopify_app", "worker", "-q", "default"],
                            env=config_env(cfg), cwd=str(Path(__file__).resolve().parents[2]))


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _deliver(session, shop_id, topic, payload, n=[0]):
    n[0] += 1
    d = WebhookDelivery(shop_id=shop_id, shop_domain=SHOP, topic=topic, webhook_id=f"cat-{n[0]}", status="received",
                        body=json.dumps(payload), triggered_at=dt.datetime(2026, 11, 20))
    session.add(d)
    session.commit()
    return d.id


def test_product_and_customer_webhooks_upsert_last_writer_wins(shop_id, session):
    newer = {"id": 77, "title": "Mug (new)", "product_type": "Kitchen", "vendor": "Acme",
             "updated_at": "2026-11-20T10:00:00Z"}
    older = dict(newer, title="Mug (old)", updated_at="2026-11-19T10:00:00Z")
    assert process_delivery(_deliver(session, shop_id, "products/update", newer))["status"] == "processed"
    assert process_delivery(_deliver(session, shop_id, "products/update", older))["status"] == "processed"
    session.expire_all()
    assert session.get(Product, (shop_id, 77)).title == "Mug (new)"

    cust = {"id": 555, "tags": "vip, wholesale", "first_name": "Ann", "email": "ann@example.com",
            "updated_at": "2026-11-20T10:00:00Z", "created_at": "2025-01-01T00:00:00Z"}
    assert process_delivery(_deliver(session, shop_id, "customers/update", cust))["status"] == "processed"
    session.expire_all()
    c = session.get(Customer, (shop_id, 555))
    assert c.tags == ["vip", "wholesale"] and c.display_name is None      # nothing personal is kept
    assert process_delivery(_deliver(session, shop_id, "customers/delete", {"id": 555}))["status"] == "processed"
    session.expire_all()
    assert session.get(Customer, (shop_id, 555)).deleted_at == dt.datetime(2026, 11, 20)
    bad = process_delivery(_deliver(session, shop_id, "products/update", {"title": "no id"}))
    assert bad["status"] == "invalid"


def test_late_customer_update_after_redact_is_ignored(shop_id, session):
    session.add(ComplianceRequest(shop_id=shop_id, shop_domain=SHOP, topic="customers/redact", customer_id=901))
    session.commit()
    res = process_delivery(_deliver(session, shop_id, "customers/update", {"id": 901, "tags": "x",
                                                                           "updated_at": "2026-11-21T00:00:00Z"}))
    assert res["status"] == "ignored"
    session.expire_all()
    assert session.get(Customer, (shop_id, 901)) is None


def test_a_failed_export_fails_the_job_and_the_retry_starts_a_new_one(store, shop_id, session):
    from shopify_app.shopify.graphql import ShopifyBulkOperationError

    for i in range(30):
        store.create_product(SHOP, title=f"Cup {i}", price="2", unit_cost="0.80")
    store.bulk_fail_next = "INTERNAL_SERVER_ERROR"          # the export stops half way and ends FAILED
    with pytest.raises(ShopifyBulkOperationError):
        sync_products(shop_id, poll_interval=0.2)
    failed = _job_state(session, shop_id)
    assert failed["status"] == "failed" and "FAILED" in failed["error"]
    assert not session.scalars(select(Product.id)).all()      # a partial file is never applied
    session.rollback()
    retry = sync_products(shop_id, poll_interval=0.2)          # what RQ's retry does
    assert retry["status"] == "done" and retry["job_id"] == failed["id"] and retry["products"] == 30
    assert _job_state(session, shop_id)["bulk_operation_id"] != failed["bulk_operation_id"]
