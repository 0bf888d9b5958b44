"""The merchant's side of an embedded app, for the demo: an admin page that frames the app, and an App Bridge stand-in.

In real Shopify the admin (admin.shopify.com) frames the app and App Bridge, loaded by the app from Shopify's CDN,
asks the admin for a fresh session token (`shopify.idToken()`), and on the session-token bounce page reloads
`shopify-reload` with one. No machine here reaches the CDN, so the stand-in plays both parts:

- `GET /shops/{shop}/admin/apps/{api_key}/{path}`: an admin page with the app in an iframe loaded like Shopify loads
  it (`?shop&host&embedded=1&id_token=<fresh>`), which answers the frame's token requests (postMessage) for that app
  only, checking the message's origin;
- `GET /devstore/app-bridge.js`: the script the app loads instead of the CDN's when its APP_BRIDGE_SRC setting points
  here. It implements `shopify.idToken()` and the `shopify-reload` bounce, nothing more.

The app is unchanged by this: it sees the same token flow as in production. Tokens are minted with the app's secret
as Shopify would (HS256, one-minute life).
"""
from __future__ import annotations

import base64
import html
import json
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, abort, jsonify, request

from .oauth import mint_session_token

APP_BRIDGE_JS = r"""/* App Bridge stand-in (shopify_app/devstore/admin_frame.py): shopify.idToken() and the shopify-reload bounce. */
(function () {
  // Only inside the admin frame, like App Bridge: opened on its own, a page behaves as without App Bridge.
  if (window.parent === window || (window.shopify && window.shopify.idToken)) return;
  var pending = {}, next = 0;
  function idToken() {
    return new Promise(function (resolve, reject) {
      var id = ++next;
      pending[id] = resolve;
      window.parent.postMessage({type: "devstore:idToken", id: id}, "*");
      setTimeout(function () { if (pending[id]) { delete pending[id]; reject(new Error("no session token")); } }, 5000);
    });
  }
  window.addEventListener("message", function (e) {
    var d = e.data || {};
    if (e.source === window.parent && d.type === "devstore:idToken:reply" && pending[d.id]) {
      pending[d.id](d.token); delete pending[d.id];
    }
  });
  var meta = document.querySelector('meta[name="shopify-api-key"]');
  window.shopify = {idToken: idToken, config: {apiKey: meta ? meta.content : null}};
  var reload = new URLSearchParams(window.location.search).get("shopify-reload");
  if (reload) {
    var target = new URL(reload, window.location.href);
    if (target.origin === window.location.origin) {        // never an open redirect
      idToken().then(function (token) {
        target.searchParams.set("id_token", token);
        window.location.replace(target.toString());
      });
    }
  }
})();
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
  html, body {{ margin: 0; height: 100%; font-family: system-ui, sans-serif; background: #f1f1f1; }}
  header {{ background: #1a1a1a; color: #e3e3e3; padding: 8px 16px; font-size: 14px; }}
  header strong {{ color: #fff; }}
  iframe {{ border: 0; width: 100%; height: calc(100% - 36px); background: #fff; }}
</style></head>
<body>
<header><strong>Shopify admin</strong> (local stand-in) &middot; {shop} &middot; {app_name}</header>
<iframe id="app" title="{app_name}" src="{src}"></iframe>
<script>
  var APP_ORIGIN = {app_origin};
  var TOKEN_URL = {token_url};
  window.addEventListener("message", function (e) {{
    var d = e.data || {{}};
    if (e.origin !== APP_ORIGIN || d.type !== "devstore:idToken") return;
    fetch(TOKEN_URL, {{method: "POST"}}).then(function (r) {{ return r.json(); }}).then(function (body) {{
      e.source.postMessage({{type: "devstore:idToken:reply", id: d.id, token: body.token}}, APP_ORIGIN);
    }});
  }});
</script>
</body></html>
"""


def host_param(shop: str) -> str:
    """Shopify's `host`: base64 of the admin's address for the shop (admin.shopify.com/store/NAME), no padding."""
    name = shop.split(".", 1)[0]
    return base64.urlsafe_b64encode(f"admin.shopify.com/store/{name}".encode()).decode().rstrip("=")


def create_blueprint(store) -> Blueprint:
    bp = Blueprint("devstore_admin", __name__)

    def _app(shop: str, api_key: str):
        app = store.apps.get(api_key)
        if shop not in store.shops or app is None:
            abort(404)
        return app

    @bp.get("/devstore/app-bridge.js")
    def app_bridge():
        return Response(APP_BRIDGE_JS, mimetype="text/javascript")

    @bp.post("/shops/<shop>/admin/apps/<api_key>/session-token")
    def session_token(shop, api_key):
        app = _app(shop, api_key)
        # Only the admin page itself (same origin) asks; a browser sends Origin on every cross-site POST.
        origin = request.headers.get("Origin")
        if origin and origin.rstrip("/") != request.host_url.rstrip("/"):
            abort(403)
        return jsonify(token=mint_session_token(shop, api_key, app.api_secret))

    @bp.get("/shops/<shop>/admin/apps/<api_key>/", defaults={"path": ""})
    @bp.get("/shops/<shop>/admin/apps/<api_key>/<path:path>")
    def admin_page(shop, api_key, path):
        app = _app(shop, api_key)
        query = urlencode({"shop": shop, "host": host_param(shop), "embedded": "1",
                           "id_token": mint_session_token(shop, api_key, app.api_secret)})
        src = f"{app.app_url.rstrip('/')}/{path}?{query}"
        parts = urlsplit(app.app_url)
        page = PAGE.format(title=html.escape(f"{app.name} · {shop}"), shop=html.escape(shop),
                           app_name=html.escape(app.name), src=html.escape(src),
                           app_origin=json.dumps(f"{parts.scheme}://{parts.netloc}").replace("</", "<\\/"),
                           token_url=json.dumps(f"/shops/{shop}/admin/apps/{api_key}/session-token").replace("</", "<\\/"))
        return Response(page, mimetype="text/html")

    return bp
