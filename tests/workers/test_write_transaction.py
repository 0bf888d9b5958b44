"""workers.context.write_transaction: on SQLite the jobs that write during a stream (compaction, rules, RFM refit)
take the write turn of the intake and the order job, so those wait for them on the turn (woken at once), not in
SQLite's busy handler; elsewhere it is a plain transaction."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from shopify_app.db import get_engine, sqlite_write_turn
from shopify_app.models import Shop
from workers import context


@pytest.fixture
def ctx(config):
    context.set_config(config)
    yield config
    context.set_config(None)


def test_write_transaction_holds_the_write_turn_on_sqlite(ctx):
    if get_engine(ctx.sqlalchemy_url).dialect.name != "sqlite":
        pytest.skip("the write turn exists on SQLite files only")
    inside, leave, turn_taken = threading.Event(), threading.Event(), threading.Event()

    def job():
        with context.write_transaction() as s:
            s.execute(select(Shop.id)).all()      # BEGIN IMMEDIATE: the job holds SQLite's lock
            inside.set()
            leave.wait(10)

    def frequent_writer():                        # the order job / the intake
        with sqlite_write_turn(ctx.sqlalchemy_url):
            turn_taken.set()

    t = threading.Thread(target=job)
    t.start()
    assert inside.wait(10)
    w = threading.Thread(target=frequent_writer)
    w.start()
    assert not turn_taken.wait(0.5)               # the turn is the job's while its transaction is open
    leave.set()
    t.join(10)
    assert turn_taken.wait(10)                    # ... and handed over when it ends
    w.join(10)


def test_write_transaction_commits_and_rolls_back(ctx, session):
    with context.write_transaction() as s:
        s.add(Shop(domain="wt-a.myshopify.com"))
    with pytest.raises(RuntimeError):
        with context.write_transaction() as s:
            s.add(Shop(domain="wt-b.myshopify.com"))
            s.flush()
            raise RuntimeError("boom")
    assert session.scalars(select(Shop.domain).where(Shop.domain.like("wt-%"))).all() == ["wt-a.myshopify.com"]
    # the turn was released both times: a frequent writer gets it at once
    with sqlite_write_turn(ctx.sqlalchemy_url):
        pass
