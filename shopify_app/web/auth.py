"""Blueprint 'auth': installation.

(a) Embedded entry `GET /?shop=&host=&id_token=`: the page load Shopify makes when the merchant opens the app.
    Shopify-managed installation means the first load may come before we have any token: the `id_token` (App
    Bridge session token) is exchanged for an offline token (shopify_app.shopify.install). Without an id_token ->
    the bounce page (App Bridge reloads with one).
(b) Authorization-code grant fallback (non-embedded / legacy installs): `GET /auth/install?shop=` redirects to
    Shopify's authorize screen with a state nonce kept in the signed Flask session cookie; `GET /auth/callback`
    checks hmac, state, timestamp and shop before exchanging the code. Any failure answers 400/401 with a clear
    message and stores nothing.
"""
from __future__ import annotations

import logging
import secrets
import time
from urllib.parse import parse_qsl, urlencode

from flask import (Blueprint, current_app, g, redirect, render_template, render_template_string, request, session,
                   url_for)
from sqlalchemy import select

from shopify_app.models import Shop
from shopify_app.shopify.graphql import ShopifyError, ShopifyTransientError
from shopify_app.shopify.hmac_query import verify_query_hmac
from shopify_app.shopify.install import install_with_access_token, install_with_token_exchange
from shopify_app.shopify.oauth import InvalidSubjectToken, TokenExchangeError, _post_token
from shopify_app.shopify.session_token import InvalidSessionToken, decode_session_token
from shopify_app.web import app_config, db, db_writer
from shopify_app.web.guard import BOUNCE_PATH, RETRY_HEADER, bounce_url
from shopify_app.shopify.domains import valid_shop_domain

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

STATE_KEY = "shopify_oauth_state"
CALLBACK_MAX_AGE = 600          # seconds: a callback older (or further in the future) than this is refused

_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Installation failed</title></head>
<body><main><h1>Segments &amp; Bundles could not be installed</h1><p role="alert">{{ message }}</p></main></body>
</html>"""


def _shop_base(cfg, shop: str) -> str:
    base = (cfg.shopify_admin_base or "https://{shop}").rstrip("/")
    return base.format(shop=shop) if "{shop}" in base else base


def _bounce(error: str | None = None):
    """In-place bounce page; it forwards to the session-token bounce route, whose `shopify-reload` App Bridge
    follows with a fresh id_token."""
    cfg = app_config()
    if error is None:
        return render_template("bounce.html", api_key=cfg.api_key, reload_url=bounce_url()), 200
    return render_template("bounce.html", api_key=cfg.api_key, error=error, reload_url=bounce_url()), 401, {
        RETRY_HEADER: "1"}


def _fail(status: int, message: str):
    log.info("install refused (%s): %s", status, message)
    return render_template_string(_ERROR_PAGE, message=message), status


def _installed_response(shop: Shop):
    """The Home page, rendered on the same page load (the id_token that authenticated it stays out of links).
    A deployment that mounts its home page elsewhere registers the endpoint `admin.home`: redirect there."""
    args = {k: v for k, v in request.args.items() if k in ("shop", "host", "embedded")}
    if "admin.home" in current_app.view_functions:
        # keep id_token: the admin page authenticates the same page load with it
        if request.args.get("id_token"):
            args["id_token"] = request.args["id_token"]
        return redirect(url_for("admin.home", **args))
    from shopify_app.web.admin import render_home

    return render_home(shop)


@bp.get(BOUNCE_PATH)
def session_token_bounce():
    """Shopify's session-token bounce page: App Bridge reads `shopify-reload` from this URL and reloads that
    page with a fresh id_token."""
    return render_template("bounce.html", api_key=app_config().api_key), 200


@bp.get("/")
def embedded_entry():
    """The embedded app's entry point (application_url)."""
    cfg = app_config()
    header = request.headers.get("Authorization", "")
    token = request.args.get("id_token") or (header[7:].strip() if header.startswith("Bearer ") else None)
    if not token:
        return _bounce()
    try:
        st = decode_session_token(token, cfg.api_key, cfg.api_secret)
    except InvalidSessionToken as exc:
        return _bounce(str(exc))
    claimed = request.args.get("shop")
    if claimed and valid_shop_domain(claimed) != st.shop:
        return _fail(400, "The shop parameter does not match the session token.")
    g.shop_domain = st.shop
    session_db = db()
    shop = session_db.scalar(select(Shop).where(Shop.domain == st.shop))
    session_db.commit()             # end the read before any network call (SQLite: transactions hold the lock)
    if shop is None or shop.status != "active" or not shop.access_token_enc:
        session_db = db_writer()     # page loads read without the write lock; the install writes
        try:
            shop = install_with_token_exchange(session_db, cfg, st.shop, token)
        except InvalidSubjectToken as exc:
            return _bounce(exc.description or "session token refused")
        except ShopifyTransientError:
            session_db.rollback()
            return _fail(503, "Shopify could not be reached to complete the installation. Please reload.")
        except (TokenExchangeError, ShopifyError) as exc:
            session_db.rollback()
            log.warning("token exchange failed for %s: %s", st.shop, exc)
            return _fail(502, "Shopify refused the installation request.")
    g.shop = shop
    g.id_token = token      # the page's POST forms carry it back
    return _installed_response(shop)


