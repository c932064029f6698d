"""The record store: FHIR resources, their history and search indexes in one transaction.

Implements the storage side of the R4 RESTful API (http://hl7.org/fhir/R4/http.html): create,
update (and update-as-create), conditional create/update/delete, JSON Patch, logical delete,
read, vread, history (instance, type, system), search and ``Patient/$everything``.

Every write validates the resource against the R4 definitions, NFC-normalises its text, sets
``id``/``meta.versionId``/``meta.lastUpdated``, and writes the ``resources`` row, a ``history``
row and all search-index rows in the caller's transaction. Index and history rows are buffered
and written in bulk before the next read in the transaction and at commit; history rows carry
the transaction's number in the change feed (``changes``).

Access: a ``Tx`` opened with an ``access.Access`` (explicitly, or the request's
``access.CURRENT``) reads only the rows that access may see — every statement carries the
condition (``search_access``) — and refuses to write outside it: an existing row must be
visible for update or delete, and at commit every row written must lie within the rule of its
action (``Tx.finish``), so that a Bundle may create a Patient and its Observations in any order.

Concurrency: PostgreSQL locks the ``resources`` row (``FOR UPDATE``) before a new version is
computed; SQLite serialises writers with ``BEGIN IMMEDIATE``. Either way a stale ``If-Match``
answers 412 and no update is lost.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch
import orjson

from songkhoe.fhir import definitions
from songkhoe.fhir.outcome import FhirError, Issue, gone, not_found, precondition_failed
from songkhoe.fhir.text import nfc
from songkhoe.fhir.validate import validate, validate_change

from . import changes
from .access import CURRENT, Access, OwnerIndex
from .api import HistoryPage, Operations, Prepared, SearchResult, Stored, WriteResult
from .backends import Backend
from .ids import new_id
from .indexer import index_rows, same_index
from .ranges import format_instant, from_us, instant_us
from .schema import INDEX_COLUMNS
from . import search_exec
from .search import parse
from .search_access import Guard
from .search_sql import Ctx

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


def check_id(id: str, expression: str = "id") -> None:
    """R4 id: 1–64 of [A-Za-z0-9-.] (http://hl7.org/fhir/R4/datatypes.html#id)."""
    if not id or len(id) > 64 or not _ID_CHARS.issuperset(id):
        raise FhirError(400, Issue("value", f"{id!r} is not a valid id: expected 1 to 64 "
                                   "letters, digits, '-' or '.'", expression))


def check_type(rtype: str) -> None:
    if not definitions.is_resource_type(rtype):
        raise FhirError(404, Issue("not-supported", f"{rtype!r} is not an R4 resource type"))


def normalise(value: Any) -> Any:
    """The JSON value with every string in NFC: the value itself when it already is (one C-level
    check of its serialised text), else a normalised copy."""
    if unicodedata.is_normalized("NFC", orjson.dumps(value).decode()):
        return value
    return _normalised_copy(value)


def _normalised_copy(value: Any) -> Any:
    if isinstance(value, str):
        return nfc(value)
    if isinstance(value, dict):
        return {k: _normalised_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised_copy(v) for v in value]
    return value


def checked(resource: Any, rtype: str | None = None,
            previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The NFC-normalised resource, or a 400 listing every validation error. ``previous``: the
    stored version it replaces (validated when it was stored): only the elements that differ
    from it are normalised and validated, when they can be alone (``validate_change``)."""
    if not isinstance(resource, dict):
        raise FhirError(400, Issue("structure", "expected a JSON object (a FHIR resource)"))
    if rtype is not None and resource.get("resourceType") != rtype:
        raise FhirError(400, Issue("invalid", f"resourceType is {resource.get('resourceType')!r} "
                                   f"but the request is for {rtype}", "resourceType"))
    found = None
    if previous is not None:
        changed = {k: v for k, v in resource.items() if k not in previous or previous[k] != v}
        if normalise(changed) is changed:  # else a copy: the whole resource is normalised
            found = validate_change(resource, previous, changed)
    if found is None:
        resource = normalise(resource)
        found = validate(resource, expected_type=rtype)
    issues = [i for i in found if i.severity in ("error", "fatal")]
    if issues:
        raise FhirError(400, issues)
    return resource


def prepare(resource: Any, rtype: str | None = None) -> Prepared:
    """Validate, normalise and index a resource outside any transaction (pure CPU work)."""
    if isinstance(resource, Prepared):
        if rtype is not None and resource.resource["resourceType"] != rtype:
            raise FhirError(400, Issue("invalid", f"resourceType is "
                                       f"{resource.resource['resourceType']!r} but the request "
                                       f"is for {rtype}", "resourceType"))
        return resource
    resource = checked(resource, rtype)
    return Prepared(resource, index_rows(resource))


def prepare_version(resource: dict[str, Any], rtype: str,
                    previous: dict[str, Any]) -> Prepared:
    """``prepare`` of ``resource`` as the next version of ``previous``, the stored version
    the caller read: only the elements that differ from it are validated (``checked``), and
    its index rows are kept when no search parameter reads them (``indexer.same_index``).
    A write uses it as prepared only while ``previous`` is still the current version."""
    body = checked(resource, rtype, previous)
    keep = same_index(previous, body)
    return Prepared(body, {} if keep else index_rows(body),
                    replaces=str((previous.get("meta") or {}).get("versionId")), keeps_index=keep)


def _prepared_version(resource: dict[str, Any] | Prepared, rtype: str, id: str,
                      current: tuple[int, int, bool] | None,
                      previous: dict[str, Any] | None) -> tuple[Prepared, bool]:
    """``resource`` prepared as the next version of ``rtype/id`` (``current``), and whether
    it keeps the current version's index rows: as the next version of ``previous``
    (``prepare_version``) when that is the current version, else in full."""
    current_version = str(current[1]) if current is not None and not current[2] else None
    if isinstance(resource, Prepared):
        prepared = prepare(resource, rtype)
        if prepared.replaces is not None and prepared.replaces != current_version:
            prepared = prepare(prepared.resource)  # prepared over a version since replaced
    elif previous is not None and current_version is not None and \
            str((previous.get("meta") or {}).get("versionId")) == current_version:
        prepared = prepare_version(resource, rtype, previous)
    else:
        prepared = prepare(resource, rtype)
    if prepared.resource.get("id") != id:
        raise FhirError(400, Issue("invalid", f"the resource's id "
                                   f"{prepared.resource.get('id')!r} differs from the id in "
                                   f"the URL {id!r}", "id"))
    return prepared, prepared.keeps_index


def _patients_of(resource: dict[str, Any]) -> list[str]:
    """The Patient a written resource belongs to (itself, its subject, patient or — a Task —
    ``for``)."""
    if resource["resourceType"] == "Patient":
        return [resource["id"]]
    out = []
    for key in ("subject", "patient", "for"):
        ref = resource.get(key)
        if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("Patient/"):
            out.append(ref["reference"][8:])
    return out


class Tx(Operations):
    """One database transaction. Obtain through ``Store.transaction()``."""

    def __init__(self, backend: Backend, conn: Any, access: Access | None = None) -> None:
        self.backend = backend
        self.conn = conn
        self.guard = Guard(access, self._sql) if access is not None else None
        self.owners = OwnerIndex()
        self._written: dict[tuple[str, str], list[tuple[int, str]]] = {}  # (type, action) → rows
        self.now = time.time_ns() // 1000
        self._resources: list[tuple[Any, ...]] = []
        self._history: list[tuple[Any, ...]] = []
        self._rids: list[int] = []
        self._rid_block = 8
        self._rid_high = 0
        self._index: dict[str, list[tuple[Any, ...]]] = {t: [] for t in INDEX_COLUMNS}
        self._unindex: list[int] = []
        self._lock = " FOR UPDATE" if backend.name == "postgres" else ""
        #: ids of the Patients whose records this transaction wrote (for derivations)
        self.patients: set[str] = set()
        self._mine: dict[tuple[str, str], tuple[int, int]] = {}  # written here: rid, version
        self._amended: dict[tuple[str, str], Stored] = {}
        self._rewrites: list[tuple[bytes, int, int]] = []  # amended contents: content, rid, version
        self.derived: Any = None  # what ``Store.derive`` made of this transaction
        self._change_seq: int | None = None  # this transaction's number (``changes.stamp``)

    @cached_property
    def instant(self) -> str:
        """``now`` as an R4 instant, the ``lastUpdated`` of every version written here."""
        return format_instant(self.now)

    @cached_property
    def moment(self) -> datetime:
        """``now`` as a datetime."""
        return from_us(self.now)

    # -- plumbing --------------------------------------------------------------------------

    def _sql(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        return self.backend.execute(self.conn, sql, args)

    def execute(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        """Run a statement on a derived table kept in this transaction (``?`` placeholders);
        buffered writes are flushed first so it sees them."""
        self.flush()
        return self._sql(sql, args)

    def insert_rows(self, table: str, columns: tuple[str, ...],
                    rows: list[tuple[Any, ...]]) -> None:
        """Insert rows into a derived table the fastest way (PostgreSQL: ``COPY``)."""
        self.flush()
        self.backend.load_rows(self.conn, table, columns, rows)

    def read_limit(self, rtype: str) -> tuple[str, list[Any]]:
        """`` AND <condition on alias r>`` limiting reads of ``rtype`` to what the caller may
        see, for queries of derived tables joined to ``resources r`` (403 if not allowed)."""
        return self._limit(rtype, "r")

    def new_rid(self) -> int:
        """A fresh resource row id, taken from blocks reserved per transaction."""
        if not self._rids:
            self._rids = self.backend.allocate_rids(self.conn, self._rid_block, self._rid_high)
            self._rid_block = min(self._rid_block * 2, 1024)
        self._rid_high = self._rids.pop(0)
        return self._rid_high

    def flush(self) -> None:
        """Write buffered resources, history and index rows."""
        if self._resources:
            self.backend.load_rows(self.conn, "resources", ("rid", "type", "id", "version",
                                   "last_updated", "deleted"), self._resources)
            self._resources = []
        if self._unindex:
            rids = self._unindex
            marks = ", ".join("?" * len(rids))
            for table in INDEX_COLUMNS:
                self._sql(f"DELETE FROM {table} WHERE rid IN ({marks})", rids)
            self._unindex = []
        if self._history:
            columns = ("rid", "version", "type", "id", "last_updated", "method", "content")
            if self._change_seq is None:
                self._change_seq = changes.stamp(self.backend, self.conn)
            rows = self._history
            if self._change_seq is not None:  # SQLite; PostgreSQL: the column default
                columns += ("change_seq",)
                rows = [(*row, self._change_seq) for row in rows]
            self.backend.load_rows(self.conn, "history", columns, rows)
            self._history = []
        if self._rewrites:  # amended versions (``amend``), their new index rows follow
            self.backend.executemany(self.conn, "UPDATE history SET content = ? WHERE rid = ? "
                                     "AND version = ?", self._rewrites)
            self._rewrites = []
        for table, rows in self._index.items():
            if rows:
                self.backend.load_rows(self.conn, table, ("rid", *INDEX_COLUMNS[table]), rows)
                self._index[table] = []
        self.owners.apply(self._sql, self.backend.name)

    def finish(self) -> None:
        """Flush, then check that every row this transaction wrote lies within the access
        rule of its action (403, and nothing is committed, if one does not)."""
        self.flush()
        if self.guard is None:
            return
        checks = []
        for (rtype, action), rows in self._written.items():
            cond = self.guard.condition(rtype, action, "r", Ctx(self.backend.name))
            if cond is not None:
                checks.append((cond[0], cond[1], [rid for rid, _ in rows]))
        outside = self._outside(checks) if checks else None
        if outside is not None:
            raise FhirError(403, f"{outside[0]}/{outside[1]} would lie outside what this access "
                                 "token may write (its Organization, patient or scopes)",
                            code="forbidden")
        self._written = {}

    def before_commit(self) -> None:
        """The last statements, once, after ``finish``: records written for a Patient another
        transaction was creating get its Organization (``OwnerIndex.before_commit``)."""
        self.owners.before_commit(self._sql, self.backend.name)

    def _outside(self, checks: list[tuple[str, list[Any], list[int]]]) -> Any:
        """(type, id) of a written row (``rids``) its condition does not admit, or None.

        On PostgreSQL every check is one statement, each row's condition evaluated in a
        LATERAL subquery of that row alone: the planner probes the row's owner by key unless
        hashing the subtree's ``owners`` rows once costs less than one probe (a small store).
        Over an ``IN`` list it weighed the hash against a probe per listed row and, with the
        statistics of a table never analyzed, hashed every ``owners`` row (a check-up Bundle's
        15 Observations in a 5,000-person store: 68 ms against 0.2 ms; ``bench_auth.py``)."""
        if self.backend.name == "postgres":
            parts = [f"SELECT x.type, x.id FROM unnest(CAST(? AS BIGINT[])) w(rid) CROSS JOIN "
                     f"LATERAL (SELECT r.type, r.id FROM resources r WHERE r.rid = w.rid AND "
                     f"NOT COALESCE(({sql}), TRUE)) x" for sql, _, _ in checks]
            args = [arg for _, cond_args, rids in checks for arg in (rids, *cond_args)]
            return self._sql(" UNION ALL ".join(parts) + " LIMIT 1", args).fetchone()
        for sql, cond_args, rids in checks:
            for start in range(0, len(rids), 500):
                chunk = rids[start:start + 500]
                outside = self._sql(f"SELECT r.type, r.id FROM resources r WHERE r.rid IN "
                                    f"({', '.join('?' * len(chunk))}) "
                                    f"AND NOT COALESCE(({sql}), TRUE)",
                                    chunk + cond_args).fetchone()
                if outside is not None:
                    return outside
        return None

    def _sees(self, rtype: str, rid: int, action: str) -> bool:
        """Whether the caller may ``action`` the existing row ``rid`` (403 when the type is
        not allowed at all)."""
        if self.guard is None:
            return True
        self.guard.require(rtype, action)
        self.flush()
        return self.guard.visible(rid, rtype, action, self.backend.name)

    def _check_existing(self, rtype: str, rid: int, action: str) -> None:
        """An existing row may be updated only when the caller may see it."""
        if not self._sees(rtype, rid, action):
            raise FhirError(403, f"{rtype} resources of another Organization or patient may not "
                                 "be changed with this access token", code="forbidden")

    def _current(self, rtype: str, id: str, *, lock: bool = False) -> tuple[int, int, bool] | None:
        """(rid, version, deleted) of a resource, locking its row for a write."""
        row = self._sql("SELECT rid, version, deleted FROM resources WHERE type = ? AND id = ?"
                        + (self._lock if lock else ""), (rtype, id)).fetchone()
        return (row[0], row[1], bool(row[2])) if row else None

    def _write(self, prepared: Prepared, id: str, current: tuple[int, int, bool] | None,
               method: str, if_match: int | None = None, *, fresh_id: bool = False,
               keep_index: bool = False, row: int | None = None) -> WriteResult:
        """Store a new version; ``fresh_id``: the id was just generated, so no row can exist;
        ``keep_index``: the current version's index rows are the new one's (``update``);
        ``row``: the rid of its ``resources`` row, already inserted or moved to this version
        (``update_many``)."""
        rtype = prepared.resource["resourceType"]
        if prepared.keeps_index and not keep_index:  # not written as the version it follows
            prepared = prepare(prepared.resource)
        if self.guard is not None:  # before If-Match: a 412 would tell a hidden version
            if current is not None:
                self._check_existing(rtype, current[0], "u")
            self.guard.require(rtype, "u" if current and not current[2] else "c")
        if if_match is not None and (current is None or current[1] != if_match):
            have = "does not exist" if current is None else f"is at version {current[1]}"
            raise precondition_failed(f"If-Match expects version {if_match} of {rtype}/{id}, "
                                      f"but it {have}")
        version = current[1] + 1 if current else 1
        if row is not None:
            rid = row
            if current is not None and not keep_index:
                self.unindex(rid)
        elif fresh_id:
            rid = self.new_rid()
            self._resources.append((rid, rtype, id, 1, self.now, False))
        elif current is None:
            inserted = self._insert_resources([(rtype, id)]).get((rtype, id))
            if inserted is None:  # a concurrent writer created it first: update that one instead
                return self._write(prepared, id, self._current(rtype, id, lock=True), method,
                                   if_match)
            rid = inserted
        else:
            rid = current[0]
            self._sql("UPDATE resources SET version = ?, last_updated = ?, deleted = ? "
                      "WHERE rid = ?", (version, self.now, False, rid))
            if not keep_index:
                self.unindex(rid)
        kept = keep_index and current is not None
        content = self.stage({**prepared.resource, "id": id}, rid, version, method,
                             prepared.index, same_owners=kept)
        if self.guard is not None:
            action = "u" if current and not current[2] else "c"
            self._written.setdefault((rtype, action), []).append((rid, id))
        stored = Stored(rtype, id, version, self.moment, content, method)
        return WriteResult("updated" if current and not current[2] else "created", stored)

    def stage(self, resource: dict[str, Any], rid: int, version: int, method: str,
              index: dict[str, list[tuple[Any, ...]]] | None = None, *,
              same_owners: bool = False) -> bytes:
        """Set the version's meta and buffer its history and index rows (computed here unless
        given); returns its JSON. ``same_owners``: it keeps the current version's index rows,
        so its ``owners`` rows (read from its references) stay as they are."""
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = self.instant
        resource = {**resource, "meta": meta}
        content = orjson.dumps(resource)
        self._history.append((rid, version, resource["resourceType"], resource["id"], self.now,
                              method, content))
        for table, rows in (index if index is not None else index_rows(resource)).items():
            self._index[table].extend((rid, *row) for row in rows)
        if not same_owners:
            self.owners.written(resource["resourceType"], resource["id"], rid, version)
        self._mine[(resource["resourceType"], resource["id"])] = (rid, version)
        self.patients.update(_patients_of(resource))
        return content

    def amend(self, resource: dict[str, Any]) -> Stored:
        """Replace the content of the version this transaction wrote of ``resource`` (same
        type and id) instead of adding another version: a derivation completing a record
        before it is committed (e.g. a result's interpretation)."""
        key = (resource["resourceType"], resource["id"])
        rid, version = self._mine[key]
        prepared = prepare(resource)
        if any(row[0] == rid for row in self._history):
            self.flush()  # its rows must be in the database for the next flush to replace them
        meta = dict(prepared.resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = self.instant
        content = orjson.dumps({**prepared.resource, "meta": meta})
        self._rewrites.append((content, rid, version))
        self.unindex(rid)
        for table, rows in prepared.index.items():
            self._index[table].extend((rid, *row) for row in rows)
        method = self._amended[key].method if key in self._amended else "PUT"
        stored = Stored(key[0], key[1], version, self.moment, content, method)
        self._amended[key] = stored
        return stored

    def wrote(self, rtype: str, id: str) -> bool:
        """Whether this transaction wrote a version of ``rtype/id``."""
        return (rtype, id) in self._mine

    def current(self, result: WriteResult) -> WriteResult:
        """``result`` with the content a derivation amended before commit, if any."""
        stored = result.stored
        if stored is None or (stored.type, stored.id) not in self._amended:
            return result
        amended = self._amended[(stored.type, stored.id)]
        return WriteResult(result.outcome, replace(stored, content=amended.content))

    def unindex(self, rid: int) -> None:
        """Drop the index rows of a resource's previous version (at the next flush)."""
        self._unindex.append(rid)

    def match(self, type: str, params: list[tuple[str, str]], what: str, *,
              limit: int = 2) -> list[Stored]:
        """Up to ``limit`` resources matching conditional criteria (If-None-Exist, conditional
        update/delete/patch, conditional references). The criteria must be understood in full
        and must select something — a parameter a lenient search would ignore could otherwise
        widen the match to every resource of the type — else 400 naming ``what``."""
        check_type(type)
        try:
            query = parse(type, params, strict=True, backend=self.backend.name)
        except FhirError as err:
            raise FhirError(400, [Issue(i.code, f"{what}: {i.diagnostics}", i.expression)
                                  for i in err.issues]) from None
        if not query.conditions:
            raise FhirError(400, Issue("invalid", f"{what} has no search criteria that select "
                                       f"resources (got {urlencode(params)!r})"))
        return self.search(type, [*params, ("_count", str(limit))]).matches

    def _matches(self, rtype: str, query: str, what: str, limit: int = 2) -> list[Stored]:
        return self.match(rtype, parse_qsl(query, keep_blank_values=True), f"{what} {query!r}",
                          limit=limit)

    # -- writes ----------------------------------------------------------------------------

    def create(self, resource: dict[str, Any] | Prepared, *, if_none_exist: str | None = None,
               id: str | None = None) -> WriteResult:
        prepared = prepare(resource)
        rtype = prepared.resource["resourceType"]
        if if_none_exist:
            found = self._matches(rtype, if_none_exist, "If-None-Exist")
            if len(found) > 1:
                raise precondition_failed(f"If-None-Exist {if_none_exist!r} matches more than one "
                                          f"{rtype}")
            if found:
                return WriteResult("unchanged", found[0])
        return self._write(prepared, id or new_id(), None, "POST", fresh_id=True)

    def update(self, type: str, id: str, resource: dict[str, Any] | Prepared, *,
               if_match: int | None = None, method: str = "PUT",
               previous: dict[str, Any] | None = None) -> WriteResult:
        """``previous``: the stored version this one replaces, as the caller read it; when it
        is still the current version (its ``versionId``) and the two differ only where no
        search parameter reads (``indexer.same_index``), its index rows are kept instead of
        computed and written again."""
        check_type(type)
        check_id(id)
        current = self._current(type, id, lock=True)
        prepared, keep = _prepared_version(resource, type, id, current, previous)
        return self._write(prepared, id, current, method, if_match, keep_index=keep)

    def update_many(self, items: list[tuple[str, str, dict[str, Any] | Prepared,
                                           dict[str, Any] | None]]) -> list[WriteResult]:
        """``update`` (a PUT without If-Match) of each ``(type, id, resource, previous)``, in
        order: the current rows of all are read in one statement, the missing ones created in
        one and the others moved to their next version in one, instead of one or two
        statements each (a programme run's outputs: ~13 a person). With an access guard, or
        a resource named twice, one ``update`` each. A resource may come ``Prepared``
        (``prepare_version``: validated and indexed before the transaction)."""
        keys = [(t, i) for t, i, _, _ in items]
        if self.guard is not None or len(set(keys)) < len(keys):
            return [self.update(t, i, r, previous=p) for t, i, r, p in items]
        for rtype, id in keys:
            check_type(rtype)
            check_id(id)
        self.flush()  # rows this transaction buffered are found like the others
        currents = self._currents(keys)
        prepared = [_prepared_version(r, t, i, currents.get((t, i)), p) for t, i, r, p in items]
        created = self._insert_resources([k for k in keys if k not in currents])
        # the rows are locked (``_currents``; SQLite: the writer's lock), so ``version + 1`` is
        # the next version of each: one statement per 500 rows, not one per row
        moved = [currents[k][0] for k in keys if k in currents]
        for start in range(0, len(moved), 500):
            chunk = moved[start:start + 500]
            self._sql("UPDATE resources SET version = version + 1, last_updated = ?, "
                      f"deleted = ? WHERE rid IN ({', '.join('?' * len(chunk))})",
                      [self.now, False, *chunk])
        results = []
        for key, (ready, keep) in zip(keys, prepared):
            current = currents.get(key)
            if current is None and key not in created:  # a concurrent writer created it first
                results.append(self._write(ready, key[1], self._current(*key, lock=True), "PUT"))
            else:
                results.append(self._write(ready, key[1], current, "PUT", keep_index=keep,
                                           row=current[0] if current else created[key]))
        return results

    def _currents(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str],
                                                            tuple[int, int, bool]]:
        """``_current`` (locked for a write) of each existing resource of ``keys``. Joined
        from the keys, so SQLite looks each up in UNIQUE (type, id) (as ``bulk`` does)."""
        out = {}
        lock = " FOR UPDATE OF r" if self._lock else ""
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ", ".join("(?, ?)" for _ in chunk)
            out.update(((t, i), (rid, version, bool(deleted))) for t, i, rid, version, deleted in
                       self._sql(f"WITH k(type, id) AS (VALUES {marks}) SELECT r.type, r.id, "
                                 "r.rid, r.version, r.deleted FROM k JOIN resources r "
                                 f"ON r.type = k.type AND r.id = k.id{lock}",
                                 [x for key in chunk for x in key]).fetchall())
        return out

    def _insert_resources(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Insert client-id resource rows: the rid of each row inserted (a row a concurrent
        writer inserted first is left as it is, and its key left out)."""
        out: dict[tuple[str, str], int] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = [(self.new_rid(), t, i) for t, i in chunk]
            marks = ", ".join("(?, ?, ?, 1, ?, ?)" for _ in rows)
            out.update(((t, i), rid) for t, i, rid in self._sql(
                f"INSERT INTO resources (rid, type, id, version, last_updated, deleted) VALUES "
                f"{marks} ON CONFLICT (type, id) DO NOTHING RETURNING type, id, rid",
                [x for rid, t, i in rows for x in (rid, t, i, self.now, False)]).fetchall())
        return out

    def conditional_update(self, type: str, query: str, resource: dict[str, Any] | Prepared, *,
                           if_match: int | None = None) -> WriteResult:
        check_type(type)
        found = self._matches(type, query, "The conditional update")
        if len(found) > 1:
            raise precondition_failed(f"conditional update {query!r} matches more than one {type}")
        prepared = prepare(resource, type)
        body_id = prepared.resource.get("id")
        if not found:
            if body_id:
                return self.update(type, body_id, prepared, if_match=if_match)
            return self._write(prepared, new_id(), None, "PUT", fresh_id=True)
        id = found[0].id
        if body_id not in (None, id):
            raise FhirError(400, Issue("invalid", f"the resource's id {body_id!r} differs "
                                       f"from the matching resource {type}/{id}", "id"))
        return self._write(prepared, id, self._current(type, id, lock=True), "PUT", if_match)

    def patch(self, type: str, id: str, operations: list[dict[str, Any]], *,
              if_match: int | None = None) -> WriteResult:
        current = self.read(type, id)
        if not isinstance(operations, list):
            raise FhirError(400, Issue("structure", "a JSON Patch is a JSON array of operations"))
        try:
            patched = jsonpatch.JsonPatch(operations).apply(current.resource)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
                KeyError, ValueError) as exc:
            raise FhirError(422, Issue("processing", f"the JSON Patch cannot be applied: {exc}"))
        if not isinstance(patched, dict) or patched.get("resourceType") != type \
                or patched.get("id") != id:
            raise FhirError(422, Issue("processing", "a patch may not change resourceType or id"))
        return self.update(type, id, patched, if_match=if_match, method="PATCH")

    def delete(self, type: str, id: str, *, if_match: int | None = None) -> WriteResult:
        check_type(type)
        check_id(id)
        current = self._current(type, id, lock=True)
        if current is not None and not self._sees(type, current[0], "d"):
            current = None  # as if absent: hidden rows stay hidden
        if if_match is not None and (current is None or current[1] != if_match):
            have = "does not exist" if current is None else f"is at version {current[1]}"
            raise precondition_failed(f"If-Match expects version {if_match} of {type}/{id}, "
                                      f"but it {have}")
        if current is None or current[2]:
            return WriteResult("unchanged", None)
        self.owners.deleted(type, id)
        rid, version = current[0], current[1] + 1
        self._sql("UPDATE resources SET version = ?, last_updated = ?, deleted = ? WHERE rid = ?",
                  (version, self.now, True, rid))
        self.unindex(rid)
        self._history.append((rid, version, type, id, self.now, "DELETE", None))
        return WriteResult("deleted", Stored(type, id, version, self.moment, None, "DELETE"))

    def conditional_delete(self, type: str, query: str, *, multiple: bool = False) -> list[WriteResult]:
        found = self._matches(type, query, "The conditional delete", limit=1000 if multiple else 2)
        if len(found) > 1 and not multiple:
            raise precondition_failed(f"conditional delete {query!r} matches more than one {type}")
        return [self.delete(type, s.id) for s in found]

    # -- reads -----------------------------------------------------------------------------

    def _limit(self, rtype: str, action: str) -> tuple[str, list[Any]]:
        """`` AND <condition on r>`` limiting reads of ``rtype`` to what the caller may see."""
        if self.guard is None:
            return "", []
        return self.guard.limit(rtype, action, self.backend.name)

    def read(self, type: str, id: str) -> Stored:
        check_type(type)
        check_id(id)
        self.flush()
        limit, limit_args = self._limit(type, "r")
        row = self._sql("SELECT r.version, r.last_updated, h.content, h.method FROM resources r "
                        "JOIN history h ON h.rid = r.rid AND h.version = r.version "
                        f"WHERE r.type = ? AND r.id = ?{limit}", [type, id, *limit_args]).fetchone()
        if row is None:
            raise not_found(f"{type}/{id} is not known")
        if row[2] is None:
            raise gone(f"{type}/{id} was deleted (version {row[0]})")
        return Stored(type, id, row[0], from_us(row[1]), bytes(row[2]), row[3])

    def lock(self, rtype: str, ids: list[str]) -> None:
        """Hold the rows of ``ids`` until this transaction ends (PostgreSQL ``FOR NO KEY
        UPDATE``, in row order so two lockers never deadlock; SQLite's single writer holds
        everything): a derivation reading a person's records then sees every earlier
        writer's commit. Not ``FOR UPDATE``: writers of the person's records hold the row
        ``FOR KEY SHARE`` (``access.owned_patients_lock_sql``) and need not wait for it."""
        if not ids or not self._lock:
            return
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            self._sql(f"SELECT rid FROM resources WHERE type = ? AND id IN "
                      f"({', '.join('?' * len(chunk))}) ORDER BY rid FOR NO KEY UPDATE",
                      [rtype, *chunk]).fetchall()

    def patient_ids(self, since: datetime | None = None) -> list[str]:
        """Ids of the live Patients; with ``since``, only those with a record in their
        compartment written at or after it (deletions included)."""
        if since is None:
            rows = self._sql("SELECT id FROM resources WHERE type = 'Patient' AND NOT deleted "
                             "ORDER BY id").fetchall()
        else:
            rows = self._sql("SELECT DISTINCT o.patient FROM owners o JOIN resources r "
                             "ON r.rid = o.rid WHERE r.last_updated >= ? ORDER BY o.patient",
                             [instant_us(since)]).fetchall()
        return [r[0] for r in rows]

    def compartments(self, patients: list[str], types: list[str]) -> dict[str, list[bytes]]:
        """The current JSON of every ``types`` resource in the compartments of ``patients``
        (ids), grouped by patient, in one statement per type over the ``owners`` rows; only
        what the caller may read.

        On PostgreSQL each person's rows are read in a LATERAL subquery of that person, so
        they are probed by key: over an ``IN`` list of 500 people of a 20,000-person store it
        hash-joined a scan of every ``resources`` row (157 against 36 ms; ``fingerprints`` in
        ``programs/batch.py`` met the same)."""
        self.flush()
        out: dict[str, list[bytes]] = {p: [] for p in patients}
        if not patients:
            return out
        for rtype in types:
            check_type(rtype)
        # unrestricted: one statement for every type; else one per type, each with its rule
        groups = [types] if self.guard is None else [[t] for t in types]
        for group in groups:
            limit, limit_args = self._limit(group[0], "r") if len(group) == 1 else ("", [])
            joined = ("FROM owners o JOIN resources r ON r.rid = o.rid JOIN history h "
                      "ON h.rid = r.rid AND h.version = r.version")
            where = f"o.type IN ({', '.join('?' * len(group))}) AND NOT r.deleted{limit}"
            if self.backend.name == "postgres":
                sql = (f"SELECT k.patient, x.content FROM (VALUES "
                       f"{', '.join(['(?)'] * len(patients))}) k(patient) CROSS JOIN LATERAL "
                       f"(SELECT h.content {joined} WHERE o.patient = k.patient AND {where}) x")
            else:
                sql = (f"SELECT o.patient, h.content {joined} WHERE o.patient IN "
                       f"({', '.join('?' * len(patients))}) AND {where}")
            for patient, content in self._sql(sql, [*patients, *group, *limit_args]).fetchall():
                out[patient].append(bytes(content))
        return out

    def vread(self, type: str, id: str, version: int) -> Stored:
        check_type(type)
        check_id(id)
        self.flush()
        limit, limit_args = self._limit(type, "r")
        row = self._sql("SELECT h.last_updated, h.content, h.method FROM resources r "
                        "JOIN history h ON h.rid = r.rid WHERE r.type = ? AND r.id = ? "
                        f"AND h.version = ?{limit}", [type, id, version, *limit_args]).fetchone()
        if row is None:
            raise not_found(f"{type}/{id} has no version {version}")
        if row[1] is None:
            raise gone(f"version {version} of {type}/{id} is its deletion")
        return Stored(type, id, version, from_us(row[0]), bytes(row[1]), row[2])

    def search(self, type: str | None, params: list[tuple[str, str]], *,
               compartment: tuple[str, str] | None = None, strict: bool = False) -> SearchResult:
        if type is not None:
            check_type(type)
        self.flush()
        return search_exec.search(self, type, params, compartment=compartment, strict=strict)

    def compartment_visible(self, ctype: str, cid: str) -> bool:
        """Whether the caller may see the compartment's own resource (a hidden Patient's
        compartment searches as if empty). An unknown one hides nothing."""
        current = self._current(ctype, cid) if self.guard is not None else None
        return current is None or self._sees(ctype, current[0], "r")

    def history(self, type: str | None = None, id: str | None = None, *,
                since: datetime | None = None, count: int = 50,
                cursor: str | None = None) -> HistoryPage:
        self.flush()
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        total = None
        if type is not None:
            check_type(type)
            where.append("h.type = ?")
            args.append(type)
        if id is not None and type is not None:
            if self.guard is not None:  # a denied type is 403 for every id, known or not
                self.guard.require(type, "r")
            current = self._current(type, id)
            if current is None or not self._sees(type, current[0], "r"):
                raise not_found(f"{type}/{id} is not known")
            where.append("h.rid = ?")
            args.append(current[0])
        elif self.guard is not None:  # a type's or the system's history: visible rows only
            if type is not None:
                self.guard.require(type, "s")
            cond = self.guard.any_condition([type] if type else None, "s", "g",
                                            Ctx(self.backend.name))
            if cond is not None:
                where.append(f"EXISTS (SELECT 1 FROM resources g WHERE g.rid = h.rid AND {cond[0]})")
                args += cond[1]
        if since is not None:
            where.append("h.last_updated >= ?")
            args.append(instant_us(since))
        if id is not None:
            total = self._sql(f"SELECT COUNT(*) FROM history h WHERE {' AND '.join(where)}",
                              args).fetchone()[0]
        if cursor:
            try:
                lu, rid, version = (int(x) for x in cursor.split("."))
            except ValueError:
                raise FhirError(400, Issue("invalid", "this history paging link is not valid"))
            where.append("(h.last_updated < ? OR (h.last_updated = ? AND (h.rid < ? OR "
                         "(h.rid = ? AND h.version < ?))))")
            args += [lu, lu, rid, rid, version]
        rows = self._sql("SELECT h.rid, h.type, h.id, h.version, h.last_updated, h.content, h.method "
                         f"FROM history h WHERE {' AND '.join(where)} "
                         "ORDER BY h.last_updated DESC, h.rid DESC, h.version DESC LIMIT ?",
                         [*args, count + 1]).fetchall()
        next_cursor = None
        if len(rows) > count:
            rows = rows[:count]
            if rows:
                last = rows[-1]
                next_cursor = f"{last[4]}.{last[0]}.{last[3]}"
        versions = [Stored(t, i, v, from_us(lu), bytes(c) if c is not None else None, m)
                    for _, t, i, v, lu, c, m in rows]
        return HistoryPage(versions, total, next_cursor)

    def everything(self, patient_id: str, *, since: datetime | None = None,
                   types: list[str] | None = None, count: int = 100,
                   cursor: str | None = None) -> SearchResult:
        self.read("Patient", patient_id)  # 404/410 for an unknown or deleted patient
        return search_exec.everything(self, patient_id, since=since, types=types, count=count,
                                      cursor=cursor)


class Store(Operations):
    """A FHIR record store over one database; each operation is its own transaction."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        try:
            backend.migrate()
        except BaseException:
            backend.close()
            raise

    #: called with each writing transaction that wrote a patient's records, before it commits
    #: (the programmes engine: its outputs are committed with the records they derive from)
    derive: Callable[[Tx], Any] | None = None

    @contextmanager
    def transaction(self, access: Access | None = None, *, derive: bool = True) -> Iterator[Tx]:
        """One database transaction: all of it is written, or none of it. ``access`` limits
        what it reads and writes (default: the request's, ``access.CURRENT``); ``derive``:
        run :attr:`derive` before the commit (bulk loads do not: they run it in batch)."""
        with self.backend.transaction(write=True) as conn:
            tx = Tx(self.backend, conn, access or CURRENT.get())
            yield tx
            if derive and self.derive is not None and tx.patients:
                tx.derived = self.derive(tx)
            tx.finish()
            tx.before_commit()

    @contextmanager
    def _reading(self) -> Iterator[Tx]:
        with self.backend.transaction(write=False) as conn:
            yield Tx(self.backend, conn, CURRENT.get())

    def reading(self) -> Any:
        """A read-only transaction (one snapshot) under the request's access."""
        return self._reading()

    def close(self) -> None:
        self.backend.close()

    # Writes prepare (validate, normalise, index) before the transaction takes its locks.

    def prepare(self, resource: Any, rtype: str | None = None) -> Prepared:
        return prepare(resource, rtype)

    def create(self, resource: dict[str, Any] | Prepared, *, if_none_exist: str | None = None,
               id: str | None = None) -> WriteResult:
        prepared = prepare(resource)
        with self.transaction() as tx:
            result = tx.create(prepared, if_none_exist=if_none_exist, id=id)
        return tx.current(result)

    def update(self, type: str, id: str, resource: dict[str, Any] | Prepared, *,
               if_match: int | None = None, method: str = "PUT") -> WriteResult:
        prepared = prepare(resource, type)
        with self.transaction() as tx:
            result = tx.update(type, id, prepared, if_match=if_match, method=method)
        return tx.current(result)

    def conditional_update(self, type: str, query: str, resource: dict[str, Any] | Prepared, *,
                           if_match: int | None = None) -> WriteResult:
        prepared = prepare(resource, type)
        with self.transaction() as tx:
            result = tx.conditional_update(type, query, prepared, if_match=if_match)
        return tx.current(result)

    def patch(self, type: str, id: str, operations: list[dict[str, Any]], *,
              if_match: int | None = None) -> WriteResult:
        with self.transaction() as tx:
            result = tx.patch(type, id, operations, if_match=if_match)
        return tx.current(result)

    def delete(self, type: str, id: str, *, if_match: int | None = None) -> WriteResult:
        with self.transaction() as tx:
            return tx.delete(type, id, if_match=if_match)

    def match(self, type: str, params: list[tuple[str, str]], what: str, *,
              limit: int = 2) -> list[Stored]:
        with self._reading() as tx:
            return tx.match(type, params, what, limit=limit)

    def conditional_delete(self, type: str, query: str, *, multiple: bool = False) -> list[WriteResult]:
        with self.transaction() as tx:
            return tx.conditional_delete(type, query, multiple=multiple)

    def read(self, type: str, id: str) -> Stored:
        with self._reading() as tx:
            return tx.read(type, id)

    def vread(self, type: str, id: str, version: int) -> Stored:
        with self._reading() as tx:
            return tx.vread(type, id, version)

    def search(self, type: str | None, params: list[tuple[str, str]], *,
               compartment: tuple[str, str] | None = None, strict: bool = False) -> SearchResult:
        with self._reading() as tx:
            return tx.search(type, params, compartment=compartment, strict=strict)

    def history(self, type: str | None = None, id: str | None = None, *,
                since: datetime | None = None, count: int = 50,
                cursor: str | None = None) -> HistoryPage:
        with self._reading() as tx:
            return tx.history(type, id, since=since, count=count, cursor=cursor)

    def everything(self, patient_id: str, *, since: datetime | None = None,
                   types: list[str] | None = None, count: int = 100,
                   cursor: str | None = None) -> SearchResult:
        with self._reading() as tx:
            return tx.everything(patient_id, since=since, types=types, count=count, cursor=cursor)
