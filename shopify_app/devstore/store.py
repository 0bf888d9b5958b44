"""DevStore: every dev shop, app, token and record the stand-in knows, in memory.

One `threading.RLock` (`store.lock`) guards all writes and every GraphQL request; bulk operations copy the list of
root records under the lock and then read them without it (records are only ever replaced field by field, so a
bulk export sees each record either before or after a concurrent tag change, as on Shopify).

Ids come from one counter per store, so a number is never reused across types or shops (Shopify ids are global).
"""
from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from .models import (
    UTC, ZERO, BulkOperation, Customer, Discount, LineItem, Order, Product, Refund, RefundLine, Segment, Variant,
    WebhookSubscription, money,
)
# Module level, not in create_order: a function-level relative import costs a few microseconds per order.
from .webhooks import order_event

log = logging.getLogger("shopify_app.devstore")

SHOP_DOMAIN_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]*\.myshopify\.com$")

# Shopify plans -> (bucket size, restore rate / s) for the GraphQL Admin API (shopify.dev rate limits).
PLAN_LIMITS = {"Basic": (2000, 100), "Standard": (2000, 100), "Shopify": (2000, 100), "Advanced": (4000, 200),
               "Shopify Plus": (20000, 1000), "Enterprise": (40000, 2000), "Developer Preview": (2000, 100)}


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


@dataclass
class App:
    api_key: str
    api_secret: str
    app_url: str = "http://127.0.0.1:8000"
    scopes: str = "read_orders,read_all_orders,read_customers,write_customers,read_products,write_discounts"
    name: str = "Segments & Bundles"


@dataclass
class AccessToken:
    token: str
    shop: str
    api_key: str
    scope: str
    expires_at: float | None = None      # epoch seconds; None = non-expiring offline token
    refresh_token: str | None = None
    refresh_expires_at: float | None = None
    revoked: bool = False


@dataclass
class Shop:
    domain: str
    id: int
    name: str
    currency: str = "USD"
    iana_timezone: str = "UTC"
    plan: str = "Standard"
    email: str = ""
    created_at: dt.datetime = field(default_factory=now)
    customers: dict = field(default_factory=dict)
    products: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)
    orders: dict = field(default_factory=dict)
    discounts: dict = field(default_factory=dict)
    segments: dict = field(default_factory=dict)
    bulk_operations: dict = field(default_factory=dict)
    webhook_subscriptions: dict = field(default_factory=dict)
    installed: set = field(default_factory=set)      # api keys
    next_order_number: int = 1001
    line_items: dict = field(default_factory=dict)   # id -> LineItem, for node(id)
    refunds: dict = field(default_factory=dict)
    products_by_handle: dict = field(default_factory=dict)

    @property
    def name_only(self) -> str:
        return self.domain.split(".", 1)[0]


