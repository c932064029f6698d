"""The analytics warehouse (``songkhoe.analytics.warehouse``) on both backends.

The truth a warehouse is held to: the DuckDB runner's rows over an export of the store's
current resources (read through the store's search API, not through the change feed). A
full build gives them; after creates, updates and deletes a refresh gives exactly what a full
build gives, reading only what changed; a refresh with nothing changed changes nothing; a
transaction that commits after a later one is not missed; a changed definition is rebuilt;
a refresh that dies (at two points) leaves the previous state readable and is redone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from songkhoe.analytics import warehouse
from songkhoe.analytics.duckdb_runner import run_view
from songkhoe.analytics.warehouse import WarehouseError, connect, refresh
from songkhoe.store.bulk import load
from songkhoe.synth import SynthConfig, items

LOINC = "http://loinc.org"
VITALS = "http://terminology.hl7.org/CodeSystem/observation-category"


def _col(name: str, path: str, fhir_type: str) -> dict[str, str]:
    return {"name": name, "path": path, "type": fhir_type}


VIEWS: dict[str, dict[str, Any]] = {
    "patients": {
        "resourceType": "ViewDefinition", "name": "patients", "status": "active",
        "resource": "Patient", "select": [{"column": [
            _col("patient_id", "getResourceKey()", "id"),
            _col("gender", "gender", "code"),
            _col("birth_date", "birthDate", "date"),
            _col("family", "name.first().family", "string"),
            _col("organization_id", "managingOrganization.getReferenceKey(Organization)",
                 "id")]}]},
    # one row per measured value (the Observation's own and each component's), final
    # vital signs only: an update can add or remove rows, or take the resource out
    "vital_signs": {
        "resourceType": "ViewDefinition", "name": "vital_signs", "status": "active",
        "resource": "Observation",
        "where": [{"path": f"category.coding.where(system = '{VITALS}' and "
                           "code = 'vital-signs').exists()"},
                  {"path": "status = 'final'"}],
        "select": [
            {"column": [_col("observation_id", "getResourceKey()", "id"),
                        _col("patient_id", "subject.getReferenceKey(Patient)", "id"),
                        _col("effective", "effective.ofType(dateTime)", "dateTime")]},
            {"unionAll": [
                {"forEach": "where(value.ofType(Quantity).exists())", "column": [
                    _col("code", f"code.coding.where(system = '{LOINC}').code.first()",
                         "code"),
                    _col("value", "value.ofType(Quantity).value", "decimal")]},
                {"forEach": "component", "column": [
                    _col("code", f"code.coding.where(system = '{LOINC}').code.first()",
                         "code"),
                    _col("value", "value.ofType(Quantity).value", "decimal")]}]}]},
    "conditions": {
        "resourceType": "ViewDefinition", "name": "conditions", "status": "active",
        "resource": "Condition", "select": [{"column": [
            _col("condition_id", "getResourceKey()", "id"),
            _col("patient_id", "subject.getReferenceKey(Patient)", "id"),
            _col("code", "code.coding.code.first()", "code")]}]},
}


@pytest.fixture
def views(tmp_path: Path) -> Path:
    folder = tmp_path / "views"
    folder.mkdir()
    for name, definition in VIEWS.items():
        (folder / f"{name}.json").write_text(json.dumps(definition), encoding="utf-8")
    return folder


@pytest.fixture
def populated(store):  # type: ignore[no-untyped-def]
    """A store holding 25 synthetic people and their check-ups (~250 resources)."""
    summary = load(store, items(SynthConfig(people=25, seed=11, provinces=(1,),
                                            communes_per_province=1), workers=1))
    assert summary.loaded > 200 and not summary.rejected
    return store


def export_rows(store: Any, name: str) -> list[tuple[Any, ...]]:
    """The runner's rows of a view over the store's current resources, read by search."""
    view = VIEWS[name] if isinstance(name, str) else name
    resources: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = [("_count", "500")] + ([("_cursor", cursor)] if cursor else [])
        page = store.search(view["resource"], params)
        resources += [json.loads(m.content) for m in page.matches]
        cursor = page.next_cursor
        if cursor is None:
            break
    table = run_view(view, resources)
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def warehouse_rows(folder: Path, name: str) -> list[tuple[Any, ...]]:
    with connect(folder) as db:
        return sorted(db.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)


def assert_matches_store(store: Any, folder: Path) -> None:
    for name in VIEWS:
        assert warehouse_rows(folder, name) == export_rows(store, name), name


def _observations(store: Any, n: int) -> list[dict[str, Any]]:
    page = store.search("Observation", [("_count", str(n)), ("category", "vital-signs")])
    return [json.loads(m.content) for m in page.matches]


def test_full_build_gives_the_runner_rows_over_an_export(populated, views, tmp_path) -> None:
    lines: list[str] = []
    report = refresh(populated, tmp_path / "wh", views, progress=lines.append)
    assert {v.mode for v in report.views.values()} == {"full"}
    assert report.read["Observation"] == populated.search(
        "Observation", [("_summary", "count")]).total
    assert any(line.startswith("vital_signs (Observation): full build") for line in lines)
    assert_matches_store(populated, tmp_path / "wh")
    # every row carries its resource, in Hive-style segment folders Spark reads as they are
    files = sorted((tmp_path / "wh" / "vital_signs" / "rows").glob("*/*.parquet"))
    assert [f.parent.name for f in files] == ["warehouse_segment=1"]


def test_refresh_after_creates_updates_and_deletes_equals_a_full_build(
        populated, views, tmp_path) -> None:
    store = populated
    refresh(store, tmp_path / "wh", views)
    obs = _observations(store, 12)
    patients = [json.loads(m.content) for m in store.search("Patient", [("_count", "3")]).matches]
    # round 1: new values, a component dropped, a status that leaves the view, deletions,
    # a new person with a reading, and an update-as-create
    obs[0]["valueQuantity"] = {**obs[0].get("valueQuantity", {}), "value": 99.5}
    obs[1].pop("component", None)
    obs[1]["valueQuantity"] = {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org",
                               "code": "kg"}
    obs[2]["status"] = "entered-in-error"
    for o in obs[:3]:
        store.update("Observation", o["id"], o)
    store.delete("Observation", obs[3]["id"])
    store.delete("Patient", patients[0]["id"])
    patients[1]["gender"] = "other"
    store.update("Patient", patients[1]["id"], patients[1])
    new = store.create({"resourceType": "Patient", "gender": "female",
                        "name": [{"family": "Nguyễn"}]}).stored
    reading = {**obs[4], "subject": {"reference": f"Patient/{new.id}"}}
    reading.pop("id")
    store.create(reading)
    store.update("Observation", "made-by-put", {**reading, "id": "made-by-put"})
    changed_now = 9  # resources changed since the full build (Patients and Observations)
    report = refresh(store, tmp_path / "wh", views)
    assert report.views["vital_signs"].mode == "delta"
    assert report.views["conditions"].mode == "unchanged"
    assert sum(report.read.values()) == changed_now  # only what changed was read
    assert report.views["patients"].deleted == 1
    assert_matches_store(store, tmp_path / "wh")
    # round 2: back to the view, re-created after its deletion, created and deleted between
    # two refreshes, changed twice
    obs[2]["status"] = "final"
    store.update("Observation", obs[2]["id"], obs[2])
    store.update("Observation", obs[3]["id"], obs[3])
    gone = store.create({"resourceType": "Condition", "subject": {
        "reference": f"Patient/{patients[2]['id']}"}, "code": {"text": "tạm"}}).stored
    store.delete("Condition", gone.id)
    for value in (120, 121):
        obs[0]["valueQuantity"]["value"] = value
        store.update("Observation", obs[0]["id"], obs[0])
    report = refresh(store, tmp_path / "wh", views)
    assert report.read == {"Condition": 1, "Observation": 3, "Patient": 0}
    assert_matches_store(store, tmp_path / "wh")
    refresh(store, tmp_path / "full", views)
    for name in VIEWS:
        assert warehouse_rows(tmp_path / "wh", name) == warehouse_rows(tmp_path / "full", name)


@pytest.mark.parametrize("chunk", [4, 6])
def test_a_delta_over_several_files_equals_a_full_build(populated, views, tmp_path,
                                                        chunk: int) -> None:
    """The changed resources read in blocks (of a size dividing ``chunk``: 4 and 2 here) and
    spread over several NDJSON files: the delta's rows are the store's."""
    store = populated
    refresh(store, tmp_path / "wh", views, chunk=chunk)
    obs = _observations(store, 11)
    for n, o in enumerate(obs):
        o["valueQuantity"] = {**o.get("valueQuantity", {}), "value": 50 + n}
        store.update("Observation", o["id"], o)
    store.delete("Observation", obs[0]["id"])
    report = refresh(store, tmp_path / "wh", views, chunk=chunk)
    assert report.views["vital_signs"].mode == "delta"
    assert report.read["Observation"] == 11
    assert_matches_store(store, tmp_path / "wh")


def test_a_refresh_with_nothing_changed_changes_nothing(populated, views, tmp_path) -> None:
    refresh(populated, tmp_path / "wh", views)
    store_obs = _observations(populated, 1)[0]
    populated.update("Observation", store_obs["id"], {**store_obs, "status": "amended"})
    refresh(populated, tmp_path / "wh", views)
    before = {name: warehouse_rows(tmp_path / "wh", name) for name in VIEWS}
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "wh").rglob("*.parquet"))
    report = refresh(populated, tmp_path / "wh", views)
    assert {v.mode for v in report.views.values()} == {"unchanged"}
    assert sum(report.read.values()) == 0
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "wh").rglob("*.parquet")) == files
    assert {name: warehouse_rows(tmp_path / "wh", name) for name in VIEWS} == before


def test_a_transaction_that_commits_late_is_not_missed(populated, views, tmp_path) -> None:
    """A transaction that wrote before a refresh and commits after it is read by the next
    one. On PostgreSQL another transaction, which began writing later (a larger id), commits
    first: a feed that remembered the largest id it had read would skip the late one."""
    store = populated
    refresh(store, tmp_path / "wh", views)
    late = {"resourceType": "Patient", "id": "late", "gender": "male"}
    with store.transaction() as tx:
        tx.update("Patient", "late", late)
        tx.flush()  # written (PostgreSQL: the transaction has its id) but not committed
        if store.backend.name == "postgres":
            store.update("Patient", "early", {**late, "id": "early"})
        refresh(store, tmp_path / "wh", views)
        ids = {row[0] for row in warehouse_rows(tmp_path / "wh", "patients")}
        assert "late" not in ids
        assert ("early" in ids) == (store.backend.name == "postgres")
    report = refresh(store, tmp_path / "wh", views)
    assert report.read["Patient"] == 1
    assert "late" in {row[0] for row in warehouse_rows(tmp_path / "wh", "patients")}
    assert_matches_store(store, tmp_path / "wh")


def test_a_changed_definition_is_rebuilt_in_full(populated, views, tmp_path) -> None:
    refresh(populated, tmp_path / "wh", views)
    changed = json.loads((views / "patients.json").read_text())
    changed["select"][0]["column"].append(_col("active", "active", "boolean"))
    (views / "patients.json").write_text(json.dumps(changed))
    lines: list[str] = []
    report = refresh(populated, tmp_path / "wh", views, progress=lines.append)
    assert report.views["patients"].mode == "full"
    assert report.views["vital_signs"].mode == "unchanged"
    assert "patients: its definition changed, rebuilding it in full" in lines
    assert warehouse_rows(tmp_path / "wh", "patients") == export_rows(populated, changed)
    # the replaced segment stays for readers of the previous state until the next refresh
    assert (tmp_path / "wh" / "patients" / "rows" / "warehouse_segment=1").is_dir()
    refresh(populated, tmp_path / "wh", views)
    assert not (tmp_path / "wh" / "patients" / "rows" / "warehouse_segment=1").exists()


def test_a_view_removed_then_defined_again(populated, views, tmp_path) -> None:
    folder = tmp_path / "wh"
    refresh(populated, folder, views)
    (views / "patients.json").rename(tmp_path / "patients.json")
    assert "patients" not in refresh(populated, folder, views).views
    with pytest.raises(duckdb.CatalogException):
        warehouse_rows(folder, "patients")
    # defined again while its old segments are still kept for earlier readers
    (tmp_path / "patients.json").rename(views / "patients.json")
    assert refresh(populated, folder, views).views["patients"].mode == "full"
    assert warehouse_rows(folder, "patients") == export_rows(populated, "patients")
    refresh(populated, folder, views)
    assert [p.name for p in (folder / "patients" / "rows").iterdir()] == ["warehouse_segment=2"]


_CRASH = """
import os, sys
from songkhoe.analytics import warehouse
from songkhoe.store import open_store

