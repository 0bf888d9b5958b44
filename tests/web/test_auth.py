"""Authentication and tenant isolation of the admin pages and JSON API."""
from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.web.conftest import SHOP_A, SHOP_B, bearer, page, token
from tests.web.htmltools import hrefs, parse

PAGES = ["/segments/champions", "/bundles", "/predictions", "/settings", "/segments/champions/members.csv"]


@pytest.mark.parametrize("path", PAGES)
def test_navigation_without_token_goes_through_the_bounce_page(client, seeded, path):
    resp = client.get(f"{path}?shop={SHOP_A}&host=aG9zdA&embedded=1&page=2")
    assert resp.status_code == 302
    loc = urlsplit(resp.headers["Location"])
    q = parse_qs(loc.query)
    assert loc.path == "/auth/session-token"
    assert q["shop"] == [SHOP_A] and q["host"] == ["aG9zdA"]
    # App Bridge reloads this same page (same origin, safe parameters only) with a fresh id_token
    reload_to = urlsplit(q["shopify-reload"][0])
    assert reload_to.path == path and not reload_to.netloc
    assert parse_qs(reload_to.query) == {"shop": [SHOP_A], "host": ["aG9zdA"], "embedded": ["1"], "page": ["2"]}
    bounce = client.get(resp.headers["Location"])
    assert bounce.status_code == 200
    html = bounce.get_data(as_text=True)
    assert "https://cdn.shopify.com/shopifycloud/app-bridge.js" in html
    assert 'name="shopify-api-key"' in html and "Alpha" not in html


def bad_tokens():
    return {
        "expired": token(SHOP_A, now=time.time() - 3600),
        "wrong audience": token(SHOP_A, aud="another-app"),
        "wrong secret": __import__("jwt").encode(
            {"iss": f"https://{SHOP_A}/admin", "dest": f"https://{SHOP_A}", "aud": "test-api-key-0123456789",
             "sub": "1", "exp": int(time.time()) + 60, "nbf": int(time.time()), "iat": int(time.time())},
            "not-the-secret-not-the-secret-000", algorithm="HS256"),
        "garbage": "abc.def.ghi",
    }


@pytest.mark.parametrize("kind", ["expired", "wrong audience", "wrong secret", "garbage"])
@pytest.mark.parametrize("path", ["/", "/segments/champions", "/bundles", "/predictions", "/settings",
                                  "/segments/champions/members.csv"])
def test_invalid_token_is_refused_without_data(client, seeded, kind, path):
    resp = client.get(f"{path}?shop={SHOP_A}&host=aG9zdA&id_token={bad_tokens()[kind]}")
    assert resp.status_code == 401
    assert resp.headers["X-Shopify-Retry-Invalid-Session-Request"] == "1"
    body = resp.get_data(as_text=True)
    for secret in ("Champ 0", "Risky Rita", "Red Mug", "1,000", "Alpha Goods"):
        assert secret not in body


@pytest.mark.parametrize("kind", ["expired", "wrong audience", "wrong secret"])
def test_api_refuses_invalid_or_missing_bearer(client, seeded, kind):
    resp = client.get("/api/summary", headers={"Authorization": f"Bearer {bad_tokens()[kind]}"})
    assert resp.status_code == 401 and resp.json["error"] == "unauthorized"
    assert resp.headers["X-Shopify-Retry-Invalid-Session-Request"] == "1"
    assert client.get("/api/summary").status_code == 401
    # the API does not take tokens from the URL
    assert client.get(f"/api/summary?id_token={token(SHOP_A)}").status_code == 401
    assert client.post("/api/segments/champions/members", json={}).status_code == 401


def test_shop_parameter_naming_another_shop_is_refused(client, seeded):
    url = page("/segments/champions", shop=SHOP_A).replace(f"shop={SHOP_A}", f"shop={SHOP_B}", 1)
    resp = client.get(url)
    assert resp.status_code == 401 and "Champ 0" not in resp.get_data(as_text=True)


