"""shopify_app.queues.enqueue_coalesced / enqueue_unless_waiting: a change written just before the call is always
read by some job, with real Redis and real RQ workers (two of them, so a follow-up could run beside its job)."""
from __future__ import annotations

import time

from redis import Redis

from shopify_app.queues import DEFAULT, enqueue_coalesced, enqueue_unless_waiting, get_queue, redis_connection
from tests.conftest import wait_for

JOB = "tests.workers.test_queues_coalesced.read_input_then_wait"


def read_input_then_wait(redis_url: str, prefix: str) -> int:
    """The coalesced job under test: reads its input (a counter the 'writer' bumps) when it starts, records what it
    read, then holds its worker until the test opens the gate."""
    r = Redis.from_url(redis_url)
    seen = int(r.get(f"{prefix}:input") or 0)
    r.rpush(f"{prefix}:seen", seen)
    deadline = time.monotonic() + 60
    while not r.exists(f"{prefix}:gate") and time.monotonic() < deadline:
        time.sleep(0.02)
    return seen


def _write_then_enqueue(config, r, prefix, value, ids):
    r.set(f"{prefix}:input", value)                       # the change, committed before the call
    return enqueue_coalesced(config, DEFAULT, JOB, config.redis_url, prefix, job_ids=ids)


def _status(job) -> str:
    return job.get_status(refresh=True)


def test_change_written_while_job_and_followup_exist_is_read(config, redis_server, worker_process):
    """Old behaviour: the follow-up started on the second worker while the job ran, both ids were 'started', the
    next call returned None and the last change was never read. Now the follow-up waits for the job (deferred),
    is reused by the next call, and reads the last change."""
    r = redis_connection(config.redis_url)
    prefix = f"{config.queue_prefix}:t"
    ids = ("coalesce-gate", "coalesce-gate-next")
    worker_process(DEFAULT)
    worker_process(DEFAULT)

    first = _write_then_enqueue(config, r, prefix, 1, ids)
    wait_for(lambda: r.llen(f"{prefix}:seen") == 1, timeout=60, message="the first job to read its input")
    second = _write_then_enqueue(config, r, prefix, 2, ids)
    assert second is not None and second.id == ids[1]
    # old code: queued, then started by the idle second worker; new code: deferred behind the running job
    wait_for(lambda: _status(second) in ("started", "deferred"), timeout=30,
             message="the follow-up to start or be deferred")
    third = _write_then_enqueue(config, r, prefix, 3, ids)
    assert third is not None and third.id == second.id       # old code: None (both running), 3 never read

    r.set(f"{prefix}:gate", 1)
    wait_for(lambda: r.llen(f"{prefix}:seen") == 2 and _status(second) == "finished", timeout=60,
             message="the follow-up to run after the job")
    assert [int(x) for x in r.lrange(f"{prefix}:seen", 0, -1)] == [1, 3]
    assert _status(first) == "finished"


def test_follow_up_waits_for_running_job_then_alternates(config, redis_server):
    """Status set up directly: while one id runs the other is enqueued deferred on it; when both run (a job
    enqueued past the function) None is returned; a finished id is reused for the next round, behind the
    running one."""
    from rq.job import Job as RQJob

    ids = ("coalesce-a", "coalesce-a-next")
    a = enqueue_coalesced(config, DEFAULT, JOB, "x", "y", job_ids=ids)
    assert a.id == ids[0] and _status(a) == "queued"
    assert enqueue_coalesced(config, DEFAULT, JOB, "x", "y", job_ids=ids).id == a.id     # waiting: reused
    a.set_status("started")
    b = enqueue_coalesced(config, DEFAULT, JOB, "x", "y", job_ids=ids)
    assert b.id == ids[1] and _status(b) == "deferred" and b.dependency_ids == [a.id]
    b.set_status("started")
    assert enqueue_coalesced(config, DEFAULT, JOB, "x", "y", job_ids=ids) is None
    a.set_status("finished")
    c = enqueue_coalesced(config, DEFAULT, JOB, "x", "y", job_ids=ids)
    assert c.id == ids[0] and _status(c) == "deferred" and c.dependency_ids == [b.id]
    conn = redis_connection(config.redis_url)
    assert RQJob.fetch(ids[1], connection=conn).get_status() == "started"   # the running job's record untouched


def test_enqueue_unless_waiting_never_reenqueues_a_running_id(config, redis_server):
    """A running job's own id is not enqueued again (that overwrote its RQ record); the follow-up id waits."""
    a = enqueue_unless_waiting(config, DEFAULT, JOB, "x", "y", job_id="refit-x-1")
    assert enqueue_unless_waiting(config, DEFAULT, JOB, "x", "y", job_id="refit-x-1").id == a.id == "refit-x-1"
    a.set_status("started")
    b = enqueue_unless_waiting(config, DEFAULT, JOB, "x", "y", job_id="refit-x-1")
    assert b.id == "refit-x-1-next" and _status(b) == "deferred"
    assert _status(a) == "started" and get_queue(config, DEFAULT).job_ids == ["refit-x-1"]


def test_schedule_coalesced_reuses_a_waiting_job_and_skips_the_running_id(config, redis_server):
    """schedule_coalesced (a paced job deferring itself): never under the caller's own id, a job waiting under
    the other id is reused rather than doubled, and with every other id running nothing is scheduled (None)."""
    from rq.job import Job

    from shopify_app.queues import schedule_coalesced

    conn = redis_connection(config.redis_url)
    ids = ("paced-x", "paced-x-next")
    first = schedule_coalesced(config, DEFAULT, JOB, config.redis_url, "p", job_ids=ids, in_seconds=30,
                               running_id=ids[0])
    assert first is not None and first.id == ids[1]
    assert first.get_status(refresh=True) == "scheduled"
    assert first.args == (config.redis_url, "p")
    scheduled = get_queue(config, DEFAULT).scheduled_job_registry.get_job_ids()
    assert scheduled == [ids[1]]

    again = schedule_coalesced(config, DEFAULT, JOB, config.redis_url, "p", job_ids=ids, in_seconds=30,
                               running_id=ids[0])
    assert again.id == first.id
    assert get_queue(config, DEFAULT).scheduled_job_registry.get_job_ids() == [ids[1]]   # not doubled

    Job.fetch(ids[1], connection=conn).set_status("started")
    assert schedule_coalesced(config, DEFAULT, JOB, config.redis_url, "p", job_ids=ids, in_seconds=30,
                              running_id=ids[0]) is None
