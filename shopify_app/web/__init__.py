"""Web layer helpers shared by the blueprints: thin views only (verify, load, render, enqueue)."""
from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from shopify_app.config import Config
from shopify_app.db import session_factory


def app_config() -> Config:
    return current_app.config["APP_CONFIG"]


def db() -> Session:
    """The request's database session (closed at teardown)."""
    if "db" not in g:
        g.db = session_factory(app_config().sqlalchemy_url)()
    return g.db
