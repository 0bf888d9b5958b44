"""Session tokens on JSON calls (`/api/*`, guard.require_session_token): every malformed, foreign or
out-of-time token is a 401 with X-Shopify-Retry-Invalid-Session-Request: 1 and no data; a valid token reads its
own shop only, whatever else the request names. (tests/web covers expired / wrong audience / wrong secret.)"""
from __future__ import annotations

import time
import warnings

import jwt
import pytest

from shopify_app.devstore import mint_session_token
from tests.helpers import TEST_API_KEY, TEST_API_SECRET, add_shop

SHOP_A = "tokens-a.myshopify.com"
SHOP_B = "tokens-b.myshopify.com"


def token(shop=SHOP_A, **kw) -> str:
    return mint_session_token(shop, TEST_API_KEY, TEST_API_SECRET, **kw)


def claims(shop=SHOP_A, **changes) -> dict:
    t = int(time.time())
    c = {"iss": f"https://{shop}/admin", "dest": f"https://{shop}", "aud": TEST_API_KEY, "sub": "1",
         "exp": t + 60, "nbf": t, "iat": t, "jti": "j", "sid": "s"}
    c.update(changes)
    return c


def _hs512(c: dict) -> str:
    with warnings.catch_warnings():      # PyJWT warns that a 37-byte key is short for SHA-512: that is the point
        warnings.simplefilter("ignore")
        return jwt.encode(c, TEST_API_SECRET, algorithm="HS512")


def bad_tokens() -> dict:
    now = time.time()
    return {
        "nbf in the future": token(now=now + 120),                             # beyond the 5 s leeway
        "expired just now": token(now=now - 70),                              # 60 s life + 5 s leeway
        "dest not a shop": token(dest="https://evil.example.com"),
        "iss names another shop": token(iss=f"https://{SHOP_B}/admin"),
        "no exp": jwt.encode({k: v for k, v in claims().items() if k != "exp"}, TEST_API_SECRET, algorithm="HS256"),
        "no dest": jwt.encode({k: v for k, v in claims().items() if k != "dest"}, TEST_API_SECRET, algorithm="HS256"),
        "HS512": _hs512(claims()),
        "alg none": jwt.encode(claims(), None, algorithm="none"),
        "other app's audience": token(aud="someone-elses-client-id"),
        "signed with another secret": jwt.encode(claims(), "x" * 40, algorithm="HS256"),
    }


@pytest.fixture
def shops(db_url):
    return {SHOP_A: add_shop(db_url, SHOP_A, name="Alpha"), SHOP_B: add_shop(db_url, SHOP_B, name="Bravo")}


@pytest.mark.parametrize("kind", list(bad_tokens()))
def test_invalid_session_token_is_401_with_retry_header(client, shops, kind):
    resp = client.get("/api/summary", headers={"Authorization": f"Bearer {bad_tokens()[kind]}"})
    assert resp.status_code == 401, kind
    assert resp.headers["X-Shopify-Retry-Invalid-Session-Request"] == "1"
    assert resp.json["error"] == "unauthorized" and "shop" not in resp.json


def test_valid_token_reads_its_own_shop_only(client, shops):
    a = client.get("/api/summary", headers={"Authorization": f"Bearer {token(SHOP_A)}"})
    assert a.status_code == 200 and a.json["shop"] == SHOP_A
    # The token's dest is the tenant: a request naming another shop is refused, never answered with B's data.
    b = client.get(f"/api/summary?shop={SHOP_B}", headers={"Authorization": f"Bearer {token(SHOP_A)}"})
    assert b.status_code == 401 and SHOP_B not in b.get_data(as_text=True)
    assert client.get("/api/summary", headers={"Authorization": f"Bearer {token(SHOP_B)}"}).json["shop"] == SHOP_B
    # A session token is not accepted from the URL or without the Bearer scheme on JSON calls.
    assert client.get(f"/api/summary?id_token={token(SHOP_A)}").status_code == 401
    assert client.get("/api/summary", headers={"Authorization": token(SHOP_A)}).status_code == 401


def test_small_clock_skew_is_tolerated(client, shops):
    skewed = token(now=time.time() + 3)          # the browser's clock a little ahead of ours
    assert client.get("/api/summary", headers={"Authorization": f"Bearer {skewed}"}).status_code == 200
