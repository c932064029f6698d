"""``songkhoe import`` of NDJSON into PostgreSQL against a raw COPY of the same JSON.

Writes an NDJSON file of check-up resources (Patient, Encounter, Observations, with ids),
then in one run measures (1) a raw server-side ``COPY`` of the lines into a bare
``(id text, resource jsonb)`` table — PostgreSQL's own limit for taking that JSON in — and
(2) ``songkhoe import`` of the same file (validation, history, all search indexes).
Target (issue 2): import ≥ 50% of the raw COPY rate. Also reports SQLite import speed.

    python bench/bench_import.py [--people 10000]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg

from common import ROOT, emit, fresh_db
from checkup import checkup_bundle


def write_ndjson(path: Path, people: int) -> int:
    rng = random.Random(11)
    count = 0
    with path.open("wb") as out:
        for n in range(people):
            ids: dict[str, str] = {}
            bundle = checkup_bundle(rng)
            for k, entry in enumerate(bundle["entry"]):
                ids[entry["fullUrl"]] = f"{entry['resource']['resourceType']}/r{n}-{k}"
            for k, entry in enumerate(bundle["entry"]):
                res = entry["resource"]
                res["id"] = f"r{n}-{k}"
                for key in ("subject", "encounter"):
                    if key in res:
                        res[key] = {"reference": ids[res[key]["reference"]]}
                out.write(orjson.dumps(res) + b"\n")
                count += 1
    os.chmod(path, 0o644)
    return count


def raw_copy_seconds(url: str, path: Path) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw (id text GENERATED ALWAYS AS (resource->>'id') STORED, "
                     "resource jsonb)")
        start = time.perf_counter()
        conn.execute(f"COPY raw (resource) FROM '{path}' WITH (FORMAT csv, QUOTE E'\\x01', "
                     "DELIMITER E'\\x02')")
        return time.perf_counter() - start


def import_seconds(url: str, path: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "songkhoe.cli", "import", "--db", url, str(path)],
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=10000)
    args = parser.parse_args()
    path = Path("/tmp/songkhoe_bench_import.ndjson")
    count = write_ndjson(path, args.people)
    pg = fresh_db("postgres", "songkhoe_bench_import")
    raw = raw_copy_seconds(pg, path)
    imported = import_seconds(pg, path)
    emit(name="import_ndjson_postgres", resources=count, import_per_s=round(count / imported),
         raw_copy_per_s=round(count / raw), ratio=round(raw / imported, 3),
         bytes=path.stat().st_size)
    again = import_seconds(pg, path)
    emit(name="import_ndjson_postgres_rerun_unchanged", resources=count,
         per_s=round(count / again))
    lite = import_seconds(fresh_db("sqlite", "songkhoe_bench_import"), path)
    emit(name="import_ndjson_sqlite", resources=count, import_per_s=round(count / lite))


if __name__ == "__main__":
    main()
