"""Queries and mutations the app relies on: pagination, search filters, sort keys, nodes, tags, segments,
discounts, money bags, refunds and guest / custom lines."""
import datetime as dt

import pytest
from devstore_testlib import SHOP

UTC = dt.timezone.utc
PAGE = '''query($first: Int, $last: Int, $after: String, $before: String, $q: String, $sort: OrderSortKeys, $rev: Boolean) {
  orders(first: $first, last: $last, after: $after, before: $before, query: $q, sortKey: $sort, reverse: $rev) {
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id legacyResourceId name updatedAt createdAt } } } }'''


@pytest.fixture
def shop_data(store):
    base = dt.datetime(2025, 3, 1, tzinfo=UTC)
    p = store.create_product(SHOP, title="Tea Towel", price="4.00", unit_cost="1.50", product_type="Kitchen")
    c = store.create_customer(SHOP, first_name="Ada", last_name="L", email="ada@example.com", tags=["vip"],
                              created_at=base)
    orders = []
    for i in range(12):
        t = base + dt.timedelta(days=i)
        o = store.create_order(SHOP, customer_id=c.id if i % 3 else None, processed_at=t, created_at=t,
                               lines=[{"variant_id": p.variants[0].id, "quantity": i + 1},
                                      {"title": "POSTAGE", "price": "3.00"}], test=(i == 5))
        o.updated_at = base + dt.timedelta(days=30 - i)   # updated order is the reverse of created order
        orders.append(o)
    return p, c, orders


def _names(body):
    return [e["node"]["name"] for e in body["data"]["orders"]["edges"]]


