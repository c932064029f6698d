"""A FHIR search request parsed into SQL terms and result controls: ``parse`` → ``Query``.

R4 Search (http://hl7.org/fhir/R4/search.html), as this module reads a request:

- every parameter of every R4 resource type (``catalog``), of types number, date, string,
  token, reference, quantity, uri and composite ("Search Parameter Types", #ptypes), with their
  modifiers and prefixes (``search_sql``, ``search_values``); ``,`` is OR within a parameter,
  repetition is AND ("Composite Search Parameters" … "OR" / "AND", #combining);
- chained parameters ``subject:Patient.organization.name=…`` to any depth and reverse chains
  ``_has:Observation:patient:code=…``, nested ("Chained parameters", #chaining; "Reverse
  Chaining", #has — ``search_chain``);
- the "Parameters for all resources" (#all): ``_id``, ``_lastUpdated``, ``_tag``,
  ``_profile``, ``_security``, ``_source``, ``_text``, ``_content``, ``_list``, and ``_type``
  for several types in one system search;
- the "Search result parameters": ``_sort`` (``search_sort``), ``_count``, ``_include`` and
  ``_revinclude`` with ``:iterate`` (``search_include``), ``_total``, ``_summary``;
  ``_elements`` is applied by the REST layer; ``_cursor`` is this store's keyset paging cursor.

Unknown and unsupported parameters and modifiers (``name:fancy``, ``_query``, ``_filter``,
``_contained``, token ``:above``/``:below``, Location ``near``) are ignored and left out of
``Query.applied`` — the ``self`` link — under the default lenient handling, and are a 400 under
``Prefer: handling=strict`` ("Handling Errors", #errors). A value of the wrong form is a 400
naming the parameter either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from songkhoe.fhir import definitions

from .catalog import Param, Source, params
from .search_include import Include, parse_include
from .search_sort import Cursor, SortKey, decode_cursor, sort_key
from .search_sql import (
    Ctx,
    Term,
    composite_condition,
    date_term,
    missing_term,
    number_term,
    quantity_term,
    range_alt,
    reference_term,
    rid_term,
    string_term,
    text_words_term,
    token_term,
    uri_term,
)
from .search_values import alternatives, bad, date_value, unescape

DEFAULT_COUNT = 50
MAX_COUNT = 1000
MAX_CHAIN = 4  # chained or _has levels

#: Modifiers each parameter type takes (R4 Search, "Modifiers"); ``missing`` for all.
MODIFIERS = {
    "string": {"exact", "contains"},
    "token": {"text", "not", "in", "not-in", "of-type"},
    "reference": {"identifier"},  # and :[type]
    "date": set(), "number": set(), "quantity": set(),
    "uri": {"above", "below"},
    "composite": set(),
}
_SUMMARY = ("true", "text", "data", "count", "false")
_UNSUPPORTED_RESULT = {"_contained", "_containedType", "_query", "_filter"}
_REST_ONLY = {"_format", "_pretty", "_elements"}


@dataclass
class Query:
    """A parsed search: terms AND-ed on the resource, and how to sort, page, count and include."""

    type: str | None
    types: list[str] | None  # None: every type
    terms: list[Term] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    cursor_text: str | None = None
    total: str = "none"  # none | estimate | accurate
    summary: str | None = None
    sort: list[SortKey] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    ctx: Ctx = field(default_factory=Ctx)

    @property
    def sort_spec(self) -> str:
        return ",".join(k.spec for k in self.sort)

    def cursor(self) -> Cursor | None:
        return decode_cursor(self.cursor_text, self.sort_spec) if self.cursor_text else None

    @property
    def summary_count(self) -> bool:
        return self.summary == "count"

    @property
    def conditions(self) -> list[Term]:
        """The terms that select resources (for conditional operations)."""
        return self.terms


def resolve(types: list[str] | None, code: str) -> list[Param]:
    """The definitions of parameter ``code`` on ``types`` (None: on every type)."""
    found = []
    for rtype in types if types is not None else sorted(definitions.resource_types()):
        p = params(rtype).get(code)
        if p is not None:
            found.append(p)
    return found


def _unknown(strict: bool, raw_name: str, types: list[str] | None, why: str = "") -> None:
    if strict:
        where = ", ".join(types) if types and len(types) < 4 else "this search"
        raise bad(raw_name, why or f"unknown or unsupported parameter for {where}",
                  code="not-supported")


def parse(rtype: str | None, params_in: list[tuple[str, str]], *, strict: bool = False,
          backend: str = "sqlite", ctx: Ctx | None = None) -> Query:
    """A Query for ``rtype`` (None: a system search) from (name, value) pairs; ``ctx``: the
    compilation state to use (one with an access ``guard``)."""
    q = Query(rtype, [rtype] if rtype else None, ctx=ctx or Ctx(backend))
    for name, value in params_in:
        if name == "_type":  # several types in one search; repeated: all must hold
            wanted = {unescape(v).strip() for v in alternatives(value)}
            for t in sorted(wanted):
                if not definitions.is_resource_type(t):
                    raise bad("_type", f"{t!r} is not a resource type")
            q.types = sorted(wanted) if q.types is None else [t for t in q.types if t in wanted]
            q.applied.append((name, value))
    if q.types == []:
        q.terms.append(Term("1 = 0", [], None, cost=1))
    sorts: list[tuple[str, str]] = []
    for raw_name, value in params_in:
        name, _, modifier = raw_name.partition(":")
        if name == "_type":
            continue
        if name in _REST_ONLY:
            continue
        if name == "_count":
            if not value.isdigit():
                raise bad(name, f"expected a whole number, got {value!r}")
            q.count = min(int(value), MAX_COUNT)
            q.applied.append((raw_name, value))
        elif name == "_cursor":
            q.cursor_text = value or None
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise bad(name, f"expected none, estimate or accurate, got {value!r}")
            q.total = value
            q.applied.append((raw_name, value))
        elif name == "_summary":
            if value not in _SUMMARY:
                raise bad(name, f"expected one of {', '.join(_SUMMARY)}, got {value!r}")
            q.summary = value
            q.applied.append((raw_name, value))
        elif name == "_sort":
            sorts.append((raw_name, value))
        elif name in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                _unknown(strict, raw_name, q.types)
                continue
            rules = parse_include(raw_name, value, name == "_revinclude", bool(modifier), q.types)
            if rules is None:
                _unknown(strict, raw_name, q.types, f"{value!r} names no reference parameter")
                continue
            q.includes += rules
            q.applied.append((raw_name, value))
        elif name in _UNSUPPORTED_RESULT:
            _unknown(strict, raw_name, q.types)
        else:
            if value == "" and modifier != "missing":
                raise bad(raw_name, "expected a value")
            term = compile_param(q.ctx, q.types, raw_name, value, strict=strict)
            if term is None:
                _unknown(strict, raw_name, q.types)
                continue
            q.terms.append(term)
            q.applied.append((raw_name, value))
    for raw_name, value in sorts:
        keys = []
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            descending = item.startswith("-")
            code = item.lstrip("-")
            found = resolve(q.types, code) if code not in ("_id", "_lastUpdated") else []
            key = sort_key(raw_name, code, descending, found[0] if len(found) == 1 else None)
            if key is None:
                _unknown(strict, raw_name, q.types, f"cannot sort on {code!r}")
                continue
            keys.append(key)
        if keys:
            q.sort = keys  # the last _sort wins
            q.applied.append((raw_name, ",".join(k.spec for k in keys)))
    return q


def compile_param(ctx: Ctx, types: list[str] | None, raw_name: str, value: str, *,
                  strict: bool = False, depth: int = 0) -> Term | None:
    """One parameter (all its OR-ed values) as a Term, or None when unknown/unsupported."""
    from . import search_chain

    if depth > MAX_CHAIN:
        raise bad(raw_name, f"chains and _has may nest at most {MAX_CHAIN} levels",
                  code="too-costly")
    if raw_name.startswith("_has:"):
        return search_chain.has_term(ctx, types, raw_name, value, strict, depth)
    head, dot, rest = raw_name.partition(".")
    if dot:
        return search_chain.chain_term(ctx, types, head, rest, raw_name, value, strict, depth)
    code, _, modifier = raw_name.partition(":")
    values = alternatives(value)
    if code == "_id":
        return _id_term(raw_name, modifier, values)
    if code == "_lastUpdated":
        if modifier:
            return None
        ors, args = [], []
        for v in values:
            d = date_value(raw_name, v)
            sql, a = range_alt(d.prefix, "{r}.last_updated", "{r}.last_updated", d.lo, d.hi,
                               now=ctx.now_us)
            ors.append(f"({sql})")
            args += a
        return Term("(" + " OR ".join(ors) + ")", args, None, cost=6)
    if code == "_list":
        return _list_term(raw_name, modifier, values, types)
    found = resolve(types, code)
    if not found:
        return None
    kinds = {p.kind for p in found}
    if len(kinds) != 1:
        raise bad(raw_name, f"{code} means different things for {', '.join(p.rtype for p in found)}: "
                            "search one type at a time")
    kind = kinds.pop()
    sources: tuple[Source, ...] = tuple(dict.fromkeys(s for p in found for s in p.sources))
    p = found[0]
    if kind == "reference" and len(found) > 1:
        targets = tuple(dict.fromkeys(t for f in found for t in f.targets))
        p = Param(p.rtype, p.code, p.kind, p.table, p.sp, p.expression, targets, sources)
    if modifier == "missing":
        if kind == "composite":
            comp = p.components[0] if p.components else None
            if comp is None:
                return None
            return missing_term(raw_name, comp.sources, comp.table, value, False)
        if p.table is None or not sources:
            return None
        return missing_term(raw_name, sources, p.table, value, p.shared)
    if code in ("_text", "_content"):
        if modifier:
            return None
        return text_words_term(raw_name, sources, values, ctx)
    if kind == "reference":
        if modifier and modifier not in MODIFIERS["reference"] and not (
                definitions.is_resource_type(modifier)):
            return None
        return reference_term(raw_name, p, sources, modifier, values)
    if kind == "special" or kind not in MODIFIERS:
        return None
    if modifier and modifier not in MODIFIERS[kind]:
        return None
    if kind == "string":
        return string_term(raw_name, p, sources, modifier, values)
    if kind == "token":
        return token_term(raw_name, p, sources, modifier, values)
    if kind == "date":
        return date_term(raw_name, p, sources, values, ctx.now_us)
    if kind == "number":
        return number_term(raw_name, p, sources, values)
    if kind == "quantity":
        return quantity_term(raw_name, p, sources, values)
    if kind == "uri":
        return uri_term(raw_name, p, sources, modifier, values)
    # composite: each value is one tuple; values are OR-ed, several definitions (types) too
    ors, args = [], []
    for v in values:
        for definition in found:
            members = [params(definition.rtype)[m] for m in definition.members] or [definition]
            for member in members:
                if not member.components:
                    continue
                sql, a = composite_condition(raw_name, member, v, "{r}", ctx, ctx.now_us)
                ors.append(sql)
                args += a
    if not ors:
        return None
    return Term("(" + " OR ".join(ors) + ")", args, None, cost=2)


def _id_term(raw_name: str, modifier: str, values: list[str]) -> Term | None:
    if modifier not in ("", "not", "missing"):
        return None
    ids = [unescape(v) for v in values]
    if modifier == "missing":  # every resource has an id
        if ids[0] not in ("true", "false"):
            raise bad(raw_name, "expected true or false")
        return Term("1 = 0" if ids[0] == "true" else "1 = 1", [], None, cost=9)
    marks = ", ".join("?" * len(ids))
    if modifier == "not":
        return Term(f"{{r}}.id NOT IN ({marks})", ids, None, cost=9)
    return Term(f"{{r}}.id IN ({marks})", ids, None, cost=1)


def _list_term(raw_name: str, modifier: str, values: list[str],
               types: list[str] | None) -> Term | None:
    """``_list=id``: the resources List/id has as entries (R4 Search, "_list", #list)."""
    if modifier:
        return None
    ids = [unescape(v) for v in values]
    if any(i.startswith("$") for i in ids):
        return None  # functional lists ($current-problems …) are not kept
    item = params("List").get("item")
    assert item is not None
    marks = ", ".join("?" * len(ids))
    return rid_term(f"SELECT t.rid FROM resources l JOIN idx_reference x ON x.rid = l.rid "
                    f"JOIN resources t ON t.type = x.target_type AND t.id = x.target_id "
                    f"WHERE l.type = 'List' AND l.id IN ({marks}) AND x.sp = ?",
                    [*ids, item.sp], cost=2, pure=False)
