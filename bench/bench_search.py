"""Search at a province's scale: latency of the issue-3 queries and counting throughput.

Data: ``songkhoe synth --people N --years 4 --coverage 0.85`` (the project's synthetic
population: Vietnamese names, CCCD/BHXH identifiers, patients managed by their commune health
station, four years of check-ups with vital signs, glucose, cholesterol, HbA1c…, and the
country's facilities and staff). 100,000 people give about 3.0 million Observations. The
NDJSON is written once under ``/tmp/songkhoe_bench_search/synth-N`` and loaded with the bulk
loader (``songkhoe.store.bulk.load_parallel``) into cached databases —
``/tmp/songkhoe_bench_search/p{N}.db`` and PostgreSQL ``songkhoe_bench_search_{N}`` — followed
by ANALYZE (VACUUM ANALYZE on PostgreSQL, for index-only scans); later runs reuse them
(``--reload`` rebuilds).

Figures (one JSON line each): for every query, p50/p95/p99/max latency in ms of
``Store.search`` over ``--runs`` calls with values chosen at random (seeded) from the data,
in-process, after a warm-up of a fifth as many calls (``--warm``: after reading the whole
database into the OS page cache, as a server's would be); for ``_summary=count`` also
``count_per_s``, matching resources counted per second. ``--plans`` writes each query's SQL
and plan (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL ``EXPLAIN (ANALYZE, BUFFERS)``) for
docs/performance.md.

    python bench/bench_search.py --patients 100000 [--backend sqlite|postgres] [--plans]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

from common import PG_ADMIN, ROOT, emit

from songkhoe.auth import ROLES, AccessContext, ScopeSet
from songkhoe.auth.policy import ContextAccess
from songkhoe.fhir.text import fold
from songkhoe.store import Store, open_store
from songkhoe.store.access import Access, acting_as
from songkhoe.store.bulk import load_parallel, read_resources
from songkhoe.store.schema import POSTGRES_TYPES, SQLITE_TYPES, index_tables
from songkhoe.store.search import parse
from songkhoe.store.search_exec import count_sql, page_sql, plan
from songkhoe.store.search_include import include_sql

WORK = Path("/tmp/songkhoe_bench_search")
YEARS, COVERAGE = 4, 0.85


# --- data -------------------------------------------------------------------------------------


def synth_dir(people: int) -> Path:
    """The synthetic population's NDJSON files (made once)."""
    out = WORK / f"synth-{people}"
    if not (out / "Patient.ndjson").exists():
        subprocess.run([sys.executable, "-m", "songkhoe.cli", "synth", "--people", str(people),
                        "--years", str(YEARS), "--coverage", str(COVERAGE), "--out", str(out)],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return out


def database(backend: str, people: int, reload: bool) -> str:
    """The URL of a loaded database for ``people`` patients (loading it when absent)."""
    WORK.mkdir(exist_ok=True)
    data = synth_dir(people)
    if backend == "sqlite":
        db = WORK / f"p{people}.db"
        url = f"sqlite:///{db}"
        done = db.with_suffix(".loaded")
        if reload or not done.exists():
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            done.unlink(missing_ok=True)
            _load(url, data, backend)
            done.touch()
        return url
    import psycopg

    name = f"songkhoe_bench_search_{people}"
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        loaded = False
        if exists and not reload:
            with psycopg.connect(url, autocommit=True) as db:
                loaded = bool(db.execute("SELECT 1 FROM pg_tables WHERE tablename = 'bench_loaded'")
                              .fetchone())
        if not loaded:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
            _load(url, data, backend)
            with psycopg.connect(url, autocommit=True) as db:
                db.execute("CREATE TABLE bench_loaded (at timestamptz DEFAULT now())")
    return url


def _index_statements(backend: str) -> list[str]:
    """The CREATE INDEX statements of the search-index tables, as the schema makes them —
    but the reference rows' ``rid`` index, which the loader reads to record who owns each
    resource (``songkhoe.store.access``)."""
    types = POSTGRES_TYPES if backend == "postgres" else SQLITE_TYPES
    return [s for s in index_tables(types) if s.startswith("CREATE INDEX")
            and not s.startswith("CREATE INDEX idx_reference_rid ")]


def _run(url: str, backend: str, statements: list[str]) -> None:
    if backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        for statement in statements:
            conn.execute(statement)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)


