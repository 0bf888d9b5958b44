"""The devstore's HTTP face: a small Flask app, and a helper to serve it on a free localhost port.

Routing rule (see devstore/__init__.py): every Shopify path of a shop lives under /shops/{shop}/, e.g.
/shops/demo.myshopify.com/admin/api/2026-10/graphql.json. Devstore-only control endpoints live under /devstore/.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

from flask import Flask, Response, jsonify, redirect, request, send_file

from . import oauth
from .graphql_api import run_graphql
from .resolvers import Ctx
from .schema import SUPPORTED_VERSIONS

log = logging.getLogger("shopify_app.devstore")
INVALID_TOKEN = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}


def _drop_connection() -> Response:
    """Close the client's socket without a byte of response (werkzeug exposes it in the environ)."""
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
    return Response(status=500)   # never reaches the client


def _apply_fault(store, shop: str | None):
    f = store.faults.take(shop, request.path)
    if f is None:
        return None
    if f.kind == "slow":
        time.sleep(f.delay)
        return None
    if f.kind == "drop":
        return _drop_connection()
    if f.kind == "http_429":
        r = jsonify({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume "
                               "uninterrupted service."})
        r.status_code = 429
        r.headers["Retry-After"] = str(f.retry_after)
        return r
    code = 500 if f.kind == "http_500" else 503
    r = jsonify({"errors": "Internal Server Error" if code == 500 else "Service Unavailable"})
    r.status_code = code
    return r


def create_devstore_app(store) -> Flask:
    app = Flask("shopify_devstore")
    app.config["MAX_CONTENT_LENGTH"] = 512 * 1024 * 1024

    def base_url() -> str:
        return store.public_base_url or request.host_url.rstrip("/")

    def known_shop(shop: str):
        return store.shops.get(shop)

    @app.get("/devstore/health")
    def health():
        return {"ok": True, "shops": sorted(store.shops)}

    @app.get("/shops/<shop>/admin/oauth/authorize")
    def authorize(shop):
        if not known_shop(shop):
            return {"errors": "Not Found"}, 404
        fault = _apply_fault(store, shop)
        if fault is not None:
            return fault
        try:
            return redirect(oauth.authorize(store, shop, request.args.to_dict()), code=302)
        except oauth.OAuthError as e:
            return e.body(), e.status

    @app.post("/shops/<shop>/admin/oauth/access_token")
    def access_token(shop):
        if not known_shop(shop):
            return {"errors": "Not Found"}, 404
        fault = _apply_fault(store, shop)
        if fault is not None:
            return fault
        form = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        try:
            return jsonify(oauth.access_token(store, shop, form or {}))
        except oauth.OAuthError as e:
            return e.body(), e.status

    @app.post("/shops/<shop>/admin/api/<version>/graphql.json")
    def graphql(shop, version):
        sh = known_shop(shop)
        if sh is None or version not in SUPPORTED_VERSIONS:
            return {"errors": "Not Found"}, 404
        fault = _apply_fault(store, shop)
        if fault is not None:
            return fault
        tok = store.check_token(request.headers.get("X-Shopify-Access-Token"), shop)
        if tok is None:
            return INVALID_TOKEN, 401
        body = request.get_json(silent=True)
        if body is None and request.content_type and "application/graphql" in request.content_type:
            body = {"query": request.get_data(as_text=True)}
        if not isinstance(body, dict):
            return {"errors": "Bad Request: request body must be JSON"}, 400
        ctx = Ctx(store, sh, tok.api_key, tok.scope, base_url(), version)
        return jsonify(run_graphql(ctx, body))

    @app.post("/shops/<shop>/devstore/uploads")
    def upload_form(shop):
        # Staged upload target (stands in for the cloud bucket): multipart form with the returned parameters
        # first and the file last, exactly what an app sends to Shopify's signed URL.
        key = request.form.get("key")
        f = request.files.get("file")
        if not key or f is None:
            return Response("<Error><Code>InvalidArgument</Code></Error>", status=400, mimetype="application/xml")
        store.uploads[key] = f.read()
        return Response(f"<PostResponse><Key>{key}</Key></PostResponse>", status=201, mimetype="application/xml")

    @app.put("/shops/<shop>/devstore/uploads/<path:key>")
    def upload_put(shop, key):
        store.uploads[key] = request.get_data()
        return Response(status=200)

    @app.get("/shops/<shop>/devstore/bulk/<int:op_id>.jsonl")
    def bulk_result(shop, op_id):
        sh = known_shop(shop)
        op = sh.bulk_operations.get(op_id) if sh else None
        if op is None or op.path is None:
            return {"errors": "Not Found"}, 404
        return send_file(op.path, mimetype="application/jsonl")

    @app.route("/devstore/faults", methods=["POST", "DELETE", "GET"])
    def faults():
        if request.method == "DELETE":
            store.faults.clear()
            return {"ok": True}
        if request.method == "GET":
            return {"pending": [vars(f) for f in store.faults.pending], "fired": store.faults.fired}
        spec = request.get_json(force=True)
        if spec.get("kind") == "revoke":
            store.revoke_shop_tokens(spec["shop"], spec.get("api_key"))
            return {"ok": True}
        kind = spec.pop("kind")
        store.faults.add(kind, **spec)
        return {"ok": True}

    @app.get("/devstore/deprecations")
    def deprecations():
        return {"deprecations": store.deprecation_log}

    @app.get("/devstore/webhooks")
    def webhook_attempts():
        return {"attempts": [{"topic": a.topic, "shop": a.shop, "url": a.url, "status": a.status,
                              "attempt": a.attempt, "webhook_id": a.webhook_id, "event_id": a.event_id,
                              "error": a.error} for a in store.webhooks.attempts]}

    from .admin_frame import create_blueprint
    app.register_blueprint(create_blueprint(store))
    return app


def start_devstore_server(store, host: str = "127.0.0.1", port: int = 0):
    """Serve the devstore on a free port in a daemon thread. Returns (base_url, stop)."""
    from werkzeug.serving import make_server
    app = create_devstore_app(store)
    srv = make_server(host, port, app, threaded=True)
    base = f"http://{host}:{srv.server_port}"
    if store.public_base_url is None:
        store.public_base_url = base
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, name="devstore-http",
                         daemon=True)
    t.start()

    def stop():
        srv.shutdown()
        t.join(5)
        srv.server_close()
    return base, stop
