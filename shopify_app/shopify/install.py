"""Installing a shop and keeping its offline access token usable.

- `install_with_token_exchange`: the embedded (Shopify-managed installation) path: the first page load carries an
  App Bridge session token (`id_token`), which we exchange for an offline token (expiring, with a refresh token).
- `install_with_access_token`: store a token obtained another way (authorization-code grant, shopify_app.web.auth).
- `ensure_fresh_token`: what every job calls before talking to Shopify: decrypts, and rotates an expiring token when
  it is within 5 minutes of expiry. A refused refresh marks the shop `needs_reauth` (the next embedded page load
  re-runs token exchange and brings it back to `active`).

Tokens are stored encrypted (shopify_app.crypto.TokenCipher, Config.fernet_key); they never appear in logs.

Webhook subscriptions are declared in shopify.app.toml (app-specific subscriptions, deployed with `shopify app
deploy`): Shopify creates them for every shop at install, so there is deliberately no webhookSubscriptionCreate call
here (per-shop registration would duplicate them and drift from the toml).
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shopify_app.crypto import TokenCipher
from shopify_app.models import Shop, utcnow

from .graphql import AdminClient, ShopifyAuthError, ShopifyError
from .oauth import AccessToken, TokenExchangeError, exchange_session_token, refresh_access_token

log = logging.getLogger(__name__)

REFRESH_MARGIN = dt.timedelta(minutes=5)
HISTORY_IMPORT_JOB = "workers.import_jobs.start_history_import"
PRODUCT_SYNC_JOB = "workers.catalog_jobs.sync_products"


def _cipher(config) -> TokenCipher:
    return TokenCipher(config.fernet_key)


def _naive_utc(epoch: float | None) -> dt.datetime | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


def _store_token(config, shop: Shop, tok: AccessToken) -> None:
    cipher = _cipher(config)
    shop.access_token_enc = cipher.encrypt(tok.access_token)
    shop.refresh_token_enc = cipher.encrypt(tok.refresh_token)
    shop.token_expires_at = _naive_utc(tok.expires_at)
    shop.refresh_token_expires_at = _naive_utc(tok.refresh_token_expires_at)
    if tok.scope:
        shop.scopes = tok.scope


def fetch_shop_info(config, shop_domain: str, access_token: str) -> dict:
    """The shop's identity from the Admin API (`shop_info` document)."""
    return AdminClient.for_shop(config, shop_domain, access_token, max_retries=2).execute("shop_info")["shop"]


def _apply_shop_info(shop: Shop, info: dict | None) -> None:
    if not info:
        return
    shop.name = info.get("name") or shop.name
    shop.currency = info.get("currencyCode") or shop.currency
    shop.timezone = info.get("ianaTimezone") or shop.timezone


def install_with_access_token(session: Session, config, shop_domain: str, tok: AccessToken) -> Shop:
    """Upsert the shop as installed with `tok` (encrypted), fetch its identity, commit, run `after_install`."""
    # Network first, outside any transaction (SQLite transactions hold the write lock).
    info = None
    try:
        info = fetch_shop_info(config, shop_domain, tok.access_token)
    except ShopifyError as exc:     # identity is cosmetic: keep the install, the next sync fills it in
        log.warning("shop_info after install failed for %s: %s", shop_domain, exc.__class__.__name__)
    for attempt in range(2):
        shop = session.scalar(select(Shop).where(Shop.domain == shop_domain))
        first_install = shop is None or shop.status in ("installing", "uninstalled") or shop.installed_at is None
        if shop is None:
            shop = Shop(domain=shop_domain, settings={})
            session.add(shop)
        _store_token(config, shop, tok)
        shop.status = "active"
        shop.api_version = config.api_version
        shop.uninstalled_at = None
        if first_install:
            shop.installed_at = utcnow()
        _apply_shop_info(shop, info)
        try:
            session.commit()
        except IntegrityError:          # a concurrent request inserted the same domain first: update that row
            session.rollback()
            if attempt:
                raise
            continue
        break
    log.info("installed %s (scopes=%s, expiring=%s)", shop_domain, shop.scopes, shop.token_expires_at is not None)
    if first_install:
        after_install(config, shop)
    return shop


