"""The stand-in validates every request against the official schema and answers like Shopify."""
from shopify_app.devstore import validate_document


def test_unknown_field_is_rejected_shopify_style(admin):
    body = admin("{ shop { name notAField } }")
    assert "data" not in body
    err = body["errors"][0]
    assert err["message"] == "Field 'notAField' doesn't exist on type 'Shop'"
    assert err["locations"] == [{"line": 1, "column": 15}]
    assert err["extensions"]["code"] == "undefinedField"


def test_wrong_argument_type_is_rejected(admin):
    body = admin('{ orders(first: "ten") { nodes { id } } }')
    assert body["errors"][0]["extensions"]["code"] == "argumentLiteralsIncompatible"
    assert "locations" in body["errors"][0]


def test_missing_required_variable_is_rejected(admin):
    body = admin("query Get($id: ID!) { order(id: $id) { id } }", {})
    err = body["errors"][0]
    assert err["extensions"]["code"] == "INVALID_VARIABLE"
    assert "$id" in err["message"]


def test_bad_variable_type_is_rejected(admin):
    body = admin("query Get($n: Int!) { orders(first: $n) { nodes { id } } }", {"n": "many"})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_VARIABLE"


def test_validate_document_helper():
    assert validate_document("query { shop { name currencyCode } }") == []
    errs = validate_document("query { shop { nope } }")
    assert errs and errs[0]["extensions"]["code"] == "undefinedField"
    deps = validate_document("query { orders(first: 1) { nodes { totalPrice } } }")
    assert [d["extensions"]["code"] for d in deps] == ["DEPRECATED"]
    assert validate_document("query { orders(first: 1) { nodes { totalPrice } } }", allow_deprecated=True) == []


def test_deprecated_field_is_answered_but_flagged(store, admin):
    store.create_order("demo.myshopify.com", lines=[{"title": "Gift wrap", "price": "2.50", "quantity": 1}])
    body = admin("{ orders(first: 1) { nodes { id cartDiscountAmountSet { shopMoney { amount } } } } }")
    assert body["data"]["orders"]["nodes"][0]["id"].startswith("gid://shopify/Order/")
    assert store.deprecation_log == []
    body = admin("{ shop { plan { displayName } } }")
    assert body["data"]["shop"]["plan"]["displayName"] == "Standard"
    assert body["extensions"]["deprecations"][0]["extensions"]["coordinate"] == "ShopPlan.displayName"
    assert len(store.deprecation_log) == 1


def test_unimplemented_field_is_a_clear_error_never_null(admin):
    body = admin("{ shop { alerts { description } } }")
    assert body["errors"][0]["message"] == "not implemented by devstore: Shop.alerts"


def test_bad_token_and_version(server, token):
    import requests
    url = f"{server}/shops/demo.myshopify.com/admin/api/2026-10/graphql.json"
    r = requests.post(url, json={"query": "{ shop { name } }"}, headers={"X-Shopify-Access-Token": "nope"})
    assert r.status_code == 401
    assert r.json() == {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
    r = requests.post(url.replace("2026-10", "2019-01"), json={"query": "{ shop { name } }"},
                      headers={"X-Shopify-Access-Token": token})
    assert r.status_code == 404
