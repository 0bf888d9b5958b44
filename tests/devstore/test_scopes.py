"""Access scopes as Shopify enforces them: missing scope -> ACCESS_DENIED; old orders need read_all_orders."""
import datetime as dt

from devstore_testlib import API_KEY, SHOP, Admin


def test_access_denied_without_scope(store, server):
    tok = store.install_app(SHOP, API_KEY, scope="read_products")
    admin = Admin(server, SHOP, tok)
    body = admin("{ orders(first: 1) { nodes { id } } }")
    err = body["errors"][0]
    assert err["extensions"]["code"] == "ACCESS_DENIED"
    assert err["message"] == "Access denied for orders field. Required access: `read_orders` access scope."
    assert "data" in admin("{ products(first: 1) { nodes { id } } }")


def test_orders_older_than_60_days_need_read_all_orders(store, server):
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=90)
    store.create_order(SHOP, lines=[{"title": "old", "price": "1.00"}], created_at=old, processed_at=old)
    recent = store.create_order(SHOP, lines=[{"title": "new", "price": "1.00"}])
    q = "{ orders(first: 10) { nodes { id } } ordersCount { count } }"
    limited = Admin(server, SHOP, store.install_app(SHOP, API_KEY, scope="read_orders"))(q)
    assert limited["data"]["orders"]["nodes"] == [{"id": f"gid://shopify/Order/{recent.id}"}]
    assert limited["data"]["ordersCount"]["count"] == 1
    full = Admin(server, SHOP, store.install_app(SHOP, API_KEY, scope="read_orders,read_all_orders"))(q)
    assert len(full["data"]["orders"]["nodes"]) == 2
