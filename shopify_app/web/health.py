"""Liveness/readiness for load balancers and the run command."""
from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from shopify_app.web import app_config, db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    checks = {"database": "ok", "redis": "ok"}
    status = 200
    try:
        db().execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        checks["database"] = f"error: {exc.__class__.__name__}"
        status = 503
    cfg = app_config()
    if cfg.redis_url:
        try:
            from shopify_app.queues import redis_connection

            redis_connection(cfg.redis_url).ping()
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {exc.__class__.__name__}"
            status = 503
    else:
        checks["redis"] = "not configured"
    return jsonify(status="ok" if status == 200 else "degraded", checks=checks), status
