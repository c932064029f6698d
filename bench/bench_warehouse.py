"""The analytics warehouse (issue 7): a full build from the store, and a refresh after 1% of
the data changed.

A synthetic population (``--people``, one province, one year of check-ups) is bulk-loaded into
a fresh database. The views are ``--views DIR`` (default: the three of ``bench_views.py``:
patient demographics, vital signs, conditions). Each round, in one session so that the load
of the machine weighs on both alike:

1. ``store_read``: the store alone — its live resources of the views' types read into NDJSON
   files (``changes.current``, as a full build reads them); ``runner``: the DuckDB runner
   alone (``to_parquet``) over those files, as ``bench_views.py`` measures it — a full build
   does both, the store read one chunk ahead of the runner;
2. ``full``: ``warehouse.refresh`` into an empty folder — resources/s, and the part spent
   reading the store and writing the NDJSON chunks (``read_seconds``);
3. ``changes``: 1% (``--change``) of the resources of the views' types changed through the
   store (80% updated, 10% deleted, 10% new), 500 per transaction;
4. ``refresh``: ``warehouse.refresh`` of the folder of step 2 — only the changes; its time as
   a share of the full build's (target ≤ 5%). The rows are then checked equal to a full
   build's (counts and a hash of every row, per view);
5. ``compaction``: another 1% changed and a refresh that also merges the deltas into a new
   base (``max_deltas=1``).

With the indicators' views (``--views src/songkhoe/analytics/views``), the indicators' base is
also built after step 2 (``indicators_base_full``) and brought up to the refresh of step 4
(``indicators_base_update``: the people built again, its time as a share of the base's full
build, and whether it equals a base built afresh). The Organizations are then left out of step
3: a change of one builds the base again in full.

``cpu_seconds`` is this process's CPU time (DuckDB's threads included, PostgreSQL's server
not), which other jobs on the machine disturb less than the wall clock.

``--write-cost PEOPLE`` measures instead what the change feed costs writes: bulk loads into
fresh databases with the feed and without it (``change_feed_write_cost``).

Figures (one JSON line each, with ``load_average``): ``warehouse_store_read``,
``warehouse_runner``,
``warehouse_full``, ``warehouse_refresh`` (with ``ratio``), ``warehouse_compaction``,
``indicators_base_full``, ``indicators_base_update``.

    python bench/bench_warehouse.py [--backend sqlite|postgres|both] [--people 20000]
                                    [--rounds 3] [--views DIR] [--change 0.01] [--db URL]
    python bench/bench_warehouse.py --write-cost 3000 [--backend …] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
from bench_views import VIEWS
from common import emit, fresh_db

from songkhoe.analytics import warehouse
from songkhoe.analytics.kept_base import PERSON_COLUMN, KeptBase
from songkhoe.analytics.duckdb_runner import to_parquet
from songkhoe.store import Store, open_store
from songkhoe.store.bulk import load_parallel
from songkhoe.store.changes import current
from songkhoe.synth import SynthConfig, items

TARGET_RATIO = 0.05
AS_OF = date(2026, 11, 1)
RUNNER_TARGET = 300_000


def populate(backend: str, people: int) -> str:
    url = fresh_db(backend, "songkhoe_bench_warehouse")
    open_store(url).close()
    config = SynthConfig(people=people, seed=3, provinces=(1,), communes_per_province=8,
                         as_of=AS_OF)
    summary = load_parallel(url, items(config, workers=2), workers=2)
    assert not summary.rejected, summary.rejected[:3]
    if backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")  # as autovacuum would have by the time of a refresh
    return url


def change(store: Store, types: list[str], share: float, round_: int) -> int:
    """Change ``share`` of the live resources of ``types``: 80% updated, 10% deleted, 10% new
    (copies of others); returns how many."""
    with store.backend.transaction(write=False) as conn:
        marks = ", ".join("?" * len(types))
        rows = store.backend.execute(conn, f"SELECT type, id FROM resources WHERE type IN "
                                           f"({marks}) AND NOT deleted ORDER BY rid",
                                     types).fetchall()
    step = max(1, round(1 / share))
    picked = rows[round_ % step::step]
    for start in range(0, len(picked), 500):
        with store.transaction() as tx:
            for n, (rtype, id) in enumerate(picked[start:start + 500], start=start):
                resource = tx.read(rtype, id).resource
                if n % 10 == 0:
                    tx.delete(rtype, id)
                elif n % 10 == 1:
                    resource.pop("id")
                    tx.create(resource)
                else:
                    tx.update(rtype, id, _modified(resource, n))
    return len(picked)


def _modified(resource: dict[str, Any], n: int) -> dict[str, Any]:
    if "valueQuantity" in resource:
        resource["valueQuantity"]["value"] = resource["valueQuantity"].get("value", 0) + 1
    elif resource["resourceType"] == "Patient":
        resource["active"] = not resource.get("active", True)
    else:
        resource.setdefault("meta", {})["tag"] = [{"system": "urn:songkhoe:bench",
                                                  "code": f"changed-{n}"}]
    return resource


def _base_rows(kept: KeptBase) -> tuple[tuple[int, int], ...]:
    """(rows, sum of row hashes) of the indicators' base tables, kept or built afresh."""
    con = kept.get(AS_OF)[0]
    return tuple(tuple(con.execute(f"SELECT count(*), coalesce(sum(hash(b)), 0) FROM "
                                   f"temp.{t} AS b").fetchone())
                 for t in ("ind_base", "ind_visits"))


