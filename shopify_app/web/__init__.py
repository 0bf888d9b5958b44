"""Web layer helpers shared by the blueprints: thin views only (verify, load, render, enqueue)."""
from __future__ import annotations

from flask import current_app, g, request
from sqlalchemy.orm import Session

from shopify_app.config import Config
from shopify_app.db import reader_session_factory, session_factory


def app_config() -> Config:
    return current_app.config["APP_CONFIG"]


READ_ONLY_METHODS = {"GET", "HEAD", "OPTIONS"}


def db() -> Session:
    """The request's database session (closed at teardown). GET/HEAD requests read without waiting for workers'
    write transactions (SQLite: deferred BEGIN on a WAL snapshot); other methods take the write lock up front."""
    if "db" not in g:
        url = app_config().sqlalchemy_url
        factory = reader_session_factory(url) if request.method in READ_ONLY_METHODS else session_factory(url)
        g.db = factory()
    return g.db


def db_writer() -> Session:
    """A session for the rare write during a GET (the install on first load); closed at teardown."""
    if "db_writer" not in g:
        g.db_writer = session_factory(app_config().sqlalchemy_url)()
    return g.db_writer
