"""Bulk Data export throughput (issue 7): resources written per second by the export worker.

A synthetic population (``--people``, two years of check-ups, one province) is bulk-loaded
into a fresh database; then one export job per scenario is run by ``ExportWorker.run_once``
in this process (the worker a server runs; kick-off and polling are a few small requests on
top), files of at most 100,000 resources, pages of 1,000:

- ``system``: ``[base]/$export`` unrestricted (an administrator or a system client), every
  R4 type (the empty ones cost one index probe each);
- ``patient_commune``: ``Patient/$export`` by a health worker of the largest commune — their
  people's compartments only (every row probed for the Organization subtree);
- ``type_filter``: ``$export?_type=Observation&_typeFilter=Observation?code=<BP panel>``;
- ``since``: ``$export?_since=<the system export's transactionTime>`` after 1,000
  Observations were changed (an incremental export).

Each figure: resources and files written, seconds, resources/s, MB/s.

    python bench/bench_export.py [--backend sqlite|postgres] [--people 6000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from common import emit, fresh_db

from songkhoe.auth import AccessContext, ScopeSet
from songkhoe.auth.identities import ROLES
from songkhoe.rest.bulk_export import compartment_types, system_types
from songkhoe.rest.export_worker import ExportConfig, ExportWorker, access_json
from songkhoe.store import open_store
from songkhoe.store.bulk import load_parallel
from songkhoe.store.jobs import Jobs
from songkhoe.synth import SynthConfig, items


def populate(backend: str, people: int) -> tuple[str, int, float]:
    url = fresh_db(backend, "songkhoe_bench_export")
    open_store(url).close()
    config = SynthConfig(people=people, seed=7, provinces=(1,), communes_per_province=8,
                         years=2, as_of=date(2026, 11, 1))
    started = time.perf_counter()
    summary = load_parallel(url, items(config, workers=2), workers=2)
    assert not summary.rejected, summary.rejected[:3]
    if backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")  # as autovacuum would have by the time someone exports
    return url, summary.loaded, time.perf_counter() - started


def export(store: Any, folder: Path, params: dict[str, Any],
           access: AccessContext | None = None) -> tuple[dict[str, Any], float, int]:
    """Run one job to completion: (the finished job's output summary, seconds, bytes)."""
    jobs = Jobs(store)
    job = jobs.create(owner=None, request="bench", access=access_json(access),
                      params={"filters": {}, "members": None, **params})
    worker = ExportWorker(store, ExportConfig(folder))
    started = time.perf_counter()
    assert worker.run_once()
    seconds = time.perf_counter() - started
    done = jobs.get(job.id)
    assert done is not None and done.status == "completed", done
    size = sum(f.stat().st_size for f in (folder / job.id).iterdir())
    return {"job": done, "resources": sum(o["count"] for o in done.output),
            "files": len(done.output)}, seconds, size


def figure(backend: str, scenario: str, result: dict[str, Any], seconds: float, size: int,
           **more: Any) -> None:
    emit(name="bulk_export", backend=backend, scenario=scenario, resources=result["resources"],
         files=result["files"], seconds=round(seconds, 2),
         resources_per_s=round(result["resources"] / seconds),
         mb_per_s=round(size / 1e6 / seconds, 1), mb=round(size / 1e6, 1), **more)


def run(backend: str, people: int) -> None:
    url, loaded, loading = populate(backend, people)
    store = open_store(url)
    folder = Path(tempfile.mkdtemp(prefix="songkhoe-export-"))
    try:
        common = {"people": people, "stored": loaded, "load_s": round(loading, 1)}
        full, seconds, size = export(store, folder, {"level": "system", "types": system_types()})
        figure(backend, "system", full, seconds, size, **common)
        assert full["resources"] == loaded, (full["resources"], loaded)

        with store.reading() as tx:
            org, = tx.execute("SELECT org FROM owners WHERE type = 'Patient' GROUP BY org "
                              "ORDER BY COUNT(*) DESC LIMIT 1").fetchone()
        worker = AccessContext("ytx", "user", "health_worker", org,
                               ScopeSet.parse(ROLES["health_worker"]))
        result, seconds, size = export(store, folder, {"level": "patient", "members": "all",
                                                       "types": compartment_types()}, worker)
        figure(backend, "patient_commune", result, seconds, size, org=org, **common)

        code = "http://loinc.org|85354-9"  # blood pressure panel: one per adult check-up
        result, seconds, size = export(store, folder, {
            "level": "system", "types": ["Observation"],
            "filters": {"Observation": [[["code", code]]]}})
        figure(backend, "type_filter", result, seconds, size, filter=f"Observation?code={code}",
               **common)

        since = full["job"].transaction_time
        page = store.search("Observation", [("_count", "1000")])
        for stored in page.matches:
            store.update("Observation", stored.id, {**stored.resource, "status": "amended"})
        result, seconds, size = export(store, folder, {"level": "system",
                                                       "types": system_types(), "since": since})
        assert result["resources"] >= len(page.matches)
        figure(backend, "since", result, seconds, size, changed=len(page.matches), **common)
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--people", type=int, default=6000)
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgres"]:
        run(backend, args.people)