def test_shop_b_token_never_reads_shop_a(client, seeded):
    home = client.get(page("/", shop=SHOP_B)).get_data(as_text=True)
    assert "Bravo Goods" in home and "Alpha Goods" not in home
    seg = client.get(page("/segments/champions", shop=SHOP_B)).get_data(as_text=True)
    assert "Bravo Secret" in seg and "Champ 0" not in seg and "Risky Rita" not in seg
    csv = client.get(page("/segments/champions/members.csv", shop=SHOP_B)).get_data(as_text=True)
    assert "Bravo Secret" in csv and "Champ 0" not in csv and "Risky" not in csv
    bundles = client.get(page("/bundles", shop=SHOP_B)).get_data(as_text=True)
    assert "Bravo Only Product" in bundles and "Red Mug" not in bundles
    preds = client.get(page("/predictions", shop=SHOP_B)).get_data(as_text=True)
    assert "Bravo Secret" in preds and "Risky Rita" not in preds
    summary = client.get("/api/summary", headers=bearer(SHOP_B)).json
    assert summary["shop"] == SHOP_B and summary["customers"] == 1
    assert [s["name"] for s in summary["segments"]] == ["Champions"]
    members = client.post("/api/segments/champions/members", json={"q": "Champ"}, headers=bearer(SHOP_B)).json
    assert members["total"] == 0 and members["rows"] == []
    members = client.post("/api/segments/champions/members", json={}, headers=bearer(SHOP_B)).json
    assert [r["customer_id"] for r in members["rows"]] == [9000]


def test_token_for_a_shop_that_never_installed(client, seeded):
    resp = client.get(page("/bundles", shop="nobody.myshopify.com"))
    assert resp.status_code == 200 and "is not installed" in resp.get_data(as_text=True)
    resp = client.get("/api/summary", headers=bearer("nobody.myshopify.com"))
    assert resp.status_code == 403


def test_csp_frame_ancestors_on_every_page(client, seeded):
    for path in ("/", "/segments/champions", "/bundles", "/predictions", "/settings"):
        resp = client.get(page(path))
        assert resp.status_code == 200
        csp = resp.headers["Content-Security-Policy"]
        assert csp == f"frame-ancestors https://{SHOP_A} https://admin.shopify.com;"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_links_never_carry_the_token_or_personal_data(client, seeded):
    for path in ("/", "/segments/champions", "/bundles", "/predictions", "/settings"):
        root = parse(client.get(page(path)).get_data(as_text=True))
        for url in hrefs(root):
            q = parse_qs(urlsplit(url).query)
            assert "id_token" not in q, (path, url)
            assert set(q) <= {"shop", "host", "embedded", "page", "sort", "segment"}, (path, url)
            assert "Champ" not in url and "Rita" not in url


def test_post_forms_need_the_token_in_the_form(client, seeded):
    resp = client.post(f"/settings?shop={SHOP_A}&host=aG9zdA", data={"min_segment_size": "10"})
    assert resp.status_code == 401
    resp = client.post(f"/settings?shop={SHOP_A}", data={"min_segment_size": "10",
                                                         "id_token": token(SHOP_A, now=time.time() - 600)})
    assert resp.status_code == 401
    # a token in the URL is not accepted for a POST (forms carry it in the body)
    resp = client.post(f"/segments/champions?shop={SHOP_A}&id_token={token(SHOP_A)}", data={"q": "Champ"})
    assert resp.status_code == 401
    resp = client.post(f"/segments/champions?shop={SHOP_A}", data={"q": "Champ 1", "id_token": token(SHOP_A)})
    assert resp.status_code == 200 and "Champ 1" in resp.get_data(as_text=True)


def test_every_form_carries_the_current_token(client, seeded):
    t = token(SHOP_A)
    for path in ("/segments/champions", "/settings"):
        root = parse(client.get(f"{path}?shop={SHOP_A}&host=aG9zdA&id_token={t}").get_data(as_text=True))
        forms = [f for f in root.find_all("form") if f.attrs.get("method") == "post"]
        assert forms
        for f in forms:
            hidden = f.find("input", name="id_token")
            assert hidden is not None and hidden.attrs["value"] == t
