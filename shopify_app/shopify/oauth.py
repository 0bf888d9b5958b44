"""Token exchange: trade an App Bridge session token (ID token) for an Admin API access token.

Embedded apps with Shopify-managed installation never see the OAuth redirect dance: the first authenticated
request carries a session token, and the backend POSTs it to {shop}/admin/oauth/access_token with
grant_type=urn:ietf:params:oauth:grant-type:token-exchange. Offline tokens (the default) are what background
jobs use; `expiring=True` asks for a token with expires_in + refresh_token (see refresh_access_token).

    tok = exchange_session_token(shop, session_token_jwt, api_key, api_secret,
                                 admin_base=config.shopify_admin_base)
    tok.access_token, tok.scope, tok.expires_at, tok.refresh_token

Errors: InvalidSubjectToken (the session token was rejected: the page must fetch a fresh one -- answer the browser
401 with X-Shopify-Retry-Invalid-Session-Request: 1), TokenExchangeError (client credentials / grant problems,
not retried), ShopifyTransientError (429 / 5xx / connection errors after bounded, jittered retries).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

from .graphql import BACKOFF_BASE, BACKOFF_CAP, DEFAULT_TIMEOUT, ShopifyError, ShopifyTransientError

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"
ONLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:online-access-token"


class TokenExchangeError(ShopifyError):
    def __init__(self, message: str, *, status: int, error: str | None = None, description: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.description = description


class InvalidSubjectToken(TokenExchangeError):
    """Shopify refused the session token (expired, wrong shop, bad signature): get a fresh one from App Bridge."""


@dataclass
class AccessToken:
    access_token: str = field(repr=False)
    scope: str
    expires_at: float | None = None            # epoch seconds; None = non-expiring offline token
    refresh_token: str | None = field(default=None, repr=False)
    refresh_token_expires_at: float | None = None
    associated_user: dict | None = None        # online tokens only
    associated_user_scope: str | None = None

    @property
    def online(self) -> bool:
        return self.associated_user is not None

    @property
    def scopes(self) -> list[str]:
        return [s for s in (self.scope or "").split(",") if s]

    def expired(self, now: float | None = None, margin: float = 60.0) -> bool:
        return self.expires_at is not None and (now if now is not None else time.time()) + margin >= self.expires_at

    @classmethod
    def from_response(cls, body: dict, now: float | None = None) -> "AccessToken":
        t = now if now is not None else time.time()
        exp = body.get("expires_in")
        rexp = body.get("refresh_token_expires_in")
        return cls(access_token=body["access_token"], scope=body.get("scope", ""),
                   expires_at=t + float(exp) if exp is not None else None,
                   refresh_token=body.get("refresh_token"),
                   refresh_token_expires_at=t + float(rexp) if rexp is not None else None,
                   associated_user=body.get("associated_user"),
                   associated_user_scope=body.get("associated_user_scope"))


def token_url(shop: str, admin_base: str = "") -> str:
    base = (admin_base or "https://{shop}").rstrip("/")
    base = base.format(shop=shop) if "{shop}" in base else base
    return f"{base}/admin/oauth/access_token"


def _post_token(shop: str, form: dict, *, admin_base: str, session: requests.Session | None, max_retries: int,
                sleep: Callable[[float], None], rng: random.Random | None, timeout) -> AccessToken:
    http = session or requests.Session()
    rng = rng or random.Random()
    url = token_url(shop, admin_base)
    problem = ""
    for attempt in range(max_retries + 1):
        wait = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * rng.uniform(0.5, 1.0)
        try:
            resp = http.post(url, json=form, headers={"Accept": "application/json"}, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as e:
            problem = f"{type(e).__name__}: {e}"
        else:
            if resp.status_code == 200:
                try:
                    return AccessToken.from_response(resp.json())
                except (ValueError, KeyError) as e:
                    raise TokenExchangeError(f"unexpected token response: {e}", status=200) from None
            if resp.status_code == 429 or resp.status_code >= 500:
                problem = f"HTTP {resp.status_code}"
                ra = resp.headers.get("Retry-After")
                if resp.status_code == 429 and ra:
                    try:
                        wait = float(ra)
                    except ValueError:
                        pass
            else:
                try:
                    body: Any = resp.json()
                except ValueError:
                    body = {}
                body = body if isinstance(body, dict) else {}
                error = body.get("error")
                desc = body.get("error_description") or (body.get("errors") if isinstance(body.get("errors"), str)
                                                         else None) or resp.text[:200]
                cls = InvalidSubjectToken if error == "invalid_subject_token" else TokenExchangeError
                raise cls(f"token request for {shop} failed: HTTP {resp.status_code} {error or ''} {desc}".strip(),
                          status=resp.status_code, error=error, description=desc)
        if attempt >= max_retries:
            raise ShopifyTransientError(f"token request for {shop} failed after {attempt + 1} attempts: {problem}",
                                        attempts=attempt + 1)
        sleep(wait)
    raise AssertionError("unreachable")


def exchange_session_token(shop: str, session_token: str, api_key: str, api_secret: str, *, online: bool = False,
                           expiring: bool = False, admin_base: str = "", session: requests.Session | None = None,
                           max_retries: int = 3, sleep: Callable[[float], None] = time.sleep,
                           rng: random.Random | None = None, timeout=DEFAULT_TIMEOUT) -> AccessToken:
    """Token exchange (session token -> offline or online access token)."""
    form = {"client_id": api_key, "client_secret": api_secret, "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": session_token, "subject_token_type": ID_TOKEN_TYPE,
            "requested_token_type": ONLINE_TOKEN_TYPE if online else OFFLINE_TOKEN_TYPE}
    if expiring:
        form["expiring"] = "1"
    return _post_token(shop, form, admin_base=admin_base, session=session, max_retries=max_retries, sleep=sleep,
                       rng=rng, timeout=timeout)


def refresh_access_token(shop: str, refresh_token: str, api_key: str, api_secret: str, *, admin_base: str = "",
                         session: requests.Session | None = None, max_retries: int = 3,
                         sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                         timeout=DEFAULT_TIMEOUT) -> AccessToken:
    """Rotate an expiring offline token (the old access token stops working)."""
    form = {"client_id": api_key, "client_secret": api_secret, "grant_type": "refresh_token",
            "refresh_token": refresh_token}
    return _post_token(shop, form, admin_base=admin_base, session=session, max_retries=max_retries, sleep=sleep,
                       rng=rng, timeout=timeout)
