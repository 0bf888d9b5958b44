"""The official Admin GraphQL schema, and validation that answers like Shopify does.

`validate_document(source, variables)` is the public helper the app's own tests use on every .graphql document
it ships. It returns Shopify-shaped error dicts (`message`, `locations`, `extensions.code`), `[]` when the
document is valid *and* uses nothing deprecated: deprecated fields, arguments, enum values and input fields are
reported as entries with `extensions.code == "DEPRECATED"` (pass `allow_deprecated=True` to drop them), because a
deprecated field works today and breaks at the next quarterly version.

Error codes follow what Shopify's graphql-ruby based API returns (undefinedField, argumentLiteralsIncompatible,
missingRequiredArguments, INVALID_VARIABLE, ...). graphql-core does not say which rule produced an error, so each
validation rule is run on its own and mapped to the code Shopify uses for it.
"""
from __future__ import annotations

import functools
import gzip
import json
import logging
import re
import threading
from pathlib import Path

from graphql import (
    GraphQLEnumType, GraphQLError, GraphQLInputObjectType, GraphQLList, GraphQLNonNull, GraphQLSchema, TypeInfo,
    Visitor, build_client_schema, get_named_type, parse, specified_rules, validate, visit,
)
from graphql.execution.values import get_variable_values
from graphql.language import DocumentNode, OperationDefinitionNode
from graphql.utilities import TypeInfoVisitor

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
SUPPORTED_VERSIONS = {"2026-10": SCHEMA_DIR / "admin_2026-10.json.gz"}
DEFAULT_VERSION = "2026-10"

_lock = threading.Lock()
_schemas: dict[str, GraphQLSchema] = {}


def get_schema(version: str = DEFAULT_VERSION) -> GraphQLSchema:
    """The schema for an API version, loaded once per process (about 0.4 s)."""
    schema = _schemas.get(version)
    if schema is None:
        with _lock:
            schema = _schemas.get(version)
            if schema is None:
                path = SUPPORTED_VERSIONS[version]
                with gzip.open(path, "rt", encoding="utf-8") as fh:
                    data = json.load(fh)
                schema = build_client_schema(data.get("data", data))
                # graphql-core 3.3 validates the built schema and rejects Shopify's; 3.2 does not. Either way
                # the introspection is the authority here, so never let schema self-validation block requests.
                schema._validation_errors = []  # noqa: SLF001
                _schemas[version] = schema
    return schema


# graphql-core rule class name -> Shopify (graphql-ruby) error code.
_RULE_CODES = {
    "FieldsOnCorrectTypeRule": "undefinedField",
    "KnownArgumentNamesRule": "argumentNotAccepted",
    "ProvidedRequiredArgumentsRule": "missingRequiredArguments",
    "ValuesOfCorrectTypeRule": "argumentLiteralsIncompatible",
    "NoUndefinedVariablesRule": "variableNotDefined",
    "NoUnusedVariablesRule": "variableNotUsed",
    "KnownTypeNamesRule": "undefinedType",
    "ScalarLeafsRule": "selectionMismatch",
    "VariablesInAllowedPositionRule": "variableMismatch",
    "VariablesAreInputTypesRule": "variableRequiresValidType",
    "UniqueArgumentNamesRule": "argumentNotUnique",
    "UniqueVariableNamesRule": "variableNotUnique",
    "KnownFragmentNamesRule": "undefinedFragment",
    "NoUnusedFragmentsRule": "useAndDefineFragment",
    "PossibleFragmentSpreadsRule": "cannotSpreadFragment",
    "FragmentsOnCompositeTypesRule": "fragmentOnNonCompositeType",
    "KnownDirectivesRule": "undefinedDirective",
    "LoneAnonymousOperationRule": "anonymousOperationNotAlone",
    "UniqueOperationNamesRule": "uniquelyNamedOperations",
    "OverlappingFieldsCanBeMergedRule": "fieldConflict",
    "NoFragmentCyclesRule": "infiniteLoop",
}


