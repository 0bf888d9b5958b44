"""Browser harness: headless Debian Chromium (Playwright) against the live app, the Shopify stand-in, a real redis
and real RQ workers, with one shop installed through the real embedded flow and seeded with real data.

Built once per package (tests/ui) and torn down after its last test (database emptied, redis flushed), so the rest
of the suite never sees this shop. Every page load carries a fresh App Bridge session token (`?id_token=`), as the
Shopify admin does; requests to cdn.shopify.com are aborted, so the tests also prove the pages read well without
App Bridge and Polaris (and the machine has no network anyway).
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from shopify_app.config import PROJECT_ROOT, Config
from shopify_app.db import session_scope
from shopify_app.models import CustomerStats, Job, Shop
from tests.conftest import TEST_API_KEY, TEST_API_SECRET, config_env, truncate_all, wait_for

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOP = "ui-retail.myshopify.com"
OTHER_SHOP = "ui-other.myshopify.com"
# Online Retail orders seeded into the main shop: six RFM segments, members over several pages, ~2,000 pair rules;
# the import, segments and rules take ~15-40 s through the stand-in (docs/admin-ui-testing.md). More orders make
# the rules job slow (1,000 orders: 286k pair rules at the default min_count 5).
SEED_ORDERS = int(os.environ.get("UI_SEED_ORDERS", "300"))
IMPORT_TIMEOUT = 240     # an upper bound on a loaded machine, not a speed check
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    skip = None
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (`make browser` installs Debian's chromium)")
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            skip = pytest.mark.skip(reason="playwright is not installed (pip install -e '.[test]')")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if skip is not None:
                item.add_marker(skip)


class _LateApp:
    """WSGI app whose target is set after the server is bound: the app's URL (its port) must be known before
    the stand-in and the app config are built."""

    def __init__(self):
        self.target = None

    def __call__(self, environ, start_response):
        return self.target(environ, start_response)


@dataclass
class UiEnv:
    base_url: str                   # the live app
    store_url: str                  # the Shopify stand-in
    store: object                   # devstore.DevStore
    config: Config
    shop: str = SHOP
    other_shop: str = OTHER_SHOP
    shop_id: int = 0
    other_shop_id: int = 0
    import_seconds: float = 0.0
    import_errors: dict = field(default_factory=dict)
    refit: dict = field(default_factory=dict)     # RQ status / result of the predictions refit
    timings: dict = field(default_factory=dict)   # set-up steps, seconds (printed by test_harness)
    workers: list = field(default_factory=list)

    def token(self, shop: str | None = None, **kw) -> str:
        """A fresh App Bridge session token for `shop` (default: the seeded shop)."""
        return self.store.mint_session_token(shop or self.shop, TEST_API_KEY, **kw)

    def url(self, path: str = "/", shop: str | None = None, token: str | None = "fresh", **params) -> str:
        """Absolute URL of an app page as the Shopify admin loads it (shop, host, embedded, id_token)."""
        shop = shop or self.shop
        q = {"shop": shop, "host": "YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvdWk", "embedded": "1", **params}
        if token == "fresh":
            token = self.token(shop)
        if token:
            q["id_token"] = token
        return f"{self.base_url}{path}?{urlencode(q)}"

    def db(self):
        return session_scope(self.config.database_url)


def _install(env: UiEnv, shop: str) -> None:
    """The admin's first load of the embedded app: token exchange, then the history import is queued."""
    resp = requests.get(env.url("/", shop=shop), timeout=60)
    assert resp.status_code == 200, resp.text[:500]


def _import_done(env: UiEnv, shop: str):
    try:
        return _import_state(env, shop)
    except OperationalError:        # SQLite: a worker holds the write lock (a big batch); ask again later
        return None


def _import_state(env: UiEnv, shop: str):
    with env.db() as s:
        shop_row = s.scalar(select(Shop).where(Shop.domain == shop))
        if shop_row is None:
            return None
        job = s.scalar(select(Job).where(Job.shop_id == shop_row.id, Job.kind == "import")
                       .order_by(Job.id.desc()).limit(1))
        if job is not None and job.status == "failed":
            env.import_errors[shop] = job.error     # RQ retries it (DEFAULT_RETRY); reported if it never ends
        if job is None or job.status != "done" or "rules" not in (job.details or {}):
            return None     # done = segments computed and the bundle rules mined after them
        segmented = s.scalar(select(func.count()).select_from(CustomerStats).where(
            CustomerStats.shop_id == shop_row.id, CustomerStats.segment.is_not(None)))
        return shop_row.id, segmented


