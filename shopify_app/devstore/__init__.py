"""devstore: a local, strict stand-in for Shopify (OAuth, Admin GraphQL 2026-10, bulk operations, webhooks).

Used by the demo, the tests and the benches; the app itself never imports it. Nothing here reaches Shopify.

SHOP ROUTING RULE (the one rule, used by OAuth, GraphQL, staged uploads and bulk result URLs alike):
    base URL of a shop = {DEVSTORE}/shops/{NAME}.myshopify.com
    and every Shopify path is appended to it, e.g.
    http://127.0.0.1:9000/shops/demo.myshopify.com/admin/oauth/authorize
    http://127.0.0.1:9000/shops/demo.myshopify.com/admin/oauth/access_token
    http://127.0.0.1:9000/shops/demo.myshopify.com/admin/api/2026-10/graphql.json
    http://127.0.0.1:9000/shops/demo.myshopify.com/devstore/uploads          (staged upload target)
    http://127.0.0.1:9000/shops/demo.myshopify.com/devstore/bulk/{id}.jsonl  (bulk results)
    So the app sets SHOPIFY_ADMIN_BASE="http://127.0.0.1:9000/shops/{shop}" and formats {shop} in.
    Host headers and X-Devstore-Shop are ignored. Devstore-only controls live under /devstore/ (faults,
    deprecations, webhook attempts, health).

Python API for tests: see DevStore (store.py) -- create_shop, register_app, install_app / issue_token,
mint_session_token, create_customer / create_product / create_order / refund_order / cancel_order /
generate_orders, subscribe_webhook, trigger_compliance, uninstall_app, faults.add(...), throttle.configure(...),
webhooks.configure(...), deprecation_log; and start_devstore_server(store) -> (base_url, stop).
"""
from .schema import find_deprecations, get_schema, validate_document
from .store import App, DevStore


def create_devstore_app(store):
    from .server import create_devstore_app as _create
    return _create(store)


def start_devstore_server(store, host: str = "127.0.0.1", port: int = 0):
    from .server import start_devstore_server as _start
    return _start(store, host, port)


def mint_session_token(shop: str, api_key: str, api_secret: str, **kwargs) -> str:
    from .oauth import mint_session_token as _mint
    return _mint(shop, api_key, api_secret, **kwargs)


__all__ = ["App", "DevStore", "create_devstore_app", "start_devstore_server", "validate_document",
           "find_deprecations", "get_schema", "mint_session_token"]
