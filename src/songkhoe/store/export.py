"""Reading one resource type for a Bulk Data export: keyset pages in a stable order, under
the caller's access, compiled by the search engine.

Bulk Data Access IG 2.0.0 (http://hl7.org/fhir/uv/bulkdata/STU2/export.html), kick-off
parameters ``_since``, ``_type`` and ``_typeFilter``, and the manifest's ``transactionTime``:

- a page is ``limit`` current versions of live resources of one type, stamped after
  ``since`` (``_since``: "their state has changed after the supplied time") and at or before
  the export's transaction time ``until``, ordered by ``(last_updated, rid)`` and read after
  the last row of the page before (``after``). The set never gains rows while it is read —
  every later write is stamped after ``until`` (``jobs.snapshot_time``) — so no row is read
  twice and none is skipped. A resource changed after ``until`` leaves the set: it belongs
  to the next export (``_since`` = this one's transaction time), not to this one;
- ``filters`` are the ``_typeFilter`` queries for the type: each is parsed by the search
  engine (``search.parse``, strictly) and its terms become conditions on the row; several
  queries are ORed ("a comma-separated list of FHIR REST API queries that restrict the
  results"). Result parameters (``_include``, ``_sort``, ``_count`` …) are refused;
- ``members``: ``all`` keeps the resources in some Patient's compartment (the ``owners`` rows:
  R4 Patient compartment, http://hl7.org/fhir/R4/compartmentdefinition-patient.html — a Patient
  is in its own), ``job`` those in the compartment of one of the job's people
  (``bulk_job_patients``: a Group's members, ``patient=``, a research cohort), None no limit;
- the caller's access rule for searches (``Tx.guard``, ``s``) is ANDed in, as in every search.

The statement reads the type's rows from ``resources (type, last_updated[, rid])`` in order
and probes each condition (an export reads most of a type; a probe per row is linear, where
a sub-select driving each page would be read again for every page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from songkhoe.fhir.outcome import FhirError, Issue

from .access import owned
from .search import parse
from .search_exec import fetch
from .search_sql import Ctx

Params = tuple[tuple[str, str], ...]

#: Search parameters that shape a result rather than select resources: not in a _typeFilter
#: (the IG: "FHIR search response parameters such as _include and _sort SHALL NOT be used").
RESULT_PARAMS = frozenset({"_include", "_revinclude", "_sort", "_count", "_cursor", "_total",
                           "_summary", "_elements", "_contained", "_containedType", "_format",
                           "_pretty", "_type"})


@dataclass(frozen=True)
class Selection:
    """What an export reads of one type."""

    rtype: str
    until: int  # µs, the export's transaction time (inclusive)
    since: int | None = None  # µs, exclusive
    filters: tuple[Params, ...] = ()  # ORed queries; () = every resource of the type
    members: str | None = None  # "all" | "job" | None (see the module)
    job: str | None = None  # the job whose bulk_job_patients "job" means


def check_filter(rtype: str, params: Sequence[tuple[str, str]], expression: str) -> None:
    """Refuse a ``_typeFilter`` query the engine would not apply exactly (400 naming it)."""
    for name, _ in params:
        if name.partition(":")[0] in RESULT_PARAMS:
            raise FhirError(400, Issue("not-supported", f"{rtype}?…{name}=…: search result "
                                       f"parameters such as {name} may not be used in a "
                                       "_typeFilter", expression))
    try:
        parse(rtype, list(params), strict=True)
    except FhirError as err:
        raise FhirError(400, [Issue(i.code, f"_typeFilter {rtype}?…: {i.diagnostics}",
                                    expression) for i in err.issues]) from None


def _context(tx: Any) -> Ctx:
    """As ``search_exec`` compiles: chains and ``_has`` pass only through visible rows."""
    ctx = Ctx(tx.backend.name)
    if tx.guard is not None:
        guard = tx.guard
        ctx.guard = lambda types, alias: guard.any_condition(types, "s", alias, ctx)
    return ctx


def page_sql(tx: Any, sel: Selection, after: tuple[int, int] | None,
             limit: int) -> tuple[str, list[Any]]:
    """The statement reading one page of ``sel`` after the row ``after`` (last_updated, rid):
    rows of (last_updated, rid, content)."""
    ctx = _context(tx)
    where = ["r.type = ?", "r.deleted = ?", "r.last_updated <= ?"]
    args: list[Any] = [sel.rtype, False, sel.until]
    if sel.since is not None:
        where.append("r.last_updated > ?")
        args.append(sel.since)
    if after is not None:
        where.append("(r.last_updated, r.rid) > (?, ?)")
        args += list(after)
    if tx.guard is not None:
        cond = tx.guard.condition(sel.rtype, "s", "r", ctx)
        if cond is not None:
            where.append(cond[0])
            args += cond[1]
    if sel.members is not None and owned(sel.rtype):
        if sel.members == "job":
            where.append("EXISTS (SELECT 1 FROM owners m JOIN bulk_job_patients mp ON "
                         "mp.patient = m.patient WHERE m.rid = r.rid AND mp.job = ?)")
            args.append(sel.job)
        else:
            where.append("EXISTS (SELECT 1 FROM owners m WHERE m.rid = r.rid)")
    if sel.filters:
        ors = []
        for params in sel.filters:
            q = parse(sel.rtype, list(params), strict=True, ctx=ctx)
            ands = []
            for term in q.terms:
                sql, term_args = term.condition("r", ctx)
                ands.append(sql)
                args += term_args
            ors.append("(" + " AND ".join(ands) + ")" if ands else "1 = 1")
        where.append("(" + " OR ".join(ors) + ")")
    sql = ("SELECT r.last_updated, r.rid, h.content FROM resources r JOIN history h "
           f"ON h.rid = r.rid AND h.version = r.version WHERE {' AND '.join(where)} "
           "ORDER BY r.last_updated, r.rid LIMIT ?")
    return sql, [*args, limit]


#: PostgreSQL planner settings for the pages after the first (``read_page``).
_IN_ORDER = ("SELECT set_config('enable_seqscan', 'off', true), "
             "set_config('enable_hashjoin', 'off', true), "
             "set_config('enable_mergejoin', 'off', true), set_config('enable_sort', 'off', true)")


def read_page(tx: Any, sel: Selection, after: tuple[int, int] | None,
              limit: int) -> list[tuple[int, int, bytes]]:
    """One page of ``sel`` in transaction ``tx``: (last_updated, rid, JSON bytes) rows.

    On PostgreSQL the pages after the first are read in index order, conditions probed row by
    row (sequential scans, hash and merge joins and sorts off for the statement). The planner
    may rather hash a selective filter's or a commune's rows and sort what matches: right for
    one page, but every further page would then scan the table again — an export of n pages
    would cost n table scans. A first page that is not full is the whole export of the type,
    so it keeps the planner's choice."""
    sql, args = page_sql(tx, sel, after, limit)
    rows = _fetch(tx, sql, args, in_order=after is not None)
    return [(int(lu), int(rid), bytes(content)) for lu, rid, content in rows]


