"""Row-level access inside the store's SQL: which rows an access context may read, search,
create, update or delete (issue 5; ARCHITECTURE.md "Access control lives in the query").

The store does not know roles or tokens. It is handed an ``Access`` — anything that answers
``rule(type, action)`` with a ``Rule`` (``songkhoe.auth.policy`` builds one from a verified
token) — and compiles each rule into conditions on the ``resources`` row, ANDed into the very
statement that reads the rows. A hidden row is therefore never fetched, counted, paged over,
included, chained through or reported in an error.

What a rule limits:

- ``org``: the Organization at the top of the subtree the caller works in. Resources that
  belong to people (``owned`` types: Patient, the Patient compartment — FHIR R4
  http://hl7.org/fhir/R4/compartmentdefinition-patient.html — and ``EXTRA_OWNER_PARAMS``) are
  visible when one of their Patients' ``managingOrganization`` lies in that subtree. Other
  types (Organization, Practitioner, Location, terminology…) are directory data, visible to
  every caller whose scopes name them.
- ``practitioner``: also the people of consultations assigned to that Practitioner
  (``ServiceRequest.performer``, ``Task.owner``).
- ``patient``: only that Patient and its compartment (SMART patient-context tokens).
- ``alternatives``: SMART v2 scope queries (``patient/Observation.rs?category=laboratory``),
  each a conjunction of FHIR search parameters; a row must satisfy one of them.

Ownership is kept in the table ``owners`` at write time (``OwnerIndex``, called from
``Tx.flush``): one row per (resource, Patient it belongs to) with that Patient's managing
Organization, updated for a whole compartment when a Patient moves. ``org_tree`` is the
closure of ``Organization.partOf`` (ancestor, org), rebuilt in SQL when Organizations change,
so "in the subtree of X" is one indexed join.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from songkhoe.fhir import definitions

from .catalog import params

Params = tuple[tuple[str, str], ...]

#: Types outside the R4 Patient compartment that still hold a person's data: a teleconsultation
#: Task (``Task.for``), an implanted Device, a Contract, a GuidanceResponse.
EXTRA_OWNER_PARAMS: Mapping[str, tuple[str, ...]] = {
    "Task": ("patient",), "Device": ("patient",), "Contract": ("patient",),
    "GuidanceResponse": ("patient",),
}

#: Reference parameters whose target Practitioner is consulted about the patient.
CONSULT_PARAMS = (("ServiceRequest", "performer"), ("Task", "owner"))


@dataclass(frozen=True, slots=True)
class Rule:
    """The rows of one type an access context may touch for one action (c r u d s)."""

    allowed: bool = True
    org: str | None = None
    practitioner: str | None = None
    patient: str | None = None
    alternatives: tuple[Params, ...] = ()

    @property
    def unrestricted(self) -> bool:
        return self.allowed and self.org is None and self.patient is None \
            and not self.alternatives


DENY = Rule(False)


class Access(Protocol):
    """What the store asks of an access context."""

    def rule(self, rtype: str, action: str) -> Rule: ...


#: The access context of the current request: ``Store`` transactions opened without an
#: explicit ``access=`` use it (set by the REST layer for each request; None: unrestricted).
CURRENT: contextvars.ContextVar[Access | None] = contextvars.ContextVar("songkhoe_store_access",
                                                                        default=None)


@contextmanager
def acting_as(access: Access | None) -> Iterator[None]:
    """Run the block's store calls under ``access``."""
    token = CURRENT.set(access)
    try:
        yield
    finally:
        CURRENT.reset(token)


# --- ownership -----------------------------------------------------------------------------


@cache
def owner_params() -> Mapping[str, tuple[str, ...]]:
    """For each owned type, the reference parameters naming the Patients it belongs to."""
    return {**definitions.patient_compartment(), **EXTRA_OWNER_PARAMS}


def owned(rtype: str) -> bool:
    return rtype == "Patient" or rtype in owner_params()


@cache
def owner_sps() -> tuple[int, ...]:
    """The index tags (``sp``) of every owner parameter."""
    sps = {s.sp for rtype, codes in owner_params().items() for code in codes
           if (p := params(rtype).get(code)) is not None
           for s in p.sources if s.target in (None, "Patient")}
    return tuple(sorted(sps))


@cache
def _sp(rtype: str, code: str) -> int:
    return params(rtype)[code].sources[0].sp


def _ints(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)


