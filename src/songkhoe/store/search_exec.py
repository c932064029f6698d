"""Running a parsed search: one SQL statement for the page of matches, one for includes, and
one for the total when it is asked for.

R4 Search, "Paging" and "Summary" (http://hl7.org/fhir/R4/search.html#count, #total,
#summary) and R4 RESTful API "Paging" (http.html#paging): a page is ``_count`` matches in a
stable order; ``_total=accurate`` and ``_summary=count`` count every match; ``_total=estimate``
asks the PostgreSQL planner (SQLite counts).

How a page is planned. Every term of the search is a condition on the ``resources`` row ``r``.
One term drives the statement — the one expected to select fewest rows (``Term.cost``):

- a term whose rows come out of its key index in ``rid`` order, at most one per resource
  (``Term.ordered``: ``identifier=system|value``, ``subject=Patient/1``,
  ``code=http://loinc.org|1558-6``) is joined as the first table: the page is read in ``rid``
  order straight from that index and the statement stops after ``_count`` + 1 rows, whatever the
  number of matches;
- any other index term becomes ``r.rid IN (…)`` — unless, on SQLite, a count that stops at
  ``WIDE`` rows finds it selects that many: then the type's resources are read in ``rid`` order
  and every term probes each, until the page is full;
- the rest are ``EXISTS`` probes on the index tables' ``rid`` indexes.

With ``_sort`` the keys are computed for every match in a materialised CTE and the page is read
from it by keyset. The plans each backend chooses for the benchmark queries are in
``docs/performance.md``.
"""

from __future__ import annotations

import orjson
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError, Issue

from .api import SearchResult, Stored
from .catalog import Source, params
from .ranges import from_us, instant_us
from .search import Query, parse
from .search_include import include_sql
from .search_sort import Cursor, keyset, order_by
from .search_sql import Ctx, Term, rid_term, sources_sql


@dataclass
class Plan:
    """FROM and WHERE of a search's matches. ``rid`` is the column to page on and ``r`` the
    alias terms are written against: the resources row (``r``), or — when every term reads only
    row ids and the driver's rows are all live resources of the searched type — the driver
    (``d``), so that ``resources`` is read for the page's rows alone."""

    frm: str
    where: list[str]
    args: list[Any]
    rid: str
    r: str
    driver: Term | None
    ctes: list[str] = field(default_factory=list)  # "name AS MATERIALIZED (…)" before FROM
    cte_args: list[Any] = field(default_factory=list)

    def with_(self, *more: str) -> str:
        """The statement's WITH clause (empty when there is nothing to name)."""
        ctes = [*self.ctes, *more]
        return f"WITH {', '.join(ctes)} " if ctes else ""


def _driver(q: Query) -> Term | None:
    candidates = [t for t in q.terms if not t.negate and t.rid_only]
    return min(candidates, key=lambda t: (t.cost, not t.ordered)) if candidates else None


#: On SQLite, a driving term found to select at least this many rows does not drive a page:
#: the type's resources are read in ``rid`` order instead, every term probing each, until the
#: page is full (``name=nguyen`` is 38% of patients: 130 probes beat collecting 38,000 row
#: ids). PostgreSQL chooses between the two from its statistics.
WIDE = 5000


def wide(tx: Any, q: Query, driver: Term) -> bool:
    """Whether ``driver`` selects at least ``WIDE`` rows: a count that stops there (SQLite keeps
    no statistics to tell a common family name from a rare one)."""
    sql, args = driver.rid_set(q.ctx)
    return int(fetch(tx, f"SELECT COUNT(*) FROM ({sql} LIMIT {WIDE}) w", args)[0][0]) >= WIDE


def scan_plan(q: Query) -> Plan:
    """The type's resources in ``rid`` order (index ``resources_type_rid``), every term a probe."""
    assert q.type is not None
    where, args = ["r.type = ?", "r.deleted = ?"], [q.type, False]
    for term in q.terms:
        sql, term_args = term.condition("r", q.ctx)
        where.append(sql)
        args += term_args
    return Plan("resources r", where, args, "r.rid", "r", None)


