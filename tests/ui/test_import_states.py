"""Home page states of the history import in the browser: progress while it runs, and a failed import that the
merchant restarts with the Retry button (the real workers run it again and the page then shows the segments)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select

from shopify_app.models import Job, utcnow
from tests.conftest import wait_for
from tests.ui.conftest import screenshot
from tests.ui.helpers import segment_counts, slugify


def _add_job(env, **fields) -> int:
    with env.db() as s:
        job = Job(shop_id=env.other_shop_id, kind="import", **fields)
        s.add(job)
        s.flush()
        return job.id


def test_running_import_shows_accessible_progress(ui_env, page):
    now = utcnow()
    job_id = _add_job(ui_env, status="running", total=1000, done=250, started_at=now - dt.timedelta(seconds=60),
                      message="Importing orders: 250 of 1,000")
    try:
        page.goto(ui_env.url("/", shop=ui_env.other_shop))
        box = page.get_by_test_id("import-progress")
        assert box.is_visible()
        bar = page.get_by_role("progressbar")
        assert bar.get_attribute("aria-valuenow") == "250"
        assert bar.get_attribute("aria-valuemax") == "1000"
        assert "250 of 1,000" in bar.get_attribute("aria-valuetext")
        text = page.get_by_test_id("import-progress-text").inner_text()
        assert "250" in text and "1,000" in text and "25" in text
        # 250 orders in 60 s -> 750 left at the same pace = about 3 minutes.
        assert "3 min" in text
        screenshot(page, "home-importing")
    finally:
        with ui_env.db() as s:
            s.execute(delete(Job).where(Job.id == job_id))


def test_failed_import_retry_runs_it_again(ui_env, page):
    before = segment_counts(ui_env, ui_env.other_shop_id)
    job_id = _add_job(ui_env, status="failed", total=None, done=0, started_at=utcnow(),
                      error="Shopify could not be reached (HTTP 503) after 5 attempts.")
    page.goto(ui_env.url("/", shop=ui_env.other_shop))
    failed = page.get_by_test_id("import-failed")
    assert failed.is_visible()
    assert "HTTP 503" in failed.inner_text()
    screenshot(page, "home-import-failed")
    with page.expect_navigation():
        page.get_by_test_id("retry-import-form").get_by_role("button").click()
    assert page.get_by_test_id("notice-success").is_visible()

    def finished():
        with ui_env.db() as s:
            return s.scalar(select(Job.status).where(Job.id == job_id)) == "done"

    wait_for(finished, timeout=60, interval=0.2, message="the retried import to finish")
    page.goto(ui_env.url("/", shop=ui_env.other_shop))
    assert page.get_by_test_id("import-failed").count() == 0
    rows = page.get_by_test_id("segment-row")
    assert {rows.nth(i).get_attribute("data-segment") for i in range(rows.count())} == {slugify(k) for k in before}