def managing_org_sql(patient: str) -> str:
    """A scalar sub-select: the managing Organization of the Patient whose id is ``patient``
    (a SQL expression), NULL when it is unknown, deleted or has none."""
    # ``sp + 0``: the row is found by its rid; without statistics SQLite would rather read
    # every Patient's managingOrganization row by ``sp`` and compare rids
    return ("(SELECT MIN(m.target_id) FROM idx_reference m WHERE m.rid = (SELECT mp.rid FROM "
            f"resources mp WHERE mp.type = 'Patient' AND mp.id = {patient}) AND m.sp + 0 = "
            f"{_sp('Patient', 'organization')} AND m.target_type = 'Organization')")


def owner_rows_sql(rids: str | None) -> str:
    """SELECT of (rid, type, patient) owner rows for the resources whose ``rid`` is in
    ``rids`` (a SQL list; None: all, and each Patient owns itself): the Patients their owner
    parameters name."""
    # for given rows, ``sp + 0``: they are found by their rid; offered 500 rids, SQLite would
    # rather read every owner reference of the database by ``sp`` (39 ms against 2 ms for 500
    # written rows of a 20,000-person store, growing with the store)
    sp = "x.sp + 0" if rids else "x.sp"
    refs = ("SELECT DISTINCT x.rid AS rid, r.type AS type, x.target_id AS patient "
            "FROM idx_reference x JOIN resources r ON r.rid = x.rid "
            f"WHERE {sp} IN ({_ints(owner_sps())}) AND x.target_type = 'Patient' AND "
            + (f"x.rid IN ({rids})" if rids else "1 = 1"))
    if rids:
        return refs
    return f"{refs} UNION SELECT r.rid, r.type, r.id FROM resources r WHERE r.type = 'Patient'"


def owned_patients_lock_sql(rids: str) -> str:
    """PostgreSQL: lock (``FOR KEY SHARE``, in row order) the rows of the Patients that the
    resources whose ``rid`` is in ``rids`` belong to, before their owner rows are written.

    Their owner rows carry each Patient's managing Organization as the statement that writes
    them sees it. Under READ COMMITTED, a move of the Patient committed meanwhile would not
    see these rows, nor these rows the move: the resource would stay with the old
    Organization. A move holds the Patient's row ``FOR UPDATE`` (``Tx._current``,
    ``Tx._currents``, ``bulk``) before it carries the compartment along, and that conflicts
    with this lock: one waits for the other's commit, and the statement after the wait sees
    it. Writers of one person's records do not wait for each other (``FOR KEY SHARE`` is
    shared, and compatible with the ``FOR NO KEY UPDATE`` of ``Tx.lock``), so parallel
    loaders and deriving writers cannot deadlock on it. Rows this transaction wrote are left
    out: it holds them already, or nobody else sees them yet."""
    return ("SELECT p.rid FROM resources p WHERE p.type = 'Patient' AND p.id IN ("
            f"SELECT o.patient FROM ({owner_rows_sql(rids)}) o) "
            "AND p.xmin <> pg_current_xact_id()::xid ORDER BY p.rid FOR KEY SHARE OF p")


def _follow(execute: Any, patients: list[str]) -> None:
    """Every owner row of the compartments of ``patients`` given its Patient's current
    Organization."""
    for start in range(0, len(patients), 500):
        chunk = patients[start:start + 500]
        values = ", ".join(["(?)"] * len(chunk))
        # the Patients come as VALUES, whose size the planner knows: from a sub-select of
        # ``owners`` PostgreSQL estimated ~128 of them without statistics and hash-joined every
        # ``owners`` row (42 ms a check-up Bundle in a 5,000-person store, 0.2 ms probing by
        # patient)
        execute(f"WITH v(patient) AS (VALUES {values}) UPDATE owners SET org = n.org FROM "
                f"(SELECT v.patient, {managing_org_sql('v.patient')} AS org FROM v) n "
                "WHERE owners.patient = n.patient AND owners.org IS DISTINCT FROM n.org", chunk)


@contextmanager
def _planned(execute: Any, backend: str) -> Iterator[None]:
    """PostgreSQL: the ``_PLANNER`` settings for the statements inside, restored after (one
    round trip each way)."""
    if backend != "postgres":
        yield
        return
    restore = execute(f"SELECT {', '.join(f'current_setting({n!r})' for n in _PLANNER)}, "
                      + ", ".join(f"set_config({n!r}, {v!r}, true)" for n, v in _PLANNER.items()),
                      []).fetchone()
    yield
    execute("SELECT " + ", ".join(f"set_config({n!r}, ?, true)" for n in _PLANNER),
            list(restore[:len(_PLANNER)]))


