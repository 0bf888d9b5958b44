"""Blueprint 'admin': the embedded admin pages (server-rendered; the Home page is served by auth's `GET /`).

Views are thin: authenticate (guard), read (readmodels, scoped to g.shop.id), end the read transaction, render.
"""
from __future__ import annotations

import csv
import io
import logging

from flask import Blueprint, Response, abort, g, request, stream_with_context
from redis.exceptions import RedisError

from shopify_app.analytics.segments import SCHEMES
from shopify_app.db import session_factory
from shopify_app.models import ALL_SEGMENTS, Shop
from shopify_app.queues import DEFAULT, enqueue
from shopify_app.settings import SettingsError, shop_settings
from shopify_app.shopify.install import HISTORY_IMPORT_JOB
from shopify_app.web import app_config, charts, db, readmodels as rm
from shopify_app.web.guard import require_session_token
from shopify_app.web.pages import register_filters, render_page

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__)
register_filters(bp)

RECOMPUTE_JOB = "workers.rebuild_jobs.recompute_shop"


# ------------------------------------------------------------------------------------------------ home
def home_context(shop: Shop) -> dict:
    s = db()
    settings = shop_settings(shop)
    ctx = {"overview": rm.overview(s, shop.id, settings), "progress": rm.import_progress(s, shop.id)}
    s.commit()
    return ctx


def render_home(shop: Shop, notice: tuple[str, str] | None = None, status: int = 200):
    """The Home page (auth's `GET /` renders it once the shop is installed)."""
    return render_page("home.html", title="Segments", notice=notice, status=status, **home_context(shop))


@bp.post("/import/retry")
@require_session_token(page=True)
def retry_import():
    """Run the history import again after a failure; it resumes the failed Job (its export and cursor)."""
    s = db()
    progress = rm.import_progress(s, g.shop.id)
    s.commit()
    if progress is None or progress.status != "failed":       # running, queued or done: nothing to retry
        return render_home(g.shop, ("success", "The import is not in a failed state; nothing to retry."))
    try:
        enqueue(app_config(), DEFAULT, HISTORY_IMPORT_JOB, g.shop.id, job_id=f"history-import-{g.shop.id}",
                timeout=6 * 3600)
    except RedisError as exc:
        log.warning("could not enqueue the history import for shop %s: %s", g.shop.id, exc)
        return render_home(g.shop, ("error", "The job queue cannot be reached right now, so the import was not "
                                             "restarted. Please try again in a few minutes."), status=503)
    return render_home(g.shop, ("success", "The import was restarted; it continues where it stopped."))


# ------------------------------------------------------------------------------------------------ segments
def _segment_or_404(slug: str) -> str:
    name = rm.segment_from_slug(slug, shop_settings(g.shop).segment_scheme)
    if name is None:
        abort(404)
    return name


def _member_query() -> tuple[int, str, str]:
    src = request.form if request.method == "POST" else request.args
    q = rm.clean_query(request.form.get("q")) if request.method == "POST" else ""   # never from the URL
    return rm.parse_page(src.get("page")), rm.parse_sort(src.get("sort")), q


@bp.route("/segments/<slug>", methods=["GET", "POST"])
@require_session_token(page=True)
def segment(slug: str):
    """One segment: definition, action, history chart, members (GET pages/sorts; POST = search), transitions."""
    name = _segment_or_404(slug)
    settings = shop_settings(g.shop)
    scheme = rm.scheme_of(name, settings.segment_scheme)
    scheme_key = next(k for k, v in SCHEMES.items() if v is scheme)
    page, sort, q = _member_query()
    s = db()
    totals = rm.segment_totals(s, g.shop.id, name)
    history = rm.segment_history(s, g.shop.id, name)
    members = rm.members(s, g.shop.id, name, page=page, sort=sort, q=q, total=totals.customers)
    moves = rm.transitions(s, g.shop.id, name)
    tags = rm.tag_sync_counts(s, g.shop.id)
    s.commit()
    size_chart = charts.area_chart([(h["day"], h["customers"]) for h in history],
                                   title=f"{name}: customers per day", y_label="Customers")
    revenue_chart = charts.area_chart([(h["day"], h["revenue"]) for h in history],
                                      title=f"{name}: revenue of current members per day",
                                      y_label=f"Revenue ({g.shop.currency or 'USD'})")
    return render_page("segment.html", title=name, name=name, slug=slug, action=scheme.actions.get(name, ""),
                       definition=rm.segment_definition(scheme_key, name), in_current_scheme=(
                           name in SCHEMES[settings.segment_scheme].actions),
                       totals=totals, history=history, members=members, moves=moves, tags=tags,
                       size_chart=size_chart, revenue_chart=revenue_chart, columns=MEMBER_HEADERS)


MEMBER_HEADERS = (("customer", "Customer"), ("recency", "Days since last order"), ("orders", "Orders"),
                  ("revenue", "Net revenue"), ("r", "R"), ("f", "F"), ("m", "M"), ("clv", "Predicted CLV (12 mo)"),
                  ("p_alive", "P(alive)"), ("since", "In segment since"))

CSV_COLUMNS = ("customer_id", "name", "segment", "segment_since", "recency_days", "orders", "net_revenue",
               "r_score", "f_score", "m_score", "clv_12m", "p_alive", "churn_band")


