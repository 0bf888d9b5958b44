"""Page loads read while a worker holds the SQLite write lock (WAL snapshot, deferred BEGIN); writers still queue."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text

from shopify_app.db import get_engine, reader_session_factory, session_factory
from shopify_app.models import Shop


@pytest.fixture
def sqlite_only(db_url):
    if get_engine(db_url).dialect.name != "sqlite":
        pytest.skip("SQLite locking; PostgreSQL readers never wait for writers")
    return db_url


def _run(fn, timeout=10.0):
    out = {}

    def target():
        try:
            out["value"] = fn()
        except Exception as exc:       # surfaced by the assertion below
            out["error"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return t.is_alive(), out


def test_reader_does_not_wait_for_an_open_write_transaction(sqlite_only):
    with session_factory(sqlite_only)() as s:
        s.add(Shop(domain="before.myshopify.com", status="active"))
        s.commit()
    worker = session_factory(sqlite_only)()
    worker.add(Shop(domain="uncommitted.myshopify.com", status="active"))
    worker.flush()                                   # BEGIN IMMEDIATE held, like a long worker transaction
    try:
        def read():
            with reader_session_factory(sqlite_only)() as r:
                return sorted(r.scalars(select(Shop.domain)))
        alive, out = _run(read)
        assert not alive, "the reader waited for the writer"
        assert out.get("value") == ["before.myshopify.com"], out      # the committed snapshot only
        # A second writer queues behind the first (BEGIN IMMEDIATE waits for the lock) ...
        done = threading.Event()

        def write():
            with session_factory(sqlite_only)() as w:
                w.execute(text("UPDATE shops SET name = 'x'"))
                w.commit()
            done.set()
        threading.Thread(target=write, daemon=True).start()
        assert not done.wait(1.0), "a second writer must wait for the first"
        worker.rollback()                              # ... and proceeds once it is released
        assert done.wait(10.0)
    finally:
        worker.rollback()
        worker.close()


def test_page_load_answers_while_a_worker_writes(sqlite_only, client):
    worker = session_factory(sqlite_only)()
    worker.add(Shop(domain="busy.myshopify.com", status="active"))
    worker.flush()
    try:
        alive, out = _run(lambda: client.get("/healthz"))
        assert not alive and out["value"].status_code == 200
    finally:
        worker.rollback()
        worker.close()
