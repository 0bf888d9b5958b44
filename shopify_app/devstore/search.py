"""Shopify search syntax (the `query:` argument of connections), the subset the devstore needs.

Supported: `field:value`, comparators `field:>v`, `>=`, `<`, `<=`, quoted values ('...' or "..."), `-field:v` /
`NOT field:v`, implicit AND, explicit AND, OR between terms, bare words (default text search). Times accept
ISO 8601 ('2024-01-01T00:00:00Z', '2024-01-01T00:00:00+01:00', a date = midnight in the shop's time zone).
Unknown fields are ignored with a warning, as Shopify does (returned in `extensions.search`).
"""
from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from .models import UTC

_TOKEN = re.compile(r"""\s*(?:(?P<paren>[()])|(?P<term>-?[A-Za-z_][\w.]*:(?:>=|<=|>|<|=)?(?:'[^']*'|"[^"]*"|[^\s()]+))|(?P<word>'[^']*'|"[^"]*"|[^\s()]+))""")


class Term:
    __slots__ = ("field", "op", "value", "negate")

    def __init__(self, field, op, value, negate=False):
        self.field, self.op, self.value, self.negate = field, op, value, negate


def parse(query: str | None) -> list[list[Term]]:
    """OR of ANDs: [[t1, t2], [t3]] = (t1 AND t2) OR t3. Parentheses are flattened (enough for app filters)."""
    if not query or not query.strip():
        return []
    groups: list[list[Term]] = [[]]
    negate_next = False
    for m in _TOKEN.finditer(query):
        if m.group("paren"):
            continue
        if m.group("term"):
            raw = m.group("term")
            neg = raw.startswith("-") or negate_next
            negate_next = False
            raw = raw.lstrip("-")
            field, _, rest = raw.partition(":")
            op = "="
            for cand in (">=", "<=", ">", "<", "="):
                if rest.startswith(cand):
                    op, rest = cand, rest[len(cand):]
                    break
            groups[-1].append(Term(field.lower(), op, _unquote(rest), neg))
            continue
        word = m.group("word")
        if word == "OR":
            groups.append([])
        elif word == "AND":
            pass
        elif word == "NOT":
            negate_next = True
        else:
            groups[-1].append(Term("default", "=", _unquote(word), negate_next))
            negate_next = False
    return [g for g in groups if g]


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v


def parse_time(value: str, tz: str = "UTC") -> dt.datetime:
    v = value.strip()
    if v == "now":
        return dt.datetime.now(UTC)
    if re.fullmatch(r"\d{4}", v):
        v += "-01-01"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        return dt.datetime.fromisoformat(v).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(tz))
    return t.astimezone(UTC)


def _cmp(actual, op, wanted) -> bool:
    if actual is None:
        return False
    if op == "=":
        return actual == wanted
    if op == ">":
        return actual > wanted
    if op == ">=":
        return actual >= wanted
    if op == "<":
        return actual < wanted
    return actual <= wanted


def compile_filter(query: str | None, fields: dict, tz: str = "UTC"):
    """-> (predicate(record) -> bool, warnings). `fields` maps a search field to (kind, getter) with kind in
    time | int | str | tags | bool | text."""
    groups = parse(query)
    warnings: list[dict] = []
    if not groups:
        return None, warnings
    compiled: list[list] = []
    for g in groups:
        preds = []
        for t in g:
            spec = fields.get(t.field)
            if spec is None:
                warnings.append({"field": t.field, "message": "Invalid search field for this query."})
                continue
            kind, getter = spec
            try:
                preds.append((_term_pred(kind, getter, t, tz), t.negate))
            except ValueError:
                warnings.append({"field": t.field, "message": f"Invalid value {t.value!r}."})
        compiled.append(preds)

    def pred(rec) -> bool:
        for preds in compiled:
            if all(p(rec) != neg for p, neg in preds):
                return True
        return False
    return pred, warnings


def _term_pred(kind, getter, t: Term, tz: str):
    if kind == "time":
        wanted = parse_time(t.value, tz)
        if t.op == "=" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", t.value.strip()):
            end = wanted + dt.timedelta(days=1)   # created_at:2024-01-01 means that whole day
            return lambda r: (v := getter(r)) is not None and wanted <= v < end
        return lambda r: _cmp(getter(r), t.op, wanted)
    if kind == "int":
        wanted = int(t.value.rsplit("/", 1)[-1])  # accept gids too
        return lambda r: _cmp(getter(r), t.op, wanted)
    if kind == "bool":
        wanted = t.value.lower() in ("true", "1", "yes")
        return lambda r: bool(getter(r)) == wanted
    if kind == "tags":
        wanted = t.value.lower()
        return lambda r: any(x.lower() == wanted for x in getter(r))
    if kind == "text":
        wanted = t.value.lower().rstrip("*")
        return lambda r: any(wanted in (x or "").lower() for x in getter(r))
    wanted = t.value.lower()
    if wanted.endswith("*"):
        prefix = wanted[:-1]
        return lambda r: (getter(r) or "").lower().startswith(prefix)
    return lambda r: (getter(r) or "").lower() == wanted


def unsupported(query: str | None, fields: dict, values: dict[str, tuple[str, ...]]) -> str | None:
    """Why the devstore cannot evaluate `query` as Shopify would (None when it can), for connections that opt in
    to strictness (bulkOperations): parentheses (parse() flattens them, so `a (b OR c)` would mean `a b OR c`),
    bare words (no default text field), a range comparator on a string field, or a value outside the documented
    list of a field in `values` (Shopify's behaviour for those is not documented). Unknown fields stay warnings,
    as on Shopify."""
    if not query:
        return None
    for m in _TOKEN.finditer(query):
        if m.group("paren"):
            return "parentheses in a search query"
        word = m.group("word")
        if word is not None and word not in ("AND", "OR", "NOT"):
            return f"the bare word {word!r} (free-text search)"
    for group in parse(query):
        for t in group:
            spec = fields.get(t.field)
            if spec is None:
                continue
            if spec[0] == "str" and t.op != "=":
                return f"the comparator {t.op!r} on {t.field}"
            allowed = values.get(t.field)
            if allowed is not None and t.value.lower() not in allowed:
                return f"{t.field}:{t.value} (documented values: {', '.join(allowed)})"
    return None