def org_tree_sql(ids: str | None = None) -> str:
    """INSERT of the closure of ``Organization.partOf`` into ``org_tree`` for the
    Organizations whose id is in ``ids`` (a SQL list; None: all). UNION stops at cycles."""
    which = f" AND id IN ({ids})" if ids else ""
    return ("INSERT INTO org_tree (ancestor, org) WITH RECURSIVE up(org, ancestor) AS ("
            f"SELECT id, id FROM resources WHERE type = 'Organization'{which} UNION "
            "SELECT up.org, x.target_id FROM up JOIN resources o ON o.type = 'Organization' "
            "AND o.id = up.ancestor JOIN idx_reference x ON x.rid = o.rid "
            f"AND x.sp = {_sp('Organization', 'partof')} AND x.target_type = 'Organization') "
            "SELECT DISTINCT ancestor, org FROM up")


def backfill_statements() -> list[str]:
    """Fill ``owners`` and ``org_tree`` from the resources already stored (schema v3)."""
    return [
        f"INSERT INTO owners (rid, type, patient) SELECT o.rid, o.type, o.patient "
        f"FROM ({owner_rows_sql(None)}) o",
        f"UPDATE owners SET org = {managing_org_sql('owners.patient')}",
        org_tree_sql(),
    ]


#: PostgreSQL planner settings while ownership is maintained (``OwnerIndex.apply``)
_PLANNER = {"enable_seqscan": "off", "jit": "off", "max_parallel_workers_per_gather": "0",
            "plan_cache_mode": "force_custom_plan"}


class OwnerIndex:
    """Keeps ``owners`` and ``org_tree`` up to date with one transaction's writes, in a few
    set-based statements at each flush (``Tx.flush``)."""

    def __init__(self) -> None:
        self.rids: list[int] = []  # written resources of owned types
        self.replaced: list[int] = []  # those of them that had a version before
        self.selves: list[tuple[int, str]] = []  # (rid, id) of Patients written: own rows
        self.patients: set[str] = set()  # Patients written: their compartment follows them
        self.orgs: set[str] = set()  # Organizations written or deleted: their subtree moves
        # for ``before_commit`` (PostgreSQL), over the whole transaction:
        self.created: set[str] = set()  # Patients this transaction created
        self.unowned: set[str] = set()  # Patients of owner rows it wrote without their org

    def written(self, rtype: str, id: str, rid: int, version: int) -> None:
        if owned(rtype):
            self.rids.append(rid)
            if version > 1:
                self.replaced.append(rid)
            if rtype == "Patient":
                self.selves.append((rid, id))
                self.patients.add(id)
                if version == 1:
                    self.created.add(id)
        elif rtype == "Organization":
            self.orgs.add(id)

    def deleted(self, rtype: str, id: str) -> None:
        if rtype == "Organization":
            self.orgs.add(id)

    def apply(self, execute: Any, backend: str) -> None:
        """Run the statements (``execute(sql, args)``) after the index rows are written.

        Each is a handful of index lookups per written row by construction. On PostgreSQL they
        run with sequential scans, parallel workers and JIT off (``_PLANNER``): during a bulk
        load the planner's statistics lag far behind the tables, and it chose to scan the
        whole reference index (28 s a batch at 200,000 resources instead of milliseconds).
        And each is planned for its own row ids (``plan_cache_mode``): the connection
        prepares a statement run twice, and PostgreSQL may then keep one generic plan for
        every list of ids, which cannot see them — for the owner rows, a read of every
        reference to a Patient (0.85 s a chunk of 500 at 20,000 people, against 4 ms)."""
        if not (self.rids or self.orgs):
            return
        with _planned(execute, backend):
            self._apply(execute, backend)
        self.rids, self.replaced, self.selves = [], [], []
        self.patients, self.orgs = set(), set()

    def _apply(self, execute: Any, backend: str) -> None:
        for start in range(0, len(self.replaced), 500):
            chunk = self.replaced[start:start + 500]
            execute(f"DELETE FROM owners WHERE rid IN ({', '.join('?' * len(chunk))})", chunk)
        for start in range(0, len(self.rids), 500):
            chunk = self.rids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            insert = ("INSERT INTO owners (rid, type, patient, org) SELECT o.rid, o.type, "
                      f"o.patient, {managing_org_sql('o.patient')} "
                      f"FROM ({owner_rows_sql(marks)}) o")
            if backend == "postgres":
                execute(owned_patients_lock_sql(marks), chunk)
                self.unowned.update(r[0] for r in execute(
                    f"WITH i AS ({insert} RETURNING patient, org) "
                    "SELECT DISTINCT patient FROM i WHERE org IS NULL", chunk).fetchall())
            else:
                execute(insert, chunk)
        for start in range(0, len(self.selves), 500):
            chunk_selves = self.selves[start:start + 500]
            values = ", ".join("(CAST(? AS BIGINT), ?)" for _ in chunk_selves)
            execute(f"INSERT INTO owners (rid, type, patient, org) WITH v(rid, id) AS "
                    f"(VALUES {values}) SELECT v.rid, 'Patient', v.id, "
                    f"{managing_org_sql('v.id')} FROM v WHERE NOT EXISTS (SELECT 1 FROM "
                    "owners e WHERE e.rid = v.rid AND e.patient = v.id)",
                    [x for pair in chunk_selves for x in pair])
        _follow(execute, sorted(self.patients))  # a Patient that moved takes its records
        if self.orgs:
            self._update_tree(execute, backend)

    def before_commit(self, execute: Any, backend: str) -> None:
        """PostgreSQL, the transaction's last statements: records written for a Patient that
        another transaction was creating meanwhile get its Organization.

        Their owner rows were written without it, the Patient's row being invisible until its
        creator commits (a lock cannot wait for it: ``owned_patients_lock_sql``), and the
        creator's own statements did not see them while they were uncommitted — parallel
        loaders of one population, routing each resource by its id, met this for ~1% of the
        records. So each such transaction ends by locking the ids of these Patients
        (advisory locks: shared for the Patients of its owner rows without an Organization,
        exclusive for the Patients it created, all in one statement in one order, so none can
        deadlock on them), then carrying every one's compartment to its Organization as a
        move does. The later of the two to reach this point sees the other committed."""
        if backend != "postgres" or not (self.created or self.unowned):
            return
        ids = sorted(self.created | self.unowned)
        execute("SELECT CASE WHEN s.mine THEN pg_advisory_xact_lock(hashtext(s.id)) ELSE "
                "pg_advisory_xact_lock_shared(hashtext(s.id)) END FROM (SELECT v.id, v.mine "
                "FROM unnest(CAST(? AS TEXT[]), CAST(? AS BOOLEAN[])) v(id, mine) "
                "ORDER BY hashtext(v.id), NOT v.mine) s",
                [ids, [id in self.created for id in ids]])
        with _planned(execute, backend):
            _follow(execute, ids)
        self.created, self.unowned = set(), set()

    def _update_tree(self, execute: Any, backend: str) -> None:
        """Recompute the closure rows of the Organizations written and of everything under
        them (a move carries the subtree; a new parent gains children loaded before it)."""
        if backend == "postgres":  # one writer of the tree at a time; readers keep the old one
            execute("LOCK TABLE org_tree IN SHARE ROW EXCLUSIVE MODE", [])
        affected = set(self.orgs)
        written = sorted(self.orgs)
        for start in range(0, len(written), 500):
            chunk = written[start:start + 500]
            affected.update(r[0] for r in execute(
                f"SELECT org FROM org_tree WHERE ancestor IN ({', '.join('?' * len(chunk))})",
                chunk).fetchall())
        ordered = sorted(affected)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            execute(f"DELETE FROM org_tree WHERE org IN ({marks})", chunk)
            execute(org_tree_sql(marks), chunk)


