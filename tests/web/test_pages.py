"""Each page renders real numbers from seeded rows (Flask test client; SQLite or DATABASE_URL)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from shopify_app.db import session_scope
from shopify_app.models import Job, utcnow
from tests.web.conftest import SHOP_A, add_customer, make_shop, page, token
from tests.web.htmltools import parse


def get(client, path, shop=SHOP_A, **params):
    resp = client.get(page(path, shop=shop, **params))
    assert resp.status_code == 200, resp.get_data(as_text=True)[:2000]
    return parse(resp.get_data(as_text=True))


def one_h1(root):
    assert len(root.find_all("h1")) == 1


# ------------------------------------------------------------------------------------------------ home
def test_home_segments_shares_changes_and_actions(client, seeded):
    root = get(client, "/")
    one_h1(root)
    assert root.testid("total-customers").text == "7"
    assert root.testid("total-revenue").text == "$5,406.00"
    rows = {r.attrs["data-segment"]: r for r in root.find_all(data_testid="segment-row")}
    assert list(rows) == ["champions", "loyal", "at-risk"]        # scheme order
    champ = {td.attrs["data-field"]: td.text for td in rows["champions"].find_all("td")}
    assert champ["customers"] == "4" and champ["revenue"] == "$4,006.00"
    assert champ["customer_share"] == "57.1%"                     # 4 / 7
    assert champ["revenue_share"] == "74.1%"                      # 4006 / 5406
    assert champ["aov"] == "$200.30"                              # 4006 / 20 orders
    assert champ["change_week"] == "+1"                           # 3 in the snapshot 8 days ago
    assert champ["change_month"] == "+3"                          # 1 in the snapshot 31 days ago
    assert champ["action"].startswith("Reward them")
    loyal = {td.attrs["data-field"]: td.text for td in rows["loyal"].find_all("td")}
    assert loyal["change_week"] == "0" and loyal["change_month"] == "+2"
    # min_segment_size = 3 (shop setting): Loyal (2) and At risk (1) are too small, Champions (4) is not
    assert "Too small to act on" in rows["loyal"].text and "Too small to act on" in rows["at-risk"].text
    assert "Too small to act on" not in rows["champions"].text
    link = rows["champions"].find("a").attrs["href"]
    assert link.startswith("/segments/champions?") and "id_token" not in link
    assert root.find(data_testid="import-progress") is None and root.find(data_testid="empty-state") is None


def test_home_without_snapshots_shows_no_change(client, db_url):
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        add_customer(s, shop.id, 1, "Champions", r=5, f=5, m=5)
    root = get(client, "/")
    row = root.find(data_testid="segment-row")
    assert row.find(data_field="change_week").text == "–" and row.find(data_field="change_month").text == "–"


def test_home_empty_state(client, db_url):
    with session_scope(db_url) as s:
        make_shop(s, SHOP_A)
    root = get(client, "/")
    assert "No orders yet" in root.testid("empty-state").text
    assert root.find(data_testid="segments-table") is None


def test_home_import_progress_with_eta(client, db_url):
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        s.add(Job(shop_id=shop.id, kind="import", status="running", total=1000, done=250,
                  started_at=utcnow() - dt.timedelta(seconds=100)))
    root = get(client, "/")
    box = root.testid("import-progress")
    bar = box.find(role="progressbar")
    assert (bar.attrs["aria-valuenow"], bar.attrs["aria-valuemax"], bar.attrs["aria-valuemin"]) == ("250", "1000", "0")
    text = root.testid("import-progress-text").text
    assert "250 of 1,000 orders imported (25%)" in text
    # 750 left at 2.5 orders/s = 300 s (a second or two of test time may pass)
    m = re.search(r"About (\d+) min left", text)
    assert m and m.group(1) == "5"
    assert root.find(data_testid="empty-state") is None


def test_home_queued_import_and_later_import_state(client, db_url):
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        s.add(Job(shop_id=shop.id, kind="import", status="failed", total=10, done=2, error="old failure"))
        s.add(Job(shop_id=shop.id, kind="import", status="queued"))        # the latest one counts
    root = get(client, "/")
    assert "Waiting to start" in root.testid("import-progress").text
    assert root.find(data_testid="import-failed") is None


def test_home_failed_import_explains_what_to_do(client, db_url, redis_url):
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        s.add(Job(shop_id=shop.id, kind="import", status="failed", total=800, done=300,
                  error="ShopifyBulkOperationError: bulk operation FAILED (INTERNAL_SERVER_ERROR)"))
    root = get(client, "/")
    box = root.testid("import-failed")
    assert box.attrs["role"] == "alert"
    assert "bulk operation FAILED" in box.text and "300 of 800" in box.text and "Retry the import" in box.text
    form = root.testid("retry-import-form")
    assert form.find("input", name="id_token").attrs["value"]


def test_retry_import_enqueues_the_history_import(client, db_url, redis_url, config):
    from rq import Queue

    from shopify_app.queues import queue_name, redis_connection
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        s.add(Job(shop_id=shop.id, kind="import", status="failed", total=8, done=3, error="boom"))
        shop_id = shop.id
    resp = client.post(f"/import/retry?shop={SHOP_A}", data={"id_token": token()})
    assert resp.status_code == 200 and "restarted" in resp.get_data(as_text=True)
    queue = Queue(queue_name(config.queue_prefix, "default"), connection=redis_connection(config.redis_url))
    assert [(j.func_name, j.args) for j in queue.get_jobs()] == \
        [("workers.import_jobs.start_history_import", (shop_id,))]
    # a running import is never enqueued twice
    queue.empty()
    with session_scope(db_url) as s:
        s.add(Job(shop_id=shop_id, kind="import", status="running", total=8, done=1))
    resp = client.post(f"/import/retry?shop={SHOP_A}", data={"id_token": token()})
    assert resp.status_code == 200 and "nothing to retry" in resp.get_data(as_text=True)
    assert queue.get_jobs() == []


def test_needs_reauth_banner(client, db_url):
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A, status="needs_reauth")
        add_customer(s, shop.id, 1, "Champions", r=5, f=5, m=5)
    root = get(client, "/bundles")          # any page (Home would re-authorize on load)
    assert "access needs to be renewed" in root.testid("needs-reauth").text


# ------------------------------------------------------------------------------------------------ segment
def test_segment_page(client, seeded):
    root = get(client, "/segments/champions")
    one_h1(root)
    assert root.find("h1").text == "Champions"
    assert root.testid("segment-definition").text.startswith("Definition.")
    assert "5" in root.testid("segment-definition").text
    assert "Reward them" in root.testid("segment-action").text
    assert root.testid("segment-size").text == "4" and root.testid("segment-revenue").text == "$4,006.00"
    # history: two charts with a text alternative, and the numbers table (3 snapshots of Champions)
    svgs = root.testid("segment-history").find_all("svg")
    assert len(svgs) == 2
    for svg in svgs:
        assert svg.attrs["role"] == "img" and svg.find("title") and svg.find("desc")
    assert "first 1, last 4" in svgs[0].find("desc").text
    assert len(root.testid("segment-history").find("table").find("tbody").find_all("tr")) == 3
    # transitions of the last 30 days (the 90-day-old one is not counted)
    moves_in = {r.find("th").text: r.find("td").text
                for r in root.testid("transitions-in").find("tbody").find_all("tr")}
    assert moves_in == {"Loyal": "2", "New customer (first order)": "1"}
    moves_out = {r.find("th").text: r.find("td").text
                 for r in root.testid("transitions-out").find("tbody").find_all("tr")}
    assert moves_out == {"At risk": "1"}
    assert "Pending: 1" in root.testid("tag-sync").text
    # members: default sort by net revenue, high to low; R/F/M, CLV, P(alive)
    rows = root.testid("member-table").find("tbody").find_all("tr")
    assert [r.attrs["data-customer-id"] for r in rows] == ["1003", "1002", "1001", "1000"]
    cells = [c.text for c in rows[0].find_all("td")]
    assert cells == ["4", "5", "$1,003.00", "5", "5", "5", "$503.00", "90%", "2026-01-01"]
    assert root.find(data_testid="pager") is None
    csv_link = root.testid("csv-link").attrs["href"]
    assert csv_link.startswith("/segments/champions/members.csv?") and "id_token" not in csv_link


def test_segment_without_members_and_other_scheme(client, seeded):
    root = get(client, "/segments/hibernating")
    assert "No customers are in this segment" in root.testid("members-empty").text
    assert "Nobody joined" in root.testid("transitions").text
    assert "Tag sync arrives with activation" in root.testid("tag-sync").text
    assert client.get(page("/segments/no-such-segment")).status_code == 404
    # a segment of the other scheme (rfm11) still resolves (members move on the next recompute)
    assert get(client, "/segments/need-attention").find("h1").text == "Need Attention"


@pytest.fixture
def many(db_url):
    """120 Loyal customers: revenue = 10 * i, CLV = 1000 - i, names 'Member 000'..."""
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        for i in range(120):
            add_customer(s, shop.id, 5000 + i, "Loyal", name=f"Member {i:03d}", revenue=10.0 * i, orders=1 + i % 7,
                         recency=i, r=4, f=4, m=4, clv=1000.0 - i if i % 10 else None, p_alive=0.5)
        add_customer(s, shop.id, 7777, "Loyal", name="Zoë 100% Ünïcode", revenue=1.0)
    return shop


def member_ids(root):
    return [int(r.attrs["data-customer-id"]) for r in root.testid("member-table").find("tbody").find_all("tr")]


def test_members_paging_and_sorting(client, many):
    first = get(client, "/segments/loyal")
    assert member_ids(first) == [5000 + i for i in range(119, 69, -1)]
    assert "Page 1 of 3" in first.testid("pager").text and first.find(data_testid="pager-prev") is None
    nxt = first.testid("pager-next").attrs["href"]
    assert "page=2" in nxt and "id_token" not in nxt
    third = get(client, "/segments/loyal", page=3)
    assert member_ids(third) == [5000 + i for i in range(19, 0, -1)] + [7777, 5000]     # 7777 has revenue 1.0
    assert third.find(data_testid="pager-next") is None
    seen = set(member_ids(first)) | set(member_ids(get(client, "/segments/loyal", page=2))) | set(member_ids(third))
    assert len(seen) == 121                                     # no overlap, nothing missing
    asc = get(client, "/segments/loyal", sort="recency")
    assert member_ids(asc)[:3] == [5000, 7777, 5001] or member_ids(asc)[:2] == [5000, 5001]
    by_clv = member_ids(get(client, "/segments/loyal", sort="-clv"))
    assert by_clv[:3] == [5001, 5002, 5003]                     # 999, 998, 997 (i=0 has no CLV)
    last_page = member_ids(get(client, "/segments/loyal", sort="-clv", page=3))
    # 108 customers have a CLV; the 13 without (i % 10 == 0, and 7777) sort last, ties by customer id
    assert last_page[-13:] == [7777] + [5000 + i for i in range(110, -1, -10)]
    root = get(client, "/segments/loyal", sort="-revenue")
    th = root.testid("member-table").find("th", aria_sort="descending")
    assert th is not None and "Net revenue" in th.text
    # header links: the active column flips its direction, others start high-to-low (names A to Z)
    sort_of = {k: parse_qs(urlsplit(root.testid(f"sort-{k}").attrs["href"]).query)["sort"][0]
               for k in ("revenue", "orders", "customer")}
    assert sort_of == {"revenue": "revenue", "orders": "-orders", "customer": "customer"}
    by_name = member_ids(get(client, "/segments/loyal", sort="customer"))
    assert by_name[:3] == [5000, 5001, 5002]
    # unknown sort keys and pages are clamped, never passed to SQL
    assert member_ids(get(client, "/segments/loyal", sort="display_name; drop table x", page=999)) == \
        member_ids(third)


def test_member_search_by_post(client, many):
    resp = client.post(f"/segments/loyal?shop={SHOP_A}&host=aG9zdA",
                       data={"q": "member 11", "sort": "revenue", "id_token": token()})
    assert resp.status_code == 200
    root = parse(resp.get_data(as_text=True))
    assert member_ids(root) == [5110 + i for i in range(10)]          # "Member 110".."Member 119", revenue up
    assert "10 members match" in root.testid("members-count").text
    # the search term stays out of every URL on the page
    for el in root.find_all("a") + root.find_all("form"):
        url = (el.attrs.get("href", "") + el.attrs.get("action", "")).lower()
        assert "q=" not in url and "member 11" not in url and "member+11" not in url and "member%2011" not in url
    by_id = parse(client.post(f"/segments/loyal?shop={SHOP_A}", data={"q": "5042", "id_token": token()})
                  .get_data(as_text=True))
    assert member_ids(by_id) == [5042]
    like = parse(client.post(f"/segments/loyal?shop={SHOP_A}", data={"q": "100%", "id_token": token()})
                 .get_data(as_text=True))
    assert member_ids(like) == [7777]                            # % is literal, not a wildcard
    paged = parse(client.post(f"/segments/loyal?shop={SHOP_A}", data={"q": "Member", "page": "3",
                                                                    "id_token": token()}).get_data(as_text=True))
    assert "Page 3 of 3" in paged.testid("pager").text
    prev = paged.testid("pager-prev")
    assert prev.tag == "button" and prev.attrs["form"] == "member-search" and prev.attrs["value"] == "2"
    none = parse(client.post(f"/segments/loyal?shop={SHOP_A}", data={"q": "nobody", "id_token": token()})
                 .get_data(as_text=True))
    assert "No member matches" in none.testid("members-empty").text


def test_members_csv(client, many):
    resp = client.get(page("/segments/loyal/members.csv"))
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert 'filename="segment-loyal.csv"' in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert len(rows) == 121
    assert [int(r["customer_id"]) for r in rows] == sorted(int(r["customer_id"]) for r in rows)
    r7 = next(r for r in rows if r["customer_id"] == "5007")
    assert (r7["name"], r7["segment"], r7["net_revenue"], r7["clv_12m"], r7["p_alive"], r7["r_score"]) == \
        ("Member 007", "Loyal", "70.00", "993.00", "0.5000", "4")
    assert next(r for r in rows if r["customer_id"] == "5010")["clv_12m"] == ""
    assert next(r for r in rows if r["customer_id"] == "7777")["name"] == "Zoë 100% Ünïcode"


def test_members_csv_streams_in_batches_and_neutralizes_formulas(client, db_url, monkeypatch):
    from shopify_app.web import readmodels
    original = readmodels.iter_members
    monkeypatch.setattr(readmodels, "iter_members", lambda f, shop_id, seg: original(f, shop_id, seg, batch=7))
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        for i in range(30):
            add_customer(s, shop.id, 100 + i, "Loyal", name="=HYPERLINK(\"http://x\")" if i == 3 else f"N{i}")
    rows = list(csv.reader(io.StringIO(client.get(page("/segments/loyal/members.csv")).get_data(as_text=True))))
    assert len(rows) == 31 and [int(r[0]) for r in rows[1:]] == list(range(100, 130))
    assert rows[4][1] == "'=HYPERLINK(\"http://x\")"


# ------------------------------------------------------------------------------------------------ bundles
def test_bundles(client, seeded):
    root = get(client, "/bundles")
    one_h1(root)
    pair = root.testid("rules-pair").find("tbody").find_all("tr")
    assert len(pair) == 1
    assert [c.text for c in [pair[0].find("th")] + pair[0].find_all("td")] == \
        ["Red Mug", "Blue Saucer", "2.10%", "61%", "3.50", "42", "37"]
    triple = root.testid("rules-triple").find("tbody").find("tr")
    assert triple.find("th").text == "Red Mug + Blue Saucer" and "Tea Towel" in triple.text and "5.25" in triple.text
    seq = root.testid("rules-sequential").find("tbody").find("tr")
    assert seq.find("th").text == "Blue Saucer" and "Tea Towel" in seq.text
    create = root.testid("create-bundle")
    assert "disabled" in create.attrs
    options = [o.attrs["value"] for o in root.testid("bundle-filter").find_all("option")]
    assert options == ["", "champions"]
    seg = get(client, "/bundles", segment="champions")
    rows = seg.testid("rules-pair").find("tbody").find_all("tr")
    assert len(rows) == 1 and rows[0].find("th").text == "Blue Saucer" and "2.25" in rows[0].text
    assert seg.find(data_testid="rules-triple") is None


def test_bundles_empty_state_explains_min_support(client, db_url):
    with session_scope(db_url) as s:
        make_shop(s, SHOP_A, settings={"min_support": 0.02, "min_count": 8})
    text = get(client, "/bundles").testid("bundles-empty").text
    assert "2.00% of orders" in text and "at least 8 orders" in text and "last 12 months" in text


# ------------------------------------------------------------------------------------------------ predictions
def test_predictions(client, seeded):
    root = get(client, "/predictions")
    one_h1(root)
    quads = {q.attrs["data-quadrant"]: q for q in root.find_all(data_testid="quadrant")}
    assert list(quads) == ["protect", "win_back", "grow", "low_priority"]
    assert quads["protect"].find(data_field="customers").text == "4"
    assert quads["protect"].find(data_field="clv").text == "$2,006.00"          # 500+501+502+503
    assert quads["win_back"].find(data_field="customers").text == "1"
    assert quads["win_back"].find(data_field="clv").text == "$900.00"
    assert quads["grow"].find(data_field="clv").text == "$400.00"
    assert quads["low_priority"].find(data_field="customers").text == "0"
    hist = root.testid("clv-histogram")
    svg = hist.find("svg")
    assert svg.attrs["role"] == "img" and "(7 customers)" in svg.find("desc").text
    counts = {r.find("th").text: r.find_all("td")[-1].text for r in hist.find("table").find("tbody").find_all("tr")}
    assert counts["$100.00"] == "2" and counts["$500.00"] == "5" and sum(int(v) for v in counts.values()) == 7
    risks = root.testid("churn-risks").find_all(data_testid="risk-row")
    assert [r.attrs["data-customer-id"] for r in risks] == ["3000"]
    assert "Risky Rita" in risks[0].text and "$900.00" in risks[0].text
    status = root.testid("model-status").text
    assert "simpler fallback in use" in status and "Too few repeat buyers" in status


def test_predictions_before_any_fit(client, db_url):
    with session_scope(db_url) as s:
        make_shop(s, SHOP_A)
    root = get(client, "/predictions")
    assert "have not been fitted yet" in root.testid("model-status").text
    assert "No data yet" in root.testid("clv-histogram").find("svg").text
    assert all(q.find(data_field="customers").text == "0" for q in root.find_all(data_testid="quadrant"))


def test_members_pages_with_equal_sort_values_never_overlap(client, db_url):
    with session_scope(db_url) as s:
        shop = make_shop(s, SHOP_A)
        for i in range(120):
            add_customer(s, shop.id, 9000 - i * 7, "Loyal", revenue=50.0, orders=2)
    for sort in ("-revenue", "revenue", "-orders", "recency"):
        pages = [member_ids(get(client, "/segments/loyal", sort=sort, page=p)) for p in (1, 2, 3)]
        assert [len(p) for p in pages] == [50, 50, 20]
        assert len(set(pages[0] + pages[1] + pages[2])) == 120, sort