def plan(q: Query) -> Plan:
    ctx = q.ctx
    driver = _driver(q)
    ids_only = (q.type is not None and driver is not None and driver.is_pure
                and all(t.rid_only for t in q.terms) and all(k.args for k in q.sort))
    where: list[str] = []
    args: list[Any] = []
    ctes: list[str] = []
    cte_args: list[Any] = []
    if ids_only:
        assert driver is not None
        r = "d"
        if driver.table is not None and driver.ordered:
            frm = f"{driver.table} d"
            where.append(driver.where.replace("{x}", "d"))
            args += driver.args
        else:
            sql, driver_args = driver.rid_set(ctx)
            if q.ctx.backend == "sqlite":
                # materialised first: flattened into the DISTINCT, SQLite would rather walk the
                # whole rid index in order than read the term's own index (0.7 s vs 0.4 ms)
                ctes.append(f"z AS MATERIALIZED ({sql})")
                cte_args += driver_args
                frm = "(SELECT DISTINCT rid FROM z) d"
            else:
                frm = f"(SELECT DISTINCT z.rid AS rid FROM ({sql}) z) d"
                args += driver_args
    else:
        r = "r"
        if q.type is not None:
            where.append("r.type = ?")
            args.append(q.type)
        elif q.types is not None:
            where.append(f"r.type IN ({', '.join('?' * len(q.types))})")
            args += q.types
        where.append("r.deleted = ?")
        args.append(False)
        frm = "resources r"
        if driver is not None and driver.table is not None and driver.ordered:
            frm = f"{driver.table} d JOIN resources r ON r.rid = d.rid"
            where.insert(0, driver.where.replace("{x}", "d"))
            args[:0] = driver.args
        elif driver is not None:
            sql, driver_args = driver.rid_set(ctx)
            where.insert(0, f"r.rid IN ({sql})")
            args[:0] = driver_args
    for term in q.terms:
        if term is driver:
            continue
        sql, term_args = term.condition(r, ctx)
        where.append(sql)
        args += term_args
    rid = "d.rid" if frm.startswith(("idx_", "(")) else "r.rid"
    return Plan(frm, where or ["1 = 1"], args, rid, r, driver, ctes, cte_args)


def _with_content(inner: str, keys: list[str], order: str) -> str:
    """The page ``inner`` (rid, keys…; ordered and limited) joined to its resources and their
    versions' JSON — read for the page's rows only."""
    extra = "".join(f", p.{k}" for k in keys)
    return (f"SELECT p.rid, r.type, r.id, r.version, r.last_updated, h.content{extra} "
            f"FROM ({inner}) p JOIN resources r ON r.rid = p.rid "
            f"JOIN history h ON h.rid = r.rid AND h.version = r.version ORDER BY {order}")


def page_sql(q: Query, p: Plan, cursor: Cursor | None, limit: int) -> tuple[str, list[Any]]:
    """The statement for one page: ``limit`` rows after (or before) ``cursor``."""
    forward = cursor is None or cursor.forward
    where, args = list(p.where), list(p.args)
    if not q.sort:
        if cursor is not None:
            where.append(f"{p.rid} {'>' if forward else '<'} ?")
            args.append(cursor.rid)
        desc = "" if forward else " DESC"
        inner = (f"SELECT {p.rid} AS rid FROM {p.frm} WHERE {' AND '.join(where)} "
                 f"ORDER BY {p.rid}{desc} LIMIT ?")
        return (p.with_() + _with_content(inner, [], f"p.rid{desc}"),
                [*p.cte_args, *args, limit])
    key_sql: list[str] = []
    key_args: list[Any] = []
    for i, key in enumerate(q.sort):
        key_sql.append(key.expr.replace("{r}", p.r).replace("{x}", f"sk{i}"))
        key_args += key.args
    names = [f"k{i}" for i in range(len(q.sort))]
    outer_keys = [(f"p.{n}", key.descending) for n, key in zip(names, q.sort)]
    if all(not k.args for k in q.sort):  # resource columns only: no CTE needed
        keys = [(k, key.descending) for k, key in zip(key_sql, q.sort)]
        if cursor is not None:
            sql, a = keyset(keys, p.rid, cursor)
            where.append(sql)
            args += a
        cols = ", ".join(f"{k} AS {n}" for k, n in zip(key_sql, names))
        inner = (f"SELECT {p.rid} AS rid, {cols} FROM {p.frm} WHERE {' AND '.join(where)} "
                 f"ORDER BY {order_by(keys, p.rid, forward)} LIMIT ?")
        return (p.with_() + _with_content(inner, names, order_by(outer_keys, "p.rid", forward)),
                [*p.cte_args, *args, limit])
    named = ", ".join(f"{k} AS {n}" for k, n in zip(key_sql, names))
    keys = [(f"s.{n}", key.descending) for n, key in zip(names, q.sort)]
    outer, outer_args = [], []
    if cursor is not None:
        sql, a = keyset(keys, "s.rid", cursor)
        outer.append(sql)
        outer_args += a
    cols = ", ".join(k for k, _ in keys)
    inner = (f"SELECT s.rid, {cols} FROM s {'WHERE ' + ' AND '.join(outer) if outer else ''} "
             f"ORDER BY {order_by(keys, 's.rid', forward)} LIMIT ?")
    sql = (p.with_(f"s AS MATERIALIZED (SELECT {p.rid} AS rid, {named} FROM {p.frm} "
                   f"WHERE {' AND '.join(where)})")
           + _with_content(inner, names, order_by(outer_keys, "p.rid", forward)))
    return sql, [*p.cte_args, *key_args, *args, *outer_args, limit]


