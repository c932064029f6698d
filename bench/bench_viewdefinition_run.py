"""``$viewdefinition-run`` through HTTP (issue 7): rows per second a real ``songkhoe serve``
streams back, from the request to the last byte.

A synthetic population (``--people``, two years of check-ups, one province, 8 communes) is
bulk-loaded into a fresh database; ``songkhoe serve`` (security on, 1 worker) answers
``POST [base]/$viewdefinition-run`` with an inline ``viewResource``; the client reads the
answer as a stream (httpx), then counts its rows. Scenarios, each the best of ``--rounds``:

- ``observations`` as ``csv``, ``ndjson``, ``json`` and ``parquet`` by an administrator (every
  Observation: one row each, 7 columns);
- ``patients`` as ``csv`` (one row per Patient, a collection column of given names);
- ``commune`` — the Observation view as ``csv`` by a health worker of the largest commune
  (every row read is probed for their Organization subtree);
- ``one_person`` — the Observation view with ``patient=`` one person (their compartment);
- ``group`` — the Observation view with ``group=`` a Group of the largest commune's people.

For the administrator's Observation run, ``store_read_s`` and ``duckdb_s`` split the work in
this process: the store's keyset pages of the type (``store.export``, as the operation reads
them) and the DuckDB runner over the same resources written to NDJSON. ``per_run`` compares,
in the same session, the two ways a run may get its DuckDB connection: a new in-memory
database (``duckdb.connect()``) or a cursor of one the process keeps (what the operation
does), each then running the view over an empty file (the fixed cost of a chunk); medians of
7. ``json_encoding`` compares, on the Observation view's rows, the two ways of writing NDJSON:
Python (``to_pylist`` and orjson per row) and DuckDB's ``to_json`` (what the operation does);
best of 5. Each figure carries the load average before and after it (the machine is shared).

    python bench/bench_viewdefinition_run.py [--backend sqlite|postgres] [--people 300]
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from common import emit, fresh_db

from songkhoe.analytics.duckdb_runner import execute
from songkhoe.auth import Auth
from songkhoe.store import open_store
from songkhoe.store.bulk import load_parallel
from songkhoe.store.export import Selection, read_page
from songkhoe.store.jobs import now_us
from songkhoe.synth import SynthConfig, items
from tests.server import ServerProcess

PASSWORD = "bench password 2026"
OBSERVATIONS = {
    "resourceType": "ViewDefinition", "name": "observations", "status": "active",
    "resource": "Observation", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
        {"name": "code", "path": "code.coding.first().code"},
        {"name": "status", "path": "status"},
        {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
        {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
        {"name": "unit", "path": "value.ofType(Quantity).code"}]}]}
PATIENTS = {
    "resourceType": "ViewDefinition", "name": "patients", "status": "active",
    "resource": "Patient", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "family", "path": "name.first().family"},
        {"name": "given", "path": "name.first().given", "collection": True},
        {"name": "gender", "path": "gender"},
        {"name": "birth_date", "path": "birthDate", "type": "date"},
        {"name": "organization", "path": "managingOrganization.getReferenceKey(Organization)"}]}]}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def populate(backend: str, people: int) -> tuple[str, int]:
    url = fresh_db(backend, "songkhoe_bench_vdrun")
    open_store(url).close()
    config = SynthConfig(people=people, seed=7, provinces=(1,), communes_per_province=8,
                         years=2, as_of=date(2026, 11, 1))
    summary = load_parallel(url, items(config, workers=2), workers=2)
    assert not summary.rejected, summary.rejected[:3]
    if backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
    return url, summary.loaded


def token(server: ServerProcess, user: str) -> str:
    r = httpx.post(f"{server.origin}/auth/token", data={
        "grant_type": "password", "username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return f"Bearer {r.json()['access_token']}"


def call(server: ServerProcess, bearer: str, view: dict[str, Any], fmt: str,
         *more: dict[str, Any]) -> tuple[float, bytes]:
    """One run read as a stream: (seconds to the last byte, the body)."""
    body = orjson.dumps({"resourceType": "Parameters", "parameter": [
        {"name": "viewResource", "resource": view}, *more]})
    started = time.perf_counter()
    with httpx.stream("POST", f"{server.base}/$viewdefinition-run?_format={fmt}", content=body,
                      headers={"Authorization": bearer, "content-type": "application/fhir+json"},
                      timeout=600) as r:
        assert r.status_code == 200, r.read()
        parts = list(r.iter_bytes())
    return time.perf_counter() - started, b"".join(parts)


def rows_of(fmt: str, content: bytes) -> int:
    if fmt == "csv":
        return sum(1 for _ in csv.reader(io.StringIO(content.decode()))) - 1
    if fmt == "ndjson":
        return content.count(b"\n")
    if fmt == "json":
        return len(orjson.loads(content))
    return int(pq.read_table(io.BytesIO(content)).num_rows)


def measure(server: ServerProcess, bearer: str, rounds: int, view: dict[str, Any], fmt: str,
            *more: dict[str, Any]) -> dict[str, Any]:
    before = load_average()
    times = []
    content = b""
    for _ in range(rounds):
        seconds, content = call(server, bearer, view, fmt, *more)
        times.append(seconds)
    rows = rows_of(fmt, content)
    best = min(times)
    return {"format": fmt, "rows": rows, "best_s": round(best, 3),
            "runs_s": [round(t, 3) for t in times], "rows_per_s": round(rows / best),
            "mb": round(len(content) / 1e6, 2), "load_before": before,
            "load_after": load_average()}


def breakdown(url: str, view: dict[str, Any]) -> dict[str, Any]:
    """Seconds to read the view's type as the operation does, and to run DuckDB over it."""
    store = open_store(url)
    folder = Path(tempfile.mkdtemp(prefix="songkhoe-bench-vdrun-"))
    path = folder / "resources.ndjson"
    try:
        started = time.perf_counter()
        selection = Selection(view["resource"], until=now_us())
        after, count = None, 0
        with path.open("wb") as out:
            while True:
                with store.reading() as tx:
                    rows = read_page(tx, selection, after, 1000)
                if not rows:
                    break
                for _, _, content in rows:
                    out.write(content + b"\n")
                count += len(rows)
                after = (rows[-1][0], rows[-1][1])
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        result = execute(view, path)
        duckdb_s = time.perf_counter() - started
        emit(scenario="json_encoding", rows=result.table.num_rows, **json_encoding(result.table))
        return {"resources": count, "store_read_s": round(read_s, 3),
                "duckdb_s": round(duckdb_s, 3), "duckdb_rows": result.table.num_rows}
    finally:
        store.close()
        path.unlink(missing_ok=True)
        folder.rmdir()