def fingerprint(folder: Path) -> dict[str, tuple[int, int]]:
    """(rows, sum of row hashes) per view: equal for equal multisets of rows."""
    with warehouse.connect(folder) as db:
        names = [r[0] for r in db.execute("SELECT view_name FROM duckdb_views() "
                                          "WHERE NOT internal").fetchall()]
        return {n: tuple(db.execute(f'SELECT count(*), coalesce(sum(hash(v)), 0) FROM '
                                    f'"{n}" AS v').fetchone()) for n in names}


def store_alone(store: Store, types: list[str], work: Path) -> tuple[int, float]:
    """(resources, seconds) of reading the live resources of ``types`` from the store into
    NDJSON files (``changes.current``, as a full build reads them)."""
    started, resources = time.perf_counter(), 0
    for rtype in types:
        with (work / f"{rtype}.ndjson").open("wb") as out:
            for count, block in current(store, rtype):
                out.write(block)
                resources += count
    return resources, time.perf_counter() - started


def runner_alone(views: dict[str, warehouse.WarehouseView], work: Path,
                 threads: int) -> tuple[int, float]:
    """(resources, seconds) of ``to_parquet`` over the NDJSON files of the views' types."""
    files = {v.resource: work / f"{v.resource}.ndjson" for v in views.values()}
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    resources, seconds = 0, 0.0
    for name, view in views.items():
        path = files[view.resource]
        with path.open("rb") as f:
            resources += sum(1 for _ in f)
        started = time.perf_counter()
        to_parquet(view.keyed, path, work / f"{name}.parquet", con=con)
        seconds += time.perf_counter() - started
    con.close()
    return resources, seconds