def test_forward_and_backward_pagination(admin, shop_data):
    seen, after = [], None
    while True:
        body = admin(PAGE, {"first": 5, "after": after, "sort": "CREATED_AT"})
        seen += _names(body)
        info = body["data"]["orders"]["pageInfo"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert seen == [f"#{1001 + i}" for i in range(12)]
    last = admin(PAGE, {"last": 3, "sort": "CREATED_AT"})
    assert _names(last) == ["#1010", "#1011", "#1012"]
    assert last["data"]["orders"]["pageInfo"]["hasPreviousPage"] is True
    before = admin(PAGE, {"last": 2, "before": last["data"]["orders"]["pageInfo"]["startCursor"], "sort": "CREATED_AT"})
    assert _names(before) == ["#1008", "#1009"]
    rev = admin(PAGE, {"first": 2, "sort": "CREATED_AT", "rev": True})
    assert _names(rev) == ["#1012", "#1011"]


def test_sort_keys_and_updated_at_ranges(admin, shop_data):
    body = admin(PAGE, {"first": 3, "sort": "UPDATED_AT"})
    assert _names(body) == ["#1012", "#1011", "#1010"]
    body = admin(PAGE, {"first": 50, "sort": "ID"})
    assert len(_names(body)) == 12
    q = "updated_at:>'2025-03-25T00:00:00Z' AND updated_at:<='2025-03-28T00:00:00Z'"
    body = admin(PAGE, {"first": 50, "q": q, "sort": "UPDATED_AT"})
    assert _names(body) == ["#1006", "#1005", "#1004"]       # updated 03-26, 03-27, 03-28 (ascending)
    body = admin(PAGE, {"first": 50, "q": "created_at:>=2025-03-10", "sort": "CREATED_AT"})
    assert _names(body) == ["#1010", "#1011", "#1012"]
    body = admin(PAGE, {"first": 50, "q": "created_at:2025-03-02"})
    assert _names(body) == ["#1002"]


def test_order_fields_money_and_guest_custom_lines(admin, shop_data, store):
    p, c, orders = shop_data
    store.refund_order(SHOP, orders[4].id, [(orders[4].line_items[0].id, 2)])
    body = admin('''query($id: ID!) { order(id: $id) { id name test customer { id tags }
        displayFinancialStatus totalPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount } }
        currentTotalPriceSet { shopMoney { amount } } totalRefundedSet { shopMoney { amount } }
        refunds { id refundLineItems(first: 5) { nodes { quantity lineItem { id } subtotalSet { shopMoney { amount } } } } }
        lineItems(first: 5) { nodes { title quantity currentQuantity product { id productType }
            variant { id inventoryItem { unitCost { amount } } } originalUnitPriceSet { shopMoney { amount } } } } } }''',
                 {"id": f"gid://shopify/Order/{orders[4].id}"})
    o = body["data"]["order"]
    assert o["customer"]["id"] == f"gid://shopify/Customer/{c.id}" and o["customer"]["tags"] == ["vip"]
    assert o["totalPriceSet"]["shopMoney"] == {"amount": "23.00", "currencyCode": "GBP"}
    assert o["currentTotalPriceSet"]["shopMoney"]["amount"] == "15.00"
    assert o["totalRefundedSet"]["shopMoney"]["amount"] == "8.00"
    assert o["displayFinancialStatus"] == "PARTIALLY_REFUNDED"
    assert o["refunds"][0]["refundLineItems"]["nodes"][0]["quantity"] == 2
    product_line, custom = o["lineItems"]["nodes"]
    assert product_line["currentQuantity"] == 3 and product_line["variant"]["inventoryItem"]["unitCost"]["amount"] == "1.50"
    assert custom["product"] is None and custom["variant"] is None and custom["title"] == "POSTAGE"
    guest = admin("query($id: ID!) { order(id: $id) { customer { id } test } }",
                  {"id": f"gid://shopify/Order/{orders[3].id}"})
    assert guest["data"]["order"] == {"customer": None, "test": False}
    test_order = admin("{ orders(first: 5, query: \"test:true\") { nodes { name test } } }")
    assert test_order["data"]["orders"]["nodes"] == [{"name": "#1006", "test": True}]


def test_node_and_nodes(admin, shop_data):
    p, c, orders = shop_data
    ids = [f"gid://shopify/Order/{orders[0].id}", f"gid://shopify/Customer/{c.id}",
           f"gid://shopify/Product/{p.id}", "gid://shopify/Order/1"]
    body = admin('''query($ids: [ID!]!) { nodes(ids: $ids) { __typename id
        ... on Order { name } ... on Customer { displayName } ... on Product { title } } }''', {"ids": ids})
    assert [n and n["__typename"] for n in body["data"]["nodes"]] == ["Order", "Customer", "Product", None]
    one = admin('query { node(id: "gid://shopify/Customer/%d") { ... on Customer { email numberOfOrders } } }' % c.id)
    assert one["data"]["node"] == {"email": "ada@example.com", "numberOfOrders": "8"}


def test_customers_connection_and_tags(admin, shop_data, store):
    _, c, _ = shop_data
    other = store.create_customer(SHOP, email="bob@example.com")
    gid = f"gid://shopify/Customer/{c.id}"
    body = admin('mutation($id: ID!, $t: [String!]!) { tagsAdd(id: $id, tags: $t) { node { id } userErrors { message } } }',
                 {"id": gid, "t": ["rfm:champions", "vip"]})
    assert body["data"]["tagsAdd"] == {"node": {"id": gid}, "userErrors": []}
    assert store.shop(SHOP).customers[c.id].tags == ["vip", "rfm:champions"]
    admin('mutation($id: ID!, $t: [String!]!) { tagsRemove(id: $id, tags: $t) { userErrors { message } } }',
          {"id": gid, "t": ["vip"]})
    assert store.shop(SHOP).customers[c.id].tags == ["rfm:champions"]
    body = admin('{ customers(first: 10, query: "tag:rfm:champions") { nodes { id } } }')
    assert body["data"]["customers"]["nodes"] == [{"id": gid}]
    body = admin('{ customers(first: 10, sortKey: UPDATED_AT, reverse: true) { nodes { id } } }')
    assert body["data"]["customers"]["nodes"][0]["id"] == gid
    assert other.id


def test_segment_and_bxgy_discounts(admin, shop_data):
    p, _, _ = shop_data
    seg = admin('mutation { segmentCreate(name: "Champions", query: "customer_tags CONTAINS \'rfm:champions\'") '
                '{ segment { id name query } userErrors { field message } } }')["data"]["segmentCreate"]
    assert seg["userErrors"] == [] and seg["segment"]["name"] == "Champions"
    dup = admin('mutation { segmentCreate(name: "Champions", query: "x") { userErrors { field message } } }')
    assert dup["data"]["segmentCreate"]["userErrors"][0]["field"] == ["name"]
    pid = f"gid://shopify/Product/{p.id}"
    bxgy = {"title": "Tea towel bundle", "startsAt": "2025-01-01T00:00:00Z",
            "customerBuys": {"items": {"products": {"productsToAdd": [pid]}}, "value": {"quantity": "2"}},
            "customerGets": {"items": {"products": {"productsToAdd": [pid]}},
                             "value": {"discountOnQuantity": {"quantity": "1", "effect": {"percentage": 0.5}}}},
            "context": {"all": "ALL"}}
    auto = admin('''mutation($d: DiscountAutomaticBxgyInput!) { discountAutomaticBxgyCreate(automaticBxgyDiscount: $d) {
        automaticDiscountNode { id automaticDiscount { ... on DiscountAutomaticBxgy { title status } } }
        userErrors { field message code } } }''', {"d": bxgy})["data"]["discountAutomaticBxgyCreate"]
    assert auto["userErrors"] == []
    assert auto["automaticDiscountNode"]["automaticDiscount"] == {"title": "Tea towel bundle", "status": "ACTIVE"}
    code = admin('''mutation($d: DiscountCodeBxgyInput!) { discountCodeBxgyCreate(bxgyCodeDiscount: $d) {
        codeDiscountNode { id codeDiscount { ... on DiscountCodeBxgy { title codes(first: 1) { nodes { code } } } } }
        userErrors { field message code } } }''', {"d": {**bxgy, "code": "TOWEL2"}})["data"]["discountCodeBxgyCreate"]
    assert code["codeDiscountNode"]["codeDiscount"]["codes"]["nodes"] == [{"code": "TOWEL2"}]
    bad = admin('''mutation($d: DiscountCodeBxgyInput!) { discountCodeBxgyCreate(bxgyCodeDiscount: $d) {
        userErrors { field code } } }''', {"d": {**bxgy, "code": "TOWEL2"}})["data"]["discountCodeBxgyCreate"]
    assert bad["userErrors"][0]["code"] == "TAKEN"
    d1 = admin('mutation($id: ID!) { discountAutomaticDelete(id: $id) { deletedAutomaticDiscountId userErrors { message } } }',
               {"id": auto["automaticDiscountNode"]["id"]})
    assert d1["data"]["discountAutomaticDelete"]["deletedAutomaticDiscountId"] == auto["automaticDiscountNode"]["id"]
    d2 = admin('mutation($id: ID!) { discountCodeDelete(id: $id) { deletedCodeDiscountId userErrors { message } } }',
               {"id": code["codeDiscountNode"]["id"]})
    assert d2["data"]["discountCodeDelete"]["deletedCodeDiscountId"] == code["codeDiscountNode"]["id"]


def test_first_or_last_required_and_page_limit(admin, shop_data):
    assert admin("{ orders { nodes { id } } }")["errors"][0]["message"] == "you must provide one of first or last"
    assert admin("{ orders(first: 251) { nodes { id } } }")["errors"][0]["extensions"]["code"] in (
        "BAD_REQUEST", "MAX_COST_EXCEEDED")


def test_shops_are_isolated_and_routed_by_path(store, server, admin):
    import requests
    other = store.create_shop("other-shop.myshopify.com", currency="EUR")
    o = store.create_order(other.domain, lines=[{"title": "x", "price": "10.00"}], presentment_currency="USD",
                           fx_rate="1.10")
    assert admin("{ orders(first: 5) { nodes { id } } }")["data"]["orders"]["nodes"] == []
    # the demo shop's token is refused on the other shop
    r = requests.post(f"{server}/shops/{other.domain}/admin/api/2026-10/graphql.json",
                      json={"query": "{ shop { name } }"}, headers={"X-Shopify-Access-Token": admin.token})
    assert r.status_code == 401
    tok = store.install_app(other.domain, store.apps and next(iter(store.apps)))
    body = requests.post(f"{server}/shops/{other.domain}/admin/api/2026-10/graphql.json",
                         json={"query": "{ orders(first: 1) { nodes { totalPriceSet { shopMoney { amount currencyCode }"
                                        " presentmentMoney { amount currencyCode } } } } }"},
                         headers={"X-Shopify-Access-Token": tok}).json()
    bag = body["data"]["orders"]["nodes"][0]["totalPriceSet"]
    assert bag == {"shopMoney": {"amount": "10.00", "currencyCode": "EUR"},
                   "presentmentMoney": {"amount": "11.00", "currencyCode": "USD"}}
    assert requests.post(f"{server}/shops/nope.myshopify.com/admin/api/2026-10/graphql.json",
                         json={"query": "{ shop { name } }"}).status_code == 404
    assert o.id