def _load(url: str, data: Path, backend: str) -> None:
    """Bulk-load the population. The search-index tables' indexes are dropped for the load and
    built afterwards (a sort each, instead of millions of inserts at random places in B-trees
    larger than the cache); the result is the schema the store makes."""
    start = time.perf_counter()
    open_store(url).close()  # create the schema before the workers start
    creates = _index_statements(backend)
    _run(url, backend, [f"DROP INDEX {c.split()[2]}" for c in creates])
    files = sorted(data.glob("*.ndjson"))
    summary = load_parallel(url, chain.from_iterable(read_resources(f) for f in files),
                            workers=os.cpu_count() or 2)
    seconds = time.perf_counter() - start
    assert not summary.rejected, summary.rejected[:3]
    index_start = time.perf_counter()
    _run(url, backend, creates)
    index_seconds = time.perf_counter() - index_start
    analyze_start = time.perf_counter()
    if backend == "sqlite":
        _run(url, backend, ["ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)"])
    else:
        _run(url, backend, ["VACUUM ANALYZE"])
    emit(name="search_bench_load", backend=backend, resources=summary.loaded,
         workers=os.cpu_count() or 2, load_s=round(seconds, 1),
         per_s=round(summary.loaded / seconds), index_build_s=round(index_seconds, 1),
         analyze_s=round(time.perf_counter() - analyze_start, 1))


# --- queries ---------------------------------------------------------------------------------

# (LOINC code, threshold) pairs a screening programme asks about: fasting glucose, total
# cholesterol, BMI, HbA1c, waist
THRESHOLDS = [("14771-0", "gt7"), ("14647-2", "gt6.2"), ("39156-5", "gt25"), ("4548-4", "gt6.5"),
              ("8280-0", "gt90")]
COUNTED = ["85354-9", "14771-0", "39156-5", "14647-2", "4548-4"]
Params = list[tuple[str, str]]


def queries(people: int) -> dict[str, tuple[str, Callable[[random.Random, Store], Params]]]:
    """name -> (resource type, a function choosing one request's parameters)."""

    def someone(rng: random.Random, store: Store) -> dict[str, Any]:
        return store.read("Patient", f"s1-p{rng.randrange(people)}").resource

    def identifier(rng: random.Random, store: Store) -> Params:
        ident = someone(rng, store)["identifier"][0]
        return [("identifier", f"{ident['system']}|{ident['value']}")]

    def name_birth(rng: random.Random, store: Store) -> Params:
        p = someone(rng, store)
        return [("name", fold(p["name"][0]["family"])), ("birthdate", p["birthDate"][:4])]

    def family_gender(rng: random.Random, store: Store) -> Params:
        p = someone(rng, store)
        return [("family", fold(p["name"][0]["family"])), ("gender", p["gender"])]

    def blood_pressures(rng: random.Random, store: Store) -> Params:
        return [("subject", f"Patient/s1-p{rng.randrange(people)}"),
                ("code", "http://loinc.org|85354-9"), ("date", "ge2026-01-01")]

    def above_threshold(rng: random.Random, store: Store) -> Params:
        code, threshold = rng.choice(THRESHOLDS)
        return [("code", f"http://loinc.org|{code}"), ("value-quantity", threshold),
                ("_count", "50")]

    def chained(rng: random.Random, store: Store) -> Params:
        org = someone(rng, store)["managingOrganization"]["reference"].split("/")[1]
        name = store.read("Organization", org).resource["name"]
        return [("subject:Patient.organization.name", name), ("_count", "50")]

    def revinclude(rng: random.Random, store: Store) -> Params:
        return [*identifier(rng, store), ("_revinclude", "Observation:subject")]

    def count(rng: random.Random, store: Store) -> Params:
        return [("code", f"http://loinc.org|{rng.choice(COUNTED)}"), ("_summary", "count")]

    return {
        "patient_identifier": ("Patient", identifier),
        "patient_name_birthdate": ("Patient", name_birth),
        "patient_family_gender": ("Patient", family_gender),
        "observation_subject_code_date": ("Observation", blood_pressures),
        "observation_code_value_count50": ("Observation", above_threshold),
        "observation_chain_two_levels": ("Observation", chained),
        "patient_identifier_revinclude": ("Patient", revinclude),
        "observation_code_summary_count": ("Observation", count),
    }


def warm(url: str, backend: str) -> None:
    """Read the database into the OS page cache (it fits in RAM), as a running server's would be:
    the figures measure search, not the disk of the VM."""
    start = time.perf_counter()
    if backend == "sqlite":
        with open(url.removeprefix("sqlite:///"), "rb") as handle:
            while handle.read(1 << 24):
                pass
    else:
        _run(url, backend, ["CREATE EXTENSION IF NOT EXISTS pg_prewarm",
                            "SELECT pg_prewarm(c.oid::regclass, 'read') FROM pg_class c WHERE "
                            "c.relkind IN ('r', 'i') AND c.relnamespace = 'public'::regnamespace"])
    emit(name="search_bench_warm", backend=backend, seconds=round(time.perf_counter() - start, 1))


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def as_user(spec: str) -> Access:
    """``ROLE@ORG`` as the store's access rules of such a user with the role's full scopes."""
    role, _, org = spec.partition("@")
    return ContextAccess(AccessContext(subject="bench", kind="user", role=role, org=org or None,
                                       scopes=ScopeSet.parse(ROLES[role])))


