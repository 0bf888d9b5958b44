"""The admin stand-in that frames the app for the demo, and its App Bridge stand-in script."""
from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from devstore_testlib import API_KEY, API_SECRET, APP_URL, SHOP

from shopify_app.devstore.admin_frame import host_param


def _iframe_src(page: str) -> str:
    return html.unescape(re.search(r'<iframe id="app"[^>]* src="([^"]+)"', page).group(1))


def test_admin_page_frames_the_app_like_shopify_with_a_fresh_session_token(server):
    r = requests.get(f"{server}/shops/{SHOP}/admin/apps/{API_KEY}/bundles", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    src = urlsplit(_iframe_src(r.text))
    assert f"{src.scheme}://{src.netloc}{src.path}" == f"{APP_URL}/bundles"
    q = {k: v[0] for k, v in parse_qs(src.query).items()}
    assert q["shop"] == SHOP and q["embedded"] == "1" and q["host"] == host_param(SHOP)
    claims = jwt.decode(q["id_token"], API_SECRET, algorithms=["HS256"], audience=API_KEY)
    assert claims["dest"] == f"https://{SHOP}" and claims["exp"] - claims["nbf"] == 60
    # The parent answers token requests from the app's origin only.
    assert f'var APP_ORIGIN = "{APP_URL}"' in r.text


def test_session_token_endpoint_refuses_other_origins_and_unknown_apps(server):
    url = f"{server}/shops/{SHOP}/admin/apps/{API_KEY}/session-token"
    ok = requests.post(url, headers={"Origin": server}, timeout=10)
    assert ok.status_code == 200
    assert jwt.decode(ok.json()["token"], API_SECRET, algorithms=["HS256"], audience=API_KEY)["dest"] == f"https://{SHOP}"
    assert requests.post(url, headers={"Origin": "http://evil.test"}, timeout=10).status_code == 403
    assert requests.post(f"{server}/shops/{SHOP}/admin/apps/nope/session-token", timeout=10).status_code == 404
    assert requests.get(f"{server}/shops/other.myshopify.com/admin/apps/{API_KEY}/", timeout=10).status_code == 404


def test_app_bridge_stand_in_script_is_served_and_never_redirects_off_origin(server):
    r = requests.get(f"{server}/devstore/app-bridge.js", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert "idToken" in r.text and "shopify-reload" in r.text
    assert "target.origin === window.location.origin" in r.text


def test_host_param_is_shopify_shape():
    import base64
    h = host_param("demo.myshopify.com")
    assert "=" not in h
    assert base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)).decode() == "admin.shopify.com/store/demo"
