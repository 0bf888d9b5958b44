"""OAuth, token exchange, refresh, session tokens."""
import time
from urllib.parse import parse_qsl, urlsplit

import jwt
import requests

from shopify_app.devstore.oauth import compute_oauth_hmac, verify_oauth_hmac

from devstore_testlib import API_KEY, API_SECRET, APP_URL, SHOP


def test_shopify_documented_hmac_example_verifies():
    # Shopify's OAuth docs example (secret "hush"), also quoted verbatim by exshopify's Shopify.HMAC docs
    # (hexdocs.pm/exshopify/Shopify.HMAC.html).
    query = ("code=0907a61c0c8d55e99db179b68161bc00&hmac=4712bf92ffc2917d15a2f5a273e39f0116667419aa4b6ac0b3baaf26"
             "fa3c4d20&shop=some-shop.myshopify.com&timestamp=1337178173")
    assert verify_oauth_hmac(query, "hush")
    assert not verify_oauth_hmac(query, "hush2")
    # Variant with state (shopify_oauth Elixir docs).
    q2 = ("code=0907a61c0c8d55e99db179b68161bc00&hmac=700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328"
          "fc4bf&shop=some-shop.myshopify.com&state=0.6784241404160823&timestamp=1337178173")
    assert verify_oauth_hmac(q2, "hush")


def test_values_are_percent_encoded_with_space_as_20():
    import hashlib
    import hmac
    params = {"shop": "a.myshopify.com", "state": "x y&z"}
    msg = "shop=a.myshopify.com&state=x%20y%26z"
    assert compute_oauth_hmac(params, "s") == hmac.new(b"s", msg.encode(), hashlib.sha256).hexdigest()


def test_authorization_code_flow(server, store):
    r = requests.get(f"{server}/shops/{SHOP}/admin/oauth/authorize",
                     params={"client_id": API_KEY, "scope": "read_orders,write_customers",
                             "redirect_uri": f"{APP_URL}/auth/callback", "state": "nonce 1"},
                     allow_redirects=False)
    assert r.status_code == 302
    loc = r.headers["Location"]
    assert loc.startswith(f"{APP_URL}/auth/callback?")
    q = urlsplit(loc).query
    assert verify_oauth_hmac(q, API_SECRET)
    params = dict(parse_qsl(q))
    assert params["shop"] == SHOP and params["state"] == "nonce 1" and params["host"]
    r = requests.post(f"{server}/shops/{SHOP}/admin/oauth/access_token",
                      data={"client_id": API_KEY, "client_secret": API_SECRET, "code": params["code"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "read_orders,write_customers" and body["access_token"].startswith("shpat_")
    # a code works once
    r = requests.post(f"{server}/shops/{SHOP}/admin/oauth/access_token",
                      data={"client_id": API_KEY, "client_secret": API_SECRET, "code": params["code"]})
    assert r.status_code == 400


def test_bad_client_is_refused(server):
    r = requests.get(f"{server}/shops/{SHOP}/admin/oauth/authorize", params={"client_id": "nope"},
                     allow_redirects=False)
    assert r.status_code == 400
    r = requests.post(f"{server}/shops/{SHOP}/admin/oauth/access_token",
                      data={"client_id": API_KEY, "client_secret": "wrong", "code": "x"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"


def _exchange(server, subject, **extra):
    return requests.post(f"{server}/shops/{SHOP}/admin/oauth/access_token", json={
        "client_id": API_KEY, "client_secret": API_SECRET,
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": subject,
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "requested_token_type": "urn:shopify:params:oauth:token-type:offline-access-token", **extra})


def test_session_token_claims(store):
    tok = store.mint_session_token(SHOP, API_KEY, sub="42")
    claims = jwt.decode(tok, API_SECRET, algorithms=["HS256"], audience=API_KEY)
    assert claims["iss"] == f"https://{SHOP}/admin" and claims["dest"] == f"https://{SHOP}"
    assert claims["sub"] == "42" and claims["exp"] - claims["iat"] == 60
    assert {"nbf", "jti", "sid"} <= set(claims)


def test_token_exchange_expiring_and_refresh(server, store):
    r = _exchange(server, store.mint_session_token(SHOP, API_KEY), expiring="1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"access_token", "expires_in", "refresh_token", "refresh_token_expires_in", "scope"}
    first = body["access_token"]
    assert store.check_token(first, SHOP) is not None
    r = requests.post(f"{server}/shops/{SHOP}/admin/oauth/access_token", data={
        "client_id": API_KEY, "client_secret": API_SECRET, "grant_type": "refresh_token",
        "refresh_token": body["refresh_token"]})
    assert r.status_code == 200, r.text
    assert r.json()["access_token"] != first
    assert store.check_token(first, SHOP) is None          # rotated out
    # a refresh token is single use
    r = requests.post(f"{server}/shops/{SHOP}/admin/oauth/access_token", data={
        "client_id": API_KEY, "client_secret": API_SECRET, "grant_type": "refresh_token",
        "refresh_token": body["refresh_token"]})
    assert r.status_code == 400


def test_token_exchange_rejects_bad_session_tokens(server, store):
    expired = store.mint_session_token(SHOP, API_KEY, now=time.time() - 600)
    assert _exchange(server, expired).status_code == 400
    wrong_sig = jwt.encode({"iss": f"https://{SHOP}/admin", "dest": f"https://{SHOP}", "aud": API_KEY, "sub": "1",
                            "exp": time.time() + 60, "nbf": time.time(), "iat": time.time()}, "other-secret-0123456789abcdef-0123456",
                           algorithm="HS256")
    assert _exchange(server, wrong_sig).status_code == 400
    wrong_aud = store.mint_session_token(SHOP, API_KEY, aud="someone-else")
    assert _exchange(server, wrong_aud).status_code == 400
    non_expiring = _exchange(server, store.mint_session_token(SHOP, API_KEY))
    assert non_expiring.status_code == 200 and "refresh_token" not in non_expiring.json()
