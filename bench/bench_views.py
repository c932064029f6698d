"""SQL-on-FHIR views by DuckDB: NDJSON of a synthetic population → view Parquet, resources/s.

Three realistic views (issue 7): patient demographics (one row per Patient), vital signs (one
row per measured value: the Observation's own quantity or each component's, with LOINC code,
value, unit, date and the patient's key; only vital-sign Observations), and conditions (ICD-10
code, statuses, onset). Each is run with ``to_parquet`` (DuckDB, ``threads`` threads) over the
NDJSON file of its resource type, best of ``--rounds``; before timing, its rows on the first
2,000 resources are checked equal to the reference evaluator's.

Figures (one JSON line each): ``views_parquet`` per view — resources read, rows written, input
MB, wall seconds, resources/s, process CPU seconds (both DuckDB threads), the load average
while it ran (other jobs on a shared machine slow the wall clock, not the CPU time), whether
the view ran compiled, and the target; ``views_parquet_all`` for the three together.
Target (issue 7): NDJSON → view Parquet ≥ 300,000 resources/s on 2 cores.

    python bench/bench_views.py [--people 100000] [--data DIR] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from common import emit

from songkhoe.analytics.duckdb_runner import compile_view, run_view, to_parquet
from songkhoe.analytics.rows import evaluate
from songkhoe.analytics.viewdefinition import parse_view
from songkhoe.synth import SynthConfig, write_ndjson

TARGET = 300_000
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _col(name: str, path: str, fhir_type: str) -> dict[str, str]:
    return {"name": name, "path": path, "type": fhir_type}


def _measurement(for_each: str) -> dict[str, Any]:
    return {"forEach": for_each, "column": [
        _col("code", f"code.coding.where(system = '{LOINC}').code.first()", "code"),
        _col("value", "value.ofType(Quantity).value", "decimal"),
        _col("unit", "value.ofType(Quantity).code", "code")]}


VIEWS: dict[str, dict[str, Any]] = {
    "patient_demographics": {
        "resourceType": "ViewDefinition", "name": "patient_demographics", "status": "active",
        "resource": "Patient", "select": [{"column": [
            _col("patient_id", "getResourceKey()", "id"),
            _col("active", "active", "boolean"),
            _col("gender", "gender", "code"),
            _col("birth_date", "birthDate", "date"),
            _col("family", "name.where(use = 'official').family.first()", "string"),
            _col("given", "name.where(use = 'official').given.join(' ')", "string"),
            _col("cccd", "identifier.where(system = 'urn:vn:cccd').value.first()", "string"),
            _col("phone", "telecom.where(system = 'phone').value.first()", "string"),
            _col("commune", "address.first().city", "string"),
            _col("province", "address.first().state", "string"),
            _col("organization_id", "managingOrganization.getReferenceKey(Organization)",
                 "id")]}]},
    "vital_signs": {
        "resourceType": "ViewDefinition", "name": "vital_signs", "status": "active",
        "resource": "Observation",
        "where": [{"path": f"category.coding.where(system = '{OBS_CATEGORY}' and "
                           f"code = 'vital-signs').exists()"}],
        "select": [
            {"column": [
                _col("observation_id", "getResourceKey()", "id"),
                _col("patient_id", "subject.getReferenceKey(Patient)", "id"),
                _col("encounter_id", "encounter.getReferenceKey(Encounter)", "id"),
                _col("status", "status", "code"),
                _col("effective", "effective.ofType(dateTime)", "dateTime")]},
            {"unionAll": [_measurement("where(value.ofType(Quantity).exists())"),
                          _measurement("component.where(value.ofType(Quantity).exists())")]}]},
    "conditions": {
        "resourceType": "ViewDefinition", "name": "conditions", "status": "active",
        "resource": "Condition", "select": [{"column": [
            _col("condition_id", "getResourceKey()", "id"),
            _col("patient_id", "subject.getReferenceKey(Patient)", "id"),
            _col("icd10", f"code.coding.where(system = '{ICD10}').code.first()", "code"),
            _col("display", f"code.coding.where(system = '{ICD10}').display.first()", "string"),
            _col("clinical_status", "clinicalStatus.coding.code.first()", "code"),
            _col("verification_status", "verificationStatus.coding.code.first()", "code"),
            _col("category", "category.coding.code.first()", "code"),
            _col("onset", "onset.ofType(dateTime)", "dateTime"),
            _col("recorded", "recordedDate", "dateTime")]}]},
}


def _check_against_reference(view: Any, path: Path, n: int = 2000) -> None:
    """The runner's rows on the first ``n`` resources are the reference evaluator's."""
    lines = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            if len(lines) == n:
                break
    resources = [json.loads(line, parse_float=Decimal) for line in lines]
    want = [{k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}
            for row in evaluate(view, resources)]
    got = run_view(view, resources).to_pylist()
    assert got == want, f"{view.name}: the DuckDB rows differ from the reference's"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--data", help="NDJSON directory to use or create (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-views-"))
    try:
        if not (data / "Patient.ndjson").exists():
            write_ndjson(SynthConfig(people=args.people, seed=1), data)
        con = duckdb.connect()
        con.execute(f"SET threads = {args.threads}")
        out_dir = Path(tempfile.mkdtemp(prefix="bench-views-out-"))
        total_resources, total_seconds, total_cpu = 0, 0.0, 0.0
        for name, definition in VIEWS.items():
            view = parse_view(definition)
            path = data / f"{view.resource}.ndjson"
            _check_against_reference(view, path)
            with path.open("rb") as f:
                resources = sum(1 for _ in f)
            best, cpu, rows = float("inf"), 0.0, 0
            load = []
            for _ in range(args.rounds):
                load.append(os.getloadavg()[0])
                wall0, cpu0 = time.perf_counter(), time.process_time()
                rows = to_parquet(view, path, out_dir / f"{name}.parquet", con=con)
                wall, used = time.perf_counter() - wall0, time.process_time() - cpu0
                if wall < best:
                    best, cpu = wall, used
            total_resources += resources
            total_seconds += best
            total_cpu += cpu
            emit(figure="views_parquet", view=name, resource=view.resource,
                 resources=resources, rows=rows,
                 input_mb=round(path.stat().st_size / 1e6, 1), seconds=round(best, 3),
                 resources_per_s=round(resources / best), cpu_seconds=round(cpu, 3),
                 load_average=round(max(load), 1), threads=args.threads,
                 compiled=compile_view(view).fallback is None, target=TARGET,
                 meets_target=resources / best >= TARGET)
        emit(figure="views_parquet_all", people=args.people, resources=total_resources,
             seconds=round(total_seconds, 3),
             resources_per_s=round(total_resources / total_seconds),
             cpu_seconds=round(total_cpu, 3), threads=args.threads, target=TARGET,
             meets_target=total_resources / total_seconds >= TARGET)
        shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        if not args.data:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
