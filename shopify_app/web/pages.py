"""Shared page plumbing: the base layout's context, internal links, number formatting filters.

Internal links keep only `shop`, `host` and `embedded` (never the session token, never personal data); a link
without a token goes through the bounce page, where App Bridge adds a fresh one.
"""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, g, render_template, request, url_for

from shopify_app.settings import shop_settings
from shopify_app.web import app_config
from shopify_app.web.guard import SAFE_PARAMS

NAV = (("Home", "auth.embedded_entry"), ("Bundles", "admin.bundles"), ("Predictions", "admin.predictions"),
       ("Settings", "admin.settings"))
CURRENCY_SYMBOLS = {"USD": "$", "GBP": "£", "EUR": "€", "CAD": "CA$", "AUD": "A$", "JPY": "¥"}


def nav_args() -> dict:
    return {k: request.values[k] for k in SAFE_PARAMS if request.values.get(k)}


def link(endpoint: str, **params) -> str:
    """URL of an app page with the safe navigation parameters of the current request."""
    return url_for(endpoint, **{**nav_args(), **params})


def render_page(template: str, *, title: str, status: int = 200, **context):
    shop = g.get("shop")
    settings = shop_settings(shop) if shop is not None else None
    html = render_template(template, title=title, shop=shop, settings=settings, api_key=app_config().api_key,
                           id_token=g.get("id_token", ""), nav=NAV, nav_args=nav_args(), link=link,
                           current=request.endpoint, **context)
    return html, status


def _currency() -> str:
    shop = g.get("shop")
    return getattr(shop, "currency", None) or "USD"


def money(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    code = _currency()
    sym = CURRENCY_SYMBOLS.get(code)
    v = float(value)
    sign = "-" if v < 0 else ""
    body = f"{abs(v):,.{0 if code == 'JPY' else digits}f}"
    return f"{sign}{sym}{body}" if sym else f"{sign}{body} {code}"


def number(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{float(value):,.{digits}f}"


def percent(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{100.0 * float(value):.{digits}f}%"


def signed(value) -> str:
    if value is None:
        return "–"
    return f"+{value:,}" if value > 0 else (f"{value:,}".replace("-", "−") if value < 0 else "0")


def duration(seconds) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {(s % 3600) // 60} min"


def date(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def register_filters(bp: Blueprint) -> None:
    for name, fn in (("money", money), ("number", number), ("percent", percent), ("signed", signed),
                     ("duration", duration), ("date", date)):
        bp.add_app_template_filter(fn, name)
