"""Blueprint 'api': JSON for the pages' tiny JS (and tests). Bearer session token only, every read scoped to
the authenticated shop. Search terms travel in the JSON body, never in the URL."""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from shopify_app.settings import shop_settings
from shopify_app.web import db, readmodels as rm
from shopify_app.web.guard import require_session_token

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/summary")
@require_session_token
def summary():
    """Segments with counts, revenue, shares and changes, plus the history import's progress."""
    s = db()
    settings = shop_settings(g.shop)
    ov = rm.overview(s, g.shop.id, settings)
    progress = rm.import_progress(s, g.shop.id)
    s.commit()
    return jsonify(shop=g.shop.domain, status=g.shop.status, currency=g.shop.currency, scheme=ov.scheme,
                   min_segment_size=ov.min_segment_size, customers=ov.customers, revenue=ov.revenue,
                   orders=ov.orders, aov=ov.aov, segments=[seg.to_json() for seg in ov.segments],
                   import_progress=progress.to_json() if progress else None)


@bp.post("/segments/<slug>/members")
@require_session_token
def segment_members(slug: str):
    """One page of members. Body: {"page": 1, "sort": "-revenue", "q": "name or customer id"}."""
    name = rm.segment_from_slug(slug, shop_settings(g.shop).segment_scheme)
    if name is None:
        return jsonify(error="unknown segment"), 404
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        return jsonify(error="the body must be a JSON object"), 400
    s = db()
    page = rm.members(s, g.shop.id, name, page=body.get("page", 1), sort=body.get("sort"),
                      q=body.get("q") if isinstance(body.get("q"), str) else "")
    s.commit()
    return jsonify(segment=name, slug=slug, **page.to_json())
