"""RQ queues: names, connection, enqueue helpers. Used by the web layer (enqueue) and workers (consume).

Three queues, consumed in priority order by `flask --app shopify_app worker`:
- `{prefix}:webhooks` - order/customer events: small and latency-sensitive;
- `{prefix}:default`  - imports, rule refreshes, tag sync;
- `{prefix}:models`   - heavy scheduled refits (BG/NBD, k-means), kept apart so they never delay webhooks
  (the run command gives them their own worker process).
"""
from __future__ import annotations

from redis import Redis
from rq import Queue, Retry

WEBHOOKS, DEFAULT, MODELS = "webhooks", "default", "models"
ALL_QUEUES = (WEBHOOKS, DEFAULT, MODELS)

# Retried safely because every job is idempotent; the backoff spreads retries over ~2 minutes.
DEFAULT_RETRY = Retry(max=5, interval=[2, 5, 15, 30, 60])

_connections: dict[str, Redis] = {}


def redis_connection(url: str) -> Redis:
    conn = _connections.get(url)
    if conn is None:
        # Short connect timeout: a webhook answer must not hang on an unreachable Redis (the delivery row is
        # already recorded; the sweeper enqueues it later).
        conn = _connections[url] = Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)
    return conn


def queue_name(prefix: str, name: str) -> str:
    return f"{prefix}:{name}"


def get_queue(config, name: str = DEFAULT) -> Queue:
    return Queue(queue_name(config.queue_prefix, name), connection=redis_connection(config.redis_url))


def enqueue(config, name: str, func, *args, job_id: str | None = None, retry: Retry | None = DEFAULT_RETRY,
            timeout: int | None = None, **kwargs):
    """Enqueue `func(*args, **kwargs)`; functions are referenced by dotted path so the web process never
    imports worker code."""
    q = get_queue(config, name)
    return q.enqueue(func, args=args, kwargs=kwargs, job_id=job_id, retry=retry, job_timeout=timeout)
