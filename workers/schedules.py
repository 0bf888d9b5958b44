"""Periodic jobs, enqueued by the RQ cron scheduler (`flask --app shopify_app scheduler`).

Each entry fans out per shop inside the job, so one scheduler serves every shop; running two schedulers only
enqueues duplicates of idempotent jobs (harmless) - run one.
"""
from __future__ import annotations

import logging

from rq.cron import CronScheduler

from shopify_app.config import Config
from shopify_app.queues import DEFAULT, MODELS, WEBHOOKS, queue_name, redis_connection

log = logging.getLogger(__name__)


# (dotted path, queue, cron, args). Entries whose module or function is not there (yet) are skipped, so a
# build without e.g. reconciliation still schedules everything else and the scheduler never crashes.
SCHEDULE = [
    # Deliveries recorded but whose job was lost (Redis restarted, worker killed) are re-enqueued.
    ("workers.ingest.sweep_stuck_deliveries", WEBHOOKS, "* * * * *", ()),
    ("workers.maintenance.ping", DEFAULT, "*/5 * * * *", ("scheduler-heartbeat",)),
    ("workers.predictive_jobs.refit_all_shops", MODELS, "30 3 * * *", ()),      # daily, off-peak
    # RFM: refit the quintiles daily, then age every customer's recency (and snapshot the segments) after it.
    ("workers.rfm_jobs.refit_all_shops", DEFAULT, "0 1 * * *", ()),
    ("workers.rfm_jobs.age_all_shops", DEFAULT, "30 1 * * *", ()),
    # Fold count deltas into snapshots, and repair orders whose webhooks were lost.
    ("workers.rebuild_jobs.compact_all_shops", DEFAULT, "15 * * * *", ()),
    ("workers.reconcile_jobs.reconcile_all_shops", DEFAULT, "45 * * * *", ()),
]


def _resolve(path: str):
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        log.warning("schedule entry %s skipped: %s", path, exc)
        return None


def schedule_table():
    """(function, queue, cron expression, args). Imported lazily so the web process never loads worker code."""
    out = []
    for path, queue, cron, args in SCHEDULE:
        func = _resolve(path)
        if func is not None:
            out.append((func, queue, cron, args))
    return out


def build_scheduler(config: Config) -> CronScheduler:
    conn = redis_connection(config.redis_url)
    scheduler = CronScheduler(connection=conn, logging_level=config.log_level)
    for func, queue, cron, args in schedule_table():
        scheduler.register(func, queue_name(config.queue_prefix, queue), args=args, cron=cron)
    return scheduler


def run_scheduler(config: Config) -> None:
    if not config.redis_url:
        raise SystemExit("configuration error: REDIS_URL is not set (the run command starts a local redis)")
    build_scheduler(config).start()
