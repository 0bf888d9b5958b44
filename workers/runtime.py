"""Starting RQ workers on the app's queues."""
from __future__ import annotations

from rq import Worker

from shopify_app.config import Config
from shopify_app.queues import ALL_QUEUES, queue_name, redis_connection


def run_worker(config: Config, queues: list[str] | tuple[str, ...] | None = None, burst: bool = False,
               name: str | None = None) -> bool:
    if not config.redis_url:
        raise SystemExit("configuration error: REDIS_URL is not set (the run command starts a local redis)")
    names = [queue_name(config.queue_prefix, q) for q in (queues or ALL_QUEUES)]
    conn = redis_connection(config.redis_url)
    worker = Worker(names, connection=conn, name=name)
    return worker.work(burst=burst, with_scheduler=True)
