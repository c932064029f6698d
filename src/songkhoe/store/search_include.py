"""``_include`` and ``_revinclude``: the resources a page of matches refers to, or that refer
to it, in one SQL statement.

R4 Search, "Including other resources in result" (http://hl7.org/fhir/R4/search.html#include):

- ``_include=[type]:[param]`` adds the targets of that reference parameter of the matches;
  ``_include=[type]:[param]:[target type]`` only targets of that type; ``_include=*`` follows
  every reference parameter;
- ``_revinclude=[type]:[param]`` adds the resources of ``type`` whose ``param`` refers to a
  match (``*`` again for all);
- ``:iterate`` (``:recurse`` in STU3) applies the rule to included resources too, repeatedly.

The statement starts from the page's row ids and follows the reference index both ways; with
``:iterate`` it is a recursive common table expression that stops when no new resource is found
(``UNION`` removes repeats, so reference cycles end). SQLite takes one recursive SELECT per
direction; PostgreSQL allows a single recursive reference, so its step is a ``LATERAL`` union.
At most ``MAX_INCLUDED`` resources are included (servers may limit them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from songkhoe.fhir import definitions

from .catalog import Source, params
from .search_sql import sources_sql
from .search_values import bad

MAX_INCLUDED = 5000


@dataclass(frozen=True)
class Include:
    """One resolved rule: reference rows tagged ``sources`` followed forward (to their targets)
    or in reverse (from rows pointing at a resource), optionally to one target type."""

    sources: tuple[Source, ...]
    target: str | None
    reverse: bool
    iterate: bool


def parse_include(name: str, value: str, reverse: bool, iterate: bool,
                  search_types: list[str] | None) -> list[Include] | None:
    """The rules of one ``_include``/``_revinclude`` value; None when it names an unknown type
    or parameter (ignored, or a 400 under strict handling); a malformed value is a 400."""
    if value == "*":
        types = sorted(definitions.resource_types()) if reverse or search_types is None \
            else search_types
        sources = tuple(s for t in types for p in params(t).values()
                        if p.kind == "reference" for s in p.sources)
        return [Include(sources, None, reverse, iterate)] if sources else None
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise bad(name, f"expected Type:parameter or Type:parameter:TargetType, got {value!r}")
    rtype, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not definitions.is_resource_type(rtype) or (target and not definitions.is_resource_type(target)):
        return None
    if code == "*":
        found = [p for p in params(rtype).values() if p.kind == "reference"]
    else:
        p = params(rtype).get(code)
        found = [p] if p is not None and p.kind == "reference" else []
    if not found:
        return None
    if target is not None and code != "*" and found[0].targets and target not in found[0].targets:
        return None
    return [Include(tuple(s for p in found for s in p.sources), target, reverse, iterate)]


def _step(rule: Include, frm: str, backend: str) -> tuple[str, list[Any]]:
    """One rule applied to the row ids in ``frm`` (a table or CTE with column ``rid``):
    SELECT of the row ids it reaches."""
    where, args = sources_sql("x", rule.sources)
    if not rule.reverse:
        sql: str = (f"SELECT t.rid FROM {frm} f JOIN idx_reference x ON x.rid = f.rid "
               "JOIN resources t ON t.type = x.target_type AND t.id = x.target_id "
               f"WHERE {where}")
        if rule.target:
            sql += " AND x.target_type = ?"
            args.append(rule.target)
        return sql, args
    sql = (f"SELECT x.rid FROM {frm} f JOIN resources s ON s.rid = f.rid "
           "JOIN idx_reference x ON x.target_id = s.id AND x.target_type = s.type "
           f"WHERE {where}")
    return sql, args


def include_sql(rules: list[Include], rids: list[int], backend: str,
                visible: tuple[str, list[Any]] | None = None) -> tuple[str, list[Any]]:
    """One statement returning (rid, type, id, version, last_updated, content) of every resource
    the rules reach from ``rids`` (the page's matches), matches themselves left out, and only
    those satisfying ``visible`` (a condition on the resource row ``r``: the caller's access)."""
    marks = ", ".join("(CAST(? AS BIGINT))" for _ in rids)
    args: list[Any] = list(rids)
    firsts, first_args = [], []
    for rule in rules:
        sql, a = _step(rule, "m", backend)
        firsts.append(sql)
        first_args += a
    iterating = [r for r in rules if r.iterate]
    if not iterating:
        body = " UNION ".join(firsts)
        cte = f"WITH m(rid) AS (VALUES {marks}), inc(rid) AS ({body})"
        args += first_args
    elif backend == "postgres":
        steps, step_args = [], []
        for rule in iterating:
            sql, a = _step(rule, "(SELECT i.rid AS rid)", backend)
            steps.append(sql)
            step_args += a
        lateral = f"SELECT e.rid FROM inc i CROSS JOIN LATERAL ({' UNION ALL '.join(steps)}) e"
        cte = (f"WITH RECURSIVE m(rid) AS (VALUES {marks}), inc(rid) AS "
               f"(({' UNION '.join(firsts)}) UNION {lateral})")
        args += first_args + step_args
    else:
        recursive: list[str] = []
        rec_args: list[Any] = []
        for rule in iterating:
            sql, a = _step(rule, "inc", backend)
            recursive.append(sql)
            rec_args += a
        cte = (f"WITH RECURSIVE m(rid) AS (VALUES {marks}), inc(rid) AS "
               f"(SELECT rid FROM ({' UNION '.join(firsts)}) UNION "
               f"{' UNION '.join(recursive)})")
        args += first_args + rec_args
    sql = (f"{cte} SELECT r.rid, r.type, r.id, r.version, r.last_updated, h.content "
           "FROM (SELECT DISTINCT rid FROM inc) i JOIN resources r ON r.rid = i.rid "
           "JOIN history h ON h.rid = r.rid AND h.version = r.version "
           "WHERE r.deleted = ? AND r.rid NOT IN (SELECT rid FROM m)"
           f"{' AND ' + visible[0] if visible else ''} ORDER BY r.rid LIMIT ?")
    return sql, [*args, False, *(visible[1] if visible else []), MAX_INCLUDED]
