"""SQLAlchemy 2.x models. Usable without Flask: workers and Alembic import them directly.

Tenant isolation: every table carries `shop_id` (the `shops` table is the tenant root) and every query in
the app goes through `scoped(...)`/explicit `shop_id ==` filters. Personal data is kept minimal: we store
Shopify ids, an optional display name (deleted on customers/redact) and the numbers the analytics need.

Money is stored as float in the shop's currency (shop_money), rounded to cents by the ingest code.
Times are naive UTC datetimes.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON, BigInteger, Boolean, Date, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


def shop_fk() -> Mapped[int]:
    return mapped_column(Integer, ForeignKey("shops.id", ondelete="CASCADE"), primary_key=True)


# --------------------------------------------------------------------------------------------- tenants
class Shop(Base):
    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True)          # NAME.myshopify.com
    access_token_enc: Mapped[str | None] = mapped_column(Text)              # Fernet-encrypted offline token
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)             # expiring offline tokens only
    token_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    refresh_token_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    scopes: Mapped[str] = mapped_column(Text, default="")
    api_version: Mapped[str] = mapped_column(String(10), default="2026-10")
    # installing | active | needs_reauth | uninstalled
    status: Mapped[str] = mapped_column(String(20), default="installing")
    installed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    uninstalled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    name: Mapped[str | None] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    settings: Mapped[dict] = mapped_column(JSON, default=dict)              # see shopify_app.settings
    orders_watermark: Mapped[dt.datetime | None] = mapped_column(DateTime)  # reconciliation: updated_at seen
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    # +1 in every transaction that takes the shop lock (workers.context.lock_shop): equal values = no lock holder
    # committed in between (the order job's validation, workers.order_jobs._unchanged).
    analytics_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def shop_id(self) -> int:
        return self.id


# --------------------------------------------------------------------------------------------- commerce
class Customer(Base):
    __tablename__ = "customers"

    shop_id: Mapped[int] = shop_fk()
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # Shopify legacy id
    display_name: Mapped[str | None] = mapped_column(String(255))           # optional; erased on redact
    tags: Mapped[list] = mapped_column(JSON, default=list)                  # Shopify tags as last seen
    shopify_updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Product(Base):
    __tablename__ = "products"

    shop_id: Mapped[int] = shop_fk()
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(512), default="")
    product_type: Mapped[str] = mapped_column(String(255), default="")
    vendor: Mapped[str] = mapped_column(String(255), default="")
    unit_cost: Mapped[float | None] = mapped_column(Float)                  # first variant's unit cost
    shopify_updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Order(Base):
    """The latest version of each order we have seen (last writer wins by Shopify's updated_at).

    `contribution` holds exactly what this version added to the aggregates, so the next version is applied as
    (new contribution - stored contribution): replays and out-of-order versions are no-ops.
    """
    __tablename__ = "orders"

    shop_id: Mapped[int] = shop_fk()
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    processed_at: Mapped[dt.datetime] = mapped_column(DateTime)            # order time used by analytics
    shopify_updated_at: Mapped[dt.datetime] = mapped_column(DateTime)      # version
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    financial_status: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3), default="USD")        # shop currency
    subtotal: Mapped[float] = mapped_column(Float, default=0.0)            # after line discounts, shop money
    total_discounts: Mapped[float] = mapped_column(Float, default=0.0)
    total_refunded: Mapped[float] = mapped_column(Float, default=0.0)
    net_revenue: Mapped[float] = mapped_column(Float, default=0.0)
    counted: Mapped[bool] = mapped_column(Boolean, default=True)           # not cancelled/test/deleted
    contribution: Mapped[dict | None] = mapped_column(JSON)
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        Index("ix_orders_shop_customer", "shop_id", "customer_id"),
        Index("ix_orders_shop_processed", "shop_id", "processed_at"),
    )


class OrderLine(Base):
    __tablename__ = "order_lines"

    shop_id: Mapped[int] = shop_fk()
    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    product_id: Mapped[int | None] = mapped_column(BigInteger)             # None: custom line, gift card, tip
    variant_id: Mapped[int | None] = mapped_column(BigInteger)
    product_type: Mapped[str | None] = mapped_column(String(255))
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    refunded_quantity: Mapped[int] = mapped_column(Integer, default=0)
    price: Mapped[float] = mapped_column(Float, default=0.0)               # unit price, shop money
    discount: Mapped[float] = mapped_column(Float, default=0.0)            # total discount on the line

    __table_args__ = (Index("ix_order_lines_shop_product", "shop_id", "product_id"),)


# --------------------------------------------------------------------------------------------- intake
class WebhookDelivery(Base):
    """Every authentic delivery is recorded before it is acknowledged: the source of truth for the queue.

    A sweeper re-enqueues rows still `received` after a while, so a lost RQ job or a restarted Redis loses
    nothing. `shop_id` is null only for deliveries naming a shop we do not know (recorded, not processed).
    """
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("shops.id", ondelete="CASCADE"))
    shop_domain: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(64))
    webhook_id: Mapped[str] = mapped_column(String(64))
    # X-Shopify-Event-Id; '' when the delivery named none (never NULL: it is part of the unique key below)
    event_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    api_version: Mapped[str | None] = mapped_column(String(10))
    triggered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # received | processed | ignored | failed | invalid | unknown_shop
    status: Mapped[str] = mapped_column(String(20), default="received")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    body: Mapped[str | None] = mapped_column(Text)                          # raw body; erased after processing

    __table_args__ = (
        # ONE random-key index for both duplicate checks of the intake (web/intake.py): a retry of a delivery has
        # the same (event id, webhook id) -> ON CONFLICT DO NOTHING; another delivery of a recorded event is found
        # by the (shop_domain, event_id) prefix. Two indexes cost ~30 us more per recorded row (migration 0008).
        UniqueConstraint("shop_domain", "event_id", "webhook_id", name="uq_webhook_deliveries_delivery"),
        Index("ix_webhook_deliveries_pending", "shop_id", "status", "id"),
    )


class Job(Base):
    """Long-running work per shop (history import, rebuilds, refits, reconciliation) with progress."""
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(Integer, ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))                   # import | rebuild | refit | reconcile | ...
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed|cancelled
    total: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    cursor: Mapped[str | None] = mapped_column(Text)                # resume point (e.g. JSONL line number)
    bulk_operation_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


# --------------------------------------------------------------------------------------------- analytics state
class CustomerStats(Base):
    """Per-customer aggregates (kept incrementally), RFM scores and current named segment."""
    __tablename__ = "customer_stats"

    shop_id: Mapped[int] = shop_fk()
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_order_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_order_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    orders_count: Mapped[int] = mapped_column(Integer, default=0)
    gross_revenue: Mapped[float] = mapped_column(Float, default=0.0)   # after discounts, before refunds
    refunded: Mapped[float] = mapped_column(Float, default=0.0)
    net_revenue: Mapped[float] = mapped_column(Float, default=0.0)
    discounted_orders: Mapped[int] = mapped_column(Integer, default=0)
    discount_total: Mapped[float] = mapped_column(Float, default=0.0)
    pre_discount_total: Mapped[float] = mapped_column(Float, default=0.0)
    refunded_orders: Mapped[int] = mapped_column(Integer, default=0)
    items_count: Mapped[int] = mapped_column(Integer, default=0)
    product_type_counts: Mapped[dict] = mapped_column(JSON, default=dict)
    recency_days: Mapped[int | None] = mapped_column(Integer)
    r_score: Mapped[int | None] = mapped_column(Integer)
    f_score: Mapped[int | None] = mapped_column(Integer)
    m_score: Mapped[int | None] = mapped_column(Integer)
    segment: Mapped[str | None] = mapped_column(String(40))
    segment_since: Mapped[dt.datetime | None] = mapped_column(DateTime)
    scored_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    # Covering index: segment sizes / revenue (GROUP BY segment) and a segment's members sorted by revenue are read
    # from the index alone (the admin pages of a 100k-customer shop).
    __table_args__ = (Index("ix_customer_stats_shop_segment_members", "shop_id", "segment", "net_revenue",
                            "orders_count", "customer_id"),)


class CustomerPrediction(Base):
    """Predictive outputs per customer, each with the model version and fit date that produced it."""
    __tablename__ = "customer_predictions"

    shop_id: Mapped[int] = shop_fk()
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    p_alive: Mapped[float | None] = mapped_column(Float)
    exp_purchases_30: Mapped[float | None] = mapped_column(Float)
    exp_purchases_90: Mapped[float | None] = mapped_column(Float)
    exp_purchases_365: Mapped[float | None] = mapped_column(Float)
    expected_next_order_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    predicted_aov: Mapped[float | None] = mapped_column(Float)
    clv_12m: Mapped[float | None] = mapped_column(Float)
    churn_band: Mapped[str | None] = mapped_column(String(16))
    value_risk_quadrant: Mapped[str | None] = mapped_column(String(32))
    cluster_id: Mapped[int | None] = mapped_column(Integer)
    cluster_name: Mapped[str | None] = mapped_column(String(80))
    is_outlier: Mapped[bool] = mapped_column(Boolean, default=False)
    model_version: Mapped[str | None] = mapped_column(String(64))
    fitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        Index("ix_customer_predictions_shop_quadrant_clv", "shop_id", "value_risk_quadrant", "clv_12m"),
        Index("ix_customer_predictions_shop_clv", "shop_id", "clv_12m"),
        # A segment's members sorted by CLV or P(alive): the join reads these values from the index alone.
        Index("ix_customer_predictions_shop_customer_values", "shop_id", "customer_id", "clv_12m", "p_alive"),
    )


class ShopModel(Base):
    """Fitted per-shop models and thresholds (RFM quintile edges, BG/NBD, Gamma-Gamma, k-means) as JSON."""
    __tablename__ = "shop_models"

    shop_id: Mapped[int] = shop_fk()
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)   # rfm | bgnbd | gamma_gamma | kmeans
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="ok")     # ok | fallback | failed
    message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    fitted_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    customers_at_fit: Mapped[int] = mapped_column(Integer, default=0)


class SegmentChange(Base):
    """Every change of a customer's named segment: from, to, when."""
    __tablename__ = "segment_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(Integer, ForeignKey("shops.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(BigInteger)
    from_segment: Mapped[str | None] = mapped_column(String(40))
    to_segment: Mapped[str | None] = mapped_column(String(40))
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(String(32))             # order | aging | refit | redact

    __table_args__ = (
        Index("ix_segment_changes_shop_time", "shop_id", "changed_at"),
        Index("ix_segment_changes_shop_customer", "shop_id", "customer_id"),
        Index("ix_segment_changes_shop_to_time", "shop_id", "to_segment", "changed_at"),      # moves in
        Index("ix_segment_changes_shop_from_time", "shop_id", "from_segment", "changed_at"),  # moves out
    )


class SegmentSnapshot(Base):
    """Daily size and revenue per segment, for the movement-over-time charts."""
    __tablename__ = "segment_snapshots"

    shop_id: Mapped[int] = shop_fk()
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    segment: Mapped[str] = mapped_column(String(40), primary_key=True)
    customers: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[float] = mapped_column(Float, default=0.0)
    orders: Mapped[int] = mapped_column(Integer, default=0)


# Item and pair counts. Layout ("base + deltas"): a rebuild writes one sparse matrix per (shop, segment, month
# bucket) into CountSnapshot; live orders add signed deltas: one row per (bucket, item) in ItemCountDelta and per
# bucket in BasketCountDelta (upserted, ~25 per order), and ONE PairCountBlob per (order batch, bucket) holding
# all the batch's signed pair deltas as an analytics.counts pair payload (an average Online Retail order has
# ~1,200 pairs: one upserted row per pair was most of a batch's cost). Counts = snapshot + item / basket delta
# rows + pair blobs (+ legacy PairCountDelta rows), exact; compaction folds them into the snapshot
# (workers.rebuild_jobs.compact_shop, enqueued when a shop's blobs pile up, and hourly).
ALL_SEGMENTS = "*"   # the `segment` key of overall (all customers and guests) counts


class CountSnapshot(Base):
    __tablename__ = "count_snapshots"

    shop_id: Mapped[int] = shop_fk()
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)    # items | pairs | seq_pairs (sequential)
    segment: Mapped[str] = mapped_column(String(40), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(7), primary_key=True)   # YYYY-MM (order month, UTC)
    baskets: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[bytes] = mapped_column(LargeBinary)                   # numpy npz of (ids, counts) or COO
    built_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class BasketCountDelta(Base):
    __tablename__ = "basket_count_deltas"

    shop_id: Mapped[int] = shop_fk()
    segment: Mapped[str] = mapped_column(String(40), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(7), primary_key=True)
    baskets: Mapped[int] = mapped_column(Integer, default=0)


