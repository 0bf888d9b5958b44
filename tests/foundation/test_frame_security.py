"""Who may frame the app (CSP frame-ancestors) and which App Bridge script the pages load."""
from __future__ import annotations

from shopify_app import create_app

SHOP = "frame-test.myshopify.com"


def _bounce(config, **changes):
    app = create_app(config.replace(**changes))
    return app.test_client().get(f"/auth/session-token?shop={SHOP}")


def test_production_shape_allows_the_shop_admin_and_admin_shopify_com_only(config):
    r = _bounce(config)
    assert r.headers["Content-Security-Policy"] == f"frame-ancestors https://{SHOP} https://admin.shopify.com;"
    assert b'src="https://cdn.shopify.com/shopifycloud/app-bridge.js"' in r.data


def test_local_stand_in_admin_may_frame_the_demo(config):
    r = _bounce(config, shopify_admin_base="http://127.0.0.1:9000/shops/{shop}",
                app_bridge_src="http://127.0.0.1:9000/devstore/app-bridge.js")
    assert r.headers["Content-Security-Policy"] == (
        f"frame-ancestors https://{SHOP} https://admin.shopify.com http://127.0.0.1:9000;")
    assert b'src="http://127.0.0.1:9000/devstore/app-bridge.js"' in r.data
