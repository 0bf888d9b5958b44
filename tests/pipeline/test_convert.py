"""REST webhook payload -> OrderVersion."""
from __future__ import annotations

import copy
import datetime as dt
import json

from shopify_app.config import PROJECT_ROOT
from shopify_app.shopify.convert import money, order_deleted, order_from_rest, parse_time

FIXTURES = PROJECT_ROOT / "shopify_app" / "devstore" / "fixtures"


def load(name):
    return json.loads((FIXTURES / name).read_text())


def test_fixture_order():
    v = order_from_rest(load("orders__create.json"))
    assert v.id == 820982911946154508 and v.name == "#9999"
    assert v.processed_at == dt.datetime(2022, 1, 1, 0, 0) and v.updated_at == dt.datetime(2022, 1, 1)
    assert v.customer_id == 115310627314723954 and v.cancelled and v.test and not v.counted
    assert v.subtotal == 404.95 and v.total_discounts == 20.0 and v.refunded == 0.0
    assert [ln.product_id for ln in v.lines] == [788032119674292922, None, None, 788032119674292922,
                                                  788032119674292922]
    assert v.lines[0].price == 89.99 and v.lines[0].quantity == 1


def test_shop_money_preferred_and_fallbacks():
    p = load("orders__create.json")
    p["subtotal_price_set"]["shop_money"]["amount"] = "300.00"     # presentment stays 404.95
    del p["total_discounts_set"]
    p["total_discounts"] = "7.50"
    del p["processed_at"]
    p["created_at"] = "2024-06-30T23:30:00Z"
    p["updated_at"] = "2024-07-01T02:00:00+02:00"
    p["customer"] = None
    p["cancelled_at"] = None
    p["test"] = False
    v = order_from_rest(p)
    assert v.subtotal == 300.0 and v.total_discounts == 7.5
    assert v.processed_at == dt.datetime(2024, 6, 30, 23, 30) and v.updated_at == dt.datetime(2024, 7, 1, 0, 0)
    assert v.customer_id is None and v.counted


def test_refunds_and_discount_allocations():
    p = load("orders__create.json")
    refund = load("refunds__create.json")
    p["refunds"] = [refund]
    li = p["line_items"][3]
    li["discount_allocations"] = [{"amount": "4.00", "amount_set": {"shop_money": {"amount": "3.00"}}},
                                  {"amount_set": {"shop_money": {"amount": "2.00"}}}]
    p["line_items"][0]["total_discount_set"]["shop_money"]["amount"] = "1.50"
    p["line_items"][0]["quantity"] = 2
    v = order_from_rest(p)
    assert v.lines[3].discount == 5.0 and v.lines[0].discount == 1.5
    assert [ln.refunded_quantity for ln in v.lines] == [1, 1, 1, 1, 1]
    assert v.refunded == round(89.99 + 19.99 + 24.99 + 159.99 + 119.99, 2)


def test_money_and_time_helpers():
    assert money({"x": "1.25"}, "x") == 1.25 and money({}, "x") == 0.0 and money(None, "x") == 0.0
    assert money({"x": "1", "x_set": {"shop_money": {"amount": "2"}}}, "x") == 2.0
    assert parse_time("2021-12-31T19:00:00-05:00") == dt.datetime(2022, 1, 1)
    assert parse_time(None) is None


def test_tombstone():
    now = dt.datetime(2030, 1, 1)
    v = order_deleted(load("orders__delete.json"), now)
    assert v.id == 820982911946154508 and v.deleted and not v.counted and v.updated_at == now


def test_payload_not_mutated():
    p = load("orders__create.json")
    before = copy.deepcopy(p)
    order_from_rest(p)
    assert p == before


def test_parse_body_gives_the_version_json_loads_gives(monkeypatch):
    """orjson (when installed) and json.loads give the same version for every fixture, and the same refusal for an
    id beyond 64 bits (orjson reads it as a float, json.loads as an int: _int refuses both)."""
    import pytest

    from shopify_app.shopify import convert

    bodies = [(FIXTURES / name).read_text() for name in ("orders__create.json", "orders__updated.json",
                                                         "orders__paid.json")
              if (FIXTURES / name).exists()]
    big = json.dumps({**load("orders__create.json"), "id": 2 ** 64 + 5})
    huge_qty = json.loads(bodies[0])
    huge_qty["line_items"][0]["quantity"] = 10 ** 30
    for orjson_module in {convert._orjson, None}:
        monkeypatch.setattr(convert, "_orjson", orjson_module)
        for body in bodies:
            assert convert.parse_body(body) == json.loads(body)
            assert order_from_rest(convert.parse_body(body)) == order_from_rest(json.loads(body))
        for body in (big, json.dumps(huge_qty)):
            with pytest.raises(ValueError, match="out of range"):
                order_from_rest(convert.parse_body(body))


