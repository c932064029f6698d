"""Recomputing the programmes' outputs for many people (``songkhoe programmes run``).

The outputs are exactly those of the per-person engine (``engine.evaluate``), the one the
online path runs, stored by the same differences (``apply.write_results``). The batch does
less work per person and holds the write lock only to write:

- **People with nothing new are skipped.** ``programme_settled`` (schema v8) keeps, per
  person, the state of the records the programmes read right after the last run wrote
  (``inputs``: how many, the sums of their row ids and versions, the latest write — any
  write, deletion or move of a record changes it), the digest of the definitions and engine
  revision it ran, and the digest of what it derived. When the records and the definitions
  are unchanged, the person is not read at all (``full`` evaluates everyone anyway).
- **Outputs are compared by digest.** A person whose records are unchanged is evaluated
  without reading their stored RiskAssessments, Flags and CarePlans: when the digest of what
  the engine derives now is the stored one, what is stored is what would be written.
- **Reading, evaluating and preparing happen outside the write transaction.** A block of
  people is read in one snapshot and evaluated, and the new versions of those read with
  their outputs are validated and indexed (``apply.prepared_versions``); then one short
  write transaction checks that nobody wrote their records since (a person who changed is
  settled again inside it, as the online path does) and writes only the differences, all
  in a few statements (``Tx.update_many``), so worker processes sharing a SQLite database
  do not wait for each other's evaluation or validation.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from songkhoe.programs.apply import (
    READ_TYPES,
    Settled,
    Version,
    facts_of,
    load_facts,
    org_of,
    prepared_versions,
    store_status,
    write_results,
    write_versions,
)
from songkhoe.programs.definition import Programme
from songkhoe.programs.engine import INPUT_TYPES, REVISION, Facts, Result, evaluate
from songkhoe.store.backends import open_backend
from songkhoe.store.engine import Tx

#: what the engine reads of a person whose stored outputs it need not compare one by one:
#: episodes of care and referrals are kept as they are stored, so they are inputs too
_INPUTS = ("Patient", *INPUT_TYPES, "EpisodeOfCare", "ServiceRequest")
_SETTLED = ("patient", "inputs", "definitions", "outputs")
_TYPES = ", ".join(f"'{t}'" for t in READ_TYPES)


@dataclass
class Ran:
    """What a batch run did: people given, people evaluated, resources written by type, and
    the CPU time it took in this process (seconds)."""

    people: int = 0
    evaluated: int = 0
    written: Counter[str] = field(default_factory=Counter)
    cpu: float = 0.0

    def add(self, other: Ran) -> None:
        self.people += other.people
        self.evaluated += other.evaluated
        self.written.update(other.written)
        self.cpu += other.cpu


def run_batch(store: Any, programmes: dict[str, Programme], patient_ids: list[str], *,
              chunk: int = 500, full: bool = False) -> Ran:
    """Bring the outputs of ``patient_ids`` up to date, ``chunk`` people at a time (no derive
    hook); ``full``: evaluate people even when nothing changed since their last run."""
    ran = Ran()
    started = time.process_time()
    definitions = definitions_digest(programmes)
    with _few_collections():
        for start in range(0, len(patient_ids), chunk):
            ran.add(_block(store, programmes, definitions, patient_ids[start:start + chunk],
                           full))
    ran.cpu = time.process_time() - started
    return ran


#: a run that wrote at least this many resources leaves the tables whose rows it replaces
#: vacuumed (``tidy``)
VACUUM_AFTER = 10_000
_REPLACED = ("resources", "owners", "programme_status", "programme_settled")


def tidy(url: str, ran: Ran, *, at_least: int = VACUUM_AFTER) -> bool:
    """After a run on the store at ``url`` that wrote ``at_least`` resources: the tables
    whose rows it replaced (current-version rows, owner rows, status and settled rows)
    vacuumed and analyzed on PostgreSQL (``Backend.vacuum``), so that the next run does not
    pay for the old versions until autovacuum comes by — by default up to a minute later,
    and never where it is off. The search-index and history tables are only added to by
    such runs. Whether it ran."""
    if sum(ran.written.values()) < at_least:
        return False
    backend = open_backend(url)
    try:
        backend.vacuum(_REPLACED)
    finally:
        backend.close()
    return True


def definitions_digest(programmes: dict[str, Programme]) -> str:
    """The digest of the definitions and of the engine revision that evaluates them."""
    text = "\n".join([f"engine {REVISION}", *(f"{p.id} {p.digest}" for p in
                                              sorted(programmes.values(), key=lambda p: p.id))])
    return hashlib.sha256(text.encode()).hexdigest()


def outputs_digest(facts: Facts, result: Result) -> str:
    """The digest of everything ``apply.write_results`` and ``store_status`` would store for
    ``result``: outputs, interpretations and status rows (with the Patient's Organization)."""
    # the engine builds equal outputs in the same order, so the keys need no sorting: at
    # worst an equal output written in another order is compared in full. Referrals and
    # episodes of care already stored are kept as stored: without the version and time the
    # store set, they digest as when the engine built them (else everyone with one would be
    # compared in full on the run after the one that wrote it)
    body = orjson.dumps([org_of(facts.patient),
                         [(k, _unversioned(r)) for k, r in sorted(result.resources.items())],
                         result.interpretations, result.status])
    return hashlib.sha256(body).hexdigest()


def _unversioned(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` without ``meta.versionId`` and ``meta.lastUpdated``, its keys in order."""
    meta = resource.get("meta")
    if not meta or ("versionId" not in meta and "lastUpdated" not in meta):
        return resource
    kept = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    if kept:
        return {**resource, "meta": kept}
    return {k: v for k, v in resource.items() if k != "meta"}


def fingerprints(tx: Tx, patient_ids: list[str]) -> dict[str, str]:
    """The state of each person's records of ``READ_TYPES`` (deleted ones too): how many,
    the sums of their row ids and versions, and the latest write."""
    out: dict[str, str] = {}
    aggregate = "COUNT(*), SUM(r.rid), SUM(r.version), MAX(r.last_updated)"
    for start in range(0, len(patient_ids), 500):
        chunk = patient_ids[start:start + 500]
        out.update((pid, f"{n}:{rids}:{versions}:{latest}") for pid, n, rids, versions, latest
                   in tx.execute(_per_person(tx, aggregate, len(chunk)), chunk).fetchall()
                   if n)
    return out


def _per_person(tx: Tx, aggregate: str, count: int) -> str:
    """A statement of ``aggregate`` over the rows of each of ``count`` people's records of
    ``READ_TYPES``, one row per person with records. PostgreSQL gets one aggregate per person
    (``LATERAL``): given the people as an ``IN`` list it joined every ``resources`` row by
    hash (100–330 ms for 500 people of 20,000, 39 ms this way)."""
    if tx.backend.name == "postgres":
        return (f"SELECT k.patient, f.* FROM (VALUES {', '.join(['(?)'] * count)}) k(patient) "
                f"CROSS JOIN LATERAL (SELECT {aggregate} FROM owners o JOIN resources r "
                f"ON r.rid = o.rid WHERE o.patient = k.patient AND o.type IN ({_TYPES})) f")
    return (f"SELECT o.patient, {aggregate} FROM owners o JOIN resources r ON r.rid = o.rid "
            f"WHERE o.patient IN ({', '.join('?' * count)}) AND o.type IN ({_TYPES}) "
            "GROUP BY o.patient")


def _block(store: Any, programmes: dict[str, Programme], definitions: str,
           patient_ids: list[str], full: bool) -> Ran:
    with store.reading() as tx:
        before = _settled(tx, patient_ids)
        state = fingerprints(tx, patient_ids)
        todo = [p for p in patient_ids if full or p not in before
                or before[p][:2] != (state.get(p), definitions)]
        # records as the last run left them: its outputs are stored as it derived them
        kept = {p for p in todo if p in before and before[p][0] == state.get(p)}
        stored = tx.compartments([p for p in todo if p in kept], list(_INPUTS))
        stored.update(tx.compartments([p for p in todo if p not in kept], list(READ_TYPES)))
    ran = Ran(people=len(patient_ids))
    # each person is parsed, evaluated and compared in turn, and only what is to be written
    # is kept: the memory of one person is reused for the next (a block's records and
    # outputs held at once cost a page fault every few objects, ~20% of the time)
    facts: dict[str, Facts] = {}
    results: dict[str, Result] = {}
    digests: dict[str, str] = {}
    same: set[str] = set()
    ready: dict[str, list[Version]] = {}  # new versions, validated and indexed already
    for p, contents in stored.items():
        f = facts_of(p, contents)
        if f is None:
            continue
        result = evaluate(programmes, f)
        digests[p] = digest = outputs_digest(f, result)
        ran.evaluated += 1
        if p in kept and digest == before[p][2]:
            same.add(p)
        else:
            facts[p], results[p] = f, result
            if p not in kept:  # read with their outputs: what to write is known now
                ready[p] = prepared_versions(f, result)
    del stored
    if all(p in same and before[p][1] == definitions for p in todo):
        return ran  # nothing to write
    with store.transaction(derive=False) as tx:
        tx.lock("Patient", todo)  # as the online path does: its writers wait for this one
        now = fingerprints(tx, todo)
        moved = [p for p in todo if now.get(p) != state.get(p)]  # written since they were read
        for p in moved:  # settled again from what is stored now
            same.discard(p)
            facts.pop(p, None)
            ready.pop(p, None)
        changed = [p for p in todo if p not in same]
        # the stored outputs of the people read without them, to write the differences
        facts.update(load_facts(tx, [p for p in changed if p in kept and p in facts]))
        for p, f in load_facts(tx, moved).items():
            facts[p], results[p] = f, evaluate(programmes, f)
            digests[p] = outputs_digest(f, results[p])
        settled = Settled()
        write_results(tx, [(facts[p], results[p]) for p in changed
                           if p in facts and p not in ready], settled)
        settled.status.update((p, results[p].status) for p in changed if p in ready)
        write_versions(tx, [v for p in changed if p in ready for v in ready[p]], settled)
        store_status(tx, changed, {p: facts[p] for p in changed if p in facts},
                     settled.status)
        after = fingerprints(tx, [p for p in changed if p in facts])
        foreign = _foreign(tx, list(after), now)
        rows = [(p, after[p], definitions, digests[p]) for p in after if p not in foreign]
        _replace_settled(tx, changed, rows)
        _rename_settled(tx, [p for p in same if before[p][1] != definitions], definitions)
    ran.written.update(r["resourceType"] for r in settled.written)
    return ran


def _settled(tx: Tx, patient_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    out: dict[str, tuple[str, str, str]] = {}
    for start in range(0, len(patient_ids), 500):
        chunk = patient_ids[start:start + 500]
        out.update((p, (i, d, o)) for p, i, d, o in tx.execute(
            f"SELECT {', '.join(_SETTLED)} FROM programme_settled WHERE patient IN "
            f"({', '.join('?' * len(chunk))})", chunk).fetchall())
    return out


def _foreign(tx: Tx, patient_ids: list[str], read: dict[str, str]) -> set[str]:
    """PostgreSQL: the people whose records another transaction committed after ``read``
    was taken in this one (a writer that does not lock the Patient, such as a bulk load),
    so that this run does not record as evaluated what it did not read. Their records are
    counted without this transaction's writes — the versions it created (version 1) left
    out, those it updated one version back — and compared with ``read``. (SQLite: no other
    writer commits while this transaction holds the write lock.)"""
    if tx.backend.name != "postgres":
        return set()
    mine = "r.xmin = pg_current_xact_id()::xid"
    created = f"{mine} AND r.version = 1"
    aggregate = (f"COUNT(*) - SUM(CASE WHEN {created} THEN 1 ELSE 0 END), "
                 f"SUM(r.rid) - SUM(CASE WHEN {created} THEN r.rid ELSE 0 END), "
                 f"SUM(r.version) - SUM(CASE WHEN {mine} THEN 1 ELSE 0 END)")
    out: set[str] = set()
    for start in range(0, len(patient_ids), 500):
        chunk = patient_ids[start:start + 500]
        rows = tx.execute(_per_person(tx, aggregate, len(chunk)), chunk).fetchall()
        out.update(p for p, n, rids, versions in rows
                   if f"{n}:{rids}:{versions}" != read.get(p, "").rpartition(":")[0])
    return out


def _replace_settled(tx: Tx, patient_ids: list[str],
                     rows: list[tuple[str, str, str, str]]) -> None:
    for start in range(0, len(patient_ids), 500):
        chunk = patient_ids[start:start + 500]
        tx.execute(f"DELETE FROM programme_settled WHERE patient IN "
                   f"({', '.join('?' * len(chunk))})", chunk)
    if rows:
        tx.insert_rows("programme_settled", _SETTLED, rows)


def _rename_settled(tx: Tx, patient_ids: list[str], definitions: str) -> None:
    """The settled rows of people whose records and outputs are as they were, marked as
    derived by ``definitions``: one ``UPDATE`` instead of a row deleted and inserted each."""
    for start in range(0, len(patient_ids), 500):
        chunk = patient_ids[start:start + 500]
        tx.execute(f"UPDATE programme_settled SET definitions = ? WHERE patient IN "
                   f"({', '.join('?' * len(chunk))})", [definitions, *chunk])


@contextmanager
def _few_collections() -> Iterator[None]:
    """The cyclic garbage collector stays off during a run: a block of people is hundreds of
    thousands of fresh objects, none of them in a cycle (reading and evaluating make none),
    and each automatic collection would walk them all — about 15% of the run's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
