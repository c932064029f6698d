"""An update that changes only elements no search parameter reads keeps the index rows of the
version it replaces (``indexer.same_index``, ``Tx.update(previous=…)``), on both backends."""

from __future__ import annotations

import copy
import random
from datetime import date
from itertools import islice

import orjson

from songkhoe.store.indexer import index_rows, same_index
from songkhoe.store.schema import INDEX_COLUMNS
from songkhoe.synth import SynthConfig, items

from .conftest import bp, patient

INTERPRETATION = [{"coding": [{"system": "urn:songkhoe:programme:test:bp", "code": "high"}],
                   "text": "cao"}]


def _stored_rows(store, rid: int) -> dict[str, list[tuple]]:
    out = {}
    with store.reading() as tx:
        for table, columns in INDEX_COLUMNS.items():
            out[table] = sorted(tuple(r) for r in tx.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE rid = ?", [rid]).fetchall())
    return out


def _expected_rows(resource: dict) -> dict[str, list[tuple]]:
    return {table: sorted(tuple(r) for r in rows) for table, rows in index_rows(resource).items()}


def _stored_bp(store):
    """A Patient's blood pressure of 165 mmHg, stored: (its ``Stored``, its row id)."""
    store.update("Patient", "p1", patient(id="p1"))
    first = store.create(bp("p1", systolic=165)).stored
    with store.reading() as tx:
        rid = tx.execute("SELECT rid FROM resources WHERE type = 'Observation' AND id = ?",
                         [first.id]).fetchone()[0]
    return first, rid


def test_which_changes_keep_the_rows():
    obs = {**bp("p1"), "id": "o1", "meta": {"versionId": "1", "lastUpdated": "2026-03-01T01:00:00Z"}}
    interpreted = {**obs, "interpretation": INTERPRETATION, "meta": {"versionId": "2"}}
    assert same_index(obs, interpreted)
    assert same_index(obs, {k: v for k, v in interpreted.items() if k != "meta"})
    assert same_index(obs, {**obs, "note": [{"text": "đo lại"}]})
    assert not same_index(obs, {**obs, "status": "amended"})
    assert not same_index(obs, {**obs, "effectiveDateTime": "2026-03-02"})
    assert not same_index(obs, {**obs, "meta": {"versionId": "2", "tag": [{"code": "x"}]}})
    assert not same_index(obs, {**obs, "text": {"status": "generated", "div": "<div>cao</div>"}})
    assert not same_index(obs, {**obs, "contained": [patient(id="c1")]})
    assert not same_index(obs, {**obs, "id": "o2"})
    assert not same_index(obs, {**obs, "resourceType": "Condition"})
    person = {**patient(id="p1"), "meta": {"versionId": "1"}}  # ``deceased`` is always read
    assert not same_index(person, {**person, "meta": {"versionId": "2"}})


def test_kept_rows_are_the_rows_of_the_new_version():
    """Over synthetic records, each top-level element in turn changed or removed, an element
    added: whenever ``same_index`` holds, the new version's rows are the old one's."""
    config = SynthConfig(people=40, seed=5, provinces=(1,), years=2, as_of=date(2026, 11, 1))
    resources = [orjson.loads(r) if isinstance(r, bytes) else r
                 for _, r in islice(items(config), 600)]
    by_type: dict[str, list[dict]] = {}
    for r in resources:
        r.setdefault("id", f"x{len(by_type.get(r['resourceType'], []))}")
        by_type.setdefault(r["resourceType"], []).append(r)
    rng = random.Random(1)
    kept = changed = 0
    for rtype, group in by_type.items():
        for old in group[:40]:
            others = [o for o in group if o is not old] or [old]
            for key in [k for k in old if k not in ("resourceType", "id")] + ["note"]:
                new = copy.deepcopy(old)
                other = rng.choice(others)
                if key in other and other[key] != old.get(key):
                    new[key] = copy.deepcopy(other[key])
                elif key == "note":
                    new[key] = [{"text": "ghi chú"}]
                else:
                    del new[key]
                if same_index(old, new):
                    kept += 1
                    assert _expected_rows(new) == _expected_rows(old), (rtype, key)
                else:
                    changed += 1
    assert kept > 50 and changed > 500, (kept, changed)  # both sides were exercised


def test_update_with_previous_keeps_the_rows(store):
    first, rid = _stored_bp(store)
    previous = store.read("Observation", first.id).resource
    with store.transaction() as tx:
        result = tx.update("Observation", first.id, {**previous, "interpretation": INTERPRETATION},
                           previous=previous)
    assert result.stored.version == 2
    now = store.read("Observation", first.id).resource
    assert now["interpretation"] == INTERPRETATION
    assert _stored_rows(store, rid) == _expected_rows(now)
    found = store.search("Observation", [("component-value-quantity", "gt160")])
    assert [r.id for r in found.matches] == [first.id]


def test_a_stale_previous_is_not_trusted(store):
    """The caller's ``previous`` is version 1, but version 2 changed a searched value: what
    is written (built on version 1) is indexed from its own content, not given version 2's
    rows."""
    first, rid = _stored_bp(store)
    stale = store.read("Observation", first.id).resource
    lowered = copy.deepcopy(stale)
    lowered["component"][0]["valueQuantity"]["value"] = 120
    store.update("Observation", first.id, lowered)
    with store.transaction() as tx:
        tx.update("Observation", first.id, {**stale, "interpretation": INTERPRETATION},
                  previous=stale)
    now = store.read("Observation", first.id).resource
    assert now["meta"]["versionId"] == "3"
    assert _stored_rows(store, rid) == _expected_rows(now)
    found = store.search("Observation", [("component-value-quantity", "gt160")])
    assert [r.id for r in found.matches] == [first.id]


def test_an_indexed_change_is_indexed_even_with_previous(store):
    first, rid = _stored_bp(store)
    previous = store.read("Observation", first.id).resource
    with store.transaction() as tx:
        tx.update("Observation", first.id, {**previous, "status": "amended"}, previous=previous)
    now = store.read("Observation", first.id).resource
    assert _stored_rows(store, rid) == _expected_rows(now)
    assert [r.id for r in store.search("Observation", [("status", "amended")]).matches] == \
        [first.id]
