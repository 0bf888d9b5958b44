"""Installation end to end against the devstore stand-in over HTTP: token exchange (embedded entry), the
authorization-code fallback with its checks (hmac, state, timestamp, shop), token refresh and re-authorization."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac as hmac_mod
import logging
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from rq import Queue
from sqlalchemy import func, select

from shopify_app import create_app
from shopify_app.crypto import TokenCipher
from shopify_app.devstore import App, DevStore
from shopify_app.devstore.oauth import compute_oauth_hmac, host_param
from shopify_app.devstore.webhooks import DeliveryMode
from shopify_app.models import Shop, utcnow
from shopify_app.queues import queue_name, redis_connection
from shopify_app.shopify.graphql import ShopifyAuthError
from shopify_app.shopify.hmac_query import signing_message, verify_query_hmac
from shopify_app.shopify.install import (HISTORY_IMPORT_JOB, PRODUCT_SYNC_JOB, after_install, ensure_fresh_token,
                                         install_with_token_exchange, sync_shop_info)
from tests.conftest import TEST_API_KEY, TEST_API_SECRET

SHOP = "install-test.myshopify.com"
APP_URL = "https://app.test"


@pytest.fixture
def store():
    s = DevStore(apps=[App(TEST_API_KEY, TEST_API_SECRET, APP_URL)], webhook_mode=DeliveryMode(sync=True))
    s.create_shop(SHOP, currency="GBP", iana_timezone="Europe/London")
    return s


@pytest.fixture
def cfg(config, server):
    return config.replace(shopify_admin_base=f"{server}/shops/{{shop}}", app_url=APP_URL)


@pytest.fixture
def web(cfg):
    app = create_app(cfg)
    app.testing = True
    return app.test_client()


# The SQLite test database takes the write lock at BEGIN: every read here ends its transaction at once so the
# app (another connection) can write; the session is expire_on_commit=False, so loaded rows stay usable.
def shop_row(session, domain=SHOP):
    session.expire_all()
    row = session.scalar(select(Shop).where(Shop.domain == domain))
    session.commit()
    return row


def shop_count(session):
    session.expire_all()
    n = session.scalar(select(func.count()).select_from(Shop))
    session.commit()
    return n


def entry_url(store, shop=SHOP, **extra):
    params = {"shop": shop, "host": host_param(shop), "embedded": "1",
              "id_token": store.mint_session_token(shop, TEST_API_KEY)}
    params.update(extra)
    return "/?" + urlencode(params)


def assert_installed_response(resp):
    # the admin UI may add an `admin.home` endpoint (redirect); until then the minimal installed page
    assert resp.status_code in (200, 302), resp.get_data(as_text=True)
    if resp.status_code == 200:
        assert "is installed on" in resp.get_data(as_text=True)


# ------------------------------------------------------------------------------------------- token exchange

def test_token_exchange_install_stores_encrypted_token(web, store, cfg, session):
    resp = web.get(entry_url(store))
    assert_installed_response(resp)
    assert f"https://{SHOP}" in resp.headers["Content-Security-Policy"]

    shop = shop_row(session)
    assert shop is not None and shop.status == "active"
    assert shop.installed_at is not None and shop.uninstalled_at is None
    assert shop.api_version == cfg.api_version
    assert set(shop.scopes.split(",")) >= {"read_orders"}
    assert (shop.name, shop.currency, shop.timezone) == (store.shops[SHOP].name, "GBP", "Europe/London")

    token = TokenCipher(cfg.fernet_key).decrypt(shop.access_token_enc)
    assert token and shop.access_token_enc != token and token not in shop.access_token_enc
    assert store.check_token(token, SHOP) is not None               # the stand-in accepts it
    refresh = TokenCipher(cfg.fernet_key).decrypt(shop.refresh_token_enc)
    assert refresh and refresh not in shop.refresh_token_enc       # expiring token: refresh stored encrypted
    assert shop.token_expires_at > utcnow() + dt.timedelta(minutes=50)
    assert shop.refresh_token_expires_at > utcnow() + dt.timedelta(days=80)

    # the history import and the product sync were enqueued by dotted path (the worker resolves them at run time)
    q = Queue(queue_name(cfg.queue_prefix, "default"), connection=redis_connection(cfg.redis_url))
    jobs = q.get_jobs()
    assert [j.func_name for j in jobs] == [HISTORY_IMPORT_JOB, PRODUCT_SYNC_JOB]
    assert all(j.args == (shop.id,) for j in jobs)

    # an installed shop's next page load does not exchange again
    issued = len(store.tokens)
    assert_installed_response(web.get(entry_url(store)))
    assert len(store.tokens) == issued
    assert shop_row(session).access_token_enc == shop.access_token_enc


def test_entry_without_or_with_bad_id_token(web, store, session):
    resp = web.get(f"/?shop={SHOP}&host={host_param(SHOP)}")
    assert resp.status_code == 200 and "app-bridge.js" in resp.get_data(as_text=True)
    bad = store.mint_session_token(SHOP, TEST_API_KEY, now=time.time() - 3600)      # expired
    resp = web.get(f"/?shop={SHOP}&id_token={bad}")
    assert resp.status_code == 401 and resp.headers["X-Shopify-Retry-Invalid-Session-Request"] == "1"
    # shop parameter naming another shop than the token
    resp = web.get(entry_url(store, shop=SHOP).replace(f"shop={SHOP}", "shop=other.myshopify.com", 1))
    assert resp.status_code == 400
    assert shop_count(session) == 0


def test_uninstalled_shop_is_reactivated_by_token_exchange(web, store, cfg, session):
    assert_installed_response(web.get(entry_url(store)))
    shop = shop_row(session)
    first_installed = shop.installed_at
    shop.status, shop.uninstalled_at, shop.access_token_enc = "uninstalled", utcnow(), None
    session.commit()
    assert_installed_response(web.get(entry_url(store)))
    shop = shop_row(session)
    assert shop.status == "active" and shop.uninstalled_at is None and shop.access_token_enc
    assert shop.installed_at >= first_installed


# ------------------------------------------------------------------------------------------- code grant

def start_install(web, server):
    resp = web.get(f"/auth/install?shop={SHOP}")
    assert resp.status_code == 302
    loc = resp.headers["Location"]
    assert loc.startswith(f"{server}/shops/{SHOP}/admin/oauth/authorize?")
    q = dict(parse_qsl(urlsplit(loc).query))
    assert q["client_id"] == TEST_API_KEY and q["redirect_uri"] == f"{APP_URL}/auth/callback" and q["state"]
    assert q["scope"]
    return loc, q["state"]


def approve(loc):
    """The merchant approves on the stand-in, which redirects back to the app with code + hmac."""
    resp = requests.get(loc, allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    back = resp.headers["Location"]
    assert back.startswith(f"{APP_URL}/auth/callback?")
    return back[len(APP_URL):]


def test_code_grant_install(web, store, server, cfg, session):
    loc, _ = start_install(web, server)
    callback = approve(loc)
    resp = web.get(callback)
    assert_installed_response(resp)
    shop = shop_row(session)
    assert shop.status == "active"
    token = TokenCipher(cfg.fernet_key).decrypt(shop.access_token_enc)
    assert token != shop.access_token_enc and store.check_token(token, SHOP) is not None
    assert shop.currency == "GBP"
    # the state is single use: replaying the same callback is refused
    assert web.get(callback).status_code == 401


def test_install_rejects_bad_shop_domain(web, session):
    for bad in ("evil.com", "shop.myshopify.com.evil.com", "-x.myshopify.com", "", "a b.myshopify.com"):
        resp = web.get("/auth/install?" + urlencode({"shop": bad}))
        assert resp.status_code == 400, bad
        assert "Invalid shop domain" in resp.get_data(as_text=True)
    assert shop_count(session) == 0


def _callback_query(params: dict) -> str:
    params = dict(params)
    params["hmac"] = compute_oauth_hmac(params, TEST_API_SECRET)
    return "/auth/callback?" + urlencode(params)


def test_callback_rejects_tampering_and_stores_nothing(web, store, server, session):
    loc, state = start_install(web, server)
    callback = approve(loc)
    q = dict(parse_qsl(urlsplit(callback).query))
    code = q["code"]

    # tampered hmac
    assert web.get(callback.replace(q["hmac"], "0" * 64)).status_code == 401
    # tampered parameter (hmac no longer matches)
    tampered = callback.replace(f"shop={SHOP}", "shop=other.myshopify.com")
    assert web.get(tampered).status_code == 401
    # each rejection consumed the state: start again for the next checks
    _, state = start_install(web, server)
    # wrong state (validly signed, but not the one in our session)
    resp = web.get(_callback_query({**q, "state": "not-our-nonce"}))
    assert resp.status_code == 401 and "Invalid state" in resp.get_data(as_text=True)

    _, state = start_install(web, server)
    stale = {**q, "state": state, "timestamp": str(int(time.time()) - 11 * 60)}
    resp = web.get(_callback_query(stale))
    assert resp.status_code == 401 and "too old" in resp.get_data(as_text=True)

    _, state = start_install(web, server)
    resp = web.get(_callback_query({**q, "state": state, "shop": "evil.example.com"}))
    assert resp.status_code == 400 and "Invalid shop domain" in resp.get_data(as_text=True)

    _, state = start_install(web, server)
    resp = web.get(_callback_query({**q, "state": state, "shop": "other.myshopify.com"}))
    assert resp.status_code == 401          # state was issued for another shop

    # no state in the session at all (fresh browser)
    fresh = web.application.test_client()
    assert fresh.get(_callback_query({**q, "state": state})).status_code == 401

    assert shop_count(session) == 0
    assert code in store.auth_codes         # never exchanged


def test_callback_with_refused_code_stores_nothing(web, store, server, session):
    loc, state = start_install(web, server)
    q = dict(parse_qsl(urlsplit(approve(loc)).query))
    resp = web.get(_callback_query({**q, "code": "f" * 32}))
    assert resp.status_code == 400 and "refused" in resp.get_data(as_text=True)
    assert shop_count(session) == 0


# ------------------------------------------------------------------------------------------- hmac rule

def test_shopify_documented_hmac_examples_verify():
    query = ("code=0907a61c0c8d55e99db179b68161bc00&hmac=4712bf92ffc2917d15a2f5a273e39f0116667419aa4b6ac0b3baaf26"
             "fa3c4d20&shop=some-shop.myshopify.com&timestamp=1337178173")
    pairs = parse_qsl(query, keep_blank_values=True)
    assert verify_query_hmac(pairs, "hush")
    assert verify_query_hmac(dict(pairs), "hush")
    assert not verify_query_hmac(pairs, "hush2")
    assert not verify_query_hmac([(k, v if k != "code" else v[:-1] + "1") for k, v in pairs], "hush")
    q2 = ("code=0907a61c0c8d55e99db179b68161bc00&hmac=700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328"
          "fc4bf&shop=some-shop.myshopify.com&state=0.6784241404160823&timestamp=1337178173")
    assert verify_query_hmac(parse_qsl(q2), "hush")
    # legacy `signature` is ignored; a duplicated key or missing hmac never verifies
    assert verify_query_hmac(pairs + [("signature", "whatever")], "hush")
    assert not verify_query_hmac(pairs + [("shop", "evil.myshopify.com")], "hush")
    assert not verify_query_hmac([p for p in pairs if p[0] != "hmac"], "hush")
    assert not verify_query_hmac(pairs, "")


def test_space_is_encoded_as_percent_20_unlike_shopifyapi():
    params = {"shop": "a.myshopify.com", "state": "x y&z+1", "timestamp": "1"}
    assert signing_message(params) == "shop=a.myshopify.com&state=x%20y%26z%2B1&timestamp=1"
    expected = hmac_mod.new(b"s", signing_message(params).encode(), hashlib.sha256).hexdigest()
    signed = {**params, "hmac": compute_oauth_hmac(params, "s")}     # how the stand-in (Shopify's rule) signs
    assert signed["hmac"] == expected and verify_query_hmac(signed, "s")
    assert not verify_query_hmac({**params, "state": "x+y&z+1", "hmac": signed["hmac"]}, "s")

    # ShopifyAPI 12.x leaves the space raw, so it rejects this genuine signature (why we do not use it)
    import shopify

    shopify.Session.setup(api_key="k", secret="s")
    try:
        assert shopify.Session.validate_hmac(signed) is False
        plain = {"shop": "a.myshopify.com", "code": "abc", "timestamp": "1"}
        assert shopify.Session.validate_hmac({**plain, "hmac": compute_oauth_hmac(plain, "s")}) is True
    finally:
        shopify.Session.setup(api_key=None, secret=None)


# ------------------------------------------------------------------------------------------- token lifecycle

def test_token_far_from_expiry_is_used_as_is(web, store, cfg, session):
    assert_installed_response(web.get(entry_url(store)))
    shop = shop_row(session)
    token = TokenCipher(cfg.fernet_key).decrypt(shop.access_token_enc)
    issued = len(store.tokens)
    assert ensure_fresh_token(session, cfg, shop) == token
    assert len(store.tokens) == issued


def test_expiring_token_near_expiry_is_refreshed(web, store, cfg, session):
    assert_installed_response(web.get(entry_url(store)))
    shop = shop_row(session)
    cipher = TokenCipher(cfg.fernet_key)
    old, old_refresh = cipher.decrypt(shop.access_token_enc), cipher.decrypt(shop.refresh_token_enc)
    shop.token_expires_at = utcnow() + dt.timedelta(minutes=4)
    session.commit()

    new = ensure_fresh_token(session, cfg, shop)
    assert new != old
    assert store.check_token(new, SHOP) is not None
    assert store.check_token(old, SHOP) is None                       # rotation revoked the old one
    shop = shop_row(session)
    assert cipher.decrypt(shop.access_token_enc) == new and shop.status == "active"
    assert cipher.decrypt(shop.refresh_token_enc) not in (None, old_refresh)
    assert shop.token_expires_at > utcnow() + dt.timedelta(minutes=50)
    # and the refreshed token works against the Admin API
    assert sync_shop_info(session, cfg, shop).name == store.shops[SHOP].name


def test_refused_refresh_marks_needs_reauth(web, store, cfg, session):
    assert_installed_response(web.get(entry_url(store)))
    shop = shop_row(session)
    shop.refresh_token_enc = TokenCipher(cfg.fernet_key).encrypt("shprt_not-a-real-refresh-token")
    shop.token_expires_at = utcnow() + dt.timedelta(minutes=1)
    session.commit()
    with pytest.raises(ShopifyAuthError):
        ensure_fresh_token(session, cfg, shop)
    assert shop_row(session).status == "needs_reauth"


def test_revoked_token_needs_reauth_then_token_exchange_recovers(web, store, cfg, session):
    assert_installed_response(web.get(entry_url(store)))
    shop = shop_row(session)
    store.revoke_shop_tokens(SHOP)
    with pytest.raises(ShopifyAuthError):
        sync_shop_info(session, cfg, shop)
    assert shop_row(session).status == "needs_reauth"

    # the merchant opens the app again: the page load's id_token re-installs
    assert_installed_response(web.get(entry_url(store)))
    shop = shop_row(session)
    assert shop.status == "active"
    token = TokenCipher(cfg.fernet_key).decrypt(shop.access_token_enc)
    assert store.check_token(token, SHOP) is not None


def test_install_survives_redis_outage(cfg, store, session, caplog):
    down = cfg.replace(redis_url="redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="shopify_app.shopify.install"):
        shop = install_with_token_exchange(session, down, SHOP, store.mint_session_token(SHOP, TEST_API_KEY))
    assert shop.status == "active" and shop_row(session).status == "active"
    assert "could not enqueue history import" in caplog.text
    after_install(down, shop)       # never raises


def test_installed_shop_redirects_to_admin_home_when_it_exists(cfg, store, session, caplog):
    app = create_app(cfg)
    app.testing = True
    app.add_url_rule("/app", endpoint="admin.home", view_func=lambda: "home")
    web = app.test_client()
    with caplog.at_level(logging.DEBUG):
        resp = web.get(entry_url(store))
    assert resp.status_code == 302
    loc = urlsplit(resp.headers["Location"])
    q = dict(parse_qsl(loc.query))
    assert loc.path == "/app" and q["shop"] == SHOP and q["host"] == host_param(SHOP) and q["id_token"]
    shop = shop_row(session)
    token = TokenCipher(cfg.fernet_key).decrypt(shop.access_token_enc)
    assert token not in caplog.text                                  # tokens never logged
    assert TokenCipher(cfg.fernet_key).decrypt(shop.refresh_token_enc) not in caplog.text