def _csv_cell(value) -> str:
    """Spreadsheet-safe text: a cell starting with = + - @ (a formula) is prefixed with an apostrophe."""
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@bp.get("/segments/<slug>/members.csv")
@require_session_token(page=True)
def members_csv(slug: str):
    """All members of the segment as CSV, streamed in keyset batches."""
    name = _segment_or_404(slug)
    shop_id = g.shop.id
    factory = session_factory(app_config().sqlalchemy_url)

    def rows():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        for m in rm.iter_members(factory, shop_id, name):
            writer.writerow([_csv_cell(v) for v in (
                m["customer_id"], m["name"], name, m["segment_since"], m["recency_days"], m["orders"],
                f"{m['revenue']:.2f}", m["r"], m["f"], m["m"],
                None if m["clv_12m"] is None else f"{m['clv_12m']:.2f}",
                None if m["p_alive"] is None else f"{m['p_alive']:.4f}", m["churn_band"])])
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    headers = {"Content-Disposition": f'attachment; filename="segment-{slug}.csv"', "Cache-Control": "no-store"}
    return Response(stream_with_context(rows()), mimetype="text/csv", headers=headers)


# ------------------------------------------------------------------------------------------------ bundles
@bp.get("/bundles")
@require_session_token(page=True)
def bundles():
    """Pair / triple suggestions and "buy next" rules, overall or for one segment."""
    s = db()
    segments = rm.rule_segments(s, g.shop.id)
    slug = request.args.get("segment", "")
    segment = next((seg for seg in segments if rm.slugify(seg) == slug), ALL_SEGMENTS)
    found = rm.rules(s, g.shop.id, segment)
    s.commit()
    return render_page("bundles.html", title="Bundles", rules=found, segment=segment,
                       segment_slug=rm.slugify(segment) if segment != ALL_SEGMENTS else "",
                       segments=[(rm.slugify(seg), seg) for seg in segments])


# ------------------------------------------------------------------------------------------------ predictions
@bp.get("/predictions")
@require_session_token(page=True)
def predictions():
    s = db()
    summary = rm.prediction_summary(s, g.shop.id)
    quads, hist = summary["quadrants"], summary["histogram"]
    risks = rm.churn_risks(s, g.shop.id)
    models = rm.model_status(s, g.shop.id)
    s.commit()
    chart = charts.histogram(hist["edges"], hist["counts"], title="Predicted 12-month CLV per customer",
                             x_label=f"CLV ({g.shop.currency or 'USD'})")
    return render_page("predictions.html", title="Predictions", quadrants=quads, hist=hist, clv_chart=chart,
                       risks=risks, models=models)


# ------------------------------------------------------------------------------------------------ settings
# (setting, label, input type, help). Min/max come from ShopSettings validation, repeated here for the browser.
SETTINGS_FIELDS = (
    ("segment_scheme", "Segment map", "select", "Which named segments customers are sorted into."),
    ("min_segment_size", "Minimum segment size", "number",
     "Segments with fewer customers are flagged \"too small to act on\" (1 to 1,000,000)."),
    ("rules_window_months", "Bundle rules window (months)", "number",
     "Order months the bundle rules look back over; 0 = all history (0 to 120)."),
    ("min_support", "Minimum support", "number",
     "Share of orders (baskets) that must contain the pair, e.g. 0.005 = 0.5% (above 0, at most 1)."),
    ("min_count", "Minimum orders", "number", "And at least this many orders must contain it (1 or more)."),
    ("min_confidence", "Minimum confidence", "number",
     "Rules whose confidence is below this are not suggested (0 to 1)."),
    ("sequential_days", "\"Buy next\" window (days)", "number",
     "Bought B within this many days after an order containing A (1 to 365)."),
)
SETTINGS_STEPS = {"min_support": "any", "min_confidence": "any"}


def _settings_page(values: dict, errors: dict, status: int = 200, saved: bool = False, notice=None):
    return render_page("settings.html", title="Settings", fields=SETTINGS_FIELDS, values=values, errors=errors,
                       saved=saved, notice=notice, schemes=list(SCHEMES), steps=SETTINGS_STEPS, status=status)


@bp.route("/settings", methods=["GET", "POST"])
@require_session_token(page=True)
def settings():
    current = shop_settings(g.shop)
    if request.method == "GET":
        return _settings_page(current.to_dict(), {})
    submitted = {name: request.form.get(name, "") for name, *_ in SETTINGS_FIELDS}
    errors, changes = {}, {}
    for name, raw in submitted.items():
        try:
            changes[name] = getattr(current.updated({name: raw}), name)
        except SettingsError as exc:
            errors[name] = exc.message
    if errors:
        return _settings_page(submitted, errors, status=400)
    s = db()
    shop = s.get(Shop, g.shop.id, with_for_update=True)
    shop.settings = {**(shop.settings or {}), **changes}     # a new dict: JSON columns track assignment
    s.commit()
    g.shop = shop
    return _settings_page(shop_settings(shop).to_dict(), {}, saved=True)


@bp.post("/settings/recompute")
@require_session_token(page=True)
def recompute():
    """Rebuild segments, rules and predictions with the saved settings (a worker job)."""
    current = shop_settings(g.shop).to_dict()
    try:
        enqueue(app_config(), DEFAULT, RECOMPUTE_JOB, g.shop.id)
    except RedisError as exc:
        log.warning("could not enqueue recompute for shop %s: %s", g.shop.id, exc)
        return _settings_page(current, {}, status=503, notice=(
            "error", "The job queue cannot be reached right now, so the recompute was not started. "
                     "Your settings are saved; please try again in a few minutes."))
    return _settings_page(current, {}, notice=(
        "success", "Recompute started: segments, bundle rules and predictions refresh within a few minutes."))
