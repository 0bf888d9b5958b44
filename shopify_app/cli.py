"""Project commands under `flask --app shopify_app ...`.

    db upgrade|downgrade|current|heads   Alembic migrations on DATABASE_URL
    worker [-q QUEUE ...] [--burst]      an RQ worker on the app's queues
    scheduler                            the RQ cron scheduler with the app's schedules (workers/schedules.py)
    analyze FILE --out DIR               the analytics on an orders file, without Shopify
"""
from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from shopify_app.config import PROJECT_ROOT, Config


def _cfg() -> Config:
    return current_app.config["APP_CONFIG"]


def alembic_config(database_url: str):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade_database(database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def drop_everything(database_url: str) -> None:
    """Empty the database (every table, and Alembic's record), so migrations start from nothing. For the test
    suite and the benches, which build throwaway databases; the app never calls it."""
    from sqlalchemy import text

    from shopify_app.db import get_engine
    from shopify_app.models import Base

    eng = get_engine(database_url)
    with eng.begin() as conn:
        if eng.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        else:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


db_cli = AppGroup("db", help="Database migrations (Alembic).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Upgrade the database to REVISION (default: head)."""
    upgrade_database(_cfg().sqlalchemy_url, revision)
    click.echo(f"database at {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Downgrade the database to REVISION (e.g. -1 or base)."""
    from alembic import command

    command.downgrade(alembic_config(_cfg().sqlalchemy_url), revision)
    click.echo(f"database at {revision}")


@db_cli.command("current")
def db_current() -> None:
    from alembic import command

    command.current(alembic_config(_cfg().sqlalchemy_url), verbose=False)


@db_cli.command("heads")
def db_heads() -> None:
    from alembic import command

    command.heads(alembic_config(_cfg().sqlalchemy_url))


@click.command("worker")
@click.option("-q", "--queue", "queues", multiple=True,
              help="Queue(s) to consume, in priority order (default: webhooks, default, models).")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: host:pid).")
def worker_cmd(queues: tuple[str, ...], burst: bool, name: str | None) -> None:
    """Run an RQ worker on the app's queues (needs REDIS_URL)."""
    from workers.runtime import run_worker

    run_worker(_cfg(), queues or None, burst=burst, name=name)


@click.command("scheduler")
def scheduler_cmd() -> None:
    """Run the RQ cron scheduler that enqueues the periodic jobs (needs REDIS_URL)."""
    from workers.schedules import run_scheduler

    run_scheduler(_cfg())


def register_cli(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(worker_cmd)
    app.cli.add_command(scheduler_cmd)
    try:
        from shopify_app.analytics.offline import analyze_command
    except ImportError:  # the offline analyzer lands with the analytics issue
        return
    app.cli.add_command(analyze_command)
