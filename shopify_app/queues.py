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
            timeout: int | None = None, depends_on=None, **kwargs):
    """Enqueue `func(*args, **kwargs)`; functions are referenced by dotted path so the web process never
    imports worker code."""
    q = get_queue(config, name)
    return q.enqueue(func, args=args, kwargs=kwargs, job_id=job_id, retry=retry, job_timeout=timeout,
                     depends_on=depends_on)


# --------------------------------------------------------------------------------------------- coalesced jobs
WAITING_STATUSES = {"queued", "deferred", "scheduled"}   # a job in these states has not read its input yet


def _status(job_id: str, conn):
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob

    try:
        job = RQJob.fetch(job_id, connection=conn)
    except NoSuchJobError:
        return None, None
    return job, job.get_status(refresh=False)


def enqueue_unless_waiting(config, name: str, func, *args, job_id: str, timeout: int | None = None):
    """Enqueue under `job_id` unless a job with that id is still waiting (it will read the caller's input when it
    starts, so it is reused). While one runs, the follow-up id `job_id + "-next"` is used, queued behind it (see
    enqueue_coalesced): enqueueing a running job's own id would overwrite the running job's RQ record, and RQ's
    end-of-job cleanup would then give the queued copy an expiry, after which it silently disappears from a busy
    queue - the caller's change unprocessed."""
    return enqueue_coalesced(config, name, func, *args, job_ids=(job_id, job_id + "-next"), timeout=timeout)


def enqueue_coalesced(config, name: str, func, *args, job_ids: tuple[str, ...], timeout: int | None = None):
    """One waiting job per id: a job still waiting under one of `job_ids` is reused (it reads its input when it
    starts, so it will see what the caller just wrote). With two ids (job, follow-up), a running job makes the
    follow-up id the one used, since the running job may have read its input already: at most one running and
    one waiting job.

    The new job *depends on* the running one (RQ dependency, failure allowed): it stays 'deferred' - still
    waiting, so still reused - until the running job has ended, and RQ queues it then. Without that, a second
    worker would start the follow-up while the first job runs; with both ids running, a change written just
    before this call had no job left to read it (the order job kept draining to cover that; the rules mining
    did not). Now both ids are running only when a job was enqueued past this function (e.g. the order job's
    `followup=True` path): then None is returned and the caller must cover it. A worker killed mid-job leaves
    its job 'started' until RQ's registry cleanup marks it failed, which then releases the deferred job."""
    from rq.job import Dependency

    conn = redis_connection(config.redis_url)
    states = [(job_id, *_status(job_id, conn)) for job_id in job_ids]
    for _job_id, job, status in states:
        if status in WAITING_STATUSES:
            return job
    running = [job for _job_id, job, status in states if status == "started"]
    free = [job_id for job_id, _job, status in states if status != "started"]
    if not free:
        return None
    after = Dependency(jobs=running, allow_failure=True) if running else None
    return enqueue(config, name, func, *args, job_id=free[0], timeout=timeout, depends_on=after)


def schedule_coalesced(config, name: str, func, *args, job_ids: tuple[str, ...], in_seconds: float,
                       running_id: str | None = None, retry: Retry | None = DEFAULT_RETRY):
    """`func(*args)` in `in_seconds`, coalesced like enqueue_coalesced, for a job that asks to run again later
    (a paced job deferring itself). `running_id`: the caller's own id, left out (it is ending, not waiting). A job
    still waiting under another of `job_ids` (queued, deferred or scheduled) covers the request: it is returned
    as is. Otherwise the job is scheduled under the first id not 'started'. None: every other id is running, so
    nothing could be scheduled and the caller must do the work now.

    No RQ dependency here, unlike enqueue_coalesced: the caller returns right after this call, so nothing runs
    under its id by the time the scheduled job is due, and RQ's scheduler moves a due job to its queue without
    looking at dependencies."""
    from datetime import timedelta

    conn = redis_connection(config.redis_url)
    states = [(job_id, *_status(job_id, conn)) for job_id in job_ids if job_id != running_id]
    for _job_id, job, status in states:
        if status in WAITING_STATUSES:
            return job
    for job_id, _job, status in states:
        if status != "started":
            return get_queue(config, name).enqueue_in(timedelta(seconds=in_seconds), func, args=args,
                                                      job_id=job_id, retry=retry)
    return None


# --------------------------------------------------------------------------------------------- per-shop order job
ORDER_JOB = "workers.order_jobs.process_pending_orders"
WAKE_TTL = 30      # seconds; only a safety net: the order job deletes the key each time it reads pending rows


def order_job_id(shop_id: int, followup: bool = False) -> str:
    return f"process-orders-{shop_id}" + ("-next" if followup else "")


def order_wake_key(config, shop_id: int) -> str:
    return f"{config.queue_prefix}:wake:orders:{shop_id}"


def enqueue_order_job(config, shop_id: int, followup: bool = False):
    """The shop's order job, coalesced with a follow-up id (see enqueue_coalesced); `followup=True` uses only the
    follow-up id (a running job asking for its own continuation)."""
    ids = (order_job_id(shop_id, True),) if followup else (order_job_id(shop_id), order_job_id(shop_id, True))
    return enqueue_coalesced(config, WEBHOOKS, ORDER_JOB, shop_id, job_ids=ids)


def wake_order_job(config, shop_id: int) -> bool:
    """After committing a pending order delivery: make sure the shop's order job will read it, at the cost of one
    Redis command per delivery in a burst. The wake key is set with NX; only the delivery that sets it enqueues.
    The job deletes the key *before* each read of pending rows, so a row committed after a read finds the key
    gone and enqueues the follow-up; a row committed before the read is read. Returns True when a job is (or
    already was) on its way."""
    conn = redis_connection(config.redis_url)
    if conn.set(order_wake_key(config, shop_id), 1, nx=True, ex=WAKE_TTL):
        enqueue_order_job(config, shop_id)
    return True


def clear_order_wake(config, shop_id: int) -> None:
    """Called by the order job before it reads pending rows (see wake_order_job)."""
    redis_connection(config.redis_url).delete(order_wake_key(config, shop_id))