class DevStore:
    """The whole stand-in. Create shops and data with these methods; the HTTP layer (server.py) calls the same."""

    def __init__(self, *, apps: list[App] | tuple = (), public_base_url: str | None = None,
                 bucket_size: float | None = None, restore_rate: float | None = None,
                 webhook_mode=None, data_dir: str | None = None):
        from .faults import Faults
        from .throttle import Throttle
        from .webhooks import WebhookDispatcher
        import tempfile

        self.lock = threading.RLock()
        self._ids = itertools.count(1_000_001)
        self.apps: dict[str, App] = {}
        self.shops: dict[str, Shop] = {}
        self.tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, str] = {}   # refresh token -> access token
        self.auth_codes: dict[str, tuple] = {}     # code -> (shop, api_key, scope, expires)
        self.used_session_jtis: set[str] = set()
        # Base URL the server is reachable at (set by start_devstore_server / the CLI); used for staged upload
        # and bulk result URLs when there is no request to take it from.
        self.public_base_url = public_base_url
        self.throttle = Throttle(bucket_size=bucket_size, restore_rate=restore_rate)
        self.faults = Faults()
        self.webhooks = WebhookDispatcher(self, mode=webhook_mode)
        self.deprecation_log: list[dict] = []       # every deprecated thing a request used; tests assert == []
        self.request_log = collections.deque(maxlen=10_000)  # (shop, app, operation, cost) per GraphQL request
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="devstore-")
        self.uploads: dict[str, bytes] = {}         # staged upload key -> content
        # Shopify hides orders created > 60 days ago from apps without read_all_orders; None = off.
        self.order_age_limit_days: int | None = 60
        self.bulk_start_delay = 0.0                 # seconds a bulk operation stays CREATED (polling tests)
        self.bulk_fail_next: str | None = None      # e.g. "INTERNAL_SERVER_ERROR": next bulk op FAILS half way
        for app in apps:
            self.register_app(app)

    # ------------------------------------------------------------------------------------------------ basics
    def next_id(self) -> int:
        return next(self._ids)

    def register_app(self, app: App | None = None, **kwargs) -> App:
        app = app or App(**kwargs)
        self.apps[app.api_key] = app
        return app

    def create_shop(self, domain: str, *, name: str | None = None, currency: str = "USD",
                    iana_timezone: str = "UTC", plan: str = "Standard", email: str | None = None) -> Shop:
        if not SHOP_DOMAIN_RE.match(domain):
            raise ValueError(f"not a myshopify domain: {domain!r}")
        with self.lock:
            if domain in self.shops:
                return self.shops[domain]
            shop = Shop(domain=domain, id=self.next_id(), name=name or domain.split(".")[0].replace("-", " ").title(),
                        currency=currency, iana_timezone=iana_timezone, plan=plan,
                        email=email or f"owner@{domain}")
            self.shops[domain] = shop
            return shop

    def shop(self, domain: str) -> Shop:
        try:
            return self.shops[domain]
        except KeyError:
            raise KeyError(f"unknown dev shop {domain!r}") from None

    # ------------------------------------------------------------------------------------------------ tokens
    def issue_token(self, shop: str, api_key: str, scope: str | None = None, *, expiring: bool = False) -> AccessToken:
        """Install `api_key` on `shop` and return a fresh offline token (also what OAuth/token exchange do)."""
        app = self.apps[api_key]
        sh = self.shop(shop)
        tok = AccessToken(token="shpat_" + secrets.token_hex(16), shop=shop, api_key=api_key,
                          scope=scope if scope is not None else app.scopes)
        if expiring:
            tok.expires_at = time.time() + 3600
            tok.refresh_token = "shprt_" + secrets.token_hex(16)
            tok.refresh_expires_at = time.time() + 90 * 86400
            self.refresh_tokens[tok.refresh_token] = tok.token
        with self.lock:
            self.tokens[tok.token] = tok
            sh.installed.add(api_key)
        return tok

    def install_app(self, shop: str, api_key: str, scope: str | None = None) -> str:
        """Shortcut for tests: install and return a non-expiring offline access token string."""
        return self.issue_token(shop, api_key, scope).token

    def revoke_token(self, token: str) -> None:
        if token in self.tokens:
            self.tokens[token].revoked = True

    def revoke_shop_tokens(self, shop: str, api_key: str | None = None) -> None:
        for tok in self.tokens.values():
            if tok.shop == shop and (api_key is None or tok.api_key == api_key):
                tok.revoked = True

    def check_token(self, token: str | None, shop: str) -> AccessToken | None:
        tok = self.tokens.get(token or "")
        if tok is None or tok.revoked or tok.shop != shop:
            return None
        if tok.expires_at is not None and tok.expires_at < time.time():
            return None
        return tok

    def uninstall_app(self, shop: str, api_key: str) -> None:
        """Merchant uninstalls: tokens stop working, app/uninstalled is delivered (signed with the app secret)."""
        sh = self.shop(shop)
        with self.lock:
            sh.installed.discard(api_key)
            self.revoke_shop_tokens(shop, api_key)
        from .webhooks import shop_payload
        self.webhooks.emit(shop, "app/uninstalled", lambda: shop_payload(sh), api_key=api_key)

    def mint_session_token(self, shop: str, api_key: str, **kwargs) -> str:
        from .oauth import mint_session_token
        return mint_session_token(shop, api_key, self.apps[api_key].api_secret, **kwargs)

    # ------------------------------------------------------------------------------------------------ customers
    def create_customer(self, shop: str, *, first_name=None, last_name=None, email=None, phone=None, tags=(),
                        created_at: dt.datetime | None = None, country=None, note=None, emit: bool = True) -> Customer:
        sh = self.shop(shop)
        with self.lock:
            c = Customer(self.next_id(), first_name=first_name, last_name=last_name, email=email, phone=phone,
                         tags=_norm_tags(tags), created_at=created_at or now(), country=country, note=note)
            sh.customers[c.id] = c
        if emit:
            from .webhooks import customer_payload
            self.webhooks.emit(shop, "customers/create", lambda: customer_payload(sh, c))
        return c

    def update_customer(self, shop: str, customer_id: int, **changes) -> Customer:
        sh = self.shop(shop)
        with self.lock:
            c = sh.customers[customer_id]
            for k, v in changes.items():
                if k == "tags":
                    v = _norm_tags(v)
                setattr(c, k, v)
            c.updated_at = _later(c.updated_at)
        from .webhooks import customer_payload
        self.webhooks.emit(shop, "customers/update", lambda: customer_payload(sh, c))
        return c

    def add_customer_tags(self, shop: str, customer_id: int, tags) -> Customer:
        c = self.shop(shop).customers[customer_id]
        return self.update_customer(shop, customer_id, tags=c.tags + [t for t in _norm_tags(tags) if t not in c.tags])

    def remove_customer_tags(self, shop: str, customer_id: int, tags) -> Customer:
        c = self.shop(shop).customers[customer_id]
        drop = set(_norm_tags(tags))
        return self.update_customer(shop, customer_id, tags=[t for t in c.tags if t not in drop])

    def delete_customer(self, shop: str, customer_id: int) -> None:
        sh = self.shop(shop)
        with self.lock:
            c = sh.customers.pop(customer_id)
            c.deleted = True
        self.webhooks.emit(shop, "customers/delete", lambda: {"id": c.id, "phone": None, "addresses": [],
                                                               "tax_exemptions": [], "email_marketing_consent": None,
                                                               "sms_marketing_consent": None,
                                                               "admin_graphql_api_id": f"gid://shopify/Customer/{c.id}"})

    # ------------------------------------------------------------------------------------------------ products
    def create_product(self, shop: str, *, title: str, price, unit_cost=None, product_type: str = "",
                       vendor: str | None = None, sku: str | None = None, tags=(), handle: str | None = None,
                       created_at: dt.datetime | None = None, variants: list[dict] | None = None) -> Product:
        """A product with one default variant (or `variants=[{"title", "price", "unit_cost", "sku"}, ...])."""
        sh = self.shop(shop)
        with self.lock:
            t = created_at or now()
            handle = handle or _handleize(title) or f"product-{len(sh.products) + 1}"
            base, n = handle, 1
            while handle in sh.products_by_handle:
                n += 1
                handle = f"{base}-{n}"
            p = Product(self.next_id(), title=title, handle=handle, product_type=product_type,
                        vendor=vendor if vendor is not None else sh.name, tags=_norm_tags(tags), created_at=t)
            specs = variants or [{"title": "Default Title", "price": price, "unit_cost": unit_cost, "sku": sku}]
            for pos, spec in enumerate(specs, 1):
                v = Variant(self.next_id(), product=p, title=spec.get("title", "Default Title"), sku=spec.get("sku"),
                            price=spec.get("price", price), unit_cost=spec.get("unit_cost", unit_cost),
                            inventory_item_id=self.next_id(), position=pos, created_at=t)
                p.variants.append(v)
                sh.variants[v.id] = v
            sh.products[p.id] = p
            sh.products_by_handle[p.handle] = p
        return p

    # ------------------------------------------------------------------------------------------------ orders
    def create_order(self, shop: str, *, lines: list[dict], customer_id: int | None = None,
                     processed_at: dt.datetime | None = None, created_at: dt.datetime | None = None,
                     test: bool = False, email: str | None = None, tags=(), discount_code: dict | None = None,
                     presentment_currency: str | None = None, fx_rate=1, paid: bool = True,
                     source_name: str = "web", note: str | None = None, emit: bool = True) -> Order:
        """Create an order. Each line: {"variant_id": id, "quantity": n[, "price", "discount"]} for a product
        line, or {"title": "...", "quantity": n, "price": p} for a custom line (product null, like Shopify's
        custom items / shipping-like charges). `discount_code` = {"code": "X", "amount": "5.00"} spreads a fixed
        discount over the lines (a discount application with allocation method ACROSS)."""
        sh = self.shop(shop)
        with self.lock:
            t = created_at or processed_at or now()
            cust = sh.customers.get(customer_id) if customer_id is not None else None
            if customer_id is not None and cust is None:
                raise KeyError(f"unknown customer {customer_id}")
            o = Order(self.next_id(), number=sh.next_order_number, email=email or (cust.email if cust else None),
                      customer_id=customer_id, created_at=t, processed_at=processed_at or t, test=test,
                      currency=sh.currency, presentment_currency=presentment_currency, fx_rate=Decimal(str(fx_rate)),
                      tags=_norm_tags(tags), paid=paid, source_name=source_name, note=note)
            sh.next_order_number += 1
            for spec in lines:
                self._add_line(sh, o, spec)
            if discount_code:
                self._apply_code(o, discount_code)
            sh.orders[o.id] = o
            if cust is not None:
                cust.order_ids.append(o.id)
        if emit:
            # orders/create and orders/paid carry the same order JSON: written and signed once.
            payload = order_event(sh, o)
            self.webhooks.emit(shop, "orders/create", payload)
            if paid:
                self.webhooks.emit(shop, "orders/paid", payload)
        return o

    def _add_line(self, sh: Shop, o: Order, spec: dict) -> LineItem:
        vid = spec.get("variant_id")
        if vid is not None:
            v = sh.variants[vid]
            li = LineItem(self.next_id(), order=o, product_id=v.product.id, variant_id=v.id, title=v.product.title,
                          variant_title=None if v.title == "Default Title" else v.title, sku=v.sku,
                          quantity=spec.get("quantity", 1), price=spec.get("price", v.price),
                          total_discount=spec.get("discount", ZERO), vendor=v.product.vendor,
                          product_type=v.product.product_type)
        else:
            li = LineItem(self.next_id(), order=o, product_id=None, variant_id=None, title=spec["title"],
                          sku=spec.get("sku"), quantity=spec.get("quantity", 1), price=spec["price"],
                          total_discount=spec.get("discount", ZERO), requires_shipping=False)
        o.line_items.append(li)
        sh.line_items[li.id] = li
        return li

    @staticmethod
    def _apply_code(o: Order, discount_code: dict) -> None:
        amount = money(discount_code.get("amount", "0"))
        gross = o.total_line_items_price
        if gross <= 0 or amount <= 0:
            return
        amount = min(amount, gross)
        remaining = amount
        for i, li in enumerate(o.line_items):
            share = remaining if i == len(o.line_items) - 1 else money(amount * li.original_total / gross)
            share = min(share, li.original_total - li.total_discount)
            li.total_discount += share
            remaining -= share
        o.discount_codes.append({"code": discount_code["code"], "amount": str(amount), "type": "fixed_amount"})
        o.discount_applications.append({"target_type": "line_item", "type": "discount_code", "value": str(amount),
                                        "value_type": "fixed_amount", "allocation_method": "across",
                                        "target_selection": "all", "code": discount_code["code"]})

    def _touch(self, o: Order) -> None:
        o.updated_at = _later(o.updated_at)

    def update_order(self, shop: str, order_id: int, *, tags=None, note=None) -> Order:
        sh = self.shop(shop)
        with self.lock:
            o = sh.orders[order_id]
            if tags is not None:
                o.tags = _norm_tags(tags)
            if note is not None:
                o.note = note
            self._touch(o)
        self.webhooks.emit(shop, "orders/updated", order_event(sh, o))
        return o

    def mark_paid(self, shop: str, order_id: int) -> Order:
        sh = self.shop(shop)
        with self.lock:
            o = sh.orders[order_id]
            o.paid = True
            self._touch(o)
        payload = order_event(sh, o)
        self.webhooks.emit(shop, "orders/paid", payload)
        self.webhooks.emit(shop, "orders/updated", payload)
        return o

    def cancel_order(self, shop: str, order_id: int, *, reason: str = "customer", at: dt.datetime | None = None,
                     emit: bool = True) -> Order:
        sh = self.shop(shop)
        with self.lock:
            o = sh.orders[order_id]
            o.cancelled_at = at or now()
            o.cancel_reason = reason
            o.closed_at = o.cancelled_at
            # Historical replays (seed) pass `at`: updated_at is then that time, not the wall clock.
            o.updated_at = max(o.updated_at, at) if at is not None else _later(o.updated_at)
        if emit:
            payload = order_event(sh, o)
            self.webhooks.emit(shop, "orders/cancelled", payload)
            self.webhooks.emit(shop, "orders/updated", payload)
        return o

    def refund_order(self, shop: str, order_id: int, lines: list[tuple[int, int]] | None = None, *,
                     note: str | None = None, at: dt.datetime | None = None, emit: bool = True) -> Refund:
        """Refund (line_item_id, quantity) pairs; None = everything still refundable."""
        sh = self.shop(shop)
        with self.lock:
            o = sh.orders[order_id]
            if lines is None:
                lines = [(li.id, li.quantity - li.refunded_quantity) for li in o.line_items]
            t = at or now()
            r = Refund(self.next_id(), order=o, created_at=t, note=note)
            total = ZERO
            for li_id, qty in lines:
                li = next(x for x in o.line_items if x.id == li_id)
                qty = min(int(qty), li.quantity - li.refunded_quantity)
                if qty <= 0:
                    continue
                per_unit = (li.original_total - li.total_discount) / li.quantity
                sub = money(per_unit * qty)
                li.refunded_quantity += qty
                r.lines.append(RefundLine(self.next_id(), li, qty, sub))
                total += sub
            r.amount = money(total)
            o.refunds.append(r)
            sh.refunds[r.id] = r
            o.updated_at = max(o.updated_at, at) if at is not None else _later(o.updated_at)
        if emit:
            from .webhooks import refund_payload
            self.webhooks.emit(shop, "refunds/create", lambda: refund_payload(sh, r))
            self.webhooks.emit(shop, "orders/updated", order_event(sh, o))
        return r

    def delete_order(self, shop: str, order_id: int) -> None:
        sh = self.shop(shop)
        with self.lock:
            o = sh.orders.pop(order_id)
            o.deleted = True
            if o.customer_id in sh.customers:
                ids = sh.customers[o.customer_id].order_ids
                if order_id in ids:
                    ids.remove(order_id)
        self.webhooks.emit(shop, "orders/delete", lambda: {"id": o.id})

    def generate_orders(self, shop: str, n: int, *, customers: int = 1000, products: int = 200,
                        lines_per_order: int = 3, start: dt.datetime | None = None, seed: int = 1) -> None:
        """Fast synthetic data for scale tests and benches: no webhooks, deterministic."""
        import random
        rng = random.Random(seed)
        self.shop(shop)   # KeyError early for an unknown shop
        start = start or dt.datetime(2025, 1, 1, tzinfo=UTC)
        with self.lock:
            cust_ids = [self.create_customer(shop, first_name=f"C{i}", email=f"c{i}@example.com", emit=False,
                                             created_at=start).id for i in range(customers)]
            var_ids = [self.create_product(shop, title=f"Product {i}", price=rng.randint(1, 100),
                                           unit_cost=rng.randint(1, 50), created_at=start).variants[0].id
                       for i in range(products)]
            for i in range(n):
                t = start + dt.timedelta(minutes=i)
                cid = cust_ids[rng.randrange(customers)] if rng.random() < 0.8 else None
                lines = [{"variant_id": var_ids[rng.randrange(products)], "quantity": rng.randint(1, 3)}
                         for _ in range(lines_per_order)]
                self.create_order(shop, lines=lines, customer_id=cid, processed_at=t, created_at=t, emit=False)

    # ------------------------------------------------------------------------------------------------ misc writes
    def create_segment(self, shop: str, name: str, query: str) -> Segment:
        sh = self.shop(shop)
        with self.lock:
            s = Segment(self.next_id(), name=name, query=query, created_at=now())
            sh.segments[s.id] = s
        return s

    def create_discount(self, shop: str, *, method: str, kind: str, title: str, code: str | None = None,
                        starts_at=None, ends_at=None, input: dict | None = None) -> Discount:
        sh = self.shop(shop)
        with self.lock:
            d = Discount(self.next_id(), kind=kind, method=method, title=title, code=code,
                         starts_at=starts_at or now(), ends_at=ends_at, input=input, created_at=now())
            sh.discounts[d.id] = d
        return d

    def subscribe_webhook(self, shop: str, topic: str, uri: str, *, api_key: str | None = None,
                          name: str | None = None, include_fields=()) -> WebhookSubscription:
        """Like a `[[webhooks.subscriptions]]` entry of shopify.app.toml. `topic` as "orders/create" or
        "ORDERS_CREATE"; `uri` absolute, or relative to the app's app_url ("/webhooks/orders")."""
        sh = self.shop(shop)
        api_key = api_key or _only(self.apps)
        with self.lock:
            w = WebhookSubscription(self.next_id(), topic=_rest_topic(topic), uri=uri, api_key=api_key, name=name,
                                    include_fields=include_fields, created_at=now())
            sh.webhook_subscriptions[w.id] = w
        return w

    def subscribe_from_app_toml(self, shop: str, toml_path, *, api_key: str | None = None) -> list:
        """Every `[[webhooks.subscriptions]]` of a shopify.app.toml (topics and compliance_topics, uri, name,
        include_fields), as Shopify does for app-specific subscriptions at install."""
        import tomllib
        with open(toml_path, "rb") as fh:
            cfg = tomllib.load(fh)
        out = []
        for sub in (cfg.get("webhooks") or {}).get("subscriptions", []):
            for topic in list(sub.get("topics", [])) + list(sub.get("compliance_topics", [])):
                out.append(self.subscribe_webhook(shop, topic, sub["uri"], api_key=api_key, name=sub.get("name"),
                                                  include_fields=sub.get("include_fields") or ()))
        return out

    def trigger_compliance(self, shop: str, topic: str, *, customer_id: int | None = None,
                           api_key: str | None = None) -> None:
        """customers/data_request, customers/redact or shop/redact, as Shopify sends them (mandatory topics)."""
        from .webhooks import compliance_payload
        sh = self.shop(shop)
        topic = _rest_topic(topic)
        if topic not in ("customers/data_request", "customers/redact", "shop/redact"):
            raise ValueError(f"not a compliance topic: {topic}")
        self.webhooks.emit(shop, topic, lambda: compliance_payload(sh, topic, customer_id), api_key=api_key)

    def new_bulk_operation(self, shop: str, type_: str, query: str, api_key: str) -> BulkOperation:
        sh = self.shop(shop)
        op = BulkOperation(self.next_id(), type=type_, query=query, created_at=now(), api_key=api_key,
                           shop_domain=shop)
        sh.bulk_operations[op.id] = op
        return op


