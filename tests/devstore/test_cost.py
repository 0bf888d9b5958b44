"""Calculated query cost (Shopify's published rules)."""
from shopify_app.devstore.cost import actual_cost, requested_cost
from shopify_app.devstore.schema import get_schema, parse_and_validate


def _cost(q, variables=None):
    doc, errs = parse_and_validate(q)
    assert errs == []
    op = doc.definitions[0]
    return requested_cost(get_schema(), doc, op, variables or {})


def test_requested_costs():
    assert _cost("{ shop { name currencyCode } }") == 1                       # object 1, scalars 0
    assert _cost("{ products(first: 50) { edges { node { title } } } }") == 52  # 2 + 50 x 1
    # nested connection multiplies by the parent's page size: 2 + 10 x (1 + (2 + 5 x 1))
    assert _cost("{ products(first: 10) { edges { node { title variants(first: 5) { nodes { id } } } } } }") == 82
    assert _cost("query($n: Int) { orders(first: $n) { nodes { id } } }", {"n": 20}) == 22
    assert _cost('mutation { tagsAdd(id: "gid://shopify/Customer/1", tags: ["a"]) { node { id } } }') == 10


def test_actual_cost_counts_returned_nodes():
    q = "{ products(first: 10) { nodes { id variants(first: 5) { nodes { id } } } } }"
    doc, _ = parse_and_validate(q)
    data = {"products": {"nodes": [{"id": "1", "variants": {"nodes": [{"id": "a"}]}},
                                   {"id": "2", "variants": {"nodes": []}}]}}
    # 2 + [1 + (2 + 1)] + [1 + (2 + 0)] = 9
    assert actual_cost(get_schema(), doc, doc.definitions[0], {}, data) == 9
