"""HMAC of a signed Shopify query string (OAuth callback, admin links), hex-encoded.

Rule (the project's reading of Shopify's OAuth verification docs; shopify_app.devstore.oauth signs the same
way): drop `hmac` (and the legacy `signature`), sort the remaining parameters by key, join them as `key=value`
with `&`, where keys and values are percent-encoded RFC 3986 style (space as `%20`, never `+`; only letters,
digits and `-._~` left as is), then HMAC-SHA256 with the app's client secret, hex digest; compared in constant time.

Why not ShopifyAPI's `shopify.Session.validate_hmac` (ShopifyAPI 12.7.0, read from
.venv/lib/python3.11/site-packages/shopify/session.py, `__encoded_params_for_signature`)? It does not
percent-encode values: it only replaces `%` with `%25` (and `=` with `%3D` in keys), then `&` with `%26` in the
whole `key=value` pair. A space therefore stays a literal space (neither `%20` nor `+`), and `/`, `:`, `+`, `?`,
non-ASCII etc. are left raw (this is the older "replace %, & and =" escaping some earlier Shopify docs
described), so for any value with such characters (e.g. a `state` containing a space) it computes
a different digest than the percent-encoded rule above and rejects a genuine callback (tests/platform/
test_install.py checks this difference). It also only skips `hmac`, not `signature`, and reads the secret from
class-level global state (`Session.setup(secret=...)`), which is awkward in a multi-app / threaded process. For
plain values (hex code, shop domain, digits, base64url host) both rules agree, which is why Shopify's documented
example verifies with either -- and our own `state` nonces are `secrets.token_urlsafe` ([A-Za-z0-9_-] only), so the
choice only matters for values Shopify itself adds.

Duplicate keys are rejected (a second `shop=` or `state=` appended to a signed URL must not be ambiguous about
which value was signed).
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import quote

EXCLUDED = ("hmac", "signature")


def _pairs(query_pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(query_pairs, Mapping):
        return [(str(k), str(v)) for k, v in query_pairs.items()]
    return [(str(k), str(v)) for k, v in query_pairs]


def signing_message(query_pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> str | None:
    """The string Shopify signs, or None when a key occurs twice (ambiguous: never valid)."""
    pairs = [(k, v) for k, v in _pairs(query_pairs) if k not in EXCLUDED]
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        return None
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(pairs))


def compute_query_hmac(query_pairs: Mapping[str, str] | Iterable[tuple[str, str]], secret: str) -> str | None:
    msg = signing_message(query_pairs)
    if msg is None:
        return None
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()


def verify_query_hmac(query_pairs: Mapping[str, str] | Iterable[tuple[str, str]], secret: str) -> bool:
    """True when the `hmac` parameter is the hex HMAC-SHA256 of the other parameters (see module docstring).

    `query_pairs`: decoded (key, value) pairs, e.g. `parse_qsl(request.query_string.decode(),
    keep_blank_values=True)` or `request.args.items(multi=True)`, or a mapping."""
    pairs = _pairs(query_pairs)
    given = [v for k, v in pairs if k == "hmac"]
    if len(given) != 1 or not secret:
        return False
    expected = compute_query_hmac(pairs, secret)
    if expected is None:
        return False
    return hmac.compare_digest(expected.encode(), given[0].strip().lower().encode())
