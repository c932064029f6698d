"""Issue 6 targets: the programmes engine in batch, worklists, and a check-up's round trip.

- ``batch``: a synthetic population (``--people``, two years of check-ups and hypertension
  follow-up) bulk-loaded, then ``songkhoe programmes run`` as the command runs it (two worker
  processes, blocks of 500 people): the first run (every output written); a second run
  (nothing changed: everyone skipped); a full recomputation (``--full``: everyone read and
  evaluated, nothing to write — what a definition change that changes no output costs); a
  day's new data (a blood pressure for 1% of people, stored without deriving: those people
  evaluated and their outputs written); and a real definition change (the hypertension
  crisis threshold lowered from 180 to 170 mmHg: everyone evaluated, the new referrals
  written). Wall time, and CPU time of the workers
  (the figure that does not depend on what else the machine runs: CPU ÷ 2 cores is the wall
  time on two idle cores). Also the engine alone (``evaluate`` per person, no database), and
  the raw engine limit of the first run: the rows it wrote, replayed into the store as it
  found it with nothing else (SQLite ``executemany``; PostgreSQL ``COPY`` over two
  connections). Target: 1 million people recomputed < 5 minutes.
- ``worklist``: one commune of ``--commune-people`` people (target 10,000), every list of the
  hypertension programmes, ``--queries`` times each: p50/p95 ms. Target p95 < 150 ms.
- ``checkup``: the server (security on, 1 worker) and ``POST /api/checkups`` of a full adult
  check-up for random people of that commune, one client: p50/p95 ms. Target p95 < 100 ms.

    python bench/bench_programmes.py [--backend sqlite|postgres] [--people 20000]
                                     [--commune-people 10000] [--only batch|worklist|checkup]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
from common import PG_ADMIN, emit, fresh_db
from tests.server import ServerProcess

from songkhoe.auth import Auth
from songkhoe.programs.apply import load_facts
from songkhoe.programs.batch import Ran, run_batch, tidy
from songkhoe.programs.cli import definitions, run_part
from songkhoe.programs.definition import DATA
from songkhoe.programs.engine import evaluate
from songkhoe.programs.worklist import LISTS, worklist
from songkhoe.store import open_store
from songkhoe.store.bulk import load_parallel
from songkhoe.synth import SynthConfig, items

PROGRAMMES = definitions()
TODAY = date(2026, 11, 23)


def populate(backend: str, name: str, people: int, communes: int | None) -> tuple[str, float]:
    url = fresh_db(backend, name)
    open_store(url).close()
    config = SynthConfig(people=people, seed=11, provinces=(1,), communes_per_province=communes,
                         years=2, as_of=date(2026, 11, 1))
    started = time.perf_counter()
    summary = load_parallel(url, items(config, workers=2), workers=2)
    assert not summary.rejected, summary.rejected[:3]
    return url, time.perf_counter() - started


def batch(backend: str, people: int) -> None:
    url, loading = populate(backend, "songkhoe_bench_programmes", people, None)
    store = open_store(url)
    try:
        with store.reading() as tx:
            ids = tx.patient_ids()
        with store.reading() as tx:
            facts = load_facts(tx, ids[: min(len(ids), 5000)])
    finally:
        store.close()
    started = time.process_time()
    for f in facts.values():
        evaluate(PROGRAMMES, f)
    engine = (time.process_time() - started) / len(facts)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        changed = Path(tmp) / "programmes"
        shutil.copytree(DATA, changed)
        path = changed / "hypertension-screening.toml"
        path.write_text(path.read_text(encoding="utf-8").replace(
            'when = "%sbp >= 180 or %dbp >= 120"', 'when = "%sbp >= 170 or %dbp >= 120"'),
            encoding="utf-8")
        # the store as the first run finds it, for the raw engine limit of its writes
        if backend == "sqlite":
            before = str(Path(tmp) / "before.db")
            _copy_sqlite(url.removeprefix("sqlite:///"), Path(before))
        else:
            before = _copy_postgres(url)
        for name, folder, full in (("first_run", None, False), ("unchanged", None, False),
                                   ("full", None, True), ("new_day", None, False),
                                   ("definition_changed", str(changed), False)):
            if name == "new_day":
                _new_day(url, ids)
            load = os.getloadavg()[0]
            started = time.perf_counter()
            ran = _parallel(url, ids, folder, full)
            seconds = time.perf_counter() - started
            figures[name] = ran
            if name == "first_run" and backend == "sqlite":
                _raw_writes(Path(before), url.removeprefix("sqlite:///"), len(ids))
            elif name == "first_run":
                _raw_writes_postgres(before, url, len(ids))
            emit(name=f"programmes_batch_{name}", backend=backend, people=len(ids),
                 evaluated=ran.evaluated, written=sum(ran.written.values()),
                 wall_s=round(seconds, 1), cpu_s=round(ran.cpu, 1),
                 cpu_us_per_person=round(ran.cpu / len(ids) * 1e6),
                 wall_1m_min=round(seconds * 1_000_000 / len(ids) / 60, 1),
                 cpu_1m_min_on_2_cores=round(ran.cpu / 2 * 1_000_000 / len(ids) / 60, 1),
                 load_average=round(load, 1), target_1m_min=5)
    assert figures["unchanged"].evaluated == 0 and not figures["unchanged"].written
    assert figures["full"].evaluated == len(ids) and not figures["full"].written
    assert figures["new_day"].evaluated == len(ids) // 100, figures["new_day"]
    emit(name="programmes_engine", backend=backend, people=len(facts), load_s=round(loading, 1),
         engine_us_per_person=round(engine * 1e6))


def _copy_sqlite(path: str, to: Path) -> None:
    """A consistent copy of a SQLite store (its WAL folded in)."""
    source, target = sqlite3.connect(path), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


#: tables whose rows a first run adds for the resources it creates (by their new rids)
_BY_RID = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_quantity", "idx_uri",
           "owners")


def _raw_writes(before: Path, after: str, people: int) -> None:
    """The raw engine limit of a first run: the rows it wrote (read from the store ``after``
    it) inserted into the store as it found them (``before``) by plain ``executemany``, one
    transaction per 500 people as the run commits — no parsing, validation, evaluation or
    lookups. What any first run writing these rows to SQLite costs at least."""
    conn = sqlite3.connect(before, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("ATTACH DATABASE ? AS a", [after])
    top = conn.execute("SELECT MAX(rid) FROM main.resources").fetchone()[0]
    seq = conn.execute("SELECT COALESCE(MAX(change_seq), 0) FROM main.history").fetchone()[0]
    work: list[tuple[str, list[tuple[Any, ...]]]] = [
        ("INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?)", conn.execute(
            "SELECT * FROM a.resources WHERE rid > ?", [top]).fetchall()),
        ("UPDATE resources SET version = ?, last_updated = ?, deleted = ? WHERE rid = ?",
         conn.execute("SELECT n.version, n.last_updated, n.deleted, n.rid FROM a.resources n "
                      "JOIN main.resources o ON o.rid = n.rid WHERE n.version <> o.version"
                      ).fetchall()),
        ("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?)", conn.execute(
            "SELECT * FROM a.history WHERE change_seq > ?", [seq]).fetchall())]
    for table in _BY_RID:
        rows = conn.execute(f"SELECT * FROM a.{table} WHERE rid > ?", [top]).fetchall()
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            work.append((f"INSERT INTO {table} VALUES ({marks})", rows))
    for table, width in (("programme_status", 13), ("programme_settled", 4)):
        work.append((f"INSERT INTO {table} VALUES ({', '.join('?' * width)})",
                     conn.execute(f"SELECT * FROM a.{table}").fetchall()))
    conn.execute("DETACH DATABASE a")
    blocks = max(1, people // 500)
    rows = sum(len(r) for _, r in work)
    started, cpu = time.perf_counter(), time.process_time()
    for block in range(blocks):
        conn.execute("BEGIN IMMEDIATE")
        for sql, all_rows in work:
            size = -(-len(all_rows) // blocks)
            conn.executemany(sql, all_rows[block * size:(block + 1) * size])
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    emit(name="programmes_batch_first_run_raw_writes", backend="sqlite", people=people,
         rows=rows, wall_s=round(seconds, 1), cpu_s=round(cpu, 1),
         cpu_us_per_person=round(cpu / people * 1e6),
         wall_1m_min=round(seconds * 1_000_000 / people / 60, 1), target_1m_min=5)


def _copy_postgres(url: str) -> str:
    """A copy of a PostgreSQL store (``CREATE DATABASE … TEMPLATE``): its URL."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}_before")
        conn.execute(f"CREATE DATABASE {name}_before TEMPLATE {name}")
    return f"{url}_before"