def json_encoding(table: Any) -> dict[str, Any]:
    """Best seconds of NDJSON from an Arrow table by Python and by DuckDB (same bytes)."""
    con = duckdb.connect()
    before = load_average()

    def by_python() -> bytes:
        return b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE)
                        for r in table.to_pylist())

    def by_duckdb() -> bytes:
        con.register("_rows", table)
        texts = con.sql("SELECT CAST(to_json(s) AS VARCHAR) FROM _rows AS s").to_arrow_table()
        con.unregister("_rows")
        return "".join(f"{t}\n" for t in texts.column(0).to_pylist()).encode()

    def best(encode: Any) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            encode()
            times.append(time.perf_counter() - started)
        return round(min(times), 3)

    try:
        assert by_python() == by_duckdb()
        return {"python_s": best(by_python), "duckdb_s": best(by_duckdb),
                "load_before": before, "load_after": load_average()}
    finally:
        con.close()


def per_run(view: dict[str, Any]) -> dict[str, Any]:
    """Median ms of a new database then an empty run, against a cursor then an empty run."""
    folder = Path(tempfile.mkdtemp(prefix="songkhoe-bench-vdrun-"))
    empty = folder / "empty.ndjson"
    empty.touch()
    database = duckdb.connect()
    before = load_average()

    def timed(connect: Any) -> float:
        times = []
        for _ in range(7):
            started = time.perf_counter()
            con = connect()
            execute(view, empty, con=con)
            con.close()
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1000, 1)

    try:
        timed(database.cursor)  # warm: DuckDB's JSON reader loaded once
        return {"new_database_ms": timed(duckdb.connect), "cursor_ms": timed(database.cursor),
                "load_before": before, "load_after": load_average()}
    finally:
        database.close()
        empty.unlink()
        folder.rmdir()


def run(backend: str, people: int, rounds: int) -> None:
    url, loaded = populate(backend, people)
    store = open_store(url)
    with store.reading() as tx:
        org, = tx.execute("SELECT org FROM owners WHERE type = 'Patient' GROUP BY org "
                          "ORDER BY COUNT(*) DESC LIMIT 1").fetchone()
        person, = tx.execute("SELECT patient FROM owners WHERE type = 'Observation' "
                             "GROUP BY patient ORDER BY COUNT(*) DESC LIMIT 1").fetchone()
        members = [r[0] for r in tx.execute("SELECT patient FROM owners WHERE type = 'Patient' "
                                            "AND org = ? ORDER BY patient", [org]).fetchall()]
    store.update("Group", "bench-commune", {
        "resourceType": "Group", "id": "bench-commune", "type": "person", "actual": True,
        "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members]})
    auth = Auth(store)
    auth.identities.add_user("bench-admin", PASSWORD, "administrator", None)
    auth.identities.add_user("bench-worker", PASSWORD, "health_worker", org)
    store.close()
    common = {"name": "viewdefinition_run", "backend": backend, "people": people,
              "stored": loaded}
    emit(scenario="breakdown", **common, **breakdown(url, OBSERVATIONS))
    emit(scenario="per_run", **common, **per_run(OBSERVATIONS))
    server = ServerProcess(url, workers=1, secure=True).start()
    try:
        admin, worker = token(server, "bench-admin"), token(server, "bench-worker")
        call(server, admin, OBSERVATIONS, "csv")  # the server's first run loads DuckDB
        for fmt in ("csv", "ndjson", "json", "parquet"):
            emit(scenario="observations", **common, **measure(server, admin, rounds,
                                                             OBSERVATIONS, fmt))
        emit(scenario="patients", **common, **measure(server, admin, rounds, PATIENTS, "csv"))
        emit(scenario="commune", org=org, **common,
             **measure(server, worker, rounds, OBSERVATIONS, "csv"))
        emit(scenario="one_person", patient=person, **common, **measure(
            server, admin, rounds, OBSERVATIONS, "csv",
            {"name": "patient", "valueReference": {"reference": f"Patient/{person}"}}))
        emit(scenario="group", members=len(members), **common, **measure(
            server, admin, rounds, OBSERVATIONS, "csv",
            {"name": "group", "valueReference": {"reference": "Group/bench-commune"}}))
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgres"]:
        run(backend, args.people, args.rounds)
