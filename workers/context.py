"""What a job needs: the config (from the environment, like the web app) and database sessions."""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

from sqlalchemy.orm import Session

from shopify_app.config import Config
from shopify_app.db import session_scope

_override: Config | None = None


def set_config(config: Config | None) -> None:
    """Used by in-process workers (tests) to run jobs with an explicit config."""
    global _override
    _override = config
    _env_config.cache_clear()


@functools.lru_cache(maxsize=1)
def _env_config() -> Config:
    return Config.from_env()


def config() -> Config:
    return _override or _env_config()


@contextlib.contextmanager
def transaction() -> Iterator[Session]:
    with session_scope(config().sqlalchemy_url) as s:
        yield s