def count_sql(q: Query, p: Plan) -> tuple[str, list[Any]]:
    """The statement counting every match. A search on one parameter of one type counts that
    parameter's index rows alone (an index-only scan)."""
    if len(q.terms) == 1 and q.type is not None:
        term = q.terms[0]
        if term.table is not None and not term.negate and not term.shared:
            what = "COUNT(*)" if term.ordered else "COUNT(DISTINCT x.rid)"
            return (f"SELECT {what} FROM {term.table} x WHERE {term.where.replace('{x}', 'x')}",
                    list(term.args))
    return (f"{p.with_()}SELECT COUNT(*) FROM {p.frm} WHERE {' AND '.join(p.where)}",
            [*p.cte_args, *p.args])


def fetch(tx: Any, sql: str, args: list[Any]) -> list[Any]:
    """Run one search statement. On PostgreSQL it is planned for its values every time: a
    generic plan of a prepared statement cannot tell which index is selective (measured: the
    subject+code+date search took 18 ms at the median on a generic plan, 0.9 ms on its own
    plan), and planning costs well under a millisecond."""
    if tx.backend.name == "postgres":
        return list(tx.backend.execute(tx.conn, sql, args, prepare=False).fetchall())
    return list(tx._sql(sql, args).fetchall())


def _estimate(tx: Any, p: Plan) -> int:
    sql = f"EXPLAIN (FORMAT JSON) {p.with_()}SELECT 1 FROM {p.frm} WHERE {' AND '.join(p.where)}"
    plan_json = fetch(tx, sql, [*p.cte_args, *p.args])[0][0]
    doc = plan_json if isinstance(plan_json, list) else orjson.loads(plan_json)
    return int(doc[0]["Plan"]["Plan Rows"])


def execute(tx: Any, q: Query) -> SearchResult:
    """Run ``q`` in transaction ``tx`` (flushed): matches, next/previous cursors, total and
    included resources."""
    result = SearchResult(matches=[], params=q.applied)
    cursor = q.cursor()
    p = plan(q)
    if q.summary_count or q.count == 0 or q.total == "accurate" or (
            q.total == "estimate" and tx.backend.name != "postgres"):
        sql, args = count_sql(q, p)
        result.total = fetch(tx, sql, args)[0][0]
    elif q.total == "estimate":
        result.total = _estimate(tx, p)
    if q.summary_count or q.count == 0:
        return result
    driver = p.driver
    if (tx.backend.name == "sqlite" and q.type is not None and not q.sort and driver is not None
            and not driver.ordered and driver.cost >= 3 and wide(tx, q, driver)):
        p = scan_plan(q)
    sql, args = page_sql(q, p, cursor, q.count + 1)
    rows = fetch(tx, sql, args)
    forward = cursor is None or cursor.forward
    more = len(rows) > q.count
    rows = rows[:q.count]
    if not forward:
        rows.reverse()
    nkeys = len(q.sort)
    spec = q.sort_spec
    if rows:
        first, last = rows[0], rows[-1]
        if more or not forward:
            result.next_cursor = Cursor(True, spec, tuple(last[6:6 + nkeys]), last[0]).encode()
        if (cursor is not None and forward) or (not forward and more):
            result.prev_cursor = Cursor(False, spec, tuple(first[6:6 + nkeys]), first[0]).encode()
    elif cursor is not None:  # an empty page after data changed: offer the way back
        if forward:
            result.prev_cursor = Cursor(False, spec, cursor.keys, cursor.rid).encode()
        else:
            result.next_cursor = Cursor(True, spec, cursor.keys, cursor.rid).encode()
    result.matches = [Stored(row[1], row[2], row[3], from_us(row[4]), bytes(row[5]))
                      for row in rows]
    if q.includes and rows:
        visible = tx.guard.any_condition(None, "r", "r", q.ctx) if tx.guard else None
        sql, args = include_sql(q.includes, [row[0] for row in rows], tx.backend.name, visible)
        result.included = [Stored(t, i, v, from_us(lu), bytes(c))
                           for _, t, i, v, lu, c in fetch(tx, sql, args)]
    return result


