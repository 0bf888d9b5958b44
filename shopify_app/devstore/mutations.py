"""Mutation resolvers. Input problems come back as userErrors (HTTP 200), as Shopify does."""
from __future__ import annotations

import datetime as dt
import secrets

from graphql import GraphQLError

from .models import gid, parse_gid
from .resolvers import has_scope, reg, type_of
from .search import parse_time


def _uerr(message: str, field: list[str] | None = None, code: str | None = None) -> dict:
    e = {"__typename": "UserError", "message": message, "field": field}
    if code is not None:
        e["code"] = code
        e["extraInfo"] = None
    return e


def _tags_change(add: bool):
    def fn(s, a, c):
        parsed = parse_gid(a["id"])
        if parsed is None:
            return {"node": None, "userErrors": [_uerr("Invalid id", ["id"])]}
        kind, num = parsed
        if kind == "Customer":
            if not has_scope(c, "write_customers"):
                raise GraphQLError("Access denied for tagsAdd field. Required access: `write_customers` access scope.",
                                   extensions={"code": "ACCESS_DENIED"})
            if num not in c.shop.customers:
                return {"node": None, "userErrors": [_uerr("Customer does not exist", ["id"])]}
            fn_ = c.store.add_customer_tags if add else c.store.remove_customer_tags
            return {"node": fn_(c.shop.domain, num, a["tags"]), "userErrors": []}
        if kind == "Order":
            if num not in c.shop.orders:
                return {"node": None, "userErrors": [_uerr("Order does not exist", ["id"])]}
            o = c.shop.orders[num]
            tags = o.tags + [t for t in a["tags"] if t not in o.tags] if add else [t for t in o.tags if t not in a["tags"]]
            return {"node": c.store.update_order(c.shop.domain, num, tags=tags), "userErrors": []}
        raise GraphQLError(f"not implemented by devstore: tags on {kind}",
                           extensions={"code": "NOT_IMPLEMENTED_BY_DEVSTORE"})
    return fn


def _segment_create(s, a, c):
    name, query = a["name"].strip(), a["query"].strip()
    errs = []
    if not name:
        errs.append(_uerr("Name can't be blank", ["name"]))
    if any(seg.name == name for seg in c.shop.segments.values()):
        errs.append(_uerr("Name has already been taken", ["name"]))
    if not query:
        errs.append(_uerr("Query can't be blank", ["query"]))
    if errs:
        return {"segment": None, "userErrors": errs}
    return {"segment": c.store.create_segment(c.shop.domain, name, query), "userErrors": []}


def _check_bxgy(inp: dict, field_root: str) -> list[dict]:
    errs = []
    if not inp.get("title"):
        errs.append(_uerr("Title can't be blank", [field_root, "title"], "BLANK"))
    if not inp.get("startsAt"):
        errs.append(_uerr("Starts at can't be blank", [field_root, "startsAt"], "BLANK"))
    buys, gets = inp.get("customerBuys") or {}, inp.get("customerGets") or {}
    if not ((buys.get("items") or {}).get("products") or (buys.get("items") or {}).get("collections")):
        errs.append(_uerr("Items in 'customer buys' must be defined", [field_root, "customerBuys", "items"], "BLANK"))
    if not ((gets.get("items") or {}).get("products") or (gets.get("items") or {}).get("collections")):
        errs.append(_uerr("Items in 'customer gets' must be defined", [field_root, "customerGets", "items"], "BLANK"))
    if (gets.get("items") or {}).get("all"):
        errs.append(_uerr("Customer gets items can't be all for BXGY", [field_root, "customerGets", "items"],
                          "INVALID"))
    if (gets.get("value") or {}).get("percentage") is not None or (gets.get("value") or {}).get("discountAmount"):
        errs.append(_uerr("Only discountOnQuantity is supported for BXGY", [field_root, "customerGets", "value"],
                          "INVALID"))
    return errs


def _bxgy_create(method: str):
    arg = "automaticBxgyDiscount" if method == "automatic" else "bxgyCodeDiscount"
    out_key = "automaticDiscountNode" if method == "automatic" else "codeDiscountNode"

    def fn(s, a, c):
        if not has_scope(c, "write_discounts"):
            raise GraphQLError(f"Access denied for {'discountAutomaticBxgyCreate' if method == 'automatic' else 'discountCodeBxgyCreate'} "
                               "field. Required access: `write_discounts` access scope.", extensions={"code": "ACCESS_DENIED"})
        inp = a[arg]
        errs = _check_bxgy(inp, arg)
        if method == "code":
            code = inp.get("code")
            if not code:
                errs.append(_uerr("Code can't be blank", [arg, "code"], "BLANK"))
            elif any(d.code == code for d in c.shop.discounts.values()):
                errs.append(_uerr("Code must be unique. Please try a different code.", [arg, "code"], "TAKEN"))
        for items_key in ("customerBuys", "customerGets"):
            prods = ((inp.get(items_key) or {}).get("items") or {}).get("products") or {}
            for pid in prods.get("productsToAdd") or []:
                p = parse_gid(pid)
                if p is None or p[0] != "Product" or p[1] not in c.shop.products:
                    errs.append(_uerr(f"Product with id: {pid} is invalid", [arg, items_key, "items", "products",
                                                                                 "productsToAdd"], "INVALID"))
        if errs:
            return {out_key: None, "userErrors": errs}
        d = c.store.create_discount(c.shop.domain, method=method, kind="bxgy", title=inp["title"],
                                    code=inp.get("code"), starts_at=parse_time(str(inp["startsAt"])),
                                    ends_at=parse_time(str(inp["endsAt"])) if inp.get("endsAt") else None, input=inp)
        return {out_key: d, "userErrors": []}
    return fn


