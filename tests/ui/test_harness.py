"""The harness itself: the shop was installed through the real embedded flow and imported by real workers."""
from __future__ import annotations

from sqlalchemy import func, select

from shopify_app.models import CustomerStats, Order, Shop


def test_shop_installed_and_imported(ui_env):
    with ui_env.db() as s:
        shop = s.get(Shop, ui_env.shop_id)
        assert shop.status == "active" and shop.access_token_enc
        orders = s.scalar(select(func.count()).select_from(Order).where(Order.shop_id == shop.id))
        customers = s.scalar(select(func.count()).select_from(CustomerStats).where(CustomerStats.shop_id == shop.id))
        segments = set(s.scalars(select(CustomerStats.segment).where(CustomerStats.shop_id == shop.id).distinct()))
    print("set-up seconds:", {k: round(v, 1) for k, v in ui_env.timings.items()})
    print(f"import {ui_env.import_seconds:.1f}s orders={orders} customers={customers} segments={sorted(segments)}")
    assert orders == len(ui_env.store.shops[ui_env.shop].orders)
    assert customers > 0 and None not in segments and len(segments) >= 3


def test_page_loads_without_cdn(ui_env, page):
    page.goto(ui_env.url("/"))
    assert page.title()
    assert page.locator("h1").count() == 1
