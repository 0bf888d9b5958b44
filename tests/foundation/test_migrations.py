"""The Alembic migrations build exactly the models' schema, have one head, and round-trip."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from shopify_app.cli import alembic_config, upgrade_database
from shopify_app.db import get_engine
from shopify_app.models import Base
from tests.conftest import _reset_database


def test_single_head(database_url):
    script = ScriptDirectory.from_config(alembic_config(database_url))
    assert len(script.get_heads()) == 1


def test_migrations_match_models(database_url):
    with get_engine(database_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_every_table_carries_shop_id(database_url):
    insp = inspect(get_engine(database_url))
    for table in Base.metadata.sorted_tables:
        cols = {c["name"] for c in insp.get_columns(table.name)}
        assert "shop_id" in cols or table.name == "shops", table.name


def test_downgrade_upgrade_round_trip(tmp_path, database_url):
    # Own database so the session's shared one is untouched (on PostgreSQL: the same server, reset after).
    url = database_url if database_url.startswith("postgresql") else f"sqlite:///{tmp_path / 'rt.sqlite3'}"
    cfg = alembic_config(url)
    _reset_database(url)
    upgrade_database(url)
    names = set(inspect(get_engine(url)).get_table_names())
    assert {"shops", "orders", "webhook_deliveries", "customer_stats"} <= names
    command.downgrade(cfg, "base")
    assert set(inspect(get_engine(url)).get_table_names()) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    assert set(inspect(get_engine(url)).get_table_names()) == names


def test_0008_keeps_recorded_deliveries_and_their_retries_deduplicated(tmp_path, database_url):
    """0008 swaps the two duplicate-check indexes of webhook_deliveries for one unique key (shop_domain, event_id,
    webhook_id): rows recorded before without an event id get '' (a NULL would never conflict), and a retry of any
    recorded delivery is still refused by the key."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    url = database_url if database_url.startswith("postgresql") else f"sqlite:///{tmp_path / 'm8.sqlite3'}"
    cfg = alembic_config(url)
    _reset_database(url)
    try:
        command.upgrade(cfg, "0007")
        insert = text("INSERT INTO webhook_deliveries (shop_domain, topic, webhook_id, event_id, received_at, status, "
                      "attempts) VALUES ('a.myshopify.com', 'orders/create', :w, :e, '2026-11-24 12:00:00', "
                      "'processed', 0)")
        with get_engine(url).begin() as c:
            c.execute(insert, [{"w": "wh-1", "e": None}, {"w": "wh-2", "e": "ev-2"}])
        command.upgrade(cfg, "0008")
        engine = get_engine(url)
        with engine.connect() as c:
            assert c.execute(text("SELECT webhook_id, event_id FROM webhook_deliveries ORDER BY webhook_id")).all() \
                == [("wh-1", ""), ("wh-2", "ev-2")]
        index_names = {i["name"] for i in inspect(engine).get_indexes("webhook_deliveries")}
        assert "ix_webhook_deliveries_event" not in index_names
        for w, e in (("wh-1", ""), ("wh-2", "ev-2")):
            try:
                with engine.begin() as c:
                    c.execute(insert, {"w": w, "e": e})
            except IntegrityError:
                continue
            raise AssertionError(f"a retry of {w} was stored twice")
        command.downgrade(cfg, "0007")
        with get_engine(url).connect() as c:
            assert c.execute(text("SELECT webhook_id, event_id FROM webhook_deliveries ORDER BY webhook_id")).all() \
                == [("wh-1", None), ("wh-2", "ev-2")]
    finally:
        _reset_database(url)
        if database_url.startswith("postgresql"):
            upgrade_database(url)
