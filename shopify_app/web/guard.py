"""Session-token authentication for every embedded page and JSON call.

- JSON/API calls: `Authorization: Bearer <session token>`; invalid or missing -> 401 with
  `X-Shopify-Retry-Invalid-Session-Request: 1` (App Bridge then fetches a fresh token and retries).
- Page loads: Shopify passes the token as `id_token` on the first load of an embedded app; without one we
  answer the bounce page, which loads App Bridge so it can reload the page with a fresh token.
The authenticated shop (`dest`) is the only tenant the view may read: `g.shop` / `g.shop_domain`.
"""
from __future__ import annotations

import functools

from flask import g, jsonify, render_template, request
from sqlalchemy import select

from shopify_app.models import Shop
from shopify_app.shopify.session_token import InvalidSessionToken, decode_session_token
from shopify_app.web import app_config, db

RETRY_HEADER = "X-Shopify-Retry-Invalid-Session-Request"


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
    shop = db().scalar(select(Shop).where(Shop.domain == st.shop))
    g.session_token = st
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
        token = _bearer() or (request.args.get("id_token") if page else None)
        if not token:
            if page:
                return render_template("bounce.html", api_key=app_config().api_key), 200
            return _unauthorized("missing session token")
        try:
            _authenticate(token)
        except InvalidSessionToken as exc:
            if page:
                return render_template("bounce.html", api_key=app_config().api_key, error=str(exc)), 401, {
                    RETRY_HEADER: "1"}
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
