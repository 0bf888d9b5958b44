"""Session-token authentication for every embedded page and JSON call.

- JSON/API calls: `Authorization: Bearer <session token>`; invalid or missing -> 401 with
  `X-Shopify-Retry-Invalid-Session-Request: 1` (App Bridge then fetches a fresh token and retries).
- Page loads: Shopify passes the token as `id_token` on the first load of an embedded app. A page navigation
  without one is redirected to the bounce page (`/auth/session-token?shopify-reload=<this page>`), which loads App
  Bridge; App Bridge then reloads the page with a fresh `id_token` (Shopify's documented flow).
- POST pages (forms): the token travels in the hidden form field `id_token` (refreshed by the page's JS from
  `shopify.idToken()` just before submitting). A forged cross-site form cannot carry a valid token, so the token
  check is also the CSRF check.
The authenticated shop (`dest`) is the only tenant the view may read: `g.shop` / `g.shop_domain`.
"""
from __future__ import annotations

import functools
from urllib.parse import urlencode

from flask import g, jsonify, redirect, render_template, request
from sqlalchemy import select

from shopify_app.models import Shop
from shopify_app.shopify.domains import valid_shop_domain
from shopify_app.shopify.session_token import InvalidSessionToken, decode_session_token
from shopify_app.web import app_config, db

RETRY_HEADER = "X-Shopify-Retry-Invalid-Session-Request"
BOUNCE_PATH = "/auth/session-token"
# Query parameters a page URL may carry (and internal links keep): never the token, never personal data.
SAFE_PARAMS = ("shop", "host", "embedded")
PAGE_PARAMS = SAFE_PARAMS + ("page", "sort", "segment")


def safe_args(keys=SAFE_PARAMS) -> dict:
    return {k: request.args[k] for k in keys if request.args.get(k)}


def bounce_url() -> str:
    """The bounce page URL whose `shopify-reload` is this page (GET form, safe parameters only)."""
    target = request.path
    page_args = safe_args(PAGE_PARAMS)
    if page_args:
        target += "?" + urlencode(page_args)
    return BOUNCE_PATH + "?" + urlencode({**safe_args(), "shopify-reload": target})


def bounce_redirect():
    """Send a token-less page navigation to the bounce page; App Bridge reloads `shopify-reload` with a token."""
    return redirect(bounce_url(), code=302)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):].strip() or None
    return None


def _unauthorized(reason: str):
    resp = jsonify(error="unauthorized", reason=reason)
    resp.status_code = 401
    resp.headers[RETRY_HEADER] = "1"
    return resp


def _authenticate(token: str):
    cfg = app_config()
    st = decode_session_token(token, cfg.api_key, cfg.api_secret)
    session = db()
    shop = session.scalar(select(Shop).where(Shop.domain == st.shop))
    session.commit()        # end the read at once (SQLite: an open transaction holds the write lock)
    g.session_token = st
    g.id_token = token      # POST forms of the page carry it back (hidden field)
    g.shop_domain = st.shop
    g.shop = shop
    return st


def require_session_token(view=None, *, page: bool = False, allow_uninstalled: bool = False):
    """Decorator. `page=True`: an HTML page (token from the `id_token` query parameter or the Authorization
    header; missing -> bounce page). Otherwise a JSON call (Authorization header only)."""
    if view is None:
        return functools.partial(require_session_token, page=page, allow_uninstalled=allow_uninstalled)

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        token = _bearer()
        if not token and page:
            token = request.form.get("id_token") if request.method == "POST" else request.args.get("id_token")
        if not token:
            if page and request.method == "GET":
                return bounce_redirect()
            if page:
                return render_template("bounce.html", api_key=app_config().api_key, error="missing session token",
                                       reload_url=bounce_url()), 401, {RETRY_HEADER: "1"}
            return _unauthorized("missing session token")
        try:
            st = _authenticate(token)
            claimed = request.args.get("shop") or (request.form.get("shop") if page else None)
            if claimed and valid_shop_domain(claimed) != st.shop:
                raise InvalidSessionToken("the shop parameter does not match the session token")
        except InvalidSessionToken as exc:
            g.shop = None
            if page:
                return render_template("bounce.html", api_key=app_config().api_key, error=str(exc),
                                       reload_url=bounce_url()), 401, {RETRY_HEADER: "1"}
            return _unauthorized(str(exc))
        if g.shop is None or (g.shop.status == "uninstalled" and not allow_uninstalled):
            return on_unknown_shop(page)
        return view(*args, **kwargs)

    return wrapper


def on_unknown_shop(page: bool):
    """A valid token for a shop that has not installed us (yet): the install view handles it."""
    if page:
        return render_template("install_needed.html", shop=g.shop_domain), 200
    return jsonify(error="shop not installed", shop=g.shop_domain), 403
