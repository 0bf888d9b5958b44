"""The Job row a long, resumable job reports its progress on (the import, the catalogue sync): shared by the jobs
so "reuse the unfinished one, else start a new one" means the same everywhere."""
from __future__ import annotations

from sqlalchemy import select

from shopify_app.models import Job

from . import context


def current_job(s, shop_id: int, kind: str) -> Job:
    """The shop's latest Job of `kind` unless it is finished ('done' / 'cancelled'): a rerun after a crash resumes
    it; after completion a new one is created (status 'queued', flushed so it has an id)."""
    job = s.scalar(select(Job).where(Job.shop_id == shop_id, Job.kind == kind).order_by(Job.id.desc()).limit(1))
    if job is None or job.status in ("done", "cancelled"):
        job = Job(shop_id=shop_id, kind=kind, status="queued", done=0, details={})
        s.add(job)
        s.flush()
    return job


def update_job(job_id: int, **fields) -> None:
    """Set columns of a Job row in a transaction of its own (progress shows while the job runs)."""
    with context.transaction() as s:
        job = s.get(Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)