class ItemCountDelta(Base):
    __tablename__ = "item_count_deltas"

    shop_id: Mapped[int] = shop_fk()
    segment: Mapped[str] = mapped_column(String(40), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(7), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer, default=0)


class PairCountDelta(Base):
    """Legacy (before revision 0005): one upserted row per pair. No longer written (see PairCountBlob); still read
    and folded by compaction, so a database with rows left from an older release stays exact. To drop later."""
    __tablename__ = "pair_count_deltas"

    shop_id: Mapped[int] = shop_fk()
    segment: Mapped[str] = mapped_column(String(40), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(7), primary_key=True)
    item_a: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # item_a < item_b
    item_b: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer, default=0)


class PairCountBlob(Base):
    """Signed pair count deltas of one order batch and one bucket: `data` = analytics.counts.encode_pairs payload
    (pairs a < b, counts may be negative, zeros dropped), `pairs` = its number of pairs. Append-only: written by
    the order batch, deleted only by the compaction that folded it (by id) or by a rebuild."""
    __tablename__ = "pair_count_blobs"

    # BigInteger on PostgreSQL; INTEGER PRIMARY KEY on SQLite, so it is the rowid (autoincrement without a table)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    shop_id: Mapped[int] = mapped_column(Integer, ForeignKey("shops.id", ondelete="CASCADE"))
    segment: Mapped[str] = mapped_column(String(40))
    bucket: Mapped[str] = mapped_column(String(7))
    pairs: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (Index("ix_pair_count_blobs_shop_segment_bucket", "shop_id", "segment", "bucket"),)


