"""Bulk operations: bulkOperationRunQuery -> JSONL, bulkOperationRunMutation <- staged JSONL.

Query output follows Shopify: one JSON object per line; every node of a *nested connection* becomes its own
line with `__parentId` = the parent's `id` (so the parent must select `id`); nested plain objects and lists stay
inline; pagination arguments are ignored (everything matching `query:` is exported). Where the child lines go
depends on `groupObjects` (default false since API 2026-01): grouped, each child follows its parent; ungrouped,
Shopify promises no order, and the stand-in writes every child line after the last root line, so a reader that
assumes grouping without asking for it fails here too.

Concurrency (API 2026-01+): up to five bulk queries of one app run at once per shop (`store.bulk_query_limit`,
default 5); one more gets LIMIT_REACHED. With the limit set to 1 (the pre-2026-01 rule, for tests of an app's
"already in progress" handling) the refusal is OPERATION_IN_PROGRESS naming the running operation, as before.
Mutation output: one line per input line, `{"data": ..., "__lineNumber": n}` (plus "errors" if any).

Runs on a background thread: CREATED -> RUNNING -> COMPLETED (or FAILED with partialDataUrl). Test hooks on the
store: `store.bulk_start_delay` (seconds spent in CREATED) and `store.bulk_fail_next = "INTERNAL_SERVER_ERROR"`.
Bulk operations do not touch the rate-limit bucket (as on Shopify).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time

from graphql import (
    FieldNode, FragmentDefinitionNode, FragmentSpreadNode, GraphQLInterfaceType, GraphQLList, GraphQLNonNull,
    GraphQLObjectType, GraphQLUnionType, InlineFragmentNode, OperationDefinitionNode, get_named_type,
)
from graphql.execution.values import get_argument_values

from .store import now
from .resolvers import Ctx, field_resolver, resolve_field, type_of
from .schema import get_schema, parse_and_validate

log = logging.getLogger("shopify_app.devstore.bulk")


def _uerr(message, code="INVALID", field=("query",)):
    return {"__typename": "BulkOperationUserError", "message": message, "field": list(field) if field else None,
            "code": code}


def _bulk_ctx(ctx: Ctx) -> Ctx:
    c = Ctx(ctx.store, ctx.shop, ctx.api_key, ctx.scope, ctx.base_url, ctx.version)
    c.bulk = True
    return c


BULK_QUERY_LIMIT = 5     # concurrent bulk queries per app and shop (API 2026-01+)


def _running(ctx, type_) -> list:
    return [op for op in ctx.shop.bulk_operations.values()
            if op.type == type_ and op.api_key == ctx.api_key and op.status in ("CREATED", "RUNNING", "CANCELING")]


def _in_progress(ctx, type_):
    running = _running(ctx, type_)
    return running[0] if running else None


def start_bulk_query(ctx: Ctx, query: str, group_objects: bool = False) -> dict:
    running = _running(ctx, "QUERY")
    limit = getattr(ctx.store, "bulk_query_limit", BULK_QUERY_LIMIT)
    if len(running) >= limit:
        if limit == 1:
            return {"bulkOperation": None, "userErrors": [_uerr(
                f"A bulk query operation for this app and shop is already in progress: "
                f"gid://shopify/BulkOperation/{running[0].id}.", "OPERATION_IN_PROGRESS", None)]}
        return {"bulkOperation": None, "userErrors": [_uerr(
            f"Bulk operations limit reached: {limit} bulk query operations for this app and shop are already "
            f"running. Please try again later.", "LIMIT_REACHED", None)]}
    doc, errors = parse_and_validate(query, ctx.version)
    if errors:
        return {"bulkOperation": None, "userErrors": [_uerr(f"Invalid bulk query: {e['message']}") for e in errors]}
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    if len(ops) != 1 or ops[0].operation.value != "query":
        return {"bulkOperation": None, "userErrors": [_uerr("Bulk queries must contain exactly one query operation")]}
    roots = [s for s in ops[0].selection_set.selections if isinstance(s, FieldNode)]
    schema = get_schema(ctx.version)
    if len(roots) != 1 or not get_named_type(schema.query_type.fields[roots[0].name.value].type).name.endswith("Connection"):
        return {"bulkOperation": None, "userErrors": [_uerr(
            "Bulk queries must contain at least one connection.")]}
    problem = _check_bulk_shape(schema, doc, roots[0])
    if problem:
        return {"bulkOperation": None, "userErrors": [_uerr(problem)]}
    op = ctx.store.new_bulk_operation(ctx.shop.domain, "QUERY", query, ctx.api_key)
    bctx = _bulk_ctx(ctx)
    threading.Thread(target=_run_query, args=(bctx, op, doc, ops[0], bool(group_objects)), daemon=True,
                     name=f"bulk-{op.id}").start()
    return {"bulkOperation": op, "userErrors": []}


def _check_bulk_shape(schema, doc, root) -> str | None:
    """Shopify's bulk query limits: at most 5 connections, connections nested at most 2 levels deep, and no
    connection inside a list field."""
    fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}
    found = {"connections": 0, "depth": 0, "in_list": False}

    def walk(sel_set, parent, depth, in_list):
        for sel in sel_set.selections:
            if isinstance(sel, InlineFragmentNode):
                t = schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
                walk(sel.selection_set, t, depth, in_list)
                continue
            if isinstance(sel, FragmentSpreadNode):
                frag = fragments[sel.name.value]
                walk(frag.selection_set, schema.get_type(frag.type_condition.name.value), depth, in_list)
                continue
            if sel.name.value.startswith("__") or not hasattr(parent, "fields"):
                continue
            fdef = parent.fields[sel.name.value]
            named = get_named_type(fdef.type)
            t = fdef.type.of_type if isinstance(fdef.type, GraphQLNonNull) else fdef.type
            is_list = isinstance(t, GraphQLList)
            if isinstance(named, GraphQLObjectType) and named.name.endswith("Connection"):
                found["connections"] += 1
                found["depth"] = max(found["depth"], depth + 1)
                found["in_list"] |= in_list
                if sel.selection_set:
                    walk(sel.selection_set, named, depth + 1, False)
            elif sel.selection_set:
                # a connection's own edges / nodes lists are the connection, not "a list field"
                own = parent.name.endswith(("Connection", "Edge")) and sel.name.value in ("edges", "nodes", "node")
                walk(sel.selection_set, named, depth, in_list or (is_list and not own))

    walk(root.selection_set, get_named_type(schema.query_type.fields[root.name.value].type), 1, False)
    if found["in_list"]:
        return "Queries that contain a connection field within a list field are not currently supported."
    if found["connections"] + 1 > 5:
        return "Bulk queries cannot contain more than 5 connections."
    if found["depth"] > 2:
        return "Bulk queries cannot contain connections with a nesting depth greater than 2."
    return None


def _start(ctx, op):
    delay = getattr(ctx.store, "bulk_start_delay", 0.0)
    if delay:
        time.sleep(delay)
    op.status = "RUNNING"


def _finish(ctx, op, path, *, failed_code: str | None = None):
    op.file_size = os.path.getsize(path)
    op.path = path
    op.completed_at = now()
    url = f"{ctx.shop_base}/devstore/bulk/{op.id}.jsonl"
    if op.status == "CANCELING":
        op.status = "CANCELED"
        op.partial_data_url = url
    elif failed_code:
        op.status, op.error_code, op.partial_data_url = "FAILED", failed_code, url
    else:
        op.status, op.url = "COMPLETED", (url if op.object_count else None)
    op.done.set()
    from .webhooks import bulk_finish_payload
    ctx.store.webhooks.emit(ctx.shop.domain, "bulk_operations/finish", lambda: bulk_finish_payload(op),
                            api_key=op.api_key)


def _run_query(ctx: Ctx, op, doc, op_node, group_objects: bool = False):
    path = os.path.join(ctx.store.data_dir, f"bulk-{op.id}.jsonl")
    fail = getattr(ctx.store, "bulk_fail_next", None)
    ctx.store.bulk_fail_next = None
    try:
        _start(ctx, op)
        schema = get_schema(ctx.version)
        fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}
        ex = _Exporter(ctx, schema, fragments, {}, grouped=group_objects)
        root = op_node.selection_set.selections[0]
        fdef = schema.query_type.fields[root.name.value]
        args = get_argument_values(fdef, root, {})
        with ctx.store.lock:
            conn = resolve_field("QueryRoot", root.name.value, None, args, ctx)
            nodes = list(conn["nodes"])
        node_type, node_sel = ex.node_selection(get_named_type(fdef.type), root)
        with open(path, "w", encoding="utf-8") as fh:
            ex.fh = fh
            for i, obj in enumerate(nodes):
                if op.status == "CANCELING":
                    break
                if fail and i >= len(nodes) // 2:
                    break
                ex.emit(obj, node_type, node_sel, None)
                op.root_object_count += 1
                op.object_count = ex.count
            ex.flush()
            ex.append_children()
        op.object_count = ex.count
        _finish(ctx, op, path, failed_code=fail)
    except Exception:  # noqa: BLE001 - a crash must end as FAILED, never hang the poller
        log.exception("bulk query %s crashed", op.id)
        if not os.path.exists(path):
            open(path, "w").close()
        _finish(ctx, op, path, failed_code="INTERNAL_SERVER_ERROR")


_TYPENAME, _LEAF, _OBJECT, _CONNECTION = range(4)
_FLUSH_LINES = 2000


class _Exporter:
    """Writes the JSONL of one bulk query. Each (runtime type, selection set) is compiled once into a builder: a
    list of steps holding the field's resolver (resolvers.field_resolver, the one a normal query calls), its
    arguments and how to complete its value; 100k+ objects then share it without per-value lookups."""

    def __init__(self, ctx, schema, fragments, variables, grouped: bool = True):
        self.ctx, self.schema, self.fragments, self.variables = ctx, schema, fragments, variables
        self.fh = None
        self.count = 0
        self._builders: dict = {}
        self._id_resolvers: dict = {}
        self._buf: list[str] = []
        # Ungrouped output: child lines are spooled to a temporary file and written after the last root line.
        self._children = None if grouped else tempfile.TemporaryFile("w+", encoding="utf-8")
        self._child_buf: list[str] = []
        self.dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def fields(self, sel_set, runtime_type):
        for sel in sel_set.selections:
            if isinstance(sel, FieldNode):
                yield sel
            elif isinstance(sel, InlineFragmentNode):
                if sel.type_condition is None or self._applies(sel.type_condition.name.value, runtime_type):
                    yield from self.fields(sel.selection_set, runtime_type)
            elif isinstance(sel, FragmentSpreadNode):
                frag = self.fragments[sel.name.value]
                if self._applies(frag.type_condition.name.value, runtime_type):
                    yield from self.fields(frag.selection_set, runtime_type)

    def _applies(self, cond: str, runtime_type) -> bool:
        if cond == runtime_type.name:
            return True
        t = self.schema.get_type(cond)
        return isinstance(t, (GraphQLInterfaceType, GraphQLUnionType)) and self.schema.is_sub_type(t, runtime_type)

    def node_selection(self, conn_type, conn_node):
        """(node type, selection set of one node) from `edges { node { ... } }` or `nodes { ... }`."""
        for f in self.fields(conn_node.selection_set, conn_type):
            if f.name.value == "nodes":
                return get_named_type(conn_type.fields["nodes"].type), f.selection_set
            if f.name.value == "edges":
                edge_t = get_named_type(conn_type.fields["edges"].type)
                for g in self.fields(f.selection_set, edge_t):
                    if g.name.value == "node":
                        return get_named_type(edge_t.fields["node"].type), g.selection_set
        raise ValueError("connection without edges.node or nodes")

    def emit(self, obj, gtype, sel_set, parent_id):
        gtype = self._runtime(gtype, obj)
        children: list = []
        line = self.builder(gtype, sel_set)(obj, children)
        if parent_id is not None:
            line["__parentId"] = parent_id
        buf = self._buf if parent_id is None or self._children is None else self._child_buf
        buf.append(self.dumps(line))
        self.count += 1
        if len(buf) >= _FLUSH_LINES:
            self.flush()
        if children:
            id_of = self._id_resolvers.get(gtype.name)
            if id_of is None:
                id_of = self._id_resolvers[gtype.name] = field_resolver(gtype.name, "id")
            my_id = id_of(obj, {}, self.ctx)
            for ctype, csel, items in children:
                for it in items:
                    self.emit(it, ctype, csel, my_id)

    def flush(self):
        if self._buf:
            self._buf.append("")
            self.fh.write("\n".join(self._buf))
            self._buf = []
        if self._child_buf:
            self._child_buf.append("")
            self._children.write("\n".join(self._child_buf))
            self._child_buf = []

    def append_children(self):
        """Ungrouped output: the spooled child lines after every root line."""
        if self._children is None:
            return
        self.flush()
        self._children.seek(0)
        shutil.copyfileobj(self._children, self.fh, 1 << 20)
        self._children.close()

    def _runtime(self, gtype, obj):
        if isinstance(gtype, (GraphQLInterfaceType, GraphQLUnionType)):
            return self.schema.get_type(type_of(obj))
        return gtype

    def builder(self, gtype, sel_set):
        """obj, children -> the output dict of `obj` (a concrete type); nested connections go to `children`."""
        key = (gtype.name, id(sel_set))
        build = self._builders.get(key)
        if build is None:
            build = self._builders[key] = self._compile(gtype, sel_set)
        return build

    def _compile(self, gtype, sel_set):
        tname, ctx = gtype.name, self.ctx
        steps = []
        for f in self.fields(sel_set, gtype):
            name = f.name.value
            out_key = f.alias.value if f.alias else name
            if name == "__typename":
                steps.append((out_key, _TYPENAME, None, None, tname))
                continue
            fdef = gtype.fields[name]
            args = get_argument_values(fdef, f, self.variables)
            resolve = field_resolver(tname, name)
            named = get_named_type(fdef.type)
            if isinstance(named, GraphQLObjectType) and named.name.endswith("Connection") and f.selection_set:
                steps.append((out_key, _CONNECTION, resolve, args, self.node_selection(named, f)))
            elif isinstance(named, (GraphQLObjectType, GraphQLInterfaceType, GraphQLUnionType)):
                steps.append((out_key, _OBJECT, resolve, args, self._completer(fdef.type, f.selection_set)))
            else:
                steps.append((out_key, _LEAF, resolve, args, None))
        steps = tuple(steps)
        nested = any(kind == _CONNECTION or (kind == _OBJECT and getattr(extra, "nested", True))
                     for _, kind, _, _, extra in steps)

        def build(obj, children):
            out = {}
            for out_key, kind, resolve, args, extra in steps:
                if kind == _LEAF:
                    out[out_key] = resolve(obj, args, ctx)
                elif kind == _OBJECT:
                    out[out_key] = extra(resolve(obj, args, ctx), children)
                elif kind == _CONNECTION:
                    value = resolve(obj, args, ctx)
                    children.append((extra[0], extra[1], value["nodes"] if value else []))
                else:
                    out[out_key] = extra
            return out
        build.nested = nested            # a connection somewhere below: the output also depends on `children`
        return build

    def _completer(self, gtype, sel_set):
        """value, children -> the completed value of a field of type `gtype` (None stays None at every level)."""
        if isinstance(gtype, GraphQLNonNull):
            return self._completer(gtype.of_type, sel_set)
        if isinstance(gtype, GraphQLList):
            inner = self._completer(gtype.of_type, sel_set)
            return lambda v, ch: None if v is None else [inner(x, ch) for x in v]
        if isinstance(gtype, GraphQLObjectType):
            build = self.builder(gtype, sel_set)
            if build.nested:
                complete = lambda v, ch: None if v is None else build(v, ch)   # noqa: E731
                complete.nested = True
                return complete
            return _memoized(build)
        if isinstance(gtype, (GraphQLInterfaceType, GraphQLUnionType)):
            return lambda v, ch: None if v is None else self.builder(self._runtime(gtype, v), sel_set)(v, ch)
        serialize = getattr(gtype, "serialize", None)
        complete = lambda v, ch: v if v is None or serialize is None or isinstance(v, (str, int, float, bool)) \
            else serialize(v)  # noqa: E731
        complete.nested = False
        return complete


_MEMO_MAX = 200_000


def _memoized(build):
    """Completion of a store record (product, variant, customer, ...) under a selection without connections: the
    same record is built once per export and its output shared by every line that refers to it (a catalogue's
    worth of products behind a million line items). Plain dict values (money bags, payloads) are built per use."""
    memo: dict = {}

    def complete(v, ch):
        if v is None:
            return None
        if type(v) is dict:
            return build(v, ch)
        hit = memo.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        out = build(v, ch)
        if len(memo) < _MEMO_MAX:
            memo[id(v)] = (v, out)                    # keeps v alive: its id is not reused meanwhile
        return out
    complete.nested = False
    return complete


# ---------------------------------------------------------------------------------------------------- mutations

def start_bulk_mutation(ctx: Ctx, mutation: str, staged_upload_path: str, client_identifier=None) -> dict:
    def err(msg, code):
        return {"bulkOperation": None, "userErrors": [{"__typename": "BulkMutationUserError", "message": msg,
                                                       "field": None, "code": code}]}
    if _in_progress(ctx, "MUTATION") is not None:
        return err("A bulk mutation operation for this app and shop is already in progress.", "OPERATION_IN_PROGRESS")
    content = ctx.store.uploads.get(staged_upload_path)
    if content is None:
        return err("The JSONL file could not be found. Try uploading the file again, and check that you've "
                   "entered the URL correctly for the stagedUploadPath mutation argument.", "NO_SUCH_FILE")
    doc, errors = parse_and_validate(mutation, ctx.version)
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)] if doc else []
    if errors or len(ops) != 1 or ops[0].operation.value != "mutation":
        return err("Invalid mutation: " + "; ".join(e["message"] for e in errors or [{"message": "not a single mutation"}]),
                   "INVALID_MUTATION")
    op = ctx.store.new_bulk_operation(ctx.shop.domain, "MUTATION", mutation, ctx.api_key)
    threading.Thread(target=_run_mutation, args=(_bulk_ctx(ctx), op, doc, ops[0], content), daemon=True,
                     name=f"bulk-{op.id}").start()
    return {"bulkOperation": op, "userErrors": []}


def _run_mutation(ctx: Ctx, op, doc, op_node, content: bytes):
    from .graphql_api import _format_error, execute_document
    from .schema import coerce_variables
    path = os.path.join(ctx.store.data_dir, f"bulk-{op.id}.jsonl")
    try:
        _start(ctx, op)
        with open(path, "w", encoding="utf-8") as fh:
            for n, raw in enumerate(content.decode("utf-8").splitlines()):
                if not raw.strip():
                    continue
                variables = json.loads(raw)
                coerced, errors = coerce_variables(doc, op_node, variables, ctx.version)
                line: dict = {}
                if errors:
                    line["errors"] = errors
                else:
                    with ctx.store.webhooks.deferred(), ctx.store.lock:
                        res = execute_document(ctx, doc, op_node, coerced)
                    line["data"] = res.data
                    if res.errors:
                        line["errors"] = [_format_error(e) for e in res.errors]
                line["__lineNumber"] = n
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
                op.object_count += 1
                op.root_object_count += 1
        _finish(ctx, op, path)
    except Exception:  # noqa: BLE001
        log.exception("bulk mutation %s crashed", op.id)
        if not os.path.exists(path):
            open(path, "w").close()
        _finish(ctx, op, path, failed_code="INTERNAL_SERVER_ERROR")
