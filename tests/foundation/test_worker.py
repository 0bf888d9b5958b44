"""A real RQ worker process on a real redis-server runs the app's jobs."""
from __future__ import annotations

from rq.job import Job

from shopify_app.queues import DEFAULT, enqueue, redis_connection
from tests.conftest import wait_for


def test_real_worker_process_runs_a_job(config, worker_process):
    job = enqueue(config, DEFAULT, "workers.maintenance.ping", "hello")
    proc = worker_process()
    conn = redis_connection(config.redis_url)

    def finished():
        j = Job.fetch(job.id, connection=conn)
        return j.get_status() == "finished" and j

    done = wait_for(finished, timeout=30, message="the job to finish")
    assert done.return_value()["token"] == "hello"
    assert done.return_value()["pid"] != proc.pid  # the worker forked a work horse for it
    assert proc.poll() is None


def test_health_endpoint_sees_database_and_redis(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_scheduler_registers_the_periodic_jobs(config):
    from workers.schedules import build_scheduler

    scheduler = build_scheduler(config)
    names = {job.func_name for job in scheduler.get_jobs()}
    assert {"workers.ingest.sweep_stuck_deliveries", "workers.predictive_jobs.refit_all_shops"} <= names
    queues = {job.queue_name for job in scheduler.get_jobs()}
    assert queues <= {f"{config.queue_prefix}:{q}" for q in ("webhooks", "default", "models")}


def test_worker_preloads_every_job_module():
    """Forked work horses inherit the job modules; a renamed or missing module would silently cost every job."""
    from workers.runtime import JOB_MODULES, preload_job_modules

    assert preload_job_modules() == list(JOB_MODULES)