def _raw_writes_postgres(before: str, after: str, people: int) -> None:
    """The raw engine limit of a first run on PostgreSQL: the rows it wrote (read from the
    store ``after`` it as binary ``COPY`` data, in row-id order, before the clock starts)
    written into the store as it found them (``before``, then dropped) by binary ``COPY``, as
    the store writes them, and the versions it moved by one ``UPDATE`` per block; one
    transaction per 500 people, over two connections as the run's two workers. No parsing,
    validation, evaluation, lookups or locks, and next to no client CPU: what any first run
    writing these rows to PostgreSQL on these cores costs at least."""
    import psycopg

    with psycopg.connect(before) as conn:
        top = conn.execute("SELECT MAX(rid) FROM resources").fetchone()[0]
        loaded = conn.execute("SELECT MAX(last_updated) FROM history").fetchone()[0]
    work: list[tuple[str, bytes, list[bytes]]] = []
    with psycopg.connect(after) as conn:
        now = conn.execute("SELECT MAX(last_updated) FROM history").fetchone()[0]
        moved = [rid for rid, in conn.execute(
            "SELECT rid FROM resources WHERE rid <= %s AND last_updated > %s ORDER BY rid",
            [top, loaded])]
        history = "rid, version, type, id, last_updated, method, content"
        for table, columns, where, order in (
                ("resources", "*", f"rid > {top}", "rid"),
                ("history", history, f"last_updated > {loaded}", "rid"),
                *((t, "*", f"rid > {top}", "rid") for t in _BY_RID),
                ("programme_status", "*", "TRUE", "patient"),
                ("programme_settled", "*", "TRUE", "patient")):
            names = columns if columns != "*" else ", ".join(
                c.name for c in conn.execute(f"SELECT * FROM {table} LIMIT 0").description)
            data = bytearray()
            with conn.cursor().copy(f"COPY (SELECT {names} FROM {table} WHERE {where} "
                                    f"ORDER BY {order}) TO STDOUT (FORMAT BINARY)") as copy:
                for chunk in copy:
                    data += chunk
            work.append((f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)",
                         *_binary_tuples(bytes(data))))
    blocks = max(1, people // 500)

    def write(first: int) -> None:
        with psycopg.connect(before) as conn:
            for block in range(first, blocks, 2):
                with conn.transaction():
                    for statement, header, tuples in work:
                        size = -(-len(tuples) // blocks)
                        with conn.cursor().copy(statement) as copy:
                            copy.write(header + b"".join(tuples[block * size:(block + 1) * size])
                                       + b"\xff\xff")
                    size = -(-len(moved) // blocks)
                    conn.execute("UPDATE resources SET version = version + 1, "
                                 "last_updated = %s WHERE rid = ANY(%s)",
                                 [now, moved[block * size:(block + 1) * size]])

    started = time.perf_counter()
    threads = [threading.Thread(target=write, args=(first,)) for first in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    rows = sum(len(tuples) for _, _, tuples in work) + len(moved)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {before.rsplit('/', 1)[1]}")
    emit(name="programmes_batch_first_run_raw_writes", backend="postgres", people=people,
         rows=rows, wall_s=round(seconds, 1),
         wall_1m_min=round(seconds * 1_000_000 / people / 60, 1), target_1m_min=5)


def _binary_tuples(data: bytes) -> tuple[bytes, list[bytes]]:
    """The header and each row of binary ``COPY`` data (PostgreSQL, "COPY", Binary Format:
    an 11-byte signature, flags, a header extension; each tuple a 16-bit field count and each
    field's 32-bit length, -1 for NULL, and bytes; a trailer of -1)."""
    start = 19 + int.from_bytes(data[15:19], "big")
    tuples, at = [], start
    while (fields := int.from_bytes(data[at:at + 2], "big", signed=True)) != -1:
        end = at + 2
        for _ in range(fields):
            length = int.from_bytes(data[end:end + 4], "big", signed=True)
            end += 4 + max(length, 0)
        tuples.append(data[at:end])
        at = end
    return data[:start], tuples


def _new_day(url: str, ids: list[str]) -> None:
    """A day's new data: a blood pressure for 1% of people, stored without deriving (as a
    bulk load stores it), for the next run to evaluate."""
    rng = random.Random(5)
    loinc = "http://loinc.org"
    store = open_store(url)
    try:
        with store.transaction(derive=False) as tx:
            for pid in rng.sample(ids, len(ids) // 100):
                tx.create({
                    "resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs"}]}],
                    "code": {"coding": [{"system": loinc, "code": "85354-9"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": TODAY.isoformat(),
                    "component": [_mmhg("8480-6", rng.randint(110, 190)),
                                  _mmhg("8462-4", rng.randint(65, 115))]})
    finally:
        store.close()


def _mmhg(code: str, value: int) -> dict[str, Any]:
    return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "unit": "mm[Hg]",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}


def _parallel(url: str, ids: list[str], folder: str | None, full: bool) -> Ran:
    """``songkhoe programmes run --workers 2`` (its parts and blocks, then ``tidy``)."""
    ran = Ran()
    step = 2000
    with ProcessPoolExecutor(2) as pool:
        for part in pool.map(run_part, [(url, folder, ids[i:i + step], 500, full)
                                        for i in range(0, len(ids), step)]):
            ran.add(part)
    tidy(url, ran)
    return ran


def _commune(backend: str, people: int) -> tuple[str, str]:
    url, _ = populate(backend, "songkhoe_bench_worklist", people, 1)
    store = open_store(url)
    try:
        with store.reading() as tx:
            ids = tx.patient_ids()
            org = tx.execute("SELECT org FROM owners WHERE type = 'Patient' GROUP BY org "
                             "ORDER BY COUNT(*) DESC LIMIT 1").fetchone()[0]
        run_batch(store, PROGRAMMES, ids)
    finally:
        store.close()
    return url, org


def worklists(url: str, backend: str, org: str, queries: int) -> None:
    store = open_store(url)
    try:
        with store.reading() as tx:
            size = tx.execute("SELECT COUNT(*) FROM owners WHERE type = 'Patient' AND org = ?",
                              [org]).fetchone()[0]
        for pid in ("hypertension-screening", "hypertension-care"):
            for kind in LISTS:
                times, total = [], 0
                for _ in range(queries):
                    started = time.perf_counter()
                    with store.reading() as tx:
                        total = worklist(tx, PROGRAMMES[pid], kind, today=TODAY, org=org).total
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                emit(name="worklist_ms", backend=backend, programme=pid, list=kind,
                     commune_people=size, entries=total, p50=round(statistics.median(times), 1),
                     p95=round(times[int(len(times) * 0.95) - 1], 1), queries=queries,
                     target_p95_ms=150)
    finally:
        store.close()


def checkups(url: str, backend: str, org: str, count: int) -> None:
    store = open_store(url)
    auth = Auth(store)
    auth.identities.add_user(f"ytx-bench-{org}", "bench password 2026", "health_worker", org)
    with store.reading() as tx:
        ids = [r[0] for r in tx.execute("SELECT patient FROM owners WHERE type = 'Patient' "
                                        "AND org = ?", [org]).fetchall()]
    store.close()
    server = ServerProcess(url, workers=1, secure=True).start()
    try:
        token = httpx.post(f"http://127.0.0.1:{server.port}/auth/token", data={
            "grant_type": "password", "username": f"ytx-bench-{org}",
            "password": "bench password 2026"}).json()["access_token"]
        rng = random.Random(3)
        times: list[float] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}",
                          headers={"Authorization": f"Bearer {token}"}) as client:
            for n in range(count + 20):
                body = orjson.dumps({"patient": rng.choice(ids), "date": TODAY.isoformat(),
                                     "values": _values(rng)})
                started = time.perf_counter()
                answer = client.post("/api/checkups", content=body,
                                     headers={"Content-Type": "application/json"})
                if n >= 20:  # warm-up excluded
                    times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 201, answer.text
    finally:
        server.stop()
    times.sort()
    emit(name="checkup_round_trip_ms", backend=backend, checkups=count,
         p50=round(statistics.median(times), 1), p95=round(times[int(len(times) * 0.95) - 1], 1),
         target_p95_ms=100, security="on", workers=1)


def _values(rng: random.Random) -> dict[str, Any]:
    return {"height": round(rng.uniform(145, 180), 1), "weight": round(rng.uniform(40, 90), 1),
            "waist": rng.randint(60, 105), "heart_rate": rng.randint(55, 110),
            "sbp": rng.randint(100, 190), "dbp": rng.randint(60, 115),
            "glucose": round(rng.uniform(4, 12), 1), "cholesterol": round(rng.uniform(3, 8), 1),
            "smoking": rng.choice(["never", "former", "current"])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--people", type=int, default=20000)
    parser.add_argument("--commune-people", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--checkups", type=int, default=200)
    parser.add_argument("--only", choices=["batch", "worklist", "checkup"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["batch", "worklist", "checkup"])
    for backend in args.backend or ["sqlite", "postgres"]:
        if "batch" in only:
            batch(backend, args.people)
        if only & {"worklist", "checkup"}:
            url, org = _commune(backend, args.commune_people)
            if "worklist" in only:
                worklists(url, backend, org, args.queries)
            if "checkup" in only:
                checkups(url, backend, org, args.checkups)
