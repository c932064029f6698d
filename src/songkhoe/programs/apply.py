"""Storing what the programmes engine derives, in the transaction of the records it reads.

``settle(tx, programmes, patient_ids)`` loads the people's records in one statement per
type, evaluates them (``engine.evaluate``) and writes only the differences:

- an Observation whose interpretation changes: its programme codings are replaced, other
  interpretations kept. A result written by the same transaction is completed in place
  (``Tx.amend``), so a check-up answers with its classifications in version 1;
- outputs (RiskAssessment, Flag, ServiceRequest, EpisodeOfCare, CarePlan) that are new or
  whose content differs are written under their derived ids;
- this engine's RiskAssessments, Flags and CarePlans that are no longer derived (their results
  were corrected or entered in error) become ``entered-in-error``; referrals and episodes of
  care are left to the staff who act on them.

The differences (``versions_of``) are written together (``Tx.update_many``); each new version
of a stored one is validated only where it differs from it (``engine.prepare_version``).
The same differences are written by the online path (``Online``, wired as ``Store.derive``)
and by the batch run (``programs.batch``, ``songkhoe programmes run``), so both store the
same outputs; a second run writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from songkhoe.fhir.outcome import FhirError, Issue
from songkhoe.programs.definition import Programme
from songkhoe.programs.engine import (INPUT_TYPES, OUTPUT_TYPES, TAG, Facts, ProgrammeStatus,
                                      Result, Unusable, evaluate, item_value, items_due)
from songkhoe.store.api import Prepared
from songkhoe.store.engine import Tx, prepare, prepare_version

_OURS = "urn:songkhoe:programme:"
_RETRACTABLE = {"RiskAssessment": "entered-in-error", "Flag": "entered-in-error",
                "CarePlan": "entered-in-error"}


@dataclass
class Settled:
    """What one settle wrote, and each person's programme status."""

    written: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, dict[str, ProgrammeStatus]] = field(default_factory=dict)


#: every type of a person's records the programmes read or write
READ_TYPES = ("Patient", *INPUT_TYPES, *OUTPUT_TYPES)


def load_facts(tx: Tx, patient_ids: list[str],
               types: tuple[str, ...] = READ_TYPES) -> dict[str, Facts]:
    """Each person's records of ``types``, read in one statement."""
    groups = tx.compartments(patient_ids, list(types))
    people: dict[str, Facts] = {}
    for pid, contents in groups.items():
        facts = facts_of(pid, contents)
        if facts is not None:
            people[pid] = facts
    return people


def facts_of(pid: str, contents: list[bytes]) -> Facts | None:
    """A person's records from their stored JSON (``Tx.compartments``); None without their
    Patient (not visible to this caller, or not written yet)."""
    facts = Facts({})
    lists = {"Observation": facts.observations, "Condition": facts.conditions,
             "MedicationStatement": facts.medications, "Task": facts.tasks,
             **{t: facts.outputs for t in OUTPUT_TYPES}}
    patient = None
    for c in contents:
        r = orjson.loads(c)
        kind = r["resourceType"]
        if kind == "Patient":
            if r["id"] == pid:
                patient = r
        elif kind in lists:
            lists[kind].append(r)
    if patient is None:
        return None
    facts.patient = patient
    return facts


def settle(tx: Tx, programmes: dict[str, Programme], patient_ids: list[str], *,
           strict: bool = False) -> Settled:
    """``strict``: refuse (422) a result written by this transaction that a programme cannot
    use — a unit not accepted, a value outside the plausible range (the online path)."""
    settled = Settled()
    tx.lock("Patient", patient_ids)  # concurrent writers for a person settle one after another
    people = load_facts(tx, patient_ids)
    if strict:
        for facts in people.values():
            refuse_unusable(tx, programmes, facts)
    write_results(tx, [(facts, evaluate(programmes, facts)) for facts in people.values()],
                  settled)
    store_status(tx, patient_ids, people, settled.status)
    return settled


#: a new version to write: (type, id, resource, the stored version it replaces or None)
Version = tuple[str, str, dict[str, Any] | Prepared, dict[str, Any] | None]


def write_results(tx: Tx, people: list[tuple[Facts, Result]], settled: Settled) -> None:
    """Write where each person's ``Result`` differs from their records ``Facts`` (read with
    every type of ``READ_TYPES``), their new versions together. A result this transaction
    wrote is completed in place (``Tx.amend``), so that a check-up answers with its
    classifications in version 1."""
    versions: list[Version] = []
    for facts, result in people:
        settled.status[facts.patient["id"]] = result.status
        for version in versions_of(facts, result):
            rtype, id, resource, _ = version
            if rtype == "Observation" and tx.wrote(rtype, id):
                tx.amend(resource)
                settled.written.append(resource)
            else:
                versions.append(version)
    write_versions(tx, versions, settled)


def write_versions(tx: Tx, versions: list[Version], settled: Settled) -> None:
    """Write ``versions`` (``versions_of``, or ``prepared_versions``) together
    (``Tx.update_many``: a few statements for all instead of one or two each)."""
    tx.update_many(versions)
    settled.written.extend(r.resource if isinstance(r, Prepared) else r
                           for _, _, r, _ in versions)