# --- compartments and $everything -------------------------------------------------------------


def compartment_term(types: list[str] | None, ctype: str, cid: str) -> Term:
    """Membership of the Patient compartment (http://hl7.org/fhir/R4/compartmentdefinition-
    patient.html): resources whose compartment parameters refer to ``Patient/cid``, and the
    patient itself."""
    if ctype != "Patient":
        raise FhirError(400, Issue("not-supported", f"only the Patient compartment is supported, "
                                   f"not {ctype}"))
    sources: list[Source] = []
    for rtype, codes in definitions.patient_compartment().items():
        if types is not None and rtype not in types:
            continue
        for code in codes:
            p = params(rtype).get(code)
            if p is not None:
                sources += [s for s in p.sources if s.target in (None, "Patient")]
    parts, args = [], []
    if sources:
        src, src_args = sources_sql("x", tuple(dict.fromkeys(sources)))
        parts.append("SELECT x.rid FROM idx_reference x WHERE x.target_id = ? AND "
                     f"x.target_type = 'Patient' AND {src}")
        args += [cid, *src_args]
    if types is None or "Patient" in types:
        parts.append("SELECT p.rid FROM resources p WHERE p.type = 'Patient' AND p.id = ?")
        args.append(cid)
    if not parts:
        return Term("1 = 0", [], None, cost=1)
    # the patient itself comes from ``resources`` (it may be deleted): not an index-only set
    return rid_term(" UNION ".join(parts), args, cost=1, pure=len(parts) == 1 and bool(sources))


def guarded(tx: Any, q: Query) -> None:
    """Add the caller's access limit (``tx.guard``) to the terms of ``q``."""
    if tx.guard is None:
        return
    if q.type is not None:
        q.terms += tx.guard.terms(q.type, "s", q.ctx)
        return
    cond = tx.guard.any_condition(q.types, "s", "{r}", q.ctx)
    if cond is not None:
        q.terms.append(Term(cond[0], cond[1], None, cost=9))


def _context(tx: Any) -> Ctx:
    """A compilation context whose chains and ``_has`` pass only through visible rows."""
    ctx = Ctx(tx.backend.name)
    if tx.guard is not None:
        guard = tx.guard
        ctx.guard = lambda types, alias: guard.any_condition(types, "s", alias, ctx)
    return ctx


def search(tx: Any, rtype: str | None, params_in: list[tuple[str, str]], *,
           compartment: tuple[str, str] | None = None, strict: bool = False) -> SearchResult:
    q = parse(rtype, params_in, strict=strict, ctx=_context(tx))
    if compartment is not None:
        q.terms.append(compartment_term(q.types, *compartment))
        if not tx.compartment_visible(*compartment):
            q.terms.append(Term("1 = 0", [], None, cost=1))
    guarded(tx, q)
    return execute(tx, q)


def everything(tx: Any, patient_id: str, *, since: datetime | None, types: list[str] | None,
               count: int, cursor: str | None) -> SearchResult:
    q = Query(None, sorted(set(types)) if types else None, ctx=_context(tx))
    q.terms.append(compartment_term(q.types, "Patient", patient_id))
    guarded(tx, q)
    if since is not None:
        q.terms.append(Term("{r}.last_updated >= ?", [instant_us(since)], None, cost=6))
    q.count = count
    q.cursor_text = cursor
    return execute(tx, q)
