"""JSON API: summary and members (Bearer session token only)."""
from __future__ import annotations

import datetime as dt

from shopify_app.db import session_scope
from shopify_app.models import Job, utcnow
from tests.web.conftest import SHOP_A, SHOP_B, add_customer, bearer, make_shop


def test_summary(client, seeded):
    data = client.get("/api/summary", headers=bearer()).json
    assert (data["shop"], data["customers"], data["orders"], data["min_segment_size"]) == (SHOP_A, 7, 30, 3)
    assert data["revenue"] == 5406.0 and data["import_progress"] is None
    seg = {s["slug"]: s for s in data["segments"]}
    assert seg["champions"]["customers"] == 4 and seg["champions"]["revenue"] == 4006.0
    assert seg["champions"]["change_week"] == 1 and seg["champions"]["change_month"] == 3
    assert seg["loyal"]["too_small"] is True and seg["champions"]["too_small"] is False
    assert abs(sum(s["customer_share"] for s in data["segments"]) - 1.0) < 1e-9
    # shop B's import is running: its own progress, never A's
    b = client.get("/api/summary", headers=bearer(SHOP_B)).json
    assert b["import_progress"]["status"] == "running" and b["import_progress"]["done"] == 10
    assert b["import_progress"]["total"] == 100 and b["import_progress"]["active"] is True


def test_summary_progress_eta(client, db_url):
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        s.add(Job(shop_id=shop.id, kind="import", status="running", total=400, done=100,
                  started_at=utcnow() - dt.timedelta(seconds=60)))
    p = client.get("/api/summary", headers=bearer()).json["import_progress"]
    assert p["percent"] == 25.0 and 180 <= p["eta_seconds"] <= 190          # 300 left at 100 per minute


def test_members_json(client, db_url):
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        for i in range(60):
            add_customer(s, shop.id, 100 + i, "Loyal", name=f"Person {i}", revenue=float(i), orders=i + 1,
                         clv=float(i) * 2, p_alive=0.5)
    page1 = client.post("/api/segments/loyal/members", json={"page": 1}, headers=bearer()).json
    assert page1["total"] == 60 and page1["pages"] == 2 and page1["page_size"] == 50
    assert [r["customer_id"] for r in page1["rows"][:3]] == [159, 158, 157]
    assert page1["rows"][0] == {"customer_id": 159, "name": "Person 59", "recency_days": 10, "orders": 60,
                                "revenue": 59.0, "r": 3, "f": 3, "m": 3, "segment_since": "2026-01-01T00:00:00Z",
                                "last_order_at": "2026-01-01T00:00:00Z", "clv_12m": 118.0, "p_alive": 0.5,
                                "churn_band": None}
    page2 = client.post("/api/segments/loyal/members", json={"page": 2, "sort": "orders"}, headers=bearer()).json
    assert [r["customer_id"] for r in page2["rows"]] == list(range(150, 160))
    found = client.post("/api/segments/loyal/members", json={"q": "person 5"}, headers=bearer()).json
    assert sorted(r["customer_id"] for r in found["rows"]) == [105] + list(range(150, 160))
    assert client.post("/api/segments/nope/members", json={}, headers=bearer()).status_code == 404
    bad = client.post("/api/segments/loyal/members", json=[1, 2], headers=bearer())
    assert bad.status_code == 400