class SequentialPairDelta(Base):
    """Sequential ("buy next") counts: antecedent orders containing item_a whose customer ordered item_b within
    N days after (N = shop setting `sequential_days`), by the antecedent order's month bucket. See
    shopify_app.analytics.sequential for the exact definition."""
    __tablename__ = "sequential_pair_deltas"

    shop_id: Mapped[int] = shop_fk()
    bucket: Mapped[str] = mapped_column(String(7), primary_key=True)
    item_a: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    item_b: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer, default=0)


class SequentialPairBlob(Base):
    """Signed SequentialPairDelta deltas of one order batch and one bucket (workers.sequential_jobs): `data` =
    numpy npz of ``ids`` (sorted distinct items) and ``i``, ``j``, ``counts``: directed pair (ids[i] -> ids[j]),
    zeros dropped; `pairs` = its number of pairs. Counts = SequentialPairDelta rows (the rebuild's output) + the
    bucket's CountSnapshot of kind 'seq_pairs' + these blobs, exact; compaction folds blobs into that snapshot
    (deleting exactly the blobs it read, by id), a rebuild deletes blobs and snapshots.
    AUTOINCREMENT on SQLite: a deleted blob's id is never reused, so "the blobs a compaction read" stays exact."""
    __tablename__ = "sequential_pair_blobs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    shop_id: Mapped[int] = mapped_column(Integer, ForeignKey("shops.id", ondelete="CASCADE"))
    bucket: Mapped[str] = mapped_column(String(7))
    pairs: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (Index("ix_sequential_pair_blobs_shop_bucket", "shop_id", "bucket"),
                      {"sqlite_autoincrement": True})


