"""OAuth, token exchange, refresh, and App Bridge session tokens -- as Shopify does them.

Callback HMAC rule (what Shopify signs and what `compute_oauth_hmac` computes): take every query parameter
except `hmac` (and the legacy `signature`), sort by key, join as `key=value` with `&`, where each value is
percent-encoded (RFC 3986, space as %20, nothing left unencoded but letters, digits and `-._~`), then hex
HMAC-SHA256 with the client secret. For the usual values (hex code, shop domain, digits, base64url host) the
encoding changes nothing, which is why Shopify's documented example verifies with the plain string.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from urllib.parse import parse_qsl, quote

import jwt

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE = "urn:shopify:params:oauth:token-type:offline-access-token"
ONLINE = "urn:shopify:params:oauth:token-type:online-access-token"


def compute_oauth_hmac(params: dict, secret: str) -> str:
    msg = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in sorted(params.items())
                   if k not in ("hmac", "signature"))
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()


def verify_oauth_hmac(query_string: str, secret: str) -> bool:
    params = dict(parse_qsl(query_string, keep_blank_values=True))
    given = params.get("hmac", "")
    return hmac.compare_digest(compute_oauth_hmac(params, secret), given)


def host_param(shop: str) -> str:
    """The `host` Shopify appends: base64url('admin.shopify.com/store/NAME'), no padding."""
    raw = f"admin.shopify.com/store/{shop.split('.')[0]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def mint_session_token(shop: str, api_key: str, api_secret: str, *, sub: str = "1", lifetime: int = 60,
                       now: float | None = None, sid: str | None = None, **extra) -> str:
    """An App Bridge session token (ID token): HS256 with the client secret, one-minute life."""
    t = int(now if now is not None else time.time())
    claims = {"iss": f"https://{shop}/admin", "dest": f"https://{shop}", "aud": api_key, "sub": str(sub),
              "exp": t + lifetime, "nbf": t, "iat": t, "jti": str(uuid.uuid4()),
              "sid": sid or secrets.token_hex(16)}
    claims.update(extra)
    return jwt.encode(claims, api_secret, algorithm="HS256")


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def body(self) -> dict:
        return {"error": self.error, "error_description": self.description}


def authorize(store, shop: str, args: dict) -> str:
    """GET /admin/oauth/authorize: the merchant approves at once; returns the redirect URL with a signed query."""
    api_key = args.get("client_id", "")
    app = store.apps.get(api_key)
    if app is None:
        raise OAuthError(400, "invalid_request", "Oauth error invalid_request: The client_id is invalid")
    redirect_uri = args.get("redirect_uri") or app.app_url
    if not redirect_uri.startswith(app.app_url.rstrip("/")):
        raise OAuthError(400, "invalid_request",
                         "Oauth error invalid_request: The redirect_uri is not whitelisted")
    scope = args.get("scope") or app.scopes
    code = secrets.token_hex(16)
    store.auth_codes[code] = (shop, api_key, scope, time.time() + 600)
    params = {"code": code, "host": host_param(shop), "shop": shop, "timestamp": str(int(time.time()))}
    if args.get("state") is not None:
        params["state"] = args["state"]
    params["hmac"] = compute_oauth_hmac(params, app.api_secret)
    sep = "&" if "?" in redirect_uri else "?"
    return redirect_uri + sep + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


def _check_client(store, form: dict):
    app = store.apps.get(form.get("client_id", ""))
    if app is None or not hmac.compare_digest(app.api_secret, form.get("client_secret", "")):
        raise OAuthError(400, "invalid_client", "Client credentials are invalid")
    return app


def _token_body(tok, expiring: bool) -> dict:
    body = {"access_token": tok.token, "scope": tok.scope}
    if expiring:
        body.update({"expires_in": int(tok.expires_at - time.time()), "refresh_token": tok.refresh_token,
                     "refresh_token_expires_in": int(tok.refresh_expires_at - time.time())})
    return body


def access_token(store, shop: str, form: dict) -> dict:
    """POST /admin/oauth/access_token for the three grants Shopify supports for this app."""
    app = _check_client(store, form)
    grant = form.get("grant_type") or ("authorization_code" if "code" in form else "")
    expiring = str(form.get("expiring", "0")) == "1"
    if grant == "authorization_code":
        entry = store.auth_codes.pop(form.get("code", ""), None)
        if entry is None or entry[0] != shop or entry[1] != app.api_key or entry[3] < time.time():
            raise OAuthError(400, "invalid_request", "The authorization code was not found or was already used")
        return _token_body(store.issue_token(shop, app.api_key, entry[2], expiring=expiring), expiring)
    if grant == TOKEN_EXCHANGE:
        if form.get("subject_token_type") != ID_TOKEN:
            raise OAuthError(400, "invalid_request", "subject_token_type must be " + ID_TOKEN)
        requested = form.get("requested_token_type", OFFLINE)
        if requested not in (OFFLINE, ONLINE):
            raise OAuthError(400, "invalid_request", "unsupported requested_token_type")
        try:
            claims = jwt.decode(form.get("subject_token", ""), app.api_secret, algorithms=["HS256"],
                                audience=app.api_key, leeway=5,
                                options={"require": ["exp", "nbf", "iat", "aud", "iss", "dest", "sub"]})
        except jwt.PyJWTError as exc:
            raise OAuthError(400, "invalid_subject_token", f"Invalid session token: {exc}") from None
        if claims.get("dest") != f"https://{shop}" or claims.get("iss") != f"https://{shop}/admin":
            raise OAuthError(400, "invalid_subject_token", "Session token is for another shop")
        tok = store.issue_token(shop, app.api_key, app.scopes, expiring=expiring)
        body = _token_body(tok, expiring)
        if requested == ONLINE:
            body["associated_user_scope"] = tok.scope
            body["associated_user"] = {"id": int(claims["sub"]) if str(claims["sub"]).isdigit() else claims["sub"],
                                       "first_name": "Dev", "last_name": "Staff", "email": f"staff@{shop}",
                                       "account_owner": True, "locale": "en", "collaborator": False,
                                       "email_verified": True}
            body.setdefault("expires_in", 86400)
        return body
    if grant == "refresh_token":
        old = store.refresh_tokens.pop(form.get("refresh_token", ""), None)
        tok = store.tokens.get(old) if old else None
        if tok is None or tok.shop != shop or tok.api_key != app.api_key or tok.refresh_expires_at < time.time():
            raise OAuthError(400, "invalid_grant", "The refresh token is invalid or expired")
        tok.revoked = True   # rotation: the previous access token stops working
        return _token_body(store.issue_token(shop, app.api_key, tok.scope, expiring=True), True)
    raise OAuthError(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")
