"""Security headers on every response.

Embedded apps are framed by the Shopify admin: every HTML response must allow exactly the shop's admin and
admin.shopify.com as frame ancestors (CSP `frame-ancestors`), nothing else. The shop is the one the request was
authenticated for (`g.shop_domain`, set by the session-token check), else the validated `shop` query parameter.
"""
from __future__ import annotations

from flask import Flask, g, request

from shopify_app.shopify.domains import valid_shop_domain

def frame_ancestors(shop: str | None, admin_origin: str | None = None) -> str:
    sources = [f"https://{shop}"] if shop else []
    sources.append("https://admin.shopify.com")
    if admin_origin:        # the local Shopify stand-in's admin page (SHOPIFY_ADMIN_BASE; refused in production)
        sources.append(admin_origin)
    return "frame-ancestors " + " ".join(sources) + ";"


def install_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response):
        shop = getattr(g, "shop_domain", None) or valid_shop_domain(request.args.get("shop"))
        if response.mimetype == "text/html" or "Content-Security-Policy" not in response.headers:
            admin_origin = app.config["APP_CONFIG"].admin_frame_origin if "APP_CONFIG" in app.config else None
            response.headers["Content-Security-Policy"] = frame_ancestors(shop, admin_origin)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        return response
