"""In the browser: without a valid session token for THIS shop a page shows no data (bounce page), and another
shop's token shows that shop's data only."""
from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.ui.helpers import segment_counts, segment_members, slugify


def _main_shop_markers(env) -> tuple[str, list[str]]:
    """The largest segment's slug and a few of its member ids: strings that only the main shop's pages contain."""
    counts = segment_counts(env)
    name = max(counts, key=lambda k: (counts[k], k))
    return slugify(name), [str(i) for i in sorted(segment_members(env, name))[:5]]


def _assert_bounced(page, path: str):
    """The page ends on Shopify's session-token bounce route (where App Bridge would reload `shopify-reload`
    with a fresh token), pointing back at `path`, with no token in the URL."""
    page.wait_for_url(re.compile(r"/auth/session-token\?"))
    page.wait_for_load_state()
    query = parse_qs(urlsplit(page.url).query)
    assert "id_token" not in query
    assert urlsplit(query["shopify-reload"][0]).path == urlsplit(path).path
    assert page.get_by_test_id("bounce").count() == 1


def _assert_no_shop_data(page, member_ids):
    html = page.content()
    assert page.get_by_test_id("segment-row").count() == 0
    assert page.get_by_test_id("member-row").count() == 0
    assert page.get_by_test_id("total-customers").count() == 0
    for cid in member_ids:
        assert cid not in html


@pytest.mark.parametrize("path", ["/", "/segments/{slug}", "/bundles", "/predictions", "/settings"])
def test_no_token_gets_the_bounce_page(ui_env, page, path):
    slug, ids = _main_shop_markers(ui_env)
    path = path.format(slug=slug)
    page.goto(ui_env.url(path, token=None))
    _assert_bounced(page, path)
    _assert_no_shop_data(page, ids)


def test_expired_token_gets_no_data(ui_env, page):
    slug, ids = _main_shop_markers(ui_env)
    expired = ui_env.token(now=time.time() - 3600)
    for path in ("/", f"/segments/{slug}"):
        resp = page.goto(ui_env.url(path, token=expired))
        assert resp.status == 401 and resp.headers.get("x-shopify-retry-invalid-session-request") == "1"
        _assert_bounced(page, path)
        _assert_no_shop_data(page, ids)


def test_forged_token_gets_no_data(ui_env, page):
    from shopify_app.devstore.oauth import mint_session_token
    from tests.conftest import TEST_API_KEY

    slug, ids = _main_shop_markers(ui_env)
    forged = mint_session_token(ui_env.shop, TEST_API_KEY, "not-the-app-secret-0123456789abcdef")
    resp = page.goto(ui_env.url(f"/segments/{slug}", token=forged))
    assert resp.status == 401
    _assert_bounced(page, f"/segments/{slug}")
    _assert_no_shop_data(page, ids)


def test_other_shops_token_sees_only_its_own_shop(ui_env, page):
    slug, ids = _main_shop_markers(ui_env)
    other = ui_env.other_shop
    # The other shop's token, pretending (shop=) to be the main shop: refused.
    resp = page.goto(ui_env.url(f"/segments/{slug}", shop=ui_env.shop, token=ui_env.token(other)))
    assert resp.status == 401
    _assert_bounced(page, f"/segments/{slug}")
    _assert_no_shop_data(page, ids)
    # The other shop's token on its own: its own numbers, never the main shop's members.
    page.goto(ui_env.url("/", shop=other))
    expected = segment_counts(ui_env, ui_env.other_shop_id)
    rows = page.get_by_test_id("segment-row")
    assert {rows.nth(i).get_attribute("data-segment") for i in range(rows.count())} == {
        slugify(k) for k in expected}
    assert ui_env.store.shops[ui_env.shop].name not in page.content()
    page.goto(ui_env.url(f"/segments/{slug}", shop=other))
    assert page.get_by_test_id("member-row").count() == len(segment_members(ui_env, slug_name(ui_env, slug),
                                                                             ui_env.other_shop_id))
    html = page.content()
    assert not any(f'data-customer-id="{cid}"' in html for cid in ids)


def slug_name(env, slug: str) -> str:
    counts = segment_counts(env)
    return next(k for k in counts if slugify(k) == slug)


def test_internal_link_without_app_bridge_bounces(ui_env, page):
    """Links never carry the token; without App Bridge a click lands on the bounce page (no data), which is where
    App Bridge would add a fresh token and reload."""
    slug, ids = _main_shop_markers(ui_env)
    page.goto(ui_env.url("/"))
    with page.expect_navigation():
        page.locator(f"[data-testid=segment-row][data-segment={slug}] a").first.click()
    _assert_bounced(page, f"/segments/{slug}")
    _assert_no_shop_data(page, ids)