# --- rules compiled to SQL ---------------------------------------------------------------------


def consult_patients_sql() -> str:
    """Sub-select of the Patients of consultations assigned to the Practitioner ``?``."""
    sps = _ints(tuple(_sp(t, c) for t, c in CONSULT_PARAMS))
    return (f"SELECT co.patient FROM idx_reference ca JOIN owners co ON co.rid = ca.rid "
            f"WHERE ca.sp IN ({sps}) AND ca.target_type = 'Practitioner' AND ca.target_id = ?")


def owner_where(rule: Rule, x: str, *, probe: bool) -> tuple[str, list[Any]] | None:
    """The condition on an ``owners`` row ``x`` that makes its resource visible under ``rule``
    (None: no person-based limit). ``probe``: for one row at a time (the subtree is probed by
    its key); otherwise for selecting many rows (the subtree is listed once)."""
    if rule.patient is not None:
        return f"{x}.patient = ?", [rule.patient]
    if rule.org is None:
        return None
    if probe:
        sql = f"EXISTS (SELECT 1 FROM org_tree t WHERE t.ancestor = ? AND t.org = {x}.org)"
    else:
        sql = f"{x}.org IN (SELECT t.org FROM org_tree t WHERE t.ancestor = ?)"
    args: list[Any] = [rule.org]
    if rule.practitioner is not None:
        sql = f"({sql} OR {x}.patient IN ({consult_patients_sql()}))"
        args.append(rule.practitioner)
    return sql, args
