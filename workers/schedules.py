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


def schedule_table():
    """(function, queue, cron expression). Imported lazily so the web process never loads worker code."""
    from workers import ingest, maintenance, predictive_jobs

    return [
        # Deliveries recorded but whose job was lost (Redis restarted, worker killed) are re-enqueued.
        (ingest.sweep_stuck_deliveries, WEBHOOKS, "* * * * *", ()),
        (maintenance.ping, DEFAULT, "*/5 * * * *", ("scheduler-heartbeat",)),
        (predictive_jobs.refit_all_shops, MODELS, "30 3 * * *", ()),  # daily, off-peak
    ]


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
