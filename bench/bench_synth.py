"""``songkhoe synth``: a synthetic population written as NDJSON, and the demo's first start.

Figures (one JSON line each):

1. ``synth_ndjson`` for each population size: people, resources and bytes written, seconds,
   people/s, and the peak memory (RSS) of the main process and of the largest worker — the
   sizes are run in fresh processes so peak memory can be compared: it should not grow with
   the population. Target (issue 4): ≥ 1,000,000 people with one year of check-ups in < 120 s.
2. ``synth_demo_load``: the demo population of ``songkhoe serve --demo`` (3,000 people, five
   communes, two years) loaded into an empty SQLite store through the bulk path. Target: the
   first start stays under about a minute.

    python bench/bench_synth.py [--people 100000 1000000] [--workers N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, emit

_RUN = """
import json, resource, sys, time
from pathlib import Path
from songkhoe.synth import SynthConfig, write_ndjson
people, workers, out = int(sys.argv[1]), (int(sys.argv[2]) or None), Path(sys.argv[3])
s = write_ndjson(SynthConfig(people=people, seed=1), out, workers=workers)
print(json.dumps({"people": people, "resources": s.resources, "bytes": s.bytes,
                  "seconds": s.seconds,
                  "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

_DEMO = """
import json, sys, time
from datetime import date
from songkhoe.store import open_store
from songkhoe.store.bulk import load
from songkhoe.synth import SynthConfig, items
store = open_store(sys.argv[1])
config = SynthConfig(people=3000, seed=1, provinces=(1,), communes_per_province=5, years=2,
                     as_of=date(2026, 11, 1))
started = time.perf_counter()
summary = load(store, items(config, workers=1))
print(json.dumps({"people": config.people, "resources": summary.loaded,
                  "rejected": len(summary.rejected), "seconds": time.perf_counter() - started}))
"""


def _python(code: str, *args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True,
                          text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--keep", help="write here and keep the files (default: a temp dir)")
    args = parser.parse_args()
    for people in args.people:
        out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-synth-"))
        try:
            r = _python(_RUN, str(people), str(args.workers), str(out))
        finally:
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
        emit(figure="synth_ndjson", people=people, resources=r["resources"],
             gigabytes=round(r["bytes"] / 1e9, 2), seconds=round(r["seconds"], 1),
             people_per_s=round(people / r["seconds"]),
             resources_per_s=round(r["resources"] / r["seconds"]),
             rss_main_mb=round(r["rss_main_mb"]), rss_worker_mb=round(r["rss_worker_mb"]),
             workers=args.workers or "one per core", target="1,000,000 people in < 120 s")
    with tempfile.TemporaryDirectory() as tmp:
        r = _python(_DEMO, f"sqlite:///{tmp}/demo.db")
    emit(figure="synth_demo_load", backend="sqlite", people=r["people"],
         resources=r["resources"], rejected=r["rejected"], seconds=round(r["seconds"], 1),
         target="first start under about a minute")


if __name__ == "__main__":
    main()
