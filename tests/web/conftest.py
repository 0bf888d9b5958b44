"""Fixtures for the admin UI tests: seeded shops and session tokens."""
from __future__ import annotations

import datetime as dt

import pytest

from shopify_app.db import session_scope
from shopify_app.devstore import mint_session_token
from shopify_app.models import (AssociationRule, Customer, CustomerPrediction, CustomerStats, Job, Product,
                                SegmentChange, SegmentSnapshot, Shop, ShopModel, TagSyncState, utcnow)
from tests.conftest import TEST_API_KEY, TEST_API_SECRET

SHOP_A = "alpha-shop.myshopify.com"
SHOP_B = "bravo-shop.myshopify.com"


def token(shop: str = SHOP_A, **kwargs) -> str:
    return mint_session_token(shop, TEST_API_KEY, TEST_API_SECRET, **kwargs)


def page(path: str, shop: str = SHOP_A, **params) -> str:
    """A page URL as Shopify loads it: shop, host, embedded and a fresh id_token."""
    from urllib.parse import urlencode
    q = {"shop": shop, "host": "aG9zdA", "embedded": "1", "id_token": token(shop), **params}
    return path + ("&" if "?" in path else "?") + urlencode(q)


def bearer(shop: str = SHOP_A, **kwargs) -> dict:
    return {"Authorization": f"Bearer {token(shop, **kwargs)}"}


def make_shop(s, domain: str, **kw) -> Shop:
    shop = Shop(domain=domain, status=kw.pop("status", "active"), access_token_enc="enc", name=kw.pop("name", None),
                currency=kw.pop("currency", "USD"), settings=kw.pop("settings", {}), installed_at=utcnow(), **kw)
    s.add(shop)
    s.flush()
    return shop


def add_customer(s, shop_id: int, cid: int, segment: str | None, *, name: str | None = None, revenue=100.0,
                 orders=1, recency=10, r=3, f=3, m=3, clv=None, p_alive=None, churn=None, quadrant=None,
                 since=None):
    s.add(Customer(shop_id=shop_id, id=cid, display_name=name))
    s.add(CustomerStats(shop_id=shop_id, customer_id=cid, orders_count=orders, net_revenue=revenue,
                        gross_revenue=revenue, recency_days=recency, r_score=r, f_score=f, m_score=m,
                        segment=segment, segment_since=since or dt.datetime(2026, 1, 1),
                        first_order_at=dt.datetime(2025, 1, 1), last_order_at=dt.datetime(2026, 1, 1)))
    if clv is not None or p_alive is not None:
        s.add(CustomerPrediction(shop_id=shop_id, customer_id=cid, clv_12m=clv, p_alive=p_alive, churn_band=churn,
                                 value_risk_quadrant=quadrant))


