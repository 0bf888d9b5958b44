"""Small helpers for tests (importable: `from tests.helpers import ...`): plain functions, no fixtures.

- `sample` / `post_webhook`: Shopify's sample payloads, signed and posted like Shopify does;
- `add_shop`: a Shop row (installed, fake encrypted tokens unless given);
- `standin_store` / `install_from_store`: a stand-in shop with the test app, and the app installed into it by a
  real access token (as after token exchange), for job tests that talk to the stand-in over HTTP;
- `analytics_snapshot` / `reference_snapshot`: the app's stored aggregates of a shop and the from-scratch
  reference (incremental.clean_pass) of a stand-in shop's current orders, in the same comparable shape.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

from sqlalchemy import select

from tests.conftest import TEST_API_KEY, TEST_API_SECRET, config_env, wait_for  # noqa: F401

FIXTURES = Path(__file__).resolve().parents[1] / "shopify_app" / "devstore" / "fixtures"


# --------------------------------------------------------------------------------------------- stand-in shops
def standin_store(shop: str, *, currency: str = "USD", app_url: str = "https://app.test", **store_kw):
    """A DevStore with the test app and one shop. Webhooks are delivered synchronously; no subscription exists until
    the app registers one, so changes made in the store are 'lost webhooks' as far as the app is concerned."""
    from shopify_app.devstore import App, DevStore
    from shopify_app.devstore.webhooks import DeliveryMode

    store_kw.setdefault("webhook_mode", DeliveryMode(sync=True))
    store = DevStore(apps=[App(TEST_API_KEY, TEST_API_SECRET, app_url)], **store_kw)
    store.create_shop(shop, currency=currency)
    return store


def install_from_store(store, session, cfg, shop: str) -> int:
    """Install the app into `shop` with an access token the stand-in issued (committed); the Shop row's id."""
    from shopify_app.shopify.install import install_with_access_token
    from shopify_app.shopify.oauth import AccessToken

    token = store.install_app(shop, TEST_API_KEY)
    row = install_with_access_token(session, cfg, shop, AccessToken(access_token=token,
                                                                    scope=store.apps[TEST_API_KEY].scopes))
    shop_id = row.id
    session.commit()
    return shop_id


# --------------------------------------------------------------------------------------------- webhooks
def sample(topic: str, shop: str = "demo-store.myshopify.com", **changes) -> bytes:
    """Shopify's sample payload of `topic` (devstore fixtures) for `shop`, with top-level `changes`."""
    text = (FIXTURES / f"{topic.replace('/', '__')}.json").read_text()
    payload = json.loads(text.replace("{shop}.myshopify.com", shop))
    payload.update(changes)
    return json.dumps(payload).encode()


def webhook_path(topic: str) -> str:
    """The shopify.app.toml URI a topic is delivered to."""
    if topic in ("customers/redact", "customers/data_request", "shop/redact"):
        return "/webhooks/compliance"
    kind = topic.split("/")[0]
    return "/webhooks/" + {"refunds": "orders", "shop": "compliance", "bulk_operations": "bulk"}.get(kind, kind)


def webhook_headers(topic: str, body: bytes, *, shop: str, webhook_id: str | None = None,
                    event_id: str | None = None, secret: str = TEST_API_SECRET) -> dict:
    from shopify_app.shopify.webhooks import compute_webhook_hmac

    return {
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": compute_webhook_hmac(body, secret),
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-API-Version": "2026-10",
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": "2026-11-23T12:00:00.123456789Z",
        "Content-Type": "application/json",
    }


def post_webhook(client, topic: str, body: bytes | dict, *, shop: str, path: str | None = None,
                 webhook_id: str | None = None, event_id: str | None = None, secret: str = TEST_API_SECRET,
                 drop: tuple[str, ...] = (), extra: dict | None = None):
    """POST a signed delivery through a Flask test client (`drop` removes headers, `extra` adds/overrides)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    headers = webhook_headers(topic, body, shop=shop, webhook_id=webhook_id, event_id=event_id, secret=secret)
    headers.update(extra or {})
    for name in drop:
        headers.pop(name, None)
    return client.post(path or webhook_path(topic), data=body, headers=headers)


# --------------------------------------------------------------------------------------------- shops
def add_shop(db_url: str, domain: str, **fields) -> int:
    """Insert an installed Shop row and return its id (fake encrypted tokens unless given)."""
    from shopify_app.db import session_scope
    from shopify_app.models import Shop

    values = dict(status="active", access_token_enc="enc-access", refresh_token_enc="enc-refresh",
                  token_expires_at=dt.datetime(2030, 1, 1), installed_at=dt.datetime(2026, 1, 1),
                  scopes="read_orders", currency="USD")
    values.update(fields)
    with session_scope(db_url) as s:
        row = Shop(domain=domain, **values)
        s.add(row)
        s.flush()
        return row.id


# --------------------------------------------------------------------------------------------- analytics state
def analytics_snapshot(session, shop_id: int) -> dict:
    """The shop's stored aggregates in `incremental.clean_pass`'s shape (zero values left out)."""
    from shopify_app.models import CustomerStats

    session.expire_all()
    customers = {}
    for c in session.scalars(select(CustomerStats).where(CustomerStats.shop_id == shop_id)):
        row = {k: getattr(c, k) for k in ("gross_revenue", "refunded", "net_revenue", "discount_total",
                                           "pre_discount_total", "discounted_orders", "refunded_orders",
                                           "items_count") if getattr(c, k)}
        row = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
        row["product_type_counts"] = {t: q for t, q in sorted((c.product_type_counts or {}).items()) if q}
        row["first_order_at"] = c.first_order_at.isoformat() if c.first_order_at else None
        row["last_order_at"] = c.last_order_at.isoformat() if c.last_order_at else None
        row["orders_count"] = c.orders_count
        customers[c.customer_id] = row

    # Counts = rebuild snapshots (CountSnapshot) + live deltas, per month bucket.
    from workers.rebuild_jobs import read_bucket_counts

    items, pairs, baskets = {}, {}, {}
    for bucket, (n, its, prs) in read_bucket_counts(session, shop_id).items():
        if n:
            baskets[bucket] = n
        items.update({(bucket, i): c for i, c in its.items() if c})
        pairs.update({(bucket, a, b): c for (a, b), c in prs.items() if c})
    snap = {"customers": customers, "items": items, "pairs": pairs, "baskets": baskets}
    session.commit()
    return snap


def store_versions(store, shop: str, *, product_types: bool = True) -> list:
    """The stand-in shop's current orders as OrderVersions, converted from their REST webhook payloads
    (convert.order_from_rest, independent of the GraphQL conversions under test); REST line items carry no
    product type, so it is filled in from the stand-in's products when `product_types`."""
    from dataclasses import replace

    from shopify_app.devstore.webhooks import order_payload
    from shopify_app.shopify.convert import order_from_rest

    sh = store.shops[shop]
    out = []
    for o in sh.orders.values():
        v = order_from_rest(order_payload(sh, o))
        if product_types:
            v = replace(v, lines=tuple(
                replace(ln, product_type=(sh.products[ln.product_id].product_type or None)
                        if ln.product_id in sh.products else None) for ln in v.lines))
        out.append(v)
    return out


def reference_snapshot(store, shop: str, *, product_types: bool = True) -> dict:
    """incremental.clean_pass over the stand-in shop's current orders."""
    from shopify_app.analytics.incremental import clean_pass

    return clean_pass(store_versions(store, shop, product_types=product_types))