def measure(store: Store, backend: str, people: int, runs: int, only: set[str] | None,
            who: str | None = None) -> None:
    rng = random.Random(2026)
    for name, (rtype, choose) in queries(people).items():
        if only and name not in only:
            continue
        with acting_as(None):  # the values come from the whole population
            chosen = [choose(rng, store) for _ in range(runs + runs // 5)]
        for params in chosen[:runs // 5]:  # warm-up
            store.search(rtype, params)
        times, matched, included, counted = [], 0, 0, 0
        for params in chosen[runs // 5:]:
            start = time.perf_counter()
            result = store.search(rtype, params)
            times.append((time.perf_counter() - start) * 1000)
            matched += len(result.matches)
            included += len(result.included)
            counted += result.total or 0
        figure: dict[str, Any] = dict(
            name=f"search_{name}", backend=backend, patients=people, runs=runs, who=who,
            p50_ms=round(_percentile(times, 50), 2), p95_ms=round(_percentile(times, 95), 2),
            p99_ms=round(_percentile(times, 99), 2), max_ms=round(max(times), 2),
            mean_matches=round(matched / runs, 1), example=chosen[-1])
        if included:
            figure["mean_included"] = round(included / runs, 1)
        if counted:
            figure["mean_counted"] = round(counted / runs)
            figure["count_per_s"] = round(counted / (sum(times) / 1000))
        emit(**figure)


def plans(store: Store, backend: str, people: int, out: Path) -> None:
    """Each query's SQL and plan, for docs/performance.md."""
    rng = random.Random(7)
    lines = []
    with store._reading() as tx:  # noqa: SLF001 - the bench looks at the store's own SQL
        for name, (rtype, choose) in queries(people).items():
            for _ in range(50):  # show a typical request: one that finds something
                params = choose(rng, store)
                found = store.search(rtype, params)
                if (found.matches or found.total) and (found.included or
                                                      "_revinclude" not in dict(params)):
                    break
            q = parse(rtype, params, backend=backend)
            p = plan(q)
            sql, args = count_sql(q, p) if q.summary_count else page_sql(q, p, None, q.count + 1)
            result = store.search(rtype, params)  # warm
            statements = [("matches", sql, args)]
            if q.includes:
                rids = [row[0] for row in tx._sql(sql, args).fetchall()]  # noqa: SLF001
                statements.append(("includes", *include_sql(q.includes, rids, backend)))
            lines += [f"### {name}", "", f"`{rtype}?" + "&".join(f"{k}={v}" for k, v in params)
                      + f"` — {len(result.matches)} matches, {len(result.included)} included"
                      + (f", total {result.total}" if result.total is not None else ""), ""]
            for what, sql, args in statements:
                lines += [f"{what}:", "", "```sql", sql, "```", "", "```"]
                if backend == "sqlite":
                    for row in tx._sql("EXPLAIN QUERY PLAN " + sql, args).fetchall():  # noqa: SLF001
                        lines.append(f"{row[0]:>4} {row[1]:>4}  {row[3]}")
                else:
                    for row in tx._sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql,  # noqa: SLF001
                                       args).fetchall():
                        lines.append(row[0])
                lines += ["```", ""]
    out.write_text("\n".join(lines))
    print(f"plans written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=10000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--only", action="append", help="query names to run")
    parser.add_argument("--reload", action="store_true")
    parser.add_argument("--load-only", action="store_true")
    parser.add_argument("--plans", action="store_true")
    parser.add_argument("--as", dest="who", metavar="ROLE@ORG",
                        help="search as a user of that role and Organization (row-level access)")
    parser.add_argument("--warm", action="store_true",
                        help="read the database into the OS page cache first")
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgres"]:
        url = database(backend, args.patients, args.reload)
        if args.load_only:
            continue
        if args.warm:
            warm(url, backend)
        store = open_store(url)
        try:
            if args.plans:
                plans(store, backend, args.patients,
                      WORK / f"plans_{backend}_{args.patients}.md")
            else:
                with acting_as(as_user(args.who) if args.who else None):
                    measure(store, backend, args.patients, args.runs,
                            set(args.only) if args.only else None, args.who)
        finally:
            store.close()
