"""Read models of the admin pages: every query the UI runs, each scoped to one shop.

Speed budget: a page for a shop with 100,000 customers and 1,000,000 orders renders in < 150 ms. So pages never
scan orders; they read CustomerStats / CustomerPrediction aggregates (GROUP BY on the (shop_id, segment) and
(shop_id, value_risk_quadrant) indexes), SegmentSnapshot, the top-N AssociationRule rows, and one page of members
(LIMIT/OFFSET with a stable tie-break). Every function takes `shop_id` and filters by it: a shop never reads
another shop's rows. Results are plain dicts/dataclasses so templates, JSON and CSV share them.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field

from sqlalchemy import and_, func, literal, literal_column, or_, select
from sqlalchemy.orm import Session

from shopify_app.analytics.predictive import QUADRANTS
from shopify_app.analytics.segments import SCHEMES, Scheme
from shopify_app.models import (ALL_SEGMENTS, AssociationRule, Customer, CustomerPrediction, CustomerStats, Job,
                                Product, SegmentChange, SegmentSnapshot, ShopModel, TagSyncState, utcnow)
from shopify_app.settings import ShopSettings

PAGE_SIZE = 50
MAX_SEARCH_LENGTH = 100
ACTIVE_JOB_STATUSES = ("queued", "running")


# ------------------------------------------------------------------------------------------------ segment names
def slugify(name: str) -> str:
    """URL-safe segment key: "Can't lose" -> "can-t-lose" (segment names are not personal data)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def segment_from_slug(slug: str, scheme: str) -> str | None:
    """The segment name of `slug`: the shop's scheme first, then the other schemes (a shop that just switched
    schemes still has members under the old names until the recompute finishes)."""
    order = [scheme] + [k for k in SCHEMES if k != scheme]
    for key in order:
        for name in SCHEMES[key].segments:
            if slugify(name) == slug:
                return name
    return None


def scheme_of(name: str, preferred: str) -> Scheme:
    if name in SCHEMES[preferred].actions:
        return SCHEMES[preferred]
    for sch in SCHEMES.values():
        if name in sch.actions:
            return sch
    return SCHEMES[preferred]


