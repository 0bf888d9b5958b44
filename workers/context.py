"""What a job needs: the config (from the environment, like the web app) and database sessions."""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Iterator

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from shopify_app.config import Config
from shopify_app.db import reader_scope, session_scope, sqlite_write_turn
from shopify_app.models import Shop

log = logging.getLogger(__name__)

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


LONG_WRITE_S = 0.25


@contextlib.contextmanager
def write_transaction() -> Iterator[Session]:
    """transaction() for a job that writes while orders stream in (count compaction, rules, RFM refit): on SQLite
    it first takes the write turn the webhook intake and the order job take (shopify_app.db.sqlite_write_turn).
    Without it, the order job, holding the turn, slept in SQLite's busy handler (1 .. 100 ms steps) while such a
    job held the lock, and the intake waited behind it; and such a job, polling from the busy handler, lost race
    after race against writers that hand the lock to each other (bench (d): the order job's validate phase took
    1.0-1.3 s instead of ~0.2 in the 5 s windows where a compaction wrote). With the turn, whoever waits is woken by
    the kernel as soon as it is released. Not re-entrant: never open one inside another (a nested write
    transaction cannot work on SQLite anyway). A no-op elsewhere."""
    url = config().sqlalchemy_url
    t0 = time.perf_counter()
    with sqlite_write_turn(url):
        t1 = time.perf_counter()
        with session_scope(url) as s:
            yield s
        held = time.perf_counter() - t1
    if held > LONG_WRITE_S:               # what the intake and the order job waited for: worth a line in the log
        log.info("write transaction held the database's write turn %.2f s (waited %.2f s for it)", held, t1 - t0)


def read_transaction() -> contextlib.AbstractContextManager[Session]:
    """A transaction for a job's long read phase (rules mining, model refits). On SQLite it begins deferred, so it
    takes no write lock: webhooks and order jobs keep committing while it reads (WAL gives it a consistent
    snapshot). Never write through it (see shopify_app.db.reader_session_factory)."""
    return reader_scope(config().sqlalchemy_url)


def admin_client(shop_id: int, **client_kw):
    """A GraphQL client for the shop, with a fresh offline token (an expiring one is refreshed and stored first).
    Raises ShopifyAuthError when Shopify refuses the token (see `mark_shop_needs_reauth`)."""
    from shopify_app.models import Shop
    from shopify_app.shopify.graphql import AdminClient
    from shopify_app.shopify.install import ensure_fresh_token

    with transaction() as s:
        shop = s.get(Shop, shop_id)
        token = ensure_fresh_token(s, config(), shop)
        domain = shop.domain
    return AdminClient.for_shop(config(), domain, token, **client_kw)


def mark_shop_needs_reauth(shop_id: int) -> None:
    """After a 401: stop using the token until the merchant opens the app again (an uninstalled shop stays so)."""
    from shopify_app.models import Shop
    from shopify_app.shopify.install import mark_needs_reauth

    with transaction() as s:
        shop = s.get(Shop, shop_id)
        if shop is not None and shop.status not in ("needs_reauth", "uninstalled"):
            mark_needs_reauth(s, shop)


def lock_shop(s: Session, shop_id: int) -> Shop | None:
    """The shop's row, locked for the rest of `s`'s transaction: every job that writes a shop's analytics takes
    it first, so they serialize per shop (None: no such shop). PostgreSQL: FOR NO KEY UPDATE, which conflicts
    with itself but not with the FOR KEY SHARE that the foreign-key check of every row inserted for the shop takes
    (FOR UPDATE held the webhook intake at the door for a whole order batch; tests/pipeline/test_shop_lock.py).
    SQLite renders no lock: its BEGIN IMMEDIATE already serializes every writer.

    It also bumps the shop's `analytics_generation` (+1, in this transaction; the returned row has the new value,
    `locked_generation(shop)` the one found): an order batch prepared from a snapshot with generation g finds g
    under the lock only when no lock holder committed since (workers.order_jobs._unchanged). The writers of a
    shop's analytics and of its pending deliveries' bodies all take it (grep lock_shop: order_jobs, ingest's
    customers/redact, reconcile_jobs, import_jobs, rebuild_jobs, sequential_jobs, rfm_jobs, rules_jobs); a new
    writer must too. Only the webhook intake writes without it, and it only inserts new deliveries."""
    shop = s.scalar(select(Shop).where(Shop.id == shop_id).with_for_update(key_share=True))
    if shop is None:
        return None
    # updated_at named as itself: the bump is bookkeeping, not a change of the shop (no onupdate stamp). RETURNING:
    # the row object may come from the session's identity map, with an older value.
    bumped = s.execute(update(Shop.__table__).where(Shop.__table__.c.id == shop_id)
                       .values(analytics_generation=Shop.__table__.c.analytics_generation + 1,
                               updated_at=Shop.__table__.c.updated_at)
                       .returning(Shop.__table__.c.analytics_generation)).scalar_one()
    set_committed_value(shop, "analytics_generation", bumped)
    shop.__dict__["_locked_generation"] = bumped - 1
    return shop


def locked_generation(shop: Shop) -> int | None:
    """The analytics_generation lock_shop found (before its bump) for this row, None when not locked here."""
    return shop.__dict__.get("_locked_generation")