def install_with_token_exchange(session: Session, config, shop_domain: str, session_token: str, *,
                                expiring: bool = True, **http) -> Shop:
    """Exchange the App Bridge session token for an offline token and install/reactivate the shop.

    Raises oauth.InvalidSubjectToken (page must get a fresh session token), TokenExchangeError,
    ShopifyTransientError; nothing is stored on failure."""
    tok = exchange_session_token(shop_domain, session_token, config.api_key, config.api_secret, expiring=expiring,
                                 admin_base=config.shopify_admin_base or "", **http)
    return install_with_access_token(session, config, shop_domain, tok)


def mark_needs_reauth(session: Session, shop: Shop) -> None:
    """The stored token no longer works: stop using it until the merchant opens the app (token exchange again)."""
    if shop.status != "uninstalled":
        shop.status = "needs_reauth"
    session.commit()
    log.warning("shop %s needs re-authorization", shop.domain)


def ensure_fresh_token(session: Session, config, shop: Shop, *, now: dt.datetime | None = None, **http) -> str:
    """The shop's usable offline access token, refreshed first when it expires within 5 minutes.

    Raises ShopifyAuthError (after marking the shop `needs_reauth`) when there is no token or the refresh is
    refused; ShopifyTransientError when Shopify is unreachable (nothing changed, retry later)."""
    now = now or utcnow()
    if shop.status == "uninstalled" or not shop.access_token_enc:
        raise ShopifyAuthError(f"shop {shop.domain} has no usable access token (status {shop.status})", status=401)
    if shop.token_expires_at is None or shop.token_expires_at - REFRESH_MARGIN > now:
        return _cipher(config).decrypt(shop.access_token_enc)

    # Lock the row (PostgreSQL; SQLite serialises writers anyway) and re-read: refresh tokens rotate, so two
    # workers refreshing at once would have the loser's refresh refused and wrongly mark the shop needs_reauth.
    session.refresh(shop, with_for_update=True)
    if shop.token_expires_at is None or shop.token_expires_at - REFRESH_MARGIN > now:
        token = _cipher(config).decrypt(shop.access_token_enc)
        session.commit()
        return token
    cipher = _cipher(config)
    refresh = cipher.decrypt(shop.refresh_token_enc)
    if not refresh or (shop.refresh_token_expires_at is not None and shop.refresh_token_expires_at <= now):
        mark_needs_reauth(session, shop)
        raise ShopifyAuthError(f"access token of {shop.domain} expired and cannot be refreshed", status=401)
    try:
        tok = refresh_access_token(shop.domain, refresh, config.api_key, config.api_secret,
                                   admin_base=config.shopify_admin_base or "", **http)
    except TokenExchangeError as exc:
        mark_needs_reauth(session, shop)
        raise ShopifyAuthError(f"token refresh for {shop.domain} refused: HTTP {exc.status} {exc.error or ''}".strip(),
                               status=exc.status) from None
    except BaseException:
        session.rollback()      # release the row lock; transient failures change nothing
        raise
    _store_token(config, shop, tok)
    session.commit()
    log.info("refreshed access token of %s", shop.domain)
    return tok.access_token


def sync_shop_info(session: Session, config, shop: Shop, **http) -> Shop:
    """Refresh name/currency/timezone; a refused token (401/403) marks the shop `needs_reauth` and re-raises."""
    token = ensure_fresh_token(session, config, shop, **http)
    session.commit()                # no transaction held over the network call
    try:
        info = fetch_shop_info(config, shop.domain, token)
    except ShopifyAuthError:
        mark_needs_reauth(session, shop)
        raise
    _apply_shop_info(shop, info)
    session.commit()
    return shop


def after_install(config, shop: Shop) -> None:
    """First install (or reinstall): import the order history and the product catalogue in the background.

    Enqueued by dotted path so the web process never imports worker code (RQ resolves it when the job runs). A
    Redis outage must not fail the install: the warning is logged and the import can be started later."""
    try:
        from shopify_app.queues import DEFAULT, enqueue

        # A big shop imports for a long time (RQ's default 180 s would kill it); a retry resumes from the cursor.
        enqueue(config, DEFAULT, HISTORY_IMPORT_JOB, shop.id, job_id=f"history-import-{shop.id}", timeout=6 * 3600)
        # Product titles, types and unit costs for the bundle suggestions (small: one paged query).
        enqueue(config, DEFAULT, PRODUCT_SYNC_JOB, shop.id, job_id=f"sync-products-{shop.id}", timeout=3600)
    except Exception as exc:  # noqa: BLE001 - Redis down / misconfigured: never break the install
        log.warning("could not enqueue history import for %s: %s: %s", shop.domain, exc.__class__.__name__, exc)