def _ranges(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    if lo == hi:
        return str(lo)
    if values == list(range(lo, hi + 1)):
        return f"{lo}–{hi}"
    return ", ".join(str(v) for v in values)


def segment_definition(scheme_key: str, name: str) -> str:
    """The segment's rule in plain words. Uses analytics.segments.describe_segment when it exists; otherwise it
    is derived from the scheme's (R, FM) grid, one clause per recency score."""
    try:
        from shopify_app.analytics.segments import describe_segment  # added by the segments issue
        return describe_segment(scheme_key, name)
    except (ImportError, KeyError, ValueError):
        pass
    sch = SCHEMES[scheme_key]
    by_r: dict[int, list[int]] = {}
    for (r, fm), seg in sch.grid.items():
        if seg == name:
            by_r.setdefault(r, []).append(fm)
    if not by_r:
        return ""
    clauses = [f"recency score {r} with frequency-and-spend score {_ranges(sorted(fms))}"
               for r, fms in sorted(by_r.items(), reverse=True)]
    return ("Customers with " + "; or ".join(clauses) + ". Scores run 1 (lowest) to 5 (highest): recency 5 = "
            "bought most recently; the frequency-and-spend score is the rounded-up mean of the F and M scores.")


# ------------------------------------------------------------------------------------------------ import progress
@dataclass
class ImportProgress:
    status: str
    total: int | None
    done: int
    percent: float | None
    eta_seconds: int | None
    message: str | None
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_JOB_STATUSES

    def to_json(self) -> dict:
        out = asdict(self)
        for k in ("started_at", "finished_at"):
            out[k] = out[k].isoformat() + "Z" if out[k] else None
        out["active"] = self.active
        return out


def import_progress(s: Session, shop_id: int, now: dt.datetime | None = None) -> ImportProgress | None:
    """The latest history import. ETA = remaining items at the rate observed since started_at."""
    job = s.scalar(select(Job).where(Job.shop_id == shop_id, Job.kind == "import")
                   .order_by(Job.id.desc()).limit(1))
    if job is None:
        return None
    now = now or utcnow()
    total = job.total if job.total and job.total > 0 else None
    done = int(job.done or 0)
    percent = min(100.0, 100.0 * done / total) if total else None
    eta = None
    if job.status == "running" and total and job.started_at and 0 < done < total:
        elapsed = (now - job.started_at).total_seconds()
        if elapsed > 0:
            eta = int(round((total - done) * elapsed / done))
    return ImportProgress(status=job.status, total=total, done=done, percent=percent, eta_seconds=eta,
                          message=job.message, error=job.error, started_at=job.started_at,
                          finished_at=job.finished_at)


# ------------------------------------------------------------------------------------------------ home
@dataclass
class SegmentSummary:
    name: str
    slug: str
    customers: int
    revenue: float
    orders: int
    customer_share: float
    revenue_share: float
    aov: float | None
    change_week: int | None
    change_month: int | None
    too_small: bool
    action: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Overview:
    customers: int = 0
    revenue: float = 0.0
    orders: int = 0
    segments: list[SegmentSummary] = field(default_factory=list)
    min_segment_size: int = 0
    scheme: str = "default"

    @property
    def aov(self) -> float | None:
        return self.revenue / self.orders if self.orders else None


def _snapshot_counts(s: Session, shop_id: int, on_or_before: dt.date) -> dict[str, int] | None:
    """Segment sizes of the latest snapshot day on or before `on_or_before` (None when there is none)."""
    day = s.scalar(select(func.max(SegmentSnapshot.day))
                   .where(SegmentSnapshot.shop_id == shop_id, SegmentSnapshot.day <= on_or_before))
    if day is None:
        return None
    rows = s.execute(select(SegmentSnapshot.segment, SegmentSnapshot.customers)
                     .where(SegmentSnapshot.shop_id == shop_id, SegmentSnapshot.day == day))
    return {seg: int(n) for seg, n in rows}


def overview(s: Session, shop_id: int, settings: ShopSettings, today: dt.date | None = None) -> Overview:
    """Segment sizes, shares, AOV, change vs 7 and 30 days ago (snapshots), small-segment flags, actions."""
    today = today or utcnow().date()
    rows = s.execute(
        select(CustomerStats.segment, func.count(), func.coalesce(func.sum(CustomerStats.net_revenue), 0.0),
               func.coalesce(func.sum(CustomerStats.orders_count), 0))
        .where(CustomerStats.shop_id == shop_id, CustomerStats.orders_count > 0,
               CustomerStats.segment.is_not(None))
        .group_by(CustomerStats.segment)).all()
    ov = Overview(min_segment_size=settings.min_segment_size, scheme=settings.segment_scheme)
    if not rows:
        return ov
    ov.customers = sum(int(r[1]) for r in rows)
    ov.revenue = float(sum(float(r[2]) for r in rows))
    ov.orders = sum(int(r[3]) for r in rows)
    week = _snapshot_counts(s, shop_id, today - dt.timedelta(days=7))
    month = _snapshot_counts(s, shop_id, today - dt.timedelta(days=30))
    sch = SCHEMES[settings.segment_scheme]
    order = {name: i for i, name in enumerate(sch.segments)}
    for name, n, revenue, orders in sorted(rows, key=lambda r: (order.get(r[0], 99), r[0])):
        n, revenue, orders = int(n), float(revenue), int(orders)
        ov.segments.append(SegmentSummary(
            name=name, slug=slugify(name), customers=n, revenue=revenue, orders=orders,
            customer_share=n / ov.customers if ov.customers else 0.0,
            revenue_share=revenue / ov.revenue if ov.revenue else 0.0,
            aov=revenue / orders if orders else None,
            change_week=None if week is None else n - week.get(name, 0),
            change_month=None if month is None else n - month.get(name, 0),
            too_small=0 < n < settings.min_segment_size,
            action=scheme_of(name, settings.segment_scheme).actions.get(name, "")))
    return ov


# ------------------------------------------------------------------------------------------------ segment page
@dataclass
class SegmentTotals:
    customers: int
    revenue: float
    orders: int

    @property
    def aov(self) -> float | None:
        return self.revenue / self.orders if self.orders else None


def segment_totals(s: Session, shop_id: int, segment: str) -> SegmentTotals:
    n, revenue, orders = s.execute(
        select(func.count(), func.coalesce(func.sum(CustomerStats.net_revenue), 0.0),
               func.coalesce(func.sum(CustomerStats.orders_count), 0))
        .where(CustomerStats.shop_id == shop_id, CustomerStats.segment == segment)).one()
    return SegmentTotals(int(n), float(revenue), int(orders))


def segment_history(s: Session, shop_id: int, segment: str, days: int = 365,
                    today: dt.date | None = None) -> list[dict]:
    """Daily snapshots of one segment over the last `days` days, oldest first."""
    today = today or utcnow().date()
    rows = s.execute(select(SegmentSnapshot.day, SegmentSnapshot.customers, SegmentSnapshot.revenue,
                            SegmentSnapshot.orders)
                     .where(SegmentSnapshot.shop_id == shop_id, SegmentSnapshot.segment == segment,
                            SegmentSnapshot.day >= today - dt.timedelta(days=days))
                     .order_by(SegmentSnapshot.day))
    return [{"day": d, "customers": int(c), "revenue": float(r), "orders": int(o)} for d, c, r, o in rows]


def transitions(s: Session, shop_id: int, segment: str, days: int = 30,
                now: dt.datetime | None = None) -> dict[str, list[dict]]:
    """Customers who moved into / out of `segment` in the last `days` days, by the other segment (None = no
    segment: a first order, or a customer who left the scored base)."""
    since = (now or utcnow()) - dt.timedelta(days=days)
    # One pass over the window (index shop_id, changed_at), both directions at once.
    pairs = s.execute(select(SegmentChange.from_segment, SegmentChange.to_segment, func.count(),
                             func.max(SegmentChange.changed_at))
                      .where(SegmentChange.shop_id == shop_id, SegmentChange.changed_at >= since,
                             or_(SegmentChange.to_segment == segment, SegmentChange.from_segment == segment))
                      .group_by(SegmentChange.from_segment, SegmentChange.to_segment)).all()
    into, out = {}, {}
    for frm, to, n, last in pairs:
        if frm == to:
            continue
        other, bucket = (frm, into) if to == segment else (to, out)
        prev = bucket.get(other)
        bucket[other] = (other, int(n) + (prev[1] if prev else 0), max(last, prev[2]) if prev else last)
    into, out = into.values(), out.values()

    def rows(pairs):
        return sorted(({"segment": seg, "slug": slugify(seg) if seg else None, "customers": int(n), "last": last}
                       for seg, n, last in pairs), key=lambda r: (-r["customers"], r["segment"] or ""))
    return {"in": rows(into), "out": rows(out), "days": days}


def tag_sync_counts(s: Session, shop_id: int) -> dict[str, int]:
    """Customers per tag-sync status, shop-wide (read from the (shop_id, status) index alone; a per-segment split
    would need a lookup per member, and tags are written per customer anyway)."""
    rows = s.execute(select(TagSyncState.status, func.count()).where(TagSyncState.shop_id == shop_id)
                     .group_by(TagSyncState.status))
    return {status: int(n) for status, n in rows}


# Sortable member columns: key -> SQL expression. Sort keys come from a fixed list, never from raw input.
MEMBER_COLUMNS = {
    "customer": Customer.display_name,
    "recency": CustomerStats.recency_days,
    "orders": CustomerStats.orders_count,
    "revenue": CustomerStats.net_revenue,
    "r": CustomerStats.r_score,
    "f": CustomerStats.f_score,
    "m": CustomerStats.m_score,
    "clv": CustomerPrediction.clv_12m,
    "p_alive": CustomerPrediction.p_alive,
    "since": CustomerStats.segment_since,
}
DEFAULT_SORT = "-revenue"


def parse_sort(raw: str | None) -> str:
    raw = (raw or "").strip()
    return raw if raw.lstrip("-") in MEMBER_COLUMNS else DEFAULT_SORT


def parse_page(raw) -> int:
    try:
        return max(1, min(int(raw), 1_000_000))
    except (TypeError, ValueError):
        return 1


def clean_query(raw: str | None) -> str:
    return " ".join(str(raw or "").split())[:MAX_SEARCH_LENGTH]


def _members_select(shop_id: int, segment: str):
    return (select(CustomerStats.customer_id, Customer.display_name, CustomerStats.recency_days,
                   CustomerStats.orders_count, CustomerStats.net_revenue, CustomerStats.r_score,
                   CustomerStats.f_score, CustomerStats.m_score, CustomerStats.segment_since,
                   CustomerStats.last_order_at, CustomerPrediction.clv_12m, CustomerPrediction.p_alive,
                   CustomerPrediction.churn_band)
            .select_from(CustomerStats)
            .outerjoin(Customer, and_(Customer.shop_id == CustomerStats.shop_id,
                                      Customer.id == CustomerStats.customer_id))
            .outerjoin(CustomerPrediction, and_(CustomerPrediction.shop_id == CustomerStats.shop_id,
                                                CustomerPrediction.customer_id == CustomerStats.customer_id))
            .where(CustomerStats.shop_id == shop_id, CustomerStats.segment == segment))


def _search_ids(shop_id: int, q: str, dialect: str):
    """Customer ids whose name contains `q` (case-insensitive; % and _ literal), plus `q` itself when it is an id.
    A subquery over the shop's customers: the segment's rows are then probed by primary key, never scanned.
    SQLite's LIKE already ignores case (ASCII letters) and is twice as fast as lower() LIKE; PostgreSQL: ILIKE."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    name = Customer.display_name
    cond = name.like(pattern, escape="\\") if dialect == "sqlite" else name.ilike(pattern, escape="\\")
    by_name = select(Customer.id).where(Customer.shop_id == shop_id, cond)
    if q.isdigit() and len(q) <= 18:
        return by_name.union(select(literal(int(q))))
    return by_name


def _member_dict(row) -> dict:
    return {"customer_id": int(row.customer_id), "name": row.display_name, "recency_days": row.recency_days,
            "orders": int(row.orders_count or 0), "revenue": float(row.net_revenue or 0.0), "r": row.r_score,
            "f": row.f_score, "m": row.m_score, "segment_since": row.segment_since,
            "last_order_at": row.last_order_at, "clv_12m": row.clv_12m, "p_alive": row.p_alive,
            "churn_band": row.churn_band}


@dataclass
class MemberPage:
    rows: list[dict]
    total: int
    page: int
    pages: int
    sort: str
    q: str
    page_size: int = PAGE_SIZE

    def to_json(self) -> dict:
        rows = []
        for r in self.rows:
            r = dict(r)
            for k in ("segment_since", "last_order_at"):
                r[k] = r[k].isoformat() + "Z" if r[k] else None
            rows.append(r)
        return {"rows": rows, "total": self.total, "page": self.page, "pages": self.pages, "sort": self.sort,
                "page_size": self.page_size}


# Sorts answered from the covering index (shop_id, segment, net_revenue, orders_count) without a table lookup.
INDEX_SORTS = ("revenue", "orders")


def members(s: Session, shop_id: int, segment: str, *, page: int = 1, sort: str = DEFAULT_SORT, q: str = "",
            page_size: int = PAGE_SIZE, total: int | None = None) -> MemberPage:
    """One page of a segment's members, sorted by a whitelisted column (NULLs last, customer id breaks ties so
    pages never overlap), optionally filtered by name / customer id."""
    sort = parse_sort(sort)
    q = clean_query(q)
    if q:
        total = None                # computed from the matches below
    elif total is None:
        total = int(s.scalar(select(func.count()).select_from(CustomerStats)
                             .where(CustomerStats.shop_id == shop_id, CustomerStats.segment == segment)) or 0)
    key = sort.lstrip("-")
    col = MEMBER_COLUMNS[key]
    order = col.desc() if sort.startswith("-") else col.asc()
    tie = CustomerStats.customer_id.desc() if sort.startswith("-") else CustomerStats.customer_id.asc()
    ids_stmt = (select(CustomerStats.customer_id).select_from(CustomerStats)
                .where(CustomerStats.shop_id == shop_id, CustomerStats.segment == segment))
    if key == "customer":
        ids_stmt = ids_stmt.outerjoin(Customer, and_(Customer.shop_id == CustomerStats.shop_id,
                                                     Customer.id == CustomerStats.customer_id))
    if key in ("clv", "p_alive"):
        ids_stmt = ids_stmt.outerjoin(CustomerPrediction,
                                      and_(CustomerPrediction.shop_id == CustomerStats.shop_id,
                                           CustomerPrediction.customer_id == CustomerStats.customer_id))
    matches = None
    if q:
        # One pass: every match in order (a name search matches few customers); count and page from it.
        found = _search_ids(shop_id, q, s.bind.dialect.name)
        matches = list(s.scalars(ids_stmt.where(CustomerStats.customer_id.in_(found))
                                 .order_by(order.nulls_last(), tie)))
        total = len(matches)
    pages = max(1, -(-total // page_size))
    page = min(parse_page(page), pages)
    offset = (page - 1) * page_size
    if matches is not None:
        ids = matches[offset:offset + page_size]
    elif key in INDEX_SORTS and s.bind.dialect.name == "sqlite":
        # SQLite: page by rowid, which every index entry carries: sorting the segment reads the covering index
        # only; the 50 rows of the page are then looked up (customer_id is not in the index).
        rowid = literal_column("customer_stats.rowid")
        by_rowid = (order.nulls_last(), rowid.desc() if sort.startswith("-") else rowid.asc())
        rowids = list(s.scalars(select(rowid).select_from(CustomerStats)
                                .where(CustomerStats.shop_id == shop_id, CustomerStats.segment == segment)
                                .order_by(*by_rowid).limit(page_size).offset(offset)))
        ids = list(s.scalars(select(CustomerStats.customer_id)
                             .where(CustomerStats.shop_id == shop_id, rowid.in_(rowids))
                             .order_by(*by_rowid))) if rowids else []
    else:
        ids = list(s.scalars(ids_stmt.order_by(order.nulls_last(), tie).limit(page_size).offset(offset)))
    rows = []
    if ids:
        by_id = {r.customer_id: _member_dict(r)
                 for r in s.execute(_members_select(shop_id, segment).where(CustomerStats.customer_id.in_(ids)))}
        rows = [by_id[i] for i in ids if i in by_id]
    return MemberPage(rows=rows, total=total, page=page, pages=pages, sort=sort, q=q, page_size=page_size)


def iter_members(session_factory, shop_id: int, segment: str, batch: int = 2000):
    """Every member of a segment, in customer-id order, read in keyset batches: each batch is its own short
    transaction (a long-running export never holds a database lock while the client downloads)."""
    after = None
    while True:
        with session_factory() as s:
            stmt = _members_select(shop_id, segment)
            if after is not None:
                stmt = stmt.where(CustomerStats.customer_id > after)
            rows = [_member_dict(r) for r in s.execute(stmt.order_by(CustomerStats.customer_id).limit(batch))]
            s.commit()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1]["customer_id"]


# ------------------------------------------------------------------------------------------------ bundles
def rule_segments(s: Session, shop_id: int) -> list[str]:
    rows = s.scalars(select(AssociationRule.segment).where(AssociationRule.shop_id == shop_id).distinct())
    return sorted(seg for seg in rows if seg != ALL_SEGMENTS)


def rules(s: Session, shop_id: int, segment: str = ALL_SEGMENTS, limit: int = 50) -> dict[str, list[dict]]:
    """Top rules by lift (then confidence, count) per kind, with product titles (one query for all titles)."""
    out: dict[str, list[dict]] = {}
    ids: set[int] = set()
    for kind in ("pair", "triple", "sequential"):
        rows = s.scalars(select(AssociationRule)
                         .where(AssociationRule.shop_id == shop_id, AssociationRule.segment == segment,
                                AssociationRule.kind == kind)
                         .order_by(AssociationRule.lift.desc(), AssociationRule.confidence.desc(),
                                   AssociationRule.count.desc(), AssociationRule.id)
                         .limit(limit)).all()
        out[kind] = [{"antecedent": [int(x) for x in r.antecedent], "consequent": [int(x) for x in r.consequent],
                      "count": int(r.count), "customers": r.customers, "support": float(r.support),
                      "confidence": float(r.confidence), "lift": float(r.lift), "computed_at": r.computed_at}
                     for r in rows]
        for r in out[kind]:
            ids.update(r["antecedent"])
            ids.update(r["consequent"])
    titles = {}
    if ids:
        titles = dict(s.execute(select(Product.id, Product.title)
                                .where(Product.shop_id == shop_id, Product.id.in_(sorted(ids)))).all())
    for kind_rows in out.values():
        for r in kind_rows:
            r["antecedent_titles"] = [titles.get(i) or f"Product {i}" for i in r["antecedent"]]
            r["consequent_titles"] = [titles.get(i) or f"Product {i}" for i in r["consequent"]]
    return out


# ------------------------------------------------------------------------------------------------ predictions
def _nice_edges(top: float) -> list[float]:
    """Bin edges 0, 1, 2.5, 5, 10, 25, ... up to the first edge >= top: readable edges for heavy-tailed CLV."""
    edges = [0.0]
    mult = 1.0
    while edges[-1] < top:
        for step in (1.0, 2.5, 5.0):
            edges.append(step * mult)
            if edges[-1] >= top:
                break
        mult *= 10
    return edges


def prediction_summary(s: Session, shop_id: int) -> dict:
    """Value x risk quadrants (customers, sum of clv_12m; GROUP BY on the (shop_id, quadrant, clv_12m) index) and
    the CLV histogram (bins 0/1/2.5/5 x 10^k up to the first edge >= the largest CLV; range counts on the
    (shop_id, clv_12m) index)."""
    clv = CustomerPrediction.clv_12m
    quads = {q: (int(n), float(v or 0.0)) for q, n, v in s.execute(
        select(CustomerPrediction.value_risk_quadrant, func.count(), func.sum(clv))
        .where(CustomerPrediction.shop_id == shop_id, CustomerPrediction.value_risk_quadrant.is_not(None))
        .group_by(CustomerPrediction.value_risk_quadrant))}
    # Histogram: the largest CLV, then one range count per bin, all answered by the (shop_id, clv_12m) index.
    top = s.scalar(select(func.max(clv)).where(CustomerPrediction.shop_id == shop_id))
    hist = {"edges": [], "counts": [], "n": 0, "negative": 0}
    if top is not None:
        edges = _nice_edges(max(float(top), 1.0))
        base = (CustomerPrediction.shop_id == shop_id,)
        ranges = [clv < 0] + [and_(clv >= lo, clv < hi) if i < len(edges) - 2 else and_(clv >= lo, clv <= hi)
                              for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]
        counts = [int(n or 0) for n in s.execute(select(*[
            select(func.count()).select_from(CustomerPrediction).where(*base, cond).scalar_subquery()
            for cond in ranges])).one()]
        hist = {"edges": edges, "counts": counts[1:], "n": sum(counts), "negative": counts[0]}
    quadrant_rows = [{"key": key, "label": label, "action": action, "customers": quads.get(key, (0, 0.0))[0],
                      "clv": quads.get(key, (0, 0.0))[1]} for key, (label, action) in QUADRANTS.items()]
    return {"quadrants": quadrant_rows, "histogram": hist}


def churn_risks(s: Session, shop_id: int, limit: int = 20) -> list[dict]:
    """Most valuable customers (by 12-month CLV) at risk of churning: the "win back" quadrant (CLV above the shop
    median, churn band medium or high), read through the (shop_id, value_risk_quadrant) index."""
    top = s.execute(select(CustomerPrediction.customer_id, CustomerPrediction.clv_12m, CustomerPrediction.p_alive,
                           CustomerPrediction.churn_band)
                    .where(CustomerPrediction.shop_id == shop_id,
                           CustomerPrediction.value_risk_quadrant == "win_back",
                           CustomerPrediction.clv_12m.is_not(None))
                    .order_by(CustomerPrediction.clv_12m.desc(), CustomerPrediction.customer_id)
                    .limit(limit)).all()
    ids = [int(r.customer_id) for r in top]
    names, stats = {}, {}
    if ids:
        names = dict(s.execute(select(Customer.id, Customer.display_name)
                               .where(Customer.shop_id == shop_id, Customer.id.in_(ids))).all())
        stats = {cid: (seg, rec) for cid, seg, rec in s.execute(
            select(CustomerStats.customer_id, CustomerStats.segment, CustomerStats.recency_days)
            .where(CustomerStats.shop_id == shop_id, CustomerStats.customer_id.in_(ids)))}
    return [{"customer_id": int(r.customer_id), "name": names.get(r.customer_id), "clv_12m": float(r.clv_12m),
             "p_alive": r.p_alive, "churn_band": r.churn_band, "segment": stats.get(r.customer_id, (None,))[0],
             "recency_days": stats.get(r.customer_id, (None, None))[1]} for r in top]


def model_status(s: Session, shop_id: int) -> list[dict]:
    rows = s.scalars(select(ShopModel).where(ShopModel.shop_id == shop_id).order_by(ShopModel.kind))
    return [{"kind": m.kind, "status": m.status, "message": m.message, "fitted_at": m.fitted_at,
             "customers": m.customers_at_fit} for m in rows]
