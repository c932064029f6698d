"""Bulk loading (``songkhoe import``'s path): NDJSON and Bundles, rejections with reasons,
nothing partial, idempotent re-runs, a resource created by another writer meanwhile. Both
backends."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from songkhoe.store.bulk import load, read_resources

from .conftest import bp, patient
from .test_access_moves import _race


def _ndjson(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ndjson_loads_indexes_and_reports_rejections(store, tmp_path):
    good = [patient(id=f"p{n}", cccd=f"0010600000{n:02d}") for n in range(5)]
    bad_date = {**patient(id="bad"), "birthDate": "1960-02-30"}
    lines = [json.dumps(r, ensure_ascii=False) for r in good]
    lines[2:2] = ["{not json", json.dumps(bad_date), json.dumps({"resourceType": "Nope"})]
    lines.append(json.dumps(bp("p1")))
    summary = load(store, read_resources(_ndjson(tmp_path / "a.ndjson", lines)))
    assert summary.loaded == 6 and summary.unchanged == 0
    assert [r.source for r in summary.rejected] == ["a.ndjson:3", "a.ndjson:4", "a.ndjson:5"]
    assert "not valid JSON" in summary.rejected[0].reason
    assert "birthDate" in summary.rejected[1].reason
    assert store.search("Patient", [("_summary", "count")]).total == 5
    assert [s.id for s in store.search("Patient", [("name", "nguyen"), ("_id", "p3")]).matches] == ["p3"]
    assert len(store.search("Observation", [("subject", "Patient/p1")]).matches) == 1
    assert store.read("Patient", "p0").version == 1
    with_bad = store.search("Patient", [("_id", "bad")])
    assert with_bad.matches == []


def test_rerun_is_idempotent_and_changes_make_versions(store, tmp_path):
    lines = [json.dumps(patient(id=f"p{n}", cccd=f"0010600000{n:02d}")) for n in range(3)]
    path = _ndjson(tmp_path / "b.ndjson", lines)
    first = load(store, read_resources(path))
    again = load(store, read_resources(path))
    assert (first.loaded, again.loaded, again.unchanged) == (3, 0, 3)
    assert store.read("Patient", "p1").version == 1
    assert len(store.history("Patient", "p1").versions) == 1
    changed = {**patient(id="p1", cccd="001060000001"), "gender": "female"}
    _ndjson(path, [lines[0], json.dumps(changed)])
    third = load(store, read_resources(path))
    assert (third.loaded, third.unchanged) == (1, 1)
    assert store.read("Patient", "p1").version == 2
    assert [s.id for s in store.search("Patient", [("gender", "female")]).matches] == ["p1"]


def test_bundle_file_and_resources_without_ids(store, tmp_path):
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": patient(cccd="079090000001")},
                        {"resource": {**patient(cccd="079090000002"), "gender": "robot"}},
                        {"fullUrl": "urn:uuid:0b2b0b7a-3c53-4a3c-9d7e-6f0f0e9b1a01"}]}
    path = tmp_path / "c.json"
    path.write_bytes(orjson.dumps(bundle))
    summary = load(store, read_resources(path))
    assert summary.loaded == 1
    assert [r.source for r in summary.rejected] == ["c.json#entry[1]", "c.json#entry[2]"]
    assert "gender" in summary.rejected[0].reason
    assert "no resource" in summary.rejected[1].reason
    assert store.search("Patient", [("identifier", "079090000001")]).matches


def test_the_same_id_twice_in_a_file_keeps_the_later(store, tmp_path):
    first = patient(id="dup")
    second = {**patient(id="dup"), "gender": "female"}
    load(store, read_resources(_ndjson(tmp_path / "d.ndjson", [json.dumps(first), json.dumps(second)])))
    assert store.read("Patient", "dup").resource["gender"] == "female"
    assert store.read("Patient", "dup").version == 2


def test_parallel_load_matches_sequential_and_keeps_file_order(db_url, tmp_path):
    from songkhoe.store import open_store
    from songkhoe.store.bulk import load_parallel

    lines = []
    for n in range(60):
        lines.append(json.dumps(patient(id=f"p{n}", cccd=f"0010600{n:05d}")))
        lines.append(json.dumps({**patient(id=f"p{n}", cccd=f"0010600{n:05d}"), "gender": "female"}))
    lines.insert(7, "not json")
    path = _ndjson(tmp_path / "par.ndjson", lines)
    open_store(db_url).close()
    summary = load_parallel(db_url, read_resources(path), workers=2, chunk=7)
    assert summary.loaded == 120 and [r.source for r in summary.rejected] == ["par.ndjson:8"]
    store = open_store(db_url)
    try:
        assert store.search("Patient", [("gender", "female"), ("_summary", "count")]).total == 60
        assert all(store.read("Patient", f"p{n}").version == 2 for n in range(0, 60, 7))
    finally:
        store.close()


def test_a_load_leaves_postgresql_its_statistics(store, tmp_path):
    """After a bulk load PostgreSQL knows the tables' sizes (``ANALYZE``): planned as never
    analyzed, a probe by key may become a hash of a whole table."""
    if store.backend.name != "postgres":
        return  # SQLite's statements are written for a database without statistics
    lines = [json.dumps(patient(id=f"p{n}", cccd=f"0010600000{n:02d}")) for n in range(20)]
    load(store, read_resources(_ndjson(tmp_path / "s.ndjson", lines)))
    with store.reading() as tx:
        estimated, = tx.execute("SELECT reltuples FROM pg_class WHERE relname = 'owners' "
                                "AND relnamespace = to_regnamespace(current_schema())"
                                ).fetchone()
        counted, = tx.execute("SELECT COUNT(*) FROM owners").fetchone()
    assert counted == 20 and estimated == counted


@pytest.mark.parametrize("same", [True, False], ids=["same content", "changed"])
def test_a_load_creating_what_another_writer_is_creating_stores_it_after_that(store,
                                                                            same: bool):
    """Two imports of the same new person at once: the load writes after the other commits,
    as a new version or as unchanged. (PostgreSQL refused the load's ``COPY`` with a
    duplicate key once the other committed, and the import stopped.)"""
    first = patient("Nguyễn", id="dup1")
    again = first if same else patient("Trần", id="dup1")
    summaries = []
    _race(store, lambda tx: tx.update("Patient", "dup1", first),
          lambda s: summaries.append(load(s, [("again.ndjson:1", again)])))
    assert not summaries[0].rejected
    assert (summaries[0].loaded, summaries[0].unchanged) == ((0, 1) if same else (1, 0))
    stored = store.read("Patient", "dup1")
    assert stored.version == (1 if same else 2)
    assert stored.resource["name"][0]["family"] == again["name"][0]["family"]