@bp.get("/auth/install")
def auth_install():
    """Start the authorization-code grant: redirect the merchant to Shopify's approval screen."""
    cfg = app_config()
    shop = valid_shop_domain(request.args.get("shop", "").strip())
    if not shop:
        return _fail(400, "Invalid shop domain: expected NAME.myshopify.com.")
    state = secrets.token_urlsafe(24)
    session[STATE_KEY] = {"nonce": state, "shop": shop}
    params = {"client_id": cfg.api_key, "scope": cfg.scopes,
              "redirect_uri": cfg.app_url.rstrip("/") + "/auth/callback", "state": state}
    return redirect(f"{_shop_base(cfg, shop)}/admin/oauth/authorize?{urlencode(params)}", code=302)


@bp.get("/auth/callback")
def auth_callback():
    """Shopify's redirect after approval: verify everything, then exchange the code for an offline token."""
    cfg = app_config()
    pairs = parse_qsl(request.query_string.decode("utf-8", "replace"), keep_blank_values=True)
    params = dict(pairs)
    expected = session.pop(STATE_KEY, None)     # single use, whatever the outcome
    if not verify_query_hmac(pairs, cfg.api_secret):
        return _fail(401, "Invalid HMAC: the request was not signed by Shopify.")
    shop = valid_shop_domain(params.get("shop", ""))
    if not shop:
        return _fail(400, "Invalid shop domain: expected NAME.myshopify.com.")
    if not isinstance(expected, dict) or not params.get("state") or \
            not secrets.compare_digest(str(expected.get("nonce", "")), params["state"]) or expected.get("shop") != shop:
        return _fail(401, "Invalid state: start the installation again from /auth/install.")
    try:
        ts = int(params.get("timestamp", ""))
    except ValueError:
        return _fail(400, "Missing or invalid timestamp.")
    if abs(time.time() - ts) > CALLBACK_MAX_AGE:
        return _fail(401, "The request is too old (or from the future); start the installation again.")
    code = params.get("code", "")
    if not code:
        return _fail(400, "Missing authorization code.")
    session_db = db_writer()         # a GET that writes: the shop row and its token
    try:
        # Same POST (and retry/error handling) as token exchange, with the authorization_code grant.
        tok = _post_token(shop, {"client_id": cfg.api_key, "client_secret": cfg.api_secret, "code": code,
                                 "expiring": "1"},
                          admin_base=cfg.shopify_admin_base or "", session=None, max_retries=2, sleep=time.sleep,
                          rng=None, timeout=(5, 20))
    except ShopifyTransientError:
        return _fail(503, "Shopify could not be reached to complete the installation. Please try again.")
    except TokenExchangeError as exc:
        log.warning("code exchange failed for %s: %s", shop, exc)
        return _fail(400, "Shopify refused the authorization code; start the installation again.")
    g.shop_domain = shop
    shop_row = install_with_access_token(session_db, cfg, shop, tok)
    g.shop = shop_row
    host = params.get("host")
    if "admin.home" in current_app.view_functions:
        return redirect(url_for("admin.home", shop=shop, **({"host": host} if host else {})))
    return render_template("installed.html", shop=shop_row, api_key=cfg.api_key, host=host), 200
