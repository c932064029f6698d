"""SQL-on-FHIR views on Spark local mode beside DuckDB: NDJSON → view Parquet, resources/s.

The views and data of ``bench_views.py`` (issue 7): patient demographics, vital signs (one row
per measured value, components included), conditions, over ``songkhoe synth --people N``
(seed 1). Each view is first checked: its rows over the first 2,000 resources of its file are
the same on Spark as on DuckDB. Then each engine writes the view's Parquet from the whole
file, in this process, one after the other, best of ``--rounds``: DuckDB's ``to_parquet``
(``threads`` threads, one file) and Spark's ``to_parquet`` (``--master``, default
``local[2]``; a folder of part files). The Spark session starts once, timed apart (the JVM).

Figures (one JSON line each): ``spark_session_start``; ``views_parquet_engines`` per view —
resources, rows, input MB, each engine's best wall seconds and resources/s, Spark/DuckDB
ratio, the load average while it ran, whether the view ran compiled;
``views_parquet_engines_all`` for the three together.

    python bench/bench_spark.py [--people 100000] [--data DIR] [--rounds 3] [--master local[2]]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
from bench_views import VIEWS
from common import emit

from songkhoe.analytics import duckdb_runner, spark_runner
from songkhoe.analytics.reference_arrow import arrow_type
from songkhoe.analytics.viewdefinition import ViewDefinition, parse_view
from songkhoe.synth import SynthConfig, write_ndjson


def _head(path: Path, out: Path, n: int = 2000) -> Path:
    with path.open(encoding="utf-8") as f, out.open("w", encoding="utf-8") as w:
        for i, line in enumerate(f):
            if i == n:
                break
            w.write(line)
    return out


def _rows(table: pa.Table, columns: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    neutral = table.cast(pa.schema([(n, arrow_type(t)) for n, t in columns]))
    return sorted(neutral.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _check(view: ViewDefinition, path: Path, spark: Any, tmp: Path) -> None:
    """The view's rows on the first 2,000 resources are the same on both engines."""
    head = _head(path, tmp / f"head-{view.resource}.ndjson")
    duck = duckdb_runner.execute(view, head)
    sparked = spark_runner.execute(view, head, spark=spark)
    assert sparked.compiled.columns == duck.compiled.columns
    assert _rows(sparked.table, sparked.compiled.columns) == \
        _rows(duck.table, duck.compiled.columns), f"{view.name}: Spark's rows differ"


def _best(run: Callable[[], int], rounds: int) -> tuple[float, int, float]:
    """(best wall seconds, rows, highest 1-minute load average seen) over ``rounds`` runs."""
    best, rows, load = float("inf"), 0, 0.0
    for _ in range(rounds):
        load = max(load, os.getloadavg()[0])
        start = time.perf_counter()
        rows = run()
        best = min(best, time.perf_counter() - start)
    return best, rows, load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--data", help="NDJSON directory to use or create (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-spark-"))
    out = Path(tempfile.mkdtemp(prefix="bench-spark-out-"))
    try:
        if not (data / "Patient.ndjson").exists():
            write_ndjson(SynthConfig(people=args.people, seed=1), data)
        load0 = os.getloadavg()[0]
        start = time.perf_counter()
        spark = spark_runner.spark_session(args.master, driver_memory=args.driver_memory,
                                           shuffle_partitions=2)
        emit(figure="spark_session_start", seconds=round(time.perf_counter() - start, 1),
             master=args.master, spark=spark.version, load_average=round(load0, 1))
        con = duckdb.connect()
        con.execute(f"SET threads = {args.threads}")
        totals = {"resources": 0, "duckdb": 0.0, "spark": 0.0}
        for name, definition in VIEWS.items():
            view = parse_view(definition)
            path = data / f"{view.resource}.ndjson"
            _check(view, path, spark, out)
            with path.open("rb") as f:
                resources = sum(1 for _ in f)
            duck_s, duck_rows, duck_load = _best(
                partial(duckdb_runner.to_parquet, view, path, out / f"{name}.parquet", con=con),
                args.rounds)
            spark_s, spark_rows, spark_load = _best(
                partial(spark_runner.to_parquet, view, path, out / name, spark=spark),
                args.rounds)
            assert spark_rows == duck_rows, (name, spark_rows, duck_rows)
            totals["resources"] += resources
            totals["duckdb"] += duck_s
            totals["spark"] += spark_s
            emit(figure="views_parquet_engines", view=name, resource=view.resource,
                 resources=resources, rows=duck_rows,
                 input_mb=round(path.stat().st_size / 1e6, 1),
                 duckdb_seconds=round(duck_s, 3), duckdb_per_s=round(resources / duck_s),
                 spark_seconds=round(spark_s, 3), spark_per_s=round(resources / spark_s),
                 spark_vs_duckdb=round(duck_s / spark_s, 3),
                 load_average=round(max(duck_load, spark_load), 1),
                 duckdb_threads=args.threads, spark_master=args.master,
                 compiled=spark_runner.compile_view(view).fallback is None)
        emit(figure="views_parquet_engines_all", people=args.people,
             resources=totals["resources"],
             duckdb_per_s=round(totals["resources"] / totals["duckdb"]),
             spark_per_s=round(totals["resources"] / totals["spark"]),
             spark_vs_duckdb=round(totals["duckdb"] / totals["spark"], 3))
        spark.stop()
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if not args.data:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