class SequentialItemDelta(Base):
    """Denominators of the sequential rules: customer orders containing item_id, by month bucket."""
    __tablename__ = "sequential_item_deltas"

    shop_id: Mapped[int] = shop_fk()
    bucket: Mapped[str] = mapped_column(String(7), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer, default=0)


class AssociationRule(Base):
    """Mined rules, refreshed from the counts (pairs, triples from fpgrowth, sequential)."""
    __tablename__ = "association_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(Integer, ForeignKey("shops.id", ondelete="CASCADE"))
    segment: Mapped[str] = mapped_column(String(40), default=ALL_SEGMENTS)
    kind: Mapped[str] = mapped_column(String(16), default="pair")       # pair | triple | sequential
    antecedent: Mapped[list] = mapped_column(JSON)                      # product ids
    consequent: Mapped[list] = mapped_column(JSON)
    count: Mapped[int] = mapped_column(Integer)
    customers: Mapped[int | None] = mapped_column(Integer)
    support: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    lift: Mapped[float] = mapped_column(Float)
    leverage: Mapped[float | None] = mapped_column(Float)
    conviction: Mapped[float | None] = mapped_column(Float)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (Index("ix_association_rules_shop_kind", "shop_id", "segment", "kind", "lift"),)


# --------------------------------------------------------------------------------------------- activation
class TagSyncState(Base):
    """What namespaced tags we want on a customer in Shopify and what we last wrote."""
    __tablename__ = "tag_sync_state"

    shop_id: Mapped[int] = shop_fk()
    customer_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    desired_tags: Mapped[list] = mapped_column(JSON, default=list)
    applied_tags: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | synced | failed
    error: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_tag_sync_state_shop_status", "shop_id", "status"),)


class ComplianceRequest(Base):
    """GDPR requests received (data_request/redact) and what we did, for the merchant's records."""
    __tablename__ = "compliance_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("shops.id", ondelete="SET NULL"))
    shop_domain: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    result: Mapped[dict] = mapped_column(JSON, default=dict)


# Tables holding a customer's data, for customers/redact and the compliance tests.
CUSTOMER_KEYED = (Customer, CustomerStats, CustomerPrediction, TagSyncState, SegmentChange)