def _reference_line(li, refunded_qty):
    """The converter's line rules read one field at a time (what order_from_rest computed before its fast path)."""
    from shopify_app.shopify.convert import _int, _int_or_none

    lid = _int(li["id"])
    discount = money(li, "total_discount")
    if discount == 0:
        discount = float(sum(money(a, "amount") for a in li.get("discount_allocations") or []))
    return (lid, _int_or_none(li.get("product_id")), _int_or_none(li.get("variant_id")),
            li.get("product_type") or None, _int(li.get("quantity") or 0), refunded_qty.get(lid, 0),
            round(money(li, "price"), 2), round(discount, 2))


def test_line_fast_path_equals_the_field_rules_on_varied_line_items():
    """Random line items (money with / without shop money, empty or missing fields, allocations, negative zero,
    string ids and quantities): the fast line conversion gives the same values, floats bit for bit."""
    import math
    import random

    rnd = random.Random(5)
    base = load("orders__create.json")
    amounts = [None, "", "0", "0.00", "-0.00", "2.55", "10", 3.25, 0, "1e2"]
    for k in range(300):
        p = copy.deepcopy(base)
        p["refunds"] = []
        lines = []
        for i in range(rnd.randint(1, 6)):
            li = copy.deepcopy(base["line_items"][i % len(base["line_items"])])
            li["id"] = rnd.choice([1000 + i, str(1000 + i)])
            li["product_id"] = rnd.choice([None, "", 7, "8", 2 ** 40])
            li["variant_id"] = rnd.choice([None, "", 9])
            li["product_type"] = rnd.choice([None, "", "Mugs"])
            li["quantity"] = rnd.choice([None, 0, 2, "3"])
            for key in ("price", "total_discount"):
                li[key] = rnd.choice(amounts)
                if rnd.random() < 0.3:
                    li.pop(f"{key}_set", None)
                elif rnd.random() < 0.3:
                    li[f"{key}_set"] = {"shop_money": {"amount": rnd.choice(amounts)}}
                elif rnd.random() < 0.2:
                    li[f"{key}_set"] = {"shop_money": None}
            li["discount_allocations"] = rnd.choice([[], None, [{"amount": "1.10"}, {"amount_set": {
                "shop_money": {"amount": "0.40"}}}]])
            lines.append(li)
        p["line_items"] = lines
        got = [tuple(getattr(ln, f) for f in ("id", "product_id", "variant_id", "product_type", "quantity",
                                               "refunded_quantity", "price", "discount"))
               for ln in order_from_rest(p).lines]
        want = [_reference_line(li, {}) for li in lines]
        assert got == want
        for g, w in zip(got, want):                  # -0.0 vs 0.0 would be equal above: compare the signs too
            assert [math.copysign(1, x) for x in g[6:]] == [math.copysign(1, x) for x in w[6:]]


def test_a_line_item_that_is_no_object_is_an_invalid_payload():
    import pytest

    p = load("orders__create.json")
    p["line_items"] = [["not", "an", "object"]]
    with pytest.raises(TypeError):
        order_from_rest(p)


def test_with_product_types_equals_replacing_each_untyped_line():
    """Lines without a type get the catalogue's (when it has one), typed lines keep theirs; the version is the one
    dataclasses.replace builds; nothing to fill: the same object."""
    from dataclasses import replace

    from shopify_app.shopify.convert import with_product_types

    v = order_from_rest(load("orders__create.json"))
    v = replace(v, lines=(replace(v.lines[0], product_type="Shades"), *v.lines[1:]))
    types = {788032119674292922: "Glasses", 5: "Other"}
    want = replace(v, lines=tuple(replace(ln, product_type=types[ln.product_id])
                                  if ln.product_id in types and not ln.product_type else ln for ln in v.lines))
    got = with_product_types(v, types)
    assert got == want and got.lines[0].product_type == "Shades"
    assert [ln.product_type for ln in got.lines] == ["Shades", None, None, "Glasses", "Glasses"]
    assert with_product_types(v, {}) is v and with_product_types(v, {5: "Other"}) is v
