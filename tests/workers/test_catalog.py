"""Product catalogue sync against the stand-in, and product / customer webhooks handled by the intake job."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from shopify_app.models import ComplianceRequest, Customer, Product, Shop, WebhookDelivery
from tests.helpers import install_from_store, standin_store
from workers import context
from workers.catalog_jobs import sync_products
from workers.ingest import process_delivery

SHOP = "catalog.myshopify.com"


@pytest.fixture
def store():
    return standin_store(SHOP, currency="GBP")


@pytest.fixture
def shop_id(store, config, server, session):
    cfg = config.replace(shopify_admin_base=f"{server}/shops/{{shop}}")
    context.set_config(cfg)
    yield install_from_store(store, session, cfg, SHOP)
    context.set_config(None)


def test_sync_pages_through_every_product_with_unit_cost(store, shop_id, session):
    made = {}
    for i in range(230):                                   # three pages of 100
        p = store.create_product(SHOP, title=f"Mug {i}", price="9.50", unit_cost=f"{4 + i / 100:.2f}",
                                 product_type="Kitchen" if i % 2 else "Garden")
        made[int(p.id)] = p
    result = sync_products(shop_id)
    assert result["status"] == "done" and result["products"] == 230
    rows = {p.id: p for p in session.scalars(select(Product).where(Product.shop_id == shop_id))}
    assert set(rows) == set(made)
    some = next(iter(made.values()))
    got = rows[int(some.id)]
    assert (got.title, got.product_type) == (some.title, some.product_type)
    assert got.unit_cost == pytest.approx(float(some.variants[0].unit_cost))
    session.commit()
    assert sync_products(shop_id)["products"] == 230                       # a rerun is harmless: no duplicates
    assert len(session.scalars(select(Product.id).where(Product.shop_id == shop_id)).all()) == 230


def test_revoked_token_marks_the_shop_and_stops(store, shop_id, session):
    store.revoke_shop_tokens(SHOP)
    assert sync_products(shop_id)["status"] == "needs_reauth"
    session.expire_all()
    assert session.get(Shop, shop_id).status == "needs_reauth"


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