@pytest.fixture
def seeded(db_url):
    """Shop A with segments, predictions, snapshots, changes, rules; shop B with its own distinct rows."""
    today = utcnow().date()
    now = utcnow()
    with session_scope(db_url) as s:
        a = make_shop(s, SHOP_A, name="Alpha Goods", currency="USD", settings={"min_segment_size": 3})
        b = make_shop(s, SHOP_B, name="Bravo Goods", currency="EUR")
        # Shop A: Champions 4 (revenue 1000 each, 5 orders), Loyal 2 (revenue 300, 3 orders), At risk 1
        for i in range(4):
            add_customer(s, a.id, 1000 + i, "Champions", name=f"Champ {i}", revenue=1000.0 + i, orders=5,
                         recency=i + 1, r=5, f=5, m=5, clv=500.0 + i, p_alive=0.9, churn="low", quadrant="protect")
        for i in range(2):
            add_customer(s, a.id, 2000 + i, "Loyal", name=f"Loyal {i}", revenue=300.0, orders=3, recency=40,
                         r=4, f=4, m=4, clv=200.0, p_alive=0.8, churn="low", quadrant="grow")
        add_customer(s, a.id, 3000, "At risk", name="Risky Rita", revenue=800.0, orders=4, recency=200, r=2,
                     f=3, m=4, clv=900.0, p_alive=0.2, churn="high", quadrant="win_back")
        # snapshots: Champions had 1 customer 30+ days ago and 3 a week ago
        s.add(SegmentSnapshot(shop_id=a.id, day=today - dt.timedelta(days=31), segment="Champions", customers=1,
                              revenue=900.0, orders=4))
        s.add(SegmentSnapshot(shop_id=a.id, day=today - dt.timedelta(days=8), segment="Champions", customers=3,
                              revenue=3000.0, orders=14))
        s.add(SegmentSnapshot(shop_id=a.id, day=today - dt.timedelta(days=8), segment="Loyal", customers=2,
                              revenue=600.0, orders=6))
        s.add(SegmentSnapshot(shop_id=a.id, day=today, segment="Champions", customers=4, revenue=4006.0, orders=20))
        # transitions into Champions: 2 from Loyal, 1 new; out: 1 to At risk; one old change (ignored)
        for cid in (1000, 1001):
            s.add(SegmentChange(shop_id=a.id, customer_id=cid, from_segment="Loyal", to_segment="Champions",
                                changed_at=now - dt.timedelta(days=3), reason="order"))
        s.add(SegmentChange(shop_id=a.id, customer_id=1002, from_segment=None, to_segment="Champions",
                            changed_at=now - dt.timedelta(days=2), reason="order"))
        s.add(SegmentChange(shop_id=a.id, customer_id=3000, from_segment="Champions", to_segment="At risk",
                            changed_at=now - dt.timedelta(days=5), reason="aging"))
        s.add(SegmentChange(shop_id=a.id, customer_id=1003, from_segment="Hibernating", to_segment="Champions",
                            changed_at=now - dt.timedelta(days=90), reason="order"))
        # products + rules
        for pid, title in ((1, "Red Mug"), (2, "Blue Saucer"), (3, "Tea Towel")):
            s.add(Product(shop_id=a.id, id=pid, title=title))
        s.add(AssociationRule(shop_id=a.id, segment="*", kind="pair", antecedent=[1], consequent=[2], count=42,
                              customers=37, support=0.021, confidence=0.61, lift=3.5))
        s.add(AssociationRule(shop_id=a.id, segment="*", kind="triple", antecedent=[1, 2], consequent=[3],
                              count=12, customers=11, support=0.006, confidence=0.4, lift=5.25))
        s.add(AssociationRule(shop_id=a.id, segment="*", kind="sequential", antecedent=[2], consequent=[3],
                              count=9, customers=9, support=0.004, confidence=0.2, lift=1.8))
        s.add(AssociationRule(shop_id=a.id, segment="Champions", kind="pair", antecedent=[2], consequent=[3],
                              count=7, customers=7, support=0.05, confidence=0.7, lift=2.25))
        s.add(ShopModel(shop_id=a.id, kind="bgnbd", status="fallback", message="Too few repeat buyers for BG/NBD.",
                        params={}, customers_at_fit=7))
        s.add(TagSyncState(shop_id=a.id, customer_id=1000, desired_tags=["sb:champions"], status="pending"))
        # Shop B: its own Champions member and rule, which shop A must never see
        add_customer(s, b.id, 9000, "Champions", name="Bravo Secret", revenue=77777.0, orders=9, r=5, f=5, m=5,
                     clv=55555.0, p_alive=0.1, churn="high", quadrant="win_back")
        s.add(Product(shop_id=b.id, id=1, title="Bravo Only Product"))
        s.add(AssociationRule(shop_id=b.id, segment="*", kind="pair", antecedent=[1], consequent=[1], count=5,
                              customers=5, support=0.5, confidence=0.5, lift=9.99))
        s.add(Job(shop_id=b.id, kind="import", status="running", total=100, done=10, started_at=now))
        ids = {"a": a.id, "b": b.id}
    return ids