store, folder, views, point = open_store(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
if point == "writing":  # after the first view's segment is written, before the others
    def progress(line):
        if "rows written" in line:
            os._exit(3)
else:  # the new segments are in place, the state not yet replaced
    progress = None
    fsync = warehouse._fsync
    def crashing(path):
        if path.name in ("rows", "superseded"):
            os._exit(3)
        fsync(path)
    warehouse._fsync = crashing
warehouse.refresh(store, folder, views, progress=progress)
"""


@pytest.mark.parametrize("point", ["writing", "moved"])
def test_a_refresh_that_dies_leaves_the_previous_state(populated, views, tmp_path,
                                                       db_url, point) -> None:
    store, folder = populated, tmp_path / "wh"
    refresh(store, folder, views)
    before = {name: warehouse_rows(folder, name) for name in VIEWS}
    state = (folder / "_state.json").read_bytes()
    for o in _observations(store, 5):
        store.update("Observation", o["id"], {**o, "status": "preliminary"})
    store.delete("Patient", store.search("Patient", [("_count", "1")]).matches[0].id)
    died = subprocess.run([sys.executable, "-c", _CRASH, db_url, str(folder), str(views),
                           point], capture_output=True, text=True, timeout=120)
    assert died.returncode == 3, died.stderr
    assert (folder / "_state.json").read_bytes() == state
    assert {name: warehouse_rows(folder, name) for name in VIEWS} == before
    report = refresh(store, folder, views)  # redone from the previous position
    assert report.read["Observation"] == 5
    assert_matches_store(store, folder)
    listed = json.loads((folder / "_state.json").read_text())
    on_disk = {str(p.relative_to(folder)) for p in folder.glob("*/*/warehouse_segment=*")}
    assert on_disk == {str(Path(f).parent) for v in listed["views"].values()
                       for s in v["segments"] for f in [*s["files"], s["keys"] or ""] if f}
    assert not (folder / "_work").exists()


def test_a_file_that_cannot_be_synced_fails_the_refresh_before_its_state(
        populated, views, tmp_path, monkeypatch) -> None:
    """Segment files are synced in the background; a failure surfaces before the state that
    would name them is written, and nothing of the refresh is left."""
    store, folder = populated, tmp_path / "wh"
    refresh(store, folder, views)
    state = (folder / "_state.json").read_bytes()
    for o in _observations(store, 3):
        store.update("Observation", o["id"], {**o, "status": "preliminary"})

    def failing(path: Path) -> None:
        if path.suffix == ".parquet":
            raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(warehouse, "_fsync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        refresh(store, folder, views)
    assert (folder / "_state.json").read_bytes() == state
    assert not (folder / "_work").exists()
    monkeypatch.undo()
    assert refresh(store, folder, views).read["Observation"] == 3
    assert_matches_store(store, folder)


def test_deltas_are_compacted_into_a_base(populated, views, tmp_path) -> None:
    store, folder = populated, tmp_path / "wh"
    refresh(store, folder, views, max_deltas=2)
    for n in range(3):
        o = _observations(store, 3)[n]
        o["valueQuantity"] = {**o.get("valueQuantity", {}), "value": 50 + n}
        store.update("Observation", o["id"], o)
        report = refresh(store, folder, views, max_deltas=2)
    assert report.views["vital_signs"].compacted
    segments = json.loads((folder / "_state.json").read_text())["views"]["vital_signs"]
    assert [s["base"] for s in segments["segments"]] == [True]
    assert segments["segments"][0]["segment"] == 5  # base 1, deltas 2–4, then the new base
    assert_matches_store(store, folder)


def test_the_store_of_another_database_is_built_in_full(populated, views, tmp_path,
                                                        db_url) -> None:
    refresh(populated, tmp_path / "wh", views)
    with populated.backend.transaction(write=True) as conn:
        populated.backend.execute(conn, "UPDATE schema_meta SET value = 'another' "
                                        "WHERE key = 'change_feed'")
    lines: list[str] = []
    report = refresh(populated, tmp_path / "wh", views, progress=lines.append)
    assert {v.mode for v in report.views.values()} == {"full"}
    assert any("another database" in line for line in lines)


def test_versions_from_before_the_feed_are_read_by_the_full_build(populated, views,
                                                                  tmp_path) -> None:
    """Schema version 7 leaves the versions written before it without a number."""
    with populated.backend.transaction(write=True) as conn:
        populated.backend.execute(conn, "UPDATE history SET change_seq = NULL")
    refresh(populated, tmp_path / "wh", views)
    o = _observations(populated, 1)[0]
    populated.update("Observation", o["id"], {**o, "status": "cancelled"})
    report = refresh(populated, tmp_path / "wh", views)
    assert report.read["Observation"] == 1
    assert_matches_store(populated, tmp_path / "wh")


def test_folders_and_views_that_cannot_be_used_are_refused(store, views, tmp_path) -> None:
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(WarehouseError, match="neither empty nor a warehouse"):
        refresh(store, other, views)
    with pytest.raises(WarehouseError, match="no ViewDefinitions"):
        refresh(store, tmp_path / "wh", tmp_path / "nothing-here")
    bad = json.loads((views / "patients.json").read_text())
    bad["select"][0]["column"].append(_col("warehouse_resource_id", "id", "id"))
    (views / "patients.json").write_text(json.dumps(bad))
    with pytest.raises(WarehouseError, match="the warehouse's own"):
        refresh(store, tmp_path / "wh", views)
    bad["select"][0]["column"][-1]["path"] = "id.where("
    (views / "patients.json").write_text(json.dumps(bad))
    with pytest.raises(WarehouseError, match=r"patients\.json: select\[0\]\.column\[5\]\.path"):
        refresh(store, tmp_path / "wh", views)
    with pytest.raises(WarehouseError, match="run `songkhoe warehouse refresh"):
        connect(tmp_path / "wh")


def test_cli_refreshes_and_reports_progress(tmp_path, views, capsys) -> None:
    from songkhoe.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["synth", "--people", "5", "--province", "1", "--communes", "1",
                 "--to", url, "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["warehouse", "refresh", "--db", url, "--dir", str(tmp_path / "wh"),
                 "--views", str(views)]) == 0
    out = capsys.readouterr().out
    assert "patients (Patient): full build, 5 resources read, 5 rows written" in out
    assert main(["warehouse", "refresh", "--db", url, "--dir", str(tmp_path / "wh"),
                 "--views", str(views), "--full"]) == 0
    assert "full build" in capsys.readouterr().out
    assert main(["warehouse", "refresh", "--db", url, "--dir", str(tmp_path / "wh"),
                 "--views", str(tmp_path / "none")]) == 2
    assert "no ViewDefinitions" in capsys.readouterr().err
    # the built-in views (the indicators'), into a folder of their own
    assert main(["warehouse", "refresh", "--db", url, "--dir", str(tmp_path / "built-in")]) == 0
    with connect(tmp_path / "built-in") as db:
        assert db.execute("SELECT count(*) FROM patient").fetchone() == (5,)