def _fetch(tx: Any, sql: str, args: list[Any], in_order: bool) -> list[Any]:
    if tx.backend.name != "postgres":
        return fetch(tx, sql, args)
    # results in binary: the JSON bytes as they are, not hex text (a page in 2/3 time)
    with tx.conn.transaction():
        if in_order:
            tx.conn.execute(_IN_ORDER)
        return tx.backend.execute(tx.conn, sql, args, prepare=False).fetchall()


def read_people_page(tx: Any, rtype: str, patients: Sequence[str], until: int,
                     since: int | None, after: tuple[str, int] | None,
                     limit: int) -> list[tuple[str, int, bytes]]:
    """One page of the live resources of ``rtype`` in the compartments of ``patients`` (their
    ``owners`` rows, as ``members``), stamped after ``since`` and at or before ``until``, under
    the caller's access: (patient, rid, JSON bytes) rows in ``(patient, rid)`` order, read
    after ``after``. Driven by ``owners (patient, type, rid)``: a few people's records cost
    a few index ranges, not a pass over the type. A resource in two of the people's
    compartments comes once for each."""
    ctx = _context(tx)
    marks = ", ".join("?" * len(patients))
    where = ["m.type = ?", f"m.patient IN ({marks})", "r.deleted = ?", "r.last_updated <= ?"]
    args: list[Any] = [rtype, *patients, False, until]
    if since is not None:
        where.append("r.last_updated > ?")
        args.append(since)
    if after is not None:
        where.append("(m.patient, m.rid) > (?, ?)")
        args += list(after)
    if tx.guard is not None:
        cond = tx.guard.condition(rtype, "s", "r", ctx)
        if cond is not None:
            where.append(cond[0])
            args += cond[1]
    sql = ("SELECT m.patient, m.rid, h.content FROM owners m JOIN resources r ON r.rid = m.rid "
           "JOIN history h ON h.rid = r.rid AND h.version = r.version "
           f"WHERE {' AND '.join(where)} ORDER BY m.patient, m.rid LIMIT ?")
    rows = _fetch(tx, sql, [*args, limit], in_order=False)
    return [(str(p), int(rid), bytes(content)) for p, rid, content in rows]