def _refit_predictions(env: UiEnv) -> dict:
    """Run the predictive refit through the real MODELS queue, as of the day after the shop's last order (Online
    Retail ends in 2011: "as of today" every customer would look long gone)."""
    from rq.job import Job as RQJob

    from shopify_app.models import Order
    from shopify_app.queues import MODELS, enqueue, redis_connection

    with env.db() as s:
        last = s.scalar(select(func.max(Order.processed_at)).where(Order.shop_id == env.shop_id))
    as_of = (last + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    job = enqueue(env.config, MODELS, "workers.predictive_jobs.refit_predictions", env.shop_id,
                  as_of=as_of.isoformat(), job_id=f"ui-refit-{env.shop_id}", retry=None, timeout=300)
    conn = redis_connection(env.config.redis_url)
    status = wait_for(lambda: (st := RQJob.fetch(job.id, connection=conn).get_status()) in ("finished", "failed")
                      and st, timeout=IMPORT_TIMEOUT, interval=0.2, message="the predictions refit")
    fetched = RQJob.fetch(job.id, connection=conn)
    return {"status": status, "as_of": as_of, "result": fetched.return_value() if status == "finished" else None,
            "error": (fetched.latest_result().exc_string if status == "failed" and fetched.latest_result() else None)}


def _start_workers(config: Config, log_dir: Path) -> list[subprocess.Popen]:
    procs = []
    # A worker of its own for the models queue: the refit must not wait behind the default queue's catalog sync,
    # which the stand-in's query-cost throttle keeps busy for a minute on the full Online Retail catalog.
    for i, queues in enumerate((("webhooks", "default"), ("models",), ("default",))):
        args = [sys.executable, "-m", "flask", "--app", "shopify_app", "worker"]
        for q in queues:
            args += ["-q", q]
        log = open(log_dir / f"worker{i}.log", "wb")
        procs.append(subprocess.Popen(args, env=config_env(config), cwd=PROJECT_ROOT, stdout=log,
                                      stderr=subprocess.STDOUT))
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="package")
def ui_env(database_url, redis_server, tmp_path_factory):
    from werkzeug.serving import make_server

    from shopify_app import create_app
    from shopify_app.devstore import App, DevStore, start_devstore_server
    from shopify_app.devstore.seed import seed_online_retail

    t0 = time.monotonic()
    late = _LateApp()
    httpd = make_server("127.0.0.1", 0, late, threaded=True)
    base_url = f"http://127.0.0.1:{httpd.server_port}"
    store = DevStore(apps=[App(TEST_API_KEY, TEST_API_SECRET, base_url)])
    # end_at: the 2010-2011 data moved forward by whole days (its last invoice yesterday), as the demo does.
    seed_online_retail(store, SHOP, limit_orders=SEED_ORDERS, end_at=dt.datetime.now(dt.timezone.utc))
    seeded = time.monotonic()
    store.create_shop(OTHER_SHOP, name="Other shop", currency="EUR")
    store.generate_orders(OTHER_SHOP, 60, customers=12, products=8, seed=11)
    store_url, stop_store = start_devstore_server(store)
    tmp = tmp_path_factory.mktemp("ui")
    config = Config(env="test", api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, database_url=database_url,
                    redis_url=redis_server, instance_path=str(tmp / "instance"), queue_prefix=f"ui{os.getpid()}",
                    app_url=base_url, shopify_admin_base=f"{store_url}/shops/{{shop}}",
                    # The stand-in's App Bridge, as the demo loads it: inert outside the admin frame, so the tests
                    # that open pages directly still see no App Bridge (tests/ui/test_admin_frame.py uses the frame).
                    app_bridge_src=f"{store_url}/devstore/app-bridge.js")
    app = create_app(config)
    late.target = app
    thread = threading.Thread(target=httpd.serve_forever, name="ui-app", daemon=True)
    thread.start()
    env = UiEnv(base_url=base_url, store_url=store_url, store=store, config=config)
    env.timings["seed"] = seeded - t0
    logs = ARTIFACTS / "logs"        # outside pytest's tmp dirs, which other sessions rotate away
    logs.mkdir(parents=True, exist_ok=True)
    env.workers = _start_workers(config, logs)
    try:
        started = time.monotonic()
        _install(env, SHOP)
        env.shop_id, segmented = wait_for(lambda: _import_done(env, SHOP), timeout=IMPORT_TIMEOUT, interval=0.2,
                                          message=f"the history import of {SHOP} (errors: {env.import_errors})")
        env.import_seconds = time.monotonic() - started
        assert segmented > 0
        t = time.monotonic()
        env.refit = _refit_predictions(env)
        env.timings["refit"] = time.monotonic() - t
        env.timings["install+import"] = env.import_seconds
        t = time.monotonic()
        # The second shop only after the first import: on SQLite the two imports would queue on the write lock.
        _install(env, OTHER_SHOP)
        env.other_shop_id, _ = wait_for(lambda: _import_done(env, OTHER_SHOP), timeout=IMPORT_TIMEOUT,
                                        interval=0.2,
                                        message=f"the history import of {OTHER_SHOP} (errors: {env.import_errors})")
        env.timings["other shop"] = time.monotonic() - t
        yield env
    finally:
        _stop(env.workers)
        httpd.shutdown()
        stop_store()
        truncate_all(database_url)
        import redis

        redis.Redis.from_url(redis_server).flushdb()


# ------------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class PageLog:
    cdn_blocked: list = field(default_factory=list)
    console_errors: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)


def _new_context(browser, **kw):
    ctx = browser.new_context(accept_downloads=True, **kw)
    log = PageLog()
    ctx.route("**/*", lambda route: _route(route, log))
    ctx.set_default_timeout(15_000)
    return ctx, log


def _route(route, log: PageLog):
    url = route.request.url
    if "://cdn.shopify.com" in url:
        log.cdn_blocked.append(url)
        route.abort()
    elif url.startswith(("http://127.0.0.1", "data:", "blob:", "about:")):
        route.continue_()
    else:
        route.abort()           # no third-party requests at all


@pytest.fixture
def page(browser):
    """A fresh browser context and page (1280x900); `page.log` collects blocked CDN requests and JS errors."""
    ctx, log = _new_context(browser, viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.on("console", lambda m: m.type == "error" and log.console_errors.append(m.text))
    pg.on("pageerror", lambda e: log.page_errors.append(str(e)))
    pg.log = log
    yield pg
    ctx.close()


@pytest.fixture
def narrow_page(browser):
    ctx, log = _new_context(browser, viewport={"width": 420, "height": 860}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.log = log
    yield pg
    ctx.close()


def screenshot(page, name: str, full_page: bool = True) -> Path:
    """Save a screenshot to test-artifacts/screenshots/<name>.png (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def copy_for_docs(names: list[str]) -> None:
    dst = PROJECT_ROOT / "docs" / "screenshots"
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(SCREENSHOTS / f"{n}.png", dst / f"{n}.png")