def _norm_tags(tags) -> list[str]:
    if isinstance(tags, str):
        tags = tags.split(",")
    out: list[str] = []
    for t in tags or ():
        t = str(t).strip()
        if t and t not in out:
            out.append(t)
    return out


def _handleize(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _later(t: dt.datetime) -> dt.datetime:
    """An update time strictly after `t` (so updated_at:> filters always see the change), usually now."""
    n = now()
    return n if n > t else t + dt.timedelta(seconds=1)


def _rest_topic(topic: str) -> str:
    """ORDERS_CREATE -> orders/create; orders/create unchanged."""
    if "/" in topic:
        return topic.lower()
    known = {"APP_UNINSTALLED": "app/uninstalled", "BULK_OPERATIONS_FINISH": "bulk_operations/finish",
             "CUSTOMERS_DATA_REQUEST": "customers/data_request", "CUSTOMERS_REDACT": "customers/redact",
             "SHOP_REDACT": "shop/redact", "APP_SCOPES_UPDATE": "app/scopes_update"}
    if topic in known:
        return known[topic]
    head, _, tail = topic.lower().partition("_")
    return f"{head}/{tail}"


def graphql_topic(rest_topic: str) -> str:
    return rest_topic.upper().replace("/", "_")


def _only(apps: dict) -> str:
    if len(apps) != 1:
        raise ValueError("several apps registered: pass api_key=")
    return next(iter(apps))
