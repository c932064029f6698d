"""The programmes in the store, on both backends: the online path (records written with
``Store.derive``) and the batch run store the same outputs for a synthetic population; a
second batch run writes nothing; worklists and the app API over real records."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from songkhoe.programs.apply import Online
from songkhoe.programs.batch import run_batch
from songkhoe.programs.cli import definitions
from songkhoe.programs.engine import OUTPUT_TYPES
from songkhoe.programs.worklist import worklist
from songkhoe.store import open_store
from songkhoe.store.bulk import load
from tests.programs.stored import CONFIG, derived, population

PROGRAMMES = definitions()
_OWNED = ("Patient", "Observation", "Condition", "MedicationStatement", "Encounter")


def test_online_and_batch_give_the_same_outputs(db_url: str, second_url: str) -> None:
    resources = population()
    # online: the directory in bulk, then each person's records visit by visit, each in its
    # own transaction with the derivation on (as the REST API and the app API write them)
    online = open_store(db_url)
    online.derive = Online(PROGRAMMES)
    try:
        load(online, [("d", r) for r in resources if r["resourceType"] not in _OWNED])
        by_person: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for r in resources:
            if r["resourceType"] == "Patient":
                by_person[r["id"]][""].append(r)
            elif r["resourceType"] in _OWNED:
                pid = r["subject"]["reference"].split("/")[1]
                day = (r.get("effectiveDateTime") or (r.get("period") or {}).get("start")
                       or r.get("recordedDate") or r.get("onsetDateTime") or "")[:10]
                by_person[pid][day].append(r)
        for visits in by_person.values():
            for day in sorted(visits):
                with online.transaction() as tx:
                    for r in visits[day]:
                        tx.update(r["resourceType"], r["id"], r)
        online_outputs = derived(online)
    finally:
        online.close()
    # batch: everything in bulk (no derivation), then one run
    batch = open_store(second_url)
    try:
        load(batch, [("b", r) for r in resources])
        with batch.reading() as tx:
            people = tx.patient_ids()
        first = run_batch(batch, PROGRAMMES, people, chunk=50)
        batch_outputs = derived(batch)
        again = run_batch(batch, PROGRAMMES, people, chunk=50)
        full = run_batch(batch, PROGRAMMES, people, chunk=50, full=True)
    finally:
        batch.close()
    assert len(people) == CONFIG.people
    kinds = {t for t, _ in batch_outputs if t in OUTPUT_TYPES}
    assert kinds == set(OUTPUT_TYPES) - {"RiskAssessment"} or kinds == set(OUTPUT_TYPES)
    assert sum(1 for v in batch_outputs.values() if v) > CONFIG.people
    assert online_outputs == batch_outputs
    assert first.written and not again.written  # idempotent: the second run writes nothing
    assert again.evaluated == 0  # nobody's records changed
    assert full.evaluated == len(people) and not full.written


def test_worklists_follow_calls_and_stay_inside_the_callers_scope(store: Any) -> None:
    resources = population()
    load(store, [("s", r) for r in resources])
    with store.reading() as tx:
        people = tx.patient_ids()
        communes = [r[0] for r in tx.execute(
            "SELECT DISTINCT org FROM owners WHERE type = 'Patient' ORDER BY org").fetchall()]
    run_batch(store, PROGRAMMES, people)
    store.derive = Online(PROGRAMMES)
    today = date(2026, 11, 23)
    care = PROGRAMMES["hypertension-care"]
    with store.reading() as tx:
        pages = {org: worklist(tx, care, "overdue", today=today, org=org, count=500)
                 for org in communes}
        whole = worklist(tx, care, "overdue", today=today, count=500)
        managed = dict(tx.execute("SELECT patient, org FROM owners WHERE type = 'Patient'")
                       .fetchall())
    assert sum(p.total for p in pages.values()) == whole.total > 0
    for org, page in pages.items():
        assert all(managed[e.patient] == org for e in page.entries)
        assert all(e.next_due and e.next_due < today.isoformat() for e in page.entries)
    first = whole.entries[0]
    task = {"resourceType": "Task", "status": "completed", "intent": "order",
            "instantiatesUri": f"{care.uri}|{care.version}",
            "code": {"coding": [{"system": "urn:songkhoe:worklist", "code": "call"}]},
            "businessStatus": {"coding": [{"system": "urn:songkhoe:call-outcome",
                                           "code": "moved-away"}]},
            "for": {"reference": f"Patient/{first.patient}"}, "authoredOn": "2026-11-23"}
    with store.transaction() as tx:
        tx.create(task)
    with store.reading() as tx:
        after = worklist(tx, care, "overdue", today=today, count=500)
    assert after.total == whole.total - 1
    assert first.patient not in {e.patient for e in after.entries}
    # keyset paging gives every entry once
    seen: list[str] = []
    cursor = None
    while True:
        with store.reading() as tx:
            page = worklist(tx, care, "overdue", today=today, count=3, cursor=cursor)
        seen += [e.patient for e in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [e.patient for e in after.entries]


def test_concurrent_check_ups_of_one_person_both_count(store: Any) -> None:
    """Two transactions record a visit of the same person at the same moment: whichever
    commits last derives from both (the derivation locks the Patient first). On SQLite the
    writers queue for the one write lock, so only PostgreSQL can hold both open at once."""
    import threading

    store.derive = Online(PROGRAMMES)
    with store.transaction() as tx:
        tx.create({"resourceType": "Patient", "birthDate": "1960-01-01", "gender": "male"},
                  id="pc")

    def bp(day: str) -> dict[str, Any]:
        comp = [{"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                 "valueQuantity": {"value": value, "unit": "mm[Hg]",
                                   "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
                for code, value in (("8480-6", 150), ("8462-4", 95))]
        return {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                "subject": {"reference": "Patient/pc"}, "effectiveDateTime": day,
                "component": comp}

    for round_ in range(3):
        days = [f"2026-0{round_ + 1}-10", f"2026-0{round_ + 1}-01"]
        together = store.backend.name == "postgres"
        barrier = threading.Barrier(2 if together else 1)
        errors: list[BaseException] = []

        def visit(day: str) -> None:
            try:
                with store.transaction() as tx:
                    tx.create(bp(day))
                    barrier.wait(timeout=30)  # both written, neither settled nor committed
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        threads = [threading.Thread(target=visit, args=(d,)) for d in days]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        with store.reading() as tx:
            last = tx.execute("SELECT last_visit FROM programme_status WHERE patient = 'pc' "
                              "AND programme = 'hypertension-screening'").fetchone()[0]
        assert last == days[0]
