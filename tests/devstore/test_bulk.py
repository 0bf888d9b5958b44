"""Bulk operations: 100k+ orders to JSONL with __parentId, staged uploads + bulk mutations."""
import json
import time

import requests
from devstore_testlib import SHOP, Admin

from shopify_app.devstore import App

BULK_ORDERS = '''
{
  orders(query: "created_at:>='2025-01-01T00:00:00Z'") {
    edges { node {
      id createdAt
      customer { id }
      currentTotalPriceSet { shopMoney { amount currencyCode } }
      lineItems { edges { node { id quantity product { id } variant { id } } } }
    } }
  }
}'''

RUN = '''mutation Run($q: String!, $g: Boolean = false) { bulkOperationRunQuery(query: $q, groupObjects: $g) {
  bulkOperation { id status } userErrors { field message code } } }'''
POLL = "query($id: ID!) { bulkOperation(id: $id) { id status errorCode objectCount rootObjectCount url partialDataUrl } }"


def _wait(admin, op_id, timeout=60):
    end = time.time() + timeout
    seen = []
    while time.time() < end:
        op = admin(POLL, {"id": op_id})["data"]["bulkOperation"]
        seen.append(op["status"])
        if op["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            return op, seen
        time.sleep(0.05)
    raise AssertionError(f"bulk op stuck: {seen[-5:]}")


def test_bulk_query_100k_orders(store, admin):
    n = 100_500
    t0 = time.time()
    store.generate_orders(SHOP, n, customers=2000, products=300, lines_per_order=2)
    gen = time.time() - t0
    store.bulk_start_delay = 0.2      # so the poller sees CREATED before RUNNING
    body = admin(RUN, {"q": BULK_ORDERS, "g": True})        # grouped: each order's lines right after it
    res = body["data"]["bulkOperationRunQuery"]
    assert res["userErrors"] == [] and res["bulkOperation"]["status"] == "CREATED"
    op, seen = _wait(admin, res["bulkOperation"]["id"])
    assert seen[0] == "CREATED" and op["status"] == "COMPLETED"
    lines = requests.get(op["url"], timeout=60).text.splitlines()
    assert len(lines) == n * 3 == int(op["objectCount"])
    assert int(op["rootObjectCount"]) == n
    orders, items = {}, 0
    last_parent = None
    for raw in lines:
        obj = json.loads(raw)
        if "__parentId" in obj:
            assert obj["id"].startswith("gid://shopify/LineItem/")
            assert obj["__parentId"] == last_parent        # children follow their parent
            items += 1
        else:
            assert obj["id"].startswith("gid://shopify/Order/")
            assert "lineItems" not in obj                   # nested connections are not inlined
            orders[obj["id"]] = obj
            last_parent = obj["id"]
    assert len(orders) == n and items == 2 * n
    sample = json.loads(lines[0])
    real = store.shop(SHOP).orders[int(sample["id"].rsplit("/", 1)[1])]
    assert sample["currentTotalPriceSet"]["shopMoney"]["amount"] == f"{real.current_total_price:.2f}"
    assert gen < 30


def test_ungrouped_output_puts_child_lines_after_every_root(store, admin):
    """groupObjects false (the default since 2026-01): Shopify promises no order for child lines; the stand-in
    writes them after the last root line, so a reader that silently relies on grouping breaks in tests too."""
    store.generate_orders(SHOP, 30, customers=5, products=5, lines_per_order=2)
    res = admin(RUN, {"q": BULK_ORDERS})["data"]["bulkOperationRunQuery"]
    op, _ = _wait(admin, res["bulkOperation"]["id"])
    objs = [json.loads(x) for x in requests.get(op["url"], timeout=60).text.splitlines()]
    is_child = ["__parentId" in o for o in objs]
    assert is_child == [False] * 30 + [True] * 60
    roots = {o["id"] for o in objs[:30]}
    assert {o["__parentId"] for o in objs[30:]} == roots


def test_five_bulk_queries_run_at_once_the_sixth_is_refused(store, admin):
    store.generate_orders(SHOP, 10, customers=5, products=5)
    store.bulk_start_delay = 0.5
    q = "{ orders { edges { node { id } } } }"
    started = [admin(RUN, {"q": q})["data"]["bulkOperationRunQuery"] for _ in range(6)]
    assert all(r["userErrors"] == [] for r in started[:5])
    assert started[5]["bulkOperation"] is None and started[5]["userErrors"][0]["code"] == "LIMIT_REACHED"
    for r in started[:5]:
        assert _wait(admin, r["bulkOperation"]["id"])[0]["status"] == "COMPLETED"


def test_bulk_query_filters_and_rejects_second_run(store, admin):
    store.generate_orders(SHOP, 50, customers=5, products=5)
    store.bulk_query_limit = 1            # the pre-2026-01 rule: one bulk query at a time
    store.bulk_start_delay = 0.3
    q = '{ orders(query: "created_at:<\'2025-01-01T00:10:00Z\'") { edges { node { id } } } }'
    first = admin(RUN, {"q": q})["data"]["bulkOperationRunQuery"]
    second = admin(RUN, {"q": q})["data"]["bulkOperationRunQuery"]
    assert second["bulkOperation"] is None and second["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
    op, _ = _wait(admin, first["bulkOperation"]["id"])
    assert len(requests.get(op["url"]).text.splitlines()) == 10
    cur = admin("{ currentBulkOperation { id status } }")["data"]["currentBulkOperation"]
    assert cur["id"] == op["id"] and cur["status"] == "COMPLETED"


def test_bulk_query_failure_gives_partial_data(store, admin):
    store.generate_orders(SHOP, 40, customers=5, products=5)
    store.bulk_fail_next = "INTERNAL_SERVER_ERROR"
    res = admin(RUN, {"q": "{ orders { edges { node { id } } } }"})["data"]["bulkOperationRunQuery"]
    op, _ = _wait(admin, res["bulkOperation"]["id"])
    assert op["status"] == "FAILED" and op["errorCode"] == "INTERNAL_SERVER_ERROR" and op["url"] is None
    assert 0 < len(requests.get(op["partialDataUrl"]).text.splitlines()) < 40


def test_bulk_mutation_tags_add_via_staged_upload(store, admin):
    c1 = store.create_customer(SHOP, email="a@example.com")
    c2 = store.create_customer(SHOP, email="b@example.com")
    staged = admin('''mutation { stagedUploadsCreate(input: [{resource: BULK_MUTATION_VARIABLES,
        filename: "bulk_op_vars", mimeType: "text/jsonl", httpMethod: POST}]) {
        stagedTargets { url resourceUrl parameters { name value } } userErrors { field message } } }''')
    target = staged["data"]["stagedUploadsCreate"]["stagedTargets"][0]
    form = {p["name"]: p["value"] for p in target["parameters"]}
    jsonl = "\n".join(json.dumps({"id": f"gid://shopify/Customer/{c}", "tags": [t]})
                      for c, t in ((c1.id, "rfm:champions"), (c2.id, "rfm:at-risk"), (999, "x")))
    r = requests.post(target["url"], data=form, files={"file": ("bulk_op_vars", jsonl.encode())})
    assert r.status_code == 201
    run = admin('''mutation($m: String!, $p: String!) { bulkOperationRunMutation(mutation: $m, stagedUploadPath: $p) {
        bulkOperation { id status } userErrors { field message code } } }''', {
        "m": "mutation tag($id: ID!, $tags: [String!]!) { tagsAdd(id: $id, tags: $tags) { node { id } userErrors { message } } }",
        "p": form["key"]})["data"]["bulkOperationRunMutation"]
    assert run["userErrors"] == []
    op, _ = _wait(admin, run["bulkOperation"]["id"])
    out = [json.loads(x) for x in requests.get(op["url"]).text.splitlines()]
    assert [o["__lineNumber"] for o in out] == [0, 1, 2]
    assert out[0]["data"]["tagsAdd"] == {"node": {"id": f"gid://shopify/Customer/{c1.id}"}, "userErrors": []}
    assert out[2]["data"]["tagsAdd"]["userErrors"][0]["message"] == "Customer does not exist"
    assert store.shop(SHOP).customers[c2.id].tags == ["rfm:at-risk"]
    missing = admin('''mutation { bulkOperationRunMutation(mutation: "mutation { shop }", stagedUploadPath: "nope") {
        userErrors { code } } }''')["data"]["bulkOperationRunMutation"]
    assert missing["userErrors"][0]["code"] == "NO_SUCH_FILE"


def test_bulk_query_shape_limits(admin):
    def run(q):
        return admin(RUN, {"q": q})["data"]["bulkOperationRunQuery"]
    bad = run("{ orders { edges { node { id refunds { refundLineItems { edges { node { quantity } } } } } } } }")
    assert bad["bulkOperation"] is None and "within a list field" in bad["userErrors"][0]["message"]
    deep = run("{ customers { edges { node { id orders { edges { node { id lineItems { edges { node { id } } } } } } } } } }")
    assert "nesting depth" in deep["userErrors"][0]["message"]
    assert run("{ shop { name } }")["userErrors"][0]["message"] == "Bulk queries must contain at least one connection."


NODE_FIELDS = '''
  id orderName: name __typename
  ...Money
  customer { id legacyResourceId }
  lineItems(first: 5) { edges { node { id quantity ...Item product { id productType } variant { id } } } }
'''
FRAGMENTS = '''
fragment Money on Order {
  subtotalPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } }
  totalRefundedSet { shopMoney { amount } }
}
fragment Item on LineItem {
  originalUnitPriceSet { shopMoney { amount } }
  again: product { id title }
}'''


def test_bulk_export_equals_paged_query(store, admin):
    """The compiled exporter (per-selection builders, shared output of records without connections, presentment
    money only when asked) writes what the normal executor answers for the same selection: fragments, aliases,
    __typename, the same product under two selections, a customer shared by several orders."""
    store.generate_orders(SHOP, 40, customers=7, products=5, lines_per_order=3)
    body = admin(RUN, {"q": "{ orders(sortKey: ID) { edges { node {" + NODE_FIELDS + "} } } }" + FRAGMENTS})
    op, _ = _wait(admin, body["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"])
    exported: dict = {}
    for raw in requests.get(op["url"], timeout=60).text.splitlines():
        obj = json.loads(raw)
        if "__parentId" in obj:
            exported[obj.pop("__parentId")]["lines"].append(obj)
        else:
            exported[obj["id"]] = {"order": obj, "lines": []}
    paged, after = {}, None
    while True:
        page = admin("query($after: String) { orders(first: 10, after: $after, sortKey: ID) { pageInfo { "
                     "hasNextPage endCursor } nodes {" + NODE_FIELDS + "} } }" + FRAGMENTS,
                     {"after": after})
        assert "data" in page, page
        page = page["data"]["orders"]
        for node in page["nodes"]:
            lines = [e["node"] for e in node.pop("lineItems")["edges"]]
            paged[node["id"]] = {"order": node, "lines": lines}
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(paged) == 40 and list(exported) == list(paged)
    assert exported == paged
    some = next(iter(exported.values()))
    assert some["order"]["subtotalPriceSet"]["presentmentMoney"]["amount"]
    assert some["lines"][0]["again"]["title"] and "productType" in some["lines"][0]["product"]


LIST = '''query($q: String, $s: BulkOperationsSortKeys, $r: Boolean) {
  bulkOperations(first: 10, query: $q, sortKey: $s, reverse: $r) {
    nodes { id type status query } pageInfo { hasNextPage } } }'''


def test_bulk_operations_filter_by_status_and_type(store, admin, server):
    """bulkOperations replaces the deprecated currentBulkOperation: the app's own operations, newest first, with the
    documented status / operation_type / id / created_at filters; syntax the stand-in cannot evaluate is an error."""
    store.generate_orders(SHOP, 20, customers=5, products=5)
    done = admin(RUN, {"q": "{ orders { edges { node { id } } } }"})["data"]["bulkOperationRunQuery"]
    _wait(admin, done["bulkOperation"]["id"])
    store.bulk_start_delay = 30                   # the next two stay CREATED for the whole test
    q1 = admin(RUN, {"q": "{ customers { edges { node { id } } } }"})["data"]["bulkOperationRunQuery"]
    q2 = admin(RUN, {"q": "{ products { edges { node { id } } } }"})["data"]["bulkOperationRunQuery"]
    ids = [done["bulkOperation"]["id"], q1["bulkOperation"]["id"], q2["bulkOperation"]["id"]]

    def listed(**v):
        body = admin(LIST, v)
        assert "errors" not in body, body
        return [n["id"] for n in body["data"]["bulkOperations"]["nodes"]]

    assert listed() == ids[::-1]                                       # newest first by default
    assert listed(r=True) == ids
    assert listed(q="status:running OR status:created") == [ids[2], ids[1]]
    assert listed(q="status:completed") == [ids[0]]
    assert listed(q="-status:completed operation_type:query") == [ids[2], ids[1]]
    assert listed(q="operation_type:mutation") == []
    assert listed(q=f"id:{ids[1].rsplit('/', 1)[-1]}") == [ids[1]]
    assert listed(q="created_at:<2000-01-01") == []
    assert listed(q="status:created", s="COMPLETED_AT") == [ids[2], ids[1]]

    store.register_app(App("other-app-key", "other-secret", "https://other.example.com"))
    other = Admin(server, SHOP, store.install_app(SHOP, "other-app-key"))
    assert other(LIST)["data"]["bulkOperations"]["nodes"] == []       # another app sees none of them

    for q in ("(status:running OR status:created) operation_type:query", "running", "status:>running",
              "status:in_progress"):
        body = admin(LIST, {"q": q})
        assert body["errors"][0]["extensions"]["code"] == "NOT_IMPLEMENTED_BY_DEVSTORE", q
    body = admin(LIST, {"q": "state:running"})                         # unknown field: ignored, with a warning
    assert len(body["data"]["bulkOperations"]["nodes"]) == 3
    assert body["extensions"]["search"][0]["warnings"][0]["field"] == "state"
    assert store.deprecation_log == []