def _error_dict(err: GraphQLError, code: str, **extra) -> dict:
    out: dict = {"message": err.message}
    if err.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in err.locations]
    if err.path:
        out["path"] = list(err.path)
    ext = {"code": code}
    ext.update(extra)
    out["extensions"] = ext
    return out


def parse_document(source: str) -> tuple[DocumentNode | None, list[dict]]:
    try:
        return parse(source), []
    except GraphQLError as err:
        # Shopify answers syntax errors with HTTP 200 and a message + location; the code names the phase.
        return None, [_error_dict(err, "PARSE_ERROR")]


@functools.lru_cache(maxsize=512)
def _validate_cached(source: str, version: str) -> tuple[DocumentNode | None, tuple]:
    """Parse + validate, cached by source text: apps send the same few documents again and again."""
    doc, errors = parse_document(source)
    if doc is None:
        return None, tuple(json.dumps(e) for e in errors)
    schema = get_schema(version)
    found: list[dict] = []
    seen: set[tuple] = set()
    for rule in specified_rules:
        for err in validate(schema, doc, [rule]):
            key = (err.message, tuple((loc.line, loc.column) for loc in err.locations or ()))
            if key in seen:
                continue
            seen.add(key)
            code = _RULE_CODES.get(rule.__name__, "GRAPHQL_VALIDATION_FAILED")
            extra = {}
            m = re.match(r"Cannot query field '([^']+)' on type '([^']+)'", err.message)
            if m:  # graphql-ruby's wording, which is what Shopify returns
                err = GraphQLError(f"Field '{m.group(1)}' doesn't exist on type '{m.group(2)}'", err.nodes)
                extra = {"typeName": m.group(2), "fieldName": m.group(1)}
            found.append(_error_dict(err, code, **extra))
    if not found and not [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]:
        found.append({"message": "No operations in document", "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}})
    return doc, tuple(json.dumps(e) for e in found)


def parse_and_validate(source: str, version: str = DEFAULT_VERSION) -> tuple[DocumentNode | None, list[dict]]:
    doc, errs = _validate_cached(source, version)
    return doc, [json.loads(e) for e in errs]


def select_operation(doc: DocumentNode, operation_name: str | None) -> tuple[OperationDefinitionNode | None, list]:
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        for op in ops:
            if op.name and op.name.value == operation_name:
                return op, []
        return None, [{"message": f"No operation named \"{operation_name}\"",
                       "extensions": {"code": "OPERATION_NOT_FOUND"}}]
    if len(ops) == 1:
        return ops[0], []
    return None, [{"message": "An operation name is required", "extensions": {"code": "OPERATION_NAME_REQUIRED"}}]


def coerce_variables(doc: DocumentNode, op: OperationDefinitionNode, variables: dict | None,
                     version: str = DEFAULT_VERSION) -> tuple[dict | None, list[dict]]:
    """Coerce variables like Shopify: a bad or missing one is an INVALID_VARIABLE error, nothing runs."""
    schema = get_schema(version)
    result = get_variable_values(schema, op.variable_definitions or [], variables or {})
    if isinstance(result, list):
        out = []
        for err in result:
            d = _error_dict(err, "INVALID_VARIABLE")
            # graphql-ruby shapes: {"value": <given>, "problems": [{"path": [], "explanation": "..."}]}
            name = None
            for vd in op.variable_definitions or []:
                if f"${vd.variable.name.value}" in err.message:
                    name = vd.variable.name.value
                    break
            d["extensions"]["value"] = (variables or {}).get(name) if name else None
            d["extensions"]["problems"] = [{"path": [], "explanation": err.message}]
            out.append(d)
        return None, out
    return result, []


# --------------------------------------------------------------------------------------------------- deprecations

def find_deprecations(doc_or_source, variables: dict | None = None, version: str = DEFAULT_VERSION) -> list[dict]:
    """Every deprecated field / argument / enum value / input field the document (and its variables) uses."""
    schema = get_schema(version)
    doc = parse(doc_or_source) if isinstance(doc_or_source, str) else doc_or_source
    type_info = TypeInfo(schema)
    found: list[dict] = []

    def add(kind: str, coord: str, reason: str, node) -> None:
        loc = node.loc.source.get_location(node.loc.start) if node is not None and node.loc else None
        entry = {"message": f"{kind} {coord} is deprecated: {reason}",
                 "extensions": {"code": "DEPRECATED", "kind": kind, "coordinate": coord, "reason": reason}}
        if loc:
            entry["locations"] = [{"line": loc.line, "column": loc.column}]
        found.append(entry)

    class DeprecationVisitor(Visitor):
        def enter_field(self, node, *_):
            fdef = type_info.get_field_def()
            parent = type_info.get_parent_type()
            if fdef is not None and fdef.deprecation_reason:
                add("Field", f"{parent.name}.{node.name.value}", fdef.deprecation_reason, node)

        def enter_argument(self, node, *_):
            arg = type_info.get_argument()
            fdef = type_info.get_field_def()
            if arg is not None and arg.deprecation_reason:
                add("Argument", f"{node.name.value}", arg.deprecation_reason, node)
            del fdef

        def enter_object_field(self, node, *_):
            parent = get_named_type(type_info.get_parent_input_type())
            if isinstance(parent, GraphQLInputObjectType):
                f = parent.fields.get(node.name.value)
                if f is not None and f.deprecation_reason:
                    add("InputField", f"{parent.name}.{node.name.value}", f.deprecation_reason, node)

        def enter_enum_value(self, node, *_):
            etype = get_named_type(type_info.get_input_type())
            if isinstance(etype, GraphQLEnumType):
                v = etype.values.get(node.value)
                if v is not None and v.deprecation_reason:
                    add("EnumValue", f"{etype.name}.{node.value}", v.deprecation_reason, node)

    visit(doc, TypeInfoVisitor(type_info, DeprecationVisitor()))

    if variables:
        from graphql import type_from_ast
        for d in doc.definitions:
            if not isinstance(d, OperationDefinitionNode):
                continue
            for vd in d.variable_definitions or []:
                name = vd.variable.name.value
                if name in variables:
                    _walk_value(type_from_ast(schema, vd.type), variables[name], f"${name}", add)
    return found


def _walk_value(gtype, value, path: str, add) -> None:
    if value is None or gtype is None:
        return
    if isinstance(gtype, GraphQLNonNull):
        return _walk_value(gtype.of_type, value, path, add)
    if isinstance(gtype, GraphQLList):
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            _walk_value(gtype.of_type, item, f"{path}[{i}]", add)
        return
    if isinstance(gtype, GraphQLEnumType):
        v = gtype.values.get(value) if isinstance(value, str) else None
        if v is not None and v.deprecation_reason:
            add("EnumValue", f"{gtype.name}.{value} (in {path})", v.deprecation_reason, None)
        return
    if isinstance(gtype, GraphQLInputObjectType) and isinstance(value, dict):
        for k, v in value.items():
            f = gtype.fields.get(k)
            if f is None:
                continue
            if f.deprecation_reason:
                add("InputField", f"{gtype.name}.{k} (in {path})", f.deprecation_reason, None)
            _walk_value(f.type, v, f"{path}.{k}", add)


def validate_document(source: str, variables: dict | None = None, *, allow_deprecated: bool = False,
                      version: str = DEFAULT_VERSION) -> list[dict]:
    """Validate one GraphQL document against the official schema. `[]` means valid and nothing deprecated.

    With `variables`, every operation's variables are also coerced (missing required / wrong type ->
    INVALID_VARIABLE), as Shopify does before running anything.
    """
    doc, errors = parse_and_validate(source, version)
    if doc is None or errors:
        return errors
    if variables is not None:
        for d in doc.definitions:
            if isinstance(d, OperationDefinitionNode):
                _, verrs = coerce_variables(doc, d, variables, version)
                errors.extend(verrs)
    if not allow_deprecated:
        errors.extend(find_deprecations(doc, variables, version))
    return errors
