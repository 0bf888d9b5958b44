"""App Bridge session tokens (the JWT an embedded page sends as `Authorization: Bearer ...`).

Shopify signs them with HS256 using the app's client secret; `aud` is the client id, `dest` the shop's URL,
`iss` the shop admin URL; they live one minute. We allow a few seconds of clock skew.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

import jwt

from shopify_app.shopify.domains import valid_shop_domain

LEEWAY_SECONDS = 5


class InvalidSessionToken(Exception):
    pass


@dataclass(frozen=True)
class SessionToken:
    shop: str            # NAME.myshopify.com, from `dest`
    user_id: str | None  # `sub`
    session_id: str | None
    claims: dict


def decode_session_token(token: str, api_key: str, api_secret: str, leeway: int = LEEWAY_SECONDS) -> SessionToken:
    try:
        claims = jwt.decode(
            token, api_secret, algorithms=["HS256"], audience=api_key, leeway=leeway,
            options={"require": ["exp", "nbf", "iat", "dest", "aud", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidSessionToken(str(exc)) from None
    shop = valid_shop_domain(urlparse(claims.get("dest", "")).hostname)
    if not shop:
        raise InvalidSessionToken("dest is not a shop domain")
    iss_host = urlparse(claims.get("iss", "")).hostname
    if iss_host and iss_host.lower() != shop:
        raise InvalidSessionToken("iss and dest name different shops")
    return SessionToken(shop=shop, user_id=claims.get("sub"), session_id=claims.get("sid"), claims=claims)
