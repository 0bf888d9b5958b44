"""Starting RQ workers on the app's queues."""
from __future__ import annotations

import importlib
import logging
import sys

from rq import Worker

from shopify_app.config import Config, ConfigError
from shopify_app.queues import ALL_QUEUES, queue_name, redis_connection

log = logging.getLogger(__name__)

# RQ forks a work horse per job. Importing the job modules (and what they pull in: SQLAlchemy models, numpy,
# scipy, pandas) once in the parent means every fork starts with them loaded, instead of paying the imports on
# each job (measured by bench/bench_freshness.py: 0.15-0.76 s per webhook job without this).
JOB_MODULES = (
    "workers.ingest", "workers.order_jobs", "workers.import_jobs", "workers.rebuild_jobs", "workers.rules_jobs",
    "workers.rfm_jobs", "workers.sequential_jobs", "workers.catalog_jobs", "workers.reconcile_jobs",
    "workers.predictive_jobs", "workers.maintenance",
)


def preload_job_modules() -> list[str]:
    loaded = []
    for name in JOB_MODULES:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ImportError as exc:        # a module of a later wave may not exist yet: jobs import lazily anyway
            log.debug("not preloaded: %s (%s)", name, exc)
    return loaded


def run_worker(config: Config, queues: list[str] | tuple[str, ...] | None = None, burst: bool = False,
               name: str | None = None) -> bool:
    if not config.redis_url:
        raise SystemExit("configuration error: REDIS_URL is not set (the run command starts a local redis)")
    names = [queue_name(config.queue_prefix, q) for q in (queues or ALL_QUEUES)]
    conn = redis_connection(config.redis_url)
    try:
        preload_job_modules()            # also reads the workers' tuning settings (README): a bad one stops here
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    worker = Worker(names, connection=conn, name=name)
    return worker.work(burst=burst, with_scheduler=True)
