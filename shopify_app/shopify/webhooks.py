"""Webhook verification and header parsing (no Flask, no database: usable from views, workers and tests).

- HMAC: `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(client secret, raw body)), compared in constant time.
  Always verify the *raw* bytes, never re-serialized JSON.
- Headers: X-Shopify-Topic, X-Shopify-Hmac-Sha256, X-Shopify-Shop-Domain, X-Shopify-API-Version,
  X-Shopify-Webhook-Id (one per delivery: dedupe key), X-Shopify-Event-Id (shared by every delivery of one
  event), X-Shopify-Triggered-At, optional X-Shopify-Name. Names are case-insensitive.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Mapping

from shopify_app.shopify.domains import valid_shop_domain  # noqa: F401 - also part of this module's API

TOPIC_RE = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+$")
_MORE_THAN_MICROSECONDS = re.compile(r"(\.\d{6})\d+")

COMPLIANCE_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
# Topics that carry an order version (or announce one): consumed by the per-shop order job.
ORDER_TOPICS = frozenset({
    "orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/edited", "orders/delete",
    "orders/fulfilled", "orders/partially_fulfilled", "refunds/create",
})

HEADER_NAMES = {
    "topic": "X-Shopify-Topic",
    "hmac": "X-Shopify-Hmac-Sha256",
    "shop_domain": "X-Shopify-Shop-Domain",
    "api_version": "X-Shopify-API-Version",
    "webhook_id": "X-Shopify-Webhook-Id",
    "event_id": "X-Shopify-Event-Id",
    "triggered_at": "X-Shopify-Triggered-At",
    "name": "X-Shopify-Name",
}
REQUIRED = ("topic", "hmac", "shop_domain", "webhook_id")

# Column sizes of WebhookDelivery: longer values are rejected (400) rather than failing the insert (500).
MAX_LENGTHS = {"topic": 64, "shop_domain": 255, "webhook_id": 64, "event_id": 64, "api_version": 10}


# hashlib releases the GIL while it hashes a buffer of >= 2048 bytes. For a 15 KB webhook body (~10 us of SHA-256)
# that release is a loss in a threaded server: another request thread takes the GIL and this one then waits for it
# back (two thread switches, ~0.35 per request measured under wrk). Fed in slices below that size, the same HMAC
# is computed without releasing the GIL (~1.5 us more CPU, far less than the switches it saves).
_GIL_FREE_CHUNK = 2047


def _digest(raw_body: bytes, secret: str) -> bytes:
    if len(raw_body) <= _GIL_FREE_CHUNK:
        # hmac.digest: OpenSSL's one-shot HMAC, without building an hmac.HMAC object in Python (same bytes).
        return base64.b64encode(hmac.digest(secret.encode("utf-8"), raw_body, hashlib.sha256))
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    view = memoryview(raw_body)
    for start in range(0, len(view), _GIL_FREE_CHUNK):
        mac.update(view[start:start + _GIL_FREE_CHUNK])
    return base64.b64encode(mac.digest())


def compute_webhook_hmac(raw_body: bytes, secret: str) -> str:
    """The header value Shopify would send for `raw_body` (also used by tests and the devstore)."""
    return _digest(raw_body, secret).decode("ascii")


def verify_webhook_hmac(raw_body: bytes, header_value: str | None, secret: str) -> bool:
    """True when `header_value` is the base64 HMAC-SHA256 of the raw body under `secret` (constant time)."""
    if not header_value or not secret:
        return False
    given = header_value.strip().encode("utf-8", "replace")
    return hmac.compare_digest(_digest(raw_body, secret), given)


def parse_triggered_at(value: str | None) -> dt.datetime | None:
    """ISO 8601 (Shopify sends nanoseconds and a Z) -> naive UTC; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python keeps at most 6 fractional digits: trim Shopify's nanoseconds.
    if "." in text:
        text = _MORE_THAN_MICROSECONDS.sub(r"\1", text)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


@dataclass(frozen=True)
class WebhookHeaders:
    topic: str | None
    hmac: str | None
    shop_domain: str | None       # lower-cased as sent; see `valid_shop_domain`
    api_version: str | None
    webhook_id: str | None
    event_id: str | None
    triggered_at: str | None      # raw header; `triggered_at_utc` parses it
    name: str | None
    problems: tuple[str, ...] = field(default=())

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(HEADER_NAMES[k] for k in REQUIRED if not getattr(self, k))

    @property
    def triggered_at_utc(self) -> dt.datetime | None:
        return parse_triggered_at(self.triggered_at)

    @property
    def is_compliance(self) -> bool:
        return self.topic in COMPLIANCE_TOPICS

    def errors(self) -> list[str]:
        """Why the request is malformed (missing/oversized headers, bad shop domain); empty when fine."""
        out = [f"missing header {h}" for h in self.missing]
        out += list(self.problems)
        if self.shop_domain and not valid_shop_domain(self.shop_domain):
            out.append("X-Shopify-Shop-Domain is not a NAME.myshopify.com domain")
        if self.topic and not TOPIC_RE.fullmatch(self.topic):
            out.append("X-Shopify-Topic is not a topic")
        return out


_LOWER_NAMES = tuple((attr, header.lower()) for attr, header in HEADER_NAMES.items())


def parse_webhook_headers(headers: Mapping[str, str]) -> WebhookHeaders:
    """Read the X-Shopify-* headers from any mapping, matching names case-insensitively."""
    lowered: dict[str, str] = {}
    for key, value in headers.items():
        lowered.setdefault(str(key).lower(), value)
    values: dict[str, str | None] = {}
    problems: list[str] = []
    for attr, lower in _LOWER_NAMES:
        header = HEADER_NAMES[attr]
        raw = lowered.get(lower)
        value = raw.strip() if isinstance(raw, str) else None
        value = value or None
        limit = MAX_LENGTHS.get(attr)
        if value and limit and len(value) > limit:
            problems.append(f"header {header} is longer than {limit} characters")
        values[attr] = value
    if values["shop_domain"]:
        values["shop_domain"] = values["shop_domain"].lower()
    if values["topic"]:
        values["topic"] = values["topic"].lower()
    return WebhookHeaders(**values, problems=tuple(problems))