def run(backend: str, args: argparse.Namespace, views_dir: Path) -> None:
    url = args.db or populate(backend, args.people)
    store = open_store(url)
    views = warehouse.load_views(views_dir)
    types = sorted({v.resource for v in views.values()})
    work = Path(tempfile.mkdtemp(prefix="bench-warehouse-"))
    try:
        for round_ in range(args.rounds):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            load = [os.getloadavg()[0]]
            (work / "runner").mkdir()
            resources, seconds = store_alone(store, types, work / "runner")
            emit(figure="warehouse_store_read", backend=backend, people=args.people,
                 resources=resources, seconds=round(seconds, 3),
                 resources_per_s=round(resources / seconds),
                 load_average=round(os.getloadavg()[0], 1), round=round_)
            resources, seconds = runner_alone(views, work / "runner", args.threads)
            emit(figure="warehouse_runner", backend=backend, people=args.people,
                 resources=resources, seconds=round(seconds, 3),
                 resources_per_s=round(resources / seconds), target=RUNNER_TARGET,
                 load_average=round(os.getloadavg()[0], 1), round=round_)
            load.append(os.getloadavg()[0])
            cpu = time.process_time()
            full = warehouse.refresh(store, work / "wh", views_dir, threads=args.threads)
            full_cpu = time.process_time() - cpu
            read = sum(full.read.values())
            emit(figure="warehouse_full", backend=backend, people=args.people, resources=read,
                 rows=sum(v.rows for v in full.views.values()), seconds=round(full.seconds, 3),
                 resources_per_s=round(read / full.seconds),
                 read_seconds=round(full.read_seconds, 3),
                 read_resources_per_s=round(read / full.read_seconds),
                 cpu_seconds=round(full_cpu, 3),
                 load_average=round(os.getloadavg()[0], 1), round=round_)
            kept = KeptBase(work / "wh") if set(PERSON_COLUMN) <= set(views) else None
            if kept is not None:
                started = time.perf_counter()
                kept.get(AS_OF)
                base_seconds = time.perf_counter() - started
                emit(figure="indicators_base_full", backend=backend, people=args.people,
                     seconds=round(base_seconds, 3), load_average=round(os.getloadavg()[0], 1),
                     round=round_)
            started = time.perf_counter()
            # with the base kept, the Organizations stay (a change of one rebuilds it in full)
            changed = change(store, [t for t in types if kept is None or t != "Organization"],
                             args.change, round_)
            writes = time.perf_counter() - started
            load.append(os.getloadavg()[0])
            cpu = time.process_time()
            delta = warehouse.refresh(store, work / "wh", views_dir, threads=args.threads)
            delta_cpu = time.process_time() - cpu
            warehouse.refresh(store, work / "check", views_dir, threads=args.threads)
            same = fingerprint(work / "wh") == fingerprint(work / "check")
            emit(figure="warehouse_refresh", backend=backend, people=args.people,
                 changed=changed, of=read, write_seconds=round(writes, 2),
                 read=sum(delta.read.values()),
                 rows=sum(v.rows for v in delta.views.values()),
                 seconds=round(delta.seconds, 3), full_seconds=round(full.seconds, 3),
                 ratio=round(delta.seconds / full.seconds, 4),
                 cpu_seconds=round(delta_cpu, 3), cpu_ratio=round(delta_cpu / full_cpu, 4),
                 target=TARGET_RATIO,
                 meets_target=delta.seconds / full.seconds <= TARGET_RATIO,
                 equals_full_build=same, load_average=round(max(load), 1), round=round_)
            if kept is not None:
                started, cpu = time.perf_counter(), time.process_time()
                people = kept.refreshed(delta)
                seconds = time.perf_counter() - started
                again = KeptBase(work / "wh")
                emit(figure="indicators_base_update", backend=backend, people=args.people,
                     rebuilt=people, seconds=round(seconds, 3),
                     cpu_seconds=round(time.process_time() - cpu, 3),
                     base_seconds=round(base_seconds, 3),
                     ratio=round(seconds / base_seconds, 4),
                     equals_fresh_base=_base_rows(kept) == _base_rows(again),
                     load_average=round(os.getloadavg()[0], 1), round=round_)
                again.close()
                kept.close()
            change(store, types, args.change, round_ + 1)
            compacted = warehouse.refresh(store, work / "wh", views_dir, max_deltas=1,
                                          threads=args.threads)
            emit(figure="warehouse_compaction", backend=backend, people=args.people,
                 seconds=round(compacted.seconds, 3),
                 compacted=sorted(n for n, v in compacted.views.items() if v.compacted),
                 ratio=round(compacted.seconds / full.seconds, 4),
                 load_average=round(os.getloadavg()[0], 1), round=round_)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)


def write_cost(backend: str, people: int, rounds: int) -> None:
    """What the change feed costs writes: a bulk load (one process, 2,000 resources per
    transaction) into a fresh database as it is, and with the feed taken out (no
    ``change_seq`` stamp, column default or index), alternately."""
    from songkhoe.store import changes
    from songkhoe.store.bulk import load

    config = SynthConfig(people=people, seed=5, provinces=(1,), communes_per_province=2,
                         as_of=date(2026, 11, 1))
    stamp = changes.stamp
    for round_ in range(rounds):
        for feed in ((True, False) if round_ % 2 == 0 else (False, True)):
            url = fresh_db(backend, "songkhoe_bench_feed")
            store = open_store(url)
            if not feed:
                with store.backend.transaction(write=True) as conn:
                    store.backend.execute(conn, "DROP INDEX history_change")
                    store.backend.execute(conn, "ALTER TABLE history DROP COLUMN change_seq")
                changes.stamp = lambda backend, conn: None  # type: ignore[assignment]
            load_average = os.getloadavg()[0]
            started = time.perf_counter()
            summary = load(store, items(config, workers=1))
            seconds = time.perf_counter() - started
            changes.stamp = stamp
            store.close()
            emit(figure="change_feed_write_cost", backend=backend, people=people,
                 resources=summary.loaded, change_feed=feed, seconds=round(seconds, 2),
                 resources_per_s=round(summary.loaded / seconds),
                 load_average=round(load_average, 1), round=round_)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--views", help="folder of ViewDefinitions (default: bench_views.py's)")
    parser.add_argument("--db", help="an already populated database to use instead of loading "
                                     "one (with --backend sqlite or postgres; it is changed)")
    parser.add_argument("--write-cost", type=int, metavar="PEOPLE",
                        help="instead: bulk loads of PEOPLE people with and without the change "
                             "feed, --rounds times each")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if args.write_cost:
        for backend in backends:
            write_cost(backend, args.write_cost, args.rounds)
        return
    views_dir = Path(args.views) if args.views else Path(tempfile.mkdtemp(prefix="bench-views-"))
    try:
        if not args.views:
            for name, definition in VIEWS.items():
                (views_dir / f"{name}.json").write_text(json.dumps(definition))
        for backend in backends:
            run(backend, args, views_dir)
    finally:
        if not args.views:
            shutil.rmtree(views_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
