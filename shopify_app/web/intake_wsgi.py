"""The webhook endpoints as a plain WSGI handler in front of Flask (installed with the 'webhooks' blueprint).

Why: under load the intake's own work (verify, parse, one share of a group commit) is a few hundred microseconds
per request, and Flask's request machinery around it (request context, cookie session, URL routing, after-request
hooks, jsonify) cost as much again. Webhook deliveries need none of it: no cookies, no templates, no session.
So `POST` to exactly one of the webhook URIs is answered here, by the same rules (webhooks.handle_delivery);
every other request, including other methods on these URIs (-> 405), goes to Flask unchanged.

The answer carries the same security headers the Flask hook adds to every response (security.py), with no shop:
a webhook request is never framed or authenticated for a shop.
"""
from __future__ import annotations

import json
import logging

from werkzeug.wsgi import get_input_stream

from shopify_app.shopify.webhooks import HEADER_NAMES
from shopify_app.web.security import frame_ancestors

log = logging.getLogger(__name__)

_ENVIRON_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in HEADER_NAMES.values())
_REASONS = {200: "200 OK", 400: "400 BAD REQUEST", 401: "401 UNAUTHORIZED", 500: "500 INTERNAL SERVER ERROR"}
_encode = json.JSONEncoder(separators=(",", ":")).encode     # json.dumps without its per-call keyword handling


class WebhookEndpoint:
    """WSGI middleware: `paths` answered by `handle(flask_app, raw_body, headers) -> (code, json dict)`."""

    def __init__(self, flask_app, wsgi_app, paths, handle):
        self.flask_app = flask_app
        self.wsgi_app = wsgi_app
        self.paths = frozenset(paths)
        self.handle = handle
        cfg = flask_app.config.get("APP_CONFIG")
        admin_origin = cfg.admin_frame_origin if cfg is not None else None
        self.headers = [("Content-Type", "application/json"),
                        ("Content-Security-Policy", frame_ancestors(None, admin_origin)),
                        ("X-Content-Type-Options", "nosniff"),
                        ("Referrer-Policy", "strict-origin-when-cross-origin")]

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") not in self.paths:
            return self.wsgi_app(environ, start_response)
        try:
            raw = get_input_stream(environ).read()
            headers = {name: environ[key] for name, key in _ENVIRON_KEYS if key in environ}
            code, answer = self.handle(self.flask_app, raw, headers)
        except Exception:
            if self.flask_app.config.get("PROPAGATE_EXCEPTIONS") or self.flask_app.testing:
                raise
            log.exception("webhook intake failed; answering 500 (Shopify retries the delivery)")
            code, answer = 500, {"status": "error"}
        body = _encode(answer).encode()
        start_response(_REASONS[code], [*self.headers, ("Content-Length", str(len(body)))])
        return [body]


def install(flask_app, paths, handle) -> None:
    flask_app.wsgi_app = WebhookEndpoint(flask_app, flask_app.wsgi_app, paths, handle)
