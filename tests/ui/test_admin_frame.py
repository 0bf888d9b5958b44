"""The app inside the admin stand-in's frame (shopify_app/devstore/admin_frame.py), the way a merchant meets it.

The admin page frames the app with a fresh session token; in-app links carry no token, so a click goes through the
session-token bounce, where App Bridge (here the stand-in's script, loaded through APP_BRIDGE_SRC) asks the admin for
a fresh token and reloads the target. These tests check that whole round trip in a real browser: the page behind the
link is rendered with data, never the bounce page, and the token came from the admin over postMessage.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.conftest import TEST_API_KEY

from .helpers import segment_counts


def _admin_url(env, path: str = "") -> str:
    return f"{env.store_url}/shops/{env.shop}/admin/apps/{TEST_API_KEY}/{path}"


def _open_admin(env, page, path: str = ""):
    resp = page.goto(_admin_url(env, path))
    assert resp.status == 200
    page.wait_for_function("() => document.querySelector('#app') && document.querySelector('#app').contentWindow")
    frame = page.frame_locator("#app")
    frame.locator("h1").first.wait_for()
    return frame


def test_admin_frames_the_home_page_with_a_token(ui_env, page):
    frame = _open_admin(ui_env, page)
    app = [f for f in page.frames if f.url.startswith(ui_env.base_url)]
    assert len(app) == 1, [f.url for f in page.frames]
    q = parse_qs(urlsplit(app[0].url).query)
    assert q["shop"] == [ui_env.shop] and q["embedded"] == ["1"] and q["id_token"][0].count(".") == 2
    # The home page's segment table is the database's, not a bounce page.
    counts = segment_counts(ui_env)
    rows = frame.locator("[data-testid=segment-row]")
    assert rows.count() == len([n for n in counts.values() if n > 0])
    assert not page.log.page_errors, page.log.page_errors


def test_in_app_link_goes_through_the_bounce_and_back_with_a_fresh_token(ui_env, page):
    frame = _open_admin(ui_env, page)
    seen = []
    page.on("framenavigated", lambda f: f.parent_frame is not None and seen.append(f.url))
    frame.locator("[data-testid=nav] a[href^='/bundles']").first.click()
    frame.locator("h1", has_text="Bundle suggestions").first.wait_for()
    app = [f for f in page.frames if f.url.startswith(ui_env.base_url)]
    final = urlsplit(app[0].url)
    assert final.path == "/bundles", app[0].url
    # It went through the bounce (no token on the link), and the reload carried a fresh token from the admin.
    assert any(urlsplit(u).path == "/auth/session-token" for u in seen), seen
    assert parse_qs(final.query).get("id_token"), app[0].url
    assert "missing session token" not in frame.locator("body").inner_text()
    assert not page.log.page_errors, page.log.page_errors
