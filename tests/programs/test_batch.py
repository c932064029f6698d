"""The batch run (``programs.batch``) on both backends against a plain settle of everyone
(``apply.settle``, the online path's writer) on the same records: after new records, after a
changed definition (evaluated for everyone, written only where outputs differ, the others
compared by digest), and when a record is written while the run evaluates or writes."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from songkhoe.programs import batch
from songkhoe.programs.apply import settle
from songkhoe.programs.batch import run_batch
from songkhoe.programs.cli import definitions
from songkhoe.programs.definition import DATA, Programme
from songkhoe.store import open_store
from songkhoe.store.bulk import load
from songkhoe.synth import SynthConfig
from tests.programs.stored import derived, population

PROGRAMMES = definitions()
CONFIG = SynthConfig(people=50, seed=9, provinces=(1,), communes_per_province=1, years=2,
                     as_of=date(2026, 11, 1))


def _crisis_reading(person: str, day: str = "2026-11-20") -> dict[str, Any]:
    """A blood pressure of 185/95: a hypertensive crisis, referred the same day."""
    def component(code: str, value: int) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": value, "unit": "mm[Hg]",
                                  "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    return {"resourceType": "Observation", "id": f"late-bp-{person}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": f"Patient/{person}"}, "effectiveDateTime": day,
            "component": [component("8480-6", 185), component("8462-4", 95)]}


def _adult(resources: list[dict[str, Any]]) -> str:
    return next(r["id"] for r in resources if r["resourceType"] == "Patient"
                and r.get("birthDate", "9999") < "1980")


def _loaded(url: str, resources: list[dict[str, Any]]) -> tuple[Any, list[str]]:
    store = open_store(url)
    load(store, [("t", r) for r in resources])
    with store.reading() as tx:
        return store, tx.patient_ids()


def _settled_plainly(url: str, resources: list[dict[str, Any]],
                     programmes: dict[str, Programme]) -> dict[tuple[str, str], Any]:
    """What a plain settle of everyone in one transaction stores for ``resources``."""
    store, people = _loaded(url, resources)
    try:
        with store.transaction(derive=False) as tx:
            settle(tx, programmes, people)
        return derived(store)
    finally:
        store.close()


def test_only_people_whose_records_changed_are_evaluated_again(db_url: str,
                                                               second_url: str) -> None:
    resources = population(CONFIG)
    store, people = _loaded(db_url, resources)
    try:
        first = run_batch(store, PROGRAMMES, people, chunk=20)
        again = run_batch(store, PROGRAMMES, people, chunk=20)
        person = _adult(resources)
        load(store, [("late", _crisis_reading(person))])  # as a bulk load writes: no derivation
        third = run_batch(store, PROGRAMMES, people, chunk=20)
        fourth = run_batch(store, PROGRAMMES, people, chunk=20)
        stored = derived(store)
    finally:
        store.close()
    assert first.evaluated == len(people) == CONFIG.people and first.written
    assert again.evaluated == 0 and not again.written
    assert third.evaluated == 1 and third.written["ServiceRequest"] >= 1
    assert fourth.evaluated == 0
    assert stored == _settled_plainly(second_url, [*resources, _crisis_reading(person)],
                                      PROGRAMMES)


def test_a_full_run_after_the_first_finds_every_output_as_it_was_stored(db_url: str) -> None:
    """The digest of a person's outputs is the same whether the engine built their referral
    or read it back as stored (with the store's version and time): a full run right after
    the first compares nobody's outputs in full, and records the same digests."""
    resources = population(CONFIG)
    person = _adult(resources)
    store, people = _loaded(db_url, [*resources, _crisis_reading(person)])
    settled = "SELECT patient, outputs FROM programme_settled"
    try:
        run_batch(store, PROGRAMMES, people, chunk=20)
        with store.reading() as tx:
            first = dict(tx.execute(settled).fetchall())
            referrals = tx.execute("SELECT COUNT(*) FROM resources WHERE type = "
                                   "'ServiceRequest' AND NOT deleted").fetchone()[0]
        full = run_batch(store, PROGRAMMES, people, chunk=20, full=True)
        with store.reading() as tx:
            second = dict(tx.execute(settled).fetchall())
    finally:
        store.close()
    assert referrals >= 1
    assert full.evaluated == len(people) and not full.written
    assert len(first) == len(people) and second == first


def test_a_changed_definition_reaches_everyone_and_writes_only_the_differences(
        db_url: str, second_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "programmes"
    shutil.copytree(DATA, folder)
    path = folder / "hypertension-screening.toml"
    text = path.read_text(encoding="utf-8")
    crisis = 'when = "%sbp >= 180 or %dbp >= 120"'
    assert text.count(crisis) == 1
    path.write_text(text.replace(crisis, 'when = "%sbp >= 150 or %dbp >= 120"'),
                    encoding="utf-8")
    changed = definitions(str(folder))
    resources = population(CONFIG)
    store, people = _loaded(db_url, resources)
    try:
        run_batch(store, PROGRAMMES, people, chunk=20)
        ran = run_batch(store, changed, people, chunk=20)
        again = run_batch(store, changed, people, chunk=20)
        stored = derived(store)
    finally:
        store.close()
    assert ran.evaluated == len(people) and again.evaluated == 0
    # the lower threshold refers some people; everyone else's outputs are unchanged and
    # nothing of theirs is written
    assert ran.written["ServiceRequest"] > 0
    assert sum(ran.written.values()) < len(people)
    assert stored == _settled_plainly(second_url, resources, changed)


def test_a_record_written_while_the_run_evaluates_is_read_again_before_writing(
        db_url: str, second_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = population(CONFIG)
    person = _adult(resources)
    late = _crisis_reading(person)
    evaluate = batch.evaluate
    written: list[str] = []

    def evaluate_while_someone_writes(programmes: Any, facts: Any) -> Any:
        if facts.patient["id"] == person and not written:  # between the read and the write
            other = open_store(db_url)
            try:
                load(other, [("late", late)])
            finally:
                other.close()
            written.append(person)
        return evaluate(programmes, facts)

    monkeypatch.setattr(batch, "evaluate", evaluate_while_someone_writes)
    store, people = _loaded(db_url, resources)
    try:
        run_batch(store, PROGRAMMES, people, chunk=20)
        again = run_batch(store, PROGRAMMES, people, chunk=20)
        stored = derived(store)
    finally:
        store.close()
    assert written == [person] and again.evaluated == 0
    assert stored == _settled_plainly(second_url, [*resources, late], PROGRAMMES)


def test_a_record_committed_while_the_run_writes_is_evaluated_at_the_next_run(
        pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a bulk load does not wait for the batch's locks, so it can commit a
    person's record after the batch checked it; the batch must not record that person as
    evaluated. (On SQLite the batch holds the one write lock.)"""
    resources = population(CONFIG)
    person = _adult(resources)
    store_status = batch.store_status
    written: list[str] = []

    def write_while_someone_commits(tx: Any, patient_ids: list[str], *args: Any) -> None:
        if person in patient_ids and not written:
            other = open_store(pg_schema_url)
            try:
                load(other, [("late", _crisis_reading(person))])
            finally:
                other.close()
            written.append(person)
        store_status(tx, patient_ids, *args)

    monkeypatch.setattr(batch, "store_status", write_while_someone_commits)
    store, people = _loaded(pg_schema_url, resources)
    try:
        run_batch(store, PROGRAMMES, people, chunk=20)
        again = run_batch(store, PROGRAMMES, people, chunk=20)
    finally:
        store.close()
    assert written == [person]
    assert again.evaluated == 1 and again.written["ServiceRequest"] >= 1


def test_a_run_that_wrote_many_resources_leaves_the_replaced_rows_vacuumed(
        pg_schema_url: str) -> None:
    """PostgreSQL: after a run that wrote at least ``at_least`` resources the tables whose rows
    it replaced are vacuumed and analyzed; after a smaller run they are left to
    autovacuum."""
    store, people = _loaded(pg_schema_url, population(CONFIG))
    tables = ("SELECT relname, last_vacuum, last_analyze FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname IN "
              "('resources', 'owners', 'programme_status', 'programme_settled')")
    try:
        ran = run_batch(store, PROGRAMMES, people, chunk=20)
        written = sum(ran.written.values())
        assert not batch.tidy(pg_schema_url, ran, at_least=written + 1)
        with store.reading() as tx:
            before = {name: (v, a) for name, v, a in tx.execute(tables).fetchall()}
        assert batch.tidy(pg_schema_url, ran, at_least=written)
        with store.reading() as tx:
            after = {name: (v, a) for name, v, a in tx.execute(tables).fetchall()}
    finally:
        store.close()
    assert ran.written["Observation"] > 0  # interpretations: versions replaced
    assert set(before) == set(after) == set(batch._REPLACED)
    for name, (vacuumed, analyzed) in after.items():  # (the bulk load analyzed them)
        assert before[name][0] is None and vacuumed is not None, (name, before, after)
        assert analyzed > (before[name][1] or analyzed.min), (name, before, after)