def prepared_versions(facts: Facts, result: Result) -> list[Version]:
    """``versions_of``, validated and indexed (``prepare_version``, ``prepare``) outside the
    transaction that writes them: the batch does this work before it takes the write lock."""
    return [(rtype, id, prepare_version(resource, rtype, previous) if previous is not None
             else prepare(resource, rtype), previous)
            for rtype, id, resource, previous in versions_of(facts, result)]


def versions_of(facts: Facts, result: Result) -> list[Version]:
    """The new versions ``result`` needs over the person's records ``facts``: Observations
    whose programme interpretations change, outputs that are new or differ, and this
    engine's RiskAssessments, Flags and CarePlans no longer derived (retracted)."""
    versions: list[Version] = []
    for obs in facts.observations:
        interpreted = _interpreted(obs, result.interpretations.get(obs["id"], []))
        if interpreted is not None:
            versions.append(("Observation", obs["id"], interpreted, obs))
    existing = {(r["resourceType"], r["id"]): r for r in facts.outputs}
    for key, wanted in result.resources.items():
        have = existing.get(key)
        if have is None or _content(have) != _content(wanted):
            versions.append((*key, wanted, have))
    for key, have in existing.items():
        if key in result.resources or key[0] not in _RETRACTABLE or \
                TAG not in (have.get("meta") or {}).get("tag", []) or \
                have.get("status") == _RETRACTABLE[key[0]]:
            continue
        versions.append((*key, {**_content(have), "status": _RETRACTABLE[key[0]]}, have))
    return versions


_STATUS_COLUMNS = ("patient", "programme", "org", "kind", "eligible_from", "eligible_until",
                   "enrolled", "last_visit", "next_due", "referral_due", "call_outcome",
                   "call_day", "call_again")


def store_status(tx: Tx, patient_ids: list[str], people: dict[str, Facts],
                 status: dict[str, dict[str, ProgrammeStatus]]) -> None:
    """Replace the ``programme_status`` rows of ``patient_ids`` (a person no longer visible
    or deleted keeps no row)."""
    for start in range(0, len(patient_ids), 500):
        chunk = patient_ids[start:start + 500]
        tx.execute(f"DELETE FROM programme_status WHERE patient IN "
                   f"({', '.join('?' * len(chunk))})", chunk)
    rows = [(pid, s.programme, org_of(people[pid].patient), s.kind,
             *(_iso(getattr(s, c)) for c in _STATUS_COLUMNS[4:]))
            for pid, by_programme in status.items() for s in by_programme.values()]
    if rows:
        tx.insert_rows("programme_status", _STATUS_COLUMNS, rows)


def org_of(patient: dict[str, Any]) -> str | None:
    """The id of the Patient's managing Organization (``programme_status.org``)."""
    ref = str((patient.get("managingOrganization") or {}).get("reference", ""))
    return ref[len("Organization/"):] if ref.startswith("Organization/") else None


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def status_of(tx: Tx, programmes: dict[str, Programme], patient: str,
              day: date) -> tuple[dict[str, ProgrammeStatus], dict[str, list[str]]]:
    """One person's status in each programme and the items to measure on ``day``, evaluated
    from their records (nothing written)."""
    facts = load_facts(tx, [patient]).get(patient)
    if facts is None:
        return {}, {}
    return evaluate(programmes, facts).status, items_due(programmes, facts, day)


def refuse_unusable(tx: Tx, programmes: dict[str, Programme], facts: Facts) -> None:
    """422 with the element at fault for a result this transaction wrote that is unusable."""
    for obs in facts.observations:
        if not tx.wrote("Observation", obs["id"]):
            continue
        for p in programmes.values():
            for item in p.items:
                try:
                    item_value(item, obs)
                except Unusable as exc:
                    raise FhirError(422, Issue("value", f"Observation/{obs['id']}: {exc}",
                                               exc.path)) from None


def _interpreted(obs: dict[str, Any], ours: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``obs`` with the programmes' interpretations ``ours``, the others kept; None when it
    has them already."""
    others = [c for c in obs.get("interpretation", [])
              if not any(str(coding.get("system", "")).startswith(_OURS)
                         for coding in c.get("coding", []))]
    wanted = others + ours
    if wanted == obs.get("interpretation", []):
        return None
    amended = _content(obs)
    if wanted:
        amended["interpretation"] = wanted
    else:
        amended.pop("interpretation", None)
    return amended


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource without the meta the store sets (version, time)."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out


class Online:
    """``Store.derive``: settles the people a transaction wrote records of, before it commits.

    It runs with the system's authority, not the caller's: a health worker allowed to record
    a result for a person gets its derived referral even if their token's scopes do not name
    ServiceRequest. Only the people whose records the caller was allowed to write are touched,
    and what the caller gets back is their own records completed (interpretations)."""

    def __init__(self, programmes: dict[str, Programme]) -> None:
        self.programmes = programmes

    def __call__(self, tx: Tx) -> Settled:
        tx.finish()  # the caller's writes are checked against the caller's access first
        guard, tx.guard = tx.guard, None
        try:
            return settle(tx, self.programmes, sorted(tx.patients), strict=True)
        finally:
            tx.guard = guard
