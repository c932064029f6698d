"""Chained parameters and reverse chaining (``_has``) as nested SQL sub-selects.

R4 Search, "Chained parameters" (http://hl7.org/fhir/R4/search.html#chaining):
``Observation?subject:Patient.name=peter`` — the reference parameter ``subject``, restricted to
Patient targets, to resources matching ``name=peter``; chains nest
(``subject:Patient.organization.name=…``). Without a ``:[type]`` the chain follows every target
type of the reference parameter that has the chained parameter.

R4 Search, "Reverse Chaining" (#has): ``Patient?_has:Observation:patient:code=1234-5`` — the
patients that some Observation refers to through ``patient`` with ``code=1234-5``; ``_has``
nests (``_has:Observation:patient:_has:AuditEvent:entity:agent=…``).

Each level is one sub-select on the reference index joined to ``resources`` by (type, id), so
the whole chain stays inside the one statement of the search.
"""

from __future__ import annotations

from typing import Any

from songkhoe.fhir import definitions

from .catalog import Param, Source, params
from .search_sql import Ctx, Term, rid_term, sources_sql
from .search_values import bad


def _inner(term: Term, r: str, ctx: Ctx) -> tuple[str, list[Any]]:
    """A chained level's condition on its resource alias ``r``; a positive index term reads
    its rows by key (``r.rid IN (…)``) rather than probing every resource of the type."""
    if term.table is not None and not term.negate:
        sql, args = term.rid_set(ctx)
        return f"{r}.rid IN ({sql})", args
    return term.condition(r, ctx)


def chain_term(ctx: Ctx, types: list[str] | None, head: str, rest: str, raw_name: str,
               value: str, strict: bool, depth: int) -> Term | None:
    """``head.rest=value`` where ``head`` is a reference parameter (with optional ``:Type``)."""
    from .search import compile_param, resolve

    code, _, modifier = head.partition(":")
    found = [p for p in resolve(types, code) if p.kind == "reference"]
    if not found:
        return None
    if modifier and not definitions.is_resource_type(modifier):
        return None
    next_code = rest.split(".", 1)[0].split(":", 1)[0]
    candidates = [modifier] if modifier else sorted(
        {t for p in found for t in (p.targets or definitions.resource_types())}
        | {s.target for p in found for s in p.sources if s.target})
    targets = [t for t in candidates if next_code in params(t) or next_code.startswith("_has")
               or next_code in ("_id", "_lastUpdated")]
    if modifier and targets and not any(modifier in p.targets or not p.targets for p in found):
        raise bad(raw_name, f"{code} does not refer to {modifier} resources")
    if not targets:
        return None
    inner = compile_param(ctx, targets, rest, value, strict=strict, depth=depth + 1)
    if inner is None:
        return None
    sources: tuple[Source, ...] = tuple(dict.fromkeys(s for p in found for s in p.sources))
    r2, x = ctx.alias("r"), ctx.alias("x")
    src, src_args = sources_sql(x, sources)
    inner_sql, inner_args = _inner(inner, r2, ctx)
    guard = ctx.guard(targets, r2) if ctx.guard else None
    if guard is not None:  # a chain does not pass through rows the caller may not see
        inner_sql += f" AND {guard[0]}"
        inner_args += guard[1]
    if len(targets) == 1:
        sub = (f"SELECT {x}.rid FROM idx_reference {x} WHERE {src} AND "
               f"{x}.target_type = ? AND {x}.target_id IN (SELECT {r2}.id FROM resources {r2} "
               f"WHERE {r2}.type = ? AND {r2}.deleted = ? AND {inner_sql})")
        args = [*src_args, targets[0], targets[0], False, *inner_args]
    else:
        marks = ", ".join("?" * len(targets))
        sub = (f"SELECT {x}.rid FROM idx_reference {x} WHERE {src} AND "
               f"({x}.target_type, {x}.target_id) IN (SELECT {r2}.type, {r2}.id FROM resources "
               f"{r2} WHERE {r2}.type IN ({marks}) AND {r2}.deleted = ? AND {inner_sql})")
        args = [*src_args, *targets, False, *inner_args]
    # reference rows exist for live resources only, tagged with the searched type's parameter
    return rid_term(sub, args, cost=2, pure=True)


def has_term(ctx: Ctx, types: list[str] | None, raw_name: str, value: str, strict: bool,
             depth: int) -> Term | None:
    """``_has:[type]:[reference parameter]:[parameter]=value``."""
    from .search import compile_param

    parts = raw_name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise bad(raw_name, "expected _has:Type:reference-parameter:parameter=value")
    _, rtype, code, rest = parts
    if not definitions.is_resource_type(rtype):
        raise bad(raw_name, f"{rtype!r} is not a resource type")
    p: Param | None = params(rtype).get(code)
    if p is None or p.kind != "reference":
        if strict:
            raise bad(raw_name, f"{rtype} has no reference parameter {code!r}",
                      code="not-supported")
        return None
    inner = compile_param(ctx, [rtype], rest, value, strict=strict, depth=depth + 1)
    if inner is None:
        return None
    x, r2 = ctx.alias("x"), ctx.alias("r")
    src, src_args = sources_sql(x, p.sources)
    guard = ctx.guard([rtype], r2) if ctx.guard else None  # only rows the caller may see
    if inner.table is not None and not inner.negate:
        rid_sql, inner_args = inner.rid_set(ctx)
        if guard is not None:
            rid_sql = (f"SELECT {r2}.rid FROM resources {r2} WHERE {r2}.rid IN ({rid_sql}) "
                       f"AND {guard[0]}")
            inner_args += guard[1]
        refs = f"{x}.rid IN ({rid_sql})"
    else:
        cond, inner_args = inner.condition(r2, ctx)
        if guard is not None:
            cond += f" AND {guard[0]}"
            inner_args += guard[1]
        refs = (f"{x}.rid IN (SELECT {r2}.rid FROM resources {r2} WHERE {r2}.type = ? AND "
                f"{r2}.deleted = ? AND {cond})")
        inner_args = [rtype, False, *inner_args]
    if types is not None and len(types) == 1:
        sql = (f"{{r}}.id IN (SELECT {x}.target_id FROM idx_reference {x} WHERE {src} AND "
               f"{x}.target_type = ? AND {refs})")
        args = [*src_args, types[0], *inner_args]
    else:
        sql = (f"({{r}}.type, {{r}}.id) IN (SELECT {x}.target_type, {x}.target_id FROM "
               f"idx_reference {x} WHERE {src} AND {refs})")
        args = [*src_args, *inner_args]
    return Term(sql, args, None, cost=3)
