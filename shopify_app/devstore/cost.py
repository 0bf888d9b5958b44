"""Calculated query cost, following Shopify's published rules.

- scalar / enum field: 0; object field: 1; interface/union: the most expensive fragment (max, not sum);
- connection (a field whose type name ends in "Connection"): 2 + n * (cost of one node's selection), where n is
  `first` or `last` (default 1 when neither: Shopify rejects such queries for most connections, the stand-in
  is lenient); nested connections therefore multiply by the parent's size;
- every top-level mutation field: 10 (its returned selection is free);
- actual cost: the same walk over the *response data*, counting the nodes really returned.
"""
from __future__ import annotations

import math

from graphql import (
    FieldNode, FragmentSpreadNode, GraphQLInterfaceType, GraphQLObjectType, GraphQLUnionType, InlineFragmentNode,
    get_named_type,
)
from graphql.execution.values import get_argument_values

MUTATION_COST = 10


def _is_connection(named) -> bool:
    return isinstance(named, GraphQLObjectType) and named.name.endswith("Connection")


def _page_size(fdef, node: FieldNode, variables: dict) -> int:
    try:
        args = get_argument_values(fdef, node, variables)
    except Exception:  # noqa: BLE001 - validation already reported the real problem
        return 1
    n = args.get("first") or args.get("last")
    return int(n) if n else 1


def _collect(schema, sel_set, parent, fragments) -> list[tuple[FieldNode, object]]:
    """Fields of a selection set as (node, field definition on `parent` or a fragment's type)."""
    out = []
    for sel in sel_set.selections:
        if isinstance(sel, FieldNode):
            if sel.name.value.startswith("__"):
                continue
            t = parent
            if hasattr(t, "fields") and sel.name.value in t.fields:
                out.append((sel, t.fields[sel.name.value]))
        elif isinstance(sel, InlineFragmentNode):
            t = schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
            out.extend(_collect(schema, sel.selection_set, t, fragments))
        elif isinstance(sel, FragmentSpreadNode):
            frag = fragments.get(sel.name.value)
            if frag is not None:
                out.extend(_collect(schema, frag.selection_set, schema.get_type(frag.type_condition.name.value),
                                    fragments))
    return out


def _selection_cost(schema, sel_set, parent, fragments, variables) -> float:
    total = 0.0
    for node, fdef in _collect(schema, sel_set, parent, fragments):
        total += _field_cost(schema, node, fdef, fragments, variables)
    return total


def _field_cost(schema, node, fdef, fragments, variables) -> float:
    named = get_named_type(fdef.type)
    if not isinstance(named, (GraphQLObjectType, GraphQLInterfaceType, GraphQLUnionType)):
        return 0.0
    if _is_connection(named):
        n = _page_size(fdef, node, variables)
        per_node = 0.0
        if node.selection_set:
            for cnode, cdef in _collect(schema, node.selection_set, named, fragments):
                cname = cnode.name.value
                if cname in ("edges", "nodes"):
                    node_type = get_named_type(cdef.type)
                    if cname == "edges":
                        for enode, edef in _collect(schema, cnode.selection_set, node_type, fragments):
                            if enode.name.value == "node":
                                per_node = max(per_node, _object_cost(schema, enode, edef, fragments, variables))
                    else:
                        per_node = max(per_node, _object_cost(schema, cnode, cdef, fragments, variables))
        return 2 + n * max(per_node, 1.0)
    return _object_cost(schema, node, fdef, fragments, variables)


def _object_cost(schema, node, fdef, fragments, variables) -> float:
    named = get_named_type(fdef.type)
    if not node.selection_set:
        return 1.0
    if isinstance(named, (GraphQLInterfaceType, GraphQLUnionType)):
        # Abstract: common fields + the most expensive type-specific fragment.
        common = [s for s in node.selection_set.selections if not isinstance(s, InlineFragmentNode)]
        frags = [s for s in node.selection_set.selections if isinstance(s, InlineFragmentNode)]
        from graphql.language import SelectionSetNode
        base = _selection_cost(schema, SelectionSetNode(selections=tuple(common)), named, fragments, variables)
        best = 0.0
        for fr in frags:
            t = schema.get_type(fr.type_condition.name.value) if fr.type_condition else named
            best = max(best, _selection_cost(schema, fr.selection_set, t, fragments, variables))
        return 1.0 + base + best
    return 1.0 + _selection_cost(schema, node.selection_set, named, fragments, variables)


def requested_cost(schema, doc, op, variables: dict) -> int:
    from graphql.language import FragmentDefinitionNode
    fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}
    if op.operation.value == "mutation":
        return MUTATION_COST * len(_collect(schema, op.selection_set, schema.mutation_type, fragments))
    return int(math.ceil(_selection_cost(schema, op.selection_set, schema.query_type, fragments, variables)))


def actual_cost(schema, doc, op, variables: dict, data) -> int:
    """Like requested_cost, but connections count the nodes actually returned."""
    from graphql.language import FragmentDefinitionNode
    if op.operation.value == "mutation":
        return requested_cost(schema, doc, op, variables)
    if not isinstance(data, dict):
        return 0
    fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}

    def walk(sel_set, parent, value) -> float:
        if not isinstance(value, dict):
            return 0.0
        total = 0.0
        for node, fdef in _collect(schema, sel_set, parent, fragments):
            key = node.alias.value if node.alias else node.name.value
            v = value.get(key)
            named = get_named_type(fdef.type)
            if v is None or not isinstance(named, (GraphQLObjectType, GraphQLInterfaceType, GraphQLUnionType)):
                continue
            if _is_connection(named) and isinstance(v, dict):
                per = 0.0
                for cnode, cdef in _collect(schema, node.selection_set, named, fragments):
                    ckey = cnode.alias.value if cnode.alias else cnode.name.value
                    if cnode.name.value == "nodes":
                        nt = get_named_type(cdef.type)
                        per = max(per, sum(1.0 + walk(cnode.selection_set, nt, nd) for nd in v.get(ckey) or []))
                    elif cnode.name.value == "edges":
                        et = get_named_type(cdef.type)
                        for enode, edef in _collect(schema, cnode.selection_set, et, fragments):
                            if enode.name.value == "node":
                                nt = get_named_type(edef.type)
                                nkey = enode.alias.value if enode.alias else "node"
                                per = max(per, sum(1.0 + walk(enode.selection_set, nt, (e or {}).get(nkey))
                                                   for e in v.get(ckey) or []))
                total += 2 + per
                continue
            items = v if isinstance(v, list) else [v]
            for it in items:
                total += 1.0
                if node.selection_set and isinstance(named, GraphQLObjectType):
                    total += walk(node.selection_set, named, it)
        return total

    return int(math.ceil(walk(op.selection_set, schema.query_type, data)))
