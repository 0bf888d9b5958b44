"""One Admin GraphQL request, start to end, the way Shopify answers it.

parse + validate against the official schema -> errors (HTTP 200)  |  coerce variables -> INVALID_VARIABLE
-> requested cost > 1000 -> MAX_COST_EXCEEDED  |  bucket lacks requested cost -> THROTTLED
-> execute with the devstore resolvers -> refund requested - actual -> `extensions.cost` on every answer.
Deprecated things used by the request are answered, but listed in `extensions.deprecations`, appended to
`store.deprecation_log` and logged at WARNING, so tests can insist on none.
"""
from __future__ import annotations

import logging

from graphql import ExecutionResult, GraphQLError, execute

from . import mutations  # noqa: F401 - registers the mutation resolvers
from .cost import actual_cost, requested_cost
from .resolvers import Ctx, has_scope, resolve_field, type_of
from .schema import coerce_variables, find_deprecations, get_schema, parse_and_validate, select_operation
from .throttle import MAX_SINGLE_QUERY_COST

log = logging.getLogger("shopify_app.devstore")


# Root fields -> the access scope Shopify requires (write_X implies read_X).
ROOT_SCOPES = {
    ("QueryRoot", "orders"): "read_orders", ("QueryRoot", "order"): "read_orders",
    ("QueryRoot", "ordersCount"): "read_orders", ("QueryRoot", "customers"): "read_customers",
    ("QueryRoot", "customer"): "read_customers", ("QueryRoot", "customersCount"): "read_customers",
    ("QueryRoot", "segments"): "read_customers", ("QueryRoot", "segment"): "read_customers",
    ("QueryRoot", "products"): "read_products", ("QueryRoot", "product"): "read_products",
    ("QueryRoot", "productsCount"): "read_products", ("QueryRoot", "productVariant"): "read_products",
    ("Mutation", "segmentCreate"): "write_customers",
    ("Mutation", "discountAutomaticBxgyCreate"): "write_discounts",
    ("Mutation", "discountCodeBxgyCreate"): "write_discounts",
    ("Mutation", "discountAutomaticDelete"): "write_discounts", ("Mutation", "discountCodeDelete"): "write_discounts",
}


def field_resolver(source, info, **args):
    need = ROOT_SCOPES.get((info.parent_type.name, info.field_name))
    if need is not None and not has_scope(info.context, need):
        raise GraphQLError(f"Access denied for {info.field_name} field. Required access: `{need}` access scope.",
                           extensions={"code": "ACCESS_DENIED",
                                       "documentation": "https://shopify.dev/api/usage/access-scopes",
                                       "requiredAccess": f"`{need}` access scope."})
    return resolve_field(info.parent_type.name, info.field_name, source, args, info.context)


def type_resolver(value, info, abstract_type):
    return type_of(value)


def _format_error(err: GraphQLError) -> dict:
    out = {"message": err.message}
    if err.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in err.locations]
    if err.path:
        out["path"] = list(err.path)
    ext = dict(err.extensions or {})
    if "code" not in ext:
        # A Python exception inside a resolver: Shopify says INTERNAL_SERVER_ERROR; keep the detail for debugging.
        ext["code"] = "INTERNAL_SERVER_ERROR"
        if err.original_error is not None:
            log.exception("devstore resolver crashed", exc_info=err.original_error)
    out["extensions"] = ext
    return out


def execute_document(ctx: Ctx, doc, op, variables: dict) -> ExecutionResult:
    schema = get_schema(ctx.version)
    return execute(schema, doc, root_value={}, context_value=ctx, variable_values=variables,
                   operation_name=op.name.value if op.name else None, field_resolver=field_resolver,
                   type_resolver=type_resolver)


def run_graphql(ctx: Ctx, body: dict, *, charge: bool = True) -> dict:
    """The JSON Shopify would answer (always HTTP 200 at this point)."""
    store = ctx.store
    key = (ctx.api_key, ctx.shop.domain)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        return {"errors": [{"message": "No query string was present", "extensions": {"code": "BAD_REQUEST"}}]}
    variables = body.get("variables") or {}
    doc, errors = parse_and_validate(query, ctx.version)
    cost_ext = {"requestedQueryCost": 0, "actualQueryCost": 0, "throttleStatus": store.throttle.status(key)}
    if errors:
        return {"errors": errors, "extensions": {"cost": cost_ext}}
    op, errors = select_operation(doc, body.get("operationName"))
    if errors:
        return {"errors": errors, "extensions": {"cost": cost_ext}}
    coerced, errors = coerce_variables(doc, op, variables, ctx.version)
    if errors:
        return {"errors": errors, "extensions": {"cost": cost_ext}}

    schema = get_schema(ctx.version)
    requested = requested_cost(schema, doc, op, coerced)
    cost_ext["requestedQueryCost"] = requested
    if requested > MAX_SINGLE_QUERY_COST:
        return {"errors": [{"message": f"Query cost is {requested}, which exceeds the single query max cost limit "
                                       f"({MAX_SINGLE_QUERY_COST}).\n\nSee https://shopify.dev/concepts/about-apis/"
                                       "rate-limits for more information on how the\ncost of a query is calculated.\n\n"
                                       "To query larger amounts of data with fewer limits, bulk operations should be "
                                       "used instead.\nSee https://shopify.dev/tutorials/perform-bulk-operations-with-"
                                       "admin-api for usage details.\n",
                            "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested,
                                           "maxCost": MAX_SINGLE_QUERY_COST}}],
                "extensions": {"cost": cost_ext}}
    if charge:
        ok, _ = store.throttle.try_acquire(key, requested)
        if not ok:
            cost_ext["actualQueryCost"] = None
            cost_ext["throttleStatus"] = store.throttle.status(key)
            return {"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED",
                "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": {"cost": cost_ext}}

    deprecations = find_deprecations(doc, variables, ctx.version)
    with store.webhooks.deferred(), store.lock:   # webhooks go out after the lock is released
        result = execute_document(ctx, doc, op, coerced)
    out: dict = {}
    if result.errors:
        out["errors"] = [_format_error(e) for e in result.errors]
    out["data"] = result.data
    actual = actual_cost(schema, doc, op, coerced, result.data) if result.data else 0
    actual = min(actual, requested)
    if charge:
        store.throttle.refund(key, requested - actual)
    cost_ext["actualQueryCost"] = actual
    cost_ext["throttleStatus"] = store.throttle.status(key)
    ext: dict = {"cost": cost_ext}
    if ctx.search_warnings:
        ext["search"] = ctx.search_warnings
    if deprecations:
        ext["deprecations"] = deprecations
        for d in deprecations:
            entry = {"shop": ctx.shop.domain, "api_key": ctx.api_key, "message": d["message"],
                     "operation": op.name.value if op.name else None}
            store.deprecation_log.append(entry)
            log.warning("DEPRECATED Admin API usage by %s on %s: %s", ctx.api_key, ctx.shop.domain, d["message"])
    out["extensions"] = ext
    store.request_log.append({"shop": ctx.shop.domain, "api_key": ctx.api_key,
                              "operation": op.name.value if op.name else None, "requested": requested,
                              "actual": actual})
    return out