def _discount_delete(method: str):
    out_key = "deletedAutomaticDiscountId" if method == "automatic" else "deletedCodeDiscountId"
    kind = "DiscountAutomaticNode" if method == "automatic" else "DiscountCodeNode"

    def fn(s, a, c):
        p = parse_gid(a["id"])
        d = c.shop.discounts.get(p[1]) if p and p[0] == kind else None
        if d is None or d.method != method:
            return {out_key: None, "userErrors": [_uerr("Discount does not exist", ["id"], "INVALID")]}
        with c.store.lock:
            c.shop.discounts.pop(d.id, None)
        return {out_key: a["id"], "userErrors": []}
    return fn


def _staged_uploads(s, a, c):
    targets = []
    for inp in a["input"]:
        key = f"tmp/{c.shop.id}/bulk/{secrets.token_hex(8)}/{inp['filename']}"
        if inp["resource"] != "BULK_MUTATION_VARIABLES":
            # Other resources work the same way here; only bulk variables are read back by the devstore.
            key = f"tmp/{c.shop.id}/{inp['resource'].lower()}/{secrets.token_hex(8)}/{inp['filename']}"
        params = [{"__typename": "StagedUploadParameter", "name": "key", "value": key},
                  {"__typename": "StagedUploadParameter", "name": "Content-Type", "value": inp["mimeType"]},
                  {"__typename": "StagedUploadParameter", "name": "success_action_status", "value": "201"},
                  {"__typename": "StagedUploadParameter", "name": "acl", "value": "private"}]
        url = f"{c.shop_base}/devstore/uploads"
        targets.append({"__typename": "StagedMediaUploadTarget", "url": url, "resourceUrl": f"{url}/{key}",
                        "parameters": params})
    return {"stagedTargets": targets, "userErrors": []}


def _webhook_create(s, a, c):
    from .store import _rest_topic
    inp = a["webhookSubscription"]
    uri = inp.get("uri") or inp.get("callbackUrl")
    if not uri:
        return {"webhookSubscription": None, "userErrors": [_uerr("Address can't be blank", ["webhookSubscription", "uri"])]}
    topic = _rest_topic(a["topic"])
    for w in c.shop.webhook_subscriptions.values():
        if w.api_key == c.api_key and w.topic == topic and w.uri == uri:
            return {"webhookSubscription": None,
                    "userErrors": [_uerr("Address for this topic has already been taken", ["webhookSubscription", "callbackUrl"])]}
    w = c.store.subscribe_webhook(c.shop.domain, topic, uri, api_key=c.api_key, name=inp.get("name"),
                                  include_fields=inp.get("includeFields") or ())
    return {"webhookSubscription": w, "userErrors": []}


def _webhook_delete(s, a, c):
    p = parse_gid(a["id"])
    w = c.shop.webhook_subscriptions.get(p[1]) if p else None
    if w is None or w.api_key != c.api_key:
        return {"deletedWebhookSubscriptionId": None, "userErrors": [_uerr("Webhook subscription does not exist", ["id"])]}
    c.shop.webhook_subscriptions.pop(w.id)
    return {"deletedWebhookSubscriptionId": a["id"], "userErrors": []}


def _bulk_query(s, a, c):
    from .bulk import start_bulk_query
    return start_bulk_query(c, a["query"], a.get("groupObjects", False))


def _bulk_mutation(s, a, c):
    from .bulk import start_bulk_mutation
    return start_bulk_mutation(c, a["mutation"], a["stagedUploadPath"], a.get("clientIdentifier"))


def _bulk_cancel(s, a, c):
    p = parse_gid(a["id"])
    op = c.shop.bulk_operations.get(p[1]) if p else None
    if op is None:
        return {"bulkOperation": None, "userErrors": [_uerr("Bulk operation does not exist", ["id"])]}
    if op.status in ("CREATED", "RUNNING"):
        op.status = "CANCELING"
    return {"bulkOperation": op, "userErrors": []}


reg("Mutation",
    tagsAdd=_tags_change(True), tagsRemove=_tags_change(False), segmentCreate=_segment_create,
    discountAutomaticBxgyCreate=_bxgy_create("automatic"), discountCodeBxgyCreate=_bxgy_create("code"),
    discountAutomaticDelete=_discount_delete("automatic"), discountCodeDelete=_discount_delete("code"),
    stagedUploadsCreate=_staged_uploads, webhookSubscriptionCreate=_webhook_create,
    webhookSubscriptionDelete=_webhook_delete, bulkOperationRunQuery=_bulk_query,
    bulkOperationRunMutation=_bulk_mutation, bulkOperationCancel=_bulk_cancel)

_ = (dt, gid, type_of)
