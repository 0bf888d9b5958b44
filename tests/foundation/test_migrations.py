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
